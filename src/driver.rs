//! The front half of every command: read a file (with its size checked
//! first), parse, check, and lower it (or read it back, for `.mir`), then
//! run a pass pipeline. Used by the CLI, the tests and the benches.

use crate::diag::{Code, Diagnostic, Diags, FileId, Sources};
use crate::ir::{MAX_TASKS, Module, lower, read};
use crate::spec::{Spec, check};
use crate::syntax::{self, ast};
use crate::weights::Store;
use std::path::Path;

/// A checked source file.
pub struct Front {
    pub file: FileId,
    pub ast: ast::File,
    pub spec: Spec,
    /// For a `.mir` file, the module it holds.
    pub mir: Option<Module>,
}

/// Is this path a textual-IR file?
pub fn is_mir(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "mir")
}

/// Reads a file, refusing (before reading) one larger than the parser takes.
pub fn read_source(path: &Path) -> Result<Vec<u8>, Diags> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| {
        Diags::from(Diagnostic::error(
            Code::E001,
            format!("cannot read `{shown}`: {e}"),
        ))
    })?;
    if meta.is_dir() {
        return Err(Diagnostic::error(
            Code::E001,
            format!("`{shown}` is a directory, not a source file"),
        )
        .into());
    }
    if meta.len() > syntax::MAX_FILE_BYTES as u64 {
        return Err(Diagnostic::error(
            Code::E007,
            format!(
                "`{shown}` is {} bytes; mgen reads source files of at most {} bytes",
                meta.len(),
                syntax::MAX_FILE_BYTES
            ),
        )
        .into());
    }
    std::fs::read(path)
        .map_err(|e| Diagnostic::error(Code::E001, format!("cannot read `{shown}`: {e}")).into())
}

/// Parses and checks bytes as file `name`; `root` is the directory relative
/// paths in it are resolved against.
pub fn front_bytes(
    sources: &mut Sources,
    name: &str,
    bytes: &[u8],
    root: &str,
    mir: bool,
) -> Result<Front, Diags> {
    let (file, parsed) = syntax::parse(sources, name, bytes, mir);
    let ast = parsed?;
    let (spec, graph) = check::check(&ast, file, root, mir)?;
    if spec.workload.tasks.len() > MAX_TASKS {
        let loc = spec
            .loc(&format!("workload {}.tasks", spec.workload.name))
            .cloned();
        let mut d = Diagnostic::error(
            Code::E017,
            format!(
                "a workload names at most {MAX_TASKS} tasks, found {}",
                spec.workload.tasks.len()
            ),
        );
        if let Some(l) = loc {
            d = d.at(l.file, l.span, "too many tasks");
        }
        return Err(d.into());
    }
    let mir_module = match graph {
        Some(g) => Some(read::read(spec.clone(), g, file, sources)?),
        None => None,
    };
    let spec = match &mir_module {
        Some(m) => m.spec.clone(),
        None => spec,
    };
    Ok(Front {
        file,
        ast,
        spec,
        mir: mir_module,
    })
}

/// Reads, parses and checks a file.
pub fn front(sources: &mut Sources, path: &Path) -> Result<Front, Diags> {
    let bytes = read_source(path)?;
    let root = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.display().to_string(),
        _ => ".".to_string(),
    };
    front_bytes(
        sources,
        &path.display().to_string(),
        &bytes,
        &root,
        is_mir(path),
    )
}

/// The module of a checked file (lowered from the spec, or as read from a
/// `.mir`) and its weight store.
pub fn module_and_store(front: Front, sources: &Sources) -> Result<(Module, Store), Diags> {
    let store = Store::for_spec(&front.spec)?;
    let m = match front.mir {
        Some(m) => {
            // A .mir's params must be the weights its declarations resolve to.
            for p in &m.params {
                if !store.knows(&p.digest) {
                    let mut d = Diagnostic::error(
                        Code::E210,
                        format!("parameter `{}` of `{}` has digest {}, which its declarations do not produce", p.name, p.source, p.digest),
                    )
                    .help("the weights changed since the .mir was written: compile the .mgen again");
                    let regenerated = m.spec.tasks.iter().any(|t| {
                        t.name == p.source && t.regenerate != crate::spec::Regenerate::None
                    });
                    if regenerated && p.name.starts_with("classifier.") {
                        d = d.note("a head refitted by `regenerate = head` exists only in the run that made it: write the generated models with `--emit weights -o DIR` and point the tasks' `weights` at them");
                    }
                    if let Some(l) = m
                        .spec
                        .loc(&format!("model {}.weights", p.source))
                        .or(m.spec.loc(&format!("task {}.weights", p.source)))
                    {
                        d = d.at(l.file, l.span.clone(), "these weights");
                    }
                    return Err(d.into());
                }
            }
            m
        }
        None => lower::lower(front.spec, sources, &store)?,
    };
    Ok((m, store))
}

/// The module of a checked file (see [`module_and_store`]).
pub fn module(front: Front, sources: &Sources) -> Result<Module, Diags> {
    module_and_store(front, sources).map(|(m, _)| m)
}
