//! Columnar inputs: Apache Parquet files and Arrow IPC streams (`datasets`' `save_to_disk` folders,
//! `DatasetDict` folders, single `.arrow` files).
//!
//! Rows are read as Arrow record batches, one Parquet row group (or IPC record batch) at a time and only the
//! columns a task needs, and each row becomes a JSON object of those columns, so column names and values go
//! through the same code as JSONL fields. `datasets`' features (the schema's "huggingface" metadata) turn
//! `ClassLabel` integers into their names, as `run_glue.py` and `run_ner.py` name their labels.
//!
//! Untrusted sizes: the Parquet footer is parsed by the `parquet` crate, which bounds every thrift list by the
//! bytes left; before a row group is read its column chunks must lie inside the file, so no chunk buffer is
//! sized from a corrupt offset. Page statistics are not decoded (the crate sizes those from the page header).
//! IPC messages are fed to `arrow-ipc`'s push decoder in 1 MiB pieces, so its buffers grow only with bytes
//! actually read.
//!
//! Panics: both crates panic on some malformed input (`parquet`'s bit unpacking asserts a bit width read from
//! a page; `arrow-ipc` unwraps a list type's child and slices buffers at offsets read from a message). Every
//! call into them on file data therefore runs in [`guarded`], which turns a panic into the file's error; a
//! panic hook installed once keeps those caught panics quiet and passes every other panic to the previous hook.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::panic::{self, catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_buffer::Buffer;
use arrow_ipc::reader::StreamDecoder;
use arrow_schema::{DataType, SchemaRef};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use serde_json::{Map, Value};

use super::jsonl::{example_from_object, ExampleFields};
use super::{token_columns, At, BlankCount, Format, ReadOptions};
use crate::error::{DataError, Result};
use crate::example::{Example, TokenExample};

/// Rows per Arrow batch: bounds the memory of one read whatever a row group holds.
const BATCH_ROWS: usize = 8192;
/// Bytes read from an IPC file at a time.
const IPC_CHUNK: usize = 1 << 20;

thread_local! {
    /// Set while [`guarded`] runs: a panic here is turned into an error, so the hook stays quiet.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Runs a decoder on file data; a panic becomes `Err` with its message. See the module documentation.
fn guarded<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let was = GUARDED.with(|g| g.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(was));
    result.map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        format!("malformed data ({message})")
    })
}

/// A `datasets` feature, as far as reading needs it: where `ClassLabel` names apply.
#[derive(Debug, Clone, Default)]
enum Feature {
    #[default]
    Plain,
    ClassLabel(Vec<String>),
    List(Box<Feature>),
    Struct(BTreeMap<String, Feature>),
}

impl Feature {
    /// Parses `datasets`' JSON form of a feature (`{"_type": "ClassLabel", "names": [...]}`, `List`/`Sequence`
    /// with a `feature`, the older `[feature]` list form, dicts of features).
    fn parse(v: &Value) -> Feature {
        match v {
            Value::Array(items) if items.len() == 1 => Feature::List(Box::new(Feature::parse(&items[0]))),
            Value::Object(o) => match o.get("_type").and_then(Value::as_str) {
                Some("ClassLabel") => {
                    let names = o
                        .get("names")
                        .and_then(Value::as_array)
                        .map(|n| n.iter().map(|x| x.as_str().map(str::to_string)).collect::<Option<Vec<String>>>());
                    names.flatten().map(Feature::ClassLabel).unwrap_or_default()
                }
                Some("List" | "Sequence" | "LargeList") => {
                    o.get("feature").map(|f| Feature::List(Box::new(Feature::parse(f)))).unwrap_or_default()
                }
                Some(_) => Feature::Plain,
                None => Feature::Struct(o.iter().map(|(k, v)| (k.clone(), Feature::parse(v))).collect()),
            },
            _ => Feature::Plain,
        }
    }

    fn item(&self) -> &Feature {
        match self {
            Feature::List(f) => f,
            _ => &Feature::Plain,
        }
    }

    fn field(&self, name: &str) -> &Feature {
        match self {
            Feature::Struct(m) => m.get(name).unwrap_or(&Feature::Plain),
            _ => &Feature::Plain,
        }
    }
}

/// The features stored by `datasets` in a schema's "huggingface" metadata (absent: no `ClassLabel` names).
fn features(metadata: Option<&str>) -> BTreeMap<String, Feature> {
    let parsed = metadata.and_then(|m| serde_json::from_str::<Value>(m).ok());
    match parsed.as_ref().and_then(|v| v.pointer("/info/features")) {
        Some(Value::Object(o)) => o.iter().map(|(k, v)| (k.clone(), Feature::parse(v))).collect(),
        _ => BTreeMap::new(),
    }
}

enum Kind {
    /// One file, or the shards of a folder, in order.
    Parquet {
        shards: Vec<Shard>,
    },
    Arrow {
        files: Vec<PathBuf>,
    },
}

/// A Parquet file with its footer read and its length known.
struct Shard {
    path: PathBuf,
    meta: ArrowReaderMetadata,
    len: u64,
}

impl Shard {
    fn open(path: &Path) -> Result<Shard> {
        let name = shown(path);
        let file = File::open(path).map_err(|e| DataError::io(&name, e))?;
        let len = file.metadata().map_err(|e| DataError::io(&name, e))?.len();
        // The arrow schema is derived from the Parquet schema: the embedded "ARROW:schema" would be decoded by
        // arrow-ipc's schema conversion, which panics on some malformed input.
        let options = ArrowReaderOptions::new().with_skip_arrow_metadata(true);
        let meta = guarded(|| ArrowReaderMetadata::load(&file, options).map_err(|e| e.to_string()))
            .and_then(|r| r)
            .map_err(|e| DataError::file(&name, format_args!("not a readable Parquet file: {e}")))?;
        Ok(Shard { path: path.to_path_buf(), meta, len })
    }
}

/// The Parquet files of a folder: directly in it, or in its `data/` folder (a Hugging Face hub dataset's layout,
/// `data/train-00000-of-00002.parquet`), sorted by name. Empty when it has none, or is a `datasets` folder.
fn parquet_files(path: &Path) -> Vec<PathBuf> {
    if path.join("state.json").is_file() || path.join("dataset_dict.json").is_file() {
        return Vec::new();
    }
    let list = |dir: &Path| -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file() && Format::from_path(p) == Some(Format::Parquet))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    };
    let here = list(path);
    if here.is_empty() {
        list(&path.join("data"))
    } else {
        here
    }
}

/// True for a folder of Parquet shards (see [`parquet_shards`]).
pub fn is_parquet_folder(path: &Path) -> bool {
    path.is_dir() && !parquet_files(path).is_empty()
}

/// A shard's split: its file name up to the first `-` (`train-00000-of-00002.parquet` is "train",
/// `test.parquet` "test"), as the Hugging Face hub names split files.
fn shard_split(path: &Path) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    stem.split('-').next().unwrap_or_default().to_string()
}

/// The Parquet shards of a folder for one split: `opts.dataset_split` when the folder has files of that split,
/// else all of them when the folder holds one split only; a folder of several splits needs one named.
fn parquet_shards(path: &Path, opts: &ReadOptions) -> Result<Vec<PathBuf>> {
    let files = parquet_files(path);
    let name = shown(path);
    if files.is_empty() {
        return Err(DataError::file(&name, "no Parquet files in the folder or in its data/ folder"));
    }
    let files = files.into_iter().map(|f| (shard_split(&f), f)).collect();
    pick_split(&name, files, opts, "Parquet shards")
}

/// A Parquet file or Arrow dataset, opened: its files and schema are known, no row is read yet.
pub struct ColumnarSource {
    /// The path as given (a file or a folder), for errors that concern the whole dataset.
    path: String,
    /// The first (Parquet: only) file.
    first: PathBuf,
    kind: Kind,
    schema: SchemaRef,
    features: BTreeMap<String, Feature>,
}

fn shown(p: &Path) -> String {
    p.display().to_string()
}

impl ColumnarSource {
    /// Opens a Parquet file (reads its footer) or an Arrow dataset (finds its files, reads the first schema).
    pub fn open(path: &Path, format: Format, opts: &ReadOptions) -> Result<ColumnarSource> {
        let name = shown(path);
        if opts.delimiter.is_some() {
            return Err(DataError::Invalid(format!("{name}: the delimiter applies to CSV/TSV files, not {format:?}")));
        }
        if opts.tag_column.is_some() || opts.token_column != 0 {
            return Err(DataError::Invalid(format!(
                "{name}: token and tag column numbers apply to CoNLL files; name {format:?} columns with \
                 text_column_name and label_column_name"
            )));
        }
        if format == Format::Parquet {
            let paths = if path.is_dir() { parquet_shards(path, opts)? } else { vec![path.to_path_buf()] };
            let shards = paths.iter().map(|p| Shard::open(p)).collect::<Result<Vec<Shard>>>()?;
            let meta = &shards[0].meta;
            // Every shard must have the first one's columns, so that a row reads the same from any of them.
            if let Some(other) = shards.iter().find(|s| s.meta.schema().fields() != meta.schema().fields()) {
                return Err(DataError::file(
                    &shown(&other.path),
                    format_args!("its columns differ from those of {}", shown(&shards[0].path)),
                ));
            }
            let hf = meta
                .metadata()
                .file_metadata()
                .key_value_metadata()
                .and_then(|kv| kv.iter().find(|k| k.key == "huggingface").and_then(|k| k.value.clone()));
            let features = features(hf.as_deref());
            let schema = meta.schema().clone();
            let first = shards[0].path.clone();
            return Ok(ColumnarSource { path: name, first, kind: Kind::Parquet { shards }, schema, features });
        }
        let files = arrow_files(path, opts)?;
        let first = files[0].clone();
        let schema = IpcFile::open(&first)?.read_schema()?;
        let features = features(schema.metadata().get("huggingface").map(String::as_str));
        Ok(ColumnarSource { path: name, first, kind: Kind::Arrow { files }, schema, features })
    }

    /// The column names, in file order.
    pub fn column_names(&self) -> Vec<String> {
        self.schema.fields().iter().map(|f| f.name().clone()).collect()
    }

    fn has(&self, name: &str) -> bool {
        self.schema.field_with_name(name).is_ok()
    }

    /// True when the tokens column (see [`token_columns`]) is a list of strings: token-classification data.
    pub fn is_token_level(&self, opts: &ReadOptions) -> bool {
        let (tokens, _) = token_columns(opts, |n| self.has(n));
        self.schema.field_with_name(&tokens).is_ok_and(|f| list_item(f.data_type()).is_some_and(is_string))
    }

    /// Checks that `name` exists and its type passes `ok`, naming the file and column otherwise.
    fn column(&self, name: &str, ok: fn(&DataType) -> bool, expected: &str) -> Result<Column> {
        let file = shown(&self.first);
        let Ok(field) = self.schema.field_with_name(name) else {
            return Err(DataError::file(
                &file,
                format_args!("no column {name:?} (columns: {})", self.column_names().join(", ")),
            ));
        };
        if !ok(field.data_type()) || !readable(field.data_type()) {
            return Err(DataError::file(
                &file,
                format_args!("column {name:?} is {}; expected {expected}", field.data_type()),
            ));
        }
        let feature = self.features.get(name).cloned().unwrap_or_default();
        Ok(Column { name: name.to_string(), data_type: field.data_type().clone(), feature })
    }

    /// Streams the rows' objects of `columns`.
    fn rows(self, columns: Vec<Column>) -> Result<ColumnarRows> {
        let batches = match self.kind {
            Kind::Parquet { shards } => {
                let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
                let roots: Vec<usize> = self
                    .schema
                    .fields()
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| names.contains(&f.name().as_str()))
                    .map(|(i, _)| i)
                    .collect();
                Batches::Parquet { shards: shards.into_iter(), roots, current: None }
            }
            Kind::Arrow { files } => Batches::Arrow { files, next: 0, current: None },
        };
        Ok(ColumnarRows { columns, batches, current: None, line: 0, done: false })
    }
}

/// The IPC files of an Arrow input: a `.arrow` file, a `save_to_disk` folder (its `state.json` lists the
/// files in order) or a `DatasetDict` folder (`dataset_dict.json`; the split is `opts.dataset_split` or the
/// only one).
fn arrow_files(path: &Path, opts: &ReadOptions) -> Result<Vec<PathBuf>> {
    let name = shown(path);
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let json = |file: &str| -> Result<Value> {
        let p = path.join(file);
        let text = std::fs::read_to_string(&p).map_err(|e| DataError::io(&shown(&p), e))?;
        serde_json::from_str(&text).map_err(|e| DataError::file(&shown(&p), format_args!("invalid JSON: {e}")))
    };
    if path.join("dataset_dict.json").is_file() {
        let dict = json("dataset_dict.json")?;
        let splits: Vec<&str> = dict
            .get("splits")
            .and_then(Value::as_array)
            .map(|s| s.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let split = match (&opts.dataset_split, splits.as_slice()) {
            (Some(s), _) if splits.contains(&s.as_str()) => s.as_str(),
            (Some(s), _) => {
                return Err(DataError::file(
                    &name,
                    format_args!("the DatasetDict has no split {s:?} (splits: {})", splits.join(", ")),
                ))
            }
            (None, [only]) => only,
            (None, _) => {
                return Err(DataError::file(
                    &name,
                    format_args!(
                        "a DatasetDict with splits {}: read one of its folders (e.g. {})",
                        splits.join(", "),
                        shown(&path.join(splits.first().copied().unwrap_or("train")))
                    ),
                ))
            }
        };
        if split.is_empty() || split.contains(['/', '\\']) || split == ".." {
            return Err(DataError::file(&name, format_args!("dataset_dict.json: invalid split name {split:?}")));
        }
        return arrow_files(&path.join(split), &ReadOptions { dataset_split: None, ..opts.clone() });
    }
    if let Some(files) = cache_files(path)? {
        return pick_split(&name, files, opts, "Arrow files of the `datasets` cache folder");
    }
    if !path.join("state.json").is_file() {
        return Err(DataError::file(
            &name,
            "a folder that is not a `datasets` save_to_disk folder (no state.json or dataset_dict.json) or cache \
             folder (no dataset_info.json) and holds no Parquet files",
        ));
    }
    let state = json("state.json")?;
    let files: Vec<PathBuf> = state
        .get("_data_files")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(|d| d.get("filename")?.as_str()).map(|f| path.join(f)).collect())
        .unwrap_or_default();
    let bad = |f: &PathBuf| f.parent() != Some(path) || f.file_name().is_none_or(|n| n == "..");
    if files.is_empty() || files.iter().any(bad) {
        return Err(DataError::file(&name, "state.json: \"_data_files\" must list the folder's .arrow files by name"));
    }
    Ok(files)
}

/// True for a `datasets` cache folder (see [`cache_files`]).
pub fn is_cache_folder(path: &Path) -> bool {
    matches!(cache_files(path), Ok(Some(_)))
}

/// The Arrow files of a `datasets` cache folder, as `load_dataset` leaves one
/// (`~/.cache/huggingface/datasets/<builder>/<config>/<version>/<hash>/`): `dataset_info.json` beside
/// `<builder_name>-<split>.arrow` files, or their shards `<builder_name>-<split>-00000-of-00002.arrow`, with each
/// file's split, sorted by name. `None` for a folder without `dataset_info.json` or that is a save_to_disk folder.
fn cache_files(path: &Path) -> Result<Option<Vec<(String, PathBuf)>>> {
    let info_path = path.join("dataset_info.json");
    if !path.is_dir() || !info_path.is_file() || path.join("state.json").is_file() {
        return Ok(None);
    }
    let shown_info = shown(&info_path);
    let text = std::fs::read_to_string(&info_path).map_err(|e| DataError::io(&shown_info, e))?;
    let info: Value =
        serde_json::from_str(&text).map_err(|e| DataError::file(&shown_info, format_args!("invalid JSON: {e}")))?;
    let builder = info.get("builder_name").and_then(Value::as_str).unwrap_or_default();
    let splits: Vec<&str> =
        info.get("splits").and_then(Value::as_object).map_or(Vec::new(), |o| o.keys().map(String::as_str).collect());
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| DataError::io(&shown(path), e))? {
        let p = entry.map_err(|e| DataError::io(&shown(path), e))?.path();
        if !p.is_file() || Format::from_path(&p) != Some(Format::Arrow) {
            continue;
        }
        let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let Some(rest) = stem.strip_prefix(builder).and_then(|r| r.strip_prefix('-')) else { continue };
        // The split, then an optional shard suffix "-00000-of-00002".
        let split = splits.iter().filter(|sp| rest == **sp || rest.strip_prefix(**sp).is_some_and(is_shard_suffix));
        if let Some(sp) = split.max_by_key(|sp| sp.len()) {
            files.push((sp.to_string(), p));
        }
    }
    if files.is_empty() {
        return Ok(None);
    }
    files.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(Some(files))
}

/// `-00000-of-00002`: the shard suffix `datasets` writes.
fn is_shard_suffix(tail: &str) -> bool {
    let parts: Vec<&str> = tail.split('-').collect();
    matches!(parts.as_slice(), ["", a, "of", b] if !a.is_empty() && !b.is_empty()
        && a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit()))
}

/// The files of `opts.dataset_split` among `files` (split, file), or all of them when they hold one split only.
fn pick_split(name: &str, files: Vec<(String, PathBuf)>, opts: &ReadOptions, what: &str) -> Result<Vec<PathBuf>> {
    let mut splits: Vec<&str> = files.iter().map(|(s, _)| s.as_str()).collect();
    splits.dedup();
    splits.sort();
    splits.dedup();
    let chosen: Option<&str> = match &opts.dataset_split {
        Some(s) if splits.contains(&s.as_str()) => Some(s.as_str()),
        _ if splits.len() == 1 => None,
        Some(s) => {
            return Err(DataError::file(
                name,
                format_args!("the {what} have no split {s:?} (splits: {})", splits.join(", ")),
            ));
        }
        None => {
            return Err(DataError::file(
                name,
                format_args!(
                    "{what} of the splits {}: give the folder as train_file/validation_file/test_file, or read one \
                     file",
                    splits.join(", ")
                ),
            ));
        }
    };
    Ok(files.into_iter().filter(|(s, _)| chosen.is_none_or(|c| c == s)).map(|(_, f)| f).collect())
}

/// One column a task reads: its name, type (checked once) and `datasets` feature.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    data_type: DataType,
    feature: Feature,
}

fn is_string(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_string(v),
        _ => false,
    }
}

fn is_integer(t: &DataType) -> bool {
    t.is_integer() || matches!(t, DataType::Dictionary(_, v) if v.is_integer())
}

fn list_item(t: &DataType) -> Option<&DataType> {
    match t {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => Some(f.data_type()),
        _ => None,
    }
}

/// Types a row value can be read from.
fn readable(t: &DataType) -> bool {
    match t {
        DataType::Null | DataType::Boolean | DataType::Float32 | DataType::Float64 => true,
        DataType::Dictionary(k, v) => k.is_integer() && readable(v),
        DataType::Struct(fields) => fields.iter().all(|f| readable(f.data_type())),
        t if t.is_integer() || is_string(t) => true,
        t => list_item(t).is_some_and(readable),
    }
}

fn is_label(t: &DataType) -> bool {
    is_string(t) || is_integer(t) || t.is_floating() || list_item(t).is_some_and(|i| is_string(i) || is_integer(i))
}

/// Parquet row groups or IPC record batches, in order.
enum Batches {
    Parquet { shards: std::vec::IntoIter<Shard>, roots: Vec<usize>, current: Option<ParquetBatches> },
    Arrow { files: Vec<PathBuf>, next: usize, current: Option<IpcFile> },
}

/// A batch with where it came from.
struct Located {
    batch: RecordBatch,
    /// The file, for row errors.
    file: Rc<str>,
    /// "row group N" or "record batch N".
    part: Rc<str>,
    /// Rows of the file before this batch.
    first_row: u64,
}

impl Batches {
    fn next_batch(&mut self) -> Result<Option<Located>> {
        match self {
            Batches::Parquet { shards, roots, current } => loop {
                if let Some(p) = current {
                    if let Some(b) = p.next_batch()? {
                        return Ok(Some(b));
                    }
                }
                let Some(shard) = shards.next() else { return Ok(None) };
                *current = Some(ParquetBatches::new(shard, roots.clone())?);
            },
            Batches::Arrow { files, next, current } => loop {
                if let Some(f) = current {
                    if let Some(b) = f.next_batch()? {
                        return Ok(Some(b));
                    }
                }
                let Some(path) = files.get(*next) else { return Ok(None) };
                *next += 1;
                *current = Some(IpcFile::open(path)?);
            },
        }
    }
}

struct ParquetBatches {
    name: String,
    file: File,
    meta: ArrowReaderMetadata,
    len: u64,
    /// Root columns to decode.
    roots: Vec<usize>,
    /// The row group read next.
    group: usize,
    reader: Option<(ParquetRecordBatchReader, Rc<str>, Rc<str>, u64)>,
}

impl ParquetBatches {
    fn new(shard: Shard, roots: Vec<usize>) -> Result<ParquetBatches> {
        let name = shown(&shard.path);
        let file = File::open(&shard.path).map_err(|e| DataError::io(&name, e))?;
        Ok(ParquetBatches { name, file, meta: shard.meta, len: shard.len, roots, group: 0, reader: None })
    }

    fn part(group: usize) -> String {
        format!("row group {group}")
    }

    /// Every column chunk of the row group must lie inside the file before the reader sizes a buffer for it.
    fn check_group(&self, g: usize) -> Result<u64> {
        let rg = self.meta.metadata().row_group(g);
        let bad = |what: String| DataError::file(&self.name, format_args!("{}: {what}", Self::part(g)));
        let rows = u64::try_from(rg.num_rows()).map_err(|_| bad(format!("negative row count {}", rg.num_rows())))?;
        for c in rg.columns() {
            let start = c.dictionary_page_offset().unwrap_or(c.data_page_offset());
            let end = u64::try_from(start)
                .ok()
                .zip(u64::try_from(c.compressed_size()).ok())
                .and_then(|(s, l)| s.checked_add(l));
            if end.is_none_or(|e| e > self.len) {
                return Err(bad(format!(
                    "column {:?}: its data ({} bytes at offset {start}) is not inside the file ({} bytes)",
                    c.column_path().string(),
                    c.compressed_size(),
                    self.len
                )));
            }
        }
        Ok(rows)
    }

    fn reader(&self, g: usize, roots: &[usize]) -> Result<ParquetRecordBatchReader> {
        let file = self.file.try_clone().map_err(|e| DataError::io(&self.name, e))?;
        let mask = ProjectionMask::roots(self.meta.parquet_schema(), roots.iter().copied());
        let build = || {
            ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone())
                .with_projection(mask)
                .with_row_groups(vec![g])
                .with_batch_size(BATCH_ROWS)
                .build()
                .map_err(|e| e.to_string())
        };
        guarded(build).and_then(|r| r).map_err(|e| DataError::file(&self.name, format_args!("{}: {e}", Self::part(g))))
    }

    /// A decoding error of row group `g`, with the column that fails when each is decoded alone.
    fn decode_error(&self, g: usize, e: impl std::fmt::Display) -> DataError {
        let fields = self.meta.schema().fields();
        let culprit = self.roots.iter().find(|&&r| match self.reader(g, &[r]) {
            Ok(mut reader) => guarded(|| reader.any(|b| b.is_err())).unwrap_or(true),
            Err(_) => true,
        });
        let col = culprit.map(|&r| format!(", column {:?}", fields[r].name())).unwrap_or_default();
        DataError::file(&self.name, format_args!("{}{col}: cannot decode: {e}", Self::part(g)))
    }

    fn next_batch(&mut self) -> Result<Option<Located>> {
        loop {
            if let Some((reader, file, part, first_row)) = &mut self.reader {
                match guarded(|| reader.next().map(|b| b.map_err(|e| e.to_string()))).unwrap_or_else(|e| Some(Err(e))) {
                    Some(Ok(batch)) => {
                        let located = Located { batch, file: file.clone(), part: part.clone(), first_row: *first_row };
                        *first_row += located.batch.num_rows() as u64;
                        return Ok(Some(located));
                    }
                    Some(Err(e)) => {
                        let g = self.group - 1;
                        self.group = usize::MAX;
                        return Err(self.decode_error(g, e));
                    }
                    None => {}
                }
            }
            let first_row = self.reader.take().map_or(0, |r| r.3);
            let g = self.group;
            if g >= self.meta.metadata().num_row_groups() {
                return Ok(None);
            }
            self.check_group(g)?;
            let reader = self.reader(g, &self.roots.clone())?;
            self.group += 1;
            self.reader = Some((reader, self.name.as_str().into(), Self::part(g).into(), first_row));
        }
    }
}

/// One Arrow IPC file (stream format, or file format read as its stream), decoded in pieces.
struct IpcFile {
    name: Rc<str>,
    input: std::io::Take<File>,
    decoder: StreamDecoder,
    buf: Buffer,
    batches: usize,
    rows: u64,
    eof: bool,
}

impl IpcFile {
    fn open(path: &Path) -> Result<IpcFile> {
        let name = shown(path);
        let io = |e| DataError::io(&name, e);
        let mut file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut magic = [0u8; 6];
        let is_file_format = len >= 6 && file.read_exact(&mut magic).is_ok() && &magic == b"ARROW1";
        // The IPC file format is "ARROW1" + padding, the stream, the footer, its length and "ARROW1".
        let (start, end) = if is_file_format {
            let mut tail = [0u8; 10];
            file.seek(SeekFrom::End(-10)).and_then(|_| file.read_exact(&mut tail)).map_err(io)?;
            let footer = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
            match len.checked_sub(10 + footer) {
                Some(end) if end >= 8 && &tail[4..] == b"ARROW1" => (8, end),
                _ => return Err(DataError::file(&name, "not a readable Arrow IPC file: bad footer")),
            }
        } else {
            (0, len)
        };
        file.seek(SeekFrom::Start(start)).map_err(io)?;
        Ok(IpcFile {
            name: name.into(),
            input: file.take(end - start),
            decoder: StreamDecoder::new(),
            buf: Buffer::from_vec(Vec::<u8>::new()),
            batches: 0,
            rows: 0,
            eof: false,
        })
    }

    fn error(&self, message: impl std::fmt::Display) -> DataError {
        DataError::file(&self.name, format_args!("record batch {}: {message}", self.batches))
    }

    /// Decodes what is buffered; reads the next piece when more is needed.
    fn decode(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if !self.buf.is_empty() {
                let (decoder, buf) = (&mut self.decoder, &mut self.buf);
                match guarded(|| decoder.decode(buf).map_err(|e| e.to_string())).and_then(|r| r) {
                    Ok(Some(batch)) => return Ok(Some(batch)),
                    Ok(None) => {}
                    Err(e) => return Err(self.error(format_args!("not a readable Arrow IPC stream: {e}"))),
                }
                continue;
            }
            if self.eof {
                return match self.decoder.finish() {
                    Ok(()) => Ok(None),
                    Err(_) => Err(self.error("the Arrow IPC stream ends inside a message (truncated file?)")),
                };
            }
            let mut piece = Vec::with_capacity(IPC_CHUNK.min(self.input.limit() as usize));
            let n = (&mut self.input).take(IPC_CHUNK as u64).read_to_end(&mut piece);
            match n.map_err(|e| DataError::io(&self.name, e))? {
                0 => self.eof = true,
                _ => self.buf = Buffer::from_vec(piece),
            }
        }
    }

    /// The schema: decodes up to the first record batch (or the end) and starts the file over.
    fn read_schema(mut self) -> Result<SchemaRef> {
        while self.decoder.schema().is_none() {
            if self.decode()?.is_none() {
                break;
            }
        }
        self.decoder.schema().ok_or_else(|| self.error("not a readable Arrow IPC stream: no schema"))
    }

    fn next_batch(&mut self) -> Result<Option<Located>> {
        let Some(batch) = self.decode()? else { return Ok(None) };
        let located = Located {
            file: self.name.clone(),
            part: format!("record batch {}", self.batches).into(),
            first_row: self.rows,
            batch,
        };
        self.batches += 1;
        self.rows += located.batch.num_rows() as u64;
        Ok(Some(located))
    }
}

/// A row as a JSON object of the task's columns, with where it came from.
pub(crate) struct Row {
    obj: Map<String, Value>,
    file: Rc<str>,
    part: Rc<str>,
    /// 1-based row in its file.
    row: u64,
    /// 1-based row in the dataset (all files): the record's `line`.
    line: u64,
}

impl Row {
    fn at(&self) -> At<'_> {
        At::Row { path: &self.file, part: &self.part, row: self.row }
    }
}

/// Streams the rows of a columnar dataset, one batch in memory at a time.
pub(crate) struct ColumnarRows {
    columns: Vec<Column>,
    batches: Batches,
    /// The batch being read, the batch index of each column in it, and the next row.
    current: Option<(Located, Vec<usize>, usize)>,
    line: u64,
    done: bool,
}

impl ColumnarRows {
    /// The batch's index of each column; a later file of a folder must have the first file's column types.
    fn locate(&self, b: &Located) -> Result<Vec<usize>> {
        let schema = b.batch.schema();
        self.columns
            .iter()
            .map(|c| match schema.index_of(&c.name) {
                Ok(i) if schema.field(i).data_type() == &c.data_type => Ok(i),
                Ok(i) => Err(DataError::file(
                    &b.file,
                    format_args!(
                        "{}: column {:?} is {}, not {} as in the first file",
                        b.part,
                        c.name,
                        schema.field(i).data_type(),
                        c.data_type
                    ),
                )),
                Err(_) => Err(DataError::file(&b.file, format_args!("{}: no column {:?}", b.part, c.name))),
            })
            .collect()
    }

    fn next_row(&mut self) -> Result<Option<Row>> {
        loop {
            if let Some((b, idx, i)) = &mut self.current {
                if *i < b.batch.num_rows() {
                    let r = *i;
                    *i += 1;
                    self.line += 1;
                    let mut row = Row {
                        obj: Map::new(),
                        file: b.file.clone(),
                        part: b.part.clone(),
                        row: b.first_row + r as u64 + 1,
                        line: self.line,
                    };
                    for (c, &k) in self.columns.iter().zip(idx.iter()) {
                        let v = value(b.batch.column(k).as_ref(), r, &c.feature)
                            .map_err(|m| row.at().err(format_args!("column {:?}: {m}", c.name)))?;
                        row.obj.insert(c.name.clone(), v);
                    }
                    return Ok(Some(row));
                }
            }
            self.current = None;
            let Some(b) = self.batches.next_batch()? else { return Ok(None) };
            let idx = self.locate(&b)?;
            self.current = Some((b, idx, 0));
        }
    }
}

impl Iterator for ColumnarRows {
    type Item = Result<Row>;

    fn next(&mut self) -> Option<Result<Row>> {
        if self.done {
            return None;
        }
        match self.next_row() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => {
                self.done = true;
                None
            }
            // A bad value spoils one row; a file-level error ends the read.
            Err(e) => {
                self.done = !e.is_record_error();
                Some(Err(e))
            }
        }
    }
}

/// Records made from rows by `make`.
pub(crate) struct Records<F> {
    rows: ColumnarRows,
    make: F,
}

impl<T, F: FnMut(&Row) -> Result<T>> Iterator for Records<F> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        Some(self.rows.next()?.and_then(|r| (self.make)(&r)))
    }
}

impl<F> BlankCount for Records<F> {}

/// Classification examples: the text, text-pair and label columns, named and valued as JSONL fields are.
pub(crate) fn examples(
    source: ColumnarSource,
    opts: &ReadOptions,
) -> Result<Records<impl FnMut(&Row) -> Result<Example>>> {
    let fields = ExampleFields::new(opts);
    let text = "a string column";
    let mut columns = vec![source.column(&fields.text, is_string, text)?];
    if let Some(p) = &fields.pair {
        columns.push(source.column(p, is_string, text)?);
    }
    if let Some(l) = &fields.label {
        columns.push(source.column(l, is_label, "strings, integers, floats or lists of strings or integers")?);
    }
    let rows = source.rows(columns)?;
    Ok(Records { rows, make: move |r: &Row| example_from_object(r.at(), r.line, &r.obj, &fields) })
}

/// Token-classification sentences: a list-of-strings tokens column and a tags column of string or integer
/// (`ClassLabel`) lists, as `run_ner.py` reads them.
pub(crate) fn sentences(
    source: ColumnarSource,
    opts: &ReadOptions,
) -> Result<Records<impl FnMut(&Row) -> Result<TokenExample>>> {
    let (tokens, tags) = token_columns(opts, |n| source.has(n));
    let Some(tags) = tags else {
        return Err(DataError::file(&source.path, "token-classification data needs a tags column (label_column_name)"));
    };
    let is_tokens: fn(&DataType) -> bool = |t| list_item(t).is_some_and(is_string);
    let is_tags: fn(&DataType) -> bool = |t| list_item(t).is_some_and(|i| is_string(i) || is_integer(i));
    let columns = vec![
        source.column(&tokens, is_tokens, "a list of strings")?,
        source.column(&tags, is_tags, "a list of strings or integers")?,
    ];
    let rows = source.rows(columns)?;
    Ok(Records { rows, make: move |r: &Row| sentence_from_object(r, &tokens, &tags) })
}

/// Rows as JSON objects of those `names` the dataset has (any readable type), for records whose fields are
/// told apart per row (SFT); `make` gets each row's location, 1-based row in the dataset and object.
pub(crate) fn objects<T>(
    source: ColumnarSource,
    names: &[&str],
    mut make: impl FnMut(At, u64, &Map<String, Value>) -> Result<T>,
) -> Result<Records<impl FnMut(&Row) -> Result<T>>> {
    let present: Vec<&str> = names.iter().copied().filter(|n| source.has(n)).collect();
    if present.is_empty() {
        return Err(DataError::file(
            &shown(&source.first),
            format_args!("none of the columns {names:?} (columns: {})", source.column_names().join(", ")),
        ));
    }
    let expected = "strings, numbers, booleans, lists or structs";
    let columns = present.iter().map(|n| source.column(n, |_| true, expected)).collect::<Result<Vec<_>>>()?;
    let rows = source.rows(columns)?;
    Ok(Records { rows, make: move |r: &Row| make(r.at(), r.line, &r.obj) })
}

fn sentence_from_object(r: &Row, tokens_col: &str, tags_col: &str) -> Result<TokenExample> {
    let at = r.at();
    let list = |col: &str| -> Result<Vec<String>> {
        let items = match r.obj.get(col) {
            Some(Value::Array(items)) if !items.is_empty() => items,
            Some(Value::Array(_)) => return Err(at.err(format_args!("column {col:?} is an empty list"))),
            _ => return Err(at.err(format_args!("column {col:?} is null"))),
        };
        items
            .iter()
            .enumerate()
            .map(|(k, v)| match v {
                Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                Value::Null => Err(at.err(format_args!("column {col:?}: item {k} is null"))),
                _ => Err(at.err(format_args!("column {col:?}: item {k} is empty"))),
            })
            .collect()
    };
    let tokens = list(tokens_col)?;
    let tags = list(tags_col)?;
    if tokens.len() != tags.len() {
        return Err(at.err(format_args!(
            "column {tags_col:?} has {} tags for {} tokens in {tokens_col:?}",
            tags.len(),
            tokens.len()
        )));
    }
    Ok(TokenExample { tokens, tags, line: r.line })
}

/// The JSON value of row `i` of `a`. `ClassLabel` integers become their names; NaN and infinities, which JSON
/// cannot hold, are errors.
fn value(a: &dyn Array, i: usize, feature: &Feature) -> std::result::Result<Value, String> {
    if a.is_null(i) {
        return Ok(Value::Null);
    }
    let int = |v: i128| -> std::result::Result<Value, String> {
        match feature {
            Feature::ClassLabel(names) => usize::try_from(v)
                .ok()
                .and_then(|k| names.get(k))
                .map(|n| Value::String(n.clone()))
                .ok_or_else(|| format!("{v} is not a class of its ClassLabel ({} names)", names.len())),
            _ => Ok(i64::try_from(v).map(Value::from).unwrap_or_else(|_| Value::from(v as u64))),
        }
    };
    let float = |v: f64| {
        serde_json::Number::from_f64(v).map(Value::Number).ok_or_else(|| format!("{v} is not a finite number"))
    };
    let list = |items: &dyn Array| -> std::result::Result<Value, String> {
        (0..items.len())
            .map(|k| value(items, k, feature.item()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(Value::Array)
    };
    Ok(match a.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(a.as_boolean().value(i)),
        DataType::Int8 => int(a.as_primitive::<Int8Type>().value(i).into())?,
        DataType::Int16 => int(a.as_primitive::<Int16Type>().value(i).into())?,
        DataType::Int32 => int(a.as_primitive::<Int32Type>().value(i).into())?,
        DataType::Int64 => int(a.as_primitive::<Int64Type>().value(i).into())?,
        DataType::UInt8 => int(a.as_primitive::<UInt8Type>().value(i).into())?,
        DataType::UInt16 => int(a.as_primitive::<UInt16Type>().value(i).into())?,
        DataType::UInt32 => int(a.as_primitive::<UInt32Type>().value(i).into())?,
        DataType::UInt64 => int(a.as_primitive::<UInt64Type>().value(i).into())?,
        // A float32 is written as its shortest decimal (3.8, not 3.799999952316284), as a CSV export shows it.
        DataType::Float32 => {
            let v = a.as_primitive::<Float32Type>().value(i);
            float(format!("{v:?}").parse::<f64>().unwrap_or(f64::NAN))?
        }
        DataType::Float64 => float(a.as_primitive::<Float64Type>().value(i))?,
        DataType::Utf8 => Value::String(a.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Value::String(a.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Value::String(a.as_string_view().value(i).to_string()),
        DataType::List(_) => list(a.as_list::<i32>().value(i).as_ref())?,
        DataType::LargeList(_) => list(a.as_list::<i64>().value(i).as_ref())?,
        DataType::FixedSizeList(..) => list(a.as_fixed_size_list().value(i).as_ref())?,
        DataType::Struct(fields) => {
            let s = a.as_struct();
            let mut obj = Map::new();
            for (k, f) in fields.iter().enumerate() {
                obj.insert(f.name().clone(), value(s.column(k).as_ref(), i, feature.field(f.name()))?);
            }
            Value::Object(obj)
        }
        DataType::Dictionary(..) => {
            let d = a.as_any_dictionary();
            let key = value(d.keys(), i, &Feature::Plain)?;
            let k = key.as_u64().and_then(|k| usize::try_from(k).ok()).filter(|&k| k < d.values().len());
            let k = k.ok_or_else(|| format!("dictionary key {key} is out of range"))?;
            value(d.values().as_ref(), k, feature)?
        }
        other => return Err(format!("type {other} is not read")),
    })
}
