//! Code lists the facts are read by, loaded once at start-up from the FHIR ValueSets and
//! CodeSystems under `fhir-profiles/`.
//!
//! Why data and not code: which codes mean "IORT", "rectal cancer" or "T4" is clinical
//! knowledge that changes (new SNOMED CT releases, a payer adding a code) and must be reviewable
//! by people who do not read Rust. Every list is an ordinary FHIR R4 `ValueSet` whose
//! `description` names the SOURCE its codes were checked against, so the files can be validated
//! with any FHIR tooling and an override folder can change them without a rebuild.
//!
//! What the loader understands (anything else is rejected at start-up, naming the file, rather
//! than silently matching nothing):
//! - `compose.include[]` / `compose.exclude[]` entries with a `system` and
//!   - `concept[]` (enumerated codes), and/or
//!   - `filter[]` with `property: "code"`, `op: "regex"`: the value is a regular expression
//!     that must match the whole (normalised) code, as FHIR defines the `regex` operator; this is
//!     how rules such as "ICD-10-PCS section D with 7th character 0" or "ICD-10-CM C00-C96" are
//!     written as data, or
//!   - neither, only for the project's own CodeSystems (`fhir-profiles/codesystems/`): all
//!     their codes;
//! - `compose.include[]` entries with `valueSet[]` naming another project value set (union).
//!
//! Codes are normalised before comparison, in the loaded lists and in the data alike: surrounding
//! white space is ignored everywhere; ICD-10-CM and WHO ICD-10 codes are compared upper-case and
//! without the dot (EHRs send both `C18.7` and `C187`; mCODE STU1 itself lists `C000`);
//! ICD-10-PCS and CPT codes are compared upper-case. All other systems (SNOMED CT, LOINC, AJCC,
//! FHIR code systems) are case-sensitive as FHIR says.
//!
//! Systems are normalised too, in one place ([`canonical_system`], table
//! [`uris::SYSTEM_ALIASES`]): a code system has one canonical FHIR URI, but records converted
//! from CDA / HL7 v2 or written by older exporters name it by its HL7 OID (`urn:oid:...`) or by a
//! URI an earlier IG used. Those names mean the same code system, so a code matches the same
//! value-set members under any of them (and a value-set file may use them too). WHO ICD-10
//! (`http://hl7.org/fhir/sid/icd-10`) is NOT an alias of ICD-10-CM: it is another code system
//! whose categories agree for the blocks this service reads, so the value sets include it
//! explicitly where it means the same thing.
//!
//! Structural identifiers the extractors need besides codes (extension URLs, profile URLs, UCUM
//! units) live in [`uris`] and in the helpers here, so `src/facts` holds no code literals.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use fhirbolt::model::r4::types::{CodeableConcept, Coding};
use regex::Regex;
use serde_json::Value;

use crate::assets::{Assets, Folder};

/// Canonical base of the project's own FHIR resources.
pub const CANONICAL_BASE: &str = "https://iort-cds.github.io/fhir";

/// System URIs and structural URLs (not codes) the extractors need.
pub mod uris {
    pub const SNOMED_CT: &str = "http://snomed.info/sct";
    pub const LOINC: &str = "http://loinc.org";
    pub const CPT: &str = "http://www.ama-assn.org/go/cpt";
    pub const ICD10_CM: &str = "http://hl7.org/fhir/sid/icd-10-cm";
    /// WHO ICD-10 (international): a code system of its own, not an alias of ICD-10-CM.
    pub const ICD10: &str = "http://hl7.org/fhir/sid/icd-10";
    pub const ICD10_PCS: &str = "http://www.cms.gov/Medicare/Coding/ICD10";
    pub const AJCC: &str = "http://cancerstaging.org";
    pub const UCUM: &str = "http://unitsofmeasure.org";
    /// Da Vinci CRD: billing codes that could be used for the order's clinical code; an
    /// extension on `ServiceRequest.code` with `valueCodeableConcept` (CRD STU 2.1+).
    pub const BILLING_OPTIONS_EXTENSION: &str =
        "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-billing-options";
    /// mCODE: radiotherapy modality and technique (complex extension on the resource).
    pub const MODALITY_AND_TECHNIQUE_EXTENSION: &str = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-radiotherapy-modality-and-technique";
    /// Sub-extension of [`MODALITY_AND_TECHNIQUE_EXTENSION`] carrying the technique. mCODE
    /// defines it as an extension of its own (`RadiotherapyTechnique`), so conformant instances
    /// (mCODE STU2+, CodeX Radiation Therapy examples) carry the absolute URL; some senders use
    /// the slice name `technique` as a local url. Both are accepted.
    pub const TECHNIQUE_SUBEXTENSION: &str =
        "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-radiotherapy-technique";
    /// The slice name used as a local sub-extension url for the technique.
    pub const TECHNIQUE_SUBEXTENSION_SHORT: &str = "technique";
    /// Sub-extension of [`MODALITY_AND_TECHNIQUE_EXTENSION`] carrying the modality (absolute
    /// URL as mCODE defines it; the short form is [`MODALITY_SUBEXTENSION_SHORT`]).
    pub const MODALITY_SUBEXTENSION: &str =
        "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-radiotherapy-modality";
    /// The slice name used as a local sub-extension url for the modality.
    pub const MODALITY_SUBEXTENSION_SHORT: &str = "modality";
    /// Every url a technique sub-extension may carry.
    pub const TECHNIQUE_SUBEXTENSION_URLS: [&str; 2] =
        [TECHNIQUE_SUBEXTENSION, TECHNIQUE_SUBEXTENSION_SHORT];
    /// Every url a modality sub-extension may carry.
    pub const MODALITY_SUBEXTENSION_URLS: [&str; 2] =
        [MODALITY_SUBEXTENSION, MODALITY_SUBEXTENSION_SHORT];
    /// Other names of the code systems above, each with its canonical URI (see
    /// [`canonical_system`](super::canonical_system)). OIDs as `urn:oid:` URIs are how FHIR
    /// writes a system known only by its OID (CDA / C-CDA conversions do this); the OIDs are the
    /// HL7 registrations (SNOMED CT 2.16.840.1.113883.6.96, LOINC .6.1, CPT-4 .6.12,
    /// ICD-10-CM .6.90, ICD-10-PCS .6.4, WHO ICD-10 .6.3; checked against the HL7 terminology
    /// CodeSystem resources, the US Core terminology page and C-CDA documents). US Core 1.x
    /// (STU2) named ICD-10-PCS `http://www.icd10data.com/icd10pcs`.
    pub const SYSTEM_ALIASES: [(&str, &str); 7] = [
        ("urn:oid:2.16.840.1.113883.6.96", SNOMED_CT),
        ("urn:oid:2.16.840.1.113883.6.1", LOINC),
        ("urn:oid:2.16.840.1.113883.6.12", CPT),
        ("urn:oid:2.16.840.1.113883.6.90", ICD10_CM),
        ("urn:oid:2.16.840.1.113883.6.4", ICD10_PCS),
        ("http://www.icd10data.com/icd10pcs", ICD10_PCS),
        ("urn:oid:2.16.840.1.113883.6.3", ICD10),
    ];
    /// mCODE cancer condition profiles: a Condition claiming one of them is a cancer whatever its
    /// code (the profile may carry a version suffix `|x.y.z`).
    pub const MCODE_CANCER_CONDITION_PROFILES: [&str; 2] = [
        "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-primary-cancer-condition",
        "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-secondary-cancer-condition",
    ];
}

/// The value sets the service reads by. Each is a file `fhir-profiles/valuesets/<slug>.json`
/// whose `url` is `https://iort-cds.github.io/fhir/ValueSet/<slug>`; all must be present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueSetId {
    /// CPT codes of IORT (the order's billing code).
    IortCptCodes,
    /// Order codes that mean IORT (CPT, SNOMED CT, ICD-10-PCS intraoperative radiation).
    IortProcedures,
    /// Radiotherapy course of treatment (IORT when the mCODE technique says so).
    RadiotherapyCourse,
    /// mCODE technique values meaning intraoperative radiotherapy.
    IortTechnique,
    /// Malignant neoplasm of rectum.
    RectalCancer,
    /// Any malignant neoplasm (includes [`ValueSetId::RectalCancer`]).
    AnyCancer,
    /// Observation codes of a T category observation.
    TCategoryObservation,
    /// T category values meaning T4.
    T4Category,
    /// T category values below T4 (T0, Tis, T1-T3).
    BelowT4Category,
    /// Observation codes of a coded margin status (and R classification).
    MarginFindingObservation,
    /// Observation codes of the distance to the closest margin.
    MarginDistanceObservation,
    /// Values meaning a positive margin.
    MarginPositive,
    /// Values meaning a close margin.
    MarginClose,
    /// Values meaning a clear margin.
    MarginClear,
    /// Rectal resection procedures.
    RectalResection,
    /// Body site: rectum.
    RectumBodySite,
    /// Condition.clinicalStatus values meaning recurrent disease.
    ConditionRecurrence,
    /// Condition.clinicalStatus values of a disease no longer active.
    ConditionInactive,
    /// Condition.verificationStatus values that exclude the Condition.
    ConditionUnusableVerification,
    /// Observation.status values that exclude the Observation.
    ObservationUnusableStatus,
    /// Procedure.status values that exclude the Procedure.
    ProcedureUnusableStatus,
    /// Coverage.status values of a usable Coverage.
    CoverageActiveStatus,
    /// Observation codes of a TNM stage group (whose `hasMember` holds the T category).
    StageGroupObservation,
    /// Secondary (metastatic) malignant neoplasms: not another primary cancer.
    SecondaryCancer,
}

impl ValueSetId {
    /// Every value set the service needs.
    pub const ALL: [ValueSetId; 24] = [
        ValueSetId::IortCptCodes,
        ValueSetId::IortProcedures,
        ValueSetId::RadiotherapyCourse,
        ValueSetId::IortTechnique,
        ValueSetId::RectalCancer,
        ValueSetId::AnyCancer,
        ValueSetId::TCategoryObservation,
        ValueSetId::T4Category,
        ValueSetId::BelowT4Category,
        ValueSetId::MarginFindingObservation,
        ValueSetId::MarginDistanceObservation,
        ValueSetId::MarginPositive,
        ValueSetId::MarginClose,
        ValueSetId::MarginClear,
        ValueSetId::RectalResection,
        ValueSetId::RectumBodySite,
        ValueSetId::ConditionRecurrence,
        ValueSetId::ConditionInactive,
        ValueSetId::ConditionUnusableVerification,
        ValueSetId::ObservationUnusableStatus,
        ValueSetId::ProcedureUnusableStatus,
        ValueSetId::CoverageActiveStatus,
        ValueSetId::StageGroupObservation,
        ValueSetId::SecondaryCancer,
    ];

    /// The value sets by which the facts select Observations (`Observation.code`, or a
    /// component's code). The `observations` prefetch query asks the EHR for exactly their
    /// members (see [`crate::hook::discovery`]), so an Observation the facts would read is never
    /// left out of the record by the query; hence each must be enumerable (listed concepts, no
    /// regex filter), which [`Terminology::load`] checks.
    pub const OBSERVATION_CODES: [ValueSetId; 4] = [
        ValueSetId::TCategoryObservation,
        ValueSetId::StageGroupObservation,
        ValueSetId::MarginFindingObservation,
        ValueSetId::MarginDistanceObservation,
    ];

    /// The last segment of the canonical URL (and the file name without `.json`).
    pub fn slug(self) -> &'static str {
        match self {
            ValueSetId::IortCptCodes => "iort-cpt-codes",
            ValueSetId::IortProcedures => "iort-procedures",
            ValueSetId::RadiotherapyCourse => "radiotherapy-course",
            ValueSetId::IortTechnique => "iort-technique",
            ValueSetId::RectalCancer => "rectal-cancer",
            ValueSetId::AnyCancer => "any-cancer",
            ValueSetId::TCategoryObservation => "t-category-observation",
            ValueSetId::T4Category => "t4-category",
            ValueSetId::BelowT4Category => "below-t4-category",
            ValueSetId::MarginFindingObservation => "margin-finding-observation",
            ValueSetId::MarginDistanceObservation => "margin-distance-observation",
            ValueSetId::MarginPositive => "margin-positive",
            ValueSetId::MarginClose => "margin-close",
            ValueSetId::MarginClear => "margin-clear",
            ValueSetId::RectalResection => "rectal-resection",
            ValueSetId::RectumBodySite => "rectum-body-site",
            ValueSetId::ConditionRecurrence => "condition-recurrence",
            ValueSetId::ConditionInactive => "condition-inactive",
            ValueSetId::ConditionUnusableVerification => "condition-unusable-verification",
            ValueSetId::ObservationUnusableStatus => "observation-unusable-status",
            ValueSetId::ProcedureUnusableStatus => "procedure-unusable-status",
            ValueSetId::CoverageActiveStatus => "coverage-active-status",
            ValueSetId::StageGroupObservation => "stage-group-observation",
            ValueSetId::SecondaryCancer => "secondary-cancer",
        }
    }

    /// The canonical URL of the value set.
    pub fn url(self) -> String {
        format!("{CANONICAL_BASE}/ValueSet/{}", self.slug())
    }
}

/// Failure to load the terminology files; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TerminologyError {
    /// The file could not be read or is not JSON (the asset error names the file).
    #[error(transparent)]
    Asset(#[from] crate::assets::AssetError),
    /// The file is JSON but not a ValueSet / CodeSystem this loader understands.
    #[error("terminology file fhir-profiles/{file} is invalid: {message}")]
    Invalid { file: String, message: String },
    /// A value set the service needs is not among the loaded files.
    #[error("required value set {url} is missing from fhir-profiles/valuesets")]
    Missing { url: String },
}

fn invalid(file: &str, message: impl Into<String>) -> TerminologyError {
    TerminologyError::Invalid {
        file: file.to_owned(),
        message: message.into(),
    }
}

/// One concept of an enumerated value set: a code and its system, as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SystemCode {
    pub system: String,
    pub code: String,
}

impl std::fmt::Display for SystemCode {
    /// The FHIR token form `system|code` (not escaped for a search URL).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}|{}", self.system, self.code)
    }
}

/// Why a value set cannot be listed concept by concept: it (or a value set it includes) selects
/// codes by a regex filter. Names the file and the include entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotEnumerable {
    pub file: String,
    pub message: String,
}

/// Codes of one system within an include or exclude entry.
#[derive(Debug, Clone)]
struct SystemRule {
    system: String,
    /// Normalised codes.
    codes: HashSet<String>,
    /// The same codes as written in the file (trimmed, file order; a whole project CodeSystem
    /// sorted), for enumeration: a FHIR server is asked for `C18.7`, not the normalised `C187`.
    listed: Vec<String>,
    /// Anchored regular expressions over the normalised code.
    patterns: Vec<Regex>,
}

impl SystemRule {
    fn matches(&self, system: &str, normalised_code: &str) -> bool {
        self.system == system
            && (self.codes.contains(normalised_code)
                || self.patterns.iter().any(|p| p.is_match(normalised_code)))
    }
}

#[derive(Debug, Clone)]
enum IncludeRule {
    System(SystemRule),
    /// Index of another loaded value set.
    ValueSet(usize),
}

#[derive(Debug, Clone)]
struct CompiledValueSet {
    /// The file it was read from, relative to `fhir-profiles/` (for errors).
    file: String,
    url: String,
    include: Vec<IncludeRule>,
    exclude: Vec<SystemRule>,
}

/// A value set as read, before `valueSet` references are resolved.
struct ParsedValueSet {
    file: String,
    url: String,
    include: Vec<ParsedInclude>,
    exclude: Vec<SystemRule>,
}

enum ParsedInclude {
    System(SystemRule),
    ValueSet(String),
}

/// The loaded value sets, with fast membership tests.
#[derive(Debug, Clone, Default)]
pub struct Terminology {
    sets: Vec<CompiledValueSet>,
    by_url: HashMap<String, usize>,
    /// The required value sets, resolved once so a lookup does not build a URL.
    by_id: HashMap<ValueSetId, usize>,
}

/// Upper bound on `valueSet` include nesting (the loader also rejects cycles).
const MAX_NESTING: usize = 16;

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

/// The power of ten that turns a length in the given unit into millimetres (`cm` -> 1,
/// `um` -> -3), or `None` for a unit that is not a length this service understands.
///
/// The UCUM `code` is used when the system is UCUM or absent; otherwise (or when the code is
/// missing) the human-readable `unit` is tried, which is how many EHRs fill Quantity.
pub fn length_unit_to_mm_exponent(
    system: Option<&str>,
    code: Option<&str>,
    unit: Option<&str>,
) -> Option<i32> {
    fn ucum(code: &str) -> Option<i32> {
        match code.trim() {
            "mm" => Some(0),
            "cm" => Some(1),
            "um" => Some(-3),
            "m" => Some(3),
            _ => None,
        }
    }
    fn text(unit: &str) -> Option<i32> {
        let u = unit.trim().to_ascii_lowercase();
        match u.as_str() {
            "mm" | "millimeter" | "millimeters" | "millimetre" | "millimetres" => Some(0),
            "cm" | "centimeter" | "centimeters" | "centimetre" | "centimetres" => Some(1),
            "um" | "micrometer" | "micrometers" | "micrometre" | "micrometres" | "micron"
            | "microns" => Some(-3),
            _ => match unit.trim() {
                "\u{b5}m" | "\u{3bc}m" => Some(-3),
                _ => None,
            },
        }
    }
    let ucum_code = match system {
        None => code,
        Some(s) if s.trim() == uris::UCUM => code,
        Some(_) => None,
    };
    ucum_code.and_then(ucum).or_else(|| unit.and_then(text))
}

impl Terminology {
    /// Read every `fhir-profiles/codesystems/*.json` and `fhir-profiles/valuesets/*.json`,
    /// check them and build the lookup structures. Fails, naming the file, on anything the
    /// loader does not understand, and when a value set of [`ValueSetId::ALL`] is missing.
    pub fn load(assets: &Assets) -> Result<Self, TerminologyError> {
        // Project CodeSystems first: value sets may include them whole or check codes against them.
        let mut code_systems: HashMap<String, HashSet<String>> = HashMap::new();
        for file in assets.list(Folder::Profiles, "codesystems", ".json") {
            let json = assets.read_json(Folder::Profiles, &file)?;
            let (url, codes) = parse_code_system(&file, &json)?;
            if code_systems.insert(url.clone(), codes).is_some() {
                return Err(invalid(&file, format!("duplicate CodeSystem url {url}")));
            }
        }

        let mut parsed = Vec::new();
        for file in assets.list(Folder::Profiles, "valuesets", ".json") {
            let json = assets.read_json(Folder::Profiles, &file)?;
            parsed.push(parse_value_set(&file, &json, &code_systems)?);
        }

        let mut by_url = HashMap::new();
        for (i, vs) in parsed.iter().enumerate() {
            if by_url.insert(vs.url.clone(), i).is_some() {
                return Err(invalid(
                    &vs.file,
                    format!("duplicate ValueSet url {}", vs.url),
                ));
            }
        }

        let mut sets = Vec::with_capacity(parsed.len());
        for vs in &parsed {
            let mut include = Vec::with_capacity(vs.include.len());
            for inc in &vs.include {
                include.push(match inc {
                    ParsedInclude::System(rule) => IncludeRule::System(rule.clone()),
                    ParsedInclude::ValueSet(url) => {
                        let idx = by_url
                            .get(url.split('|').next().unwrap_or(url))
                            .ok_or_else(|| {
                                invalid(&vs.file, format!("includes unknown value set {url}"))
                            })?;
                        IncludeRule::ValueSet(*idx)
                    }
                });
            }
            sets.push(CompiledValueSet {
                file: vs.file.clone(),
                url: vs.url.clone(),
                include,
                exclude: vs.exclude.clone(),
            });
        }

        let mut terminology = Terminology {
            sets,
            by_url,
            by_id: HashMap::new(),
        };
        for (i, vs) in parsed.iter().enumerate() {
            terminology
                .check_nesting(i, &mut Vec::new())
                .map_err(|m| invalid(&vs.file, m))?;
        }
        for id in ValueSetId::ALL {
            let url = id.url();
            let Some(&idx) = terminology.by_url.get(&url) else {
                return Err(TerminologyError::Missing { url });
            };
            terminology.by_id.insert(id, idx);
        }
        for id in ValueSetId::OBSERVATION_CODES {
            terminology.enumerate(id).map_err(|e| {
                invalid(
                    &e.file,
                    format!(
                        "{}; the value set {} lists the Observation codes the `observations` \
                         prefetch query asks for, so every code must be listed as a concept",
                        e.message,
                        id.slug()
                    ),
                )
            })?;
        }
        Ok(terminology)
    }

    /// Every concept of an enumerated value set, as `system|code` pairs written as in the files
    /// (included value sets in order, excluded codes left out, no duplicates), in a stable order.
    /// Fails, naming the file, when the value set or one it includes selects codes by a regex
    /// filter: such a set has no finite list a FHIR search could ask for. An unknown value set
    /// (only possible with [`Terminology::default`]) has no concepts.
    pub fn enumerate(&self, vs: ValueSetId) -> Result<Vec<SystemCode>, NotEnumerable> {
        let mut out = Vec::new();
        if let Some(&idx) = self.by_id.get(&vs) {
            self.enumerate_into(idx, &mut out, 0)?;
        }
        let mut seen = HashSet::new();
        out.retain(|c| seen.insert(c.clone()));
        Ok(out)
    }

    fn enumerate_into(
        &self,
        idx: usize,
        out: &mut Vec<SystemCode>,
        depth: usize,
    ) -> Result<(), NotEnumerable> {
        // Depth is bounded at load; the guard only protects a hand-built value.
        if depth > MAX_NESTING {
            return Ok(());
        }
        let set = &self.sets[idx];
        let start = out.len();
        for (i, rule) in set.include.iter().enumerate() {
            match rule {
                IncludeRule::System(r) if !r.patterns.is_empty() => {
                    return Err(NotEnumerable {
                        file: set.file.clone(),
                        message: format!(
                            "compose.include[{i}] selects {} codes by a regex filter, which \
                             cannot be enumerated",
                            r.system
                        ),
                    });
                }
                IncludeRule::System(r) => out.extend(r.listed.iter().map(|code| SystemCode {
                    system: r.system.clone(),
                    code: code.clone(),
                })),
                IncludeRule::ValueSet(child) => self.enumerate_into(*child, out, depth + 1)?,
            }
        }
        let mut kept = out.split_off(start);
        kept.retain(|c| {
            let code = normalise_code(&c.system, &c.code);
            !set.exclude.iter().any(|r| r.matches(&c.system, &code))
        });
        out.extend(kept);
        Ok(())
    }

    /// Reject cycles and absurd nesting among `valueSet` includes.
    fn check_nesting(&self, idx: usize, path: &mut Vec<usize>) -> Result<(), String> {
        if path.contains(&idx) {
            return Err(format!(
                "value set includes form a cycle through {}",
                self.sets[idx].url
            ));
        }
        if path.len() >= MAX_NESTING {
            return Err("value set includes are nested too deeply".to_owned());
        }
        path.push(idx);
        for rule in &self.sets[idx].include {
            if let IncludeRule::ValueSet(child) = rule {
                self.check_nesting(*child, path)?;
            }
        }
        path.pop();
        Ok(())
    }

    /// How many value sets were loaded (for the start-up log).
    pub fn value_set_count(&self) -> usize {
        self.sets.len()
    }

    /// Whether `system|code` is in the value set. Unknown value sets (only possible with
    /// [`Terminology::default`]) contain nothing.
    pub fn contains(&self, vs: ValueSetId, system: &str, code: &str) -> bool {
        let Some(&idx) = self.by_id.get(&vs) else {
            return false;
        };
        let system = canonical_system(system);
        let code = normalise_code(system, code);
        if code.is_empty() {
            return false;
        }
        self.member(idx, system, &code, 0)
    }

    fn member(&self, idx: usize, system: &str, code: &str, depth: usize) -> bool {
        // Depth is bounded at load; the guard only protects a hand-built value.
        if depth > MAX_NESTING {
            return false;
        }
        let set = &self.sets[idx];
        let included = set.include.iter().any(|rule| match rule {
            IncludeRule::System(r) => r.matches(system, code),
            IncludeRule::ValueSet(child) => self.member(*child, system, code, depth + 1),
        });
        included && !set.exclude.iter().any(|r| r.matches(system, code))
    }

    /// Whether a code whose system is implied by the element (a FHIR `code` primitive such as
    /// `Observation.status`) is in the value set under any of its systems.
    pub fn contains_code(&self, vs: ValueSetId, code: &str) -> bool {
        let Some(&idx) = self.by_id.get(&vs) else {
            return false;
        };
        let mut systems = HashSet::new();
        self.collect_systems(idx, &mut systems, 0);
        systems.into_iter().any(|s| self.contains(vs, s, code))
    }

    fn collect_systems<'a>(&'a self, idx: usize, out: &mut HashSet<&'a str>, depth: usize) {
        if depth > MAX_NESTING {
            return;
        }
        for rule in &self.sets[idx].include {
            match rule {
                IncludeRule::System(r) => {
                    out.insert(r.system.as_str());
                }
                IncludeRule::ValueSet(child) => self.collect_systems(*child, out, depth + 1),
            }
        }
    }

    /// Whether a Coding (with both system and code) is in the value set.
    pub fn contains_coding(&self, vs: ValueSetId, coding: &Coding) -> bool {
        match (
            coding.system.as_ref().and_then(|s| s.value.as_deref()),
            coding.code.as_ref().and_then(|c| c.value.as_deref()),
        ) {
            (Some(system), Some(code)) => self.contains(vs, system, code),
            _ => false,
        }
    }

    /// The first Coding of the concept that is in the value set.
    pub fn matching_coding<'a>(
        &self,
        vs: ValueSetId,
        concept: &'a CodeableConcept,
    ) -> Option<&'a Coding> {
        concept.coding.iter().find(|c| self.contains_coding(vs, c))
    }

    /// Whether any Coding of the concept is in the value set.
    pub fn concept_in(&self, vs: ValueSetId, concept: &CodeableConcept) -> bool {
        self.matching_coding(vs, concept).is_some()
    }
}

fn required_str<'a>(file: &str, json: &'a Value, key: &str) -> Result<&'a str, TerminologyError> {
    match json.get(key).and_then(Value::as_str).map(str::trim) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(invalid(file, format!("`{key}` must be a non-empty string"))),
    }
}

/// The metadata every terminology file must carry; `description` must name its SOURCE.
fn check_metadata<'a>(
    file: &str,
    json: &'a Value,
    resource_type: &str,
) -> Result<&'a str, TerminologyError> {
    if json.get("resourceType").and_then(Value::as_str) != Some(resource_type) {
        return Err(invalid(
            file,
            format!("resourceType must be \"{resource_type}\""),
        ));
    }
    let url = required_str(file, json, "url")?;
    for key in ["name", "title", "status"] {
        required_str(file, json, key)?;
    }
    let description = required_str(file, json, "description")?;
    if !description.contains("SOURCE") {
        return Err(invalid(
            file,
            "`description` must name the SOURCE the codes were checked against",
        ));
    }
    Ok(url)
}

fn parse_code_system(
    file: &str,
    json: &Value,
) -> Result<(String, HashSet<String>), TerminologyError> {
    let url = check_metadata(file, json, "CodeSystem")?.to_owned();
    let mut codes = HashSet::new();
    fn walk(
        file: &str,
        concepts: &Value,
        codes: &mut HashSet<String>,
    ) -> Result<(), TerminologyError> {
        let Some(list) = concepts.as_array() else {
            return Err(invalid(file, "`concept` must be an array"));
        };
        for (i, c) in list.iter().enumerate() {
            let code = c
                .get("code")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| invalid(file, format!("concept[{i}].code must be a string")))?;
            codes.insert(code.to_owned());
            if let Some(children) = c.get("concept") {
                walk(file, children, codes)?;
            }
        }
        Ok(())
    }
    walk(
        file,
        json.get("concept").unwrap_or(&Value::Array(Vec::new())),
        &mut codes,
    )?;
    if codes.is_empty() {
        return Err(invalid(file, "a project CodeSystem must list its concepts"));
    }
    Ok((url, codes))
}

fn parse_value_set(
    file: &str,
    json: &Value,
    code_systems: &HashMap<String, HashSet<String>>,
) -> Result<ParsedValueSet, TerminologyError> {
    let url = check_metadata(file, json, "ValueSet")?.to_owned();
    let compose = json
        .get("compose")
        .ok_or_else(|| invalid(file, "`compose` is required"))?;
    let includes = compose
        .get("include")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| invalid(file, "`compose.include` must be a non-empty array"))?;
    let mut include = Vec::with_capacity(includes.len());
    for (i, entry) in includes.iter().enumerate() {
        let at = format!("compose.include[{i}]");
        match (entry.get("system"), entry.get("valueSet")) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    file,
                    format!("{at}: `system` together with `valueSet` is not supported"),
                ));
            }
            (None, Some(vs)) => {
                let list = vs
                    .as_array()
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| invalid(file, format!("{at}.valueSet must be an array")))?;
                for (j, v) in list.iter().enumerate() {
                    let u = v.as_str().ok_or_else(|| {
                        invalid(file, format!("{at}.valueSet[{j}] must be a string"))
                    })?;
                    include.push(ParsedInclude::ValueSet(u.trim().to_owned()));
                }
            }
            (Some(_), None) => {
                include.push(ParsedInclude::System(parse_system_rule(
                    file,
                    &at,
                    entry,
                    code_systems,
                )?));
            }
            (None, None) => {
                return Err(invalid(file, format!("{at} needs `system` or `valueSet`")));
            }
        }
    }
    let mut exclude = Vec::new();
    if let Some(excludes) = compose.get("exclude") {
        let list = excludes
            .as_array()
            .ok_or_else(|| invalid(file, "`compose.exclude` must be an array"))?;
        for (i, entry) in list.iter().enumerate() {
            let at = format!("compose.exclude[{i}]");
            if entry.get("valueSet").is_some() {
                return Err(invalid(
                    file,
                    format!("{at}: excluding a value set is not supported"),
                ));
            }
            exclude.push(parse_system_rule(file, &at, entry, code_systems)?);
        }
    }
    Ok(ParsedValueSet {
        file: file.to_owned(),
        url,
        include,
        exclude,
    })
}

fn parse_system_rule(
    file: &str,
    at: &str,
    entry: &Value,
    code_systems: &HashMap<String, HashSet<String>>,
) -> Result<SystemRule, TerminologyError> {
    let system = entry
        .get("system")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(file, format!("{at}.system must be a non-empty string")))?;
    // Rules hold the canonical system, so a file may name a system by an alias too.
    let system = canonical_system(system).to_owned();
    let project_codes = code_systems.get(&system);
    let mut codes = HashSet::new();
    let mut listed = Vec::new();
    if let Some(concepts) = entry.get("concept") {
        let list = concepts
            .as_array()
            .ok_or_else(|| invalid(file, format!("{at}.concept must be an array")))?;
        for (j, c) in list.iter().enumerate() {
            let code = c
                .get("code")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| invalid(file, format!("{at}.concept[{j}].code must be a string")))?;
            if let Some(known) = project_codes
                && !known.contains(code)
            {
                return Err(invalid(
                    file,
                    format!("{at}.concept[{j}]: {code} is not a code of {system}"),
                ));
            }
            if codes.insert(normalise_code(&system, code).into_owned()) {
                listed.push(code.to_owned());
            }
        }
    }
    let mut patterns = Vec::new();
    if let Some(filters) = entry.get("filter") {
        let list = filters
            .as_array()
            .ok_or_else(|| invalid(file, format!("{at}.filter must be an array")))?;
        for (j, f) in list.iter().enumerate() {
            let property = f.get("property").and_then(Value::as_str);
            let op = f.get("op").and_then(Value::as_str);
            let value = f.get("value").and_then(Value::as_str);
            match (property, op, value) {
                (Some("code"), Some("regex"), Some(v)) => {
                    // FHIR's regex filter matches the whole value, hence the anchors.
                    let re = Regex::new(&format!("^(?:{v})$")).map_err(|e| {
                        invalid(file, format!("{at}.filter[{j}]: invalid regex: {e}"))
                    })?;
                    patterns.push(re);
                }
                _ => {
                    return Err(invalid(
                        file,
                        format!(
                            "{at}.filter[{j}]: only property \"code\" with op \"regex\" is supported"
                        ),
                    ));
                }
            }
        }
    }
    if codes.is_empty() && patterns.is_empty() {
        // A whole code system: only knowable for the project's own CodeSystems.
        match project_codes {
            Some(all) => {
                codes.extend(all.iter().map(|c| normalise_code(&system, c).into_owned()));
                listed.extend(all.iter().cloned());
                listed.sort();
            }
            None => {
                return Err(invalid(
                    file,
                    format!(
                        "{at} includes all of {system}; only the project's own CodeSystems can be \
                         included whole (list concepts or use a regex filter)"
                    ),
                ));
            }
        }
    }
    Ok(SystemRule {
        system,
        codes,
        listed,
        patterns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn embedded() -> Terminology {
        Terminology::load(&Assets::embedded()).expect("embedded terminology loads")
    }

    /// A profiles override folder with one value set file replaced.
    fn with_file(name: &str, content: &str) -> (PathBuf, Assets) {
        let dir = std::env::temp_dir().join(format!("iort-term-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("valuesets")).unwrap();
        std::fs::write(dir.join("valuesets").join(name), content).unwrap();
        let assets = Assets::with_overrides(Some(dir.clone()), None);
        (dir, assets)
    }

    #[test]
    fn every_required_value_set_is_embedded() {
        let t = embedded();
        assert!(t.value_set_count() >= ValueSetId::ALL.len());
        for id in ValueSetId::ALL {
            assert!(t.by_url.contains_key(&id.url()), "{} missing", id.slug());
        }
    }

    #[test]
    fn iort_codes_including_pcs_rule() {
        let t = embedded();
        use ValueSetId::IortProcedures as V;
        for code in ["77424", "77425", "77469", "0735T", "0735t"] {
            assert!(t.contains(V, uris::CPT, code), "{code}");
        }
        assert!(t.contains(V, uris::SNOMED_CT, "168524008"));
        assert!(t.contains(V, uris::ICD10_PCS, "DD073Z0"));
        assert!(t.contains(V, uris::ICD10_PCS, "dd073z0"));
        assert!(t.contains(V, uris::ICD10_PCS, "DW033Z0"));
        // Not intraoperative (qualifier Z), wrong section, wrong length, I/O never used in PCS.
        assert!(!t.contains(V, uris::ICD10_PCS, "DD073ZZ"));
        assert!(!t.contains(V, uris::ICD10_PCS, "0DTP0Z0"));
        assert!(!t.contains(V, uris::ICD10_PCS, "DD073Z00"));
        assert!(!t.contains(V, uris::ICD10_PCS, "DDO73Z0"));
        // "Other radiation" tables: 5th character C = intraoperative radiation therapy (IORT).
        for iort in ["DDY7CZZ", "ddy7czz", "D0Y0CZZ", "DTY0CZZ", "DVY0CZZ"] {
            assert!(t.contains(V, uris::ICD10_PCS, iort), "{iort}");
        }
        // Contact radiation / hyperthermia / plaque of the same table, beam (not Y), wrong tail.
        for not_iort in [
            "DDY77ZZ", "DDY78ZZ", "DDY7FZZ", "DD07CZZ", "DDY7C", "DIY7CZZ",
        ] {
            assert!(!t.contains(V, uris::ICD10_PCS, not_iort), "{not_iort}");
        }
        // Other radiotherapy, and the right code in the wrong system.
        assert!(!t.contains(V, uris::CPT, "77412"));
        assert!(!t.contains(V, uris::SNOMED_CT, "77425"));
        assert!(t.contains(ValueSetId::IortCptCodes, uris::CPT, "77425"));
        assert!(!t.contains(ValueSetId::IortCptCodes, uris::SNOMED_CT, "168524008"));
    }

    #[test]
    fn icd10cm_with_or_without_dot() {
        let t = embedded();
        assert!(t.contains(ValueSetId::RectalCancer, uris::ICD10_CM, "C20"));
        assert!(t.contains(ValueSetId::RectalCancer, uris::ICD10_CM, " c20 "));
        for not_rectal in ["C18.7", "C187", "C19", "C21.1", "C211"] {
            assert!(!t.contains(ValueSetId::RectalCancer, uris::ICD10_CM, not_rectal));
            assert!(t.contains(ValueSetId::AnyCancer, uris::ICD10_CM, not_rectal));
        }
        for cancer in ["C00.0", "C50.912", "C7A.026", "C4A.9", "C96.Z", "C20"] {
            assert!(
                t.contains(ValueSetId::AnyCancer, uris::ICD10_CM, cancer),
                "{cancer}"
            );
        }
        for benign in ["D01.2", "C97", "Z85.048", "K62.5"] {
            assert!(
                !t.contains(ValueSetId::AnyCancer, uris::ICD10_CM, benign),
                "{benign}"
            );
        }
        assert!(t.contains(ValueSetId::AnyCancer, uris::SNOMED_CT, "93984006"));
        assert!(t.contains(ValueSetId::AnyCancer, uris::SNOMED_CT, "254837009"));
    }

    #[test]
    fn aliases_match_the_same_members() {
        let t = embedded();
        use ValueSetId::*;
        let cm_oid = "urn:oid:2.16.840.1.113883.6.90";
        for code in ["C20", "c20", " C20 "] {
            assert!(t.contains(RectalCancer, cm_oid, code), "{code}");
        }
        assert!(t.contains(RectalCancer, "URN:OID:2.16.840.1.113883.6.90", "C20"));
        assert!(!t.contains(RectalCancer, cm_oid, "C18.7"));
        assert!(t.contains(AnyCancer, cm_oid, "C18.7"));
        assert!(t.contains(SecondaryCancer, cm_oid, "C78.5"));
        let sct_oid = "urn:oid:2.16.840.1.113883.6.96";
        assert!(t.contains(RectalCancer, sct_oid, "93984006"));
        assert!(t.contains(T4Category, sct_oid, "1228944003"));
        let loinc_oid = "urn:oid:2.16.840.1.113883.6.1";
        assert!(t.contains(TCategoryObservation, loinc_oid, "21905-5"));
        assert!(t.contains(MarginDistanceObservation, loinc_oid, "33737-8"));
        assert!(t.contains(IortCptCodes, "urn:oid:2.16.840.1.113883.6.12", "77425"));
        for pcs in [
            "urn:oid:2.16.840.1.113883.6.4",
            "http://www.icd10data.com/icd10pcs",
        ] {
            assert!(t.contains(IortProcedures, pcs, "dd073z0"), "{pcs}");
            assert!(t.contains(IortProcedures, pcs, "DDY7CZZ"), "{pcs}");
        }
        // An OID that is not a registered alias is just another system.
        assert!(!t.contains(RectalCancer, "urn:oid:2.16.840.1.113883.6.91", "C20"));
        assert_eq!(
            canonical_system(" urn:oid:2.16.840.1.113883.6.3 "),
            uris::ICD10
        );
        assert_eq!(canonical_system("urn:local"), "urn:local");
        assert_eq!(system_label(cm_oid), "ICD-10-CM");
        assert_eq!(system_label(sct_oid), "SNOMED CT");
        assert_eq!(system_label(uris::ICD10), "ICD-10");
        assert_eq!(system_label("urn:local"), "urn:local");
        assert!(same_code(cm_oid, "c18.7", uris::ICD10_CM, "C187"));
        assert!(!same_code(uris::ICD10, "C18.7", uris::ICD10_CM, "C18.7"));
    }

    #[test]
    fn who_icd10_is_its_own_system_with_explicit_includes() {
        let t = embedded();
        use ValueSetId::*;
        for (system, expected) in [(uris::ICD10, true), ("urn:oid:2.16.840.1.113883.6.3", true)] {
            assert_eq!(t.contains(RectalCancer, system, "C20"), expected);
            assert_eq!(t.contains(RectalCancer, system, "c20"), expected);
        }
        for other in ["C18.7", "C187", "C19", "C21.1", "C50.9", "C97"] {
            assert!(!t.contains(RectalCancer, uris::ICD10, other), "{other}");
            assert!(t.contains(AnyCancer, uris::ICD10, other), "{other}");
        }
        for secondary in ["C78.7", "C787", "C77.0", "C79.5"] {
            assert!(
                t.contains(SecondaryCancer, uris::ICD10, secondary),
                "{secondary}"
            );
        }
        assert!(!t.contains(SecondaryCancer, uris::ICD10, "C76.5"));
        for not_cancer in ["D01.2", "Z85.0", "C4A.9", "C98"] {
            assert!(
                !t.contains(AnyCancer, uris::ICD10, not_cancer),
                "{not_cancer}"
            );
        }
        // C97 exists in WHO ICD-10 only.
        assert!(!t.contains(AnyCancer, uris::ICD10_CM, "C97"));
    }

    #[test]
    fn snomed_cancer_recognition() {
        let t = embedded();
        use ValueSetId::*;
        let sct = uris::SNOMED_CT;
        // Rectum primaries (eCQM colorectal expansion), including local recurrence.
        for rectal in [
            "363351006",
            "93984006",
            "254582000",
            "1268633007",
            "314966008",
            "448994001",
        ] {
            assert!(t.contains(RectalCancer, sct, rectal), "{rectal}");
            assert!(t.contains(AnyCancer, sct, rectal), "{rectal}");
            assert!(!t.contains(SecondaryCancer, sct, rectal), "{rectal}");
        }
        // Known other cancers: Synthea colon, mCODE example breast, lung, prostate, and the
        // ambiguous or non-C20 colorectal concepts.
        for other in [
            "109838007",
            "353431000119107",
            "93761005",
            "363406005",
            "254837009",
            "254637007",
            "423121009",
            "399068003",
            "93980002",
            "187760008",
            "96281000119107",
            "443488001",
            "713573006",
            "1156797006",
            "369451000",
            "93870000",
        ] {
            assert!(t.contains(AnyCancer, sct, other), "{other}");
            assert!(!t.contains(RectalCancer, sct, other), "{other}");
        }
        // Secondary (metastatic): never rectal, even when the site is the rectum.
        for secondary in [
            "128462008",
            "94381002",
            "94391008",
            "94222008",
            "94225005",
            "94260004",
            "94513006",
            "285612000",
            "1237484006",
            "1269123008",
        ] {
            assert!(t.contains(SecondaryCancer, sct, secondary), "{secondary}");
            assert!(!t.contains(RectalCancer, sct, secondary), "{secondary}");
        }
        // Not cancers: history situations, hereditary syndromes, a T category finding, benign.
        for not_cancer in [
            "429084005",
            "315058005",
            "395705003",
            "126906006",
            "68496003",
        ] {
            assert!(!t.contains(AnyCancer, sct, not_cancer), "{not_cancer}");
            assert!(
                !t.contains(SecondaryCancer, sct, not_cancer),
                "{not_cancer}"
            );
        }
    }

    /// The SNOMED CT concepts listed in an embedded value set file, with their displays.
    fn listed_concepts(slug: &str) -> Vec<(String, String)> {
        let json = Assets::embedded()
            .read_json(Folder::Profiles, &format!("valuesets/{slug}.json"))
            .unwrap();
        json["compose"]["include"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["system"] == uris::SNOMED_CT)
            .flat_map(|i| i["concept"].as_array().cloned().unwrap_or_default())
            .map(|c| {
                (
                    c["code"].as_str().unwrap().to_owned(),
                    c["display"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn rectal_list_is_rectum_only_and_disjoint_from_secondaries() {
        let t = embedded();
        let rectal = listed_concepts("rectal-cancer");
        assert!(rectal.len() >= 10);
        for (code, display) in &rectal {
            let d = display.to_lowercase();
            assert!(d.contains("rectum"), "{code} {display}");
            for ambiguous in ["rectosigmoid", "anus", "anorect", "colon", "metasta"] {
                assert!(!d.contains(ambiguous), "{code} {display}");
            }
            assert!(!t.contains(ValueSetId::SecondaryCancer, uris::SNOMED_CT, code));
        }
        // No listed other cancer is a rectal one in disguise.
        for (code, display) in listed_concepts("any-cancer") {
            let d = display.to_lowercase();
            if d.contains("rectum") && !t.contains(ValueSetId::RectalCancer, uris::SNOMED_CT, &code)
            {
                assert!(
                    [
                        "rectosigmoid",
                        "anus",
                        "anorect",
                        "colon",
                        "extension",
                        "kaposi",
                        "stromal",
                        "carcinoid",
                        "neuroendocrine"
                    ]
                    .iter()
                    .any(|a| d.contains(a)),
                    "{code} {display}"
                );
            }
        }
    }

    #[test]
    fn t_categories() {
        let t = embedded();
        for c in ["1228944003", "1229865000", "1228924009"] {
            assert!(t.contains(ValueSetId::T4Category, uris::SNOMED_CT, c));
            assert!(!t.contains(ValueSetId::BelowT4Category, uris::SNOMED_CT, c));
        }
        for c in ["T4", "cT4", "pT4a", "ypT4b", "rpT4", "T4e"] {
            assert!(t.contains(ValueSetId::T4Category, uris::AJCC, c), "{c}");
        }
        for c in [
            "T3",
            "cT3",
            "pT2",
            "ypT1a",
            "Tis",
            "pTis(DCIS)",
            "T0",
            "cT1mi",
        ] {
            assert!(
                t.contains(ValueSetId::BelowT4Category, uris::AJCC, c),
                "{c}"
            );
            assert!(!t.contains(ValueSetId::T4Category, uris::AJCC, c), "{c}");
        }
        for c in ["TX", "pTX", "T4x", "T", "N1"] {
            assert!(
                !t.contains(ValueSetId::BelowT4Category, uris::AJCC, c),
                "{c}"
            );
            assert!(!t.contains(ValueSetId::T4Category, uris::AJCC, c), "{c}");
        }
        assert!(t.contains(ValueSetId::BelowT4Category, uris::SNOMED_CT, "1228938002"));
        // Older SNOMED CT T category findings (Synthea, mCODE STU1 guidance, eCQM).
        assert!(t.contains(ValueSetId::T4Category, uris::SNOMED_CT, "65565005"));
        assert!(!t.contains(ValueSetId::BelowT4Category, uris::SNOMED_CT, "65565005"));
        for c in [
            "58790005",
            "23351008",
            "261650005",
            "67673008",
            "14410001",
            "395705003",
        ] {
            assert!(
                t.contains(ValueSetId::BelowT4Category, uris::SNOMED_CT, c),
                "{c}"
            );
            assert!(
                !t.contains(ValueSetId::T4Category, uris::SNOMED_CT, c),
                "{c}"
            );
        }
        // TX category (67101007) says nothing either way.
        assert!(!t.contains(ValueSetId::BelowT4Category, uris::SNOMED_CT, "67101007"));
        assert!(!t.contains(ValueSetId::T4Category, uris::SNOMED_CT, "67101007"));
    }

    #[test]
    fn observation_codes_follow_mcode_max_value_sets() {
        let t = embedded();
        use ValueSetId::*;
        // TNMPrimaryTumorStagingTypeMaxVS and TNMStageGroupStagingTypeMaxVS (mCODE STU4).
        for c in ["78873005", "399504009", "384625004"] {
            assert!(t.contains(TCategoryObservation, uris::SNOMED_CT, c), "{c}");
        }
        for c in ["21905-5", "21899-0", "21911-3"] {
            assert!(t.contains(TCategoryObservation, uris::LOINC, c), "{c}");
        }
        for c in ["399390009", "399537006", "399588009"] {
            assert!(t.contains(StageGroupObservation, uris::SNOMED_CT, c), "{c}");
        }
        for c in ["21908-9", "21902-2", "21914-7"] {
            assert!(t.contains(StageGroupObservation, uris::LOINC, c), "{c}");
        }
        // N category codes are not T category codes.
        assert!(!t.contains(TCategoryObservation, uris::LOINC, "21906-3"));
        assert!(!t.contains(TCategoryObservation, uris::SNOMED_CT, "399534004"));
        assert!(t.contains(MarginFindingObservation, uris::LOINC, "84892-9"));
        assert!(t.contains(MarginFindingObservation, uris::SNOMED_CT, "395536008"));
        assert!(t.contains(MarginPositive, uris::SNOMED_CT, "1222639002"));
        assert!(t.contains(MarginClear, uris::SNOMED_CT, "1222638005"));
    }

    #[test]
    fn project_margin_codes_and_status_codes() {
        let t = embedded();
        let cs = format!("{CANONICAL_BASE}/CodeSystem/surgical-margin-status");
        assert!(t.contains(ValueSetId::MarginClose, &cs, "close"));
        assert!(t.contains(ValueSetId::MarginPositive, &cs, "positive"));
        assert!(!t.contains(ValueSetId::MarginPositive, &cs, "close"));
        assert!(t.contains_code(ValueSetId::ObservationUnusableStatus, "cancelled"));
        assert!(!t.contains_code(ValueSetId::ObservationUnusableStatus, "final"));
        assert!(t.contains_code(ValueSetId::CoverageActiveStatus, "active"));
        assert!(t.contains_code(ValueSetId::ConditionRecurrence, "recurrence"));
    }

    #[test]
    fn observation_code_sets_enumerate_as_written() {
        let t = embedded();
        let all: Vec<String> = ValueSetId::OBSERVATION_CODES
            .iter()
            .flat_map(|id| t.enumerate(*id).unwrap())
            .map(|c| c.to_string())
            .collect();
        for expected in [
            "http://snomed.info/sct|78873005",
            "http://loinc.org|21911-3",
            "http://snomed.info/sct|399588009",
            "http://loinc.org|21914-7",
            "http://snomed.info/sct|395536008",
            "http://loinc.org|84892-9",
            "http://loinc.org|33737-8",
        ] {
            assert!(all.iter().any(|c| c == expected), "{expected} in {all:?}");
        }
        // Every enumerated concept is a member, and a regex-defined set is refused.
        for id in ValueSetId::OBSERVATION_CODES {
            for c in t.enumerate(id).unwrap() {
                assert!(t.contains(id, &c.system, &c.code), "{c}");
            }
        }
        let e = t.enumerate(ValueSetId::AnyCancer).unwrap_err();
        assert!(
            e.file.ends_with(".json") && e.message.contains("regex"),
            "{e:?}"
        );
        assert_eq!(
            Terminology::default().enumerate(ValueSetId::T4Category),
            Ok(vec![])
        );
    }

    #[test]
    fn enumeration_follows_includes_drops_excludes_and_keeps_codes_as_written() {
        let inner = r#"{"resourceType":"ValueSet","url":"https://example.org/ValueSet/inner",
            "name":"I","title":"I","status":"draft","description":"SOURCE: test",
            "compose":{"include":[{"system":"http://hl7.org/fhir/sid/icd-10-cm",
              "concept":[{"code":"C18.7"},{"code":"C20"},{"code":"C187"}]}]}}"#;
        let (dir, _) = with_file("zz-inner.json", inner);
        // An override of a required set: the union of the inner set and LOINC, minus C20.
        let outer = r#"{"resourceType":"ValueSet",
            "url":"https://iort-cds.github.io/fhir/ValueSet/margin-distance-observation",
            "name":"O","title":"O","status":"draft","description":"SOURCE: test",
            "compose":{"include":[{"system":"http://loinc.org","concept":[{"code":"33737-8"}]},
              {"valueSet":["https://example.org/ValueSet/inner"]}],
              "exclude":[{"system":"http://hl7.org/fhir/sid/icd-10-cm","concept":[{"code":"c20"}]}]}}"#;
        std::fs::write(
            dir.join("valuesets/margin-distance-observation.json"),
            outer,
        )
        .unwrap();
        let assets = Assets::with_overrides(Some(dir.clone()), None);
        let t = Terminology::load(&assets).unwrap();
        let got: Vec<String> = t
            .enumerate(ValueSetId::MarginDistanceObservation)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            [
                "http://loinc.org|33737-8",
                "http://hl7.org/fhir/sid/icd-10-cm|C18.7"
            ]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_observation_code_set_with_a_regex_filter_is_refused_at_load() {
        let vs = r#"{"resourceType":"ValueSet",
            "url":"https://iort-cds.github.io/fhir/ValueSet/t-category-observation",
            "name":"T","title":"T","status":"draft","description":"SOURCE: test",
            "compose":{"include":[{"system":"http://loinc.org","concept":[{"code":"21905-5"}]},
              {"system":"http://loinc.org","filter":[{"property":"code","op":"regex","value":"219\\d\\d-\\d"}]}]}}"#;
        let (dir, assets) = with_file("t-category-observation.json", vs);
        let err = Terminology::load(&assets).unwrap_err().to_string();
        assert!(
            err.contains("valuesets/t-category-observation.json")
                && err.contains("compose.include[1]")
                && err.contains("regex")
                && err.contains("prefetch"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn default_terminology_is_empty() {
        let t = Terminology::default();
        assert!(!t.contains(ValueSetId::IortCptCodes, uris::CPT, "77425"));
        assert!(!t.contains_code(ValueSetId::CoverageActiveStatus, "active"));
    }

    #[test]
    fn malformed_file_is_named() {
        let (dir, assets) = with_file("rectal-cancer.json", "{ not json");
        let err = Terminology::load(&assets).unwrap_err().to_string();
        assert!(err.contains("valuesets/rectal-cancer.json"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unsupported_filter_is_rejected_with_file_name() {
        let vs = r#"{"resourceType":"ValueSet","url":"https://example.org/ValueSet/x","name":"X",
            "title":"X","status":"draft","description":"SOURCE: test",
            "compose":{"include":[{"system":"http://snomed.info/sct",
              "filter":[{"property":"concept","op":"is-a","value":"363346000"}]}]}}"#;
        let (dir, assets) = with_file("zz-extra.json", vs);
        let err = Terminology::load(&assets).unwrap_err().to_string();
        assert!(err.contains("valuesets/zz-extra.json"), "{err}");
        assert!(err.contains("regex"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn description_must_name_source_and_includes_must_resolve() {
        let no_source = r#"{"resourceType":"ValueSet","url":"https://example.org/ValueSet/y",
            "name":"Y","title":"Y","status":"draft","description":"codes",
            "compose":{"include":[{"system":"http://loinc.org","concept":[{"code":"1-8"}]}]}}"#;
        let (dir, assets) = with_file("zz-y.json", no_source);
        let err = Terminology::load(&assets).unwrap_err().to_string();
        assert!(err.contains("zz-y.json") && err.contains("SOURCE"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();

        let dangling = r#"{"resourceType":"ValueSet","url":"https://example.org/ValueSet/z",
            "name":"Z","title":"Z","status":"draft","description":"SOURCE: test",
            "compose":{"include":[{"valueSet":["https://example.org/ValueSet/nope"]}]}}"#;
        let (dir, assets) = with_file("zz-z.json", dangling);
        let err = Terminology::load(&assets).unwrap_err().to_string();
        assert!(err.contains("zz-z.json") && err.contains("nope"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn include_cycle_is_rejected() {
        let a = r#"{"resourceType":"ValueSet","url":"https://example.org/ValueSet/a",
            "name":"A","title":"A","status":"draft","description":"SOURCE: test",
            "compose":{"include":[{"valueSet":["https://example.org/ValueSet/b"]}]}}"#;
        let b = r#"{"resourceType":"ValueSet","url":"https://example.org/ValueSet/b",
            "name":"B","title":"B","status":"draft","description":"SOURCE: test",
            "compose":{"include":[{"valueSet":["https://example.org/ValueSet/a"]}]}}"#;
        let (dir, _) = with_file("zz-a.json", a);
        std::fs::write(dir.join("valuesets/zz-b.json"), b).unwrap();
        let assets = Assets::with_overrides(Some(dir.clone()), None);
        let err = Terminology::load(&assets).unwrap_err().to_string();
        assert!(err.contains("cycle"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_required_value_set_is_reported() {
        // Overriding a required file with a different url leaves the required url missing.
        let other = r#"{"resourceType":"ValueSet","url":"https://example.org/ValueSet/moved",
            "name":"M","title":"M","status":"draft","description":"SOURCE: test",
            "compose":{"include":[{"system":"http://loinc.org","concept":[{"code":"1-8"}]}]}}"#;
        let (dir, assets) = with_file("rectum-body-site.json", other);
        let err = Terminology::load(&assets).unwrap_err();
        assert!(
            matches!(err, TerminologyError::Missing { ref url } if url.ends_with("/rectum-body-site"))
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_project_code_is_rejected() {
        let vs = r#"{"resourceType":"ValueSet","url":"https://example.org/ValueSet/w",
            "name":"W","title":"W","status":"draft","description":"SOURCE: test",
            "compose":{"include":[{"system":"https://iort-cds.github.io/fhir/CodeSystem/surgical-margin-status",
              "concept":[{"code":"maybe"}]}]}}"#;
        let (dir, assets) = with_file("zz-w.json", vs);
        let err = Terminology::load(&assets).unwrap_err().to_string();
        assert!(err.contains("zz-w.json") && err.contains("maybe"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn units_and_profiles() {
        assert_eq!(
            length_unit_to_mm_exponent(Some(uris::UCUM), Some("cm"), None),
            Some(1)
        );
        assert_eq!(length_unit_to_mm_exponent(None, Some("um"), None), Some(-3));
        assert_eq!(length_unit_to_mm_exponent(None, None, Some("mm")), Some(0));
        assert_eq!(
            length_unit_to_mm_exponent(None, None, Some("\u{b5}m")),
            Some(-3)
        );
        assert_eq!(
            length_unit_to_mm_exponent(Some(uris::UCUM), Some("kg"), None),
            None
        );
        assert_eq!(
            length_unit_to_mm_exponent(Some("urn:local"), Some("x"), Some("cm")),
            Some(1)
        );
        assert!(is_cancer_condition_profile(
            "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-primary-cancer-condition|4.0.0"
        ));
        assert!(!is_cancer_condition_profile(
            "http://hl7.org/fhir/us/core/StructureDefinition/us-core-condition"
        ));
        assert_eq!(system_label(uris::SNOMED_CT), "SNOMED CT");
        assert_eq!(normalise_code(uris::ICD10_CM, "c18.7"), "C187");
    }
}
