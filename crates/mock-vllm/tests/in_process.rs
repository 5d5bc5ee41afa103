//! Behaviour of the in-process mock (`spawn_for_test`) checked against the real-vLLM captures in
//! tests/data/vllm-reference.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use mock_vllm::metrics::{parse_exposition, parse_sample};
use mock_vllm::{MockHandle, spawn_for_test};
use serde_json::Value;

const REF: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/vllm-reference"
);

fn capture(name: &str) -> String {
    std::fs::read_to_string(format!("{REF}/{name}"))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .replace("\r\n", "\n")
}

/// The body of a captured HTTP exchange (what follows the first blank line after "HTTP/1.1").
fn capture_body(text: &str) -> String {
    let start = text.find("HTTP/1.1").expect("status line");
    let rest = &text[start..];
    let body = rest.split_once("\n\n").map(|x| x.1).unwrap_or("");
    body.trim_end_matches('\n').to_string()
}

/// The body following a `### title` section of a capture.
fn section(text: &str, title: &str) -> String {
    let start = text
        .find(title)
        .unwrap_or_else(|| panic!("section {title}"));
    let rest = &text[start..];
    let end = rest[3..]
        .find("\n### ")
        .map(|e| e + 3)
        .unwrap_or(rest.len());
    capture_body(&rest[..end])
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

fn model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"architectures":["LlamaForCausalLM"],"max_position_embeddings":2048}"#,
    )
    .expect("config");
    dir
}

async fn start(dir: &tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> MockHandle {
    let model = dir.path().to_str().expect("utf8").to_string();
    let mut args: Vec<&str> = vec![
        &model,
        "--max-model-len",
        "512",
        "--served-model-name",
        "tiny",
    ];
    args.extend_from_slice(extra);
    spawn_for_test(&args, env).await.expect("mock starts")
}

async fn get(c: &reqwest::Client, m: &MockHandle, path: &str) -> (u16, String) {
    let r = c
        .get(format!("{}{path}", m.base_url()))
        .send()
        .await
        .expect("get");
    let s = r.status().as_u16();
    (s, r.text().await.expect("body"))
}

async fn post(c: &reqwest::Client, m: &MockHandle, path: &str, body: &str) -> (u16, String) {
    let r = c
        .post(format!("{}{path}", m.base_url()))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("post");
    let s = r.status().as_u16();
    (s, r.text().await.expect("body"))
}

/// family name -> label names (without `le`), for `vllm:` families.
fn vllm_families(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    parse_exposition(text)
        .into_iter()
        .filter(|f| f.name.starts_with("vllm:"))
        .map(|f| {
            let labels = f
                .samples
                .iter()
                .flat_map(|(_, l, _)| l.iter().map(|(k, _)| k.clone()))
                .filter(|k| k != "le")
                .collect();
            (f.name, labels)
        })
        .collect()
}

/// family -> bucket bounds (le values of the first series).
fn buckets(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("vllm:") && l.contains("_bucket{"))
    {
        let (name, labels, _) = parse_sample(line).expect("sample");
        let fam = name.trim_end_matches("_bucket").to_string();
        let le = labels
            .iter()
            .find(|(k, _)| k == "le")
            .map(|(_, v)| v.clone())
            .expect("le");
        let v = out.entry(fam).or_default();
        if !v.contains(&le) {
            v.push(le);
        }
    }
    out
}

fn metric(text: &str, name: &str, label: Option<(&str, &str)>) -> f64 {
    text.lines()
        .filter_map(parse_sample)
        .find(|(n, l, _)| {
            n == name && label.is_none_or(|(k, v)| l.iter().any(|(a, b)| a == k && b == v))
        })
        .map(|(_, _, v)| v.parse::<f64>().expect("number"))
        .unwrap_or_else(|| panic!("no sample {name}"))
}

#[tokio::test]
async fn models_and_version_match_capture() {
    let dir = model_dir();
    let m = start(&dir, &[], &[]).await;
    let c = client();
    let (s, body) = get(&c, &m, "/v1/models").await;
    assert_eq!(s, 200);
    let ours: Value = serde_json::from_str(&body).unwrap();
    let theirs: Value = serde_json::from_str(&capture("v1_models.json")).unwrap();
    assert_eq!(keys(&ours), keys(&theirs));
    assert_eq!(keys(&ours["data"][0]), keys(&theirs["data"][0]));
    assert_eq!(
        keys(&ours["data"][0]["permission"][0]),
        keys(&theirs["data"][0]["permission"][0])
    );
    assert_eq!(ours["data"][0]["id"], "tiny");
    assert_eq!(ours["data"][0]["root"], dir.path().to_str().unwrap());
    assert_eq!(ours["data"][0]["max_model_len"], 512);
    assert_eq!(ours["data"][0]["parent"], Value::Null);
    let (s, body) = get(&c, &m, "/version").await;
    assert_eq!((s, body), (200, capture_body(&capture("version.txt"))));
    let (s, body) = get(&c, &m, "/health").await;
    assert_eq!((s, body.as_str()), (200, ""));
    let (s, body) = get(&c, &m, "/load").await;
    assert_eq!((s, body.as_str()), (200, "{\"server_load\":0}"));
    assert_eq!(m.shutdown().await, 0);
}

#[tokio::test]
async fn metric_families_labels_and_buckets_match_captures() {
    let c = client();
    let dir = model_dir();
    // Default configuration: metrics_after_load.txt.
    let m = start(&dir, &[], &[]).await;
    post(
        &c,
        &m,
        "/v1/completions",
        r#"{"prompt":"a b c","max_tokens":3}"#,
    )
    .await;
    let (_, text) = get(&c, &m, "/metrics").await;
    let theirs = capture("metrics_after_load.txt");
    assert_eq!(vllm_families(&text), vllm_families(&theirs));
    assert_eq!(buckets(&text), buckets(&theirs));
    m.shutdown().await;
    // Dev mode + LoRA: metrics_devlora.txt.
    let m = start(
        &dir,
        &["--enable-lora"],
        &[
            ("VLLM_SERVER_DEV_MODE", "1"),
            ("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "True"),
        ],
    )
    .await;
    post(
        &c,
        &m,
        "/v1/completions",
        r#"{"prompt":"a b c","max_tokens":3}"#,
    )
    .await;
    // A real dev-mode server declares the sleep-mode families at its first sleep or wake
    // (found by the real-vLLM fidelity test): none before.
    let (_, before) = get(&c, &m, "/metrics").await;
    assert!(!before.contains("vllm:sleep_mode_"), "{before}");
    post(&c, &m, "/sleep?level=1", "").await;
    post(&c, &m, "/wake_up", "").await;
    let (_, text) = get(&c, &m, "/metrics").await;
    let theirs = capture("metrics_devlora.txt");
    assert_eq!(vllm_families(&text), vllm_families(&theirs));
    assert_eq!(buckets(&text), buckets(&theirs));
    // HELP texts and types as captured.
    let t: BTreeMap<_, _> = parse_exposition(&theirs)
        .into_iter()
        .map(|f| (f.name, (f.help, f.typ)))
        .collect();
    for f in parse_exposition(&text) {
        assert_eq!(
            t.get(&f.name),
            Some(&(f.help.clone(), f.typ.clone())),
            "{}",
            f.name
        );
    }
    m.shutdown().await;
}

#[tokio::test]
async fn counters_follow_the_tokens_served() {
    let c = client();
    let dir = model_dir();
    let m = start(&dir, &[], &[]).await;
    let (_, before) = get(&c, &m, "/metrics").await;
    let (s, body) = post(
        &c,
        &m,
        "/v1/completions",
        r#"{"model":"tiny","prompt":"one two three four five","max_tokens":7}"#,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], 5);
    assert_eq!(v["usage"]["completion_tokens"], 7);
    let (s, _) = post(
        &c,
        &m,
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"hi there"}],"max_tokens":4,"stream":true}"#,
    )
    .await;
    assert_eq!(s, 200);
    let (_, after) = get(&c, &m, "/metrics").await;
    let d = |name: &str, label: Option<(&str, &str)>| {
        metric(&after, name, label) - metric(&before, name, label)
    };
    // chat prompt: BOS + role + 2 words + generation prompt = 5
    assert_eq!(d("vllm:prompt_tokens_total", None), 10.0);
    assert_eq!(d("vllm:generation_tokens_total", None), 11.0);
    assert_eq!(
        d(
            "vllm:request_success_total",
            Some(("finished_reason", "length"))
        ),
        2.0
    );
    assert_eq!(d("vllm:request_generation_tokens_sum", None), 11.0);
    assert_eq!(d("vllm:request_prompt_tokens_count", None), 2.0);
    assert_eq!(d("vllm:e2e_request_latency_seconds_count", None), 2.0);
    assert_eq!(d("vllm:inter_token_latency_seconds_count", None), 9.0);
    assert_eq!(d("vllm:iteration_tokens_total_sum", None), 10.0 + 11.0);
    assert!(d("vllm:time_to_first_token_seconds_sum", None) > 0.0);
    assert_eq!(
        metric(
            &after,
            "http_requests_total",
            Some(("handler", "/v1/completions"))
        ),
        1.0
    );
    m.shutdown().await;
}

#[tokio::test]
async fn running_gauges_and_kv_cache_while_requests_run() {
    let c = client();
    let dir = model_dir();
    let m = start(
        &dir,
        &["--max-num-seqs", "1"],
        &[("MOCK_VLLM_TOKEN_LATENCY_MS", "20")],
    )
    .await;
    let url = format!("{}/v1/completions", m.base_url());
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (c, url) = (c.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            c.post(&url)
                .body(r#"{"prompt":"x y","max_tokens":40}"#)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = get(&c, &m, "/metrics").await;
        let running = metric(&text, "vllm:num_requests_running", None);
        let waiting = metric(&text, "vllm:num_requests_waiting", None);
        if running == 1.0 && waiting == 1.0 {
            assert!(metric(&text, "vllm:kv_cache_usage_perc", None) > 0.0);
            break;
        }
        assert!(Instant::now() < deadline, "never saw 1 running + 1 waiting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (_, text) = get(&c, &m, "/metrics").await;
    assert_eq!(metric(&text, "vllm:num_requests_running", None), 0.0);
    assert_eq!(metric(&text, "vllm:kv_cache_usage_perc", None), 0.0);
    assert!(metric(&text, "vllm:request_queue_time_seconds_sum", None) > 0.0);
    m.shutdown().await;
}

#[tokio::test]
async fn completion_and_chat_shapes_match_captures() {
    let c = client();
    let dir = model_dir();
    let m = start(&dir, &[], &[]).await;
    // plain completion
    let (_, body) = post(
        &c,
        &m,
        "/v1/completions",
        r#"{"model":"tiny","prompt":"def","max_tokens":8}"#,
    )
    .await;
    let ours: Value = serde_json::from_str(&body).unwrap();
    let theirs: Value =
        serde_json::from_str(&capture_body(&capture("completion_sample.txt"))).unwrap();
    assert_eq!(keys(&ours), keys(&theirs));
    assert_eq!(keys(&ours["choices"][0]), keys(&theirs["choices"][0]));
    assert_eq!(keys(&ours["usage"]), keys(&theirs["usage"]));
    assert!(ours["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(ours["choices"][0]["finish_reason"], "length");
    // plain chat
    let (_, body) = post(
        &c,
        &m,
        "/v1/chat/completions",
        r#"{"model":"tiny","messages":[{"role":"user","content":"hello"}],"max_tokens":8}"#,
    )
    .await;
    let ours: Value = serde_json::from_str(&body).unwrap();
    let theirs: Value = serde_json::from_str(&capture_body(&capture("chat_sample.txt"))).unwrap();
    assert_eq!(keys(&ours), keys(&theirs));
    assert_eq!(keys(&ours["choices"][0]), keys(&theirs["choices"][0]));
    assert_eq!(
        keys(&ours["choices"][0]["message"]),
        keys(&theirs["choices"][0]["message"])
    );
    assert_eq!(ours["usage"]["completion_tokens"], 8);
    // streams: the same sequence of chunk shapes as captured
    for (path, req, cap) in [
        (
            "/v1/completions",
            r#"{"prompt":"a b c","max_tokens":5,"stream":true,"stream_options":{"include_usage":true}}"#,
            "completion_stream_sample.txt",
        ),
        (
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":5,"stream":true}"#,
            "chat_stream_sample.txt",
        ),
    ] {
        let r = c
            .post(format!("{}{path}", m.base_url()))
            .body(req)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.headers()["content-type"],
            "text/event-stream; charset=utf-8"
        );
        let ours = r.text().await.unwrap();
        let shape = |text: &str| -> Vec<(BTreeSet<String>, BTreeSet<String>, BTreeSet<String>)> {
            text.lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter(|d| *d != "[DONE]")
                .map(|d| {
                    let v: Value = serde_json::from_str(d).unwrap();
                    (
                        keys(&v),
                        keys(&v["choices"][0]),
                        keys(&v["choices"][0]["delta"]),
                    )
                })
                .collect()
        };
        let (o, t) = (shape(&ours), shape(&capture_body(&capture(cap))));
        assert_eq!(o.first(), t.first(), "{path}: first chunk");
        assert_eq!(o.last(), t.last(), "{path}: last chunk");
        assert!(
            o[1..o.len() - 1]
                .iter()
                .all(|s| t[1..t.len() - 1].contains(s)),
            "{path}: middle chunks"
        );
        assert!(ours.ends_with("data: [DONE]\n\n"));
    }
    m.shutdown().await;
}

#[tokio::test]
async fn error_bodies_match_capture() {
    let c = client();
    let dir = model_dir();
    let m = start(&dir, &[], &[]).await;
    let cap = capture("error_shapes.txt");
    let (s, b) = post(
        &c,
        &m,
        "/v1/completions",
        r#"{"model":"nope","prompt":"x"}"#,
    )
    .await;
    assert_eq!((s, b), (404, section(&cap, "### wrong model")));
    let (s, b) = post(
        &c,
        &m,
        "/v1/completions",
        r#"{"model":"tiny","prompt":"x","max_tokens":100000}"#,
    )
    .await;
    assert_eq!((s, b), (400, section(&cap, "### max_tokens beyond")));
    let (s, b) = post(&c, &m, "/v1/completions", r#"{"model":"tiny"}"#).await;
    assert_eq!((s, b), (400, section(&cap, "### missing prompt")));
    let (s, b) = get(&c, &m, "/nope").await;
    assert_eq!((s, b), (404, section(&cap, "### unknown route")));
    let r = c
        .get(format!("{}/v1/completions", m.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    assert_eq!(
        r.text().await.unwrap(),
        section(&cap, "### GET on POST route")
    );
    let (s, b) = post(&c, &m, "/v1/completions", r#"{"model":"tiny", "prompt": }"#).await;
    assert_eq!(s, 400);
    let ours: Value = serde_json::from_str(&b).unwrap();
    let theirs: Value = serde_json::from_str(&section(&cap, "### invalid JSON")).unwrap();
    assert_eq!(ours["error"]["type"], theirs["error"]["type"]);
    assert!(
        ours["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'type': 'json_invalid'")
    );
    // prompt + max_tokens above max_model_len
    let (s, b) = post(
        &c,
        &m,
        "/v1/completions",
        r#"{"prompt":"a b c d","max_tokens":510}"#,
    )
    .await;
    assert_eq!(s, 400);
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(keys(&v["error"]), keys(&theirs["error"]));
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maximum context length is 512 tokens")
    );
    // tokenize / detokenize shapes
    let (s, b) = post(
        &c,
        &m,
        "/tokenize",
        r#"{"model":"tiny","prompt":"a b c d"}"#,
    )
    .await;
    assert_eq!(s, 200);
    let v: Value = serde_json::from_str(&b).unwrap();
    let t: Value = serde_json::from_str(&section(&cap, "### tokenize")).unwrap();
    assert_eq!(keys(&v), keys(&t));
    assert_eq!(v["count"], 4);
    let ids = v["tokens"].to_string();
    let (_, b) = post(&c, &m, "/detokenize", &format!(r#"{{"tokens":{ids}}}"#)).await;
    assert_eq!(b, r#"{"prompt":"a b c d"}"#);
    m.shutdown().await;
}

#[tokio::test]
async fn api_key_guards_only_v1() {
    let c = client();
    let dir = model_dir();
    let m = start(&dir, &["--api-key", "sekrit"], &[]).await;
    for path in ["/health", "/version", "/metrics", "/ping", "/load"] {
        let r = c
            .get(format!("{}{path}", m.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    for auth in [None, Some("Bearer wrong")] {
        let mut rq = c.get(format!("{}/v1/models", m.base_url()));
        if let Some(a) = auth {
            rq = rq.header("authorization", a);
        }
        let r = rq.send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.text().await.unwrap(), r#"{"error":"Unauthorized"}"#);
    }
    let r = c
        .post(format!("{}/v1/completions", m.base_url()))
        .header("authorization", "Bearer sekrit")
        .body(r#"{"prompt":"x","max_tokens":2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    m.shutdown().await;
    // VLLM_API_KEY works too.
    let m = start(&dir, &[], &[("VLLM_API_KEY", "k2")]).await;
    assert_eq!(get(&c, &m, "/v1/models").await.0, 401);
    m.shutdown().await;
}

#[tokio::test]
async fn override_generation_config_sets_default_max_tokens() {
    let c = client();
    let dir = model_dir();
    let m = start(
        &dir,
        &[
            "--override-generation-config",
            r#"{"max_new_tokens":3,"temperature":0.0}"#,
        ],
        &[],
    )
    .await;
    let (_, b) = post(&c, &m, "/v1/completions", r#"{"prompt":"def"}"#).await;
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 3);
    let (_, b) = post(
        &c,
        &m,
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"x"}]}"#,
    )
    .await;
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 3);
    let (_, b) = post(
        &c,
        &m,
        "/v1/completions",
        r#"{"prompt":"def","max_tokens":5}"#,
    )
    .await;
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 5);
    m.shutdown().await;
}

#[tokio::test]
async fn lora_load_and_unload_like_capture() {
    let c = client();
    let dir = model_dir();
    let lora = tempfile::tempdir().unwrap();
    std::fs::write(lora.path().join("adapter_config.json"), r#"{"r":8}"#).unwrap();
    let lora_path = lora.path().to_str().unwrap();
    let cap = capture("lora_success.txt");
    let dev = capture("dev_and_lora_endpoints.txt");
    let env = [("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "True")];
    let m = start(&dir, &["--enable-lora"], &env).await;
    let load = format!(r#"{{"lora_name":"tiny-lora","lora_path":"{lora_path}"}}"#);
    let r = c
        .post(format!("{}/v1/load_lora_adapter", m.base_url()))
        .body(load.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("content-type").is_none(),
        "no content type, as captured"
    );
    let expected_ok = cap.split("\n\n").nth(1).unwrap().trim_end().to_string();
    assert_eq!(r.text().await.unwrap(), expected_ok);
    let (s, b) = post(&c, &m, "/v1/load_lora_adapter", &load).await;
    let dup = cap.split("\n\n").nth(3).unwrap().trim_end().to_string();
    assert_eq!((s, b), (400, dup));
    let (_, b) = get(&c, &m, "/v1/models").await;
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["data"][1]["id"], "tiny-lora");
    assert_eq!(v["data"][1]["parent"], "tiny");
    assert_eq!(v["data"][1]["root"], lora_path);
    assert_eq!(v["data"][1]["max_model_len"], Value::Null);
    let (s, b) = post(
        &c,
        &m,
        "/v1/completions",
        r#"{"model":"tiny-lora","prompt":"def","max_tokens":4}"#,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["model"],
        "tiny-lora"
    );
    let r = c
        .post(format!("{}/v1/unload_lora_adapter", m.base_url()))
        .body(r#"{"lora_name":"tiny-lora"}"#)
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("content-type").is_none());
    assert_eq!(
        r.text().await.unwrap(),
        "Success: LoRA adapter 'tiny-lora' removed successfully."
    );
    let (s, b) = post(&c, &m, "/v1/unload_lora_adapter", r#"{"lora_name":"bad"}"#).await;
    assert_eq!(
        (s, b),
        (
            404,
            section(
                &dev,
                "### -X POST http://127.0.0.1:18000/v1/unload_lora_adapter"
            )
        )
    );
    let (s, b) = post(&c, &m, "/v1/load_lora_adapter", r#"{"lora_name":"bad"}"#).await;
    assert_eq!((s, b), (400, section(&dev, r#"-d {"lora_name":"bad"}"#)));
    let (s, b) = post(
        &c,
        &m,
        "/v1/load_lora_adapter",
        r#"{"lora_name":"bad","lora_path":"/models/does-not-exist"}"#,
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(
        b,
        section(&dev, "/models/does-not-exist\"}").replace("<path>", "/models/does-not-exist")
    );
    m.shutdown().await;
    // Without VLLM_ALLOW_RUNTIME_LORA_UPDATING the routes do not exist.
    let m = start(&dir, &["--enable-lora"], &[]).await;
    let (s, b) = post(&c, &m, "/v1/load_lora_adapter", &load).await;
    assert_eq!((s, b.as_str()), (404, r#"{"detail":"Not Found"}"#));
    m.shutdown().await;
    // With it but without --enable-lora: a 400.
    let m = start(&dir, &[], &env).await;
    let (s, b) = post(&c, &m, "/v1/load_lora_adapter", &load).await;
    assert_eq!(s, 400, "{b}");
    m.shutdown().await;
}

#[tokio::test]
async fn dev_mode_sleep_endpoints_like_capture() {
    let c = client();
    let dir = model_dir();
    let m = start(&dir, &[], &[]).await;
    assert_eq!(post(&c, &m, "/sleep?level=1", "").await.0, 404);
    m.shutdown().await;
    let m = start(&dir, &[], &[("VLLM_SERVER_DEV_MODE", "1")]).await;
    let cap = capture("sleep_without_flag.txt");
    assert_eq!(
        get(&c, &m, "/is_sleeping").await.1,
        r#"{"is_sleeping":false}"#
    );
    assert_eq!(
        post(&c, &m, "/sleep?level=1", "").await.1,
        r#"{"status":"sleeping","level":1}"#
    );
    assert_eq!(
        get(&c, &m, "/is_sleeping").await.1,
        r#"{"is_sleeping":true}"#
    );
    let (_, text) = get(&c, &m, "/metrics").await;
    assert_eq!(
        metric(
            &text,
            "vllm:engine_sleep_state",
            Some(("sleep_state", "weights_offloaded"))
        ),
        1.0
    );
    // A request sent while asleep waits until wake-up.
    let (c2, url) = (c.clone(), format!("{}/v1/completions", m.base_url()));
    let pending = tokio::spawn(async move {
        c2.post(url)
            .body(r#"{"prompt":"def","max_tokens":4}"#)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pending.is_finished());
    assert_eq!(
        post(&c, &m, "/wake_up", "").await.1,
        r#"{"status":"awake","tags":null}"#
    );
    assert_eq!(pending.await.unwrap(), 200);
    assert_eq!(
        post(&c, &m, "/sleep?level=2", "").await.1,
        r#"{"status":"sleeping","level":2}"#
    );
    assert_eq!(
        post(&c, &m, "/wake_up?tags=weights", "").await.1,
        r#"{"status":"sleeping","tags":["weights"]}"#
    );
    assert_eq!(
        post(&c, &m, "/wake_up?tags=kv_cache", "").await.1,
        r#"{"status":"awake","tags":["kv_cache"]}"#
    );
    let (s, b) = post(&c, &m, "/sleep?level=7", "").await;
    assert_eq!(
        (s, b),
        (
            400,
            section(&cap, "/sleep?level=7")
                .split("\n[curl")
                .next()
                .unwrap()
                .to_string()
        )
    );
    assert_eq!(
        post(&c, &m, "/reset_prefix_cache", "").await.1,
        r#"{"success":true}"#
    );
    m.shutdown().await;
}

#[tokio::test]
async fn https_with_rcgen_certificate() {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let dir = model_dir();
    let certfile = dir.path().join("cert.pem");
    let keyfile = dir.path().join("key.pem");
    std::fs::write(&certfile, cert.cert.pem()).unwrap();
    std::fs::write(&keyfile, cert.signing_key.serialize_pem()).unwrap();
    let m = start(
        &dir,
        &[
            "--ssl-certfile",
            certfile.to_str().unwrap(),
            "--ssl-keyfile",
            keyfile.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(m.base_url().starts_with("https://"));
    let (s, _) = get(&client(), &m, "/health").await;
    assert_eq!(s, 200);
    // Plain HTTP is not answered.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/health", m.addr()))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    m.shutdown().await;
}

#[tokio::test]
async fn engine_death_gives_503_then_stops_with_0() {
    let c = client();
    let dir = model_dir();
    let m = start(&dir, &[], &[("MOCK_VLLM_DEATH_503_SECONDS", "0.5")]).await;
    assert_eq!(get(&c, &m, "/health").await.0, 200);
    m.kill_engine();
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(&c, &m, "/health").await.0 != 503 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (s, _) = post(
        &c,
        &m,
        "/v1/completions",
        r#"{"prompt":"x","max_tokens":2}"#,
    )
    .await;
    assert_eq!(s, 500);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), m.wait())
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn injected_faults() {
    let c = client();
    let dir = model_dir();
    let m = start(
        &dir,
        &[],
        &[("MOCK_VLLM_HTTP_500", "0.5"), ("MOCK_VLLM_METRICS", "html")],
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(get(&c, &m, "/v1/models").await.0);
    }
    assert_eq!(statuses, vec![200, 500, 200, 500]);
    let r = c
        .get(format!("{}/metrics", m.base_url()))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    m.shutdown().await;
    let m = start(&dir, &[], &[("MOCK_VLLM_CRASH_AFTER", "0.2")]).await;
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), m.wait())
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn start_failures_in_process() {
    let err = spawn_for_test(&["/definitely/not/here"], &[])
        .await
        .err()
        .unwrap();
    assert_eq!(err.exit_code, 1);
    assert!(err.stderr.contains(
        "Repo id must be in the form 'repo_name' or 'namespace/repo_name': '/definitely/not/here'"
    ));
    let err = spawn_for_test(&["m", "--no-such-flag"], &[])
        .await
        .err()
        .unwrap();
    assert_eq!(err.exit_code, 2);
    let ok = spawn_for_test(&["org/some-model"], &[]).await.unwrap();
    assert_eq!(ok.model(), "org/some-model");
    ok.shutdown().await;
}
