"""Reference fixtures for ROUGE: rouge-score 0.1.2 (`rouge_score.rouge_scorer.RougeScorer`) and NLTK 3.9.2's
Porter stemmer as rouge-score uses it.

Writes crates/metrics/tests/fixtures/rouge.json. Besides the `cases`, the file holds `porter`: a word list
and `PorterStemmer().stem(word)` for each word (words drawn from the installed reference packages' own source
and docs, plus seeded synthetic words built from stems and suffixes), checked by tests/rouge.rs.

Metrics:
  rouge_score.score        RougeScorer(rouge_types, use_stemmer, split_summaries).score(target, prediction)
  rouge_score.score_multi  RougeScorer(...).score_multi(targets, prediction)
  rouge_score.mean         per rouge type, the mean over pairs of precision / recall / fmeasure of
                           score_multi(targets_i, prediction_i) (a plain string target is [target]), i.e. HF
                           evaluate's rouge with use_aggregator=False, averaged: sum(...) / len(...).
"""
import glob
import json
import os
import random
import re

from nltk.stem import porter
from rouge_score import rouge_scorer

from refcommon import Cases, FIXTURES

ALL_TYPES = ["rouge1", "rouge2", "rouge3", "rouge4", "rouge9", "rougeL", "rougeLsum"]


def scores_dict(d):
    return {k: {"precision": v.precision, "recall": v.recall, "fmeasure": v.fmeasure} for k, v in d.items()}


def score(rouge_types, target, prediction, use_stemmer=False, split_summaries=False):
    s = rouge_scorer.RougeScorer(rouge_types, use_stemmer=use_stemmer, split_summaries=split_summaries)
    return scores_dict(s.score(target, prediction))


def score_multi(rouge_types, targets, prediction, use_stemmer=False, split_summaries=False):
    s = rouge_scorer.RougeScorer(rouge_types, use_stemmer=use_stemmer, split_summaries=split_summaries)
    return scores_dict(s.score_multi(targets, prediction))


def mean(rouge_types, targets, predictions, use_stemmer=False, split_summaries=False):
    s = rouge_scorer.RougeScorer(rouge_types, use_stemmer=use_stemmer, split_summaries=split_summaries)
    if len(targets) != len(predictions):
        raise ValueError("targets and predictions have different lengths")
    per = [s.score_multi([t] if isinstance(t, str) else t, p) for t, p in zip(targets, predictions)]
    out = {}
    for k in rouge_types:
        out[k] = {f: sum(getattr(x[k], f) for x in per) / len(per) for f in ("precision", "recall", "fmeasure")}
    return out


VOCAB = ("the cat sat on a mat dog dogs running runs ran quickly quick fox jumped jumps over lazy "
         "relational generalization happiness happy 42 2024 caresses ponies agreed hopping filing "
         "national nationally sky skies dying news innings").split()
PUNCT = [",", ".", "!", "?", " -", ";", "'s", " (x)", "\n"]


def rand_text(rng, max_words=14, newline_p=0.1):
    n = rng.randint(0, max_words)
    words = []
    for _ in range(n):
        w = rng.choice(VOCAB)
        r = rng.random()
        if r < 0.15:
            w = w.capitalize()
        elif r < 0.2:
            w = w.upper()
        words.append(w)
        if rng.random() < 0.15:
            words.append(rng.choice(PUNCT))
        if rng.random() < newline_p:
            words.append("\n")
    return " ".join(words)


def porter_words(rng):
    site = os.path.dirname(os.path.dirname(porter.__file__))
    words = set()
    for pattern in ["nltk/**/*.py", "rouge_score/*.py", "sacrebleu/**/*.py", "sklearn/metrics/*.py"]:
        for path in glob.glob(os.path.join(site, "..", pattern), recursive=True):
            with open(path, encoding="utf-8", errors="ignore") as f:
                words.update(re.findall(r"[a-z]+", f.read().lower()))
    words = sorted(w for w in words if 2 <= len(w) <= 20)
    picked = rng.sample(words, min(3500, len(words)))
    stems = ["rel", "gener", "hop", "fil", "conflat", "troubl", "siz", "nation", "condit", "valen", "digit",
             "radic", "differ", "vil", "analog", "vietnam", "predic", "oper", "feud", "decis", "hope", "callous",
             "formal", "sensit", "sensib", "triplic", "electr", "good", "reviv", "allow", "infer", "airlin",
             "gyroscop", "adjust", "defens", "irrit", "replac", "depend", "adopt", "homolog", "commun", "activ",
             "angular", "effect", "bowdler", "prob", "rat", "ceas", "controll", "roll", "sky", "tr", "by", "y",
             "yy", "ay", "sy", "bee", "agr", "fe", "pl", "spy", "fly", "happ", "enjoy", "ful", "log", "ana"]
    suffixes = ["", "s", "es", "ies", "sses", "ss", "ed", "eed", "ied", "ing", "ly", "y", "ational", "tional",
                "enci", "anci", "izer", "bli", "abli", "alli", "entli", "eli", "ousli", "ization", "ation", "ator",
                "alism", "iveness", "fulness", "ousness", "aliti", "iviti", "biliti", "fulli", "logi", "icate",
                "ative", "alize", "iciti", "ical", "ful", "ness", "al", "ance", "ence", "er", "ic", "able", "ible",
                "ant", "ement", "ment", "ent", "sion", "tion", "ion", "ou", "ism", "ate", "iti", "ous", "ive",
                "ize", "e", "ll", "lled", "lling", "ying", "yed", "ated", "bled", "ized", "alliance", "allied"]
    synth = sorted({s + x for s in stems for x in suffixes})
    picked += rng.sample(synth, 1500)
    picked += ["sky", "skies", "dying", "lying", "tying", "news", "innings", "inning", "outings", "outing",
               "cannings", "canning", "howe", "proceed", "exceed", "succeed", "ies", "ied", "tied", "dies",
               "eed", "feed", "ss", "s", "a", "is", "yyy", "syzygy", "toy", "1234s", "2ing", "abc1ed"]
    return list(dict.fromkeys(picked))


def main():
    rng = random.Random(20240501)
    c = Cases("rouge", "scripts/reference/gen_rouge.py", ["rouge-score", "nltk", "numpy"])
    S, M, A = "rouge_score.score", "rouge_score.score_multi", "rouge_score.mean"

    hand = [
        ("empty_both", "", ""),
        ("empty_target", "", "the cat sat"),
        ("empty_prediction", "the cat sat", ""),
        ("identical", "The quick brown fox jumps over the lazy dog", "The quick brown fox jumps over the lazy dog"),
        ("no_overlap", "alpha beta gamma", "delta epsilon zeta"),
        ("example", "The quick brown fox jumps over the lazy dog", "The quick brown dog jumps on the log."),
        ("punct_only", "!!! ... ???", "--- ,,, ;;;"),
        ("punct_vs_words", "!!!", "hello"),
        ("unicode", "Café naïve résumé ÜBER straße 東京 タワー", "cafe naive resume uber strasse"),
        ("dotted_i", "İstanbul İİ", "i stanbul i"),
        ("kelvin", "\u212aelvin 5\u212a", "kelvin 5k"),
        ("greek_sigma", "ΟΔΟΣ οδος", "odos"),
        ("digits", "In 2024 there were 42 cats and 7 dogs", "there were 42 dogs in 2024"),
        ("repeated", "the the the the cat", "the the cat cat cat"),
        ("lines", "first line here\nsecond line there\n\nthird", "second line here\nfirst line there"),
        ("lines_only_newlines", "\n\n\n", "\n"),
        ("lines_punct_sentences", "!!!\n???", "a b\n..."),
        ("crlf", "one two\r\nthree four", "one two\nthree four"),
        ("tabs", "one\ttwo\tthree", "one two three"),
        ("stemming", "The runners were running quickly to the relational generalizations",
         "A runner runs quick; relation generalization happily"),
        ("pool", "skies dying lying tying news innings outings cannings howe proceed exceed succeed",
         "sky die lie tie news inning outing canning howe proceed exceed succeed"),
        ("long_tokens", "a" * 300 + " bb", "a" * 300),
        ("apostrophes", "don't can't won't it's", "don t can t won t it s"),
        ("underscore", "snake_case_name foo-bar", "snake case name foo bar"),
        ("single_token", "word", "word"),
        ("lsum_dupes", "a b a b\na b", "b a\na b a"),
    ]
    for stem in (False, True):
        for cid, t, p in hand:
            c.add(f"{cid}_stem{int(stem)}", S, score,
                  dict(rouge_types=ALL_TYPES, use_stemmer=stem, target=t, prediction=p))

    for i in range(110):
        types = rng.sample(ALL_TYPES + ["rouge5", "rouge6", "rouge7", "rouge8"], rng.randint(1, 5))
        if rng.random() < 0.2:
            types = ["rougeLsum"]
        c.add(f"random_{i}", S, score,
              dict(rouge_types=types, use_stemmer=rng.random() < 0.5, target=rand_text(rng),
                   prediction=rand_text(rng)))

    # Long texts, and tiny vocabularies with many lines (many equal-length LCS choices in rougeLsum).
    for i in range(8):
        c.add(f"long_{i}", S, score,
              dict(rouge_types=ALL_TYPES, use_stemmer=i % 2 == 1, target=rand_text(rng, 400, 0.05),
                   prediction=rand_text(rng, 400, 0.05)))
    for i in range(25):
        small = ["a", "b", "c", "a b", "b a"]
        mk = lambda: "\n".join(" ".join(rng.choice(small) for _ in range(rng.randint(0, 5)))
                                for _ in range(rng.randint(1, 5)))
        c.add(f"lsum_ties_{i}", S, score, dict(rouge_types=["rougeLsum", "rougeL", "rouge2"], target=mk(),
                                                prediction=mk()))

    # split_summaries only changes rougeLsum, which is not supported with it; other types are unaffected.
    c.add("split_summaries_no_lsum", S, score,
          dict(rouge_types=["rouge1", "rouge2", "rougeL"], use_stemmer=False, split_summaries=True,
               target="A cat. A dog.", prediction="A dog. The cat."))
    c.add("no_types", S, score, dict(rouge_types=[], target="a b", prediction="a b"))
    c.add("duplicate_types", S, score, dict(rouge_types=["rouge1", "rouge1", "rougeL"], target="a b c",
                                           prediction="a c"))
    for bad in ["rouge0", "rouge10", "rougeX", "rougel", "ROUGE1", "rouge", "rougeLSum", "", "rouge2\n", "rouge0\n", "rouge2\n\n"]:
        c.add(f"type_{bad.replace(chr(10), 'NL') or 'empty'}", S, score, dict(rouge_types=["rouge1", bad], target="a b",
                                                                 prediction="a b"))

    c.add("multi_empty_targets", M, score_multi, dict(rouge_types=["rouge1"], targets=[], prediction="a b"))
    c.add("multi_empty_targets_no_types", M, score_multi, dict(rouge_types=[], targets=[], prediction="a b"))
    c.add("multi_tie", M, score_multi, dict(rouge_types=ALL_TYPES, targets=["a b x", "a b y", "a b"],
                                           prediction="a b z"))
    c.add("multi_empty_strings", M, score_multi, dict(rouge_types=ALL_TYPES, targets=["", "", ""], prediction=""))
    for i in range(40):
        targets = [rand_text(rng) for _ in range(rng.randint(1, 4))]
        c.add(f"multi_random_{i}", M, score_multi,
              dict(rouge_types=rng.sample(ALL_TYPES, rng.randint(1, 4)), use_stemmer=rng.random() < 0.5,
                   targets=targets, prediction=rand_text(rng)))

    c.add("mean_empty", A, mean, dict(rouge_types=["rouge1"], targets=[], predictions=[]))
    c.add("mean_length_mismatch", A, mean, dict(rouge_types=["rouge1"], targets=["a"], predictions=[]))
    for i in range(15):
        n = rng.randint(1, 12)
        targets = [rand_text(rng) if rng.random() < 0.6 else [rand_text(rng) for _ in range(rng.randint(1, 3))]
                   for _ in range(n)]
        c.add(f"mean_random_{i}", A, mean,
              dict(rouge_types=rng.sample(ALL_TYPES, rng.randint(1, 4)), use_stemmer=rng.random() < 0.5,
                   targets=targets, predictions=[rand_text(rng) for _ in range(n)]))

    c.write()

    # The stemmer word list, appended to the same fixture file.
    words = porter_words(rng)
    stemmer = porter.PorterStemmer()
    path = os.path.join(FIXTURES, "rouge.json")
    with open(path) as f:
        data = json.load(f)
    data["porter"] = {"words": words, "stems": [stemmer.stem(w) for w in words]}
    with open(path, "w") as f:
        json.dump(data, f, indent=1, allow_nan=False)
        f.write("\n")
    print(f"porter: {len(words)} words")


if __name__ == "__main__":
    main()
