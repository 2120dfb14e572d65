//! Reading a program directory (`mgen sim DIR`): `manifest.json`,
//! `program.masm` and `crossbars.safetensors`, each checked against its
//! SHA-256 before it is parsed, each bounded before it is read, every size
//! it declares checked against the others before anything is allocated.
//! Every failure is E303 (E302 for malformed assembly); see `docs/isa.md` §5.

use super::isa::{self, Image, Program};
use super::manifest::{self, Manifest, sha};
use super::quant::QMatrix;
use crate::diag::{Code, Diagnostic, Diags, Sources};
use mgen_isa::package::Package;
use ndarray::{Array1, Array2, ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// Size limits of the three files.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 30;
pub const MAX_MASM_BYTES: u64 = 1 << 30;
pub const MAX_CROSSBARS_BYTES: u64 = 64 << 30;
/// The safetensors header (JSON) at most (the safetensors crate's own limit).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

fn bad_dir(dir: &Path, msg: String) -> Diags {
    Diagnostic::error(
        Code::E303,
        format!("program directory `{}`: {msg}", dir.display()),
    )
    .help("write it again with `mgen compile FILE --emit program -o DIR`")
    .into()
}

/// Opens `name` and checks its length against `limit`.
fn open(dir: &Path, name: &str, limit: u64) -> Result<(std::fs::File, u64), Diags> {
    let cannot = |e: std::io::Error| bad_dir(dir, format!("cannot read `{name}`: {e}"));
    let f = std::fs::File::open(dir.join(name)).map_err(cannot)?;
    let meta = f.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(bad_dir(dir, format!("`{name}` is not a file")));
    }
    if meta.len() > limit {
        return Err(bad_dir(
            dir,
            format!(
                "`{name}` is {} bytes, over the limit of {limit}",
                meta.len()
            ),
        ));
    }
    Ok((f, meta.len()))
}

/// Reads exactly `len` bytes of `f` (never more, whatever the file grows to).
fn read_exactly(dir: &Path, name: &str, f: impl Read, len: u64) -> Result<Vec<u8>, Diags> {
    let mut buf = Vec::with_capacity(len as usize);
    f.take(len)
        .read_to_end(&mut buf)
        .map_err(|e| bad_dir(dir, format!("cannot read `{name}`: {e}")))?;
    if buf.len() as u64 != len {
        return Err(bad_dir(dir, format!("`{name}` changed while it was read")));
    }
    Ok(buf)
}

fn read_whole(dir: &Path, name: &str, limit: u64) -> Result<Vec<u8>, Diags> {
    let (f, len) = open(dir, name, limit)?;
    read_exactly(dir, name, f, len)
}

fn check_sha(dir: &Path, name: &str, bytes: &[u8], want: &str) -> Result<(), Diags> {
    if sha(bytes) != want {
        return Err(bad_dir(
            dir,
            format!("`{name}` does not match the SHA-256 in manifest.json (truncated or edited)"),
        ));
    }
    Ok(())
}

/// Reads a program directory.
pub fn read_dir(dir: &Path, sources: &mut Sources) -> Result<Package, Diags> {
    let man = manifest::parse(&read_whole(dir, "manifest.json", MAX_MANIFEST_BYTES)?)
        .map_err(|m| bad_dir(dir, m))?;
    let masm = read_whole(dir, "program.masm", MAX_MASM_BYTES)?;
    check_sha(dir, "program.masm", &masm, &man.sha[0])?;
    let text =
        String::from_utf8(masm).map_err(|_| bad_dir(dir, "program.masm is not UTF-8".into()))?;
    let file = sources.add(dir.join("program.masm").display().to_string(), text);
    let prog = isa::parse(sources.text(file), file)?;
    check_ids(dir, &prog, &man)?;
    check_kinds(&prog, &man).map_err(|m| bad_dir(dir, m))?;
    let st = read_crossbars(dir, &prog, &man)?;
    let stt = SafeTensors::deserialize(&st)
        .map_err(|e| bad_dir(dir, format!("crossbars.safetensors: {e}")))?;
    let (images, consts, reference) = if man.functional {
        let t = Tensors { dir, stt: &stt };
        (
            images(&t, &prog, &man)?,
            consts(&t, &prog)?,
            references(&t, &man)?,
        )
    } else {
        (Vec::new(), Vec::new(), None)
    };
    Ok(Package {
        prog,
        hw: man.hw,
        tasks: man.tasks,
        requests: man.requests,
        seq: man.seq,
        images,
        consts,
        reference,
    })
}

/// Every request's token ids are inside every embedding table of the
/// program (checked here on the exact integers, before they become f32).
fn check_ids(dir: &Path, prog: &Program, man: &Manifest) -> Result<(), Diags> {
    let vocab = prog
        .code
        .iter()
        .filter_map(|l| match l.inst {
            isa::Inst::Embed { word, .. } => prog.consts.get(word as usize),
            _ => None,
        })
        .map(|c| c.shape.first().copied().unwrap_or(0))
        .min();
    let Some(vocab) = vocab else { return Ok(()) };
    for (k, r) in man.requests.iter().enumerate() {
        if let Some((j, id)) = r.ids[..r.len]
            .iter()
            .enumerate()
            .find(|(_, id)| **id as u64 >= vocab)
        {
            return Err(bad_dir(
                dir,
                format!(
                    "`requests[{k}]` in manifest.json: token {j} is {id}, outside the program's vocabulary of {vocab}"
                ),
            ));
        }
    }
    Ok(())
}

/// Each task's kind matches what the program computes for it: an `embed`
/// output is a `POOL` result, a `classify` or `regress` output an `MVM`
/// result (the head's classifier). So a kind edited in the manifest is an
/// error, not a different metric on the same numbers.
fn check_kinds(prog: &Program, man: &Manifest) -> Result<(), String> {
    use isa::Inst;
    let writer = |b: u32| {
        prog.code
            .iter()
            .map(|l| &l.inst)
            // `FILL` only zeroes a buffer: the kind is set by what computes it.
            .find(|i| !matches!(i, Inst::Fill { .. }) && i.written() == Some(b))
            .map(Inst::mnemonic)
    };
    for l in &prog.code {
        let Inst::Store { task, src } = &l.inst else {
            continue;
        };
        let Some(t) = man.tasks.iter().find(|t| &t.name == task) else {
            continue;
        };
        let want = if t.kind == "embed" { "POOL" } else { "MVM" };
        let got = writer(*src).unwrap_or("no instruction");
        if got != want {
            return Err(format!(
                "task `{task}` is `{}` in manifest.json, but the program stores it from {got}, not {want}",
                t.kind
            ));
        }
    }
    Ok(())
}

/// The most bytes of tensor data the program can need: per image its
/// weights (I16) and two scale vectors (F32), per constant its values, per
/// task its reference outputs (saturating: an absurd size stays absurd).
fn data_bound(prog: &Program, man: &Manifest) -> u128 {
    let prod = |s: &[u64]| s.iter().fold(1u128, |a, &d| a.saturating_mul(d as u128));
    let images = prog
        .images
        .iter()
        .filter(|im| im.reuses.is_none())
        .map(|im| {
            let (o, i) = (im.out_dim as u128, im.in_dim as u128);
            o.saturating_mul(i)
                .saturating_mul(2)
                .saturating_add(o.saturating_add(i).saturating_mul(4))
        });
    let consts = prog.consts.iter().map(|c| prod(&c.shape).saturating_mul(4));
    let refs = man
        .tasks
        .iter()
        .map(|t| (man.requests.len() as u128).saturating_mul(t.width as u128 * 4));
    images
        .chain(consts)
        .chain(refs)
        .fold(0u128, u128::saturating_add)
}

/// The bytes of tensor data a safetensors header declares (the largest end
/// offset), or why the header is malformed.
fn declared_data(header: &[u8]) -> Result<u64, String> {
    let v: serde_json::Value =
        serde_json::from_slice(header).map_err(|e| format!("its header is not JSON: {e}"))?;
    let o = v.as_object().ok_or("its header is not a JSON object")?;
    let mut end = 0u64;
    for (name, t) in o {
        if name == "__metadata__" {
            continue;
        }
        let e = t["data_offsets"][1]
            .as_u64()
            .ok_or(format!("tensor `{name}` has no data offsets"))?;
        end = end.max(e);
    }
    Ok(end)
}

/// Reads `crossbars.safetensors`: the header first, then only as many bytes
/// as it declares, after checking them against the file's length and
/// against what the program can need.
fn read_crossbars(dir: &Path, prog: &Program, man: &Manifest) -> Result<Vec<u8>, Diags> {
    let name = "crossbars.safetensors";
    let bad = |m: String| bad_dir(dir, format!("{name}: {m}"));
    let (mut f, len) = open(dir, name, MAX_CROSSBARS_BYTES)?;
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|_| bad("shorter than its 8-byte header length".into()))?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER_BYTES || n > len.saturating_sub(8) {
        return Err(bad(format!(
            "a header of {n} bytes in a file of {len} (at most {MAX_HEADER_BYTES})"
        )));
    }
    let header = read_exactly(dir, name, &mut f, n)?;
    let data = declared_data(&header).map_err(&bad)?;
    let bound = data_bound(prog, man);
    if data as u128 > bound {
        return Err(bad(format!(
            "its header declares {data} bytes of tensors; the program's images, constants and references need at most {bound}"
        )));
    }
    if Some(len) != (8 + n).checked_add(data) {
        return Err(bad(format!(
            "the file is {len} bytes, its header declares {}",
            (8 + n).saturating_add(data)
        )));
    }
    let mut st = Vec::with_capacity(len as usize);
    st.extend_from_slice(&n.to_le_bytes());
    st.extend_from_slice(&header);
    f.take(data)
        .read_to_end(&mut st)
        .map_err(|e| bad(format!("cannot read it: {e}")))?;
    if st.len() as u64 != len {
        return Err(bad("it changed while it was read".into()));
    }
    check_sha(dir, name, &st, &man.sha[1])?;
    Ok(st)
}

/// Typed access to the tensors of `crossbars.safetensors`.
struct Tensors<'a> {
    dir: &'a Path,
    stt: &'a SafeTensors<'a>,
}

impl Tensors<'_> {
    fn has(&self, name: &str) -> bool {
        self.stt.tensor(name).is_ok()
    }

    fn raw(&self, name: &str, dtype: Dtype, shape: &[usize]) -> Result<&[u8], Diags> {
        let v = self
            .stt
            .tensor(name)
            .map_err(|_| bad_dir(self.dir, format!("crossbars.safetensors has no `{name}`")))?;
        if v.dtype() != dtype || v.shape() != shape {
            return Err(bad_dir(
                self.dir,
                format!(
                    "`{name}` is {:?} {:?}, expected {dtype:?} {shape:?}",
                    v.dtype(),
                    v.shape()
                ),
            ));
        }
        Ok(v.data())
    }

    fn f32s(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, Diags> {
        Ok(self
            .raw(name, Dtype::F32, shape)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn i16s(&self, name: &str, shape: &[usize]) -> Result<Vec<i16>, Diags> {
        Ok(self
            .raw(name, Dtype::I16, shape)?
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect())
    }
}

fn images(t: &Tensors, prog: &Program, man: &Manifest) -> Result<Vec<QMatrix>, Diags> {
    let mut images: Vec<QMatrix> = Vec::new();
    for (k, img) in prog.images.iter().enumerate() {
        if let Some(j) = img.reuses {
            // The parser checked it names an earlier image; validation
            // checks it has the same shape.
            let q = images
                .get(j as usize)
                .ok_or_else(|| bad_dir(t.dir, format!("image i{k} reuses a missing image")))?;
            images.push(q.clone());
            continue;
        }
        images.push(image(t, k, img, man.hw.input_bits)?);
    }
    Ok(images)
}

/// One image's quantised weights, scales and smoothing divisors, checked.
fn image(t: &Tensors, k: usize, img: &Image, input_bits: u32) -> Result<QMatrix, Diags> {
    let bad = |m: String| bad_dir(t.dir, m);
    let (o, i) = (
        usize::try_from(img.out_dim).map_err(|e| bad(e.to_string()))?,
        usize::try_from(img.in_dim).map_err(|e| bad(e.to_string()))?,
    );
    let xs = img.xscale as f32;
    if !(xs.is_finite() && xs > 0.0) || img.xzero < 0 || img.xzero >= 1i64 << input_bits {
        return Err(bad(format!(
            "image i{k} has input scale {} and zero point {}: the scale must be \
             a positive f32 and the zero point a {input_bits}-bit code",
            img.xscale, img.xzero
        )));
    }
    let q = t.i16s(&format!("i{k}.q"), &[o, i])?;
    let scale = t.f32s(&format!("i{k}.scale"), &[o])?;
    let smooth = t.f32s(&format!("i{k}.smooth"), &[i])?;
    if smooth.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(bad(format!(
            "`i{k}.smooth` has a divisor that is not a positive number"
        )));
    }
    if scale.iter().any(|s| !s.is_finite()) {
        return Err(bad(format!("`i{k}.scale` has a scale that is not finite")));
    }
    // Validation refuses widths outside 2–16 (E304, naming the image).
    let qmax = (1i32 << (img.wbits.clamp(2, 16) - 1)) - 1;
    if q.iter().any(|&v| (v as i32).abs() > qmax) {
        return Err(bad(format!(
            "`i{k}.q` has a weight outside ±{qmax}, the range of {} bits",
            img.wbits
        )));
    }
    Ok(QMatrix {
        q: Array2::from_shape_vec((o, i), q).map_err(|e| bad(e.to_string()))?,
        scale: Array1::from(scale),
        smooth: Array1::from(smooth),
        bits: img.wbits,
    })
}

fn consts(t: &Tensors, prog: &Program) -> Result<Vec<Arc<ArrayD<f32>>>, Diags> {
    let mut consts = Vec::new();
    for (k, c) in prog.consts.iter().enumerate() {
        let shape = c
            .shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<Vec<usize>, _>>()
            .map_err(|e| bad_dir(t.dir, e.to_string()))?;
        let v = t.f32s(&format!("c{k}"), &shape)?;
        consts.push(Arc::new(
            ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| bad_dir(t.dir, e.to_string()))?,
        ));
    }
    Ok(consts)
}

/// The float-reference outputs: for every task or for none (a directory
/// with some of them is an error, not a run that quietly reports less).
fn references(t: &Tensors, man: &Manifest) -> Result<Option<Vec<Array2<f32>>>, Diags> {
    let names: Vec<String> = man
        .tasks
        .iter()
        .map(|x| format!("ref.{}", x.name))
        .collect();
    let present = names.iter().filter(|n| t.has(n)).count();
    if present == 0 {
        return Ok(None);
    }
    if present != names.len() {
        return Err(bad_dir(
            t.dir,
            format!(
                "crossbars.safetensors has reference outputs for {present} of {} tasks",
                names.len()
            ),
        ));
    }
    let mut refs = Vec::new();
    for (task, name) in man.tasks.iter().zip(&names) {
        let shape = (man.requests.len(), task.width as usize);
        let v = t.f32s(name, &[shape.0, shape.1])?;
        refs.push(Array2::from_shape_vec(shape, v).map_err(|e| bad_dir(t.dir, e.to_string()))?);
    }
    Ok(Some(refs))
}
