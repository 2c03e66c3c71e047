//! Data-parallel training over ranks (MPI processes, or threads in tests) that gives bitwise the weights of one
//! process.
//!
//! With N ranks and `gradient_accumulation_steps = G`, an optimizer step covers a window of `N·G` micro-batches,
//! exactly the window of one process with `gradient_accumulation_steps = N·G` (same sampler, same order, same
//! checkpoints: a run can resume with another N as long as `N·G` stays). The window is trained in rounds of N
//! micro-batches; in round j rank r trains micro-batch `j·N + r` and only advances the dropout streams past the
//! others. After each round the gradient is split into N chunks and the owner of a chunk adds the ranks' parts in
//! rank order to its part of the window's sum — the order in which one process adds its micro-batches, each
//! computed on its own. At the end of the window every rank gathers the sum and takes the same clip and AdamW step,
//! so no weights are sent. Each rank sends and receives `2(N−1)/N` of the gradient per round, as a ring
//! all-reduce does.
//!
//! The world lives in a thread-local: an MPI process installs one at start-up, and the tests run ranks as threads
//! that each install their own.

pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;

use std::cell::RefCell;
use std::ops::Range;
use std::rc::Rc;
use std::time::Instant;

/// The collective operations data-parallel training needs; every rank calls them in the same order.
pub trait Collective {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Every rank's `values` (the same length on every rank), concatenated in rank order.
    fn all_gather_f64(&self, values: &[f64]) -> Vec<f64>;
    /// Sends `send[Σ send_counts[..k] ..][.. send_counts[k]]` to rank k and receives rank k's part into
    /// `recv[Σ recv_counts[..k] ..][.. recv_counts[k]]`.
    fn all_to_all_v(&self, send: &[f32], send_counts: &[usize], recv: &mut [f32], recv_counts: &[usize]);
    /// Every rank's `mine` (of length `counts[rank]`) into `out`, in rank order.
    fn all_gather_v(&self, mine: &[f32], out: &mut [f32], counts: &[usize]);
    /// Rank 0's `bytes` on every rank.
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>);
    fn barrier(&self);
}

thread_local! {
    static WORLD: RefCell<Option<Rc<dyn Collective>>> = const { RefCell::new(None) };
}

/// Makes `world` the ranks this thread trains with.
pub fn install(world: Rc<dyn Collective>) {
    WORLD.with(|w| *w.borrow_mut() = Some(world));
}

/// Removes and returns the installed world (an MPI world finalizes when the last reference drops).
pub fn uninstall() -> Option<Rc<dyn Collective>> {
    WORLD.with(|w| w.borrow_mut().take())
}

/// The installed world when it has more than one rank.
pub fn world() -> Option<Rc<dyn Collective>> {
    WORLD.with(|w| w.borrow().clone()).filter(|w| w.size() > 1)
}

/// Whether this process writes outputs: rank 0, or a process without ranks. Other ranks train, evaluate and
/// stop after training; rank 0 writes checkpoints, logs, the model and its results.
pub fn is_writer() -> bool {
    world().is_none_or(|w| w.rank() == 0)
}

/// Chunk `k` of `n` of a vector of `len` values (the chunk rank k owns).
fn chunk(len: usize, n: usize, k: usize) -> Range<usize> {
    len * k / n..len * (k + 1) / n
}

/// The gradient sum of one window across ranks (see the module comment).
pub(crate) struct Reducer {
    world: Rc<dyn Collective>,
    /// This rank's micro-batch gradient of the current round (trainable values, layout order).
    pub local: Vec<f32>,
    /// This rank's chunk of the window's sum.
    owned: Vec<f32>,
    send: Vec<f32>,
    recv: Vec<f32>,
    /// The gathered sum.
    pub full: Vec<f32>,
    /// Time spent moving gradients (all-to-all and all-gather), time spent waiting for the other ranks to finish
    /// their micro-batch (the first exchange of a round), and bytes this rank sent, since the start.
    pub comm_secs: f64,
    pub wait_secs: f64,
    pub bytes_sent: u64,
    /// This rank's loss in the current round, until the round ends.
    pending: Option<f64>,
}

impl Reducer {
    pub fn new(world: Rc<dyn Collective>, len: usize) -> crate::Result<Self> {
        let (r, n) = (world.rank(), world.size());
        // MPI counts are 32-bit: a chunk (and a round's receive buffer) must fit in one.
        if len.div_ceil(n).saturating_mul(n) > i32::MAX as usize {
            return Err(crate::TrainError::Args(format!(
                "{len} gradient values on {n} ranks exceed MPI's 32-bit message counts"
            )));
        }
        let owned = vec![0.0; chunk(len, n, r).len()];
        Ok(Reducer {
            world,
            local: vec![0.0; len],
            send: Vec::with_capacity(len - owned.len()),
            recv: Vec::with_capacity(owned.len() * n),
            owned,
            full: vec![0.0; len],
            comm_secs: 0.0,
            wait_secs: 0.0,
            bytes_sent: 0,
            pending: None,
        })
    }

    pub fn world(&self) -> &dyn Collective {
        &*self.world
    }

    pub fn rank(&self) -> usize {
        self.world.rank()
    }

    pub fn size(&self) -> usize {
        self.world.size()
    }

    /// Keeps this rank's loss of the current round (its gradient stays in `local`) until the round ends.
    pub fn hold(&mut self, loss: Option<f64>) {
        if loss.is_some() {
            self.pending = loss;
        }
    }

    /// Ends a round in which this rank trained a micro-batch with loss `loss` (given here or held; then `local`
    /// holds its gradient) or none. Adds the active ranks' gradient chunks in rank order and returns their losses
    /// in rank order.
    pub fn round(&mut self, loss: Option<f64>) -> Vec<f64> {
        let loss = loss.or(self.pending.take());
        let t = Instant::now();
        let (r, n, len) = (self.world.rank(), self.world.size(), self.local.len());
        // Also where the ranks meet: the time here is mostly waiting for the slowest one.
        let flags = self.world.all_gather_f64(&[loss.is_some() as u8 as f64, loss.unwrap_or(0.0)]);
        self.wait_secs += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let active: Vec<bool> = (0..n).map(|k| flags[2 * k] != 0.0).collect();
        let mine = chunk(len, n, r).len();
        let send_counts: Vec<usize> =
            (0..n).map(|k| if loss.is_some() && k != r { chunk(len, n, k).len() } else { 0 }).collect();
        let recv_counts: Vec<usize> = (0..n).map(|k| if active[k] && k != r { mine } else { 0 }).collect();
        self.recv.resize(recv_counts.iter().sum(), 0.0);
        // Only the other ranks' chunks travel; this rank's own part is read from `local` in place.
        if loss.is_some() {
            self.fill_send();
        }
        self.world.all_to_all_v(&self.send, &send_counts, &mut self.recv, &recv_counts);
        self.bytes_sent += 4 * send_counts.iter().sum::<usize>() as u64;
        let own = chunk(len, n, r);
        let mut at = 0;
        for (k, _) in active.iter().enumerate().filter(|(_, &a)| a) {
            let part = if k == r {
                &self.local[own.clone()]
            } else {
                let p = &self.recv[at..at + mine];
                at += mine;
                p
            };
            for (o, &g) in self.owned.iter_mut().zip(part) {
                *o += g;
            }
        }
        self.comm_secs += t.elapsed().as_secs_f64();
        (0..n).filter(|&k| active[k]).map(|k| flags[2 * k + 1]).collect()
    }

    /// `send` = `local` without this rank's own chunk (what the all-to-all sends, in rank order).
    fn fill_send(&mut self) {
        let (r, n, len) = (self.world.rank(), self.world.size(), self.local.len());
        let own = chunk(len, n, r);
        self.send.clear();
        self.send.extend_from_slice(&self.local[..own.start]);
        self.send.extend_from_slice(&self.local[own.end..]);
    }

    /// Ends a window: the sum on every rank in `full`, and the owned chunk zeroed for the next window.
    pub fn finish(&mut self) -> &[f32] {
        let t = Instant::now();
        let (n, len) = (self.world.size(), self.full.len());
        let counts: Vec<usize> = (0..n).map(|k| chunk(len, n, k).len()).collect();
        self.world.all_gather_v(&self.owned, &mut self.full, &counts);
        self.bytes_sent += 4 * (n as u64 - 1) * self.owned.len() as u64;
        self.owned.fill(0.0);
        self.comm_secs += t.elapsed().as_secs_f64();
        &self.full
    }
}
