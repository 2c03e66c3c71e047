//! `finetune serve` over loopback: the classifier's `/predict` against `finetune predict`, NER, and the
//! OpenAI-compatible endpoints of the tiny random Llama (greedy, seeded sampling, streaming, stop sequences,
//! chat), a tiny random Phi against `finetune generate`, the 4xx answers, and a graceful SIGTERM with a stream in
//! flight.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{config, finetune, ner_config, ok, setup};
use serde_json::{json, Value};

struct Server {
    child: Child,
    addr: String,
}

/// A loopback HTTP/1.1 client (one connection per request), cheap to move into a thread.
#[derive(Clone)]
struct Client {
    addr: String,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_finetune"))
            .arg("serve")
            .args(["--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start finetune serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read the address line");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Server { child, addr }
    }

    fn client(&self) -> Client {
        Client { addr: self.addr.clone() }
    }

    fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        self.client().request(method, path, body)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.client().post(path, body)
    }

    fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        self.client().stream(path, body)
    }
}

impl Client {
    /// One HTTP/1.1 request: the status and the (de-chunked) body.
    fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut s = TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        s.write_all(req.as_bytes()).expect("send");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read response");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, rest) = text.split_once("\r\n\r\n").expect("header end");
        let status: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status");
        let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
        (status, if chunked { dechunk(rest) } else { rest.to_string() })
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, text) = self.request("POST", path, &body.to_string());
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}")))
    }

    /// The `data:` payloads of a server-sent-events answer.
    fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        let (status, text) = self.request("POST", path, &body.to_string());
        assert_eq!(status, 200, "{text}");
        text.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_string).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    out
}

fn gguf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/gguf/tiny_llama.gguf")
}

fn error_param(v: &Value) -> &str {
    v["error"]["param"].as_str().unwrap_or("")
}

#[test]
fn precision_flags_for_the_other_kind_of_model_are_refused() {
    let g = gguf().display().to_string();
    let o = finetune(&["serve", "--model", &g, "--port", "0", "--bf16"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--bf16 is for classifiers"), "{err}");
    let s = setup();
    let cfg = config(&s, "out", "max_steps = 1\n");
    ok(finetune(&["train", "--config", cfg.to_str().unwrap_or_default(), "--progress", "off"]));
    let o = finetune(&["serve", "--model", s.root.join("out").to_str().unwrap_or_default(), "--port", "0", "--int8"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--int8 is for decoders"), "{err}");
}

#[test]
fn classifier_predict_matches_finetune_predict() {
    let s = setup();
    let cfg = config(&s, "out", "max_steps = 3\n");
    ok(finetune(&["train", "--config", cfg.to_str().unwrap_or_default(), "--progress", "off"]));
    let model = s.root.join("out");
    let texts = ["good great nice", "awful bad", "fine", "hate boring dull dull"];
    std::fs::write(s.root.join("new.csv"), format!("text\n{}\n", texts.join("\n"))).expect("csv");
    let preds = s.root.join("p.jsonl");
    ok(finetune(&[
        "predict",
        "--model",
        model.to_str().unwrap_or_default(),
        "--data",
        s.root.join("new.csv").to_str().unwrap_or_default(),
        "--out",
        preds.to_str().unwrap_or_default(),
        "--max-seq-length",
        "16",
    ]));
    let expected: Vec<Value> = std::fs::read_to_string(&preds)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("jsonl"))
        .collect();

    let srv = Server::start(&["--model", model.to_str().unwrap_or_default(), "--max-seq-length", "16"]);
    let (st, health) = srv.request("GET", "/health", "");
    assert_eq!(st, 200);
    assert_eq!(serde_json::from_str::<Value>(&health).expect("json")["kind"], "classifier");
    let (st, v) = srv.post("/predict", &json!({"inputs": texts}));
    assert_eq!(st, 200, "{v}");
    let got = v["predictions"].as_array().expect("predictions");
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g["label"], e["label"], "{g} vs {e}");
        for label in ["neg", "pos"] {
            let (a, b) =
                (g["probabilities"][label].as_f64().unwrap_or(-1.0), e["probabilities"][label].as_f64().unwrap_or(9.0));
            assert!((a - b).abs() < 1e-6, "{label}: {a} vs {b}");
        }
    }
    // One text alone gives the same answer as inside a batch.
    let (_, one) = srv.post("/predict", &json!({"inputs": texts[1]}));
    assert_eq!(one["predictions"][0]["label"], expected[1]["label"]);

    // Concurrent clients are batched together and each gets its own answers.
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let (c, text) = (srv.client(), texts[i].to_string());
            std::thread::spawn(move || c.post("/predict", &json!({"inputs": [text]})))
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let (st, v) = h.join().expect("client");
        assert_eq!(st, 200);
        assert_eq!(v["predictions"][0]["label"], expected[i]["label"]);
    }

    // Bad requests: named field, no crash.
    let (st, v) = srv.post("/predict", &json!({"inputs": []}));
    assert_eq!((st, error_param(&v)), (400, "inputs"), "{v}");
    let (st, v) = srv.post("/predict", &json!({"texts": ["a"]}));
    assert_eq!(st, 400);
    assert!(v["error"]["message"].as_str().unwrap_or("").contains("texts"), "{v}");
    let (st, v) = srv.post("/predict", &json!({"inputs": [["good", "bad"]]}));
    assert_eq!(st, 400, "{v}");
    let (st, _) = srv.request("POST", "/predict", "{not json");
    assert_eq!(st, 400);
    let (st, v) = srv.post("/v1/completions", &json!({"prompt": "hi"}));
    assert_eq!(st, 404, "{v}");
    let (st, _) = srv.request("GET", "/nope", "");
    assert_eq!(st, 404);
    // Still serving after all of that.
    let (st, _) = srv.post("/predict", &json!({"inputs": ["good"]}));
    assert_eq!(st, 200);
}

#[test]
fn body_limit_and_deadline_answer_413_and_504() {
    let s = setup();
    let cfg = config(&s, "out", "max_steps = 1\n");
    ok(finetune(&["train", "--config", cfg.to_str().unwrap_or_default(), "--progress", "off"]));
    let model = s.root.join("out");
    let srv = Server::start(&[
        "--model",
        model.to_str().unwrap_or_default(),
        "--max-body-bytes",
        "64",
        "--timeout",
        "0.001",
        "--batch-window-ms",
        "20",
    ]);
    let (st, _) = srv.post("/predict", &json!({"inputs": ["good ".repeat(40)]}));
    assert_eq!(st, 413);
    let (st, v) = srv.post("/predict", &json!({"inputs": ["good"]}));
    assert_eq!(st, 504, "{v}");
    assert_eq!(v["error"]["code"], "timeout");
}

#[test]
fn ner_predict_tags_each_word() {
    let s = setup();
    let cfg = ner_config(&s, "ner", "max_steps = 2\n");
    ok(finetune(&["train", "--config", cfg.to_str().unwrap_or_default(), "--progress", "off"]));
    let srv = Server::start(&["--model", s.root.join("ner").to_str().unwrap_or_default(), "--max-seq-length", "16"]);
    let (st, v) = srv.post("/predict", &json!({"inputs": [["good", "great", "bad"], "hate dull"]}));
    assert_eq!(st, 200, "{v}");
    let p = v["predictions"].as_array().expect("predictions");
    assert_eq!(p[0]["tokens"], json!(["good", "great", "bad"]));
    assert_eq!(p[0]["tags"].as_array().map(Vec::len), Some(3));
    assert_eq!(p[1]["tokens"], json!(["hate", "dull"]));
    assert_eq!(p[1]["tags"].as_array().map(Vec::len), Some(2));
}

#[test]
fn openai_completions_chat_streaming_and_errors() {
    let model = gguf();
    let srv =
        Server::start(&["--model", model.to_str().unwrap_or_default(), "--model-name", "tiny", "--max-tokens", "32"]);
    let (st, models) = srv.request("GET", "/v1/models", "");
    assert_eq!(st, 200);
    let models: Value = serde_json::from_str(&models).expect("json");
    assert_eq!(models["data"][0]["id"], "tiny");

    // Greedy: deterministic, the usage adds up, and batching (four at once) does not change the answer.
    let req = json!({"model": "tiny", "prompt": "hello anna", "max_tokens": 8, "temperature": 0});
    let (st, a) = srv.post("/v1/completions", &req);
    assert_eq!(st, 200, "{a}");
    let text = a["choices"][0]["text"].as_str().expect("text").to_string();
    assert_eq!(a["object"], "text_completion");
    let u = &a["usage"];
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(u["prompt_tokens"].as_u64().unwrap_or(0) + u["completion_tokens"].as_u64().unwrap_or(0))
    );
    assert!(u["completion_tokens"].as_u64().is_some_and(|n| (1..=8).contains(&n)), "{u}");
    let reason = a["choices"][0]["finish_reason"].as_str().unwrap_or("");
    assert!(reason == "length" || reason == "stop", "{a}");
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (c, req) = (srv.client(), req.clone());
            std::thread::spawn(move || c.post("/v1/completions", &req))
        })
        .collect();
    for h in handles {
        let (st, v) = h.join().expect("client");
        assert_eq!(st, 200);
        assert_eq!(v["choices"][0]["text"].as_str(), Some(text.as_str()));
    }

    // Seeded sampling repeats; the stream's pieces add up to the whole answer.
    let sampled = json!({"prompt": "hello bob", "max_tokens": 12, "temperature": 1.0, "seed": 7});
    let (_, x) = srv.post("/v1/completions", &sampled);
    let (_, y) = srv.post("/v1/completions", &sampled);
    assert_eq!(x["choices"][0]["text"], y["choices"][0]["text"]);
    let mut streamed = sampled.clone();
    streamed["stream"] = json!(true);
    let events = srv.stream("/v1/completions", &streamed);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).expect("chunk")).collect();
    let joined: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert_eq!(Some(joined.as_str()), x["choices"][0]["text"].as_str());
    assert!(chunks.last().is_some_and(|c| c["choices"][0]["finish_reason"].is_string()));

    // A stop sequence cuts the text before it.
    let whole = x["choices"][0]["text"].as_str().unwrap_or("");
    if let Some(stop) = whole.char_indices().nth(3).map(|(i, _)| &whole[i..]).filter(|s| !s.is_empty()) {
        let stop: String = stop.chars().take(2).collect();
        let mut with_stop = sampled.clone();
        with_stop["stop"] = json!([stop]);
        let (st, z) = srv.post("/v1/completions", &with_stop);
        assert_eq!(st, 200);
        let cut = whole.find(&stop).expect("stop in text");
        assert_eq!(z["choices"][0]["text"].as_str(), Some(&whole[..cut]), "stop {stop:?} in {whole:?}");
        assert_eq!(z["choices"][0]["finish_reason"], "stop");
    }

    // Chat through the template, non-streaming and streaming.
    let chat = json!({"messages": [{"role": "user", "content": "Greet anna."}], "max_tokens": 6, "temperature": 0});
    let (st, c) = srv.post("/v1/chat/completions", &chat);
    assert_eq!(st, 200, "{c}");
    assert_eq!(c["object"], "chat.completion");
    assert_eq!(c["choices"][0]["message"]["role"], "assistant");
    let mut chat_stream = chat.clone();
    chat_stream["stream"] = json!(true);
    chat_stream["stream_options"] = json!({"include_usage": true});
    let events = srv.stream("/v1/chat/completions", &chat_stream);
    let chunks: Vec<Value> =
        events.iter().filter(|e| *e != "[DONE]").map(|e| serde_json::from_str(e).expect("chunk")).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let joined: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(Some(joined.as_str()), c["choices"][0]["message"]["content"].as_str());
    assert_eq!(
        chunks.last().map(|c| c["usage"]["completion_tokens"].clone()),
        Some(c["usage"]["completion_tokens"].clone())
    );

    // 4xx with OpenAI's error body, naming the field.
    for (body, status, param) in [
        (json!({"prompt": "x", "max_tokens": 33}), 400, "max_tokens"),
        (json!({"prompt": "x", "n": 2}), 400, "n"),
        (json!({"prompt": "x", "temperature": 3}), 400, "temperature"),
        (json!({"prompt": "x", "logprobs": 2}), 400, "logprobs"),
        (json!({"prompt": "x", "frobnicate": 1}), 400, "frobnicate"),
        (json!({"prompt": "x", "model": "other"}), 404, "model"),
        (json!({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}), 400, "stop"),
    ] {
        let (st, v) = srv.post("/v1/completions", &body);
        assert_eq!((st, error_param(&v)), (status, param), "{body} -> {v}");
        assert!(v["error"]["message"].is_string());
    }
    let (st, v) = srv.post("/v1/chat/completions", &json!({"messages": [{"role": "robot", "content": "x"}]}));
    assert_eq!(st, 400, "{v}");
    let (st, _) = srv.post("/predict", &json!({"inputs": ["x"]}));
    assert_eq!(st, 404);
    let long = "anna ".repeat(5000);
    let (st, v) = srv.post("/v1/completions", &json!({"prompt": long, "max_tokens": 4}));
    assert_eq!(st, 400, "{v}");
}

#[test]
fn sigterm_lets_the_stream_in_flight_finish() {
    let model = gguf();
    // The batch window holds the request on the server for half a second, so SIGTERM arrives mid-request.
    let srv = Server::start(&["--model", model.to_str().unwrap_or_default(), "--batch-window-ms", "500"]);
    let c = srv.client();
    let client = std::thread::spawn(move || {
        let body = json!({"prompt": "hello", "max_tokens": 16, "temperature": 1.0, "seed": 1, "stream": true});
        c.stream("/v1/completions", &body)
    });
    std::thread::sleep(Duration::from_millis(150));
    let pid = srv.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let events = client.join().expect("client");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let mut srv = srv;
    let status = srv.child.wait().expect("wait");
    assert!(status.success(), "exit after SIGTERM: {status:?}");
}

#[test]
fn a_phi_model_is_served_as_generate_decodes_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path();
    let phi =
        common::byte_level_model(root, "tiny_phi", &["model.embed_tokens.weight", "lm_head.weight", "lm_head.bias"]);
    let data = common::write_sft(root, "prompts.jsonl", 1);
    let out = root.join("generated.jsonl");
    let (m, d, o) =
        (phi.to_str().unwrap_or_default(), data.to_str().unwrap_or_default(), out.to_str().unwrap_or_default());
    ok(finetune(&[
        "generate",
        "--model",
        m,
        "--data",
        d,
        "--out",
        o,
        "--max-new-tokens",
        "6",
        "--use-chat-template",
        "false",
    ]));
    let line: Value =
        serde_json::from_str(std::fs::read_to_string(&out).expect("out").lines().next().expect("line")).expect("json");
    let srv = Server::start(&["--model", m, "--model-name", "phi", "--max-tokens", "16"]);
    let req = json!({"model": "phi", "prompt": "Greet anna.", "max_tokens": 6, "temperature": 0});
    let (st, a) = srv.post("/v1/completions", &req);
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["choices"][0]["text"], line["prediction"], "serve and generate decode the same greedy text");
    assert!(a["usage"]["completion_tokens"].as_u64().is_some_and(|n| (1..=6).contains(&n)), "{a}");
    drop(srv);

    // From int8 weight copies: `generate --int8` and `serve --int8` decode the same greedy text.
    let out8 = root.join("generated-int8.jsonl");
    let o8 = out8.to_str().unwrap_or_default();
    let args =
        ["generate", "--model", m, "--data", d, "--out", o8, "--max-new-tokens", "6", "--use-chat-template", "false"];
    let gen = ok(finetune(&[&args[..], &["--int8"]].concat()));
    assert!(String::from_utf8_lossy(&gen.stderr).contains("int8 weight copies"), "the int8 path was not taken");
    let line8: Value =
        serde_json::from_str(std::fs::read_to_string(&out8).expect("out").lines().next().expect("line")).expect("json");
    let srv = Server::start(&["--model", m, "--model-name", "phi", "--max-tokens", "16", "--int8"]);
    let (st, b) = srv.post("/v1/completions", &req);
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["choices"][0]["text"], line8["prediction"], "serve --int8 and generate --int8 differ");
}
