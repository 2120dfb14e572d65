//! Back end: crossbar placement ([`place`]), the ISA ([`isa`]), weight
//! quantisation ([`quant`]), code generation ([`codegen`]) and program
//! directories ([`program`]; reading them: [`progdir`], [`manifest`]).

pub mod codegen;
pub use mgen_isa::isa;
pub mod manifest;
pub mod place;
pub mod progdir;
pub mod program;
pub use mgen_isa::quant;
