#!/usr/bin/env bash
# Build small, real supervised fine-tuning (SFT) and continued-pretraining tasks for decoder models from the
# datasets that scripts/fetch-datasets.sh puts in assets/data/, into assets/data/sft/.
#
# Python standard library only. Deterministic (seeded shuffle, SEED below), idempotent (a file is rewritten only
# when its content changes) and atomic (each file is written to a temporary name and renamed). Split sizes are
# fixed and small enough to fine-tune a 135M-parameter model on a 2-core CPU.
#
#   email_subject.{train,validation,test}.jsonl     {"prompt", "completion"}  SpamAssassin ham e-mails
#       prompt     = INSTRUCTION + the e-mail body + "\n\nSubject:\n"; the body is the text after the subject
#                    line, with quoted lines (starting with ">") removed, runs of blank lines squeezed and
#                    trailing whitespace stripped, cut to BODY_CHARS characters (at a word boundary, "..." added).
#       completion = the real subject with reply/forward prefixes ("Re:", "RE:", "Fwd:", "Fw:", "Re[2]:") and
#                    mailing-list tags ("[SAtalk]", "[zzzzteana]") removed wherever they lead, repeatedly,
#                    since neither can be inferred from the body. Dropped: e-mails whose cleaned subject or
#                    body is empty, and duplicates (same cleaned body, or same body and subject).
#   review_sentiment.{train,validation,test}.jsonl  {"prompt", "completion"}  VADER movie reviews
#       prompt     = INSTRUCTION + review + "\n\nSentiment:\n"; completion = "positive" or "negative".
#       Duplicate reviews dropped.
#   tweet_entities.{train,validation,test}.jsonl    {"prompt", "completion"}  WNUT-16 tweets
#       prompt     = INSTRUCTION + the tokens joined by single spaces + "\n\nEntities:\n"; completion = one line
#                    "type: text" per entity in order of appearance (BIO tags; an I- tag without a matching
#                    B- starts a new entity, as seqeval does), or "none". Duplicate tweets dropped. The training
#                    split is balanced: every tweet with entities and as many "none" tweets.
#   movie_reviews_text.{train,validation}.jsonl     {"text"}  VADER movie reviews for continued pretraining,
#       disjoint from review_sentiment's validation and test reviews.
#
# Usage: scripts/make-sft-tasks.sh   (PYTHON=python3 by default)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"

"$PY" - "$ROOT/assets/data" <<'PYEOF'
import csv
import json
import os
import random
import re
import sys
import tempfile
from pathlib import Path

SEED = 20261123
BODY_CHARS = 800
SIZES = {  # (train, validation, test); train takes what is left, up to its size
    "email_subject": (2500, 200, 200),
    "review_sentiment": (3000, 200, 200),
    "tweet_entities": (2000, 200, 200),
}
TEXT_SIZES = (4000, 200)

data = Path(sys.argv[1])
out_dir = data / "sft"
out_dir.mkdir(parents=True, exist_ok=True)


def write_jsonl(name, rows):
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    path = out_dir / name
    if path.exists() and path.read_bytes() == body:
        return "unchanged"
    fd, tmp = tempfile.mkstemp(prefix="." + name + ".", dir=out_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return "written"


def split(task, rows):
    """Seeded shuffle, then validation and test from the front and train from the rest."""
    rows = list(rows)
    random.Random(f"{SEED}:{task}").shuffle(rows)
    n_train, n_val, n_test = SIZES[task]
    if len(rows) < n_val + n_test + 1:
        sys.exit(f"error: {task}: only {len(rows)} examples")
    val, test, train = rows[:n_val], rows[n_val:n_val + n_test], rows[n_val + n_test:][:n_train]
    return {"train": train, "validation": val, "test": test}, len(rows)


def report(task, parts, available):
    counts = []
    for name, rows in parts.items():
        state = write_jsonl(f"{task}.{name}.jsonl", rows)
        counts.append(f"{name}={len(rows)}")
        if state == "written":
            print(f"  wrote {out_dir / (task + '.' + name + '.jsonl')}")
    print(f"{task}: {' '.join(counts)} (from {available} usable examples)")


# ---- (1) e-mail subjects ------------------------------------------------------------------------------------
PREFIX = re.compile(r"^\s*(?:(?:re|fwd?|fw)\s*(?:\[\d+\])?\s*:|\[[^\]]*\])\s*", re.IGNORECASE)


def clean_subject(s):
    s = " ".join(s.split())
    while True:
        t = PREFIX.sub("", s, count=1)
        if t == s:
            return s.strip()
        s = t


def clean_body(text):
    lines = [ln.rstrip() for ln in text.split("\n") if not ln.lstrip().startswith(">")]
    body = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    if len(body) > BODY_CHARS:
        cut = body[:BODY_CHARS]
        space = cut.rfind(" ")
        body = (cut[:space] if space > BODY_CHARS // 2 else cut).rstrip() + " ..."
    return body


EMAIL_INSTRUCTION = "Write the subject line of this e-mail.\n\nE-mail:\n"
emails, seen_body, seen_pair = [], set(), set()
with open(data / "spam" / "spam_assassin.jsonl", encoding="utf-8") as f:
    for line in f:
        r = json.loads(line)
        if r["label"] != "ham":
            continue
        subject = clean_subject(r["subject"])
        raw_body = r["text"].split("\n", 1)[1] if "\n" in r["text"] else ""
        body = clean_body(raw_body)
        if not subject or not body:
            continue
        key = " ".join(body.split())
        if key in seen_body or (key, subject) in seen_pair:
            continue
        seen_body.add(key)
        seen_pair.add((key, subject))
        emails.append({"prompt": EMAIL_INSTRUCTION + body + "\n\nSubject:\n", "completion": subject})
report("email_subject", *split("email_subject", emails))

# ---- (2) review sentiment and (4) review text ------------------------------------------------------------
SENT_INSTRUCTION = "Is the sentiment of this movie review positive or negative?\n\nReview:\n"
reviews, seen = [], set()
with open(data / "sentiment" / "movie_reviews.csv", encoding="utf-8", newline="") as f:
    for row in csv.DictReader(f):
        text = " ".join(row["text"].split())
        if not text or text in seen or row["label"] not in ("positive", "negative"):
            continue
        seen.add(text)
        reviews.append((text, row["label"]))
parts, available = split("review_sentiment", reviews)
report(
    "review_sentiment",
    {k: [{"prompt": SENT_INSTRUCTION + t + "\n\nSentiment:\n", "completion": y} for t, y in v] for k, v in parts.items()},
    available,
)
held_out = {t for t, _ in parts["validation"] + parts["test"]}
texts = [t for t, _ in reviews if t not in held_out]
random.Random(f"{SEED}:movie_reviews_text").shuffle(texts)
n_train, n_val = TEXT_SIZES
report(
    "movie_reviews_text",
    {"train": [{"text": t} for t in texts[n_val:n_val + n_train]], "validation": [{"text": t} for t in texts[:n_val]]},
    len(texts),
)

# ---- (3) tweet entities -----------------------------------------------------------------------------------
ENT_INSTRUCTION = (
    "List the named entities in this tweet, one per line as \"type: text\" (types: company, facility, geo-loc, "
    "movie, musicartist, other, person, product, sportsteam, tvshow), or \"none\".\n\nTweet:\n"
)


def entities(tokens, tags):
    spans, cur = [], None
    for tok, tag in zip(tokens, tags):
        if tag.startswith("B-") or (tag.startswith("I-") and (cur is None or cur[0] != tag[2:])):
            cur = [tag[2:], [tok]]
            spans.append(cur)
        elif tag.startswith("I-"):
            cur[1].append(tok)
        else:
            cur = None
    return [f"{t}: {' '.join(ws)}" for t, ws in spans]


tweets, seen, tokens, tags = [], set(), [], []


def flush():
    if tokens:
        text = " ".join(tokens)
        if text not in seen:
            seen.add(text)
            ents = entities(tokens, tags)
            tweets.append({"prompt": ENT_INSTRUCTION + text + "\n\nEntities:\n", "completion": "\n".join(ents) or "none"})
    tokens.clear()
    tags.clear()


with open(data / "ner" / "wnut16.conll", encoding="utf-8") as f:
    for line in f:
        line = line.rstrip("\n")
        if not line.strip():
            flush()
            continue
        tok, tag = line.rsplit("\t", 1)
        tokens.append(tok)
        tags.append(tag.strip())
flush()
parts, available = split("tweet_entities", tweets)
# Most tweets have no entity: trained on them as they come, a small model learns to answer "none" to everything.
# The training split keeps every tweet with entities and as many "none" tweets (the first ones of the seeded
# shuffle); validation and test keep the real mix.
n_ents = sum(r["completion"] != "none" for r in parts["train"])
kept_none = 0
balanced = []
for r in parts["train"]:
    if r["completion"] == "none":
        if kept_none == n_ents:
            continue
        kept_none += 1
    balanced.append(r)
parts["train"] = balanced
report("tweet_entities", parts, available)
PYEOF
