//! The value sets the service reads by, named in code: each is one file of
//! `fhir-profiles/valuesets/`, and all must be present at start-up.

use super::uris::CANONICAL_BASE;

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
    /// Condition.verificationStatus values of a diagnosis not (yet) established.
    ConditionUnconfirmedVerification,
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
    pub const ALL: [ValueSetId; 25] = [
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
        ValueSetId::ConditionUnconfirmedVerification,
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
            ValueSetId::ConditionUnconfirmedVerification => "condition-unconfirmed-verification",
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
