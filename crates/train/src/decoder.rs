//! Causal-LM fine-tuning (instruction SFT, continued pretraining) of a Llama-family decoder
//! (`LlamaForCausalLM`: Llama, SmolLM2, Qwen2, Mistral) or GPT-2 (`GPT2LMHeadModel`) as a [`TrainableModel`].
//!
//! - Loss: the summed token cross-entropy of a micro-batch divided by the label-token count of the whole
//!   accumulation window (transformers' `num_items_in_batch`), so accumulation is token-normalised.
//! - Batches: right-padded rows (`labels` −100 on padding); packed rows carry `position_ids` that restart at 0 for
//!   each packed example, and the model keeps packed examples from attending to each other.
//! - Optimizer: AdamW inside the model (HF's no-decay rule for biases and norm weights); its moments are saved
//!   with each checkpoint so a resumed run continues exactly.
//! - Saving: a Hugging Face model directory (`model.safetensors`, `config.json`, `generation_config.json`,
//!   tokenizer files) that `transformers` loads.

use std::path::Path;

use finetune_data::sft::CausalTokenize;
use finetune_data::IGNORE_INDEX;
use finetune_engine::bf16::linear::SharedWeights;
use finetune_engine::bf16::Kernel;
use finetune_models::causal::{
    load_causal_lm, save_causal_lm, tokenizer_out, CausalCheckpoint, CausalModel, CausalWorkspace, Source, TokenizerOut,
};
use finetune_models::causal_tokenizer::CausalTokenizer;
use finetune_models::checkpoint::copy_tokenizer_files;
use finetune_models::decoder::Batch as ModelBatch;
use finetune_models::params::ParamInfo;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::args::AdamW;
use crate::data::{Batch, BatchSource, Sampler};
use crate::error::{Result, TrainError};
use crate::trainer::{EvalOutput, TrainableModel};
use crate::workspace::WorkspaceCache;

const OPTIMIZER_STATE: &str = "optimizer.json";

fn model_err(e: impl std::fmt::Display) -> TrainError {
    TrainError::Model(e.to_string())
}

/// One training row: token ids, labels (−100 where no loss is taken) and, for packed rows, the position of each
/// token inside its own example.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CausalRow {
    pub input_ids: Vec<u32>,
    pub labels: Vec<i64>,
    pub position_ids: Option<Vec<u32>>,
}

impl CausalRow {
    /// Targets the loss is taken over: labels after the one-token shift that are not −100.
    pub fn num_targets(&self) -> usize {
        self.labels.iter().skip(1).filter(|&&y| y != IGNORE_INDEX).count()
    }
}

/// A right-padded micro-batch of `batch × seq` tokens.
#[derive(Debug, Clone, Default)]
pub struct CausalBatch {
    pub input_ids: Vec<u32>,
    pub attention_mask: Vec<u32>,
    pub labels: Vec<i64>,
    pub position_ids: Option<Vec<u32>>,
    pub batch: usize,
    pub seq: usize,
    targets: usize,
}

/// Lengths are rounded up to a multiple of this, so dynamic padding produces few distinct shapes (each shape
/// costs one workspace allocation). Padding is masked and right-aligned, so it changes no result.
const PAD_TO_MULTIPLE_OF: usize = 64;

impl CausalBatch {
    /// Pads `rows` on the right to the longest (rounded up to a multiple of 64): `pad_id` in the inputs, 0 in the
    /// attention mask, −100 in the labels; positions of padding continue the row's last position.
    pub fn collate(rows: &[&CausalRow], pad_id: u32) -> CausalBatch {
        let longest = rows.iter().map(|r| r.input_ids.len()).max().unwrap_or(0).max(1);
        let seq = longest.div_ceil(PAD_TO_MULTIPLE_OF) * PAD_TO_MULTIPLE_OF;
        let packed = rows.iter().any(|r| r.position_ids.is_some());
        let mut b = CausalBatch { batch: rows.len(), seq, ..Default::default() };
        let mut pos = Vec::new();
        for r in rows {
            let n = r.input_ids.len();
            b.input_ids.extend_from_slice(&r.input_ids);
            b.input_ids.resize(b.input_ids.len() + seq - n, pad_id);
            b.attention_mask.extend(std::iter::repeat_n(1, n).chain(std::iter::repeat_n(0, seq - n)));
            b.labels.extend_from_slice(&r.labels[..n.min(r.labels.len())]);
            b.labels.resize(b.input_ids.len(), IGNORE_INDEX);
            if packed {
                let own: Vec<u32> = r.position_ids.clone().unwrap_or_else(|| (0..n as u32).collect());
                let last = own.last().map_or(0, |&p| p + 1);
                pos.extend_from_slice(&own);
                pos.extend(last..last + (seq - n) as u32);
            }
            b.targets += r.num_targets();
        }
        b.position_ids = packed.then_some(pos);
        b
    }

    fn view(&self, loss_normalizer: Option<f32>) -> ModelBatch<'_> {
        ModelBatch {
            input_ids: &self.input_ids,
            attention_mask: &self.attention_mask,
            labels: Some(&self.labels),
            loss_normalizer,
            position_ids: self.position_ids.as_deref(),
        }
    }
}

impl Batch for CausalBatch {
    fn num_items(&self) -> usize {
        self.targets
    }
    fn num_examples(&self) -> usize {
        self.batch
    }
}

/// Training rows as padded batches in the sampler's per-epoch order.
pub struct CausalBatches<'a> {
    pub rows: &'a [CausalRow],
    pub sampler: Sampler,
    pub pad_id: u32,
}

impl BatchSource for CausalBatches<'_> {
    type Batch = CausalBatch;

    fn num_examples(&self) -> usize {
        self.rows.len()
    }

    fn num_batches(&self) -> usize {
        self.sampler.num_batches()
    }

    fn epoch_batches(&self, epoch: u64, skip: usize) -> Box<dyn Iterator<Item = CausalBatch> + '_> {
        let (rows, pad) = (self.rows, self.pad_id);
        Box::new(self.sampler.epoch_batches(epoch).into_iter().skip(skip).map(move |ix| {
            let picked: Vec<&CausalRow> = ix.iter().filter_map(|&i| rows.get(i)).collect();
            CausalBatch::collate(&picked, pad)
        }))
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct OptimizerState {
    step: u64,
    num_params: usize,
    /// LoRA dropout (seed, passes), so a resumed run draws the same masks.
    #[serde(default)]
    lora_dropout: Option<(u64, u64)>,
}

impl crate::workspace::Shaped for CausalWorkspace {
    fn shape(&self) -> (usize, usize) {
        CausalWorkspace::shape(self)
    }
}

/// Activation workspaces per batch shape, for the architecture being trained: training workspaces, or
/// forward-only ones for losses without gradients.
#[derive(Default)]
struct Workspaces(WorkspaceCache<CausalWorkspace>);

impl Workspaces {
    /// Loss of `view` through `model`, with its gradient added to the model's when `train`.
    fn run(
        &mut self,
        model: &mut CausalModel,
        view: &ModelBatch<'_>,
        (bs, t): (usize, usize),
        label_smoothing: f32,
        train: bool,
        bf16: &Option<SharedWeights>,
    ) -> Result<f32> {
        let ws = self.0.get(bs, t, || {
            let mut ws = if train { model.new_workspace(bs, t) } else { model.new_inference_workspace(bs, t) };
            ws.set_bf16(bf16.clone());
            ws
        });
        model.loss(ws, view, label_smoothing, train).map_err(model_err)
    }
}

/// A causal LM being fine-tuned.
pub struct CausalLm {
    pub model: CausalModel,
    /// `config.json` of the source model.
    pub config: Value,
    pub source: Source,
    adamw: AdamW,
    workspaces: Workspaces,
    /// Forward-only workspaces of evaluation and perplexity, freed when a pass ends.
    eval_workspaces: Workspaces,
    /// Written into a GGUF-sourced tokenizer_config.json as `model_max_length`.
    pub max_length: Option<usize>,
    /// `label_smoothing_factor`: the training and evaluation loss smooth the one-hot targets by this much, as the
    /// Trainer's `LabelSmoother` does (0: none).
    pub label_smoothing: f32,
    /// `bf16 = true`: bf16 copies of the weights, shared by every workspace (see [`CausalLm::set_bf16`]).
    bf16: Option<SharedWeights>,
    /// The window's gradient when it is split into micro-batches.
    acc: crate::grads::GradAcc,
}

/// The id that pads decoder batches: the tokenizer's pad token, else its EOS, else 0.
pub fn pad_id(tok: &CausalTokenizer) -> u32 {
    tok.pad_token_id().or(tok.eos_token().map(|(_, id)| id)).unwrap_or(0)
}

/// Token-weighted evaluation of a causal LM.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LmEvaluation {
    /// Mean cross-entropy per target token (natural log).
    pub loss: f64,
    /// `exp(loss)`.
    pub perplexity: f64,
    pub num_tokens: usize,
    pub num_rows: usize,
}

impl CausalLm {
    /// One micro-batch's forward and backward pass; its gradient (already normalised by the window's label
    /// tokens) is added to the window's sum, or handed to a data-parallel reducer as the backward pass goes.
    fn train_micro_batch(
        &mut self,
        batch: &CausalBatch,
        num_items_in_window: usize,
        mut red: Option<&mut crate::dist::Reducer>,
    ) -> Result<f64> {
        if num_items_in_window == 0 {
            return Err(TrainError::Model("an accumulation window without label tokens".into()));
        }
        let Self { model, workspaces, label_smoothing, bf16, acc, .. } = self;
        let mut loss = 0.0;
        // Nothing to learn from when every label is masked: no gradient, no loss, as a zero-weight batch.
        if batch.targets > 0 {
            let (bs, t) = (batch.batch, batch.seq);
            let view = batch.view(Some(num_items_in_window as f32));
            let hook = red.as_deref_mut().map(|r| r.hook(1.0));
            if let Some(h) = hook {
                model.store_mut().set_layer_hook(h);
            }
            let r = workspaces.run(model, &view, (bs, t), *label_smoothing, true, bf16);
            model.store_mut().set_layer_hook(Default::default());
            loss = r? as f64;
        }
        match red {
            Some(red) => red.flush(model.store_mut()),
            None if batch.targets > 0 && (batch.targets != num_items_in_window || acc.is_active()) => {
                // Other micro-batches share the window: each one's gradient on its own, added in order.
                acc.add(model.store_mut(), 1.0);
            }
            None => {}
        }
        Ok(loss)
    }

    /// Loads `spec` (a GGUF file, a directory with one, an HF directory or a hub-cache id).
    pub fn from_pretrained(spec: &str, adamw: AdamW) -> Result<Self> {
        let CausalCheckpoint { model, config, source } = load_causal_lm(spec).map_err(model_err)?;
        let workspaces = Workspaces::default();
        Ok(CausalLm {
            model,
            config,
            source,
            adamw,
            workspaces,
            eval_workspaces: Workspaces::default(),
            max_length: None,
            label_smoothing: 0.0,
            bf16: None,
            acc: Default::default(),
        })
    }

    /// Loads a model for inference: a full model, or `model` as a PEFT adapter directory on `base`, merged.
    pub fn for_inference(model: &str, base: Option<&str>) -> Result<Self> {
        let adapter = Path::new(model).join("adapter_config.json").is_file();
        let mut m = if adapter {
            let base = base.ok_or_else(|| {
                TrainError::Args(format!("{model} is a LoRA adapter: give its base model with --base"))
            })?;
            let mut m = CausalLm::from_pretrained(base, crate::TrainingArguments::default().adamw())?;
            m.model.store_mut().load_adapter(model).map_err(model_err)?;
            m.model.store_mut().merge_lora().map_err(model_err)?;
            m
        } else {
            CausalLm::from_pretrained(model, crate::TrainingArguments::default().adamw())?
        };
        m.max_length = None;
        Ok(m)
    }

    /// The model's own tokenizer (from its GGUF file or directory).
    pub fn tokenizer(&self) -> Result<CausalTokenizer> {
        match &self.source {
            Source::Gguf { path, .. } => CausalTokenizer::from_gguf(path).map_err(model_err),
            Source::Dir(d) => CausalTokenizer::from_dir(d).map_err(model_err),
        }
    }

    /// The tokenizer for inference with `model_spec`: an adapter directory's own files when it has them, else
    /// the model's.
    pub fn inference_tokenizer(&self, model_spec: &str) -> Result<CausalTokenizer> {
        let d = Path::new(model_spec);
        if d.join("adapter_config.json").is_file() && d.join("tokenizer.json").is_file() {
            return CausalTokenizer::from_dir(d).map_err(model_err);
        }
        self.tokenizer()
    }

    /// Every token id that ends a generation: the tokenizer's EOS and config.json's `eos_token_id` (one or a
    /// list), as `generate` stops on either.
    pub fn eos_token_ids(&self, tok: &CausalTokenizer) -> Vec<u32> {
        let mut eos: Vec<u32> = tok.eos_token().map(|(_, id)| vec![id]).unwrap_or_default();
        let from_config: Vec<u32> = match self.config.get("eos_token_id") {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).map(|x| x as u32).collect(),
            Some(v) => v.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
            None => Vec::new(),
        };
        for id in from_config {
            if !eos.contains(&id) {
                eos.push(id);
            }
        }
        eos
    }

    /// Summed loss over the batch's targets (no gradients).
    pub fn loss_sum(&mut self, b: &CausalBatch) -> Result<f64> {
        if b.targets == 0 {
            return Ok(0.0);
        }
        let Self { model, eval_workspaces, label_smoothing, bf16, .. } = self;
        Ok(eval_workspaces.run(model, &b.view(Some(1.0)), (b.batch, b.seq), *label_smoothing, false, bf16)? as f64)
    }

    /// `bf16 = true`: the linear layers' matmuls in bfloat16 with f32 accumulation from the next batch on (weights,
    /// LoRA adapters, optimizer and checkpoints stay f32; LoRA's frozen base weights are cast once). Returns the
    /// kernel in use (`amx`, `avx512bf16`, or `f32` on a CPU with neither); an architecture without the bf16 path
    /// (GPT-2) is an error naming it.
    pub fn set_bf16(&mut self, on: bool) -> Result<Kernel> {
        self.workspaces = Workspaces::default();
        self.eval_workspaces = Workspaces::default();
        if !on {
            self.bf16 = None;
            return Ok(Kernel::F32);
        }
        if !self.model.supports_bf16() {
            return Err(TrainError::Args(format!(
                "bf16 = true: not supported for {} models yet (Llama-family and Phi decoders only)",
                self.model.architecture()
            )));
        }
        let kernel = Kernel::active().map_err(TrainError::Args)?;
        self.bf16 = Some(SharedWeights::new());
        Ok(kernel)
    }

    /// Token-weighted loss and perplexity over `rows`, `batch_size` rows per forward pass (in order).
    pub fn evaluate(&mut self, rows: &[CausalRow], batch_size: usize, pad_id: u32) -> Result<LmEvaluation> {
        // A training workspace keeps every layer's activations (≈1.5 MB per token for a 135M model at 512
        // tokens): drop the training shapes before evaluating rather than hold both; evaluation runs on
        // forward-only workspaces, freed at the end.
        self.workspaces = Workspaces::default();
        let (mut sum, mut n) = (0.0f64, 0usize);
        for chunk in rows.chunks(batch_size.max(1)) {
            let refs: Vec<&CausalRow> = chunk.iter().collect();
            let b = CausalBatch::collate(&refs, pad_id);
            sum += self.loss_sum(&b)?;
            n += b.targets;
        }
        self.eval_workspaces = Workspaces::default();
        let loss = if n == 0 { f64::NAN } else { sum / n as f64 };
        Ok(LmEvaluation { loss, perplexity: loss.exp(), num_tokens: n, num_rows: rows.len() })
    }

    /// Perplexity of one token stream with a sliding window, exactly as Hugging Face's perplexity guide
    /// (`docs/source/en/perplexity.md`): windows of `max_length` tokens starting every `stride` tokens, loss only
    /// on the tokens not scored by the previous window, and each window's mean loss weighted by its valid target
    /// count minus one (the guide's correction for the label shift). `stride == max_length` gives disjoint
    /// windows; smaller strides give every scored token more context.
    pub fn sliding_window_perplexity(&mut self, ids: &[u32], max_length: usize, stride: usize) -> Result<LmEvaluation> {
        if max_length < 2 || stride == 0 || stride > max_length {
            return Err(TrainError::Model(format!(
                "perplexity: need max_length >= 2 and 0 < stride <= max_length, got max_length {max_length}, stride \
                 {stride}"
            )));
        }
        let (mut nll_sum, mut n_tokens, mut windows) = (0.0f64, 0usize, 0usize);
        let mut prev_end = 0;
        let mut begin = 0;
        while begin < ids.len() {
            let end = (begin + max_length).min(ids.len());
            let trg_len = end - prev_end;
            let window = &ids[begin..end];
            let keep_from = window.len() - trg_len;
            let labels: Vec<i64> =
                window.iter().enumerate().map(|(i, &t)| if i < keep_from { IGNORE_INDEX } else { t as i64 }).collect();
            let row = CausalRow { input_ids: window.to_vec(), labels, position_ids: None };
            let b = CausalBatch::collate(&[&row], 0);
            let scored = b.targets;
            if scored > 0 {
                let mean = self.loss_sum(&b)? / scored as f64;
                let num_loss_tokens = trg_len - 1;
                nll_sum += mean * num_loss_tokens as f64;
                n_tokens += num_loss_tokens;
            }
            windows += 1;
            prev_end = end;
            if end == ids.len() {
                break;
            }
            begin += stride;
        }
        let loss = if n_tokens == 0 { f64::NAN } else { nll_sum / n_tokens as f64 };
        Ok(LmEvaluation { loss, perplexity: loss.exp(), num_tokens: n_tokens, num_rows: windows })
    }

    /// [`evaluate`](Self::evaluate) as the loop's evaluation output: `eval_loss` and `eval_perplexity`.
    pub fn eval_output(&mut self, rows: &[CausalRow], batch_size: usize, pad_id: u32) -> Result<EvalOutput> {
        let e = self.evaluate(rows, batch_size, pad_id)?;
        let metrics = [("loss".to_string(), e.loss), ("perplexity".to_string(), e.perplexity)].into_iter().collect();
        Ok(EvalOutput { metrics, num_samples: rows.len(), num_batches: rows.len().div_ceil(batch_size.max(1)) })
    }
}

impl TrainableModel for CausalLm {
    type Batch = CausalBatch;

    fn train_batch(&mut self, batch: &CausalBatch, num_items_in_window: usize) -> Result<f64> {
        self.train_micro_batch(batch, num_items_in_window, None)
    }

    fn train_batch_exchanged(
        &mut self,
        batch: &CausalBatch,
        num_items_in_window: usize,
        red: &mut crate::dist::Reducer,
    ) -> Result<f64> {
        self.train_micro_batch(batch, num_items_in_window, Some(red))
    }

    fn clip_and_step(&mut self, lr: f64, max_grad_norm: f64) -> Result<f64> {
        let max = if max_grad_norm > 0.0 { max_grad_norm as f32 } else { f32::INFINITY };
        self.acc.flush_into(self.model.store_mut());
        let store = self.model.store_mut();
        let norm = store.optimizer_step(max, self.adamw.hyper(lr)) as f64;
        Ok(norm)
    }

    fn dist_params(&self) -> Result<Vec<ParamInfo>> {
        Ok(self.model.store().param_infos().to_vec())
    }

    fn set_grads(&mut self, grads: &[f32]) -> Result<()> {
        self.acc.put(self.model.store_mut(), grads);
        Ok(())
    }

    fn skip_batch(&mut self, batch: &CausalBatch) -> Result<()> {
        // A batch with label tokens is a training pass: LoRA dropout draws its masks from the pass count.
        if batch.targets > 0 {
            self.model.store_mut().lora_train_seed();
        }
        Ok(())
    }

    /// A full model directory, or with LoRA adapters PEFT's adapter layout (`adapter_config.json`,
    /// `adapter_model.safetensors`) plus the tokenizer files.
    fn save_model(&self, dir: &Path) -> Result<()> {
        if self.model.store().lora_config().is_some() {
            std::fs::create_dir_all(dir).map_err(|e| TrainError::Model(format!("{}: {e}", dir.display())))?;
            self.model.store().save_adapter(dir).map_err(model_err)?;
            return save_tokenizer(dir, &self.source, self.max_length);
        }
        save_causal_lm(dir, &self.model, &self.config, tokenizer_out(&self.source, self.max_length)).map_err(model_err)
    }

    fn load_model(&mut self, dir: &Path) -> Result<()> {
        let store = self.model.store_mut();
        if store.lora_config().is_some() {
            // Re-attach the saved adapters (same config, so the flat buffers keep their layout).
            store.unload_lora();
            store.load_adapter(dir).map_err(model_err)?;
        } else {
            crate::state::load_params(store, dir)?;
        }
        if let Some(w) = &self.bf16 {
            w.weights_changed();
        }
        Ok(())
    }

    fn save_training_state(&self, dir: &Path) -> Result<()> {
        let store = self.model.store();
        let n = store.save_optimizer_state(dir).map_err(model_err)?;
        let state = OptimizerState { step: store.steps(), num_params: n, lora_dropout: store.lora_dropout_state() };
        crate::state::write_json(&dir.join(OPTIMIZER_STATE), &state)
    }

    fn load_training_state(&mut self, dir: &Path) -> Result<()> {
        let opt: OptimizerState = crate::state::read_json(&dir.join(OPTIMIZER_STATE))?;
        let store = self.model.store_mut();
        store.load_optimizer_state(dir, opt.step).map_err(|e| crate::state::optimizer_err(dir, e))?;
        if let Some((seed, passes)) = opt.lora_dropout {
            store.set_lora_dropout_state(seed, passes);
        }
        Ok(())
    }
}

/// Writes only the tokenizer files a model directory would get.
fn save_tokenizer(dir: &Path, source: &Source, max_length: Option<usize>) -> Result<()> {
    match tokenizer_out(source, max_length) {
        TokenizerOut::CopyFrom(src) => copy_tokenizer_files(src, dir).map_err(model_err),
        TokenizerOut::Write { tokenizer, tokenizer_config } => {
            let text = tokenizer.to_string(false).map_err(model_err)?;
            crate::state::write_atomic(&dir.join("tokenizer.json"), text.as_bytes())
                .map_err(|e| TrainError::Model(format!("{}: {e}", dir.display())))?;
            crate::state::write_json(&dir.join("tokenizer_config.json"), &tokenizer_config)
        }
        TokenizerOut::None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collate_pads_right_and_counts_shifted_targets() {
        let a = CausalRow { input_ids: vec![5, 6, 7], labels: vec![-100, 6, 7], position_ids: None };
        let b = CausalRow { input_ids: vec![8], labels: vec![8], position_ids: None };
        let batch = CausalBatch::collate(&[&a, &b], 0);
        assert_eq!((batch.batch, batch.seq), (2, 64));
        assert_eq!(&batch.input_ids[..4], &[5, 6, 7, 0]);
        assert_eq!(&batch.attention_mask[62..66], &[0, 0, 1, 0]);
        assert_eq!(batch.labels[64], 8);
        assert!(batch.labels[65..].iter().all(|&y| y == IGNORE_INDEX));
        // Row a scores 6 and 7; row b's only token has no successor.
        assert_eq!(batch.num_items(), 2);
        assert!(batch.position_ids.is_none());
    }

    #[test]
    fn packed_rows_keep_their_positions() {
        let a =
            CausalRow { input_ids: vec![1, 2, 3, 4], labels: vec![1, 2, 3, 4], position_ids: Some(vec![0, 1, 0, 1]) };
        let batch = CausalBatch::collate(&[&a], 0);
        let pos = batch.position_ids.unwrap_or_default();
        assert_eq!(&pos[..6], &[0, 1, 0, 1, 2, 3]);
    }
}
