#!/usr/bin/env python3
"""Reproduces the tables of docs/evaluation.md.

Writes variants of examples/glue8-mini.mgen into out/eval/, runs
`mgen compare --json` on each and prints Markdown tables. Every figure in
docs/evaluation.md comes from this script (or from the command shown next
to it). Usage: cargo build --release && python3 scripts/evaluate.py
(set MGEN to run another mgen binary).
"""
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MGEN = os.environ.get("MGEN", os.path.join(ROOT, "target", "release", "mgen"))
OUT = os.path.join(ROOT, "out", "eval")
BASE = open(os.path.join(ROOT, "examples", "glue8-mini.mgen")).read()
TASKS = ["sst2", "mnli", "qqp", "qnli", "cola", "stsb", "mrpc", "rte"]


def variant(name, tasks=8, budgets="default", chip="fits", area=None, regen=False):
    s = BASE
    s = re.sub(r"tasks\s*=\s*\[[^\]]*\];", "tasks = [%s];" % ", ".join(TASKS[:tasks]), s)
    if budgets == "strict":
        s = re.sub(r"keep agreement >= [0-9.]+%;", "keep agreement >= 100%;", s)
        s = re.sub(r"keep cosine >= [0-9.]+;", "keep cosine >= 0.999;", s)
    elif budgets == "aggressive":
        s = re.sub(r"keep agreement >= [0-9.]+%;", "keep agreement >= 90%;", s)
        s = re.sub(r"keep cosine >= [0-9.]+;", "keep cosine >= 0.95;", s)
    if chip == "limited":
        s = s.replace("chips = 2; tiles = 168;", "chips = 1; tiles = 32;")
    if regen:
        s = re.sub(r"(head\s*=\s*(classify|regress)[^;]*;)", r"\1 regenerate = head;", s)
    if area:
        s = re.sub(r"(tasks\s*=\s*\[[^\]]*\];)", r"\1\n    area = delta(bits = %d);" % area, s)
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name + ".mgen")
    with open(path, "w") as f:
        f.write(s)
    return path


def compare(path, counts_only=True):
    args = [MGEN, "compare", path, "--json"] + (["--counts-only"] if counts_only else [])
    t = time.time()
    out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        sys.exit(out.stderr)
    v = json.loads(out.stdout)
    v["_wall"] = time.time() - t
    return v


def shared(v):
    return " ".join(str(t["shared_layers"]) for t in v["tasks"])


def row(label, v):
    b, m = v["baseline"], v["mgen"]
    return "| %s | %.3f× | %.3f× | %s | %d → %d | %.3g → %.3g | %.1f s |" % (
        label,
        v["energy_ratio"],
        v["energy_ratio_per_request_no_programming"],
        shared(v),
        b["crossbars"],
        m["crossbars"],
        b["cell_writes"],
        m["cell_writes"],
        v["_wall"],
    )


HEAD = ("| %s | energy ratio (run) | per request, no programming | layers shared per task "
        "| crossbars | cell writes | wall |\n|---|---|---|---|---|---|---|")

print("### Against the number of tasks (default budgets, chip fits)\n")
print(HEAD % "tasks")
for n in (2, 4, 8):
    print(row(str(n), compare(variant("tasks%d" % n, tasks=n))))
print("\n### Against the budget (8 tasks, chip fits)\n")
print(HEAD % "budgets")
for b in ("strict", "default", "aggressive"):
    print(row(b, compare(variant("budget-" + b, budgets=b))))
print("\n### Fits vs capacity-limited (8 tasks, default budgets)\n")
print(HEAD % "chip")
for c in ("fits", "limited"):
    v = compare(variant("chip-" + c, chip=c))
    print(row(c, v))
    if c == "limited":
        limited = v
print("\nSchedules weighed on the capacity-limited chip (mgen's tree):\n")
print("| order | requests per group | parked in eDRAM | cell writes | writes + parking |\n|---|---|---|---|---|")
for c in limited["schedule"]["candidates"]:
    print("| %s | %d | %s | %.4g | %.4g µJ |" % (
        c["name"], c["group"], "yes" if c["edram"] else "no", c["cell_writes"], c["total_pj"] * 1e-6))
print("\nbaseline (task by task, no sharing) cell writes: %.4g; mgen: %.4g" % (
    limited["baseline"]["cell_writes"], limited["mgen"]["cell_writes"]))
print("\n### Area mode (8 tasks, default budgets, chip fits)\n")
print("| deltas | tasks taking it | crossbars (baseline → mgen) | area mm² (baseline → mgen) "
      "| energy ratio (run) | wall |\n|---|---|---|---|---|---|")
for bits in (None, 2, 4):
    v = compare(variant("area-%s" % (bits or "off"), area=bits))
    b, m = v["baseline"], v["mgen"]
    took = "—"
    if bits:
        share = json.loads(subprocess.run(
            [MGEN, "compile", os.path.join(OUT, "area-%d.mgen" % bits), "--emit", "sharing", "--json"],
            capture_output=True, text=True, cwd=ROOT).stdout)
        took = "%d of %d" % (sum(1 for t in share["area"]["tasks"] if t["applied"]),
                             len(share["area"]["tasks"]))
    print("| %s | %s | %d → %d | %.1f → %.1f | %.3f× | %.1f s |" % (
        "%d-bit" % bits if bits else "off", took, b["crossbars"], m["crossbars"],
        b["area_mm2"], m["area_mm2"], v["energy_ratio"], v["_wall"]))
print("\n### Regeneration (8 tasks, default budgets, chip fits)\n")
print(HEAD % "regenerate")
for r in (False, True):
    print(row("head" if r else "none", compare(variant("regen-%s" % ("head" if r else "none"), regen=r))))
