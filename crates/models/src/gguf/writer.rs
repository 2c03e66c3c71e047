//! GGUF writing.
//!
//! - [`GgufWriter`]: a minimal in-memory writer for small files in tests and tools. It writes what it is given
//!   without validation, so tests can also build malformed files (unknown types, bad offsets, duplicate names)
//!   on purpose.
//! - [`write_gguf`]: the validating, streaming writer used by `finetune export`: the header and tensor infos
//!   first, then each tensor's bytes as a callback produces them (one tensor in memory at a time), every data
//!   section aligned to `general.alignment` (32 by default), sizes computed from the dims and type and checked
//!   before anything is written.
//! - [`encode_f16`], [`quantize_q8_0`]: the F16 and Q8_0 encodings, bit for bit as numpy's `astype(float16)`
//!   and ggml's `quantize_row_q8_0_ref` (the `gguf` package's `gguf.quants.quantize`) produce them.

use std::io::Write;
use std::path::Path;

use half::f16;

use super::reader::{GgmlType, MetaArray, MetaValue, DEFAULT_ALIGNMENT, GGUF_MAGIC};

/// One tensor to write: `dims` in GGUF order (innermost first), `raw_type` the ggml type id, `data` its bytes.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub name: String,
    pub dims: Vec<u64>,
    pub raw_type: u32,
    pub data: Vec<u8>,
    /// Offset written in the tensor info; None places the data after the previous tensor, aligned.
    pub offset: Option<u64>,
}

/// Builds a GGUF file in memory.
#[derive(Debug, Clone)]
pub struct GgufWriter {
    pub version: u32,
    pub metadata: Vec<(String, MetaValue)>,
    pub tensors: Vec<TensorEntry>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter { version: 3, metadata: Vec::new(), tensors: Vec::new() }
    }
}

fn value_type(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(_) => 0,
        MetaValue::I8(_) => 1,
        MetaValue::U16(_) => 2,
        MetaValue::I16(_) => 3,
        MetaValue::U32(_) => 4,
        MetaValue::I32(_) => 5,
        MetaValue::F32(_) => 6,
        MetaValue::Bool(_) => 7,
        MetaValue::String(_) => 8,
        MetaValue::Array(_) => 9,
        MetaValue::U64(_) => 10,
        MetaValue::I64(_) => 11,
        MetaValue::F64(_) => 12,
    }
}

fn array_type(a: &MetaArray) -> u32 {
    match a {
        MetaArray::U8(_) => 0,
        MetaArray::I8(_) => 1,
        MetaArray::U16(_) => 2,
        MetaArray::I16(_) => 3,
        MetaArray::U32(_) => 4,
        MetaArray::I32(_) => 5,
        MetaArray::F32(_) => 6,
        MetaArray::Bool(_) => 7,
        MetaArray::String(_) => 8,
        MetaArray::Array(_) => 9,
        MetaArray::U64(_) => 10,
        MetaArray::I64(_) => 11,
        MetaArray::F64(_) => 12,
    }
}

/// Appends a length-prefixed string.
pub fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_array(out: &mut Vec<u8>, a: &MetaArray) {
    out.extend_from_slice(&array_type(a).to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        MetaArray::U8(v) => out.extend_from_slice(v),
        MetaArray::I8(v) => each!(v),
        MetaArray::U16(v) => each!(v),
        MetaArray::I16(v) => each!(v),
        MetaArray::U32(v) => each!(v),
        MetaArray::I32(v) => each!(v),
        MetaArray::U64(v) => each!(v),
        MetaArray::I64(v) => each!(v),
        MetaArray::F32(v) => each!(v),
        MetaArray::F64(v) => each!(v),
        MetaArray::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        MetaArray::String(v) => v.iter().for_each(|s| put_string(out, s)),
        MetaArray::Array(v) => v.iter().for_each(|a| put_array(out, a)),
    }
}

/// Appends a value's type id and encoding.
pub fn put_value(out: &mut Vec<u8>, v: &MetaValue) {
    out.extend_from_slice(&value_type(v).to_le_bytes());
    match v {
        MetaValue::U8(x) => out.push(*x),
        MetaValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(u8::from(*x)),
        MetaValue::String(s) => put_string(out, s),
        MetaValue::Array(a) => put_array(out, a),
    }
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_meta(&mut self, key: impl Into<String>, value: MetaValue) -> &mut Self {
        self.metadata.push((key.into(), value));
        self
    }

    /// Adds a tensor of any type from its encoded bytes; `dims` in GGUF order (innermost first).
    pub fn add_tensor(&mut self, name: impl Into<String>, dims: &[u64], ty: GgmlType, data: Vec<u8>) -> &mut Self {
        self.tensors.push(TensorEntry {
            name: name.into(),
            dims: dims.to_vec(),
            raw_type: ty.raw(),
            data,
            offset: None,
        });
        self
    }

    /// Adds an F32 tensor from a row-major `shape` (outermost first, as PyTorch); dims are stored reversed.
    pub fn add_f32(&mut self, name: impl Into<String>, shape: &[usize], values: &[f32]) -> &mut Self {
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.add_tensor(name, &dims, GgmlType::F32, data)
    }

    fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find_map(|(k, v)| match v {
                MetaValue::U32(a) if k == "general.alignment" && *a > 0 => Some(u64::from(*a)),
                _ => None,
            })
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// The encoded file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let align = self.alignment();
        let pad = |n: u64| n.div_ceil(align) * align;
        let mut out = Vec::new();
        out.extend_from_slice(&GGUF_MAGIC.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_string(&mut out, k);
            put_value(&mut out, v);
        }
        let mut next = 0u64;
        let mut placed = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            let at = next;
            next = pad(at + t.data.len() as u64);
            placed.push(at);
            put_string(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.raw_type.to_le_bytes());
            out.extend_from_slice(&t.offset.unwrap_or(at).to_le_bytes());
        }
        out.resize(pad(out.len() as u64) as usize, 0);
        let base = out.len();
        for (t, at) in self.tensors.iter().zip(placed) {
            out.resize(base + at as usize, 0);
            out.extend_from_slice(&t.data);
        }
        out
    }

    pub fn write(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.to_bytes())
    }
}

/// Errors of [`write_gguf`] and the encoders: one line naming the tensor or key.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("tensor `{tensor}`: {message}")]
    Tensor { tensor: String, message: String },
    #[error("metadata `{key}`: {message}")]
    Key { key: String, message: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A tensor's name, dims in GGUF order (innermost first) and type; its bytes come from a callback.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

impl TensorSpec {
    /// Element count, None on overflow.
    pub fn n_elements(&self) -> Option<u64> {
        self.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
    }

    /// Encoded size in bytes: the innermost dim must be a whole number of blocks (as ggml requires).
    pub fn n_bytes(&self) -> Result<u64, WriteError> {
        let err = |message: String| WriteError::Tensor { tensor: self.name.clone(), message };
        let (block, size) = self.ty.block_layout();
        let inner = self.dims.first().copied().unwrap_or(1);
        if inner % block as u64 != 0 {
            return Err(err(format!("row length {inner} is not a multiple of the {:?} block size {block}", self.ty)));
        }
        let n = self.n_elements().ok_or_else(|| err(format!("dims {:?} overflow", self.dims)))?;
        (n / block as u64).checked_mul(size as u64).ok_or_else(|| err(format!("dims {:?} overflow", self.dims)))
    }
}

/// Writes a GGUF v3 file to `out`: `metadata` in order, then the tensor infos of `tensors`, then each tensor's
/// bytes from `data(i)` (called once per tensor, in order). Names must be unique and at most 64 KiB, dims
/// 1 to 4; `data(i)` must return exactly [`TensorSpec::n_bytes`] bytes. Returns the bytes written.
pub fn write_gguf<W: Write, E>(
    out: &mut W,
    metadata: &[(String, MetaValue)],
    tensors: &[TensorSpec],
    mut data: impl FnMut(usize) -> Result<Vec<u8>, E>,
) -> Result<u64, E>
where
    E: From<WriteError>,
{
    let mut align = DEFAULT_ALIGNMENT;
    let mut seen = std::collections::HashSet::new();
    for (k, v) in metadata {
        if !seen.insert(k.as_str()) {
            return Err(WriteError::Key { key: k.clone(), message: "written twice".into() }.into());
        }
        if k == "general.alignment" {
            match v {
                MetaValue::U32(a) if *a > 0 && a.is_power_of_two() => align = u64::from(*a),
                _ => {
                    return Err(WriteError::Key { key: k.clone(), message: "must be a power-of-two u32".into() }.into())
                }
            }
        }
    }
    let pad = |n: u64| n.div_ceil(align) * align;
    let mut header = Vec::new();
    header.extend_from_slice(&GGUF_MAGIC.to_le_bytes());
    header.extend_from_slice(&3u32.to_le_bytes());
    header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    header.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_string(&mut header, k);
        put_value(&mut header, v);
    }
    let mut names = std::collections::HashSet::new();
    let mut sizes = Vec::with_capacity(tensors.len());
    let mut next = 0u64;
    for t in tensors {
        let err = |message: &str| WriteError::Tensor { tensor: t.name.clone(), message: message.into() };
        if !names.insert(t.name.as_str()) {
            return Err(err("written twice").into());
        }
        if t.name.len() > 65535 {
            return Err(err("name longer than 65535 bytes").into());
        }
        if t.dims.is_empty() || t.dims.len() > 4 {
            return Err(err("needs 1 to 4 dims").into());
        }
        let size = t.n_bytes()?;
        put_string(&mut header, &t.name);
        header.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            header.extend_from_slice(&d.to_le_bytes());
        }
        header.extend_from_slice(&t.ty.raw().to_le_bytes());
        header.extend_from_slice(&next.to_le_bytes());
        next = next.checked_add(size).map(pad).ok_or_else(|| err("file size overflows"))?;
        sizes.push(size);
    }
    header.resize(pad(header.len() as u64) as usize, 0);
    let io = |e: std::io::Error| E::from(WriteError::Io(e));
    out.write_all(&header).map_err(io)?;
    let mut written = header.len() as u64;
    let zeros = vec![0u8; align as usize];
    for (i, (t, &size)) in tensors.iter().zip(&sizes).enumerate() {
        let bytes = data(i)?;
        if bytes.len() as u64 != size {
            let message = format!("{} bytes given, {:?} with dims {:?} takes {size}", bytes.len(), t.ty, t.dims);
            return Err(WriteError::Tensor { tensor: t.name.clone(), message }.into());
        }
        out.write_all(&bytes).map_err(io)?;
        let padded = pad(size);
        out.write_all(&zeros[..(padded - size) as usize]).map_err(io)?;
        written += padded;
    }
    Ok(written)
}

/// Little-endian F32 bytes.
pub fn encode_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian F16 bytes, rounded to nearest even (numpy's `astype(np.float16)`: overflow gives ±inf).
pub fn encode_f16(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect()
}

/// Little-endian BF16 bytes, rounded to nearest even (NaN kept quiet), as `gguf.quants.quantize(.., BF16)`.
pub fn encode_bf16(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|&v| finetune_engine::bf16::to_bf16(v).to_le_bytes()).collect()
}

/// Q8_0 blocks of 32 values: an f16 scale `d = amax / 127` then 32 int8 `round(x / d)` (ties away from zero),
/// as ggml's `quantize_row_q8_0_ref` and `gguf.quants.quantize(.., Q8_0)` compute it in f32 (`x * (1 / d)`, a
/// zero block gets d = 0 and zeros). None when `values.len()` is not a multiple of 32.
pub fn quantize_q8_0(values: &[f32]) -> Option<Vec<u8>> {
    if !values.len().is_multiple_of(32) {
        return None;
    }
    let mut out = Vec::with_capacity(values.len() / 32 * 34);
    for block in values.chunks_exact(32) {
        let amax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|&x| (x * id).round() as i8 as u8));
    }
    Some(out)
}
