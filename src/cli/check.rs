//! `mgen check`: parse and check a source, its checkpoints and its inputs.

use super::Io;
use crate::diag::{Diags, Sources};
use crate::driver;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub(super) struct Args {
    /// The .mgen or .mir file.
    file: PathBuf,
    /// One JSON object on stdout (the checked spec, or the diagnostics).
    #[arg(long)]
    pub(super) json: bool,
}

pub(super) fn run(a: Args, io: &mut Io, sources: &mut Sources) -> Result<i32, Diags> {
    let Args { file, json } = a;
    let f = driver::front(sources, &file)?;
    let spec = f.spec.clone();
    // Checkpoints are opened and checked (names, shapes, dtypes,
    // config.json), a .mir's digests against them, and the inputs.
    driver::module_and_store(f, sources)?;
    crate::data::check_files(&spec, sources)?;
    let s = &spec;
    let tasks: Vec<&str> = s
        .workload
        .tasks
        .iter()
        .map(|&t| s.tasks[t].name.as_str())
        .collect();
    if json {
        let v = serde_json::json!({ "ok": true, "file": file.display().to_string(), "spec": s });
        let _ = writeln!(io.out, "{v}");
    } else {
        let _ = writeln!(
            io.out,
            "ok: {}: hardware `{}`, {} model(s), {} task(s) [{}], workload `{}` ({} requests x seq {})",
            file.display(),
            s.hardware.name,
            s.models.len(),
            s.tasks.len(),
            tasks.join(", "),
            s.workload.name,
            s.workload.requests,
            s.workload.seq
        );
    }
    Ok(0)
}
