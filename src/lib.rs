//! mgen: a compiler and simulator for multi-task BERT on ReRAM
//! processing-in-memory accelerators.
//!
//! Stages, one module each: [`syntax`] (lexer, grammar, AST), [`spec`]
//! (semantic checks: AST → checked specification), [`ir`] (dataflow IR,
//! lowering, textual IR, verifier), [`passes`] (pass manager and passes),
//! [`cli`] (the `mgen` command). Every fallible stage returns
//! [`diag::Diags`].

pub mod alloc;
pub mod backend;
pub mod cli;
pub mod compare;
pub use mgen_model::data;
pub use mgen_util::diag;
pub mod driver;
pub use mgen_backend::export;
pub mod finetune;
pub mod held_out;
pub mod label_check;
pub use mgen_hw as hw;
pub use mgen_ir as ir;
pub use mgen_model::forward;
pub use mgen_model::gemm;
pub use mgen_model::reference;
pub use mgen_opt as passes;
pub use mgen_util::progress;
pub mod report;
pub mod run;
pub mod sweep;
pub mod timeline;
pub use mgen_front::spec;
pub use mgen_front::syntax;
pub use mgen_model::train;
pub use mgen_model::weights;
pub use mgen_sim as sim;
pub use mgen_util::table;
