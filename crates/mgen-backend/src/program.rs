//! Program packages: building one from a placed module (calibration,
//! quantisation, constants, reference outputs), and program directories.
//!
//! A program directory (`mgen compile --emit program -o DIR`) holds
//! `program.masm` (the assembly), `crossbars.safetensors` (per image `iK.q`
//! the quantised weights `[out, in]` as I16, `iK.smooth` the per-input
//! smoothing divisors and `iK.scale` the per-row
//! scales; per constant `cK`; per task `ref.TASK` the float-reference
//! outputs) and `manifest.json` (format, hardware, tasks, requests, the
//! SHA-256 of the two other files and of its own content). Reading
//! ([`super::progdir`]) checks each digest before parsing the file, so a
//! truncated or tampered directory is an error (E303), not a wrong result.

use super::codegen::codegen;
use super::isa::Program;
use super::manifest::sha;
use super::quant::{InputQuant, QMatrix, quantize_weights, smooth_and_quantize};
use crate::data::Batch;
use crate::diag::{Code, Diagnostic, Diags};
use crate::ir::{Module, NodeId, Op, ParamId};
use crate::passes::Artifacts;
use crate::reference::Plan;
use crate::spec::Head;
use crate::weights::Store;
use mgen_isa::package::{Package, TaskInfo};
use ndarray::{Array1, Array2, ArrayD};
use rayon::prelude::*;
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The workload's tasks as the simulator sees them.
pub fn task_infos(m: &Module) -> Vec<TaskInfo> {
    m.spec
        .workload
        .tasks
        .iter()
        .map(|&t| {
            let task = &m.spec.tasks[t];
            let h = m.spec.base_of(t).hidden;
            TaskInfo {
                name: task.name.clone(),
                kind: match task.head {
                    Head::Classify { .. } => "classify".into(),
                    Head::Regress { .. } => "regress".into(),
                    Head::Embed { .. } => "embed".into(),
                },
                width: task.head.width(h),
            }
        })
        .collect()
}

/// The static input treatment of one `linear` node: per-channel smoothing
/// divisors (folded into the weights) and the per-tensor quantisation
/// (scale and zero point) of the smoothed inputs.
#[derive(Debug, Clone)]
pub struct InputCalibration {
    pub quant: InputQuant,
    pub smooth: Array1<f32>,
}

/// Input calibration of every `linear` node, and the float outputs per task.
pub type Calibration = (HashMap<NodeId, InputCalibration>, Vec<Array2<f32>>);

/// Runs the float reference over the batch and calibrates every `linear`
/// node's inputs on the values it sees.
///
/// Every request of `batch` is evaluated; activation values are sampled from
/// the first [`CALIBRATION_REQUESTS`] only, so one pass gives both the
/// calibration and the reference outputs the accuracy report needs.
/// Per matrix, the input treatment is chosen by
/// [`super::quant::choose_input_treatment`]: optional SmoothQuant-style
/// per-channel divisors `s_c = max|x_c|^α / max|W[:,c]|^(1−α)` (the digital
/// unit divides each input by `s_c` before the DAC; the crossbar holds
/// `W·diag(s)`), and the MSE-optimal per-tensor quantisation of the
/// smoothed inputs, symmetric or with a zero point — whichever candidate
/// reproduces the float product best on 128 calibration tokens.
pub fn calibrate(m: &Module, store: &Store, batch: &Batch) -> Result<Calibration, Diags> {
    let plan = Plan::new(m, store)?;
    // Linear nodes by their input node (Q, K and V share one input).
    let mut users: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
    for id in m.graph.node_indices().map(NodeId) {
        if matches!(m.node(id).op, Op::Linear) {
            users.entry(m.operands(id)[0]).or_default().push(id);
        }
    }
    // Per input node: a strided sample (value, channel) and per-channel maxima.
    const SAMPLES: usize = 1 << 17;
    let sampled = batch.requests.len().min(CALIBRATION_REQUESTS);
    let per_request = (SAMPLES / sampled.max(1)).max(1);
    // (value, channel) samples, per-channel maxima, whole token rows.
    type Seen = (Vec<(f32, u32)>, Vec<f32>, Vec<f32>);
    const ROWS: usize = 128;
    let rows_per_request = ROWS.div_ceil(sampled.max(1));
    // Each request's observations are kept apart and merged in request
    // order afterwards, so the samples (and the calibration) do not depend
    // on which thread finished first.
    type Observed = (Vec<Vec<f32>>, HashMap<NodeId, Seen>);
    let results: Vec<Observed> = batch
        .requests
        .par_iter()
        .enumerate()
        .map(|(i, r)| {
            if i >= sampled {
                return (plan.run_one(&r.ids, &r.mask()), HashMap::new());
            }
            let mut local: HashMap<NodeId, Seen> = HashMap::new();
            // Padded positions are not real activations: sample real tokens only.
            let real = r.len;
            let out = plan.run_observed(&r.ids, &r.mask(), &mut |id, v| {
                if users.contains_key(&id) {
                    let width = *v.shape().last().unwrap_or(&1);
                    let n = if v.ndim() == 2 { real * width } else { v.len() };
                    let step = (n / per_request).max(1);
                    let (samples, maxes, keep) = local
                        .entry(id)
                        .or_insert_with(|| (Vec::new(), vec![0.0; width], Vec::new()));
                    for (k, &x) in v.iter().take(n).enumerate() {
                        let c = k % width;
                        maxes[c] = maxes[c].max(x.abs());
                        if k % step == 0 {
                            samples.push((x, c as u32));
                        }
                    }
                    let tokens = n / width.max(1);
                    let stride = (tokens / rows_per_request).max(1);
                    for t in (0..tokens).step_by(stride).take(rows_per_request) {
                        keep.extend(v.iter().skip(t * width).take(width));
                    }
                }
            });
            (out, local)
        })
        .collect();
    let mut seen: HashMap<NodeId, Seen> = HashMap::new();
    let mut rows = Vec::with_capacity(results.len());
    for (out, local) in results {
        rows.push(out);
        for (k, (s, mx, keep)) in local {
            let e = seen
                .entry(k)
                .or_insert_with(|| (Vec::new(), vec![0.0; mx.len()], Vec::new()));
            e.0.extend(s);
            e.2.extend(keep);
            for (a, b) in e.1.iter_mut().zip(mx) {
                *a = a.max(b);
            }
        }
    }
    let outputs = plan.assemble(&rows).into_iter().map(|o| o.values).collect();
    let bits = m.spec.hardware.input_bits;
    // Per weight param, its linear nodes with what they saw (one smoothing
    // for all of them: they may share crossbars).
    let mut by_param: BTreeMap<ParamId, Vec<(NodeId, &Seen)>> = BTreeMap::new();
    for (i, us) in &users {
        for u in us {
            if let Some(s) = seen.get(i) {
                by_param
                    .entry(m.node(*u).params[0])
                    .or_default()
                    .push((*u, s));
            }
        }
    }
    let jobs: Vec<(ParamId, Vec<(NodeId, &Seen)>)> = by_param
        .into_iter()
        .map(|(p, mut us)| {
            us.sort_by_key(|u| u.0);
            (p, us)
        })
        .collect();
    let calib: Result<Vec<Vec<(NodeId, InputCalibration)>>, Diags> = jobs
        .into_par_iter()
        .map(|(pid, us)| {
            let param = &m.params[pid];
            let w = store
                .tensor(&param.digest)
                .map_err(|e| Diags::from(Diagnostic::internal(e)))?;
            let w = w
                .view()
                .into_dimensionality::<ndarray::Ix2>()
                .map_err(|_| Diags::from(Diagnostic::internal("a matrix is not 2-D")))?;
            let mut observed = Vec::with_capacity(us.len());
            for (_, (samples, xmax, keep)) in &us {
                let width = xmax.len().max(1);
                let rows = ndarray::ArrayView2::from_shape(
                    (keep.len() / width, width),
                    &keep[..keep.len() / width * width],
                )
                .map_err(|e| Diags::from(Diagnostic::internal(e.to_string())))?;
                observed.push(super::quant::Observed {
                    xmax,
                    samples,
                    rows,
                });
            }
            let wbits = param.bits.unwrap_or(m.spec.hardware.weight_bits);
            // Smoothing is folded into the weights before quantisation; a
            // low-bit delta is exact on its own grid only unsmoothed.
            let (smooth, quants) = super::quant::choose_shared_treatment(
                w,
                &observed,
                wbits,
                bits,
                wbits == m.spec.hardware.weight_bits,
            );
            Ok(us
                .iter()
                .zip(quants)
                .map(|((u, _), quant)| {
                    (
                        *u,
                        InputCalibration {
                            quant,
                            smooth: smooth.clone(),
                        },
                    )
                })
                .collect())
        })
        .collect();
    Ok((calib?.into_iter().flatten().collect(), outputs))
}

/// The per-tensor input quantisation of every calibrated `linear` node.
fn xscales(calib: &HashMap<NodeId, InputCalibration>) -> HashMap<NodeId, InputQuant> {
    calib.iter().map(|(k, c)| (*k, c.quant)).collect()
}

/// Static activation scales are calibrated on at most this many requests
/// (the first ones of the workload).
pub const CALIBRATION_REQUESTS: usize = 16;

/// The program of a placed module with calibrated scales (`--emit asm`).
pub fn program(
    m: &Module,
    arts: &Artifacts,
    store: &Store,
    batch: &Batch,
) -> Result<Program, Diags> {
    let placement = match &arts.placement {
        Some(p) => p.clone(),
        None => super::place::place(m)?,
    };
    let first = Batch {
        seq: batch.seq,
        requests: batch
            .requests
            .iter()
            .take(CALIBRATION_REQUESTS)
            .cloned()
            .collect(),
    };
    let (calib, _) = calibrate(m, store, &first)?;
    Ok(codegen(
        m,
        &placement,
        arts.schedule.as_ref(),
        &xscales(&calib),
    ))
}

/// Builds a package. With `counts_only`, nothing is calibrated or
/// materialised (images and constants are left empty).
pub fn package(
    m: &Module,
    arts: &Artifacts,
    store: &Store,
    batch: &Batch,
    counts_only: bool,
) -> Result<Package, Diags> {
    let placement = match &arts.placement {
        Some(p) => p.clone(),
        None => super::place::place(m)?,
    };
    let (calib, reference) = if counts_only {
        (HashMap::new(), None)
    } else {
        let (c, r) = calibrate(m, store, batch)?;
        (c, Some(r))
    };
    let (prog, const_params) = super::codegen::codegen_with_consts(
        m,
        &placement,
        arts.schedule.as_ref(),
        &xscales(&calib),
    );
    let hw = m.spec.hardware.clone();
    let (images, consts) = if counts_only {
        (Vec::new(), Vec::new())
    } else {
        let images: Result<Vec<QMatrix>, Diags> = placement
            .matrices
            .par_iter()
            .map(|mp| {
                let w = store
                    .tensor(&m.params[mp.param].digest)
                    .map_err(|e| Diags::from(Diagnostic::internal(e)))?;
                let w2 = w
                    .view()
                    .into_dimensionality::<ndarray::Ix2>()
                    .map_err(|_| Diags::from(Diagnostic::internal("a matrix is not 2-D")))?;
                Ok(match calib.get(&mp.node) {
                    Some(c) => smooth_and_quantize(w2, &c.smooth, mp.bits),
                    None => quantize_weights(w2, mp.bits),
                })
            })
            .collect();
        let mut consts = Vec::new();
        for pid in &const_params {
            let digest = &m.params[pid].digest;
            consts.push(
                store
                    .tensor(digest)
                    .map_err(|e| Diags::from(Diagnostic::internal(e)))?,
            );
        }
        (images?, consts)
    };
    Ok(Package {
        prog,
        hw,
        tasks: task_infos(m),
        requests: batch.requests.clone(),
        seq: batch.seq,
        images,
        consts,
        reference,
    })
}

fn f32_bytes(a: &ArrayD<f32>) -> Vec<u8> {
    a.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn io_err(what: String) -> Diags {
    Diagnostic::error(Code::E105, what).into()
}

/// Writes a program directory (atomically per file).
pub fn write_dir(pkg: &Package, dir: &Path) -> Result<(), Diags> {
    std::fs::create_dir_all(dir)
        .map_err(|e| io_err(format!("cannot create `{}`: {e}", dir.display())))?;
    let masm = pkg.prog.to_masm();
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (k, q) in pkg.images.iter().enumerate() {
        // A reuse holds its primary's crossbars: nothing of its own.
        if pkg.prog.images.get(k).is_some_and(|im| im.reuses.is_some()) {
            continue;
        }
        let (o, i) = q.q.dim();
        owned.push((
            format!("i{k}.q"),
            Dtype::I16,
            vec![o, i],
            q.q.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
        owned.push((
            format!("i{k}.smooth"),
            Dtype::F32,
            vec![i],
            q.smooth.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
        owned.push((
            format!("i{k}.scale"),
            Dtype::F32,
            vec![o],
            q.scale.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
    }
    for (k, c) in pkg.consts.iter().enumerate() {
        owned.push((
            format!("c{k}"),
            Dtype::F32,
            c.shape().to_vec(),
            f32_bytes(c),
        ));
    }
    if let Some(r) = &pkg.reference {
        for (t, a) in pkg.tasks.iter().zip(r) {
            owned.push((
                format!("ref.{}", t.name),
                Dtype::F32,
                vec![a.nrows(), a.ncols()],
                a.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ));
        }
    }
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<Result<_, _>>()
        .map_err(|e| io_err(format!("cannot encode the crossbar images: {e}")))?;
    let st = safetensors::tensor::serialize(views, None)
        .map_err(|e| io_err(format!("cannot encode the crossbar images: {e}")))?;
    let manifest = serde_json::json!({
        "format": "mgen-program",
        "version": super::manifest::VERSION,
        "hardware": pkg.hw,
        "tasks": pkg.tasks,
        "seq": pkg.seq,
        "requests": pkg.requests.iter().map(|r| serde_json::json!({ "ids": &r.ids[..r.len], "text": r.text })).collect::<Vec<_>>(),
        "functional": !pkg.images.is_empty() || pkg.prog.images.is_empty(),
        "outputs": pkg.tasks.iter().map(|t| format!("{}.npy", t.name)).collect::<Vec<_>>(),
        "sha256": { "program.masm": sha(masm.as_bytes()), "crossbars.safetensors": sha(&st) },
    });
    let mut manifest = manifest;
    manifest["sha256"]["manifest"] = super::manifest::digest(&manifest).into();
    mgen_util::fs::write_atomic(&dir.join("program.masm"), masm.as_bytes())?;
    mgen_util::fs::write_atomic(&dir.join("crossbars.safetensors"), &st)?;
    mgen_util::fs::write_atomic(
        &dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    Ok(())
}

pub use super::progdir::read_dir;
