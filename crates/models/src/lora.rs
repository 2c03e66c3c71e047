//! LoRA adapters with PEFT's semantics and file layout: [`LoraConfig`] reads and writes PEFT's
//! `adapter_config.json`, adapters are saved as `adapter_model.safetensors` with PEFT's tensor names
//! (`base_model.model.<module>.lora_A.weight`), and the kernels here compute PEFT's
//! `y = base(x) + scale · B(A(dropout(x)))` and its backward for one targeted linear, writing into a column
//! slice of a fused projection output so that fused q/k/v and gate/up weights are never re-materialised.
//!
//! The adapter lifecycle (adding, unloading, merging, saving and loading) lives in the parameter store
//! ([`crate::params`]): adapter parameters are appended to the model's flat parameter/gradient/AdamW buffers (so
//! clipping and AdamW need no change), the base is frozen, and merging handles both `nn.Linear` (`[out, in]`)
//! and GPT-2's `Conv1D` (`[in, out]`, PEFT's `fan_in_fan_out`) weights. Dropout masks come from the engine's
//! counter-based RNG: recomputed in the backward, fresh for every training pass, never applied in evaluation.
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
use finetune_engine::StateDict;

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
pub(crate) fn target_list(known: &[&str], on: &[bool]) -> Vec<String> {
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
/// columns `col..col + c_out` of the (possibly fused, `width`-wide) output buffer it writes. An architecture
/// lists its targetable linears as data ([`crate::params::LoraTargets`]); the parameter store does the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Module {
    pub path: &'static str,
    pub c_in: usize,
    pub c_out: usize,
    pub width: usize,
    pub col: usize,
}

impl Module {
    /// A linear writing its own, unfused output.
    pub fn plain(path: &'static str, c_in: usize, c_out: usize) -> Self {
        Module { path, c_in, c_out, width: c_out, col: 0 }
    }
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
