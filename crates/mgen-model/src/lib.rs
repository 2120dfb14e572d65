//! mgen's model layer: everything that computes with weights in floating
//! point, before any hardware is involved.
//!
//! - [`weights`]: the weight store (synthetic weights generated from seeds,
//!   safetensors checkpoints read header-first), content digests, the
//!   tensors the model generator registers;
//! - [`data`]: request batches (synthetic, JSONL files, tokenised text),
//!   read with every size bounded before allocation;
//! - [`reference`]: the float32 reference executor of a [`mgen_ir::Module`];
//! - [`forward`]: the same BERT blocks as tensors for the generator's
//!   candidate evaluation and training;
//! - [`train`]: head refits and branch retraining.
//!
//! Invariant: nothing here knows about crossbars, programs or passes; the
//! crate depends on `mgen-util`, `mgen-hw`, `mgen-front` and `mgen-ir` only.

pub(crate) use mgen_front::spec;
pub(crate) use mgen_ir as ir;
pub(crate) use mgen_util::diag;

pub mod data;
pub mod forward;
pub mod gemm;
pub mod reference;
pub mod train;
pub mod weights;
