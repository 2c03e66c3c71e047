"""Reference fixtures for the QA metrics of HF evaluate 0.4.6: `squad` and `exact_match`.

The evaluate package does not ship metric scripts and the hub is not reachable here, so the scripts are
vendored from the public huggingface/evaluate repository under scripts/reference/vendor/ (see the header of
each file for the source revision) and loaded with `evaluate.load(<local script directory>)`, so every value
is computed by evaluate 0.4.6 running the reference code (offline: HF_EVALUATE_OFFLINE / HF_HUB_OFFLINE).

Writes crates/metrics/tests/fixtures/qa.json.
"""
import os
import random

os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import evaluate  # noqa: E402

from refcommon import Cases  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SQUAD = evaluate.load(os.path.join(HERE, "vendor", "squad"))
EXACT = evaluate.load(os.path.join(HERE, "vendor", "exact_match"))


def squad(predictions, references):
    return SQUAD.compute(predictions=predictions, references=references)


def exact_match(**kw):
    return EXACT.compute(**kw)


def ref(i, texts):
    return {"id": str(i), "answers": {"text": texts, "answer_start": [0] * len(texts)}}


def pred(i, text):
    return {"id": str(i), "prediction_text": text}


WORDS = ("the a an The A AN cat Cat dog 1976 Denver Broncos Carolina Panthers Saint Bernadette Soubirous "
         "theater another apple an_apple école Ünïcödé 東京 don't U.S. ( ) , . ! ? - the's").split()


def rand_answer(rng, n=6):
    words = [rng.choice(WORDS) for _ in range(rng.randint(0, n))]
    seps = [" ", "  ", "\t", "\n", ", ", "-", " "]
    out = ""
    for w in words:
        out += w + rng.choice(seps)
    return out.strip() if rng.random() < 0.7 else out


def main():
    rng = random.Random(7)
    c = Cases("qa", "scripts/reference/gen_qa.py", ["evaluate", "numpy", "datasets"])

    pairs = [
        ("exact", "1976", ["1976"]),
        ("case_punct", "Denver Broncos!", ["denver broncos"]),
        ("articles", "The Denver Broncos", ["Denver Broncos", "the broncos"]),
        ("articles_only_pred", "the", ["a"]),
        ("articles_only_both", "The a an", ["an"]),
        ("articles_only_vs_word", "the", ["cat"]),
        ("empty_pred", "", ["cat"]),
        ("empty_gold", "cat", [""]),
        ("empty_both", "", [""]),
        ("punct_only", "?!...", ["---"]),
        ("partial", "Saint Bernadette", ["Saint Bernadette Soubirous"]),
        ("repeated", "cat cat cat", ["cat dog cat"]),
        ("unicode", "École Ünïcödé 東京", ["école ünïcödé 東京"]),
        ("article_in_word", "theater another anthem", ["theater, another anthem"]),
        ("article_underscore", "the_cat a_b", ["the cat"]),
        ("apostrophe", "don't", ["dont"]),
        ("whitespace", "  cat \t\n dog \u3000 bird\x1c fish ", ["cat dog bird fish"]),
        ("nbsp", "cat\u00a0dog", ["cat dog"]),
        ("combining_mark", "the\u0301 cat", ["cat"]),
        ("final_sigma", "ΟΔΟΣ", ["οδος"]),
        ("dotted_i", "İstanbul", ["istanbul"]),
        ("many_golds", "blue", ["red", "green", "blue sky", "blue"]),
        ("no_overlap", "alpha beta", ["gamma delta"]),
    ]
    for cid, p, golds in pairs:
        c.add(f"squad_{cid}", "squad", squad, dict(predictions=[pred(0, p)], references=[ref(0, golds)]))

    c.add("squad_empty", "squad", squad, dict(predictions=[], references=[]))
    c.add("squad_no_golds", "squad", squad, dict(predictions=[pred(0, "x")], references=[ref(0, [])]))
    c.add("squad_missing_id", "squad", squad,
          dict(predictions=[pred(0, "cat"), pred(5, "dog")], references=[ref(0, ["cat"]), ref(1, ["dog"])]))
    c.add("squad_duplicate_pred_id", "squad", squad,
          dict(predictions=[pred(0, "cat"), pred(0, "dog")], references=[ref(0, ["dog"]), ref(1, ["x"])]))
    c.add("squad_length_mismatch", "squad", squad, dict(predictions=[pred(0, "a")], references=[]))
    for i in range(60):
        n = rng.randint(1, 10)
        ids = list(range(n))
        rng.shuffle(ids)
        c.add(f"squad_random_{i}", "squad", squad,
              dict(predictions=[pred(j, rand_answer(rng)) for j in ids],
                   references=[ref(j, [rand_answer(rng) for _ in range(rng.randint(1, 3))]) for j in range(n)]))

    refs = ["the cat", "theater", "YELLING", "agent007"]
    preds = ["cat?", "theater", "yelling", "agent"]
    E = "exact_match"
    c.add("em_doc1", E, exact_match, dict(predictions=preds, references=refs))
    c.add("em_doc2", E, exact_match, dict(predictions=preds, references=refs, regexes_to_ignore=["the ", "yell"],
                                          ignore_case=True, ignore_punctuation=True))
    c.add("em_doc3", E, exact_match, dict(predictions=preds, references=refs,
                                          regexes_to_ignore=["the ", "yell", "YELL"], ignore_case=True,
                                          ignore_punctuation=True))
    c.add("em_doc4", E, exact_match, dict(predictions=preds, references=refs,
                                          regexes_to_ignore=["the ", "yell", "YELL"], ignore_case=True,
                                          ignore_punctuation=True, ignore_numbers=True))
    c.add("em_empty", E, exact_match, dict(predictions=[], references=[]))
    c.add("em_length_mismatch", E, exact_match, dict(predictions=["a"], references=[]))
    c.add("em_empty_strings", E, exact_match, dict(predictions=["", "a"], references=["", ""]))
    c.add("em_unicode_case", E, exact_match, dict(predictions=["ΟΔΟΣ", "École", "STRASSE"],
                                                  references=["οδος", "école", "straße"], ignore_case=True))
    c.add("em_punct_only", E, exact_match, dict(predictions=["?!", "..."], references=["", "-"],
                                                ignore_punctuation=True))
    c.add("em_numbers", E, exact_match, dict(predictions=["agent007", "٣cat"], references=["agent", "cat"],
                                             ignore_numbers=True))
    c.add("em_regex_classes", E, exact_match, dict(predictions=["a1 b2  c3", "x-y"], references=["abc", "xy"],
                                                   regexes_to_ignore=[r"\d", r"\s+", "[-]"]))
    c.add("em_regex_none", E, exact_match, dict(predictions=["a"], references=["a"], regexes_to_ignore=None))
    c.add("em_regex_empty_list", E, exact_match, dict(predictions=["a "], references=["a"], regexes_to_ignore=[]))
    c.add("em_trailing_nul", E, exact_match, dict(predictions=["a\x00", "b\x00\x00"], references=["a", "b"]))
    c.add("em_whitespace_kept", E, exact_match, dict(predictions=["a ", " a"], references=["a", "a"],
                                                     ignore_case=True, ignore_punctuation=True))
    for i in range(50):
        n = rng.randint(1, 10)
        kw = dict(predictions=[rand_answer(rng, 3) for _ in range(n)],
                  references=[rand_answer(rng, 3) for _ in range(n)],
                  ignore_case=rng.random() < 0.5, ignore_punctuation=rng.random() < 0.5,
                  ignore_numbers=rng.random() < 0.3)
        if rng.random() < 0.3:
            kw["regexes_to_ignore"] = rng.sample(["the ", r"\s+", "[0-9]", "^a ", r"\bdog\b", "(?i)cat"],
                                                 rng.randint(1, 3))
        c.add(f"em_random_{i}", E, exact_match, kw)
    c.write()


if __name__ == "__main__":
    main()
