//! Reading safetensors checkpoints with Hugging Face BERT names.
//!
//! Invariants: nothing is read before the file's length is known and
//! within [`MAX_CHECKPOINT_BYTES`]; then only the 8-byte header length and
//! the header (at most [`MAX_HEADER_BYTES`], and no longer than the file)
//! are read, parsed and validated by the safetensors crate (offsets
//! contiguous, each tensor's byte length equal to its shape × dtype), and
//! the data the header declares must end exactly at the end of the file (a
//! header that lies about offsets or a truncated file is an error, never an
//! out-of-bounds read). A tensor's bytes are read only when it is asked for
//! ([`Checkpoint::digest`], [`Checkpoint::tensor`]) — after the caller has
//! checked its shape against what the model needs — so memory is bounded by
//! the model, not by the file. Every tensor read is checked for NaN and
//! infinity ([`Error::NonFinite`]).

use ndarray::{ArrayD, IxDyn};
use safetensors::Dtype;
use safetensors::tensor::Metadata;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The `__metadata__` key through which a task checkpoint names the files
/// of tensors it shares with other tasks (`--emit weights` writes a shared
/// trunk once): a comma-separated list of file names beside it, searched
/// in order for any tensor the checkpoint itself does not hold.
pub const SHARED_KEY: &str = "mgen.shared";

/// Checkpoints larger than this are refused.
pub const MAX_CHECKPOINT_BYTES: u64 = 8 << 30;
/// A safetensors header longer than this is refused (the crate's own limit).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;
/// A `config.json` longer than this is refused.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// One tensor of a checkpoint.
#[derive(Debug)]
pub struct Entry {
    /// The name as stored (possibly with a `bert.` prefix).
    pub stored: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    /// Byte range in the file (validated against the file's length).
    range: (u64, u64),
    /// Content digest (dtype, shape and bytes), computed on first use.
    digest: OnceLock<Result<String, Error>>,
}

/// A checkpoint whose header has been read and validated.
#[derive(Debug)]
pub struct Checkpoint {
    pub path: PathBuf,
    file: Mutex<std::fs::File>,
    /// By canonical name (no `bert.` prefix).
    pub entries: BTreeMap<String, Entry>,
    /// `config.json` beside the file, when present and valid JSON.
    pub config: Option<serde_json::Value>,
    /// The header's `__metadata__` (string to string; bounded by the
    /// header's size limit).
    pub metadata: BTreeMap<String, String>,
}

/// Why a checkpoint could not be used.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    Io(String),
    TooLarge(u64),
    Format(String),
    Config(String),
    /// A tensor holds NaN or an infinity: (stored name, element index, value).
    NonFinite(String, usize, f32),
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
            Error::NonFinite(name, i, v) => write!(
                f,
                "tensor `{name}` holds a non-finite value ({v}) at element {i}"
            ),
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

/// The index and value of the first non-finite element of little-endian
/// F32, F16 or BF16 bytes (other dtypes are not looked at).
fn first_non_finite(dtype: Dtype, data: &[u8]) -> Option<(usize, f32)> {
    match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .enumerate()
            .find(|(_, v)| !v.is_finite()),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .enumerate()
            .find(|(_, v)| !v.is_finite()),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .enumerate()
            .find(|(_, v)| !v.is_finite()),
        _ => None,
    }
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io(format!("cannot read `{}`: {e}", path.display()))
}

/// Reads and validates the header: its length (bounded by
/// [`MAX_HEADER_BYTES`] and by the file), its JSON, and that the data it
/// declares ends exactly at the end of the file. Returns the metadata and
/// the offset where the data begins.
fn read_header(file: &mut std::fs::File, len: u64) -> Result<(Metadata, u64), Error> {
    if len < 8 {
        return Err(Error::Format(format!(
            "the file is {len} bytes, shorter than a safetensors header"
        )));
    }
    let mut n8 = [0u8; 8];
    file.read_exact(&mut n8)
        .map_err(|e| Error::Format(format!("cannot read the header length: {e}")))?;
    let n = u64::from_le_bytes(n8);
    if n > MAX_HEADER_BYTES {
        return Err(Error::Format(format!(
            "the header claims {n} bytes; mgen reads headers of at most {MAX_HEADER_BYTES}"
        )));
    }
    let start = 8 + n; // n <= MAX_HEADER_BYTES: no overflow
    if start > len {
        return Err(Error::Format(format!(
            "invalid header length: the header claims {n} bytes, but the file has only {} after the length",
            len - 8
        )));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header)
        .map_err(|e| Error::Format(format!("cannot read the header: {e}")))?;
    let meta: Metadata = serde_json::from_slice(&header)
        .map_err(|e| Error::Format(format!("invalid header: {e}")))?;
    let end = start.checked_add(meta.data_len() as u64);
    if end != Some(len) {
        return Err(Error::Format(format!(
            "the header declares {} bytes of data after its {start}-byte header, but the file is {len} bytes",
            meta.data_len()
        )));
    }
    Ok((meta, start))
}

/// The entries of validated metadata, by canonical name.
fn entries_of(meta: &Metadata, start: u64) -> Result<BTreeMap<String, Entry>, Error> {
    let mut tensors: Vec<_> = meta.tensors().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut entries = BTreeMap::new();
    for (name, info) in tensors {
        let (s, e) = info.data_offsets;
        let range = (start + s as u64, start + e as u64); // both end within the file
        let canon = canonical(&name).to_string();
        if entries.contains_key(&canon) {
            return Err(Error::Format(format!(
                "tensor `{canon}` appears twice (with and without the `bert.` prefix)"
            )));
        }
        let entry = Entry {
            stored: name.clone(),
            dtype: info.dtype,
            shape: info.shape.iter().map(|&d| d as u64).collect(),
            range,
            digest: OnceLock::new(),
        };
        entries.insert(canon, entry);
    }
    Ok(entries)
}

/// `config.json` beside `path`, when present: at most
/// [`MAX_CONFIG_BYTES`], valid JSON, an object.
fn read_config(path: &Path) -> Result<Option<serde_json::Value>, Error> {
    let config_path = path.with_file_name("config.json");
    let Ok(f) = std::fs::File::open(&config_path) else {
        return Ok(None);
    };
    let mut b = Vec::new();
    f.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut b)
        .map_err(|e| Error::Config(format!("cannot read `{}`: {e}", config_path.display())))?;
    if b.len() as u64 > MAX_CONFIG_BYTES {
        return Err(Error::Config(format!(
            "`{}` is larger than 1 MiB",
            config_path.display()
        )));
    }
    let v: serde_json::Value = serde_json::from_slice(&b).map_err(|e| {
        Error::Config(format!(
            "`{}` is not valid JSON: {e}",
            config_path.display()
        ))
    })?;
    if !v.is_object() {
        return Err(Error::Config(format!(
            "`{}` is not a JSON object",
            config_path.display()
        )));
    }
    Ok(Some(v))
}

impl Checkpoint {
    /// Opens a checkpoint: reads and validates its header and its
    /// `config.json`; no tensor data is read.
    pub fn open(path: &Path) -> Result<Checkpoint, Error> {
        let mut file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
        let meta = file.metadata().map_err(|e| io_error(path, e))?;
        if !meta.is_file() {
            return Err(io_error(path, "not a regular file"));
        }
        if meta.len() > MAX_CHECKPOINT_BYTES {
            return Err(Error::TooLarge(meta.len()));
        }
        let (header, start) = read_header(&mut file, meta.len())?;
        let entries = entries_of(&header, start)?;
        let config = read_config(path)?;
        let metadata = header
            .metadata()
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Checkpoint {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            entries,
            config,
            metadata,
        })
    }

    /// The files this checkpoint links under [`SHARED_KEY`], in order:
    /// plain file names (no folder, not `.` or `..`), resolved beside it.
    /// Links are one level deep: a linked file's own links are not read.
    pub fn links(&self) -> Result<Vec<PathBuf>, Error> {
        let Some(v) = self.metadata.get(SHARED_KEY) else {
            return Ok(Vec::new());
        };
        let dir = self.path.parent().unwrap_or(Path::new(""));
        v.split(',')
            .map(|name| {
                let plain = !name.is_empty()
                    && name != "."
                    && name != ".."
                    && !name.contains(['/', '\\', '\0']);
                match plain {
                    true => Ok(dir.join(name)),
                    false => Err(Error::Format(format!(
                        "its `{SHARED_KEY}` metadata names `{name}`; mgen follows links only to files beside the checkpoint, by plain file name"
                    ))),
                }
            })
            .collect()
    }

    /// The bytes of a tensor, read from the file (checked for NaN and
    /// infinity).
    fn bytes(&self, e: &Entry) -> Result<Vec<u8>, Error> {
        let (s, end) = e.range;
        let n = usize::try_from(end - s).map_err(|_| Error::TooLarge(end - s))?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(n)
            .map_err(|_| io_error(&self.path, format!("no memory for {n} bytes")))?;
        buf.resize(n, 0);
        let mut f = self
            .file
            .lock()
            .map_err(|_| io_error(&self.path, "file handle poisoned"))?;
        f.seek(SeekFrom::Start(s))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|err| io_error(&self.path, err))?;
        drop(f);
        if let Some((i, v)) = first_non_finite(e.dtype, &buf) {
            return Err(Error::NonFinite(e.stored.clone(), i, v));
        }
        Ok(buf)
    }

    /// A tensor's content digest (dtype, shape and bytes; 16 hex digits),
    /// read once and cached. Reading checks the values are finite.
    pub fn digest(&self, canonical_name: &str) -> Result<String, Error> {
        let e = self
            .entries
            .get(canonical_name)
            .ok_or_else(|| Error::Format(format!("no tensor `{canonical_name}`")))?;
        e.digest
            .get_or_init(|| {
                let data = self.bytes(e)?;
                let mut h = Sha256::new();
                h.update(dtype_name(e.dtype).as_bytes());
                h.update(format!("{:?}", e.shape).as_bytes());
                h.update(&data);
                let d = h.finalize();
                Ok(d[..8].iter().map(|b| format!("{b:02x}")).collect())
            })
            .clone()
    }

    /// A tensor as f32 (F32, F16 and BF16 are accepted; anything else is an
    /// error message).
    pub fn tensor(&self, canonical_name: &str) -> Result<ArrayD<f32>, String> {
        let e = self
            .entries
            .get(canonical_name)
            .ok_or_else(|| format!("no tensor `{canonical_name}`"))?;
        let data = self.bytes(e).map_err(|err| err.to_string())?;
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
