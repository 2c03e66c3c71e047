"""Writes crates/models/tests/fixtures/gguf/q8_0_encode.json: inputs and their Q8_0 and F16 encodings as the
`gguf` package (0.19.0, scripts/reference/requirements-gguf.txt) produces them with
`gguf.quants.quantize(arr, GGMLQuantizationType.Q8_0)` / `.F16` / `.BF16`, never from our own output.

    .venv-gguf/bin/python scripts/reference/gen_q8_0_fixture.py

Inputs are stored as the hex of their little-endian f32 bytes (exact), encodings as hex.
Blocks cover: random normals at several scales, an all-zero block, a constant block, values that land exactly on
.5 after scaling (ties round away from zero), a block with one huge outlier, tiny (f16-subnormal) scales, and
negative-only blocks, and bf16 rounding ties.
"""

import json
from importlib.metadata import version
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "crates" / "models" / "tests" / "fixtures" / "gguf" / "q8_0_encode.json"
rng = np.random.default_rng(20260507)

rows = []
rows.append(rng.standard_normal(64))
rows.append(rng.standard_normal(64) * 1e-3)
rows.append(rng.standard_normal(64) * 40.0)
rows.append(np.concatenate([np.zeros(32), np.full(32, 3.0)]))
# amax 127 gives d = 1: x.5 values are exact ties.
ties = np.array([127.0] + [k + 0.5 for k in range(-15, 16)], dtype=np.float64)
rows.append(np.concatenate([ties, -ties]))
outlier = rng.standard_normal(64) * 0.01
outlier[5] = 500.0
rows.append(outlier)
rows.append(rng.standard_normal(64) * 1e-6)  # d below f16's normal range
rows.append(-np.abs(rng.standard_normal(64)))
x = np.stack(rows).astype(np.float32)
# bf16 rounding ties: f32 values whose low 16 bits are exactly 0x8000, on even and odd high halves (round to even),
# and values just either side of a tie.
bits = np.array([(h << 16) | lo for h in (0x3F80, 0x3F81, 0xBF80, 0xBF81, 0x4049, 0x404A, 0x0001, 0x7F7F)
                 for lo in (0x7FFF, 0x8000, 0x8001, 0x0000)] * 2, dtype=np.uint32)
x = np.concatenate([x, bits.view(np.float32).reshape(1, 64)]).astype(np.float32)

q8 = quantize(x, T.Q8_0)
f16 = quantize(x, T.F16)
bf16 = quantize(x, T.BF16)
OUT.write_text(json.dumps({
    "generator": f"gguf {version('gguf')}, numpy {np.__version__}",
    "shape": list(x.shape),
    "input_f32_le_hex": x.astype("<f4").tobytes().hex(),
    "q8_0_hex": np.ascontiguousarray(q8).tobytes().hex(),
    "f16_hex": np.ascontiguousarray(f16).astype("<f2").tobytes().hex(),
    "bf16_hex": np.ascontiguousarray(bf16).tobytes().hex(),  # bytes, as quantize returns them
}, indent=1) + "\n")
print(f"wrote {OUT} ({x.size} values)")
