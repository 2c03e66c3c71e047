"""Regenerates every metrics fixture with the pinned references (run inside .venv-ref).

    scripts/reference/setup.sh metrics && .venv-ref/bin/python scripts/reference/gen_all.py
"""
import os
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
for family in ["classification", "ranking", "sequence", "generation", "rouge", "qa", "perplexity", "mcnemar"]:
    subprocess.run([sys.executable, os.path.join(here, f"gen_{family}.py")], check=True)
