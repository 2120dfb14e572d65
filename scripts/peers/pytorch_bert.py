"""PyTorch f32 peer for mgen's benches: one BERT-base request at seq 128.

Prints one line, `pytorch_ms <median>`, the median of several timed runs of
Hugging Face's BertModel (random weights, eval mode, no grad, f32) with the
thread count of `--threads`. Used by scripts/bench-peers.sh; not run in CI.
"""
import argparse
import statistics
import time

import torch
from transformers import BertConfig, BertModel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--seq", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(7)
    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
        hidden_act="gelu",
    )
    model = BertModel(cfg, add_pooling_layer=False).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, args.seq))
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        for _ in range(2):
            model(input_ids=ids, attention_mask=mask)
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            model(input_ids=ids, attention_mask=mask)
            times.append(time.perf_counter() - t)
    print(f"pytorch_ms {statistics.median(times) * 1e3:.2f}")


if __name__ == "__main__":
    main()
