//! `mgen passes`: the registered passes and the named pipelines.

use super::Io;
use crate::diag::Diags;
use crate::passes;

#[derive(clap::Args, Debug)]
pub(super) struct Args {
    /// One JSON object on stdout instead of text.
    #[arg(long)]
    pub(super) json: bool,
}

pub(super) fn run(a: Args, io: &mut Io) -> Result<i32, Diags> {
    let reg = passes::registry();
    if a.json {
        let ps: Vec<_> = reg
            .iter()
            .map(|p| {
                let names = |a: &[passes::Artifact]| a.iter().map(|a| a.name()).collect::<Vec<_>>();
                serde_json::json!({
                    "name": p.name(), "description": p.description(), "contract": p.contract(),
                    "requires": names(p.requires()), "provides": names(p.provides()), "invalidates": names(p.invalidates()),
                })
            })
            .collect();
        let pl: Vec<_> = passes::PIPELINES
            .iter()
            .map(|(n, p, d)| serde_json::json!({ "name": n, "passes": p, "description": d }))
            .collect();
        let _ = writeln!(
            io.out,
            "{}",
            serde_json::json!({ "passes": ps, "pipelines": pl })
        );
    } else {
        let _ = writeln!(io.out, "passes:");
        for p in &reg {
            let _ = writeln!(io.out, "  {:<10} {}", p.name(), p.description());
            if !p.contract().is_empty() {
                let _ = writeln!(io.out, "  {:<10} contract: {}", "", p.contract());
            }
            let list =
                |a: &[passes::Artifact]| a.iter().map(|a| a.name()).collect::<Vec<_>>().join(", ");
            for (what, a) in [
                ("requires", p.requires()),
                ("provides", p.provides()),
                ("invalidates", p.invalidates()),
            ] {
                if !a.is_empty() {
                    let _ = writeln!(io.out, "  {:<10} {what}: {}", "", list(a));
                }
            }
        }
        let _ = writeln!(io.out, "pipelines:");
        for (n, p, d) in passes::PIPELINES {
            let list = if p.is_empty() {
                "(no passes)".to_string()
            } else {
                p.join(",")
            };
            let _ = writeln!(io.out, "  {:<10} {:<18} {}", n, list, d);
        }
        let _ = writeln!(io.out, "The verifier runs after every pass.");
    }
    Ok(0)
}
