"""Reference fixtures for the seqeval family (crates/metrics/src/sequence.rs), from seqeval 1.2.2.

Run: /work/main/.venv-ref/bin/python scripts/reference/gen_sequence.py
It re-executes itself with PYTHONHASHSEED=0: seqeval's "scheme is not supported" messages print a set of enum
members, whose order follows the string hash.
Schemes travel as their class name ("IOB2"); the wrapper maps the name to the class (unknown name: KeyError).
"""
import os
import random
import sys
import warnings

if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import seqeval.scheme as sch
from seqeval.metrics import (accuracy_score, classification_report, f1_score, performance_measure,
                             precision_score, recall_score)
from seqeval.metrics.sequence_labeling import get_entities, precision_recall_fscore_support
from seqeval.metrics.v1 import precision_recall_fscore_support as v1_prfs

from refcommon import Cases

warnings.simplefilter("ignore")

SCHEMES = {n: getattr(sch, n) for n in ["IOB1", "IOE1", "IOB2", "IOE2", "IOBES", "BILOU", "Token"]}


def with_scheme(fn):
    def call(**kw):
        if kw.get("scheme") is not None:
            kw = dict(kw, scheme=SCHEMES[kw["scheme"]])
        return fn(**kw)
    return call


def tuples(ents):
    return [list(e) for e in ents]


def prfs_post(r):
    return list(r)


cases = Cases("sequence", "scripts/reference/gen_sequence.py", ["seqeval", "scikit-learn", "numpy"])
add = cases.add

# ---------------------------------------------------------------- get_entities
flat_seqs = {
    "doc": ["B-PER", "I-PER", "O", "B-LOC"],
    "empty": [],
    "all_o": ["O", "O", "O"],
    "i_without_b": ["I-PER", "I-PER", "O", "I-LOC"],
    "type_switch": ["B-PER", "I-LOC", "I-LOC", "O"],
    "b_empty_type": ["B-", "I-", "O"],
    "bare": ["B", "I", "O", "B", "B", "I"],
    "bare_i": ["I", "I", "O", "I"],
    "lower": ["b-per", "i-per", "o", "b-loc"],
    "lower_mixed": ["B-PER", "i-PER", "I-PER", "O"],
    "end_at_end": ["O", "B-PER", "I-PER"],
    "single": ["B-X"],
    "iobes": ["S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC", "O", "E-X", "E-X"],
    "iobes_bad": ["B-LOC", "E-LOC", "E-LOC", "I-LOC", "S-LOC", "I-LOC"],
    "ioe": ["I-PER", "E-PER", "I-LOC", "I-LOC", "E-LOC", "O", "E-MISC"],
    "bilou": ["U-PER", "B-LOC", "I-LOC", "L-LOC", "O", "U-X"],
    "dot": [".-PER", "B-PER", ".-PER", "O", "."],
    "dash_types": ["B-PER-X", "I-PER-X", "B-A-B", "BX-PER", "I-PER"],
    "unicode": ["B-人物", "I-人物", "O", "B-Ünï", "É-X", "B-😀", "I-😀"],
    "weird_chars": ["X", "X", "B-A"],
    "weird_type": ["X-A", "X-A", "Y-B", "O"],
    "o_typed": ["B-A", "O-A", "I-A", "O-B"],
    "empty_str": ["B-PER", ""],
    "underscore": ["B-_", "I", "O", "B-_"],
    "long_run": ["B-A"] + ["I-A"] * 30 + ["O"] * 5 + ["I-B"] * 3,
}
for k, v in flat_seqs.items():
    add(f"ge_flat_{k}", "seqeval.get_entities", get_entities, {"seq": v}, post=tuples)

suffix_seqs = {
    "basic": ["PER-B", "PER-I", "O", "LOC-B"],
    "iobes": ["PER-S", "LOC-B", "LOC-I", "LOC-E", "O"],
    "dash": ["A-B-B", "A-B-I", "X-Y-Z-B", "O"],
    "bare": ["B", "I", "O", "S"],
    "notype": ["-B", "-I", "O"],
    "prefix_style": ["B-PER", "I-PER", "O"],
    "unicode": ["人物-B", "人物-I", "O", "Ünï-S"],
    "empty_str": ["PER-B", ""],
    "nodash": ["PERB", "PERI", "LOCB"],
}
for k, v in suffix_seqs.items():
    add(f"ge_suffix_{k}", "seqeval.get_entities", get_entities, {"seq": v, "suffix": True}, post=tuples)
    add(f"ge_suffix_off_{k}", "seqeval.get_entities", get_entities, {"seq": v, "suffix": False}, post=tuples)

nested_seqs = {
    "doc": [["O", "B-MISC", "I-MISC"], ["B-PER", "I-PER", "O"]],
    "end_then_i": [["B-PER", "I-PER"], ["I-PER", "O"]],
    "empty_sentences": [[], ["B-A"], [], ["I-A", "B-A"], []],
    "one_empty": [[]],
    "cross_boundary": [["X"], ["X", "B-A"]],
    "cross_boundary2": [["B-A", "X"], ["X"], ["O", "I-B"]],
    "dot_cross": [["."], [".-A", "I-A"]],
    "lower": [["b-per"], ["b-per", "i-per"]],
    "unicode": [["B-人物"], ["I-人物", "B-Ünï"]],
    "bare": [["B"], ["I"], ["B", "I"]],
    "mixed": [["B-A"], "O"],
    "mixed2": ["B-A", ["O"]],
    "empty_str": [["B-A"], [""]],
}
for k, v in nested_seqs.items():
    add(f"ge_nested_{k}", "seqeval.get_entities", get_entities, {"seq": v}, post=tuples)
add("ge_nested_suffix", "seqeval.get_entities", get_entities,
    {"seq": [["PER-B", "PER-I"], ["PER-I", "LOC-S"]], "suffix": True}, post=tuples)

# ---------------------------------------------------------------- hand-written pairs
DOC_T = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
DOC_P = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
DOC2_T = [["O", "O", "B-MISC", "I-MISC", "B-MISC", "O", "O"], ["B-PER", "I-PER", "O"]]
DOC2_P = [["O", "O", "B-MISC", "I-MISC", "B-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]

pairs = {
    "doc": (DOC_T, DOC_P),
    "doc2": (DOC2_T, DOC2_P),
    "perfect": (DOC_T, DOC_T),
    "all_o": ([["O", "O"], ["O"]], [["O", "O"], ["O"]]),
    "pred_only": ([["O", "O"], ["O"]], [["B-A", "O"], ["B-B"]]),
    "true_only": ([["B-A", "I-A"], ["B-B"]], [["O", "O"], ["O"]]),
    "label_only_pred": ([["B-A", "O"], ["O"]], [["B-A", "O"], ["B-Z"]]),
    "empty_sents": ([[], ["B-A"], []], [[], ["B-A"], []]),
    "one_empty": ([[]], [[]]),
    "end_of_sentence": ([["O", "B-A"], ["B-A"]], [["O", "B-A"], ["I-A"]]),
    "ill_formed": ([["I-A", "I-A", "O", "B-B", "I-C"]], [["B-A", "I-A", "O", "B-B", "I-B"]]),
    "bare": ([["B", "I", "O", "B"]], [["B", "I", "O", "I"]]),
    "b_empty": ([["B-", "I-", "O", "B-_"]], [["B-_", "I-", "O", "B-"]]),
    "lower": ([["b-per", "i-per", "O"]], [["b-per", "I-per", "O"]]),
    "unicode": ([["B-人物", "I-人物", "O", "B-Ünï"]], [["B-人物", "I-人物", "O", "B-Z"]]),
    "cross_boundary": ([["X"], ["X", "B-A"]], [["X"], ["X", "B-A"]]),
    "cross_boundary_diff": ([["X"], ["X", "B-A"]], [["O"], ["X", "B-A"]]),
    "micro_avg_name": ([["B-micro avg", "O", "B-weighted avg"]], [["B-micro avg", "O", "O"]]),
    "long_name": ([["B-AVeryLongEntityTypeName", "O", "B-X"]], [["B-AVeryLongEntityTypeName", "O", "O"]]),
    "iobes": ([["S-A", "B-B", "I-B", "E-B", "O", "S-A"]], [["S-A", "B-B", "E-B", "O", "O", "B-A"]]),
    "ties": ([["B-A"] * 8], [["B-A"] * 3 + ["O"] * 5]),
    "many_types": ([[f"B-T{i}" for i in range(12)]], [[f"B-T{(i * 5) % 12}" for i in range(12)]]),
    "empty_str": ([["B-A", ""]], [["B-A", "O"]]),
    "empty_str_pred": ([["B-A", "O"]], [["B-A", ""]]),
}
bad_pairs = {
    "len_mismatch": ([["B-A", "O"]], [["B-A"]]),
    "count_mismatch": ([["B-A"], ["O"]], [["B-A"]]),
    "empty_input": ([], []),
    "true_empty": ([], [["O"]]),
    "flat": (["B-A", "O"], ["B-A", "O"]),
    "flat_o": (["O", "O"], ["O", "O"]),
    "mixed": ([["B-A"], "O"], [["B-A"], "O"]),
    "flat_vs_nested": (["B-A"], [["B-A"]]),
}

SCORE_FNS = [("precision_score", precision_score), ("recall_score", recall_score), ("f1_score", f1_score)]
AVERAGES = ["micro", "macro", "weighted", None]

for pname, (t, p) in {**pairs, **bad_pairs}.items():
    add(f"acc_{pname}", "seqeval.accuracy_score", accuracy_score, {"y_true": t, "y_pred": p})
    add(f"perf_{pname}", "seqeval.performance_measure", performance_measure, {"y_true": t, "y_pred": p})
    for sname, fn in SCORE_FNS:
        for avg in AVERAGES:
            add(f"{sname}_{pname}_{avg}", f"seqeval.{sname}", fn, {"y_true": t, "y_pred": p, "average": avg})
    for zd in ["warn", 0, 1]:
        add(f"prfs_{pname}_none_zd{zd}", "seqeval.precision_recall_fscore_support", precision_recall_fscore_support,
            {"y_true": t, "y_pred": p, "zero_division": zd}, post=prfs_post)
        for avg in ["micro", "macro", "weighted"]:
            add(f"prfs_{pname}_{avg}_zd{zd}", "seqeval.precision_recall_fscore_support",
                precision_recall_fscore_support, {"y_true": t, "y_pred": p, "average": avg, "zero_division": zd},
                post=prfs_post)
    add(f"cr_{pname}", "seqeval.classification_report", classification_report, {"y_true": t, "y_pred": p})
    add(f"crd_{pname}", "seqeval.classification_report", classification_report,
        {"y_true": t, "y_pred": p, "output_dict": True})

# Accuracy quirks: zip truncation and flattening strings into characters.
add("acc_zip_short", "seqeval.accuracy_score", accuracy_score, {"y_true": [["O", "B-A"], ["O"]], "y_pred": [["O"]]})
add("acc_zip_long", "seqeval.accuracy_score", accuracy_score, {"y_true": [["O"]], "y_pred": [["O", "B-A"], ["O"]]})
add("acc_nested_vs_flat", "seqeval.accuracy_score", accuracy_score, {"y_true": [["O", "B"]], "y_pred": ["OB"]})
add("acc_flat_vs_mixed", "seqeval.accuracy_score", accuracy_score, {"y_true": ["O", "B"], "y_pred": [["O"], "B"]})
add("perf_nested_vs_flat", "seqeval.performance_measure", performance_measure,
    {"y_true": [["O", "B-A", "O"]], "y_pred": ["OB"]})

# Every zero_division value with zero support / no predictions, averages and beta.
for pname in ["pred_only", "true_only", "all_o", "label_only_pred", "doc2"]:
    t, p = pairs[pname]
    for sname, fn in SCORE_FNS:
        for avg in AVERAGES:
            for zd in [0, 1, "warn"]:
                add(f"{sname}_{pname}_{avg}_zdv{zd}", f"seqeval.{sname}", fn,
                    {"y_true": t, "y_pred": p, "average": avg, "zero_division": zd})
    for zd in [0, 1]:
        add(f"cr_{pname}_zd{zd}", "seqeval.classification_report", classification_report,
            {"y_true": t, "y_pred": p, "zero_division": zd})
        add(f"crd_{pname}_zd{zd}", "seqeval.classification_report", classification_report,
            {"y_true": t, "y_pred": p, "zero_division": zd, "output_dict": True})
for beta in [0, 0.5, 2, 3.5, "Infinity", -1]:
    for avg in AVERAGES:
        b = float("inf") if beta == "Infinity" else beta
        add(f"prfs_beta{beta}_{avg}", "seqeval.precision_recall_fscore_support", precision_recall_fscore_support,
            {"y_true": DOC2_T, "y_pred": DOC2_P, "average": avg, "beta": b}, post=prfs_post)
for avg in ["samples", "binary", "foo"]:
    add(f"f1_bad_average_{avg}", "seqeval.f1_score", f1_score, {"y_true": DOC_T, "y_pred": DOC_P, "average": avg})
    add(f"prfs_bad_average_{avg}", "seqeval.precision_recall_fscore_support", precision_recall_fscore_support,
        {"y_true": DOC_T, "y_pred": DOC_P, "average": avg}, post=prfs_post)
add("prfs_bad_average_and_beta", "seqeval.precision_recall_fscore_support", precision_recall_fscore_support,
    {"y_true": [], "y_pred": [], "average": "foo", "beta": -1}, post=prfs_post)
add("prfs_bad_average_flat", "seqeval.precision_recall_fscore_support", precision_recall_fscore_support,
    {"y_true": ["O"], "y_pred": ["O"], "average": "foo"}, post=prfs_post)
add("prfs_sample_weight_ignored", "seqeval.precision_recall_fscore_support", precision_recall_fscore_support,
    {"y_true": DOC_T, "y_pred": DOC_P, "average": "weighted", "sample_weight": [1, 2, 3]}, post=prfs_post)
add("f1_sample_weight_ignored", "seqeval.f1_score", f1_score,
    {"y_true": DOC_T, "y_pred": DOC_P, "sample_weight": [5, 0]})
add("prfs_mode_kw", "seqeval.precision_recall_fscore_support", precision_recall_fscore_support,
    {"y_true": DOC_T, "y_pred": DOC_P, "mode": "strict"}, post=prfs_post)
add("f1_zd_nan", "seqeval.f1_score", f1_score,
    {"y_true": pairs["pred_only"][0], "y_pred": pairs["pred_only"][1], "average": None, "zero_division": float("nan")})
add("f1_zd_str", "seqeval.f1_score", f1_score,
    {"y_true": pairs["pred_only"][0], "y_pred": pairs["pred_only"][1], "average": None, "zero_division": "foo"})

# Suffix tags.
SUF_T = [["PER-B", "PER-I", "O", "LOC-B"], ["MISC-S", "O"]]
SUF_P = [["PER-B", "PER-I", "O", "LOC-I"], ["MISC-S", "MISC-B"]]
for sname, fn in SCORE_FNS:
    for avg in AVERAGES:
        add(f"{sname}_suffix_{avg}", f"seqeval.{sname}", fn,
            {"y_true": SUF_T, "y_pred": SUF_P, "average": avg, "suffix": True})
add("prfs_suffix", "seqeval.precision_recall_fscore_support", precision_recall_fscore_support,
    {"y_true": SUF_T, "y_pred": SUF_P, "suffix": True}, post=prfs_post)
add("cr_suffix", "seqeval.classification_report", classification_report,
    {"y_true": SUF_T, "y_pred": SUF_P, "suffix": True})
add("cr_suffix_strict", "seqeval.classification_report", with_scheme(classification_report),
    {"y_true": [["PER-B", "PER-I", "O"], ["LOC-B"]], "y_pred": [["PER-B", "PER-B", "O"], ["LOC-B"]], "suffix": True,
     "mode": "strict"})
add("cr_suffix_strict_iobes", "seqeval.classification_report", with_scheme(classification_report),
    {"y_true": [["PER-B", "PER-E", "O"], ["LOC-S"]], "y_pred": [["PER-B", "PER-I", "O"], ["LOC-S"]], "suffix": True,
     "mode": "strict", "scheme": "IOBES"})

# Report formatting: digits, ties in rounding, widths.
for digits in [0, 1, 2, 3, 4, 6, 13, 15, -1]:
    add(f"cr_digits{digits}", "seqeval.classification_report", classification_report,
        {"y_true": DOC2_T, "y_pred": DOC2_P, "digits": digits})
    add(f"cr_ties_digits{digits}", "seqeval.classification_report", classification_report,
        {"y_true": pairs["ties"][0], "y_pred": pairs["ties"][1], "digits": digits})
    add(f"crd_digits{digits}", "seqeval.classification_report", classification_report,
        {"y_true": DOC2_T, "y_pred": DOC2_P, "digits": digits, "output_dict": True})
add("cr_unicode_width", "seqeval.classification_report", classification_report,
    {"y_true": [["B-ÄÖÜäöüßÄÖÜäöü", "O", "B-人物人物人物人物人物人物"]], "y_pred": [["B-ÄÖÜäöüßÄÖÜäöü", "O", "O"]]})
ties = ([["B-A", "O", "B-A", "O", "B-A", "O", "B-A", "O"], ["B-B", "B-B", "B-B", "B-B", "B-B", "B-B", "B-B", "B-B"]],
        [["B-A", "O", "O", "O", "O", "O", "O", "O"], ["B-B", "O", "B-B", "O", "B-B", "O", "O", "O"]])
for digits in [0, 1, 2, 3]:
    add(f"cr_ties2_digits{digits}", "seqeval.classification_report", classification_report,
        {"y_true": ties[0], "y_pred": ties[1], "digits": digits})

# ---------------------------------------------------------------- strict mode
strict_valid = {
    "IOB1": ([["I-A", "I-A", "B-A", "O", "I-B"], ["I-A", "B-B", "I-B"]],
             [["I-A", "B-A", "B-A", "O", "I-B"], ["I-A", "I-B", "I-B"]]),
    "IOE1": ([["I-A", "E-A", "I-A", "O", "I-B"], ["I-A", "I-B", "E-B", "E-B"]],
             [["I-A", "I-A", "I-A", "O", "E-B"], ["E-A", "I-B", "I-B", "E-B"]]),
    "IOB2": ([["B-A", "I-A", "O", "B-B", "I-B", "B-B"], ["O", "B-A"]],
             [["B-A", "I-A", "I-A", "B-B", "B-B", "I-B"], ["I-A", "B-A"]]),
    "IOE2": ([["I-A", "E-A", "O", "E-B", "I-B", "E-B"], ["O", "E-A"]],
             [["I-A", "I-A", "E-A", "E-B", "E-B", "I-B"], ["I-A", "E-A"]]),
    "IOBES": ([["B-A", "E-A", "O", "S-B", "B-B", "I-B", "E-B"], ["S-A", "O"]],
              [["B-A", "I-A", "O", "S-B", "B-B", "E-B", "E-B"], ["B-A", "E-A"]]),
    "BILOU": ([["B-A", "L-A", "O", "U-B", "B-B", "I-B", "L-B"], ["U-A", "O"]],
              [["B-A", "I-A", "O", "U-B", "B-B", "L-B", "L-B"], ["B-A", "L-A"]]),
}
strict_invalid = {
    "IOB1": [["B-A", "E-A"]],
    "IOE1": [["B-A", "I-A"]],
    "IOB2": [["O", "S-A"]],
    "IOE2": [["U-A"]],
    "IOBES": [["B-A", "L-A"]],
    "BILOU": [["B-A", "E-A"]],
}
STRICT_EXTRA = {
    "ill_formed_iob2": ([["I-A", "I-A", "O", "B-B", "I-C", "I-C"]], [["B-A", "I-A", "O", "B-B", "I-B", "I-C"]]),
    "type_switch": ([["B-A", "I-B", "I-B", "O"]], [["B-A", "I-A", "I-B", "O"]]),
    "empty_type": ([["B-", "I-", "O", "B--", "B"]], [["B", "I", "O", "B-_", "B-"]]),
    "dash_strip": ([["B--A-", "I-A", "B-A-B"]], [["B-A", "I--A", "B-A-B"]]),
    "unicode": ([["B-人物", "I-人物", "O", "B-Ünï"]], [["B-人物", "I-人物", "O", "B-Z"]]),
    "end_of_sentence": ([["O", "B-A"], ["B-A", "I-A"], []], [["O", "B-A"], ["B-A", "B-A"], []]),
    "all_o": ([["O", "O"]], [["O", "O"]]),
    "one_empty": ([[]], [[]]),
    "lower": ([["b-A"]], [["B-A"]]),
    "lower_pred": ([["B-A"]], [["b-A"]]),
    "bad_prefix": ([["X-A"]], [["B-A"]]),
    "empty_str": ([["B-A", ""]], [["B-A", "O"]]),
    "key_then_value": ([["B-A", "E-A", "x"]], [["B-A", "O", "O"]]),
    "value_true_key_pred": ([["S-A"]], [["x"]]),
    "value_pred": ([["B-A"]], [["S-A"]]),
    "len_mismatch": ([["B-A", "O"]], [["B-A"]]),
    "flat": (["B-A"], ["B-A"]),
    "empty_input": ([], []),
}
for scheme in ["IOB1", "IOE1", "IOB2", "IOE2", "IOBES", "BILOU", "Token", "Nope"]:
    inputs = dict(STRICT_EXTRA)
    if scheme in strict_valid:
        inputs["valid"] = strict_valid[scheme]
        inputs["invalid_true"] = (strict_invalid[scheme], [["O"] * len(s) for s in strict_invalid[scheme]])
        inputs["invalid_pred"] = ([["O"] * len(s) for s in strict_invalid[scheme]], strict_invalid[scheme])
        for other, pair in strict_valid.items():
            inputs[f"as_{other}"] = pair
    for iname, (t, p) in inputs.items():
        for sname, fn in SCORE_FNS:
            for avg in (AVERAGES if iname in ("valid", "ill_formed_iob2") else ["micro"]):
                add(f"strict_{scheme}_{iname}_{sname}_{avg}", f"seqeval.{sname}", with_scheme(fn),
                    {"y_true": t, "y_pred": p, "average": avg, "mode": "strict", "scheme": scheme})
        add(f"strict_{scheme}_{iname}_cr", "seqeval.classification_report", with_scheme(classification_report),
            {"y_true": t, "y_pred": p, "mode": "strict", "scheme": scheme, "digits": 4})
        add(f"strict_{scheme}_{iname}_crd", "seqeval.classification_report", with_scheme(classification_report),
            {"y_true": t, "y_pred": p, "mode": "strict", "scheme": scheme, "output_dict": True, "zero_division": 1})

# mode / scheme alone, and auto-detected schemes in the strict report.
for iname, (t, p) in [("iob2", strict_valid["IOB2"]), ("ioe2", strict_valid["IOE2"]),
                      ("iobes", strict_valid["IOBES"]), ("bilou", strict_valid["BILOU"]),
                      ("iob1", strict_valid["IOB1"]), ("ill", STRICT_EXTRA["ill_formed_iob2"]),
                      ("all_o", STRICT_EXTRA["all_o"]), ("one_empty", STRICT_EXTRA["one_empty"]),
                      ("only_b", ([["B-A", "B-B"]], [["B-A", "O"]])), ("only_s", ([["S-A", "S-B"]], [["S-A", "O"]])),
                      ("only_u", ([["U-A"]], [["U-A"]])), ("lower", ([["b-A"]], [["B-A"]])),
                      ("empty_str", ([["B-A", ""]], [["B-A", "O"]])), ("flat", (["B-A"], ["B-A"])),
                      ("mixed_schemes", ([["B-A", "E-A", "U-B"]], [["B-A", "E-A", "U-B"]]))]:
    add(f"auto_{iname}_cr", "seqeval.classification_report", with_scheme(classification_report),
        {"y_true": t, "y_pred": p, "mode": "strict"})
    add(f"auto_{iname}_crd", "seqeval.classification_report", with_scheme(classification_report),
        {"y_true": t, "y_pred": p, "mode": "strict", "output_dict": True})
    add(f"mode_only_{iname}_f1", "seqeval.f1_score", with_scheme(f1_score),
        {"y_true": t, "y_pred": p, "mode": "strict"})
    add(f"scheme_only_{iname}_f1", "seqeval.f1_score", with_scheme(f1_score),
        {"y_true": t, "y_pred": p, "scheme": "IOB2"})
    add(f"scheme_only_{iname}_cr", "seqeval.classification_report", with_scheme(classification_report),
        {"y_true": t, "y_pred": p, "scheme": "IOBES", "output_dict": True})
    add(f"mode_other_{iname}_f1", "seqeval.f1_score", with_scheme(f1_score),
        {"y_true": t, "y_pred": p, "mode": "lenient", "scheme": "IOB2"})

# ---------------------------------------------------------------- random seeded sequences
rng = random.Random(20240613)
TYPES = ["PER", "LOC", "ORG", "MISC", "人物"]


def rand_iob2(n_sent, max_len, types, noise):
    out = []
    for _ in range(n_sent):
        s, prev = [], None
        for _ in range(rng.randint(0, max_len)):
            r = rng.random()
            if r < 0.5:
                tag, prev = "O", None
            elif r < 0.75 or prev is None:
                prev = rng.choice(types)
                tag = "B-" + prev
            else:
                tag = "I-" + prev
            if rng.random() < noise:
                tag = rng.choice(["I-" + rng.choice(types), "B-" + rng.choice(types), "O", "B", "I", "E-X"])
            s.append(tag)
        out.append(s)
    return out


def perturb(seqs, p, types):
    out = []
    for s in seqs:
        q = []
        for tag in s:
            if rng.random() < p:
                tag = rng.choice(["O", "B-" + rng.choice(types), "I-" + rng.choice(types)])
            q.append(tag)
        out.append(q)
    return out


def to_scheme(seqs, scheme):
    """Converts clean IOB2 sequences to another scheme's tags."""
    out = []
    for s in seqs:
        ents, q = get_entities(s), ["O"] * len(s)
        for ty, a, b in ents:
            for i in range(a, b + 1):
                if scheme == "IOBES":
                    q[i] = ("S-" if a == b else "B-" if i == a else "E-" if i == b else "I-") + ty
                elif scheme == "BILOU":
                    q[i] = ("U-" if a == b else "B-" if i == a else "L-" if i == b else "I-") + ty
                elif scheme == "IOE2":
                    q[i] = ("E-" if i == b else "I-") + ty
                else:
                    q[i] = ("B-" if i == a else "I-") + ty
        out.append(q)
    return out


for k in range(40):
    types = TYPES[: rng.randint(1, len(TYPES))]
    noise = [0.0, 0.05, 0.3][k % 3]
    t = rand_iob2(rng.randint(1, 25), 15, types, noise)
    p = perturb(t, rng.choice([0.0, 0.1, 0.3, 0.8]), types)
    avg = AVERAGES[k % 4]
    add(f"rand{k}_f1", "seqeval.f1_score", f1_score, {"y_true": t, "y_pred": p, "average": avg})
    add(f"rand{k}_prfs", "seqeval.precision_recall_fscore_support", precision_recall_fscore_support,
        {"y_true": t, "y_pred": p, "average": AVERAGES[(k + 1) % 4], "beta": [1, 0.5, 2][k % 3]}, post=prfs_post)
    add(f"rand{k}_cr", "seqeval.classification_report", classification_report,
        {"y_true": t, "y_pred": p, "digits": 2 + k % 3})
    add(f"rand{k}_crd", "seqeval.classification_report", classification_report,
        {"y_true": t, "y_pred": p, "output_dict": True})
    add(f"rand{k}_acc", "seqeval.accuracy_score", accuracy_score, {"y_true": t, "y_pred": p})
    add(f"rand{k}_ge", "seqeval.get_entities", get_entities, {"seq": p}, post=tuples)

for k in range(30):
    scheme = ["IOB2", "IOE2", "IOBES", "BILOU", "IOB1"][k % 5]
    types = TYPES[: rng.randint(1, len(TYPES))]
    base = rand_iob2(rng.randint(1, 20), 12, types, 0.0)
    t = to_scheme(base, scheme)
    p = to_scheme(perturb(base, [0.0, 0.1, 0.3][k % 3], types), scheme)
    if k % 4 == 3:  # break the scheme in some predictions
        for s in p:
            if s and rng.random() < 0.5:
                s[rng.randrange(len(s))] = "I-" + rng.choice(types)
    for sname, fn in SCORE_FNS:
        add(f"rand_strict{k}_{sname}", f"seqeval.{sname}", with_scheme(fn),
            {"y_true": t, "y_pred": p, "average": AVERAGES[k % 4], "mode": "strict", "scheme": scheme})
    add(f"rand_strict{k}_cr", "seqeval.classification_report", with_scheme(classification_report),
        {"y_true": t, "y_pred": p, "mode": "strict", "scheme": scheme})
    add(f"rand_strict{k}_cr_auto", "seqeval.classification_report", with_scheme(classification_report),
        {"y_true": t, "y_pred": p, "mode": "strict", "output_dict": True})
    add(f"rand_strict{k}_lenient_cr", "seqeval.classification_report", classification_report,
        {"y_true": t, "y_pred": p, "output_dict": True})

# Noisy alphabets: tags seqeval does not recognise, chunks across sentence boundaries, suffix tags.
NOISY = ["O", "O", "O", "B-PER", "I-PER", "E-PER", "S-LOC", "I-LOC", "X", "X-PER", "B", "I", ".", ".-PER", "b-loc",
         "O-PER", "B-", "I-_", "人-物", "B-人物"]
NOISY_SUFFIX = ["O", "O", "PER-B", "PER-I", "LOC-E", "LOC-S", "X", "PER-X", "B", "-I", "LOC.", "物-人", "人物-B"]
for k in range(40):
    alphabet = NOISY_SUFFIX if k % 4 == 3 else NOISY
    suffix = k % 4 == 3
    t = [[rng.choice(alphabet) for _ in range(rng.randint(0, 8))] for _ in range(rng.randint(1, 30))]
    p = [[x if rng.random() < 0.7 else rng.choice(alphabet) for x in s] for s in t]
    add(f"noisy{k}_ge", "seqeval.get_entities", get_entities, {"seq": t, "suffix": suffix}, post=tuples)
    add(f"noisy{k}_prfs", "seqeval.precision_recall_fscore_support", precision_recall_fscore_support,
        {"y_true": t, "y_pred": p, "average": AVERAGES[k % 4], "suffix": suffix}, post=prfs_post)
    add(f"noisy{k}_cr", "seqeval.classification_report", classification_report,
        {"y_true": t, "y_pred": p, "suffix": suffix, "digits": 3})
    add(f"noisy{k}_perf", "seqeval.performance_measure", performance_measure, {"y_true": t, "y_pred": p})

for zd in [True, False, 0.0, 1.0, "0", "1"]:
    for avg in ["micro", "weighted", None]:
        add(f"f1_zd_{zd!r}_{avg}", "seqeval.f1_score", f1_score,
            {"y_true": pairs["pred_only"][0], "y_pred": pairs["pred_only"][1], "average": avg, "zero_division": zd})
for digits in [20, 30]:
    add(f"cr_digits{digits}", "seqeval.classification_report", classification_report,
        {"y_true": DOC2_T, "y_pred": DOC2_P, "digits": digits})
for avg in [1, ""]:
    add(f"f1_bad_average_{avg!r}", "seqeval.f1_score", f1_score, {"y_true": DOC_T, "y_pred": DOC_P, "average": avg})
add("cr_null_options", "seqeval.classification_report", classification_report,
    {"y_true": DOC_T, "y_pred": DOC_P, "mode": None, "output_dict": None, "suffix": None})
add("ge_suffix_null", "seqeval.get_entities", get_entities, {"seq": ["B-A"], "suffix": None}, post=tuples)
for k in range(10):
    scheme = ["IOB2", "IOBES", "BILOU", "IOE2", "IOB1"][k % 5]
    base = rand_iob2(rng.randint(1, 15), 10, TYPES, 0.0)
    t = [[x.split("-", 1)[1] + "-" + x[0] if x != "O" else x for x in s] for s in to_scheme(base, scheme)]
    p = [[x.split("-", 1)[1] + "-" + x[0] if x != "O" else x for x in s]
         for s in to_scheme(perturb(base, 0.2, TYPES), scheme)]
    add(f"rand_strict_suffix{k}_cr", "seqeval.classification_report", with_scheme(classification_report),
        {"y_true": t, "y_pred": p, "mode": "strict", "scheme": scheme, "suffix": True})
    add(f"rand_strict_suffix{k}_f1", "seqeval.f1_score", with_scheme(f1_score),
        {"y_true": t, "y_pred": p, "mode": "strict", "scheme": scheme, "suffix": True, "average": None})

# ---------------------------------------------------------------- seqeval.metrics.v1.precision_recall_fscore_support
# The strict-mode scores behind classification_report(mode="strict"): entities of `scheme` (no auto-detection;
# scheme=None fails), every average, zero_division, beta, suffix; `**kwargs` swallows mode, parallel, ...
V1 = "seqeval.v1.precision_recall_fscore_support"
v1 = with_scheme(v1_prfs)
ZD_V1 = ["warn", 0, 1, True, 0.0, "0"]
for scheme in ["IOB2", "IOBES", "BILOU", "IOE2", "IOB1"]:
    inputs = {"valid": strict_valid[scheme], "all_o": STRICT_EXTRA["all_o"],
              "one_empty": STRICT_EXTRA["one_empty"], "end_of_sentence": STRICT_EXTRA["end_of_sentence"],
              "unicode": STRICT_EXTRA["unicode"], "dash_strip": STRICT_EXTRA["dash_strip"],
              "pred_only": pairs["pred_only"], "true_only": pairs["true_only"],
              "invalid_true": (strict_invalid[scheme], [["O"] * len(x) for x in strict_invalid[scheme]]),
              "invalid_pred": ([["O"] * len(x) for x in strict_invalid[scheme]], strict_invalid[scheme])}
    for other, pair in strict_valid.items():
        if other != scheme:
            inputs[f"as_{other}"] = pair
    for iname, (t, p) in inputs.items():
        for avg in AVERAGES:
            add(f"v1_{scheme}_{iname}_{avg}", V1, v1, {"y_true": t, "y_pred": p, "average": avg, "scheme": scheme},
                post=prfs_post)
    for iname in ["valid", "all_o", "pred_only", "true_only"] if scheme in ("IOB2", "IOBES", "BILOU") else []:
        t, p = inputs[iname]
        for zd in ZD_V1:
            for avg in AVERAGES:
                add(f"v1_{scheme}_{iname}_{avg}_zd{zd!r}", V1, v1,
                    {"y_true": t, "y_pred": p, "average": avg, "scheme": scheme, "zero_division": zd},
                    post=prfs_post)
    for beta in [0, 0.5, 2, float("inf")]:
        for avg in AVERAGES:
            add(f"v1_{scheme}_beta{beta}_{avg}", V1, v1,
                {"y_true": strict_valid[scheme][0], "y_pred": strict_valid[scheme][1], "average": avg,
                 "scheme": scheme, "beta": beta}, post=prfs_post)
for scheme in ["Token", "Nope", None]:
    add(f"v1_scheme_{scheme}", V1, v1, {"y_true": DOC_T, "y_pred": DOC_P, "scheme": scheme}, post=prfs_post)
add("v1_no_scheme", V1, v1, {"y_true": DOC_T, "y_pred": DOC_P}, post=prfs_post)
for pname, (t, p) in bad_pairs.items():
    for scheme in ["IOB2", None]:
        add(f"v1_bad_{pname}_{scheme}", V1, v1, {"y_true": t, "y_pred": p, "scheme": scheme}, post=prfs_post)
for avg in ["samples", "binary", "MICRO", 1]:
    add(f"v1_bad_average_{avg}", V1, v1, {"y_true": DOC_T, "y_pred": DOC_P, "scheme": "IOB2", "average": avg},
        post=prfs_post)
add("v1_bad_beta", V1, v1, {"y_true": DOC_T, "y_pred": DOC_P, "scheme": "IOB2", "beta": -1}, post=prfs_post)
add("v1_bad_beta_and_average", V1, v1, {"y_true": DOC_T, "y_pred": DOC_P, "scheme": "IOB2", "beta": -1,
                                         "average": "samples"}, post=prfs_post)
add("v1_kwargs_ignored", V1, v1, {"y_true": DOC_T, "y_pred": DOC_P, "scheme": "IOB2", "average": "macro",
                                  "mode": "strict", "parallel": True, "sample_weight": [1, 2],
                                  "warn_for": ["precision"], "entities_true": [], "entities_pred": None},
    post=prfs_post)
add("v1_docstring_none", V1, v1, {"y_true": DOC_T, "y_pred": DOC_P, "scheme": "IOB2", "average": None},
    post=prfs_post)
for k in range(24):
    scheme = ["IOB2", "IOBES", "BILOU"][k % 3]
    types = TYPES[: rng.randint(1, len(TYPES))]
    base = rand_iob2(rng.randint(1, 20), 12, types, 0.0)
    t = to_scheme(base, scheme)
    p = to_scheme(perturb(base, [0.0, 0.1, 0.3, 0.6][k % 4], types), scheme)
    suffix = k % 6 == 5
    if suffix:
        t = [[x.split("-", 1)[1] + "-" + x[0] if x != "O" else x for x in s] for s in t]
        p = [[x.split("-", 1)[1] + "-" + x[0] if x != "O" else x for x in s] for s in p]
    if k % 4 == 3:  # break the scheme in some predictions
        for s in p:
            if s and rng.random() < 0.5:
                s[rng.randrange(len(s))] = "I-" + rng.choice(types)
    for avg in AVERAGES:
        add(f"v1_rand{k}_{scheme}_{avg}", V1, v1,
            {"y_true": t, "y_pred": p, "average": avg, "scheme": scheme, "suffix": suffix,
             "beta": [1, 0.5, 2][k % 3], "zero_division": ["warn", 0, 1][k % 3]}, post=prfs_post)

cases.write()
