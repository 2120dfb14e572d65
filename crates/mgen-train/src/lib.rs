//! Joint multi-task training: one shared encoder trunk and a branch per
//! task, trained together with candle (CPU) by distilling each task's own
//! unshared model.
//!
//! A joint model at depth `d` (`1 ≤ d ≤ nb`, `nb` = layers + 1; blocks are
//! numbered as the model generator counts depth: block 0 = embeddings,
//! block `l + 1` = encoder layer `l`) shares blocks `0..d` among a group of
//! tasks:
//! - block 0 (the embeddings) is frozen; its output per request is the
//!   input ([`Batch::x`]);
//! - the **trunk**, encoder layers `0..d − 1` (blocks `1..d`), is trained,
//!   one copy for all tasks ([`Trained::trunk`]; empty when `d = 1`);
//! - each task's **branch**, encoder layers `d − 1..` (blocks `d..nb`), its
//!   pooling (with the pooler when the head pools CLS) and its head, is
//!   trained, one copy per task ([`Trained::branches`]; pooler and head
//!   only when `d = nb`).
//!
//! The candle graph is built by walking the steps of the one BERT block
//! description ([`mgen_ir::bert`]; see `graph.rs`), so its topology is the
//! lowering's; [`forward`] is checked against `mgen_model::forward` to
//! 1e-4 in the tests. The objective (`loss.rs`), optimiser and schedule
//! (`optim.rs`) are the hand-written branch trainer's (`mgen_model::train`);
//! the loop is in `joint.rs`.
//!
//! Invariants:
//! - tensor names and shapes are the description's (Hugging Face names);
//!   every initial tensor is checked against its described shape, and the
//!   returned tensors have those shapes;
//! - `trunk` holds exactly the tensors of blocks `1..d`, `branches[i]`
//!   exactly those of task `i`'s blocks `d..`, pooling and head;
//! - bad inputs (depth, shapes, row counts, missing tensors) are an `Err`
//!   with a sentence, never a panic;
//! - the same inputs, settings and seed give bit-identical tensors and logs
//!   (but `seconds`) at a fixed thread count, unless `max_seconds` stops
//!   the run (which makes it depend on the machine's speed).
//!
//! Threads: training runs in the calling process, one mini-batch at a time
//! as batch tensors. candle's CPU backend multiplies matrices with gemm
//! over `RAYON_NUM_THREADS` threads (default: the physical cores) and runs
//! large elementwise ops on its own spinning pool of `CANDLE_NUM_THREADS`
//! threads; neither splits a reduction by thread, and the optimiser's
//! update is elementwise. The tests check reproducibility at one thread
//! count; `benches/joint.rs` prints a checksum of the trained trunk to
//! compare counts (equal at 1 and 2 threads when measured). On a machine
//! shared with other work, setting both variables to 1 was the fastest
//! (the pool's threads spin while they wait).

mod graph;
mod inputs;
mod joint;
mod loss;
mod optim;

use graph::{Part, array, branch_blocks, cerr, trunk_blocks};
use inputs::{EVAL_CHUNK, Inputs, check_depth, index};
use joint::Joint;
use mgen_front::spec::{BranchOpts, Head, Model};
use mgen_ir::bert::Block;
use ndarray::{Array2, ArrayD, ArrayView2, Axis, Ix2};
use std::collections::HashMap;
use std::time::Instant;

/// Looks a tensor up by its Hugging Face name.
pub type Get<'a> = mgen_model::forward::Get<'a>;

/// Training settings (the branch trainer's, plus a time budget).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub epochs: u32,
    /// Peak learning rate.
    pub lr: f64,
    /// Requests per mini-batch (of the largest batch; 0 counts as 1).
    pub batch: u32,
    /// Weight `α` of the label loss on requests with a label.
    pub labels: f64,
    /// Distillation temperature (classifiers).
    pub temperature: f64,
    /// Stop after the step during which this many seconds (since the
    /// call) have passed. Off by default: it makes results machine-dependent.
    pub max_seconds: Option<f64>,
}

/// The branch trainer's defaults (`BranchOpts::default()`), no time budget.
impl Default for Settings {
    fn default() -> Self {
        Settings::from(&BranchOpts::default())
    }
}

/// The settings of `regenerate = branch(...)`, no time budget.
impl From<&BranchOpts> for Settings {
    fn from(o: &BranchOpts) -> Self {
        Settings {
            epochs: o.epochs,
            lr: o.lr,
            batch: o.batch,
            labels: o.labels,
            temperature: o.temperature,
            max_seconds: None,
        }
    }
}

/// One distinct set of training requests (several tasks may train on the
/// same one: the trunk then runs once per mini-batch for all of them).
pub struct Batch<'a> {
    /// Block 0's output per request, `[seq, hidden]` (one `seq` per batch).
    pub x: Vec<ArrayView2<'a, f32>>,
    /// Per request, `[seq]`, 1 for tokens and 0 for padding.
    pub masks: Vec<&'a [f32]>,
}

/// One task of the group.
pub struct Task<'a> {
    pub head: &'a Head,
    /// Index into the batches.
    pub batch: usize,
    /// The teacher's (the task's own unshared model's) output row per
    /// request of its batch, `[requests, width]`.
    pub targets: ArrayView2<'a, f32>,
    /// Per request of its batch.
    pub labels: Vec<Option<mgen_model::data::Label>>,
    /// The task's own tensors: its branch starts from them.
    pub init: &'a Get<'a>,
}

/// The trained tensors and the run's log.
#[derive(Debug, Clone)]
pub struct Trained {
    /// Every tensor of encoder layers `0..d − 1`.
    pub trunk: HashMap<String, ArrayD<f32>>,
    /// Per task, every tensor of its branch.
    pub branches: Vec<HashMap<String, ArrayD<f32>>>,
    pub log: Log,
}

/// What a training run did.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Log {
    /// Optimiser steps taken.
    pub steps: usize,
    /// Epochs completed.
    pub epochs: u32,
    /// Σ over tasks of the mean loss over all of the task's requests, at
    /// the initial and at the final weights (forward only).
    pub loss_before: f64,
    pub loss_after: f64,
    /// The same per task.
    pub task_loss_before: Vec<f64>,
    pub task_loss_after: Vec<f64>,
    /// Per completed epoch, the mean of its steps' losses (each Σ over
    /// tasks of the mini-batch mean, at the weights before the step).
    pub epoch_losses: Vec<f64>,
    /// Wall-clock time of the call.
    pub seconds: f64,
    /// Whether `max_seconds` ended the run early.
    pub stopped_by_time: bool,
}

impl Log {
    fn empty() -> Log {
        Log {
            steps: 0,
            epochs: 0,
            loss_before: 0.0,
            loss_after: 0.0,
            task_loss_before: Vec::new(),
            task_loss_after: Vec::new(),
            epoch_losses: Vec::new(),
            seconds: 0.0,
            stopped_by_time: false,
        }
    }
}

/// Progress after each optimiser step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The epoch, from 0.
    pub epoch: u32,
    /// Steps taken so far, from 1.
    pub step: usize,
    pub total_steps: usize,
    /// The step's loss (before its update).
    pub loss: f64,
}

/// Trains the joint model of `model` at `depth` for `tasks` (see the crate
/// docs): the trunk starts from `trunk_init`, each branch from its task's
/// `init`. `on_step` is called after every optimiser step.
#[allow(clippy::too_many_arguments)]
pub fn train(
    model: &Model,
    depth: usize,
    trunk_init: &Get,
    batches: &[Batch],
    tasks: &[Task],
    s: &Settings,
    seed: u64,
    on_step: &(dyn Fn(&Step) + Sync),
) -> Result<Trained, String> {
    let start = Instant::now();
    let joint = Joint::new(model, depth, trunk_init, batches, tasks, s)?;
    let before = joint.evaluate()?;
    let mut log = joint.fit(s, seed, on_step, start)?;
    let after = joint.evaluate()?;
    log.loss_before = before.iter().sum();
    log.loss_after = after.iter().sum();
    log.task_loss_before = before;
    log.task_loss_after = after;
    let mut out = joint.tensors()?;
    log.seconds = start.elapsed().as_secs_f64();
    out.log = log;
    Ok(out)
}

/// candle's forward of the whole joint model for one task with head
/// `head`, from block 0's output: the trunk (blocks `1..depth`) with
/// `trunk`'s tensors, then the branch with `branch`'s. Returns the task's
/// output row per request, `[requests, width]`.
pub fn forward(
    model: &Model,
    depth: usize,
    head: &Head,
    trunk: &Get,
    branch: &Get,
    batch: &Batch,
) -> Result<Array2<f32>, String> {
    check_depth(model, depth)?;
    let inp = Inputs::new(batch, model.hidden as usize, "the batch")?;
    let trunk = Part::new(trunk_blocks(model, depth), trunk, "trunk")?;
    let branch = Part::new(branch_blocks(model, head, depth), branch, "branch")?;
    let width = head.width(model.hidden) as usize;
    let mut out = Array2::<f32>::zeros((0, width));
    let all: Vec<usize> = (0..inp.n).collect();
    for ix in all.chunks(EVAL_CHUNK) {
        let idx = index(ix)?;
        let (x, mask) = inp.rows(ix, &idx)?;
        let h = trunk.run(&x, &mask, false)?;
        let y = array(&branch.run(&h, &mask, false)?)?;
        let y = y.into_dimensionality::<Ix2>().map_err(|e| e.to_string())?;
        out.append(Axis(0), y.view()).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// candle's evaluation of one stage of the description on a batch: `x`
/// has a leading request axis (`[B, seq, hidden]` for an encoder layer or
/// the pooling, `[B, hidden]` for the head), `masks` one `[seq]` mask per
/// request. Returns the stage's result with the same leading axis.
pub fn forward_block(
    block: &Block,
    get: &Get,
    x: &ArrayD<f32>,
    masks: &[&[f32]],
) -> Result<ArrayD<f32>, String> {
    if x.shape().first() != Some(&masks.len()) {
        return Err(format!("{:?} inputs, {} masks", x.shape(), masks.len()));
    }
    let seq = masks.first().map_or(0, |m| m.len());
    if masks.iter().any(|m| m.len() != seq) {
        return Err("the masks differ in length".into());
    }
    let m: Vec<f32> = masks.concat();
    let mask = candle_core::Tensor::from_vec(m, (masks.len(), seq), &graph::CPU).map_err(cerr)?;
    let part = Part::new(vec![block.clone()], get, "block")?;
    array(&part.run(&graph::tensor(x)?, &mask, false)?)
}
