//! `finetune serve`: flags to [`finetune_serve::ServeOptions`].

use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::Args;
use finetune_serve::{serve, ServeOptions};

const SERVE_EXAMPLES: &str = "\
Examples:
  finetune serve --model bench-out/sentiment --port 8080
  curl -s localhost:8080/predict -d '{\"inputs\": [\"a gripping, funny film\", \"dull and far too long\"]}'
  finetune serve --model assets/SmolLM2-135M-Instruct --port 8081
  finetune serve --model bench-out/email_subject --base assets/SmolLM2-135M-Instruct --model-name subject
  curl -s localhost:8081/v1/chat/completions -d '{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}'";

/// Serve a model over HTTP: `/predict` for classifiers and NER, OpenAI's `/v1/completions`,
/// `/v1/chat/completions` (streaming too) and `/v1/models` for decoders, `/health` for both.
#[derive(Args, Debug)]
#[command(after_help = SERVE_EXAMPLES)]
pub struct ServeArgs {
    /// Classifier or NER model directory, decoder (HF directory or GGUF file), or LoRA adapter (with --base).
    #[arg(long)]
    model: String,
    /// Base model of a LoRA adapter.
    #[arg(long)]
    base: Option<String>,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// 0 picks a free port; the address is printed at start.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The model name clients send (`model` in OpenAI requests; default: the directory's name).
    #[arg(long)]
    model_name: Option<String>,
    /// Most requests generating at once (decoders) or texts per batch (classifiers).
    #[arg(long, default_value_t = 8)]
    max_batch_size: usize,
    /// Milliseconds a waiting request waits for others to join its batch (decoders: only when none is
    /// generating; otherwise it joins the running batch at the next step).
    #[arg(long, default_value_t = 5)]
    batch_window_ms: u64,
    /// Requests waiting beyond the running batch; more are answered 429.
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// Largest request body in bytes (413 above).
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Largest prompt in tokens (default: what the model's context leaves after max_tokens).
    #[arg(long)]
    max_prompt_tokens: Option<usize>,
    /// Largest `max_tokens` a request may ask for (and chat's default).
    #[arg(long, default_value_t = 512)]
    max_tokens: usize,
    /// Seconds a request may take from arrival to its last token (504 after).
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Classifiers: tokens per text (capped by the model).
    #[arg(long, default_value_t = 128)]
    max_seq_length: usize,
    /// Classifiers: most texts in one /predict request.
    #[arg(long, default_value_t = 256)]
    max_inputs_per_request: usize,
    /// Classifiers: matmuls in bfloat16 with f32 accumulation (AMX / AVX512-BF16).
    #[arg(long)]
    bf16: bool,
    /// Decoders: decode steps from int8 (Q8_0) copies of the weights, a quarter of the bytes per new token
    /// (AVX512-VNNI where the CPU has it); prompts are prefilled with the f32 weights.
    #[arg(long)]
    int8: bool,
}

pub fn run_serve(a: ServeArgs) -> Result<()> {
    if !(a.timeout.is_finite() && a.timeout > 0.0) {
        return Err(anyhow!("--timeout must be a positive number of seconds, got {}", a.timeout));
    }
    if a.max_batch_size == 0 || a.max_queue == 0 || a.max_tokens == 0 {
        return Err(anyhow!("--max-batch-size, --max-queue and --max-tokens must be at least 1"));
    }
    let opts = ServeOptions {
        model: a.model,
        base: a.base,
        host: a.host,
        port: a.port,
        model_name: a.model_name,
        max_batch_size: a.max_batch_size,
        batch_window: Duration::from_millis(a.batch_window_ms),
        max_queue: a.max_queue,
        max_body_bytes: a.max_body_bytes,
        max_prompt_tokens: a.max_prompt_tokens,
        max_tokens_limit: a.max_tokens,
        default_max_tokens: 16.min(a.max_tokens),
        timeout: Duration::from_secs_f64(a.timeout),
        max_seq_length: a.max_seq_length,
        max_inputs_per_request: a.max_inputs_per_request,
        bf16: a.bf16,
        int8: a.int8,
    };
    serve(opts, |addr, name, kind| {
        // Scripts and tests wait for this line (port 0 picks the port).
        println!("finetune serve: listening on http://{addr} (model `{name}`, {kind})");
    })?;
    Ok(())
}
