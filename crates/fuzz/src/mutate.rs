//! A small seeded PRNG and the mutators: byte-level edits for any input, and structure-aware ones for JSON
//! (replace a value anywhere in the tree with an interesting one), line-based text and little-endian integer
//! fields of binary headers.

use serde_json::{Map, Value};

/// xorshift64* seeded through splitmix64: fast, deterministic, good enough to drive mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Integers that sit on boundaries readers get wrong.
pub const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    3,
    7,
    8,
    16,
    255,
    256,
    4096,
    65535,
    65536,
    1 << 20,
    1 << 24,
    (1 << 31) - 1,
    1 << 31,
    (1 << 32) - 1,
    1 << 32,
    1 << 40,
    1 << 53,
    (1 << 62) + 1,
    i64::MAX as u64,
    1 << 63,
    u64::MAX - 1,
    u64::MAX,
];

/// One to four byte-level edits: flip bits, overwrite with an interesting byte, insert, delete or duplicate a
/// run, splice in a piece of another seed, truncate.
pub fn bytes(rng: &mut Rng, input: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = out.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = *rng.pick(&[0u8, 0xff, 0x7f, 0x80, b'"', b'\n', b',', b'\t', b'{', b'}', b'[', b'\\']);
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                out.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                out.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                let run = out[i..i + n].to_vec();
                let at = rng.below(len + 1);
                out.splice(at..at, run);
            }
            5 => {
                let other = rng.pick(seeds);
                if !other.is_empty() {
                    let i = rng.below(other.len());
                    let n = 1 + rng.below((other.len() - i).min(128));
                    let at = rng.below(len + 1);
                    out.splice(at..at, other[i..i + n].iter().copied());
                }
            }
            6 if len > 0 => out.truncate(rng.below(len)),
            _ if len >= 8 => {
                // An interesting little-endian integer over 1, 2, 4 or 8 bytes.
                let w = *rng.pick(&[1usize, 2, 4, 8]);
                let i = rng.below(len - w + 1);
                let v = rng.pick(INTERESTING).wrapping_add(rng.below(3) as u64).wrapping_sub(1);
                out[i..i + w].copy_from_slice(&v.to_le_bytes()[..w]);
            }
            _ => {}
        }
    }
    out
}

/// A value that a field reader may not expect.
fn interesting_value(rng: &mut Rng, near: &Value) -> Value {
    match rng.below(12) {
        0 => Value::Null,
        1 => Value::Bool(rng.chance(2)),
        2 | 3 => Value::from(*rng.pick(INTERESTING)),
        4 => Value::from((*rng.pick(INTERESTING) as i64).wrapping_abs().wrapping_neg()),
        5 => Value::from(*rng.pick(&[0.5, -0.0, 1e-300, 1e300, -1e300, 3.5, f64::MAX, f64::MIN_POSITIVE])),
        6 => {
            Value::from(*rng.pick(&["", "a", "\u{0}", "é", "\u{202e}", "{{", "%}", "##", "Ġ", "[UNK]", "gelu", "F16"]))
        }
        7 => Value::Array(Vec::new()),
        8 => Value::Object(Map::new()),
        9 => match near {
            // Nudge a number by one: off-by-one sizes.
            Value::Number(n) => {
                n.as_i64().map_or(Value::Null, |v| Value::from(v.wrapping_add(rng.below(3) as i64 - 1)))
            }
            other => other.clone(),
        },
        10 => Value::Array(vec![near.clone(), near.clone()]),
        _ => Value::String("x".repeat(1 + rng.below(300))),
    }
}

/// Visits every node of `v` in order, numbering them from `*counter`.
fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count_nodes).sum(),
        Value::Object(m) => m.values().map(count_nodes).sum(),
        _ => 0,
    }
}

fn node_mut(v: &mut Value, mut k: usize) -> &mut Value {
    // Iterative descent to the k-th node in pre-order.
    let mut cur = v;
    loop {
        if k == 0 {
            return cur;
        }
        k -= 1;
        let children: Vec<usize> = match &*cur {
            Value::Array(a) => a.iter().map(count_nodes).collect(),
            Value::Object(m) => m.values().map(count_nodes).collect(),
            _ => return cur,
        };
        let mut idx = 0;
        while idx < children.len() && k >= children[idx] {
            k -= children[idx];
            idx += 1;
        }
        if idx == children.len() {
            return cur;
        }
        cur = match cur {
            Value::Array(a) => &mut a[idx],
            Value::Object(m) => m.values_mut().nth(idx).expect("child exists"),
            _ => unreachable!("only containers have children"),
        };
    }
}

/// One to three structure-aware edits of a JSON document: replace a node, delete an object key or array
/// element, duplicate an element, graft a node from another seed. Non-JSON input falls back to [`bytes`];
/// one output in eight also gets byte edits on top (syntax errors, truncation).
pub fn json(rng: &mut Rng, input: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
    let Ok(mut doc) = serde_json::from_slice::<Value>(input) else {
        return bytes(rng, input, seeds);
    };
    for _ in 0..1 + rng.below(3) {
        let n = count_nodes(&doc);
        let k = rng.below(n);
        let node = node_mut(&mut doc, k);
        match rng.below(6) {
            0..=2 => *node = interesting_value(rng, node),
            3 => match node {
                Value::Object(m) if !m.is_empty() => {
                    let key = m.keys().nth(rng.below(m.len())).cloned().expect("key");
                    m.remove(&key);
                }
                Value::Array(a) if !a.is_empty() => {
                    a.remove(rng.below(a.len()));
                }
                _ => *node = interesting_value(rng, node),
            },
            4 => match node {
                Value::Array(a) if !a.is_empty() => {
                    let e = a[rng.below(a.len())].clone();
                    for _ in 0..1 + rng.below(4) {
                        a.push(e.clone());
                    }
                }
                Value::Object(m) => {
                    m.insert(format!("k{}", rng.below(4)), Value::from(rng.below(10)));
                }
                _ => *node = interesting_value(rng, node),
            },
            _ => {
                let other = rng.pick(seeds);
                if let Ok(o) = serde_json::from_slice::<Value>(other) {
                    let m = count_nodes(&o);
                    let mut o = o;
                    *node = node_mut(&mut o, rng.below(m)).clone();
                }
            }
        }
    }
    let out = serde_json::to_vec(&doc).unwrap_or_default();
    if rng.chance(8) {
        bytes(rng, &out, seeds)
    } else {
        out
    }
}

/// Line-level edits of a text file (duplicate, drop or swap lines, add quotes, delimiters or invalid UTF-8),
/// then sometimes byte edits.
pub fn lines(rng: &mut Rng, input: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut ls: Vec<Vec<u8>> = input.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    for _ in 0..1 + rng.below(3) {
        let n = ls.len();
        let i = rng.below(n);
        match rng.below(7) {
            0 => {
                let l = ls[i].clone();
                ls.insert(rng.below(n + 1), l);
            }
            1 if n > 1 => {
                ls.remove(i);
            }
            2 => {
                let j = rng.below(n);
                ls.swap(i, j);
            }
            3 => {
                let at = rng.below(ls[i].len() + 1);
                const PIECES: [&[u8]; 9] =
                    [b"\"", b",", b"\t", b"\"\"", b" ", b"\r", b"\xff\xfe", b"\xef\xbb\xbf", b"|"];
                let piece: &[u8] = PIECES[rng.below(PIECES.len())];
                ls[i].splice(at..at, piece.iter().copied());
            }
            4 => ls.insert(i, Vec::new()),
            5 => {
                let other = rng.pick(seeds);
                let ols: Vec<&[u8]> = other.split(|&b| b == b'\n').collect();
                ls.insert(i, rng.pick(&ols).to_vec());
            }
            _ => {
                let long = vec![b'a'; 1 + rng.below(5000)];
                ls[i].extend_from_slice(&long);
            }
        }
    }
    let out = ls.join(&b'\n');
    if rng.chance(4) {
        bytes(rng, &out, seeds)
    } else {
        out
    }
}

/// Byte edits concentrated on the first `header` bytes of a binary file (where its lengths, counts, offsets
/// and types are), with interesting integers at 4- and 8-byte aligned positions.
pub fn header(rng: &mut Rng, input: &[u8], seeds: &[Vec<u8>], header: usize) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(3) {
        let h = header.min(out.len());
        match rng.below(4) {
            0 | 1 if h >= 8 => {
                let w = *rng.pick(&[4usize, 8]);
                let i = (rng.below(h - w + 1) / w) * w;
                let v = rng.pick(INTERESTING).wrapping_add(rng.below(3) as u64).wrapping_sub(1);
                out[i..i + w].copy_from_slice(&v.to_le_bytes()[..w]);
            }
            2 if h > 0 => {
                let i = rng.below(h);
                out[i] ^= 1 << rng.below(8);
            }
            _ => out = bytes(rng, &out, seeds),
        }
    }
    out
}
