//! Shape rules of every op: the single source of truth used by lowering (to
//! set shapes), the textual-IR reader and the verifier (to check them).

use super::Op;

/// The result shape of `op` on operands and params of the given shapes, or
/// why they do not fit.
pub fn infer(
    op: &Op,
    operands: &[&[u64]],
    params: &[&[u64]],
    seq: u64,
) -> Result<Vec<u64>, String> {
    let (no, np) = op.arity();
    if operands.len() != no || params.len() != np {
        return Err(format!(
            "`{}` takes {no} operand(s) and {np} param(s), found {} and {}",
            op.name(),
            operands.len(),
            params.len()
        ));
    }
    let last = |s: &[u64]| s.last().copied().unwrap_or(0);
    match op {
        Op::Input(_) => Ok(vec![seq]),
        Op::Embed => {
            let ids = operands[0];
            let (w, p, t) = (params[0], params[1], params[2]);
            if ids.len() != 1 || w.len() != 2 || p.len() != 2 || t.len() != 2 {
                return Err("embed takes ids [s] and tables [n, h]".into());
            }
            if p[1] != w[1] || t[1] != w[1] {
                return Err(format!(
                    "embedding tables disagree on width: {} {} {}",
                    w[1], p[1], t[1]
                ));
            }
            if ids[0] > p[0] {
                return Err(format!(
                    "sequence of {} exceeds the {} positions",
                    ids[0], p[0]
                ));
            }
            Ok(vec![ids[0], w[1]])
        }
        Op::LayerNorm { .. } => {
            let x = operands[0];
            if params[0] != [last(x)] || params[1] != [last(x)] {
                return Err(format!(
                    "layernorm over width {} with gamma {:?} and beta {:?}",
                    last(x),
                    params[0],
                    params[1]
                ));
            }
            Ok(x.to_vec())
        }
        Op::Linear => {
            let (x, w, b) = (operands[0], params[0], params[1]);
            if w.len() != 2 || x.is_empty() {
                return Err("linear takes x [.., in] and weight [out, in]".into());
            }
            if w[1] != last(x) {
                return Err(format!(
                    "linear: input width {} but weight {:?}",
                    last(x),
                    w
                ));
            }
            if b != [w[0]] {
                return Err(format!(
                    "linear: bias {:?} does not match weight {:?}",
                    b, w
                ));
            }
            let mut s = x.to_vec();
            *s.last_mut().unwrap_or(&mut 0) = w[0];
            Ok(s)
        }
        Op::Qk { heads } => {
            let (q, k) = (operands[0], operands[1]);
            if q.len() != 2 || q != k {
                return Err(format!(
                    "qk takes q and k of one shape [s, h], found {q:?} and {k:?}"
                ));
            }
            if *heads == 0 || q[1] % heads != 0 {
                return Err(format!("{heads} heads do not divide width {}", q[1]));
            }
            Ok(vec![*heads, q[0], q[0]])
        }
        Op::Av { heads } => {
            let (p, v) = (operands[0], operands[1]);
            if p.len() != 3 || v.len() != 2 || p[0] != *heads || p[1] != v[0] || p[2] != v[0] {
                return Err(format!(
                    "av takes p [heads, s, s] and v [s, h], found {p:?} and {v:?}"
                ));
            }
            if v[1] % heads != 0 {
                return Err(format!("{heads} heads do not divide width {}", v[1]));
            }
            Ok(v.to_vec())
        }
        Op::Mask => {
            let (s, m) = (operands[0], operands[1]);
            if s.len() != 3 || m != [s[2]] {
                return Err(format!(
                    "mask takes scores [heads, s, s] and mask [s], found {s:?} and {m:?}"
                ));
            }
            Ok(s.to_vec())
        }
        Op::Add => {
            if operands[0] != operands[1] {
                return Err(format!(
                    "add of shapes {:?} and {:?}",
                    operands[0], operands[1]
                ));
            }
            Ok(operands[0].to_vec())
        }
        Op::Scale { .. } | Op::Softmax | Op::Gelu | Op::Tanh | Op::Output { .. } => {
            Ok(operands[0].to_vec())
        }
        Op::Pool(_) => {
            let (x, m) = (operands[0], operands[1]);
            if x.len() != 2 || m != [x[0]] {
                return Err(format!(
                    "pool takes x [s, h] and mask [s], found {x:?} and {m:?}"
                ));
            }
            Ok(vec![x[1]])
        }
    }
}
