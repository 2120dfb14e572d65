//! `timeline.svg` of `--report`: the overlapping timing model's schedule
//! (`mgen_isa::timing::slots`), one row per tile, time across, each
//! instruction a bar coloured by its task set (a legend maps colours to
//! task sets). Only request work is drawn: the initial programming and
//! every reprogramming between request groups (work of no request) are
//! left out, so a reprogramming shows as a gap; the chart starts when the
//! first request does. At most [`MAX_ROWS`] tiles and [`MAX_BARS`] bars.

use crate::backend::isa::Program;
use crate::backend::timing::{Resource, Slot, slots};
use crate::hw::Hardware;
use std::collections::BTreeMap;
use std::fmt::Write;

pub const MAX_ROWS: usize = 48;
pub const MAX_BARS: usize = 20_000;
const PALETTE: &[&str] = &[
    "#4a78b5", "#e07b39", "#5aa469", "#c94f5d", "#8a6bbf", "#b8a03a", "#3fa7b5", "#a0522d",
];

/// The tile a slot runs on, if it runs on one.
fn tile(s: &Slot, p: &Program, hw: &Hardware) -> Option<u64> {
    let per_tile = (hw.crossbars_per_core * hw.cores_per_tile).max(1);
    match s.resources.first()? {
        Resource::Crossbars(i) => p.images.get(*i as usize).map(|m| m.first / per_tile),
        Resource::Digital(t) | Resource::Edram(t) | Resource::Router(t) | Resource::Write(t) => {
            Some(*t)
        }
        Resource::Link => None,
    }
}

/// The chart for a run of `requests` requests.
pub fn svg(p: &Program, hw: &Hardware, requests: usize) -> String {
    let all: Vec<Slot> = slots(p, hw, requests)
        .into_iter()
        .filter(|s| s.request.is_some())
        .take(MAX_BARS)
        .collect();
    let t0 = all.iter().map(|s| s.start).fold(f64::INFINITY, f64::min);
    let t1 = all.iter().map(|s| s.end).fold(0.0f64, f64::max);
    let mut rows: BTreeMap<u64, usize> = BTreeMap::new();
    for s in &all {
        if let Some(t) = tile(s, p, hw) {
            let n = rows.len();
            if n < MAX_ROWS || rows.contains_key(&t) {
                rows.entry(t).or_insert(n);
            }
        }
    }
    // Rows in tile order.
    for (k, v) in rows.values_mut().enumerate() {
        *v = k;
    }
    let mut colours: BTreeMap<String, &str> = BTreeMap::new();
    let (w, left, row) = (960.0, 70.0, 14.0);
    let legend = 18.0;
    let mut sets: Vec<String> = all.iter().map(|s| p.code[s.line].tasks.join("+")).collect();
    sets.sort();
    sets.dedup();
    for (k, set) in sets.iter().enumerate() {
        colours.insert(set.clone(), PALETTE[k % PALETTE.len()]);
    }
    let h = 60.0 + row * rows.len() as f64 + legend * colours.len() as f64;
    let span = (t1 - t0).max(1e-9);
    let x = |t: f64| left + (w - left - 20.0) * (t - t0) / span;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r#"<text x="10" y="18" font-size="14" font-weight="bold">Timeline: {requests} request(s), {} after programming (tiles x time)</text>"#,
        crate::sim::time(span)
    );
    for (t, r) in &rows {
        let y = 30.0 + row * *r as f64;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">tile {t}</text>"#,
            left - 4.0,
            y + 10.0
        );
    }
    for sl in &all {
        let Some(r) = tile(sl, p, hw).and_then(|t| rows.get(&t)) else {
            continue;
        };
        let y = 30.0 + row * *r as f64;
        let c = colours
            .get(&p.code[sl.line].tasks.join("+"))
            .copied()
            .unwrap_or(PALETTE[0]);
        let _ = writeln!(
            s,
            r#"<rect x="{:.2}" y="{y}" width="{:.2}" height="{}" fill="{c}"><title>{} layer {} request {}</title></rect>"#,
            x(sl.start),
            (x(sl.end) - x(sl.start)).max(0.3),
            row - 3.0,
            p.code[sl.line].inst.mnemonic(),
            p.code[sl.line].layer,
            sl.request.unwrap_or(0)
        );
    }
    let base = 40.0 + row * rows.len() as f64;
    for (k, (set, c)) in colours.iter().enumerate() {
        let y = base + legend * k as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{left}" y="{y}" width="12" height="12" fill="{c}"/><text x="{}" y="{}">{}</text>"#,
            left + 18.0,
            y + 10.0,
            set.replace('&', "&amp;").replace('<', "&lt;")
        );
    }
    let _ = writeln!(s, "</svg>");
    s
}
