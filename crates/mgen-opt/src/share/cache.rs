//! [`ShareCache`]: retrained branches kept across runs of the generator.
//!
//! Retraining a branch is the generator's one expensive step, and it is
//! deterministic: its result depends only on what its key digests (the
//! task's and the source's weights, the depth, the settings, the training
//! inputs, the seed). `mgen compare` reruns the search once per chip round
//! and per regeneration level, so it gives every run the same cache (the
//! driver creates one; [`super::share`] uses a fresh one) and later runs
//! retrain nothing they have retrained before.
//!
//! Invariants: an entry under a key equals what retraining with that key's
//! inputs returns, so a hit changes no output; at most [`CACHE_VALUES`]
//! f32 values are held (a retraining that would exceed it is not kept).

use super::Tensors;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The cache's capacity in f32 values (1 GB).
pub(super) const CACHE_VALUES: usize = 1 << 28;

/// A retrained branch.
#[derive(Clone)]
pub(super) struct Trained {
    pub tensors: Arc<Tensors>,
    pub log: crate::train::TrainLog,
    pub parameters: usize,
}

/// Retrained branches by a digest of everything that determines them.
/// Cloning shares the cache (the clones see each other's entries).
#[derive(Clone, Default)]
pub struct ShareCache {
    branches: Arc<Mutex<HashMap<String, Trained>>>,
}

impl ShareCache {
    pub(super) fn get(&self, key: &str) -> Option<Trained> {
        let g = self.branches.lock().ok()?;
        g.get(key).cloned()
    }

    pub(super) fn put(&self, key: String, t: &Trained) {
        if let Ok(mut map) = self.branches.lock() {
            let held: usize = map.values().map(|x| x.parameters).sum();
            if held + t.parameters <= CACHE_VALUES {
                map.insert(key, t.clone());
            }
        }
    }
}

impl std::fmt::Debug for ShareCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.branches.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("ShareCache")
            .field("branches", &held)
            .finish()
    }
}
