//! The timing model: when every instruction of a run starts and ends on a
//! chip whose crossbars, tiles and links work concurrently.
//!
//! Each executed instruction (setup once, a loop body once per request it
//! covers) occupies named [`Resource`]s for its duration and starts at the
//! earliest time at which its operands are ready and every resource it needs
//! is free for the whole duration (list scheduling with insertion into idle
//! gaps; program order, then request order, breaks ties). Requests therefore
//! pipeline through the program wherever resources allow. Counting mode and
//! functional mode call the same function, and it never reads data.
//!
//! Invariants (tested): `critical_path_ns ≤ makespan_ns ≤ sequential_ns`;
//! an MVM's duration does not grow with the number of crossbars its matrix
//! spans (they fire together) and grows inversely with the ADCs that serve
//! them; the schedule depends only on the program, the hardware and the
//! request count, so it is deterministic. See `docs/simulator.md`.

use crate::cost::{DIGITAL_LANES, cost};
use crate::hw::Hardware;
use crate::isa::{Inst, Program};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// What an instruction occupies while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// The crossbars (with their ADCs) of one programmed image: the index
    /// of the image that owns them.
    Crossbars(u32),
    /// A tile's digital unit.
    Digital(u64),
    /// A tile's eDRAM port (eDRAM spills and fills).
    Edram(u64),
    /// A tile's router port on the on-chip network.
    Router(u64),
    /// The off-chip link.
    Link,
    /// A tile's array-write path (programming).
    Write(u64),
}

impl Resource {
    /// The kind's name in reports.
    pub fn kind(self) -> &'static str {
        match self {
            Resource::Crossbars(_) => "crossbars",
            Resource::Digital(_) => "digital",
            Resource::Edram(_) => "edram",
            Resource::Router(_) => "interconnect",
            Resource::Link => "off_chip_link",
            Resource::Write(_) => "array_write",
        }
    }
}

/// The timing of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timing {
    /// One request on the programmed, otherwise empty chip (ns): from the
    /// end of the initial programming to the request's last instruction.
    pub latency_ns: f64,
    /// Requests completed per second in the batch once the chip is
    /// programmed: `requests / (makespan − initial programming)`.
    pub throughput_per_s: f64,
    /// The whole batch, initial programming included (ns).
    pub makespan_ns: f64,
    /// The initial programming (ns): the setup before the first request.
    pub program_ns: f64,
    /// Every instruction one after another (the old sequential figure).
    pub sequential_ns: f64,
    /// The longest dependency chain of the batch with unlimited resources:
    /// no schedule is shorter.
    pub critical_path_ns: f64,
    /// One request's dependency-critical path, by layer (ns).
    pub critical_path_by_layer: BTreeMap<String, f64>,
    /// Busy time over (resources of the kind in use × makespan), by kind.
    pub utilisation: BTreeMap<String, f64>,
}

/// One scheduled execution of an instruction (for the timeline chart).
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub line: usize,
    pub request: Option<usize>,
    pub start: f64,
    pub end: f64,
    pub resources: Vec<Resource>,
}

/// A tile of the chip, from a crossbar index.
fn tile_of(hw: &Hardware, crossbar: u64) -> u64 {
    crossbar / (hw.crossbars_per_core * hw.cores_per_tile).max(1)
}

/// The image whose crossbars `image` uses (itself unless it reuses one).
fn owner(p: &Program, image: u32) -> u32 {
    let mut i = image;
    for _ in 0..p.images.len() {
        match p.images.get(i as usize).and_then(|m| m.reuses) {
            Some(r) if r != i => i = r,
            _ => break,
        }
    }
    i
}

/// How long one MVM takes: every crossbar of the matrix fires at once, one
/// read cycle per input bit slice per token; a cycle lasts the longer of
/// the crossbar read and converting its used columns on the ADCs that
/// serve it. The digital shift-and-add and rescale pipeline with it.
pub fn mvm_ns(hw: &Hardware, tokens: f64, out_dim: u64, in_dim: u64, wbits: u32) -> f64 {
    let (rb, cb, sl, sg) = hw.blocks(out_dim, in_dim, wbits);
    let cycles = (hw.input_bits as f64 / hw.dac_bits.max(1) as f64).ceil();
    let cols = out_dim.div_ceil(cb.max(1)).min(hw.cols) as f64;
    let convert = cols * hw.figure("adc_sample") / hw.adcs_per_crossbar().max(1e-9);
    let cycle = hw.figure("crossbar_cycle").max(convert);
    let (outd, ind) = (out_dim as f64, in_dim as f64);
    let adds = tokens * outd * ((rb * sl * sg) as f64 + 1.0);
    let muls = tokens * (outd + ind);
    let digital = (adds + muls) / DIGITAL_LANES * hw.figure("digital_cycle");
    (tokens * cycles * cycle).max(digital)
}

/// The buffers an instruction reads.
fn reads(inst: &Inst) -> Vec<u32> {
    match inst {
        Inst::Embed { ids, .. } => vec![*ids],
        Inst::LayerNorm { src, .. }
        | Inst::Send { src, .. }
        | Inst::Mvm { src, .. }
        | Inst::Spill { src, .. }
        | Inst::Store { src, .. } => vec![*src],
        Inst::Dmm { a, b, .. } => vec![*a, *b],
        Inst::Vec { a, b, .. } => std::iter::once(*a).chain(*b).collect(),
        Inst::Pool { src, mask, .. } => vec![*src, *mask],
        _ => Vec::new(),
    }
}

/// Busy intervals of each resource, sorted by start.
#[derive(Default)]
struct Busy {
    by: HashMap<Resource, Vec<(f64, f64)>>,
}

impl Busy {
    /// The earliest start `>= ready` at which `[t, t + d)` is free on
    /// every resource in `rs`.
    fn earliest(&self, rs: &[Resource], ready: f64, d: f64) -> f64 {
        let mut t = ready;
        loop {
            let mut moved = false;
            for r in rs {
                let Some(iv) = self.by.get(r) else { continue };
                // Intervals ending after t, in start order.
                let from = iv.partition_point(|&(_, e)| e <= t);
                for &(s, e) in &iv[from..] {
                    if s >= t + d {
                        break;
                    }
                    if e > t && s < t + d && d > 0.0 {
                        t = e;
                        moved = true;
                    }
                }
            }
            if !moved {
                return t;
            }
        }
    }

    /// When the last interval on any of `rs` ends.
    fn last_end(&self, rs: &[Resource]) -> f64 {
        rs.iter()
            .filter_map(|r| self.by.get(r))
            .flat_map(|iv| iv.iter().map(|x| x.1))
            .fold(0.0, f64::max)
    }

    fn take(&mut self, rs: &[Resource], s: f64, e: f64) {
        if e <= s {
            return;
        }
        for r in rs {
            let iv = self.by.entry(*r).or_default();
            let at = iv.partition_point(|&(a, _)| a < s);
            iv.insert(at, (s, e));
        }
    }
}

/// Per-request dataflow state: when each buffer's value is ready (and at
/// which tile it lives), when a spilled copy is, and when a buffer's last
/// reader ends (a rewrite waits for it).
#[derive(Clone, Default)]
struct Flow {
    ready: HashMap<u32, (f64, u64)>,
    spilled: HashMap<u32, (f64, u64)>,
    read_end: HashMap<u32, f64>,
    /// When the latest SEND of a buffer ends (the MVM that follows needs it
    /// on its tiles), and which line it was.
    sent: HashMap<u32, (f64, usize)>,
}

/// A request loop's body and the requests it runs for.
struct Body {
    start: usize,
    end: usize,
    requests: std::ops::Range<usize>,
}

struct Run<'a> {
    p: &'a Program,
    hw: &'a Hardware,
    durations: Vec<f64>,
    busy: Busy,
    /// Ignore resources (the critical path: unlimited hardware).
    unlimited: bool,
    fence: f64,
    end: f64,
    /// When request 0's last instruction ends (a latency's end: later
    /// groups' reprogramming does not delay it).
    first_end: f64,
    busy_ns: BTreeMap<&'static str, f64>,
    slots: Option<Vec<Slot>>,
    /// Per line of one request (critical path): (end, predecessor line).
    chain: Option<HashMap<usize, (f64, Option<usize>)>>,
    writer: HashMap<u32, usize>,
    /// When each image's programming ends (its MVMs wait for it).
    programmed: HashMap<u32, f64>,
}

impl Run<'_> {
    /// Resources, duration-weighted size for utilisation, and the tile an
    /// output lives on.
    fn resources(&self, inst: &Inst, home: u64) -> (Vec<Resource>, f64, u64) {
        let p = self.p;
        match inst {
            Inst::Mvm { image, .. } | Inst::XbProgram(image) => {
                let o = owner(p, *image);
                let img = p.images.get(o as usize);
                let first = img.map(|m| m.first).unwrap_or(0);
                let n = img.map(|m| m.crossbars).unwrap_or(0) as f64;
                let tile = tile_of(self.hw, first);
                let mut rs = vec![Resource::Crossbars(o)];
                // Images of other phases programmed on the same crossbars.
                for (k, m) in p.images.iter().enumerate() {
                    let k = k as u32;
                    if k != o
                        && m.reuses.is_none()
                        && let Some(me) = img
                        && m.first < me.first + me.crossbars
                        && me.first < m.first + m.crossbars
                    {
                        rs.push(Resource::Crossbars(k));
                    }
                }
                if matches!(inst, Inst::XbProgram(_)) {
                    rs.push(Resource::Write(tile));
                }
                (rs, n, tile)
            }
            Inst::Send { .. } => (vec![Resource::Router(home)], 1.0, home),
            Inst::Spill { edram: true, .. } | Inst::Fill { edram: true, .. } => {
                (vec![Resource::Edram(home)], 1.0, home)
            }
            Inst::Spill { .. } | Inst::Fill { .. } => (vec![Resource::Link], 1.0, home),
            Inst::Embed { .. }
            | Inst::LayerNorm { .. }
            | Inst::Dmm { .. }
            | Inst::Vec { .. }
            | Inst::Pool { .. } => (vec![Resource::Digital(home)], 1.0, home),
            _ => (Vec::new(), 0.0, home),
        }
    }

    /// Schedules line `i` for one request's flow; returns its end.
    fn step(&mut self, i: usize, request: Option<usize>, flow: &mut Flow) {
        let inst = &self.p.code[i].inst;
        if matches!(inst, Inst::Barrier) {
            self.fence = self.end;
            return;
        }
        let d = self.durations[i];
        let mut ready = self.fence;
        let mut home = 0;
        let mut pred = None;
        let mut take = |t: f64, b: u32, pred: &mut Option<usize>, w: &HashMap<u32, usize>| {
            if t > ready {
                ready = t;
                *pred = w.get(&b).copied();
            }
        };
        let srcs = reads(inst);
        for (k, b) in srcs.iter().enumerate() {
            if let Some(&(t, tile)) = flow.ready.get(b) {
                take(t, *b, &mut pred, &self.writer);
                if k == 0 {
                    home = tile;
                }
            }
        }
        if let Inst::Fill { dst, .. } = inst
            && let Some(&(t, tile)) = flow.spilled.get(dst)
        {
            take(t, *dst, &mut pred, &self.writer);
            home = tile;
        }
        if let Inst::Mvm { src, .. } = inst
            && let Some(&(t, line)) = flow.sent.get(src)
            && t > ready
        {
            ready = t;
            pred = Some(line);
        }
        let written = inst.written();
        if let Some(w) = written
            && let Some(&t) = flow.read_end.get(&w)
        {
            ready = ready.max(t);
        }
        let (rs, size, out_tile) = self.resources(inst, home);
        match inst {
            Inst::Mvm { image, .. } => {
                if let Some(&t) = self.programmed.get(&owner(self.p, *image)) {
                    ready = ready.max(t);
                }
            }
            // Reprogramming waits for every earlier use of the crossbars.
            Inst::XbProgram(_) if !self.unlimited => ready = ready.max(self.busy.last_end(&rs)),
            _ => {}
        }
        let start = if self.unlimited {
            ready
        } else {
            self.busy.earliest(&rs, ready, d)
        };
        let end = start + d;
        if !self.unlimited {
            self.busy.take(&rs, start, end);
            // Programming is the array-write path's work (one per tile);
            // everything else is its first resource's, weighted by size.
            let charge = match inst {
                Inst::XbProgram(_) => Some(("array_write", 1.0)),
                _ => rs.first().map(|r| (r.kind(), size)),
            };
            if let Some((kind, w)) = charge {
                *self.busy_ns.entry(kind).or_insert(0.0) += d * w;
            }
        }
        self.end = self.end.max(end);
        if request == Some(0) {
            self.first_end = self.first_end.max(end);
        }
        if let Inst::XbProgram(image) = inst {
            self.programmed.insert(owner(self.p, *image), end);
        }
        for b in &srcs {
            let e = flow.read_end.entry(*b).or_insert(0.0);
            *e = e.max(end);
        }
        if let Inst::Send { src, .. } = inst {
            flow.sent.insert(*src, (end, i));
        }
        if let Inst::Spill { src, .. } = inst {
            flow.spilled.insert(*src, (end, home));
        }
        if let Some(w) = written {
            let tile = if matches!(inst, Inst::Mvm { .. }) {
                out_tile
            } else {
                home
            };
            flow.ready.insert(w, (end, tile));
            flow.read_end.remove(&w);
            self.writer.insert(w, i);
        }
        if let Some(c) = self.chain.as_mut() {
            let pred = pred.filter(|p| c.contains_key(p));
            c.insert(i, (end, pred));
        }
        if let Some(s) = self.slots.as_mut()
            && d > 0.0
        {
            s.push(Slot {
                line: i,
                request,
                start,
                end,
                resources: rs,
            });
        }
    }
}

/// The request loops of a program, in order.
fn bodies(p: &Program, requests: usize) -> Vec<Body> {
    let mut out = Vec::new();
    let mut open = None;
    for (i, l) in p.code.iter().enumerate() {
        match l.inst {
            Inst::ForRequests | Inst::ForGroup { .. } => {
                let r = match l.inst {
                    Inst::ForGroup { first, count } => {
                        let a = (first as usize).min(requests);
                        a..(first as usize)
                            .saturating_add(count as usize)
                            .min(requests)
                    }
                    _ => 0..requests,
                };
                open = Some((i + 1, r));
            }
            Inst::End => {
                if let Some((s, r)) = open.take() {
                    out.push(Body {
                        start: s,
                        end: i,
                        requests: r,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// Schedules a run; the slots when `keep_slots`.
fn schedule<'a>(
    p: &'a Program,
    hw: &'a Hardware,
    requests: usize,
    unlimited: bool,
    keep_slots: bool,
) -> (Run<'a>, f64) {
    let mut run = Run {
        p,
        hw,
        durations: p
            .code
            .iter()
            .map(|l| cost(&l.inst, p, hw).latency_ns)
            .collect(),
        busy: Busy::default(),
        unlimited,
        fence: 0.0,
        end: 0.0,
        first_end: 0.0,
        busy_ns: BTreeMap::new(),
        slots: keep_slots.then(Vec::new),
        chain: None,
        writer: HashMap::new(),
        programmed: HashMap::new(),
    };
    for (i, l) in p.code.iter().enumerate() {
        if let Inst::Mvm { src, image, .. } = &l.inst {
            let img = &p.images[owner(p, *image) as usize];
            let s = p
                .buffers
                .get(*src as usize)
                .map(|v| v.as_slice())
                .unwrap_or(&[]);
            let tokens = if s.len() > 1 {
                s[..s.len() - 1].iter().product::<u64>() as f64
            } else {
                1.0
            };
            run.durations[i] = mvm_ns(hw, tokens, img.out_dim, img.in_dim, img.wbits);
        }
    }
    let loops = bodies(p, requests);
    let mut setup = Flow::default();
    let mut program_ns = None;
    let mut i = 0;
    let mut next = loops.iter().peekable();
    let mut flows: Vec<Flow> = vec![Flow::default(); requests];
    while i < p.code.len() {
        if let Some(b) = next.peek()
            && b.start == i + 1
        {
            // Requests arrive on a programmed chip.
            if program_ns.is_none() {
                program_ns = Some(run.end);
                run.fence = run.end;
            }
            for r in b.requests.clone() {
                for k in b.start..b.end {
                    run.step(k, Some(r), &mut flows[r]);
                }
            }
            i = b.end + 1;
            next.next();
            continue;
        }
        run.step(i, None, &mut setup);
        i += 1;
    }
    let program_ns = program_ns.unwrap_or(run.end);
    (run, program_ns)
}

/// The three figures the task scheduler weighs, without the critical path
/// and utilisation [`timing`] adds: `(latency_ns, throughput_per_s,
/// makespan_ns)`, each as in [`Timing`].
pub fn brief(p: &Program, hw: &Hardware, requests: usize) -> (f64, f64, f64) {
    let (run, program_ns) = schedule(p, hw, requests, false, false);
    let latency = latency_ns(p, hw, requests);
    (latency, throughput(requests, run.end, program_ns), run.end)
}

/// One request's latency on the programmed, otherwise empty chip.
fn latency_ns(p: &Program, hw: &Hardware, requests: usize) -> f64 {
    let (one, one_program) = schedule(p, hw, requests.min(1), false, false);
    (one.first_end - one_program).max(0.0)
}

/// Requests per second once the chip is programmed (0 for an empty run).
fn throughput(requests: usize, makespan: f64, program_ns: f64) -> f64 {
    let span = (makespan - program_ns).max(0.0);
    if span > 0.0 && requests > 0 {
        requests as f64 / span * 1e9
    } else {
        0.0
    }
}

/// The timing of a run over `requests` requests.
pub fn timing(p: &Program, hw: &Hardware, requests: usize) -> Timing {
    let (run, program_ns) = schedule(p, hw, requests, false, false);
    let makespan = run.end;
    let (free, _) = schedule(p, hw, requests, true, false);
    let sequential = sequential_ns(p, hw, requests, &run.durations);
    let mut utilisation = BTreeMap::new();
    let counts = resource_counts(&run.busy);
    for (k, ns) in &run.busy_ns {
        let n = if *k == "crossbars" {
            physical_crossbars(p)
        } else {
            counts.get(k).copied().unwrap_or(1.0)
        }
        .max(1.0);
        utilisation.insert(k.to_string(), ns / (n * makespan.max(1e-30)));
    }
    Timing {
        latency_ns: latency_ns(p, hw, requests),
        throughput_per_s: throughput(requests, makespan, program_ns),
        makespan_ns: makespan,
        program_ns,
        sequential_ns: sequential,
        critical_path_ns: free.end,
        critical_path_by_layer: critical_by_layer(p, hw, requests.min(1)),
        utilisation,
    }
}

/// Crossbars the program's images occupy on the chip: the union of their
/// ranges (images of different phases on the same crossbars count once).
fn physical_crossbars(p: &Program) -> f64 {
    let mut ranges: Vec<(u64, u64)> = p
        .images
        .iter()
        .filter(|m| m.reuses.is_none())
        .map(|m| (m.first, m.first.saturating_add(m.crossbars)))
        .collect();
    ranges.sort_unstable();
    let (mut total, mut reach) = (0u64, 0u64);
    for (a, b) in ranges {
        let a = a.max(reach);
        if b > a {
            total += b - a;
            reach = b;
        }
    }
    total as f64
}

/// How many resources of each kind the run used (crossbars counted one by
/// one).
fn resource_counts(b: &Busy) -> BTreeMap<&'static str, f64> {
    let mut m = BTreeMap::new();
    for r in b.by.keys() {
        *m.entry(r.kind()).or_insert(0.0) += 1.0;
    }
    m
}

/// The sequential figure: every execution's duration summed.
fn sequential_ns(p: &Program, hw: &Hardware, requests: usize, d: &[f64]) -> f64 {
    let loops = bodies(p, requests);
    let mut total: f64 = d.iter().sum();
    for b in &loops {
        let body: f64 = d[b.start..b.end].iter().sum();
        total += body * (b.requests.len() as f64 - 1.0);
    }
    let _ = hw;
    total
}

/// One request's dependency-critical path (unlimited resources), by layer.
fn critical_by_layer(p: &Program, hw: &Hardware, requests: usize) -> BTreeMap<String, f64> {
    let mut run = schedule_chain(p, hw, requests);
    let chain = run.chain.take().unwrap_or_default();
    let mut out = BTreeMap::new();
    let last = chain
        .iter()
        .max_by(|a, b| a.1.0.total_cmp(&b.1.0).then(b.0.cmp(a.0)))
        .map(|(k, _)| *k);
    let mut at = last;
    let mut guard = 0;
    while let Some(i) = at {
        let layer = match p.code[i].layer.as_str() {
            "" => "(setup)".to_string(),
            l => l.to_string(),
        };
        *out.entry(layer).or_insert(0.0) += run.durations[i];
        at = chain.get(&i).and_then(|c| c.1);
        guard += 1;
        if guard > p.code.len() {
            break;
        }
    }
    out
}

fn schedule_chain<'a>(p: &'a Program, hw: &'a Hardware, requests: usize) -> Run<'a> {
    // The first request only, resources unlimited, recording predecessors.
    let (mut run, _) = schedule(p, hw, 0, true, false);
    run.chain = Some(HashMap::new());
    run.end = 0.0;
    run.writer.clear();
    let mut flow = Flow::default();
    for b in bodies(p, requests) {
        if b.requests.is_empty() {
            continue;
        }
        for k in b.start..b.end {
            run.step(k, Some(0), &mut flow);
        }
    }
    run
}

/// Every scheduled execution of the run (the timeline chart's data).
pub fn slots(p: &Program, hw: &Hardware, requests: usize) -> Vec<Slot> {
    let (mut run, _) = schedule(p, hw, requests, false, true);
    run.slots.take().unwrap_or_default()
}
