//! LoRA adapters as parameters of the store: appended after the base parameters in the flat buffers, the base
//! frozen while they are on, merged into the base weights, saved and loaded as PEFT files. The kernels, the
//! config and the file names are [`crate::lora`]'s.

use std::collections::BTreeMap;
use std::path::Path;

use finetune_engine::kernels::dropout::Dropout;
use finetune_engine::matmul::{gemm_view, Par, View};
use finetune_engine::{StateDict, Tensor};

use super::ParamInfo;
use crate::lora::{
    self, kaiming_uniform_fill, peft_name, save_adapter_files, target_list, LoraConfig, LoraError, LoraWorkspace,
    Module, Site, TargetModules,
};

/// The parameter bookkeeping of a model that adapters extend: infos, the name index and the flat
/// parameter, gradient and AdamW moment buffers.
pub(super) struct Store<'a> {
    pub infos: &'a mut Vec<ParamInfo>,
    pub index: &'a mut BTreeMap<String, usize>,
    pub bufs: [&'a mut Vec<f32>; 4],
}

/// Adapters on every layer of a model. Their parameters are appended after the base ones in the flat buffers,
/// `lora_A` before `lora_B` of each module.
#[derive(Debug, Clone)]
pub(super) struct Adapters {
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
        // Parameters and gradients always; AdamW moments only once the optimizer has allocated them.
        for (k, buf) in st.bufs.iter_mut().enumerate() {
            if k < 2 || !buf.is_empty() {
                buf.resize(total, 0.0);
            }
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
            lora::forward(y, x, a, b, &mut lw.u[slot], &mut lw.xd, site);
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

impl super::LoraRef<'_> {
    /// Backward of [`ParamStore::lora_forward`](super::ParamStore::lora_forward): adapter weight gradients (when
    /// they require one) and their share of `dx`, added to what the base linear's backward wrote (no-op without
    /// adapters).
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
        let Some(a) = self.0 else { return };
        for m in mods {
            let Some((ka, kb)) = a.pairs[li][m] else { continue };
            let (ra, rb) = (range(&infos[ka]), range(&infos[kb]));
            // lora_A lies before lora_B in the buffers: split once to borrow both gradients.
            let (ga, gb) = grads.split_at_mut(rb.start);
            let da = infos[ka].requires_grad.then(|| &mut ga[ra.clone()]);
            let db = infos[kb].requires_grad.then(|| &mut gb[..rb.len()]);
            let site = a.site(li, m, n, lw.train_seed);
            let slot = li * a.modules.len() + m;
            lora::backward(dx, da, db, dy, x, &params[ra], &params[rb], &lw.u[slot], &mut lw.du, &mut lw.xd, site);
        }
    }
}
