//! Checkpoint loading and saving: fixtures written by scripts/reference/gen_io_fixtures.py with torch, malformed
//! files built here, and the real MiniLM checkpoint when scripts/fetch.sh has fetched it.

use std::io::Write;
use std::path::{Path, PathBuf};

use finetune_engine::{StateDict, Tensor};
use finetune_models::checkpoint::{
    load_pretrained, load_pytorch_bin, load_safetensors, load_state_dict, resolve_in, save_pretrained,
    save_safetensors, CheckpointError,
};
use finetune_models::config::EncoderConfig;
use serde_json::{json, Value};

/// Writes to stderr directly (not through `eprintln!`, which the test harness captures) so that a skipped
/// real-model test is visible in a normal `cargo test` run.
macro_rules! skipped {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "SKIPPED: {}", format!($($arg)*));
    }};
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/io").join(name)
}

fn minilm_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/all-MiniLM-L6-v2");
    if dir.join("model.safetensors").is_file() {
        Some(dir)
    } else {
        skipped!("{} is absent; run scripts/fetch.sh to test on the real MiniLM", dir.display());
        None
    }
}

/// Compares loaded tensors with the values torch recorded, bit for bit.
fn check_against_expected(sd: &StateDict) {
    let text = std::fs::read_to_string(fixture("tiny_expected.json")).unwrap();
    let expected: Value = serde_json::from_str(&text).unwrap();
    let tensors = expected["tensors"].as_object().unwrap();
    let mut names: Vec<&String> = sd.keys().collect();
    names.sort();
    let mut want: Vec<&String> = tensors.keys().collect();
    want.sort();
    assert_eq!(names, want, "tensor names (integer buffers must be skipped)");
    for (name, e) in tensors {
        let t = &sd[name];
        let shape: Vec<usize> = e["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(t.shape, shape, "{name}: shape");
        let values: Vec<f32> = e["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(t.data.len(), values.len(), "{name}: element count");
        for (i, (a, b)) in t.data.iter().zip(&values).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "{name}[{i}]: {a} != {b}");
        }
    }
}

#[test]
fn tiny_bin_matches_torch_including_views_and_half_types() {
    let sd = load_pytorch_bin(&fixture("tiny.bin")).unwrap();
    check_against_expected(&sd);
    // The views really are views of one storage: the transpose of base equals base transposed.
    let base = &sd["view.base"];
    let tr = &sd["view.transposed"];
    assert_eq!(tr.shape, vec![6, 4]);
    for i in 0..6 {
        for j in 0..4 {
            assert_eq!(tr.data[i * 4 + j], base.data[j * 6 + i]);
        }
    }
}

#[test]
fn tiny_safetensors_matches_torch() {
    let sd = load_safetensors(&fixture("tiny.safetensors")).unwrap();
    check_against_expected(&sd);
}

#[test]
fn bin_and_safetensors_agree() {
    assert_eq!(
        load_pytorch_bin(&fixture("tiny.bin")).unwrap(),
        load_safetensors(&fixture("tiny.safetensors")).unwrap()
    );
}

#[test]
fn pickle_calling_os_system_is_refused() {
    let e = load_pytorch_bin(&fixture("malicious_os_system.bin")).unwrap_err();
    match &e {
        // os.system pickles as posix.system on Linux.
        CheckpointError::RefusedGlobal { global, .. } => assert!(global.ends_with(".system"), "{global}"),
        other => panic!("expected a refused global, got {other}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("malicious_os_system.bin") && msg.contains("system"), "{msg}");
}

#[test]
fn pickle_calling_eval_is_refused() {
    let e = load_pytorch_bin(&fixture("malicious_eval.bin")).unwrap_err();
    assert!(
        matches!(&e, CheckpointError::RefusedGlobal { global, .. } if global.ends_with("builtin__.eval") || global == "builtins.eval"),
        "{e}"
    );
}

#[test]
fn legacy_torch_format_is_a_clear_error() {
    let e = load_pytorch_bin(&fixture("legacy.bin")).unwrap_err();
    assert!(matches!(e, CheckpointError::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("legacy"), "{e}");
}

// ---- hand-built torch zips ----

fn torch_zip(dir: &Path, pkl: &[u8], storages: &[(&str, &[u8])]) -> PathBuf {
    let path = dir.join("model.bin");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/data.pkl", opts).unwrap();
    z.write_all(pkl).unwrap();
    z.start_file("archive/byteorder", opts).unwrap();
    z.write_all(b"little").unwrap();
    for (key, bytes) in storages {
        z.start_file(format!("archive/data/{key}"), opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
    path
}

/// Protocol-2 pickle of {"w": _rebuild_tensor_v2(storage(FloatStorage, "0", numel), offset, size, stride, ...)}.
fn tensor_pickle(numel: u8, offset: u8, size: &[u8], stride: &[u8]) -> Vec<u8> {
    let mut p = b"\x80\x02}q\x00X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n(".to_vec();
    p.extend_from_slice(b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK");
    p.push(numel);
    p.extend_from_slice(b"tQK");
    p.push(offset);
    p.push(b'(');
    for &s in size {
        p.extend_from_slice(&[b'K', s]);
    }
    p.extend_from_slice(b"t(");
    for &s in stride {
        p.extend_from_slice(&[b'K', s]);
    }
    p.extend_from_slice(b"t\x89ccollections\nOrderedDict\n)RtRs.");
    p
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn handmade_bin_loads_strided_view() {
    let dir = tempfile::tempdir().unwrap();
    let data = f32_bytes(&[0., 1., 2., 3., 4., 5., 6., 7.]);
    // 2x2 view at offset 1 with strides (4, 2): elements 1, 3, 5, 7.
    let path = torch_zip(dir.path(), &tensor_pickle(8, 1, &[2, 2], &[4, 2]), &[("0", &data)]);
    let sd = load_pytorch_bin(&path).unwrap();
    assert_eq!(sd["w"], Tensor::new(vec![2, 2], vec![1., 3., 5., 7.]));
}

#[test]
fn bin_view_outside_its_storage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = f32_bytes(&[0.; 8]);
    let path = torch_zip(dir.path(), &tensor_pickle(8, 1, &[2, 4], &[4, 1]), &[("0", &data)]);
    let e = load_pytorch_bin(&path).unwrap_err();
    assert!(matches!(&e, CheckpointError::Tensor { tensor, .. } if tensor == "w"), "{e}");
}

#[test]
fn bin_broadcast_view_cannot_demand_more_memory_than_the_file_implies() {
    let dir = tempfile::tempdir().unwrap();
    let data = f32_bytes(&[1.0]);
    // Stride-0 view of one element claiming 255^3 elements.
    let path = torch_zip(dir.path(), &tensor_pickle(1, 0, &[255, 255, 255], &[0, 0, 0]), &[("0", &data)]);
    let e = load_pytorch_bin(&path).unwrap_err();
    assert!(matches!(&e, CheckpointError::Tensor { tensor, .. } if tensor == "w"), "{e}");
    // A small broadcast view is fine.
    let path = torch_zip(dir.path(), &tensor_pickle(1, 0, &[2, 3], &[0, 0]), &[("0", &data)]);
    assert_eq!(load_pytorch_bin(&path).unwrap()["w"].data, vec![1.0; 6]);
}

#[test]
fn bin_storage_shorter_than_declared_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = f32_bytes(&[0.; 3]);
    let path = torch_zip(dir.path(), &tensor_pickle(8, 0, &[8], &[1]), &[("0", &data)]);
    let e = load_pytorch_bin(&path).unwrap_err();
    assert!(matches!(&e, CheckpointError::Tensor { tensor, .. } if tensor == "w"), "{e}");
    assert!(e.to_string().contains("12 bytes"), "{e}");
}

#[test]
fn bin_missing_storage_entry_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = torch_zip(dir.path(), &tensor_pickle(2, 0, &[2], &[1]), &[]);
    let e = load_pytorch_bin(&path).unwrap_err();
    assert!(e.to_string().contains("archive/data/0"), "{e}");
}

#[test]
fn truncated_pickle_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let pkl = tensor_pickle(2, 0, &[2], &[1]);
    for cut in [0, 1, 5, 20, pkl.len() / 2, pkl.len() - 1] {
        let path = torch_zip(dir.path(), &pkl[..cut], &[("0", &f32_bytes(&[1., 2.]))]);
        assert!(load_pytorch_bin(&path).is_err(), "cut at {cut}");
    }
}

#[test]
fn not_a_checkpoint_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.bin");
    std::fs::write(&p, b"hello world").unwrap();
    let e = load_pytorch_bin(&p).unwrap_err();
    assert!(e.to_string().contains("x.bin"), "{e}");
    std::fs::write(&p, b"").unwrap();
    assert!(load_pytorch_bin(&p).is_err());
}

// ---- malformed safetensors ----

fn safetensors_bytes(header: &Value, data: &[u8]) -> Vec<u8> {
    let h = serde_json::to_vec(header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

fn load_bytes(bytes: &[u8]) -> Result<StateDict, CheckpointError> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.safetensors");
    std::fs::write(&p, bytes).unwrap();
    load_safetensors(&p)
}

fn tensor_error_names(e: &CheckpointError, name: &str) -> bool {
    matches!(e, CheckpointError::Tensor { tensor, .. } | CheckpointError::UnsupportedDtype { tensor, .. } if tensor == name)
}

#[test]
fn safetensors_truncated_file() {
    let good = std::fs::read(fixture("tiny.safetensors")).unwrap();
    for cut in [0, 4, 7, 8, 20, good.len() - 1] {
        let e = load_bytes(&good[..cut]).unwrap_err();
        assert!(e.to_string().contains("model.safetensors"), "cut {cut}: {e}");
    }
}

#[test]
fn safetensors_header_longer_than_file() {
    let mut bytes = (1u64 << 40).to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    let e = load_bytes(&bytes).unwrap_err();
    assert!(e.to_string().contains("header length"), "{e}");
}

#[test]
fn safetensors_header_not_json() {
    let mut bytes = 9u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"not json!");
    let e = load_bytes(&bytes).unwrap_err();
    assert!(e.to_string().contains("JSON"), "{e}");
}

#[test]
fn safetensors_offsets_out_of_range() {
    let h = json!({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                   "b": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]}});
    let e = load_bytes(&safetensors_bytes(&h, &[0u8; 20])).unwrap_err();
    assert!(tensor_error_names(&e, "b"), "{e}");
}

#[test]
fn safetensors_shape_and_data_length_mismatch() {
    let h = json!({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 16]}});
    let e = load_bytes(&safetensors_bytes(&h, &[0u8; 16])).unwrap_err();
    assert!(tensor_error_names(&e, "w"), "{e}");
}

#[test]
fn safetensors_huge_shape_does_not_overflow_or_allocate() {
    let h = json!({"w": {"dtype": "F32", "shape": [u64::MAX / 2, 4], "data_offsets": [0, 16]}});
    let e = load_bytes(&safetensors_bytes(&h, &[0u8; 16])).unwrap_err();
    assert!(tensor_error_names(&e, "w"), "{e}");
}

#[test]
fn safetensors_unsupported_dtype() {
    let h = json!({"w": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}});
    let e = load_bytes(&safetensors_bytes(&h, &[0u8; 16])).unwrap_err();
    assert!(
        matches!(&e, CheckpointError::UnsupportedDtype { tensor, dtype, .. } if tensor == "w" && dtype == "I64"),
        "{e}"
    );
    let h = json!({"w": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}});
    let e = load_bytes(&safetensors_bytes(&h, &[0u8; 8])).unwrap_err();
    assert!(matches!(&e, CheckpointError::UnsupportedDtype { .. }), "{e}");
    let h = json!({"w": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 1]}});
    let e = load_bytes(&safetensors_bytes(&h, &[0u8; 1])).unwrap_err();
    assert!(tensor_error_names(&e, "w"), "{e}");
}

#[test]
fn safetensors_f16_and_bf16_convert() {
    let h = json!({"h": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]},
                   "b": {"dtype": "BF16", "shape": [2], "data_offsets": [4, 8]}});
    // f16 1.0 = 0x3c00, -2.0 = 0xc000; bf16 1.5 = 0x3fc0, -0.5 = 0xbf00.
    let data = [0x00, 0x3c, 0x00, 0xc0, 0xc0, 0x3f, 0x00, 0xbf];
    let sd = load_bytes(&safetensors_bytes(&h, &data)).unwrap();
    assert_eq!(sd["h"].data, vec![1.0, -2.0]);
    assert_eq!(sd["b"].data, vec![1.5, -0.5]);
}

#[test]
fn safetensors_save_round_trip_is_bit_identical() {
    let sd = load_safetensors(&fixture("tiny.safetensors")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("out.safetensors");
    save_safetensors(&sd, &p).unwrap();
    assert_eq!(load_safetensors(&p).unwrap(), sd);
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn save_refuses_inconsistent_tensor() {
    let mut sd = StateDict::new();
    sd.insert("bad".into(), Tensor { shape: vec![2, 2], data: vec![1.0] });
    let dir = tempfile::tempdir().unwrap();
    let e = save_safetensors(&sd, &dir.path().join("m.safetensors")).unwrap_err();
    assert!(matches!(&e, CheckpointError::Tensor { tensor, .. } if tensor == "bad"), "{e}");
}

#[test]
fn sharded_safetensors_load_through_index() {
    let full = load_safetensors(&fixture("tiny.safetensors")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, b): (StateDict, StateDict) = full.clone().into_iter().partition(|(k, _)| k.starts_with("view"));
    save_safetensors(&a, &dir.path().join("model-00001-of-00002.safetensors")).unwrap();
    save_safetensors(&b, &dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let mut map = serde_json::Map::new();
    for k in a.keys() {
        map.insert(k.clone(), "model-00001-of-00002.safetensors".into());
    }
    for k in b.keys() {
        map.insert(k.clone(), "model-00002-of-00002.safetensors".into());
    }
    let index = json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    assert_eq!(load_state_dict(dir.path()).unwrap(), full);

    // A shard name that leaves the directory is refused.
    let evil = json!({"weight_map": {"w": "../model.safetensors"}});
    std::fs::write(dir.path().join("model.safetensors.index.json"), evil.to_string()).unwrap();
    let e = load_state_dict(dir.path()).unwrap_err();
    assert!(e.to_string().contains("not a file name"), "{e}");
}

#[test]
fn directory_without_weights_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = load_state_dict(dir.path()).unwrap_err();
    assert!(matches!(e, CheckpointError::NotFound { .. }));
    assert!(e.to_string().contains("model.safetensors"), "{e}");
}

#[test]
fn directory_prefers_safetensors_then_bin() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("tiny.bin"), dir.path().join("pytorch_model.bin")).unwrap();
    check_against_expected(&load_state_dict(dir.path()).unwrap());
    std::fs::write(dir.path().join("model.safetensors"), b"garbage").unwrap();
    assert!(load_state_dict(dir.path()).is_err(), "safetensors must take precedence");
}

#[test]
fn hub_cache_layout_resolves_refs_main() {
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--org--tiny-model");
    let snap = repo.join("snapshots").join("abc123");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
    std::fs::copy(fixture("tiny.safetensors"), snap.join("model.safetensors")).unwrap();
    let roots = vec![cache.path().join("elsewhere"), cache.path().to_path_buf()];

    assert_eq!(resolve_in("org/tiny-model", &roots).unwrap(), snap);
    assert_eq!(resolve_in("org/tiny-model@abc123", &roots).unwrap(), snap);
    assert_eq!(resolve_in(repo.to_str().unwrap(), &roots).unwrap(), snap);
    assert_eq!(resolve_in(snap.to_str().unwrap(), &roots).unwrap(), snap);
    check_against_expected(&load_state_dict(resolve_in("org/tiny-model", &roots).unwrap()).unwrap());

    let e = resolve_in("org/other", &roots).unwrap_err();
    assert!(e.to_string().contains("models--org--other"), "{e}");
    assert!(resolve_in("org/tiny-model@nope", &roots).is_err());
    assert!(resolve_in("../../etc", &roots).is_err());

    // A ref pointing at a missing snapshot says so.
    std::fs::write(repo.join("refs/main"), "deadbeef").unwrap();
    let e = resolve_in("org/tiny-model", &roots).unwrap_err();
    assert!(e.to_string().contains("deadbeef"), "{e}");
}

#[test]
fn save_pretrained_writes_weights_config_and_tokenizer_files() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("vocab.txt"), "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n").unwrap();
    std::fs::write(
        src.path().join("config.json"),
        r#"{"model_type": "bert", "hidden_size": 8, "num_attention_heads": 2, "my_field": 7}"#,
    )
    .unwrap();
    let mut cfg = EncoderConfig::from_file(src.path()).unwrap();
    cfg.set_labels(&["neg", "pos"]);
    cfg.set_head("ForSequenceClassification");
    let sd = load_safetensors(&fixture("tiny.safetensors")).unwrap();
    let out = tempfile::tempdir().unwrap();
    save_pretrained(out.path(), &sd, &cfg, Some(src.path())).unwrap();
    assert_eq!(load_state_dict(out.path()).unwrap(), sd);
    assert_eq!(
        std::fs::read(out.path().join("vocab.txt")).unwrap(),
        std::fs::read(src.path().join("vocab.txt")).unwrap()
    );
    let back = EncoderConfig::from_file(out.path()).unwrap();
    assert_eq!(back.architectures, vec!["BertForSequenceClassification"]);
    assert_eq!(back.id2label[&1], "pos");
    assert_eq!(back.raw["my_field"], 7);
}

#[test]
fn minilm_safetensors_save_round_trip_is_bit_identical() {
    let Some(dir) = minilm_dir() else { return };
    let sd = load_state_dict(&dir).unwrap();
    assert_eq!(sd.len(), 103, "MiniLM-L6 has 103 float tensors (its position_ids buffer is skipped)");
    assert!(!sd.contains_key("embeddings.position_ids"));
    assert_eq!(sd["embeddings.word_embeddings.weight"].shape, vec![30522, 384]);
    let cfg = EncoderConfig::from_file(&dir).unwrap();
    let out = tempfile::tempdir().unwrap();
    save_pretrained(out.path(), &sd, &cfg, Some(&dir)).unwrap();
    let again = load_state_dict(out.path()).unwrap();
    assert_eq!(again.len(), sd.len());
    for (name, t) in &sd {
        let u = &again[name];
        assert_eq!(t.shape, u.shape, "{name}");
        assert!(t.data.iter().zip(&u.data).all(|(a, b)| a.to_bits() == b.to_bits()), "{name} differs");
    }
    assert!(out.path().join("tokenizer.json").is_file());
    assert_eq!(EncoderConfig::from_file(out.path()).unwrap(), {
        let mut c = cfg.clone();
        c.raw = EncoderConfig::from_file(out.path()).unwrap().raw;
        c
    });
}

#[test]
fn model_id_is_found_under_hf_home() {
    // The only test that reads the cache environment variables.
    let home = tempfile::tempdir().unwrap();
    let snap = home.path().join("hub/models--org--tiny-bert/snapshots/0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(home.path().join("hub/models--org--tiny-bert/refs")).unwrap();
    std::fs::write(home.path().join("hub/models--org--tiny-bert/refs/main"), "0123abcd").unwrap();
    std::fs::copy(fixture("tiny.bin"), snap.join("pytorch_model.bin")).unwrap();
    std::fs::write(snap.join("config.json"), r#"{"model_type": "bert", "hidden_size": 6, "num_attention_heads": 2}"#)
        .unwrap();
    std::env::remove_var("HF_HUB_CACHE");
    std::env::remove_var("HUGGINGFACE_HUB_CACHE");
    std::env::set_var("HF_HOME", home.path());
    let m = load_pretrained("org/tiny-bert").unwrap();
    assert_eq!(m.dir, snap);
    assert_eq!(m.config.hidden_size, 6);
    check_against_expected(&m.state);
    // A weight file given directly finds its config next to it.
    let m = load_pretrained(snap.join("pytorch_model.bin").to_str().unwrap()).unwrap();
    assert_eq!(m.dir, snap);
    let e = load_pretrained("org/absent-model").err().unwrap();
    assert!(e.to_string().contains("models--org--absent-model"), "{e}");
}

/// Small deterministic generator for the mutation tests (no extra dependency).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Mutates 1–4 bytes (or truncates) at random.
fn mutate(rng: &mut Lcg, good: &[u8], region: std::ops::Range<usize>) -> Vec<u8> {
    let mut b = good.to_vec();
    if rng.below(8) == 0 {
        b.truncate(region.start + rng.below(region.len()));
        return b;
    }
    for _ in 0..1 + rng.below(4) {
        let i = region.start + rng.below(region.len());
        b[i] = match rng.below(3) {
            0 => rng.next() as u8,
            1 => b[i] ^ (1 << rng.below(8)),
            _ => [0, 0xff, 0x7f, 0x80, b'.', b'(', b'R'][rng.below(7)],
        };
    }
    b
}

#[test]
fn mutated_pickles_never_panic() {
    // Rebuild tiny.bin's archive around mutated copies of its data.pkl.
    let mut zip = zip::ZipArchive::new(std::fs::File::open(fixture("tiny.bin")).unwrap()).unwrap();
    let names: Vec<String> = zip.file_names().map(|n| n.unwrap().into_owned()).collect();
    let read = |zip: &mut zip::ZipArchive<std::fs::File>, n: &str| {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut zip.by_name(n).unwrap(), &mut v).unwrap();
        v
    };
    let pkl_name = names.iter().find(|n| n.ends_with("/data.pkl")).unwrap().clone();
    let pkl = read(&mut zip, &pkl_name);
    let storages: Vec<(String, Vec<u8>)> =
        names.iter().filter_map(|n| n.split_once("/data/").map(|(_, k)| (k.to_string(), read(&mut zip, n)))).collect();
    let storage_refs: Vec<(&str, &[u8])> = storages.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Lcg(7);
    let mut failures = 0;
    for _ in 0..400 {
        let bad = mutate(&mut rng, &pkl, 0..pkl.len());
        let path = torch_zip(dir.path(), &bad, &storage_refs);
        if load_pytorch_bin(&path).is_err() {
            failures += 1;
        }
    }
    assert!(failures > 100, "most mutations should be rejected ({failures})");
}

#[test]
fn mutated_safetensors_never_panic() {
    let good = std::fs::read(fixture("tiny.safetensors")).unwrap();
    let header_end = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut rng = Lcg(11);
    let mut failures = 0;
    for _ in 0..1000 {
        let bad = mutate(&mut rng, &good, 0..header_end);
        if load_bytes(&bad).is_err() {
            failures += 1;
        }
    }
    assert!(failures > 300, "most mutations should be rejected ({failures})");
}

/// `.bin` files found by `scripts/fuzz.sh` that made the loader index past a storage: a stride list shorter than
/// the shape, and a storage shared by two tensors that declare it with different sizes. Each is one error.
#[test]
fn pickles_with_inconsistent_views_are_refused() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    for f in ["pickle_index_60.bin", "pickle_index_4.bin"] {
        let Err(err) = finetune_models::checkpoint::load_pytorch_bin(&dir.join(f)) else { panic!("{f}: loaded") };
        let err = err.to_string();
        assert!(err.contains(f) && !err.contains('\n'), "{err}");
    }
}
