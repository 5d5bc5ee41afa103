//! The bad-input corpus: every tool and resource of the three servers, and the JSON-RPC
//! framing, fed inputs a careless or hostile client could send. Each must get an error
//! with a documented code (docs/ERRORS.md) or a JSON-RPC error, the server must keep
//! serving, and the store and the data directory must be as they were.
//!
//! Tool inputs are generated from each tool's own input schema (tools/list), so a tool
//! added later is covered without touching this file: the required fields dropped one
//! at a time, an unknown field, every property given a value of a type its schema does
//! not allow, numbers out of range, and strings that are huge, not UTF-8 clean, path
//! traversals, shell metacharacters or SQL.

use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use vllm_core::store::rusqlite;
use vllm_mcp_testkit::ServerRig;
use vllm_mcp_testkit::wire::{Wire, text_of};

const SERVERS: [&str; 3] = [
    "vllm-model-manager",
    "vllm-state-persistence",
    "vllm-perf-monitor",
];

/// Tables whose rows a refused call must not change (samples, leases and the audit log
/// change on their own).
const GUARDED_TABLES: [&str; 6] = [
    "models",
    "model_sampling",
    "load_history",
    "states",
    "state_parts",
    "restored_conversations",
];

/// The documented error codes.
fn documented_codes() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/ERRORS.md");
    std::fs::read_to_string(root)
        .expect("docs/ERRORS.md")
        .lines()
        .filter_map(|l| {
            l.strip_prefix("| `")?
                .split_once('`')
                .map(|(c, _)| c.to_string())
        })
        .filter(|c| c.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_'))
        .collect()
}

/// Every row of the guarded tables, as text.
fn fingerprint(db: &Path) -> String {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open the store");
    let mut out = String::new();
    for t in GUARDED_TABLES {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {t} ORDER BY rowid"))
            .expect("select");
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..n)
                    .map(|i| {
                        r.get::<_, rusqlite::types::Value>(i)
                            .map(|v| format!("{v:?}"))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .expect("query");
        for row in rows {
            out.push_str(&format!("{t}: {}\n", row.expect("row").join(" | ")));
        }
    }
    out
}

/// Files under the data directory apart from the store and its journal.
fn data_files(dir: &Path) -> BTreeSet<String> {
    fn walk(d: &Path, root: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
                if !rel.starts_with("vllm-mcp.db") && !rel.ends_with("config.toml") {
                    out.insert(rel);
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// The JSON types a property's schema allows (`type` as a string or a list; `anyOf`).
fn allowed_types(schema: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    match &schema["type"] {
        Value::String(t) => {
            out.insert(t.clone());
        }
        Value::Array(ts) => out.extend(ts.iter().filter_map(|t| t.as_str().map(String::from))),
        _ => {}
    }
    for key in ["anyOf", "oneOf"] {
        for s in schema[key].as_array().into_iter().flatten() {
            out.extend(allowed_types(s));
        }
    }
    if out.contains("integer") {
        out.insert("number".into());
    }
    out
}

/// A plausible value for a property: it names nothing that exists.
fn base_value(schema: &Value) -> Value {
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    let types = allowed_types(schema);
    if types.contains("string") {
        json!("corpus-absent")
    } else if types.contains("integer") {
        json!(1)
    } else if types.contains("number") {
        json!(1.0)
    } else if types.contains("boolean") {
        json!(false)
    } else if types.contains("array") {
        json!([])
    } else {
        json!({})
    }
}

/// One value of each JSON type the schema does not allow.
fn wrong_types(schema: &Value) -> Vec<(&'static str, Value)> {
    let types = allowed_types(schema);
    if types.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let candidates: [(&str, &str, Value); 5] = [
        ("string", "a string", json!("twelve")),
        ("number", "a number", json!(12.5)),
        ("boolean", "a boolean", json!(true)),
        ("array", "an array", json!([1, 2])),
        ("object", "an object", json!({"nested": 1})),
    ];
    for (t, label, v) in candidates {
        if !types.contains(t) {
            out.push((label, v));
        }
    }
    out
}

/// Strings no id or name may be.
fn hostile_strings() -> Vec<(&'static str, String)> {
    vec![
        ("a 1 MB string", "m".repeat(1 << 20)),
        ("a path traversal", "../../../../etc/passwd".into()),
        ("shell metacharacters", "x; rm -rf / #$(id)`id`|&".into()),
        ("SQL", "x'; DROP TABLE models; --".into()),
        ("a NUL and control characters", "a\u{0}b\u{1b}[31m".into()),
        ("right-to-left and emoji", "\u{202e}lave\u{1f600}".into()),
    ]
}

/// The generated cases of one tool: (what, arguments).
fn cases_of(tool: &Value) -> Vec<(String, Value)> {
    let schema = &tool["inputSchema"];
    let props = schema["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let required: Vec<String> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(String::from))
        .collect();
    let base: Map<String, Value> = required
        .iter()
        .map(|r| (r.clone(), base_value(&props[r])))
        .collect();
    let mut out = Vec::new();
    let with = |k: &str, v: Value| {
        let mut a = base.clone();
        a.insert(k.to_string(), v);
        Value::Object(a)
    };
    out.push((
        "an unknown field".to_string(),
        with("no_such_field", json!(1)),
    ));
    for r in &required {
        let mut a = base.clone();
        a.remove(r);
        out.push((format!("without required `{r}`"), Value::Object(a)));
    }
    for (k, p) in &props {
        for (label, v) in wrong_types(p) {
            out.push((format!("`{k}` as {label}"), with(k, v)));
        }
        let types = allowed_types(p);
        if types.contains("number") {
            out.push((format!("`{k}` = -1e300"), with(k, json!(-1e300))));
            out.push((format!("`{k}` = 1e300"), with(k, json!(1e300))));
        }
        if types.contains("integer") {
            out.push((
                format!("`{k}` = 2^64"),
                with(k, json!(18446744073709551616.0)),
            ));
            out.push((format!("`{k}` = 0.5"), with(k, json!(0.5))));
        }
        if types.contains("string") && p["enum"].is_null() && is_name(k) {
            for (label, s) in hostile_strings() {
                out.push((format!("`{k}` as {label}"), with(k, json!(s))));
            }
        }
        if !p["enum"].is_null() {
            out.push((
                format!("`{k}` outside its enum"),
                with(k, json!("not-a-choice")),
            ));
        }
    }
    out
}

/// Properties that name something (ids, paths, names, URIs): free text (a chat
/// message, a note) may hold anything.
fn is_name(key: &str) -> bool {
    [
        "id", "name", "path", "uri", "source", "dir", "state", "session", "model", "lora", "file",
    ]
    .iter()
    .any(|w| {
        key.split('_')
            .any(|part| part == *w || part == format!("{w}s"))
    })
}

/// Resource URIs no server may serve (or may only answer with an error).
fn bad_uris() -> Vec<String> {
    let mut v: Vec<String> = [
        "file:///etc/passwd",
        "vllm://",
        "vllm://../../etc/passwd",
        "vllm://model/../../etc/passwd/config",
        "vllm://model/%2e%2e%2f%2e%2e%2fetc/config",
        "vllm://model/a%zz/config",
        "vllm://model/corpus-absent/config?x=1",
        "vllm://model/corpus-absent/logs?lines=0",
        "vllm://model/corpus-absent/logs?lines=99999999",
        "vllm://model/corpus-absent/logs?lines=-3",
        "vllm://model//logs",
        "vllm://state/session/%zz/summary",
        "vllm://state/session/x'; DROP TABLE states; --/summary",
        "vllm://state/session/corpus-absent/summary?limit=0",
        "vllm://state/session/corpus-absent/conversation?cursor=%00",
        "vllm://state/sessions?limit=-1",
        "vllm://state/sessions?cursor=not-a-cursor",
        "vllm://metrics/history/-5m",
        "vllm://metrics/history/99999d",
        "vllm://metrics/history/abc",
        "vllm://alerts/everything",
        "vllm://audit/log?limit=0",
        "vllm://audit/log?before_id=abc",
        "vllm://audit/log?since=tomorrow",
        "vllm://audit/log?shell=$(id)",
        "VLLM://MODEL/X/CONFIG",
        "vllm://crush/provider-config/../../x",
        "\u{202e}vllm://model/x/config",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(format!("vllm://model/{}/config", "m".repeat(100_000)));
    v
}

/// Lines that are not one JSON-RPC request.
fn bad_lines() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("not JSON", b"hello\n".to_vec()),
        (
            "truncated JSON",
            b"{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\n".to_vec(),
        ),
        ("binary", vec![0xff, 0xfe, 0x00, 0x01, b'\n']),
        ("a lone number", b"42\n".to_vec()),
        ("an empty batch", b"[]\n".to_vec()),
        (
            "a request without a method",
            b"{\"jsonrpc\":\"2.0\",\"id\":77}\n".to_vec(),
        ),
        ("a 17 MiB line", {
            let mut v = vec![b'{'; 17 << 20];
            v.push(b'\n');
            v
        }),
    ]
}

#[derive(Default)]
struct Tally {
    tried: usize,
    failures: Vec<String>,
}

impl Tally {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        self.tried += 1;
        if !ok {
            self.failures.push(what());
        }
    }
}

fn spawn(rig: &ServerRig, name: &str) -> Wire {
    let mut cmd = rig.command(name);
    cmd.env("VLLM_MCP_FAKE_GPUS", "2");
    let mut w = Wire::spawn(cmd);
    w.initialize();
    w
}

#[test]
fn every_bad_input_is_refused_with_a_documented_code_and_changes_nothing() {
    let rig = ServerRig::new(
        "[security]\nallowed_models = [\"corpus-allowed/*\"]\n[limits]\ngpu_work_per_minute = 0\n",
    );
    let codes = documented_codes();
    assert!(codes.len() >= 20, "{codes:?}");
    let mut tally = Tally::default();
    let mut per_server = Vec::new();
    for name in SERVERS {
        let mut w = spawn(&rig, name);
        let before = (fingerprint(&rig.store_path()), data_files(rig.dir.path()));
        let start = tally.tried;
        let tools = w.request("tools/list", json!({}))["tools"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(!tools.is_empty(), "{name} lists no tools");
        for tool in &tools {
            let tname = tool["name"].as_str().unwrap().to_string();
            for (what, args) in cases_of(tool) {
                let msg = w.request_raw("tools/call", json!({"name": tname, "arguments": args}));
                let result = &msg["result"];
                let answer = text_of(result);
                let code = answer["error"]["code"].as_str().unwrap_or("").to_string();
                tally.check(
                    result["isError"] == true
                        && codes.contains(&code)
                        && answer["error"]["message"]
                            .as_str()
                            .is_some_and(|m| !m.is_empty())
                        && answer["error"]["details"]["suggestion"].is_string(),
                    || format!("{name} {tname} {what}: {}", cut(&msg.to_string())),
                );
            }
            // Arguments that are not an object at all: a JSON-RPC error or our error.
            for args in [json!("text"), json!([1]), json!(7)] {
                let msg = w.request_raw("tools/call", json!({"name": tname, "arguments": args}));
                tally.check(
                    msg["error"]["code"].is_i64() || msg["result"]["isError"] == true,
                    || format!("{name} {tname} arguments {args}: {}", cut(&msg.to_string())),
                );
            }
        }
        for tool in ["no-such-tool", "../load-model", "load-model; rm -rf /", ""] {
            let msg = w.request_raw("tools/call", json!({"name": tool, "arguments": {}}));
            tally.check(msg["error"]["code"].is_i64(), || {
                format!("{name} unknown tool {tool:?}: {}", cut(&msg.to_string()))
            });
        }
        for uri in bad_uris() {
            let msg = w.request_raw("resources/read", json!({"uri": uri}));
            let content = msg["result"]["contents"][0]["text"]
                .as_str()
                .and_then(|t| serde_json::from_str::<Value>(t).ok());
            let refused = msg["error"]["code"].is_i64()
                || content.as_ref().is_some_and(|c| {
                    c["success"] == false
                        && c["error"]["code"]
                            .as_str()
                            .is_some_and(|k| codes.contains(k))
                });
            tally.check(refused, || {
                format!("{name} resource {}: {}", cut(&uri), cut(&msg.to_string()))
            });
        }
        for method in [
            "no/such",
            "tools/destroy",
            "resources/write",
            "rpc.discover",
            "",
        ] {
            let msg = w.request_raw(method, json!({}));
            tally.check(
                msg["error"]["code"] == -32601 || msg["error"]["code"].is_i64(),
                || format!("{name} method {method:?}: {}", cut(&msg.to_string())),
            );
        }
        for (what, line) in bad_lines() {
            // The bad line, then a ping: the parse error must come before the ping's
            // answer (a server that dropped the line silently answers the ping only).
            w.send_raw(&line);
            let pong = w.request_raw("ping", json!({}));
            let errors = w.take_skipped();
            tally.check(
                pong["result"] == json!({})
                    && errors.iter().any(|m| {
                        m["error"]["code"].is_i64() && (m["id"].is_null() || m["id"] == 77)
                    }),
                || format!("{name} {what}: {errors:?} then {}", cut(&pong.to_string())),
            );
        }
        // Still serving, with bounded memory after a 17 MiB line and a 1 MB string per
        // name field.
        assert_eq!(
            w.request_raw("ping", json!({}))["result"],
            json!({}),
            "{name}"
        );
        let rss_mb = vllm_mcp_testkit::status_kb(w.pid(), "VmHWM:") / 1024;
        assert!(rss_mb < 128, "{name} peaked at {rss_mb} MiB");
        let after = (fingerprint(&rig.store_path()), data_files(rig.dir.path()));
        assert_eq!(before.0, after.0, "{name} changed the store");
        assert_eq!(before.1, after.1, "{name} wrote files");
        per_server.push(format!("{name}: {}", tally.tried - start));
        w.close(std::time::Duration::from_secs(5));
    }
    assert!(
        rig.marked_pids().is_empty(),
        "a refused call launched something: {:?}",
        rig.marked_pids()
    );
    eprintln!(
        "bad-input corpus: {} cases ({}), {} not refused as they should be",
        tally.tried,
        per_server.join(", "),
        tally.failures.len()
    );
    assert!(tally.tried >= 150, "only {} cases", tally.tried);
    assert!(
        tally.failures.is_empty(),
        "{} of {} cases were not refused properly:\n{}",
        tally.failures.len(),
        tally.tried,
        tally.failures.join("\n")
    );
}

fn cut(s: &str) -> String {
    if s.len() > 300 {
        format!("{}…", &s[..s.floor_char_boundary(300)])
    } else {
        s.to_string()
    }
}
