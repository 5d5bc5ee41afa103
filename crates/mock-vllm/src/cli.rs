//! `vllm serve` command line, parsed by hand the way vLLM's argparse parser does it
//! (`--flag value`, `--flag=value`, `--no-flag`, underscores accepted for dashes, argparse's
//! error messages and exit code 2).

use crate::pyrepr::{PyVal, str_repr};

/// What argparse would do with the command line.
#[derive(Debug)]
pub enum Command {
    /// `serve MODEL ...`
    Serve(Box<ServeArgs>),
    /// Text for stdout, exit 0 (`--help`, `--version`).
    Print(String),
    /// Text for stderr, exit code (argparse errors: 2).
    Fail(String, i32),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Str,
    Int,
    Float,
    HumanInt,
    /// argparse.BooleanOptionalAction: `--x` / `--no-x`.
    Bool,
    Choice(&'static [&'static str]),
    IntChoice(&'static [i64]),
    /// nargs="+"
    List,
    Json,
}

struct Spec {
    dest: &'static str,
    short: Option<&'static str>,
    kind: Kind,
}

const DTYPES: &[&str] = &["auto", "half", "float16", "bfloat16", "float", "float32"];
const KV_DTYPES: &[&str] = &[
    "auto",
    "bfloat16",
    "fp8",
    "fp8_ds_mla",
    "fp8_e4m3",
    "fp8_e5m2",
    "fp8_inc",
];
const RUNNERS: &[&str] = &["auto", "draft", "generate", "pooling"];
const CONVERTS: &[&str] = &["auto", "classify", "embed", "none"];
const LOG_LEVELS: &[&str] = &["critical", "debug", "error", "info", "trace", "warning"];
const BACKENDS: &[&str] = &["external_launcher", "mp", "ray", "uni"];
const LORA_RANKS: &[i64] = &[1, 8, 16, 32, 64, 128, 256, 320, 512];
const QUANTS: &[&str] = &[
    "aqlm",
    "awq",
    "awq_marlin",
    "bitblas",
    "bitsandbytes",
    "compressed-tensors",
    "experts_int8",
    "fbgemm_fp8",
    "fp8",
    "gguf",
    "gptq",
    "gptq_bitblas",
    "gptq_marlin",
    "hqq",
    "modelopt",
    "modelopt_fp4",
    "moe_wna16",
    "mxfp4",
    "torchao",
    "tpu_int8",
];

/// Flags in vLLM's order (frontend first, then engine), which is the order of `non-default args`.
const SPECS: &[Spec] = &[
    Spec {
        dest: "host",
        short: None,
        kind: Kind::Str,
    },
    Spec {
        dest: "port",
        short: None,
        kind: Kind::Int,
    },
    Spec {
        dest: "uvicorn_log_level",
        short: None,
        kind: Kind::Choice(LOG_LEVELS),
    },
    Spec {
        dest: "disable_uvicorn_access_log",
        short: None,
        kind: Kind::Bool,
    },
    Spec {
        dest: "api_key",
        short: None,
        kind: Kind::Str,
    },
    Spec {
        dest: "lora_modules",
        short: None,
        kind: Kind::List,
    },
    Spec {
        dest: "chat_template",
        short: None,
        kind: Kind::Str,
    },
    Spec {
        dest: "ssl_keyfile",
        short: None,
        kind: Kind::Str,
    },
    Spec {
        dest: "ssl_certfile",
        short: None,
        kind: Kind::Str,
    },
    Spec {
        dest: "enable_auto_tool_choice",
        short: None,
        kind: Kind::Bool,
    },
    Spec {
        dest: "tool_call_parser",
        short: None,
        kind: Kind::Str,
    },
    Spec {
        dest: "disable_frontend_multiprocessing",
        short: None,
        kind: Kind::Bool,
    },
    Spec {
        dest: "enable_server_load_tracking",
        short: None,
        kind: Kind::Bool,
    },
    Spec {
        dest: "enable_log_requests",
        short: None,
        kind: Kind::Bool,
    },
    Spec {
        dest: "disable_log_requests",
        short: None,
        kind: Kind::Bool,
    },
    Spec {
        dest: "model",
        short: None,
        kind: Kind::Str,
    },
    Spec {
        dest: "runner",
        short: None,
        kind: Kind::Choice(RUNNERS),
    },
    Spec {
        dest: "convert",
        short: None,
        kind: Kind::Choice(CONVERTS),
    },
    Spec {
        dest: "tokenizer",
        short: None,
        kind: Kind::Str,
    },
    Spec {
        dest: "trust_remote_code",
        short: None,
        kind: Kind::Bool,
    },
    Spec {
        dest: "dtype",
        short: None,
        kind: Kind::Choice(DTYPES),
    },
    Spec {
        dest: "seed",
        short: None,
        kind: Kind::Int,
    },
    Spec {
        dest: "revision",
        short: None,
        kind: Kind::Str,
    },
    Spec {
        dest: "max_model_len",
        short: None,
        kind: Kind::HumanInt,
    },
    Spec {
        dest: "quantization",
        short: Some("-q"),
        kind: Kind::Choice(QUANTS),
    },
    Spec {
        dest: "enforce_eager",
        short: None,
        kind: Kind::Bool,
    },
    Spec {
        dest: "served_model_name",
        short: None,
        kind: Kind::List,
    },
    Spec {
        dest: "generation_config",
        short: None,
        kind: Kind::Str,
    },
    Spec {
        dest: "override_generation_config",
        short: None,
        kind: Kind::Json,
    },
    Spec {
        dest: "load_format",
        short: None,
        kind: Kind::Str,
    },
    Spec {
        dest: "download_dir",
        short: None,
        kind: Kind::Str,
    },
    Spec {
        dest: "distributed_executor_backend",
        short: None,
        kind: Kind::Choice(BACKENDS),
    },
    Spec {
        dest: "pipeline_parallel_size",
        short: Some("-pp"),
        kind: Kind::Int,
    },
    Spec {
        dest: "tensor_parallel_size",
        short: Some("-tp"),
        kind: Kind::Int,
    },
    Spec {
        dest: "block_size",
        short: None,
        kind: Kind::Int,
    },
    Spec {
        dest: "gpu_memory_utilization",
        short: None,
        kind: Kind::Float,
    },
    Spec {
        dest: "swap_space",
        short: None,
        kind: Kind::Float,
    },
    Spec {
        dest: "kv_cache_dtype",
        short: None,
        kind: Kind::Choice(KV_DTYPES),
    },
    Spec {
        dest: "enable_prefix_caching",
        short: None,
        kind: Kind::Bool,
    },
    Spec {
        dest: "max_num_batched_tokens",
        short: None,
        kind: Kind::HumanInt,
    },
    Spec {
        dest: "max_num_seqs",
        short: None,
        kind: Kind::Int,
    },
    Spec {
        dest: "enable_lora",
        short: None,
        kind: Kind::Bool,
    },
    Spec {
        dest: "max_loras",
        short: None,
        kind: Kind::Int,
    },
    Spec {
        dest: "max_lora_rank",
        short: None,
        kind: Kind::IntChoice(LORA_RANKS),
    },
    Spec {
        dest: "enable_sleep_mode",
        short: None,
        kind: Kind::Bool,
    },
    Spec {
        dest: "disable_log_stats",
        short: None,
        kind: Kind::Bool,
    },
];

fn default_of(dest: &str) -> PyVal {
    match dest {
        "port" => PyVal::Int(8000),
        "uvicorn_log_level" => PyVal::Str("info".into()),
        "model" => PyVal::Str("Qwen/Qwen3-0.6B".into()),
        "dtype" | "kv_cache_dtype" | "generation_config" | "load_format" | "runner" | "convert" => {
            PyVal::Str("auto".into())
        }
        "seed" => PyVal::Int(0),
        "override_generation_config" => PyVal::Dict(vec![]),
        "pipeline_parallel_size" | "tensor_parallel_size" | "max_loras" => PyVal::Int(1),
        "gpu_memory_utilization" => PyVal::Float(0.92),
        "swap_space" => PyVal::Float(4.0),
        "max_lora_rank" => PyVal::Int(16),
        "disable_uvicorn_access_log"
        | "trust_remote_code"
        | "enforce_eager"
        | "enable_auto_tool_choice"
        | "disable_frontend_multiprocessing"
        | "enable_server_load_tracking"
        | "enable_log_requests"
        | "disable_log_requests"
        | "enable_sleep_mode"
        | "disable_log_stats"
        | "enable_lora" => PyVal::Bool(false),
        _ => PyVal::None,
    }
}

const TOP_USAGE: &str = "usage: vllm [-h] [-v]\n            {chat,complete,serve,launch,bench,collect-env,download-kernels,preload,run-batch,snapshot}\n            ...\n";
const SERVE_USAGE: &str = "usage: vllm serve [model_tag] [options]\n";

fn serve_error(msg: &str) -> Command {
    Command::Fail(format!("{SERVE_USAGE}vllm serve: error: {msg}\n"), 2)
}

/// Everything `vllm serve` was given, with vLLM's defaults filled in.
#[derive(Debug, Clone)]
pub struct ServeArgs {
    /// Positional MODEL (or `--model`).
    pub model_tag: Option<String>,
    /// The model actually served (model_tag, else --model, else vLLM's default).
    pub model: String,
    pub host: Option<String>,
    pub port: u16,
    pub served_model_name: Vec<String>,
    pub api_key: Option<String>,
    pub max_model_len: Option<u64>,
    pub dtype: String,
    /// `--runner`: `auto` (pooling only for an embedding architecture), `generate`, `pooling`.
    pub runner: String,
    /// `--convert`: what a generative architecture is adapted to when pooled (`auto`, `embed`).
    pub convert: String,
    pub kv_cache_dtype: String,
    pub gpu_memory_utilization: f64,
    pub block_size: Option<u64>,
    pub enable_prefix_caching: bool,
    pub max_num_seqs: u64,
    pub max_num_batched_tokens: Option<u64>,
    pub seed: i64,
    pub enable_lora: bool,
    pub max_loras: u64,
    pub max_lora_rank: u64,
    pub lora_modules: Vec<String>,
    pub enable_sleep_mode: bool,
    pub enable_auto_tool_choice: bool,
    pub tool_call_parser: Option<String>,
    pub generation_config: String,
    pub override_generation_config: serde_json::Map<String, serde_json::Value>,
    pub ssl_keyfile: Option<String>,
    pub ssl_certfile: Option<String>,
    pub disable_uvicorn_access_log: bool,
    pub enable_server_load_tracking: bool,
    pub tensor_parallel_size: u64,
    pub pipeline_parallel_size: u64,
    pub enforce_eager: bool,
    /// `non-default args: {...}` exactly as vLLM prints it (api key masked).
    pub non_default_repr: String,
    /// Whether `--model` was used instead of the positional (vLLM warns about it).
    pub used_model_flag: bool,
}

fn parse_human_int(v: &str) -> Option<i64> {
    let v = v.trim();
    let (num, mult) = match v.chars().last()? {
        'k' => (&v[..v.len() - 1], 1_000f64),
        'K' => (&v[..v.len() - 1], 1_024f64),
        'm' => (&v[..v.len() - 1], 1_000_000f64),
        'M' => (&v[..v.len() - 1], 1_048_576f64),
        'g' => (&v[..v.len() - 1], 1e9),
        'G' => (&v[..v.len() - 1], 1_073_741_824f64),
        _ => (v, 1f64),
    };
    if mult == 1.0 {
        return num.parse::<i64>().ok();
    }
    let f: f64 = num.parse().ok()?;
    Some((f * mult) as i64)
}

fn option_label(spec: &Spec) -> String {
    let long = format!("--{}", spec.dest.replace('_', "-"));
    match (spec.kind, spec.short) {
        (Kind::Bool, _) => format!("{long}/--no-{}", spec.dest.replace('_', "-")),
        (_, Some(s)) => format!("{long}/{s}"),
        _ => long,
    }
}

fn convert(spec: &Spec, raw: &str) -> Result<PyVal, String> {
    let label = option_label(spec);
    match spec.kind {
        Kind::Str => Ok(PyVal::Str(raw.to_string())),
        Kind::Int => raw
            .trim()
            .parse::<i64>()
            .map(PyVal::Int)
            .map_err(|_| format!("argument {label}: invalid int value: {}", str_repr(raw))),
        Kind::Float => raw
            .trim()
            .parse::<f64>()
            .map(PyVal::Float)
            .map_err(|_| format!("argument {label}: invalid float value: {}", str_repr(raw))),
        Kind::HumanInt => parse_human_int(raw).map(PyVal::Int).ok_or_else(|| {
            format!(
                "argument {label}: invalid human_readable_int value: {}",
                str_repr(raw)
            )
        }),
        Kind::Choice(choices) => {
            if choices.contains(&raw) {
                Ok(PyVal::Str(raw.to_string()))
            } else {
                let list: Vec<String> = choices.iter().map(|c| str_repr(c)).collect();
                Err(format!(
                    "argument {label}: invalid choice: {} (choose from {})",
                    str_repr(raw),
                    list.join(", ")
                ))
            }
        }
        Kind::IntChoice(choices) => {
            let v: i64 = raw
                .trim()
                .parse()
                .map_err(|_| format!("argument {label}: invalid int value: {}", str_repr(raw)))?;
            if choices.contains(&v) {
                Ok(PyVal::Int(v))
            } else {
                let list: Vec<String> = choices.iter().map(|c| c.to_string()).collect();
                Err(format!(
                    "argument {label}: invalid choice: {v} (choose from {})",
                    list.join(", ")
                ))
            }
        }
        Kind::Json => match serde_json::from_str::<serde_json::Value>(raw) {
            Ok(v @ serde_json::Value::Object(_)) => Ok(PyVal::from_json(&v)),
            _ => Err(format!(
                "argument {label}: invalid loads value: {}",
                str_repr(raw)
            )),
        },
        Kind::Bool | Kind::List => Ok(PyVal::Str(raw.to_string())),
    }
}

fn looks_like_option(tok: &str) -> bool {
    tok.starts_with('-') && tok.len() > 1 && tok.parse::<f64>().is_err()
}

enum Found<'a> {
    Flag(&'a Spec, bool),
    Unknown,
}

fn find_flag(name: &str) -> Found<'static> {
    if let Some(long) = name.strip_prefix("--") {
        let norm = long.replace('_', "-");
        for spec in SPECS {
            let dashed = spec.dest.replace('_', "-");
            if norm == dashed {
                return Found::Flag(spec, true);
            }
            if spec.kind == Kind::Bool && norm == format!("no-{dashed}") {
                return Found::Flag(spec, false);
            }
        }
        Found::Unknown
    } else {
        for spec in SPECS {
            if spec.short == Some(name) {
                return Found::Flag(spec, true);
            }
        }
        Found::Unknown
    }
}

fn help_text() -> String {
    let mut s = String::from(SERVE_USAGE);
    s.push_str("\nLaunch a local OpenAI-compatible API server to serve LLM\ncompletions via HTTP. (mock-vllm: a test double of vLLM 0.32)\n\npositional arguments:\n  model_tag             The model tag to serve (optional if specified in config)\n\noptions:\n  -h, --help            show this help message and exit\n");
    for spec in SPECS {
        s.push_str(&format!("  {}\n", option_label(spec).replace('/', ", ")));
    }
    s
}

/// Parses the process arguments after the program name (`serve MODEL --flag ...`).
pub fn parse(argv: &[String]) -> Command {
    let Some(first) = argv.first() else {
        return Command::Fail(
            format!("{TOP_USAGE}vllm: error: the following arguments are required: subparser\n"),
            2,
        );
    };
    match first.as_str() {
        "-h" | "--help" => return Command::Print(TOP_USAGE.to_string()),
        "-v" | "--version" => return Command::Print("0.32.0\n".into()),
        "serve" => {}
        other => {
            return Command::Fail(
                format!(
                    "{TOP_USAGE}vllm: error: argument subparser: invalid choice: {} (choose from 'chat', 'complete', 'serve', 'launch', 'bench', 'collect-env', 'download-kernels', 'preload', 'run-batch', 'snapshot')\n",
                    str_repr(other)
                ),
                2,
            );
        }
    }
    parse_serve(&argv[1..])
}

/// Parses what follows `serve`.
pub fn parse_serve(args: &[String]) -> Command {
    let mut values: Vec<(&'static str, PyVal)> = Vec::new();
    let set = |dest: &'static str, v: PyVal, values: &mut Vec<(&'static str, PyVal)>| {
        if let Some(slot) = values.iter_mut().find(|(d, _)| *d == dest) {
            slot.1 = v;
        } else {
            values.push((dest, v));
        }
    };
    let mut model_tag: Option<String> = None;
    let mut unrecognized: Vec<String> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let tok = &args[i];
        i += 1;
        if tok == "--" {
            for rest in &args[i..] {
                if model_tag.is_none() {
                    model_tag = Some(rest.clone());
                } else {
                    unrecognized.push(rest.clone());
                }
            }
            break;
        }
        if tok == "-h" || tok == "--help" {
            return Command::Print(help_text());
        }
        if !looks_like_option(tok) {
            if model_tag.is_none() {
                model_tag = Some(tok.clone());
            } else {
                unrecognized.push(tok.clone());
            }
            continue;
        }
        let (name, inline) = match tok.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (tok.as_str(), None),
        };
        let spec = match find_flag(name) {
            Found::Flag(spec, positive) => {
                if spec.kind == Kind::Bool {
                    if let Some(v) = inline {
                        return serve_error(&format!(
                            "argument {}: ignored explicit argument {}",
                            option_label(spec),
                            str_repr(&v)
                        ));
                    }
                    set(spec.dest, PyVal::Bool(positive), &mut values);
                    continue;
                }
                spec
            }
            Found::Unknown => {
                unrecognized.push(tok.clone());
                continue;
            }
        };
        if spec.kind == Kind::List {
            let mut items: Vec<PyVal> = Vec::new();
            if let Some(v) = inline {
                items.push(PyVal::Str(v));
            } else {
                while i < args.len() && !looks_like_option(&args[i]) {
                    items.push(PyVal::Str(args[i].clone()));
                    i += 1;
                }
            }
            if items.is_empty() {
                return serve_error(&format!(
                    "argument {}: expected at least one argument",
                    option_label(spec)
                ));
            }
            set(spec.dest, PyVal::List(items), &mut values);
            continue;
        }
        let raw = match inline {
            Some(v) => v,
            None => {
                if i < args.len() && !looks_like_option(&args[i]) {
                    i += 1;
                    args[i - 1].clone()
                } else {
                    return serve_error(&format!(
                        "argument {}: expected one argument",
                        option_label(spec)
                    ));
                }
            }
        };
        match convert(spec, &raw) {
            Ok(v) => set(spec.dest, v, &mut values),
            Err(msg) => return serve_error(&msg),
        }
    }
    if !unrecognized.is_empty() {
        return Command::Fail(
            format!(
                "{TOP_USAGE}vllm: error: unrecognized arguments: {}\n",
                unrecognized.join(" ")
            ),
            2,
        );
    }
    // `--model X` without a positional: vLLM moves X to the front (with a warning).
    let mut used_model_flag = false;
    if model_tag.is_none()
        && let Some((_, PyVal::Str(m))) = values.iter().find(|(d, _)| *d == "model")
    {
        model_tag = Some(m.clone());
        used_model_flag = true;
    }
    if let Some(tag) = &model_tag {
        set("model", PyVal::Str(tag.clone()), &mut values);
    }
    Command::Serve(Box::new(build(model_tag, values, used_model_flag)))
}

fn build(
    model_tag: Option<String>,
    values: Vec<(&'static str, PyVal)>,
    used_model_flag: bool,
) -> ServeArgs {
    let get = |dest: &str| -> PyVal {
        values
            .iter()
            .find(|(d, _)| *d == dest)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| default_of(dest))
    };
    let s = |dest: &str| match get(dest) {
        PyVal::Str(s) => Some(s),
        _ => None,
    };
    let int = |dest: &str| match get(dest) {
        PyVal::Int(i) => Some(i),
        _ => None,
    };
    let b = |dest: &str| matches!(get(dest), PyVal::Bool(true));
    let list = |dest: &str| match get(dest) {
        PyVal::List(items) => items
            .into_iter()
            .filter_map(|v| match v {
                PyVal::Str(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };

    // non-default args, in vLLM's order: model_tag, then every flag whose value differs.
    let mut shown: Vec<String> = Vec::new();
    if let Some(tag) = &model_tag {
        shown.push(format!("'model_tag': {}", str_repr(tag)));
    }
    for spec in SPECS {
        if let Some((_, v)) = values.iter().find(|(d, _)| *d == spec.dest)
            && *v != default_of(spec.dest)
        {
            let repr = if spec.dest == "api_key" {
                "'***'".to_string()
            } else {
                v.repr()
            };
            shown.push(format!("{}: {repr}", str_repr(spec.dest)));
        }
    }
    let override_generation_config = match s("override_generation_config") {
        Some(_) => serde_json::Map::new(),
        None => values
            .iter()
            .find(|(d, _)| *d == "override_generation_config")
            .map(|(_, v)| pyval_to_json_map(v))
            .unwrap_or_default(),
    };
    let model = s("model").unwrap_or_else(|| "Qwen/Qwen3-0.6B".into());
    let served = list("served_model_name");
    ServeArgs {
        model_tag,
        served_model_name: if served.is_empty() {
            vec![model.clone()]
        } else {
            served
        },
        model,
        host: s("host"),
        port: int("port").unwrap_or(8000).clamp(0, 65535) as u16,
        api_key: s("api_key"),
        max_model_len: int("max_model_len").map(|v| v.max(1) as u64),
        dtype: s("dtype").unwrap_or_else(|| "auto".into()),
        runner: s("runner").unwrap_or_else(|| "auto".into()),
        convert: s("convert").unwrap_or_else(|| "auto".into()),
        kv_cache_dtype: s("kv_cache_dtype").unwrap_or_else(|| "auto".into()),
        gpu_memory_utilization: match get("gpu_memory_utilization") {
            PyVal::Float(f) => f,
            _ => 0.92,
        },
        block_size: int("block_size").map(|v| v.max(1) as u64),
        enable_prefix_caching: !matches!(get("enable_prefix_caching"), PyVal::Bool(false)),
        max_num_seqs: int("max_num_seqs").map(|v| v.max(1) as u64).unwrap_or(256),
        max_num_batched_tokens: int("max_num_batched_tokens").map(|v| v.max(1) as u64),
        seed: int("seed").unwrap_or(0),
        enable_lora: b("enable_lora"),
        max_loras: int("max_loras").unwrap_or(1).max(1) as u64,
        max_lora_rank: int("max_lora_rank").unwrap_or(16).max(1) as u64,
        lora_modules: list("lora_modules"),
        enable_sleep_mode: b("enable_sleep_mode"),
        enable_auto_tool_choice: b("enable_auto_tool_choice"),
        tool_call_parser: s("tool_call_parser"),
        generation_config: s("generation_config").unwrap_or_else(|| "auto".into()),
        override_generation_config,
        ssl_keyfile: s("ssl_keyfile"),
        ssl_certfile: s("ssl_certfile"),
        disable_uvicorn_access_log: b("disable_uvicorn_access_log"),
        enable_server_load_tracking: b("enable_server_load_tracking"),
        tensor_parallel_size: int("tensor_parallel_size").unwrap_or(1).max(1) as u64,
        pipeline_parallel_size: int("pipeline_parallel_size").unwrap_or(1).max(1) as u64,
        enforce_eager: b("enforce_eager"),
        non_default_repr: format!("{{{}}}", shown.join(", ")),
        used_model_flag,
    }
}

fn pyval_to_json_map(v: &PyVal) -> serde_json::Map<String, serde_json::Value> {
    fn to_json(v: &PyVal) -> serde_json::Value {
        match v {
            PyVal::None => serde_json::Value::Null,
            PyVal::Bool(b) => (*b).into(),
            PyVal::Int(i) => (*i).into(),
            PyVal::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            PyVal::Str(s) => s.clone().into(),
            PyVal::List(items) => items.iter().map(to_json).collect(),
            PyVal::Dict(items) => serde_json::Value::Object(
                items.iter().map(|(k, v)| (k.clone(), to_json(v))).collect(),
            ),
        }
    }
    match to_json(v) {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn non_default_args_like_capture() {
        let Command::Serve(a) = parse(&argv(
            "serve /models/tiny-model --port 18000 --host 127.0.0.1 --max-model-len 512 --served-model-name tiny --dtype float32",
        )) else {
            panic!()
        };
        assert_eq!(
            a.non_default_repr,
            "{'model_tag': '/models/tiny-model', 'host': '127.0.0.1', 'port': 18000, 'model': '/models/tiny-model', 'dtype': 'float32', 'max_model_len': 512, 'served_model_name': ['tiny']}"
        );
    }

    #[test]
    fn pooling_runner_like_capture() {
        // tests/data/vllm-embeddings/start-log.txt, the embedding server's start.
        let Command::Serve(a) = parse(&argv(
            "serve MODEL_DIR --served-model-name tiny --max-model-len 512 --dtype float32 --enforce-eager --runner pooling --convert embed --port 18555",
        )) else {
            panic!()
        };
        assert_eq!(
            a.non_default_repr,
            "{'model_tag': 'MODEL_DIR', 'port': 18555, 'model': 'MODEL_DIR', 'runner': 'pooling', 'convert': 'embed', 'dtype': 'float32', 'max_model_len': 512, 'enforce_eager': True, 'served_model_name': ['tiny']}"
        );
        assert_eq!(
            (a.runner.as_str(), a.convert.as_str()),
            ("pooling", "embed")
        );
        let Command::Fail(msg, 2) = parse(&argv("serve /m --runner embed")) else {
            panic!()
        };
        assert!(msg.contains("argument --runner: invalid choice: 'embed' (choose from 'auto', 'draft', 'generate', 'pooling')"));
    }

    #[test]
    fn api_key_masked_and_bool_flags() {
        let Command::Serve(a) = parse(&argv(
            "serve /m --host=127.0.0.1 --port 1 --api-key s3cret --max_model_len 1k --enforce-eager --no-enable-prefix-caching -tp 2",
        )) else {
            panic!()
        };
        assert!(a.non_default_repr.contains("'api_key': '***'"));
        assert!(!a.non_default_repr.contains("s3cret"));
        assert_eq!(a.max_model_len, Some(1000));
        assert!(a.enforce_eager);
        assert!(!a.enable_prefix_caching);
        assert_eq!(a.tensor_parallel_size, 2);
    }

    #[test]
    fn errors_like_argparse() {
        let Command::Fail(msg, 2) = parse(&argv("serve /m --no-such-flag")) else {
            panic!()
        };
        assert!(msg.ends_with("vllm: error: unrecognized arguments: --no-such-flag\n"));
        let Command::Fail(msg, 2) = parse(&argv("serve /m --dtype foo")) else {
            panic!()
        };
        assert!(msg.contains("argument --dtype: invalid choice: 'foo' (choose from 'auto', 'half', 'float16', 'bfloat16', 'float', 'float32')"));
        let Command::Fail(msg, 2) = parse(&argv("serve /m --port")) else {
            panic!()
        };
        assert!(msg.contains("argument --port: expected one argument"));
    }
}
