//! The simulator: runs a [`Package`] (program, hardware, crossbar images,
//! constants, requests) and reports outputs, accuracy, energy, latency,
//! area and wear.
//!
//! Before running, [`validate`] checks the program statically: every MVM's
//! crossbars are programmed earlier in the same phase, buffers are written
//! before they are read, `FOR_REQUESTS`/`END` nest. A bad program is an
//! error naming the instruction (E304), never a panic.
//!
//! Depends on `mgen-util`, `mgen-hw`, `mgen-front` (limits), `mgen-isa` and
//! `mgen-model` (the float kernels the digital units share with the
//! reference executor) only: it runs a package, whoever built it.

pub(crate) use mgen_hw as hw;
pub(crate) use mgen_util::{diag, progress, table};

pub use mgen_isa::cost;
pub mod chips;
pub mod exec;
pub mod noise;
pub mod shapes;

use crate::diag::{Code, Diagnostic, Diags};
use crate::hw::Hardware;
use cost::{COMPONENTS, cost};
use mgen_isa::isa::{Inst, Program};
use ndarray::{Array2, ArrayD};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

pub use mgen_isa::package::{Package, TaskInfo};

fn bad(i: usize, l: &Inst, msg: String) -> Diags {
    Diagnostic::error(
        Code::E304,
        format!("instruction {} (`{}`): {msg}", i + 1, l.mnemonic()),
    )
    .into()
}

/// Static checks of a program against its images (see the module docs).
pub fn validate(p: &Program, tasks: &[TaskInfo], available: u64) -> Result<(), Diags> {
    shapes::declarations(p, available)
        .map_err(|m| Diags::from(Diagnostic::error(Code::E304, m)))?;
    for (k, im) in p.images.iter().enumerate() {
        let fail = |msg: String| -> Diags {
            Diagnostic::error(Code::E304, format!("image i{k}: {msg}")).into()
        };
        if !(2..=16).contains(&im.wbits) {
            return Err(fail(format!(
                "weights of {} bits; mgen stores 2 to 16",
                im.wbits
            )));
        }
        if let Some(j) = im.reuses {
            let same = p.images.get(j as usize).is_some_and(|o| {
                (j as usize) < k
                    && o.reuses.is_none()
                    && o.phase == im.phase
                    && o.first == im.first
                    && o.crossbars == im.crossbars
                    && o.out_dim == im.out_dim
                    && o.in_dim == im.in_dim
                    && o.wbits == im.wbits
                    && o.tensor == im.tensor
            });
            if !same {
                return Err(fail(format!(
                    "reuses i{j}, which is not an earlier programmed image of the same phase, crossbars, shape, width and tensor"
                )));
            }
        }
    }
    let mut programmed: BTreeSet<u32> = BTreeSet::new();
    let mut written: BTreeSet<u32> = BTreeSet::new();
    let mut spilled: BTreeSet<u32> = BTreeSet::new();
    let mut stored: BTreeSet<&str> = BTreeSet::new();
    // STOREs in the current loop, and per task the loop ranges that stored it.
    let mut stored_here: BTreeSet<&str> = BTreeSet::new();
    let mut covered: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut loop_range = String::new();
    let mut in_loop = false;
    let mut phase = None;
    let mut halted = false;
    for (i, line) in p.code.iter().enumerate() {
        let inst = &line.inst;
        if halted {
            return Err(bad(i, inst, "an instruction after HALT".into()));
        }
        let reads: Vec<u32> = match inst {
            Inst::Embed { ids, .. } => vec![*ids],
            Inst::LayerNorm { src, .. }
            | Inst::Send { src, .. }
            | Inst::Spill { src, .. }
            | Inst::Store { src, .. } => vec![*src],
            Inst::Mvm { src, .. } => vec![*src],
            Inst::Dmm { a, b, .. } => vec![*a, *b],
            Inst::Vec { a, b, .. } => std::iter::once(*a).chain(*b).collect(),
            Inst::Pool { src, mask, .. } => vec![*src, *mask],
            _ => vec![],
        };
        for r in reads {
            if !written.contains(&r) {
                return Err(bad(
                    i,
                    inst,
                    format!("buffer b{r} is read before it is written"),
                ));
            }
        }
        shapes::operands(p, tasks, inst).map_err(|m| bad(i, inst, m))?;
        match inst {
            Inst::Phase(n) => {
                if in_loop {
                    return Err(bad(i, inst, "PHASE inside FOR_REQUESTS".into()));
                }
                phase = Some(*n);
                programmed.clear();
            }
            Inst::XbProgram(img) => {
                let im = p
                    .images
                    .get(*img as usize)
                    .ok_or_else(|| bad(i, inst, format!("image i{img} does not exist")))?;
                if let Some(j) = im.reuses {
                    return Err(bad(
                        i,
                        inst,
                        format!("image i{img} reuses the crossbars of i{j}; program i{j} instead"),
                    ));
                }
                if Some(im.phase) != phase {
                    return Err(bad(
                        i,
                        inst,
                        format!("image i{img} belongs to phase {}", im.phase),
                    ));
                }
                programmed.insert(*img);
            }
            Inst::ForRequests | Inst::ForGroup { .. } => {
                stored_here.clear();
                loop_range = match inst {
                    Inst::ForGroup { first, count } => {
                        format!("{first}..{}", *first as u64 + *count as u64)
                    }
                    _ => "all".into(),
                };
                if in_loop {
                    return Err(bad(i, inst, "nested FOR_REQUESTS".into()));
                }
                in_loop = true;
                // Buffers live for one request's body: a later phase sees only
                // what it FILLs.
                written.clear();
            }
            Inst::Halt => halted = true,
            Inst::End => {
                if !in_loop {
                    return Err(bad(i, inst, "END without FOR_REQUESTS".into()));
                }
                in_loop = false;
            }
            Inst::Mvm { image, .. }
                if !programmed.contains(
                    &p.images
                        .get(*image as usize)
                        .and_then(|im| im.reuses)
                        .unwrap_or(*image),
                ) =>
            {
                return Err(bad(
                    i,
                    inst,
                    format!(
                        "MVM on the crossbars of image i{image}, which are not programmed in this phase"
                    ),
                ));
            }
            Inst::Store { task, .. } if !tasks.iter().any(|t| &t.name == task) => {
                return Err(bad(i, inst, format!("STORE to unknown task `{task}`")));
            }
            Inst::Store { task, .. } if !stored_here.insert(task.as_str()) => {
                return Err(bad(i, inst, format!("a second STORE for task `{task}`")));
            }
            Inst::Store { task, .. }
                if !loop_range.is_empty()
                    && !covered
                        .entry(task.as_str())
                        .or_default()
                        .insert(loop_range.clone()) =>
            {
                return Err(bad(
                    i,
                    inst,
                    format!("a second STORE for task `{task}` over requests {loop_range}"),
                ));
            }
            Inst::Store { task, .. } => {
                stored.insert(task.as_str());
            }
            Inst::Fill { dst, .. } if !spilled.contains(dst) => {
                return Err(bad(
                    i,
                    inst,
                    format!("FILL b{dst} of a buffer never spilled"),
                ));
            }
            Inst::Spill { src, .. } => {
                spilled.insert(*src);
            }
            _ => {}
        }
        if !matches!(
            inst,
            Inst::Phase(_)
                | Inst::XbProgram(_)
                | Inst::ForRequests
                | Inst::ForGroup { .. }
                | Inst::End
                | Inst::Halt
                | Inst::Barrier
        ) && !in_loop
        {
            return Err(bad(i, inst, "request work outside FOR_REQUESTS".into()));
        }
        if let Some(dst) = inst.written() {
            written.insert(dst);
        }
    }
    if !halted {
        return Err(Diagnostic::error(Code::E304, "the program does not end with HALT").into());
    }
    if let Some(t) = tasks.iter().find(|t| !stored.contains(t.name.as_str())) {
        return Err(Diagnostic::error(
            Code::E304,
            format!("the program stores no output for task `{}`", t.name),
        )
        .into());
    }
    if in_loop {
        return Err(Diagnostic::error(Code::E304, "the program ends inside FOR_REQUESTS").into());
    }
    Ok(())
}

/// [`validate`] and the checks that need the whole package: `LOAD`
/// buffers are `[seq]`; every image's crossbar count is the closed form of
/// its shape on this hardware and its `tiles=` the tiles its range spans;
/// `SEND` reaches at most the machine's tiles; images and constants, when
/// loaded, match the program's declarations. Run before counting or
/// executing, in every mode.
pub fn validate_package(pkg: &Package) -> Result<(), Diags> {
    let (p, hw) = (&pkg.prog, &pkg.hw);
    validate(p, &pkg.tasks, hw.crossbars())?;
    let fail = |m: String| -> Diags { Diagnostic::error(Code::E304, m).into() };
    let per_tile = (hw.crossbars_per_core * hw.cores_per_tile).max(1);
    for (k, im) in p.images.iter().enumerate() {
        let (rb, cb, sl, sg) = hw.blocks(im.out_dim, im.in_dim, im.wbits);
        let need = rb.checked_mul(cb).and_then(|x| x.checked_mul(sl * sg));
        let span = (im.first + im.crossbars.max(1) - 1) / per_tile - im.first / per_tile + 1;
        if need != Some(im.crossbars) || span != im.tiles as u64 {
            return Err(fail(format!(
                "image i{k} [{}, {}] on {} crossbars over {} tiles; this hardware needs {} crossbars, and the range spans {span} tiles",
                im.out_dim,
                im.in_dim,
                im.crossbars,
                im.tiles,
                need.map_or("too many".into(), |n| n.to_string())
            )));
        }
    }
    let machine_tiles = hw.chips * hw.tiles;
    for (i, line) in p.code.iter().enumerate() {
        match &line.inst {
            Inst::Load { dst, .. }
                if p.buffers.get(*dst as usize) != Some(&vec![pkg.seq as u64]) =>
            {
                return Err(bad(
                    i,
                    &line.inst,
                    format!("b{dst} is not [{}], the manifest's seq", pkg.seq),
                ));
            }
            Inst::Send { tiles, .. } if *tiles as u64 > machine_tiles => {
                return Err(bad(
                    i,
                    &line.inst,
                    format!("{tiles} tiles; the machine has {machine_tiles}"),
                ));
            }
            _ => {}
        }
    }
    loaded_match(pkg).map_err(fail)
}

/// Loaded images and constants (if any) have the program's shapes.
fn loaded_match(pkg: &Package) -> Result<(), String> {
    let p = &pkg.prog;
    if !pkg.images.is_empty() {
        if pkg.images.len() != p.images.len() {
            return Err(format!(
                "{} images for {} declared",
                pkg.images.len(),
                p.images.len()
            ));
        }
        for (k, (q, im)) in pkg.images.iter().zip(&p.images).enumerate() {
            let (o, i) = q.q.dim();
            if (o as u64, i as u64) != (im.out_dim, im.in_dim)
                || q.scale.len() != o
                || q.smooth.len() != i
                || q.bits != im.wbits
            {
                return Err(format!("image i{k}'s weights do not match its declaration"));
            }
        }
    }
    if !pkg.consts.is_empty() {
        let same = pkg.consts.len() == p.consts.len()
            && pkg.consts.iter().zip(&p.consts).all(|(a, c)| {
                a.shape()
                    .iter()
                    .map(|&d| d as u64)
                    .eq(c.shape.iter().copied())
            });
        if !same {
            return Err("the constants do not match their declarations".into());
        }
    }
    Ok(())
}

/// Energy, latency, area and wear of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub energy_pj: f64,
    pub breakdown: BTreeMap<String, f64>,
    pub by_tasks: BTreeMap<String, f64>,
    pub by_layer: BTreeMap<String, f64>,
    /// One request's latency from the overlapping timing model.
    pub latency_ns: f64,
    pub timing: mgen_isa::timing::Timing,
    pub adc_conversions: f64,
    pub cell_writes: f64,
    pub crossbars: u64,
    pub crossbars_available: u64,
    pub tiles_in_use: u64,
    pub area_mm2: f64,
    pub phases: u32,
    /// Most writes any cell receives in one run of the program.
    pub writes_per_cell_per_run: u64,
    /// Inferences until the most-written cell reaches its endurance; `None`
    /// when weights are programmed once and never rewritten by inference.
    pub lifetime_inferences: Option<f64>,
    pub requests: usize,
}

/// The requests a loop instruction runs its body for.
pub fn group_range(inst: &Inst, requests: usize) -> std::ops::Range<usize> {
    match inst {
        Inst::ForGroup { first, count } => {
            let a = (*first as usize).min(requests);
            let b = (*first as usize)
                .saturating_add(*count as usize)
                .min(requests);
            a..b
        }
        _ => 0..requests,
    }
}

/// Counts what a run over `requests` requests costs (no numerics).
pub fn count(p: &Program, hw: &Hardware, requests: usize) -> Totals {
    let mut t = Totals {
        requests,
        crossbars_available: hw.crossbars(),
        ..Default::default()
    };
    for c in COMPONENTS {
        t.breakdown.insert(c.to_string(), 0.0);
    }
    let mut times = 1.0;
    for line in &p.code {
        match line.inst {
            Inst::ForRequests | Inst::ForGroup { .. } => {
                times = group_range(&line.inst, requests).len() as f64
            }
            Inst::End => times = 1.0,
            _ => {}
        }
        let c = cost(&line.inst, p, hw);
        for (k, name) in COMPONENTS.iter().enumerate() {
            *t.breakdown.get_mut(*name).expect("component") += c.energy[k] * times;
        }
        let e = c.total() * times;
        t.energy_pj += e;
        t.adc_conversions += c.conversions * times;
        t.cell_writes += c.cell_writes * times;
        if e > 0.0 {
            let key = if line.tasks.is_empty() {
                "(setup)".to_string()
            } else {
                line.tasks.join("+")
            };
            *t.by_tasks.entry(key).or_insert(0.0) += e;
            let layer = if line.layer.is_empty() {
                "(setup)".to_string()
            } else {
                line.layer.clone()
            };
            *t.by_layer.entry(layer).or_insert(0.0) += e;
        }
    }
    // Crossbars, tiles, writes per cell: over crossbar ranges, never
    // crossbar by crossbar (a range may be as large as the machine).
    let per_tile = (hw.crossbars_per_core * hw.cores_per_tile).max(1);
    let owned: Vec<&mgen_isa::isa::Image> =
        p.images.iter().filter(|i| i.reuses.is_none()).collect();
    let used = owned
        .iter()
        .fold(0u64, |a, i| a.saturating_add(i.crossbars));
    t.phases = p
        .images
        .iter()
        .map(|i| i.phase.saturating_add(1))
        .max()
        .unwrap_or(1);
    let tiles = tiles_in_use(owned.iter().map(|i| (i.first, i.crossbars)), per_tile);
    let programmed = p.code.iter().filter_map(|l| match l.inst {
        Inst::XbProgram(i) => p.images.get(i as usize).map(|im| (im.first, im.crossbars)),
        _ => None,
    });
    let most_writes = max_overlap(programmed);
    t.timing = mgen_isa::timing::timing(p, hw, requests);
    t.latency_ns = t.timing.latency_ns;
    t.crossbars = used;
    t.tiles_in_use = tiles;
    t.area_mm2 = tiles as f64 * cost::TILE_AREA_MM2;
    t.writes_per_cell_per_run = most_writes;
    t.lifetime_inferences = if t.phases <= 1 {
        None
    } else {
        Some(hw.endurance / t.writes_per_cell_per_run.max(1) as f64 * requests as f64)
    };
    t
}

/// Tiles touched by crossbar ranges `(first, count)`: the size of the union
/// of their tile intervals.
fn tiles_in_use(ranges: impl Iterator<Item = (u64, u64)>, per_tile: u64) -> u64 {
    let mut iv: Vec<(u64, u64)> = ranges
        .filter(|r| r.1 > 0)
        .map(|(f, n)| (f / per_tile, f.saturating_add(n - 1) / per_tile))
        .collect();
    iv.sort_unstable();
    let mut total = 0u64;
    let mut last: Option<(u64, u64)> = None;
    for (a, b) in iv {
        last = match last {
            Some((la, lb)) if a <= lb.saturating_add(1) => Some((la, lb.max(b))),
            Some((la, lb)) => {
                total = total.saturating_add(lb - la + 1);
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    if let Some((la, lb)) = last {
        total = total.saturating_add(lb - la + 1);
    }
    total
}

/// The most ranges `(first, count)` covering one crossbar.
fn max_overlap(ranges: impl Iterator<Item = (u64, u64)>) -> u64 {
    // Ends (-1) sort before starts (+1) at the same crossbar: ranges are
    // half-open.
    let mut ev: Vec<(u64, i8)> = Vec::new();
    for (f, n) in ranges.filter(|r| r.1 > 0) {
        ev.push((f, 1));
        ev.push((f.saturating_add(n), -1));
    }
    ev.sort_unstable();
    let (mut now, mut most) = (0i64, 0i64);
    for (_, d) in ev {
        now += d as i64;
        most = most.max(now);
    }
    most as u64
}

/// One task's accuracy in a [`Report`]: its simulated outputs against the
/// float reference.
#[derive(Debug, Clone, Serialize)]
pub struct TaskMetric {
    /// The mean cosine over requests (embeddings only; `value` is the worst).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    /// `agreement` (classify), `cosine` (embed) or `relative_error` (regress).
    pub metric: &'static str,
    pub name: String,
    pub value: f64,
}

/// Per-task accuracy of simulated outputs against the float reference.
pub fn metrics(
    tasks: &[TaskInfo],
    sim: &[Array2<f32>],
    reference: &[Array2<f32>],
) -> Vec<TaskMetric> {
    tasks
        .iter()
        .zip(sim.iter().zip(reference))
        .map(|(t, (s, r))| {
            let n = s.nrows().max(1) as f64;
            let name = t.name.clone();
            match t.kind.as_str() {
                "classify" => {
                    let agree = s
                        .rows()
                        .into_iter()
                        .zip(r.rows())
                        .filter(|(a, b)| mgen_util::stats::agree(*a, *b))
                        .count() as f64;
                    TaskMetric {
                        mean: None,
                        metric: "agreement",
                        name,
                        value: agree / n,
                    }
                }
                "embed" => {
                    let cos: Vec<f64> = s
                        .rows()
                        .into_iter()
                        .zip(r.rows())
                        .map(|(a, b)| {
                            let d: f64 = a
                                .iter()
                                .zip(b.iter())
                                .map(|(x, y)| *x as f64 * *y as f64)
                                .sum();
                            let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                            let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                            d / (na * nb).max(1e-30)
                        })
                        .collect();
                    let min = mgen_util::stats::worst(cos.iter().cloned());
                    TaskMetric {
                        mean: Some(cos.iter().sum::<f64>() / n),
                        metric: "cosine",
                        name,
                        value: min,
                    }
                }
                _ => {
                    let num: f64 = s
                        .iter()
                        .zip(r.iter())
                        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
                        .sum::<f64>()
                        .sqrt();
                    let den: f64 = r.iter().map(|b| (*b as f64).powi(2)).sum::<f64>().sqrt();
                    TaskMetric {
                        mean: None,
                        metric: "relative_error",
                        name,
                        value: num / den.max(1e-30),
                    }
                }
            }
        })
        .collect()
}

/// Runs the package functionally: per-task outputs (workload order).
pub fn simulate(
    pkg: &Package,
    ideal_adc: bool,
    progress: crate::progress::Mode,
) -> Result<Vec<Array2<f32>>, Diags> {
    simulate_chip(pkg, ideal_adc, 0, progress)
}

/// [`simulate`] on the chip instance `chip` (the seed of its device
/// errors; no effect on a chip without noise).
pub fn simulate_chip(
    pkg: &Package,
    ideal_adc: bool,
    chip: u64,
    progress: crate::progress::Mode,
) -> Result<Vec<Array2<f32>>, Diags> {
    validate_package(pkg)?;
    let images = prepare_images(pkg, ideal_adc, chip);
    simulate_prepared(pkg, &images, ideal_adc, 0, progress)
}

/// Slices every crossbar image for simulation (the simulator's analogue of
/// programming the crossbars: done once, reused by every request), on the
/// chip instance `chip` (see [`noise`]).
pub fn prepare_images(pkg: &Package, ideal_adc: bool, chip: u64) -> Vec<exec::PImage> {
    prepare_images_on(pkg, &pkg.hw, ideal_adc, chip)
}

/// [`simulate`] on a noise-free chip, whatever `pkg`'s hardware declares
/// (the noise-free figures a noisy report shows beside the noisy ones).
pub fn simulate_noise_free(
    pkg: &Package,
    ideal_adc: bool,
    progress: crate::progress::Mode,
) -> Result<Vec<Array2<f32>>, Diags> {
    validate_package(pkg)?;
    let mut hw = pkg.hw.clone();
    hw.noise = crate::hw::Noise::default();
    let images = prepare_images_on(pkg, &hw, ideal_adc, 0);
    simulate_prepared(pkg, &images, ideal_adc, 0, progress)
}

/// [`prepare_images`] for the hardware `hw` (`pkg`'s, or a variant of it
/// with other noise).
fn prepare_images_on(
    pkg: &Package,
    hw: &Hardware,
    ideal_adc: bool,
    chip: u64,
) -> Vec<exec::PImage> {
    pkg.images
        .par_iter()
        .zip(pkg.prog.images.par_iter())
        .enumerate()
        .map(|(k, (q, img))| {
            let xq = mgen_isa::quant::InputQuant {
                scale: img.xscale,
                zero: img.xzero,
            };
            let key = mgen_util::rng::Rng::keyed(chip, &format!("image {k}")).next_u64();
            exec::prepare(q, xq, hw, ideal_adc, key)
        })
        .collect()
}

/// [`simulate`] with images prepared by [`prepare_images`] (with the same
/// `ideal_adc`); `first` is the index of the package's first request in
/// the whole run (it keys read noise). The program must have passed
/// [`validate`].
pub fn simulate_prepared(
    pkg: &Package,
    images: &[exec::PImage],
    ideal_adc: bool,
    first: usize,
    progress: crate::progress::Mode,
) -> Result<Vec<Array2<f32>>, Diags> {
    let machine = exec::Machine {
        prog: &pkg.prog,
        hw: &pkg.hw,
        images,
        consts: &pkg.consts,
        ideal_adc,
    };
    // Phases run in order; each phase's body runs for every request.
    let mut bodies: Vec<(usize, usize, std::ops::Range<usize>)> = Vec::new();
    let mut start = None;
    for (i, l) in pkg.prog.code.iter().enumerate() {
        match l.inst {
            Inst::ForRequests | Inst::ForGroup { .. } => {
                start = Some((i + 1, group_range(&l.inst, pkg.requests.len())))
            }
            Inst::End => {
                if let Some((s, r)) = start.take() {
                    bodies.push((s, i, r));
                }
            }
            _ => {}
        }
    }
    let nb = pkg.prog.buffers.len();
    let bar = crate::progress::Progress::new(
        progress,
        Some(bodies.iter().map(|b| b.2.len() as u64).sum()),
        "simulating",
        "request-phases",
    );
    struct State {
        spilled: Vec<Option<ArrayD<f32>>>,
        outs: Vec<(String, Vec<f32>)>,
    }
    let mut states: Vec<State> = pkg
        .requests
        .iter()
        .map(|_| State {
            spilled: vec![None; nb],
            outs: Vec::new(),
        })
        .collect();
    for (s, e, range) in &bodies {
        states[range.clone()]
            .par_iter_mut()
            .zip(pkg.requests[range.clone()].par_iter())
            .enumerate()
            .try_for_each(|(k, (st, r))| -> Result<(), Diags> {
                let req = (first + range.start + k) as u64;
                let mask = r.mask();
                let mut bufs: Vec<Option<ArrayD<f32>>> = vec![None; nb];
                for (i, line) in pkg.prog.code[*s..*e].iter().enumerate() {
                    machine
                        .step(
                            &line.inst,
                            (req, (s + i) as u64),
                            &r.ids,
                            &mask,
                            &mut bufs,
                            &mut st.spilled,
                            &mut st.outs,
                        )
                        .map_err(|m| bad(s + i, &line.inst, m))?;
                }
                bar.inc(1);
                Ok(())
            })?;
    }
    bar.finish();
    let mut outputs = Vec::new();
    for t in &pkg.tasks {
        let mut a = Array2::<f32>::zeros((pkg.requests.len(), t.width as usize));
        for (i, st) in states.iter().enumerate() {
            let row = st.outs.iter().find(|(n, _)| n == &t.name).ok_or_else(|| {
                Diags::from(Diagnostic::error(
                    Code::E304,
                    format!("the program stores no output for task `{}`", t.name),
                ))
            })?;
            if row.1.len() != t.width as usize {
                return Err(Diagnostic::error(
                    Code::E304,
                    format!(
                        "task `{}` stores {} values, its head has {}",
                        t.name,
                        row.1.len(),
                        t.width
                    ),
                )
                .into());
            }
            a.row_mut(i).assign(&ndarray::ArrayView1::from(&row.1));
        }
        outputs.push(a);
    }
    Ok(outputs)
}

impl Totals {
    /// The run's energy per request.
    pub fn energy_per_request_pj(&self) -> f64 {
        self.energy_pj / self.requests.max(1) as f64
    }
}

/// How a [`Report`]'s figures were obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Mode {
    /// Counted from the program: no numerics, no accuracy.
    #[serde(rename = "counts")]
    Counts,
    /// Simulated.
    #[serde(rename = "functional")]
    Functional,
    /// Simulated with an ADC that never saturates.
    #[serde(rename = "functional, ideal ADC")]
    IdealAdc,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Counts => "counts",
            Mode::Functional => "functional",
            Mode::IdealAdc => "functional, ideal ADC",
        }
    }
}

/// The report of one run (`mgen sim`, `mgen run`), written as `--json`,
/// text and `--report` from this one value. The fields are in sorted order,
/// the order the JSON has always had.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub adc_conversions: f64,
    pub area_mm2: f64,
    pub breakdown: BTreeMap<String, f64>,
    pub by_layer: BTreeMap<String, f64>,
    pub by_tasks: BTreeMap<String, f64>,
    pub cell_writes: f64,
    pub crossbars: u64,
    pub crossbars_available: u64,
    pub energy_per_request_pj: f64,
    pub energy_pj: f64,
    /// One request on the programmed chip (overlapping timing model).
    pub latency_ns: f64,
    pub lifetime_inferences: Option<f64>,
    pub mode: Mode,
    /// Each task's metric over noisy chip instances (a hardware with a
    /// `noise` model, simulated with a reference); `tasks` are then the
    /// first instance's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise: Option<chips::NoiseSummary>,
    pub notes: Vec<String>,
    pub phases: u32,
    pub requests: usize,
    pub tasks: Vec<TaskMetric>,
    pub throughput_per_s: f64,
    pub tiles_in_use: u64,
    pub timing: mgen_isa::timing::Timing,
    pub writes_per_cell_per_run: u64,
}

impl Report {
    pub fn new(t: &Totals, tasks: Vec<TaskMetric>, mode: Mode, notes: &[String]) -> Report {
        Report {
            adc_conversions: t.adc_conversions,
            area_mm2: t.area_mm2,
            breakdown: t.breakdown.clone(),
            by_layer: t.by_layer.clone(),
            by_tasks: t.by_tasks.clone(),
            cell_writes: t.cell_writes,
            crossbars: t.crossbars,
            crossbars_available: t.crossbars_available,
            energy_per_request_pj: t.energy_per_request_pj(),
            energy_pj: t.energy_pj,
            latency_ns: t.latency_ns,
            lifetime_inferences: t.lifetime_inferences,
            mode,
            noise: None,
            notes: notes.to_vec(),
            phases: t.phases,
            requests: t.requests,
            tasks,
            throughput_per_s: t.timing.throughput_per_s,
            tiles_in_use: t.tiles_in_use,
            timing: t.timing.clone(),
            writes_per_cell_per_run: t.writes_per_cell_per_run,
        }
    }

    /// The report as a readable table, then its notes.
    pub fn text(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "simulation ({}) over {} requests\n",
            self.mode.name(),
            self.requests
        ));
        if !self.tasks.is_empty() {
            use crate::table::{Align, Table};
            let mut tb = Table::new(&[
                ("task", Align::Left),
                ("metric", Align::Left),
                ("value", Align::Right),
            ])
            .gap(2);
            for m in &self.tasks {
                tb.row(vec![
                    m.name.clone(),
                    m.metric.to_string(),
                    format!("{:.4}", m.value),
                ]);
            }
            s.push_str(&tb.render());
            s.push('\n');
        }
        if let Some(n) = &self.noise {
            s.push_str(&noise_text(n));
        }
        let share = |v: f64| 100.0 * v / self.energy_pj.max(1e-30);
        s.push_str(&format!(
            "energy     {} total, {} per request\n",
            si(self.energy_pj),
            si(self.energy_per_request_pj)
        ));
        for (k, v) in &self.breakdown {
            if *v > 0.0 {
                s.push_str(&format!(
                    "  {:<14} {:>14}  {:>5.1}%\n",
                    k,
                    si(*v),
                    share(*v)
                ));
            }
        }
        s.push_str("  by task set:\n");
        let mut tb = crate::table::Table::new(&[
            ("task set", crate::table::Align::Left),
            ("energy", crate::table::Align::Right),
            ("share", crate::table::Align::Right),
        ])
        .indent(2)
        .gap(2);
        for (k, v) in &self.by_tasks {
            tb.row(vec![k.clone(), si(*v), format!("{:.1}%", share(*v))]);
        }
        s.push_str(&tb.render());
        s.push_str(&timing_text(&self.timing));
        s.push_str(&format!(
            "area       {:.2} mm2 ({} tiles in use; {} of {} crossbars, {} phase(s))\n",
            self.area_mm2, self.tiles_in_use, self.crossbars, self.crossbars_available, self.phases
        ));
        s.push_str(&format!(
            "wear       {:.0} cell writes, at most {} per cell per run; ",
            self.cell_writes, self.writes_per_cell_per_run
        ));
        match self.lifetime_inferences {
            None => s.push_str("weights programmed once: inference does not wear cells\n"),
            Some(l) => s.push_str(&format!(
                "lifetime {l:.3e} inferences at the declared endurance\n"
            )),
        }
        for n in &self.notes {
            s.push_str(&format!("note: {n}\n"));
        }
        s
    }
}

/// The noise lines of a report: each task's metric noise-free and over
/// the chip instances.
pub fn noise_text(n: &chips::NoiseSummary) -> String {
    use crate::table::{Align, Table};
    let mut s = format!(
        "under noise ({}) on {} chip(s), seeds {}..{}:\n",
        n.model,
        n.chips,
        n.first_seed,
        n.first_seed + n.chips.max(1) as u64 - 1
    );
    let q = format!("q{}", fmt_q(n.quantile));
    let mut tb = Table::new(&[
        ("task", Align::Left),
        ("metric", Align::Left),
        ("noise-free", Align::Right),
        ("mean", Align::Right),
        ("worst", Align::Right),
        (q.as_str(), Align::Right),
    ])
    .indent(2)
    .gap(2);
    for t in &n.tasks {
        tb.row(vec![
            t.name.clone(),
            t.metric.to_string(),
            format!("{:.4}", t.noise_free),
            format!("{:.4}", t.mean),
            format!("{:.4}", t.worst),
            format!("{:.4}", t.quantile),
        ]);
    }
    s.push_str(&tb.render());
    s.push_str(&format!(
        "  ({q}: the {} quantile from the bad end over chips; energy, latency, area and wear are unchanged by noise)\n\n",
        fmt_q(n.quantile)
    ));
    s
}

/// A quantile as written (`0.1`, `0`).
fn fmt_q(q: f64) -> String {
    let t = format!("{q:.3}");
    t.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The timing lines of a report.
pub fn timing_text(t: &mgen_isa::timing::Timing) -> String {
    let mut s = format!(
        "latency    {} per request (overlapping model; {} in program order)\n",
        time(t.latency_ns),
        time(t.sequential_ns)
    );
    s.push_str(&format!(
        "throughput {:.1} requests/s; makespan {} ({} programming), critical path {}\n",
        t.throughput_per_s,
        time(t.makespan_ns),
        time(t.program_ns),
        time(t.critical_path_ns)
    ));
    let u: Vec<String> = t
        .utilisation
        .iter()
        .map(|(k, v)| format!("{k} {:.1}%", 100.0 * v))
        .collect();
    s.push_str(&format!("  utilisation: {}\n", u.join(", ")));
    let mut layers: Vec<(&String, &f64)> = t.critical_path_by_layer.iter().collect();
    layers.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
    let l: Vec<String> = layers
        .iter()
        .take(6)
        .map(|(k, v)| format!("{k} {}", time(**v)))
        .collect();
    s.push_str(&format!("  critical path by layer: {}\n", l.join(", ")));
    s
}

/// Picojoules with an SI prefix (`913.124 uJ`).
pub fn si(pj: f64) -> String {
    if pj >= 1e9 {
        format!("{:.3} mJ", pj / 1e9)
    } else if pj >= 1e6 {
        format!("{:.3} uJ", pj / 1e6)
    } else if pj >= 1e3 {
        format!("{:.3} nJ", pj / 1e3)
    } else {
        format!("{pj:.3} pJ")
    }
}

/// Nanoseconds with a unit (`26.049 ms`).
pub fn time(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.3} us", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}
