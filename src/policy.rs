//! The payer policy's identity and rules, loaded from `fhir-profiles/policy/`.

use crate::assets::Assets;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Asset(#[from] crate::assets::AssetError),
}

/// The policy as data.
#[derive(Debug, Clone, Default)]
pub struct Policy {}

impl Policy {
    pub fn load(_assets: &Assets) -> Result<Self, PolicyError> {
        Ok(Self {})
    }
}
