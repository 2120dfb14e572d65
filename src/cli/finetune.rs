//! `mgen finetune`: fine-tune one task on its labelled inputs and write its
//! checkpoint.

use super::Io;
use crate::diag::{Diags, Sources};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub(super) struct Args {
    /// The .mgen file that declares the task and its `train` file.
    file: PathBuf,
    /// The task to fine-tune.
    #[arg(long)]
    task: String,
    /// The checkpoint to write (safetensors).
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Passes over the training inputs (1-1000).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1000))]
    epochs: u32,
    /// Peak AdamW learning rate.
    #[arg(long, default_value_t = 5e-5, value_parser = parse_lr)]
    lr: f64,
    /// Requests per mini-batch (1-4096).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    batch: u32,
    /// Seed of the mini-batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// One JSON object on stdout instead of text.
    #[arg(long)]
    pub(super) json: bool,
}

/// A learning rate in (0, 1].
fn parse_lr(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x <= 1.0 => Ok(x),
        _ => Err(format!("`{s}` is not a learning rate in (0, 1]")),
    }
}

pub(super) fn run(a: Args, io: &mut Io, sources: &mut Sources) -> Result<i32, Diags> {
    let s = crate::finetune::Settings {
        epochs: a.epochs,
        lr: a.lr,
        batch: a.batch,
        seed: a.seed,
    };
    let v = crate::finetune::finetune(&a.file, &a.task, &a.output, s, sources, io.progress)?;
    if a.json {
        let _ = writeln!(io.out, "{}", serde_json::to_string(&v).unwrap_or_default());
    } else {
        let _ = write!(io.out, "{}", v.text());
    }
    Ok(0)
}
