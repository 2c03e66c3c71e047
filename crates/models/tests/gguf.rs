//! GGUF reader, dequantisation, Llama mapping and tokenizer.
//!
//! Expected values come from `scripts/reference/gen_gguf_fixtures.py` (the `gguf` package's writer and
//! `gguf.quants`, numpy, `tokenizers`, transformers). The real SmolLM2 test prints SKIPPED when
//! `assets/SmolLM2-135M-Instruct` is absent (scripts/fetch.sh SmolLM2-135M-Instruct).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use finetune_models::checkpoint::load_safetensors;
use finetune_models::gguf::writer::{put_string, GgufWriter, TensorEntry};
use finetune_models::gguf::{
    dequantize, gguf_to_hf_name, load_llama, permute_rows, unpermute_rows, DequantError, GgmlType, GgufError, GgufFile,
    MetaArray, MetaValue,
};
use serde_json::Value;

/// Records the largest single allocation made by this test binary, so the malformed-file tests can check that
/// no claimed count or length made the reader allocate beyond what the file could hold. (The largest legitimate
/// allocation, SmolLM2's dequantised embedding, is 113 MB.)
struct Tracking;

static LARGEST: AtomicUsize = AtomicUsize::new(0);
const ALLOCATION_LIMIT: usize = 1 << 30;

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

fn assert_no_huge_allocation() {
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest < ALLOCATION_LIMIT, "an allocation of {largest} bytes was made");
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf")
}

fn read_json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(name)).expect("fixture present");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn parse(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
    GgufFile::from_bytes("test.gguf", bytes)
}

fn err_text(r: Result<GgufFile, GgufError>) -> String {
    match r {
        Ok(f) => panic!("expected an error, parsed {f:?}"),
        Err(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Reader and dequantisation against the gguf package

#[test]
fn dequantisation_matches_gguf_quants() {
    let manifest = read_json("quants.json");
    let file = GgufFile::open(fixtures().join("quants.gguf")).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), manifest["alignment"].as_u64().unwrap());
    assert_eq!(file.data_offset() as u64, manifest["data_offset"].as_u64().unwrap());
    assert_eq!(file.tensors().len() as u64, manifest["tensor_count"].as_u64().unwrap());
    let refs: Vec<f32> = std::fs::read(fixtures().join("quants_ref.f32"))
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut seen_types = Vec::new();
    for m in manifest["tensors"].as_array().unwrap() {
        let name = m["name"].as_str().unwrap();
        let info = file.tensor(name).unwrap_or_else(|| panic!("tensor {name}"));
        assert_eq!(format!("{:?}", info.ggml_type), m["type"].as_str().unwrap(), "{name}");
        let dims: Vec<u64> = m["dims"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
        assert_eq!(info.dims, dims, "{name}");
        let shape: Vec<usize> = m["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        assert_eq!(info.shape(), shape, "{name}");
        assert_eq!(file.data_offset() as u64 + info.offset, m["data_offset"].as_u64().unwrap(), "{name}");
        let (off, count) = (m["offset"].as_u64().unwrap() as usize, m["count"].as_u64().unwrap() as usize);
        let expected = &refs[off..off + count];
        let got = file.dequantize(info).unwrap();
        assert_eq!(got.len(), count, "{name}");
        let max = got.iter().zip(expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max <= 1e-6, "{name}: max abs diff {max}");
        // Same arithmetic in the same order: bit-identical, not just close.
        let bit_diffs = got.iter().zip(expected).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(bit_diffs, 0, "{name}: {bit_diffs} values differ in their bits");
        seen_types.push(info.ggml_type);
    }
    for t in [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        assert!(seen_types.contains(&t), "{t:?} not covered by the fixture");
    }
}

#[test]
fn parallel_and_sequential_dequantisation_agree() {
    let file = GgufFile::open(fixtures().join("quants.gguf")).unwrap();
    let info = file.tensor("q6_k_big").unwrap();
    assert!(info.n_elements >= 1 << 16);
    let whole = file.dequantize(info).unwrap();
    // Row by row (each below the parallel threshold).
    let (block, type_size) = info.ggml_type.block_layout();
    let row_bytes = info.dims[0] as usize / block * type_size;
    let by_rows: Vec<f32> = file
        .tensor_bytes(info)
        .unwrap()
        .chunks(row_bytes)
        .flat_map(|r| dequantize(info.ggml_type, r, info.dims[0] as usize).unwrap())
        .collect();
    assert_eq!(whole, by_rows);
}

fn meta_json(v: &MetaValue) -> Value {
    fn arr(a: &MetaArray) -> Value {
        match a {
            MetaArray::U8(v) => v.clone().into(),
            MetaArray::I8(v) => v.clone().into(),
            MetaArray::U16(v) => v.clone().into(),
            MetaArray::I16(v) => v.clone().into(),
            MetaArray::U32(v) => v.clone().into(),
            MetaArray::I32(v) => v.clone().into(),
            MetaArray::U64(v) => v.clone().into(),
            MetaArray::I64(v) => v.clone().into(),
            MetaArray::F32(v) => v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>().into(),
            MetaArray::F64(v) => v.clone().into(),
            MetaArray::Bool(v) => v.clone().into(),
            MetaArray::String(v) => v.clone().into(),
            MetaArray::Array(v) => Value::Array(v.iter().map(arr).collect()),
        }
    }
    match v {
        MetaValue::U8(x) => (*x).into(),
        MetaValue::I8(x) => (*x).into(),
        MetaValue::U16(x) => (*x).into(),
        MetaValue::I16(x) => (*x).into(),
        MetaValue::U32(x) => (*x).into(),
        MetaValue::I32(x) => (*x).into(),
        MetaValue::U64(x) => (*x).into(),
        MetaValue::I64(x) => (*x).into(),
        MetaValue::F32(x) => f64::from(*x).into(),
        MetaValue::F64(x) => (*x).into(),
        MetaValue::Bool(x) => (*x).into(),
        MetaValue::String(x) => x.clone().into(),
        MetaValue::Array(a) => arr(a),
    }
}

#[test]
fn metadata_of_every_type_matches_gguf_reader() {
    let manifest = read_json("quants.json");
    let file = GgufFile::open(fixtures().join("quants.gguf")).unwrap();
    let expected = manifest["metadata"].as_object().unwrap();
    assert!(expected.len() >= 17);
    for (key, e) in expected {
        let v = file.get(key).unwrap_or_else(|| panic!("key {key}"));
        let types = e["types"].as_array().unwrap();
        assert_eq!(v.type_name(), types[0].as_str().unwrap(), "{key}");
        if key == "t.f64" {
            assert_eq!(v, &MetaValue::F64(-2.25e-300));
        } else {
            assert_eq!(meta_json(v), e["value"], "{key}");
        }
    }
    assert!(matches!(file.get("t.nested"), Some(MetaValue::Array(MetaArray::Array(inner))) if inner.len() == 3));
    assert_eq!(file.get_str("general.architecture").unwrap(), Some("test"));
    assert!(file.get_u64("t.str").is_err());
}

#[test]
fn writer_round_trip_v2_v3_and_custom_alignment() {
    for (version, align) in [(2u32, None), (3, Some(64u32)), (3, Some(1))] {
        let mut w = GgufWriter::new();
        w.version = version;
        if let Some(a) = align {
            w.add_meta("general.alignment", MetaValue::U32(a));
        }
        w.add_meta("k.bools", MetaValue::Array(MetaArray::Bool(vec![true, false])));
        w.add_meta("k.empty", MetaValue::Array(MetaArray::String(vec![])));
        w.add_f32("a", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        w.add_f32("b", &[5], &[-1.0; 5]);
        w.add_tensor(
            "c",
            &[4],
            GgmlType::F16,
            [1.0f32, -2.0, 0.5, 65504.0].iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
        );
        let f = parse(w.to_bytes()).unwrap();
        assert_eq!(f.version(), version);
        assert_eq!(f.alignment(), u64::from(align.unwrap_or(32)));
        assert_eq!(f.data_offset() as u64 % f.alignment(), 0);
        let a = f.tensor("a").unwrap();
        assert_eq!((a.dims.clone(), a.shape()), (vec![3, 2], vec![2, 3]));
        assert_eq!(f.dequantize(a).unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(f.dequantize(f.tensor("b").unwrap()).unwrap(), vec![-1.0; 5]);
        assert_eq!(f.dequantize(f.tensor("c").unwrap()).unwrap(), vec![1.0, -2.0, 0.5, 65504.0]);
        assert_eq!(f.get("k.bools"), Some(&MetaValue::Array(MetaArray::Bool(vec![true, false]))));
        assert_eq!(f.get_array("k.empty").unwrap().map(MetaArray::len), Some(0));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Malformed files: clear errors, no panics, no allocations beyond the file size

fn small_valid() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_meta("general.architecture", MetaValue::String("llama".into()));
    w.add_meta("tokens", MetaValue::Array(MetaArray::String(vec!["a".into(), "bc".into()])));
    w.add_meta("nested", MetaValue::Array(MetaArray::Array(vec![MetaArray::U32(vec![1, 2])])));
    w.add_f32("t0", &[2, 2], &[1.0, 2.0, 3.0, 4.0]);
    w.add_tensor("t1", &[32], GgmlType::Q8_0, vec![0u8; 34]);
    w.to_bytes()
}

#[test]
fn every_truncation_is_an_error() {
    let full = small_valid();
    assert!(parse(full.clone()).is_ok());
    for n in 0..full.len() {
        let r = parse(full[..n].to_vec());
        assert!(r.is_err(), "truncated to {n} of {} bytes parsed", full.len());
    }
    let header = err_text(parse(full[..10].to_vec()));
    assert!(header.contains("truncated") && header.contains("test.gguf"), "{header}");
    assert_no_huge_allocation();
}

#[test]
fn corrupted_bytes_never_panic() {
    // Deterministic xorshift: flip bytes all over a valid file; every outcome must be Ok or Err, never a panic.
    let full = small_valid();
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for _ in 0..3000 {
        let mut b = full.clone();
        for _ in 0..(1 + next() % 4) {
            let i = (next() % b.len() as u64) as usize;
            b[i] = next() as u8;
        }
        if let Ok(f) = parse(b) {
            for t in f.tensors() {
                let _ = f.dequantize(t);
            }
        }
    }
    assert_no_huge_allocation();
}

fn header(tensors: u64, kvs: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&tensors.to_le_bytes());
    b.extend_from_slice(&kvs.to_le_bytes());
    b
}

#[test]
fn string_length_past_eof() {
    let mut b = small_valid();
    // The first key's length field follows the 24-byte header.
    b[24..32].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = err_text(parse(b));
    assert!(e.contains("string length 1099511627776") && e.contains("past the end"), "{e}");

    let mut b = header(0, 1);
    put_string(&mut b, "key");
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&u64::MAX.to_le_bytes());
    let e = err_text(parse(b));
    assert!(e.contains("metadata `key`") && e.contains("string length"), "{e}");
    assert_no_huge_allocation();
}

#[test]
fn huge_counts_are_rejected_before_allocating() {
    // 2^62 overflows any size computation; 2^28 strings would be a 6 GiB vector of empty strings.
    for (itype, count) in [(0u32, 1u64 << 62), (8, 1 << 62), (9, 1 << 62), (10, 1 << 62), (8, 1 << 28), (9, 1 << 28)] {
        let mut b = header(0, 1);
        put_string(&mut b, "big");
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&itype.to_le_bytes());
        b.extend_from_slice(&count.to_le_bytes());
        b.extend_from_slice(&[0u8; 64]);
        let e = err_text(parse(b));
        assert!(e.contains("metadata `big`") && e.contains(&format!("count {count}")), "{e}");
    }
    let e = err_text(parse(header(0, u64::MAX)));
    assert!(e.contains("metadata key/values") && e.contains("count"), "{e}");
    let e = err_text(parse(header(u64::MAX / 2, 0)));
    assert!(e.contains("tensor infos") && e.contains("count"), "{e}");
    assert_no_huge_allocation();
}

#[test]
fn deeply_nested_arrays_are_rejected() {
    let mut b = header(0, 1);
    put_string(&mut b, "deep");
    b.extend_from_slice(&9u32.to_le_bytes());
    for _ in 0..10_000 {
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
    }
    let e = err_text(parse(b));
    assert!(e.contains("metadata `deep`") && e.contains("nested"), "{e}");
    assert_no_huge_allocation();
}

fn with_tensor(entry: TensorEntry) -> Result<GgufFile, GgufError> {
    let mut w = GgufWriter::new();
    w.add_f32("ok", &[2], &[1.0, 2.0]);
    w.tensors.push(entry);
    parse(w.to_bytes())
}

fn entry(name: &str, dims: &[u64], raw_type: u32, data: Vec<u8>) -> TensorEntry {
    TensorEntry { name: name.into(), dims: dims.to_vec(), raw_type, data, offset: None }
}

#[test]
fn tensor_errors_name_the_tensor() {
    let e = err_text(with_tensor(entry("blk.0.weird", &[4], 99, vec![0; 16])));
    assert!(e.contains("tensor `blk.0.weird`") && e.contains("unknown ggml type 99"), "{e}");

    let mut past = entry("far", &[4], 0, vec![0; 16]);
    past.offset = Some(1 << 20);
    let e = err_text(with_tensor(past));
    assert!(e.contains("tensor `far`") && e.contains("past the end"), "{e}");

    let short = entry("short", &[1000], 0, vec![0; 16]);
    let e = err_text(with_tensor(short));
    assert!(e.contains("tensor `short`") && e.contains("past the end"), "{e}");

    let e = err_text(with_tensor(entry("huge", &[1 << 32, 1 << 32, 1 << 8], 0, vec![])));
    assert!(e.contains("tensor `huge`") && e.contains("overflow"), "{e}");
    let e = err_text(with_tensor(entry("wide", &[u64::MAX, 2], 0, vec![])));
    assert!(e.contains("tensor `wide`") && e.contains("overflow"), "{e}");

    let e = err_text(with_tensor(entry("dims5", &[1, 1, 1, 1, 1], 0, vec![0; 4])));
    assert!(e.contains("tensor `dims5`") && e.contains("5 dimensions"), "{e}");

    let e = err_text(with_tensor(entry("q", &[33], GgmlType::Q8_0.raw(), vec![0; 34])));
    assert!(e.contains("tensor `q`") && e.contains("block size 32"), "{e}");

    let mut misaligned = entry("mis", &[1], 0, vec![0; 4]);
    misaligned.offset = Some(4);
    let e = err_text(with_tensor(misaligned));
    assert!(e.contains("tensor `mis`") && e.contains("alignment"), "{e}");

    let e = err_text(with_tensor(entry("ok", &[2], 0, vec![0; 8])));
    assert!(e.contains("tensor `ok`") && e.contains("duplicate"), "{e}");
    assert_no_huge_allocation();
}

#[test]
fn header_errors() {
    let mut b = small_valid();
    b[0] = b'X';
    assert!(err_text(parse(b)).contains("not a GGUF file"));
    let mut b = small_valid();
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(err_text(parse(b)).contains("version 1 is not supported"));
    let mut b = small_valid();
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert!(err_text(parse(b)).contains("big-endian"));

    for bad in [MetaValue::U32(0), MetaValue::U32(48), MetaValue::U64(32)] {
        let mut w = GgufWriter::new();
        w.add_meta("general.alignment", bad);
        let e = err_text(parse(w.to_bytes()));
        assert!(e.contains("general.alignment") && e.contains("power of two"), "{e}");
    }
    let mut w = GgufWriter::new();
    w.add_meta("dup", MetaValue::U8(1));
    w.add_meta("dup", MetaValue::U8(2));
    assert!(err_text(parse(w.to_bytes())).contains("duplicate key"));

    let mut b = header(0, 1);
    put_string(&mut b, "kind");
    b.extend_from_slice(&77u32.to_le_bytes());
    b.extend_from_slice(&[0; 8]);
    let e = err_text(parse(b));
    assert!(e.contains("metadata `kind`") && e.contains("unknown value type 77"), "{e}");

    let e = GgufFile::open(fixtures().join("does-not-exist.gguf")).unwrap_err().to_string();
    assert!(e.contains("does-not-exist.gguf"), "{e}");
    assert_no_huge_allocation();
}

#[test]
fn unsupported_types_fail_at_dequantisation_naming_the_tensor() {
    let mut w = GgufWriter::new();
    let (_, size) = GgmlType::Q5_K.block_layout();
    w.add_tensor("blk.0.ffn_up.weight", &[256], GgmlType::Q5_K, vec![0; size]);
    let f = parse(w.to_bytes()).unwrap();
    let e = f.dequantize(&f.tensors()[0]).unwrap_err().to_string();
    assert!(e.contains("tensor `blk.0.ffn_up.weight`") && e.contains("Q5_K"), "{e}");
    assert_eq!(
        dequantize(GgmlType::Q8_0, &[0; 33], 32),
        Err(DequantError::Length { ty: GgmlType::Q8_0, n_elements: 32, expected: 34, got: 33 })
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Llama mapping

#[test]
fn permutation_matches_convert_hf_to_gguf() {
    let sd = load_safetensors(&fixtures().join("permute.safetensors")).unwrap();
    let (n_head, n_head_kv) = (4, 2);
    for (name, heads) in [("q", n_head), ("k", n_head_kv)] {
        let w = &sd[name];
        let p = &sd[&format!("{name}_permuted")];
        let (rows, cols) = (w.shape[0], w.shape[1]);
        assert_eq!(permute_rows(&w.data, rows, cols, heads).unwrap(), p.data, "{name}");
        assert_eq!(unpermute_rows(&p.data, rows, cols, heads).unwrap(), w.data, "{name}");
        assert_ne!(w.data, p.data, "{name}: the fixture must actually permute");
    }
    assert!(unpermute_rows(&[0.0; 6], 3, 2, 1).is_none());
    assert!(unpermute_rows(&[0.0; 8], 4, 2, 0).is_none());
}

#[test]
fn names_map_to_hugging_face() {
    for (g, h) in [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
        ("blk.12.attn_q.weight", "model.layers.12.self_attn.q_proj.weight"),
        ("blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight"),
        ("blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight"),
        ("blk.0.attn_output.weight", "model.layers.0.self_attn.o_proj.weight"),
        ("blk.3.ffn_gate.weight", "model.layers.3.mlp.gate_proj.weight"),
        ("blk.3.ffn_up.weight", "model.layers.3.mlp.up_proj.weight"),
        ("blk.3.ffn_down.weight", "model.layers.3.mlp.down_proj.weight"),
        ("blk.3.attn_norm.weight", "model.layers.3.input_layernorm.weight"),
        ("blk.3.ffn_norm.weight", "model.layers.3.post_attention_layernorm.weight"),
    ] {
        assert_eq!(gguf_to_hf_name(g).as_deref(), Some(h));
    }
    for bad in ["blk..attn_q.weight", "blk.x.attn_q.weight", "blk.1.attn_qkv.weight", "rope_freqs.weight", ""] {
        assert_eq!(gguf_to_hf_name(bad), None, "{bad}");
    }
}

#[test]
fn tiny_llama_equals_the_hf_state_dict() {
    let expected = read_json("tiny_llama.json");
    let hf = load_safetensors(&fixtures().join("tiny_llama_hf.safetensors")).unwrap();
    let m = load_llama(fixtures().join("tiny_llama.gguf")).unwrap();
    assert_eq!(m.state.keys().collect::<Vec<_>>(), hf.keys().collect::<Vec<_>>());
    for (k, t) in &hf {
        assert_eq!(&m.state[k], t, "{k}");
    }
    for (k, v) in expected["config"].as_object().unwrap() {
        assert_eq!(&m.config[k], v, "config.{k}");
    }
    assert_eq!(m.config["model_type"], "llama");
    assert_eq!(m.config["head_dim"], 16);
    assert_eq!(m.chat_template.as_deref(), expected["chat_template"].as_str());

    let tok = m.tokenizer.expect("tokenizer");
    assert_eq!((tok.bos_token_id, tok.eos_token_id, tok.add_bos_token), (Some(1), Some(2), false));
    let texts = expected["texts"].as_array().unwrap();
    let json_ids = expected["ids_tokenizer_json"].as_array().unwrap();
    let tf_ids = expected["ids_transformers"].as_array().unwrap();
    for ((text, want), tf) in texts.iter().zip(json_ids).zip(tf_ids) {
        let text = text.as_str().unwrap();
        let got = tok.tokenizer.encode(text, true).unwrap();
        let want: Vec<u32> = want.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        assert_eq!(got.get_ids(), &want[..], "{text:?}");
        // transformers' GGUF tokenizer leaves out the digit split; everywhere else it agrees.
        if !text.chars().any(|c| c.is_ascii_digit()) {
            assert_eq!(&Value::from(want.clone()), tf, "{text:?}");
        }
        let no_specials = !text.contains("<|");
        if no_specials {
            assert_eq!(tok.tokenizer.decode(&want, false).unwrap(), text);
        }
    }
}

fn tiny_llama_writer(tied: bool) -> GgufWriter {
    let (hidden, heads, kv, inter, vocab) = (8usize, 2u32, 1u32, 12usize, 5usize);
    let mut w = GgufWriter::new();
    w.add_meta("general.architecture", MetaValue::String("llama".into()));
    for (k, v) in [
        ("llama.embedding_length", hidden as u32),
        ("llama.block_count", 1),
        ("llama.attention.head_count", heads),
        ("llama.attention.head_count_kv", kv),
        ("llama.feed_forward_length", inter as u32),
        ("llama.context_length", 64),
    ] {
        w.add_meta(k, MetaValue::U32(v));
    }
    w.add_meta("llama.attention.layer_norm_rms_epsilon", MetaValue::F32(1e-5));
    let fill = |n: usize| (0..n).map(|i| i as f32 * 0.01).collect::<Vec<_>>();
    let hd = hidden / heads as usize;
    w.add_f32("token_embd.weight", &[vocab, hidden], &fill(vocab * hidden));
    w.add_f32("blk.0.attn_q.weight", &[hidden, hidden], &fill(hidden * hidden));
    w.add_f32("blk.0.attn_k.weight", &[hd, hidden], &fill(hd * hidden));
    w.add_f32("blk.0.attn_v.weight", &[hd, hidden], &fill(hd * hidden));
    w.add_f32("blk.0.attn_output.weight", &[hidden, hidden], &fill(hidden * hidden));
    w.add_f32("blk.0.ffn_gate.weight", &[inter, hidden], &fill(inter * hidden));
    w.add_f32("blk.0.ffn_up.weight", &[inter, hidden], &fill(inter * hidden));
    w.add_f32("blk.0.ffn_down.weight", &[hidden, inter], &fill(inter * hidden));
    w.add_f32("blk.0.attn_norm.weight", &[hidden], &fill(hidden));
    w.add_f32("blk.0.ffn_norm.weight", &[hidden], &fill(hidden));
    w.add_f32("output_norm.weight", &[hidden], &fill(hidden));
    if !tied {
        w.add_f32("output.weight", &[vocab, hidden], &fill(vocab * hidden));
    }
    w
}

fn load_written(w: &GgufWriter) -> Result<finetune_models::gguf::LlamaGguf, GgufError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    w.write(&path).unwrap();
    load_llama(&path)
}

#[test]
fn tied_embeddings_and_defaults() {
    let m = load_written(&tiny_llama_writer(true)).unwrap();
    assert_eq!(m.config["tie_word_embeddings"], true);
    assert!(!m.state.contains_key("lm_head.weight"));
    assert_eq!(m.config["vocab_size"], 5, "vocab from the embedding when no tokenizer or vocab_size");
    assert_eq!(m.config["rope_theta"], 10000.0);
    assert_eq!(m.config["rms_norm_eps"], 1e-5);
    assert!(m.tokenizer.is_none() && m.chat_template.is_none());
    let m = load_written(&tiny_llama_writer(false)).unwrap();
    assert_eq!(m.config["tie_word_embeddings"], false);
    assert_eq!(m.state["lm_head.weight"].shape, vec![5, 8]);
}

#[test]
fn llama_errors_are_clear() {
    let mut w = tiny_llama_writer(true);
    w.add_f32("blk.0.attn_qkv.weight", &[2], &[0.0, 0.0]);
    let e = load_written(&w).unwrap_err().to_string();
    assert!(e.contains("tensor `blk.0.attn_qkv.weight`") && e.contains("not a Llama tensor"), "{e}");

    let mut w = tiny_llama_writer(true);
    w.tensors.retain(|t| t.name != "blk.0.ffn_up.weight");
    let e = load_written(&w).unwrap_err().to_string();
    assert!(e.contains("tensor `blk.0.ffn_up.weight`") && e.contains("missing"), "{e}");

    let mut w = tiny_llama_writer(true);
    w.add_f32("blk.1.attn_norm.weight", &[8], &[1.0; 8]);
    let e = load_written(&w).unwrap_err().to_string();
    assert!(e.contains("tensor `blk.1.attn_norm.weight`") && e.contains("1-layer"), "{e}");

    let mut w = tiny_llama_writer(true);
    w.tensors.retain(|t| t.name != "blk.0.attn_k.weight");
    w.add_f32("blk.0.attn_k.weight", &[8, 8], &[0.0; 64]);
    let e = load_written(&w).unwrap_err().to_string();
    assert!(e.contains("tensor `blk.0.attn_k.weight`") && e.contains("[8, 8]") && e.contains("[4, 8]"), "{e}");

    let mut w = tiny_llama_writer(true);
    w.metadata[0].1 = MetaValue::String("falcon".into());
    let e = load_written(&w).unwrap_err().to_string();
    assert!(e.contains("architecture `falcon`") && e.contains("llama, qwen2"), "{e}");

    let mut w = tiny_llama_writer(true);
    w.metadata.retain(|(k, _)| k != "llama.block_count");
    let e = load_written(&w).unwrap_err().to_string();
    assert!(e.contains("metadata `llama.block_count`") && e.contains("missing"), "{e}");

    let mut w = tiny_llama_writer(true);
    w.add_meta("tokenizer.ggml.model", MetaValue::String("gpt2".into()));
    w.add_meta("tokenizer.ggml.pre", MetaValue::String("deepseek-llm".into()));
    let e = load_written(&w).unwrap_err().to_string();
    assert!(e.contains("pre-tokenizer `deepseek-llm`") && e.contains("smollm"), "{e}");

    let mut w = tiny_llama_writer(true);
    w.add_meta("tokenizer.ggml.model", MetaValue::String("llama".into()));
    let e = load_written(&w).unwrap_err().to_string();
    assert!(e.contains("tokenizer model `llama`"), "{e}");
}

// ---------------------------------------------------------------------------------------------------------------
// The real SmolLM2-135M-Instruct Q4_1 file

macro_rules! skip {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), "SKIPPED: {}", format!($($arg)*));
        return;
    }};
}

#[test]
fn smollm2_135m_instruct_q4_1() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        skip!("{} is absent; run scripts/fetch.sh SmolLM2-135M-Instruct", path.display());
    }
    let start = Instant::now();
    let m = load_llama(&path).unwrap();
    let elapsed = start.elapsed();
    let _ = writeln!(std::io::stderr(), "SmolLM2-135M-Instruct.Q4_1.gguf loaded in {elapsed:.2?}");

    let c = &m.config;
    assert_eq!(c["num_hidden_layers"], 30);
    assert_eq!(c["hidden_size"], 576);
    assert_eq!(c["num_attention_heads"], 9);
    assert_eq!(c["num_key_value_heads"], 3);
    assert_eq!(c["vocab_size"], 49152);
    assert_eq!(c["intermediate_size"], 1536);
    assert_eq!(c["rms_norm_eps"], 1e-5);
    assert_eq!(c["rope_theta"], 100000.0);
    assert_eq!(c["max_position_embeddings"], 8192);
    assert_eq!(c["tie_word_embeddings"], true);
    assert_eq!((c["bos_token_id"].as_u64(), c["eos_token_id"].as_u64()), (Some(1), Some(2)));

    assert_eq!(m.state.len(), 2 + 30 * 9);
    assert_eq!(m.state["model.embed_tokens.weight"].shape, vec![49152, 576]);
    assert_eq!(m.state["model.layers.0.self_attn.q_proj.weight"].shape, vec![576, 576]);
    assert_eq!(m.state["model.layers.29.self_attn.k_proj.weight"].shape, vec![192, 576]);
    assert_eq!(m.state["model.layers.7.mlp.down_proj.weight"].shape, vec![576, 1536]);
    let mut n = 0usize;
    for (k, t) in &m.state {
        assert!(t.data.iter().all(|x| x.is_finite()), "{k} has non-finite values");
        assert!(t.data.iter().any(|&x| x != 0.0), "{k} is all zeros");
        n += t.numel();
    }
    assert_eq!(n, 134_515_008);

    let expected = read_json("smollm2.json");
    let tok = m.tokenizer.expect("tokenizer");
    let texts = expected["texts"].as_array().unwrap();
    for (text, ids) in texts.iter().zip(expected["ids"].as_array().unwrap()) {
        let text = text.as_str().unwrap();
        let want: Vec<u32> = ids.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        assert_eq!(tok.tokenizer.encode(text, true).unwrap().get_ids(), &want[..], "{text:?}");
    }
    assert_eq!(tok.tokenizer.encode("Hello, world!", true).unwrap().get_ids(), &[19556, 28, 905, 17]);
    let template = m.chat_template.expect("chat template");
    assert_eq!(template, expected["chat_template"].as_str().unwrap());
    assert!(template.starts_with("{% for message in messages %}"));

    // Against transformers' own GGUF loading of the same file (dequantised, dims reversed, q/k un-permuted).
    let reference = expected["tensors"].as_object().unwrap();
    for (name, t) in &m.state {
        let r = reference.get(name).unwrap_or_else(|| panic!("{name} not in transformers' state dict"));
        let shape: Vec<usize> = r["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        assert_eq!(t.shape, shape, "{name}");
        for (i, v) in r["index"].as_array().unwrap().iter().zip(r["values"].as_array().unwrap()) {
            let (i, v) = (i.as_u64().unwrap() as usize, v.as_f64().unwrap());
            assert!((f64::from(t.data[i]) - v).abs() <= 1e-6, "{name}[{i}]: {} vs {v}", t.data[i]);
        }
        let sum: f64 = t.data.iter().map(|&x| f64::from(x)).sum();
        let want = r["sum"].as_f64().unwrap();
        assert!((sum - want).abs() <= 1e-7 * want.abs().max(1.0), "{name}: sum {sum} vs {want}");
    }
    // The only extra entry on the transformers side is the tied head.
    let extra: Vec<&String> = reference.keys().filter(|k| !m.state.contains_key(*k)).collect();
    assert_eq!(extra, vec!["lm_head.weight"]);
}

/// Found by `scripts/fuzz.sh`: a `llama.block_count` of billions made the loader list nine tensor names per layer
/// before looking at the file (a hang, then an allocation failure). The count is checked against the tensors.
#[test]
fn a_block_count_the_file_cannot_hold_is_refused() {
    let mut bytes = std::fs::read(fixtures().join("tiny_llama.gguf")).expect("fixture");
    let key = b"llama.block_count";
    let at = bytes.windows(key.len()).position(|w| w == key).expect("key present") + key.len();
    let ty = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let width = match ty {
        4 | 5 => 4,   // u32, i32
        10 | 11 => 8, // u64, i64
        other => panic!("unexpected type {other}"),
    };
    bytes[at + 4..at + 4 + width].copy_from_slice(&0x7fff_ffffu64.to_le_bytes()[..width]);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, &bytes).expect("write");
    let start = Instant::now();
    let Err(err) = finetune_models::gguf::load_llama(&path) else { panic!("loaded") };
    let err = err.to_string();
    assert!(err.contains("llama.block_count") && !err.contains('\n'), "{err}");
    assert!(start.elapsed().as_secs() < 10, "refused at once");
}
