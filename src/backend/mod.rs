//! Back end: crossbar placement ([`place`]), the ISA ([`isa`]), weight
//! quantisation ([`quant`]), code generation ([`codegen`]) and program
//! directories ([`program`]).

pub mod codegen;
pub mod isa;
pub mod place;
pub mod program;
pub mod quant;
