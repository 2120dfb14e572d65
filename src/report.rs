//! `--report DIR`: the report as JSON plus SVG charts (energy by component,
//! energy by layer, crossbar utilisation per tile, and the timing model's
//! timeline, `crate::timeline`). The SVG is written by
//! hand: plain horizontal bar charts, no dependencies, readable in any
//! browser or paper figure pipeline.

use crate::diag::Diags;
use crate::sim::{Package, Report};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

/// An SVG document's opening tag and its title line.
fn svg_open(w: f64, h: f64, title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One line of a [`line_chart`]: its legend and its `(x, y)` points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// The range `[lo, hi]` of `v`, widened when it is one value.
fn span(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = v.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        lo.abs().max(1.0) * 0.05
    };
    (lo - pad, hi + pad)
}

/// A line chart of `series` (points joined in the order given, each
/// marked), with five ticks per axis and a legend below.
pub fn line_chart(title: &str, xlabel: &str, ylabel: &str, series: &[Series]) -> String {
    const COLOURS: [&str; 8] = [
        "#4a78b5", "#d1603d", "#3a9b5c", "#8a5bb5", "#b58a2e", "#2e9fb5", "#b52e6f", "#666666",
    ];
    let (w, plot_h, left, top) = (760.0, 300.0, 80.0, 40.0);
    let plot_w = w - left - 30.0;
    let h = top + plot_h + 50.0 + 18.0 * series.len() as f64;
    let all = || series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = span(all().map(|p| p.0));
    let (y0, y1) = span(all().map(|p| p.1));
    let px = |x: f64| left + plot_w * (x - x0) / (x1 - x0);
    let py = |y: f64| top + plot_h * (1.0 - (y - y0) / (y1 - y0));
    let mut s = svg_open(w, h, title);
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>"##
    );
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let (x, y) = (x0 + (x1 - x0) * f, y0 + (y1 - y0) * f);
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            px(x),
            top + plot_h + 16.0,
            tick(x)
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 6.0,
            py(y) + 4.0,
            tick(y)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
        left + plot_w / 2.0,
        top + plot_h + 34.0,
        escape(xlabel)
    );
    let _ = writeln!(
        s,
        r#"<text x="14" y="{:.1}" text-anchor="middle" transform="rotate(-90 14 {:.1})">{}</text>"#,
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        escape(ylabel)
    );
    for (i, sr) in series.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        let pts: Vec<String> = sr
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/>"#,
            pts.join(" ")
        );
        for &(x, y) in &sr.points {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"><title>{}: {x} -> {y:.4}</title></circle>"#,
                px(x),
                py(y),
                escape(&sr.name)
            );
        }
        let ly = top + plot_h + 52.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{left}" y="{:.1}" width="14" height="4" fill="{c}"/><text x="{}" y="{:.1}">{}</text>"#,
            ly - 4.0,
            left + 20.0,
            ly,
            escape(&sr.name)
        );
    }
    let _ = writeln!(s, "</svg>");
    s
}

/// An axis tick: short, as many decimals as its size needs.
fn tick(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A horizontal bar chart of `(label, value)` with `unit` on the axis.
pub fn bar_chart(title: &str, unit: &str, bars: &[(String, f64)]) -> String {
    let (w, left, row) = (760.0, 190.0, 22.0);
    let h = 60.0 + row * bars.len() as f64;
    let max = bars.iter().map(|b| b.1).fold(0.0f64, f64::max).max(1e-300);
    let mut s = svg_open(w, h, title);
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = 36.0 + row * i as f64;
        // A negative or undefined value draws no bar (its label says it).
        let bw = ((w - left - 130.0) * v / max).max(0.0);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            left - 6.0,
            y + 14.0,
            escape(label)
        );
        let _ = writeln!(
            s,
            r##"<rect x="{left}" y="{y}" width="{bw:.2}" height="{}" fill="#4a78b5"/>"##,
            row - 6.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.2}" y="{}">{v:.4e} {}</text>"#,
            left + bw + 6.0,
            y + 14.0,
            escape(unit)
        );
    }
    let _ = writeln!(s, "</svg>");
    s
}

/// Writes `report.json` and the charts into `dir`.
pub fn write(dir: &Path, report: &Report, pkg: &Package) -> Result<(), Diags> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Diags::from(crate::diag::Diagnostic::error(
            crate::diag::Code::E105,
            format!("cannot create `{}`: {e}", dir.display()),
        ))
    })?;
    let w = |name: &str, text: &str| mgen_util::fs::write_atomic(&dir.join(name), text.as_bytes());
    w(
        "report.json",
        &serde_json::to_string_pretty(report).unwrap_or_default(),
    )?;
    let pairs = |m: &BTreeMap<String, f64>| -> Vec<(String, f64)> {
        m.iter().map(|(k, x)| (k.clone(), *x)).collect()
    };
    let mut comp = pairs(&report.breakdown);
    comp.retain(|b| b.1 > 0.0);
    w(
        "energy_by_component.svg",
        &bar_chart("Energy by component", "pJ", &comp),
    )?;
    let mut layers = pairs(&report.by_layer);
    layers.sort_by_key(|(k, _)| match k.as_str() {
        "(setup)" => (0, 0),
        "input" => (1, 0),
        "emb" => (2, 0),
        "head" => (4, 0),
        other => (3, other.parse::<u64>().unwrap_or(0)),
    });
    w(
        "energy_by_layer.svg",
        &bar_chart("Energy by layer", "pJ", &layers),
    )?;
    let hw = &pkg.hw;
    let per_tile = (hw.crossbars_per_core * hw.cores_per_tile).max(1);
    let bars: Vec<(String, f64)> = tile_use(&pkg.prog.images, per_tile, 64)
        .into_iter()
        .map(|(t, u)| (format!("tile {t}"), 100.0 * u as f64 / per_tile as f64))
        .collect();
    w(
        "crossbar_utilisation.svg",
        &bar_chart(
            "Crossbars in use per tile (first 64 tiles, fullest phase)",
            "%",
            &bars,
        ),
    )?;
    w(
        "timeline.svg",
        &crate::timeline::svg(&pkg.prog, hw, pkg.requests.len()),
    )?;
    Ok(())
}

/// The first `n` tiles in use and, per tile, the crossbars in use in its
/// fullest phase (as the placement report). Works on crossbar ranges, never
/// crossbar by crossbar: a range may be as large as the machine.
fn tile_use(images: &[crate::backend::isa::Image], per_tile: u64, n: usize) -> Vec<(u64, u64)> {
    let range = |i: &crate::backend::isa::Image| {
        let end = i.first.saturating_add(i.crossbars);
        (
            i.first,
            end,
            i.first / per_tile,
            end.saturating_sub(1) / per_tile,
        )
    };
    let mut tiles: Vec<u64> = Vec::new();
    let mut spans: Vec<(u64, u64)> = images
        .iter()
        .filter(|i| i.crossbars > 0)
        .map(|i| {
            let r = range(i);
            (r.2, r.3)
        })
        .collect();
    spans.sort_unstable();
    let mut next = 0u64;
    for (a, b) in spans {
        let room = n - tiles.len();
        tiles.extend((a.max(next)..=b).take(room));
        next = next.max(b.saturating_add(1));
        if tiles.len() >= n {
            break;
        }
    }
    tiles
        .into_iter()
        .map(|t| {
            let (lo, hi) = (t * per_tile, (t + 1).saturating_mul(per_tile));
            let mut by_phase: std::collections::BTreeMap<u32, u64> = Default::default();
            for i in images {
                let (a, b, _, _) = range(i);
                let overlap = b.min(hi).saturating_sub(a.max(lo));
                *by_phase.entry(i.phase).or_insert(0) += overlap;
            }
            (t, by_phase.values().copied().max().unwrap_or(0))
        })
        .collect()
}
