//! Static shape checks: the declared sizes of a program, and every
//! instruction's operands against the shapes its semantics needs
//! (`docs/isa.md` §2), so that execution never meets a shape it cannot
//! handle. Part of [`super::validate`].

use crate::TaskInfo;
use mgen_front::spec::limits::MAX_VOCAB;
use mgen_isa::isa::{DmmKind, Image, Inst, Program, VecOp};

/// Elements of one buffer (one request's activation) at most.
pub const MAX_BUFFER_ELEMENTS: u64 = 1 << 31;
/// Elements of all buffers of a program at most (one request holds them).
pub const MAX_PROGRAM_BUFFER_ELEMENTS: u64 = 1 << 32;
/// Elements of one constant at most.
pub const MAX_CONST_ELEMENTS: u64 = 1 << 32;
/// An image side (`out` or `in`) at most, and `out × in` at most.
pub const MAX_IMAGE_SIDE: u64 = 1 << 24;
pub const MAX_IMAGE_WEIGHTS: u64 = 1 << 32;

fn elements(s: &[u64]) -> Option<u64> {
    s.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
}

/// Declared sizes: buffers of rank 1 to 3, constants of rank 1 or 2, no
/// empty dimension, element counts within the limits above; images within
/// the side limits and inside the machine (`first + crossbars <= available`,
/// with checked arithmetic), each in a phase the code has.
pub fn declarations(p: &Program, available: u64) -> Result<(), String> {
    let mut total = 0u64;
    for (k, b) in p.buffers.iter().enumerate() {
        let n = elements(b).filter(|&n| n <= MAX_BUFFER_ELEMENTS);
        if !(1..=3).contains(&b.len()) || b.contains(&0) || n.is_none() {
            return Err(format!(
                "buffer b{k} {b:?}: a buffer has 1 to 3 non-zero dimensions and at most {MAX_BUFFER_ELEMENTS} elements"
            ));
        }
        total = total.saturating_add(n.unwrap_or(u64::MAX));
    }
    if total > MAX_PROGRAM_BUFFER_ELEMENTS {
        return Err(format!(
            "the buffers hold {total} elements per request, over the limit of {MAX_PROGRAM_BUFFER_ELEMENTS}"
        ));
    }
    for (k, c) in p.consts.iter().enumerate() {
        let n = elements(&c.shape).filter(|&n| n <= MAX_CONST_ELEMENTS);
        if !(1..=2).contains(&c.shape.len()) || c.shape.contains(&0) || n.is_none() {
            return Err(format!(
                "constant c{k} {:?}: a constant has 1 or 2 non-zero dimensions and at most {MAX_CONST_ELEMENTS} elements",
                c.shape
            ));
        }
    }
    let phases: Vec<u32> = p
        .code
        .iter()
        .filter_map(|l| match l.inst {
            Inst::Phase(n) => Some(n),
            _ => None,
        })
        .collect();
    for (k, im) in p.images.iter().enumerate() {
        image(im, available).map_err(|m| format!("image i{k}: {m}"))?;
        if !phases.contains(&im.phase) {
            return Err(format!(
                "image i{k}: phase {} has no PHASE instruction",
                im.phase
            ));
        }
    }
    Ok(())
}

fn image(im: &Image, available: u64) -> Result<(), String> {
    let sides = [im.out_dim, im.in_dim];
    if sides.iter().any(|&d| d == 0 || d > MAX_IMAGE_SIDE)
        || im.out_dim * im.in_dim > MAX_IMAGE_WEIGHTS
    {
        return Err(format!(
            "[{}, {}]: an image side is 1 to {MAX_IMAGE_SIDE}, an image at most {MAX_IMAGE_WEIGHTS} weights",
            im.out_dim, im.in_dim
        ));
    }
    match im.first.checked_add(im.crossbars) {
        Some(end) if end <= available => Ok(()),
        _ => Err(format!(
            "crossbars {}..{} are outside the machine's {available}",
            im.first,
            im.first as u128 + im.crossbars as u128
        )),
    }
}

/// The shape of every operand of `inst` (declared shapes; indices may be
/// out of range in a hand-built program).
pub fn operands(p: &Program, tasks: &[TaskInfo], inst: &Inst) -> Result<(), String> {
    let buf = |b: u32| -> Result<&[u64], String> {
        p.buffers
            .get(b as usize)
            .map(Vec::as_slice)
            .ok_or(format!("buffer b{b} is not declared"))
    };
    let konst = |c: u32| -> Result<&[u64], String> {
        p.consts
            .get(c as usize)
            .map(|c| c.shape.as_slice())
            .ok_or(format!("constant c{c} is not declared"))
    };
    let same = |what: &str, got: &[u64], want: &[u64]| -> Result<(), String> {
        if got == want {
            Ok(())
        } else {
            Err(format!("{what} is {got:?}, expected {want:?}"))
        }
    };
    match inst {
        Inst::Load { dst, .. } => match buf(*dst)? {
            [_] => Ok(()),
            s => Err(format!("LOAD into b{dst} {s:?}, not a vector [seq]")),
        },
        Inst::Embed {
            dst,
            ids,
            word,
            pos,
            typ,
        } => embed(
            buf(*dst)?,
            buf(*ids)?,
            [konst(*word)?, konst(*pos)?, konst(*typ)?],
        ),
        Inst::LayerNorm {
            dst,
            src,
            gamma,
            beta,
            eps,
        } => {
            let s = buf(*src)?;
            let n = s.last().copied().unwrap_or(0);
            same(&format!("gamma c{gamma}"), konst(*gamma)?, &[n])?;
            same(&format!("beta c{beta}"), konst(*beta)?, &[n])?;
            let e = *eps as f32;
            if !(e.is_finite() && e > 0.0) {
                return Err(format!("eps={eps} is not a positive f32"));
            }
            same(&format!("the destination b{dst}"), buf(*dst)?, s)
        }
        Inst::Mvm {
            dst,
            src,
            image,
            bias,
        } => {
            let im = p
                .images
                .get(*image as usize)
                .ok_or(format!("image i{image} does not exist"))?;
            let s = buf(*src)?;
            if s.len() > 2 || s.last() != Some(&im.in_dim) {
                return Err(format!(
                    "input b{src} {s:?} for image i{image} [{}, {}]: `[.., in]` of rank 1 or 2",
                    im.out_dim, im.in_dim
                ));
            }
            same(&format!("bias c{bias}"), konst(*bias)?, &[im.out_dim])?;
            let mut want = s.to_vec();
            *want.last_mut().unwrap_or(&mut 0) = im.out_dim;
            same(&format!("the destination b{dst}"), buf(*dst)?, &want)
        }
        Inst::Dmm {
            dst,
            a,
            b,
            kind,
            heads,
        } => dmm(buf(*dst)?, buf(*a)?, buf(*b)?, *kind, *heads as u64),
        Inst::Vec { dst, op, a, b } => {
            let x = buf(*a)?;
            match (op, b) {
                (VecOp::Add, Some(b)) => same(&format!("b{b}"), buf(*b)?, x)?,
                (VecOp::Mask, Some(b)) => same(
                    &format!("the mask b{b}"),
                    buf(*b)?,
                    &x[x.len().saturating_sub(1)..],
                )?,
                (VecOp::Add | VecOp::Mask, None) => {
                    return Err("a second operand is missing".into());
                }
                (VecOp::Scale(f), _) if !(*f as f32).is_finite() => {
                    return Err(format!("scale={f} is not a finite f32"));
                }
                _ => {}
            }
            same(&format!("the destination b{dst}"), buf(*dst)?, x)
        }
        Inst::Pool { dst, src, mask, .. } => {
            let [s, h] = buf(*src)? else {
                return Err(format!("POOL of b{src} {:?}, not [s, h]", buf(*src)?));
            };
            same(&format!("the mask b{mask}"), buf(*mask)?, &[*s])?;
            same(&format!("the destination b{dst}"), buf(*dst)?, &[*h])
        }
        Inst::Store { task, src } => {
            let n = elements(buf(*src)?).unwrap_or(u64::MAX);
            match tasks.iter().find(|t| &t.name == task) {
                Some(t) if t.width != n => Err(format!(
                    "b{src} holds {n} values; task `{task}`'s head has {}",
                    t.width
                )),
                _ => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// `EMBED`: ids `[s]`; word, position and type tables `[_, h]` with at
/// least `s` positions, at least one type, at most `MAX_VOCAB` words (so
/// every id is exact in f32); result `[s, h]`.
fn embed(dst: &[u64], ids: &[u64], tables: [&[u64]; 3]) -> Result<(), String> {
    let [s] = ids else {
        return Err(format!("token ids {ids:?}, not a vector"));
    };
    let [[w, h], [p, hp], [t, ht]] = tables.map(|t| match t {
        [a, b] => [*a, *b],
        _ => [0, 0],
    });
    if w == 0 || p == 0 || t == 0 || h != hp || h != ht {
        return Err(format!(
            "embedding tables {:?}, {:?}, {:?}: matrices of one width",
            tables[0], tables[1], tables[2]
        ));
    }
    if p < *s || w > MAX_VOCAB {
        return Err(format!(
            "{s} positions for {p} position embeddings, or over {MAX_VOCAB} words ({w})"
        ));
    }
    if dst != [*s, h] {
        return Err(format!("the destination is {dst:?}, expected [{s}, {h}]"));
    }
    Ok(())
}

/// `DMM qk`: `[s, d] × [s, d] → [H, s, s]`; `DMM av`: `[H, s, s] × [s, d]
/// → [s, d]`; `H` divides `d`.
fn dmm(dst: &[u64], a: &[u64], b: &[u64], kind: DmmKind, heads: u64) -> Result<(), String> {
    let fail = || {
        Err(format!(
            "DMM {} of {a:?} and {b:?} with {heads} heads into {dst:?}",
            if kind == DmmKind::Qk { "qk" } else { "av" }
        ))
    };
    let (s, d) = match (kind, a, b) {
        (DmmKind::Qk, [s, d], _) if b == a => (*s, *d),
        (DmmKind::Av, [hh, s1, s2], [s, d]) if *hh == heads && s1 == s && s2 == s => (*s, *d),
        _ => return fail(),
    };
    let want = match kind {
        DmmKind::Qk => vec![heads, s, s],
        DmmKind::Av => vec![s, d],
    };
    if heads == 0 || d % heads != 0 || dst != want.as_slice() {
        return fail();
    }
    Ok(())
}
