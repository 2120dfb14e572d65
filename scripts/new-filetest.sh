#!/usr/bin/env bash
# Writes a per-pass file test, tests/filetests/PASS/NAME.mir (docs/ir.md §10):
# the RUN line, the comment lines read from stdin, the canonical spec of
# SPEC.mgen, and the graph lowered from it (after PREP passes, default
# `none`), with every origin pointing at the .mir's own header. Hand-edit the
# graph if the case needs it, then bless its .out:
#   BLESS=1 cargo test --release --test filetests PASS/NAME
#
# usage: scripts/new-filetest.sh PASS NAME 'RUN ARGS' SPEC.mgen [PREP] < comments
# e.g.:  echo '// merge: ...' | scripts/new-filetest.sh merge twins 'compile %s --passes merge' twins.mgen
set -euo pipefail
[ $# -ge 4 ] || { sed -n 2,10p "$0"; exit 2; }
pass=$1 name=$2 run=$3 prep=${5:-none}
spec=$(realpath "$4")
cd "$(dirname "$0")/.."
cargo build --release --quiet
mgen=target/release/mgen
comments=$(cat)
base=tests/filetests/$pass/$name
mkdir -p "tests/filetests/$pass"
# The .mgen the graph is lowered from has the .mir's header, line for line,
# so its origins are right for the .mir once renamed.
header=$("$mgen" compile "$spec" --passes none | sed -n '2,/^graph /p' | sed '$d')
printf '// RUN: %s\n%s\n%s\n' "$run" "$comments" "$header" > "$base.mgen"
trap 'rm -f "$base.mgen"' EXIT
graph=$("$mgen" compile "$base.mgen" --passes "$prep" | sed -n '/^graph /,$p')
printf '%s\n' "$(cat "$base.mgen")" "${graph//"$name.mgen:"/"$name.mir:"}" > "$base.mir"
echo "wrote $base.mir"
