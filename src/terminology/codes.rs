//! How codes and systems compare: one canonical URI per code system (aliases such as HL7 OIDs
//! folded in), codes normalised per system (ICD-10 without the dot, upper case), and the human
//! names of systems for evidence text. See the module docs of [`super`].

use std::borrow::Cow;

use super::uris;

/// The canonical URI of a code system named by `system` (trimmed): the canonical URI for a
/// known alias (table [`uris::SYSTEM_ALIASES`]; the `urn:oid:` scheme compared
/// case-insensitively, as URNs are), else `system` itself.
pub fn canonical_system(system: &str) -> &str {
    let system = system.trim();
    uris::SYSTEM_ALIASES
        .iter()
        .find(|(alias, _)| alias.eq_ignore_ascii_case(system))
        .map_or(system, |(_, canonical)| canonical)
}

/// Whether two codings name the same code (systems compared after [`canonical_system`], codes
/// after [`normalise_code`]).
pub fn same_code(system_a: &str, code_a: &str, system_b: &str, code_b: &str) -> bool {
    let (a, b) = (canonical_system(system_a), canonical_system(system_b));
    a == b && normalise_code(a, code_a) == normalise_code(b, code_b)
}

/// The code as compared for `system` (see the module docs; `system` may be an alias).
pub fn normalise_code<'a>(system: &str, code: &'a str) -> Cow<'a, str> {
    let code = code.trim();
    match canonical_system(system) {
        uris::ICD10_CM | uris::ICD10 => Cow::Owned(
            code.chars()
                .filter(|c| *c != '.')
                .flat_map(char::to_uppercase)
                .collect(),
        ),
        uris::ICD10_PCS | uris::CPT => {
            if code.chars().any(|c| c.is_ascii_lowercase()) {
                Cow::Owned(code.to_ascii_uppercase())
            } else {
                Cow::Borrowed(code)
            }
        }
        _ => Cow::Borrowed(code),
    }
}

/// A human name for a code system, for evidence text (`SNOMED CT 1229865000`); aliases get the
/// name of their canonical system, unknown systems are shown as sent.
pub fn system_label(system: &str) -> &str {
    match canonical_system(system) {
        uris::SNOMED_CT => "SNOMED CT",
        uris::LOINC => "LOINC",
        uris::CPT => "CPT",
        uris::ICD10_CM => "ICD-10-CM",
        uris::ICD10 => "ICD-10",
        uris::ICD10_PCS => "ICD-10-PCS",
        uris::AJCC => "AJCC",
        other => other,
    }
}

/// Whether a `meta.profile` canonical is one of the mCODE cancer condition profiles.
pub fn is_cancer_condition_profile(profile: &str) -> bool {
    let base = profile.split('|').next().unwrap_or(profile).trim();
    uris::MCODE_CANCER_CONDITION_PROFILES.contains(&base)
}

/// Whether a `meta.profile` canonical is mCODE's secondary (metastatic) cancer condition
/// profile: a metastasis of a primary cancer, not another primary.
pub fn is_secondary_cancer_condition_profile(profile: &str) -> bool {
    let base = profile.split('|').next().unwrap_or(profile).trim();
    base == uris::MCODE_CANCER_CONDITION_PROFILES[1]
}
