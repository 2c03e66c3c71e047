"""Checks `finetune export` against the real runtime: the `gguf` package reads the files and llama.cpp
(llama-cpp-python, built from its sdist) loads them, chats, and scores the same held-out text.

Run through scripts/reference/gguf_check.sh (it makes .venv-gguf and builds the release binary). For each
outtype it prints: our drift (source vs export, our runtime), llama.cpp's drift (source file vs export, both in
llama.cpp), and the cross-runtime gap on the export (our perplexity vs llama.cpp's on the same token ids).
"""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import gguf
from llama_cpp import Llama

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target" / "release" / "finetune"
MODEL = ROOT / "assets" / "SmolLM2-135M-Instruct"
SOURCE = MODEL / "SmolLM2-135M-Instruct.Q4_1.gguf"
WINDOW = 512


def builtin_text():
    src = (ROOT / "crates" / "cli" / "src" / "export_cmd.rs").read_text()
    body = src.split('pub const BUILTIN_EVAL_TEXT: &str = "\\\n', 1)[1].split('";', 1)[0]
    # Rust string continuation: a backslash at the end of a line swallows the newline and leading spaces.
    out, lines = [], body.split("\n")
    for line in lines:
        out.append(line[:-1] if line.endswith("\\") else line + "\n")
    return "".join(out)[:-1].replace('\\"', '"')


def nll_windows(llm, ids):
    """Mean next-token NLL and the logits, disjoint windows of WINDOW tokens (as finetune export)."""
    total, n, logits = 0.0, 0, []
    for s in range(0, len(ids), WINDOW):
        chunk = ids[s:s + WINDOW]
        if len(chunk) < 2:
            continue
        llm.reset()
        llm.eval(chunk)
        sc = np.array(llm.scores[: len(chunk)], dtype=np.float64)
        logits.append(sc.astype(np.float32))
        m = sc.max(axis=1, keepdims=True)
        lse = (m + np.log(np.exp(sc - m).sum(axis=1, keepdims=True)))[:, 0]
        tgt = np.array(chunk[1:])
        total += float((lse[:-1] - sc[np.arange(len(chunk) - 1), tgt]).sum())
        n += len(chunk) - 1
    return total / n, n, np.concatenate(logits)


def read_safetensors(path):
    b = path.read_bytes()
    n = int.from_bytes(b[:8], "little")
    header = json.loads(b[8:8 + n])
    dt = {"F32": "<f4", "I64": "<i8", "F64": "<f8"}
    out = {}
    for k, v in header.items():
        if k == "__metadata__" or v["dtype"] not in dt:
            continue
        s, e = v["data_offsets"]
        out[k] = np.frombuffer(b[8 + n + s:8 + n + e], dtype=dt[v["dtype"]]).reshape(v["shape"])
    return out


def byte_char(b):
    direct = lambda x: 33 <= x <= 126 or 161 <= x <= 172 or x >= 174
    if direct(b):
        return chr(b)
    return chr(256 + sum(1 for x in range(b) if not direct(x)))


def tiny_checks(out):
    """The tiny random Llama, Qwen2, Phi and GPT-2 fixtures exported as f32 and run in llama.cpp: their logits against
    the PyTorch/transformers logits stored with the fixtures (scripts/reference/gen_tiny_decoders.py)."""
    print("tiny random models, f32 export, llama.cpp logits vs transformers' (fixture expected.safetensors):")
    # tiny_llama3: Llama 3.1 rope scaling (written as rope_freqs.weight) and attention biases; tiny_phi: phi2.
    # tiny_llama3 without its scaling is the control: the gap must then be large, or the check sees no rope.
    for name, label, drop_scaling in [("tiny_llama", "tiny_llama", False), ("tiny_llama3", "tiny_llama3", False),
                                      ("tiny_llama3", "tiny_llama3, default rope (control)", True),
                                      ("tiny_qwen2", "tiny_qwen2", False), ("tiny_phi", "tiny_phi", False),
                                      ("tiny_gpt2", "tiny_gpt2", False)]:
        fx = ROOT / "crates" / "models" / "tests" / "fixtures" / name
        d = out / (name + ("_control" if drop_scaling else ""))
        d.mkdir()
        for f in ["config.json", "model.safetensors"]:
            (d / f).write_bytes((fx / f).read_bytes())
        if drop_scaling:
            config = json.loads((fx / "config.json").read_text())
            config["rope_parameters"] = {"rope_type": "default", "rope_theta": config["rope_parameters"]["rope_theta"]}
            (d / "config.json").write_text(json.dumps(config))
        vocab = {byte_char(b): b for b in range(128)}
        bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
        (d / "tokenizer.json").write_text(json.dumps({
            "version": "1.0", "added_tokens": [], "normalizer": None, "pre_tokenizer": bl, "post_processor": None,
            "decoder": bl, "model": {"type": "BPE", "vocab": vocab, "merges": []}}))
        (d / "tokenizer_config.json").write_text(json.dumps({"bos_token": byte_char(1), "eos_token": byte_char(2)}))
        path = out / f"{d.name}.gguf"
        r = subprocess.run([str(BIN), "export", "--model", str(d), "--outtype", "f32", "--out", str(path),
                            "--window", "64", "--json"], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"finetune export {name} failed: {r.stderr.strip()}")
        exp = read_safetensors(fx / "expected.safetensors")
        llm = Llama(model_path=str(path), n_ctx=64, logits_all=True, verbose=False, n_threads=2)
        worst = 0.0
        for row in range(exp["input_ids"].shape[0]):
            n = int(exp["attention_mask"][row].sum())
            ids = [int(i) for i in exp["input_ids"][row, :n]]
            llm.reset()
            llm.eval(ids)
            got = np.array(llm.scores[:n], dtype=np.float32)
            worst = max(worst, float(np.abs(got - exp["logits"][row, :n]).max()))
        scale = float(np.abs(exp["logits"]).max())
        print(f"  {label}: arch {gguf.GGUFReader(str(path)).fields['general.architecture'].contents()}, "
              f"max |llama.cpp - transformers| {worst:.2e} (logits up to {scale:.3f})")
        assert (worst > 0.1) if drop_scaling else (worst < 0.02), f"{label}: {worst}"


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for k, v in tensors.items():
        b = np.ascontiguousarray(v, dtype="<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(len(h).to_bytes(8, "little") + h + b"".join(blobs))


LLAMA3_TEXTS = [
    "Hello world, I'M here!! don't you'LL see",
    "12345 numbers 3.14159 and 1,000,000",
    "two\n\nnewlines\r\n  indented\ttabs   trailing   ",
    "\u00fcn\u00efc\u00f6d\u00e9 \u65e5\u672c\u8a9e caf\u00e9 \u2014 na\u00efve",
    "    def f(x):\n        return x ** 2  # comment",
]


def bpe_tokenizer_check(out, text, model, regex_name, ignore_merges, normalizer, pre_want):
    """SmolLM2's vocabulary under another model's pre-tokenizer (Split regex + ByteLevel, its BPE options and a BOS
    template) on a tiny random `model` fixture: exported, then llama.cpp's token ids against the `tokenizers`
    package on the same tokenizer.json."""
    from tokenizers import Tokenizer

    fx = ROOT / "crates" / "models" / "tests" / "fixtures"
    d = out / f"{model}_{pre_want}"
    d.mkdir()
    tj = json.loads((fx / "smollm2_tokenizer" / "tokenizer.json").read_text())
    src = (ROOT / "crates" / "models" / "src" / "gguf" / "tokenizer.rs").read_text()
    regex = re.search(regex_name + r': &str =\s*r"(.*?)";', src).group(1)
    tj["normalizer"] = normalizer
    tj["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    tj["model"]["ignore_merges"] = ignore_merges
    bos = {"SpecialToken": {"id": "<|im_start|>", "type_id": 0}}
    tj["post_processor"] = {"type": "TemplateProcessing", "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
                            "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, bos,
                                     {"Sequence": {"id": "B", "type_id": 1}}],
                            "special_tokens": {"<|im_start|>": {"id": "<|im_start|>", "ids": [1],
                                                                "tokens": ["<|im_start|>"]}}}
    (d / "tokenizer.json").write_text(json.dumps(tj))
    (d / "tokenizer_config.json").write_text((fx / "smollm2_tokenizer" / "tokenizer_config.json").read_text())
    config = json.loads((fx / model / "config.json").read_text())
    config["vocab_size"] = 49152
    (d / "config.json").write_text(json.dumps(config))
    weights = read_safetensors(fx / model / "model.safetensors")
    rng = np.random.default_rng(0)
    for name in ["model.embed_tokens.weight", "lm_head.weight"]:
        if name in weights:
            weights[name] = rng.normal(0, 0.02, (49152, config["hidden_size"])).astype("<f4")
    write_safetensors(d / "model.safetensors", weights)
    path = out / f"{model}_{pre_want}.gguf"
    r = subprocess.run([str(BIN), "export", "--model", str(d), "--outtype", "f32", "--out", str(path),
                        "--window", "64", "--json"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"finetune export ({pre_want} tokenizer) failed: {r.stderr.strip()}")
    pre = gguf.GGUFReader(str(path)).fields["tokenizer.ggml.pre"].contents()
    assert pre == pre_want, pre
    ref = Tokenizer.from_file(str(d / "tokenizer.json"))
    llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    texts = LLAMA3_TEXTS + [text]
    same = sum(llm.tokenize(t.encode(), add_bos=True, special=False) == ref.encode(t).ids for t in texts)
    n_ids = sum(len(ref.encode(t).ids) for t in texts)
    print(f"{model} with the {pre!r} pre-tokenizer: llama.cpp == tokenizers on {same} of {len(texts)} texts "
          f"({n_ids} ids)")
    assert same == len(texts), f"llama.cpp tokenizes the {pre} export differently from tokenizers"


def main():
    out = Path(tempfile.mkdtemp(prefix="gguf-check-"))
    tiny_checks(out)
    bpe_tokenizer_check(out, builtin_text(), "tiny_llama", "LLAMA3_SPLIT_REGEX", True, None, "llama-bpe")
    bpe_tokenizer_check(out, builtin_text(), "tiny_qwen2", "QWEN2_SPLIT_REGEX", False, {"type": "NFC"}, "qwen2")
    text = builtin_text()
    eval_file = out / "eval.txt"
    eval_file.write_text(text)
    src = Llama(model_path=str(SOURCE), n_ctx=WINDOW, logits_all=True, verbose=False, n_threads=2)
    add_bos = src.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
    ids = src.tokenize(text.encode(), add_bos=add_bos, special=False)
    src_nll, n, src_logits = nll_windows(src, ids)
    print(f"eval text: {len(ids)} tokens, add_bos={add_bos}")
    print(f"llama.cpp on the source Q4_1 file: ppl {np.exp(src_nll):.4f}")
    rows = []
    for outtype in ["f16", "bf16", "q8_0"]:
        path = out / f"smollm2-{outtype}.gguf"
        r = subprocess.run([str(BIN), "export", "--model", str(MODEL), "--outtype", outtype, "--out", str(path),
                            "--eval-file", str(eval_file), "--json"], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"finetune export {outtype} failed: {r.stderr.strip()}")
        ours = json.loads(r.stdout.strip().splitlines()[-1])
        reader = gguf.GGUFReader(str(path))
        arch = reader.fields["general.architecture"].contents()
        types = {}
        for t in reader.tensors:
            types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        print(f"\n{outtype}: {path.stat().st_size / 1e6:.1f} MB, gguf reader: arch {arch}, "
              f"{len(reader.tensors)} tensors {types}, pre {reader.fields['tokenizer.ggml.pre'].contents()}")
        llm = Llama(model_path=str(path), n_ctx=WINDOW, logits_all=True, verbose=False, n_threads=2)
        ids2 = llm.tokenize(text.encode(), add_bos=add_bos, special=False)
        assert ids2 == ids, "llama.cpp tokenizes the export differently from the source"
        nll, n2, logits = nll_windows(llm, ids)
        llm_ppl = float(np.exp(nll))
        max_diff = float(np.abs(logits - src_logits).max())
        chat = Llama(model_path=str(path), n_ctx=512, verbose=False, n_threads=2)
        reply = chat.create_chat_completion(
            messages=[{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
            max_tokens=32, temperature=0.0)["choices"][0]["message"]["content"]
        print(f"  chat: {reply!r}")
        print(f"  ours:      ppl source {ours['ppl_source']:.4f} -> export {ours['ppl_export']:.4f} "
              f"({ours['ppl_change_percent']:+.3f} %), max |dlogit| {ours['max_abs_logit_diff']:.4f} "
              f"over {ours['eval_tokens']} tokens")
        llm_change = 100 * (llm_ppl / np.exp(src_nll) - 1)
        print(f"  llama.cpp: ppl source {np.exp(src_nll):.4f} -> export {llm_ppl:.4f} ({llm_change:+.3f} %), "
              f"max |dlogit| {max_diff:.4f} over {n2} tokens")
        print(f"  export, llama.cpp vs ours: ppl {llm_ppl:.4f} vs {ours['ppl_export']:.4f} "
              f"({100 * (llm_ppl / ours['ppl_export'] - 1):+.3f} %)")
        rows.append((outtype, ours, llm_ppl, llm_change, max_diff, float(np.exp(src_nll))))
    print("\n| outtype | ours: ppl src -> export | ours: max abs dlogit | llama.cpp: ppl src -> export | "
          "llama.cpp: max abs dlogit | export ppl llama.cpp vs ours |")
    print("|---|---|---|---|---|---|")
    for outtype, o, lp, lc, md, sp in rows:
        print(f"| {outtype} | {o['ppl_source']:.4f} -> {o['ppl_export']:.4f} ({o['ppl_change_percent']:+.3f} %) | "
              f"{o['max_abs_logit_diff']:.4f} | {sp:.4f} -> {lp:.4f} ({lc:+.3f} %) | {md:.4f} | "
              f"{100 * (lp / o['ppl_export'] - 1):+.3f} % |")


if __name__ == "__main__":
    main()
