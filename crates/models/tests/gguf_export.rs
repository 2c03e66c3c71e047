//! GGUF export: F16 / Q8_0 encodings against the `gguf` package (fixture from
//! `scripts/reference/gen_q8_0_fixture.py`), round trips of the tiny random Llama and GPT-2 fixtures through
//! f32 / f16 / q8_0 files (read back with our reader, logits compared with tolerances that follow from the
//! encodings' rounding), the file layout llama.cpp expects, and the real SmolLM2-135M-Instruct when
//! `assets/SmolLM2-135M-Instruct` is present (prints SKIPPED otherwise).

use std::path::{Path, PathBuf};

use finetune_models::causal::{load_causal_lm, CausalModel};
use finetune_models::gguf::export::{
    compare_models, load_export, plan_export, sequence_logits, tokenizer_meta_from_dir, tokenizer_meta_from_gguf,
    write_export, Drift, OutType,
};
use finetune_models::gguf::writer::{encode_bf16, encode_f16, quantize_q8_0, write_gguf, TensorSpec, WriteError};
use finetune_models::gguf::{GgmlType, GgufFile, MetaValue};
use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

#[test]
fn q8_0_f16_and_bf16_encodings_equal_the_gguf_package() {
    let text = std::fs::read_to_string(fixtures().join("gguf/q8_0_encode.json")).expect("fixture");
    let f: Value = serde_json::from_str(&text).expect("json");
    let input: Vec<f32> = unhex(f["input_f32_le_hex"].as_str().expect("input"))
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(input.len(), 576);
    let q8 = quantize_q8_0(&input).expect("multiple of 32");
    let want = unhex(f["q8_0_hex"].as_str().expect("q8_0"));
    assert_eq!(q8.len(), want.len());
    for (b, (x, y)) in q8.chunks(34).zip(want.chunks(34)).enumerate() {
        assert_eq!(x, y, "Q8_0 block {b} differs");
    }
    assert_eq!(encode_f16(&input), unhex(f["f16_hex"].as_str().expect("f16")));
    assert_eq!(encode_bf16(&input), unhex(f["bf16_hex"].as_str().expect("bf16")));
    assert!(quantize_q8_0(&input[..33]).is_none());
}

#[test]
fn writer_checks_sizes_and_aligns() {
    let spec = |name: &str, dims: Vec<u64>, ty| TensorSpec { name: name.into(), dims, ty };
    let meta = vec![("general.architecture".to_owned(), MetaValue::String("test".into()))];
    // Q8_0 rows must be whole blocks.
    let mut out = Vec::new();
    let e = write_gguf::<_, WriteError>(&mut out, &meta, &[spec("a", vec![33, 2], GgmlType::Q8_0)], |_| Ok(vec![]))
        .unwrap_err();
    assert!(e.to_string().contains("tensor `a`") && e.to_string().contains("block size 32"), "{e}");
    // Wrong byte count from the callback.
    let e = write_gguf::<_, WriteError>(&mut out, &meta, &[spec("b", vec![4], GgmlType::F32)], |_| Ok(vec![0; 15]))
        .unwrap_err();
    assert!(e.to_string().contains("tensor `b`") && e.to_string().contains("15 bytes"), "{e}");
    // Overflowing dims are refused before anything is allocated.
    let e =
        write_gguf::<_, WriteError>(&mut out, &meta, &[spec("c", vec![u64::MAX, 2], GgmlType::F32)], |_| Ok(vec![]))
            .unwrap_err();
    assert!(e.to_string().contains("overflow"), "{e}");
    // Duplicate names.
    let two = [spec("d", vec![1], GgmlType::F32), spec("d", vec![1], GgmlType::F32)];
    let e = write_gguf::<_, WriteError>(&mut out, &meta, &two, |_| Ok(vec![0; 4])).unwrap_err();
    assert!(e.to_string().contains("written twice"), "{e}");
    // A valid file: every tensor starts on a 32-byte boundary and reads back.
    let mut out = Vec::new();
    let ts = [spec("x", vec![3], GgmlType::F32), spec("y", vec![32, 2], GgmlType::Q8_0)];
    let vals: Vec<f32> = (0..64).map(|i| i as f32 / 7.0 - 4.0).collect();
    let n = write_gguf::<_, WriteError>(&mut out, &meta, &ts, |i| {
        Ok(if i == 0 {
            encode_f16(&[0.0; 2]).into_iter().chain([0; 8]).collect()
        } else {
            quantize_q8_0(&vals).unwrap()
        })
    })
    .unwrap();
    assert_eq!(n as usize, out.len());
    let file = GgufFile::from_bytes("mem.gguf", out).expect("valid GGUF");
    assert_eq!(file.data_offset() % 32, 0);
    for t in file.tensors() {
        assert_eq!(t.offset % 32, 0, "{}", t.name);
    }
    let y = file.dequantize(file.tensor("y").unwrap()).unwrap();
    for (a, b) in y.iter().zip(&vals) {
        assert!((a - b).abs() <= 5.0 / 254.0 + 1e-3, "{a} vs {b}");
    }
}

/// Writes `model` as `out` into `dir`, reads it back and compares on `ids`.
fn round_trip(
    model: &CausalModel,
    config: &Value,
    out: OutType,
    dir: &Path,
    ids: &[u32],
    tokenizer: Vec<(String, MetaValue)>,
) -> (PathBuf, Drift) {
    let plan = plan_export(model, config, out, "tiny", tokenizer).expect("plan");
    let path = dir.join(format!("model-{}.gguf", out.name()));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    write_export(&plan, model, &mut f).expect("write");
    drop(f);
    let back = load_export(&path, &plan, model).expect("read back");
    let drift = compare_models(model, &back, ids, 16).expect("compare");
    (path, drift)
}

fn max_abs_logit(model: &CausalModel, ids: &[u32]) -> f32 {
    sequence_logits(model, ids).unwrap().iter().fold(0f32, |m, x| m.max(x.abs()))
}

/// Tolerance on the logits of a model whose `n_mat` weight matrices on the path to the logits each carry a
/// relative rounding error `u`: the errors add up to first order, so |Δlogit| ≲ n_mat · u · max|logit|, with a
/// factor 4 margin for the accumulation of many small terms.
fn tolerance(out: OutType, n_mat: usize, scale: f32) -> f32 {
    let u = match out {
        OutType::F32 => return 1e-5,
        // f16: 11 significant bits, bf16: 8, round to nearest.
        OutType::F16 => 2f32.powi(-11),
        OutType::BF16 => 2f32.powi(-8),
        // q8_0: |error| ≤ d/2 = amax/254 per block; relative to the block's largest value.
        OutType::Q8_0 => 1.0 / 254.0,
    };
    4.0 * n_mat as f32 * u * scale
}

fn ids(vocab: u32, n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + 11) % vocab).collect()
}

#[test]
fn tiny_llama_round_trips_f32_f16_bf16_q8_0() {
    let ck = load_causal_lm(fixtures().join("tiny_llama").to_str().unwrap()).expect("tiny llama");
    let dir = tempfile::tempdir().unwrap();
    let ids = ids(128, 40);
    let scale = max_abs_logit(&ck.model, &ids);
    for out in [OutType::F32, OutType::F16, OutType::BF16, OutType::Q8_0] {
        let (path, d) = round_trip(&ck.model, &ck.config, out, dir.path(), &ids, vec![]);
        // 2 layers × 7 matrices + the tied head.
        let tol = tolerance(out, 15, scale);
        println!(
            "{out:?}: max |Δlogit| {} (tolerance {tol}), ppl {} -> {}",
            d.max_abs_logit_diff, d.ppl_source, d.ppl_export
        );
        assert!(d.max_abs_logit_diff <= tol, "{out:?}: {} > {tol}", d.max_abs_logit_diff);
        if out == OutType::F32 {
            assert_eq!(d.max_abs_logit_diff, 0.0, "f32 export must be exact");
        }
        assert!(d.relative_ppl_change().abs() < 0.03);

        let file = GgufFile::open(&path).unwrap();
        let s = |k: &str| file.get_str(k).unwrap().map(str::to_owned);
        let u = |k: &str| file.get_u64(k).unwrap();
        assert_eq!(s("general.architecture").as_deref(), Some("llama"));
        assert_eq!(u("general.file_type"), Some(u64::from(out.file_type())));
        assert_eq!(u("general.quantization_version"), Some(2));
        assert_eq!(u("llama.block_count"), Some(2));
        assert_eq!(u("llama.context_length"), Some(64));
        assert_eq!(u("llama.embedding_length"), Some(32));
        assert_eq!(u("llama.feed_forward_length"), Some(64));
        assert_eq!(u("llama.attention.head_count"), Some(4));
        assert_eq!(u("llama.attention.head_count_kv"), Some(2));
        assert_eq!(u("llama.rope.dimension_count"), Some(8));
        assert_eq!(file.get_f64("llama.rope.freq_base").unwrap(), Some(10000.0));
        assert!((file.get_f64("llama.attention.layer_norm_rms_epsilon").unwrap().unwrap() - 1e-6).abs() < 1e-12);
        // Tied embeddings: no output.weight. Norms F32, matrices the requested type.
        assert!(file.tensor("output.weight").is_none());
        assert_eq!(file.tensors().len(), 2 + 2 * 9);
        assert_eq!(file.tensor("blk.1.ffn_norm.weight").unwrap().ggml_type, GgmlType::F32);
        let want = match out {
            OutType::F32 => GgmlType::F32,
            OutType::F16 => GgmlType::F16,
            OutType::BF16 => GgmlType::BF16,
            OutType::Q8_0 => GgmlType::Q8_0,
        };
        for n in ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.ffn_down.weight"] {
            assert_eq!(file.tensor(n).unwrap().ggml_type, want, "{n}");
        }
        assert_eq!(file.tensor("blk.0.attn_k.weight").unwrap().dims, vec![32, 16]);
        assert_eq!(file.data_offset() % 32, 0);
        // The q rows are permuted as convert_hf_to_gguf.py does: GGUF row 1 is HF row head_dim / 2.
        if out == OutType::F32 {
            let q = file.dequantize(file.tensor("blk.0.attn_q.weight").unwrap()).unwrap();
            let hf = ck.model.store().param("model.layers.0.self_attn.q_proj.weight").unwrap();
            assert_eq!(&q[32..64], &hf[4 * 32..5 * 32]);
            // And the general loader reads it as a Llama.
            let back = load_causal_lm(path.to_str().unwrap()).expect("load_causal_lm reads the export");
            assert_eq!(back.config["num_key_value_heads"], json!(2));
        }
    }
}

#[test]
fn tiny_gpt2_round_trips_f32_f16_q8_0() {
    let ck = load_causal_lm(fixtures().join("tiny_gpt2").to_str().unwrap()).expect("tiny gpt2");
    let dir = tempfile::tempdir().unwrap();
    let ids = ids(128, 40);
    let scale = max_abs_logit(&ck.model, &ids);
    for out in [OutType::F32, OutType::F16, OutType::Q8_0] {
        let (path, d) = round_trip(&ck.model, &ck.config, out, dir.path(), &ids, vec![]);
        // 2 layers × 4 matrices + the tied head.
        let tol = tolerance(out, 9, scale);
        println!(
            "{out:?}: max |Δlogit| {} (tolerance {tol}), ppl {} -> {}",
            d.max_abs_logit_diff, d.ppl_source, d.ppl_export
        );
        assert!(d.max_abs_logit_diff <= tol, "{out:?}: {} > {tol}", d.max_abs_logit_diff);
        if out == OutType::F32 {
            assert_eq!(d.max_abs_logit_diff, 0.0, "f32 export must be exact");
        }
        let file = GgufFile::open(&path).unwrap();
        assert_eq!(file.get_str("general.architecture").unwrap(), Some("gpt2"));
        assert_eq!(file.get_u64("gpt2.context_length").unwrap(), Some(64));
        assert_eq!(file.get_u64("gpt2.feed_forward_length").unwrap(), Some(64));
        assert!(file.get_f64("gpt2.attention.layer_norm_epsilon").unwrap().is_some());
        assert!(file.tensor("output.weight").is_none());
        assert_eq!(file.tensor("position_embd.weight").unwrap().ggml_type, GgmlType::F32);
        assert_eq!(file.tensor("blk.0.attn_qkv.bias").unwrap().ggml_type, GgmlType::F32);
        // Conv1D [in, out] = [32, 96] is stored as [out, in]: GGUF dims (innermost first) [32, 96].
        let qkv = file.tensor("blk.0.attn_qkv.weight").unwrap();
        assert_eq!(qkv.dims, vec![32, 96]);
        if out == OutType::F32 {
            let g = file.dequantize(qkv).unwrap();
            let hf = ck.model.store().param("transformer.h.0.attn.c_attn.weight").unwrap();
            // GGUF row r (an output) column c (an input) = HF [c, r].
            assert_eq!(g[5 * 32 + 7], hf[7 * 96 + 5]);
        }
    }
}

#[test]
fn tokenizer_metadata_from_a_byte_level_bpe_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut vocab = serde_json::Map::new();
    for (i, t) in ["a", "b", "ab", "Ġ", "Ġa"].iter().enumerate() {
        vocab.insert((*t).into(), json!(i));
    }
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let tj = json!({
        "added_tokens": [
            {"id": 5, "content": "<|im_start|>", "special": true},
            {"id": 6, "content": "<|im_end|>", "special": true},
            {"id": 7, "content": "hello▁world", "special": false}
        ],
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level]},
        "decoder": byte_level,
        "model": {"type": "BPE", "vocab": vocab, "merges": [["a", "b"], "Ġ a"]}
    });
    std::fs::write(dir.path().join("tokenizer.json"), tj.to_string()).unwrap();
    let tc = json!({"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"}, "chat_template": "{{x}}",
                    "add_bos_token": false});
    std::fs::write(dir.path().join("tokenizer_config.json"), tc.to_string()).unwrap();
    let config = json!({"model_type": "llama", "vocab_size": 10, "pad_token_id": 6});
    let meta = tokenizer_meta_from_dir(dir.path(), &config).expect("tokenizer metadata");
    let get = |k: &str| meta.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    assert_eq!(get("tokenizer.ggml.model"), Some(MetaValue::String("gpt2".into())));
    assert_eq!(get("tokenizer.ggml.pre"), Some(MetaValue::String("smollm".into())));
    let Some(MetaValue::Array(finetune_models::gguf::MetaArray::String(tokens))) = get("tokenizer.ggml.tokens") else {
        panic!("tokens")
    };
    assert_eq!(tokens, ["a", "b", "ab", "Ġ", "Ġa", "<|im_start|>", "<|im_end|>", "hello world", "[PAD8]", "[PAD9]"]);
    let Some(MetaValue::Array(finetune_models::gguf::MetaArray::I32(types))) = get("tokenizer.ggml.token_type") else {
        panic!("types")
    };
    assert_eq!(types, [1, 1, 1, 1, 1, 3, 3, 4, 4, 4]);
    let Some(MetaValue::Array(finetune_models::gguf::MetaArray::String(merges))) = get("tokenizer.ggml.merges") else {
        panic!("merges")
    };
    assert_eq!(merges, ["a b", "Ġ a"]);
    assert_eq!(get("tokenizer.ggml.bos_token_id"), Some(MetaValue::U32(5)));
    assert_eq!(get("tokenizer.ggml.eos_token_id"), Some(MetaValue::U32(6)));
    assert_eq!(get("tokenizer.ggml.padding_token_id"), Some(MetaValue::U32(6)));
    assert_eq!(get("tokenizer.ggml.add_bos_token"), Some(MetaValue::Bool(false)));
    assert_eq!(get("tokenizer.chat_template"), Some(MetaValue::String("{{x}}".into())));
    // Not a BPE: one line naming the file.
    std::fs::write(dir.path().join("tokenizer.json"), json!({"model": {"type": "Unigram"}}).to_string()).unwrap();
    let e = tokenizer_meta_from_dir(dir.path(), &config).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json") && e.contains("byte-level BPE") && !e.contains('\n'), "{e}");
}

#[test]
fn real_smollm2_exports_with_small_drift() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/SmolLM2-135M-Instruct");
    if !dir.is_dir() {
        println!("SKIPPED: assets/SmolLM2-135M-Instruct absent (scripts/fetch.sh SmolLM2-135M-Instruct)");
        return;
    }
    let ck = load_causal_lm(dir.to_str().unwrap()).expect("SmolLM2");
    let finetune_models::causal::Source::Gguf { path: src, .. } = &ck.source else { panic!("expected the GGUF asset") };
    let src_file = GgufFile::open(src).unwrap();
    let tokenizer = tokenizer_meta_from_gguf(&src_file);
    let tok = finetune_models::causal_tokenizer::CausalTokenizer::from_gguf(src).unwrap();
    let text = "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of \
                foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light.";
    let ids = finetune_data::sft::CausalTokenize::encode_plain(&tok, text).unwrap();
    let out = tempfile::tempdir().unwrap();
    for (outtype, limit) in [(OutType::F16, 0.01), (OutType::Q8_0, 0.03)] {
        let plan = plan_export(&ck.model, &ck.config, outtype, "SmolLM2-135M-Instruct", tokenizer.clone()).unwrap();
        let path = out.path().join("smollm2.gguf");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        write_export(&plan, &ck.model, &mut f).unwrap();
        drop(f);
        let back = load_export(&path, &plan, &ck.model).unwrap();
        let d = compare_models(&ck.model, &back, &ids, 64).unwrap();
        println!(
            "SmolLM2 {outtype:?}: max |Δlogit| {:.4}, ppl {:.4} -> {:.4} ({:+.3} %)",
            d.max_abs_logit_diff,
            d.ppl_source,
            d.ppl_export,
            100.0 * d.relative_ppl_change()
        );
        assert!(d.relative_ppl_change().abs() < limit, "{outtype:?}: {d:?}");
        let file = GgufFile::open(&path).unwrap();
        assert_eq!(file.get_str("tokenizer.ggml.pre").unwrap(), Some("smollm"));
        assert!(file.get_str("tokenizer.chat_template").unwrap().is_some_and(|t| t.contains("<|im_start|>")));
        // The tokenizer read back from the export gives the same ids.
        let tok2 = finetune_models::causal_tokenizer::CausalTokenizer::from_gguf(&path).unwrap();
        assert_eq!(finetune_data::sft::CausalTokenize::encode_plain(&tok2, text).unwrap(), ids);
    }
}

#[test]
fn tiny_qwen2_round_trips_with_biases_and_no_permutation() {
    let ck = load_causal_lm(fixtures().join("tiny_qwen2").to_str().unwrap()).expect("tiny qwen2");
    let dir = tempfile::tempdir().unwrap();
    let ids = ids(128, 40);
    let scale = max_abs_logit(&ck.model, &ids);
    for out in [OutType::F32, OutType::Q8_0] {
        let (path, d) = round_trip(&ck.model, &ck.config, out, dir.path(), &ids, vec![]);
        assert!(d.max_abs_logit_diff <= tolerance(out, 15, scale), "{out:?}: {d:?}");
        let file = GgufFile::open(&path).unwrap();
        assert_eq!(file.get_str("general.architecture").unwrap(), Some("qwen2"));
        assert!(file.get_u64("qwen2.attention.head_count_kv").unwrap().is_some());
        assert_eq!(file.tensor("blk.0.attn_q.bias").unwrap().ggml_type, GgmlType::F32);
        if out == OutType::F32 {
            assert_eq!(d.max_abs_logit_diff, 0.0);
            // Qwen2 keeps the HF row order.
            let q = file.dequantize(file.tensor("blk.0.attn_q.weight").unwrap()).unwrap();
            assert_eq!(q, ck.model.store().param("model.layers.0.self_attn.q_proj.weight").unwrap());
        }
    }
}

/// A copy of a tiny fixture whose `config.json` has `rope_parameters` replaced.
fn with_rope(fixture: &str, rope: Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join(fixture);
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config["rope_parameters"] = rope;
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    std::fs::copy(src.join("model.safetensors"), dir.path().join("model.safetensors")).unwrap();
    dir
}

#[test]
fn llama3_rope_scaling_exports_as_rope_freqs_and_reads_back() {
    // Llama 3.1's scaling with original_max_position_embeddings 16, so the 40-token sequence runs past it.
    let rope = json!({"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16});
    let src = with_rope("tiny_llama", rope);
    let ck = load_causal_lm(src.path().to_str().unwrap()).expect("tiny llama with llama3 rope");
    let plain = load_causal_lm(fixtures().join("tiny_llama").to_str().unwrap()).unwrap();
    let ids = ids(128, 40);
    // The scaling moves the logits, so a reader that dropped it would fail the exact comparison below.
    let moved = compare_models(&plain.model, &ck.model, &ids, 40).unwrap().max_abs_logit_diff;
    assert!(moved > 1e-3, "the scaling changes nothing on this sequence ({moved})");

    let out = tempfile::tempdir().unwrap();
    let (path, d) = round_trip(&ck.model, &ck.config, OutType::F32, out.path(), &ids, vec![]);
    assert_eq!(d.max_abs_logit_diff, 0.0, "the GGUF reader must rebuild the same rotary frequencies");
    let file = GgufFile::open(&path).unwrap();
    let t = file.tensor("rope_freqs.weight").expect("rope_freqs.weight written");
    assert_eq!((t.ggml_type, t.dims.clone()), (GgmlType::F32, vec![4]));
    // llama.cpp's convention (divisors): wavelengths 2π·10000^(i/4) = 6.3, 63, 628, 6283 against the
    // high/low-frequency wavelengths 16/4 and 16/1, so the first lies in between and the others are divided by
    // factor. Their values in the real runtime: scripts/reference/gguf_check.sh (llama.cpp's logits on
    // tiny_llama3 against transformers').
    let r = file.dequantize(t).unwrap();
    assert!(r[0] > 1.0 && r[0] < 8.0 && r[1..] == [8.0, 8.0, 8.0], "{r:?}");
    // The general loader reads the export with transformers' llama3 parameters back.
    let back = load_causal_lm(path.to_str().unwrap()).expect("load_causal_lm reads the export");
    assert_eq!(
        back.config["rope_scaling"],
        json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16})
    );

    // llama.cpp's qwen2 reads no divisors: its rope scaling is refused rather than dropped.
    let rope = json!({"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16});
    let q = with_rope("tiny_qwen2", rope);
    let qk = load_causal_lm(q.path().to_str().unwrap()).expect("tiny qwen2 with llama3 rope");
    let e = plan_export(&qk.model, &qk.config, OutType::F32, "q", vec![]).unwrap_err().to_string();
    assert!(e.contains("rope scaling `llama3`") && e.contains("qwen2"), "{e}");
}

/// SmolLM2's vocabulary under another model's pre-tokenizer, BPE options and BOS template, as that model's
/// `tokenizer.json` would have them.
fn retokenized(dir: &Path, regex: &str, ignore_merges: bool, normalizer: Value) -> Value {
    let fixture = fixtures().join("smollm2_tokenizer");
    let mut tj: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("tokenizer.json")).unwrap()).unwrap();
    tj["normalizer"] = normalizer;
    tj["pre_tokenizer"] = json!({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]});
    tj["model"]["ignore_merges"] = json!(ignore_merges);
    tj["post_processor"] = json!({"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                  {"SpecialToken": {"id": "<|im_start|>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
         "special_tokens": {"<|im_start|>": {"id": "<|im_start|>", "ids": [1], "tokens": ["<|im_start|>"]}}}]});
    std::fs::write(dir.join("tokenizer.json"), tj.to_string()).unwrap();
    std::fs::copy(fixture.join("tokenizer_config.json"), dir.join("tokenizer_config.json")).unwrap();
    tj
}

/// A GGUF file holding only `meta`, and the tokenizer our reader builds from it.
fn gguf_tokenizer_of(path: &Path, meta: &[(String, MetaValue)]) -> tokenizers::Tokenizer {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    write_gguf(&mut f, meta, &[], |_| Ok::<Vec<u8>, WriteError>(Vec::new())).unwrap();
    drop(f);
    finetune_models::gguf::gguf_tokenizer(&GgufFile::open(path).unwrap()).unwrap().expect("tokenizer").tokenizer
}

#[test]
fn llama3_and_qwen2_tokenizers_export_and_read_back_the_same() {
    use finetune_models::gguf::{LLAMA3_SPLIT_REGEX, QWEN2_SPLIT_REGEX};
    let texts = [
        "Hello world, I'M here!! don't you'LL see",
        "12345 numbers 3.14159 and 1,000,000",
        "two\n\nnewlines\r\n  indented\ttabs   trailing   ",
        "ünïcödé 日本語のテキスト café — naïve, and decomposed: cafe\u{301}",
        "<|im_start|>user\nhi<|im_end|>",
        "    def f(x):\n        return x ** 2  # comment",
    ];
    let nfc = json!({"type": "NFC"});
    for (model_type, regex, ignore_merges, normalizer, pre) in [
        ("llama", LLAMA3_SPLIT_REGEX, true, Value::Null, "llama-bpe"),
        ("qwen2", QWEN2_SPLIT_REGEX, false, nfc, "qwen2"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut tj = retokenized(dir.path(), regex, ignore_merges, normalizer);
        let config = json!({"model_type": model_type, "vocab_size": 49152});
        let meta = tokenizer_meta_from_dir(dir.path(), &config).expect("tokenizer metadata");
        let get = |k: &str| meta.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(get("tokenizer.ggml.pre"), Some(MetaValue::String(pre.into())));
        // No add_bos_token in tokenizer_config.json: taken from the template, as gguf's SpecialVocab does.
        assert_eq!(get("tokenizer.ggml.add_bos_token"), Some(MetaValue::Bool(true)));

        let read = gguf_tokenizer_of(&dir.path().join("tok.gguf"), &meta);
        let reference = tokenizers::Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
        for text in texts {
            let want = reference.encode(text, true).unwrap();
            let got = read.encode(text, true).unwrap();
            assert_eq!(got.get_ids(), want.get_ids(), "{pre}: {text:?}");
            assert_eq!(got.get_ids()[0], 1, "BOS first: {text:?}");
        }
        // The same vocabulary with the GPT-2 split differs on these texts: the comparison can fail.
        let mut gpt2 = meta.clone();
        for (k, v) in &mut gpt2 {
            if k == "tokenizer.ggml.pre" {
                *v = MetaValue::String("gpt-2".into());
            }
        }
        let other = gguf_tokenizer_of(&dir.path().join("tok2.gguf"), &gpt2);
        assert!(texts
            .iter()
            .any(|t| { other.encode(*t, true).unwrap().get_ids() != reference.encode(*t, true).unwrap().get_ids() }));

        // For a llama model, a pre-tokenizer llama.cpp has no name for is refused, naming the file.
        if model_type == "llama" {
            tj["pre_tokenizer"] = json!({"type": "Whitespace"});
            std::fs::write(dir.path().join("tokenizer.json"), tj.to_string()).unwrap();
            let e = tokenizer_meta_from_dir(dir.path(), &config).unwrap_err().to_string();
            assert!(e.contains("tokenizer.json") && e.contains("pre_tokenizer") && !e.contains('\n'), "{e}");
        }
    }
}

#[test]
fn tiny_phi_round_trips_as_phi2() {
    let ck = load_causal_lm(fixtures().join("tiny_phi").to_str().unwrap()).expect("tiny phi");
    let dir = tempfile::tempdir().unwrap();
    let ids = ids(128, 40);
    let scale = max_abs_logit(&ck.model, &ids);
    for out in [OutType::F32, OutType::F16, OutType::Q8_0] {
        let (path, d) = round_trip(&ck.model, &ck.config, out, dir.path(), &ids, vec![]);
        // 2 layers × 6 matrices + the head.
        let tol = tolerance(out, 13, scale);
        assert!(d.max_abs_logit_diff <= tol, "{out:?}: {} > {tol}", d.max_abs_logit_diff);
        let file = GgufFile::open(&path).unwrap();
        let u = |k: &str| file.get_u64(k).unwrap();
        assert_eq!(file.get_str("general.architecture").unwrap(), Some("phi2"));
        assert_eq!(u("phi2.block_count"), Some(2));
        assert_eq!(u("phi2.attention.head_count"), Some(4));
        assert_eq!(u("phi2.attention.head_count_kv"), Some(2));
        // partial_rotary_factor 0.5 of head_dim 8.
        assert_eq!(u("phi2.rope.dimension_count"), Some(4));
        assert_eq!(file.get_bool("tokenizer.ggml.add_bos_token").unwrap(), Some(false));
        // Norms and biases F32, the head and its bias present, 2 + 14 per layer + 4 tensors.
        assert_eq!(file.tensors().len(), 1 + 2 * 14 + 4);
        for n in ["blk.0.attn_norm.bias", "blk.1.ffn_down.bias", "output.bias", "output_norm.weight"] {
            assert_eq!(file.tensor(n).unwrap().ggml_type, GgmlType::F32, "{n}");
        }
        if out == OutType::F32 {
            assert_eq!(d.max_abs_logit_diff, 0.0, "f32 export must be exact");
            // No permutation: the q rows in HF order.
            let q = file.dequantize(file.tensor("blk.0.attn_q.weight").unwrap()).unwrap();
            assert_eq!(q, ck.model.store().param("model.layers.0.self_attn.q_proj.weight").unwrap());
        }
    }
}
