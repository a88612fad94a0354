//! Code lists the facts are read by, loaded once at start-up from the FHIR ValueSets and
//! CodeSystems under `fhir-profiles/`.

use crate::assets::Assets;

/// Failure to load the terminology files; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TerminologyError {
    #[error(transparent)]
    Asset(#[from] crate::assets::AssetError),
}

/// The loaded value sets.
#[derive(Debug, Clone, Default)]
pub struct Terminology {}

impl Terminology {
    pub fn load(_assets: &Assets) -> Result<Self, TerminologyError> {
        Ok(Self {})
    }
}
