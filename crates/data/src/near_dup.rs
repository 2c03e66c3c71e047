//! Near-duplicate detection with MinHash and locality-sensitive hashing (LSH), computed as the `datasketch`
//! Python package (2.0) computes them, so that signatures, band parameters and candidate pairs are the same:
//!
//! - each shingle's UTF-8 bytes are hashed with `sha1_hash32` (the first 4 bytes of SHA-1, little-endian);
//! - the permutations come from numpy's `RandomState(seed)` (MT19937 with numpy's legacy seeding and its masked
//!   rejection sampling for `randint`), reproduced here bit for bit;
//! - scheme `affine32` (datasketch's default since 2.0): the hash is pre-mixed with MurmurHash3's 32-bit finalizer
//!   and permuted as `a·h + b mod 2^32` (`a` odd); scheme `legacy` (datasketch before 2.0):
//!   `((a·h + b) mod (2^61 − 1)) & (2^32 − 1)`, with `a·h + b` wrapping at 2^64 as numpy's uint64 does;
//! - the Jaccard estimate is the fraction of equal signature values (`MinHash.jaccard`);
//! - `MinHashLSH(threshold, num_perm)` picks `b` bands of `r` rows minimising the false-positive plus
//!   false-negative area (weights 0.5/0.5; the integrals by Gauss–Legendre quadrature instead of scipy's `quad`);
//!   two texts are candidates when all `r` values of some band agree.
//!
//! Candidates whose estimated Jaccard similarity is below the threshold are then dropped (LSH lets some through),
//! and the rest are joined into clusters (union-find); each cluster keeps its first record.

use std::collections::HashMap;

use sha1::{Digest, Sha1};

use crate::error::{DataError, Result};

/// The permutation scheme (datasketch's `scheme` argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    /// datasketch ≥ 2.0's default.
    #[default]
    Affine32,
    /// datasketch < 2.0 (and `scheme="legacy"`).
    Legacy,
}

impl std::str::FromStr for Scheme {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "affine32" => Ok(Scheme::Affine32),
            "legacy" => Ok(Scheme::Legacy),
            _ => Err(DataError::Invalid(format!("unknown MinHash scheme {s:?} (expected affine32 or legacy)"))),
        }
    }
}

/// `datasketch.hashfunc.sha1_hash32`.
pub fn sha1_hash32(data: &[u8]) -> u32 {
    let d = Sha1::digest(data);
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

/// numpy's MT19937 as `np.random.RandomState(seed)` seeds and draws it.
struct Mt19937 {
    mt: [u32; 624],
    idx: usize,
}

impl Mt19937 {
    fn new(seed: u32) -> Self {
        let mut mt = [0u32; 624];
        mt[0] = seed;
        for i in 1..624 {
            mt[i] = 1_812_433_253u32.wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30)).wrapping_add(i as u32);
        }
        Mt19937 { mt, idx: 624 }
    }

    fn next_u32(&mut self) -> u32 {
        if self.idx >= 624 {
            for i in 0..624 {
                let y = (self.mt[i] & 0x8000_0000) | (self.mt[(i + 1) % 624] & 0x7fff_ffff);
                let mut v = self.mt[(i + 397) % 624] ^ (y >> 1);
                if y & 1 == 1 {
                    v ^= 0x9908_b0df;
                }
                self.mt[i] = v;
            }
            self.idx = 0;
        }
        let mut y = self.mt[self.idx];
        self.idx += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    fn next_u64(&mut self) -> u64 {
        let hi = u64::from(self.next_u32());
        let lo = u64::from(self.next_u32());
        (hi << 32) | lo
    }

    /// `randint(low, low + rng + 1)` for 32-bit dtypes: numpy's masked rejection sampling.
    fn bounded_u32(&mut self, rng: u32) -> u32 {
        if rng == u32::MAX {
            return self.next_u32();
        }
        let mask = mask_of(u64::from(rng)) as u32;
        loop {
            let v = self.next_u32() & mask;
            if v <= rng {
                return v;
            }
        }
    }

    /// The same for uint64 ranges wider than 32 bits.
    fn bounded_u64(&mut self, rng: u64) -> u64 {
        let mask = mask_of(rng);
        loop {
            let v = self.next_u64() & mask;
            if v <= rng {
                return v;
            }
        }
    }
}

/// The smallest all-ones mask covering `rng`.
fn mask_of(rng: u64) -> u64 {
    if rng == 0 {
        0
    } else {
        u64::MAX >> rng.leading_zeros()
    }
}

const MERSENNE_PRIME: u64 = (1 << 61) - 1;
const MAX_HASH: u64 = (1 << 32) - 1;

fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The permutations of `MinHash(num_perm, seed, scheme)`.
#[derive(Debug, Clone)]
pub struct MinHasher {
    pub scheme: Scheme,
    pub a: Vec<u64>,
    pub b: Vec<u64>,
}

impl MinHasher {
    /// `num_perm` permutations drawn as datasketch draws them from `RandomState(seed)`.
    pub fn new(num_perm: usize, seed: u32, scheme: Scheme) -> Self {
        let mut g = Mt19937::new(seed);
        let (a, b) = match scheme {
            Scheme::Legacy => {
                let mut a = Vec::with_capacity(num_perm);
                let mut b = Vec::with_capacity(num_perm);
                for _ in 0..num_perm {
                    a.push(1 + g.bounded_u64(MERSENNE_PRIME - 3));
                    b.push(g.bounded_u64(MERSENNE_PRIME - 2));
                }
                (a, b)
            }
            Scheme::Affine32 => {
                let a = (0..num_perm).map(|_| u64::from(g.bounded_u32((1 << 31) - 1)) * 2 + 1).collect();
                let b = (0..num_perm).map(|_| u64::from(g.next_u32())).collect();
                (a, b)
            }
        };
        MinHasher { scheme, a, b }
    }

    pub fn num_perm(&self) -> usize {
        self.a.len()
    }

    /// The MinHash signature of a set of shingles (`MinHash.update` with each one's UTF-8 bytes). An empty set
    /// gives the all-maximum signature, as datasketch does.
    pub fn signature<'s>(&self, shingles: impl IntoIterator<Item = &'s str>) -> Vec<u64> {
        let mut sig = vec![MAX_HASH; self.num_perm()];
        for s in shingles {
            let hv = sha1_hash32(s.as_bytes());
            match self.scheme {
                Scheme::Legacy => {
                    let hv = u64::from(hv);
                    for ((s, a), b) in sig.iter_mut().zip(&self.a).zip(&self.b) {
                        let p = (a.wrapping_mul(hv).wrapping_add(*b) % MERSENNE_PRIME) & MAX_HASH;
                        *s = (*s).min(p);
                    }
                }
                Scheme::Affine32 => {
                    let hv = fmix32(hv);
                    for ((s, a), b) in sig.iter_mut().zip(&self.a).zip(&self.b) {
                        let p = (*a as u32).wrapping_mul(hv).wrapping_add(*b as u32);
                        *s = (*s).min(u64::from(p));
                    }
                }
            }
        }
        sig
    }
}

/// `MinHash.jaccard`: the fraction of positions where two signatures agree.
pub fn jaccard_estimate(a: &[u64], b: &[u64]) -> f64 {
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / a.len().max(1) as f64
}

/// Gauss–Legendre nodes and weights on [-1, 1] (16 points).
fn gauss_legendre_16() -> ([f64; 16], [f64; 16]) {
    // Newton iteration on the Legendre polynomial; converges to machine precision in a few steps.
    let n = 16;
    let mut x = [0.0; 16];
    let mut w = [0.0; 16];
    for i in 0..n {
        let mut z = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut dp = 0.0;
        for _ in 0..100 {
            let (mut p0, mut p1) = (1.0, z);
            for k in 2..=n {
                let p2 = ((2 * k - 1) as f64 * z * p1 - (k - 1) as f64 * p0) / k as f64;
                p0 = p1;
                p1 = p2;
            }
            dp = n as f64 * (z * p1 - p0) / (z * z - 1.0);
            let dz = p1 / dp;
            z -= dz;
            if dz.abs() < 1e-16 {
                break;
            }
        }
        x[i] = z;
        w[i] = 2.0 / ((1.0 - z * z) * dp * dp);
    }
    (x, w)
}

fn integrate(f: impl Fn(f64) -> f64, lo: f64, hi: f64, gl: &([f64; 16], [f64; 16])) -> f64 {
    const PIECES: usize = 64;
    let h = (hi - lo) / PIECES as f64;
    let mut total = 0.0;
    for p in 0..PIECES {
        let mid = lo + (p as f64 + 0.5) * h;
        for (x, w) in gl.0.iter().zip(&gl.1) {
            total += w * f(mid + h / 2.0 * x);
        }
    }
    total * h / 2.0
}

/// `datasketch.lsh._optimal_param`: the (bands, rows) with `bands·rows ≤ num_perm` that minimise
/// `fp_weight·∫₀ᵗ P(candidate | s) ds + fn_weight·∫ₜ¹ (1 − P(candidate | s)) ds`, where
/// `P(candidate | s) = 1 − (1 − s^r)^b`. The first minimum in datasketch's loop order wins.
pub fn optimal_param(threshold: f64, num_perm: usize, fp_weight: f64, fn_weight: f64) -> (usize, usize) {
    let gl = gauss_legendre_16();
    let mut best = (0, 0);
    let mut min_error = f64::INFINITY;
    for b in 1..=num_perm {
        for r in 1..=num_perm / b {
            let (bi, ri) = (b as i32, r as i32);
            let fp = integrate(|s| 1.0 - (1.0 - s.powi(ri)).powi(bi), 0.0, threshold, &gl);
            let fneg = integrate(|s| (1.0 - s.powi(ri)).powi(bi), threshold, 1.0, &gl);
            let error = fp * fp_weight + fneg * fn_weight;
            if error < min_error {
                min_error = error;
                best = (b, r);
            }
        }
    }
    best
}

/// How texts become shingle sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shingles {
    /// Runs of `n` words (lowercased, split on whitespace as Python's `str.split()`), joined by one space.
    Words(usize),
    /// Runs of `n` characters of the lowercased text with whitespace runs collapsed to one space.
    Chars(usize),
}

fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

impl Shingles {
    /// The shingles of `text` (a text shorter than `n` units is one shingle; an empty text has none).
    pub fn of(&self, text: &str) -> Vec<String> {
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower.split(is_py_space).filter(|w| !w.is_empty()).collect();
        match *self {
            Shingles::Words(n) => {
                if words.is_empty() {
                    Vec::new()
                } else if words.len() < n {
                    vec![words.join(" ")]
                } else {
                    words.windows(n).map(|w| w.join(" ")).collect()
                }
            }
            Shingles::Chars(n) => {
                let joined = words.join(" ");
                let chars: Vec<(usize, char)> = joined.char_indices().collect();
                if chars.is_empty() {
                    Vec::new()
                } else if chars.len() < n {
                    vec![joined]
                } else {
                    (0..=chars.len() - n)
                        .map(|i| {
                            let start = chars[i].0;
                            let end = chars.get(i + n).map_or(joined.len(), |c| c.0);
                            joined[start..end].to_owned()
                        })
                        .collect()
                }
            }
        }
    }
}

/// Options of near-duplicate detection. Defaults: datasketch's `num_perm=128`, `seed=1`, scheme `affine32`;
/// Jaccard threshold 0.8 on word 5-grams.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NearDupOptions {
    pub shingles: Shingles,
    pub threshold: f64,
    pub num_perm: usize,
    pub seed: u32,
    pub scheme: Scheme,
}

impl Default for NearDupOptions {
    fn default() -> Self {
        NearDupOptions {
            shingles: Shingles::Words(5),
            threshold: 0.8,
            num_perm: 128,
            seed: 1,
            scheme: Scheme::Affine32,
        }
    }
}

impl NearDupOptions {
    /// Checks the options and returns the LSH (bands, rows).
    pub fn check(&self) -> Result<(usize, usize)> {
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(DataError::Invalid(format!("threshold must be in [0, 1], got {}", self.threshold)));
        }
        if self.num_perm < 2 {
            return Err(DataError::Invalid(format!("num_perm must be at least 2, got {}", self.num_perm)));
        }
        let n = match self.shingles {
            Shingles::Words(n) | Shingles::Chars(n) => n,
        };
        if n == 0 {
            return Err(DataError::Invalid("the shingle size must be at least 1".into()));
        }
        let (b, r) = optimal_param(self.threshold, self.num_perm, 0.5, 0.5);
        if b < 2 {
            return Err(DataError::Invalid(format!(
                "threshold {} with num_perm {} gives fewer than 2 LSH bands (as datasketch refuses); use more \
                 permutations or a lower threshold",
                self.threshold, self.num_perm
            )));
        }
        Ok((b, r))
    }
}

/// MinHash signatures and an LSH index over them.
pub struct NearDupIndex {
    pub opts: NearDupOptions,
    pub hasher: MinHasher,
    pub bands: usize,
    pub rows: usize,
    pub signatures: Vec<Option<Vec<u64>>>,
}

impl NearDupIndex {
    /// Signatures of `texts` (None for texts without shingles, which are never duplicates).
    pub fn new(texts: &[&str], opts: NearDupOptions) -> Result<Self> {
        let (bands, rows) = opts.check()?;
        let hasher = MinHasher::new(opts.num_perm, opts.seed, opts.scheme);
        let signatures = texts.iter().map(|t| signature_of(&hasher, &opts, t)).collect();
        Ok(NearDupIndex { opts, hasher, bands, rows, signatures })
    }

    pub fn signature(&self, text: &str) -> Option<Vec<u64>> {
        signature_of(&self.hasher, &self.opts, text)
    }

    fn band_tables(&self) -> Vec<HashMap<&[u64], Vec<usize>>> {
        let mut tables: Vec<HashMap<&[u64], Vec<usize>>> = vec![HashMap::new(); self.bands];
        for (i, sig) in self.signatures.iter().enumerate() {
            let Some(sig) = sig else { continue };
            for (band, table) in tables.iter_mut().enumerate() {
                table.entry(&sig[band * self.rows..(band + 1) * self.rows]).or_default().push(i);
            }
        }
        tables
    }

    /// Every pair (i < j) that shares a band: `MinHashLSH.query` of each text against all the others.
    pub fn candidate_pairs(&self) -> Vec<(usize, usize)> {
        let mut pairs = Vec::new();
        for table in self.band_tables() {
            for ids in table.values() {
                for (x, &i) in ids.iter().enumerate() {
                    for &j in &ids[x + 1..] {
                        pairs.push((i, j));
                    }
                }
            }
        }
        pairs.sort_unstable();
        pairs.dedup();
        pairs
    }

    /// Candidates of `sig` among the indexed texts (`MinHashLSH.query`), ascending. Builds the band tables on
    /// each call: for many queries use [`NearDupIndex::matches_of`].
    pub fn candidates(&self, sig: &[u64]) -> Vec<usize> {
        self.query(sig, &self.band_tables())
    }

    fn query(&self, sig: &[u64], tables: &[HashMap<&[u64], Vec<usize>>]) -> Vec<usize> {
        let mut out = Vec::new();
        for (band, table) in tables.iter().enumerate() {
            if let Some(ids) = table.get(&sig[band * self.rows..(band + 1) * self.rows]) {
                out.extend_from_slice(ids);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Near-duplicate clusters within the indexed texts.
    pub fn clusters(&self) -> NearDupClusters {
        let pairs = self.candidate_pairs();
        let mut uf: Vec<usize> = (0..self.signatures.len()).collect();
        fn find(uf: &mut [usize], mut x: usize) -> usize {
            while uf[x] != x {
                uf[x] = uf[uf[x]];
                x = uf[x];
            }
            x
        }
        let mut verified = 0;
        let mut sim: HashMap<(usize, usize), f64> = HashMap::new();
        for &(i, j) in &pairs {
            let (Some(a), Some(b)) = (&self.signatures[i], &self.signatures[j]) else { continue };
            let s = jaccard_estimate(a, b);
            if s >= self.opts.threshold {
                verified += 1;
                sim.insert((i, j), s);
                let (ri, rj) = (find(&mut uf, i), find(&mut uf, j));
                // The smaller index is the root, so each cluster's root is its first record.
                if ri != rj {
                    let (lo, hi) = (ri.min(rj), ri.max(rj));
                    uf[hi] = lo;
                }
            }
        }
        let mut groups: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for i in 0..uf.len() {
            let r = find(&mut uf, i);
            groups.entry(r).or_default().push(i);
        }
        let clusters: Vec<Cluster> = groups
            .into_iter()
            .filter(|(_, m)| m.len() > 1)
            .map(|(rep, members)| {
                let rs = self.signatures[rep].as_deref().unwrap_or_default();
                let others = members[1..]
                    .iter()
                    .map(|&m| {
                        let s = sim
                            .get(&(rep, m))
                            .copied()
                            .unwrap_or_else(|| jaccard_estimate(rs, self.signatures[m].as_deref().unwrap_or_default()));
                        (m, s)
                    })
                    .collect();
                Cluster { representative: rep, duplicates: others }
            })
            .collect();
        NearDupClusters { candidate_pairs: pairs.len(), verified_pairs: verified, clusters }
    }

    /// For each text of `other` (signatures computed with the same permutations), the indexed texts it nearly
    /// duplicates: `(index in other, [(index here, estimated Jaccard)])`, only those with a match.
    pub fn matches_of(&self, other: &[&str]) -> Vec<(usize, Vec<(usize, f64)>)> {
        let tables = self.band_tables();
        let mut out = Vec::new();
        for (i, t) in other.iter().enumerate() {
            let Some(sig) = self.signature(t) else { continue };
            let hits: Vec<(usize, f64)> = self
                .query(&sig, &tables)
                .into_iter()
                .filter_map(|j| {
                    let s = jaccard_estimate(&sig, self.signatures[j].as_deref()?);
                    (s >= self.opts.threshold).then_some((j, s))
                })
                .collect();
            if !hits.is_empty() {
                out.push((i, hits));
            }
        }
        out
    }
}

fn signature_of(hasher: &MinHasher, opts: &NearDupOptions, text: &str) -> Option<Vec<u64>> {
    let sh = opts.shingles.of(text);
    (!sh.is_empty()).then(|| hasher.signature(sh.iter().map(String::as_str)))
}

/// One cluster of near-duplicates: the kept record and the others with their estimated Jaccard similarity to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub representative: usize,
    pub duplicates: Vec<(usize, f64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NearDupClusters {
    /// Pairs that share an LSH band.
    pub candidate_pairs: usize,
    /// Of those, pairs whose estimated Jaccard similarity reaches the threshold.
    pub verified_pairs: usize,
    pub clusters: Vec<Cluster>,
}

impl NearDupClusters {
    /// Indices to drop: every cluster member but its representative, ascending.
    pub fn removed(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.clusters.iter().flat_map(|c| c.duplicates.iter().map(|d| d.0)).collect();
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_the_reference_sequence() {
        // The first outputs of MT19937 seeded with init_genrand(5489) (the reference implementation's default).
        let mut g = Mt19937::new(5489);
        let first: Vec<u32> = (0..3).map(|_| g.next_u32()).collect();
        assert_eq!(first, vec![3_499_211_612, 581_869_302, 3_890_346_734]);
    }

    #[test]
    fn shingles_by_words_and_chars() {
        assert_eq!(Shingles::Words(2).of("A b  C"), vec!["a b", "b c"]);
        assert_eq!(Shingles::Words(5).of("only three words"), vec!["only three words"]);
        assert!(Shingles::Words(3).of("  ").is_empty());
        assert_eq!(Shingles::Chars(3).of("Ab  cd"), vec!["ab ", "b c", " cd"]);
        assert_eq!(Shingles::Chars(3).of("é"), vec!["é"]);
    }

    #[test]
    fn identical_texts_cluster_and_different_ones_do_not() {
        let texts = [
            "the quick brown fox jumps over the lazy dog today",
            "completely unrelated words about a cat sleeping in the sun",
            "the quick brown fox jumps over the lazy dog today",
        ];
        let idx = NearDupIndex::new(&texts, NearDupOptions::default()).expect("index");
        let c = idx.clusters();
        assert_eq!(c.clusters.len(), 1);
        assert_eq!(c.clusters[0].representative, 0);
        assert_eq!(c.clusters[0].duplicates, vec![(2, 1.0)]);
        assert_eq!(c.removed(), vec![2]);
    }

    #[test]
    fn bad_options_are_refused() {
        let bad = NearDupOptions { threshold: 1.5, ..NearDupOptions::default() };
        assert!(bad.check().is_err());
        let bad = NearDupOptions { num_perm: 1, ..NearDupOptions::default() };
        assert!(bad.check().is_err());
    }
}
