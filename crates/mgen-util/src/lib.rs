//! mgen's lowest floor: what every stage uses and that uses no stage.
//!
//! - [`diag`]: the one diagnostics type (stable codes, spans, rendering by
//!   codespan-reporting);
//! - [`fs`]: atomic output files;
//! - [`progress`]: progress on a terminal and in a log;
//! - [`table`]: plain-text tables that fit their cells;
//! - [`rng`]: the seeded, keyed random stream behind synthetic weights and
//!   inputs;
//! - [`stats`]: the metrics budgets are measured with (argmax agreement,
//!   worst case, cosine, Pearson), NaN-propagating by design.
//!
//! Invariant: this crate depends on no other mgen crate, so the build itself
//! keeps it at the bottom of the workspace.

pub mod diag;
pub mod fs;
pub mod progress;
pub mod rng;
pub mod stats;
pub mod table;
