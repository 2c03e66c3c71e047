//! `pytorch_model.bin` (the zip format `torch.save` writes since PyTorch 1.6) through a restricted unpickler.
//!
//! The unpickler implements the opcodes state dicts use (protocols 2–5) and resolves only the globals needed
//! to rebuild tensors: `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter`,
//! `collections.OrderedDict` and the `torch.{Float,Half,BFloat16}Storage` type markers (plus integer storage
//! markers, so that integer buffers such as `position_ids` can be recognised and skipped). Any other global is
//! refused when it is loaded, so nothing named by the file is ever executed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::rc::Rc;

use finetune_engine::{StateDict, Tensor};

use super::{is_skippable_buffer, CheckpointError};

/// Element type of a torch storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StorageDtype {
    F32,
    F16,
    BF16,
    /// Integer storages are only accepted for buffers that get skipped.
    I64,
    I32,
}

impl StorageDtype {
    fn size(self) -> usize {
        match self {
            StorageDtype::F32 | StorageDtype::I32 => 4,
            StorageDtype::F16 | StorageDtype::BF16 => 2,
            StorageDtype::I64 => 8,
        }
    }

    fn is_float(self) -> bool {
        matches!(self, StorageDtype::F32 | StorageDtype::F16 | StorageDtype::BF16)
    }
}

/// The globals this unpickler will resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Global {
    RebuildTensorV2,
    RebuildParameter,
    OrderedDict,
    Storage(StorageDtype),
}

fn resolve_global(module: &str, name: &str) -> Option<Global> {
    Some(match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch", "FloatStorage") => Global::Storage(StorageDtype::F32),
        ("torch", "HalfStorage") => Global::Storage(StorageDtype::F16),
        ("torch", "BFloat16Storage") => Global::Storage(StorageDtype::BF16),
        ("torch", "LongStorage") => Global::Storage(StorageDtype::I64),
        ("torch", "IntStorage") => Global::Storage(StorageDtype::I32),
        _ => return None,
    })
}

#[derive(Debug)]
struct StorageRef {
    dtype: StorageDtype,
    key: String,
    numel: usize,
}

#[derive(Debug)]
struct TensorRef {
    storage: Rc<StorageRef>,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

type Shared<T> = Rc<RefCell<T>>;

/// A pickle value. Lists and dicts are shared so that memo references keep Python's identity semantics
/// without copying (copying would let a small file demand quadratic memory).
#[derive(Debug, Clone)]
// Scalar payloads are kept (and shown by Debug) even where no tensor rebuild reads them.
#[allow(dead_code)]
enum Val {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<[Val]>),
    List(Shared<Vec<Val>>),
    Dict(Shared<Vec<(Val, Val)>>),
    Global(Global),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

impl Val {
    fn kind(&self) -> &'static str {
        match self {
            Val::None => "None",
            Val::Bool(_) => "bool",
            Val::Int(_) => "int",
            Val::Float(_) => "float",
            Val::Str(_) => "str",
            Val::Bytes(_) => "bytes",
            Val::Tuple(_) => "tuple",
            Val::List(_) => "list",
            Val::Dict(_) => "dict",
            Val::Global(_) => "global",
            Val::Storage(_) => "storage",
            Val::Tensor(_) => "tensor",
        }
    }
}

/// Drops nested containers iteratively: a few bytes of pickle can nest lists a million deep, and the
/// default recursive drop would overflow the stack.
impl Drop for Val {
    fn drop(&mut self) {
        let mut work = Vec::new();
        take_children(self, &mut work);
        while let Some(mut v) = work.pop() {
            take_children(&mut v, &mut work);
        }
    }
}

/// Moves the children of a container this value solely owns into `work`.
fn take_children(v: &mut Val, work: &mut Vec<Val>) {
    match v {
        Val::List(rc) => {
            if let Some(cell) = Rc::get_mut(rc) {
                work.append(cell.get_mut());
            }
        }
        Val::Dict(rc) => {
            if let Some(cell) = Rc::get_mut(rc) {
                for (k, v) in cell.get_mut().drain(..) {
                    work.push(k);
                    work.push(v);
                }
            }
        }
        Val::Tuple(rc) => {
            if let Some(items) = Rc::get_mut(rc) {
                work.extend(items.iter_mut().map(|x| std::mem::replace(x, Val::None)));
            }
        }
        _ => {}
    }
}

enum Item {
    Mark,
    Val(Val),
}

struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Item>,
    memo: HashMap<u64, Val>,
}

type PResult<T> = Result<T, String>;

impl<'a> Unpickler<'a> {
    fn new(data: &'a [u8]) -> Self {
        Unpickler { data, pos: 0, stack: Vec::new(), memo: HashMap::new() }
    }

    fn take(&mut self, n: usize) -> PResult<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or_else(|| {
            format!("pickle truncated: needs {n} bytes at offset {} of {}", self.pos, self.data.len())
        })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> PResult<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> PResult<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> PResult<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> PResult<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A length prefix, checked against the bytes left so that a lying length never allocates.
    fn len_checked(&self, n: u64) -> PResult<usize> {
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.data.len() - self.pos)
            .ok_or_else(|| format!("length {n} at offset {} runs past the end of the pickle", self.pos))
    }

    fn line(&mut self) -> PResult<&'a str> {
        let rest = &self.data[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n').ok_or("unterminated text line in pickle")?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| "text line is not UTF-8")?;
        self.pos += n + 1;
        Ok(s)
    }

    fn push(&mut self, v: Val) {
        self.stack.push(Item::Val(v));
    }

    fn pop(&mut self) -> PResult<Val> {
        match self.stack.pop() {
            Some(Item::Val(v)) => Ok(v),
            Some(Item::Mark) => Err("unexpected MARK on the stack".into()),
            None => Err("stack underflow".into()),
        }
    }

    fn top(&self) -> PResult<&Val> {
        match self.stack.last() {
            Some(Item::Val(v)) => Ok(v),
            Some(Item::Mark) => Err("unexpected MARK on the stack".into()),
            None => Err("stack underflow".into()),
        }
    }

    /// Pops everything down to the topmost MARK (removing the mark).
    fn pop_mark(&mut self) -> PResult<Vec<Val>> {
        let at = self.stack.iter().rposition(|i| matches!(i, Item::Mark)).ok_or("no MARK on the stack")?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        items.into_iter().map(|i| if let Item::Val(v) = i { Ok(v) } else { Err("nested MARK".into()) }).collect()
    }

    fn memo_put(&mut self, key: u64) -> PResult<()> {
        let v = self.top()?.clone();
        self.memo.insert(key, v);
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> PResult<()> {
        let v = self.memo.get(&key).cloned().ok_or_else(|| format!("memo key {key} is not defined"))?;
        self.push(v);
        Ok(())
    }

    fn global(&mut self, module: &str, name: &str) -> PResult<()> {
        match resolve_global(module, name) {
            Some(g) => {
                self.push(Val::Global(g));
                Ok(())
            }
            None => Err(format!("{REFUSED}{module}.{name}")),
        }
    }

    fn run(mut self) -> PResult<Val> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(format!("unsupported pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint only
                }
                b'.' => return self.pop(),
                b'(' => self.stack.push(Item::Mark),
                b'}' => self.push(Val::Dict(Rc::default())),
                b']' => self.push(Val::List(Rc::default())),
                b')' => self.push(Val::Tuple(Rc::from(Vec::new()))),
                b'N' => self.push(Val::None),
                0x88 => self.push(Val::Bool(true)),
                0x89 => self.push(Val::Bool(false)),
                b'K' => {
                    let v = self.u8()?;
                    self.push(Val::Int(v.into()))
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Val::Int(v.into()))
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Val::Int(v.into()))
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a { u64::from(self.u8()?) } else { u64::from(self.u32()?) };
                    let n = self.len_checked(n)?;
                    let bytes = self.take(n)?;
                    if n > 8 {
                        return Err(format!("integer of {n} bytes does not fit in 64 bits"));
                    }
                    let mut v: i64 = 0;
                    for (i, &b) in bytes.iter().enumerate() {
                        v |= i64::from(b) << (8 * i);
                    }
                    // Sign-extend from the top byte (two's complement little-endian).
                    if n > 0 && n < 8 && bytes[n - 1] & 0x80 != 0 {
                        v |= -1i64 << (8 * n);
                    }
                    self.push(Val::Int(v))
                }
                b'I' => {
                    let s = self.line()?;
                    let v = match s {
                        "00" => Val::Bool(false),
                        "01" => Val::Bool(true),
                        _ => Val::Int(s.trim().parse().map_err(|_| format!("bad INT literal {s:?}"))?),
                    };
                    self.push(v)
                }
                b'G' => {
                    let v = f64::from_bits(u64::from_be_bytes(self.take(8)?.try_into().map_err(|_| "bad float")?));
                    self.push(Val::Float(v))
                }
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => u64::from(self.u32()?),
                        0x8c => u64::from(self.u8()?),
                        _ => self.u64()?,
                    };
                    let n = self.len_checked(n)?;
                    let s = std::str::from_utf8(self.take(n)?).map_err(|_| "string is not UTF-8")?;
                    self.push(Val::Str(Rc::from(s)))
                }
                b'T' | b'U' => {
                    // Python 2 str: bytes in the file, read as Latin-1 text the way torch's loader does.
                    let n = if op == b'T' { u64::from(self.u32()?) } else { u64::from(self.u8()?) };
                    let n = self.len_checked(n)?;
                    let s: String = self.take(n)?.iter().map(|&b| char::from(b)).collect();
                    self.push(Val::Str(Rc::from(s)))
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => u64::from(self.u32()?),
                        b'C' => u64::from(self.u8()?),
                        _ => self.u64()?,
                    };
                    let n = self.len_checked(n)?;
                    let b = self.take(n)?;
                    self.push(Val::Bytes(Rc::from(b)))
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Val::Tuple(Rc::from(items)))
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Val::Tuple(Rc::from(items)))
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Val::List(Rc::new(RefCell::new(items))))
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = pairs(items)?;
                    self.push(Val::Dict(Rc::new(RefCell::new(pairs))))
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Val::List(l) => l.borrow_mut().push(v),
                        other => return Err(format!("APPEND to a {}", other.kind())),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Val::List(l) => l.borrow_mut().extend(items),
                        other => return Err(format!("APPENDS to a {}", other.kind())),
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    match self.top()? {
                        Val::Dict(d) => d.borrow_mut().push((k, v)),
                        other => return Err(format!("SETITEM on a {}", other.kind())),
                    }
                }
                b'u' => {
                    let items = pairs(self.pop_mark()?)?;
                    match self.top()? {
                        Val::Dict(d) => d.borrow_mut().extend(items),
                        other => return Err(format!("SETITEMS on a {}", other.kind())),
                    }
                }
                b'0' => {
                    self.stack.pop().ok_or("stack underflow")?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v)
                }
                b'p' => {
                    let k = self.line()?.trim().parse().map_err(|_| "bad PUT index")?;
                    self.memo_put(k)?
                }
                b'q' => {
                    let k = self.u8()?.into();
                    self.memo_put(k)?
                }
                b'r' => {
                    let k = self.u32()?.into();
                    self.memo_put(k)?
                }
                0x94 => {
                    let k = self.memo.len() as u64;
                    self.memo_put(k)?
                }
                b'g' => {
                    let k = self.line()?.trim().parse().map_err(|_| "bad GET index")?;
                    self.memo_get(k)?
                }
                b'h' => {
                    let k = self.u8()?.into();
                    self.memo_get(k)?
                }
                b'j' => {
                    let k = self.u32()?.into();
                    self.memo_get(k)?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(module, name)?
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&module, &name) {
                        (Val::Str(m), Val::Str(n)) => {
                            let (m, n) = (m.clone(), n.clone());
                            self.global(&m, &n)?
                        }
                        _ => return Err("STACK_GLOBAL needs two strings".into()),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = reduce(callable, args)?;
                    self.push(v)
                }
                b'b' => {
                    // BUILD: state for an object already built. Ours carry none that matters (an OrderedDict's
                    // `_metadata`, a Parameter's empty dict), and no `__setstate__` is ever called.
                    let _state = self.pop()?;
                    match self.top()? {
                        Val::Dict(_) | Val::Tensor(_) => {}
                        other => return Err(format!("BUILD on a {}", other.kind())),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = persistent_load(pid)?;
                    self.push(v)
                }
                b'P' => return Err("text persistent ids (PERSID) are not used by torch.save".into()),
                b'i' | b'o' | 0x81 | 0x92 => {
                    return Err(format!("object construction (opcode 0x{op:02x}) is not allowed in a state dict"));
                }
                _ => return Err(format!("unsupported pickle opcode 0x{op:02x} at offset {}", self.pos - 1)),
            }
        }
    }
}

/// Prefix of errors that come from refusing a global, so that the caller can report them as such.
const REFUSED: &str = "refused global ";

fn pairs(items: Vec<Val>) -> PResult<Vec<(Val, Val)>> {
    if items.len() & 1 == 1 {
        return Err("odd number of items for a dict".into());
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn as_usize(v: &Val, what: &str) -> PResult<usize> {
    match v {
        Val::Int(i) => usize::try_from(*i).map_err(|_| format!("{what} is negative ({i})")),
        other => Err(format!("{what}: expected an int, got {}", other.kind())),
    }
}

fn usize_tuple(v: &Val, what: &str) -> PResult<Vec<usize>> {
    match v {
        Val::Tuple(items) => items.iter().map(|i| as_usize(i, what)).collect(),
        other => Err(format!("{what}: expected a tuple, got {}", other.kind())),
    }
}

fn reduce(callable: Val, args: Val) -> PResult<Val> {
    let Val::Tuple(args) = &args else {
        return Err(format!("REDUCE arguments must be a tuple, got {}", args.kind()));
    };
    let &Val::Global(g) = &callable else {
        return Err(format!("REDUCE on a {}, which is not callable", callable.kind()));
    };
    match g {
        Global::OrderedDict => {
            let items = match args.first() {
                None => Vec::new(),
                Some(Val::List(l)) => {
                    let l = l.borrow();
                    let mut out = Vec::with_capacity(l.len());
                    for p in l.iter() {
                        match p {
                            Val::Tuple(kv) if kv.len() == 2 => out.push((kv[0].clone(), kv[1].clone())),
                            _ => return Err("OrderedDict items must be (key, value) pairs".into()),
                        }
                    }
                    out
                }
                Some(other) => return Err(format!("OrderedDict({}) is not supported", other.kind())),
            };
            Ok(Val::Dict(Rc::new(RefCell::new(items))))
        }
        Global::RebuildTensorV2 => {
            // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
            if args.len() < 4 {
                return Err(format!("_rebuild_tensor_v2 takes at least 4 arguments, got {}", args.len()));
            }
            let Val::Storage(storage) = &args[0] else {
                return Err(format!("_rebuild_tensor_v2: expected a storage, got {}", args[0].kind()));
            };
            let offset = as_usize(&args[1], "storage offset")?;
            let shape = usize_tuple(&args[2], "size")?;
            let stride = usize_tuple(&args[3], "stride")?;
            if shape.len() != stride.len() {
                return Err(format!("size has {} dimensions but stride has {}", shape.len(), stride.len()));
            }
            Ok(Val::Tensor(Rc::new(TensorRef { storage: storage.clone(), offset, shape, stride })))
        }
        Global::RebuildParameter => match args.first() {
            Some(t @ Val::Tensor(_)) => Ok(t.clone()),
            _ => Err("_rebuild_parameter: expected a tensor as first argument".into()),
        },
        Global::Storage(_) => Err("storage classes cannot be called".into()),
    }
}

fn persistent_load(pid: Val) -> PResult<Val> {
    let Val::Tuple(t) = &pid else {
        return Err(format!("persistent id must be a tuple, got {}", pid.kind()));
    };
    match &t[..] {
        [Val::Str(tag), Val::Global(Global::Storage(dtype)), Val::Str(key), _location, numel]
            if &**tag == "storage" =>
        {
            Ok(Val::Storage(Rc::new(StorageRef {
                dtype: *dtype,
                key: key.to_string(),
                numel: as_usize(numel, "storage numel")?,
            })))
        }
        _ => Err("unsupported persistent id (expected ('storage', <type>, key, location, numel))".into()),
    }
}

/// Runs the restricted unpickler over `data.pkl` bytes.
fn unpickle(data: &[u8]) -> PResult<Val> {
    Unpickler::new(data).run()
}

/// Finds the tensors in the unpickled object: a dict of tensors, or a dict holding one under a key such as
/// `state_dict` or `model` (training checkpoints).
fn collect_tensors(root: &Val, path: &Path) -> Result<Vec<(String, Rc<TensorRef>)>, CheckpointError> {
    let Val::Dict(d) = root else {
        return Err(CheckpointError::Format {
            path: path.to_path_buf(),
            message: format!("expected a state dict at the top level, got a {}", root.kind()),
        });
    };
    if d.borrow().iter().any(|(_, v)| matches!(v, Val::Tensor(_))) {
        return collect_flat(d, path);
    }
    for key in ["state_dict", "model", "module"] {
        let inner = d.borrow().iter().find_map(|(k, v)| match (k, v) {
            (Val::Str(s), Val::Dict(inner)) if &**s == key => Some(inner.clone()),
            _ => None,
        });
        if let Some(inner) = inner {
            return collect_flat(&inner, path);
        }
    }
    Err(CheckpointError::Format {
        path: path.to_path_buf(),
        message: "no tensors found (expected a dict of parameter name to tensor)".into(),
    })
}

fn collect_flat(d: &Shared<Vec<(Val, Val)>>, path: &Path) -> Result<Vec<(String, Rc<TensorRef>)>, CheckpointError> {
    let mut out = Vec::new();
    for (k, v) in d.borrow().iter() {
        match (k, v) {
            (Val::Str(k), Val::Tensor(t)) => out.push((k.to_string(), t.clone())),
            (Val::Str(k), other) => {
                return Err(CheckpointError::Tensor {
                    path: path.to_path_buf(),
                    tensor: k.to_string(),
                    message: format!("expected a tensor, got a {}", other.kind()),
                })
            }
            (k, _) => {
                return Err(CheckpointError::Format {
                    path: path.to_path_buf(),
                    message: format!("state dict key is a {}, not a string", k.kind()),
                })
            }
        }
    }
    Ok(out)
}

/// Loads a `pytorch_model.bin` written by `torch.save` (zip format).
pub fn load_pytorch_bin(path: &Path) -> Result<StateDict, CheckpointError> {
    let fmt = |m: String| CheckpointError::Format { path: path.to_path_buf(), message: m };
    let file = std::fs::File::open(path).map_err(|source| CheckpointError::Io { path: path.to_path_buf(), source })?;
    let file_len = file.metadata().map_err(|source| CheckpointError::Io { path: path.to_path_buf(), source })?.len();

    let mut magic = Vec::with_capacity(4);
    (&file)
        .take(4)
        .read_to_end(&mut magic)
        .map_err(|source| CheckpointError::Io { path: path.to_path_buf(), source })?;
    if magic != b"PK\x03\x04" {
        if magic.first() == Some(&0x80) {
            return Err(CheckpointError::Unsupported {
                path: path.to_path_buf(),
                message: "legacy (non-zip) torch.save format is unsupported; re-save it with PyTorch >= 1.6 or \
                          convert it to safetensors"
                    .into(),
            });
        }
        return Err(fmt("not a PyTorch checkpoint (expected a zip archive written by torch.save)".into()));
    }
    let mut zip = zip::ZipArchive::new(file).map_err(|e| fmt(format!("unreadable zip archive: {e}")))?;

    // The archive's top folder is named after the file it was saved as; find it through data.pkl.
    let names: Vec<String> = zip.file_names().filter_map(Result::ok).map(|n| n.into_owned()).collect();
    let pkl_name = names
        .iter()
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .cloned()
        .ok_or_else(|| fmt("no <archive>/data.pkl entry (TorchScript archives are not state dicts)".into()))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();

    let read_entry =
        |zip: &mut zip::ZipArchive<std::fs::File>, name: &str, limit: u64| -> Result<Vec<u8>, CheckpointError> {
            let mut e = zip.by_name(name).map_err(|e| fmt(format!("missing entry {name}: {e}")))?;
            if e.size() > file_len.min(limit) {
                return Err(fmt(format!(
                    "entry {name} declares {} bytes, more than the {} it may hold",
                    e.size(),
                    file_len.min(limit)
                )));
            }
            let size = e.size();
            let mut buf = Vec::with_capacity(size as usize);
            // Read at most what the entry declares (bounded by the file size above), whatever the stream says.
            (&mut e).take(size).read_to_end(&mut buf).map_err(|e| fmt(format!("reading {name}: {e}")))?;
            Ok(buf)
        };

    if names.iter().any(|n| *n == format!("{prefix}byteorder")) {
        let order = read_entry(&mut zip, &format!("{prefix}byteorder"), 16)?;
        if order.trim_ascii() != b"little" {
            return Err(CheckpointError::Unsupported {
                path: path.to_path_buf(),
                message: format!("byte order {:?} (only little-endian is supported)", String::from_utf8_lossy(&order)),
            });
        }
    }

    let pkl = read_entry(&mut zip, &pkl_name, u64::MAX)?;
    let root = unpickle(&pkl).map_err(|m| match m.strip_prefix(REFUSED) {
        Some(global) => CheckpointError::RefusedGlobal { path: path.to_path_buf(), global: global.to_string() },
        None => fmt(format!("{pkl_name}: {m}")),
    })?;
    let tensors = collect_tensors(&root, path)?;

    // Read each storage once; several tensors may view the same one (tied weights, slices).
    let mut storages: HashMap<String, Rc<Vec<u8>>> = HashMap::new();
    let mut out = StateDict::new();
    // Views can repeat a storage many times; cap the total output to a multiple of the file size.
    let mut budget = file_len.saturating_mul(8).saturating_add(1 << 20);
    for (name, t) in tensors {
        let terr = |m: String| CheckpointError::Tensor { path: path.to_path_buf(), tensor: name.clone(), message: m };
        let st = &t.storage;
        if !st.dtype.is_float() {
            if is_skippable_buffer(&name) {
                continue;
            }
            return Err(CheckpointError::UnsupportedDtype {
                path: path.to_path_buf(),
                tensor: name,
                dtype: format!("{:?}", st.dtype),
            });
        }
        let elem = st.dtype.size();
        let numel =
            t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| terr("size overflows".into()))?;
        let out_bytes = (numel as u64).saturating_mul(4);
        if out_bytes > budget {
            return Err(terr(format!("{numel} elements exceed what the file's {file_len} bytes can hold")));
        }
        budget -= out_bytes;
        if t.stride.len() != t.shape.len() {
            return Err(terr(format!(
                "stride {:?} has {} entries for a shape of {} dimensions {:?}",
                t.stride,
                t.stride.len(),
                t.shape.len(),
                t.shape
            )));
        }
        // Highest element the view touches must lie inside the storage.
        if numel > 0 {
            let mut last = t.offset;
            for (&d, &s) in t.shape.iter().zip(&t.stride) {
                last = (d - 1)
                    .checked_mul(s)
                    .and_then(|x| x.checked_add(last))
                    .ok_or_else(|| terr("stride overflows".into()))?;
            }
            if last >= st.numel {
                return Err(terr(format!(
                    "view (offset {}, size {:?}, stride {:?}) reaches element {last} of a storage of {}",
                    t.offset, t.shape, t.stride, st.numel
                )));
            }
        }
        let need = st.numel.checked_mul(elem).ok_or_else(|| terr("storage size overflows".into()))? as u64;
        let bytes = match storages.get(&st.key) {
            // A storage shared by several tensors: each may declare it differently (a crafted file).
            Some(b) if (b.len() as u64) < need => {
                return Err(terr(format!(
                    "storage {} has {} bytes but {} {:?} elements need {need}",
                    st.key,
                    b.len(),
                    st.numel,
                    st.dtype
                )));
            }
            Some(b) => b.clone(),
            None => {
                let entry = format!("{prefix}data/{}", st.key);
                let b = read_entry(&mut zip, &entry, u64::MAX)?;
                if (b.len() as u64) < need {
                    return Err(terr(format!(
                        "storage {entry} has {} bytes but {} {:?} elements need {need}",
                        b.len(),
                        st.numel,
                        st.dtype
                    )));
                }
                let b = Rc::new(b);
                storages.insert(st.key.clone(), b.clone());
                b
            }
        };
        let data = gather(&bytes, st.dtype, t.offset, &t.shape, &t.stride, numel);
        out.insert(name, Tensor::new(t.shape.clone(), data));
    }
    Ok(out)
}

/// Copies a strided view out of little-endian storage bytes into row-major f32 (bounds were checked).
fn gather(
    bytes: &[u8],
    dtype: StorageDtype,
    offset: usize,
    shape: &[usize],
    stride: &[usize],
    numel: usize,
) -> Vec<f32> {
    let read = |i: usize| -> f32 {
        match dtype {
            StorageDtype::F32 => {
                f32::from_le_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]])
            }
            StorageDtype::F16 => half::f16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]).to_f32(),
            StorageDtype::BF16 => half::bf16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]).to_f32(),
            StorageDtype::I64 | StorageDtype::I32 => 0.0, // never reached: integer tensors are skipped
        }
    };
    let mut out = Vec::with_capacity(numel);
    if numel == 0 {
        return out;
    }
    // Contiguous fast path.
    let mut contiguous = true;
    let mut expect = 1;
    for (&d, &s) in shape.iter().zip(stride).rev() {
        if d != 1 && s != expect {
            contiguous = false;
            break;
        }
        expect *= d;
    }
    if contiguous {
        out.extend((offset..offset + numel).map(read));
        return out;
    }
    // Odometer over the index space, innermost dimension fastest.
    let nd = shape.len();
    let mut idx = vec![0usize; nd];
    let mut pos = offset;
    // Wrapping arithmetic: a size-1 dimension may carry any stride (it is never applied to a read), and
    // stepping past the last element must not overflow; every position actually read was bounds-checked.
    for _ in 0..numel {
        out.push(read(pos));
        for d in (0..nd).rev() {
            idx[d] += 1;
            pos = pos.wrapping_add(stride[d]);
            if idx[d] < shape[d] {
                break;
            }
            pos = pos.wrapping_sub(stride[d].wrapping_mul(shape[d]));
            idx[d] = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_os_system() {
        // protocol 2: GLOBAL 'os system', then REDUCE
        let p = b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.";
        let e = unpickle(p).unwrap_err();
        assert_eq!(e, "refused global os.system");
    }

    #[test]
    fn refuses_stack_global_of_protocol_4() {
        // SHORT_BINUNICODE 'builtins', SHORT_BINUNICODE 'exec', STACK_GLOBAL
        let p = b"\x80\x04\x8c\x08builtins\x8c\x04exec\x93.";
        assert_eq!(unpickle(p).unwrap_err(), "refused global builtins.exec");
        // Object construction opcodes are refused outright.
        assert!(unpickle(b"\x80\x02ccollections\nOrderedDict\n)\x81.").unwrap_err().contains("not allowed"));
    }

    #[test]
    fn lying_lengths_do_not_allocate() {
        let p = b"\x80\x02X\xff\xff\xff\xff";
        assert!(unpickle(p).unwrap_err().contains("runs past the end"));
        let p = b"\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\x7f";
        assert!(unpickle(p).unwrap_err().contains("runs past the end"));
    }

    #[test]
    fn long1_sign_extends() {
        let v = unpickle(b"\x80\x02\x8a\x01\xff.").unwrap();
        assert!(matches!(v, Val::Int(-1)));
        let v = unpickle(b"\x80\x02\x8a\x05\x00\x00\x00\x00\x01.").unwrap();
        assert!(matches!(v, Val::Int(4294967296)));
    }

    #[test]
    fn deeply_nested_lists_do_not_overflow_the_stack() {
        let depth = 1_000_000;
        let mut p = b"\x80\x02".to_vec();
        p.extend(std::iter::repeat_n(b']', depth));
        p.extend(std::iter::repeat_n(b'a', depth - 1));
        p.push(b'.');
        let v = unpickle(&p).unwrap();
        assert!(matches!(v, Val::List(_)));
        drop(v);
        // The same nesting left on the stack by an error is dropped safely too.
        assert!(unpickle(&p[..p.len() - 1]).is_err());
    }

    #[test]
    fn huge_stride_on_size_one_dimension() {
        let bytes: Vec<u8> = (0..4).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let v = gather(&bytes, StorageDtype::F32, 0, &[1, 2, 2], &[usize::MAX, 1, 2], 4);
        assert_eq!(v, vec![0.0, 2.0, 1.0, 3.0]);
    }

    #[test]
    fn gather_transposed() {
        // storage 0..6 as 2x3, read its transpose (3x2, stride (1, 3)).
        let bytes: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let v = gather(&bytes, StorageDtype::F32, 0, &[3, 2], &[1, 3], 6);
        assert_eq!(v, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }
}
