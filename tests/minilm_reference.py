"""Independent NumPy implementation of BERT mean-pooled sentence embeddings.

Reads the safetensors file directly (its own parser: 8-byte header length,
JSON header, raw little-endian data), runs every sentence at its true length
(no padding, no mask — so mgen's masking is checked too) in float64, and
compares with mgen's `--dump-outputs` array.

usage: minilm_reference.py MODEL.safetensors CONFIG.json INPUTS.jsonl MGEN.npy [TOL]
Exits 1 when the max-abs-diff exceeds TOL (default 1e-4).

       minilm_reference.py MODEL.safetensors CONFIG.json INPUTS.jsonl --write OUT.npy
writes the reference embeddings (float64, [sentences, hidden]) instead. The
test suite reads the committed tests/fixtures/minilm-reference.npy, so it
needs no Python; regenerate that file with

    python3 tests/minilm_reference.py weights/all-minilm-l6-v2/model.safetensors \
        weights/all-minilm-l6-v2/config.json examples/data/minilm-sentences.jsonl \
        --write tests/fixtures/minilm-reference.npy
"""
import json
import math
import struct
import sys

import numpy as np


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    dtypes = {"F32": np.float32, "F16": np.float16}
    out = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] not in dtypes:
            continue  # e.g. the I64 `embeddings.position_ids` buffer
        a, b = info["data_offsets"]
        arr = np.frombuffer(data[base + a : base + b], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
        out[name[5:] if name.startswith("bert.") else name] = arr.astype(np.float64)
    return out


def erf(x):
    return np.vectorize(math.erf)(x)


def layernorm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def encode(w, cfg, ids):
    h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    dh = h // heads
    eps = cfg["layer_norm_eps"]
    s = len(ids)
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:s] + w["embeddings.token_type_embeddings.weight"][0]
    x = layernorm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    lin = lambda x, p: x @ w[p + ".weight"].T + w[p + ".bias"]
    for l in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{l}."
        q = lin(x, p + "attention.self.query").reshape(s, heads, dh).transpose(1, 0, 2)
        k = lin(x, p + "attention.self.key").reshape(s, heads, dh).transpose(1, 0, 2)
        v = lin(x, p + "attention.self.value").reshape(s, heads, dh).transpose(1, 0, 2)
        sc = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
        sc = np.exp(sc - sc.max(-1, keepdims=True))
        sc /= sc.sum(-1, keepdims=True)
        ctx = (sc @ v).transpose(1, 0, 2).reshape(s, h)
        x = layernorm(lin(ctx, p + "attention.output.dense") + x, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
        f = lin(x, p + "intermediate.dense")
        f = 0.5 * f * (1.0 + erf(f / math.sqrt(2.0)))
        x = layernorm(lin(f, p + "output.dense") + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
    return x.mean(0)


def main():
    model, config, inputs, mgen_npy = sys.argv[1:5]
    w = load_safetensors(model)
    cfg = json.load(open(config))
    rows = [json.loads(l) for l in open(inputs) if l.strip()]
    ref = np.stack([encode(w, cfg, r["ids"]) for r in rows])
    if mgen_npy == "--write":
        np.save(sys.argv[5], ref.astype(np.float64))
        print(f"wrote {sys.argv[5]}: {ref.shape[0]} sentences x {ref.shape[1]} (float64)")
        return
    tol = float(sys.argv[5]) if len(sys.argv) > 5 else 1e-4
    got = np.load(mgen_npy).astype(np.float64)
    if got.shape != ref.shape:
        print(f"shape mismatch: mgen {got.shape}, reference {ref.shape}")
        sys.exit(1)
    diff = np.abs(got - ref).max()
    print(f"max-abs-diff {diff:.3e} over {ref.shape[0]} sentences x {ref.shape[1]} (tolerance {tol:.0e})")
    sys.exit(0 if diff <= tol else 1)


if __name__ == "__main__":
    main()
