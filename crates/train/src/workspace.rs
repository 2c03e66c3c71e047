//! Model workspaces (activation buffers for one padded batch shape) kept between steps: allocating them is
//! costly, and dynamic padding produces a handful of recurring shapes.

/// A workspace built for one (batch, sequence) shape.
pub(crate) trait Shaped {
    fn shape(&self) -> (usize, usize);
}

impl Shaped for finetune_models::bert::Workspace {
    fn shape(&self) -> (usize, usize) {
        (self.batch, self.seq)
    }
}

/// Workspaces by (batch, seq), least recently used evicted once their tokens exceed twice the largest shape.
pub(crate) struct WorkspaceCache<W> {
    entries: Vec<(u64, W)>,
    clock: u64,
    max_tokens: usize,
}

impl<W> Default for WorkspaceCache<W> {
    fn default() -> Self {
        WorkspaceCache { entries: Vec::new(), clock: 0, max_tokens: 0 }
    }
}

impl<W: Shaped> WorkspaceCache<W> {
    /// The workspace for (batch, seq), built by `make` when there is none.
    pub(crate) fn get(&mut self, batch: usize, seq: usize, make: impl FnOnce() -> W) -> &mut W {
        self.clock += 1;
        let clock = self.clock;
        if let Some(i) = self.entries.iter().position(|(_, w)| w.shape() == (batch, seq)) {
            self.entries[i].0 = clock;
            return &mut self.entries[i].1;
        }
        self.max_tokens = self.max_tokens.max(batch * seq);
        let budget = 2 * self.max_tokens;
        let used = |e: &[(u64, W)]| e.iter().map(|(_, w)| w.shape().0 * w.shape().1).sum::<usize>();
        while !self.entries.is_empty() && used(&self.entries) + batch * seq > budget {
            let oldest = self.entries.iter().enumerate().min_by_key(|(_, (t, _))| *t).map_or(0, |(i, _)| i);
            self.entries.swap_remove(oldest);
        }
        self.entries.push((clock, make()));
        let last = self.entries.len() - 1;
        &mut self.entries[last].1
    }
}
