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
//!
//! Layout: `uris` (system and structural URIs), `value_set_id` (the value sets the code names),
//! `codes` (how codes and systems compare), `ucum` (lengths), `loader` (reading and checking
//! the files); this file holds the loaded structures and the lookups.

mod codes;
mod loader;
mod ucum;
pub mod uris;
mod value_set_id;

use std::collections::{HashMap, HashSet};

use fhirbolt::model::r4::types::{CodeableConcept, Coding};
use regex::Regex;

pub use codes::{
    canonical_system, is_cancer_condition_profile, is_secondary_cancer_condition_profile,
    normalise_code, same_code, system_label,
};
pub use ucum::length_unit_to_mm_exponent;
pub use uris::CANONICAL_BASE;
pub use value_set_id::ValueSetId;

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

impl Terminology {
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

#[cfg(test)]
mod tests;
