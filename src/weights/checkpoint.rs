//! Reading safetensors checkpoints with Hugging Face BERT names.
//!
//! Invariants: the whole file is read only after its size is known and
//! within [`MAX_CHECKPOINT_BYTES`]; the header is validated by the
//! safetensors crate against the file's length before any tensor is
//! touched (a header that lies about offsets or a truncated file is an
//! error, not an out-of-bounds read); tensors are converted to f32 only on
//! request, so memory stays within a small multiple of the file size.

use ndarray::{ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Checkpoints larger than this are refused.
pub const MAX_CHECKPOINT_BYTES: u64 = 8 << 30;

/// One tensor of a checkpoint.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The name as stored (possibly with a `bert.` prefix).
    pub stored: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    /// Content digest: dtype, shape and bytes.
    pub digest: String,
}

/// A loaded checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    pub path: PathBuf,
    bytes: Vec<u8>,
    /// By canonical name (no `bert.` prefix).
    pub entries: BTreeMap<String, Entry>,
    /// `config.json` beside the file, when present and valid JSON.
    pub config: Option<serde_json::Value>,
}

/// Why a checkpoint could not be used.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    Io(String),
    TooLarge(u64),
    Format(String),
    Config(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::TooLarge(n) => write!(
                f,
                "the file is {n} bytes; mgen reads checkpoints of at most {MAX_CHECKPOINT_BYTES} bytes"
            ),
            Error::Format(e) => write!(f, "not a valid safetensors file: {e}"),
            Error::Config(e) => write!(f, "{e}"),
        }
    }
}

/// Canonical tensor name: the Hugging Face BERT name without a `bert.` prefix.
pub fn canonical(name: &str) -> &str {
    name.strip_prefix("bert.").unwrap_or(name)
}

fn dtype_name(d: Dtype) -> String {
    format!("{d:?}")
}

impl Checkpoint {
    pub fn open(path: &Path) -> Result<Checkpoint, Error> {
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::Io(format!("cannot read `{}`: {e}", path.display())))?;
        if meta.len() > MAX_CHECKPOINT_BYTES {
            return Err(Error::TooLarge(meta.len()));
        }
        let bytes = std::fs::read(path)
            .map_err(|e| Error::Io(format!("cannot read `{}`: {e}", path.display())))?;
        let mut entries = BTreeMap::new();
        {
            let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::Format(e.to_string()))?;
            for (name, view) in st.tensors() {
                let shape: Vec<u64> = view.shape().iter().map(|&d| d as u64).collect();
                let mut h = Sha256::new();
                h.update(dtype_name(view.dtype()).as_bytes());
                h.update(format!("{shape:?}").as_bytes());
                h.update(view.data());
                let d = h.finalize();
                let digest: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
                let canon = canonical(&name).to_string();
                if entries.contains_key(&canon) {
                    return Err(Error::Format(format!(
                        "tensor `{canon}` appears twice (with and without the `bert.` prefix)"
                    )));
                }
                entries.insert(
                    canon,
                    Entry {
                        stored: name.clone(),
                        dtype: view.dtype(),
                        shape,
                        digest,
                    },
                );
            }
        }
        let config_path = path.with_file_name("config.json");
        let config = match std::fs::read(&config_path) {
            Ok(b) if b.len() < (1 << 20) => Some(serde_json::from_slice(&b).map_err(|e| {
                Error::Config(format!(
                    "`{}` is not valid JSON: {e}",
                    config_path.display()
                ))
            })?),
            Ok(_) => {
                return Err(Error::Config(format!(
                    "`{}` is larger than 1 MiB",
                    config_path.display()
                )));
            }
            Err(_) => None,
        };
        Ok(Checkpoint {
            path: path.to_path_buf(),
            bytes,
            entries,
            config,
        })
    }

    /// A tensor as f32 (F32, F16 and BF16 are accepted; anything else is an
    /// error message).
    pub fn tensor(&self, canonical_name: &str) -> Result<ArrayD<f32>, String> {
        let e = self
            .entries
            .get(canonical_name)
            .ok_or_else(|| format!("no tensor `{canonical_name}`"))?;
        let st = SafeTensors::deserialize(&self.bytes).map_err(|e| e.to_string())?;
        let view = st.tensor(&e.stored).map_err(|e| e.to_string())?;
        let data = view.data();
        let values: Vec<f32> = match e.dtype {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(format!(
                    "tensor `{}` has dtype {other:?}; mgen reads F32, F16 and BF16",
                    e.stored
                ));
            }
        };
        let shape: Vec<usize> = e.shape.iter().map(|&d| d as usize).collect();
        ArrayD::from_shape_vec(IxDyn(&shape), values)
            .map_err(|err| format!("tensor `{}`: {err}", e.stored))
    }

    /// Whether a dtype can be read.
    pub fn readable(d: Dtype) -> bool {
        matches!(d, Dtype::F32 | Dtype::F16 | Dtype::BF16)
    }
}
