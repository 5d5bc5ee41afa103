//! Tests of `vllm_fleet::launcher::classify`: every real failed start captured from vLLM 0.32
//! maps to its reason and details, synthetic lines cover the reasons no capture shows, and
//! the error reaches clients in the spec's shape.

use serde_json::{Value, json};
use vllm_core::LoadFailure;
use vllm_fleet::launcher::classify::{Classified, TAIL_BYTES, classify};

macro_rules! capture {
    ($name:literal, $ext:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/data/vllm-reference/startup-failures/",
            $name,
            ".",
            $ext
        ))
    };
}

/// One captured failed start: its stdout, stderr, and the `NAME rc=N after ...` line.
struct Capture {
    name: &'static str,
    stdout: &'static str,
    stderr: &'static str,
    rc: &'static str,
}

macro_rules! cap {
    ($name:literal) => {
        Capture {
            name: $name,
            stdout: capture!($name, "stdout"),
            stderr: capture!($name, "stderr"),
            rc: capture!($name, "rc"),
        }
    };
}

impl Capture {
    fn exit_code(&self) -> i32 {
        let rc = self.rc.split("rc=").nth(1).expect("rc= in .rc file");
        rc.split_whitespace().next().unwrap().parse().unwrap()
    }

    /// The log as the launcher writes it: both streams into one file.
    fn log(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Classifies `log` and checks the reason and that every expected detail is there.
#[track_caller]
fn check(log: &str, exit: Option<i32>, reason: LoadFailure, details: Value) -> Classified {
    let c = classify(log, exit);
    assert_eq!(c.reason, reason, "reason of {c:#?}");
    for (k, v) in details.as_object().unwrap() {
        assert_eq!(c.details.get(k), Some(v), "details.{k} of {c:#?}");
    }
    assert!(!c.message.is_empty() && !c.message.contains('\n'), "{c:#?}");
    c
}

#[test]
fn capture_port_in_use() {
    let cap = cap!("fail-port-in-use");
    let c = check(
        &cap.log(),
        Some(cap.exit_code()),
        LoadFailure::PortInUse,
        json!({"port": 18000, "exit_code": 1}),
    );
    assert_eq!(c.message, "port 18000 is already in use");
    assert!(c.excerpt[0].contains("[Errno 98] Address already in use"));
}

#[test]
fn capture_missing_model_path() {
    let cap = cap!("fail-no-model");
    let c = check(
        &cap.log(),
        Some(cap.exit_code()),
        LoadFailure::ModelPathNotFound,
        json!({"path": "/models/no-such-model"}),
    );
    assert_eq!(c.message, "model path /models/no-such-model does not exist");
}

#[test]
fn capture_empty_directory() {
    let cap = cap!("fail-empty-dir");
    let c = check(
        &cap.log(),
        Some(cap.exit_code()),
        LoadFailure::EmptyModelDirectory,
        json!({"path": "/models/empty-dir"}),
    );
    assert!(c.message.contains("/models/empty-dir"), "{}", c.message);
    // The continuation line explaining the requirement is part of the excerpt.
    assert!(
        c.excerpt.iter().any(|l| l.contains("Please verify")),
        "{:?}",
        c.excerpt
    );
}

#[test]
fn capture_hub_unreachable() {
    let cap = cap!("fail-hub-repo");
    let c = check(
        &cap.log(),
        Some(cap.exit_code()),
        LoadFailure::HubUnreachable,
        json!({"repo_id": "nonexistent-org/nonexistent-model"}),
    );
    assert!(c.message.contains("huggingface.co"), "{}", c.message);
    // The last decisive line is the outermost OSError, not the LocalEntryNotFoundError before it.
    assert!(
        c.excerpt[0].starts_with("OSError: We couldn't connect"),
        "{:?}",
        c.excerpt
    );
}

#[test]
fn capture_hub_offline() {
    let cap = cap!("fail-hub-repo-offline");
    let c = check(
        &cap.log(),
        Some(cap.exit_code()),
        LoadFailure::HubUnreachable,
        json!({"offline": true, "repo_id": "nonexistent-org/nonexistent-model"}),
    );
    assert!(c.message.contains("HF_HUB_OFFLINE"), "{}", c.message);
}

#[test]
fn capture_max_model_len_too_large() {
    let cap = cap!("fail-maxlen-too-big");
    let c = check(
        &cap.log(),
        Some(cap.exit_code()),
        LoadFailure::MaxModelLenTooLarge,
        json!({"limit": 2048, "requested": 4096, "limit_key": "max_position_embeddings"}),
    );
    assert_eq!(
        c.message,
        "max_model_len 4096 is above the model's limit of 2048"
    );
    // Integers, not the 2048.0 vLLM prints.
    assert!(c.details["limit"].is_u64());
}

#[test]
fn capture_unknown_flag() {
    let cap = cap!("fail-bad-flag");
    assert_eq!(cap.exit_code(), 2);
    let c = check(
        &cap.log(),
        Some(2),
        LoadFailure::UnknownFlag,
        json!({"flag": "--no-such-flag", "flags": ["--no-such-flag"], "exit_code": 2}),
    );
    assert_eq!(c.message, "vLLM does not know the flag --no-such-flag");
}

/// Every capture classifies the same from stderr alone and with the streams in either
/// order (the launcher may interleave them); none is left as Unknown or ProcessExited.
#[test]
fn captures_classify_whatever_the_stream_order() {
    let caps = [
        cap!("fail-port-in-use"),
        cap!("fail-no-model"),
        cap!("fail-empty-dir"),
        cap!("fail-hub-repo"),
        cap!("fail-hub-repo-offline"),
        cap!("fail-maxlen-too-big"),
        cap!("fail-bad-flag"),
    ];
    for cap in caps {
        let code = Some(cap.exit_code());
        let a = classify(&cap.log(), code);
        let b = classify(cap.stderr, code);
        let c = classify(&format!("{}{}", cap.stderr, cap.stdout), code);
        assert_eq!(a.reason, b.reason, "{}", cap.name);
        assert_eq!(a.reason, c.reason, "{}", cap.name);
        assert!(
            !matches!(a.reason, LoadFailure::Unknown | LoadFailure::ProcessExited),
            "{}: {a:?}",
            cap.name
        );
        // CRLF line ends change nothing.
        let crlf = classify(&cap.log().replace('\n', "\r\n"), code);
        assert_eq!(crlf.reason, a.reason, "{}", cap.name);
        assert_eq!(crlf.details, a.details, "{}", cap.name);
    }
}

#[test]
fn the_success_log_is_not_a_failure() {
    let log = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/vllm-reference/startup-success.log"
    ));
    let c = classify(log, None);
    assert_eq!(c.reason, LoadFailure::Unknown, "{c:#?}");
}

#[test]
fn port_from_zmq_and_uvicorn_lines() {
    check(
        "zmq.error.ZMQError: Address already in use (addr='tcp://127.0.0.1:5570')",
        Some(1),
        LoadFailure::PortInUse,
        json!({"port": 5570}),
    );
    check(
        "ERROR:    [Errno 98] error while attempting to bind on address ('0.0.0.0', 8001): address already in use",
        Some(1),
        LoadFailure::PortInUse,
        json!({"port": 8001}),
    );
    // The port from the command line when the error does not name it.
    check(
        "CMD: vllm serve /m --port 8123\nOSError: [Errno 98] Address already in use",
        Some(1),
        LoadFailure::PortInUse,
        json!({"port": 8123}),
    );
    let c = classify("OSError: [Errno 98] Address already in use", Some(1));
    assert_eq!(c.reason, LoadFailure::PortInUse);
    assert!(!c.details.contains_key("port"));
}

#[test]
fn out_of_memory_lines() {
    for line in [
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 23.55 GiB",
        "[rank0]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.",
        "RuntimeError: CUDA error: out of memory",
        "torch.cuda.OutOfMemoryError: HIP out of memory. Tried to allocate 20.00 MiB",
        "OSError: [Errno 12] Cannot allocate memory",
        "RuntimeError: [enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate 1073741824 bytes.",
    ] {
        check(line, Some(1), LoadFailure::OutOfMemory, json!({}));
    }
    check(
        "(EngineCore_DP0 pid=88) ERROR 10-08 20:33:48 [core.py:708] torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0",
        Some(1),
        LoadFailure::OutOfMemory,
        json!({"tried_to_allocate": "2.00 GiB"}),
    );
}

#[test]
fn a_sigkill_with_nothing_else_is_the_oom_killer() {
    let log = "(APIServer pid=1) INFO 11-24 04:51:28 [api_utils.py:286] non-default args: {}\n\
               (Worker pid=3) INFO 11-24 05:01:14 [cpu_model_runner.py:68] Starting to load model /m...\n";
    check(
        log,
        Some(137),
        LoadFailure::OutOfMemory,
        json!({"exit_code": 137}),
    );
    check(
        log,
        Some(-9),
        LoadFailure::OutOfMemory,
        json!({"exit_code": -9}),
    );
    // A decisive line wins over the exit code.
    check(
        "OSError: [Errno 98] Address already in use",
        Some(137),
        LoadFailure::PortInUse,
        json!({}),
    );
}

#[test]
fn insufficient_kv_cache_lines() {
    check(
        "(EngineCore_DP0 pid=18799) ERROR 10-08 20:33:48 [core.py:708] ValueError: To serve at least one request with the models's max seq len (40960), (5.62 GiB KV cache is needed, which is larger than the available KV cache memory (4.50 GiB). Based on the available memory, the estimated maximum model length is 32768. Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.",
        Some(1),
        LoadFailure::InsufficientKvCache,
        json!({"limit": 32768, "requested": 40960, "kv_cache_needed_gib": 5.62, "kv_cache_available_gib": 4.5}),
    );
    // Thousands separators, and the message split over lines by a narrow terminal.
    check(
        "ValueError: To serve at least one request with the model's max seq len (16,384), (4.00 GiB KV cache is needed, which is larger than the available KV cache memory (2.50 GiB). Based on the available memory, the estimated maximum model length is 10,240.",
        Some(1),
        LoadFailure::InsufficientKvCache,
        json!({"limit": 10240, "requested": 16384}),
    );
    check(
        "ValueError: The model's max seq len (4096) is larger than the maximum number of tokens that can be stored in KV cache (2048). Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.",
        Some(1),
        LoadFailure::InsufficientKvCache,
        json!({"limit": 2048, "requested": 4096}),
    );
    check(
        "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine.",
        Some(1),
        LoadFailure::InsufficientKvCache,
        json!({}),
    );
    check(
        "InsufficientKVCacheMemoryError: Insufficient memory for KV cache to serve requests.",
        Some(1),
        LoadFailure::InsufficientKvCache,
        json!({}),
    );
}

#[test]
fn gpu_memory_taken_by_others() {
    let c = check(
        "ValueError: Free memory on device cuda:0 (7.34/15.49 GiB) on startup is less than desired GPU memory utilization (0.8, 12.39 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.",
        Some(1),
        LoadFailure::InsufficientGpuMemory,
        json!({"free_gib": 7.34, "total_gib": 15.49, "gpu_memory_utilization": 0.8, "reservation_gib": 12.39}),
    );
    assert!(c.message.contains("7.34 of 15.49 GiB"), "{}", c.message);
}

#[test]
fn no_gpu_and_too_few_gpus() {
    for line in [
        "RuntimeError: No CUDA GPUs are available",
        "RuntimeError: Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU and installed a driver",
        "RuntimeError: Failed to infer device type",
    ] {
        let c = check(line, Some(1), LoadFailure::InsufficientGpuMemory, json!({}));
        // Its own suggestion: reducing tensor_parallel_size would not help.
        let s = c.details["suggestion"].as_str().unwrap();
        assert!(s.contains("driver"), "{s}");
    }
    check(
        "ValueError: World size (2) is larger than the number of available GPUs (1) in this node.",
        Some(1),
        LoadFailure::InsufficientGpuMemory,
        json!({"gpus_required": 2, "gpus_available": 1}),
    );
}

#[test]
fn hub_lines() {
    for (line, key) in [
        (
            "huggingface_hub.errors.GatedRepoError: 403 Client Error. Cannot access gated repo for url https://huggingface.co/meta-llama/Llama-3.1-8B/resolve/main/config.json.",
            "suggestion",
        ),
        (
            "OSError: You are trying to access a gated repo. Access to model meta-llama/Llama-3.1-8B is restricted. You must have access to it and be authenticated to access it. Please log in.",
            "suggestion",
        ),
        (
            "requests.exceptions.HTTPError: 401 Client Error: Unauthorized for url: https://huggingface.co/api/models/org/private",
            "",
        ),
        (
            "huggingface_hub.errors.RepositoryNotFoundError: 404 Client Error. (Request ID: Root=1-abc) Repository Not Found for url: https://huggingface.co/api/models/x/y.",
            "",
        ),
        (
            "huggingface_hub.errors.LocalEntryNotFoundError: An error happened while trying to locate the file on the Hub and we cannot find the requested files in the local cache.",
            "",
        ),
        (
            "huggingface_hub.errors.OfflineModeIsEnabled: Cannot reach https://huggingface.co/api/models/x/y: offline mode is enabled.",
            "offline",
        ),
    ] {
        let c = check(line, Some(1), LoadFailure::HubUnreachable, json!({}));
        if !key.is_empty() {
            assert!(c.details.contains_key(key), "{line}: {c:?}");
        }
    }
}

#[test]
fn model_path_lines() {
    check(
        "OSError: Repo id must be in the form 'repo_name' or 'namespace/repo_name': 'models/a/b'. Use `repo_type` argument if needed.",
        Some(1),
        LoadFailure::ModelPathNotFound,
        json!({"path": "models/a/b"}),
    );
    check(
        "  Value error, Invalid repository ID or local directory specified: 'org/typo'.",
        Some(1),
        LoadFailure::ModelPathNotFound,
        json!({"path": "org/typo"}),
    );
    check(
        "OSError: /models/half does not appear to have a file named config.json. Checkout 'https://huggingface.co//models/half/tree/None' for available files.",
        Some(1),
        LoadFailure::EmptyModelDirectory,
        json!({"path": "/models/half", "file": "config.json"}),
    );
}

#[test]
fn argparse_usage_errors() {
    check(
        "vllm: error: unrecognized arguments: --foo 3 --bar",
        Some(2),
        LoadFailure::UnknownFlag,
        json!({"flag": "--foo", "flags": ["--foo", "--bar"]}),
    );
    let c = check(
        "vllm serve: error: argument --dtype: invalid choice: 'float64' (choose from 'auto', 'half', 'float16', 'bfloat16', 'float', 'float32')",
        Some(2),
        LoadFailure::UnknownFlag,
        json!({"flag": "--dtype", "value": "float64"}),
    );
    assert_eq!(c.message, "'float64' is not a valid value for --dtype");
    assert!(
        c.details["choices"]
            .as_str()
            .unwrap()
            .contains("'bfloat16'")
    );
    check(
        "vllm serve: error: argument --max-model-len: invalid human_readable_int value: 'lots'",
        Some(2),
        LoadFailure::UnknownFlag,
        json!({"flag": "--max-model-len"}),
    );
    check(
        "api_server.py: error: ambiguous option: --max could match --max-model-len, --max-num-seqs",
        Some(2),
        LoadFailure::UnknownFlag,
        json!({"flag": "--max"}),
    );
    // An exception whose text happens to contain ": error: " is not argparse.
    let c = classify("RuntimeError: error: something broke", Some(1));
    assert_eq!(c.reason, LoadFailure::ProcessExited);
}

#[test]
fn other_known_failures_say_what_to_do() {
    let c = check(
        "ValueError: The repository for /models/x contains custom code which must be executed to correctly load the model. Please pass the argument `trust_remote_code=True` to allow custom code to be run.",
        Some(1),
        LoadFailure::ProcessExited,
        json!({}),
    );
    assert!(
        c.details["suggestion"]
            .as_str()
            .unwrap()
            .contains("--trust-remote-code")
    );
    check(
        "ValueError: Model architectures ['FooForCausalLM'] are not supported for now. Supported architectures: dict_keys([...])",
        Some(1),
        LoadFailure::ProcessExited,
        json!({"architectures": "['FooForCausalLM']"}),
    );
}

#[test]
fn other_exits_keep_the_last_exception_line() {
    let log = "\
Traceback (most recent call last):
  File \"/x.py\", line 1, in <module>
    import flash_attn
ModuleNotFoundError: No module named 'flash_attn'

The above exception was the direct cause of the following exception:

(EngineCore_DP0 pid=5) ERROR 11-24 04:51:28 [core.py:700] EngineCore failed to start.
RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}
";
    let c = check(
        log,
        Some(1),
        LoadFailure::ProcessExited,
        json!({"exit_code": 1}),
    );
    // The generic wrapper is skipped for the line that says what happened.
    assert_eq!(
        c.message,
        "ModuleNotFoundError: No module named 'flash_attn'"
    );

    let c = check("", Some(3), LoadFailure::ProcessExited, json!({}));
    assert_eq!(c.message, "vLLM exited with code 3 before it was ready");
    let c = check("", Some(-15), LoadFailure::ProcessExited, json!({}));
    assert!(c.message.contains("signal 15"), "{}", c.message);
    // The worker died: vLLM exits 0 (see worker-sigkill.txt), with an error in its log.
    check(
        "RuntimeError: Worker died unexpectedly",
        Some(0),
        LoadFailure::ProcessExited,
        json!({"exit_code": 0}),
    );
}

#[test]
fn nothing_recognisable_is_unknown() {
    check("", None, LoadFailure::Unknown, json!({}));
    check(
        "(APIServer pid=1) INFO 11-24 05:00:40 [model.py:2152] Using max model len 512",
        Some(0),
        LoadFailure::Unknown,
        json!({}),
    );
    // Warnings are never decisive, whatever they quote.
    check(
        "(APIServer pid=31839) WARNING 11-24 04:51:28 [system_utils.py:255] This can cause fd limit errors like `OSError: [Errno 98] Address already in use` or CUDA out of memory",
        None,
        LoadFailure::Unknown,
        json!({}),
    );
}

#[test]
fn ansi_colours_and_prefixes_are_ignored() {
    let log = "\u{1b}[1;36m(EngineCore_DP0 pid=12)\u{1b}[0;0m \u{1b}[31mERROR\u{1b}[0m 11-24 04:51:28 [core.py:708] torch.OutOfMemoryError: CUDA out of memory.\r\n";
    check(log, Some(1), LoadFailure::OutOfMemory, json!({}));
    let log = "\u{1b}[31m(APIServer pid=1) vllm: error: unrecognized arguments: --x\u{1b}[0m";
    check(
        log,
        Some(2),
        LoadFailure::UnknownFlag,
        json!({"flag": "--x"}),
    );
}

#[test]
fn the_last_decisive_error_wins() {
    // A hub hiccup that was retried, then a real OOM later.
    let log = "\
huggingface_hub.errors.LocalEntryNotFoundError: An error happened while trying to locate the file on the Hub
Retrying...
torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.00 GiB.
RuntimeError: Engine core initialization failed. See root cause above.
";
    check(
        log,
        Some(1),
        LoadFailure::OutOfMemory,
        json!({"tried_to_allocate": "1.00 GiB"}),
    );
    // Source echoes in tracebacks are not errors.
    let log = "\
  File \"/hub.py\", line 1962, in _raise_on_head_call_error
    raise LocalEntryNotFoundError(
OSError: [Errno 98] Address already in use
";
    check(log, Some(1), LoadFailure::PortInUse, json!({}));
}

#[test]
fn huge_logs_are_read_from_the_tail() {
    // An OOM far back, beyond the tail, then a port error at the end.
    let mut log = String::from("torch.OutOfMemoryError: CUDA out of memory.\n");
    let filler = "(APIServer pid=1) INFO 11-24 05:00:40 [x.py:1] ünïcödé filler line to push the start out of the tail\n";
    while log.len() < TAIL_BYTES * 2 {
        log.push_str(filler);
    }
    let c = classify(&log, Some(1));
    assert_eq!(
        c.reason,
        LoadFailure::ProcessExited,
        "the OOM is outside the tail: {c:?}"
    );
    log.push_str("OSError: [Errno 98] Address already in use\n");
    let start = std::time::Instant::now();
    let c = classify(&log, Some(1));
    assert_eq!(c.reason, LoadFailure::PortInUse);
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn into_error_renders_the_spec_shape() {
    let cap = cap!("fail-maxlen-too-big");
    let err = classify(&cap.log(), Some(cap.exit_code())).into_error("tiny");
    assert_eq!(err.code(), "MODEL_LOAD_FAILED");
    let v = json!({"error": err.to_value()});
    assert_eq!(v["error"]["code"], "MODEL_LOAD_FAILED");
    assert_eq!(
        v["error"]["message"],
        "model `tiny` failed to load: max_model_len 4096 is above the model's limit of 2048"
    );
    let d = &v["error"]["details"];
    assert_eq!(d["reason"], "MAX_MODEL_LEN_TOO_LARGE");
    assert_eq!(d["model_id"], "tiny");
    assert_eq!(d["limit"], 2048);
    assert_eq!(d["requested"], 4096);
    assert_eq!(d["exit_code"], 1);
    assert!(
        d["suggestion"].as_str().unwrap().contains("details.limit"),
        "{d}"
    );
    assert!(
        d["log_excerpt"]
            .as_str()
            .unwrap()
            .contains("User-specified max_model_len (4096)"),
        "{d}"
    );
}

#[test]
fn into_error_keeps_a_specific_suggestion_and_redacts_secrets() {
    let log = "CMD: vllm serve /m --api-key sk-secret-123\n\
               RuntimeError: No CUDA GPUs are available (HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyz0123)";
    let v = json!({"error": classify(log, Some(1)).into_error("m").to_value()});
    let d = &v["error"]["details"];
    assert_eq!(d["reason"], "INSUFFICIENT_GPU_MEMORY");
    assert!(d["suggestion"].as_str().unwrap().contains("driver"), "{d}");
    let excerpt = d["log_excerpt"].as_str().unwrap();
    assert!(
        !excerpt.contains("hf_abcdefghijklmnopqrstuvwxyz0123"),
        "{excerpt}"
    );
    assert!(excerpt.contains("No CUDA GPUs"), "{excerpt}");
}
