//! The quick-start tour: the main job, end to end, as a user does it.
//!
//! 1. Starts the front door (`vllm-model-manager --gateway`) over a fleet of two catalog
//!    models with room for one: the bundled mock-vllm as `vllm serve`, or the real vLLM
//!    when `VLLM_MCP_REAL_VLLM` and `VLLM_MCP_REAL_MODEL` name it
//!    (`scripts/real-vllm.sh env`).
//! 2. Chats with a model that is not loaded (it starts on demand), streams a chat, and
//!    asks for the second model, which swaps the first out.
//! 3. Drives the three MCP servers as Crush does: list-models, get-metrics, save-state.
//! 4. Prints the Crush configuration that uses the door as its one provider.
//! 5. Checks the fleet's page the door serves at `/` lists the models; with `--serve`,
//!    keeps the door running for a browser until Ctrl-C (it samples for the charts
//!    itself once the tour's monitor is gone).
//!
//! With `VLLM_BASE_URL` set, the door serves that vLLM's models instead (attached:
//! nothing is started or swapped).

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vllm_mcp_testkit::{McpProcess, bin, free_port, http_status, temp_dir};

/// Where the fleet's models come from.
enum Source {
    Mock,
    /// The real `vllm` command and the tiny model's directory.
    Real {
        vllm: String,
        model: String,
    },
    /// An attached vLLM's base URL.
    Attached(String),
}

impl Source {
    fn from_env() -> Source {
        let var = |k| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
        if let Some(url) = var("VLLM_BASE_URL") {
            return Source::Attached(url);
        }
        match (var("VLLM_MCP_REAL_VLLM"), var("VLLM_MCP_REAL_MODEL")) {
            (Some(vllm), Some(model)) if vllm != "deferred" => Source::Real { vllm, model },
            _ => Source::Mock,
        }
    }

    /// The config's fleet part: the launcher and catalog, or the attached endpoint.
    fn config(&self) -> String {
        let entry = |alias: &str, source: &str, args: &str| {
            format!("[catalog.{alias}]\nsource = {source:?}\n[catalog.{alias}.args]\n{args}")
        };
        match self {
            Source::Mock => {
                let args = "max_model_len = 2048\n";
                format!(
                    "[launcher]\ncommand = [{:?}]\n{}{}",
                    bin("mock-vllm").display().to_string(),
                    entry("tiny", "mock/tiny-llama", args),
                    entry("small", "mock/small-llama", args)
                )
            }
            Source::Real { vllm, model } => {
                let args = "max_model_len = 512\ndtype = \"float32\"\nenforce_eager = true\n";
                format!(
                    "[launcher]\ncommand = [{vllm:?}]\nhealth_timeout_seconds = 300.0\n\
                     [launcher.env]\nVLLM_CPU_KVCACHE_SPACE = \"1\"\nHF_HUB_OFFLINE = \"1\"\n\
                     VLLM_NO_USAGE_STATS = \"1\"\n{}{}",
                    entry("tiny", model, args),
                    entry("tiny2", model, args)
                )
            }
            Source::Attached(url) => {
                format!("[[endpoints]]\nname = \"default\"\nbase_url = {url:?}\n")
            }
        }
    }
}

/// The front door as a service, stopped (SIGTERM) when dropped.
struct Door {
    child: Child,
    port: u16,
}

impl Drop for Door {
    fn drop(&mut self) {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn start_door(config: &Path, log: &Path, port: u16) -> Door {
    let stderr = std::fs::File::create(log).expect("create the door's log");
    let child = Command::new(bin("vllm-model-manager"))
        .arg("--gateway")
        .env("VLLM_MCP_CONFIG", config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start vllm-model-manager --gateway");
    let door = Door { child, port };
    let t = Instant::now();
    while http_status(port, "/health") != Some(200) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the door did not start: see {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    door
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    vllm_core::vllm::install_tls_provider();
    let data = temp_dir();
    let data_dir = std::env::var("VLLM_MCP_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| data.path().to_path_buf());
    let source = Source::from_env();
    let port = free_port();
    let config = data_dir.join("tour-config.toml");
    let text = format!(
        "data_dir = {:?}\n[gateway]\nlisten = \"127.0.0.1:{port}\"\n[limits]\nmax_models = 1\n\
         [monitor]\nsample_interval_seconds = 1.0\n{}",
        data_dir.display().to_string(),
        source.config()
    );
    std::fs::create_dir_all(&data_dir).expect("create the data directory");
    std::fs::write(&config, text).expect("write the tour's config");
    println!(
        "Data directory: {}\nConfig: {}\n",
        data_dir.display(),
        config.display()
    );
    match &source {
        Source::Mock => {
            println!("Fleet: two catalog models on the bundled mock-vllm, room for one.")
        }
        Source::Real { vllm, .. } => {
            println!("Fleet: the real vLLM ({vllm}), two catalog models, room for one.")
        }
        Source::Attached(url) => println!("Fleet: the vLLM at {url} (VLLM_BASE_URL)."),
    }
    let t = Instant::now();
    let door = start_door(&config, &data_dir.join("gateway.log"), port);
    let url = format!("http://127.0.0.1:{}", door.port);
    println!(
        "== The front door: vllm-model-manager --gateway on {url} ({} ms)\n",
        t.elapsed().as_millis()
    );
    // The monitor samples the fleet while the tour uses it (every second, as configured).
    let cfg = config.display().to_string();
    let monitor = McpProcess::spawn(&bin("vllm-perf-monitor"), &[("VLLM_MCP_CONFIG", &cfg)]).await;
    let ok = match door_tour(&url).await {
        Ok(served) => mcp_tour(&config, monitor, &served).await,
        Err(e) => {
            println!("FAILED: {e}");
            false
        }
    };
    let ok = ok && page(&url).await;
    if ok && std::env::args().any(|a| a == "--serve") {
        println!(
            "\n== The page: open {url}/ in a browser (models, charts, logs, playground). Ctrl-C stops."
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    drop(door);
    if ok {
        println!("Done. Paste the configuration above into crush.json; docs/GATEWAY.md says more.");
        std::process::ExitCode::SUCCESS
    } else {
        println!("The tour failed: see above.");
        std::process::ExitCode::FAILURE
    }
}

/// The fleet's page: `/` is the page, and its API lists the fleet's models.
async fn page(url: &str) -> bool {
    let http = reqwest::Client::new();
    let html = match http.get(format!("{url}/")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let fleet = get_json(http.get(format!("{url}/ui/api/fleet"))).await;
    match fleet {
        Ok(f) if html.contains("<title>vLLM fleet</title>") => {
            let n = f["models"].as_array().map_or(0, Vec::len);
            println!("\n== The page: {url}/ shows {n} models, their charts, logs and a playground");
            true
        }
        Ok(_) => {
            println!("FAILED: {url}/ is not the fleet's page");
            false
        }
        Err(e) => {
            println!("FAILED: the page's API: {e}");
            false
        }
    }
}

/// The OpenAI API through the door: the listing, a start on demand, a stream, a swap.
/// The models that were served.
async fn door_tour(url: &str) -> Result<Vec<String>, String> {
    let http = reqwest::Client::new();
    let listed = list(&http, url).await?;
    let ids: Vec<String> = listed.iter().map(|(id, _)| id.clone()).take(2).collect();
    let first = ids.first().ok_or("the door lists no model")?;
    let t = Instant::now();
    println!("-- POST /v1/chat/completions {{\"model\": \"{first}\"}} (not loaded yet)");
    let reply = chat(&http, url, first).await?;
    println!(
        "   {:.1} s, started on demand: {reply:?}\n",
        t.elapsed().as_secs_f64()
    );
    println!("-- the same, streamed (\"stream\": true):");
    print!("   ");
    let chunks = stream(&http, url, first).await?;
    println!("\n   ({chunks} chunks)\n");
    if let Some(second) = ids.get(1) {
        let t = Instant::now();
        println!("-- POST /v1/chat/completions {{\"model\": \"{second}\"}}: room for one model");
        let reply = chat(&http, url, second).await?;
        println!("   {:.1} s: {reply:?}", t.elapsed().as_secs_f64());
        let now = list(&http, url).await?;
        let status = |m: &str| {
            now.iter()
                .find(|(id, _)| id == m)
                .map_or("?".into(), |x| x.1.clone())
        };
        println!(
            "   {second} is {}, {first} is {}: swapped out\n",
            status(second),
            status(first)
        );
    }
    // A little traffic on the model that serves now, for the monitor's figures.
    let last = ids.last().ok_or("no model")?;
    for _ in 0..6 {
        chat(&http, url, last).await?;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    Ok(ids)
}

/// `GET /v1/models`, printed: (id, status) of each.
async fn list(http: &reqwest::Client, url: &str) -> Result<Vec<(String, String)>, String> {
    let r: Value = get_json(http.get(format!("{url}/v1/models"))).await?;
    println!("-- GET /v1/models");
    let mut out = Vec::new();
    for m in r["data"].as_array().into_iter().flatten() {
        let (id, status) = (
            m["id"].as_str().unwrap_or("?"),
            m["status"].as_str().unwrap_or("?"),
        );
        println!(
            "   {id:<12} {status:<10} ({})",
            m["origin"].as_str().unwrap_or("?")
        );
        out.push((id.to_string(), status.to_string()));
    }
    println!();
    Ok(out)
}

async fn get_json(rb: reqwest::RequestBuilder) -> Result<Value, String> {
    let r = rb.send().await.map_err(|e| e.to_string())?;
    let status = r.status();
    let body: Value = r.json().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {body}"));
    }
    Ok(body)
}

fn chat_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 12, "stream": stream,
           "messages": [{"role": "user", "content": "Say hello to a new user."}]})
}

async fn chat(http: &reqwest::Client, url: &str, model: &str) -> Result<String, String> {
    let rb = http
        .post(format!("{url}/v1/chat/completions"))
        .json(&chat_body(model, false));
    let r = get_json(rb.timeout(Duration::from_secs(600))).await?;
    Ok(r["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("")
        .to_string())
}

/// Prints a streamed chat's text as it arrives; the number of chunks.
async fn stream(http: &reqwest::Client, url: &str, model: &str) -> Result<usize, String> {
    use std::io::Write;
    let rb = http
        .post(format!("{url}/v1/chat/completions"))
        .json(&chat_body(model, true));
    let mut r = rb.send().await.map_err(|e| e.to_string())?;
    let (mut chunks, mut rest) = (0, String::new());
    while let Some(bytes) = r.chunk().await.map_err(|e| e.to_string())? {
        chunks += 1;
        rest.push_str(&String::from_utf8_lossy(&bytes));
        while let Some(end) = rest.find("\n\n") {
            let event: String = rest.drain(..end + 2).collect();
            let Some(data) = event.trim().strip_prefix("data: ") else {
                continue;
            };
            let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
            if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                print!("{t}");
                let _ = std::io::stdout().flush();
            }
        }
    }
    Ok(chunks)
}

/// The three MCP servers as Crush spawns them, on the same config and store.
async fn mcp_tour(config: &Path, monitor: McpProcess, served: &[String]) -> bool {
    let cfg = config.display().to_string();
    let env = [("VLLM_MCP_CONFIG", cfg.as_str())];
    let manager = McpProcess::spawn(&bin("vllm-model-manager"), &env).await;
    let list = manager.call("list-models", json!({})).await;
    println!("== MCP: mcp_vllm-model-manager_list-models");
    for m in list.json["models"].as_array().into_iter().flatten() {
        let door = &m["front_door"];
        let through = match door["last_used"].as_str() {
            Some(last) => format!("through the door, last at {last}"),
            None => "not used through the door".into(),
        };
        println!(
            "   {:<12} {:<10} {through}",
            m["id"].as_str().unwrap_or("?"),
            m["status"].as_str().unwrap_or("?")
        );
    }
    let metrics = monitor
        .call(
            "get-metrics",
            json!({"duration_seconds": 300, "per_model": true}),
        )
        .await;
    println!("\n== MCP: mcp_vllm-performance-monitor_get-metrics (last 5 minutes, per model)");
    let per_model = metrics.json["per_model"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (id, m) in &per_model {
        println!(
            "   {id:<12} {} samples, {} requests, {} tokens/s",
            m["samples"], m["requests"]["total"], m["throughput"]["tokens_per_second"]
        );
    }
    if per_model.is_empty() {
        println!("   {}", short(&metrics.json));
    }
    let state = McpProcess::spawn(&bin("vllm-state-persistence"), &env).await;
    let saved = state
        .call("save-state", json!({"session_id": "tour"}))
        .await;
    println!("\n== MCP: mcp_vllm-state-persistence_save-state");
    let s = &saved.json;
    println!(
        "   state {} of session {}: {} models, {} conversations",
        s["state_id"], s["session_id"], s["models"], s["conversations"]
    );
    let provider = manager
        .read("vllm://crush/provider-config")
        .await
        .unwrap_or_default();
    print_crush_config(&cfg, &provider);
    for m in served {
        let _ = manager.call("unload-model", json!({"model_id": m})).await;
    }
    for s in [manager, monitor, state] {
        s.close().await;
    }
    !(list.is_error || metrics.is_error || saved.is_error)
}

/// A one-line view of an answer.
fn short(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

fn print_crush_config(config: &str, provider: &str) {
    let providers: Value = serde_json::from_str(provider).unwrap_or(Value::Null);
    let server = |command: &str| json!({"type": "stdio", "command": command, "env": {"VLLM_MCP_CONFIG": config}});
    let crush = json!({
        "$schema": "https://charm.land/crush.json",
        "providers": providers["providers"],
        "mcp": {
            "vllm-model-manager": server("vllm-model-manager"),
            "vllm-state-persistence": server("vllm-state-persistence"),
            "vllm-performance-monitor": server("vllm-perf-monitor"),
        }
    });
    println!("\n== Crush: crush.json with the front door as its one provider");
    println!(
        "{}\n",
        serde_json::to_string_pretty(&crush).unwrap_or_default()
    );
}
