//! What MODEL names: a local directory with config.json, a Hugging Face hub id, or nothing
//! usable; and the exact stderr text real vLLM 0.32 prints for each start-up failure
//! (taken from tests/data/vllm-reference/startup-failures, with the path or numbers substituted).

use std::path::Path;

use crate::env::Settings;

const FAIL_PORT: &str =
    include_str!("../../../tests/data/vllm-reference/startup-failures/fail-port-in-use.stderr");
const FAIL_NO_MODEL: &str =
    include_str!("../../../tests/data/vllm-reference/startup-failures/fail-no-model.stderr");
const FAIL_EMPTY_DIR: &str =
    include_str!("../../../tests/data/vllm-reference/startup-failures/fail-empty-dir.stderr");
const FAIL_HUB: &str =
    include_str!("../../../tests/data/vllm-reference/startup-failures/fail-hub-repo.stderr");
const FAIL_HUB_OFFLINE: &str = include_str!(
    "../../../tests/data/vllm-reference/startup-failures/fail-hub-repo-offline.stderr"
);
const FAIL_MAXLEN: &str =
    include_str!("../../../tests/data/vllm-reference/startup-failures/fail-maxlen-too-big.stderr");

/// A model that can be served.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The model's own limit (config.json, or 2048 for a hub id), and the config key it came from.
    pub derived_max_len: u64,
    pub derived_key: &'static str,
    /// `model_max_length` of tokenizer_config.json, when present.
    pub tokenizer_max_len: Option<u64>,
    pub architecture: String,
    /// config.json's `hidden_size`: the length of an embedding (1024 for a hub id, as Qwen3-0.6B).
    pub hidden_size: u64,
    /// generation_config.json of the model directory, if any.
    pub generation_config: Option<serde_json::Map<String, serde_json::Value>>,
    pub is_hub: bool,
}

/// Why a start-up fails, as real vLLM would.
#[derive(Debug, Clone, PartialEq)]
pub enum StartFailure {
    /// bind() failed: errno and its text (98, "Address already in use").
    Bind {
        errno: i32,
        text: String,
    },
    NoModel {
        model: String,
    },
    EmptyDir {
        model: String,
    },
    HubUnreachable {
        model: String,
    },
    HubOffline,
    MaxLen {
        user: u64,
        derived: u64,
        key: String,
        tokenizer_max: Option<u64>,
    },
    Oom,
    KvCache,
    KvCacheMaxLen {
        max_model_len: u64,
    },
    Tls {
        text: String,
    },
}

impl StartFailure {
    /// The text real vLLM prints on stderr, and its exit code.
    pub fn stderr_text(&self) -> (String, i32) {
        match self {
            StartFailure::Bind { errno, text } => (
                FAIL_PORT.replace(
                    "OSError: [Errno 98] Address already in use",
                    &format!("OSError: [Errno {errno}] {text}"),
                ),
                1,
            ),
            StartFailure::NoModel { model } => {
                (FAIL_NO_MODEL.replace("/models/no-such-model", model), 1)
            }
            StartFailure::EmptyDir { model } => {
                (FAIL_EMPTY_DIR.replace("/models/empty-dir", model), 1)
            }
            StartFailure::HubUnreachable { model } => (
                FAIL_HUB.replace("nonexistent-org/nonexistent-model", model),
                1,
            ),
            StartFailure::HubOffline => (FAIL_HUB_OFFLINE.to_string(), 1),
            StartFailure::MaxLen {
                user,
                derived,
                key,
                tokenizer_max,
            } => {
                let tok = tokenizer_max
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "None".into());
                (
                    FAIL_MAXLEN
                        .replace(
                            "User-specified max_model_len (4096)",
                            &format!("User-specified max_model_len ({user})"),
                        )
                        .replace(
                            "(max_position_embeddings=2048.0 or model_max_length=None",
                            &format!(
                                "({key}={} or model_max_length={tok}",
                                crate::pyrepr::float_repr(*derived as f64)
                            ),
                        ),
                    1,
                )
            }
            StartFailure::Oom => (
                engine_failure(
                    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.95 GiB. GPU 0 has a total capacity of 79.19 GiB of which 1.02 GiB is free. Including non-PyTorch memory, this process has 78.16 GiB memory in use. Of the allocated memory 76.50 GiB is allocated by PyTorch, and 1.12 GiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)",
                    "  File \"/opt/venv/site-packages/vllm/v1/worker/gpu_worker.py\", line 312, in determine_available_memory\n    self.model_runner.profile_run()\n",
                ),
                1,
            ),
            StartFailure::KvCache => (
                engine_failure(
                    "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine.",
                    "  File \"/opt/venv/site-packages/vllm/v1/core/kv_cache_utils.py\", line 694, in check_enough_kv_cache_memory\n    raise ValueError(\n",
                ),
                1,
            ),
            StartFailure::KvCacheMaxLen { max_model_len } => (
                engine_failure(
                    &format!(
                        "ValueError: The model's max seq len ({max_model_len}) is larger than the maximum number of tokens that can be stored in KV cache ({}). Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.",
                        max_model_len / 2
                    ),
                    "  File \"/opt/venv/site-packages/vllm/v1/core/kv_cache_utils.py\", line 712, in check_enough_kv_cache_memory\n    raise ValueError(\n",
                ),
                1,
            ),
            StartFailure::Tls { text } => (
                format!(
                    "Traceback (most recent call last):\n  File \"/opt/venv/bin/vllm\", line 6, in <module>\n    sys.exit(main())\n             ^^^^^^\n  File \"/opt/venv/site-packages/uvicorn/config.py\", line 407, in load\n    self.ssl = create_ssl_context(\n               ^^^^^^^^^^^^^^^^^^^\n{text}\n"
                ),
                1,
            ),
        }
    }
}

/// An EngineCore start-up failure: the engine process's traceback, then the API server's.
fn engine_failure(last_line: &str, frame: &str) -> String {
    format!(
        "Process EngineCore:\nTraceback (most recent call last):\n  File \"/usr/lib/python3.12/multiprocessing/process.py\", line 314, in _bootstrap\n    self.run()\n  File \"/usr/lib/python3.12/multiprocessing/process.py\", line 108, in run\n    self._target(*self._args, **self._kwargs)\n  File \"/opt/venv/site-packages/vllm/v1/engine/core.py\", line 1087, in run_engine_core\n    raise e\n  File \"/opt/venv/site-packages/vllm/v1/engine/core.py\", line 1074, in run_engine_core\n    engine_core = EngineCoreProc(*args, **kwargs)\n                  ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n{frame}{last_line}\nTraceback (most recent call last):\n  File \"/opt/venv/bin/vllm\", line 6, in <module>\n    sys.exit(main())\n             ^^^^^^\n  File \"/opt/venv/site-packages/vllm/entrypoints/cli/main.py\", line 120, in main\n    args.dispatch_function(args)\n  File \"/opt/venv/site-packages/vllm/entrypoints/cli/serve.py\", line 156, in cmd\n    uvloop.run(run_server(args))\n  File \"/opt/venv/site-packages/vllm/v1/engine/utils.py\", line 1001, in wait_for_engine_startup\n    raise RuntimeError(\nRuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {{}}\n"
    )
}

/// huggingface_hub's repo-id rule: `namespace/name` or `name`, word characters, `-` and `.`.
fn is_valid_repo_id(s: &str) -> bool {
    if s.is_empty() || s.contains("--") || s.contains("..") || s.ends_with(".git") {
        return false;
    }
    let parts: Vec<&str> = s.split('/').collect();
    if parts.len() > 2 {
        return false;
    }
    parts.iter().all(|p| {
        let ok_chars = p
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
        let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        !p.is_empty()
            && p.len() <= 96
            && ok_chars
            && word(p.chars().next())
            && word(p.chars().last())
    })
}

const MAX_LEN_KEYS: &[&str] = &[
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
];

fn read_json(path: &Path) -> Option<serde_json::Map<String, serde_json::Value>> {
    let text = std::fs::read_to_string(path).ok()?;
    match serde_json::from_str(&text).ok()? {
        serde_json::Value::Object(m) => Some(m),
        _ => None,
    }
}

/// Resolves MODEL like vLLM: local directory, else hub id, else the failure vLLM shows.
pub fn resolve(model: &str, settings: &Settings) -> Result<ModelInfo, StartFailure> {
    let path = Path::new(model);
    if path.is_dir() {
        let Some(config) = read_json(&path.join("config.json")) else {
            return Err(StartFailure::EmptyDir {
                model: model.to_string(),
            });
        };
        let mut derived: Option<(u64, &'static str)> = None;
        for key in MAX_LEN_KEYS {
            if let Some(v) = config.get(*key).and_then(|v| v.as_f64())
                && v > 0.0
                && derived.is_none_or(|(d, _)| (v as u64) < d)
            {
                derived = Some((v as u64, key));
            }
        }
        let (derived_max_len, derived_key) = derived.unwrap_or((2048, "max_position_embeddings"));
        let tokenizer_max_len = read_json(&path.join("tokenizer_config.json"))
            .and_then(|t| t.get("model_max_length").and_then(|v| v.as_u64()))
            .filter(|v| *v < 1_000_000_000);
        let architecture = config
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(|a| a.as_str())
            .unwrap_or("LlamaForCausalLM")
            .to_string();
        return Ok(ModelInfo {
            derived_max_len,
            derived_key,
            tokenizer_max_len,
            architecture,
            hidden_size: config
                .get("hidden_size")
                .and_then(|v| v.as_u64())
                .unwrap_or(1024),
            generation_config: read_json(&path.join("generation_config.json")),
            is_hub: false,
        });
    }
    if path.exists() {
        return Err(StartFailure::EmptyDir {
            model: model.to_string(),
        });
    }
    if !is_valid_repo_id(model) {
        return Err(StartFailure::NoModel {
            model: model.to_string(),
        });
    }
    match settings.hub.as_deref() {
        Some("offline") => Err(StartFailure::HubOffline),
        Some("unreachable") => Err(StartFailure::HubUnreachable {
            model: model.to_string(),
        }),
        _ => Ok(ModelInfo {
            derived_max_len: 2048,
            derived_key: "max_position_embeddings",
            tokenizer_max_len: None,
            architecture: "LlamaForCausalLM".into(),
            hidden_size: 1024,
            generation_config: None,
            is_hub: true,
        }),
    }
}

/// The failure forced by `MOCK_VLLM_FAIL`, at the stage where real vLLM would meet it.
pub fn forced_failure(kind: &str, model: &str, max_model_len: u64) -> Option<StartFailure> {
    Some(match kind {
        "port-in-use" => StartFailure::Bind {
            errno: 98,
            text: "Address already in use".into(),
        },
        "no-model" => StartFailure::NoModel {
            model: model.to_string(),
        },
        "empty-dir" => StartFailure::EmptyDir {
            model: model.to_string(),
        },
        "hub" => StartFailure::HubUnreachable {
            model: model.to_string(),
        },
        "hub-offline" => StartFailure::HubOffline,
        "maxlen" => StartFailure::MaxLen {
            user: max_model_len.max(2) * 2,
            derived: max_model_len.max(2),
            key: "max_position_embeddings".into(),
            tokenizer_max: None,
        },
        "oom" => StartFailure::Oom,
        "kv-cache" => StartFailure::KvCache,
        "kv-cache-maxlen" => StartFailure::KvCacheMaxLen { max_model_len },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        assert!(is_valid_repo_id("nonexistent-org/nonexistent-model"));
        assert!(is_valid_repo_id("gpt2"));
        assert!(!is_valid_repo_id("/models/no-such-model"));
        assert!(!is_valid_repo_id("./x"));
        assert!(!is_valid_repo_id("a/b/c"));
    }

    #[test]
    fn maxlen_text() {
        let (t, rc) = StartFailure::MaxLen {
            user: 4096,
            derived: 2048,
            key: "max_position_embeddings".into(),
            tokenizer_max: None,
        }
        .stderr_text();
        assert_eq!(rc, 1);
        assert_eq!(t, FAIL_MAXLEN);
    }
}
