//! Sequence classification with a BERT-family encoder (`BertForSequenceClassification` and its RoBERTa and
//! DistilBERT siblings) as a [`TrainableModel`], over the data crate's padded batches; and token classification
//! (`…ForTokenClassification`, `run_ner.py`) through the same adapter when loaded with [`Task::TokenClassification`].
//!
//! - Loss: the model's mean loss of a micro-batch, rescaled to `sum / num_items_in_window` as the loop expects;
//!   when one micro-batch is the whole window (no accumulation) gradients go straight into the model.
//! - Optimizer: `torch.optim.AdamW` in the model's parameter store, weight decay exempting biases and LayerNorm
//!   parameters (HF `get_decay_parameter_names`); checkpoints carry its moments.
//! - Dropout: masks seeded from (`seed`, micro-batch counter); the counter is checkpointed, so a resumed run
//!   draws the same masks.
//! - Workspaces: one per padded (batch, sequence) shape, kept in a small LRU cache bounded by token count.
//! - Saving: an HF model directory (`config.json` with `architectures`, `id2label`/`label2id`, `problem_type`;
//!   `model.safetensors`; the tokenizer files of the model it started from).

use std::path::{Path, PathBuf};

use finetune_data::batch::BatchLabels;
use finetune_data::mlm::{MaskOptions, MlmDataset};
use finetune_data::{Collator, LabelMap, SeqDataset, TokenDatasetEncoded, IGNORE_INDEX};
use finetune_engine::bf16::linear::SharedWeights;
use finetune_engine::bf16::Kernel;
use finetune_models::bert::{self, BertConfig, BertForSequenceClassification, Mode, Task, Workspace};
use finetune_models::checkpoint::{load_pretrained, save_pretrained};
use finetune_models::config::{Arch, EncoderConfig, ProblemType};
use finetune_models::params::ParamInfo;
use serde::{Deserialize, Serialize};

use crate::args::AdamW;
use crate::data::{Batch, BatchSource, Sampler};
use crate::error::{Result, TrainError};
use crate::eval::{ClassificationDetails, ClassificationEval, TokenClassificationEval, TokenDetails};
use crate::trainer::{EvalOutput, TrainableModel};
use crate::workspace::WorkspaceCache;

const OPTIMIZER_STATE: &str = "optimizer.json";

fn model_err(e: impl std::fmt::Display) -> TrainError {
    TrainError::Model(e.to_string())
}

impl Batch for finetune_data::Batch {
    /// Examples for sequence-level targets; label tokens (not −100) for token-level ones.
    fn num_items(&self) -> usize {
        match &self.labels {
            BatchLabels::Class(v) | BatchLabels::Tokens(v) => v.iter().filter(|&&y| y != IGNORE_INDEX).count(),
            _ => self.batch_size,
        }
    }
    fn num_examples(&self) -> usize {
        self.batch_size
    }
}

/// The training set as padded batches in the sampler's per-epoch order.
pub struct SeqBatches<'a> {
    pub data: &'a SeqDataset,
    pub sampler: Sampler,
    pub collator: Collator,
}

impl BatchSource for SeqBatches<'_> {
    type Batch = finetune_data::Batch;

    fn num_examples(&self) -> usize {
        self.data.len()
    }

    fn num_batches(&self) -> usize {
        self.sampler.num_batches()
    }

    fn epoch_batches(&self, epoch: u64, skip: usize) -> Box<dyn Iterator<Item = Self::Batch> + '_> {
        let (data, collator) = (self.data, self.collator);
        // A collation error (only possible on an inconsistent dataset) yields an empty batch, which the model
        // rejects with an error instead of training on it.
        Box::new(
            self.sampler
                .epoch_batches(epoch)
                .into_iter()
                .skip(skip)
                .map(move |ix| collator.seq(data, &ix).unwrap_or_default()),
        )
    }
}

/// The training sentences of a token-classification set as padded batches (labels padded with -100).
pub struct TokenBatches<'a> {
    pub data: &'a TokenDatasetEncoded,
    pub sampler: Sampler,
    pub collator: Collator,
}

impl BatchSource for TokenBatches<'_> {
    type Batch = finetune_data::Batch;

    fn num_examples(&self) -> usize {
        self.data.len()
    }

    fn num_batches(&self) -> usize {
        self.sampler.num_batches()
    }

    fn epoch_batches(&self, epoch: u64, skip: usize) -> Box<dyn Iterator<Item = Self::Batch> + '_> {
        let (data, collator) = (self.data, self.collator);
        // As for SeqBatches: a collation error gives an empty batch that the model rejects.
        Box::new(
            self.sampler
                .epoch_batches(epoch)
                .into_iter()
                .skip(skip)
                .map(move |ix| collator.tokens(data, &ix).unwrap_or_default()),
        )
    }
}

/// Masked-LM training rows as batches, masked anew every epoch (`DataCollatorForLanguageModeling`'s dynamic
/// masking): the masks of a row depend only on (`seed`, epoch, row), so a resumed run draws the same ones.
pub struct MlmBatches<'a> {
    pub data: &'a MlmDataset,
    pub sampler: Sampler,
    pub masking: MaskOptions,
    pub pad_token_id: u32,
    pub seed: u64,
}

impl BatchSource for MlmBatches<'_> {
    type Batch = finetune_data::Batch;

    fn num_examples(&self) -> usize {
        self.data.len()
    }

    fn num_batches(&self) -> usize {
        self.sampler.num_batches()
    }

    fn epoch_batches(&self, epoch: u64, skip: usize) -> Box<dyn Iterator<Item = Self::Batch> + '_> {
        let seed = mix(self.seed ^ 0x4D4C_4D00, epoch);
        Box::new(
            self.sampler
                .epoch_batches(epoch)
                .into_iter()
                .skip(skip)
                .map(move |ix| mlm_batch(self.data, &ix, &self.masking, seed, self.pad_token_id)),
        )
    }
}

/// Rows `ix` of `data` masked with `seed`, padded on the right to the longest (labels −100 on padding).
fn mlm_batch(data: &MlmDataset, ix: &[usize], masking: &MaskOptions, seed: u64, pad: u32) -> finetune_data::Batch {
    let t = ix.iter().map(|&i| data.row(i).len()).max().unwrap_or(0);
    let n = ix.len() * t;
    let mut b = finetune_data::Batch {
        batch_size: ix.len(),
        seq_len: t,
        input_ids: vec![pad; n],
        token_type_ids: vec![0; n],
        attention_mask: vec![0; n],
        labels: BatchLabels::None,
        indices: ix.to_vec(),
    };
    let mut labels = vec![IGNORE_INDEX; n];
    for (r, &i) in ix.iter().enumerate() {
        let (ids, y) = data.masked(i, masking, seed);
        b.input_ids[r * t..][..ids.len()].copy_from_slice(&ids);
        b.attention_mask[r * t..][..ids.len()].fill(1);
        labels[r * t..][..y.len()].copy_from_slice(&y);
    }
    b.labels = BatchLabels::Tokens(labels);
    b
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct OptimizerState {
    /// AdamW steps taken (the store's count, written for the record and restored from it).
    step: u64,
    /// Micro-batches trained on (dropout masks are seeded from it).
    micro_step: u64,
    num_params: usize,
}

/// `splitmix64` of a seed and a counter: independent dropout seeds per micro-batch.
fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed ^ n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Dropout probabilities that override the model's `config.json` (`None` keeps the file's value).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DropoutOverrides {
    pub hidden_dropout_prob: Option<f64>,
    pub attention_probs_dropout_prob: Option<f64>,
    pub classifier_dropout: Option<f64>,
}

impl DropoutOverrides {
    /// The run keys, in the order of the fields.
    pub const KEYS: [&'static str; 3] = ["hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"];

    /// Sets the run key `key` from text; `Ok(false)` when `key` is not a dropout key.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool> {
        let slot = match key {
            "hidden_dropout_prob" => &mut self.hidden_dropout_prob,
            "attention_probs_dropout_prob" => &mut self.attention_probs_dropout_prob,
            "classifier_dropout" => &mut self.classifier_dropout,
            _ => return Ok(false),
        };
        let p: f64 =
            value.trim().parse().ok().filter(|p| (0.0..1.0).contains(p)).ok_or_else(|| {
                TrainError::Args(format!("key `{key}`: expected a probability in [0, 1), got {value:?}"))
            })?;
        *slot = Some(p);
        Ok(true)
    }
}

/// How [`EncoderClassifier::embed`] makes one vector of a sequence's hidden states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The last layer's state at the first token (`[CLS]`, `<s>`): what a BERT classification head reads.
    Cls,
    /// The mean over the sequence's tokens, L2-normalised: sentence-transformers' embedding of MiniLM-style models.
    Mean,
}

/// A BERT-family encoder with a sequence- or token-classification head, trainable by [`crate::train`].
pub struct EncoderClassifier {
    pub model: BertForSequenceClassification,
    /// Which head: one prediction per sequence, or per token.
    pub task: Task,
    /// The HF config written with the model (labels, head and problem type set).
    pub config: EncoderConfig,
    pub problem: ProblemType,
    /// Where the tokenizer files are copied from when saving.
    pub tokenizer_dir: Option<PathBuf>,
    /// Parameters newly initialised at load (the head of a base checkpoint).
    pub newly_initialized: Vec<String>,
    opt: OptimizerState,
    adamw: AdamW,
    seed: u64,
    workspaces: WorkspaceCache<Workspace>,
    /// Forward-only workspaces of evaluation and prediction, freed when a pass ends.
    eval_workspaces: WorkspaceCache<Workspace>,
    /// A server keeps them between passes (see [`EncoderClassifier::keep_eval_workspaces`]).
    keep_eval_workspaces: bool,
    /// Gradient accumulator used when micro-batches need rescaling (gradient accumulation, short batches).
    /// The window's gradient when it is split into micro-batches.
    acc: crate::grads::GradAcc,
    /// `bf16 = true`: bf16 copies of the weights, cast once per optimizer step and shared by every workspace.
    bf16: Option<SharedWeights>,
}

impl EncoderClassifier {
    /// Loads `spec` (a model directory, hub cache folder or model id) for classification into `labels`. A head
    /// absent from the checkpoint, or sized for another label count, is newly initialised from `seed` (HF
    /// `from_pretrained(..., num_labels=..., ignore_mismatched_sizes=True)`).
    pub fn from_pretrained(
        spec: &str,
        labels: &[String],
        problem: ProblemType,
        adamw: AdamW,
        seed: u64,
    ) -> Result<Self> {
        Self::from_pretrained_for(spec, labels, problem, Task::SequenceClassification, adamw, seed)
    }

    /// As [`EncoderClassifier::from_pretrained`] for either head. Token classification
    /// (`AutoModelForTokenClassification`) writes `…ForTokenClassification` and no `problem_type`; `problem` is
    /// then ignored (single-label cross-entropy per token).
    pub fn from_pretrained_for(
        spec: &str,
        labels: &[String],
        problem: ProblemType,
        task: Task,
        adamw: AdamW,
        seed: u64,
    ) -> Result<Self> {
        let token_task = task == Task::TokenClassification;
        let problem =
            if task == Task::SequenceClassification { problem } else { ProblemType::SingleLabelClassification };
        let loaded = load_pretrained(spec).map_err(model_err)?;
        let mut config = loaded.config;
        let mut state = loaded.state;
        let same_labels = config.id2label.len() == labels.len()
            && labels.iter().enumerate().all(|(i, l)| config.id2label.get(&i) == Some(l));
        if !same_labels && task != Task::MaskedLM {
            config.set_labels(labels);
        }
        if task == Task::MaskedLM {
            // AutoModelForMaskedLM: the labels of the config are left as they are.
            config.set_head("ForMaskedLM");
            config.problem_type = None;
        } else if token_task {
            config.set_head("ForTokenClassification");
            config.problem_type = None;
        } else {
            config.set_head("ForSequenceClassification");
            config.problem_type = Some(problem);
        }
        let mut bert_cfg = bert_config(&config, &loaded.dir)?;
        bert_cfg.task = task;
        // A head trained for a different label count cannot be reused.
        let n = bert_cfg.labels();
        let head_rows = |name: &str| state.get(name).map(|t| t.shape.first().copied().unwrap_or(0));
        let out_names =
            ["classifier.weight", "classifier.bias", "classifier.out_proj.weight", "classifier.out_proj.bias"];
        if out_names.iter().any(|k| head_rows(k).is_some_and(|r| r != n)) {
            state.retain(|k, _| !k.starts_with("classifier"));
        }
        let (model, fresh) = BertForSequenceClassification::from_state_dict(bert_cfg, &state, seed)
            .map_err(|e| TrainError::Model(format!("{}: {e}", loaded.dir.display())))?;
        let mut m = Self::new(model, config, problem, Some(loaded.dir), adamw, seed);
        m.newly_initialized = fresh;
        Ok(m)
    }

    /// Wraps a model; `config` must describe it.
    pub fn new(
        model: BertForSequenceClassification,
        config: EncoderConfig,
        problem: ProblemType,
        tokenizer_dir: Option<PathBuf>,
        adamw: AdamW,
        seed: u64,
    ) -> Self {
        let n = model.store.params.len();
        EncoderClassifier {
            task: model.config.task,
            model,
            config,
            problem,
            tokenizer_dir,
            newly_initialized: Vec::new(),
            opt: OptimizerState { num_params: n, ..Default::default() },
            adamw,
            seed,
            workspaces: WorkspaceCache::default(),
            eval_workspaces: WorkspaceCache::default(),
            keep_eval_workspaces: false,
            acc: Default::default(),
            bf16: None,
        }
    }

    /// Overrides the dropout probabilities of `config.json` as `AutoConfig.from_pretrained(..., **kwargs)` does
    /// (run keys `hidden_dropout_prob`, `attention_probs_dropout_prob`, `classifier_dropout`; DistilBERT's
    /// `dropout`, `attention_dropout` and `seq_classif_dropout`). The saved `config.json` carries the new values.
    pub fn set_dropout(&mut self, d: &DropoutOverrides) -> Result<()> {
        let mut config = self.config.clone();
        if let Some(p) = d.hidden_dropout_prob {
            config.hidden_dropout_prob = p;
        }
        if let Some(p) = d.attention_probs_dropout_prob {
            config.attention_probs_dropout_prob = p;
        }
        if let Some(p) = d.classifier_dropout {
            config.classifier_dropout = Some(p);
        }
        let mut bert =
            BertConfig::from_json(&config.to_json().to_string()).map_err(|e| TrainError::Model(format!("{e}")))?;
        bert.task = self.task;
        self.model.config = bert;
        self.config = config;
        // Workspaces are sized for the attention dropout in force.
        self.workspaces = WorkspaceCache::default();
        Ok(())
    }

    pub fn num_labels(&self) -> usize {
        self.model.config.labels()
    }

    /// Label names in id order.
    pub fn label_names(&self) -> Vec<String> {
        (0..self.num_labels())
            .map(|i| self.config.id2label.get(&i).cloned().unwrap_or_else(|| format!("LABEL_{i}")))
            .collect()
    }

    fn bert_batch<'b>(&self, b: &'b finetune_data::Batch, with_labels: bool) -> Result<bert::Batch<'b>> {
        if b.batch_size == 0 || b.input_ids.len() != b.batch_size * b.seq_len {
            return Err(TrainError::Model("empty or malformed batch".into()));
        }
        let labels = if !with_labels {
            None
        } else if self.task != Task::SequenceClassification {
            match &b.labels {
                BatchLabels::Tokens(y) => Some(bert::Labels::TokenClasses(y)),
                _ => return Err(TrainError::Model("token classification and masked LM need per-token labels".into())),
            }
        } else {
            Some(match (&b.labels, self.problem) {
                (BatchLabels::Class(y), ProblemType::SingleLabelClassification) => bert::Labels::Classes(y),
                (BatchLabels::MultiHot { values, .. }, ProblemType::MultiLabelClassification) => {
                    bert::Labels::MultiLabel(values)
                }
                (BatchLabels::Regression(y), ProblemType::Regression) => bert::Labels::Regression(y),
                (BatchLabels::None, _) => return Err(TrainError::Model("the batch has no labels".into())),
                _ => {
                    return Err(TrainError::Model(format!(
                        "the batch's labels do not fit problem_type {}",
                        self.problem.as_str()
                    )))
                }
            })
        };
        // DistilBERT has no token-type embeddings.
        let tt = (self.config.arch != Arch::DistilBert && b.token_type_ids.len() == b.input_ids.len())
            .then_some(&b.token_type_ids[..]);
        Ok(bert::Batch { input_ids: &b.input_ids, attention_mask: &b.attention_mask, token_type_ids: tt, labels })
    }

    /// `bf16 = true`: the linear layers' matmuls in bfloat16 with f32 accumulation from the next batch on
    /// (weights, optimizer and checkpoints stay f32). Returns the kernel in use (`amx`, `avx512bf16`, or `f32`
    /// on a CPU with neither), or an error for an invalid `FINETUNE_BF16_KERNEL`.
    pub fn set_bf16(&mut self, on: bool) -> Result<Kernel> {
        self.workspaces = WorkspaceCache::default();
        self.eval_workspaces = WorkspaceCache::default();
        if !on {
            self.bf16 = None;
            return Ok(Kernel::F32);
        }
        let kernel = Kernel::active().map_err(TrainError::Args)?;
        self.bf16 = Some(SharedWeights::new());
        Ok(kernel)
    }

    /// Forward in evaluation mode (no dropout): the batch's logits (`[batch, num_labels]`; masked LM: `[rows,
    /// vocab_size]` for the labelled tokens in order, every token without labels) and its mean loss when
    /// `with_labels`.
    pub fn forward_eval(&mut self, b: &finetune_data::Batch, with_labels: bool) -> Result<(Vec<f32>, Option<f64>)> {
        let masked_lm = self.task == Task::MaskedLM;
        let v = self.model.config.vocab_size;
        let (ws, loss) = self.run_eval(b, with_labels)?;
        // Masked LM: only the rows the head ran on (the labelled tokens, or all).
        let len = if masked_lm { ws.logits_rows() * v } else { ws.logits.len() };
        Ok((ws.logits[..len].to_vec(), loss.map(f64::from)))
    }

    /// An evaluation forward of `b`; the workspace holds its outputs.
    fn run_eval(&mut self, b: &finetune_data::Batch, with_labels: bool) -> Result<(&Workspace, Option<f32>)> {
        let bb = self.bert_batch(b, with_labels)?;
        let cfg = &self.model.config;
        let w16 = self.bf16.clone();
        let ws = self
            .eval_workspaces
            .get(b.batch_size, b.seq_len, || Workspace::for_inference(cfg, b.batch_size, b.seq_len).with_bf16(w16));
        let loss = self.model.forward(ws, &bb, Mode::Eval).map_err(model_err)?;
        Ok((ws, loss))
    }

    /// Evaluates `data` in order, `batch_size` examples at a time. Single-label: HF's metric map (`loss`,
    /// `accuracy`, macro `precision`/`recall`/`f1`), per example the predicted class and the softmax
    /// probabilities. Multi-label: `loss` and `accuracy` (exact match, as sklearn's on indicator rows), per example
    /// the sigmoid probabilities and the classes above 0.5. Regression: `loss` and `mse`, per example the
    /// predicted values. Metrics need labelled data.
    pub fn evaluate(&mut self, data: &SeqDataset, batch_size: usize, collator: Collator) -> Result<Evaluation> {
        let labelled = !matches!(data.targets, finetune_data::SeqTargets::None);
        self.begin_eval_pass();
        let mut acc = ClassificationEval::new();
        let mut out = Evaluation::default();
        let nl = self.num_labels();
        let idx: Vec<usize> = (0..data.len()).collect();
        let mut batch = finetune_data::Batch::default();
        let (mut loss_sum, mut exact, mut sq_err, mut n_values) = (0.0f64, 0usize, 0.0f64, 0usize);
        for chunk in idx.chunks(batch_size.max(1)) {
            collator.seq_into(data, chunk, &mut batch).map_err(model_err)?;
            let (logits, loss) = self.forward_eval(&batch, labelled)?;
            let start = out.predictions.len();
            for row in logits.chunks(nl) {
                out.predictions.push(argmax(row));
                match self.problem {
                    ProblemType::SingleLabelClassification => out.probabilities.push(softmax(row)),
                    ProblemType::MultiLabelClassification => {
                        let p: Vec<f64> = row.iter().map(|&v| 1.0 / (1.0 + (-(v as f64)).exp())).collect();
                        out.label_sets.push((0..nl).filter(|&i| p[i] > 0.5).collect());
                        out.probabilities.push(p);
                    }
                    ProblemType::Regression => out.probabilities.push(row.iter().map(|&v| v as f64).collect()),
                }
            }
            let Some(loss) = loss else { continue };
            loss_sum += loss * batch.batch_size as f64;
            match &batch.labels {
                BatchLabels::Class(y) => {
                    let y_true: Vec<usize> = y.iter().map(|&v| v.max(0) as usize).collect();
                    acc.add_batch(loss, &y_true, &out.predictions[start..])?;
                    if self.problem == ProblemType::SingleLabelClassification {
                        acc.add_probabilities(&y_true, &out.probabilities[start..])?;
                    }
                    out.gold.extend(y_true);
                }
                BatchLabels::MultiHot { values, .. } => {
                    for (gold, pred) in values.chunks(nl).zip(&out.label_sets[start..]) {
                        let gold: Vec<usize> = (0..nl).filter(|&i| gold[i] > 0.5).collect();
                        exact += usize::from(&gold == pred);
                    }
                }
                BatchLabels::Regression(y) => {
                    for (t, p) in y.iter().zip(&logits) {
                        sq_err += (*t as f64 - *p as f64).powi(2);
                        n_values += 1;
                    }
                }
                _ => {}
            }
        }
        let n = data.len();
        out.metrics = if labelled && self.problem == ProblemType::SingleLabelClassification {
            out.details = Some(acc.details(&self.label_names())?);
            acc.finish()?
        } else {
            let mut m = std::collections::BTreeMap::new();
            if labelled && n > 0 {
                m.insert("loss".to_string(), loss_sum / n as f64);
                match self.problem {
                    ProblemType::MultiLabelClassification => {
                        m.insert("accuracy".to_string(), exact as f64 / n as f64);
                    }
                    ProblemType::Regression if n_values > 0 => {
                        m.insert("mse".to_string(), sq_err / n_values as f64);
                    }
                    _ => {}
                }
            }
            EvalOutput { metrics: m, num_samples: n, num_batches: n.div_ceil(batch_size.max(1)) }
        };
        self.end_eval_pass();
        Ok(out)
    }

    /// The encoder's sentence vector of each example of `data`, `batch_size` examples at a time: with
    /// [`Pooling::Cls`] (a sequence-classification model) the last layer's `[CLS]` hidden state, before the pooler;
    /// with [`Pooling::Mean`] (a model loaded for token classification, which keeps every token's state) the mean
    /// of the last layer's hidden states over the attention mask, L2-normalised, as sentence-transformers embeds.
    pub fn embed(
        &mut self,
        data: &SeqDataset,
        batch_size: usize,
        collator: Collator,
        pooling: Pooling,
    ) -> Result<Vec<Vec<f32>>> {
        let want = match pooling {
            Pooling::Cls => Task::SequenceClassification,
            Pooling::Mean => Task::TokenClassification,
        };
        if self.task != want {
            return Err(TrainError::Model(format!("{pooling:?} pooling needs a model loaded for {want:?}")));
        }
        self.begin_eval_pass();
        let c = self.model.config.hidden_size;
        let idx: Vec<usize> = (0..data.len()).collect();
        let mut batch = finetune_data::Batch::default();
        let mut out = Vec::with_capacity(data.len());
        for chunk in idx.chunks(batch_size.max(1)) {
            collator.seq_into(data, chunk, &mut batch).map_err(model_err)?;
            let (bsz, t) = (batch.batch_size, batch.seq_len);
            let (ws, _) = self.run_eval(&batch, false)?;
            match pooling {
                Pooling::Cls => out.extend(ws.cls_hidden()[..bsz * c].chunks_exact(c).map(<[f32]>::to_vec)),
                Pooling::Mean => {
                    let hidden = ws.token_hidden();
                    for (row, mask) in hidden.chunks_exact(t * c).zip(batch.attention_mask.chunks_exact(t)) {
                        let mut v = vec![0.0f64; c];
                        for (h, _) in row.chunks_exact(c).zip(mask).filter(|(_, &m)| m != 0) {
                            v.iter_mut().zip(h).for_each(|(a, &x)| *a += f64::from(x));
                        }
                        // Sum over the tokens, then the L2 norm: the division by the token count cancels out.
                        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
                        out.push(v.iter().map(|x| (x / norm) as f32).collect());
                    }
                }
            }
        }
        self.end_eval_pass();
        Ok(out)
    }

    /// Frees the training workspaces before an evaluation pass, so the peak is the larger of training and
    /// evaluation rather than their sum (they are rebuilt at the next training step, once per evaluation).
    fn begin_eval_pass(&mut self) {
        self.workspaces = WorkspaceCache::default();
        self.end_eval_pass();
    }

    /// Frees the forward-only workspaces after a pass, unless a server keeps them for its next batch
    /// ([`keep_eval_workspaces`](Self::keep_eval_workspaces)).
    fn end_eval_pass(&mut self) {
        if !self.keep_eval_workspaces {
            self.eval_workspaces = WorkspaceCache::default();
        }
    }

    /// Keeps the forward-only workspaces between passes (a server's batches): building them again for every
    /// batch costs their allocation and zeroing each time.
    pub fn keep_eval_workspaces(&mut self) {
        self.keep_eval_workspaces = true;
    }

    /// Token classification as `run_ner.py` evaluates it: `loss` (mean over sentences of each batch's mean token
    /// loss) and seqeval's micro `precision`/`recall`/`f1` plus token `accuracy` over the positions whose label
    /// is not -100 (first sub-tokens, or all with `label_all_tokens`); per sentence the word-level tags (each
    /// word takes its first sub-token's prediction; words without a token get "O"). `labelled` false skips the
    /// metrics (prediction on data whose tags are placeholders).
    pub fn evaluate_tokens(
        &mut self,
        data: &TokenDatasetEncoded,
        labels: &LabelMap,
        batch_size: usize,
        collator: Collator,
        labelled: bool,
    ) -> Result<TokenEvaluation> {
        let nl = self.num_labels();
        if labels.len() != nl {
            return Err(TrainError::Model(format!("{} label names for a model with {nl} labels", labels.len())));
        }
        let name = |id: usize| labels.name(id).unwrap_or("O");
        self.begin_eval_pass();
        let mut acc = TokenClassificationEval::new();
        let mut out = TokenEvaluation::default();
        let idx: Vec<usize> = (0..data.len()).collect();
        let mut batch = finetune_data::Batch::default();
        let mut preds = Vec::new();
        for chunk in idx.chunks(batch_size.max(1)) {
            collator.tokens_into(data, chunk, &mut batch).map_err(model_err)?;
            let (logits, loss) = self.forward_eval(&batch, labelled)?;
            preds.clear();
            preds.extend(logits.chunks(nl).map(argmax));
            let t = batch.seq_len;
            let (mut gold_tags, mut pred_tags) = (Vec::new(), Vec::new());
            for (r, &i) in chunk.iter().enumerate() {
                let row = &preds[r * t..(r + 1) * t];
                out.word_tags.push(data.word_tags(i, row, labels).map_err(model_err)?);
                if let BatchLabels::Tokens(y) = &batch.labels {
                    let (g, p): (Vec<&str>, Vec<&str>) = y[r * t..(r + 1) * t]
                        .iter()
                        .zip(row)
                        .filter(|(&l, _)| l != IGNORE_INDEX)
                        .map(|(&l, &p)| (name(l as usize), name(p)))
                        .unzip();
                    gold_tags.push(g);
                    pred_tags.push(p);
                }
            }
            if let Some(loss) = loss {
                acc.add_batch(loss, &gold_tags, &pred_tags)?;
            }
        }
        out.metrics = if labelled {
            out.details = Some(acc.details()?);
            acc.finish()?
        } else {
            EvalOutput {
                metrics: Default::default(),
                num_samples: data.len(),
                num_batches: data.len().div_ceil(batch_size.max(1)),
            }
        };
        self.end_eval_pass();
        Ok(out)
    }

    /// Masked-LM evaluation of `data` in order, `batch_size` rows at a time, each row masked as in training
    /// with `seed` (the same masks at every evaluation): `loss` (mean cross-entropy over the masked tokens),
    /// `accuracy` (of the most probable token there, run_mlm.py's metric) and `perplexity` (`exp(loss)`).
    pub fn evaluate_mlm(
        &mut self,
        data: &MlmDataset,
        batch_size: usize,
        masking: &MaskOptions,
        pad_token_id: u32,
        seed: u64,
    ) -> Result<EvalOutput> {
        if self.task != Task::MaskedLM {
            return Err(TrainError::Model("evaluate_mlm needs a masked-LM model".into()));
        }
        self.begin_eval_pass();
        let v = self.model.config.vocab_size;
        let (mut loss_sum, mut tokens, mut correct, mut batches) = (0.0f64, 0usize, 0usize, 0usize);
        let idx: Vec<usize> = (0..data.len()).collect();
        for chunk in idx.chunks(batch_size.max(1)) {
            let b = mlm_batch(data, chunk, masking, seed, pad_token_id);
            let (ws, loss) = self.run_eval(&b, true)?;
            let m = ws.logits_rows();
            let BatchLabels::Tokens(y) = &b.labels else { unreachable!("mlm_batch labels every token") };
            let gold = y.iter().filter(|&&l| l != IGNORE_INDEX);
            correct += ws.logits[..m * v].chunks(v).map(argmax).zip(gold).filter(|(p, &g)| *p as i64 == g).count();
            loss_sum += loss.unwrap_or(0.0) as f64 * m as f64;
            tokens += m;
            batches += 1;
        }
        self.end_eval_pass();
        if tokens == 0 {
            return Err(TrainError::Model("no token of the evaluation data was masked".into()));
        }
        let loss = loss_sum / tokens as f64;
        let metrics = [("loss", loss), ("accuracy", correct as f64 / tokens as f64), ("perplexity", loss.exp())];
        Ok(EvalOutput {
            metrics: metrics.into_iter().map(|(k, x)| (k.to_string(), x)).collect(),
            num_samples: data.len(),
            num_batches: batches,
        })
    }

    fn grads_into_model(&mut self) {
        self.acc.flush_into(&mut self.model.store);
    }
}

/// Output of [`EncoderClassifier::evaluate`].
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    pub metrics: EvalOutput,
    /// Predicted (most probable) class per example.
    pub predictions: Vec<usize>,
    /// Per example: softmax probabilities (single-label), sigmoid probabilities (multi-label) or the predicted
    /// values (regression).
    pub probabilities: Vec<Vec<f64>>,
    /// Multi-label: the classes predicted per example (probability above 0.5).
    pub label_sets: Vec<Vec<usize>>,
    /// Gold class per example (single-label data only).
    pub gold: Vec<usize>,
    /// Single-label with gold labels: confusion matrix, per-class scores, ROC/PR curves and calibration.
    pub details: Option<ClassificationDetails>,
}

/// Output of [`EncoderClassifier::evaluate_tokens`].
#[derive(Debug, Clone, Default)]
pub struct TokenEvaluation {
    pub metrics: EvalOutput,
    /// Per sentence, one predicted tag per word, in input order.
    pub word_tags: Vec<Vec<String>>,
    /// With gold tags: per-type entity reports (default and strict mode) and the per-tag token report.
    pub details: Option<TokenDetails>,
}

fn argmax(row: &[f32]) -> usize {
    // First maximum, as torch.argmax / numpy.argmax.
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

fn softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let exps: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The bert module's config from an HF config (same JSON, parsed by the model's own reader).
fn bert_config(config: &EncoderConfig, dir: &Path) -> Result<BertConfig> {
    let text = config.to_json().to_string();
    BertConfig::from_json(&text).map_err(|e| TrainError::Model(format!("{}: {e}", dir.join("config.json").display())))
}

impl EncoderClassifier {
    /// One micro-batch's forward and backward pass; its gradient, scaled to its share of the window, is added to
    /// the window's sum, or handed to a data-parallel reducer as the backward pass goes.
    fn train_micro_batch(
        &mut self,
        batch: &finetune_data::Batch,
        num_items_in_window: usize,
        red: Option<&mut crate::dist::Reducer>,
    ) -> Result<f64> {
        if num_items_in_window == 0 {
            return Err(TrainError::Model("an accumulation window without loss items".into()));
        }
        let bb = self.bert_batch(batch, true)?;
        let seed = mix(self.seed, self.opt.micro_step);
        self.opt.micro_step += 1;
        let Self { model, workspaces, acc, bf16, .. } = self;
        let (bs, t) = (batch.batch_size, batch.seq_len);
        let ws = workspaces.get(bs, t, || Workspace::new(&model.config, bs, t).with_bf16(bf16.clone()));
        let loss = model.forward(ws, &bb, Mode::Train { seed }).map_err(model_err)?.unwrap_or(f32::NAN) as f64;
        let scale = batch.num_items() as f64 / num_items_in_window as f64;
        match red {
            Some(red) => {
                // The model adds the gradient of its mean loss; each value leaves scaled to the window.
                model.store.set_layer_hook(red.hook(scale as f32));
                let r = model.backward(ws, &bb);
                model.store.set_layer_hook(Default::default());
                r.map_err(model_err)?;
                red.flush(&mut model.store);
            }
            None => {
                model.backward(ws, &bb).map_err(model_err)?;
                if scale != 1.0 || acc.is_active() {
                    // The model adds the gradient of its mean loss; rescale each micro-batch's share into the sum.
                    acc.add(&mut model.store, scale as f32);
                }
            }
        }
        Ok(loss * scale)
    }
}

impl TrainableModel for EncoderClassifier {
    type Batch = finetune_data::Batch;

    fn train_batch(&mut self, batch: &Self::Batch, num_items_in_window: usize) -> Result<f64> {
        self.train_micro_batch(batch, num_items_in_window, None)
    }

    fn train_batch_exchanged(
        &mut self,
        batch: &Self::Batch,
        num_items_in_window: usize,
        red: &mut crate::dist::Reducer,
    ) -> Result<f64> {
        self.train_micro_batch(batch, num_items_in_window, Some(red))
    }

    fn clip_and_step(&mut self, lr: f64, max_grad_norm: f64) -> Result<f64> {
        self.grads_into_model();
        let store = &mut self.model.store;
        let max = if max_grad_norm > 0.0 { max_grad_norm as f32 } else { f32::INFINITY };
        let norm = store.optimizer_step(max, self.adamw.hyper(lr)) as f64;
        if let Some(w) = &self.bf16 {
            w.weights_changed();
        }
        Ok(norm)
    }

    fn dist_params(&self) -> Result<Vec<ParamInfo>> {
        Ok(self.model.store.param_infos().to_vec())
    }

    fn set_grads(&mut self, grads: &[f32]) -> Result<()> {
        self.acc.put(&mut self.model.store, grads);
        Ok(())
    }

    fn skip_batch(&mut self, _batch: &Self::Batch) -> Result<()> {
        // Dropout masks are seeded by the micro-batch count.
        self.opt.micro_step += 1;
        Ok(())
    }

    fn save_model(&self, dir: &Path) -> Result<()> {
        save_pretrained(dir, &self.model.store.state_dict(), &self.config, self.tokenizer_dir.as_deref())
            .map_err(model_err)
    }

    fn load_model(&mut self, dir: &Path) -> Result<()> {
        crate::state::load_params(&mut self.model.store, dir)?;
        if let Some(w) = &self.bf16 {
            w.weights_changed();
        }
        Ok(())
    }

    fn save_training_state(&self, dir: &Path) -> Result<()> {
        self.model.store.save_optimizer_state(dir).map_err(model_err)?;
        let opt = OptimizerState { step: self.model.store.steps(), ..self.opt };
        crate::state::write_json(&dir.join(OPTIMIZER_STATE), &opt)
    }

    fn load_training_state(&mut self, dir: &Path) -> Result<()> {
        let opt: OptimizerState = crate::state::read_json(&dir.join(OPTIMIZER_STATE))?;
        let n = self.model.store.params.len();
        if opt.num_params != n {
            return Err(TrainError::Checkpoint {
                path: dir.join(OPTIMIZER_STATE),
                message: format!("optimizer state for {} parameters, the model has {n}", opt.num_params),
            });
        }
        self.model.store.load_optimizer_state(dir, opt.step).map_err(|e| crate::state::optimizer_err(dir, e))?;
        self.opt = opt;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_and_argmax() {
        let p = softmax(&[1.0, 3.0, 3.0]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(p[1] > p[0]);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }

    #[test]
    fn dropout_seeds_differ_per_micro_batch() {
        assert_ne!(mix(42, 0), mix(42, 1));
        assert_eq!(mix(42, 7), mix(42, 7));
    }
}
