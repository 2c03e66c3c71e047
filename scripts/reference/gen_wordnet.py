"""Writes crates/data/tests/fixtures/wordnet_synonyms.json: for each word, the synonyms EDA's `get_synonyms` takes
from `nltk.corpus.wordnet` (NLTK's reader and morphy over the same WordNet 3.0 files), for
crates/data/tests/augment.rs.

Run with the metrics reference venv (scripts/reference/setup.sh metrics; nltk 3.9.2):
    .venv-ref/bin/python scripts/reference/gen_wordnet.py
Needs assets/wordnet (scripts/fetch.sh wordnet: Debian's wordnet-base 3.0-37) and
assets/data/sentiment/movie_reviews.csv (scripts/fetch-datasets.sh). The words: every distinct word of the first
300 movie reviews after EDA's cleaning, plus inflected forms that exercise the exception lists and suffix rules.

`get_synonyms` is EDA's (github.com/jasonwei20/eda_nlp, code/eda.py), with the set sorted so the fixture is
stable, and names left without a letter dropped (finetune never picks an empty synonym).
"""

import csv
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import nltk
from nltk.corpus.reader.wordnet import WordNetCorpusReader

ROOT = Path(__file__).resolve().parents[2]
WN = ROOT / "assets" / "wordnet"
REVIEWS = ROOT / "assets" / "data" / "sentiment" / "movie_reviews.csv"
OUT = ROOT / "crates" / "data" / "tests" / "fixtures" / "wordnet_synonyms.json"

EXTRA = [
    "geese", "mice", "went", "better", "best", "running", "dogs", "boxes", "churches", "wolves", "women",
    "flies", "studied", "making", "stopped", "happier", "biggest", "larger", "ate", "children", "axes",
    "fastest", "oxen", "leaves", "saw", "lying", "ran", "quickly", "well", "hardest",
]


def get_only_chars(line):
    clean_line = ""
    line = line.replace("'", "").replace("-", " ").replace("\t", " ").replace("\n", " ").lower()
    for char in line:
        clean_line += char if char in "qwertyuiopasdfghjklzxcvbnm " else " "
    clean_line = re.sub(" +", " ", clean_line)
    return clean_line.lstrip(" ")


def get_synonyms(wordnet, word):
    synonyms = set()
    for syn in wordnet.synsets(word):
        for l in syn.lemmas():
            synonym = l.name().replace("_", " ").replace("-", " ").lower()
            synonym = "".join([char for char in synonym if char in " qwertyuiopasdfghjklzxcvbnm"])
            synonyms.add(synonym)
    if word in synonyms:
        synonyms.remove(word)
    return sorted(s for s in synonyms if s.strip())


class Reader(WordNetCorpusReader):
    # The mapping to other WordNet versions serves the multilingual data only (not loaded here); NLTK would look
    # for its own downloaded copy of WordNet to build it.
    def map_wn(self, version="wordnet"):
        return None


def main():
    # NLTK's reader also wants `lexnames` (lexicographer file names, unused for synonyms), which Debian keeps in
    # another package: a copy of the folder with a placeholder one.
    tmp = tempfile.mkdtemp()
    try:
        for f in os.listdir(WN):
            if not f.startswith("."):
                shutil.copy(WN / f, Path(tmp) / f)
        with open(Path(tmp) / "lexnames", "w") as fp:
            for i in range(45):
                fp.write(f"{i:02d}\tlex{i}\t0\n")
        wordnet = Reader(tmp, None)
        words = []
        with open(REVIEWS, newline="", encoding="utf-8") as fp:
            for i, row in enumerate(csv.DictReader(fp)):
                if i >= 300:
                    break
                words.extend(w for w in get_only_chars(row["text"]).split(" ") if w)
        words = sorted(set(words) | set(EXTRA))
        out = {
            "nltk": nltk.__version__,
            "wordnet": "3.0 (Debian wordnet-base 3.0-37)",
            "synonyms": {w: get_synonyms(wordnet, w) for w in words},
        }
    finally:
        shutil.rmtree(tmp)
    OUT.write_text(json.dumps(out, indent=0, sort_keys=True) + "\n")
    n = sum(1 for v in out["synonyms"].values() if v)
    print(f"wrote {OUT}: {len(words)} words, {n} with synonyms")


if __name__ == "__main__":
    main()
