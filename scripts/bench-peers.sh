#!/usr/bin/env bash
# mgen's float engine and simulator against PyTorch f32 on the same
# BERT-base request (seq 128, random weights), in one run on this machine.
#
#   scripts/bench-peers.sh            # 2 threads (the CI machine's cores)
#   THREADS=4 scripts/bench-peers.sh
#
# Installs PyTorch and transformers into a virtualenv ($MGEN_PEERS_VENV,
# default .venv-peers, git-ignored; PyPI's torch wheel is large) and then
# alternates PyTorch and mgen's benches three times, printing each ratio
# against the PyTorch median measured beside it: the machine is shared and
# noisy, so only ratios measured in one window mean anything. Not run in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${MGEN_PEERS_VENV:-.venv-peers}
threads=${THREADS:-2}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet torch transformers
fi
export RAYON_NUM_THREADS=$threads
cargo bench --no-run --bench reference --bench simulator >/dev/null 2>&1
ms() { awk -v k="$1" 'index($0, k) { for (i = 1; i <= NF; i++) if ($i == "ms" || $i ~ /^ms/) { print $(i-1); exit } }'; }
for round in 1 2 3; do
  torch=$("$venv/bin/python" scripts/peers/pytorch_bert.py --threads "$threads" | awk '{print $2}')
  ref=$(cargo bench --bench reference 2>/dev/null | ms "reference executor")
  sim=$(cargo bench --bench simulator 2>/dev/null | ms "bit-sliced ADC model")
  torch2=$("$venv/bin/python" scripts/peers/pytorch_bert.py --threads "$threads" | awk '{print $2}')
  awk -v r="$round" -v t1="$torch" -v t2="$torch2" -v ref="$ref" -v sim="$sim" -v th="$threads" 'BEGIN {
    t = (t1 + t2) / 2
    printf "round %d, %d threads: PyTorch f32 %.1f ms (%.1f, %.1f) | reference %.1f ms = %.2fx | simulator %.1f ms = %.2fx\n", r, th, t, t1, t2, ref, ref / t, sim, sim / t
  }'
done
