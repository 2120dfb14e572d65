//! The manifest of a program directory (`manifest.json`): writing its
//! digest, reading it and checking every field before anything is sized
//! from it. See `docs/isa.md` §5 for the format and the limits.
//!
//! Integrity: `sha256.manifest` is the SHA-256 of the manifest's canonical
//! content — the JSON value without its `sha256` member, printed with
//! sorted keys and no whitespace — so an edited manifest is an error like an
//! edited `program.masm`. Every field is also checked on its own (ranges,
//! consistency), so a manifest edited *and* re-hashed still cannot make a
//! run silently wrong: it is either consistent or an error.

use crate::data::Request;
use crate::hw::Hardware;
use crate::spec::limits::{MAX_CLASSES, MAX_REQUESTS, MAX_SEQ, MAX_VOCAB};
use mgen_isa::package::TaskInfo;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// The manifest format version (2: the manifest carries its own digest).
pub const VERSION: u64 = 2;
/// Tasks one program serves at most.
pub const MAX_TASKS: usize = 1024;
/// `requests × seq`, the padded token ids held in memory (1 GiB of u32).
pub const MAX_TOKENS: u64 = 1 << 28;
/// `requests × Σ task widths`, the output values held in memory (1 GiB of f32).
pub const MAX_OUTPUT_VALUES: u64 = 1 << 28;

const KEYS: &[&str] = &[
    "format",
    "version",
    "hardware",
    "tasks",
    "seq",
    "requests",
    "functional",
    "outputs",
    "sha256",
];
/// The files `sha256` names, besides `manifest`.
pub const FILES: [&str; 2] = ["program.masm", "crossbars.safetensors"];

/// A checked manifest.
pub struct Manifest {
    pub hw: Hardware,
    pub tasks: Vec<TaskInfo>,
    pub seq: usize,
    pub requests: Vec<Request>,
    pub functional: bool,
    /// The SHA-256 (hex) of [`FILES`], in that order.
    pub sha: [String; 2],
}

/// Hex SHA-256 of `bytes`.
pub fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The canonical text of a JSON value: object keys sorted, no whitespace.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The manifest digest: SHA-256 of the canonical text of `man` without its
/// `sha256` member.
pub fn digest(man: &Value) -> String {
    let mut v = man.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("sha256");
    }
    let mut s = String::new();
    canonical(&v, &mut s);
    sha(s.as_bytes())
}

/// Parses and checks a manifest (the message of an error names the field).
pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
    let man: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("manifest.json is not valid JSON: {e}"))?;
    let obj = man
        .as_object()
        .ok_or("manifest.json is not a JSON object")?;
    if let Some(k) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!("manifest.json has an unknown field `{k}`"));
    }
    if man["format"] != "mgen-program" {
        return Err("manifest.json is not an mgen program manifest (format)".into());
    }
    match man["version"].as_u64() {
        Some(VERSION) => {}
        Some(1) => {
            return Err(
                "manifest.json is version 1, written before manifests carried their own digest"
                    .into(),
            );
        }
        _ => return Err(format!("manifest.json is not version {VERSION}")),
    }
    let sha = digests(&man)?;
    let hw: Hardware = serde_json::from_value(man["hardware"].clone())
        .map_err(|e| format!("bad hardware in manifest.json: {e}"))?;
    check_hardware(&hw)?;
    let tasks = tasks(&man["tasks"])?;
    let seq = man["seq"]
        .as_u64()
        .filter(|s| (1..=MAX_SEQ).contains(s))
        .ok_or(format!(
            "`seq` in manifest.json must be a whole number from 1 to {MAX_SEQ}"
        ))? as usize;
    let requests = requests(&man["requests"], seq)?;
    let widths: u64 = tasks.iter().map(|t| t.width).sum();
    if (requests.len() as u64).saturating_mul(widths) > MAX_OUTPUT_VALUES {
        return Err(format!(
            "{} requests x {widths} output values is over the limit of {MAX_OUTPUT_VALUES}",
            requests.len()
        ));
    }
    let functional = man["functional"]
        .as_bool()
        .ok_or("`functional` in manifest.json must be true or false")?;
    let outputs: Vec<Value> = tasks
        .iter()
        .map(|t| Value::from(format!("{}.npy", t.name)))
        .collect();
    if man["outputs"].as_array() != Some(&outputs) {
        return Err(
            "`outputs` in manifest.json must name `TASK.npy` for every task, in order".into(),
        );
    }
    Ok(Manifest {
        hw,
        tasks,
        seq,
        requests,
        functional,
        sha,
    })
}

/// `sha256`: the two files' digests, and the manifest's own, checked.
fn digests(man: &Value) -> Result<[String; 2], String> {
    let d = man["sha256"]
        .as_object()
        .ok_or("manifest.json has no `sha256` object")?;
    let hex = |k: &str| -> Result<String, String> {
        d.get(k)
            .and_then(Value::as_str)
            .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_string)
            .ok_or(format!("`sha256.{k}` in manifest.json is not a SHA-256"))
    };
    if d.len() != FILES.len() + 1 {
        return Err(
            "`sha256` in manifest.json must name program.masm, crossbars.safetensors and manifest"
                .into(),
        );
    }
    if hex("manifest")? != digest(man) {
        return Err(
            "manifest.json does not match its own SHA-256 (`sha256.manifest`: edited)".into(),
        );
    }
    Ok([hex(FILES[0])?, hex(FILES[1])?])
}

/// The hardware block within the limits the language accepts.
pub fn check_hardware(hw: &Hardware) -> Result<(), String> {
    let bits = [
        hw.cell_bits,
        hw.weight_bits,
        hw.input_bits,
        hw.dac_bits,
        hw.adc_bits,
    ];
    let side = |s: u64| s.is_power_of_two() && (2..=4096).contains(&s);
    let counts = [
        (hw.chips, 4096),
        (hw.tiles, 1_000_000),
        (hw.cores_per_tile, 1024),
        (hw.crossbars_per_core, 1024),
    ];
    let buffers = [hw.tile_buffer, hw.core_buffer];
    let sane = bits.iter().all(|b| (1..=16).contains(b))
        && hw.cell_bits <= hw.weight_bits
        && hw.dac_bits <= hw.input_bits
        && side(hw.rows)
        && side(hw.cols)
        && counts.iter().all(|&(c, max)| (1..=max).contains(&c))
        && buffers.iter().all(|b| (1..=1 << 40).contains(b))
        && (1.0..=1e18).contains(&hw.endurance);
    if !sane {
        return Err("the hardware in manifest.json is out of range (bits 1..16, crossbar sides powers of two 2..4096, chips 1..4096, tiles 1..10^6, cores and crossbars 1..1024, buffers 1 B..1 TiB, endurance 1..1e18)".into());
    }
    hw.noise
        .check()
        .map_err(|e| format!("the hardware in manifest.json: {e}"))?;
    for (k, v) in &hw.overrides {
        if crate::hw::energy::entry(k).is_none() {
            return Err(format!(
                "the hardware in manifest.json overrides an unknown entry `{k}`"
            ));
        }
        if !(v.is_finite() && *v >= 0.0 && *v <= crate::hw::energy::MAX_FIGURE) {
            return Err(format!(
                "the hardware override `{k}` = {v} is not a number from 0 to {:e}",
                crate::hw::energy::MAX_FIGURE
            ));
        }
    }
    Ok(())
}

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// `tasks`: 1 to [`MAX_TASKS`] distinct names, a known kind, a width that
/// fits the kind.
fn tasks(v: &Value) -> Result<Vec<TaskInfo>, String> {
    let tasks: Vec<TaskInfo> = serde_json::from_value(v.clone())
        .map_err(|e| format!("bad tasks in manifest.json: {e}"))?;
    if tasks.is_empty() || tasks.len() > MAX_TASKS {
        return Err(format!("manifest.json must list 1 to {MAX_TASKS} tasks"));
    }
    let mut seen = BTreeSet::new();
    for (k, t) in tasks.iter().enumerate() {
        let at = format!("`tasks[{k}]` in manifest.json");
        if !is_name(&t.name) || !seen.insert(t.name.as_str()) {
            return Err(format!("{at}: `{}` is not a new task name", t.name));
        }
        let ok = match t.kind.as_str() {
            "classify" => (2..=MAX_CLASSES).contains(&t.width),
            "regress" => t.width == 1,
            "embed" => (1..=1 << 16).contains(&t.width),
            _ => {
                return Err(format!(
                    "{at}: kind `{}` is not classify, regress or embed",
                    t.kind
                ));
            }
        };
        if !ok {
            return Err(format!(
                "{at}: a `{}` head cannot have width {}",
                t.kind, t.width
            ));
        }
    }
    Ok(tasks)
}

/// `requests`: 1 to `MAX_REQUESTS` requests of 1 to `seq` token ids
/// (whole numbers below the language's vocabulary limit, so exact in f32),
/// padded to `seq`.
fn requests(v: &Value, seq: usize) -> Result<Vec<Request>, String> {
    let list = v.as_array().ok_or("no `requests` in manifest.json")?;
    let n = list.len() as u64;
    if !(1..=MAX_REQUESTS).contains(&n) || n.saturating_mul(seq as u64) > MAX_TOKENS {
        return Err(format!(
            "manifest.json has {n} requests of seq {seq}: 1 to {MAX_REQUESTS} requests, at most {MAX_TOKENS} tokens in all"
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for (k, r) in list.iter().enumerate() {
        let at = format!("`requests[{k}]` in manifest.json");
        let obj = r.as_object().ok_or(format!("{at} is not an object"))?;
        if let Some(key) = obj.keys().find(|x| !["ids", "text"].contains(&x.as_str())) {
            return Err(format!("{at} has an unknown field `{key}`"));
        }
        let ids = r["ids"].as_array().ok_or(format!("{at} has no `ids`"))?;
        if ids.is_empty() || ids.len() > seq {
            return Err(format!("{at} has {} tokens for seq {seq}", ids.len()));
        }
        let mut padded = Vec::with_capacity(seq);
        for (j, x) in ids.iter().enumerate() {
            match x.as_u64().filter(|&i| i < MAX_VOCAB) {
                Some(i) => padded.push(i as u32),
                None => {
                    return Err(format!(
                        "{at}: token {j} is {x}, not a token id (a whole number below {MAX_VOCAB})"
                    ));
                }
            }
        }
        padded.resize(seq, 0);
        let text = match &r["text"] {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            _ => return Err(format!("{at}: `text` is not a string")),
        };
        out.push(Request {
            ids: padded,
            len: ids.len(),
            text,
            label: None,
        });
    }
    Ok(out)
}
