//! Text generation for decoders on the KV-cache path ([`Architecture::decode`]):
//! batched prompts with left padding, greedy decoding or sampling, and transformers' logits processors
//! (repetition penalty, temperature, top-k, top-p) in the order and with the semantics of `model.generate`.
//!
//! Sampling draws from our own seeded generator: deterministic for a seed, but not torch's random stream.

use crate::decoder::{Architecture, KvCache, StepRows};
use crate::error::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("invalid generation config: {0}")]
    Config(String),
    #[error("invalid prompts: {0}")]
    Prompt(String),
}

/// A decoder with a KV-cache path: prefill and decode steps through one call.
pub trait CachedDecoder {
    type Workspace;
    fn vocab_size(&self) -> usize;
    fn new_cache(&self, batch: usize, max_len: usize) -> KvCache;
    fn new_workspace(&self, batch: usize, max_new: usize, max_len: usize) -> Self::Workspace;
    /// `[batch, vocab]` logits of the last of `input_ids` (`[batch, n_new]`) in each row.
    fn step<'w>(
        &self,
        cache: &mut KvCache,
        ws: &'w mut Self::Workspace,
        input_ids: &[u32],
        attention_mask: &[u32],
    ) -> Result<&'w [f32], GenerateError>;
    /// `[rows.len(), vocab]` logits of the last of `input_ids` (`[rows.len(), n_new]`) run on cache rows `rows`
    /// (distinct, increasing), each after the tokens that row already holds, with no padding.
    fn step_rows<'w>(
        &self,
        cache: &mut KvCache,
        ws: &'w mut Self::Workspace,
        rows: &[usize],
        input_ids: &[u32],
    ) -> Result<&'w [f32], GenerateError>;
}

impl<A: Architecture> CachedDecoder for A {
    type Workspace = A::DecodeWorkspace;
    fn vocab_size(&self) -> usize {
        Architecture::vocab_size(self)
    }
    fn new_cache(&self, batch: usize, max_len: usize) -> KvCache {
        Architecture::new_cache(self, batch, max_len)
    }
    fn new_workspace(&self, batch: usize, max_new: usize, max_len: usize) -> A::DecodeWorkspace {
        self.new_decode_workspace(batch, max_new, max_len)
    }
    fn step<'w>(
        &self,
        cache: &mut KvCache,
        ws: &'w mut A::DecodeWorkspace,
        input_ids: &[u32],
        attention_mask: &[u32],
    ) -> Result<&'w [f32], GenerateError> {
        Ok(self.decode(cache, ws, input_ids, StepRows::Padded(attention_mask))?)
    }
    fn step_rows<'w>(
        &self,
        cache: &mut KvCache,
        ws: &'w mut A::DecodeWorkspace,
        rows: &[usize],
        input_ids: &[u32],
    ) -> Result<&'w [f32], GenerateError> {
        Ok(self.decode(cache, ws, input_ids, StepRows::Slots(rows))?)
    }
}

/// Generation settings under transformers' `GenerationConfig` names and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    /// Sample from the processed distribution; otherwise greedy (temperature, top-k and top-p are then unused).
    pub do_sample: bool,
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 disables.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p`; 1.0 disables.
    pub top_p: f32,
    /// transformers' `RepetitionPenaltyLogitsProcessor`; 1.0 disables.
    pub repetition_penalty: f32,
    /// A row stops after generating any of these.
    pub eos_token_id: Vec<u32>,
    /// Left padding of shorter prompts and the filler of finished rows (default: the first EOS, else 0).
    pub pad_token_id: Option<u32>,
    pub seed: u64,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_new_tokens: 20,
            do_sample: false,
            temperature: 1.0,
            top_k: 50,
            top_p: 1.0,
            repetition_penalty: 1.0,
            eos_token_id: Vec::new(),
            pad_token_id: None,
            seed: 0,
        }
    }
}

impl GenerationConfig {
    pub fn validate(&self) -> Result<(), GenerateError> {
        let bad = |m: String| Err(GenerateError::Config(m));
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad(format!("temperature must be a strictly positive float, got {}", self.temperature));
        }
        if !(self.top_p >= 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p has to be a float between 0 and 1, got {}", self.top_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad(format!(
                "repetition_penalty has to be a strictly positive float, got {}",
                self.repetition_penalty
            ));
        }
        Ok(())
    }
}

/// `RepetitionPenaltyLogitsProcessor`: the score of every token id in `input_ids` is divided by `penalty` when
/// positive and multiplied by it when negative, once per id however often it occurs. `seen` is scratch.
pub fn repetition_penalty(scores: &mut [f32], input_ids: &[u32], penalty: f32, seen: &mut Vec<bool>) {
    seen.clear();
    seen.resize(scores.len(), false);
    for &id in input_ids {
        let i = id as usize;
        if i < scores.len() && !seen[i] {
            seen[i] = true;
            let x = scores[i];
            scores[i] = if x < 0.0 { x * penalty } else { x / penalty };
        }
    }
}

/// `TemperatureLogitsWarper`.
pub fn temperature(scores: &mut [f32], t: f32) {
    for s in scores.iter_mut() {
        *s /= t;
    }
}

/// `TopKLogitsWarper` (min_tokens_to_keep = 1): scores below the k-th largest become −∞ (ties kept).
pub fn top_k(scores: &mut [f32], k: usize, scratch: &mut Vec<f32>) {
    let k = k.max(1).min(scores.len());
    if k == 0 {
        return;
    }
    scratch.clear();
    scratch.extend_from_slice(scores);
    let (_, kth, _) = scratch.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let kth = *kth;
    for s in scores.iter_mut() {
        if *s < kth {
            *s = f32::NEG_INFINITY;
        }
    }
}

/// `TopPLogitsWarper` (min_tokens_to_keep = 1): sorts ascending, removes tokens while the cumulative
/// probability (f32 softmax, f32 running sum, as torch) is ≤ 1 − top_p, and always keeps the most likely one.
pub fn top_p(scores: &mut [f32], p: f32, order: &mut Vec<u32>, probs: &mut Vec<f32>) {
    order.clear();
    order.extend(0..scores.len() as u32);
    // Ties in index order, without the buffer a stable sort would allocate.
    order.sort_unstable_by(|&a, &b| scores[a as usize].total_cmp(&scores[b as usize]).then(a.cmp(&b)));
    let mx = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    probs.clear();
    probs.extend(order.iter().map(|&i| (scores[i as usize] - mx).exp()));
    let z: f32 = probs.iter().sum();
    let cut = (1.0 - p as f64) as f32;
    let mut cum = 0.0f32;
    let last = order.len().saturating_sub(1);
    for (r, (&i, &e)) in order.iter().zip(probs.iter()).enumerate() {
        cum += e / z;
        if cum <= cut && r < last {
            scores[i as usize] = f32::NEG_INFINITY;
        }
    }
}

/// Index of the first maximum (`torch.argmax`).
pub fn argmax(scores: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = i;
        }
    }
    best as u32
}

/// The seeded generator sampling draws from (SplitMix64, the same as the data crate's splits).
pub use finetune_data::Rng;

/// Draws a token from `softmax(scores)`; tokens at −∞ are never drawn.
pub fn sample(scores: &[f32], rng: &mut Rng) -> u32 {
    let mx = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let z: f64 = scores.iter().map(|&s| ((s - mx) as f64).exp()).sum();
    let u = rng.uniform() * z;
    let mut acc = 0.0f64;
    let mut last = argmax(scores);
    for (i, &s) in scores.iter().enumerate() {
        let e = ((s - mx) as f64).exp();
        if e > 0.0 {
            acc += e;
            last = i as u32;
            if u < acc {
                return i as u32;
            }
        }
    }
    last
}

/// Per-step buffers of the logits processors.
#[derive(Default)]
pub(crate) struct Scratch {
    scores: Vec<f32>,
    f: Vec<f32>,
    order: Vec<u32>,
    seen: Vec<bool>,
}

impl Scratch {
    /// The processors of `model.generate` in its order, then the choice of the next token.
    pub(crate) fn next_token(&mut self, logits: &[f32], history: &[u32], cfg: &GenerationConfig, rng: &mut Rng) -> u32 {
        let s = &mut self.scores;
        s.clear();
        s.extend_from_slice(logits);
        if cfg.repetition_penalty != 1.0 {
            repetition_penalty(s, history, cfg.repetition_penalty, &mut self.seen);
        }
        if !cfg.do_sample {
            return argmax(s);
        }
        if cfg.temperature != 1.0 {
            temperature(s, cfg.temperature);
        }
        if cfg.top_k != 0 {
            top_k(s, cfg.top_k, &mut self.f);
        }
        if cfg.top_p < 1.0 {
            top_p(s, cfg.top_p, &mut self.order, &mut self.f);
        }
        sample(s, rng)
    }
}

/// Generates continuations of `prompts` in one left-padded batch. A row stops after an EOS token or when
/// `stop(row, generated so far)` returns true (e.g. on a stop string decoded by the caller); the result holds
/// each row's new tokens, the final EOS included.
pub fn generate<M: CachedDecoder>(
    model: &M,
    prompts: &[Vec<u32>],
    cfg: &GenerationConfig,
    stop: &mut dyn FnMut(usize, &[u32]) -> bool,
) -> Result<Vec<Vec<u32>>, GenerateError> {
    // One random stream per row, each seeded from `cfg.seed` and the row.
    let cfgs: Vec<GenerationConfig> = (0..prompts.len())
        .map(|b| GenerationConfig { seed: cfg.seed ^ (b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15), ..cfg.clone() })
        .collect();
    generate_rows(model, prompts, &cfgs, stop)
}

/// [`generate`] with settings per row: each row samples with its own `GenerationConfig` (length, EOS,
/// temperature, top-k/top-p, repetition penalty) and its own random stream seeded by its `seed`, so what a row
/// generates does not depend on which other rows share the batch. The padding token is the first row's.
pub fn generate_rows<M: CachedDecoder>(
    model: &M,
    prompts: &[Vec<u32>],
    cfgs: &[GenerationConfig],
    stop: &mut dyn FnMut(usize, &[u32]) -> bool,
) -> Result<Vec<Vec<u32>>, GenerateError> {
    if cfgs.len() != prompts.len() {
        return Err(GenerateError::Config(format!("{} settings for {} prompts", cfgs.len(), prompts.len())));
    }
    for c in cfgs {
        c.validate()?;
    }
    let bsz = prompts.len();
    let mut out: Vec<Vec<u32>> = cfgs.iter().map(|c| Vec::with_capacity(c.max_new_tokens)).collect();
    let max_new = cfgs.iter().map(|c| c.max_new_tokens).max().unwrap_or(0);
    if bsz == 0 || max_new == 0 {
        return Ok(out);
    }
    if let Some(r) = prompts.iter().position(|p| p.is_empty()) {
        return Err(GenerateError::Prompt(format!("prompt {r} is empty")));
    }
    let first = &cfgs[0];
    let pad = first.pad_token_id.or(first.eos_token_id.first().copied()).unwrap_or(0);
    let plen = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let max_len = plen + max_new;
    let mut cache = model.new_cache(bsz, max_len);
    let mut ws = model.new_workspace(bsz, plen, max_len);
    // Per row: tokens so far (left padding, prompt, generated) and the attention mask, `max_len` apart.
    let mut hist = vec![pad; bsz * max_len];
    let mut mask_rows = vec![0u32; bsz * max_len];
    for (b, p) in prompts.iter().enumerate() {
        hist[b * max_len + plen - p.len()..b * max_len + plen].copy_from_slice(p);
        mask_rows[b * max_len + plen - p.len()..b * max_len + plen].fill(1);
    }
    let mut ids: Vec<u32> = (0..bsz).flat_map(|b| hist[b * max_len..b * max_len + plen].to_vec()).collect();
    let mut mask = vec![0u32; bsz * max_len];
    // A row with max_new_tokens = 0 is done before it starts.
    let mut done: Vec<bool> = cfgs.iter().map(|c| c.max_new_tokens == 0).collect();
    let mut rngs: Vec<Rng> = cfgs.iter().map(|c| Rng::new(c.seed)).collect();
    let mut scratch = Scratch::default();
    let v = model.vocab_size();
    for step in 0..max_new {
        let total = plen + step;
        for b in 0..bsz {
            mask[b * total..(b + 1) * total].copy_from_slice(&mask_rows[b * max_len..b * max_len + total]);
        }
        let n_ids = if step == 0 { bsz * plen } else { bsz };
        let logits = model.step(&mut cache, &mut ws, &ids[..n_ids], &mask[..bsz * total])?;
        ids.truncate(0);
        for b in 0..bsz {
            let tok = if done[b] {
                pad
            } else {
                let cfg = &cfgs[b];
                let row = &logits[b * v..(b + 1) * v];
                let t = scratch.next_token(row, &hist[b * max_len..b * max_len + total], cfg, &mut rngs[b]);
                out[b].push(t);
                // The callback sees every token (a streaming caller sends each one), the last included.
                let stopped = stop(b, &out[b]);
                if stopped || cfg.eos_token_id.contains(&t) || out[b].len() >= cfg.max_new_tokens {
                    done[b] = true;
                }
                t
            };
            ids.push(tok);
            hist[b * max_len + total] = tok;
            mask_rows[b * max_len + total] = 1;
        }
        if done.iter().all(|&d| d) {
            break;
        }
    }
    Ok(out)
}
