//! The page's HTTP side without a browser: its files, the API's guard (the key, other
//! sites, JSON-only actions, rebinding), the gate and the audit log on actions, pins
//! the swap honours, charts of stored samples, the log stream. The browser itself is
//! crates/model-manager/tests/page.rs.

use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use vllm_core::gpu::FakeGpus;
use vllm_core::models::ModelStatus;
use vllm_core::monitor::{Sample, history};
use vllm_core::store::{AuditQuery, Store};
use vllm_mcp_testkit::ServerRig;

mod common;
use common::{CATALOG, Door, chat, door};

impl Door {
    fn page(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url))
    }

    async fn act(&self, model: &str, action: &str) -> (u16, Value) {
        let r = self
            .page(
                reqwest::Method::POST,
                &format!("/ui/api/models/{model}/{action}"),
            )
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn api(&self, path: &str) -> Value {
        let r = self.page(reqwest::Method::GET, path).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.unwrap()
    }

    async fn row(&self, model: &str) -> Value {
        let f = self.api("/ui/api/fleet").await;
        let found = f["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == model);
        found
            .cloned()
            .unwrap_or_else(|| panic!("{model} not on the page: {f}"))
    }

    async fn until_status(&self, model: &str, status: ModelStatus) {
        let t = Instant::now();
        while self.launcher.get(model).await.unwrap().map(|r| r.status) != Some(status) {
            if t.elapsed() > Duration::from_secs(30) {
                let r = self.launcher.get(model).await.unwrap();
                panic!("{model} never {status:?}: {r:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn audit(&self) -> Vec<(String, String)> {
        let store = Store::open(&self.rig.store_path()).unwrap();
        let q = AuditQuery {
            server: Some("vllm-gateway".into()),
            ..AuditQuery::default()
        };
        let entries = store.audit_entries(&q).unwrap();
        entries
            .into_iter()
            .map(|e| (e.tool, e.result_code))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_every_file_it_names_are_served_with_a_validator_and_a_strict_policy() {
    let d = door(ServerRig::new(CATALOG)).await;
    for path in ["/", "/ui", "/ui/"] {
        let r = d.page(reqwest::Method::GET, path).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let html = r.text().await.unwrap();
        assert!(html.contains("<title>vLLM fleet</title>"));
        // Every asset the page names is there, and nothing comes from elsewhere.
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "an outside URL"
        );
        for name in html.split("/ui/assets/").skip(1) {
            let name = name.split('"').next().unwrap();
            let r = d
                .page(reqwest::Method::GET, &format!("/ui/assets/{name}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{name}");
            let tag = r.headers()["etag"].clone();
            let again = d
                .page(reqwest::Method::GET, &format!("/ui/assets/{name}"))
                .header("if-none-match", tag)
                .send()
                .await
                .unwrap();
            assert_eq!(again.status(), 304, "{name} is not revalidated");
        }
    }
    let r = d
        .page(reqwest::Method::GET, "/ui/assets/secret.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_needs_the_key_in_a_header_and_refuses_other_sites_and_non_json_actions() {
    // SAFETY: a variable only this test reads.
    unsafe { std::env::set_var("GATEWAY_TEST_KEY_PAGE", "page-key") };
    let d = door(ServerRig::new(&format!(
        "{CATALOG}[gateway]\napi_key_env = \"GATEWAY_TEST_KEY_PAGE\"\n"
    )))
    .await;
    let get = |path: &str| d.page(reqwest::Method::GET, path);
    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or("").to_string();

    // The page itself is public (it holds no data); its API is not.
    assert_eq!(get("/").send().await.unwrap().status(), 200);
    let r = get("/ui/api/fleet").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["success"].clone(), code(&v)),
        (json!(false), "UNAUTHORIZED".into())
    );
    assert!(
        v["error"]["details"]["suggestion"]
            .as_str()
            .unwrap()
            .contains("key")
    );
    // A cookie is not a key.
    let r = get("/ui/api/fleet")
        .header("cookie", "key=page-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = get("/ui/api/fleet")
        .bearer_auth("page-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Another site, even with the key: refused before anything else.
    for (name, value) in [
        ("origin", "http://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let r = d
            .page(reqwest::Method::POST, "/ui/api/models/tiny/load")
            .bearer_auth("page-key")
            .header(name, value)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{name}: {value}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(code(&v), "FOREIGN_ORIGIN", "{v}");
    }
    // With a key, any name reaches the door (a rebinding page has no key to send).
    let r = get("/ui/api/fleet")
        .bearer_auth("page-key")
        .header("host", "gpu-box.lan:4000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The door's own origin is fine.
    let own = d.url.clone();
    let r = get("/ui/api/fleet")
        .bearer_auth("page-key")
        .header("origin", own)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // An action is JSON or nothing: a form post (what another site could send) is not.
    let r = d
        .page(reqwest::Method::POST, "/ui/api/models/tiny/load")
        .bearer_auth("page-key")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("a=b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(d.status("tiny").await, None, "nothing was started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_pass_the_gate_and_land_in_the_audit_log_refused_or_not() {
    let d = door(ServerRig::new(&format!(
        "{CATALOG}[security]\ndeny_tools = [\"mcp_vllm-model-manager_sleep-model\"]\n"
    )))
    .await;
    let f = d.api("/ui/api/fleet").await;
    assert_eq!(f["actions"]["sleep-model"], false, "{f}");
    assert_eq!(f["actions"]["load-model"], true);
    assert_eq!(f["controls"], true);

    let (status, v) = d.act("tiny", "load").await;
    assert_eq!(
        (status, v["status"].clone()),
        (200, json!("loading")),
        "{v}"
    );
    d.until_status("tiny", ModelStatus::Loaded).await;
    let (status, v) = d.act("tiny", "load").await;
    assert_eq!(
        (status, v["started"].clone()),
        (200, json!(false)),
        "already serving: {v}"
    );

    let (status, v) = d.act("tiny", "sleep").await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"]["code"], "PERMISSION_DENIED");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deny_tools"),
        "{v}"
    );
    assert_eq!(d.status("tiny").await, Some(ModelStatus::Loaded));

    let (status, v) = d.act("tiny", "explode").await;
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (400, json!("INVALID_ARGUMENT"))
    );
    let (status, v) = d.act("nope", "unload").await;
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (404, json!("MODEL_NOT_FOUND")),
        "{v}"
    );
    let r = d
        .page(reqwest::Method::POST, "/ui/api/states/st-0-none/restore")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let (status, v) = d.act("tiny", "unload").await;
    assert_eq!(
        (status, v["status"].clone()),
        (200, json!("unloaded")),
        "{v}"
    );
    assert_eq!(d.status("tiny").await, Some(ModelStatus::Unloaded));

    let audit = d.audit();
    for (tool, code) in [
        ("load-model", "OK"),
        ("sleep-model", "PERMISSION_DENIED"),
        ("unload-model", "MODEL_NOT_FOUND"),
        ("unload-model", "OK"),
        ("load-state", "STATE_NOT_FOUND"),
    ] {
        assert!(
            audit.contains(&(tool.to_string(), code.to_string())),
            "{tool} {code} not audited: {audit:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_pinned_on_the_page_is_never_swapped_out() {
    let d = door(ServerRig::new(&format!(
        "{CATALOG}[limits]\nmax_models = 1\n"
    )))
    .await;
    let (status, _) = d.act("tiny", "load").await;
    assert_eq!(status, 200);
    d.until_status("tiny", ModelStatus::Loaded).await;
    // Serving, and the door's start of it over (a model being started is never swapped
    // out, pinned or not).
    let t = Instant::now();
    while d.row("tiny").await["starting"] != false {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the start never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, v) = d.act("tiny", "pin").await;
    assert_eq!((status, v["pinned"].clone()), (200, json!(true)), "{v}");
    assert_eq!(d.row("tiny").await["pinned"], true);
    assert_eq!(
        d.listed("tiny").await["pinned"],
        true,
        "/v1/models shows the pin too"
    );

    // One place, held by a pinned model: `other` cannot swap it out.
    let r = d
        .post("/v1/chat/completions", chat("other", 2, false))
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(d.status("tiny").await, Some(ModelStatus::Loaded));

    // Unpinned, it goes.
    let (_, v) = d.act("tiny", "unpin").await;
    assert_eq!(v["pinned"], false);
    let r = d
        .post("/v1/chat/completions", chat("other", 2, false))
        .await;
    let status = r.status();
    if status != 200 {
        let recs: Vec<_> = d
            .launcher
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.model_id, r.status, r.pid))
            .collect();
        panic!("{status}: {} {recs:?}", r.text().await.unwrap());
    }
    assert_eq!(d.status("tiny").await, Some(ModelStatus::Unloaded));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleep_and_wake_from_the_page_go_through_vllms_sleep_mode() {
    let rig = ServerRig::new(
        "[catalog.tiny]\nsource = \"mock/tiny\"\nidle_ttl_seconds = 2.0\n[catalog.tiny.args]\n\
         extra_args = [\"--enable-sleep-mode\"]\n",
    )
    .with_launcher_env(&[("VLLM_SERVER_DEV_MODE", "1")]);
    let d = door(rig).await;
    let (status, _) = d.act("tiny", "load").await;
    assert_eq!(status, 200);
    d.until_status("tiny", ModelStatus::Loaded).await;
    // Long enough for the idle reaper (every 200 ms here) to start its clock.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, v) = d.act("tiny", "sleep").await;
    assert_eq!(
        (status, v["status"].clone()),
        (200, json!("sleeping")),
        "{v}"
    );
    assert_eq!(d.status("tiny").await, Some(ModelStatus::Sleeping));
    assert_eq!(d.row("tiny").await["status"], "sleeping");
    // Asleep longer than its idle TTL: woken, its idle time counts from the wake.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (status, v) = d.act("tiny", "wake").await;
    assert_eq!((status, v["status"].clone()), (200, json!("waking")), "{v}");
    d.until_status("tiny", ModelStatus::Loaded).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(
        d.status("tiny").await,
        Some(ModelStatus::Loaded),
        "unloaded by a clock that ran while it slept"
    );
    // And it serves again through the door.
    assert_eq!(
        d.post("/v1/chat/completions", chat("tiny", 2, false))
            .await
            .status(),
        200
    );
}

/// A sample of `model` at `ts` having generated `n` × 10 tokens over `n` requests.
fn sample(model: &str, ts: f64, n: f64) -> Sample {
    Sample {
        ts,
        endpoint: model.into(),
        model: model.into(),
        up: true,
        start_time: Some(1.0),
        generation_tokens: Some(10.0 * n),
        requests_finished: Some(n),
        kv_cache_usage: Some(0.5),
        ..Sample::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_are_drawn_from_the_stored_history_over_each_range() {
    let d = door(ServerRig::new(CATALOG)).await;
    let store = Store::open(&d.rig.store_path()).unwrap();
    let now = vllm_core::time::unix_now();
    for (i, t) in [now - 20.0, now - 15.0, now - 10.0].into_iter().enumerate() {
        let gpu = FakeGpus::idle(0, 8_000);
        history::insert(&store, &[sample("tiny", t, i as f64 * 5.0)], &[gpu], t).unwrap();
    }
    let v = d.api("/ui/api/charts?range=5m").await;
    let c = &v["charts"];
    assert_eq!(c["t"].as_array().unwrap().len(), 60, "5 m in 5 s bins");
    let tiny = &c["models"][0];
    assert_eq!(tiny["model"], "tiny");
    let tokens: Vec<f64> = tiny["tokens_per_second"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert!(
        !tokens.is_empty() && tokens.iter().all(|t| (t - 10.0).abs() < 1e-9),
        "50 tokens every 5 s: {tokens:?}"
    );
    assert_eq!(c["gpus"][0]["memory_total_mb"], 8_000);

    let v = d.api("/ui/api/charts?range=24h").await;
    assert_eq!(v["charts"]["t"].as_array().unwrap().len(), 144);
    let r = d
        .page(reqwest::Method::GET, "/ui/api/charts?range=2w")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let alerts = d.api("/ui/api/alerts").await;
    assert!(
        alerts["active"]["rules"].as_array().unwrap().len() >= 8,
        "{alerts}"
    );
    assert!(alerts["history"]["alerts"].is_array());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_stream_sends_the_tail_then_each_new_line() {
    let d = door(ServerRig::new(CATALOG)).await;
    assert_eq!(
        d.post("/v1/chat/completions", chat("tiny", 2, false))
            .await
            .status(),
        200
    );
    let r = d
        .page(reqwest::Method::GET, "/ui/api/models/tiny/logs?lines=50")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut events = r.bytes_stream();
    let mut text = String::new();
    let mut next = async || {
        let c = tokio::time::timeout(Duration::from_secs(10), events.next()).await;
        String::from_utf8_lossy(&c.expect("an event in time").unwrap().unwrap()).to_string()
    };
    while !text.contains("event: status") {
        text.push_str(&next().await);
    }
    assert!(text.starts_with("event: lines\ndata: "), "{text}");
    assert!(
        text.contains("POST /v1/chat/completions"),
        "the tail: {text}"
    );
    let before = text.matches("POST /v1/chat/completions").count();
    assert_eq!(
        d.post("/v1/chat/completions", chat("tiny", 2, false))
            .await
            .status(),
        200
    );
    while text.matches("POST /v1/chat/completions").count() == before {
        text.push_str(&next().await);
    }
    let r = d
        .page(reqwest::Method::GET, "/ui/api/models/nope/logs")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_door_refuses_other_sites_and_rebinding_names_on_the_page_and_on_v1() {
    let d = door(ServerRig::new(CATALOG)).await;
    // Another site's page posting a "simple" request (text/plain needs no preflight).
    let r = d
        .page(reqwest::Method::POST, "/v1/chat/completions")
        .header("origin", "http://evil.example")
        .header("content-type", "text/plain")
        .body(chat("tiny", 2, false).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "foreign_origin", "{v}");
    assert_eq!(d.status("tiny").await, None, "nothing was started");
    // A name that resolves here but is not the door's (DNS rebinding).
    let r = d
        .page(reqwest::Method::GET, "/ui/api/fleet")
        .header("host", "evil.example:80")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "FOREIGN_ORIGIN", "{v}");
    // Clients that are not browsers send no Origin: they are served as before.
    let r = d.post("/v1/chat/completions", chat("tiny", 2, false)).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_log_stream_does_not_hold_the_doors_shutdown() {
    use std::sync::Arc;
    use vllm_core::config::Config;
    use vllm_fleet::launcher::supervisor::Launcher;
    use vllm_gateway::Gateway;
    vllm_core::vllm::install_tls_provider();
    let rig = ServerRig::new(CATALOG);
    let config = Arc::new(Config::load(Some(&rig.config)).unwrap());
    let store = Store::open(&rig.store_path()).unwrap();
    let gpus = Arc::new(FakeGpus::without_driver());
    let launcher = Arc::new(Launcher::new(config.clone(), store, gpus));
    let gw = Gateway::new(launcher.clone(), Vec::new(), config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(gw.serve(listener, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{url}/ui/api/models/tiny/load"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t = Instant::now();
    while launcher.get("tiny").await.unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "tiny was never launched"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = http
        .get(format!("{url}/ui/api/models/tiny/logs"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut events = r.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(10), events.next()).await;
    assert!(first.is_ok(), "no first event");
    let _ = stop.send(());
    let ended = tokio::time::timeout(Duration::from_secs(5), served).await;
    assert!(
        ended.is_ok(),
        "the door kept serving an open log stream after shutdown"
    );
    // The stream itself ended with it.
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = events.next().await {}
    })
    .await;
    assert!(rest.is_ok(), "the log stream did not end");
    let _ = launcher.stop("tiny", true).await;
}
