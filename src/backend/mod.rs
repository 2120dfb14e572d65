//! Back end: crossbar placement ([`place`]), the ISA ([`isa`]), weight
//! quantisation ([`quant`]), code generation ([`codegen`]) and program
//! directories ([`program`]; reading them: [`progdir`], [`manifest`]).

pub mod codegen;
pub mod energy;
pub use mgen_isa::isa;
pub mod manifest;
pub use mgen_opt::place;
pub mod progdir;
pub mod program;
pub use mgen_isa::quant;
