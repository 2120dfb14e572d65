//! Code generation: placed IR → [`Program`].
//!
//! One activation buffer per IR node (the schedule that reuses buffers is
//! the task scheduler's); constants (embedding tables, biases, LayerNorm
//! vectors) get eDRAM slots; each placed matrix becomes a crossbar image.
//! A node runs in the phase of its matrix, or the latest phase of its
//! operands; within a phase, nodes run in the IR's canonical order inside a
//! `FOR_REQUESTS` loop. A buffer produced in one phase and read in a later
//! one is `SPILL`ed at the end of its phase and `FILL`ed where it is read.
//! Every instruction names the IR node, tasks, layer and source line it
//! came from.

use super::isa::{Const, DmmKind, Image, Input, Inst, Line, Program, VecOp};
use super::place::Placement;
use super::quant::InputQuant;
use crate::ir::{InputKind, Layer, Module, NodeId, Op, ParamId};
use crate::passes::schedule::Schedule;
use crate::spec::Pool;
use std::collections::{BTreeSet, HashMap};

/// Generates the program; `xscale` gives the static input quantisation of
/// each `linear` node (symmetric with scale 1.0 where absent, e.g. in
/// counting mode).
pub fn codegen(
    m: &Module,
    p: &Placement,
    schedule: Option<&Schedule>,
    xscale: &HashMap<NodeId, InputQuant>,
) -> Program {
    codegen_with_consts(m, p, schedule, xscale).0
}

/// [`codegen`], also returning the param behind each constant `cK`.
pub fn codegen_with_consts(
    m: &Module,
    p: &Placement,
    schedule: Option<&Schedule>,
    xscale: &HashMap<NodeId, InputQuant>,
) -> (Program, Vec<ParamId>) {
    let hw = &m.spec.hardware;
    let order = m.canonical_order().unwrap_or_default();
    let names = m.task_names();
    let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut prog = Program {
        buffers: Vec::new(),
        consts: Vec::new(),
        images: Vec::new(),
        code: Vec::new(),
    };
    let mut image_of: HashMap<NodeId, u32> = HashMap::new();
    let per_tile = hw.crossbars_per_core * hw.cores_per_tile;
    for mp in &p.matrices {
        let tiles = (mp.first / per_tile..=(mp.first + mp.crossbars - 1) / per_tile).count() as u32;
        image_of.insert(mp.node, prog.images.len() as u32);
        let xq = xscale
            .get(&mp.node)
            .copied()
            .unwrap_or(InputQuant::symmetric(1.0, hw.input_bits));
        prog.images.push(Image {
            tensor: mp.tensor.clone(),
            out_dim: mp.out_dim,
            in_dim: mp.in_dim,
            phase: mp.phase,
            first: mp.first,
            crossbars: mp.crossbars,
            tiles,
            xscale: xq.scale,
            xzero: xq.zero,
            wbits: mp.bits,
            reuses: mp.reuses.map(|j| j as u32),
        });
    }
    let mut const_of: HashMap<ParamId, u32> = HashMap::new();
    let mut konst = |prog: &mut Program, pid: ParamId| -> u32 {
        *const_of.entry(pid).or_insert_with(|| {
            let pr = &m.params[pid];
            prog.consts.push(Const {
                tensor: pr.name.clone(),
                shape: pr.shape.clone(),
            });
            (prog.consts.len() - 1) as u32
        })
    };
    // Buffers: one per non-output node.
    let mut buf: HashMap<NodeId, u32> = HashMap::new();
    for id in &order {
        let n = m.node(*id);
        if !matches!(n.op, Op::Output { .. }) {
            buf.insert(*id, prog.buffers.len() as u32);
            prog.buffers.push(n.shape.clone());
        }
    }
    // Phases (the scheduler computes them the same way).
    let phase = crate::passes::schedule::phases_of(m, p, &order);
    let meta = |id: NodeId, inst: Inst| -> Line {
        let n = m.node(id);
        Line {
            inst,
            node: format!("%{}", pos[&id]),
            tasks: n
                .tasks
                .iter()
                .filter_map(|t| names.get(t).map(|s| s.to_string()))
                .collect(),
            layer: match n.layer {
                Layer::Input => "input".into(),
                Layer::Embed => "emb".into(),
                Layer::Encoder(l) => l.to_string(),
                Layer::Head => "head".into(),
            },
            at: n.origin.replace(' ', "%20"),
        }
    };
    let bare = |inst: Inst| Line {
        inst,
        node: String::new(),
        tasks: Vec::new(),
        layer: String::new(),
        at: String::new(),
    };
    // Request groups (the task scheduler's): with one phase, or one group,
    // a single loop over every request; otherwise every group runs every
    // phase, reprogramming each phase's crossbars per group.
    let evict: std::collections::HashSet<NodeId> = schedule
        .map(|s| s.evict.iter().copied().collect())
        .unwrap_or_default();
    let (groups, edram) = match schedule {
        Some(s) if p.phases > 1 && s.group < s.requests => {
            let g: Vec<Option<(u32, u32)>> = (0..s.requests)
                .step_by(s.group.max(1))
                .map(|a| Some((a as u32, s.group.min(s.requests - a) as u32)))
                .collect();
            (g, s.edram)
        }
        Some(s) => (vec![None], s.edram),
        None => (vec![None], false),
    };
    for group in &groups {
        for ph in 0..p.phases {
            prog.code.push(bare(Inst::Phase(ph)));
            for (i, mp) in p.matrices.iter().enumerate() {
                if mp.phase == ph && mp.reuses.is_none() {
                    prog.code.push(meta(mp.node, Inst::XbProgram(i as u32)));
                }
            }
            prog.code.push(bare(match group {
                Some((first, count)) => Inst::ForGroup {
                    first: *first,
                    count: *count,
                },
                None => Inst::ForRequests,
            }));
            // Buffers from earlier phases read here.
            let mut filled = BTreeSet::new();
            for id in order.iter().filter(|id| phase[id] == ph) {
                for o in m.operands(*id) {
                    if phase[&o] < ph && filled.insert(buf[&o]) {
                        prog.code.push(meta(
                            o,
                            Inst::Fill {
                                dst: buf[&o],
                                edram,
                            },
                        ));
                    }
                }
            }
            for id in order.iter().filter(|id| phase[id] == ph) {
                // Operands the schedule keeps off chip between uses come back first.
                let mut back = BTreeSet::new();
                for o in m.operands(*id) {
                    if evict.contains(&o) && phase[&o] == ph && back.insert(o) {
                        prog.code.push(meta(
                            o,
                            Inst::Fill {
                                dst: buf[&o],
                                edram: false,
                            },
                        ));
                    }
                }
                let n = m.node(*id);
                let ops: Vec<u32> = m
                    .operands(*id)
                    .iter()
                    .map(|o| buf.get(o).copied().unwrap_or(0))
                    .collect();
                let dst = buf.get(id).copied().unwrap_or(0);
                match &n.op {
                    Op::Input(k) => prog.code.push(meta(
                        *id,
                        Inst::Load {
                            dst,
                            input: if *k == InputKind::Ids {
                                Input::Ids
                            } else {
                                Input::Mask
                            },
                        },
                    )),
                    Op::Embed => {
                        let (w, ps, t) = (
                            konst(&mut prog, n.params[0]),
                            konst(&mut prog, n.params[1]),
                            konst(&mut prog, n.params[2]),
                        );
                        prog.code.push(meta(
                            *id,
                            Inst::Embed {
                                dst,
                                ids: ops[0],
                                word: w,
                                pos: ps,
                                typ: t,
                            },
                        ));
                    }
                    Op::LayerNorm { eps } => {
                        let (g, b) = (konst(&mut prog, n.params[0]), konst(&mut prog, n.params[1]));
                        prog.code.push(meta(
                            *id,
                            Inst::LayerNorm {
                                dst,
                                src: ops[0],
                                gamma: g,
                                beta: b,
                                eps: *eps,
                            },
                        ));
                    }
                    Op::Linear => {
                        let image = image_of[id];
                        let bias = konst(&mut prog, n.params[1]);
                        prog.code.push(meta(
                            *id,
                            Inst::Send {
                                src: ops[0],
                                tiles: prog.images[image as usize].tiles,
                            },
                        ));
                        prog.code.push(meta(
                            *id,
                            Inst::Mvm {
                                dst,
                                src: ops[0],
                                image,
                                bias,
                            },
                        ));
                    }
                    Op::Qk { heads } => prog.code.push(meta(
                        *id,
                        Inst::Dmm {
                            dst,
                            a: ops[0],
                            b: ops[1],
                            kind: DmmKind::Qk,
                            heads: *heads as u32,
                        },
                    )),
                    Op::Av { heads } => prog.code.push(meta(
                        *id,
                        Inst::Dmm {
                            dst,
                            a: ops[0],
                            b: ops[1],
                            kind: DmmKind::Av,
                            heads: *heads as u32,
                        },
                    )),
                    Op::Scale { factor } => prog.code.push(meta(
                        *id,
                        Inst::Vec {
                            dst,
                            op: VecOp::Scale(*factor),
                            a: ops[0],
                            b: None,
                        },
                    )),
                    Op::Mask => prog.code.push(meta(
                        *id,
                        Inst::Vec {
                            dst,
                            op: VecOp::Mask,
                            a: ops[0],
                            b: Some(ops[1]),
                        },
                    )),
                    Op::Softmax => prog.code.push(meta(
                        *id,
                        Inst::Vec {
                            dst,
                            op: VecOp::Softmax,
                            a: ops[0],
                            b: None,
                        },
                    )),
                    Op::Add => prog.code.push(meta(
                        *id,
                        Inst::Vec {
                            dst,
                            op: VecOp::Add,
                            a: ops[0],
                            b: Some(ops[1]),
                        },
                    )),
                    Op::Gelu => prog.code.push(meta(
                        *id,
                        Inst::Vec {
                            dst,
                            op: VecOp::Gelu,
                            a: ops[0],
                            b: None,
                        },
                    )),
                    Op::Tanh => prog.code.push(meta(
                        *id,
                        Inst::Vec {
                            dst,
                            op: VecOp::Tanh,
                            a: ops[0],
                            b: None,
                        },
                    )),
                    Op::Pool(pool) => prog.code.push(meta(
                        *id,
                        Inst::Pool {
                            dst,
                            src: ops[0],
                            mask: ops[1],
                            mean: *pool == Pool::Mean,
                        },
                    )),
                    Op::Output { task } => prog.code.push(meta(
                        *id,
                        Inst::Store {
                            task: names[*task].to_string(),
                            src: ops[0],
                        },
                    )),
                }
                if evict.contains(id) {
                    prog.code.push(meta(
                        *id,
                        Inst::Spill {
                            src: dst,
                            edram: false,
                        },
                    ));
                }
            }
            // Buffers made here and read in a later phase.
            for id in order.iter().filter(|id| phase[id] == ph) {
                if m.users(*id).iter().any(|u| phase[u] > ph) {
                    prog.code.push(meta(
                        *id,
                        Inst::Spill {
                            src: buf[id],
                            edram,
                        },
                    ));
                }
            }
            prog.code.push(bare(Inst::End));
        }
    }
    prog.code.push(bare(Inst::Halt));
    let mut consts: Vec<(u32, ParamId)> = const_of.into_iter().map(|(p, k)| (k, p)).collect();
    consts.sort();
    (prog, consts.into_iter().map(|(_, p)| p).collect())
}
