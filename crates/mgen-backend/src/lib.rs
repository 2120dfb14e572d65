//! mgen's back end: from an optimised, placed and scheduled module to a
//! program the simulator runs.
//!
//! - [`program`]: input calibration on the float reference, weight
//!   quantisation into crossbar images, the program package, and program
//!   directories on disk (`--emit program`);
//! - [`codegen`]: instructions from a module, its placement and schedule;
//! - [`progdir`], [`manifest`]: reading a program directory back, every
//!   field bounded and every file's digest checked before it is parsed;
//! - [`export`]: `--emit weights` (safetensors of what the tree computes);
//! - [`energy`]: the counting model as the optimiser's energy oracle.
//!
//! Depends on every stage but the simulator (`mgen-util`, `mgen-hw`,
//! `mgen-front`, `mgen-ir`, `mgen-model`, `mgen-opt`, `mgen-isa`).

pub(crate) use mgen_front::spec;
pub(crate) use mgen_hw as hw;
pub(crate) use mgen_ir as ir;
pub(crate) use mgen_model::{data, reference, weights};
pub(crate) use mgen_opt as passes;
pub(crate) use mgen_util::diag;

pub mod codegen;
pub mod energy;
pub mod export;
pub mod manifest;
pub mod progdir;
pub mod program;

pub use mgen_isa::{isa, quant};
pub use mgen_opt::place;
