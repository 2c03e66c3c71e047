//! The fuzz targets: one per reader of untrusted input, each with its seeds (valid files from the test
//! fixtures and `crates/fuzz/seeds/`), a mutator and a run function that returns whether the input was
//! accepted. A run function may return an error for any input; it must never panic or allocate beyond
//! [`crate::alloc_limit`].

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use finetune_data::chat::{ChatMessage, ChatTemplate};
use finetune_data::read::{read_examples, read_tokens, Format, ReadOptions};
use finetune_engine::StateDict;
use finetune_models::bert::{BertConfig, BertForSequenceClassification};
use finetune_models::causal_tokenizer::CausalTokenizer;
use finetune_models::checkpoint::{load_pytorch_bin, load_safetensors, load_state_dict};
use finetune_models::config::EncoderConfig;
use finetune_models::gguf::{gguf_tokenizer, load_llama, GgufFile};
use finetune_models::gpt2::{Gpt2Config, Gpt2LMHeadModel};
use finetune_models::llama::{LlamaConfig, LlamaForCausalLM};
use finetune_models::tokenizer::TextTokenizer;

use crate::mutate::{self, Rng};

type Mutator = Box<dyn Fn(&mut Rng, &[Vec<u8>]) -> Vec<u8> + Send + Sync>;
type Runner = Box<dyn Fn(&[u8]) -> bool + Send + Sync>;
/// A mutator of one file's bytes given all the seeds.
type FileMutator = fn(&mut Rng, &[u8], &[Vec<u8>]) -> Vec<u8>;

pub struct Target {
    pub name: &'static str,
    pub seeds: Vec<Vec<u8>>,
    pub mutate: Mutator,
    pub run: Runner,
    /// Bytes a single allocation may take beyond [`crate::alloc_limit`] for reasons outside the input's size.
    pub alloc_allowance: usize,
}

/// minijinja's own cap on one repeated string (`'x' * n`): a template of a few bytes may allocate this much
/// once per operation. Loops are bounded by the render fuel (`finetune_data::chat::RENDER_FUEL`).
pub const MINIJINJA_MAX_REPEATED_STRING: usize = 100_000_000;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(rel: &str) -> PathBuf {
    manifest().join("../models/tests/fixtures").join(rel)
}

fn seed(rel: &str) -> PathBuf {
    manifest().join("seeds").join(rel)
}

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("fuzz seed {}: {e}", path.display()))
}

/// A scratch directory per process and target for readers that take a path.
fn scratch(name: &str) -> PathBuf {
    // Memory-backed when available: the readers take paths, and a disk would dominate the time per input.
    let base = std::env::var_os("FUZZ_SCRATCH").map(PathBuf::from).unwrap_or_else(|| {
        let shm = PathBuf::from("/dev/shm");
        if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        }
    });
    let dir = base.join(format!("finetune-fuzz-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("scratch file");
}

fn pick_seed<'a>(rng: &mut Rng, seeds: &'a [Vec<u8>]) -> &'a [u8] {
    &seeds[rng.below(seeds.len())]
}

fn json_mutator() -> Mutator {
    Box::new(|rng, seeds| {
        let s = pick_seed(rng, seeds);
        mutate::json(rng, s, seeds)
    })
}

/// Every target, in the order the script runs them.
pub fn all_targets() -> Vec<Target> {
    vec![
        safetensors(),
        pickle(),
        gguf(),
        config(),
        tokenizer(),
        delimited("csv", &["data/small.csv", "data/multi.csv"], Format::Csv),
        delimited("tsv", &["data/small.tsv"], Format::Tsv),
        jsonl(),
        conll(),
        columnar("parquet", &["data/sentiment.parquet", "data/ner.parquet"]),
        columnar("arrow", &["data/sentiment.arrow"]),
        chat(),
        metrics(),
    ]
}

/// The safetensors header is JSON behind an 8-byte length: mutate the JSON (dtypes, shapes, offsets) and
/// rewrite the length (usually right), or edit the bytes.
fn safetensors() -> Target {
    let seeds = vec![read(fixture("io/tiny.safetensors")), read(fixture("gguf/permute.safetensors"))];
    let mutate: Mutator = Box::new(|rng, seeds| {
        let s = pick_seed(rng, seeds);
        if rng.chance(4) || s.len() < 8 {
            return mutate::header(rng, s, seeds, 256);
        }
        let n = u64::from_le_bytes(s[..8].try_into().expect("8 bytes")) as usize;
        let (head, data) = s[8..].split_at(n.min(s.len() - 8));
        let head = mutate::json(rng, head, seeds);
        let mut data = data.to_vec();
        match rng.below(6) {
            0 => data.truncate(rng.below(data.len() + 1)),
            1 => data.extend(std::iter::repeat_n(0u8, rng.below(64))),
            _ => {}
        }
        let len = if rng.chance(8) { *rng.pick(mutate::INTERESTING) } else { head.len() as u64 };
        let mut out = len.to_le_bytes().to_vec();
        out.extend_from_slice(&head);
        out.extend_from_slice(&data);
        out
    });
    let dir = scratch("safetensors");
    let run: Runner = Box::new(move |input| {
        let path = dir.join("model.safetensors");
        write(&path, input);
        load_safetensors(&path).is_ok()
    });
    Target { name: "safetensors", seeds, mutate, run, alloc_allowance: 0 }
}

/// Entries of a zip archive, in order.
fn unzip(bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).ok()?;
    let mut out = Vec::new();
    for i in 0..z.len() {
        let mut f = z.by_index(i).ok()?;
        let mut data = Vec::new();
        f.read_to_end(&mut data).ok()?;
        let name = f.name().ok()?.to_string();
        out.push((name, data));
    }
    Some(out)
}

fn rezip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        if z.start_file(name.as_str(), opts).is_err() || z.write_all(data).is_err() {
            break;
        }
    }
    z.finish().map(|c| c.into_inner()).unwrap_or_default()
}

/// `pytorch_model.bin`: a zip holding `data.pkl` and the storages. Mutate the pickle's opcodes (or a storage,
/// or the entry names) and re-zip, or edit the archive's bytes.
fn pickle() -> Target {
    let seeds = ["io/tiny.bin", "io/legacy.bin", "io/malicious_eval.bin", "io/malicious_os_system.bin"]
        .iter()
        .map(|p| read(fixture(p)))
        .collect();
    let mutate: Mutator = Box::new(|rng, seeds| {
        let s = pick_seed(rng, seeds);
        match unzip(s) {
            Some(mut entries) if !entries.is_empty() && !rng.chance(5) => {
                let pkl = entries.iter().position(|(n, _)| n.ends_with(".pkl"));
                let i = match pkl {
                    Some(p) if !rng.chance(4) => p,
                    _ => rng.below(entries.len()),
                };
                if rng.chance(10) {
                    entries[i].0 = String::from_utf8_lossy(&mutate::bytes(rng, entries[i].0.as_bytes(), seeds)).into();
                } else {
                    entries[i].1 = mutate::bytes(rng, &entries[i].1, seeds);
                }
                rezip(&entries)
            }
            _ => mutate::bytes(rng, s, seeds),
        }
    });
    let dir = scratch("pickle");
    let run: Runner = Box::new(move |input| {
        let path = dir.join("pytorch_model.bin");
        write(&path, input);
        load_pytorch_bin(&path).is_ok()
    });
    Target { name: "pickle", seeds, mutate, run, alloc_allowance: 0 }
}

/// GGUF: counts, lengths, types, shapes and offsets are little-endian integers near the start of the file.
fn gguf() -> Target {
    let seeds = vec![read(fixture("gguf/quants.gguf")), read(fixture("gguf/tiny_llama.gguf"))];
    let mutate: Mutator = Box::new(|rng, seeds| {
        let s = pick_seed(rng, seeds);
        mutate::header(rng, s, seeds, 16 * 1024)
    });
    let dir = scratch("gguf");
    let run: Runner = Box::new(move |input| {
        let path = dir.join("model.gguf");
        let Ok(file) = GgufFile::from_bytes(&path, input.to_vec()) else { return false };
        for t in file.tensors() {
            let _ = file.dequantize(t);
        }
        let _ = gguf_tokenizer(&file);
        write(&path, input);
        load_llama(&path).is_ok()
    });
    Target { name: "gguf", seeds, mutate, run, alloc_allowance: 0 }
}

/// `config.json` values against fixed tiny weights: every config that parses is built into a model from the
/// weights of each tiny checkpoint of its family, which checks every size against the weights.
fn config() -> Target {
    let dirs =
        ["tiny_bert", "tiny_roberta", "tiny_distilbert", "tiny_bert_token", "tiny_llama", "tiny_qwen2", "tiny_gpt2"];
    let seeds = dirs.iter().map(|d| read(fixture(&format!("{d}/config.json")))).collect();
    let weights: BTreeMap<&str, StateDict> = dirs
        .iter()
        .map(|d| (*d, load_state_dict(fixture(&format!("{d}/model.safetensors"))).expect("fixture weights")))
        .collect();
    let run: Runner = Box::new(move |input| {
        let Ok(text) = std::str::from_utf8(input) else { return false };
        let mut ok = false;
        if let Ok(cfg) = EncoderConfig::from_json_str(text, "config.json") {
            if let Ok(bert) = BertConfig::from_json(&cfg.to_json().to_string()) {
                for d in ["tiny_bert", "tiny_roberta", "tiny_distilbert", "tiny_bert_token"] {
                    ok |= BertForSequenceClassification::from_state_dict(bert.clone(), &weights[d], 0).is_ok();
                }
            }
        }
        if let Ok(cfg) = LlamaConfig::from_json(text) {
            for d in ["tiny_llama", "tiny_qwen2"] {
                ok |= LlamaForCausalLM::from_state_dict(cfg.clone(), &weights[d]).is_ok();
            }
        }
        if let Ok(cfg) = Gpt2Config::from_json(text) {
            ok |= Gpt2LMHeadModel::from_state_dict(cfg, &weights["tiny_gpt2"]).is_ok();
        }
        ok
    });
    Target { name: "config", seeds, mutate: json_mutator(), run, alloc_allowance: 0 }
}

/// `tokenizer.json` (WordPiece and byte-level BPE, shrunk from the real ones) loaded by both tokenizer
/// wrappers, then used to encode.
fn tokenizer() -> Target {
    let seeds = vec![read(seed("tokenizer/wordpiece.json")), read(seed("tokenizer/bpe.json"))];
    let dir = scratch("tokenizer");
    write(&dir.join("tokenizer_config.json"), &read(seed("tokenizer/tokenizer_config.json")));
    let run: Runner = Box::new(move |input| {
        let path = dir.join("tokenizer.json");
        write(&path, input);
        // Each input on a thread of its own: the `tokenizers` crate (0.23) keeps a per-thread BPE word cache
        // with one entry per BPE model ever used on the thread, never removed when the model drops, so on one
        // long-lived thread the map grows with the number of tokenizers loaded (it reached a 2.4 MB table after
        // 620 000 inputs) rather than with any input. A process of ours loads one or two tokenizers.
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut ok = false;
                if let Ok(t) = TextTokenizer::from_tokenizer_json(&path) {
                    ok = t.encode("Hello, the movie wasn't good! 1990 ##s").is_ok();
                    let _ = t.encode_pair("a b c", "");
                }
                ok | CausalTokenizer::from_dir(&dir).is_ok()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    });
    Target { name: "tokenizer", seeds, mutate: json_mutator(), run, alloc_allowance: 0 }
}

fn read_options(rng_bits: u8) -> ReadOptions {
    ReadOptions {
        skip_bad_records: rng_bits & 1 == 1,
        label_separator: (rng_bits & 2 == 2).then(|| "|".to_string()),
        text_pair_column_name: (rng_bits & 4 == 4).then(|| "text2".to_string()),
        ..ReadOptions::default()
    }
}

/// CSV or TSV files, with and without `skip_bad_records`, a label separator and a pair column (the first
/// input byte picks the options and is not part of the file).
fn delimited(name: &'static str, files: &[&str], format: Format) -> Target {
    let seeds = files.iter().map(|f| [vec![0u8], read(seed(f))].concat()).collect();
    let dir = scratch(name);
    let run: Runner = Box::new(move |input| {
        let Some((&bits, file)) = input.split_first() else { return false };
        let path = dir.join(format!("data.{name}"));
        write(&path, file);
        let opts = ReadOptions { format: Some(format), ..read_options(bits) };
        read_examples(&path, &opts).is_ok()
    });
    Target {
        name,
        seeds,
        mutate: Box::new(|rng, seeds| options_then(rng, seeds, mutate::lines)),
        run,
        alloc_allowance: 0,
    }
}

/// Mutates the file part with `f` and sometimes the option byte.
fn options_then(rng: &mut Rng, seeds: &[Vec<u8>], f: FileMutator) -> Vec<u8> {
    let s = pick_seed(rng, seeds);
    let bits = if rng.chance(2) { rng.next_u64() as u8 } else { s.first().copied().unwrap_or(0) };
    let file = s.get(1..).unwrap_or_default();
    [vec![bits], f(rng, file, seeds)].concat()
}

fn jsonl() -> Target {
    let seeds = vec![[vec![0u8], read(seed("data/small.jsonl"))].concat()];
    let dir = scratch("jsonl");
    let run: Runner = Box::new(move |input| {
        let Some((&bits, file)) = input.split_first() else { return false };
        let path = dir.join("data.jsonl");
        write(&path, file);
        read_examples(&path, &ReadOptions { format: Some(Format::Jsonl), ..read_options(bits) }).is_ok()
    });
    // Lines of the file, or the JSON of one line.
    let mutate: Mutator = Box::new(|rng, seeds| {
        if rng.chance(2) {
            return options_then(rng, seeds, mutate::lines);
        }
        options_then(rng, seeds, |rng, file, seeds| {
            let mut ls: Vec<Vec<u8>> = file.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            let i = rng.below(ls.len());
            ls[i] = mutate::json(rng, &ls[i], seeds);
            ls.join(&b'\n')
        })
    });
    Target { name: "jsonl", seeds, mutate, run, alloc_allowance: 0 }
}

/// Parquet files and Arrow IPC streams (as `datasets` writes them): byte edits anywhere (footer, thrift
/// metadata, page headers, flatbuffer messages, compressed pages); token lists are read as token data.
fn columnar(name: &'static str, files: &[&str]) -> Target {
    let seeds = files.iter().map(|f| read(seed(f))).collect();
    let dir = scratch(name);
    let run: Runner = Box::new(move |input| {
        let path = dir.join(format!("data.{name}"));
        write(&path, input);
        let opts = ReadOptions::default();
        read_examples(&path, &opts).is_ok() | read_tokens(&path, &opts).is_ok()
    });
    let mutate: Mutator = Box::new(|rng, seeds| {
        let s = pick_seed(rng, seeds);
        mutate::bytes(rng, s, seeds)
    });
    Target { name, seeds, mutate, run, alloc_allowance: 0 }
}

fn conll() -> Target {
    let seeds = vec![[vec![0u8], read(seed("data/small.conll"))].concat()];
    let dir = scratch("conll");
    let run: Runner = Box::new(move |input| {
        let Some((&bits, file)) = input.split_first() else { return false };
        let path = dir.join("data.conll");
        write(&path, file);
        let opts = ReadOptions {
            format: Some(Format::Conll),
            tag_column: (bits & 8 == 8).then_some((bits >> 4) as usize),
            token_column: (bits >> 6) as usize,
            ..read_options(bits)
        };
        read_tokens(&path, &opts).is_ok()
    });
    Target {
        name: "conll",
        seeds,
        mutate: Box::new(|rng, seeds| options_then(rng, seeds, mutate::lines)),
        run,
        alloc_allowance: 0,
    }
}

const TEMPLATES: &[&str] = &[
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] | trim }} [/INST]{% elif m['role'] == 'assistant' %} {{ m['content'] }}{{ eos_token }}{% else %}{{ raise_exception('bad role') }}{% endif %}{% endfor %}",
    "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
    "{% set sys = messages[0].content if messages[0].role == 'system' else '' %}{{ sys | tojson }}{% for m in messages[1:] %}{{ loop.index }}:{{ m.content | upper }}{% endfor %}",
];

/// Snippets spliced into templates: tags, expressions, filters and the constructs that loop or build strings.
const JINJA: &[&str] = &[
    "{%",
    "%}",
    "{{",
    "}}",
    "{#",
    "#}",
    "{% for x in messages %}",
    "{% endfor %}",
    "{% if ",
    "{% endif %}",
    "{% else %}",
    "range(100000)",
    "range(10)",
    "| tojson",
    "| length",
    "| join(',')",
    "* 1000",
    "~",
    "loop.index",
    "[::-1]",
    "messages[0]",
    ".content",
    "raise_exception('x')",
    "strftime_now('%Y')",
    "namespace(a=1)",
    "{% set a = ",
    "{% macro m() %}{% endmacro %}",
    "{{ m() }}",
    "'x' * 99999",
    "(1, 2)",
    "{% break %}",
    "{% continue %}",
];

fn chat() -> Target {
    let mut seeds: Vec<Vec<u8>> = TEMPLATES.iter().map(|t| t.as_bytes().to_vec()).collect();
    seeds.push(read(seed("chat/smollm2.jinja")));
    let messages = vec![
        ChatMessage::new("system", "You are helpful."),
        ChatMessage::new("user", "Hello {{ not a tag }}"),
        ChatMessage::new("assistant", "Hi."),
        ChatMessage::new("user", "Bye"),
    ];
    let run: Runner = Box::new(move |input| {
        let Ok(src) = std::str::from_utf8(input) else { return false };
        match ChatTemplate::new(src, Some("<s>"), Some("</s>")) {
            Ok(t) => t.render(&messages, true).is_ok(),
            Err(_) => false,
        }
    });
    let mutate: Mutator = Box::new(|rng, seeds| {
        let s = pick_seed(rng, seeds);
        if rng.chance(3) {
            return mutate::bytes(rng, s, seeds);
        }
        let mut out = s.to_vec();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(out.len() + 1);
            let snippet = rng.pick(JINJA).as_bytes();
            if rng.chance(3) && !out.is_empty() {
                let end = (at + 1 + rng.below(16)).min(out.len());
                out.splice(at.min(end)..end, snippet.iter().copied());
            } else {
                out.splice(at..at, snippet.iter().copied());
            }
        }
        out
    });
    Target { name: "chat_template", seeds, mutate, run, alloc_allowance: MINIJINJA_MAX_REPEATED_STRING }
}

/// The metrics JSON interface: one request line per input (`{"metric": ..., "args": {...}}`).
fn metrics() -> Target {
    let text = read(seed("metrics/requests.jsonl"));
    let seeds = text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
    let run: Runner = Box::new(|input| {
        let Ok(line) = std::str::from_utf8(input) else { return false };
        finetune_metrics::call::call_line(line).get("error").is_none()
    });
    Target { name: "metrics", seeds, mutate: json_mutator(), run, alloc_allowance: 0 }
}
