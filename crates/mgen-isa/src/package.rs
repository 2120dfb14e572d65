//! The program package: everything a simulation needs — the program, the
//! hardware it was compiled for, the tasks' output descriptions, the
//! requests, the quantised crossbar images and constants, and (when known)
//! the float reference outputs accuracy is measured against.
//!
//! Invariant: `images[k]` is the matrix of the program's `.image ik`, and
//! `consts[k]` its `.const ck`; `mgen_sim::validate_package` checks the
//! shapes before anything runs.

use crate::quant::QMatrix;
use mgen_hw::Hardware;
use mgen_model::data::Request;
use ndarray::{Array2, ArrayD};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::isa::Program;

/// A task's output description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub name: String,
    /// `classify`, `regress` or `embed`.
    pub kind: String,
    pub width: u64,
}

/// Everything a simulation needs.
pub struct Package {
    pub prog: Program,
    pub hw: Hardware,
    pub tasks: Vec<TaskInfo>,
    pub requests: Vec<Request>,
    pub seq: usize,
    /// Per image: the quantised matrix.
    pub images: Vec<QMatrix>,
    pub consts: Vec<Arc<ArrayD<f32>>>,
    /// Float-reference outputs per task (for accuracy), if known.
    pub reference: Option<Vec<Array2<f32>>>,
}
