//! SupOnly: masked cross-entropy on the labeled batch.

use candle_core::{Result, Tensor};

use super::{Method, MethodInit, StepContext};

/// Supervised baseline.
#[derive(Debug, Default)]
pub struct Supervised;

impl Supervised {
    /// Registry constructor.
    pub fn boxed(_init: &MethodInit) -> Result<Box<dyn Method>> {
        Ok(Box::new(Self))
    }
}

impl Method for Supervised {
    fn name(&self) -> &'static str {
        "supervised"
    }

    fn losses(&mut self, ctx: &StepContext) -> Result<Vec<(&'static str, Tensor)>> {
        let (_, ce) = super::supervised_ce(ctx)?;
        Ok(vec![("ce", ce)])
    }
}
