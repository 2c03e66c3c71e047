"""Reference fixtures for the generation metrics (sacrebleu 2.6.0: BLEU, chrF, TER).

Writes crates/metrics/tests/fixtures/generation.json (metric cases, plus tokenizer cases checked directly)
and crates/metrics/src/generation/tables.rs (the `regex` module's \\p{P}, \\p{S}, \\p{N} classes used by the
"intl" tokenizer, so that the Rust tokenizer agrees with the reference's Unicode version).

Run: /work/main/.venv-ref/bin/python scripts/reference/gen_generation.py
"""
import os
import random
import sys

import regex
import sacrebleu
from sacrebleu.metrics import BLEU, CHRF, TER
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
from sacrebleu.tokenizers.tokenizer_intl import TokenizerV14International
from sacrebleu.tokenizers.tokenizer_zh import TokenizerZh
from sacrebleu.tokenizers.tokenizer_char import TokenizerChar
from sacrebleu.tokenizers.tokenizer_ter import TercomTokenizer

sys.path.insert(0, os.path.dirname(__file__))
from refcommon import Cases  # noqa: E402

HERE = os.path.dirname(__file__)
TABLES = os.path.join(HERE, "..", "..", "crates", "metrics", "src", "generation", "tables.rs")


# ---------------------------------------------------------------------------------------------------------------
# The functions under test: sacrebleu's compat API for the numbers, plus the equivalent metric object for the
# signature (the compat functions do not return it).

def bleu_dict(score, metric):
    return {
        "score": score.score,
        "counts": list(score.counts),
        "totals": list(score.totals),
        "precisions": list(score.precisions),
        "bp": score.bp,
        "sys_len": score.sys_len,
        "ref_len": score.ref_len,
        "signature": metric.get_signature().format(),
        "str": str(score),
    }


def chrf_dict(score, metric):
    return {
        "score": score.score,
        "char_order": score.char_order,
        "word_order": score.word_order,
        "beta": score.beta,
        "signature": metric.get_signature().format(),
        "str": str(score),
    }


def ter_dict(score, metric):
    return {
        "score": score.score,
        "num_edits": score.num_edits,
        "ref_length": score.ref_length,
        "signature": metric.get_signature().format(),
        "str": str(score),
    }


def _bleu_metric(smooth_method="exp", smooth_value=None, force=False, lowercase=False, tokenize="13a",
                 use_effective_order=False):
    return BLEU(lowercase=lowercase, force=force, tokenize=tokenize, smooth_method=smooth_method,
                smooth_value=smooth_value, effective_order=use_effective_order)


def corpus_bleu(**kw):
    score = sacrebleu.corpus_bleu(**kw)
    kw = dict(kw)
    hyps, refs = kw.pop("hypotheses"), kw.pop("references")
    metric = _bleu_metric(**kw)
    again = metric.corpus_score(hyps, refs)
    assert again.score == score.score
    return bleu_dict(score, metric)


def sentence_bleu(**kw):
    score = sacrebleu.sentence_bleu(**kw)
    kw = dict(kw)
    hyp, refs = kw.pop("hypothesis"), kw.pop("references")
    kw.setdefault("use_effective_order", True)
    metric = _bleu_metric(**kw)
    again = metric.sentence_score(hyp, refs)
    assert again.score == score.score
    return bleu_dict(score, metric)


def _chrf_metric(char_order=6, word_order=0, beta=2, remove_whitespace=True, eps_smoothing=False):
    return CHRF(char_order=char_order, word_order=word_order, beta=beta, whitespace=not remove_whitespace,
                eps_smoothing=eps_smoothing)


def corpus_chrf(**kw):
    score = sacrebleu.corpus_chrf(**kw)
    kw = dict(kw)
    hyps, refs = kw.pop("hypotheses"), kw.pop("references")
    metric = _chrf_metric(**kw)
    metric.corpus_score(hyps, refs)
    return chrf_dict(score, metric)


def sentence_chrf(**kw):
    score = sacrebleu.sentence_chrf(**kw)
    kw = dict(kw)
    hyp, refs = kw.pop("hypothesis"), kw.pop("references")
    metric = _chrf_metric(**kw)
    metric.sentence_score(hyp, refs)
    return chrf_dict(score, metric)


def corpus_ter(**kw):
    score = sacrebleu.corpus_ter(**kw)
    kw = dict(kw)
    hyps, refs = kw.pop("hypotheses"), kw.pop("references")
    metric = TER(**kw)
    metric.corpus_score(hyps, refs)
    return ter_dict(score, metric)


def sentence_ter(**kw):
    score = sacrebleu.sentence_ter(**kw)
    kw = dict(kw)
    hyp, refs = kw.pop("hypothesis"), kw.pop("references")
    metric = TER(**kw)
    metric.sentence_score(hyp, refs)
    return ter_dict(score, metric)


def class_call(cls, method, to_dict):
    """`cls(**constructor keywords).method(hypotheses or hypothesis, references[, n_bootstrap])`."""
    def call(**kw):
        kw = dict(kw)
        if method == "corpus_score":
            data = {"hypotheses": kw.pop("hypotheses"), "references": kw.pop("references")}
            if "n_bootstrap" in kw:
                data["n_bootstrap"] = kw.pop("n_bootstrap")
        else:
            data = {"hypothesis": kw.pop("hypothesis"), "references": kw.pop("references")}
        metric = cls(**kw)
        return to_dict(getattr(metric, method)(**data), metric)
    return call


FUNCS = {
    "BLEU.corpus_score": class_call(BLEU, "corpus_score", bleu_dict),
    "BLEU.sentence_score": class_call(BLEU, "sentence_score", bleu_dict),
    "CHRF.corpus_score": class_call(CHRF, "corpus_score", chrf_dict),
    "CHRF.sentence_score": class_call(CHRF, "sentence_score", chrf_dict),
    "corpus_bleu": corpus_bleu,
    "sentence_bleu": sentence_bleu,
    "corpus_chrf": corpus_chrf,
    "sentence_chrf": sentence_chrf,
    "corpus_ter": corpus_ter,
    "sentence_ter": sentence_ter,
}

# ---------------------------------------------------------------------------------------------------------------
# Inputs

VOCAB = ["the", "cat", "sat", "on", "mat", "a", "dog", "The", "Dog", "ran", "quickly", "home", "to", "and",
         "1,000", "3.14", "2-3", "1990.", "it's", "don't", ",", ".", "!", "?", "(x)", "\"quote\"", "&amp;",
         "&quot;", "&lt;tag&gt;", "e.g.", "U.S.A.", "--", "$5", "50%", "über", "Ärger", "naïve"]
UNICODE = ["我们", "爱", "中国", "。", "，", "日本語", "カタカナ", "ひらがな", "한국어", "مرحبا", "العالم",
           "😀", "👍🏽", "e\u0301", "ﬁ", "İstanbul", "ΣΊΣΥΦΟΣ", "straße", "\u00a0", "…", "«", "»", "—",
           "１２３", "！", "（", "）", "\u3000", "٣", "½", "²", "€", "©", "™", "±", "\u200b"]


def rand_sent(rng, vocab, lo=0, hi=15):
    return " ".join(rng.choice(vocab) for _ in range(rng.randint(lo, hi)))


def perturb(rng, sent, vocab):
    words = sent.split()
    out = []
    for w in words:
        r = rng.random()
        if r < 0.15:
            continue
        if r < 0.3:
            out.append(rng.choice(vocab))
        else:
            out.append(w)
        if rng.random() < 0.1:
            out.append(rng.choice(vocab))
    if len(out) > 2 and rng.random() < 0.4:  # a block move, so TER finds shifts
        i = rng.randrange(len(out))
        j = rng.randrange(len(out))
        k = min(len(out), i + rng.randint(1, 4))
        block = out[i:k]
        del out[i:k]
        out[j:j] = block
    return " ".join(out)


def corpus(rng, n, vocab, n_refs=1, lo=0, hi=15):
    refs = [[] for _ in range(n_refs)]
    hyps = []
    for _ in range(n):
        base = rand_sent(rng, vocab, lo, hi)
        hyps.append(perturb(rng, base, vocab))
        for r in refs:
            r.append(perturb(rng, base, vocab) if rng.random() < 0.7 else base)
    return hyps, refs


ADVERSARIAL_PAIRS = [
    ("", ""),
    ("", "the cat"),
    ("the cat", ""),
    ("   ", "  "),
    ("the cat sat on the mat", "the cat sat on the mat"),
    ("the the the the the the the", "the cat"),
    ("cat", "the cat sat on the mat and the dog ran home"),
    ("the cat sat on the mat and the dog ran home quickly to the mat", "cat"),
    ("a b c d", "d c b a"),
    ("Hello, world! How's it going? (Fine.) [ok] {yes} <no> a/b a\\b ~x~ `tick` 'q' \"dq\" #1 $2 %3 ^4 &5 *6 +7 =8 |9 @10",
     "hello , world ! how's it going ?"),
    ("1,000,000 people paid $3.50 on 2020-01-01.", "1,000,000 people paid $ 3.50 on 2020 - 01 - 01 ."),
    ("3.14, 2.71. 1-2 a-b a.b a,b 5.", "3.14 , 2.71 . 1 - 2 a-b a . b"),
    ("end with period .", "end with period."),
    ("&quot;quoted&quot; &amp; &lt;b&gt; <skipped> line-\nbreak\nnext", "\"quoted\" & <b> linebreak next"),
    ("我们爱中国。你好，世界！", "我们 爱 中国 。 你好 ， 世界 ！"),
    ("日本語のテキストです。カタカナとひらがな", "日本語 の テキスト です 。"),
    ("한국어 문장입니다.", "한국어 문장 입니다 ."),
    ("مرحبا بالعالم، كيف حالك؟", "مرحبا بالعالم , كيف حالك ؟"),
    ("emoji 😀 👍🏽 test 🎉🎉", "emoji 😀 test 🎉"),
    ("cafe\u0301 na\u0308ive", "café naïve"),
    ("ΣΊΣΥΦΟΣ ΟΔΟΣ İstanbul STRASSE straße", "σίσυφος οδος istanbul strasse"),
    ("tab\tseparated\nnew line\r\nwin \u00a0nbsp\u2003em\u3000ideo", "tab separated new line win nbsp em ideo"),
    ("ＦＵＬＬ　ｗｉｄｔｈ（１２３）！", "full width ( 123 ) !"),
    ("…«»—–‘’“”‹›„‚", "... << >> - -"),
    ("x²+y²=z² ½ € © ™ ± § ¶ • °C", "x2 + y2 = z2"),
    ("Dr. Smith's cat's toys aren't J.R.R.'s.", "dr smith 's cat 's toys are n't"),
    ("$$$ %%% ### !!! ??? ... ,,, ;;; :::", "$ % # ! ? . , ; :"),
    ("a" * 50, "a" * 50),
    ("1.2.3.4 5,6,7 8-9-10 -11 12- .13 14.", "1.2.3.4 5,6,7"),
    ("CAPS Lower MiXeD", "caps lower mixed"),
    ("\u0660\u0661\u0662.\u0663 ١٬٢ ۱.۲", "٠١٢.٣"),
    ("﹐﹑︰︱ 【】〔〕", "【 】"),
    ("\x1c\x1d\x1e\x1fsep\x85nel\u2028ls", "sep nel ls"),
]

TOKENIZER_STRINGS = [s for pair in ADVERSARIAL_PAIRS for s in pair] + [
    " leading and trailing ",
    "a.b,c.d 1.a a.1 1,a a,1 .5 5. ,5 5,",
    "x-1 1-x 1-1 --1 1--",
    "{}[]()<>~`!@#$%^&*_+=|\\/:;\"'?",
    "'s test's 's",
    "\n-hyphen\n- a-\nb",
    "\u3001\u3002\u3008\u3011\u3014\u301f\uff61\uff65\u30fb\uff0e\uff0c\uff1f\uff1a\uff1b\uff01\uff02\uff08\uff09",
    "㈠㈱㍿㏿豈\ufaff︰﹏㇀㇯⺀⻿ 丁鿿㐀䶿 \u3f22\u3f23",
    "ひらがなカタカナㇰㇱ mixed ひらがな",
    "\u2000\u2001\u2a6d\u2a6e\u2f80\u2f81\u2fa1\u2fa2 \U00020000\U0002a6d6\U0002f800",
    "\u9fa5\u9fa6\u9fbb\u9fbc\u4db5\u4db6\ufa2d\ufa2e\ufad9\ufada",
    "ΟΔΟΣ ΑΣ. ΑΣ' ΑΣ\u0301 Σ ΑΣΑ 'Σ' aΣ1 ΑΣ\u0897 Σ\u0897Α ΑΣ\U00016EA0 \U00016EA0ΣΑ İI\u0130\u1C89\uA7CB",
]


def unicode_sample(rng):
    """Strings that put each of many code points between letters and digits, for the intl/zh tokenizers."""
    out = []
    cps = list(range(0x20, 0x3000)) + list(range(0x3000, 0x3400, 3)) + list(range(0xA000, 0x10000, 7)) \
        + list(range(0x10000, 0x20000, 23)) + list(range(0x1F000, 0x1FB00)) + list(range(0x20000, 0x30000, 101)) \
        + [0xE0001, 0xE0020, 0xE007F, 0xF0000, 0x10FFFD]
    cps = [c for c in cps if not 0xD800 <= c <= 0xDFFF]
    chunk = []
    for c in cps:
        ch = chr(c)
        chunk.append(rng.choice(["a", "1", " ", ".", ""]) + ch + rng.choice(["b", "2", " ", ",", ""]))
        if len(chunk) == 200:
            out.append("".join(chunk))
            chunk = []
    if chunk:
        out.append("".join(chunk))
    return out


def tokenizer_cases(rng):
    toks = {
        "13a": Tokenizer13a(),
        "intl": TokenizerV14International(),
        "zh": TokenizerZh(),
        "char": TokenizerChar(),
    }
    strings = TOKENIZER_STRINGS + unicode_sample(rng) + [rand_sent(rng, VOCAB + UNICODE, 1, 30) for _ in range(40)]
    cases = []
    for name, tok in toks.items():
        for s in strings:
            cases.append({"tokenize": name, "input": s, "output": tok(s)})
    for norm in (False, True):
        for punct in (False, True):
            for asian in (False, True):
                for case in (False, True):
                    tok = TercomTokenizer(normalized=norm, no_punct=punct, asian_support=asian, case_sensitive=case)
                    for s in TOKENIZER_STRINGS:
                        cases.append({"tokenize": "tercom", "normalized": norm, "no_punct": punct,
                                      "asian_support": asian, "case_sensitive": case, "input": s,
                                      "output": tok(s)})
    return cases


def write_tables():
    """The intl tokenizer's classes, taken from the `regex` module the reference uses."""
    classes = {"P": regex.compile(r"\p{P}"), "S": regex.compile(r"\p{S}"), "N": regex.compile(r"\p{N}")}
    lines = [
        "//! Unicode classes of the `regex` Python module (version %s) used by sacrebleu's \"intl\" tokenizer:"
        % regex.__version__,
        "//! `\\p{P}`, `\\p{S}` and `\\p{N}` as sorted inclusive code point ranges, and the Python `str.lower()`",
        "//! properties of its final-sigma rule.",
        "//! Generated by scripts/reference/gen_generation.py; do not edit.",
        "",
    ]
    for name, pat in classes.items():
        ranges = []
        start = None
        for cp in range(0x110001):
            inside = cp < 0x110000 and not (0xD800 <= cp <= 0xDFFF) and pat.match(chr(cp)) is not None
            if inside and start is None:
                start = cp
            elif not inside and start is not None:
                ranges.append((start, cp - 1))
                start = None
        body = "\n".join("    (0x%X, 0x%X)," % r for r in ranges)
        lines.append("pub(crate) const %s: &[(u32, u32)] = &[\n%s\n];\n" % (name, body))
    # Python's final-sigma rule in str.lower() skips Case_Ignorable characters and then tests Cased; neither
    # property is exposed, so both are read off lower() itself (Python 3.11 uses Unicode 14).
    def ranges_of(pred):
        out, start = [], None
        for cp in range(0x110001):
            inside = cp < 0x110000 and not (0xD800 <= cp <= 0xDFFF) and pred(chr(cp))
            if inside and start is None:
                start = cp
            elif not inside and start is not None:
                out.append((start, cp - 1))
                start = None
        return out

    def cased_not_ignorable(c):
        return (c + "\u03a3").lower()[-1] == "\u03c2"

    def case_ignorable(c):
        return ("A" + c + "\u03a3").lower()[-1] == "\u03c2" and not cased_not_ignorable(c)

    lines.append("/// Python `str.lower()`: characters skipped by the final-sigma rule (Case_Ignorable).")
    body = "\n".join("    (0x%X, 0x%X)," % r for r in ranges_of(case_ignorable))
    lines.append("pub(crate) const CASE_IGNORABLE: &[(u32, u32)] = &[\n%s\n];\n" % body)
    lines.append("/// Python `str.lower()`: Cased characters that are not Case_Ignorable.")
    body = "\n".join("    (0x%X, 0x%X)," % r for r in ranges_of(cased_not_ignorable))
    lines.append("pub(crate) const CASED: &[(u32, u32)] = &[\n%s\n];\n" % body)
    with open(TABLES, "w") as f:
        f.write("\n".join(lines))
    print(f"{TABLES}: written")


def main():
    rng = random.Random(20260)
    c = Cases("generation", "scripts/reference/gen_generation.py", ["sacrebleu", "regex"])

    def add(case_id, metric, args):
        c.add(case_id, metric, FUNCS[metric], args)

    # --- BLEU, corpus level: random corpora over all options
    for tok in ["13a", "intl", "char", "none", "zh"]:
        for smooth, sval in [("exp", None), ("floor", None), ("floor", 0.5), ("add-k", None), ("add-k", 2),
                             ("add-k", 0.5), ("none", None)]:
            for lc in (False, True):
                for eff in (False, True):
                    if rng.random() < 0.5:
                        continue
                    vocab = VOCAB + (UNICODE if tok in ("zh", "intl", "char") else [])
                    hyps, refs = corpus(rng, rng.randint(1, 12), vocab, rng.choice([1, 1, 2, 3]), 0, 12)
                    args = {"hypotheses": hyps, "references": refs, "smooth_method": smooth, "tokenize": tok,
                            "lowercase": lc, "use_effective_order": eff}
                    if sval is not None:
                        args["smooth_value"] = sval
                    add(f"bleu_rand_{tok}_{smooth}_{sval}_{lc}_{eff}", "corpus_bleu", args)
    for i in range(25):
        hyps, refs = corpus(rng, rng.randint(1, 40), VOCAB, rng.randint(1, 4), 0, 30)
        add(f"bleu_rand_default_{i}", "corpus_bleu", {"hypotheses": hyps, "references": refs})
    # short hypotheses: zero matches at higher orders, with every smoothing
    for smooth in ["exp", "floor", "add-k", "none"]:
        for eff in (False, True):
            for i, (h, r) in enumerate([("the cat", "the cat sat"), ("cat the dog", "the cat dog"),
                                        ("a b c", "a x b y c"), ("x y z", "a b c"),
                                        ("the cat sat", "the cat sat on"), ("a", "a")]):
                add(f"bleu_zero_{smooth}_{eff}_{i}", "corpus_bleu",
                    {"hypotheses": [h], "references": [[r]], "smooth_method": smooth, "use_effective_order": eff})
                add(f"sbleu_zero_{smooth}_{eff}_{i}", "sentence_bleu",
                    {"hypothesis": h, "references": [r], "smooth_method": smooth, "use_effective_order": eff})
    # adversarial pairs, all tokenizers
    for i, (h, r) in enumerate(ADVERSARIAL_PAIRS):
        for tok in ["13a", "intl", "char", "none", "zh"]:
            add(f"sbleu_adv_{i}_{tok}", "sentence_bleu", {"hypothesis": h, "references": [r], "tokenize": tok})
        add(f"sbleu_adv_{i}_lc", "sentence_bleu", {"hypothesis": h, "references": [r, h[::-1]], "lowercase": True})
        add(f"bleu_adv_{i}", "corpus_bleu", {"hypotheses": [h, r], "references": [[r, h]]})
    # sentence level random
    for i in range(40):
        base = rand_sent(rng, VOCAB, 1, 20)
        refs = [perturb(rng, base, VOCAB) for _ in range(rng.randint(1, 3))]
        args = {"hypothesis": perturb(rng, base, VOCAB), "references": refs,
                "smooth_method": rng.choice(["exp", "floor", "add-k", "none"]),
                "tokenize": rng.choice(["13a", "intl", "char", "none", "zh"]), "lowercase": rng.random() < 0.3,
                "use_effective_order": rng.random() < 0.7}
        if rng.random() < 0.3:
            args["smooth_value"] = rng.choice([0.01, 0.2, 1, 3])
        add(f"sbleu_rand_{i}", "sentence_bleu", args)
    # corpus BLEU edge cases
    long_h = rand_sent(rng, VOCAB, 400, 400)
    long_r = perturb(rng, long_h, VOCAB)
    edge = {
        "all_empty": ([""], [[""]]),
        "all_empty3": (["", "", ""], [["", "", ""]]),
        "empty_hyp": ([""], [["the cat"]]),
        "empty_ref": (["the cat"], [[""]]),
        "long": ([long_h], [[long_r]]),
        "multi_ref_closest_tie": (["a b c d"], [["a b c", "a b c d e"]]),
        "multi_ref_closest": (["a b c d"], [["a b", "a b c d e f", "x y z w v"]]),
        "longer_hyp": (["the cat sat on the mat today"], [["the cat sat"]]),
        "shorter_hyp": (["the cat"], [["the cat sat on the mat today"]]),
        "var_refs_none": (["the cat sat", "a dog ran", "hello"], [["the cat sat", "a dog", "hi"],
                                                                  [None, "dog ran", None]]),
        "var_refs_empty": (["the cat sat", "a dog ran"], [["the cat", ""], ["", "the dog ran"]]),
        "no_refs_empty_hyp": ([""], [[None]]),
        "no_refs_hyp": (["the cat"], [[None]]),
        "mismatch_short_hyps": (["a b"], [["a b", "c d"]]),
        "mismatch_short_refs": (["a b", "c d"], [["a b"]]),
        "mismatch_ref_streams": (["a b", "c d"], [["a b", "c d"], ["a b"]]),
        "empty_lists": ([], [[]]),
        "empty_refs": (["a"], []),
        "empty_ref_stream": (["a"], [[]]),
        "none_hyp": (["a", None], [["a", "b"]]),
        "first_hyp_none": ([None], [["a"]]),
        "ref_not_str": (["a"], [[1]]),
        "many_period": (["word ."] * 120, [["word."] * 120]),
    }
    for name, (h, r) in edge.items():
        add(f"bleu_edge_{name}", "corpus_bleu", {"hypotheses": h, "references": r})
        add(f"chrf_edge_{name}", "corpus_chrf", {"hypotheses": h, "references": r})
        add(f"ter_edge_{name}", "corpus_ter", {"hypotheses": h, "references": r})
    for name, (h, r) in {"empty_refs": ("a", []), "none_ref": ("a", [None]), "none_refs": ("", [None, None]),
                         "none_and_str": ("a b", [None, "a b"]), "hyp_not_str": (None, ["a"]),
                         "int_ref": ("a", [3])}.items():
        for m in ["sentence_bleu", "sentence_chrf", "sentence_ter"]:
            add(f"{m}_edge_{name}", m, {"hypothesis": h, "references": r})
    add("bleu_bad_tokenizer", "corpus_bleu", {"hypotheses": ["a"], "references": [["a"]], "tokenize": "nope"})
    add("bleu_bad_kwarg", "corpus_bleu", {"hypotheses": ["a"], "references": [["a"]], "beta": 3})
    add("sbleu_bad_kwarg", "sentence_bleu", {"hypothesis": "a", "references": ["a"], "force": True})
    add("chrf_bad_kwarg", "corpus_chrf", {"hypotheses": ["a"], "references": [["a"]], "lowercase": True})
    add("ter_bad_kwarg", "corpus_ter", {"hypotheses": ["a"], "references": [["a"]], "tokenize": "13a"})
    # Flags are tested for truthiness; TER's signature shows `normalized` / `asian_support` as given.
    add("sbleu_eff_none", "sentence_bleu", {"hypothesis": "a b c d", "references": ["a b c"], "use_effective_order": None})
    add("bleu_tok_none", "corpus_bleu", {"hypotheses": ["a b, c"], "references": [["a b c"]], "tokenize": None,
                                         "lowercase": None, "smooth_value": None})
    add("schrf_ws_none", "sentence_chrf", {"hypothesis": "a b c", "references": ["a bc"], "remove_whitespace": None,
                                           "eps_smoothing": None})
    add("ster_flags_none", "sentence_ter", {"hypothesis": "A b. c", "references": ["a b c"], "normalized": None,
                                            "asian_support": None, "no_punct": None, "case_sensitive": None})
    add("ster_flags_int", "sentence_ter", {"hypothesis": "A b. c", "references": ["a b c"], "normalized": 1,
                                           "asian_support": 0, "no_punct": 1, "case_sensitive": 0})
    add("ster_flags_str", "corpus_ter", {"hypotheses": ["A b. c"], "references": [["a b c"]], "normalized": "yes",
                                         "asian_support": ""})
    add("bleu_force", "corpus_bleu", {"hypotheses": ["a b ."], "references": [["a b."]], "force": True})

    # --- chrF
    for i in range(60):
        vocab = VOCAB + (UNICODE if i % 3 == 0 else [])
        hyps, refs = corpus(rng, rng.randint(1, 10), vocab, rng.choice([1, 1, 2, 3]), 0, 12)
        args = {"hypotheses": hyps, "references": refs}
        if i % 6:
            args.update({"char_order": rng.choice([1, 2, 4, 6, 6, 8]), "word_order": rng.choice([0, 0, 1, 2, 2, 3]),
                         "beta": rng.choice([1, 2, 2, 3, 0]), "remove_whitespace": rng.random() < 0.7,
                         "eps_smoothing": rng.random() < 0.4})
        add(f"chrf_rand_{i}", "corpus_chrf", args)
    for i, (h, r) in enumerate(ADVERSARIAL_PAIRS):
        add(f"schrf_adv_{i}", "sentence_chrf", {"hypothesis": h, "references": [r]})
        add(f"schrf_adv_pp_{i}", "sentence_chrf", {"hypothesis": h, "references": [r, h[: len(h) // 2]],
                                                   "word_order": 2, "eps_smoothing": i % 2 == 0})
        add(f"schrf_adv_ws_{i}", "sentence_chrf", {"hypothesis": h, "references": [r], "remove_whitespace": False,
                                                   "char_order": 3})
        add(f"chrf_adv_{i}", "corpus_chrf", {"hypotheses": [h, r], "references": [[r, h]], "word_order": 2})
    for i in range(30):
        base = rand_sent(rng, VOCAB + UNICODE, 0, 15)
        add(f"schrf_rand_{i}", "sentence_chrf",
            {"hypothesis": perturb(rng, base, VOCAB), "references": [perturb(rng, base, VOCAB)
                                                                     for _ in range(rng.randint(1, 3))],
             "word_order": rng.choice([0, 2]), "eps_smoothing": rng.random() < 0.5})
    add("chrf_punct_words", "corpus_chrf", {"hypotheses": ["(hi) a. .b , x! !x ?? a.b"],
                                            "references": [["hi) a .b , x ! x ?? a.b"]], "word_order": 2})

    # --- TER
    for i in range(50):
        vocab = VOCAB + (UNICODE if i % 4 == 0 else [])
        hyps, refs = corpus(rng, rng.randint(1, 8), vocab, rng.choice([1, 1, 2, 3]), 0, 20)
        args = {"hypotheses": hyps, "references": refs}
        if i % 5:
            args.update({"normalized": rng.random() < 0.5, "no_punct": rng.random() < 0.4,
                         "asian_support": rng.random() < 0.4, "case_sensitive": rng.random() < 0.5})
        add(f"ter_rand_{i}", "corpus_ter", args)
    for i, (h, r) in enumerate(ADVERSARIAL_PAIRS):
        add(f"ster_adv_{i}", "sentence_ter", {"hypothesis": h, "references": [r]})
        add(f"ster_adv_all_{i}", "sentence_ter", {"hypothesis": h, "references": [r, h[::-1]], "normalized": True,
                                                  "no_punct": True, "asian_support": True})
        add(f"ster_adv_norm_{i}", "sentence_ter", {"hypothesis": h, "references": [r], "normalized": True,
                                                   "case_sensitive": True})
        add(f"ster_adv_asian_{i}", "sentence_ter", {"hypothesis": h, "references": [r], "normalized": True,
                                                    "asian_support": True})
    # shifts: block moves, long sentences (beyond max shift distance), many candidates, long ratio beams
    words = [f"w{k}" for k in range(12)]
    for i in range(25):
        n = rng.choice([5, 10, 20, 40, 60, 80])
        ref = [rng.choice(words) for _ in range(n)]
        hyp = list(ref)
        for _ in range(rng.randint(1, 4)):
            a = rng.randrange(n)
            b = min(n, a + rng.randint(1, 12))
            block = hyp[a:b]
            del hyp[a:b]
            t = rng.randrange(len(hyp) + 1)
            hyp[t:t] = block
        if rng.random() < 0.5:
            hyp = [w if rng.random() > 0.1 else "zz" for w in hyp]
        add(f"ster_shift_{i}", "sentence_ter", {"hypothesis": " ".join(hyp), "references": [" ".join(ref)]})
    add("ster_repeat", "sentence_ter", {"hypothesis": " ".join(["a b"] * 60), "references": [" ".join(["b a"] * 60)]})
    add("ster_repeat2", "sentence_ter", {"hypothesis": " ".join(["a a b"] * 40),
                                         "references": [" ".join(["b a a c"] * 30)]})
    add("ster_ratio_long_ref", "sentence_ter", {"hypothesis": "a b", "references": [" ".join(["a", "b", "c"] * 40)]})
    add("ster_ratio_long_hyp", "sentence_ter", {"hypothesis": " ".join(["a", "b", "c"] * 40), "references": ["c a"]})
    add("ster_far_shift", "sentence_ter", {"hypothesis": " ".join([f"x{k}" for k in range(70)] + ["m1 m2 m3"]),
                                           "references": [" ".join(["m1 m2 m3"] + [f"x{k}" for k in range(70)])]})
    add("ster_big_block", "sentence_ter", {"hypothesis": " ".join([f"y{k}" for k in range(15)] + ["q"] * 5),
                                           "references": [" ".join(["q"] * 5 + [f"y{k}" for k in range(15)])]})

    # --- random long corpora for all three (speed-sized inputs are benchmarked elsewhere)
    hyps, refs = corpus(rng, 300, VOCAB + UNICODE, 2, 0, 40)
    add("bleu_big", "corpus_bleu", {"hypotheses": hyps, "references": refs})
    add("bleu_big_intl", "corpus_bleu", {"hypotheses": hyps, "references": refs, "tokenize": "intl"})
    add("chrf_big", "corpus_chrf", {"hypotheses": hyps, "references": refs})
    add("chrfpp_big", "corpus_chrf", {"hypotheses": hyps, "references": refs, "word_order": 2})
    add("ter_big", "corpus_ter", {"hypotheses": hyps[:100], "references": [r[:100] for r in refs]})

    class_cases(add)

    c.tokenizer_cases = tokenizer_cases(rng)
    write_tables()
    write(c)


def class_cases(add):
    """The metric classes with their own keywords: BLEU(max_ngram_order=..., effective_order=..., trg_lang=...),
    CHRF(lowercase=..., whitespace=...). A separate random stream keeps the earlier cases as they were."""
    rng = random.Random(20261)
    # --- BLEU: n-gram orders 0..8 with every smoothing and effective order, corpus and sentence level
    for order in range(0, 9):
        for smooth, sval in [("exp", None), ("floor", None), ("floor", 0.3), ("add-k", None), ("add-k", 2),
                             ("none", None)]:
            for eff in (False, True):
                hyps, refs = corpus(rng, rng.randint(1, 10), VOCAB, rng.choice([1, 1, 2, 3]), 0, 14)
                args = {"hypotheses": hyps, "references": refs, "max_ngram_order": order, "smooth_method": smooth,
                        "effective_order": eff, "lowercase": rng.random() < 0.3,
                        "tokenize": rng.choice(["13a", "13a", "intl", "char", "none"])}
                if sval is not None:
                    args["smooth_value"] = sval
                add(f"cbleu_order{order}_{smooth}_{sval}_{eff}", "BLEU.corpus_score", args)
                base = rand_sent(rng, VOCAB, 0, 10)
                args = {"hypothesis": perturb(rng, base, VOCAB),
                        "references": [perturb(rng, base, VOCAB) for _ in range(rng.randint(1, 3))],
                        "max_ngram_order": order, "smooth_method": smooth, "effective_order": eff}
                if sval is not None:
                    args["smooth_value"] = sval
                add(f"csbleu_order{order}_{smooth}_{sval}_{eff}", "BLEU.sentence_score", args)
    # short segments: zero matches and zero totals at the higher orders
    for order in [1, 2, 3, 5, 6]:
        for smooth in ["exp", "floor", "add-k", "none"]:
            for eff in (False, True):
                for i, (h, r) in enumerate([("the cat", "the cat sat"), ("a b c", "a x b y c"), ("x y z", "a b c"),
                                            ("a", "a"), ("a b c d e f g", "a b c d e f g"), ("", "a b")]):
                    add(f"csbleu_short{order}_{smooth}_{eff}_{i}", "BLEU.sentence_score",
                        {"hypothesis": h, "references": [r], "max_ngram_order": order, "smooth_method": smooth,
                         "effective_order": eff})
    # the defaults equal the compat functions; long orders pack n-grams beyond 64 and 128 bits
    hyps, refs = corpus(rng, 30, VOCAB + UNICODE, 2, 0, 30)
    for order in [4, 7, 10, 16]:
        add(f"cbleu_big_order{order}", "BLEU.corpus_score", {"hypotheses": hyps, "references": refs,
                                                             "max_ngram_order": order})
    add("cbleu_big_defaults", "BLEU.corpus_score", {"hypotheses": hyps, "references": refs})
    words = [f"w{k}" for k in range(1500)]
    long_r = " ".join(words)
    long_h = " ".join(words[:700] + ["zz"] + words[700:1400] + words[1450:])
    shifted = " ".join(words[750:] + words[:750])
    for order in [5, 10, 11, 12, 20, 40]:
        add(f"cbleu_distinct_order{order}", "BLEU.corpus_score",
            {"hypotheses": [long_h, "w1 w2 w3"], "references": [[long_r, "w1 w2 w3 w4"], [shifted, "w2 w3"]],
             "max_ngram_order": order, "effective_order": order % 2 == 0})
    # odd orders: negative (Python slices the statistics), bools, wrong types
    for name, order in [("neg1", -1), ("neg2", -2), ("neg3", -3), ("neg5", -5), ("true", True), ("false", False),
                        ("none", None), ("float", 2.0), ("str", "2")]:
        add(f"cbleu_order_{name}", "BLEU.corpus_score",
            {"hypotheses": ["the cat sat on the mat", "a dog"], "references": [["the cat sat on a mat", "a dog ran"]],
             "max_ngram_order": order})
        add(f"csbleu_order_{name}", "BLEU.sentence_score",
            {"hypothesis": "the cat", "references": ["the cat sat", "cat"], "max_ngram_order": order})
    add("cbleu_order0_empty", "BLEU.corpus_score", {"hypotheses": [""], "references": [[""]], "max_ngram_order": 0})
    add("cbleu_order0_no_refs", "BLEU.corpus_score", {"hypotheses": ["a b"], "references": [[None]],
                                                      "max_ngram_order": 0})
    add("cbleu_order2_no_refs", "BLEU.corpus_score", {"hypotheses": ["a b"], "references": [[None]],
                                                      "max_ngram_order": 2})
    add("cbleu_order_bad_input", "BLEU.corpus_score", {"hypotheses": [None], "references": [["a"]],
                                                       "max_ngram_order": None})
    # the other constructor keywords
    zh = ["我们爱中国。你好，世界！", "日本語のテキストです。"]
    zh_refs = [["我们 爱 中国 。 你好 ， 世界 ！", "日本語 の テキスト です 。"]]
    for name, kw in {"trg_zh": {"trg_lang": "zh"}, "trg_zh_tok_none": {"trg_lang": "zh", "tokenize": None},
                     "trg_zh_tok_13a": {"trg_lang": "zh", "tokenize": "13a"}, "trg_de": {"trg_lang": "de"},
                     "trg_none": {"trg_lang": None}, "force": {"force": True, "tokenize": "none"},
                     "eff_none": {"effective_order": None}, "lc_int": {"lowercase": 1},
                     "n_bootstrap1": {"n_bootstrap": 1}, "bad_tokenizer": {"tokenize": "nope"},
                     "bad_kwarg_compat_name": {"use_effective_order": True},
                     "bad_kwarg_references": {"refs": ["x"]}}.items():
        add(f"cbleu_kw_{name}", "BLEU.corpus_score", {"hypotheses": zh, "references": zh_refs, **kw})
    add("csbleu_kw_default_eff", "BLEU.sentence_score", {"hypothesis": "a b c d", "references": ["a b c"]})
    add("csbleu_kw_bad_n_bootstrap", "BLEU.sentence_score",
        {"hypothesis": "a b", "references": ["a b"], "n_bootstrap": 1})
    for i, (h, r) in enumerate(ADVERSARIAL_PAIRS):
        add(f"csbleu_adv_{i}", "BLEU.sentence_score",
            {"hypothesis": h, "references": [r, h[::-1]], "max_ngram_order": 1 + i % 6, "effective_order": i % 2 == 0,
             "lowercase": i % 3 == 0})

    # --- CHRF: lowercase on mixed-case text, with the other constructor keywords
    mixed = VOCAB + ["CAT", "Mat", "SAT", "On", "THE", "İstanbul", "ΣΊΣΥΦΟΣ", "straße", "STRASSE", "Über"]
    for i in range(60):
        hyps, refs = corpus(rng, rng.randint(1, 10), mixed, rng.choice([1, 1, 2, 3]), 0, 12)
        hyps = [h.upper() if rng.random() < 0.3 else h for h in hyps]
        args = {"hypotheses": hyps, "references": refs, "lowercase": i % 2 == 0}
        if i % 4 > 1:
            args.update({"char_order": rng.choice([1, 3, 6, 6]), "word_order": rng.choice([0, 1, 2, 2]),
                         "beta": rng.choice([1, 2, 3]), "whitespace": rng.random() < 0.4,
                         "eps_smoothing": rng.random() < 0.4})
        add(f"cchrf_rand_{i}", "CHRF.corpus_score", args)
    for i, (h, r) in enumerate(ADVERSARIAL_PAIRS):
        for lc in (False, True):
            add(f"cschrf_adv_{i}_{lc}", "CHRF.sentence_score",
                {"hypothesis": h, "references": [r, h.swapcase()], "lowercase": lc, "word_order": 2 * (i % 2),
                 "whitespace": i % 3 == 0})
    for name, kw in {"lc_none": {"lowercase": None}, "lc_str": {"lowercase": "yes"}, "ws_int": {"whitespace": 1},
                     "n_bootstrap1": {"n_bootstrap": 1},
                     "bad_kwarg_compat_name": {"remove_whitespace": False}}.items():
        add(f"cchrf_kw_{name}", "CHRF.corpus_score",
            {"hypotheses": ["The CAT sat", "Ärger über"], "references": [["the cat sat", "ärger Über"]], **kw})
    add("cschrf_kw_bad_n_bootstrap", "CHRF.sentence_score",
        {"hypothesis": "a b", "references": ["A b"], "n_bootstrap": 1})


def write(c):
    import json
    from refcommon import FIXTURES, encode
    import importlib.metadata as md
    out = {
        "generator": c.generator,
        "python": sys.version.split()[0],
        "versions": {p: md.version(p) for p in c.packages},
        "cases": c.cases,
        "tokenizer_cases": encode(c.tokenizer_cases),
    }
    path = os.path.join(FIXTURES, "generation.json")
    with open(path + ".tmp", "w") as f:
        json.dump(out, f, indent=1, allow_nan=False, ensure_ascii=False)
        f.write("\n")
    os.replace(path + ".tmp", path)
    print(f"{path}: {len(c.cases)} cases, {len(c.tokenizer_cases)} tokenizer cases")


if __name__ == "__main__":
    if sys.argv[1:] == ["--tables"]:
        write_tables()
    else:
        main()
