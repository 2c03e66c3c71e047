//! The GGUF container: header, metadata key/values, tensor infos and the aligned data section.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::dequant::dequantize;
use super::GgufError;

/// `GGUF` read as a little-endian u32.
pub const GGUF_MAGIC: u32 = 0x4655_4747;
/// Data-section alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most 4 dimensions (`GGML_MAX_DIMS`).
const MAX_DIMS: usize = 4;
/// Arrays of arrays deeper than this are rejected: real files nest at most once, and the limit keeps a hostile
/// file from exhausting the stack.
const MAX_NESTING: usize = 8;

/// Tensor encodings (`GGMLQuantizationType` in `gguf/constants.py`). All are recognised; which ones can be
/// dequantised is up to [`dequantize`].
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
    NVFP4,
    Q1_0,
}

const QK_K: usize = 256;

impl GgmlType {
    /// The type for its on-disk id, None when the id is unknown.
    pub fn from_raw(raw: u32) -> Option<Self> {
        use GgmlType::*;
        Some(match raw {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            15 => Q8_K,
            16 => IQ2_XXS,
            17 => IQ2_XS,
            18 => IQ3_XXS,
            19 => IQ1_S,
            20 => IQ4_NL,
            21 => IQ3_S,
            22 => IQ2_S,
            23 => IQ4_XS,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            29 => IQ1_M,
            30 => BF16,
            34 => TQ1_0,
            35 => TQ2_0,
            39 => MXFP4,
            40 => NVFP4,
            41 => Q1_0,
            _ => return None,
        })
    }

    /// The on-disk id.
    pub fn raw(self) -> u32 {
        use GgmlType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2_K => 10,
            Q3_K => 11,
            Q4_K => 12,
            Q5_K => 13,
            Q6_K => 14,
            Q8_K => 15,
            IQ2_XXS => 16,
            IQ2_XS => 17,
            IQ3_XXS => 18,
            IQ1_S => 19,
            IQ4_NL => 20,
            IQ3_S => 21,
            IQ2_S => 22,
            IQ4_XS => 23,
            I8 => 24,
            I16 => 25,
            I32 => 26,
            I64 => 27,
            F64 => 28,
            IQ1_M => 29,
            BF16 => 30,
            TQ1_0 => 34,
            TQ2_0 => 35,
            MXFP4 => 39,
            NVFP4 => 40,
            Q1_0 => 41,
        }
    }

    /// (elements per block, bytes per block): `GGML_QUANT_SIZES`.
    pub fn block_layout(self) -> (usize, usize) {
        use GgmlType::*;
        match self {
            F32 => (1, 4),
            F16 => (1, 2),
            Q4_0 => (32, 2 + 16),
            Q4_1 => (32, 2 + 2 + 16),
            Q5_0 => (32, 2 + 4 + 16),
            Q5_1 => (32, 2 + 2 + 4 + 16),
            Q8_0 => (32, 2 + 32),
            Q8_1 => (32, 4 + 4 + 32),
            Q2_K => (QK_K, 2 + 2 + QK_K / 16 + QK_K / 4),
            Q3_K => (QK_K, 2 + QK_K / 4 + QK_K / 8 + 12),
            Q4_K => (QK_K, 2 + 2 + QK_K / 2 + 12),
            Q5_K => (QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12),
            Q6_K => (QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16),
            Q8_K => (QK_K, 4 + QK_K + QK_K / 8),
            IQ2_XXS => (QK_K, 2 + QK_K / 4),
            IQ2_XS => (QK_K, 2 + QK_K / 4 + QK_K / 32),
            IQ3_XXS => (QK_K, 2 + QK_K / 4 + QK_K / 8),
            IQ1_S => (QK_K, 2 + QK_K / 8 + QK_K / 16),
            IQ4_NL => (32, 2 + 16),
            IQ3_S => (QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4),
            IQ2_S => (QK_K, 2 + QK_K / 4 + QK_K / 16),
            IQ4_XS => (QK_K, 2 + 2 + QK_K / 2 + QK_K / 64),
            I8 => (1, 1),
            I16 => (1, 2),
            I32 => (1, 4),
            I64 => (1, 8),
            F64 => (1, 8),
            IQ1_M => (QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32),
            BF16 => (1, 2),
            TQ1_0 => (QK_K, 2 + 4 * 13),
            TQ2_0 => (QK_K, 2 + 64),
            MXFP4 => (32, 1 + 16),
            NVFP4 => (64, 4 + 32),
            Q1_0 => (128, 2 + 16),
        }
    }
}

/// A scalar or array metadata value (`GGUFValueType`).
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(MetaArray),
}

/// A homogeneous metadata array; arrays of arrays hold each inner array with its own element type.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<MetaArray>),
}

impl MetaArray {
    pub fn len(&self) -> usize {
        match self {
            MetaArray::U8(v) => v.len(),
            MetaArray::I8(v) => v.len(),
            MetaArray::U16(v) => v.len(),
            MetaArray::I16(v) => v.len(),
            MetaArray::U32(v) => v.len(),
            MetaArray::I32(v) => v.len(),
            MetaArray::U64(v) => v.len(),
            MetaArray::I64(v) => v.len(),
            MetaArray::F32(v) => v.len(),
            MetaArray::F64(v) => v.len(),
            MetaArray::Bool(v) => v.len(),
            MetaArray::String(v) => v.len(),
            MetaArray::Array(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as i64 when they are integers of any width (token types are i32 in practice).
    pub fn to_i64s(&self) -> Option<Vec<i64>> {
        Some(match self {
            MetaArray::U8(v) => v.iter().map(|&x| i64::from(x)).collect(),
            MetaArray::I8(v) => v.iter().map(|&x| i64::from(x)).collect(),
            MetaArray::U16(v) => v.iter().map(|&x| i64::from(x)).collect(),
            MetaArray::I16(v) => v.iter().map(|&x| i64::from(x)).collect(),
            MetaArray::U32(v) => v.iter().map(|&x| i64::from(x)).collect(),
            MetaArray::I32(v) => v.iter().map(|&x| i64::from(x)).collect(),
            MetaArray::I64(v) => v.clone(),
            MetaArray::U64(v) => v.iter().map(|&x| i64::try_from(x).ok()).collect::<Option<_>>()?,
            _ => return None,
        })
    }
}

impl MetaValue {
    /// Any integer type as u64 (negative values give None).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(x) => Some(u64::from(x)),
            MetaValue::U16(x) => Some(u64::from(x)),
            MetaValue::U32(x) => Some(u64::from(x)),
            MetaValue::U64(x) => Some(x),
            MetaValue::I8(x) => u64::try_from(x).ok(),
            MetaValue::I16(x) => u64::try_from(x).ok(),
            MetaValue::I32(x) => u64::try_from(x).ok(),
            MetaValue::I64(x) => u64::try_from(x).ok(),
            _ => None,
        }
    }

    /// F32 or F64 as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(x) => Some(f64::from(x)),
            MetaValue::F64(x) => Some(x),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&MetaArray> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The type's name as in `GGUFValueType`, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            MetaValue::U8(_) => "UINT8",
            MetaValue::I8(_) => "INT8",
            MetaValue::U16(_) => "UINT16",
            MetaValue::I16(_) => "INT16",
            MetaValue::U32(_) => "UINT32",
            MetaValue::I32(_) => "INT32",
            MetaValue::U64(_) => "UINT64",
            MetaValue::I64(_) => "INT64",
            MetaValue::F32(_) => "FLOAT32",
            MetaValue::F64(_) => "FLOAT64",
            MetaValue::Bool(_) => "BOOL",
            MetaValue::String(_) => "STRING",
            MetaValue::Array(_) => "ARRAY",
        }
    }
}

/// One tensor's info: `dims` in GGUF order (`ne[0]`, the innermost dimension, first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    pub n_elements: usize,
    pub n_bytes: usize,
}

impl TensorInfo {
    /// The row-major shape (outermost first), as PyTorch and the engine use it: `dims` reversed.
    pub fn shape(&self) -> Vec<usize> {
        // Every dim fits in usize: their product was checked when the file was read.
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// A parsed, validated GGUF file; tensor data stays in the mapping until dequantised.
pub struct GgufFile {
    path: PathBuf,
    bytes: Bytes,
    version: u32,
    metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_offset: usize,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .finish()
    }
}

/// Bounds-checked little-endian reads; errors are plain messages that the caller attaches a key or tensor to.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "truncated: {what} needs {n} bytes at offset {}, but the file ends at {}",
                self.pos,
                self.buf.len()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let len = self.u64(what)?;
        if len > self.remaining() as u64 {
            return Err(format!(
                "{what}: string length {len} at offset {} runs past the end of the file ({} bytes left)",
                self.pos - 8,
                self.remaining()
            ));
        }
        let bytes = self.take(len as usize, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| format!("{what}: invalid UTF-8 ({e})"))
    }

    /// Checks that `count` items of at least `min_size` bytes each can fit in what is left of the file, so a
    /// vector of that capacity is never larger than the file implies.
    fn check_count(&self, count: u64, min_size: usize, what: &str) -> Result<usize, String> {
        let left = self.remaining() as u64;
        if count.checked_mul(min_size as u64).is_none_or(|need| need > left) {
            return Err(format!(
                "{what}: count {count} needs at least {min_size} bytes each, but only {left} bytes are left in the file"
            ));
        }
        Ok(count as usize)
    }
}

const TYPE_NAMES: [&str; 13] = [
    "UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32", "BOOL", "STRING", "ARRAY", "UINT64", "INT64",
    "FLOAT64",
];

/// Smallest encoded size of one value of a `GGUFValueType`.
fn min_value_size(vtype: u32) -> Result<usize, String> {
    Ok(match vtype {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        8 => 8,
        9 => 12,
        _ => return Err(format!("unknown value type {vtype}")),
    })
}

fn read_value(c: &mut Cursor<'_>, vtype: u32, depth: usize) -> Result<MetaValue, String> {
    let w = "value";
    Ok(match vtype {
        0 => MetaValue::U8(c.array::<1>(w)?[0]),
        1 => MetaValue::I8(i8::from_le_bytes(c.array(w)?)),
        2 => MetaValue::U16(u16::from_le_bytes(c.array(w)?)),
        3 => MetaValue::I16(i16::from_le_bytes(c.array(w)?)),
        4 => MetaValue::U32(u32::from_le_bytes(c.array(w)?)),
        5 => MetaValue::I32(i32::from_le_bytes(c.array(w)?)),
        6 => MetaValue::F32(f32::from_le_bytes(c.array(w)?)),
        7 => MetaValue::Bool(c.array::<1>(w)?[0] != 0),
        8 => MetaValue::String(c.string("string value")?),
        9 => MetaValue::Array(read_array(c, depth + 1)?),
        10 => MetaValue::U64(u64::from_le_bytes(c.array(w)?)),
        11 => MetaValue::I64(i64::from_le_bytes(c.array(w)?)),
        12 => MetaValue::F64(f64::from_le_bytes(c.array(w)?)),
        _ => return Err(format!("unknown value type {vtype}")),
    })
}

fn read_array(c: &mut Cursor<'_>, depth: usize) -> Result<MetaArray, String> {
    if depth > MAX_NESTING {
        return Err(format!("arrays nested deeper than {MAX_NESTING} levels"));
    }
    let itype = c.u32("array element type")?;
    let count = c.u64("array length")?;
    let min = min_value_size(itype).map_err(|e| format!("array element type: {e}"))?;
    let what = format!("array of {}", TYPE_NAMES[itype as usize]);
    let n = c.check_count(count, min, &what)?;
    macro_rules! fixed {
        ($variant:ident, $t:ty) => {{
            let size = std::mem::size_of::<$t>();
            let raw = c.take(n * size, &what)?;
            MetaArray::$variant(
                raw.chunks_exact(size)
                    .map(|ch| {
                        let mut a = [0u8; std::mem::size_of::<$t>()];
                        a.copy_from_slice(ch);
                        <$t>::from_le_bytes(a)
                    })
                    .collect(),
            )
        }};
    }
    Ok(match itype {
        0 => MetaArray::U8(c.take(n, &what)?.to_vec()),
        1 => fixed!(I8, i8),
        2 => fixed!(U16, u16),
        3 => fixed!(I16, i16),
        4 => fixed!(U32, u32),
        5 => fixed!(I32, i32),
        6 => fixed!(F32, f32),
        7 => MetaArray::Bool(c.take(n, &what)?.iter().map(|&b| b != 0).collect()),
        8 => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push(c.string(&format!("string {i} of the array"))?);
            }
            MetaArray::String(v)
        }
        9 => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(read_array(c, depth + 1)?);
            }
            MetaArray::Array(v)
        }
        10 => fixed!(U64, u64),
        11 => fixed!(I64, i64),
        12 => fixed!(F64, f64),
        _ => return Err(format!("unknown value type {itype}")),
    })
}

impl GgufFile {
    /// Memory-maps and parses `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let io = |source| GgufError::Io { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let bytes = if len == 0 {
            Bytes::Owned(Vec::new())
        } else {
            // SAFETY: the mapping is read-only. As with every memory-mapped reader, another process truncating
            // or rewriting the file while it is open is outside what this loader can defend against.
            Bytes::Mapped(unsafe { Mmap::map(&file) }.map_err(io)?)
        };
        Self::parse(path.to_path_buf(), bytes)
    }

    /// Parses an in-memory file; `path` only names it in errors.
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self, GgufError> {
        Self::parse(path.into(), Bytes::Owned(bytes))
    }

    fn parse(path: PathBuf, bytes: Bytes) -> Result<Self, GgufError> {
        let format = |message: String| GgufError::Format { path: path.clone(), message };
        let mut c = Cursor { buf: &bytes, pos: 0 };
        let magic = c.u32("magic").map_err(format)?;
        if magic != GGUF_MAGIC {
            return Err(format(format!("not a GGUF file (magic {:?})", magic.to_le_bytes())));
        }
        let version = c.u32("version").map_err(format)?;
        if version & 0xFFFF == 0 && version != 0 {
            return Err(format(format!("big-endian GGUF (version field {version:#x}) is not supported")));
        }
        if version != 2 && version != 3 {
            return Err(format(format!("GGUF version {version} is not supported (only 2 and 3)")));
        }
        let tensor_count = c.u64("tensor count").map_err(format)?;
        let kv_count = c.u64("metadata count").map_err(format)?;
        // A key/value takes at least 13 bytes (key length, type, one-byte value), a tensor info at least 24.
        let kv_count = c.check_count(kv_count, 13, "metadata key/values").map_err(format)?;
        let tensor_count = c.check_count(tensor_count, 24, "tensor infos").map_err(format)?;

        let mut metadata = BTreeMap::new();
        for i in 0..kv_count {
            let key = c.string(&format!("key of metadata entry {i}")).map_err(format)?;
            let kerr = |message: String| GgufError::Key { path: path.clone(), key: key.clone(), message };
            let vtype = c.u32("value type").map_err(kerr)?;
            let value = read_value(&mut c, vtype, 0).map_err(kerr)?;
            if metadata.contains_key(&key) {
                return Err(kerr("duplicate key".into()));
            }
            metadata.insert(key, value);
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(MetaValue::U32(a)) if a.is_power_of_two() => u64::from(*a),
            Some(v) => {
                return Err(GgufError::Key {
                    path,
                    key: "general.alignment".into(),
                    message: format!("must be a non-zero power of two UINT32, got {v:?}"),
                })
            }
        };

        let mut infos = Vec::with_capacity(tensor_count);
        for i in 0..tensor_count {
            let name = c.string(&format!("name of tensor {i}")).map_err(format)?;
            let terr = |message: String| GgufError::Tensor { path: path.clone(), tensor: name.clone(), message };
            let n_dims = c.u32("dimension count").map_err(terr)? as usize;
            if n_dims > MAX_DIMS {
                return Err(terr(format!("{n_dims} dimensions, at most {MAX_DIMS} are allowed")));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(c.u64("dimension").map_err(terr)?);
            }
            let raw_type = c.u32("type").map_err(terr)?;
            let offset = c.u64("data offset").map_err(terr)?;
            let ggml_type =
                GgmlType::from_raw(raw_type).ok_or_else(|| terr(format!("unknown ggml type {raw_type}")))?;
            infos.push((name, dims, ggml_type, offset));
        }

        let end = c.pos as u64;
        let data_offset = end.div_ceil(alignment) * alignment;
        let file_len = bytes.len() as u64;
        let mut tensors: Vec<TensorInfo> = Vec::with_capacity(infos.len());
        let mut seen = std::collections::HashSet::with_capacity(infos.len());
        for (name, dims, ggml_type, offset) in infos {
            let terr = |message: String| GgufError::Tensor { path: path.clone(), tensor: name.clone(), message };
            if !seen.insert(name.clone()) {
                return Err(terr("duplicate tensor name".into()));
            }
            // No ggml type packs more than 8 elements into a byte, so a larger count cannot be backed by the file
            // (the exact byte range is checked below); this also keeps the count within usize.
            let n_elements = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n <= file_len.saturating_mul(8) && usize::try_from(n).is_ok())
                .ok_or_else(|| terr(format!("dims {dims:?} overflow or exceed what the file can hold")))?;
            let (block, type_size) = ggml_type.block_layout();
            let ne0 = dims.first().copied().unwrap_or(1);
            if ne0 % block as u64 != 0 {
                return Err(terr(format!(
                    "innermost dimension {ne0} is not a multiple of the {ggml_type:?} block size {block}"
                )));
            }
            let n_bytes = (n_elements / block as u64)
                .checked_mul(type_size as u64)
                .ok_or_else(|| terr(format!("dims {dims:?}: byte size overflows")))?;
            if offset % alignment != 0 {
                return Err(terr(format!("data offset {offset} is not a multiple of the alignment {alignment}")));
            }
            let start = data_offset.checked_add(offset);
            if start.and_then(|s| s.checked_add(n_bytes)).is_none_or(|e| e > file_len) {
                return Err(terr(format!(
                    "data ({n_bytes} bytes at offset {offset} of the data section, which starts at {data_offset}) \
                     runs past the end of the file ({file_len} bytes)"
                )));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
                n_elements: n_elements as usize,
                n_bytes: n_bytes as usize,
            });
        }

        Ok(GgufFile { path, bytes, version, metadata, tensors, alignment, data_offset: data_offset as usize })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Byte offset of the data section in the file.
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }

    pub fn metadata(&self) -> &BTreeMap<String, MetaValue> {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor. Infos from [`GgufFile::tensors`] were bounds-checked when the file was read;
    /// an info built by hand is checked here.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> Result<&[u8], GgufError> {
        let range = usize::try_from(info.offset)
            .ok()
            .and_then(|o| self.data_offset.checked_add(o))
            .and_then(|start| Some(start..start.checked_add(info.n_bytes)?));
        range.and_then(|r| self.bytes.get(r)).ok_or_else(|| GgufError::Tensor {
            path: self.path.clone(),
            tensor: info.name.clone(),
            message: format!("{} bytes at data offset {} are outside the file", info.n_bytes, info.offset),
        })
    }

    /// Dequantises a tensor to f32 in GGUF element order (row-major for [`TensorInfo::shape`]).
    pub fn dequantize(&self, info: &TensorInfo) -> Result<Vec<f32>, GgufError> {
        dequantize(info.ggml_type, self.tensor_bytes(info)?, info.n_elements).map_err(|e| GgufError::Tensor {
            path: self.path.clone(),
            tensor: info.name.clone(),
            message: e.to_string(),
        })
    }

    pub(crate) fn key_err(&self, key: &str, message: impl Into<String>) -> GgufError {
        GgufError::Key { path: self.path.clone(), key: key.into(), message: message.into() }
    }

    /// An unsigned integer key of any width; Err when present with another type.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.key_err(key, format!("expected a non-negative integer, got {}", v.type_name()))),
        }
    }

    /// A float key (FLOAT32 or FLOAT64).
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.key_err(key, format!("expected a float, got {}", v.type_name()))),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.key_err(key, format!("expected a string, got {}", v.type_name()))),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.key_err(key, format!("expected a bool, got {}", v.type_name()))),
        }
    }

    pub fn get_array(&self, key: &str) -> Result<Option<&MetaArray>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_array()
                .map(Some)
                .ok_or_else(|| self.key_err(key, format!("expected an array, got {}", v.type_name()))),
        }
    }
}
