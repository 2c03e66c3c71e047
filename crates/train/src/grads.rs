//! Gradient accumulation over a window of micro-batches, each micro-batch's gradient computed on its own (into
//! zeroed buffers) and added to the window's sum in order. That order is what data-parallel ranks reproduce
//! ([`crate::dist`]), so a window split across ranks sums to the same bits.

use std::ops::Range;

use finetune_models::params::ParamStore;

/// The trainable parameters' ranges of the flat gradient buffer, in layout order (frozen ones get no gradient).
fn trainable(store: &ParamStore) -> Vec<Range<usize>> {
    store.param_infos().iter().filter(|i| i.requires_grad).map(|i| i.range()).collect()
}

/// The window's sum of trainable gradients, packed in layout order.
#[derive(Debug, Default)]
pub(crate) struct GradAcc {
    sum: Vec<f32>,
    /// `sum` holds this window's micro-batches (else the gradient, if any, is in the store's buffer).
    active: bool,
}

impl GradAcc {
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Adds `scale · grads` of the store (one micro-batch's gradient) to the sum and zeroes them.
    pub fn add(&mut self, store: &mut ParamStore, scale: f32) {
        let ranges = trainable(store);
        if !self.active {
            self.sum.clear();
            self.sum.resize(ranges.iter().map(|r| r.len()).sum(), 0.0);
            self.active = true;
        }
        let mut at = 0;
        for r in ranges {
            let g = &mut store.grads[r];
            for (a, g) in self.sum[at..at + g.len()].iter_mut().zip(g.iter_mut()) {
                *a += scale * *g;
                *g = 0.0;
            }
            at += g.len();
        }
    }

    /// Writes `g` (laid out as by [`take`](Self::take)) as the store's gradient.
    pub fn put(&mut self, store: &mut ParamStore, g: &[f32]) {
        let mut at = 0;
        for r in trainable(store) {
            let n = r.len();
            store.grads[r].copy_from_slice(&g[at..at + n]);
            at += n;
        }
        self.active = false;
    }

    /// Before the optimizer step: the sum (if the window was split) into the store's gradient buffer.
    pub fn flush_into(&mut self, store: &mut ParamStore) {
        if self.active {
            let sum = std::mem::take(&mut self.sum);
            self.put(store, &sum);
            self.sum = sum;
        }
    }
}
