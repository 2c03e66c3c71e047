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

    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
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
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

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

/// A packed n-gram key: `n` symbols of `bits` bits each, exact (no hashing collisions) when they fit.
pub(crate) trait Key: Copy + Eq + std::hash::Hash {
    fn pack(w: &[u32], bits: u32) -> Self;
}

impl Key for u64 {
    fn pack(w: &[u32], bits: u32) -> Self {
        w.iter().fold(0u64, |k, &s| (k << bits) | u64::from(s))
    }
}

impl Key for u128 {
    fn pack(w: &[u32], bits: u32) -> Self {
        w.iter().fold(0u128, |k, &s| (k << bits) | u128::from(s))
    }
}

/// Hash tables for one key width, reused across segments (so counting allocates nothing once warm).
#[derive(Default, Clone, Debug)]
pub(crate) struct Maps<K: Key> {
    pub(crate) reference: FxMap<K, u32>,
    pub(crate) best: FxMap<K, u32>,
}

/// Reusable tables for `u64` keys (the usual case: few distinct symbols per segment) and `u128` keys.
#[derive(Default, Clone, Debug)]
pub(crate) struct Tables {
    pub(crate) small: Maps<u64>,
    pub(crate) large: Maps<u128>,
}

/// Bits needed for symbols up to `max` (at least 1).
pub(crate) fn bits_for(max: u32) -> u32 {
    (32 - max.leading_zeros()).max(1)
}

/// Counts the order-`n` n-grams of `seq` into `map` (cleared first); returns their number.
pub(crate) fn fill<K: Key>(map: &mut FxMap<K, u32>, seq: &[u32], n: usize, bits: u32) -> u64 {
    map.clear();
    if n == 0 || seq.len() < n {
        return 0;
    }
    for w in seq.windows(n) {
        *map.entry(K::pack(w, bits)).or_insert(0) += 1;
    }
    (seq.len() - n + 1) as u64
}

/// Clipped matches `sum min(hyp count, ref count)` of the hypothesis n-grams of `seq` against the counts in
/// `reference`, which are used up in the process (one pass over the hypothesis, no hypothesis table).
pub(crate) fn consume_matches<K: Key>(reference: &mut FxMap<K, u32>, seq: &[u32], n: usize, bits: u32) -> u64 {
    if n == 0 || seq.len() < n || reference.is_empty() {
        return 0;
    }
    let mut m = 0;
    for w in seq.windows(n) {
        if let Some(c) = reference.get_mut(&K::pack(w, bits)) {
            if *c > 0 {
                *c -= 1;
                m += 1;
            }
        }
    }
    m
}
