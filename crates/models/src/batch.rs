//! Continuous batching on the KV-cache path: a fixed number of slots over one [`KvCache`], rows that join
//! between decode steps and leave as soon as they end, so that a short request is not held behind a long one.
//!
//! [`ContinuousBatch::add`] prefills a prompt alone on a free slot (in chunks of [`PREFILL_CHUNK`] tokens) and
//! samples its first token; from then on the row takes part in every [`ContinuousBatch::step`], one token per
//! step, until an EOS, its `max_new_tokens`, or [`ContinuousBatch::finish`]. Each row attends only to its own
//! tokens at its own positions (no padding) and samples with its own [`GenerationConfig`] and random stream
//! (seeded by its `seed`), so what a row generates does not depend on when it joined or on its batch mates.

use crate::decoder::KvCache;
use crate::generate::{CachedDecoder, GenerateError, GenerationConfig, Rng, Scratch};

/// Prompt tokens per prefill call: the prefill workspace's attention scores are this many rows by the cache's
/// length per head, however long the prompt.
pub const PREFILL_CHUNK: usize = 512;

/// The cache's length per row grows in multiples of this, so that slightly longer requests do not each
/// reallocate it.
const GROW: usize = 256;

/// One generated token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub slot: usize,
    pub id: u32,
    /// The row ended with this token (an EOS, or its `max_new_tokens`-th); its slot is free again.
    pub done: bool,
}

/// A row in progress.
struct Row {
    cfg: GenerationConfig,
    rng: Rng,
    /// Prompt and generated tokens: the repetition penalty's input; the last one is the next step's input.
    history: Vec<u32>,
    generated: usize,
}

impl Row {
    /// Records `t`; true when the row ends with it.
    fn push(&mut self, t: u32) -> bool {
        self.history.push(t);
        self.generated += 1;
        self.cfg.eos_token_id.contains(&t) || self.generated >= self.cfg.max_new_tokens
    }
}

/// Rows generating together over one KV cache of `slots` rows; see the module documentation.
pub struct ContinuousBatch<'m, M: CachedDecoder> {
    model: &'m M,
    cache: KvCache,
    rows: Vec<Option<Row>>,
    /// Decode steps: every slot, one token each (made for the cache's current length).
    decode_ws: Option<M::Workspace>,
    /// Prefill: one row, up to [`PREFILL_CHUNK`] tokens.
    prefill_ws: Option<M::Workspace>,
    scratch: Scratch,
    slots: Vec<usize>,
    ids: Vec<u32>,
    out: Vec<Token>,
}

impl<'m, M: CachedDecoder> ContinuousBatch<'m, M> {
    /// An empty batch of `slots` rows (at least 1). The cache starts empty and grows to the longest request
    /// (prompt + `max_new_tokens`) seen, in multiples of 256 tokens per row.
    pub fn new(model: &'m M, slots: usize) -> Self {
        let slots = slots.max(1);
        ContinuousBatch {
            model,
            cache: model.new_cache(slots, 0),
            rows: (0..slots).map(|_| None).collect(),
            decode_ws: None,
            prefill_ws: None,
            scratch: Scratch::default(),
            slots: Vec::with_capacity(slots),
            ids: Vec::with_capacity(slots),
            out: Vec::with_capacity(slots),
        }
    }

    /// Rows the batch holds at most.
    pub fn capacity(&self) -> usize {
        self.rows.len()
    }

    /// Rows generating now.
    pub fn active(&self) -> usize {
        self.rows.iter().filter(|r| r.is_some()).count()
    }

    /// Slots free for [`add`](Self::add).
    pub fn free(&self) -> usize {
        self.capacity() - self.active()
    }

    pub fn is_empty(&self) -> bool {
        self.active() == 0
    }

    /// Whether `slot` holds a row in progress.
    pub fn is_active(&self, slot: usize) -> bool {
        self.rows.get(slot).is_some_and(Option::is_some)
    }

    /// Tokens per row the cache has room for now.
    pub fn max_len(&self) -> usize {
        self.cache.max_len
    }

    /// Starts generating from `prompt` with `cfg` on a free slot: prefills the prompt and returns the first
    /// generated token (with `done` when the row ends there). Fails, leaving the batch as it was, on invalid
    /// settings, an empty or out-of-vocabulary prompt, or when no slot is free.
    pub fn add(&mut self, prompt: &[u32], cfg: GenerationConfig) -> Result<Token, GenerateError> {
        cfg.validate()?;
        if cfg.max_new_tokens == 0 {
            return Err(GenerateError::Config("max_new_tokens must be at least 1".into()));
        }
        if prompt.is_empty() {
            return Err(GenerateError::Prompt("the prompt is empty".into()));
        }
        let Some(slot) = self.rows.iter().position(Option::is_none) else {
            return Err(GenerateError::Config(format!("all {} slots are busy", self.capacity())));
        };
        // The last generated token is never fed back: the cache holds the prompt and the tokens before it.
        self.reserve(prompt.len() + cfg.max_new_tokens - 1);
        self.cache.clear_row(slot);
        let (model, cache) = (self.model, &mut self.cache);
        let max_len = cache.max_len;
        let ws = self.prefill_ws.get_or_insert_with(|| model.new_workspace(1, PREFILL_CHUNK.min(max_len), max_len));
        let mut logits: &[f32] = &[];
        for chunk in prompt.chunks(PREFILL_CHUNK) {
            match model.step_rows(cache, ws, &[slot], chunk) {
                Ok(l) => logits = l,
                Err(e) => {
                    cache.clear_row(slot);
                    return Err(e);
                }
            }
        }
        let mut row = Row { rng: Rng::new(cfg.seed), history: prompt.to_vec(), generated: 0, cfg };
        let id = self.scratch.next_token(logits, &row.history, &row.cfg, &mut row.rng);
        let done = row.push(id);
        if done {
            self.cache.clear_row(slot);
        } else {
            self.rows[slot] = Some(row);
        }
        Ok(Token { slot, id, done })
    }

    /// One decode step for every row in progress: its next token, in slot order. Rows that end with it
    /// (`done`) leave the batch. Empty when no row is in progress.
    pub fn step(&mut self) -> Result<&[Token], GenerateError> {
        self.out.clear();
        self.slots.clear();
        self.ids.clear();
        for (s, r) in self.rows.iter().enumerate() {
            if let Some(&last) = r.as_ref().and_then(|r| r.history.last()) {
                self.slots.push(s);
                self.ids.push(last);
            }
        }
        if self.slots.is_empty() {
            return Ok(&self.out);
        }
        let (model, n, max_len) = (self.model, self.rows.len(), self.cache.max_len);
        let ws = self.decode_ws.get_or_insert_with(|| model.new_workspace(n, 1, max_len));
        let logits = model.step_rows(&mut self.cache, ws, &self.slots, &self.ids)?;
        let v = model.vocab_size();
        for (i, &s) in self.slots.iter().enumerate() {
            let Some(row) = self.rows[s].as_mut() else { continue };
            let id = self.scratch.next_token(&logits[i * v..(i + 1) * v], &row.history, &row.cfg, &mut row.rng);
            let done = row.push(id);
            if done {
                self.rows[s] = None;
                self.cache.clear_row(s);
            }
            self.out.push(Token { slot: s, id, done });
        }
        Ok(&self.out)
    }

    /// Ends the row on `slot` early (a stop sequence, a client that left) and frees the slot.
    pub fn finish(&mut self, slot: usize) {
        if let Some(r) = self.rows.get_mut(slot) {
            *r = None;
            self.cache.clear_row(slot);
        }
    }

    /// Ends every row.
    pub fn clear(&mut self) {
        self.rows.iter_mut().for_each(|r| *r = None);
        self.cache.clear();
    }

    /// Room for `need` tokens per row; the workspaces are remade for the new length.
    fn reserve(&mut self, need: usize) {
        if need > self.cache.max_len {
            self.cache.grow(need.div_ceil(GROW) * GROW);
            self.decode_ws = None;
            self.prefill_ws = None;
        }
    }
}
