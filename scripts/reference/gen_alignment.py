"""Reference fixture for sub-token label alignment and text encoding.

Runs `transformers`' fast tokenizer of all-MiniLM-L6-v2 (assets/all-MiniLM-L6-v2) and the label alignment of
`examples/pytorch/token-classification/run_ner.py` (`tokenize_and_align_labels`, `b_to_i_label`) copied below,
and writes crates/data/tests/fixtures/alignment.json. Run with the torch venv:

    /work/main/.venv-torch/bin/python scripts/reference/gen_alignment.py
"""
import importlib.metadata as md
import json
import os

from transformers import AutoTokenizer

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
MODEL = os.path.join(ROOT, "assets", "all-MiniLM-L6-v2")
OUT = os.path.join(ROOT, "crates", "data", "tests", "fixtures", "alignment.json")

LABEL_LIST = ["B-geo-loc", "B-misc", "B-person", "I-geo-loc", "I-person", "O"]

SENTENCES = [
    ("@paulwalk It 's the view from where I 'm living for two weeks .", "O O O O O O O O O O O O O O"),
    ("Empire State Building = ESB . Pretty bad storm here last evening .", "B-geo-loc I-geo-loc I-geo-loc O B-misc O O O O O O O O"),
    ("Zürich and São Paulo are far from Kraków", "B-geo-loc O B-geo-loc I-geo-loc O O O B-geo-loc"),
    ("北京 is 中国的首都", "B-geo-loc O B-geo-loc"),
    ("naïve Beyoncé 😀 met Jean-Luc Picard", "O B-person O O B-person I-person"),
    ("Supercalifragilisticexpialidocious antidisestablishmentarianism", "B-misc O"),
    ("x" * 120 + " is a very long word", "B-misc O O O O O"),
    ("U.S.A. don't #hashtag http://t.co/abc", "B-geo-loc O B-misc O"),
    ("Hello \u200b world", "O B-misc O"),
    ("ÉCOLE Normale Supérieure in PARIS", "B-misc I-person I-person O B-geo-loc"),
    ("Ｆｕｌｌｗｉｄｔｈ text and tab\tinside", "B-misc O O O"),
    ("Mary-Kate Olsen visited New York City yesterday evening with friends", "B-person I-person O B-geo-loc I-geo-loc I-geo-loc O O O O"),
]

PAIRS = [
    ("The movie was great!", None),
    ("Zürich 北京 naïve 😀", "Second segment is here, and longer than the first one."),
    ("A rather long first segment that keeps going and going for a while.", "short"),
    ("", "only a pair"),
    ("x" * 120, None),
]


def b_to_i(label_list):
    out = []
    for idx, label in enumerate(label_list):
        if label.startswith("B-") and label.replace("B-", "I-") in label_list:
            out.append(label_list.index(label.replace("B-", "I-")))
        else:
            out.append(idx)
    return out


def tokenize_and_align_labels(tokenizer, words, tags, label_all_tokens, max_length):
    # run_ner.py, one sentence at a time (padding=False).
    label_to_id = {l: i for i, l in enumerate(LABEL_LIST)}
    b_to_i_label = b_to_i(LABEL_LIST)
    kw = dict(truncation=True, max_length=max_length) if max_length else {}
    enc = tokenizer([words], is_split_into_words=True, **kw)
    word_ids = enc.word_ids(batch_index=0)
    previous_word_idx = None
    label_ids = []
    for word_idx in word_ids:
        if word_idx is None:
            label_ids.append(-100)
        elif word_idx != previous_word_idx:
            label_ids.append(label_to_id[tags[word_idx]])
        else:
            if label_all_tokens:
                label_ids.append(b_to_i_label[label_to_id[tags[word_idx]]])
            else:
                label_ids.append(-100)
        previous_word_idx = word_idx
    return enc["input_ids"][0], word_ids, label_ids


def main():
    tok = AutoTokenizer.from_pretrained(MODEL)
    ner = []
    for k, (text, tags) in enumerate(SENTENCES):
        words = text.split(" ")
        tags = tags.split(" ")
        assert len(words) == len(tags), text
        for label_all_tokens in (False, True):
            for max_length in (None, 8, 12):
                ids, word_ids, labels = tokenize_and_align_labels(tok, words, tags, label_all_tokens, max_length)
                ner.append({
                    "id": f"s{k}-all{int(label_all_tokens)}-max{max_length}",
                    "words": words,
                    "tags": tags,
                    "label_all_tokens": label_all_tokens,
                    "max_length": max_length,
                    "input_ids": ids,
                    "word_ids": word_ids,
                    "labels": labels,
                })
    seq = []
    for k, (a, b) in enumerate(PAIRS):
        for max_length in (None, 6, 16):
            kw = dict(truncation=True, max_length=max_length) if max_length else {}
            enc = tok(a, b, **kw) if b is not None else tok(a, **kw)
            seq.append({
                "id": f"p{k}-max{max_length}",
                "text": a,
                "pair": b,
                "max_length": max_length,
                "input_ids": enc["input_ids"],
                "token_type_ids": enc["token_type_ids"],
                "attention_mask": enc["attention_mask"],
            })
    doc = {
        "generator": "scripts/reference/gen_alignment.py",
        "reference": "transformers run_ner.py tokenize_and_align_labels; tokenizer(text, pair, truncation=True)",
        "versions": {p: md.version(p) for p in ("transformers", "tokenizers")},
        "tokenizer": "all-MiniLM-L6-v2",
        "pad_token_id": tok.pad_token_id,
        "label_list": LABEL_LIST,
        "ner": ner,
        "seq": seq,
    }
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(ner)} alignment and {len(seq)} encoding cases to {OUT}")


if __name__ == "__main__":
    main()
