//! `model.safetensors` (single file or sharded with `model.safetensors.index.json`) via the `safetensors` crate.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use finetune_engine::{StateDict, Tensor};
use safetensors::tensor::{Dtype, SafeTensors, TensorView, View};
use serde_json::Value;

use super::{is_skippable_buffer, write_atomic, CheckpointError};

/// Loads every tensor of one `.safetensors` file as f32 (F32, F16 and BF16; other dtypes are an error, except
/// integer buffers that `transformers` rebuilds itself such as `position_ids`, which are skipped).
pub fn load_safetensors(path: &Path) -> Result<StateDict, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io { path: path.to_path_buf(), source })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| diagnose(&bytes, path, e))?;
    let mut out = StateDict::new();
    for (name, view) in st.iter() {
        if let Some(t) = to_tensor(path, name, &view)? {
            out.insert(name.to_string(), t);
        }
    }
    Ok(out)
}

fn to_tensor(path: &Path, name: &str, view: &TensorView<'_>) -> Result<Option<Tensor>, CheckpointError> {
    let data = view.data();
    let values: Vec<f32> = match view.dtype() {
        Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => data.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::I64 | Dtype::I32 | Dtype::I16 | Dtype::I8 | Dtype::U8 if is_skippable_buffer(name) => return Ok(None),
        other => {
            return Err(CheckpointError::UnsupportedDtype {
                path: path.to_path_buf(),
                tensor: name.to_string(),
                dtype: format!("{other:?}"),
            })
        }
    };
    let shape = view.shape().to_vec();
    // The crate has validated byte length against the shape; re-check the element count all the same.
    if shape.iter().product::<usize>() != values.len() {
        return Err(CheckpointError::Tensor {
            path: path.to_path_buf(),
            tensor: name.to_string(),
            message: format!("shape {shape:?} does not match {} elements", values.len()),
        });
    }
    Ok(Some(Tensor::new(shape, values)))
}

/// Turns the crate's error into one naming the offending tensor where the header says which.
fn diagnose(bytes: &[u8], path: &Path, err: safetensors::SafeTensorError) -> CheckpointError {
    let format = |message: String| CheckpointError::Format { path: path.to_path_buf(), message };
    if bytes.len() < 8 {
        return format(format!("truncated: {} bytes, fewer than the 8-byte header length", bytes.len()));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&bytes[..8]);
    let n = u64::from_le_bytes(n);
    let avail = bytes.len() as u64 - 8;
    if n > avail {
        return format(format!("header length {n} is larger than the {avail} bytes that follow it (truncated?)"));
    }
    let header = &bytes[8..8 + n as usize];
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(header) else {
        return format(format!("header is not a JSON object: {err}"));
    };
    let data_len = avail - n;
    for (name, info) in &map {
        if name == "__metadata__" {
            continue;
        }
        let terr =
            |message: String| CheckpointError::Tensor { path: path.to_path_buf(), tensor: name.clone(), message };
        let dtype = info.get("dtype").and_then(Value::as_str).unwrap_or("?");
        let Some(size) = dtype_size(dtype) else {
            return terr(format!("unknown dtype {dtype:?}"));
        };
        let shape: Option<Vec<u64>> =
            info.get("shape").and_then(Value::as_array).and_then(|a| a.iter().map(Value::as_u64).collect());
        let offsets: Option<Vec<u64>> =
            info.get("data_offsets").and_then(Value::as_array).and_then(|a| a.iter().map(Value::as_u64).collect());
        let (Some(shape), Some(offsets)) = (shape, offsets) else {
            return terr("missing or malformed `shape` / `data_offsets`".into());
        };
        let [begin, end] = offsets[..] else {
            return terr(format!("data_offsets {offsets:?} must be [begin, end]"));
        };
        if begin > end || end > data_len {
            return terr(format!("data_offsets [{begin}, {end}] out of range of the {data_len} data bytes"));
        }
        let want = shape.iter().try_fold(size, |a, &d| a.checked_mul(d));
        if want != Some(end - begin) {
            return terr(format!(
                "shape {shape:?} of {dtype} needs {} bytes but data_offsets span {}",
                want.map_or("too many".into(), |w| w.to_string()),
                end - begin
            ));
        }
    }
    format(format!("invalid safetensors file: {err}"))
}

fn dtype_size(d: &str) -> Option<u64> {
    Some(match d {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" | "C64" => 8,
        _ => return None,
    })
}

/// Loads a sharded checkpoint through its `model.safetensors.index.json` (`weight_map`: tensor → shard file).
pub fn load_sharded_safetensors(index: &Path) -> Result<StateDict, CheckpointError> {
    let dir = index.parent().unwrap_or(Path::new("."));
    let weight_map = read_weight_map(index)?;
    let mut shards: Vec<&String> = weight_map.values().collect();
    shards.sort();
    shards.dedup();
    let mut out = StateDict::new();
    for shard in shards {
        let shard_path = dir.join(shard);
        for (name, t) in load_safetensors(&shard_path)? {
            if out.insert(name.clone(), t).is_some() {
                return Err(CheckpointError::Tensor {
                    path: shard_path,
                    tensor: name,
                    message: "appears in more than one shard".into(),
                });
            }
        }
    }
    for (name, shard) in &weight_map {
        if !out.contains_key(name) && !is_skippable_buffer(name) {
            return Err(CheckpointError::Tensor {
                path: dir.join(shard),
                tensor: name.clone(),
                message: format!("listed in {} but not found in the shard", index.display()),
            });
        }
    }
    Ok(out)
}

/// Reads `weight_map` from a sharded checkpoint index, refusing shard names that leave the directory.
pub(crate) fn read_weight_map(index: &Path) -> Result<BTreeMap<String, String>, CheckpointError> {
    let format = |message: String| CheckpointError::Format { path: index.to_path_buf(), message };
    let text =
        std::fs::read_to_string(index).map_err(|source| CheckpointError::Io { path: index.to_path_buf(), source })?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format(format!("not valid JSON: {e}")))?;
    let map = v.get("weight_map").and_then(Value::as_object).ok_or_else(|| format("no `weight_map` object".into()))?;
    let mut out = BTreeMap::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| format(format!("weight_map[{name:?}] is not a string")))?;
        if file.is_empty() || file.contains(['/', '\\']) || file == ".." || file == "." {
            return Err(format(format!("weight_map[{name:?}] = {file:?} is not a file name in this directory")));
        }
        out.insert(name.clone(), file.to_string());
    }
    Ok(out)
}

/// A tensor as the crate's writer sees it: F32, little-endian.
struct F32View<'a>(&'a Tensor);

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.0.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.data.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.0.data.len() * 4
    }
}

/// Writes a state dict as one F32 `.safetensors` file, atomically (temp file then rename), with the
/// `{"format": "pt"}` metadata `transformers` expects.
pub fn save_safetensors(state: &StateDict, path: &Path) -> Result<(), CheckpointError> {
    for (name, t) in state {
        if t.shape.iter().product::<usize>() != t.data.len() {
            return Err(CheckpointError::Tensor {
                path: path.to_path_buf(),
                tensor: name.clone(),
                message: format!("shape {:?} does not match {} elements", t.shape, t.data.len()),
            });
        }
    }
    let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let bytes = safetensors::tensor::serialize(state.iter().map(|(k, t)| (k.as_str(), F32View(t))), Some(metadata))
        .map_err(|e| CheckpointError::Format { path: path.to_path_buf(), message: format!("serialising: {e}") })?;
    write_atomic(path, &bytes).map_err(|source| CheckpointError::Io { path: path.to_path_buf(), source })
}
