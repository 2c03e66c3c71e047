"""One markdown table row from `finetune compare --json`: the seed, both macro-F1 scores, their delta and the
paired p-values (bootstrap, approximate randomisation, McNemar). Used by imbalance.sh and select.sh.

    python3 scripts/bench/compare_row.py SEED COMPARE.json
"""

import json
import sys

seed, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
f, mc = r["macro_f1"], r["mcnemar"]
print(
    f"| {seed} | {f['base']['score']:.4f} | {f['tuned']['score']:.4f} | {f['delta']:+.4f} | "
    f"{f['p_value_paired_bootstrap']:.3f} | {f['p_value_approximate_randomization']:.3f} | {mc['pvalue']:.3f} |"
)
