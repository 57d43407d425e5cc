//! The config a VM's requests use now, with the stats its rollouts and
//! flags count into: swapped whole by the root context when a new config
//! arrives, held by each request until it ends.

use dimmer_core::Compiled;

use crate::metrics::{DimensionStats, VariantStats, VersionStats};

/// The config every new request of this VM uses.
pub struct Active {
    pub cfg: Compiled,
    pub stats: Vec<Vec<VersionStats>>,
    /// Per rollout, the stats of mirrored requests, if it counts them.
    pub shadow_stats: Vec<Option<VersionStats>>,
    pub flag_stats: Vec<Vec<VariantStats>>,
    /// Per rollout, per cohort dimension.
    pub mix: Vec<Vec<DimensionStats>>,
}

impl Active {
    pub fn flush(&self) {
        self.flag_stats
            .iter()
            .flatten()
            .for_each(VariantStats::flush);
    }
}

impl Drop for Active {
    // The last request of a replaced config has ended: its counts go out now.
    fn drop(&mut self) {
        self.flush();
    }
}
