//! Why a `vllm serve` start failed, classified from its log.
//!
//! [`classify`] reads the tail of a failed server's log (stdout and stderr together) and its
//! exit code, and answers a [`LoadFailure`] reason, one line a person understands and
//! machine-readable details (`port`, `path`, `limit`, `requested`, `flag`, ...).
//! [`Classified::into_error`] turns that into the `MODEL_LOAD_FAILED` error clients see.
//!
//! How the log is read, and why:
//! - Only the last [`TAIL_BYTES`] are looked at: a failed start ends with its cause, and a
//!   log may be gigabytes after a long run.
//! - Every line is normalised first: ANSI colours and carriage returns go (progress bars
//!   redraw with `\r`, Windows-made files end lines with `\r\n`), and so do the prefixes
//!   vLLM puts on lines, `(APIServer pid=123) `, `(EngineCore_DP0 pid=7) `, `[rank0]: `, and
//!   the logger's `ERROR 11-24 04:51:28 [core.py:708] ` header. V1 engines log a child's
//!   whole traceback through the logger, so the same exception can arrive either way.
//! - The LAST decisive line wins. Python chains tracebacks (`The above exception was the
//!   direct cause of the following exception`), and the outermost, printed last, is the one
//!   vLLM gave up on; an earlier line is often a retry that was then recovered from.
//! - INFO/WARNING/DEBUG log lines and traceback source echoes (`  File "..."`, indented code
//!   such as `    raise LocalEntryNotFoundError(`) are never decisive: vLLM warns with texts
//!   like ``OSError: [Errno 24] Too many open files`` on every healthy start.
//!
//! The patterns come from the captures of vLLM 0.32 in `tests/data/vllm-reference/` and from
//! vLLM's source (`vllm/config/model.py`, `vllm/v1/core/kv_cache_utils.py`,
//! `vllm/v1/worker/gpu_worker.py`, `vllm/utils/mem_utils.py`); `docs` and the tests list them.

use serde_json::{Map, Value, json};
use vllm_core::error::{Error, LoadFailure};
use vllm_core::redact::redact_text;

/// How much of the end of a log is read. A failed start's cause sits in its last few
/// hundred lines (one traceback per process, about 60 lines each); 256 KiB holds thousands.
pub const TAIL_BYTES: usize = 256 * 1024;

/// Longest message and excerpt line kept: a pydantic error can echo every argument.
const MAX_LINE_CHARS: usize = 400;

/// What [`classify`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    pub reason: LoadFailure,
    /// One line a person understands, e.g. "max_model_len 4096 is above the model's limit of 2048".
    pub message: String,
    /// Machine-readable context: `limit`, `requested`, `port`, `flag`, `path`, `exit_code`, ...
    /// A `suggestion` here overrides the reason's generic one (see [`Error::details`]).
    pub details: Map<String, Value>,
    /// The few log lines that decided, normalised but not yet redacted.
    pub excerpt: Vec<String>,
}

impl Classified {
    /// The `MODEL_LOAD_FAILED` error for `model`, with the matching log lines, secrets
    /// masked, as `details.log_excerpt`.
    pub fn into_error(self, model: &str) -> Error {
        let mut details = self.details;
        if !self.excerpt.is_empty() {
            details.insert(
                "log_excerpt".into(),
                json!(redact_text(&self.excerpt.join("\n"))),
            );
        }
        Error::ModelLoadFailed {
            model: model.to_string(),
            reason: self.reason,
            // The message may quote a URL or a command line: mask what looks like a secret.
            message: redact_text(&self.message),
            details,
        }
    }
}

/// Classifies a failed start from the end of its log and its exit code.
///
/// `exit_code` is the process's exit status; a death by signal N is passed as `-N` (what
/// Python reports) or `128 + N` (what a shell reports). `None` when it has not exited (a
/// start-up timeout, say).
///
/// Reasons, checked on each line from the last one up (the first hit wins):
/// - [`LoadFailure::UnknownFlag`]: argparse's `error: unrecognized arguments: --x`, and its
///   other usage errors (`argument --dtype: invalid choice: 'x'`, `ambiguous option`), which
///   exit with code 2.
/// - [`LoadFailure::PortInUse`]: `[Errno 98] Address already in use` and uvicorn's
///   `error while attempting to bind on address`; the port comes from the line when it names
///   one (ZMQ's `addr='tcp://...:P'`, uvicorn's `('host', P)`), else from the start-up log.
/// - [`LoadFailure::MaxModelLenTooLarge`]: `User-specified max_model_len (R) is greater than
///   the derived max_model_len (key=L ...`; `limit` L and `requested` R.
/// - [`LoadFailure::InsufficientKvCache`]: `To serve at least one request with the model's max
///   seq len (R), (X GiB KV cache is needed, ... estimated maximum model length is L`, `... is
///   larger than the maximum number of tokens that can be stored in KV cache (L)`, `No
///   available memory for the cache blocks`, `Insufficient memory for KV cache`; `limit` is
///   the number of tokens vLLM says fit, when it says so.
/// - [`LoadFailure::InsufficientGpuMemory`]: `Free memory on device ... is less than desired
///   GPU memory utilization` (another process holds the memory). Also the GPU-less cases,
///   `No CUDA GPUs are available`, `Found no NVIDIA driver`, `Failed to infer device type`,
///   and too few GPUs for the parallel size (`World size (2) is larger than the number of
///   available GPUs (1)`): none of the other reasons describe "no GPU memory to use", and
///   this one's suggestion (reduce tensor_parallel_size) is right for the too-few case; the
///   GPU-less cases carry their own `suggestion` (check the driver and CUDA_VISIBLE_DEVICES).
/// - [`LoadFailure::OutOfMemory`]: `torch.OutOfMemoryError`, `CUDA out of memory`, `CUDA error:
///   out of memory`, `HIP out of memory`, `Cannot allocate memory`, `can't allocate memory`;
///   and, when no line decides, a SIGKILL (exit 137 or -9): that is what the kernel's OOM
///   killer sends. (A supervisor that SIGKILLs on a timeout knows it did and should not ask.)
/// - [`LoadFailure::ModelPathNotFound`]: `Repo id must be in the form ...: 'P'` (a path that
///   does not exist is taken for a malformed repo id), and `Invalid repository ID or local
///   directory specified: 'R'` for a repo id.
/// - [`LoadFailure::EmptyModelDirectory`]: `Invalid repository ID or local directory
///   specified: '/abs/dir'` and `'/abs/dir' does not appear to have a file named config.json`.
/// - [`LoadFailure::HubUnreachable`]: `We couldn't connect to 'https://huggingface.co'`,
///   `LocalEntryNotFoundError` (offline or unreachable, not cached), `GatedRepoError`,
///   `401 Client Error`, `RepositoryNotFoundError`, `OfflineModeIsEnabled`.
/// - [`LoadFailure::ProcessExited`] with a specific message and suggestion: a repository that
///   needs `trust_remote_code`, and an architecture vLLM does not support.
///
/// Without a decisive line: a SIGKILL is [`LoadFailure::OutOfMemory`]; any other exit is
/// [`LoadFailure::ProcessExited`] with the last exception line (`ValueError: ...`) or ERROR
/// log line as its message, except an exit code 0 with no error line at all, which is
/// [`LoadFailure::Unknown`], as is a log with nothing recognisable and no exit.
pub fn classify(log_tail: &str, exit_code: Option<i32>) -> Classified {
    let lines = normalise(tail(log_tail, TAIL_BYTES));
    let ctx = Context::from_lines(&lines);

    let decisive = lines
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, l)| l.may_decide())
        .find_map(|(i, l)| match_line(&l.text, &ctx).map(|m| (i, m)));

    let mut out = match decisive {
        Some((i, m)) => Classified {
            reason: m.reason,
            message: m.message,
            details: m.details,
            excerpt: excerpt(&lines, i),
        },
        None => fallback(&lines, exit_code),
    };
    if let Some(code) = exit_code {
        out.details.insert("exit_code".into(), json!(code));
    }
    out
}

/// The last `max` bytes of `s`, cut at a character boundary.
fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// A log line with colours and prefixes removed.
#[derive(Debug)]
struct Line {
    text: String,
    /// The logger level when the line had vLLM's log header (`INFO`, `ERROR`, ...).
    level: Option<&'static str>,
}

impl Line {
    /// Whether this line may carry the decisive error: not an INFO/WARNING/DEBUG log line,
    /// not a traceback frame or an echo of the source line that raised.
    fn may_decide(&self) -> bool {
        if matches!(self.level, Some("INFO" | "WARNING" | "DEBUG")) {
            return false;
        }
        let t = &self.text;
        !(t.trim().is_empty() || t.starts_with("  File \"") || t.starts_with("    "))
    }
}

const LEVELS: [&str; 6] = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "FATAL"];

fn normalise(s: &str) -> Vec<Line> {
    strip_ansi(s)
        .split(['\n', '\r'])
        .map(|raw| {
            let mut t = raw.trim_end();
            // `(APIServer pid=1) `, `(EngineCore_DP0 pid=2) `, `(Worker_TP0 pid=3) `, and
            // torch.distributed's `[rank0]: `, possibly stacked.
            loop {
                if let Some(rest) = strip_process_prefix(t) {
                    t = rest;
                } else if let Some(rest) = strip_rank_prefix(t) {
                    t = rest;
                } else {
                    break;
                }
            }
            let (level, t) = strip_log_header(t);
            Line {
                text: t.to_string(),
                level,
            }
        })
        .collect()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.next() {
            // CSI: parameters then one final byte in @..~.
            Some('[') => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            // OSC: up to BEL or ESC \.
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\u{7}' {
                        break;
                    }
                    if c == '\u{1b}' {
                        chars.next();
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn strip_process_prefix(t: &str) -> Option<&str> {
    let rest = t.strip_prefix('(')?;
    let close = rest.find(") ")?;
    let inside = &rest[..close];
    let pid = inside.rsplit_once("pid=")?.1;
    (!pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())).then(|| &rest[close + 2..])
}

fn strip_rank_prefix(t: &str) -> Option<&str> {
    let rest = t.strip_prefix("[rank")?;
    let close = rest.find("]: ")?;
    rest[..close]
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| &rest[close + 3..])
}

/// `ERROR 11-24 04:51:28 [core.py:708] message` → (`ERROR`, `message`).
fn strip_log_header(t: &str) -> (Option<&'static str>, &str) {
    for level in LEVELS {
        if let Some(rest) = t.strip_prefix(level).and_then(|r| r.strip_prefix(' ')) {
            // The header is short: a date, a time, `[file.py:line]`.
            let window = &rest[..floor_boundary(rest, 80)];
            if let Some(close) = window.find("] ")
                && window[..close].contains('[')
            {
                return (Some(level), &rest[close + 2..]);
            }
        }
    }
    (None, t)
}

fn floor_boundary(s: &str, max: usize) -> usize {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

fn truncate(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() <= MAX_LINE_CHARS {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX_LINE_CHARS).collect();
        t.push('…');
        t
    }
}

/// The decisive line and up to two continuation lines (vLLM's empty-directory error, for
/// one, explains itself on the lines below).
fn excerpt(lines: &[Line], i: usize) -> Vec<String> {
    let mut out = vec![truncate(&lines[i].text)];
    for l in lines.iter().skip(i + 1).take(2) {
        let t = l.text.trim();
        if t.is_empty()
            || l.level.is_some()
            || t.starts_with("File \"")
            || t.starts_with("Traceback")
        {
            break;
        }
        out.push(truncate(t));
    }
    out
}

/// Facts from the rest of the log that a decisive line may lack.
#[derive(Debug, Default)]
struct Context {
    /// The API server's port, from `non-default args: {... 'port': 8000 ...}`, a `--port`
    /// on a command line, or `Starting vLLM server on http://host:port`.
    port: Option<u64>,
    /// The model argument, from `non-default args: {... 'model': '...' ...}`.
    model: Option<String>,
}

impl Context {
    fn from_lines(lines: &[Line]) -> Context {
        let mut ctx = Context::default();
        for l in lines.iter().rev() {
            let t = l.text.as_str();
            if ctx.port.is_none() {
                ctx.port = int_after(t, "'port': ")
                    .or_else(|| int_after(t, "--port "))
                    .or_else(|| int_after(t, "--port="))
                    .or_else(|| {
                        t.contains("server on http")
                            .then(|| t.rsplit_once(':').and_then(|(_, p)| leading_int(p)))
                            .flatten()
                    });
            }
            if ctx.model.is_none() {
                ctx.model = quoted_after(t, "'model': ").map(str::to_string);
            }
            if ctx.port.is_some() && ctx.model.is_some() {
                break;
            }
        }
        ctx
    }
}

/// The text after the first `pat` in `s`.
fn after<'a>(s: &'a str, pat: &str) -> Option<&'a str> {
    s.find(pat).map(|i| &s[i + pat.len()..])
}

/// A number at the start of `s` (`4096`, `2048.0`, `16,384`, `5.62`), spaces allowed before.
fn leading_number(s: &str) -> Option<f64> {
    let s = s.trim_start();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .unwrap_or(s.len());
    let digits: String = s[..end].trim_end_matches(['.', ',']).replace(',', "");
    digits.parse::<f64>().ok().filter(|v| v.is_finite())
}

fn leading_int(s: &str) -> Option<u64> {
    leading_number(s).filter(|v| *v >= 0.0).map(|v| v as u64)
}

fn int_after(s: &str, pat: &str) -> Option<u64> {
    after(s, pat).and_then(leading_int)
}

fn number_after(s: &str, pat: &str) -> Option<f64> {
    after(s, pat).and_then(leading_number)
}

/// The single-quoted string right after `pat`: `'model': '/m'` → `/m`.
fn quoted_after<'a>(s: &'a str, pat: &str) -> Option<&'a str> {
    let rest = after(s, pat)?.strip_prefix('\'')?;
    rest.find('\'').map(|end| &rest[..end])
}

/// What one decisive line says.
struct Match {
    reason: LoadFailure,
    message: String,
    details: Map<String, Value>,
}

impl Match {
    fn new(reason: LoadFailure, message: impl Into<String>) -> Match {
        Match {
            reason,
            message: message.into(),
            details: Map::new(),
        }
    }

    fn with(mut self, key: &str, value: impl Into<Value>) -> Match {
        self.details.insert(key.into(), value.into());
        self
    }

    fn with_opt<T: Into<Value>>(self, key: &str, value: Option<T>) -> Match {
        match value {
            Some(v) => self.with(key, v),
            None => self,
        }
    }
}

fn match_line(t: &str, ctx: &Context) -> Option<Match> {
    unknown_flag(t)
        .or_else(|| port_in_use(t, ctx))
        .or_else(|| max_model_len(t))
        .or_else(|| kv_cache(t))
        .or_else(|| gpu_memory(t))
        .or_else(|| out_of_memory(t))
        .or_else(|| model_path(t, ctx))
        .or_else(|| hub(t, ctx))
        .or_else(|| other_known(t))
}

/// argparse: `vllm: error: unrecognized arguments: --a --b`, `vllm serve: error: argument
/// --dtype: invalid choice: 'x' (choose from ...)`, `error: ambiguous option: --max could
/// match ...`. Only lines whose prefix looks like a program name count, so that a message
/// merely containing ": error: " does not.
fn unknown_flag(t: &str) -> Option<Match> {
    let (prog, rest) = t.split_once(": error: ")?;
    // argparse's prefix is the program (`vllm`, `vllm serve`, `api_server.py`), never an
    // exception name (`RuntimeError: error: ...`).
    let is_prog = !prog.is_empty()
        && prog.len() <= 40
        && !["Error", "Exception", "Warning"]
            .iter()
            .any(|s| prog.ends_with(s))
        && prog
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '-' | '.'));
    if !is_prog {
        return None;
    }
    if let Some(args) = rest.strip_prefix("unrecognized arguments:") {
        let words: Vec<&str> = args.split_whitespace().collect();
        let flags: Vec<&str> = match words.iter().filter(|w| w.starts_with('-')).count() {
            0 => words.clone(),
            _ => words
                .iter()
                .copied()
                .filter(|w| w.starts_with('-'))
                .collect(),
        };
        let first = flags.first().copied().unwrap_or("").to_string();
        let message = match flags.len() {
            0 => "vLLM rejected unrecognized arguments".to_string(),
            1 => format!("vLLM does not know the flag {first}"),
            _ => format!("vLLM does not know the flags {}", flags.join(" ")),
        };
        return Some(
            Match::new(LoadFailure::UnknownFlag, message)
                .with("flag", first)
                .with("flags", json!(flags)),
        );
    }
    if let Some(arg) = rest.strip_prefix("argument ")
        && let Some((flag, problem)) = arg.split_once(": ")
    {
        // `--dtype/-d` style names: report the first spelling.
        let flag = flag.split('/').next().unwrap_or(flag).to_string();
        if let Some(choice) = after(problem, "invalid choice: ") {
            let value = choice
                .strip_prefix('\'')
                .and_then(|c| c.split_once('\''))
                .map(|(v, _)| v.to_string())
                .unwrap_or_default();
            let allowed = choice
                .find("(choose from ")
                .map(|i| choice[i + 13..].trim_end_matches(')').to_string());
            return Some(
                Match::new(
                    LoadFailure::UnknownFlag,
                    format!("'{value}' is not a valid value for {flag}"),
                )
                .with("flag", flag.clone())
                .with("value", value)
                .with_opt("choices", allowed)
                .with(
                    "suggestion",
                    format!("Use one of the values details.choices lists for {flag}."),
                ),
            );
        }
        return Some(
            Match::new(
                LoadFailure::UnknownFlag,
                format!("vLLM rejected {flag}: {}", truncate(problem)),
            )
            .with("flag", flag.clone())
            .with(
                "suggestion",
                format!("Correct the value of {flag} in extra_args; `vllm serve --help` lists the accepted values."),
            ),
        );
    }
    if let Some(opt) = rest.strip_prefix("ambiguous option: ") {
        let flag = opt.split_whitespace().next().unwrap_or("").to_string();
        return Some(
            Match::new(
                LoadFailure::UnknownFlag,
                format!("the flag {flag} is ambiguous: spell it out in full"),
            )
            .with("flag", flag),
        );
    }
    Some(Match::new(
        LoadFailure::UnknownFlag,
        format!("vLLM rejected its command line: {}", truncate(rest)),
    ))
}

fn port_in_use(t: &str, ctx: &Context) -> Option<Match> {
    let lower = t.to_ascii_lowercase();
    if !lower.contains("address already in use") {
        return None;
    }
    // ZMQ names the address: `Address already in use (addr='tcp://127.0.0.1:5555')`;
    // uvicorn the tuple: `error while attempting to bind on address ('127.0.0.1', 8000)`.
    let from_line = after(t, "addr='")
        .and_then(|a| a.split('\'').next())
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(_, p)| leading_int(p))
        .or_else(|| {
            after(t, "bind on address (")
                .and_then(|a| a.split(')').next())
                .and_then(|a| a.rsplit_once(", "))
                .and_then(|(_, p)| leading_int(p))
        });
    let port = from_line.or(ctx.port);
    let message = match port {
        Some(p) => format!("port {p} is already in use"),
        None => "the port vLLM was to listen on is already in use".to_string(),
    };
    Some(Match::new(LoadFailure::PortInUse, message).with_opt("port", port))
}

/// `User-specified max_model_len (4096) is greater than the derived max_model_len
/// (max_position_embeddings=2048.0 or model_max_length=None in model's config.json).`
fn max_model_len(t: &str) -> Option<Match> {
    let rest = after(t, "max_model_len (")?;
    if !t.contains("is greater than the derived max_model_len") {
        return None;
    }
    let requested = leading_int(rest);
    let derived = after(t, "derived max_model_len (")?;
    let (key, limit) = match derived.split_once('=') {
        Some((key, value)) if !key.contains(' ') => (Some(key.to_string()), leading_int(value)),
        _ => (None, leading_int(derived)),
    };
    let message = match (requested, limit) {
        (Some(r), Some(l)) => format!("max_model_len {r} is above the model's limit of {l}"),
        _ => "max_model_len is above the model's limit".to_string(),
    };
    Some(
        Match::new(LoadFailure::MaxModelLenTooLarge, message)
            .with_opt("limit", limit)
            .with_opt("requested", requested)
            .with_opt("limit_key", key),
    )
}

fn kv_cache(t: &str) -> Option<Match> {
    // V1: `To serve at least one request with the model's max seq len (40960), (5.62 GiB KV
    // cache is needed, which is larger than the available KV cache memory (4.50 GiB). Based
    // on the available memory, the estimated maximum model length is 32768. Try ...`
    // (some versions spell it "models's", some format numbers with thousands commas).
    if t.contains("To serve at least one request with the model") {
        let requested = int_after(t, "max seq len (");
        let needed = number_after(t, "), (").or_else(|| number_after(t, "), "));
        let available = number_after(t, "available KV cache memory (");
        let limit = int_after(t, "estimated maximum model length is ");
        let message = match (requested, needed, available, limit) {
            (Some(r), Some(n), Some(a), Some(l)) => format!(
                "max_model_len {r} needs {n} GiB of KV cache but only {a} GiB is left after the weights; at most {l} tokens fit"
            ),
            (Some(r), _, _, Some(l)) => {
                format!("max_model_len {r} does not fit in the KV cache; at most {l} tokens fit")
            }
            _ => "the KV cache cannot hold one sequence of max_model_len".to_string(),
        };
        return Some(
            Match::new(LoadFailure::InsufficientKvCache, message)
                .with_opt("limit", limit)
                .with_opt("requested", requested)
                .with_opt("kv_cache_needed_gib", needed)
                .with_opt("kv_cache_available_gib", available),
        );
    }
    // V0 and the CPU worker: `The model's max seq len (4096) is larger than the maximum
    // number of tokens that can be stored in KV cache (2048). Try increasing ...`
    if t.contains("is larger than the maximum number of tokens that can be stored in KV cache") {
        let requested = int_after(t, "max seq len (");
        let limit = int_after(t, "stored in KV cache (");
        let message = match (requested, limit) {
            (Some(r), Some(l)) => {
                format!("max_model_len {r} does not fit in the KV cache; at most {l} tokens fit")
            }
            _ => "the KV cache cannot hold one sequence of max_model_len".to_string(),
        };
        return Some(
            Match::new(LoadFailure::InsufficientKvCache, message)
                .with_opt("limit", limit)
                .with_opt("requested", requested),
        );
    }
    if t.contains("No available memory for the cache blocks") {
        return Some(Match::new(
            LoadFailure::InsufficientKvCache,
            "no memory is left for the KV cache after loading the weights",
        ));
    }
    if t.to_ascii_lowercase()
        .contains("insufficient memory for kv cache")
    {
        return Some(Match::new(
            LoadFailure::InsufficientKvCache,
            "not enough memory is left for the KV cache",
        ));
    }
    None
}

fn gpu_memory(t: &str) -> Option<Match> {
    // `Free memory on device cuda:0 (7.34/15.49 GiB) on startup is less than desired GPU
    // memory utilization (0.8, 12.39 GiB). Decrease GPU memory utilization or ...`
    if t.contains("is less than desired GPU memory utilization") {
        let (free, total) = after(t, "Free memory on device")
            .and_then(|r| after(r, "("))
            .and_then(|r| r.split_once('/'))
            .map(|(f, rest)| (leading_number(f), leading_number(rest)))
            .unwrap_or((None, None));
        let (util, wanted) = after(t, "GPU memory utilization (")
            .and_then(|r| r.split_once(", "))
            .map(|(u, w)| (leading_number(u), leading_number(w)))
            .unwrap_or((None, None));
        let message = match (free, total, util, wanted) {
            (Some(f), Some(tot), Some(u), Some(w)) => format!(
                "only {f} of {tot} GiB is free on the GPU, less than gpu_memory_utilization {u} reserves ({w} GiB)"
            ),
            _ => "less GPU memory is free than gpu_memory_utilization reserves".to_string(),
        };
        return Some(
            Match::new(LoadFailure::InsufficientGpuMemory, message)
                .with_opt("free_gib", free)
                .with_opt("total_gib", total)
                .with_opt("gpu_memory_utilization", util)
                .with_opt("reservation_gib", wanted)
                .with(
                    "suggestion",
                    "Unload other models or stop other processes on the GPU, or lower gpu_memory_utilization.",
                ),
        );
    }
    const NO_GPU: [&str; 5] = [
        "No CUDA GPUs are available",
        "Found no NVIDIA driver on your system",
        "Failed to infer device type",
        "CUDA driver initialization failed",
        "no CUDA-capable device is detected",
    ];
    if let Some(p) = NO_GPU.iter().find(|p| t.contains(**p)) {
        return Some(
            Match::new(
                LoadFailure::InsufficientGpuMemory,
                format!("vLLM found no usable GPU ({p})"),
            )
            .with(
                "suggestion",
                "Check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES / gpu_ids, or use a vLLM build for CPU.",
            ),
        );
    }
    // V1 multiprocessing: `World size (2) is larger than the number of available GPUs (1)
    // in this node.`; Ray: `The number of required GPUs exceeds the total number of
    // available GPUs in the placement group.`
    if t.contains("larger than the number of available GPUs")
        || t.contains("exceeds the total number of available GPUs")
    {
        let wanted = int_after(t, "World size (");
        let have = int_after(t, "available GPUs (");
        let message = match (wanted, have) {
            (Some(w), Some(h)) => {
                format!("the parallel size needs {w} GPUs but only {h} are available")
            }
            _ => "the parallel size needs more GPUs than are available".to_string(),
        };
        return Some(
            Match::new(LoadFailure::InsufficientGpuMemory, message)
                .with_opt("gpus_required", wanted)
                .with_opt("gpus_available", have),
        );
    }
    None
}

fn out_of_memory(t: &str) -> Option<Match> {
    let gpu = [
        "OutOfMemoryError",
        "CUDA out of memory",
        "CUDA error: out of memory",
        "HIP out of memory",
    ];
    if gpu.iter().any(|p| t.contains(p)) {
        // `Tried to allocate 2.00 GiB. GPU 0 has a total capacity of ...`
        let tried = after(t, "Tried to allocate ").and_then(|r| {
            let mut words = r.split_whitespace();
            let n = words.next()?;
            let unit = words.next()?.trim_end_matches(['.', ',']);
            Some(format!("{n} {unit}"))
        });
        let message = match &tried {
            Some(x) => format!("the GPU ran out of memory (tried to allocate {x})"),
            None => "the GPU ran out of memory".to_string(),
        };
        return Some(
            Match::new(LoadFailure::OutOfMemory, message).with_opt("tried_to_allocate", tried),
        );
    }
    if t.contains("Cannot allocate memory") || t.contains("can't allocate memory") {
        return Some(Match::new(
            LoadFailure::OutOfMemory,
            "the host ran out of memory",
        ));
    }
    None
}

fn is_absolute(p: &str) -> bool {
    p.starts_with('/')
}

fn model_path(t: &str, ctx: &Context) -> Option<Match> {
    // transformers takes a path that does not exist for a repo id, and rejects its form:
    // `Repo id must be in the form 'repo_name' or 'namespace/repo_name': '/models/x'.`
    if t.contains("Repo id must be in the form") {
        let path = after(t, "'namespace/repo_name': ")
            .and_then(|r| r.strip_prefix('\''))
            .and_then(|r| r.split('\'').next())
            .map(str::to_string)
            .or_else(|| ctx.model.clone());
        let message = match &path {
            Some(p) if is_absolute(p) => format!("model path {p} does not exist"),
            Some(p) => {
                format!("'{p}' is neither an existing directory nor a valid Hugging Face repo id")
            }
            None => "the model path does not exist".to_string(),
        };
        return Some(Match::new(LoadFailure::ModelPathNotFound, message).with_opt("path", path));
    }
    // vLLM's ModelConfig, for a directory without config.json/params.json (or an unknown
    // repo): `Invalid repository ID or local directory specified: '/models/empty-dir'.`
    if let Some(p) = quoted_after(t, "Invalid repository ID or local directory specified: ") {
        return Some(if is_absolute(p) {
            Match::new(
                LoadFailure::EmptyModelDirectory,
                format!("{p} holds no config.json (or params.json): it is not a model directory"),
            )
            .with("path", p)
        } else {
            Match::new(
                LoadFailure::ModelPathNotFound,
                format!("'{p}' is neither a model directory nor a known Hugging Face repo"),
            )
            .with("path", p)
        });
    }
    // transformers: `/models/x does not appear to have a file named config.json.`
    const NO_FILE: &str = " does not appear to have a file named ";
    if let Some(i) = t.find(NO_FILE) {
        let p = t[..i]
            .rsplit([' ', '\''])
            .find(|w| !w.is_empty())
            .unwrap_or("");
        let file = t[i + NO_FILE.len()..]
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_end_matches(['.', ',']);
        return Some(if is_absolute(p) {
            Match::new(
                LoadFailure::EmptyModelDirectory,
                format!("{p} has no {file}"),
            )
            .with("path", p)
            .with("file", file)
        } else {
            Match::new(
                LoadFailure::ModelPathNotFound,
                format!("repo '{p}' has no {file}"),
            )
            .with("path", p)
            .with("file", file)
        });
    }
    None
}

fn hub(t: &str, ctx: &Context) -> Option<Match> {
    let repo = ctx.model.clone();
    let gated = t.contains("GatedRepoError")
        || t.contains("Cannot access gated repo")
        || (t.contains("Access to model") && t.contains("is restricted"));
    if gated {
        return Some(
            Match::new(
                LoadFailure::HubUnreachable,
                "the repo is gated: downloading it needs an HF_TOKEN with access granted",
            )
            .with_opt("repo_id", repo)
            .with(
                "suggestion",
                "Accept the model's licence on huggingface.co and set HF_TOKEN in the launcher's environment.",
            ),
        );
    }
    if t.contains("401 Client Error") {
        return Some(
            Match::new(
                LoadFailure::HubUnreachable,
                "the Hugging Face Hub refused the request (401): the repo is private or gated, or HF_TOKEN is invalid",
            )
            .with_opt("repo_id", repo),
        );
    }
    if t.contains("RepositoryNotFoundError") || t.contains("404 Client Error. (Request ID") {
        return Some(
            Match::new(
                LoadFailure::HubUnreachable,
                "the repo was not found on the Hugging Face Hub (or it is private)",
            )
            .with_opt("repo_id", repo),
        );
    }
    let offline = t.contains("OfflineModeIsEnabled")
        || (t.contains("LocalEntryNotFoundError")
            && t.contains("outgoing traffic has been disabled"));
    if offline {
        return Some(
            Match::new(
                LoadFailure::HubUnreachable,
                "the model is not in the local Hugging Face cache and downloads are disabled (HF_HUB_OFFLINE)",
            )
            .with_opt("repo_id", repo)
            .with("offline", true),
        );
    }
    if t.contains("LocalEntryNotFoundError")
        || t.contains("We couldn't connect to 'https://huggingface.co'")
    {
        return Some(
            Match::new(
                LoadFailure::HubUnreachable,
                "cannot reach https://huggingface.co and the model is not in the local cache",
            )
            .with_opt("repo_id", repo),
        );
    }
    None
}

/// Failures with no reason of their own: [`LoadFailure::ProcessExited`], with a message and
/// a suggestion that say what to do.
fn other_known(t: &str) -> Option<Match> {
    if t.contains("trust_remote_code=True") || t.contains("--trust-remote-code") {
        return Some(
            Match::new(
                LoadFailure::ProcessExited,
                "the model needs its repository's own code to load (trust_remote_code)",
            )
            .with(
                "suggestion",
                "If you trust the repository's code, add --trust-remote-code to extra_args.",
            ),
        );
    }
    // `Model architectures ['FooForCausalLM'] are not supported for now. Supported ...`
    if t.contains("Model architectures") && t.contains("are not supported") {
        let arch = after(t, "Model architectures ")
            .and_then(|r| r.split(" are").next())
            .unwrap_or("")
            .to_string();
        return Some(
            Match::new(
                LoadFailure::ProcessExited,
                format!("this vLLM does not support the model's architecture {arch}"),
            )
            .with("architectures", arch)
            .with(
                "suggestion",
                "Use a vLLM version that supports this architecture, or another model.",
            ),
        );
    }
    // transformers: `The checkpoint you are trying to load has model type `x` but
    // Transformers does not recognize this architecture.`
    if t.contains("does not recognize this architecture") {
        return Some(
            Match::new(
                LoadFailure::ProcessExited,
                "the installed transformers does not know the model's type",
            )
            .with(
                "suggestion",
                "Upgrade transformers (and vLLM) to a version that knows this model type.",
            ),
        );
    }
    None
}

/// Wrappers that say only that something failed earlier; a message prefers any other line.
const GENERIC: [&str; 7] = [
    "Engine core initialization failed",
    "EngineCore failed to start",
    "See root cause above",
    "WorkerProc failed to start",
    "Exception in worker",
    "The above exception was the direct cause",
    "During handling of the above exception",
];

/// `ValueError: ...`, `torch.AcceleratorError: ...`, `huggingface_hub.errors.X: ...`.
fn is_exception_line(t: &str) -> bool {
    let head = t.split(':').next().unwrap_or("");
    !head.is_empty()
        && t.len() > head.len()
        && head
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && ["Error", "Exception", "Exit", "Interrupt", "Fault"]
            .iter()
            .any(|s| head.ends_with(s))
}

fn fallback(lines: &[Line], exit_code: Option<i32>) -> Classified {
    let candidates: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            l.may_decide()
                && (is_exception_line(&l.text)
                    || matches!(l.level, Some("ERROR" | "CRITICAL" | "FATAL")))
        })
        .map(|(i, _)| i)
        .collect();
    let error_line = candidates
        .iter()
        .rev()
        .find(|i| !GENERIC.iter().any(|g| lines[**i].text.contains(g)))
        .or(candidates.last())
        .copied();

    let sigkill = matches!(exit_code, Some(137 | -9));
    let (reason, message, excerpt) = match (exit_code, error_line) {
        _ if sigkill => (
            LoadFailure::OutOfMemory,
            "vLLM was killed by SIGKILL, most likely by the kernel's out-of-memory killer"
                .to_string(),
            last_lines(lines, 3),
        ),
        (Some(_), Some(i)) => (
            LoadFailure::ProcessExited,
            truncate(&lines[i].text),
            vec![truncate(&lines[i].text)],
        ),
        (Some(0), None) => (
            LoadFailure::Unknown,
            "vLLM exited with code 0 before it was ready, without an error in its log".to_string(),
            last_lines(lines, 3),
        ),
        (Some(code), None) if code < 0 => (
            LoadFailure::ProcessExited,
            format!("vLLM was killed by signal {} before it was ready", -code),
            last_lines(lines, 3),
        ),
        (Some(code), None) if code > 128 => (
            LoadFailure::ProcessExited,
            format!(
                "vLLM exited with code {code} (signal {}) before it was ready",
                code - 128
            ),
            last_lines(lines, 3),
        ),
        (Some(code), None) => (
            LoadFailure::ProcessExited,
            format!("vLLM exited with code {code} before it was ready"),
            last_lines(lines, 3),
        ),
        (None, Some(i)) => (
            LoadFailure::Unknown,
            truncate(&lines[i].text),
            vec![truncate(&lines[i].text)],
        ),
        (None, None) => (
            LoadFailure::Unknown,
            "no recognisable start-up error in the log".to_string(),
            last_lines(lines, 3),
        ),
    };
    Classified {
        reason,
        message,
        details: Map::new(),
        excerpt,
    }
}

fn last_lines(lines: &[Line], n: usize) -> Vec<String> {
    let mut out: Vec<String> = lines
        .iter()
        .rev()
        .filter(|l| !l.text.trim().is_empty())
        .take(n)
        .map(|l| truncate(&l.text))
        .collect();
    out.reverse();
    out
}
