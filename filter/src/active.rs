//! The config a VM's requests use now, with the stats its rollouts and
//! flags count into: swapped whole by the root context when a new config
//! arrives, held by each request until it ends.

use std::cell::RefCell;

use dimmer_core::request::PairAt;
use dimmer_core::{Compiled, Evaluation};

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
    /// Where each request's header map is laid out, its flags evaluated and
    /// their header written: buffers for all of a VM's requests (a VM runs
    /// one callback at a time), not allocations for each.
    pub scratch: RefCell<Scratch>,
}

#[derive(Default)]
pub struct Scratch {
    pub results: Vec<Option<Evaluation>>,
    pub header: String,
    /// The request's header map's layout.
    pub index: Vec<PairAt>,
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
