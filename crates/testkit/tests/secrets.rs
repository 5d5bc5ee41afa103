//! A planted API key and HF token never leave where they belong: the key reaches its
//! endpoints (calls that need it succeed), and neither appears in any answer, resource,
//! log line of ours (debug level), the audit log, the store (saved states decoded), an
//! exported state file or the launched servers' records.

use serde_json::{Value, json};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use vllm_core::states::{self, PartKind};
use vllm_core::store::{Store, rusqlite};
use vllm_crush_gen::{self as generate, ConversationSpec};
use vllm_mcp_testkit::wire::{Wire, text_of};
use vllm_mcp_testkit::{MockVllm, ServerRig};

const KEY: &str = "planted-key-7f3a9c1e5d0b4a82";
const HF: &str = "hf_plantedtoken0123456789abcdefXYZ";

fn spawn(rig: &ServerRig, name: &str, crush: &Path) -> Wire {
    let mut cmd = rig.command(name);
    cmd.env("PLANTED_KEY", KEY)
        .env("HF_TOKEN", HF)
        .env("RUST_LOG", "debug")
        .env("VLLM_MCP_FAKE_GPUS", "2")
        .env("VLLM_MCP_CRUSH_DB", crush);
    let log = std::fs::File::create(rig.dir.path().join(format!("{name}.stderr"))).unwrap();
    let mut w = Wire::spawn_with_stderr(cmd, Stdio::from(log));
    w.initialize();
    w
}

/// Calls a tool, keeps the whole answer for the search, and checks it succeeded.
fn ok(w: &mut Wire, seen: &mut Vec<String>, tool: &str, args: Value) -> Value {
    let r = w.call(tool, args);
    seen.push(r.to_string());
    let a = text_of(&r);
    assert_eq!(a["success"], true, "{tool}: {a}");
    a
}

fn read(w: &mut Wire, seen: &mut Vec<String>, uri: &str) {
    let r = w.read(uri);
    seen.push(r.to_string());
    assert!(r["contents"][0]["text"].is_string(), "{uri}: {r}");
}

fn every_file(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            every_file(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn a_planted_key_reaches_its_endpoints_and_nowhere_else() {
    let mock = MockVllm::start(&["sec/attached", "--api-key", KEY], &[]);
    let rig = ServerRig::new(&format!(
        "[[endpoints]]\nname = \"sec\"\nbase_url = {:?}\napi_key_env = \"PLANTED_KEY\"\n",
        mock.base_url
    ));
    // Launched servers get the key through launcher.api_key_env.
    let text = std::fs::read_to_string(&rig.config).unwrap();
    let text = text.replacen(
        "[launcher]\n",
        "[launcher]\napi_key_env = \"PLANTED_KEY\"\n",
        1,
    );
    std::fs::write(&rig.config, text).unwrap();
    let crush = rig.dir.path().join("crush/crush.db");
    std::fs::create_dir_all(crush.parent().unwrap()).unwrap();
    {
        let conn = rusqlite::Connection::open(&crush).unwrap();
        generate::insert(
            &conn,
            &ConversationSpec {
                seed: 7,
                messages: 12,
                sub_sessions: 1,
                target_bytes: None,
            },
        )
        .unwrap();
    }
    let mut seen = Vec::new();

    let mut m = spawn(&rig, "vllm-model-manager", &crush);
    ok(&mut m, &mut seen, "list-models", json!({}));
    ok(
        &mut m,
        &mut seen,
        "get-model-info",
        json!({"model_id": "sec/attached"}),
    );
    let chat = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
    let mut c = chat.clone();
    c["model_id"] = json!("sec/attached");
    ok(&mut m, &mut seen, "chat", c);
    let a = ok(
        &mut m,
        &mut seen,
        "load-model",
        json!({"model_id": "sec/launched", "wait_seconds": 60}),
    );
    assert_eq!(a["status"], "loaded", "{a}");
    let mut c = chat.clone();
    c["model_id"] = json!("sec/launched");
    ok(&mut m, &mut seen, "chat", c);
    // A secret on the command line is refused (launch arguments are stored, shown and
    // saved; vllm-mcp passes the key from the environment), and the refusal, its audit
    // record and our logs do not repeat it.
    for extra in [
        json!(["--api-key", KEY]),
        json!(["--hf-token", HF]),
        json!([format!("--hf-token={HF}")]),
        json!(["--max-num-seqs", "4", "--some-secret", KEY]),
    ] {
        let r = m.call(
            "load-model",
            json!({"model_id": "sec/argv", "extra_args": extra, "wait_seconds": 60}),
        );
        seen.push(r.to_string());
        assert_eq!(text_of(&r)["error"]["code"], "INVALID_ARGUMENT", "{r}");
    }
    for uri in [
        "vllm://model/sec/launched/config",
        "vllm://model/sec/launched/logs?lines=500",
        "vllm://crush/provider-config",
        "vllm://audit/log?limit=1000",
    ] {
        read(&mut m, &mut seen, uri);
    }

    let mut p = spawn(&rig, "vllm-perf-monitor", &crush);
    std::thread::sleep(Duration::from_secs(2));
    ok(
        &mut p,
        &mut seen,
        "get-metrics",
        json!({"duration_seconds": 60}),
    );
    ok(&mut p, &mut seen, "get-gpu-stats", json!({}));
    ok(&mut p, &mut seen, "get-memory-stats", json!({}));
    let b = ok(
        &mut p,
        &mut seen,
        "benchmark-model",
        json!({"model_id": "sec/attached", "requests": 4, "concurrency": 2, "prompt_tokens": 8, "output_tokens": 4}),
    );
    assert_eq!(
        b["client"]["latency"]["count"], 4,
        "the key must reach the endpoint: {b}"
    );
    for uri in [
        "vllm://metrics/current",
        "vllm://alerts/active",
        "vllm://audit/log",
    ] {
        read(&mut p, &mut seen, uri);
    }

    let mut s = spawn(&rig, "vllm-state-persistence", &crush);
    let saved = ok(
        &mut s,
        &mut seen,
        "save-state",
        json!({"session_id": "current"}),
    );
    let state_id = saved["state_id"].as_str().unwrap().to_string();
    ok(
        &mut s,
        &mut seen,
        "export-state",
        json!({"state_id": state_id, "path": "planted.vmst"}),
    );
    read(&mut s, &mut seen, "vllm://state/sessions");
    read(&mut s, &mut seen, "vllm://audit/log?limit=1000");

    ok(
        &mut m,
        &mut seen,
        "unload-model",
        json!({"model_id": "sec/launched"}),
    );
    for w in [m, p, s] {
        w.close(Duration::from_secs(10));
    }

    // Saved states decoded: their parts are compressed in the store and the export.
    let store = Store::open_in_dir(rig.dir.path()).unwrap();
    for kind in [PartKind::Models, PartKind::Conversations] {
        if let Some(frame) = states::read_frame(&store, &state_id, kind).unwrap() {
            let v: Value = states::decode_part(&state_id, kind, &frame).unwrap();
            seen.push(v.to_string());
        }
    }
    let export = rig.dir.path().join("exports/planted.vmst");
    let (meta, frames) = states::read_export(&export).unwrap();
    seen.push(serde_json::to_string(&meta).unwrap());
    for (frame, info) in frames.iter().zip(&meta.parts) {
        let v: Value = states::decode_part(&state_id, info.part, frame).unwrap();
        seen.push(v.to_string());
    }
    drop(store);

    let mut files = Vec::new();
    every_file(rig.dir.path(), &mut files);
    let mut leaks = Vec::new();
    for f in &files {
        if f.starts_with(rig.dir.path().join("crush")) || f.ends_with("config.toml") {
            continue;
        }
        let bytes = std::fs::read(f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for secret in [KEY, HF] {
            if text.contains(secret) {
                leaks.push(format!("{} holds {secret}", f.display()));
            }
        }
    }
    for (i, answer) in seen.iter().enumerate() {
        for secret in [KEY, HF] {
            if answer.contains(secret) {
                leaks.push(format!(
                    "answer {i} holds {secret}: {}",
                    &answer[..answer.len().min(300)]
                ));
            }
        }
    }
    let logs: u64 = files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "stderr"))
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    eprintln!(
        "searched {} answers and {} files ({} KB of our debug logs) for the planted secrets",
        seen.len(),
        files.len(),
        logs / 1024
    );
    assert!(logs > 2_000, "the servers' debug logs were not captured");
    assert!(leaks.is_empty(), "{leaks:#?}");
}

/// A stand-in vLLM that answers every request with an empty model list and keeps the
/// raw request heads it got.
fn spy_endpoint() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heads: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let kept = heads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let kept = kept.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                loop {
                    let mut head = String::new();
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                        if line == "\r\n" {
                            break;
                        }
                        head.push_str(&line);
                        line.clear();
                    }
                    if head.is_empty() {
                        return;
                    }
                    kept.lock().unwrap().push(head);
                    let body = r#"{"object":"list","data":[]}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, heads)
}

#[test]
fn an_endpoint_key_is_sent_to_its_endpoint_only() {
    let keyed = MockVllm::start(&["only/keyed", "--api-key", KEY], &[]);
    let (spy_url, heads) = spy_endpoint();
    let rig = ServerRig::new(&format!(
        "[[endpoints]]\nname = \"keyed\"\nbase_url = {:?}\napi_key_env = \"PLANTED_KEY\"\n\
         [[endpoints]]\nname = \"other\"\nbase_url = {spy_url:?}\n",
        keyed.base_url
    ));
    let crush = rig.dir.path().join("crush.db");
    let mut seen = Vec::new();
    let mut m = spawn(&rig, "vllm-model-manager", &crush);
    let listed = ok(&mut m, &mut seen, "list-models", json!({}));
    assert!(listed.to_string().contains("only/keyed"), "{listed}");
    ok(
        &mut m,
        &mut seen,
        "chat",
        json!({"model_id": "only/keyed", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}),
    );
    ok(&mut m, &mut seen, "server-health", json!({}));
    m.close(Duration::from_secs(5));
    let mut pm = spawn(&rig, "vllm-perf-monitor", &crush);
    ok(
        &mut pm,
        &mut seen,
        "get-metrics",
        json!({"duration_seconds": 30}),
    );
    ok(&mut pm, &mut seen, "server-health", json!({}));
    pm.close(Duration::from_secs(5));

    let heads = heads.lock().unwrap().clone();
    assert!(
        heads.len() >= 3,
        "the other endpoint was hardly asked: {heads:?}"
    );
    for head in &heads {
        assert!(
            !head.contains(KEY),
            "the key went to the other endpoint: {head}"
        );
        assert!(
            !head.to_ascii_lowercase().contains("authorization"),
            "an Authorization header went to the other endpoint: {head}"
        );
    }
    for answer in &seen {
        assert!(!answer.contains(KEY), "the key is in an answer: {answer}");
    }
    eprintln!(
        "{} requests to the keyless endpoint, none with the key or an Authorization header",
        heads.len()
    );
}
