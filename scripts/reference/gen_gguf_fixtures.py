"""Writes the GGUF fixtures under crates/models/tests/fixtures/gguf/.

Run with the torch reference venv (gguf 0.19.0, numpy, safetensors, transformers):
    /work/main/.venv-torch/bin/python scripts/reference/gen_gguf_fixtures.py
The SmolLM2 tokenizer expectations need scripts/fetch.sh SmolLM2-135M-Instruct to have run first.

Every expected value comes from the `gguf` package (GGUFWriter, gguf.quants.quantize / dequantize), numpy or
transformers, never from our own output:
- quants.gguf + quants.json + quants_ref.f32: one tensor per ggml type (F32, F16, BF16, Q8_0, Q4_0, Q4_1 through
  gguf.quants.quantize; Q4_K and Q6_K, which the package cannot quantize, from random block bytes with finite
  f16 scales) and metadata of every value type, including arrays of strings and nested arrays. The reference
  values are gguf.quants.dequantize's output, concatenated little-endian f32.
- permute.safetensors: a random matrix and convert_hf_to_gguf.py's permute() of it for q and k.
- tiny_llama.gguf + tiny_llama_hf.safetensors + tiny_llama.json: a random 2-layer Llama written the way
  convert_hf_to_gguf.py does (names, reversed dims, permuted q/k) with a tiny byte-level BPE tokenizer, the HF
  state dict it came from, the expected config, and token ids from transformers' GGUF tokenizer and from the
  `tokenizers` library with SmolLM's tokenizer.json pipeline (they differ where digits are merged).
- smollm2.json: for the real SmolLM2-135M-Instruct GGUF file, transformers' token ids, the chat template as
  GGUFReader reads it, and per tensor of transformers' GGUF-loaded model its shape, sum and sampled values.
"""

import json
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T, GGUFValueType as V
from gguf.quants import quantize, dequantize
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "crates" / "models" / "tests" / "fixtures" / "gguf"
SMOL = ROOT / "assets" / "SmolLM2-135M-Instruct"
SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
rng = np.random.default_rng(20261123)


def permute(weights, n_head, n_head_kv):
    # convert_hf_to_gguf.py, LlamaModel.permute
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


def random_f16_scales(n, lo=1e-3, hi=0.1):
    return (rng.uniform(lo, hi, size=n) * rng.choice([-1, 1], size=n)).astype(np.float16)


def kquant_blocks(qtype, n_blocks):
    """Random block bytes with the f16 fields set to finite scales (random bytes could encode inf/NaN)."""
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    if qtype == T.Q4_K:
        blocks[:, 0:2] = random_f16_scales(n_blocks).view(np.uint8).reshape(n_blocks, 2)
        blocks[:, 2:4] = np.abs(random_f16_scales(n_blocks)).view(np.uint8).reshape(n_blocks, 2)
    elif qtype == T.Q6_K:
        blocks[:, 208:210] = random_f16_scales(n_blocks).view(np.uint8).reshape(n_blocks, 2)
    else:
        raise ValueError(qtype)
    return blocks


def quants():
    w = gguf.GGUFWriter(str(OUT / "quants.gguf"), arch="test")
    manifest = {"tensors": [], "metadata": {}}
    refs = []
    offset = 0

    def add(name, qtype, shape, data):
        nonlocal offset
        if qtype in (T.F32,):
            raw, ref = data.astype(np.float32), data.astype(np.float32)
            w.add_tensor(name, raw)
        elif qtype == T.F16:
            raw = quantize(data, T.F16)
            w.add_tensor(name, raw)
            ref = dequantize(raw, T.F16)
        elif data.dtype == np.uint8:  # ready-made blocks
            raw = data
            w.add_tensor(name, raw, raw_dtype=qtype)
            ref = dequantize(raw, qtype)
        else:
            raw = quantize(data, qtype)
            w.add_tensor(name, raw, raw_dtype=qtype)
            ref = dequantize(raw, qtype)
        ref = np.ascontiguousarray(ref, dtype=np.float32).reshape(shape)
        assert np.isfinite(ref).all(), name
        refs.append(ref.reshape(-1))
        manifest["tensors"].append({"name": name, "type": qtype.name, "shape": list(shape),
                                    "offset": offset, "count": int(ref.size)})
        offset += int(ref.size)

    add("f32", T.F32, (3, 5), rng.standard_normal((3, 5)))
    add("f16", T.F16, (4, 7), rng.standard_normal((4, 7)).astype(np.float32))
    add("bf16", T.BF16, (2, 3, 8), rng.standard_normal((2, 3, 8)).astype(np.float32))
    for qt in (T.Q8_0, T.Q4_0, T.Q4_1):
        n = qt.name.lower()
        x = rng.standard_normal((6, 64)).astype(np.float32)
        x[0, :32] = 0.0  # an all-zero block (d = 0)
        x[1, :32] = 3.0  # a constant block
        add(n, qt, (6, 64), x)
    for qt in (T.Q4_K, T.Q6_K):
        add(qt.name.lower(), qt, (3, 512), kquant_blocks(qt, 6).reshape(3, -1))
    # Big enough (>= 65536 elements) for the parallel path.
    add("q4_1_big", T.Q4_1, (128, 512), rng.standard_normal((128, 512)).astype(np.float32))
    add("q6_k_big", T.Q6_K, (256, 256), kquant_blocks(T.Q6_K, 256))

    meta = {
        "t.u8": (200, V.UINT8), "t.i8": (-100, V.INT8), "t.u16": (60000, V.UINT16), "t.i16": (-30000, V.INT16),
        "t.u32": (4000000000, V.UINT32), "t.i32": (-2000000000, V.INT32), "t.f32": (1.5, V.FLOAT32),
        "t.bool": (True, V.BOOL), "t.str": ("héllo ✓", V.STRING), "t.u64": (2**63 + 5, V.UINT64),
        "t.i64": (-(2**62), V.INT64), "t.f64": (-2.25e-300, V.FLOAT64),
    }
    for k, (v, t) in meta.items():
        w.add_key_value(k, v, t)
    w.add_key_value("t.arr_str", ["a", "", "ü b", "<|im_end|>"], V.ARRAY)
    w.add_key_value("t.arr_i32", [1, -2, 3], V.ARRAY, sub_type=V.INT32)
    w.add_key_value("t.arr_f32", [0.5, -1.25], V.ARRAY, sub_type=V.FLOAT32)
    w.add_key_value("t.nested", [[1, 2, 3], [4], [5, 6]], V.ARRAY)
    w.add_key_value("t.nested_str", [["x", "y"], ["z"]], V.ARRAY)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    r = gguf.GGUFReader(str(OUT / "quants.gguf"))
    for k, f in r.fields.items():
        if k.startswith("t.") or k == "general.architecture":
            v = f.contents()
            manifest["metadata"][k] = {"types": [t.name for t in f.types], "value": v}
    # Nested arrays: GGUFReader flattens them; record the structure as written.
    manifest["metadata"]["t.nested"]["value"] = [[1, 2, 3], [4], [5, 6]]
    manifest["metadata"]["t.nested_str"]["value"] = [["x", "y"], ["z"]]
    manifest["metadata"]["t.f64"]["value"] = repr(-2.25e-300)
    manifest["tensor_count"] = len(r.tensors)
    manifest["data_offset"] = int(r.data_offset)
    manifest["alignment"] = int(r.alignment)
    for t, m in zip(r.tensors, manifest["tensors"]):
        assert t.name == m["name"]
        m["dims"] = [int(d) for d in t.shape]
        m["data_offset"] = int(t.data_offset)
    np.concatenate(refs).astype("<f4").tofile(OUT / "quants_ref.f32")
    (OUT / "quants.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")


def permute_fixture():
    n_head, n_head_kv, head_dim, cols = 4, 2, 6, 5
    q = rng.standard_normal((n_head * head_dim, cols)).astype(np.float32)
    k = rng.standard_normal((n_head_kv * head_dim, cols)).astype(np.float32)
    save_file({
        "q": q, "q_permuted": np.ascontiguousarray(permute(q, n_head, n_head)),
        "k": k, "k_permuted": np.ascontiguousarray(permute(k, n_head, n_head_kv)),
    }, str(OUT / "permute.safetensors"), metadata={"n_head": str(n_head), "n_head_kv": str(n_head_kv)})


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def tiny_llama():
    hidden, heads, kv_heads, layers, inter = 64, 4, 2, 2, 96
    head_dim = hidden // heads
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    alphabet = list(bytes_to_unicode().values())
    merges = ["Ġ t", "h e", "Ġt he", "l l", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "H e", "He ll", "Hell o", "1 2"]
    merged = ["".join(m.split(" ")) for m in merges]
    tokens = specials + alphabet + merged
    token_type = [3] * len(specials) + [1] * (len(tokens) - len(specials))
    vocab = len(tokens)
    g = lambda *s: (rng.standard_normal(s) * 0.05).astype(np.float32)
    hf = {"model.embed_tokens.weight": g(vocab, hidden), "model.norm.weight": 1 + g(hidden), "lm_head.weight": g(vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        hf.update({
            p + "self_attn.q_proj.weight": g(heads * head_dim, hidden),
            p + "self_attn.k_proj.weight": g(kv_heads * head_dim, hidden),
            p + "self_attn.v_proj.weight": g(kv_heads * head_dim, hidden),
            p + "self_attn.o_proj.weight": g(hidden, heads * head_dim),
            p + "mlp.gate_proj.weight": g(inter, hidden),
            p + "mlp.up_proj.weight": g(inter, hidden),
            p + "mlp.down_proj.weight": g(hidden, inter),
            p + "input_layernorm.weight": 1 + g(hidden),
            p + "post_attention_layernorm.weight": 1 + g(hidden),
        })
    save_file(hf, str(OUT / "tiny_llama_hf.safetensors"))

    path = OUT / "tiny_llama.gguf"
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_name("tiny llama")
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(inter)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_vocab_size(vocab)
    w.add_rope_dimension_count(head_dim)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(token_type)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    w.add_chat_template(template)
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    w.add_tensor("token_embd.weight", hf["model.embed_tokens.weight"])
    for i in range(layers):
        for h, gname in names.items():
            t = hf[f"model.layers.{i}.{h}.weight"]
            if gname == "attn_q":
                t = permute(t, heads, heads)
            elif gname == "attn_k":
                t = permute(t, heads, kv_heads)
            w.add_tensor(f"blk.{i}.{gname}.weight", np.ascontiguousarray(t))
    w.add_tensor("output_norm.weight", hf["model.norm.weight"])
    w.add_tensor("output.weight", hf["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    expected = {
        "config": {"vocab_size": vocab, "hidden_size": hidden, "intermediate_size": inter,
                   "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
                   "rms_norm_eps": 1e-6, "rope_theta": 500000.0, "max_position_embeddings": 256,
                   "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2},
        "chat_template": template,
        "texts": TINY_TEXTS,
    }
    expected["ids_transformers"] = transformers_ids(OUT, path.name, TINY_TEXTS)
    expected["ids_tokenizer_json"] = smollm_tokenizer_json_ids(tokens, token_type, merges, TINY_TEXTS)
    (OUT / "tiny_llama.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n")


TINY_TEXTS = ["Hello world", " the world", "<|im_start|>user\nHello<|im_end|>", "12 123 x2", "", "  \n\tü ✓"]
SMOL_TEXTS = ["Hello, world!", "The year 2024 has 366 days.", "  multiple   spaces\n\nnewline",
              "<|im_start|>user\nhi<|im_end|>", "naïve café 日本語 🙂", "x = f(y) + 1234567;\n\treturn x"]


def smollm_tokenizer_json_ids(tokens, token_type, merges, texts):
    """The pipeline of SmolLM's own tokenizer.json (and llama.cpp's `smollm` pre-tokenizer): digits split one by
    one, then the ByteLevel GPT-2 regex. transformers' GGUF loader leaves the digit split out (plain ByteLevel),
    which only matters when the vocabulary merges digits."""
    from tokenizers import Tokenizer, AddedToken, models, pre_tokenizers, decoders
    vocab = {t: i for i, t in enumerate(tokens)}
    tk = Tokenizer(models.BPE(vocab, [tuple(m.split(" ")) for m in merges]))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([AddedToken(t, normalized=False, special=True) for t, ty in zip(tokens, token_type) if ty == 3])
    return [tk.encode(t).ids for t in texts]


def transformers_ids(directory, filename, texts):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(directory), gguf_file=filename)
    return [tok(t)["input_ids"] for t in texts]


def smol():
    if not (SMOL / SMOL_FILE).exists():
        print(f"skipping SmolLM2 expectations: {SMOL / SMOL_FILE} missing (run scripts/fetch.sh)", file=sys.stderr)
        return
    ids = transformers_ids(SMOL, SMOL_FILE, SMOL_TEXTS)
    r = gguf.GGUFReader(str(SMOL / SMOL_FILE))
    template = r.fields["tokenizer.chat_template"].contents()
    # transformers' own GGUF loading (dequantise, reverse dims, undo the q/k permutation): per tensor its shape,
    # sum and 16 sampled values at fixed flat indices.
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(str(SMOL), gguf_file=SMOL_FILE, torch_dtype=torch.float32)
    tensors = {}
    for name, t in model.state_dict().items():
        flat = t.detach().to(torch.float32).reshape(-1)
        n = flat.numel()
        idx = sorted({(i * n) // 16 + (i * 7919) % max(1, n // 16) for i in range(16)})
        tensors[name] = {"shape": list(t.shape), "sum": float(flat.double().sum()),
                         "index": idx, "values": [float(flat[i]) for i in idx]}
    (OUT / "smollm2.json").write_text(json.dumps({
        "texts": SMOL_TEXTS, "ids": ids, "chat_template": template, "tensors": tensors,
    }, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    quants()
    permute_fixture()
    tiny_llama()
    smol()
    for p in sorted(OUT.iterdir()):
        print(f"{p.relative_to(ROOT)}: {p.stat().st_size} bytes")
