//! Data-parallel training over ranks (MPI processes, or threads in tests) that gives bitwise the weights of one
//! process.
//!
//! With N ranks and `gradient_accumulation_steps = G`, an optimizer step covers a window of `N·G` micro-batches,
//! exactly the window of one process with `gradient_accumulation_steps = N·G` (same sampler, same order, same
//! checkpoints: a run can resume with another N as long as `N·G` stays). The window is trained in rounds of N
//! micro-batches; in round j rank r trains micro-batch `j·N + r` and only advances the dropout streams past the
//! others. Each micro-batch's gradient is exchanged in buckets; a bucket is split into N chunks and the owner of a
//! chunk adds the ranks' parts in rank order to its part of the window's sum — the order in which one process adds
//! its micro-batches, each computed on its own. At the end of the window every rank gathers the sum and takes the
//! same clip and AdamW step, so no weights are sent. Each rank sends and receives `2(N−1)/N` of the gradient per
//! round, as a ring all-reduce does.
//!
//! Overlap, as PyTorch DDP's buckets: the trainable parameters are grouped into buckets of about
//! `ddp_bucket_cap_mb` in the order the backward pass finishes them (last layer first), and a bucket leaves as
//! soon as the backward pass reports its layers done ([`LayerHook`]), on a communication thread, while the
//! earlier layers' backward runs. Which rank adds what, in which order, does not depend on the buckets, so the
//! sum stays bitwise that of one process.
//!
//! The world lives in a thread-local: an MPI process installs one at start-up, and the tests run ranks as threads
//! that each install their own.

pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;

use std::cell::RefCell;
use std::ops::Range;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use finetune_models::params::{LayerHook, ParamInfo, ParamStore};

use crate::TrainError;

/// The collective operations data-parallel training needs; every rank calls them in the same order, and one
/// rank never calls two at once (they come from the training thread or, while it waits, the communication
/// thread).
pub trait Collective: Send + Sync {
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
    /// Whether collectives may be called from a thread other than the one that set the world up (MPI: the
    /// library granted `MPI_THREAD_SERIALIZED`); else the gradients move on the training thread, without
    /// overlap.
    fn other_threads(&self) -> bool {
        true
    }
}

thread_local! {
    static WORLD: RefCell<Option<Arc<dyn Collective>>> = const { RefCell::new(None) };
}

/// Makes `world` the ranks this thread trains with.
pub fn install(world: Arc<dyn Collective>) {
    WORLD.with(|w| *w.borrow_mut() = Some(world));
}

/// Removes and returns the installed world (an MPI world finalizes when the last reference drops).
pub fn uninstall() -> Option<Arc<dyn Collective>> {
    WORLD.with(|w| w.borrow_mut().take())
}

/// The installed world when it has more than one rank.
pub fn world() -> Option<Arc<dyn Collective>> {
    WORLD.with(|w| w.borrow().clone()).filter(|w| w.size() > 1)
}

/// Whether this process writes outputs: rank 0, or a process without ranks. Other ranks train, evaluate and
/// stop after training; rank 0 writes checkpoints, logs, the model and its results.
pub fn is_writer() -> bool {
    world().is_none_or(|w| w.rank() == 0)
}

/// PyTorch DDP's default bucket size (`bucket_cap_mb`), in MiB.
pub const DEFAULT_BUCKET_CAP_MB: f64 = 25.0;

/// Chunk `k` of `n` of a vector of `len` values (the chunk rank k owns).
fn chunk(len: usize, n: usize, k: usize) -> Range<usize> {
    len * k / n..len * (k + 1) / n
}

/// Whole parameters whose gradients travel together.
struct Bucket {
    /// The parameters' ranges in the packed trainable layout (what `set_grads` takes), in bucket order.
    packed: Vec<Range<usize>>,
    /// The same parameters' ranges in the store's gradient buffer.
    store: Vec<Range<usize>>,
    len: usize,
    /// Complete once the backward pass has finished layer `ready` (`None`: when the pass returns).
    ready: Option<usize>,
}

impl Bucket {
    /// Writes `src`, the bucket's values at positions `pos` (in bucket order), to their places in `full`.
    fn scatter(&self, pos: Range<usize>, src: &[f32], full: &mut [f32]) {
        let mut at = 0; // bucket position of the current range's start
        for r in &self.packed {
            let (lo, hi) = (pos.start.max(at), pos.end.min(at + r.len()));
            if lo < hi {
                let d = r.start + lo - at;
                full[d..d + hi - lo].copy_from_slice(&src[lo - pos.start..hi - pos.start]);
            }
            at += r.len();
        }
    }
}

/// The buckets of a model's trainable parameters, in the order the backward pass completes them.
struct Plan {
    buckets: Vec<Bucket>,
    len: usize,
}

impl Plan {
    fn new(infos: &[ParamInfo], cap_values: usize) -> Plan {
        let mut params: Vec<(Option<usize>, Range<usize>, Range<usize>)> = Vec::new();
        let mut at = 0;
        for i in infos.iter().filter(|i| i.requires_grad) {
            params.push((i.layer(), at..at + i.len(), i.range()));
            at += i.len();
        }
        // Latest layer first, each layer's parameters in reverse layout order (DDP's order); those outside the
        // layers (embeddings, heads) last, since the pass finishes them when it returns. The sort is stable.
        params.reverse();
        params.sort_by_key(|p| std::cmp::Reverse(p.0.map_or(0, |l| l + 1)));
        let mut buckets: Vec<Bucket> = Vec::new();
        // Whether the last bucket takes more parameters.
        let mut open = false;
        for (layer, packed, store) in params {
            // The parameters outside the layers start their own bucket: a layer's bucket need not wait for them.
            if open && layer.is_none() && buckets.last().is_some_and(|b| b.ready.is_some()) {
                open = false;
            }
            if !open {
                buckets.push(Bucket { packed: Vec::new(), store: Vec::new(), len: 0, ready: layer });
            }
            let b = buckets.last_mut().expect("a bucket exists");
            b.len += packed.len();
            b.ready = b.ready.zip(layer).map(|(x, y)| x.min(y));
            b.packed.push(packed);
            b.store.push(store);
            open = b.len < cap_values;
        }
        Plan { buckets, len: at }
    }

    /// Values of `n` ranks' chunks per bucket that rank k owns, in bucket order: where each bucket's chunk starts
    /// in rank k's concatenation, and the total.
    fn owned_layout(&self, n: usize, k: usize) -> (Vec<usize>, usize) {
        let mut at = 0;
        let starts = self
            .buckets
            .iter()
            .map(|b| {
                let s = at;
                at += chunk(b.len, n, k).len();
                s
            })
            .collect();
        (starts, at)
    }
}

/// What the training thread asks of the communication side.
enum Job {
    /// Exchange bucket `b`'s values (empty when this rank trained nothing this round); ranks `0..active` trained.
    Bucket { b: usize, values: Vec<f32>, active: usize },
    /// Gather the window's sum into the given buffer (packed layout).
    Finish(Vec<f32>),
}

/// What comes back: the bucket's buffer for reuse, or the gathered sum.
enum Reply {
    Sent(Vec<f32>),
    Gathered(Vec<f32>),
}

/// Owns this rank's chunks of the window's sum and runs the collectives that move gradients.
struct Worker {
    world: Arc<dyn Collective>,
    plan: Arc<Plan>,
    /// This rank's chunk of every bucket, in bucket order.
    owned: Vec<f32>,
    owned_at: Vec<usize>,
    recv: Vec<f32>,
    gathered: Vec<f32>,
    /// Time in collectives (including waiting inside them for the other ranks) and bytes sent.
    secs: f64,
    bytes: u64,
}

impl Worker {
    fn run(&mut self, job: Job) -> Reply {
        let t = Instant::now();
        let reply = match job {
            Job::Bucket { b, values, active } => {
                self.bucket(b, &values, active);
                Reply::Sent(values)
            }
            Job::Finish(mut full) => {
                self.finish(&mut full);
                Reply::Gathered(full)
            }
        };
        self.secs += t.elapsed().as_secs_f64();
        reply
    }

    fn bucket(&mut self, b: usize, values: &[f32], active: usize) {
        let (r, n) = (self.world.rank(), self.world.size());
        let len = self.plan.buckets[b].len;
        let own = chunk(len, n, r);
        let mine = !values.is_empty();
        debug_assert!(!mine || values.len() == len);
        // Every chunk goes to its owner, this rank's own one included (a local copy), so that the parts arrive in
        // rank order.
        let send_counts: Vec<usize> = (0..n).map(|k| if mine { chunk(len, n, k).len() } else { 0 }).collect();
        let recv_counts: Vec<usize> = (0..n).map(|k| if k < active { own.len() } else { 0 }).collect();
        self.recv.resize(own.len() * active.min(n), 0.0);
        self.world.all_to_all_v(values, &send_counts, &mut self.recv, &recv_counts);
        if mine {
            self.bytes += 4 * (len - own.len()) as u64;
        }
        if own.is_empty() {
            return;
        }
        let sum = &mut self.owned[self.owned_at[b]..self.owned_at[b] + own.len()];
        for part in self.recv.chunks_exact(own.len()) {
            for (s, &g) in sum.iter_mut().zip(part) {
                *s += g;
            }
        }
    }

    fn finish(&mut self, full: &mut [f32]) {
        let n = self.world.size();
        let layouts: Vec<(Vec<usize>, usize)> = (0..n).map(|k| self.plan.owned_layout(n, k)).collect();
        let counts: Vec<usize> = layouts.iter().map(|l| l.1).collect();
        self.gathered.resize(counts.iter().sum(), 0.0);
        self.world.all_gather_v(&self.owned, &mut self.gathered, &counts);
        self.bytes += 4 * (n as u64 - 1) * self.owned.len() as u64;
        let mut base = 0;
        for (k, (starts, total)) in layouts.iter().enumerate() {
            for (b, bucket) in self.plan.buckets.iter().enumerate() {
                let pos = chunk(bucket.len, n, k);
                let s = base + starts[b];
                bucket.scatter(pos.clone(), &self.gathered[s..s + pos.len()], full);
            }
            base += total;
        }
        self.owned.fill(0.0);
    }
}

/// Where jobs go: a communication thread, or the worker itself on the training thread.
enum Link {
    Thread(Sender<Job>),
    Inline(Box<Worker>, Vec<Reply>),
    /// The reducer is being dropped.
    Closed,
}

/// The training thread's side of a round: which buckets have left, and the scale of this micro-batch.
struct Stream {
    plan: Arc<Plan>,
    link: Link,
    /// The next bucket to send (buckets leave in plan order).
    next: usize,
    /// Ranks `0..active` train a micro-batch this round.
    active: usize,
    /// This micro-batch's share of the window (each gradient value is multiplied by it as it leaves).
    scale: f32,
    /// Jobs sent whose replies have not been read.
    in_flight: usize,
    free: Vec<Vec<f32>>,
    /// A failed communication thread (its error surfaces at the round's end).
    broken: bool,
    /// Buckets that left while the backward pass was still running.
    early: u64,
}

impl Stream {
    fn send(&mut self, job: Job) {
        self.in_flight += 1;
        match &mut self.link {
            Link::Thread(tx) => self.broken |= tx.send(job).is_err(),
            Link::Inline(w, replies) => replies.push(w.run(job)),
            Link::Closed => self.broken = true,
        }
    }

    /// Sends bucket b, taking its gradients out of `grads` (the store's buffer; `None`: this rank trained
    /// nothing this round).
    fn send_bucket(&mut self, grads: Option<&mut [f32]>) {
        let plan = self.plan.clone();
        let bucket = &plan.buckets[self.next];
        let mut values = self.free.pop().unwrap_or_default();
        values.clear();
        if let Some(g) = grads {
            values.reserve(bucket.len);
            for r in &bucket.store {
                values.extend(g[r.clone()].iter().map(|&x| self.scale * x));
                g[r.clone()].fill(0.0);
            }
        }
        let (b, active) = (self.next, self.active);
        self.next += 1;
        self.send(Job::Bucket { b, values, active });
    }

    /// The backward pass finished layers `li..`: send the buckets that are complete.
    fn layer_done(&mut self, grads: &mut [f32], li: usize) {
        while self.next < self.plan.buckets.len() && self.plan.buckets[self.next].ready.is_some_and(|l| l >= li) {
            self.send_bucket(Some(&mut *grads));
            self.early += 1;
        }
    }
}

/// The gradient sum of one window across ranks (see the module comment).
pub struct Reducer {
    world: Arc<dyn Collective>,
    stream: Arc<Mutex<Stream>>,
    replies: Option<Receiver<Reply>>,
    thread: Option<JoinHandle<()>>,
    /// The gathered sum (packed layout), between windows.
    full: Vec<f32>,
    /// Time the training thread stood still for the collectives (what overlap did not hide), including the
    /// ranks' meeting at the end of each round.
    pub exposed_secs: f64,
    /// Shared with the worker: its time in collectives and bytes sent.
    worker_stats: Arc<Mutex<(f64, u64)>>,
    /// This rank's loss in the current round, until the round ends.
    pending: Option<f64>,
}

impl Reducer {
    /// A reducer for the trainable parameters among `infos`, in buckets of about `bucket_cap_mb` MiB.
    pub(crate) fn new(world: Arc<dyn Collective>, infos: &[ParamInfo], bucket_cap_mb: f64) -> crate::Result<Self> {
        let n = world.size();
        let cap_values = ((bucket_cap_mb * (1u64 << 20) as f64 / 4.0) as usize).max(1);
        let plan = Arc::new(Plan::new(infos, cap_values));
        // MPI counts are 32-bit: a rank's owned chunks and every bucket must fit in one.
        if plan.len.div_ceil(n).saturating_mul(n) > i32::MAX as usize {
            return Err(TrainError::Args(format!(
                "{} gradient values on {n} ranks exceed MPI's 32-bit message counts",
                plan.len
            )));
        }
        let (owned_at, owned_len) = plan.owned_layout(n, world.rank());
        let worker = Worker {
            world: world.clone(),
            plan: plan.clone(),
            owned: vec![0.0; owned_len],
            owned_at,
            recv: Vec::new(),
            gathered: Vec::new(),
            secs: 0.0,
            bytes: 0,
        };
        let worker_stats = Arc::new(Mutex::new((0.0, 0u64)));
        let (link, replies, thread) = if world.other_threads() {
            let (tx, rx) = channel::<Job>();
            let (reply_tx, reply_rx) = channel::<Reply>();
            let stats = worker_stats.clone();
            let mut worker = worker;
            let thread = std::thread::Builder::new()
                .name(format!("grad-exchange-{}", world.rank()))
                .spawn(move || {
                    for job in rx {
                        let reply = worker.run(job);
                        *lock(&stats) = (worker.secs, worker.bytes);
                        if reply_tx.send(reply).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| TrainError::Args(format!("cannot start the gradient exchange thread: {e}")))?;
            (Link::Thread(tx), Some(reply_rx), Some(thread))
        } else {
            (Link::Inline(Box::new(worker), Vec::new()), None, None)
        };
        let stream = Stream {
            plan: plan.clone(),
            link,
            next: 0,
            active: 0,
            scale: 1.0,
            in_flight: 0,
            free: Vec::new(),
            broken: false,
            early: 0,
        };
        Ok(Reducer {
            world,
            stream: Arc::new(Mutex::new(stream)),
            replies,
            thread,
            full: vec![0.0; plan.len],
            exposed_secs: 0.0,
            worker_stats,
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

    /// Number of gradient values exchanged.
    pub fn gradient_values(&self) -> usize {
        self.full.len()
    }

    pub fn buckets(&self) -> usize {
        lock(&self.stream).plan.buckets.len()
    }

    /// Buckets this rank sent while its backward pass was still running, since the start.
    pub fn buckets_sent_early(&self) -> u64 {
        lock(&self.stream).early
    }

    /// Time in collectives (on the communication thread or not) and bytes this rank sent, since the start.
    pub fn collective_stats(&self) -> (f64, u64) {
        match &lock(&self.stream).link {
            Link::Inline(w, _) => (w.secs, w.bytes),
            Link::Thread(_) | Link::Closed => *lock(&self.worker_stats),
        }
    }

    /// Starts a round in which ranks `0..active` train a micro-batch.
    pub fn begin_round(&mut self, active: usize) {
        let mut s = lock(&self.stream);
        s.next = 0;
        s.active = active;
    }

    /// The hook for this rank's backward pass of a micro-batch whose share of the window is `scale`: complete
    /// buckets leave while the pass goes on. Install it in the model's store ([`ParamStore::set_layer_hook`]),
    /// then call [`flush`](Self::flush) after the pass.
    pub fn hook(&mut self, scale: f32) -> LayerHook {
        lock(&self.stream).scale = scale;
        let stream = self.stream.clone();
        LayerHook::new(Box::new(move |_infos: &[ParamInfo], grads: &mut [f32], li: usize| {
            lock(&stream).layer_done(grads, li)
        }))
    }

    /// After this rank's backward pass: sends the buckets that have not left yet, taking the gradients out of
    /// the store (they are left zero).
    pub fn flush(&mut self, store: &mut ParamStore) {
        let mut s = lock(&self.stream);
        while s.next < s.plan.buckets.len() {
            s.send_bucket(Some(&mut store.grads));
        }
    }

    /// Keeps this rank's loss of the current round (its gradient has left) until the round ends.
    pub fn hold(&mut self, loss: Option<f64>) {
        if loss.is_some() {
            self.pending = loss;
        }
    }

    /// Waits for the replies of every job sent.
    fn drain(&mut self) -> crate::Result<Vec<Reply>> {
        let mut s = lock(&self.stream);
        let n = std::mem::take(&mut s.in_flight);
        let broken = || TrainError::Args("the gradient exchange thread stopped".into());
        if s.broken {
            return Err(broken());
        }
        match (&mut s.link, &self.replies) {
            (Link::Inline(_, replies), _) => Ok(std::mem::take(replies)),
            (Link::Thread(_), Some(rx)) => (0..n).map(|_| rx.recv().map_err(|_| broken())).collect(),
            (Link::Thread(_), None) | (Link::Closed, _) => Err(broken()),
        }
    }

    /// Ends a round in which this rank trained a micro-batch with loss `loss` (given here or held; its
    /// gradient has been flushed) or none. The buckets are summed by their owners in rank order; returns the
    /// active ranks' losses in rank order.
    pub fn round(&mut self, loss: Option<f64>) -> crate::Result<Vec<f64>> {
        let loss = loss.or(self.pending.take());
        let t = Instant::now();
        {
            // A rank without a micro-batch still takes part in every bucket's exchange.
            let mut s = lock(&self.stream);
            while s.next < s.plan.buckets.len() {
                s.send_bucket(None);
            }
        }
        let replies = self.drain()?;
        {
            let mut s = lock(&self.stream);
            s.free.extend(replies.into_iter().filter_map(|r| match r {
                Reply::Sent(v) => Some(v),
                Reply::Gathered(_) => None,
            }));
        }
        // Also where the ranks meet: the slowest one's micro-batch shows here.
        let flags = self.world.all_gather_f64(&[loss.is_some() as u8 as f64, loss.unwrap_or(0.0)]);
        self.exposed_secs += t.elapsed().as_secs_f64();
        let n = self.world.size();
        Ok((0..n).filter(|&k| flags[2 * k] != 0.0).map(|k| flags[2 * k + 1]).collect())
    }

    /// Ends a window: the sum on every rank (packed layout), and the owned chunks zeroed for the next window.
    pub fn finish(&mut self) -> crate::Result<&[f32]> {
        let t = Instant::now();
        let full = std::mem::take(&mut self.full);
        lock(&self.stream).send(Job::Finish(full));
        for r in self.drain()? {
            if let Reply::Gathered(v) = r {
                self.full = v;
            }
        }
        self.exposed_secs += t.elapsed().as_secs_f64();
        Ok(&self.full)
    }
}

impl Drop for Reducer {
    fn drop(&mut self) {
        let idle = {
            let mut s = lock(&self.stream);
            // Closing the channel ends the thread once its queue is done.
            s.link = Link::Closed;
            s.in_flight == 0
        };
        // A thread still inside a collective (this rank stopped on an error mid-round) may never return: leave
        // it, the process ends (MPI jobs abort on an error).
        if let (true, Some(t)) = (idle, self.thread.take()) {
            let _ = t.join();
        }
    }
}

/// Locks a mutex, also after a panic elsewhere (the data is plain numbers).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, offset: usize, len: usize, requires_grad: bool) -> ParamInfo {
        ParamInfo { name: name.into(), offset, shape: vec![len], decay: true, requires_grad }
    }

    #[test]
    fn buckets_follow_the_backward_order_and_scatter_back() {
        let infos = [
            info("embeddings.word_embeddings.weight", 0, 10, true),
            info("encoder.layer.0.attention.weight", 10, 4, true),
            info("encoder.layer.0.output.bias", 14, 2, false),
            info("encoder.layer.1.attention.weight", 16, 4, true),
            info("encoder.layer.1.output.bias", 20, 2, true),
            info("classifier.weight", 22, 3, true),
        ];
        // Packed: embeddings 0..10, layer 0 10..14, layer 1 14..18 and 18..20, classifier 20..23.
        let plan = Plan::new(&infos, 5);
        assert_eq!(plan.len, 23);
        let got: Vec<(Vec<Range<usize>>, Option<usize>)> =
            plan.buckets.iter().map(|b| (b.packed.clone(), b.ready)).collect();
        let layer0: Vec<Range<usize>> = std::iter::once(10..14).collect();
        assert_eq!(got, vec![(vec![18..20, 14..18], Some(1)), (layer0, Some(0)), (vec![20..23, 0..10], None)]);
        assert_eq!(plan.buckets[0].store, vec![20..22, 16..20]);
        // A cap beyond the model: the layers in one bucket, leaving after layer 0, the rest after the pass.
        let big = Plan::new(&infos, 1 << 20);
        let got: Vec<Option<usize>> = big.buckets.iter().map(|b| b.ready).collect();
        assert_eq!(got, vec![Some(0), None]);
        // Scatter: the bucket's values at positions 1..5 land in their packed places.
        let mut full = vec![0.0; 23];
        plan.buckets[0].scatter(1..5, &[1.0, 2.0, 3.0, 4.0], &mut full);
        assert_eq!(&full[14..20], &[2.0, 3.0, 4.0, 0.0, 0.0, 1.0]);
        // Each rank's owned chunks: bucket lengths 6, 4, 13 over 2 ranks.
        assert_eq!(plan.owned_layout(2, 0), (vec![0, 3, 5], 11));
        assert_eq!(plan.owned_layout(2, 1), (vec![0, 3, 5], 12));
    }
}
