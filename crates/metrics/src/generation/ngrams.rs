//! Exact n-gram counting without per-n-gram allocation: symbols (characters or interned word ids) are packed
//! into a `u128` key when the order is small enough, otherwise the n-gram is keyed by its symbol slice. Counts
//! are sorted `(key, count)` runs, so matching two sides is a linear merge.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A small, fast, non-cryptographic hasher (the FxHash mixing function) for interning tokens.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut buf = [0u8; 8];
            buf.copy_from_slice(c);
            self.add(u64::from_le_bytes(buf));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl FxHasher {
    #[inline]
    fn add(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(SEED);
    }
}

pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Interns strings to dense ids (per call: ids are only compared within one sentence pair).
#[derive(Default)]
pub(crate) struct Interner<'a> {
    map: FxMap<&'a str, u32>,
}

impl<'a> Interner<'a> {
    pub(crate) fn id(&mut self, s: &'a str) -> u32 {
        let next = self.map.len() as u32;
        *self.map.entry(s).or_insert(next)
    }
}

/// Sorted n-gram counts of one order.
pub(crate) enum Counts<'a> {
    Packed(Vec<(u128, u32)>),
    Slices(Vec<(&'a [u32], u32)>),
}

fn run_length<K: Ord + Copy>(mut keys: Vec<K>) -> Vec<(K, u32)> {
    keys.sort_unstable();
    let mut out: Vec<(K, u32)> = Vec::with_capacity(keys.len());
    for k in keys {
        match out.last_mut() {
            Some((last, c)) if *last == k => *c += 1,
            _ => out.push((k, 1)),
        }
    }
    out
}

/// Counts the n-grams of order `n` of `seq`, where every symbol is below `2^bits`.
pub(crate) fn count(seq: &[u32], n: usize, bits: u32) -> Counts<'_> {
    if n == 0 || seq.len() < n {
        return Counts::Packed(Vec::new());
    }
    if n as u32 * bits <= 128 {
        let keys = seq.windows(n).map(|w| w.iter().fold(0u128, |k, &s| (k << bits) | u128::from(s))).collect();
        Counts::Packed(run_length(keys))
    } else {
        Counts::Slices(run_length(seq.windows(n).collect()))
    }
}

fn merge_max<K: Ord + Copy>(a: &[(K, u32)], b: &[(K, u32)]) -> Vec<(K, u32)> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push((a[i].0, a[i].1.max(b[j].1)));
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// Clipped matches: sum over hypothesis n-grams of `min(hyp count, ref count)`.
fn clipped<K: Ord>(hyp: &[(K, u32)], r: &[(K, u32)]) -> u64 {
    let (mut i, mut j, mut m) = (0, 0, 0u64);
    while i < hyp.len() && j < r.len() {
        match hyp[i].0.cmp(&r[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                m += u64::from(hyp[i].1.min(r[j].1));
                i += 1;
                j += 1;
            }
        }
    }
    m
}

impl<'a> Counts<'a> {
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Counts::Packed(v) => v.is_empty(),
            Counts::Slices(v) => v.is_empty(),
        }
    }

    pub(crate) fn total(&self) -> u64 {
        match self {
            Counts::Packed(v) => v.iter().map(|x| u64::from(x.1)).sum(),
            Counts::Slices(v) => v.iter().map(|x| u64::from(x.1)).sum(),
        }
    }

    /// Element-wise maximum of two count sets (multi-reference BLEU).
    pub(crate) fn max_with(self, other: &Counts<'a>) -> Counts<'a> {
        match (self, other) {
            (Counts::Packed(a), Counts::Packed(b)) => Counts::Packed(merge_max(&a, b)),
            (Counts::Slices(a), Counts::Slices(b)) => Counts::Slices(merge_max(&a, b)),
            // An empty side is always packed; the other side wins.
            (a, b) => {
                if a.is_empty() {
                    b.clone_counts()
                } else {
                    a
                }
            }
        }
    }

    fn clone_counts(&self) -> Counts<'a> {
        match self {
            Counts::Packed(v) => Counts::Packed(v.clone()),
            Counts::Slices(v) => Counts::Slices(v.clone()),
        }
    }

    /// Clipped match count of `self` (hypothesis) against `reference`.
    pub(crate) fn matches(&self, reference: &Counts<'_>) -> u64 {
        match (self, reference) {
            (Counts::Packed(a), Counts::Packed(b)) => clipped(a, b),
            (Counts::Slices(a), Counts::Slices(b)) => clipped(a, b),
            // Different representations only happen when one side is empty.
            _ => 0,
        }
    }
}
