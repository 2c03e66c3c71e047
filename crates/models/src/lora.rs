//! LoRA adapters with PEFT's semantics and file layout: [`LoraConfig`] reads and writes PEFT's
//! `adapter_config.json`, adapters are saved as `adapter_model.safetensors` with PEFT's tensor names
//! (`base_model.model.<module>.lora_A.weight`), and the kernels here compute PEFT's
//! `y = base(x) + scale · B(A(dropout(x)))` and its backward for one targeted linear, writing into a column
//! slice of a fused projection output so that fused q/k/v and gate/up weights are never re-materialised.
//!
//! `Adapters` holds the bookkeeping shared by the architectures (`llama.rs`, `gpt2.rs`): adapter parameters
//! are appended to the model's flat parameter/gradient/AdamW buffers (so clipping and AdamW need no change),
//! the base is frozen, and merging handles both `nn.Linear` (`[out, in]`) and GPT-2's `Conv1D` (`[in, out]`,
//! PEFT's `fan_in_fan_out`) weights. Dropout masks come from the engine's counter-based RNG: recomputed in the
//! backward, fresh for every training pass, never applied in evaluation.
//!
//! Supported: `bias = "none"`, `use_rslora`, `lora_dropout`, a list of module names or `"all-linear"`. PEFT
//! options that change the computation and are not implemented (DoRA, rank/alpha patterns, layer selection,
//! `modules_to_save`, LoRA biases, regex target strings, non-default init) are rejected with a clear error
//! rather than silently ignored. Unknown keys in a read file are ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use finetune_engine::kernels::dropout::{self, Dropout};
use finetune_engine::matmul::{gemm_view, matmul, Par, View};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, CheckpointError};
use crate::llama::ParamInfo;
use finetune_engine::{StateDict, Tensor};

/// File names of a PEFT adapter directory.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    #[error("LoRA config: {0}")]
    Config(String),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path}: tensor {tensor}: {message}")]
    Tensor { path: PathBuf, tensor: String, message: String },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// PEFT's `target_modules`: a list of module names, or a string (`"all-linear"`, or one module name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    List(Vec<String>),
    Str(String),
}

fn default_r() -> usize {
    8
}
fn default_alpha() -> f32 {
    8.0
}
fn default_bias() -> String {
    "none".into()
}
fn default_peft_type() -> String {
    "LORA".into()
}
fn default_task() -> Option<String> {
    Some("CAUSAL_LM".into())
}
fn default_true_value() -> serde_json::Value {
    serde_json::Value::Bool(true)
}

/// The keys of PEFT's `LoraConfig` (`adapter_config.json`) that this implementation reads and writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    #[serde(default = "default_r")]
    pub r: usize,
    #[serde(default = "default_alpha")]
    pub lora_alpha: f32,
    #[serde(default)]
    pub lora_dropout: f32,
    pub target_modules: TargetModules,
    /// Only `"none"`.
    #[serde(default = "default_bias")]
    pub bias: String,
    /// Scale `lora_alpha / √r` instead of `lora_alpha / r`.
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default = "default_peft_type")]
    pub peft_type: String,
    #[serde(default = "default_task")]
    pub task_type: Option<String>,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub inference_mode: bool,
    // Written with PEFT's defaults so PEFT reads the file unchanged; non-default values are rejected.
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default)]
    pub lora_bias: bool,
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    #[serde(default)]
    pub layers_to_transform: Option<serde_json::Value>,
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, serde_json::Value>,
    #[serde(default = "default_true_value")]
    pub init_lora_weights: serde_json::Value,
}

impl Default for LoraConfig {
    /// PEFT's defaults (r = 8, lora_alpha = 8, no dropout) on q_proj and v_proj, as PEFT picks for Llama.
    fn default() -> Self {
        LoraConfig {
            r: default_r(),
            lora_alpha: default_alpha(),
            lora_dropout: 0.0,
            target_modules: TargetModules::List(vec!["q_proj".into(), "v_proj".into()]),
            bias: default_bias(),
            use_rslora: false,
            peft_type: default_peft_type(),
            task_type: default_task(),
            base_model_name_or_path: None,
            fan_in_fan_out: false,
            inference_mode: false,
            use_dora: false,
            lora_bias: false,
            modules_to_save: None,
            layers_to_transform: None,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
            init_lora_weights: default_true_value(),
        }
    }
}

impl LoraConfig {
    pub fn from_json(text: &str) -> Result<Self, LoraError> {
        let c: LoraConfig = serde_json::from_str(text).map_err(|e| LoraError::Config(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Reads `dir/adapter_config.json`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, LoraError> {
        let path = dir.as_ref().join(ADAPTER_CONFIG);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| LoraError::File { path: path.clone(), message: e.to_string() })?;
        Self::from_json(&text).map_err(|e| LoraError::File { path, message: e.to_string() })
    }

    /// Pretty JSON with PEFT's keys.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The multiplier of the LoRA path: `lora_alpha / r`, or `lora_alpha / √r` with rsLoRA.
    pub fn scale(&self) -> f32 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f32).sqrt()
        } else {
            self.lora_alpha / self.r as f32
        }
    }

    /// Checks everything that does not depend on the architecture.
    pub fn validate(&self) -> Result<(), LoraError> {
        let err = |m: String| Err(LoraError::Config(m));
        if self.peft_type != "LORA" {
            return err(format!("peft_type {:?} is not supported (only \"LORA\")", self.peft_type));
        }
        if self.r == 0 {
            return err("r must be positive".into());
        }
        if !(self.lora_alpha.is_finite()) {
            return err(format!("lora_alpha {} is not finite", self.lora_alpha));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return err(format!("lora_dropout {} must be in [0, 1)", self.lora_dropout));
        }
        if self.bias != "none" {
            return err(format!("bias {:?} is not supported (only \"none\")", self.bias));
        }
        if self.use_dora {
            return err("use_dora (DoRA) is not supported".into());
        }
        if self.lora_bias {
            return err("lora_bias is not supported".into());
        }
        if self.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()) {
            return err("modules_to_save is not supported".into());
        }
        if self.layers_to_transform.as_ref().is_some_and(|v| !v.is_null()) {
            return err("layers_to_transform is not supported (adapters go on every layer)".into());
        }
        if !self.rank_pattern.is_empty() || !self.alpha_pattern.is_empty() {
            return err("rank_pattern and alpha_pattern are not supported".into());
        }
        if !matches!(&self.init_lora_weights, serde_json::Value::Bool(true) | serde_json::Value::Bool(false)) {
            return err(format!("init_lora_weights {} is not supported", self.init_lora_weights));
        }
        Ok(())
    }

    /// Which of `known` (module paths inside a layer, such as `self_attn.q_proj`) are targeted. As in PEFT, a
    /// name matches a module whose path equals it or ends with `.` + it (`c_proj` matches both `attn.c_proj`
    /// and `mlp.c_proj`); a name matching nothing is an error listing the known modules.
    pub fn targets(&self, known: &[&str]) -> Result<Vec<bool>, LoraError> {
        let names: Vec<&str> = match &self.target_modules {
            TargetModules::Str(s) if s == "all-linear" => return Ok(vec![true; known.len()]),
            TargetModules::Str(s) if known.iter().any(|m| matches_module(m, s)) => vec![s.as_str()],
            TargetModules::Str(s) => {
                return Err(LoraError::Config(format!(
                    "target_modules {s:?}: regular expressions are not supported; give a list of module names \
                     ({}) or \"all-linear\"",
                    known.join(", ")
                )))
            }
            TargetModules::List(v) => v.iter().map(String::as_str).collect(),
        };
        let mut on = vec![false; known.len()];
        for n in names {
            let mut hit = false;
            for (k, m) in known.iter().enumerate() {
                if matches_module(m, n) {
                    on[k] = true;
                    hit = true;
                }
            }
            if !hit {
                return Err(LoraError::Config(format!(
                    "unknown target module {n:?} (this model has {})",
                    known.join(", ")
                )));
            }
        }
        if !on.iter().any(|&b| b) {
            return Err(LoraError::Config("target_modules is empty".into()));
        }
        Ok(on)
    }
}

fn matches_module(path: &str, name: &str) -> bool {
    path == name || path.strip_suffix(name).is_some_and(|p| p.ends_with('.'))
}

/// The shortest `target_modules` list that selects exactly `on` among `known` (short names where they are
/// unambiguous or all their modules are targeted, as PEFT users write them).
fn target_list(known: &[&str], on: &[bool]) -> Vec<String> {
    let short = |m: &str| m.rsplit('.').next().unwrap_or(m).to_string();
    let mut out: Vec<String> = Vec::new();
    for (_, m) in known.iter().enumerate().filter(|(k, _)| on[*k]) {
        let s = short(m);
        let same: Vec<usize> = (0..known.len()).filter(|&j| short(known[j]) == s).collect();
        let name = if same.iter().all(|&j| on[j]) { s } else { m.to_string() };
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// Writes `adapter_config.json` and `adapter_model.safetensors` (PEFT's names) into `dir`, each atomically.
pub fn save_adapter_files(dir: &Path, config: &LoraConfig, tensors: &StateDict) -> Result<(), LoraError> {
    std::fs::create_dir_all(dir).map_err(|e| LoraError::File { path: dir.to_path_buf(), message: e.to_string() })?;
    checkpoint::save_safetensors(tensors, &dir.join(ADAPTER_WEIGHTS))?;
    let path = dir.join(ADAPTER_CONFIG);
    let mut text = config.to_json();
    text.push('\n');
    checkpoint::write_atomic(&path, text.as_bytes()).map_err(|e| LoraError::File { path, message: e.to_string() })
}

/// PEFT's saved name of an adapter tensor: `base_model.model.` + the model's parameter name.
pub fn peft_name(name: &str) -> String {
    format!("base_model.model.{name}")
}

/// `U(−1/√fan_in, 1/√fan_in)`: PEFT's `kaiming_uniform_(a=√5)` for lora_A, from the counter-based RNG.
pub(crate) fn kaiming_uniform_fill(out: &mut [f32], fan_in: usize, seed: u64) {
    let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
    for (i, v) in out.iter_mut().enumerate() {
        *v = (2.0 * dropout::uniform(seed, i as u64) - 1.0) * bound;
    }
}

/// One targeted linear inside a (possibly fused) projection: `x [n, c_in]` feeds columns
/// `col..col + c_out` of an output whose rows are `width` wide.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Site {
    pub n: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub width: usize,
    pub col: usize,
    pub r: usize,
    pub scale: f32,
    pub dropout: Option<Dropout>,
}

fn par(work: usize) -> Par {
    if work >= 1 << 18 {
        Par::Rayon
    } else {
        Par::Seq
    }
}

/// Scratch buffers of the LoRA path, kept in the model's workspace and sized on first use.
#[derive(Default)]
pub struct LoraWorkspace {
    /// `u = dropout(x) · Aᵀ` `[n, r]` per (layer, module), kept for the backward.
    pub(crate) u: Vec<Vec<f32>>,
    /// The dropped-out input `[n, max c_in]` (only with dropout).
    pub(crate) xd: Vec<f32>,
    /// `du [n, r]` in the backward.
    pub(crate) du: Vec<f32>,
    /// The dropout seed of the current training pass; `None` in evaluation.
    pub(crate) train_seed: Option<u64>,
}

impl LoraWorkspace {
    /// Sizes the buffers for `sites` adapters of rank `r` over `n` rows (no-op when already sized).
    pub(crate) fn ensure(&mut self, sites: usize, n: usize, r: usize, max_in: usize, dropout: bool) {
        if self.u.len() != sites || self.u.first().is_some_and(|u| u.len() != n * r) {
            self.u = (0..sites).map(|_| vec![0.0; n * r]).collect();
        }
        if self.du.len() != n * r {
            self.du = vec![0.0; n * r];
        }
        let xd = if dropout { n * max_in } else { 0 };
        if self.xd.len() != xd {
            self.xd = vec![0.0; xd];
        }
    }
}

/// The input the adapter sees: `x`, or `dropout(x)` in `xd` (recomputed identically in the backward).
fn dropped<'a>(x: &'a [f32], xd: &'a mut [f32], s: &Site) -> &'a [f32] {
    match s.dropout {
        Some(d) => {
            let xd = &mut xd[..s.n * s.c_in];
            xd.copy_from_slice(&x[..s.n * s.c_in]);
            dropout::forward(xd, d);
            xd
        }
        None => x,
    }
}

/// `y[:, col..col + c_out] += scale · (dropout(x) · Aᵀ) · Bᵀ`, keeping `u = dropout(x) · Aᵀ`.
pub(crate) fn forward(y: &mut [f32], x: &[f32], a: &[f32], b: &[f32], u: &mut [f32], xd: &mut [f32], s: Site) {
    let _prof = finetune_engine::profile::scope("lora.forward");
    let xin = dropped(x, xd, &s);
    matmul(u, xin, a, s.n, s.c_in, s.r, false, true, false);
    let bt = View::new(b, s.r, true);
    let work = s.n * s.r * s.c_out;
    gemm_view(&mut y[s.col..], s.width, View::new(u, s.r, false), bt, s.n, s.c_out, s.r, s.scale, true, par(work));
}

/// Backward of [`forward`] given `dy` (rows `width` wide): `dB += scale · dy_colsᵀ · u`,
/// `dA += (scale · dy_cols · B)ᵀ · dropout(x)` and `dx += dropout'(scale · dy_cols · B · A)`. `da`/`db` are
/// `None` for frozen adapters.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    dx: &mut [f32],
    da: Option<&mut [f32]>,
    db: Option<&mut [f32]>,
    dy: &[f32],
    x: &[f32],
    a: &[f32],
    b: &[f32],
    u: &[f32],
    du: &mut [f32],
    xd: &mut [f32],
    s: Site,
) {
    let _prof = finetune_engine::profile::scope("lora.backward");
    let (n, r) = (s.n, s.r);
    let dy_t = View { data: &dy[s.col..], rs: 1, cs: s.width };
    let dy_v = View { data: &dy[s.col..], rs: s.width, cs: 1 };
    if let Some(db) = db {
        gemm_view(db, r, dy_t, View::new(u, r, false), s.c_out, r, n, s.scale, true, par(n * r * s.c_out));
    }
    let du = &mut du[..n * r];
    gemm_view(du, r, dy_v, View::new(b, r, false), n, r, s.c_out, s.scale, false, par(n * r * s.c_out));
    if let Some(da) = da {
        let xin = dropped(x, xd, &s);
        gemm_view(
            da,
            s.c_in,
            View::new(du, r, true),
            View::new(xin, s.c_in, false),
            r,
            s.c_in,
            n,
            1.0,
            true,
            par(n * r * s.c_in),
        );
    }
    match s.dropout {
        None => matmul(dx, du, a, n, r, s.c_in, false, false, true),
        Some(d) => {
            // The mask multiplies the adapter's input only, so its gradient is masked before joining dx.
            let g = &mut xd[..n * s.c_in];
            matmul(g, du, a, n, r, s.c_in, false, false, false);
            dropout::backward(g, d);
            for (t, v) in dx[..n * s.c_in].iter_mut().zip(g.iter()) {
                *t += v;
            }
        }
    }
}

/// A linear that can carry an adapter: its path inside a layer (`self_attn.q_proj`), its shape, and the
/// columns `col..col + c_out` of the (possibly fused, `width`-wide) output buffer it writes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Module {
    pub path: &'static str,
    pub c_in: usize,
    pub c_out: usize,
    pub width: usize,
    pub col: usize,
}

/// The parameter bookkeeping of a model that adapters extend: infos, the name index and the flat
/// parameter, gradient and AdamW moment buffers.
pub(crate) struct Store<'a> {
    pub infos: &'a mut Vec<ParamInfo>,
    pub index: &'a mut BTreeMap<String, usize>,
    pub bufs: [&'a mut Vec<f32>; 4],
}

/// Adapters on every layer of a model. Their parameters are appended after the base ones in the flat buffers,
/// `lora_A` before `lora_B` of each module.
#[derive(Debug, Clone)]
pub(crate) struct Adapters {
    pub config: LoraConfig,
    pub scale: f32,
    pub modules: Vec<Module>,
    /// `(lora_A, lora_B)` parameter indices per layer and module; `None` where not targeted.
    pub pairs: Vec<Vec<Option<(usize, usize)>>>,
    base_infos: usize,
    base_len: usize,
    /// `requires_grad` of the base parameters before the adapters froze them.
    base_rg: Vec<bool>,
    seed: u64,
    /// Training passes so far (each draws fresh dropout masks).
    passes: u64,
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl Adapters {
    /// Freezes every base parameter and appends `lora_A` (U(−1/√in, 1/√in) from `seed`) and `lora_B` (zero)
    /// for each targeted module of each layer, named `{layer_prefix}.{path}.lora_A.weight`.
    pub fn add(
        cfg: &LoraConfig,
        seed: u64,
        modules: Vec<Module>,
        layer_prefixes: &[String],
        mut st: Store<'_>,
    ) -> Result<Self, LoraError> {
        cfg.validate()?;
        let paths: Vec<&str> = modules.iter().map(|m| m.path).collect();
        let on = cfg.targets(&paths)?;
        let base_infos = st.infos.len();
        let base_len = st.bufs[0].len();
        let base_rg: Vec<bool> = st.infos.iter().map(|i| i.requires_grad).collect();
        for i in st.infos.iter_mut() {
            i.requires_grad = false;
        }
        let mut total = base_len;
        let mut pairs = Vec::with_capacity(layer_prefixes.len());
        for prefix in layer_prefixes {
            let mut row = vec![None; modules.len()];
            for (m, md) in modules.iter().enumerate().filter(|(m, _)| on[*m]) {
                let mut ks = [0usize; 2];
                for (slot, (ab, shape)) in [("A", [cfg.r, md.c_in]), ("B", [md.c_out, cfg.r])].into_iter().enumerate() {
                    let name = format!("{prefix}.{}.lora_{ab}.weight", md.path);
                    let info =
                        ParamInfo { name, offset: total, shape: shape.to_vec(), decay: true, requires_grad: true };
                    total += info.len();
                    st.index.insert(info.name.clone(), st.infos.len());
                    ks[slot] = st.infos.len();
                    st.infos.push(info);
                }
                row[m] = Some((ks[0], ks[1]));
            }
            pairs.push(row);
        }
        for buf in st.bufs.iter_mut() {
            buf.resize(total, 0.0);
        }
        let Store { infos, bufs: [params, ..], .. } = st;
        for (k, info) in infos.iter().enumerate().skip(base_infos).step_by(2) {
            let dst = &mut params[info.offset..info.offset + info.len()];
            kaiming_uniform_fill(dst, info.shape[1], seed ^ (k as u64).wrapping_mul(GOLDEN));
        }
        let scale = cfg.scale();
        Ok(Adapters { config: cfg.clone(), scale, modules, pairs, base_infos, base_len, base_rg, seed, passes: 0 })
    }

    /// Removes the adapters' parameters; the base gets back its `requires_grad` flags.
    pub fn unload(self, st: Store<'_>) -> LoraConfig {
        for i in st.infos.drain(self.base_infos..) {
            st.index.remove(&i.name);
        }
        for buf in st.bufs {
            buf.truncate(self.base_len);
        }
        for (i, rg) in st.infos.iter_mut().zip(&self.base_rg) {
            i.requires_grad = *rg;
        }
        self.config
    }

    /// Number of (layer, module) slots (for the workspace).
    pub fn slots(&self) -> usize {
        self.pairs.len() * self.modules.len()
    }

    pub fn max_in(&self) -> usize {
        self.modules.iter().map(|m| m.c_in).max().unwrap_or(0)
    }

    /// Sizes the workspace for `n` rows (allocates only when the shape changes).
    pub fn prepare(&self, lw: &mut LoraWorkspace, n: usize) {
        lw.ensure(self.slots(), n, self.config.r, self.max_in(), self.config.lora_dropout > 0.0);
    }

    /// (seed, training passes so far): what decides the next dropout masks, for exact resume.
    pub fn dropout_state(&self) -> (u64, u64) {
        (self.seed, self.passes)
    }

    /// Restores [`dropout_state`](Self::dropout_state).
    pub fn set_dropout_state(&mut self, seed: u64, passes: u64) {
        self.seed = seed;
        self.passes = passes;
    }

    /// The dropout seed of a new training pass: fresh masks each pass, `None` without dropout.
    pub fn next_train_seed(&mut self) -> Option<u64> {
        (self.config.lora_dropout > 0.0).then(|| {
            self.passes += 1;
            self.seed ^ self.passes.wrapping_mul(GOLDEN)
        })
    }

    fn site(&self, li: usize, m: usize, n: usize, train_seed: Option<u64>) -> Site {
        let md = self.modules[m];
        let p = self.config.lora_dropout;
        let slot = (li * self.modules.len() + m) as u64;
        let dropout = train_seed.filter(|_| p > 0.0).map(|seed| Dropout { p, seed: Dropout::site_seed(seed, slot) });
        Site {
            n,
            c_in: md.c_in,
            c_out: md.c_out,
            width: md.width,
            col: md.col,
            r: self.config.r,
            scale: self.scale,
            dropout,
        }
    }

    /// Adds the adapter outputs of modules `mods` of layer `li` (input `x`) into their columns of `y`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        lw: &mut LoraWorkspace,
        infos: &[ParamInfo],
        params: &[f32],
        li: usize,
        mods: std::ops::Range<usize>,
        y: &mut [f32],
        x: &[f32],
        n: usize,
    ) {
        for m in mods {
            let Some((ka, kb)) = self.pairs[li][m] else { continue };
            let site = self.site(li, m, n, lw.train_seed);
            let (a, b) = (&params[range(&infos[ka])], &params[range(&infos[kb])]);
            let slot = li * self.modules.len() + m;
            forward(y, x, a, b, &mut lw.u[slot], &mut lw.xd, site);
        }
    }

    /// Backward of [`forward`](Self::forward): adapter weight gradients (when they require one) and their
    /// share of `dx`, added to what the base linear's backward wrote.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        lw: &mut LoraWorkspace,
        infos: &[ParamInfo],
        params: &[f32],
        grads: &mut [f32],
        li: usize,
        mods: std::ops::Range<usize>,
        dx: &mut [f32],
        dy: &[f32],
        x: &[f32],
        n: usize,
    ) {
        for m in mods {
            let Some((ka, kb)) = self.pairs[li][m] else { continue };
            let (ra, rb) = (range(&infos[ka]), range(&infos[kb]));
            // lora_A lies before lora_B in the buffers: split once to borrow both gradients.
            let (ga, gb) = grads.split_at_mut(rb.start);
            let da = infos[ka].requires_grad.then(|| &mut ga[ra.clone()]);
            let db = infos[kb].requires_grad.then(|| &mut gb[..rb.len()]);
            let site = self.site(li, m, n, lw.train_seed);
            let slot = li * self.modules.len() + m;
            backward(dx, da, db, dy, x, &params[ra], &params[rb], &lw.u[slot], &mut lw.du, &mut lw.xd, site);
        }
    }

    /// `W += scale · B · A` into each targeted base weight (`base(li, m)` gives its info index); with
    /// `fan_in_fan_out` the base is stored `[in, out]` (GPT-2's Conv1D) and gets the transpose.
    pub fn merge_into(&self, infos: &[ParamInfo], params: &mut [f32], base: impl Fn(usize, usize) -> usize) {
        let r = self.config.r;
        for (li, row) in self.pairs.iter().enumerate() {
            for (m, pair) in row.iter().enumerate() {
                let Some((ka, kb)) = *pair else { continue };
                let md = self.modules[m];
                let a = params[range(&infos[ka])].to_vec();
                let b = params[range(&infos[kb])].to_vec();
                let w = &mut params[range(&infos[base(li, m)])];
                if self.config.fan_in_fan_out {
                    let (at, bt) = (View::new(&a, md.c_in, true), View::new(&b, r, true));
                    gemm_view(w, md.c_out, at, bt, md.c_in, md.c_out, r, self.scale, true, Par::Seq);
                } else {
                    let (bv, av) = (View::new(&b, r, false), View::new(&a, md.c_in, false));
                    gemm_view(w, md.c_in, bv, av, md.c_out, md.c_in, r, self.scale, true, Par::Seq);
                }
            }
        }
    }

    /// The adapter weights under PEFT's saved names.
    pub fn state_dict(&self, infos: &[ParamInfo], params: &[f32]) -> StateDict {
        infos[self.base_infos..]
            .iter()
            .map(|i| (peft_name(&i.name), Tensor::new(i.shape.clone(), params[range(i)].to_vec())))
            .collect()
    }

    /// Writes the adapter directory as PEFT's `save_pretrained`: the config with `inference_mode` true and the
    /// targeted modules listed, and the weights.
    pub fn save(&self, dir: &Path, infos: &[ParamInfo], params: &[f32]) -> Result<(), LoraError> {
        let mut cfg = self.config.clone();
        cfg.inference_mode = true;
        let paths: Vec<&str> = self.modules.iter().map(|m| m.path).collect();
        let on: Vec<bool> = (0..self.modules.len()).map(|m| self.pairs.iter().any(|row| row[m].is_some())).collect();
        cfg.target_modules = TargetModules::List(target_list(&paths, &on));
        save_adapter_files(dir, &cfg, &self.state_dict(infos, params))
    }

    /// Copies the adapter tensors of `sd` (read from `path`) into the parameters: every expected tensor must be
    /// there with its shape, and nothing else may be.
    pub fn load_weights(
        &self,
        infos: &[ParamInfo],
        params: &mut [f32],
        sd: &StateDict,
        path: &Path,
    ) -> Result<(), LoraError> {
        let terr =
            |tensor: &str, message: String| LoraError::Tensor { path: path.into(), tensor: tensor.into(), message };
        let mut expected = std::collections::BTreeSet::new();
        for info in &infos[self.base_infos..] {
            let name = peft_name(&info.name);
            let t = sd.get(&name).ok_or_else(|| terr(&name, "missing".into()))?;
            if t.shape != info.shape {
                return Err(terr(
                    &name,
                    format!("shape {:?}, expected {:?} for r = {}", t.shape, info.shape, self.config.r),
                ));
            }
            params[range(info)].copy_from_slice(&t.data);
            expected.insert(name);
        }
        if let Some(extra) = sd.keys().find(|k| !expected.contains(*k)) {
            return Err(terr(extra, "not an adapter tensor of this model under adapter_config.json".into()));
        }
        Ok(())
    }
}

fn range(i: &ParamInfo) -> std::ops::Range<usize> {
    i.offset..i.offset + i.len()
}

/// Reads a PEFT adapter directory: the config, the weights (`adapter_model.safetensors`, else
/// `adapter_model.bin`) and the weight file's path.
pub(crate) fn read_adapter_dir(dir: &Path) -> Result<(LoraConfig, StateDict, PathBuf), LoraError> {
    let cfg = LoraConfig::from_dir(dir)?;
    let mut path = dir.join(ADAPTER_WEIGHTS);
    if !path.is_file() && dir.join("adapter_model.bin").is_file() {
        path = dir.join("adapter_model.bin");
    }
    let sd = checkpoint::load_state_dict(&path)?;
    Ok((cfg, sd, path))
}

/// Names the config file in an architecture-level config error found while adding adapters from `dir`.
pub(crate) fn in_config_file(e: LoraError, dir: &Path) -> LoraError {
    match e {
        LoraError::Config(message) => LoraError::File { path: dir.join(ADAPTER_CONFIG), message },
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        (0..n).map(|i| 2.0 * dropout::uniform(seed, i as u64) - 1.0).collect()
    }

    /// Σ w ⊙ y for the adapter's output written into columns 2..7 of a 9-wide buffer, in f64.
    fn objective(x: &[f32], a: &[f32], b: &[f32], w: &[f32], s: Site) -> f64 {
        let mut y = vec![0.0; s.n * s.width];
        let (mut u, mut xd) = (vec![0.0; s.n * s.r], vec![0.0; s.n * s.c_in]);
        forward(&mut y, x, a, b, &mut u, &mut xd, s);
        y.iter().zip(w).map(|(p, q)| *p as f64 * *q as f64).sum()
    }

    #[test]
    fn backward_matches_finite_differences_with_and_without_dropout() {
        let (n, c_in, c_out, r) = (5, 6, 5, 3);
        for dropout in [None, Some(Dropout { p: 0.4, seed: 11 })] {
            let s = Site { n, c_in, c_out, width: 9, col: 2, r, scale: 1.5, dropout };
            let (x, a, b, w) = (rand(n * c_in, 1), rand(r * c_in, 2), rand(c_out * r, 3), rand(n * 9, 4));
            let mut u = vec![0.0; n * r];
            let mut xd = vec![0.0; n * c_in];
            let mut y = vec![0.0; n * 9];
            forward(&mut y, &x, &a, &b, &mut u, &mut xd, s);
            // Columns outside the slice are untouched.
            assert!(y.chunks(9).all(|row| row[..2].iter().chain(&row[7..]).all(|&v| v == 0.0)));
            let (mut dx, mut da, mut db, mut du) =
                (vec![0.5; n * c_in], vec![0.0; r * c_in], vec![0.0; c_out * r], vec![0.0; n * r]);
            backward(&mut dx, Some(&mut da), Some(&mut db), &w, &x, &a, &b, &u, &mut du, &mut xd, s);
            let eps = 1e-2f32;
            let check = |v: &[f32], g: &[f32], which: usize| {
                for i in 0..v.len() {
                    let mut p = v.to_vec();
                    let f = |p: &[f32]| match which {
                        0 => objective(p, &a, &b, &w, s),
                        1 => objective(&x, p, &b, &w, s),
                        _ => objective(&x, &a, p, &w, s),
                    };
                    p[i] = v[i] + eps;
                    let up = f(&p);
                    p[i] = v[i] - eps;
                    let down = f(&p);
                    let fd = (up - down) / (2.0 * eps as f64);
                    assert!((fd - g[i] as f64).abs() <= 1e-3, "{which}[{i}]: fd {fd} vs {} ({dropout:?})", g[i]);
                }
            };
            let dx_only: Vec<f32> = dx.iter().map(|v| v - 0.5).collect();
            check(&x, &dx_only, 0);
            check(&a, &da, 1);
            check(&b, &db, 2);
        }
    }

    #[test]
    fn config_targets_and_scale() {
        let mut c = LoraConfig { r: 16, lora_alpha: 32.0, ..LoraConfig::default() };
        assert_eq!(c.scale(), 2.0);
        c.use_rslora = true;
        assert_eq!(c.scale(), 8.0);
        let known = ["self_attn.q_proj", "self_attn.v_proj", "self_attn.o_proj"];
        assert_eq!(c.targets(&known).expect("default"), vec![true, true, false]);
        c.target_modules = TargetModules::Str("all-linear".into());
        assert_eq!(c.targets(&known).expect("all"), vec![true; 3]);
        c.target_modules = TargetModules::List(vec!["self_attn.o_proj".into()]);
        assert_eq!(c.targets(&known).expect("suffix"), vec![false, false, true]);
        c.target_modules = TargetModules::List(vec!["c_attn".into()]);
        assert!(c.targets(&known).expect_err("unknown").to_string().contains("c_attn"));
        let parsed = LoraConfig::from_json(r#"{"r": 4, "lora_alpha": 8, "target_modules": "q_proj", "new_key": 1}"#)
            .expect("unknown keys are ignored");
        assert_eq!(parsed.targets(&known).expect("one"), vec![true, false, false]);
        assert!(LoraConfig::from_json(r#"{"target_modules": ["q_proj"], "bias": "all"}"#).is_err());
        assert!(LoraConfig::from_json(r#"{"target_modules": ["q_proj"], "r": 0}"#).is_err());
        assert!(LoraConfig::from_json(r#"{"r": 4}"#).is_err(), "target_modules is required");
        // GPT-2: "c_proj" is both attn.c_proj and mlp.c_proj, as in PEFT.
        let gpt2 = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"];
        c.target_modules = TargetModules::List(vec!["c_proj".into()]);
        assert_eq!(c.targets(&gpt2).expect("c_proj"), vec![false, true, false, true]);
        c.target_modules = TargetModules::List(vec!["attn.c_proj".into(), "c_attn".into()]);
        assert_eq!(c.targets(&gpt2).expect("attn only"), vec![true, true, false, false]);
        assert!(c.targets(&["self_attn.q_proj"]).is_err());
        assert_eq!(target_list(&gpt2, &[true, true, false, true]), ["c_attn", "c_proj"]);
        assert_eq!(target_list(&gpt2, &[false, true, true, false]), ["attn.c_proj", "c_fc"]);
        assert_eq!(target_list(&known, &[true, false, true]), ["q_proj", "o_proj"]);
        let back = LoraConfig::from_json(&parsed.to_json()).expect("round trip");
        assert_eq!(back, parsed);
    }
}
