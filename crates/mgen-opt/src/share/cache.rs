//! [`ShareCache`]: retrained branches and jointly trained groups kept
//! across runs of the generator, in memory and (joint groups) on disk.
//!
//! It also keeps each task's own outputs on its calibration inputs (the
//! search's first step, a full forward pass of every task model) and on its
//! training inputs (the targets of regeneration), and every refitted head,
//! keyed by digests of the tensors, head, depth and inputs they depend on,
//! so a later chip round or level computes none of them again.
//!
//! Retraining a branch is the generator's one expensive step, and it is
//! deterministic: its result depends only on what its key digests (the
//! task's and the source's weights, the depth, the settings, the training
//! inputs, the seed). `mgen compare` reruns the search once per chip round
//! and per regeneration level, so it gives every run the same cache (the
//! driver creates one; [`super::share`] uses a fresh one) and later runs
//! retrain nothing they have retrained before.
//!
//! A joint training (`regenerate = joint`) costs minutes on a real
//! checkpoint, so it is also kept **on disk** when the cache has a folder
//! ([`ShareCache::on_disk`]; `mgen --cache DIR`): one safetensors file per
//! key, `joint-<key>.safetensors`, holding the trunk's tensors as
//! `trunk/<name>`, task `i`'s branch as `<i>/<name>` and the training log
//! as JSON metadata. A rerun, another command on the same inputs, or a
//! later `compare` then trains nothing it trained before.
//!
//! Invariants: an entry under a key equals what retraining with that key's
//! inputs returns, so a hit changes no output; at most [`CACHE_VALUES`]
//! f32 values are held in memory (a retraining that would exceed it is not
//! kept there); a file is written atomically and read back only when it
//! is complete, of the expected format and finite everywhere — anything
//! else is a miss (trained again and overwritten), never an error.

use super::Tensors;
use ndarray::ArrayD;
use safetensors::tensor::{Dtype, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The format tag of a joint cache file.
const JOINT_FORMAT: &str = "mgen-joint-v1";
/// A joint cache file larger than this is not read (1 GiB).
const JOINT_FILE_BYTES: u64 = 1 << 30;

/// The cache's capacity in f32 values (1 GB).
pub(super) const CACHE_VALUES: usize = 1 << 28;

/// A task's own outputs on its calibration inputs, `[requests, width]`,
/// and its per-block swap change.
pub(super) type Own = Arc<(ndarray::Array2<f32>, Vec<f64>)>;

/// Small results by key, shared by every clone (outputs on a few thousand
/// requests, refitted heads: no capacity bound needed).
pub(super) struct Memo<T>(Arc<Mutex<HashMap<String, T>>>);

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Memo(Arc::default())
    }
}

impl<T> Clone for Memo<T> {
    fn clone(&self) -> Self {
        Memo(self.0.clone())
    }
}

impl<T: Clone> Memo<T> {
    /// The entry under `key`, if an earlier run kept one.
    pub(super) fn get(&self, key: &str) -> Option<T> {
        self.0.lock().ok()?.get(key).cloned()
    }

    /// Keeps `value` under `key`.
    pub(super) fn put(&self, key: String, value: T) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(key, value);
        }
    }
}

/// A retrained branch.
#[derive(Clone)]
pub(super) struct Trained {
    pub tensors: Arc<Tensors>,
    pub log: crate::train::TrainLog,
    pub parameters: usize,
}

/// A jointly trained group: the trunk, each task's branch (in the group's
/// task order) and what the training did.
#[derive(Clone, Debug)]
pub(super) struct JointTrained {
    pub trunk: Arc<Tensors>,
    pub branches: Vec<Arc<Tensors>>,
    pub log: mgen_train::Log,
}

impl JointTrained {
    fn values(&self) -> usize {
        let n = |t: &Tensors| t.values().map(|a| a.len()).sum::<usize>();
        n(&self.trunk) + self.branches.iter().map(|b| n(b)).sum::<usize>()
    }
}

/// Where a joint training came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hit {
    /// Trained in this run.
    Trained,
    /// From an earlier run in this process (`compare`'s rounds).
    Memory,
    /// From the cache folder.
    Disk,
}

/// Retrained branches by a digest of everything that determines them.
/// Cloning shares the cache (the clones see each other's entries).
#[derive(Clone, Default)]
pub struct ShareCache {
    branches: Arc<Mutex<HashMap<String, Trained>>>,
    /// Each task's own outputs on its calibration inputs and its per-block
    /// swap change (step 1 of the search), by [`super::redundancy`]'s key.
    pub(super) owns: Memo<Own>,
    /// Each task's own outputs on its training inputs (every regeneration's
    /// targets), and refitted heads, by [`super::regenerate`]'s key.
    pub(super) own_train: Memo<Arc<ndarray::Array2<f32>>>,
    pub(super) heads: Memo<super::HeadPair>,
    joints: Arc<Mutex<HashMap<String, JointTrained>>>,
    dir: Option<PathBuf>,
}

impl ShareCache {
    /// A cache that also keeps joint trainings in folder `dir` (created
    /// when the first one is written).
    pub fn on_disk(dir: PathBuf) -> ShareCache {
        ShareCache {
            dir: Some(dir),
            ..ShareCache::default()
        }
    }

    /// The cache folder, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The joint training under `key`: from memory, else from the folder.
    pub(super) fn joint(&self, key: &str) -> Option<(JointTrained, Hit)> {
        if let Some(j) = self.joints.lock().ok()?.get(key) {
            return Some((j.clone(), Hit::Memory));
        }
        let j = read_joint(&self.joint_path(key)?)?;
        self.remember_joint(key, &j);
        Some((j, Hit::Disk))
    }

    /// Keeps a joint training in memory and, with a folder, on disk.
    pub(super) fn put_joint(&self, key: &str, j: &JointTrained) -> Result<(), crate::diag::Diags> {
        self.remember_joint(key, j);
        match self.joint_path(key) {
            Some(path) => write_joint(&path, j),
            None => Ok(()),
        }
    }

    fn remember_joint(&self, key: &str, j: &JointTrained) {
        if let Ok(mut map) = self.joints.lock() {
            let held: usize = map.values().map(|x| x.values()).sum();
            if held + j.values() <= CACHE_VALUES {
                map.insert(key.to_string(), j.clone());
            }
        }
    }

    fn joint_path(&self, key: &str) -> Option<PathBuf> {
        Some(self.dir.as_ref()?.join(format!("joint-{key}.safetensors")))
    }

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
        let joints = self.joints.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("ShareCache")
            .field("branches", &held)
            .field("joints", &joints)
            .field("dir", &self.dir)
            .finish()
    }
}

/// Writes `j` to `path` atomically (the folder is created).
fn write_joint(path: &Path, j: &JointTrained) -> Result<(), crate::diag::Diags> {
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut add = |prefix: &str, t: &Tensors| {
        let mut names: Vec<&String> = t.keys().collect();
        names.sort();
        for n in names {
            let a = &t[n];
            let bytes: Vec<u8> = a.iter().flat_map(|v| v.to_le_bytes()).collect();
            owned.push((format!("{prefix}/{n}"), a.shape().to_vec(), bytes));
        }
    };
    add("trunk", &j.trunk);
    for (i, b) in j.branches.iter().enumerate() {
        add(&i.to_string(), b);
    }
    let internal = |e: String| crate::diag::Diags::from(crate::diag::Diagnostic::internal(e));
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, s, b)| TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<Result<_, _>>()
        .map_err(|e| internal(format!("a joint cache tensor: {e}")))?;
    let log = serde_json::to_string(&j.log).map_err(|e| internal(e.to_string()))?;
    let meta: HashMap<String, String> = [
        ("format".to_string(), JOINT_FORMAT.to_string()),
        ("branches".to_string(), j.branches.len().to_string()),
        ("log".to_string(), log),
    ]
    .into_iter()
    .collect();
    let bytes = safetensors::tensor::serialize(views, Some(meta))
        .map_err(|e| internal(format!("a joint cache file: {e}")))?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| {
            crate::diag::Diags::from(
                crate::diag::Diagnostic::error(
                    crate::diag::Code::E105,
                    format!("cannot create the cache folder `{}`: {e}", parent.display()),
                )
                .help("pass `--cache DIR` with a folder you can write, or `--cache none`"),
            )
        })?;
    }
    mgen_util::fs::write_atomic(path, &bytes)
}

/// Reads a joint cache file; `None` when it is missing or not exactly what
/// [`write_joint`] writes.
fn read_joint(path: &Path) -> Option<JointTrained> {
    let len = std::fs::metadata(path).ok()?.len();
    if len > JOINT_FILE_BYTES {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).ok()?;
    let meta = meta.metadata().as_ref()?;
    if meta.get("format").map(String::as_str) != Some(JOINT_FORMAT) {
        return None;
    }
    let n: usize = meta.get("branches")?.parse().ok()?;
    let log: mgen_train::Log = serde_json::from_str(meta.get("log")?).ok()?;
    let st = safetensors::SafeTensors::deserialize(&bytes).ok()?;
    let mut parts: BTreeMap<String, Tensors> = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return None;
        }
        let (prefix, tensor) = name.split_once('/')?;
        let vals: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if vals.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let a = ArrayD::from_shape_vec(view.shape().to_vec(), vals).ok()?;
        parts
            .entry(prefix.to_string())
            .or_default()
            .insert(tensor.to_string(), Arc::new(a));
    }
    let trunk = Arc::new(parts.remove("trunk").unwrap_or_default());
    // An `embed` task's branch at full depth has no tensors at all.
    let branches: Vec<Arc<Tensors>> = (0..n)
        .map(|i| Arc::new(parts.remove(&i.to_string()).unwrap_or_default()))
        .collect();
    parts.is_empty().then_some(JointTrained {
        trunk,
        branches,
        log,
    })
}
