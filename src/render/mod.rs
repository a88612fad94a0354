//! Stage 5 of the pipeline: cards and CRD coverage-information system actions.

use crate::assets::Assets;
use crate::decision::Determination;
use crate::hook::{CdsResponse, CrdConfiguration};
use crate::policy::Policy;

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Asset(#[from] crate::assets::AssetError),
}

/// Card templates and policy identity, compiled once at start-up.
#[derive(Debug)]
pub struct Renderer {}

impl Renderer {
    pub fn load(_assets: &Assets, _policy: &Policy) -> Result<Self, RenderError> {
        Ok(Self {})
    }

    pub fn render(
        &self,
        _determinations: &[Determination],
        _crd: &CrdConfiguration,
        _today: chrono::NaiveDate,
    ) -> CdsResponse {
        CdsResponse::default()
    }
}
