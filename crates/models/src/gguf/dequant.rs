//! Dequantisation to f32, block by block, exactly as `gguf/quants.py` and llama.cpp's `ggml-quants.c` define
//! the layouts. Products are evaluated in the same order as the reference (`(d * scale) * q - d_min * m`) with
//! no fused multiply-add, so results are bit-identical.

use half::f16;
use rayon::prelude::*;

use super::reader::GgmlType;

/// Why a tensor could not be dequantised.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DequantError {
    #[error("dequantising {0:?} is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K)")]
    Unsupported(GgmlType),
    #[error("{ty:?} data of {got} bytes does not hold {n_elements} elements ({expected} bytes expected)")]
    Length { ty: GgmlType, n_elements: usize, expected: usize, got: usize },
}

/// Tensors with at least this many elements are dequantised on the rayon pool.
const PARALLEL_MIN: usize = 1 << 16;
/// Blocks per parallel task: big enough to amortise scheduling, small enough to balance 30-layer models.
const BLOCKS_PER_TASK: usize = 512;

/// Dequantises `n_elements` values of type `ty` from `bytes` (which must be exactly their encoded size).
pub fn dequantize(ty: GgmlType, bytes: &[u8], n_elements: usize) -> Result<Vec<f32>, DequantError> {
    let (block, type_size) = ty.block_layout();
    let expected = if n_elements.is_multiple_of(block) { (n_elements / block).checked_mul(type_size) } else { None };
    if expected != Some(bytes.len()) {
        return Err(DequantError::Length {
            ty,
            n_elements,
            expected: expected.unwrap_or(usize::MAX),
            got: bytes.len(),
        });
    }
    let f: fn(&[u8], &mut [f32]) = match ty {
        GgmlType::F32 => f32_block,
        GgmlType::F16 => f16_block,
        GgmlType::BF16 => bf16_block,
        GgmlType::Q8_0 => q8_0_block,
        GgmlType::Q4_0 => q4_0_block,
        GgmlType::Q4_1 => q4_1_block,
        GgmlType::Q4_K => q4_k_block,
        GgmlType::Q6_K => q6_k_block,
        other => return Err(DequantError::Unsupported(other)),
    };
    let mut out = vec![0f32; n_elements];
    // Scalar types are decoded 1024 elements per call (the last call may be shorter; their decoders take any
    // length) to keep the per-call overhead low. Quantised lengths were checked above, so their chunks are whole.
    let (block, type_size) = if block == 1 { (1024, 1024 * type_size) } else { (block, type_size) };
    if n_elements >= PARALLEL_MIN {
        out.par_chunks_mut(block * BLOCKS_PER_TASK)
            .zip(bytes.par_chunks(type_size * BLOCKS_PER_TASK))
            .for_each(|(o, b)| o.chunks_mut(block).zip(b.chunks(type_size)).for_each(|(o, b)| f(b, o)));
    } else {
        out.chunks_mut(block).zip(bytes.chunks(type_size)).for_each(|(o, b)| f(b, o));
    }
    Ok(out)
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn f32_block(b: &[u8], o: &mut [f32]) {
    for (o, c) in o.iter_mut().zip(b.chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

fn f16_block(b: &[u8], o: &mut [f32]) {
    for (o, c) in o.iter_mut().zip(b.chunks_exact(2)) {
        *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
    }
}

fn bf16_block(b: &[u8], o: &mut [f32]) {
    for (o, c) in o.iter_mut().zip(b.chunks_exact(2)) {
        *o = f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16);
    }
}

/// `block_q8_0`: f16 scale, 32 × i8.
fn q8_0_block(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    for (o, &q) in o.iter_mut().zip(&b[2..34]) {
        *o = f32::from(q as i8) * d;
    }
}

/// `block_q4_0`: f16 scale, 16 bytes of nibbles; low nibbles are elements 0..16, high nibbles 16..32; q - 8.
fn q4_0_block(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    let (lo, hi) = o.split_at_mut(16);
    for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[2..18]) {
        *l = d * f32::from((q & 0x0F) as i8 - 8);
        *h = d * f32::from((q >> 4) as i8 - 8);
    }
}

/// `block_q4_1`: f16 scale, f16 min, 16 bytes of nibbles; d * q + m.
fn q4_1_block(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let (lo, hi) = o.split_at_mut(16);
    for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[4..20]) {
        *l = d * f32::from(q & 0x0F) + m;
        *h = d * f32::from(q >> 4) + m;
    }
}

/// The 8 six-bit scales and mins packed in 12 bytes (`get_scale_min_k4`).
fn q4_k_scale_min(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 0x3F;
        mn[j] = s[j + 4] & 0x3F;
        sc[j + 4] = (s[j + 8] & 0x0F) | ((s[j] >> 2) & 0x30);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30);
    }
    (sc, mn)
}

/// `block_q4_K`: f16 d, f16 dmin, 12 bytes of scales/mins, 128 bytes of nibbles for 256 elements in 8
/// sub-blocks of 32; each 32 bytes give one sub-block from the low nibbles and the next from the high ones.
fn q4_k_block(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let (sc, mn) = q4_k_scale_min(&b[4..16]);
    let qs = &b[16..144];
    for i in 0..4 {
        let q = &qs[32 * i..32 * i + 32];
        let (d1, m1) = (d * f32::from(sc[2 * i]), dmin * f32::from(mn[2 * i]));
        let (d2, m2) = (d * f32::from(sc[2 * i + 1]), dmin * f32::from(mn[2 * i + 1]));
        let y = &mut o[64 * i..64 * i + 64];
        for l in 0..32 {
            y[l] = d1 * f32::from(q[l] & 0x0F) - m1;
            y[l + 32] = d2 * f32::from(q[l] >> 4) - m2;
        }
    }
}

/// `block_q6_K`: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 i8 scales, f16 d; q - 32.
fn q6_k_block(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 208);
    let scales = &b[192..208];
    for h in 0..2 {
        let ql = &b[64 * h..64 * h + 64];
        let qh = &b[128 + 32 * h..128 + 32 * h + 32];
        let sc = |k: usize| d * f32::from(scales[8 * h + k] as i8);
        let y = &mut o[128 * h..128 * h + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i8 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            let q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) << 4)) as i8 - 32;
            y[l] = sc(is) * f32::from(q1);
            y[l + 32] = sc(is + 2) * f32::from(q2);
            y[l + 64] = sc(is + 4) * f32::from(q3);
            y[l + 96] = sc(is + 6) * f32::from(q4);
        }
    }
}
