//! mgen's front end: source text to a checked specification.
//!
//! [`syntax`] lexes (logos) and parses (the lalrpop grammar in `grammar/`,
//! built by `build.rs`) a `.mgen` or `.mir` file into an AST whose every
//! node carries its span; [`spec`] checks it — names, kinds, units, ranges,
//! sizes before anything is allocated — into a [`spec::Spec`] that later
//! stages trust without re-checking. Every failure is a located
//! [`mgen_util::diag`] diagnostic; nothing here panics on input.
//!
//! Depends on `mgen-util` and `mgen-hw` only.

pub(crate) use mgen_hw as hw;
pub(crate) use mgen_util::diag;

pub mod spec;
pub mod syntax;
