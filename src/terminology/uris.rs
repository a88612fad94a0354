//! System URIs and structural URLs (not codes) the extractors need, so `src/facts` holds no
//! code literals; and the canonical base of the project's own FHIR resources.

/// Canonical base of the project's own FHIR resources.
pub const CANONICAL_BASE: &str = "https://iort-cds.github.io/fhir";

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
pub const MODALITY_AND_TECHNIQUE_EXTENSION: &str =
    "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-radiotherapy-modality-and-technique";
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
