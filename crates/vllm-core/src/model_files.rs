//! Model metadata on local disk: model directories and the Hugging Face cache.
//!
//! vLLM's HTTP API does not expose a model's `config.json` or its weight sizes, yet the
//! memory check before a launch and `get-model-info` need them. They come from the
//! model directory (an absolute path) or from the Hugging Face hub cache
//! (`models--org--name/snapshots/<rev>/`), read at most once per TTL.

use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The hub cache directory: `HF_HUB_CACHE`, `HF_HOME/hub`, `XDG_CACHE_HOME/huggingface/hub`,
/// or `~/.cache/huggingface/hub`, as `huggingface_hub` resolves it.
pub fn hub_cache_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(d) = env("HF_HUB_CACHE") {
        return Some(PathBuf::from(d));
    }
    if let Some(h) = env("HF_HOME") {
        return Some(PathBuf::from(h).join("hub"));
    }
    let cache = env("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(cache.join("huggingface").join("hub"))
}

/// True for what looks like a hub repo id (`org/name` or `name`), not a path.
pub fn is_repo_id(source: &str) -> bool {
    !source.starts_with('/') && !source.starts_with('.') && source.split('/').count() <= 2
}

/// The local directory holding `source`: itself when it is an absolute directory, else
/// the snapshot `refs/main` names in the hub cache (or the newest snapshot).
pub fn resolve_dir(source: &str, hub_cache: Option<&Path>) -> Option<PathBuf> {
    let p = Path::new(source);
    if p.is_absolute() {
        return p.is_dir().then(|| p.to_path_buf());
    }
    if !is_repo_id(source) {
        return None;
    }
    let repo = hub_cache?.join(format!("models--{}", source.replace('/', "--")));
    let snapshots = repo.join("snapshots");
    if let Ok(rev) = std::fs::read_to_string(repo.join("refs").join("main")) {
        let dir = snapshots.join(rev.trim());
        if dir.is_dir() {
            return Some(dir);
        }
    }
    std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

/// The repo ids present in the hub cache (for `list-models`), sorted.
pub fn cached_repo_ids(hub_cache: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(hub_cache)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let rest = name.strip_prefix("models--")?;
            // Only snapshots with a config.json are models one can serve.
            let id = rest.replacen("--", "/", 1);
            resolve_dir(&id, Some(hub_cache))
                .filter(|d| d.join("config.json").is_file())
                .map(|_| id)
        })
        .collect();
    ids.sort();
    ids
}

/// Total bytes of the weight files (`*.safetensors`, else `*.bin`/`*.pt`) in a model
/// directory, following the cache's symlinks; `None` when there are none.
pub fn weights_bytes(dir: &Path) -> Option<u64> {
    let files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let len = std::fs::metadata(e.path()).ok()?.len();
            Some((name, len))
        })
        .collect();
    let sum = |ext: &[&str]| -> u64 {
        files
            .iter()
            .filter(|(n, _)| ext.iter().any(|x| n.ends_with(x)))
            .map(|(_, l)| l)
            .sum()
    };
    let st = sum(&[".safetensors"]);
    let total = if st > 0 { st } else { sum(&[".bin", ".pt"]) };
    (total > 0).then_some(total)
}

/// Reads and parses `config.json` of a model directory.
pub fn read_config_json(dir: &Path) -> Result<Value> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::invalid("model_id", format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::invalid("model_id", format!("{} is not JSON: {e}", path.display())))
}

/// `config.json` by model source, cached for a TTL so a burst of tool calls reads the
/// disk once. A missing model is cached too (`None`), for the same TTL.
#[derive(Debug)]
pub struct ConfigCache {
    ttl: Duration,
    hub_cache: Option<PathBuf>,
    entries: Mutex<HashMap<String, (Instant, Option<Value>)>>,
}

impl ConfigCache {
    /// A cache over the hub cache found in the process environment.
    pub fn new(ttl: Duration) -> ConfigCache {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        ConfigCache::with_hub_cache(ttl, hub_cache_dir(&env))
    }

    /// A cache over an explicit hub cache directory.
    pub fn with_hub_cache(ttl: Duration, hub_cache: Option<PathBuf>) -> ConfigCache {
        ConfigCache {
            ttl,
            hub_cache,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The hub cache directory in use.
    pub fn hub_cache(&self) -> Option<&Path> {
        self.hub_cache.as_deref()
    }

    /// `config.json` of `source`, or `None` when it is not on local disk.
    pub fn config_json(&self, source: &str) -> Option<Value> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, v)) = entries.get(source)
            && at.elapsed() < self.ttl
        {
            return v.clone();
        }
        let v =
            resolve_dir(source, self.hub_cache.as_deref()).and_then(|d| read_config_json(&d).ok());
        entries.insert(source.to_string(), (Instant::now(), v.clone()));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_hub(root: &Path, id: &str, config: &str, weights: &[(&str, usize)]) -> PathBuf {
        let repo = root.join(format!("models--{}", id.replace('/', "--")));
        let snap = repo.join("snapshots").join("abc123");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        std::fs::write(snap.join("config.json"), config).unwrap();
        // The real cache stores blobs and symlinks snapshots to them.
        let blobs = repo.join("blobs");
        std::fs::create_dir_all(&blobs).unwrap();
        for (name, size) in weights {
            let blob = blobs.join(name);
            std::fs::write(&blob, vec![0u8; *size]).unwrap();
            std::os::unix::fs::symlink(&blob, snap.join(name)).unwrap();
        }
        snap
    }

    #[test]
    fn hub_cache_layout() {
        let t = tempfile::tempdir().unwrap();
        let snap = fake_hub(
            t.path(),
            "org/tiny",
            r#"{"num_hidden_layers": 2}"#,
            &[
                ("model-00001.safetensors", 1000),
                ("model-00002.safetensors", 24),
            ],
        );
        fake_hub(t.path(), "org/empty", "{}", &[]);
        std::fs::remove_file(
            t.path()
                .join("models--org--empty/snapshots/abc123/config.json"),
        )
        .unwrap();
        assert_eq!(resolve_dir("org/tiny", Some(t.path())), Some(snap.clone()));
        assert_eq!(weights_bytes(&snap), Some(1024));
        assert_eq!(cached_repo_ids(t.path()), ["org/tiny"]);
        assert_eq!(resolve_dir("org/absent", Some(t.path())), None);
        assert_eq!(resolve_dir(snap.to_str().unwrap(), None), Some(snap));
        assert_eq!(resolve_dir("../etc", Some(t.path())), None);
    }

    #[test]
    fn config_cache_reads_once_per_ttl() {
        let t = tempfile::tempdir().unwrap();
        let snap = fake_hub(
            t.path(),
            "org/m",
            r#"{"max_position_embeddings": 2048}"#,
            &[],
        );
        let cache =
            ConfigCache::with_hub_cache(Duration::from_secs(60), Some(t.path().to_path_buf()));
        assert_eq!(
            cache.config_json("org/m").unwrap()["max_position_embeddings"],
            2048
        );
        std::fs::write(
            snap.join("config.json"),
            r#"{"max_position_embeddings": 4096}"#,
        )
        .unwrap();
        assert_eq!(
            cache.config_json("org/m").unwrap()["max_position_embeddings"],
            2048,
            "served from the cache within the TTL"
        );
        let fresh = ConfigCache::with_hub_cache(Duration::ZERO, Some(t.path().to_path_buf()));
        assert_eq!(
            fresh.config_json("org/m").unwrap()["max_position_embeddings"],
            4096
        );
        assert!(fresh.config_json("org/nothing").is_none());
    }

    #[test]
    fn hub_cache_dir_follows_huggingface_hub() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            hub_cache_dir(&env(&[("HF_HUB_CACHE", "/a")])),
            Some("/a".into())
        );
        assert_eq!(
            hub_cache_dir(&env(&[("HF_HOME", "/h")])),
            Some("/h/hub".into())
        );
        assert_eq!(
            hub_cache_dir(&env(&[("HOME", "/home/u")])),
            Some("/home/u/.cache/huggingface/hub".into())
        );
    }
}
