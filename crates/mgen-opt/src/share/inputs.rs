//! What one run of the generator reads and never changes: the spec, the
//! weights, the task names, each task's calibration and training batch
//! (deduplicated), and the tensor getter of a (task, source) pair.
//!
//! Invariants: `batches[batch_of[t]]` is task `t`'s calibration batch and
//! two tasks share an index exactly when their batches are equal;
//! `train_of[t]` is the first task whose training batch equals `t`'s (`t`
//! itself when none does, or when `t` has none). Caches keyed by these
//! indices are therefore shared exactly by tasks with equal inputs.

use super::{Getter, Source, block_of_name, bug};
use crate::data::Batch;
use crate::diag::Diags;
use crate::ir::Module;
use crate::spec::{Model, Spec, Task};
use crate::weights::Store;

/// The generator's fixed inputs for one run.
pub(super) struct Inputs<'a> {
    pub spec: Spec,
    pub store: &'a Store,
    /// Workload task names, in workload order.
    pub names: Vec<String>,
    /// Distinct calibration batches (tasks without `calibrate` share the
    /// workload's), and each task's index into them.
    pub batches: Vec<&'a Batch>,
    pub batch_of: Vec<usize>,
    /// Per task: its training inputs, if any.
    pub training: Vec<Option<&'a Batch>>,
    /// Tasks with the same training inputs share their trunk activations:
    /// the first task with an equal batch.
    pub train_of: Vec<usize>,
}

impl<'a> Inputs<'a> {
    /// `calibration` has one batch per workload task (checked by the caller).
    pub fn new(
        m: &Module,
        store: &'a Store,
        calibration: &'a [Batch],
        training: &'a [Option<Batch>],
    ) -> Inputs<'a> {
        let spec = m.spec.clone();
        let n = spec.workload.tasks.len();
        let names: Vec<String> = m.task_names().iter().map(|s| s.to_string()).collect();
        let mut batch_of = vec![0usize; n];
        let mut batches: Vec<&Batch> = Vec::new();
        for t in 0..n {
            let b = &calibration[t];
            batch_of[t] = match batches
                .iter()
                .position(|x| x.seq == b.seq && x.requests == b.requests)
            {
                Some(i) => i,
                None => {
                    batches.push(b);
                    batches.len() - 1
                }
            };
        }
        let training: Vec<Option<&Batch>> = (0..n)
            .map(|t| training.get(t).and_then(|b| b.as_ref()))
            .collect();
        let train_of: Vec<usize> = (0..n)
            .map(|t| {
                (0..t)
                    .find(|&u| match (training[u], training[t]) {
                        (Some(a), Some(b)) => a.seq == b.seq && a.requests == b.requests,
                        _ => false,
                    })
                    .unwrap_or(t)
            })
            .collect();
        Inputs {
            spec,
            store,
            names,
            batches,
            batch_of,
            training,
            train_of,
        }
    }

    /// Workload tasks.
    pub fn n(&self) -> usize {
        self.names.len()
    }

    /// The spec task of workload task `t`.
    pub fn spec_task(&self, t: usize) -> usize {
        self.spec.workload.tasks[t]
    }

    pub fn task(&self, t: usize) -> &Task {
        &self.spec.tasks[self.spec_task(t)]
    }

    /// The base model (spec model index) of task `t`: tasks with the same
    /// one form a group.
    pub fn group_of(&self, t: usize) -> usize {
        self.task(t).base
    }

    pub fn model(&self, t: usize) -> &Model {
        &self.spec.models[self.group_of(t)]
    }

    /// Task `t`'s calibration batch.
    pub fn calibration(&self, t: usize) -> &'a Batch {
        self.batches[self.batch_of[t]]
    }

    /// Task `t`'s training inputs (regeneration needs them).
    pub fn training_of(&self, t: usize) -> Result<&'a Batch, Diags> {
        self.training[t]
            .ok_or_else(|| bug(format!("task `{}` has no training inputs", self.names[t])))
    }

    /// The tensor getter of a source for task `t`: the source's weights
    /// for the blocks, `t`'s own for its head.
    pub fn getter(&self, t: usize, s: Source) -> Box<Getter<'a>> {
        let store = self.store;
        let st = self.spec_task(t);
        let model = self.spec.tasks[st].base;
        match s {
            Source::Own => Box::new(move |name: &str| store.task_tensor(st, name)),
            Source::Base => Box::new(move |name: &str| match store.base_digest(model, name) {
                Some(d) if block_of_name(name).is_some() => store.tensor(d),
                _ => store.task_tensor(st, name),
            }),
            Source::Task(r) => {
                let sr = self.spec_task(r);
                Box::new(move |name: &str| {
                    if block_of_name(name).is_some() {
                        store.task_tensor(sr, name)
                    } else {
                        store.task_tensor(st, name)
                    }
                })
            }
        }
    }
}
