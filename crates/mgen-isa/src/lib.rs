//! mgen's ReRAM instruction set and what it costs.
//!
//! - [`isa`]: instructions, images, constants and programs, and the textual
//!   assembly (`.masm`, docs/isa.md) with a located-error parser;
//! - [`cost`]: the energy and latency every instruction is charged (the one
//!   model counting and functional simulation share);
//! - [`quant`]: weight quantisation into bit-sliced crossbar images and the
//!   input (DAC) quantisation;
//! - [`timing`]: when each instruction runs on a chip that overlaps what
//!   the hardware overlaps (latency, throughput, utilisation);
//! - [`package`]: the program package a simulation runs.
//!
//! Depends on `mgen-util`, `mgen-hw`, `mgen-front` (name suggestions) and
//! `mgen-model` (request data) only; it knows nothing of passes or of how a
//! program is generated.

pub(crate) use mgen_hw as hw;
pub(crate) use mgen_util::diag;

pub mod cost;
pub mod isa;
pub mod package;
pub mod quant;
pub mod timing;
