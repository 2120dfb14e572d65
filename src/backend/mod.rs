//! Back end, from `crates/mgen-backend` (code generation, program
//! directories, weight export, the energy oracle), with the ISA and
//! quantisation (`mgen-isa`) and placement (`mgen-opt`) under the paths
//! they had before the workspace split.

pub use mgen_backend::{codegen, energy, manifest, progdir, program};
pub use mgen_isa::{isa, quant, timing};
pub use mgen_opt::place;
