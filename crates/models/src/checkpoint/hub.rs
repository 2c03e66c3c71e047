//! Finding a model on disk: a plain directory, a hub-cache repository folder, or a model id looked up in the
//! Hugging Face cache (`<cache>/models--org--name/snapshots/<rev>/`, with `refs/main` naming the revision).

use std::path::{Path, PathBuf};

use super::CheckpointError;

/// Cache roots in the order `huggingface_hub` uses: `$HF_HUB_CACHE` (or the older `$HUGGINGFACE_HUB_CACHE`),
/// `$HF_HOME/hub`, `$XDG_CACHE_HOME/huggingface/hub`, `~/.cache/huggingface/hub`.
pub fn cache_roots() -> Vec<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let mut roots = Vec::new();
    for k in ["HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"] {
        if let Some(p) = var(k) {
            roots.push(p);
        }
    }
    if let Some(p) = var("HF_HOME") {
        roots.push(p.join("hub"));
    }
    if let Some(p) = var("XDG_CACHE_HOME") {
        roots.push(p.join("huggingface").join("hub"));
    }
    if let Some(p) = var("HOME") {
        roots.push(p.join(".cache").join("huggingface").join("hub"));
    }
    roots.dedup();
    roots
}

/// Resolves `spec` to a directory holding the model files: an existing directory (a model folder, a snapshot,
/// or a `models--org--name` cache folder), else a model id such as `sentence-transformers/all-MiniLM-L6-v2`
/// (optionally `@revision`) searched in [`cache_roots`].
pub fn resolve_model_dir(spec: &str) -> Result<PathBuf, CheckpointError> {
    resolve_in(spec, &cache_roots())
}

/// [`resolve_model_dir`] with explicit cache roots.
pub fn resolve_in(spec: &str, roots: &[PathBuf]) -> Result<PathBuf, CheckpointError> {
    let direct = Path::new(spec);
    if direct.is_dir() {
        if direct.join("snapshots").is_dir() {
            return snapshot(direct, "main");
        }
        return Ok(direct.to_path_buf());
    }
    if direct.is_file() {
        return Ok(direct.to_path_buf());
    }
    let (id, revision) = spec.split_once('@').unwrap_or((spec, "main"));
    if !is_model_id(id) {
        return Err(CheckpointError::NotFound {
            message: format!("{spec}: no such file or directory, and not a model id like `org/name`"),
        });
    }
    let folder = format!("models--{}", id.replace('/', "--"));
    for root in roots {
        let repo = root.join(&folder);
        if repo.is_dir() {
            return snapshot(&repo, revision);
        }
    }
    let searched: Vec<String> = roots.iter().map(|r| r.join(&folder).display().to_string()).collect();
    Err(CheckpointError::NotFound {
        message: format!(
            "model {id:?} is neither a directory nor in the Hugging Face cache (looked in: {})",
            if searched.is_empty() { "no cache directory is configured".to_string() } else { searched.join(", ") }
        ),
    })
}

fn is_model_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('/').collect();
    (1..=2).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

/// `repo/snapshots/<commit>` for a branch/tag name (through `refs/<name>`) or a commit hash.
fn snapshot(repo: &Path, revision: &str) -> Result<PathBuf, CheckpointError> {
    let safe = |s: &str| !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\\']);
    let not_found = |message: String| CheckpointError::NotFound { message };
    if !safe(revision) {
        return Err(not_found(format!("{}: invalid revision {revision:?}", repo.display())));
    }
    let snapshots = repo.join("snapshots");
    let direct = snapshots.join(revision);
    if direct.is_dir() {
        return Ok(direct);
    }
    let ref_file = repo.join("refs").join(revision);
    match std::fs::read_to_string(&ref_file) {
        Ok(commit) => {
            let commit = commit.trim();
            if !safe(commit) {
                return Err(not_found(format!("{}: invalid commit {commit:?}", ref_file.display())));
            }
            let dir = snapshots.join(commit);
            if dir.is_dir() {
                Ok(dir)
            } else {
                Err(not_found(format!("{} names {commit}, but {} is missing", ref_file.display(), dir.display())))
            }
        }
        Err(_) if revision == "main" => {
            // No ref recorded (e.g. a copied cache): accept a single snapshot, refuse to guess among several.
            let entries: Vec<PathBuf> = std::fs::read_dir(&snapshots)
                .map_err(|source| CheckpointError::Io { path: snapshots.clone(), source })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect();
            match entries.as_slice() {
                [one] => Ok(one.clone()),
                [] => Err(not_found(format!("{}: no snapshot", snapshots.display()))),
                _ => Err(not_found(format!(
                    "{}: several snapshots and no refs/main; name one as <id>@<commit>",
                    snapshots.display()
                ))),
            }
        }
        Err(_) => Err(not_found(format!("{}: no ref or snapshot named {revision:?}", repo.display()))),
    }
}

/// The first entry of `architectures` in the `config.json` of the model `spec` names (resolved as
/// [`resolve_model_dir`]), e.g. `BertForSequenceClassification` or `LlamaForCausalLM`; empty when the config
/// lists none. What `serve` and `merge` use to tell a classifier from a causal LM.
pub fn model_architecture(spec: &str) -> Result<String, CheckpointError> {
    Ok(config_json(spec)?["architectures"][0].as_str().unwrap_or("").to_string())
}

/// The `model_type` of a model's config.json ("" when absent).
pub fn model_type(spec: &str) -> Result<String, CheckpointError> {
    Ok(config_json(spec)?["model_type"].as_str().unwrap_or("").to_string())
}

fn config_json(spec: &str) -> Result<serde_json::Value, CheckpointError> {
    let path = resolve_model_dir(spec)?.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| CheckpointError::Io { path: path.clone(), source })?;
    serde_json::from_str(&text).map_err(|e| CheckpointError::Format { path, message: e.to_string() })
}

/// A causal language model's architecture name (`...ForCausalLM`, GPT-2's `...LMHeadModel`).
pub fn is_causal_lm_architecture(arch: &str) -> bool {
    arch.ends_with("ForCausalLM") || arch.ends_with("LMHeadModel")
}

/// A sequence or token classifier's architecture name.
pub fn is_classifier_architecture(arch: &str) -> bool {
    arch.ends_with("ForSequenceClassification") || arch.ends_with("ForTokenClassification")
}
