#!/usr/bin/env bash
# The trade-off curve of joint regeneration on the real labelled example
# (examples/minilm-tasks-labelled.mgen; build its data and models first with
# scripts/fetch-tasks.sh): for each K (default 1 2 3 4 5) one joint training
# of the group with a trunk of exactly K encoder layers (`regenerate =
# joint(layers = K)`), then every task's budgets on its own labelled
# calibration set (256 sentences no training saw) and the search's estimate
# of the tree's energy ratio (the block energy model: baseline weight over
# the tree's). Prints one table; the JSON reports are in out/joint-curve/.
#
#   scripts/joint-curve.sh [K ...]
#   JOINT_ARGS="lr = 2e-5, epochs = 4" scripts/joint-curve.sh 1 2 3
#
# JOINT_ARGS adds settings to every training (docs/language.md, `joint`);
# OUT (default out/joint-curve, two folders below the repository) is
# where the variants and reports go. A K whose tree could not be cheaper
# than the frozen search's is not trained, and the table says so.
# Trainings are memoised in the cache folder (--cache; default .mgen-cache),
# so a rerun trains nothing. About 6-7 minutes per K on 2 cores.
# MGEN=path/to/mgen uses that binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
EXAMPLE=examples/minilm-tasks-labelled.mgen
OUT=${OUT:-out/joint-curve}
MGEN=${MGEN:-}
if [ -z "$MGEN" ]; then
    cargo build --release --quiet
    MGEN=target/release/mgen
fi
mkdir -p "$OUT"
KS=("$@")
[ ${#KS[@]} -gt 0 ] || KS=(1 2 3 4 5)
for K in "${KS[@]}"; do
    f="$OUT/layers-$K.mgen"
    # The variant lives two folders down: its relative paths gain one `../`.
    args="layers = $K${JOINT_ARGS:+, $JOINT_ARGS}"
    sed -e "s/regenerate = joint;/regenerate = joint($args);/" \
        -e 's#"\.\./#"../../#g' "$EXAMPLE" > "$f"
    echo "joint-curve: K = $K ($f)" >&2
    "$MGEN" compile "$f" --emit sharing --json > "$OUT/layers-$K.json"
done
python3 - "$OUT" "${KS[@]}" <<'PY'
import json, sys
out, ks = sys.argv[1], sys.argv[2:]
print("| layers shared | tasks trained | est. ratio | loss before -> after | per task: metric (bound) |")
print("|---|---|---|---|---|")
for k in ks:
    s = json.load(open(f"{out}/layers-{k}.json"))
    if not any(g["trials"] for g in s["joint"]):
        print(f"| {k} | - | - | - | not trained: the frozen tree is already as cheap |")
    for g in s["joint"]:
        for t in g["trials"]:
            ratio = g["unshared_weight"] / t["weight"]
            cells = []
            for name, ms in t["after"]:
                for m in ms:
                    if m["metric"] in ("accuracy", "pearson"):
                        mark = "" if m["holds"] else " ✗"
                        cells.append(f"{name} {m['value']:.3f} ({m['bound']:.3f}){mark}")
            print(f"| {t['depth'] - 1} | {len(t['tasks'])} | {ratio:.3f}x | "
                  f"{t['loss_before']:.3f} -> {t['loss_after']:.3f} | {'; '.join(cells)} |")
PY
