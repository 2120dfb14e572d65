//! The ReRAM ISA: instructions, programs, the assembly text and its parser.
//! See `docs/isa.md` for every instruction's semantics and cost.
//!
//! Invariant: [`parse`]`(`[`Program::to_masm`]`(p)) == p` for every program
//! codegen emits (tested on every example).

use crate::diag::{Code, Diagnostic, Diags, FileId};
use serde::{Deserialize, Serialize};
use std::fmt::Write;

/// A request input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    Ids,
    Mask,
}

/// Digital vector operations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum VecOp {
    Add,
    Scale(f64),
    Mask,
    Softmax,
    Gelu,
    Tanh,
}

/// Dynamic (two-operand) matmuls on the digital unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DmmKind {
    /// Per-head `Q·Kᵀ`.
    Qk,
    /// Per-head `P·V`.
    Av,
}

/// One instruction. `b` = activation buffer, `c` = digital constant
/// (eDRAM), `i` = crossbar image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Inst {
    /// Start of a placement phase.
    Phase(u32),
    /// Program image `i`'s crossbars.
    XbProgram(u32),
    /// The instructions up to `End` run once per request.
    ForRequests,
    /// The instructions up to `End` run once per request of
    /// `first..first + count` (clipped to the batch): one request group of
    /// a schedule that reprograms phases between groups.
    ForGroup {
        first: u32,
        count: u32,
    },
    End,
    Load {
        dst: u32,
        input: Input,
    },
    Embed {
        dst: u32,
        ids: u32,
        word: u32,
        pos: u32,
        typ: u32,
    },
    LayerNorm {
        dst: u32,
        src: u32,
        gamma: u32,
        beta: u32,
        eps: f64,
    },
    /// Tile-to-tile transfer of a buffer to `tiles` other tiles.
    Send {
        src: u32,
        tiles: u32,
    },
    Mvm {
        dst: u32,
        src: u32,
        image: u32,
        bias: u32,
    },
    Dmm {
        dst: u32,
        a: u32,
        b: u32,
        kind: DmmKind,
        heads: u32,
    },
    Vec {
        dst: u32,
        op: VecOp,
        a: u32,
        b: Option<u32>,
    },
    Pool {
        dst: u32,
        src: u32,
        mask: u32,
        mean: bool,
    },
    /// Keep a buffer of this request until a later phase: in off-chip
    /// memory, or in the tiles' eDRAM buffers when `edram`.
    Spill {
        src: u32,
        edram: bool,
    },
    /// Bring a spilled buffer back (from where it was spilled).
    Fill {
        dst: u32,
        edram: bool,
    },
    Store {
        task: String,
        src: u32,
    },
    Barrier,
    Halt,
}

/// An instruction with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub inst: Inst,
    /// The IR node (`%k`), tasks, layer and source location; printed as a comment.
    pub node: String,
    pub tasks: Vec<String>,
    pub layer: String,
    pub at: String,
}

/// A crossbar image: one quantised matrix and where it is programmed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    pub tensor: String,
    pub out_dim: u64,
    pub in_dim: u64,
    pub phase: u32,
    pub first: u64,
    pub crossbars: u64,
    /// Tiles the image spans.
    pub tiles: u32,
    /// Static input scale (per tensor): `x ≈ xscale · (x_u − xzero)`.
    pub xscale: f64,
    /// The unsigned input code of 0 (`2^(input_bits−1)` when symmetric).
    pub xzero: i64,
    /// Bits per weight (the hardware's `weight_bits`, fewer for area
    /// mode's deltas).
    pub wbits: u32,
    /// An earlier image of the same phase whose crossbars (and weights)
    /// this one uses; it is not programmed itself.
    pub reuses: Option<u32>,
}

/// A constant in eDRAM (embedding tables, biases, LayerNorm vectors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Const {
    pub tensor: String,
    pub shape: Vec<u64>,
}

/// A program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Program {
    pub buffers: Vec<Vec<u64>>,
    pub consts: Vec<Const>,
    pub images: Vec<Image>,
    pub code: Vec<Line>,
}

fn shape(s: &[u64]) -> String {
    let v: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", v.join(","))
}

impl Inst {
    /// The buffer the instruction writes, if any (`FILL` included).
    pub fn written(&self) -> Option<u32> {
        match self {
            Inst::Load { dst, .. }
            | Inst::Embed { dst, .. }
            | Inst::LayerNorm { dst, .. }
            | Inst::Mvm { dst, .. }
            | Inst::Dmm { dst, .. }
            | Inst::Vec { dst, .. }
            | Inst::Pool { dst, .. }
            | Inst::Fill { dst, .. } => Some(*dst),
            _ => None,
        }
    }

    pub fn mnemonic(&self) -> &'static str {
        match self {
            Inst::Phase(_) => "PHASE",
            Inst::XbProgram(_) => "XB_PROGRAM",
            Inst::ForRequests => "FOR_REQUESTS",
            Inst::ForGroup { .. } => "FOR_GROUP",
            Inst::End => "END",
            Inst::Load { .. } => "LOAD",
            Inst::Embed { .. } => "EMBED",
            Inst::LayerNorm { .. } => "LAYERNORM",
            Inst::Send { .. } => "SEND",
            Inst::Mvm { .. } => "MVM",
            Inst::Dmm { .. } => "DMM",
            Inst::Vec { .. } => "VEC",
            Inst::Pool { .. } => "POOL",
            Inst::Spill { .. } => "SPILL",
            Inst::Fill { .. } => "FILL",
            Inst::Store { .. } => "STORE",
            Inst::Barrier => "BARRIER",
            Inst::Halt => "HALT",
        }
    }

    fn operands(&self) -> String {
        match self {
            Inst::Phase(p) => p.to_string(),
            Inst::XbProgram(i) => format!("i{i}"),
            Inst::ForRequests | Inst::End | Inst::Barrier | Inst::Halt => String::new(),
            Inst::ForGroup { first, count } => format!("{first}, {count}"),
            Inst::Load { dst, input } => format!(
                "b{dst}, {}",
                if *input == Input::Ids { "ids" } else { "mask" }
            ),
            Inst::Embed {
                dst,
                ids,
                word,
                pos,
                typ,
            } => format!("b{dst}, b{ids}, c{word}, c{pos}, c{typ}"),
            Inst::LayerNorm {
                dst,
                src,
                gamma,
                beta,
                eps,
            } => format!("b{dst}, b{src}, c{gamma}, c{beta}, eps={eps:e}"),
            Inst::Send { src, tiles } => format!("b{src}, tiles={tiles}"),
            Inst::Mvm {
                dst,
                src,
                image,
                bias,
            } => format!("b{dst}, b{src}, i{image}, c{bias}"),
            Inst::Dmm {
                dst,
                a,
                b,
                kind,
                heads,
            } => {
                format!(
                    "b{dst}, b{a}, b{b}, {}, heads={heads}",
                    if *kind == DmmKind::Qk { "qk" } else { "av" }
                )
            }
            Inst::Vec { dst, op, a, b } => {
                let name = match op {
                    VecOp::Add => "add".to_string(),
                    VecOp::Scale(f) => format!("scale={f}"),
                    VecOp::Mask => "mask".into(),
                    VecOp::Softmax => "softmax".into(),
                    VecOp::Gelu => "gelu".into(),
                    VecOp::Tanh => "tanh".into(),
                };
                match b {
                    Some(b) => format!("b{dst}, {name}, b{a}, b{b}"),
                    None => format!("b{dst}, {name}, b{a}"),
                }
            }
            Inst::Pool {
                dst,
                src,
                mask,
                mean,
            } => format!(
                "b{dst}, b{src}, b{mask}, {}",
                if *mean { "mean" } else { "cls" }
            ),
            Inst::Spill { src, edram } => {
                format!("b{src}{}", if *edram { ", edram" } else { "" })
            }
            Inst::Fill { dst, edram } => {
                format!("b{dst}{}", if *edram { ", edram" } else { "" })
            }
            Inst::Store { task, src } => format!("{task}, b{src}"),
        }
    }
}

impl Program {
    /// The assembly text.
    pub fn to_masm(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "; mgen ReRAM assembly (docs/isa.md). `mgen sim DIR` runs the program directory."
        );
        for (i, b) in self.buffers.iter().enumerate() {
            let _ = writeln!(s, ".buf b{i} {}", shape(b));
        }
        for (i, c) in self.consts.iter().enumerate() {
            let _ = writeln!(s, ".const c{i} {} \"{}\"", shape(&c.shape), c.tensor);
        }
        for (i, m) in self.images.iter().enumerate() {
            let _ = writeln!(
                s,
                ".image i{i} [{},{}] phase={} xb={}..{} tiles={} wbits={} xscale={:e} xzero={}{} \"{}\"",
                m.out_dim,
                m.in_dim,
                m.phase,
                m.first,
                m.first + m.crossbars,
                m.tiles,
                m.wbits,
                m.xscale,
                m.xzero,
                m.reuses
                    .map(|r| format!(" reuses=i{r}"))
                    .unwrap_or_default(),
                m.tensor
            );
        }
        for l in &self.code {
            let indent = match l.inst {
                Inst::Phase(_) | Inst::Halt => "",
                Inst::XbProgram(_)
                | Inst::ForRequests
                | Inst::ForGroup { .. }
                | Inst::End
                | Inst::Barrier => "    ",
                _ => "        ",
            };
            let text = format!("{indent}{:<11} {}", l.inst.mnemonic(), l.inst.operands());
            if l.node.is_empty() && l.tasks.is_empty() {
                let _ = writeln!(s, "{}", text.trim_end());
            } else {
                let _ = writeln!(
                    s,
                    "{text:<52} ; {} tasks={} layer={} at={}",
                    l.node,
                    l.tasks.join(","),
                    l.layer,
                    l.at
                );
            }
        }
        s
    }
}

/// Parses assembly text (file `file` in the diagnostics' sources).
pub fn parse(text: &str, file: FileId) -> Result<Program, Diags> {
    let mut p = Program {
        buffers: Vec::new(),
        consts: Vec::new(),
        images: Vec::new(),
        code: Vec::new(),
    };
    let mut diags = Diags::default();
    let mut offset = 0usize;
    for raw in text.split('\n') {
        let start = offset;
        offset += raw.len() + 1;
        let (body, comment) = match raw.find(';') {
            Some(i) => (&raw[..i], Some(&raw[i + 1..])),
            None => (raw, None),
        };
        let trimmed = body.trim();
        if trimmed.is_empty() {
            continue;
        }
        let col = start + (body.len() - body.trim_start().len());
        let err = |msg: String| {
            Diagnostic::error(Code::E302, msg).at(file, col..start + body.trim_end().len(), "here")
        };
        match parse_line(trimmed, comment, &mut p) {
            Ok(()) => {}
            Err(msg) => {
                diags.push(err(msg));
                if diags.len() > crate::diag::MAX_REPORTED {
                    break;
                }
            }
        }
    }
    if diags.is_empty() { Ok(p) } else { Err(diags) }
}

fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.trim()
        .parse::<T>()
        .map_err(|_| format!("bad {what} `{}`", s.trim()))
}

fn reg(s: &str, prefix: char, count: usize, what: &str) -> Result<u32, String> {
    let s = s.trim();
    let n: u32 = s
        .strip_prefix(prefix)
        .ok_or_else(|| format!("expected a {what} `{prefix}N`, found `{s}`"))
        .and_then(|r| num(r, what))?;
    if n as usize >= count {
        return Err(format!("{what} `{s}` is not declared"));
    }
    Ok(n)
}

fn parse_shape(s: &str) -> Result<Vec<u64>, String> {
    let inner = s
        .trim()
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .ok_or_else(|| format!("expected a shape like [32,256], found `{s}`"))?;
    if inner.is_empty() {
        return Ok(Vec::new());
    }
    inner
        .split(',')
        .map(|d| num::<u64>(d, "dimension"))
        .collect()
}

fn quoted(s: &str) -> Result<String, String> {
    s.trim()
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .map(str::to_string)
        .ok_or_else(|| format!("expected a quoted name, found `{s}`"))
}

fn kv<'a>(s: &'a str, key: &str) -> Result<&'a str, String> {
    s.trim()
        .strip_prefix(key)
        .and_then(|r| r.strip_prefix('='))
        .ok_or_else(|| format!("expected `{key}=...`, found `{}`", s.trim()))
}

fn parse_line(line: &str, comment: Option<&str>, p: &mut Program) -> Result<(), String> {
    let (mnemonic, rest) = match line.find(char::is_whitespace) {
        Some(i) => (&line[..i], line[i..].trim()),
        None => (line, ""),
    };
    if let Some(decl) = mnemonic.strip_prefix('.') {
        let fields: Vec<&str> = rest.split_whitespace().collect();
        match decl {
            "buf" => {
                let [name, sh] = fields.as_slice() else {
                    return Err("expected `.buf bN [dims]`".into());
                };
                if *name != format!("b{}", p.buffers.len()) {
                    return Err(format!(
                        "expected b{} next, found `{name}`",
                        p.buffers.len()
                    ));
                }
                p.buffers.push(parse_shape(sh)?);
            }
            "const" => {
                let (name, tail) = rest
                    .split_once(' ')
                    .ok_or("expected `.const cN [dims] \"tensor\"`")?;
                if name != format!("c{}", p.consts.len()) {
                    return Err(format!("expected c{} next, found `{name}`", p.consts.len()));
                }
                let (sh, t) = tail
                    .trim()
                    .split_once(' ')
                    .ok_or("expected `.const cN [dims] \"tensor\"`")?;
                p.consts.push(Const {
                    shape: parse_shape(sh)?,
                    tensor: quoted(t)?,
                });
            }
            "image" => {
                let (head, tensor) = rest
                    .split_once('"')
                    .map(|(h, t)| (h, format!("\"{t}")))
                    .ok_or("expected `.image iN [out,in] ... \"tensor\"`")?;
                let f: Vec<&str> = head.split_whitespace().collect();
                let (name, sh, phase, xb, tiles, wbits, xscale, xzero, reuses) = match f.as_slice()
                {
                    [name, sh, phase, xb, tiles, wbits, xscale, xzero] => {
                        (name, sh, phase, xb, tiles, wbits, xscale, xzero, None)
                    }
                    [name, sh, phase, xb, tiles, wbits, xscale, xzero, reuses] => (
                        name,
                        sh,
                        phase,
                        xb,
                        tiles,
                        wbits,
                        xscale,
                        xzero,
                        Some(reuses),
                    ),
                    _ => {
                        return Err(
                            "expected `.image iN [out,in] phase=P xb=A..B tiles=T wbits=W xscale=S xzero=Z [reuses=iK] \"tensor\"`"
                                .into(),
                        );
                    }
                };
                if *name != format!("i{}", p.images.len()) {
                    return Err(format!("expected i{} next, found `{name}`", p.images.len()));
                }
                let dims = parse_shape(sh)?;
                let [out_dim, in_dim] = dims.as_slice() else {
                    return Err("an image shape is [out,in]".into());
                };
                let (a, b) = kv(xb, "xb")?.split_once("..").ok_or("expected `xb=A..B`")?;
                let (a, b): (u64, u64) = (num(a, "crossbar")?, num(b, "crossbar")?);
                if b <= a {
                    return Err("an empty crossbar range".into());
                }
                p.images.push(Image {
                    tensor: quoted(&tensor)?,
                    out_dim: *out_dim,
                    in_dim: *in_dim,
                    phase: num(kv(phase, "phase")?, "phase")?,
                    first: a,
                    crossbars: b - a,
                    tiles: num(kv(tiles, "tiles")?, "tile count")?,
                    xscale: num(kv(xscale, "xscale")?, "scale")?,
                    xzero: num(kv(xzero, "xzero")?, "zero point")?,
                    wbits: num(kv(wbits, "wbits")?, "weight width")?,
                    reuses: match reuses {
                        None => None,
                        Some(r) => Some(reg(kv(r, "reuses")?, 'i', p.images.len(), "image")?),
                    },
                });
            }
            other => return Err(format!("unknown directive `.{other}`")),
        }
        return Ok(());
    }
    let args: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split(',').map(str::trim).collect()
    };
    let nb = p.buffers.len();
    let nc = p.consts.len();
    let ni = p.images.len();
    let b = |i: usize| -> Result<u32, String> {
        reg(args.get(i).ok_or("missing operand")?, 'b', nb, "buffer")
    };
    let c = |i: usize| -> Result<u32, String> {
        reg(args.get(i).ok_or("missing operand")?, 'c', nc, "constant")
    };
    let arity = |n: usize| -> Result<(), String> {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!(
                "`{mnemonic}` takes {n} operand(s), found {}",
                args.len()
            ))
        }
    };
    let inst = match mnemonic {
        "PHASE" => {
            arity(1)?;
            Inst::Phase(num(args[0], "phase")?)
        }
        "XB_PROGRAM" => {
            arity(1)?;
            Inst::XbProgram(reg(args[0], 'i', ni, "image")?)
        }
        "FOR_REQUESTS" => {
            arity(0)?;
            Inst::ForRequests
        }
        "END" => {
            arity(0)?;
            Inst::End
        }
        "BARRIER" => {
            arity(0)?;
            Inst::Barrier
        }
        "HALT" => {
            arity(0)?;
            Inst::Halt
        }
        "LOAD" => {
            arity(2)?;
            let input = match args[1] {
                "ids" => Input::Ids,
                "mask" => Input::Mask,
                o => return Err(format!("unknown input `{o}` (ids or mask)")),
            };
            Inst::Load { dst: b(0)?, input }
        }
        "EMBED" => {
            arity(5)?;
            Inst::Embed {
                dst: b(0)?,
                ids: b(1)?,
                word: c(2)?,
                pos: c(3)?,
                typ: c(4)?,
            }
        }
        "LAYERNORM" => {
            arity(5)?;
            Inst::LayerNorm {
                dst: b(0)?,
                src: b(1)?,
                gamma: c(2)?,
                beta: c(3)?,
                eps: num(kv(args[4], "eps")?, "eps")?,
            }
        }
        "SEND" => {
            arity(2)?;
            Inst::Send {
                src: b(0)?,
                tiles: num(kv(args[1], "tiles")?, "tile count")?,
            }
        }
        "MVM" => {
            arity(4)?;
            Inst::Mvm {
                dst: b(0)?,
                src: b(1)?,
                image: reg(args[2], 'i', ni, "image")?,
                bias: c(3)?,
            }
        }
        "DMM" => {
            arity(5)?;
            let kind = match args[3] {
                "qk" => DmmKind::Qk,
                "av" => DmmKind::Av,
                o => return Err(format!("unknown DMM kind `{o}` (qk or av)")),
            };
            Inst::Dmm {
                dst: b(0)?,
                a: b(1)?,
                b: b(2)?,
                kind,
                heads: num(kv(args[4], "heads")?, "head count")?,
            }
        }
        "VEC" => {
            if args.len() < 3 {
                return Err("`VEC` takes bDST, OP, bA[, bB]".into());
            }
            let (op, two) = match args[1] {
                "add" => (VecOp::Add, true),
                "mask" => (VecOp::Mask, true),
                "softmax" => (VecOp::Softmax, false),
                "gelu" => (VecOp::Gelu, false),
                "tanh" => (VecOp::Tanh, false),
                o if o.starts_with("scale=") => {
                    (VecOp::Scale(num(kv(o, "scale")?, "scale")?), false)
                }
                o => return Err(format!("unknown vector op `{o}`")),
            };
            arity(if two { 4 } else { 3 })?;
            Inst::Vec {
                dst: b(0)?,
                op,
                a: b(2)?,
                b: if two { Some(b(3)?) } else { None },
            }
        }
        "POOL" => {
            arity(4)?;
            let mean = match args[3] {
                "mean" => true,
                "cls" => false,
                o => return Err(format!("unknown pooling `{o}` (mean or cls)")),
            };
            Inst::Pool {
                dst: b(0)?,
                src: b(1)?,
                mask: b(2)?,
                mean,
            }
        }
        "SPILL" | "FILL" => {
            let edram = match args.len() {
                1 => false,
                2 if args[1] == "edram" => true,
                2 => {
                    return Err(format!(
                        "unknown spill level `{}` (edram, or none for off-chip)",
                        args[1]
                    ));
                }
                _ => {
                    arity(1)?;
                    false
                }
            };
            if mnemonic == "SPILL" {
                Inst::Spill { src: b(0)?, edram }
            } else {
                Inst::Fill { dst: b(0)?, edram }
            }
        }
        "FOR_GROUP" => {
            arity(2)?;
            Inst::ForGroup {
                first: num(args[0], "request")?,
                count: num(args[1], "request count")?,
            }
        }
        "STORE" => {
            arity(2)?;
            Inst::Store {
                task: args[0].to_string(),
                src: b(1)?,
            }
        }
        other => {
            let known = [
                "PHASE",
                "XB_PROGRAM",
                "FOR_REQUESTS",
                "END",
                "LOAD",
                "EMBED",
                "LAYERNORM",
                "SEND",
                "MVM",
                "DMM",
                "VEC",
                "POOL",
                "SPILL",
                "FILL",
                "STORE",
                "BARRIER",
                "HALT",
            ];
            return Err(match mgen_front::spec::check::suggest(other, &known) {
                Some(s) => format!("unknown opcode `{other}`; did you mean `{s}`?"),
                None => format!("unknown opcode `{other}`"),
            });
        }
    };
    let mut line = Line {
        inst,
        node: String::new(),
        tasks: Vec::new(),
        layer: String::new(),
        at: String::new(),
    };
    if let Some(c) = comment {
        for (i, field) in c.split_whitespace().enumerate() {
            if i == 0 && field.starts_with('%') {
                line.node = field.to_string();
            } else if let Some(t) = field.strip_prefix("tasks=") {
                line.tasks = t
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
            } else if let Some(l) = field.strip_prefix("layer=") {
                line.layer = l.to_string();
            } else if let Some(a) = field.strip_prefix("at=") {
                line.at = a.to_string();
            }
        }
    }
    p.code.push(line);
    Ok(())
}
