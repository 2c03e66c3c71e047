//! What every causal decoder shares, whatever its layers: the training [`Batch`] (with packed rows), the
//! checks on a batch, the shifted causal-LM targets, the LM-head logits for evaluation, and the inference path's
//! [`KvCache`], cached attention and decode-step checks. An architecture file (`llama.rs`, `gpt2.rs`, `phi.rs`)
//! holds only its config, layout, forward and backward, calls these, and implements [`Architecture`] so that the
//! table in [`crate::causal`] can load, train and run it.

use finetune_engine::bf16::linear::{Ctx, SharedWeights};
use finetune_engine::int8::{self, Q8Input, Q8Matrix};
use finetune_engine::kernels::causal_attention::{self, Shape};
use finetune_engine::kernels::cross_entropy::{self, IGNORE_INDEX};
use finetune_engine::kernels::linear;
use finetune_engine::kernels::linear_cross_entropy::{self as lce, Scratch};
use finetune_engine::kernels::{layernorm, residual, rope};
use finetune_engine::matmul::{gemm_view, matmul, Par, View};
use finetune_engine::StateDict;

use crate::error::ModelError;
use crate::lora::LoraWorkspace;
use crate::params::{check_config_against, DimCheck, ParamInfo, ParamStore};

/// The [`Architecture`] items every architecture file writes alike, inside its `impl Architecture`: for a model
/// struct with `config` and `store` fields, workspaces built by `new(&config, ...)` that hold `batch`, `seq` and
/// the `lm` head and `lora` scratch, and inherent `trunk` and `forward_backward`.
macro_rules! architecture_plumbing {
    ($ws:ty, $dws:ty) => {
        type Workspace = $ws;
        type DecodeWorkspace = $dws;
        fn store(&self) -> &$crate::params::ParamStore {
            &self.store
        }
        fn store_mut(&mut self) -> &mut $crate::params::ParamStore {
            &mut self.store
        }
        fn vocab_size(&self) -> usize {
            self.config.vocab_size
        }
        fn new_workspace(&self, batch: usize, seq: usize) -> $ws {
            <$ws>::new(&self.config, batch, seq)
        }
        fn new_inference_workspace(&self, batch: usize, seq: usize) -> $ws {
            <$ws>::for_inference(&self.config, batch, seq)
        }
        fn workspace_shape(ws: &$ws) -> (usize, usize) {
            (ws.batch, ws.seq)
        }
        fn lm_head(ws: &mut $ws) -> &mut $crate::decoder::LmHead {
            &mut ws.lm
        }
        fn lora_workspace(ws: &mut $ws) -> &mut $crate::lora::LoraWorkspace {
            &mut ws.lora
        }
        fn trunk(&self, ws: &mut $ws, batch: &$crate::decoder::Batch<'_>) -> Result<(), $crate::error::ModelError> {
            // The file's own `trunk` (inherent items come first in a path).
            Self::trunk(self, ws, batch)
        }
        fn loss_backward(
            &mut self,
            ws: &mut $ws,
            batch: &$crate::decoder::Batch<'_>,
        ) -> Result<f32, $crate::error::ModelError> {
            self.forward_backward(ws, batch)
        }
        fn new_cache(&self, batch: usize, max_len: usize) -> $crate::decoder::KvCache {
            $crate::decoder::KvCache::new(&self.config, batch, max_len)
        }
        fn new_decode_workspace(&self, batch: usize, max_new: usize, max_len: usize) -> $dws {
            <$dws>::new(&self.config, batch, max_new, max_len)
        }
    };
}
pub(crate) use architecture_plumbing;

/// What an architecture file gives the architecture table in [`crate::causal`]: its Hugging Face names, loading
/// from a state dict, its parameter store, and the training and KV-cache passes on its own workspaces.
pub trait Architecture: Sized {
    /// The class written into a saved `config.json`'s `architectures`.
    const CLASS: &'static str;
    /// The `model_type` values this file loads; the first is written into a saved config that has none.
    const MODEL_TYPES: &'static [&'static str];
    /// Whether its linear layers take the bf16 kernels (`bf16 = true`; [`LmHead::bf16`]).
    const BF16: bool = true;
    /// Activations of a training or evaluation pass for one (batch, seq) shape.
    type Workspace;
    /// Activations of KV-cache decode steps.
    type DecodeWorkspace;

    /// Builds the model from `config.json`'s text and the weights, checking one against the other.
    fn from_config(config_json: &str, state: &StateDict) -> Result<Self, ModelError>;
    fn store(&self) -> &ParamStore;
    fn store_mut(&mut self) -> &mut ParamStore;
    fn vocab_size(&self) -> usize;
    /// The longest sequence the model can read (learned positions); `None` for rotary models.
    fn max_positions(&self) -> Option<usize> {
        None
    }

    fn new_workspace(&self, batch: usize, seq: usize) -> Self::Workspace;
    /// A forward-only workspace (losses and logits, no gradients): two layers' activations used in turn.
    fn new_inference_workspace(&self, batch: usize, seq: usize) -> Self::Workspace;
    /// The (batch, seq) shape `ws` was made for.
    fn workspace_shape(ws: &Self::Workspace) -> (usize, usize);
    /// The LM head's share of `ws` (its label smoothing is set there).
    fn lm_head(ws: &mut Self::Workspace) -> &mut LmHead;
    /// LoRA's scratch in `ws` (its dropout seed is cleared for passes without gradients).
    fn lora_workspace(ws: &mut Self::Workspace) -> &mut LoraWorkspace;
    /// Embedding, blocks and final norm: leaves the LM head's input in `ws`'s [`LmHead`].
    fn trunk(&self, ws: &mut Self::Workspace, batch: &Batch<'_>) -> Result<(), ModelError>;
    /// The LM head's weight (and bias).
    fn head(&self) -> Head<'_>;

    /// The causal-LM loss of `batch` (which must have labels), without gradients. NaN when every target is
    /// ignored (as PyTorch's mean over no elements).
    fn forward(&self, ws: &mut Self::Workspace, batch: &Batch<'_>) -> Result<f32, ModelError> {
        let labels = batch.labels.ok_or_else(|| ModelError::Batch("the loss needs labels".into()))?;
        Self::lora_workspace(ws).train_seed = None;
        self.trunk(ws, batch)?;
        let (bsz, seq) = Self::workspace_shape(ws);
        let head = self.head();
        let lm = Self::lm_head(ws);
        let c = lm.hidden.len() / (bsz * seq).max(1);
        let v = head.weight.len() / c.max(1);
        Ok(lm.loss(head, batch, labels, (seq, c, v), None))
    }

    /// Logits `[batch, seq, vocab]`, or with `last_only` `[batch, vocab]` at each sequence's last real token
    /// (the last position whose attention mask is 1), for evaluation and generation.
    fn logits<'w>(
        &self,
        ws: &'w mut Self::Workspace,
        batch: &Batch<'_>,
        last_only: bool,
    ) -> Result<&'w [f32], ModelError> {
        Self::lora_workspace(ws).train_seed = None;
        self.trunk(ws, batch)?;
        let shape = Self::workspace_shape(ws);
        let head = self.head();
        let lm = Self::lm_head(ws);
        let c = lm.hidden.len() / (shape.0 * shape.1).max(1);
        Ok(lm.logits(head, batch.attention_mask, shape, c, last_only))
    }
    /// The loss, with its gradient added to the store's for every parameter that requires one.
    fn loss_backward(&mut self, ws: &mut Self::Workspace, batch: &Batch<'_>) -> Result<f32, ModelError>;

    /// The weights a decode step multiplies by, for int8 generation; empty when the architecture has no int8
    /// decode path.
    fn int8_spans(&self) -> Vec<Int8Span> {
        Vec::new()
    }
    /// Where the int8 copies live (`None` without an int8 decode path).
    fn int8_weights(&mut self) -> Option<&mut Int8Weights> {
        None
    }

    fn new_cache(&self, batch: usize, max_len: usize) -> KvCache;
    fn new_decode_workspace(&self, batch: usize, max_new: usize, max_len: usize) -> Self::DecodeWorkspace;
    /// Runs `input_ids` on top of the cached tokens of `rows` (see [`StepRows`]), appends their keys and values
    /// and returns the logits of each row's last new token. Prefill and decode steps are the same call.
    fn decode<'w>(
        &self,
        cache: &mut KvCache,
        ws: &'w mut Self::DecodeWorkspace,
        input_ids: &[u32],
        rows: StepRows<'_>,
    ) -> Result<&'w [f32], ModelError>;
}

/// One batch of `batch × seq` tokens, row-major. `Default` gives empty slices and no options, for
/// `Batch { input_ids, attention_mask, ..Default::default() }`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Batch<'a> {
    pub input_ids: &'a [u32],
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: &'a [u32],
    /// Unshifted labels `[batch, seq]` (position t is scored against `labels[t + 1]`); −100 is ignored.
    pub labels: Option<&'a [i64]>,
    /// Divide the summed loss by this instead of the number of kept targets (the token count of a whole
    /// accumulated batch, as transformers' `num_items_in_batch`).
    pub loss_normalizer: Option<f32>,
    /// Positions `[batch, seq]` for packed rows (transformers' `DataCollatorWithFlattening`): a new sequence
    /// starts wherever the position is 0; the position embedding uses these positions and attention stays inside
    /// each sequence. `None`: positions 0..seq in every row.
    pub position_ids: Option<&'a [u32]>,
}

/// The checks on a batch that do not depend on the architecture: `n` tokens, ids below `vocab`, a 0/1 mask,
/// one label per token (−100 or a token id), a positive loss normaliser, one position per token.
pub(crate) fn check_batch(b: &Batch<'_>, n: usize, batch: usize, seq: usize, vocab: usize) -> Result<(), String> {
    if b.input_ids.len() != n || b.attention_mask.len() != n {
        return Err(format!("expected {n} input ids and mask entries for a {batch}×{seq} workspace"));
    }
    if let Some(&id) = b.input_ids.iter().find(|&&i| i as usize >= vocab) {
        return Err(format!("input id {id} out of range for vocab_size {vocab}"));
    }
    if b.attention_mask.iter().any(|&m| m > 1) {
        return Err("attention_mask entries must be 0 or 1".into());
    }
    if let Some(y) = b.labels {
        if y.len() != n {
            return Err(format!("expected {n} labels, one per token"));
        }
        if let Some(&l) = y.iter().find(|&&l| l != IGNORE_INDEX && (l < 0 || l as usize >= vocab)) {
            return Err(format!("label {l} is out of bounds for vocab_size {vocab}"));
        }
    }
    if let Some(z) = b.loss_normalizer {
        if !(z > 0.0 && z.is_finite()) {
            return Err(format!("loss_normalizer must be positive, got {z}"));
        }
    }
    if let Some(pos) = b.position_ids {
        if pos.len() != n {
            return Err(format!("expected {n} position_ids, one per token, got {}", pos.len()));
        }
    }
    Ok(())
}

/// Packed-sequence index of each token: a new sequence starts at each position 0 and at each row start.
fn packed_segments(seg: &mut [u32], pos: &[u32], seq: usize) {
    let mut k = 0u32;
    for (i, (sg, &q)) in seg.iter_mut().zip(pos).enumerate() {
        if q == 0 || i % seq == 0 {
            k += 1;
        }
        *sg = k;
    }
}

/// A training batch's tokens as every decoder's trunk reads them, held in its workspace: ids, positions, the
/// packed-sequence segments and transformers' additive attention mask.
pub(crate) struct Tokens {
    pub ids: Vec<u32>,
    /// Position of each token: 0..T per row, or the batch's `position_ids`.
    pub pos: Vec<u32>,
    /// Packed-sequence index of each token, used when the batch has position ids.
    seg: Vec<u32>,
    packed: bool,
    /// 0 for tokens, the most negative f32 for padding.
    pub mask_add: Vec<f32>,
}

impl Tokens {
    pub fn new(n: usize) -> Self {
        Tokens { ids: vec![0; n], pos: vec![0; n], seg: vec![0; n], packed: false, mask_add: vec![0.0; n] }
    }

    /// Takes a checked batch of rows of `seq` tokens; positions are clamped to `last_pos` (a position table's
    /// last row, for learned position embeddings).
    pub fn load(&mut self, batch: &Batch<'_>, seq: usize, last_pos: u32) {
        self.ids.copy_from_slice(batch.input_ids);
        self.packed = batch.position_ids.is_some();
        match batch.position_ids {
            Some(pos) => {
                packed_segments(&mut self.seg, pos, seq);
                self.pos.iter_mut().zip(pos).for_each(|(q, &p)| *q = p.min(last_pos));
            }
            // Positions 0..T regardless of padding, as transformers without position_ids.
            None => self.pos.iter_mut().enumerate().for_each(|(i, q)| *q = ((i % seq) as u32).min(last_pos)),
        }
        for (m, &a) in self.mask_add.iter_mut().zip(batch.attention_mask) {
            *m = if a == 0 { f32::MIN } else { 0.0 };
        }
    }

    /// The packed-sequence segments, when the batch packs several sequences per row.
    pub fn segments(&self) -> Option<&[u32]> {
        self.packed.then_some(&self.seg[..])
    }
}

/// Adds each token's gradient row to its embedding row. Rows repeat across tokens, so the scatter is serial; it is
/// O(n·c), small next to the matmuls.
pub(crate) fn scatter_rows(grad: &mut [f32], dx: &[f32], rows: &[u32], c: usize) {
    for (d, &row) in dx.chunks_exact(c).zip(rows) {
        residual::add_assign(&mut grad[row as usize * c..(row as usize + 1) * c], d);
    }
}

/// Shifted targets (`targets[t] = labels[t + 1]`, −100 at each row's end); returns the loss normaliser (kept
/// targets, or the caller's).
pub(crate) fn shift_targets(targets: &mut [i64], labels: &[i64], seq: usize, normalizer: Option<f32>) -> f32 {
    for (row_t, row_y) in targets.chunks_exact_mut(seq).zip(labels.chunks_exact(seq)) {
        row_t[..seq - 1].copy_from_slice(&row_y[1..]);
        row_t[seq - 1] = IGNORE_INDEX;
    }
    normalizer.unwrap_or(lce::count_targets(targets) as f32)
}

/// Default size of one chunk of LM-head logits (floats): 32 MiB.
pub(crate) const HEAD_CHUNK_FLOATS: usize = 1 << 23;

/// The LM head's loss over `targets` (`[n]`, −100 ignored) from the final hidden states `[n, c]` and the head
/// `[v, c]`: the summed token cross-entropy divided by `norm`, and with `grads` its gradients. Without label
/// smoothing this is the fused chunked kernel (transformers' `ForCausalLMLoss`). With `label_smoothing` ε > 0 each
/// kept token costs `(1 − ε)·nll + ε·mean over the vocabulary of −log p`, as the Trainer's `LabelSmoother`
/// (`label_smoothing_factor`) and `torch.nn.functional.cross_entropy(label_smoothing=ε)` define it; logits are
/// formed in row chunks and scored by the plain cross-entropy kernel.
#[allow(clippy::too_many_arguments)]
pub(crate) fn head_loss(
    hidden: &[f32],
    Head { weight: head, bias, .. }: Head<'_>,
    targets: &[i64],
    (n, c, v): (usize, usize, usize),
    norm: f32,
    label_smoothing: f32,
    mut grads: Option<lce::Grads<'_>>,
    scratch: &mut Scratch,
    ctx: Ctx<'_>,
) -> f32 {
    if label_smoothing == 0.0 {
        return lce::forward_backward(hidden, head, bias, targets, n, c, v, norm, grads, scratch, ctx);
    }
    let _prof = finetune_engine::profile::scope("smoothed_head_loss");
    let rows = Scratch::rows_for_budget(HEAD_CHUNK_FLOATS, v).min(n.max(1));
    let mut logits = vec![0.0f32; rows * v];
    let mut dlogits = if grads.is_some() { vec![0.0f32; rows * v] } else { Vec::new() };
    if let Some(lce::Grads { dhidden: Some(dh), .. }) = grads.as_mut() {
        dh[..n * c].fill(0.0);
    }
    let opt = cross_entropy::Options { weight: None, label_smoothing };
    let mut total = 0.0f64;
    for start in (0..n).step_by(rows) {
        let r = rows.min(n - start);
        let y = &targets[start..start + r];
        let kept = lce::count_targets(y);
        if kept == 0 {
            continue;
        }
        let h = &hidden[start * c..(start + r) * c];
        let lg = &mut logits[..r * v];
        if ctx.is_some() {
            finetune_engine::bf16::linear::forward(ctx, lg, h, head, bias, r, c, v);
        } else {
            add_bias_rows(lg, bias, v);
            matmul(lg, h, head, r, c, v, false, true, bias.is_some());
        }
        total += cross_entropy::forward(lg, y, r, v, opt) as f64 * kept as f64;
        if let Some(g) = grads.as_mut() {
            let dl = &mut dlogits[..r * v];
            // The kernel's gradient is of the chunk's mean: rescale it to the chunk's share of sum / norm.
            cross_entropy::backward(dl, lg, y, r, v, opt, kept as f32 / norm);
            if ctx.is_some() {
                let dh = g.dhidden.as_deref_mut().map(|dh| &mut dh[start * c..(start + r) * c]);
                finetune_engine::bf16::linear::backward(
                    ctx,
                    dh,
                    g.dweight.as_deref_mut(),
                    None,
                    dl,
                    h,
                    head,
                    r,
                    c,
                    v,
                    false,
                );
            } else if let Some(dh) = g.dhidden.as_deref_mut() {
                matmul(&mut dh[start * c..(start + r) * c], dl, head, r, v, c, false, false, false);
            }
            if let Some(dw) = g.dweight.as_deref_mut().filter(|_| ctx.is_none()) {
                matmul(dw, dl, h, v, r, c, true, false, true);
            }
            if let Some(db) = g.dbias.as_deref_mut() {
                for row in dl.chunks_exact(v) {
                    residual::add_assign(db, row);
                }
            }
        }
    }
    (total / norm as f64) as f32
}

/// An LM head: `[vocab, c]` weights and, for some architectures (Phi), a `[vocab]` bias.
#[derive(Clone, Copy)]
pub struct Head<'a> {
    pub weight: &'a [f32],
    pub bias: Option<&'a [f32]>,
    /// The weight's version for its bf16 copy ([`weight_version`]).
    pub version: u64,
}

/// Starts each `v`-wide row of `out` at the bias (for a matmul that then accumulates), if there is one.
fn add_bias_rows(out: &mut [f32], bias: Option<&[f32]>, v: usize) {
    if let Some(b) = bias {
        for row in out.chunks_exact_mut(v) {
            row.copy_from_slice(b);
        }
    }
}

/// The LM head's share of a decoder workspace: the final hidden states (the head's input) and their gradient,
/// the shifted targets, the chunked-loss scratch, and the logits of the last `logits` call.
pub struct LmHead {
    pub(crate) hidden: Vec<f32>,
    pub(crate) dhidden: Vec<f32>,
    pub(crate) targets: Vec<i64>,
    pub(crate) scratch: Scratch,
    /// Output of the last `logits` call.
    pub logits: Vec<f32>,
    /// transformers' `label_smoothing_factor` for the loss of batches run in this workspace (0: none).
    pub label_smoothing: f32,
    /// `bf16 = true`: the model's bf16 weight copies (shared by its workspaces); the trunk's linear layers then
    /// run in bf16 with f32 accumulation. `None`: f32.
    pub bf16: Option<SharedWeights>,
}

/// The bf16 context of the weights `first..=last` (consecutive parameters of `store`) for a workspace's
/// `bf16` handle: a frozen weight's copies stay valid until the store's revision (loads, merges) or the owner's
/// [`SharedWeights::weights_changed`] moves (LoRA's base weights are cast once), a trained one's for one
/// optimizer step. `None` runs in f32.
pub(crate) fn lin_ctx<'a>(bf16: &'a Option<SharedWeights>, store: &ParamStore, first: usize, last: usize) -> Ctx<'a> {
    let w = bf16.as_ref()?;
    Some((w, w.version().wrapping_add(weight_version(store, first, last))))
}

/// The version of the weights `first..=last` of `store` for their bf16 copies: it moves with the store's
/// revision, and with every optimizer step when one of them is trained.
pub(crate) fn weight_version(store: &ParamStore, first: usize, last: usize) -> u64 {
    let trained = store.param_infos()[first..=last].iter().any(|i| i.requires_grad);
    let step = if trained { store.steps().wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) } else { 0 };
    step.wrapping_add(store.revision().wrapping_mul(0xD1B5_4A32_D192_ED03))
}

impl LmHead {
    /// For `n` tokens of width `c`, a vocabulary of `vocab`, `chunk_rows` token rows per chunk of logits.
    pub(crate) fn new(n: usize, c: usize, vocab: usize, chunk_rows: usize) -> Self {
        LmHead {
            hidden: vec![0.0; n * c],
            dhidden: vec![0.0; n * c],
            targets: vec![IGNORE_INDEX; n],
            scratch: Scratch::new(chunk_rows.min(n.max(1)), c, vocab),
            logits: Vec::new(),
            label_smoothing: 0.0,
            bf16: None,
        }
    }

    /// The causal-LM loss of `batch`'s labels (shifted here) through `head` on the hidden states the trunk
    /// left; with `backward` also `dhidden` and, when given there, the head's weight and bias gradients.
    pub(crate) fn loss(
        &mut self,
        head: Head<'_>,
        batch: &Batch<'_>,
        labels: &[i64],
        (seq, c, v): (usize, usize, usize),
        backward: Option<lce::Grads<'_>>,
    ) -> f32 {
        let norm = shift_targets(&mut self.targets, labels, seq, batch.loss_normalizer);
        let n = self.targets.len();
        let grads = backward.map(|g| lce::Grads { dhidden: Some(&mut self.dhidden), ..g });
        let ctx = self.bf16.as_ref().map(|w| (w, w.version().wrapping_add(head.version)));
        let (ls, scratch) = (self.label_smoothing, &mut self.scratch);
        head_loss(&self.hidden, head, &self.targets, (n, c, v), norm, ls, grads, scratch, ctx)
    }

    /// Logits of the hidden states through `head` (see [`head_logits`]).
    pub(crate) fn logits(
        &mut self,
        head: Head<'_>,
        mask: &[u32],
        shape: (usize, usize),
        c: usize,
        last_only: bool,
    ) -> &[f32] {
        let v = head.weight.len() / c.max(1);
        head_logits(&mut self.logits, &self.hidden, head, mask, shape, c, v, last_only);
        &self.logits
    }
}

/// LM-head logits of the final hidden states `[batch, seq, c]` into `logits`: `[batch, seq, vocab]`, or with
/// `last_only` `[batch, vocab]` at each sequence's last real token (the last position whose mask is 1).
#[allow(clippy::too_many_arguments)]
pub(crate) fn head_logits(
    logits: &mut Vec<f32>,
    hidden: &[f32],
    Head { weight: head, bias, .. }: Head<'_>,
    mask: &[u32],
    (bsz, t): (usize, usize),
    c: usize,
    v: usize,
    last_only: bool,
) {
    if last_only {
        let mut rows = vec![0.0f32; bsz * c];
        for b in 0..bsz {
            let last = mask[b * t..(b + 1) * t].iter().rposition(|&x| x == 1).unwrap_or(t - 1);
            rows[b * c..(b + 1) * c].copy_from_slice(&hidden[(b * t + last) * c..(b * t + last + 1) * c]);
        }
        logits.resize(bsz * v, 0.0);
        add_bias_rows(logits, bias, v);
        matmul(logits, &rows, head, bsz, c, v, false, true, bias.is_some());
    } else {
        logits.resize(bsz * t * v, 0.0);
        add_bias_rows(logits, bias, v);
        matmul(logits, hidden, head, bsz * t, c, v, false, true, bias.is_some());
    }
}

/// The key/value dimensions of a decoder's config: (layers, key/value heads, head dim).
pub trait KvDims {
    fn kv_dims(&self) -> (usize, usize, usize);
}

/// Largest head dimension a config may declare (real models use 64 to 256): the rotary tables are sized by it
/// before any weight is seen.
pub const MAX_HEAD_DIM: usize = 1 << 15;

/// The sizes that the `config.json` of every decoder in transformers' `model.layers.N` layout names alike (Llama,
/// Mistral, Qwen2, Phi). An architecture's config holds them with `#[serde(flatten)]` and derefs to them, so that
/// `cfg.hidden_size` reads as in transformers.
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
pub struct Geometry {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Defaults to `num_attention_heads` (no grouping).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
}

impl Geometry {
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Sizes positive, query heads a multiple of key/value heads, each size within the crate's limits.
    pub(crate) fn validate(&self) -> Result<(), ModelError> {
        let err = |m: String| Err(ModelError::Config(m));
        let (h, kv, d) = (self.num_attention_heads, self.kv_heads(), self.head_dim());
        if self.hidden_size == 0 || h == 0 || kv == 0 || self.vocab_size == 0 || d == 0 {
            return err(
                "hidden_size, num_attention_heads, num_key_value_heads, head_dim and vocab_size must be positive"
                    .into(),
            );
        }
        if !h.is_multiple_of(kv) {
            return err(format!("num_attention_heads {h} is not a multiple of num_key_value_heads {kv}"));
        }
        crate::error::check_config_sizes(&[
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", h),
            ("num_key_value_heads", kv),
            ("head_dim", d),
        ])?;
        if d > MAX_HEAD_DIM {
            let field = if self.head_dim.is_some() { "head_dim" } else { "hidden_size" };
            return Err(ModelError::ConfigField {
                field: field.into(),
                message: format!("a head dimension of {d} is larger than the supported maximum {MAX_HEAD_DIM}"),
            });
        }
        Ok(())
    }

    /// Compares the sizes with the weights' shapes before anything is allocated, so that a config that does not
    /// describe its weights is one error naming the field. `mlp_in` names the first MLP weight (`[F, C]`).
    pub(crate) fn check_against(&self, sd: &StateDict, mlp_in: &str) -> Result<(), ModelError> {
        let (h, kv, d) = (self.num_attention_heads, self.kv_heads(), self.head_dim());
        let head_field = if self.head_dim.is_some() { "head_dim" } else { "num_attention_heads" };
        let embed = ["model.embed_tokens.weight"];
        let (mlp, q, k) =
            ([mlp_in], ["model.layers.0.self_attn.q_proj.weight"], ["model.layers.0.self_attn.k_proj.weight"]);
        let dims = [
            DimCheck { field: "vocab_size", value: Some(self.vocab_size), params: &embed, axis: 0 },
            DimCheck { field: "hidden_size", value: Some(self.hidden_size), params: &embed, axis: 1 },
            DimCheck { field: "intermediate_size", value: Some(self.intermediate_size), params: &mlp, axis: 0 },
            DimCheck { field: head_field, value: h.checked_mul(d), params: &q, axis: 0 },
            DimCheck { field: "num_key_value_heads", value: kv.checked_mul(d), params: &k, axis: 0 },
        ];
        let layers = ("num_hidden_layers", self.num_hidden_layers, &["model.layers."][..]);
        check_config_against(sd, &["model."], &dims, layers)
    }
}

/// Keys and values of every layer, `[batch, kv_heads, max_len, head_dim]` each, allocated once for a whole
/// generation. Keys are stored after any rotary embedding, as transformers' `DynamicCache`.
///
/// Rows either advance together (left-padded batches, [`len`](Self::len) tokens each) or each on its own (the
/// row steps of continuous batching: row `r` holds [`row_len(r)`](Self::row_len) tokens).
pub struct KvCache {
    pub batch: usize,
    pub max_len: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) k: Vec<Vec<f32>>,
    pub(crate) v: Vec<Vec<f32>>,
    /// The longest row.
    pub(crate) len: usize,
    /// Tokens held per row (padding included).
    pub(crate) lens: Vec<usize>,
}

impl KvCache {
    /// A cache for a model of config `cfg`: `batch` rows of up to `max_len` tokens.
    pub fn new(cfg: &impl KvDims, batch: usize, max_len: usize) -> Self {
        let (layers, kv_heads, head_dim) = cfg.kv_dims();
        Self::with_dims(layers, batch, kv_heads, head_dim, max_len)
    }

    /// A cache of `layers` layers for any decoder with these key/value dimensions.
    pub fn with_dims(layers: usize, batch: usize, kv_heads: usize, head_dim: usize, max_len: usize) -> Self {
        let z = || vec![0.0f32; batch * kv_heads * max_len * head_dim];
        KvCache {
            batch,
            max_len,
            kv_heads,
            head_dim,
            k: (0..layers).map(|_| z()).collect(),
            v: (0..layers).map(|_| z()).collect(),
            len: 0,
            lens: vec![0; batch],
        }
    }

    /// Tokens per row held so far (padding included); with rows of different lengths, the longest.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tokens held by row `row` (0 for a row out of range).
    pub fn row_len(&self, row: usize) -> usize {
        self.lens.get(row).copied().unwrap_or(0)
    }

    /// Forgets every cached token (the buffers are kept).
    pub fn clear(&mut self) {
        self.len = 0;
        self.lens.fill(0);
    }

    /// Forgets the tokens of row `row` only, so that a new sequence can start there.
    pub fn clear_row(&mut self, row: usize) {
        if let Some(l) = self.lens.get_mut(row) {
            *l = 0;
        }
        self.len = self.lens.iter().copied().max().unwrap_or(0);
    }

    /// Makes room for `max_len` tokens per row, keeping what every row holds (a no-op when there is room).
    pub fn grow(&mut self, max_len: usize) {
        if max_len <= self.max_len {
            return;
        }
        let (rows, d, old) = (self.batch * self.kv_heads, self.head_dim, self.max_len);
        let lens = &self.lens;
        let kv = self.kv_heads;
        let regrow = |buf: &mut Vec<f32>| {
            let mut grown = vec![0.0f32; rows * max_len * d];
            for r in 0..rows {
                let n = lens[r / kv.max(1)] * d;
                grown[r * max_len * d..][..n].copy_from_slice(&buf[r * old * d..][..n]);
            }
            *buf = grown;
        };
        self.k.iter_mut().for_each(regrow);
        self.v.iter_mut().for_each(regrow);
        self.max_len = max_len;
    }
}

/// Which rows of a [`KvCache`] a cached step runs on.
#[derive(Debug, Clone, Copy)]
pub enum StepRows<'a> {
    /// Every row, all holding `len` tokens; the mask `[batch, len + n_new]` marks left padding (0).
    Padded(&'a [u32]),
    /// Input row `i` runs on cache row `slots[i]`, after that row's own tokens; no padding.
    Slots(&'a [usize]),
}

impl StepRows<'_> {
    /// The cache row of input row `i`.
    pub fn slot(&self, i: usize) -> usize {
        match self {
            StepRows::Padded(_) => i,
            StepRows::Slots(s) => s[i],
        }
    }
}

/// The shape of a checked cached step.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepShape {
    /// Input rows.
    pub batch: usize,
    pub n_new: usize,
    /// Tokens in the longest row after the step.
    pub longest: usize,
}

/// The buffers of a decode step that every architecture has alike, allocated once for `batch` rows of up to
/// `max_new` new tokens and `max_len` tokens in all: each new token's position, the residual stream, attention's
/// per-head output and context, a projection's scratch output, the scores, each row's last hidden state and the
/// logits. An architecture's decode workspace holds one beside its own buffers.
pub struct DecodeBuffers {
    pub batch: usize,
    pub max_new: usize,
    pub max_len: usize,
    pub(crate) pos: Vec<u32>,
    pub(crate) x: Vec<f32>,
    /// Attention output per (row, head): `[batch, heads, max_new, head_dim]`.
    pub(crate) heads_out: Vec<f32>,
    pub(crate) ctx: Vec<f32>,
    pub(crate) tmp: Vec<f32>,
    /// Scores per (row, head): `[batch, heads, max_new, max_len]`.
    pub(crate) scores: Vec<f32>,
    pub(crate) last: Vec<f32>,
    /// `[batch, vocab]` logits of the last new token of each row.
    pub logits: Vec<f32>,
    /// The step's activations quantized for the int8 weights.
    pub(crate) xq: Q8Input,
}

impl DecodeBuffers {
    /// For a model of `hidden` channels, `heads` attention heads of `head_dim` and `vocab` tokens.
    pub(crate) fn new(
        (batch, max_new, max_len): (usize, usize, usize),
        hidden: usize,
        (heads, head_dim): (usize, usize),
        vocab: usize,
    ) -> Self {
        let n = batch * max_new;
        let z = |k: usize| vec![0.0f32; k];
        DecodeBuffers {
            batch,
            max_new,
            max_len,
            pos: vec![0; n],
            x: z(n * hidden),
            heads_out: z(n * heads * head_dim),
            ctx: z(n * heads * head_dim),
            tmp: z(n * hidden),
            scores: z(batch * heads * max_new * max_len),
            last: z(batch * hidden),
            logits: z(batch * vocab),
            xq: Q8Input::default(),
        }
    }
}

/// A weight of a decode step to keep in int8: parameters `first..=last` (one fused matrix) with `rows` output
/// features, stored `[rows, in]` as `nn.Linear` does or, `transposed`, `[in, rows]` as GPT-2's `Conv1D`.
#[derive(Debug, Clone, Copy)]
pub struct Int8Span {
    pub first: usize,
    pub last: usize,
    pub rows: usize,
    pub transposed: bool,
}

impl Int8Span {
    /// An `nn.Linear` weight (or fused run of them) of `rows` output features.
    pub fn linear(first: usize, last: usize, rows: usize) -> Self {
        Int8Span { first, last, rows, transposed: false }
    }
}

/// Int8 (Q8_0) copies of the weights a decode step multiplies by, for generation that reads a quarter of the
/// bytes per token (`--int8`). Keyed by the first parameter of each weight (a fused q/k/v or gate/up span
/// starts at its first part); made for one state of the store and refused once it changes.
#[derive(Debug, Default)]
pub struct Int8Weights {
    mats: std::collections::HashMap<usize, Q8Matrix>,
    /// The store's (revision, optimizer steps) when quantized.
    version: (u64, u64),
}

impl Int8Weights {
    /// Quantizes each span of `store` (see [`Int8Span`]).
    pub(crate) fn build(store: &ParamStore, spans: &[Int8Span]) -> Result<Self, ModelError> {
        let mut mats = std::collections::HashMap::new();
        for &Int8Span { first, last, rows, transposed } in spans {
            let w = store.span(first, last);
            let cols = w.len() / rows.max(1);
            // A Conv1D weight is stored `[in, out]`: its rows are the columns here.
            let t: Vec<f32>;
            let w = if transposed {
                t = (0..rows * cols).map(|k| w[(k % cols) * rows + k / cols]).collect();
                &t[..]
            } else {
                w
            };
            let q = Q8Matrix::quantize(w, rows, cols).map_err(|e| {
                let name = &store.param_infos()[first].name;
                ModelError::Config(format!("{name}: {e}"))
            })?;
            mats.insert(first, q);
        }
        Ok(Int8Weights { mats, version: (store.revision(), store.steps()) })
    }

    pub fn is_empty(&self) -> bool {
        self.mats.is_empty()
    }

    /// Bytes of the int8 copies.
    pub fn bytes(&self) -> usize {
        self.mats.values().map(Q8Matrix::bytes).sum()
    }
}

/// Makes `m`'s decode steps (generation) read int8 copies of its weights (`--int8`); returns their bytes. The
/// f32 weights stay: training, evaluation and prompt prefill (steps of more than [`INT8_MAX_ROWS`] tokens, which
/// are compute-bound and faster on the f32 GEMM) use them.
pub fn quantize_int8<A: Architecture>(m: &mut A) -> Result<usize, ModelError> {
    let spans = m.int8_spans();
    if spans.is_empty() {
        return Err(ModelError::Config(format!("int8 generation is not implemented for {}", A::CLASS)));
    }
    let w = Int8Weights::build(m.store(), &spans)?;
    let bytes = w.bytes();
    if let Some(slot) = m.int8_weights() {
        *slot = w;
    }
    Ok(bytes)
}

/// `linear::forward` of a decode step (`out[n, c_out] = inp · wᵀ + bias`), from the int8 copy of the weight
/// starting at parameter `key` when the model has int8 weights.
#[allow(clippy::too_many_arguments)]
pub(crate) fn decode_linear(
    q8: (&Int8Weights, &ParamStore, usize),
    xq: &mut Q8Input,
    out: &mut [f32],
    inp: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    n: usize,
    (c_in, c_out): (usize, usize),
) -> Result<(), ModelError> {
    if !int8_linear(q8, xq, out, inp, bias, n, c_out)? {
        linear::forward(out, inp, w, bias, n, c_in, c_out);
    }
    Ok(())
}

/// The most token rows a step runs on the int8 weights: decode steps of a batch. A prefill of more rows is bound
/// by arithmetic, not by reading the weights, and the f32 GEMM is faster there.
pub const INT8_MAX_ROWS: usize = 16;

/// A decode step's linear layer from the int8 copy of the weight starting at parameter `key`: `Ok(false)`, with
/// nothing done, when the model has no int8 weights (the caller runs its f32 layer).
pub(crate) fn int8_linear(
    (q8, store, key): (&Int8Weights, &ParamStore, usize),
    xq: &mut Q8Input,
    out: &mut [f32],
    inp: &[f32],
    bias: Option<&[f32]>,
    n: usize,
    c_out: usize,
) -> Result<bool, ModelError> {
    if q8.is_empty() || n > INT8_MAX_ROWS {
        return Ok(false);
    }
    if q8.version != (store.revision(), store.steps()) {
        return Err(ModelError::Batch("the int8 weights were made before the weights changed".into()));
    }
    let m = q8.mats.get(&key).ok_or_else(|| ModelError::Batch(format!("no int8 copy of parameter {key}")))?;
    int8::matmul_t(out, inp, n, m, xq);
    if let Some(b) = bias {
        for row in out[..n * c_out].chunks_exact_mut(c_out) {
            for (o, b) in row.iter_mut().zip(b) {
                *o += b;
            }
        }
    }
    Ok(true)
}

/// The rows a decode workspace was allocated for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DecodeCapacity {
    pub batch: usize,
    pub max_new: usize,
    pub max_len: usize,
    /// Whether its buffers are sized for this model.
    pub sized: bool,
}

/// Checks one cached step of `input_ids` (`[rows, n_new]`) on the `rows` of `cache` for a model of `dims`
/// (layers, kv heads, head dim) and `vocab` tokens, with `ws` as the workspace.
pub(crate) fn check_step(
    cache: &KvCache,
    ws: DecodeCapacity,
    dims: (usize, usize, usize),
    vocab: usize,
    input_ids: &[u32],
    rows: StepRows<'_>,
) -> Result<StepShape, String> {
    let max_len = cache.max_len;
    if cache.k.len() != dims.0 || cache.kv_heads != dims.1 || cache.head_dim != dims.2 {
        return Err("the KV cache was created for a different model configuration".into());
    }
    let bsz = match rows {
        StepRows::Padded(_) => cache.batch,
        StepRows::Slots(s) => s.len(),
    };
    let batch_fits = match rows {
        StepRows::Padded(_) => ws.batch == bsz,
        StepRows::Slots(_) => ws.batch >= bsz,
    };
    if !batch_fits || ws.max_len < max_len || !ws.sized {
        return Err(format!(
            "the decode workspace ({} rows, {} tokens) does not fit the cache ({bsz} rows, {max_len} tokens)",
            ws.batch, ws.max_len
        ));
    }
    if bsz == 0 || input_ids.is_empty() || !input_ids.len().is_multiple_of(bsz) {
        return Err(format!("expected batch × new tokens input ids for {bsz} rows, got {}", input_ids.len()));
    }
    let n_new = input_ids.len() / bsz;
    if n_new > ws.max_new {
        return Err(format!("{n_new} new tokens per row exceed the workspace's {}", ws.max_new));
    }
    let longest = match rows {
        StepRows::Padded(attention_mask) => {
            let (past, total) = (cache.len, cache.len + n_new);
            if cache.lens.iter().any(|&l| l != past) {
                return Err("the KV cache's rows hold different numbers of tokens: step them by row".into());
            }
            if attention_mask.len() != bsz * total {
                return Err(format!(
                    "expected an attention_mask of {bsz} × {total} entries, got {}",
                    attention_mask.len()
                ));
            }
            if attention_mask.iter().any(|&m| m > 1) {
                return Err("attention_mask entries must be 0 or 1".into());
            }
            total
        }
        StepRows::Slots(slots) => {
            for (i, &s) in slots.iter().enumerate() {
                if s >= cache.batch {
                    return Err(format!("row {s} out of range for a KV cache of {} rows", cache.batch));
                }
                if i > 0 && s <= slots[i - 1] {
                    return Err("rows must be distinct and in increasing order".into());
                }
            }
            slots.iter().map(|&s| cache.lens[s] + n_new).max().unwrap_or(0)
        }
    };
    if longest > max_len {
        return Err(format!("{longest} tokens per row exceed the KV cache's max_len {max_len}"));
    }
    if let Some(&id) = input_ids.iter().find(|&&i| i as usize >= vocab) {
        return Err(format!("input id {id} out of range for vocab_size {vocab}"));
    }
    Ok(StepShape { batch: bsz, n_new, longest })
}

/// Positions of the new tokens of a cached step: with padding as transformers' `generate`
/// (`cumsum(attention_mask) − 1`, 1 on padding), on row steps each row's own count onwards.
pub(crate) fn step_positions(pos: &mut [u32], cache: &KvCache, rows: StepRows<'_>, bsz: usize, n_new: usize) {
    match rows {
        StepRows::Padded(mask) => decode_positions(pos, mask, bsz, cache.len, n_new),
        StepRows::Slots(slots) => {
            for (p, &s) in pos.chunks_exact_mut(n_new).zip(slots) {
                for (i, x) in p.iter_mut().enumerate() {
                    *x = (cache.lens[s] + i) as u32;
                }
            }
        }
    }
}

/// One decode step's view of the cache: the attention's shape and row lengths, the layers' keys and values, and
/// the tokens in the longest row after the step.
pub(crate) struct Step<'a> {
    pub attn: CachedAttn<'a>,
    pub k: &'a mut [Vec<f32>],
    pub v: &'a mut [Vec<f32>],
    pub longest: usize,
}

/// The start of every decode step: checks `input_ids` on `rows` against the cache (built for `dims`: layers, kv
/// heads, head dim) and the workspace `cap`, writes each new token's position into `pos`, and splits the cache
/// into the attention's view and the layers' keys and values. `heads` is the number of query heads.
#[allow(clippy::too_many_arguments)]
pub(crate) fn begin_step<'a>(
    cache: &'a mut KvCache,
    buf: &mut DecodeBuffers,
    hidden: usize,
    dims: (usize, usize, usize),
    heads: usize,
    vocab: usize,
    input_ids: &[u32],
    rows: StepRows<'a>,
) -> Result<Step<'a>, ModelError> {
    let sized = buf.x.len() == buf.batch * buf.max_new * hidden;
    let cap = DecodeCapacity { batch: buf.batch, max_new: buf.max_new, max_len: buf.max_len, sized };
    let shape = check_step(cache, cap, dims, vocab, input_ids, rows).map_err(ModelError::Batch)?;
    step_positions(&mut buf.pos, cache, rows, shape.batch, shape.n_new);
    let attn = CachedAttn {
        batch: shape.batch,
        heads,
        kv_heads: dims.1,
        head_dim: dims.2,
        n_new: shape.n_new,
        max_len: cache.max_len,
        max_new: cap.max_new,
        rows,
        lens: &cache.lens,
    };
    Ok(Step { attn, k: &mut cache.k, v: &mut cache.v, longest: shape.longest })
}

/// Records the `n_new` tokens a step appended to its rows.
pub(crate) fn advance(cache: &mut KvCache, rows: StepRows<'_>, n_new: usize) {
    match rows {
        StepRows::Padded(_) => {
            cache.len += n_new;
            cache.lens.fill(cache.len);
        }
        StepRows::Slots(slots) => {
            for &s in slots {
                cache.lens[s] += n_new;
            }
            cache.len = cache.lens.iter().copied().max().unwrap_or(0);
        }
    }
}

/// Positions of the new tokens of a left-padded cached step: `cumsum(attention_mask) − 1`, 1 on padding.
fn decode_positions(pos: &mut [u32], attention_mask: &[u32], bsz: usize, past: usize, n_new: usize) {
    let total = past + n_new;
    for b in 0..bsz {
        let m = &attention_mask[b * total..(b + 1) * total];
        let mut cum: u32 = m[..past].iter().sum();
        for i in 0..n_new {
            cum += m[past + i];
            pos[b * n_new + i] = if m[past + i] == 0 { 1 } else { cum - 1 };
        }
    }
}

/// The embedding rows of `ids` from `table` (`[vocab, c]`) into `out`.
pub(crate) fn embed(out: &mut [f32], table: &[f32], ids: &[u32], c: usize) {
    for (o, &id) in out.chunks_exact_mut(c).zip(ids) {
        o.copy_from_slice(&table[id as usize * c..(id as usize + 1) * c]);
    }
}

/// Copies the last new row of each batch row (`x` is `[batch, n_new, c]`) into `out` (`[batch, c]`).
pub(crate) fn last_rows(out: &mut [f32], x: &[f32], bsz: usize, n_new: usize, c: usize) {
    for b in 0..bsz {
        let r = b * n_new + n_new - 1;
        out[b * c..(b + 1) * c].copy_from_slice(&x[r * c..(r + 1) * c]);
    }
}

/// Shape of one cached attention call: `n_new` new query rows per input row on top of the tokens its cache row
/// holds, in caches `[cache rows, kv_heads, max_len, head_dim]` (shared by the Llama family and GPT-2).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CachedAttn<'a> {
    /// Input rows.
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub n_new: usize,
    pub max_len: usize,
    /// Row capacity of the `scores` and `heads_out` buffers.
    pub max_new: usize,
    pub rows: StepRows<'a>,
    /// Tokens each cache row held before this step.
    pub lens: &'a [usize],
}

impl CachedAttn<'_> {
    /// The cache row of input row `b` and the tokens it held before this step.
    fn row(&self, b: usize) -> (usize, usize) {
        let s = self.rows.slot(b);
        (s, self.lens[s])
    }

    /// Copies the new keys (columns `k_col..`) and values (`v_col..`) of each `w`-wide qkv row into the caches.
    pub fn append(&self, kc: &mut [f32], vc: &mut [f32], qkv: &[f32], w: usize, k_col: usize, v_col: usize) {
        let (n_new, d) = (self.n_new, self.head_dim);
        for b in 0..self.batch {
            let (slot, past) = self.row(b);
            for i in 0..n_new {
                let row = &qkv[(b * n_new + i) * w..][..w];
                for g in 0..self.kv_heads {
                    let at = ((slot * self.kv_heads + g) * self.max_len + past + i) * d;
                    kc[at..at + d].copy_from_slice(&row[k_col + g * d..k_col + (g + 1) * d]);
                    vc[at..at + d].copy_from_slice(&row[v_col + g * d..v_col + (g + 1) * d]);
                }
            }
        }
    }

    /// `ctx[row, h·d..] = softmax(q Kᵀ / √d + mask) V` for every new row and query head (query heads in columns
    /// `0..heads·d` of `qkv`), with transformers' additive mask (the most negative f32) on padding and future
    /// keys. Call after [`append`](Self::append).
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &self,
        kc: &[f32],
        vc: &[f32],
        qkv: &[f32],
        w: usize,
        scores: &mut [f32],
        heads_out: &mut [f32],
        ctx: &mut [f32],
    ) {
        use finetune_engine::math::dot;
        let _prof = finetune_engine::profile::scope("cached_attention");
        let (h, kv, d, n_new, max_len) = (self.heads, self.kv_heads, self.head_dim, self.n_new, self.max_len);
        let rep = h / kv;
        let scale = 1.0 / (d as f32).sqrt();
        // One task per (row, query head); the matmuls inside are small, so they run on the calling thread.
        let work = |(bh, (sc, out)): (usize, (&mut [f32], &mut [f32]))| {
            let (b, hh) = (bh / h, bh % h);
            let (slot, past) = self.row(b);
            let total = past + n_new;
            let g = hh / rep;
            let kv_at = (slot * kv + g) * max_len * d;
            let (kb, vb) = (&kc[kv_at..kv_at + total * d], &vc[kv_at..kv_at + total * d]);
            // Decode steps are dot products over the cache: a matmul call would cost more than the work.
            let small = n_new <= 4;
            if small {
                for i in 0..n_new {
                    let q = &qkv[(b * n_new + i) * w + hh * d..][..d];
                    for (x, k) in sc[i * total..(i + 1) * total].iter_mut().zip(kb.chunks_exact(d)) {
                        *x = dot(q, k) * scale;
                    }
                }
            } else {
                let q = View { data: &qkv[b * n_new * w + hh * d..], rs: w, cs: 1 };
                let kt = View { data: kb, rs: 1, cs: d };
                gemm_view(sc, total, q, kt, n_new, total, d, scale, false, Par::Seq);
            }
            // Row steps have no padding: only the causal mask applies.
            let m = match self.rows {
                StepRows::Padded(mask) => Some(&mask[b * total..(b + 1) * total]),
                StepRows::Slots(_) => None,
            };
            for (i, row) in sc[..n_new * total].chunks_exact_mut(total).enumerate() {
                for (j, x) in row.iter_mut().enumerate() {
                    if j > past + i || m.is_some_and(|m| m[j] == 0) {
                        *x += f32::MIN;
                    }
                }
                let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut z = 0.0f32;
                for x in row.iter_mut() {
                    *x = (*x - mx).exp();
                    z += *x;
                }
                let inv = 1.0 / z;
                row.iter_mut().for_each(|x| *x *= inv);
            }
            if small {
                for (i, o) in out[..n_new * d].chunks_exact_mut(d).enumerate() {
                    o.fill(0.0);
                    for (&pj, vr) in sc[i * total..(i + 1) * total].iter().zip(vb.chunks_exact(d)) {
                        for (a, &x) in o.iter_mut().zip(vr) {
                            *a += pj * x;
                        }
                    }
                }
            } else {
                let vv = View { data: vb, rs: d, cs: 1 };
                gemm_view(out, d, View::new(sc, total, false), vv, n_new, d, total, 1.0, false, Par::Seq);
            }
        };
        let (stride, od) = (self.max_new * max_len, self.max_new * d);
        let (scores, heads_out) = (&mut scores[..self.batch * h * stride], &mut heads_out[..self.batch * h * od]);
        // Threads pay off only once the attention work dwarfs their wake-up cost.
        let keys: usize = (0..self.batch).map(|b| self.row(b).1 + n_new).sum();
        if h * n_new * keys * d >= 1 << 20 {
            use rayon::prelude::*;
            scores.par_chunks_mut(stride).zip(heads_out.par_chunks_mut(od)).enumerate().for_each(work);
        } else {
            scores.chunks_mut(stride).zip(heads_out.chunks_mut(od)).enumerate().for_each(work);
        }
        for b in 0..self.batch {
            for hh in 0..h {
                for i in 0..n_new {
                    let src = &heads_out[((b * h + hh) * self.max_new + i) * d..][..d];
                    ctx[(b * n_new + i) * h * d + hh * d..][..d].copy_from_slice(src);
                }
            }
        }
    }
}

/// [`lin_ctx`] for each layer's `K` linear layers, given as (first, last) parameter indices by `spans`: taken
/// before a backward splits the store into its parts.
pub(crate) fn layer_ctxs<'a, L, const K: usize>(
    bf16: &'a Option<SharedWeights>,
    store: &ParamStore,
    layers: &[L],
    spans: impl Fn(&L) -> [(usize, usize); K],
) -> Vec<[Ctx<'a>; K]> {
    layers.iter().map(|lx| spans(lx).map(|(a, b)| lin_ctx(bf16, store, a, b))).collect()
}

/// `dinp = dout · weight` (`+=` with `acc`) for a linear layer's `weight` (`[c_out, c_in]`): its input gradient,
/// in bf16 with f32 accumulation under `ctx` (as autocast runs it), else in f32.
#[allow(clippy::too_many_arguments)]
pub(crate) fn input_grad(
    ctx: Ctx<'_>,
    dinp: &mut [f32],
    dout: &[f32],
    weight: &[f32],
    n: usize,
    c_in: usize,
    c_out: usize,
    acc: bool,
) {
    finetune_engine::bf16::linear::backward(ctx, Some(dinp), None, None, dout, &[], weight, n, c_in, c_out, acc);
}

/// `dW[rows, c_in] += dout[:, col..col + rows]ᵀ · inp` where dout rows are `width` wide (bf16 operands with `bf16`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn weight_grad(
    dw: &mut [f32],
    dout: &[f32],
    width: usize,
    col: usize,
    rows: usize,
    inp: &[f32],
    n: usize,
    c_in: usize,
    bf16: bool,
) {
    let a = View { data: &dout[col..], rs: 1, cs: width };
    let par = if rows * c_in * n >= 1 << 18 { Par::Rayon } else { Par::Seq };
    let b = View::new(inp, c_in, false);
    if bf16 {
        // As autocast: bf16 operands, f32 accumulation into the f32 gradient.
        finetune_engine::bf16::gemm_view(dw, c_in, a, b, rows, c_in, n, 1.0, true, par);
    } else {
        gemm_view(dw, c_in, a, b, rows, c_in, n, 1.0, true, par);
    }
}

/// `db[j] += Σ_i dout[i, col + j]`.
pub(crate) fn bias_grad(db: &mut [f32], dout: &[f32], width: usize, col: usize) {
    for row in dout.chunks_exact(width) {
        for (d, g) in db.iter_mut().zip(&row[col..]) {
            *d += g;
        }
    }
}

/// LayerNorm backward into a store's gradients: `dinp` is overwritten (or added to, when `acc`), and the weight
/// `wk` and bias `bk` get their gradients when they require one (the kernel always writes both, so frozen ones
/// go to scratch).
#[allow(clippy::too_many_arguments)]
pub(crate) fn layernorm_backward(
    (infos, params, grads): (&[ParamInfo], &[f32], &mut [f32]),
    (wk, bk): (usize, usize),
    dinp: &mut [f32],
    acc: bool,
    dout: &[f32],
    inp: &[f32],
    (mean, rstd): (&[f32], &[f32]),
    (n, c): (usize, usize),
    tmp: &mut Vec<f32>,
) {
    let (rw, rb) = (infos[wk].range(), infos[bk].range());
    let (mut sw, mut sb) = (Vec::new(), Vec::new());
    let (dw, db): (&mut [f32], &mut [f32]) = {
        let (lo, hi) = if rw.start < rb.start { grads.split_at_mut(rb.start) } else { grads.split_at_mut(rw.start) };
        let (w_part, b_part) = if rw.start < rb.start {
            (&mut lo[rw.clone()], &mut hi[..rb.len()])
        } else {
            (&mut hi[..rw.len()], &mut lo[rb.clone()])
        };
        let dw = if infos[wk].requires_grad {
            w_part
        } else {
            sw.resize(c, 0.0);
            &mut sw[..]
        };
        let db = if infos[bk].requires_grad {
            b_part
        } else {
            sb.resize(c, 0.0);
            &mut sb[..]
        };
        (dw, db)
    };
    let weight = &params[rw];
    if acc {
        tmp.resize(n * c, 0.0);
        layernorm::backward(tmp, dw, db, dout, inp, weight, mean, rstd, n, c);
        residual::add_assign(&mut dinp[..n * c], tmp);
    } else {
        layernorm::backward(dinp, dw, db, dout, inp, weight, mean, rstd, n, c);
    }
}

/// Causal attention over whole rows, or within each packed sequence when `seg` labels them.
pub(crate) fn attention_forward(
    ctx: &mut [f32],
    probs: &mut [f32],
    qkv: &[f32],
    mask_add: &[f32],
    seg: Option<&[u32]>,
    shape: Shape,
) {
    match seg {
        Some(seg) => causal_attention::forward_segmented(ctx, probs, qkv, mask_add, seg, shape),
        None => causal_attention::forward(ctx, probs, qkv, mask_add, shape),
    }
}

/// Backward of [`attention_forward`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward(
    dqkv: &mut [f32],
    dscores: &mut [f32],
    dctx: &[f32],
    qkv: &[f32],
    probs: &[f32],
    mask_add: &[f32],
    seg: Option<&[u32]>,
    shape: Shape,
) {
    match seg {
        Some(seg) => causal_attention::backward_segmented(dqkv, dscores, dctx, qkv, probs, mask_add, seg, shape),
        None => causal_attention::backward(dqkv, dscores, dctx, qkv, probs, mask_add, shape),
    }
}

/// Rotates the q heads and the k heads of fused `[n, (H + 2·KV)·d]` q/k/v rows (the first `rot` columns of each
/// head); `inverse` is the backward.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rope_qk(
    qkv: &mut [f32],
    (h, kv, d): (usize, usize, usize),
    rot: usize,
    pos: &[u32],
    cos: &[f32],
    sin: &[f32],
    inverse: bool,
) {
    let w = (h + 2 * kv) * d;
    rope::apply_partial(qkv, w, 0, h, d, rot, pos, cos, sin, inverse);
    rope::apply_partial(qkv, w, h * d, kv, d, rot, pos, cos, sin, inverse);
}

/// Gradients of a fused q/k/v projection from `dqkv` (`[n, (H + 2·KV)·d]`) and its input `inp` (`[n, c]`): the
/// weights `[q, k, v]` (parameter indices, `[rows, c]` each) and, when it has them, the biases, for those that
/// require one.
#[allow(clippy::too_many_arguments)]
pub(crate) fn qkv_param_grads(
    (infos, grads): (&[ParamInfo], &mut [f32]),
    weights: [usize; 3],
    biases: Option<[usize; 3]>,
    dqkv: &[f32],
    inp: &[f32],
    (h, kv, d): (usize, usize, usize),
    (n, c): (usize, usize),
    bf16: bool,
) {
    let w = (h + 2 * kv) * d;
    let cols = [(0, h * d), (h * d, kv * d), ((h + kv) * d, kv * d)];
    for (k, (col, rows)) in weights.into_iter().zip(cols) {
        if infos[k].requires_grad {
            weight_grad(&mut grads[infos[k].range()], dqkv, w, col, rows, inp, n, c, bf16);
        }
    }
    for (k, (col, _)) in biases.into_iter().flatten().zip(cols) {
        if infos[k].requires_grad {
            bias_grad(&mut grads[infos[k].range()], &dqkv[..n * w], w, col);
        }
    }
}
