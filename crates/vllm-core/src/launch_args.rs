//! What a launch is: [`LaunchArgs`], what a caller may ask of a launch, validated, and
//! [`command_line`], the exact `vllm serve` argument vector built from it.
//!
//! It sits low in the crate (it needs only the error type and redaction) because the
//! configuration's catalog, the model records and the launcher all speak in it.
//!
//! The argument vector is the record of a launch: it is stored (secrets removed) and a
//! restore relaunches with exactly it, so building it is deterministic.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// vLLM's `--dtype` choices.
pub const DTYPES: &[&str] = &["auto", "half", "float16", "bfloat16", "float", "float32"];
/// `--quantization` values we pass through (`none` means the flag is left out).
pub const QUANTIZATIONS: &[&str] = &[
    "none",
    "awq",
    "awq_marlin",
    "gptq",
    "gptq_marlin",
    "fp8",
    "bitsandbytes",
    "compressed-tensors",
    "gguf",
    "marlin",
];

/// The launch parameters a caller may give, as stored with a launch record.
///
/// `None` means "vLLM's default": the flag is not passed, so the record says only what
/// the caller chose.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchArgs {
    pub tensor_parallel_size: Option<u32>,
    pub pipeline_parallel_size: Option<u32>,
    pub gpu_memory_utilization: Option<f64>,
    pub max_model_len: Option<u64>,
    pub quantization: Option<String>,
    pub dtype: Option<String>,
    pub enforce_eager: Option<bool>,
    pub enable_prefix_caching: Option<bool>,
    /// Extra `vllm serve` arguments, one element per argument (never a shell string).
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// With the Ray backend, the node to run on: its address or Ray's node id (without
    /// it, Ray's scheduler chooses). Not a `vllm serve` argument.
    pub node: Option<String>,
}

impl LaunchArgs {
    /// Checks ranges and choices; errors name the offending field.
    pub fn validate(&self) -> Result<()> {
        if let Some(tp) = self.tensor_parallel_size
            && !(1..=64).contains(&tp)
        {
            return Err(Error::invalid(
                "tensor_parallel_size",
                format!("{tp} is not between 1 and 64"),
            ));
        }
        if let Some(pp) = self.pipeline_parallel_size
            && !(1..=64).contains(&pp)
        {
            return Err(Error::invalid(
                "pipeline_parallel_size",
                format!("{pp} is not between 1 and 64"),
            ));
        }
        if let Some(u) = self.gpu_memory_utilization
            && !(u > 0.0 && u <= 1.0)
        {
            return Err(Error::invalid(
                "gpu_memory_utilization",
                format!("{u} is not a fraction in (0, 1]"),
            ));
        }
        if let Some(l) = self.max_model_len
            && !(16..=16_777_216).contains(&l)
        {
            return Err(Error::invalid(
                "max_model_len",
                format!("{l} is not between 16 and 16777216 tokens"),
            ));
        }
        if let Some(d) = &self.dtype
            && !DTYPES.contains(&d.as_str())
        {
            return Err(Error::invalid(
                "dtype",
                format!("`{d}` is not one of {}", DTYPES.join(", ")),
            ));
        }
        if let Some(q) = &self.quantization
            && !QUANTIZATIONS.contains(&q.as_str())
        {
            return Err(Error::invalid(
                "quantization",
                format!("`{q}` is not one of {}", QUANTIZATIONS.join(", ")),
            ));
        }
        if let Some(node) = &self.node
            && (node.is_empty()
                || node.len() > 128
                || !node
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '-' | '_')))
        {
            return Err(Error::invalid(
                "node",
                format!("`{node}` is not a node's address or Ray node id"),
            ));
        }
        for (i, a) in self.extra_args.iter().enumerate() {
            if a.contains('\0') || a.len() > 4096 {
                return Err(Error::invalid(
                    format!("extra_args[{i}]"),
                    "arguments may not contain NUL or exceed 4096 bytes",
                ));
            }
            // Flags we set ourselves would be silently overridden or duplicated.
            let flag = a.split('=').next().unwrap_or(a);
            if OWNED_FLAGS.contains(&flag) {
                return Err(Error::invalid(
                    format!("extra_args[{i}]"),
                    format!("`{flag}` is set by vllm-mcp; use the matching parameter instead"),
                ));
            }
            // Launch arguments are stored, shown and saved with states: a secret among
            // them would be too. Secrets come from the environment.
            if flag
                .strip_prefix("--")
                .is_some_and(crate::redact::is_secret_name)
            {
                return Err(Error::invalid(
                    format!("extra_args[{i}]"),
                    format!(
                        "`{flag}` carries a secret, and launch arguments are stored and shown; \
                         pass it through the environment instead ([launcher.env], or launcher.api_key_env for the API key)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `self` with unset fields taken from `defaults` (catalog presets).
    pub fn or(mut self, defaults: &LaunchArgs) -> LaunchArgs {
        self.tensor_parallel_size = self.tensor_parallel_size.or(defaults.tensor_parallel_size);
        self.pipeline_parallel_size = self
            .pipeline_parallel_size
            .or(defaults.pipeline_parallel_size);
        self.gpu_memory_utilization = self
            .gpu_memory_utilization
            .or(defaults.gpu_memory_utilization);
        self.max_model_len = self.max_model_len.or(defaults.max_model_len);
        self.quantization = self.quantization.or(defaults.quantization.clone());
        self.dtype = self.dtype.or(defaults.dtype.clone());
        self.enforce_eager = self.enforce_eager.or(defaults.enforce_eager);
        self.enable_prefix_caching = self
            .enable_prefix_caching
            .or(defaults.enable_prefix_caching);
        if self.extra_args.is_empty() {
            self.extra_args = defaults.extra_args.clone();
        }
        self.node = self.node.or(defaults.node.clone());
        self
    }

    /// GPUs the launch occupies: tensor × pipeline parallel size.
    pub fn gpus_needed(&self) -> u32 {
        self.tensor_parallel_size.unwrap_or(1) * self.pipeline_parallel_size.unwrap_or(1)
    }

    /// The fields that differ from `other`, as `{field: {"current": a, "requested": b}}`.
    /// Arguments that do not serialise as an object are an internal error, never "no
    /// difference" (which would make a different launch look like the running one).
    pub fn differences(&self, other: &LaunchArgs) -> Result<Map<String, Value>> {
        let (a, b) = (self.as_object()?, other.as_object()?);
        let mut out = Map::new();
        for (k, va) in &a {
            let vb = b.get(k).cloned().unwrap_or(Value::Null);
            if *va != vb {
                out.insert(
                    k.clone(),
                    serde_json::json!({"current": va, "requested": vb}),
                );
            }
        }
        Ok(out)
    }

    fn as_object(&self) -> Result<Map<String, Value>> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(other) => Err(Error::Internal(format!(
                "launch arguments serialise as {other}, not an object"
            ))),
            Err(e) => Err(Error::Internal(format!(
                "launch arguments do not serialise: {e}"
            ))),
        }
    }
}

/// Flags the launcher sets itself; `extra_args` may not repeat them.
pub const OWNED_FLAGS: &[&str] = &[
    "--host",
    "--port",
    "--served-model-name",
    "--model",
    "--api-key",
    "--override-generation-config",
];

/// Sampling defaults for a model, from `set-model-config`. Applied at launch through
/// `--override-generation-config`.
pub type SamplingDefaults = BTreeMap<String, Value>;

/// Everything [`command_line`] needs besides the args.
#[derive(Debug, Clone)]
pub struct CommandSpec<'a> {
    /// The configured vLLM command (`["vllm"]`).
    pub command: &'a [String],
    /// What `vllm serve` loads (repo id or directory).
    pub source: &'a str,
    /// The served name.
    pub model_id: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub args: &'a LaunchArgs,
    pub sampling: &'a SamplingDefaults,
    /// `--distributed-executor-backend`, when configured and needed.
    pub executor_backend: Option<&'a str>,
}

/// The full argument vector: `<command> serve <source> --host … --port …
/// --served-model-name <id>` plus a flag per parameter given, the sampling defaults and
/// `extra_args` last. Returns (program, arguments).
pub fn command_line(spec: &CommandSpec<'_>) -> (String, Vec<String>) {
    let program = spec.command[0].clone();
    let mut a: Vec<String> = spec.command[1..].to_vec();
    let push = |a: &mut Vec<String>, flag: &str, v: String| {
        a.push(flag.to_string());
        a.push(v);
    };
    a.push("serve".into());
    a.push(spec.source.to_string());
    push(&mut a, "--host", spec.host.to_string());
    push(&mut a, "--port", spec.port.to_string());
    push(&mut a, "--served-model-name", spec.model_id.to_string());
    let args = spec.args;
    if let Some(v) = args.tensor_parallel_size {
        push(&mut a, "--tensor-parallel-size", v.to_string());
    }
    if let Some(v) = args.pipeline_parallel_size {
        push(&mut a, "--pipeline-parallel-size", v.to_string());
    }
    if let Some(v) = args.gpu_memory_utilization {
        push(&mut a, "--gpu-memory-utilization", v.to_string());
    }
    if let Some(v) = args.max_model_len {
        push(&mut a, "--max-model-len", v.to_string());
    }
    if let Some(q) = &args.quantization
        && q != "none"
    {
        push(&mut a, "--quantization", q.clone());
    }
    if let Some(d) = &args.dtype {
        push(&mut a, "--dtype", d.clone());
    }
    if args.enforce_eager == Some(true) {
        a.push("--enforce-eager".into());
    }
    match args.enable_prefix_caching {
        Some(true) => a.push("--enable-prefix-caching".into()),
        Some(false) => a.push("--no-enable-prefix-caching".into()),
        None => {}
    }
    if let Some(b) = spec.executor_backend
        && args.gpus_needed() > 1
    {
        push(&mut a, "--distributed-executor-backend", b.to_string());
    }
    if let Some(o) = generation_override(spec.sampling) {
        push(&mut a, "--override-generation-config", o);
    }
    a.extend(args.extra_args.iter().cloned());
    (program, a)
}

/// The `--override-generation-config` JSON for sampling defaults. vLLM names the output
/// length `max_new_tokens` there (verified on vLLM 0.32: `max_tokens` is ignored).
pub fn generation_override(sampling: &SamplingDefaults) -> Option<String> {
    if sampling.is_empty() {
        return None;
    }
    let m: Map<String, Value> = sampling
        .iter()
        .map(|(k, v)| {
            let k = if k == "max_tokens" {
                "max_new_tokens"
            } else {
                k.as_str()
            };
            (k.to_string(), v.clone())
        })
        .collect();
    Some(Value::Object(m).to_string())
}

/// Checks a model id: letters, digits and `._-/:`, no `..` segment, no leading `-`.
/// It becomes a served name, a file name part and a URI segment, so nothing else passes.
pub fn validate_model_id(field: &str, id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 256 {
        return Err(Error::invalid(field, "must be 1 to 256 characters"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':')))
    {
        return Err(Error::invalid(
            field,
            format!("character {c:?} is not allowed (letters, digits and ._-/: only)"),
        ));
    }
    if id.split('/').any(|seg| seg == "..") {
        return Err(Error::invalid(field, "`..` path segments are not allowed"));
    }
    if id.starts_with('-') {
        return Err(Error::invalid(field, "may not start with `-`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_has_a_flag_per_parameter_given() {
        let args = LaunchArgs {
            tensor_parallel_size: Some(2),
            gpu_memory_utilization: Some(0.85),
            max_model_len: Some(4096),
            quantization: Some("none".into()),
            dtype: Some("bfloat16".into()),
            enforce_eager: Some(true),
            enable_prefix_caching: Some(false),
            extra_args: vec!["--seed".into(), "7".into()],
            ..LaunchArgs::default()
        };
        let mut sampling = SamplingDefaults::new();
        sampling.insert("max_tokens".into(), 3.into());
        sampling.insert("temperature".into(), 0.0.into());
        let cmd = vec![
            "python3".to_string(),
            "-m".into(),
            "vllm.entrypoints.cli.main".into(),
        ];
        let (prog, argv) = command_line(&CommandSpec {
            command: &cmd,
            source: "/models/tiny",
            model_id: "tiny",
            host: "127.0.0.1",
            port: 8123,
            args: &args,
            sampling: &sampling,
            executor_backend: Some("ray"),
        });
        assert_eq!(prog, "python3");
        assert_eq!(
            argv.join(" "),
            "-m vllm.entrypoints.cli.main serve /models/tiny --host 127.0.0.1 --port 8123 \
             --served-model-name tiny --tensor-parallel-size 2 --gpu-memory-utilization 0.85 \
             --max-model-len 4096 --dtype bfloat16 --enforce-eager --no-enable-prefix-caching \
             --distributed-executor-backend ray \
             --override-generation-config {\"max_new_tokens\":3,\"temperature\":0.0} --seed 7"
        );
    }

    #[test]
    fn bad_launch_args_name_their_field() {
        let cases: Vec<(LaunchArgs, &str)> = vec![
            (
                LaunchArgs {
                    tensor_parallel_size: Some(0),
                    ..Default::default()
                },
                "tensor_parallel_size",
            ),
            (
                LaunchArgs {
                    gpu_memory_utilization: Some(1.5),
                    ..Default::default()
                },
                "gpu_memory_utilization",
            ),
            (
                LaunchArgs {
                    gpu_memory_utilization: Some(f64::NAN),
                    ..Default::default()
                },
                "gpu_memory_utilization",
            ),
            (
                LaunchArgs {
                    dtype: Some("float8".into()),
                    ..Default::default()
                },
                "dtype",
            ),
            (
                LaunchArgs {
                    quantization: Some("magic".into()),
                    ..Default::default()
                },
                "quantization",
            ),
            (
                LaunchArgs {
                    max_model_len: Some(0),
                    ..Default::default()
                },
                "max_model_len",
            ),
            (
                LaunchArgs {
                    extra_args: vec!["--port=1".into()],
                    ..Default::default()
                },
                "extra_args[0]",
            ),
        ];
        for (args, field) in cases {
            let e = args.validate().unwrap_err();
            assert_eq!(e.details()["field"], field, "{e}");
        }
        assert!(LaunchArgs::default().validate().is_ok());
    }

    #[test]
    fn model_ids() {
        for ok in [
            "meta-llama/Llama-3.1-8B-Instruct",
            "/models/tiny-model",
            "tiny",
            "org/m:v2",
        ] {
            assert!(validate_model_id("model_id", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../etc/passwd",
            "/models/../x",
            "a b",
            "x;rm -rf /",
            "$(id)",
            "-rf",
            "a\nb",
            "é",
        ] {
            assert!(validate_model_id("model_id", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn differences_say_what_changed() {
        let a = LaunchArgs {
            max_model_len: Some(512),
            ..Default::default()
        };
        let b = LaunchArgs {
            max_model_len: Some(1024),
            ..Default::default()
        };
        let d = a.differences(&b).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d["max_model_len"]["current"], 512);
        assert_eq!(d["max_model_len"]["requested"], 1024);
        assert!(a.differences(&a.clone()).unwrap().is_empty());
    }
}
