//! Ranks as threads of one process, exchanging through shared memory: the data-parallel loop tested without MPI.

use std::sync::{Arc, Barrier, Mutex};

use super::Collective;

struct Shared {
    barrier: Barrier,
    slots: Mutex<Vec<Vec<u8>>>,
}

/// One rank of a group of threads; [`LocalGroup::new`] makes all of them.
pub struct LocalGroup {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
}

impl LocalGroup {
    /// `size` ranks, one for each thread that will train.
    pub fn new(size: usize) -> Vec<LocalGroup> {
        let shared = Arc::new(Shared { barrier: Barrier::new(size), slots: Mutex::new(vec![Vec::new(); size]) });
        (0..size).map(|rank| LocalGroup { rank, size, shared: shared.clone() }).collect()
    }

    /// Every rank's bytes, in rank order.
    fn exchange(&self, mine: Vec<u8>) -> Vec<Vec<u8>> {
        self.shared.slots.lock().unwrap_or_else(|e| e.into_inner())[self.rank] = mine;
        self.shared.barrier.wait();
        let all = self.shared.slots.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // Nobody writes the next exchange's slot before everyone has read this one.
        self.shared.barrier.wait();
        all
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

impl Collective for LocalGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_gather_f64(&self, values: &[f64]) -> Vec<f64> {
        let all = self.exchange(values.iter().flat_map(|x| x.to_le_bytes()).collect());
        all.iter().flat_map(|b| b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))).collect()
    }

    fn all_to_all_v(&self, send: &[f32], send_counts: &[usize], recv: &mut [f32], recv_counts: &[usize]) {
        let mut msg = f32_bytes(&send_counts.iter().map(|&c| c as f32).collect::<Vec<_>>());
        msg.extend(f32_bytes(send));
        let all = self.exchange(msg);
        let mut at = 0;
        for (k, bytes) in all.iter().enumerate() {
            let v = bytes_f32(bytes);
            let (counts, data) = v.split_at(self.size);
            let start: usize = counts[..self.rank].iter().map(|&c| c as usize).sum();
            let n = counts[self.rank] as usize;
            assert_eq!(n, recv_counts[k], "rank {k} sends {n} values, rank {} expects {}", self.rank, recv_counts[k]);
            recv[at..at + n].copy_from_slice(&data[start..start + n]);
            at += n;
        }
    }

    fn all_gather_v(&self, mine: &[f32], out: &mut [f32], counts: &[usize]) {
        let all = self.exchange(f32_bytes(mine));
        let mut at = 0;
        for (k, bytes) in all.iter().enumerate() {
            out[at..at + counts[k]].copy_from_slice(&bytes_f32(bytes));
            at += counts[k];
        }
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>) {
        let all = self.exchange(if self.rank == 0 { bytes.clone() } else { Vec::new() });
        *bytes = all[0].clone();
    }

    fn barrier(&self) {
        self.shared.barrier.wait();
    }
}
