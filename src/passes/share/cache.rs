//! Retrained branches of this process, by a digest of everything that
//! determines them (the task's and the source's weights, the depth, the
//! settings, the training inputs, the seed).
//!
//! Training is deterministic, so this is a memo: `mgen compare`'s chip
//! rounds rerun the search and would otherwise retrain every branch.
//! Invariants: an entry under a key equals what retraining with that key's
//! inputs returns, so a hit changes no output; at most [`MEMO_VALUES`] f32
//! values are kept.

use super::Tensors;
use std::collections::HashMap;
use std::sync::Arc;

/// A retrained branch.
#[derive(Clone)]
pub(super) struct Trained {
    pub tensors: Arc<Tensors>,
    pub log: crate::train::TrainLog,
    pub parameters: usize,
}

static MEMO: std::sync::Mutex<Option<HashMap<String, Trained>>> = std::sync::Mutex::new(None);
/// The memo's capacity in f32 values (1 GB).
const MEMO_VALUES: usize = 1 << 28;

pub(super) fn memo_get(key: &str) -> Option<Trained> {
    let g = MEMO.lock().ok()?;
    g.as_ref()?.get(key).cloned()
}

pub(super) fn memo_put(key: String, t: &Trained) {
    if let Ok(mut g) = MEMO.lock() {
        let map = g.get_or_insert_with(HashMap::new);
        let held: usize = map.values().map(|x| x.parameters).sum();
        if held + t.parameters <= MEMO_VALUES {
            map.insert(key, t.clone());
        }
    }
}
