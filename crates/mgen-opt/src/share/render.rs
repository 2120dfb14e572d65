//! The sharing report rendered: as text ([`text`], what `--emit sharing`
//! prints) and the tree as an SVG ([`tree_svg`], for `compare --report`).
//!
//! Invariant: both read only the [`Sharing`] value (the JSON form is its
//! serde serialisation), so text, SVG and JSON describe the same report.

use super::report::Sharing;

/// The per-task table of [`text`]: what each task shares, and its budgets
/// (one row each; with the value before regeneration beneath when a
/// regeneration was used), then each branch retraining's figures.
fn task_table(s: &Sharing) -> String {
    use crate::table::{Align, Table};
    use std::fmt::Write;
    let (l, r) = (Align::Left, Align::Right);
    let mut tb = Table::new(&[
        ("task", l),
        ("layers", r),
        ("source", l),
        ("shared with", l),
        ("saved uJ", r),
        ("budget", l),
        ("measured", r),
        ("bound", r),
        ("", l),
    ])
    .gap(2);
    for t in &s.tasks {
        for (i, mz) in t.measured.iter().enumerate() {
            let mut row = if i == 0 {
                vec![
                    t.name.clone(),
                    // One convention with `mgen compare`: encoder layers
                    // computed with other tasks, of the model's layers (the
                    // embeddings below a shared layer are shared too).
                    format!(
                        "{}/{}",
                        t.shared_blocks.saturating_sub(1),
                        t.blocks.saturating_sub(1)
                    ),
                    t.source.clone(),
                    if t.shared_with.is_empty() {
                        "-".to_string()
                    } else {
                        t.shared_with.join(", ")
                    },
                    format!("{:.3}", t.saved_pj * 1e-6),
                ]
            } else {
                vec![String::new(); 5]
            };
            row.extend([
                mz.budget.clone(),
                format!("{:.4}", mz.value),
                format!("{:.4}", mz.bound),
                if mz.holds { "" } else { "FAILS" }.to_string(),
            ]);
            tb.row(row);
            if let Some(b) = t.before_regeneration.get(i) {
                let what = match t.regenerate {
                    "branch" => "(branch retrained; without:",
                    "joint" => "(trained jointly; untrained:",
                    _ => "(head refitted; without it:",
                };
                let mut row = vec![String::new(); 5];
                row.extend([what.to_string(), format!("{:.4})", b.value)]);
                tb.row(row);
            }
        }
    }
    let mut o = tb.render();
    o.push_str(&joint_lines(s));
    for t in &s.tasks {
        if let Some(b) = &t.branch {
            let _ = writeln!(
                o,
                "{}: branch retraining: {} values, {} steps, loss {:.4} -> {:.4}; {} retraining(s), {:.1} s",
                t.name,
                b.parameters,
                b.steps,
                b.first_loss,
                b.last_loss,
                b.retrainings,
                t.regeneration_seconds
            );
        }
    }
    o
}

/// One paragraph per joint group: what was trained, how the loss and each
/// budget moved, and the depths the search tried.
fn joint_lines(s: &Sharing) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    for j in &s.joint {
        let tried: Vec<String> = j
            .trials
            .iter()
            .map(|t| {
                let worst = t
                    .after
                    .iter()
                    .flat_map(|(_, ms)| ms.iter().map(|m| m.value - m.bound))
                    .fold(f64::INFINITY, f64::min);
                let verdict = match t.failed.is_empty() {
                    true => "held".to_string(),
                    false => format!("failed: {}", t.failed.join(", ")),
                };
                format!(
                    "d={} {{{}}} {verdict} (worst margin {worst:+.4}; loss {:.4} -> {:.4}; tree ≈ {:.3}x)",
                    t.depth,
                    t.tasks.join(", "),
                    t.loss_before,
                    t.loss_after,
                    j.unshared_weight / t.weight.max(1e-30)
                )
            })
            .collect();
        let Some(c) = &j.chosen else {
            let _ = writeln!(
                o,
                "joint {{{}}} on {}: no depth kept every budget; tried {}",
                j.tasks.join(", "),
                j.model,
                if tried.is_empty() {
                    "none (no depth could be cheaper)".to_string()
                } else {
                    tried.join("; ")
                }
            );
            continue;
        };
        let verdict = match j.adopted {
            true => "adopted",
            false => "not cheaper than the frozen tree; not used",
        };
        let _ = writeln!(
            o,
            "joint {{{}}} on {}: trunk = embeddings + {} trained layer(s) ({verdict})",
            c.tasks.join(", "),
            j.model,
            c.depth.saturating_sub(1),
        );
        let stop = if c.stopped_by_time {
            ", stopped by max_minutes"
        } else {
            ""
        };
        let how = match c.cache {
            super::cache::Hit::Trained => format!("{:.1} s", c.train_seconds),
            super::cache::Hit::Memory => "reused from this run".to_string(),
            super::cache::Hit::Disk => {
                format!("from the cache, first trained in {:.1} s", c.train_seconds)
            }
        };
        let _ = writeln!(
            o,
            "  {} values, {} epoch(s), {} steps{stop}; loss {:.4} -> {:.4}; {how}",
            c.parameters, c.epochs, c.steps, c.loss_before, c.loss_after
        );
        for b in &c.budgets {
            for (x, y) in b.before.iter().zip(&b.after) {
                let _ = writeln!(
                    o,
                    "  {:<14} {:<36} {:.4} -> {:.4} (bound {:.4}){}",
                    b.task,
                    y.budget,
                    x.value,
                    y.value,
                    y.bound,
                    if y.holds { "" } else { "  FAILS" }
                );
            }
        }
        let _ = writeln!(o, "  depths tried: {}", tried.join("; "));
    }
    o
}

/// The sharing report as text: the tree, then one row per task.
pub fn text(s: &Sharing) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "sharing tree (per block, the groups of tasks that compute it once):"
    );
    for (b, groups) in &s.tree {
        let g: Vec<String> = groups
            .iter()
            .map(|g| format!("{{{}}}", g.join(", ")))
            .collect();
        let label = if b == "emb" {
            "emb".to_string()
        } else {
            format!("layer {b}")
        };
        let _ = writeln!(o, "  {label:<9} {}", g.join(" "));
    }
    let _ = writeln!(o);
    o.push_str(&task_table(s));
    let _ = writeln!(o);
    let _ = writeln!(o, "redundancy analysis (per block; emb, then layers):");
    for a in &s.analysis {
        let d: Vec<String> = a.distance.iter().map(|x| format!("{x:.4}")).collect();
        let c: Vec<String> = a.swap_change.iter().map(|x| format!("{x:.4}")).collect();
        let _ = writeln!(
            o,
            "  {:<14} vs {:<12} weight distance  {}",
            a.name,
            a.base,
            d.join(" ")
        );
        let _ = writeln!(
            o,
            "  {:<14}    {:<12} output change    {}",
            "",
            "",
            c.join(" ")
        );
    }
    for p in &s.pairs {
        let d: Vec<String> = p.distance.iter().map(|x| format!("{x:.4}")).collect();
        let _ = writeln!(
            o,
            "  {:<14} vs {:<12} weight distance  {}",
            p.a,
            p.b,
            d.join(" ")
        );
    }
    let reqs = s.calibration_requests.iter().copied().max().unwrap_or(0);
    let _ = writeln!(
        o,
        "\nestimated energy per request: {:.3} uJ unshared, {:.3} uJ shared ({:.3}x)",
        s.unshared_pj * 1e-6,
        s.shared_pj * 1e-6,
        s.unshared_pj / s.shared_pj.max(1e-30)
    );
    if let Some(a) = &s.area {
        o.push_str(&area_table(a));
    }
    let _ = writeln!(
        o,
        "search: {} evaluations on up to {} calibration requests per task (`-v` or --json for its time)",
        s.evaluations, reqs
    );
    o
}

/// The area-mode part of [`text`]: crossbars and energy with and without
/// it, and per task its deltas and budgets.
fn area_table(a: &crate::area::AreaReport) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\narea mode: each task's own matrices as the base's (programmed once, reused) plus a {}-bit delta",
        a.delta_bits
    );
    let _ = writeln!(
        o,
        "  crossbars {} -> {} ({:.3}x fewer), area {:.2} -> {:.2} mm2; energy per request {:.3} -> {:.3} uJ ({:.3}x more)",
        a.crossbars_without,
        a.crossbars_with,
        a.crossbars_without as f64 / (a.crossbars_with.max(1)) as f64,
        a.area_without_mm2,
        a.area_with_mm2,
        a.energy_without_pj * 1e-6,
        a.energy_with_pj * 1e-6,
        a.energy_with_pj / a.energy_without_pj.max(1e-30)
    );
    let _ = writeln!(
        o,
        "  {:<14} {:>7} {:>7} {:<14} {:<30} {:>9} {:>9}",
        "task", "deltas", "zeros", "applied", "budget", "measured", "bound"
    );
    for t in &a.tasks {
        for (i, mz) in t.measured.iter().enumerate() {
            let (name, deltas, zeros, applied) = if i == 0 {
                (
                    t.name.clone(),
                    t.delta_matrices.to_string(),
                    format!("{:.1}%", 100.0 * t.zero_fraction),
                    match t.kept_whole {
                        None => "yes".to_string(),
                        Some(why) => format!("no: {why}"),
                    },
                )
            } else {
                Default::default()
            };
            let _ = writeln!(
                o,
                "  {:<14} {:>7} {:>7} {:<14} {:<30} {:>9.4} {:>9.4}",
                name, deltas, zeros, applied, mz.budget, mz.value, mz.bound
            );
        }
    }
    o
}

/// The tree as an SVG: one column per task, one row per block; cells of
/// tasks that compute a block together share a colour (grey: computed
/// alone).
pub fn tree_svg(s: &Sharing) -> String {
    use std::fmt::Write;
    let names: Vec<&str> = s.tasks.iter().map(|t| t.name.as_str()).collect();
    let (left, top, cw, rh) = (80.0, 60.0, 84.0, 20.0);
    let w = (left + cw * names.len() as f64 + 20.0).max(480.0);
    let h = top + rh * s.tree.len() as f64 + 30.0;
    let palette = [
        "#4a78b5", "#e07b39", "#5aa05a", "#b5524a", "#8a6bb8", "#8c6d5a", "#d17fb4", "#7f7f3f",
    ];
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        o,
        r#"<text x="10" y="20" font-size="15" font-weight="bold">Sharing tree: same colour = computed once for those tasks</text>"#
    );
    for (j, n) in names.iter().enumerate() {
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            left + cw * j as f64 + cw / 2.0,
            top - 8.0,
            n.replace('&', "&amp;").replace('<', "&lt;")
        );
    }
    for (i, (block, groups)) in s.tree.iter().enumerate() {
        let y = top + rh * i as f64;
        let label = if block == "emb" {
            "emb".to_string()
        } else {
            format!("layer {block}")
        };
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{}" text-anchor="end">{label}</text>"#,
            left - 6.0,
            y + 14.0
        );
        let mut colour = 0usize;
        for g in groups {
            let fill = if g.len() > 1 {
                colour += 1;
                palette[(colour - 1) % palette.len()]
            } else {
                "#d8d8d8"
            };
            for t in g {
                if let Some(j) = names.iter().position(|n| n == t) {
                    let _ = writeln!(
                        o,
                        r#"<rect x="{:.1}" y="{y}" width="{}" height="{}" fill="{fill}" stroke="white"/>"#,
                        left + cw * j as f64,
                        cw,
                        rh
                    );
                }
            }
        }
    }
    let _ = writeln!(o, "</svg>");
    o
}
