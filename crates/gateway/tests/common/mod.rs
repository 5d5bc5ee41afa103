//! What the front door's tests share: a gateway over a rig, served in-process on a
//! loopback port with the launcher's duties running, and requests to it.
#![allow(dead_code)]

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use vllm_core::config::Config;
use vllm_core::gpu::FakeGpus;
use vllm_core::models::ModelStatus;
use vllm_core::store::Store;
use vllm_fleet::launcher::supervisor::{Duties, DutyState, Launcher};
use vllm_gateway::Gateway;
use vllm_mcp_testkit::ServerRig;

/// A gateway over a rig, served on a loopback port, with the launch queue's duty running
/// as the model manager runs it.
pub struct Door {
    pub url: String,
    pub launcher: Arc<Launcher>,
    pub http: reqwest::Client,
    pub rig: ServerRig,
}

pub async fn door(rig: ServerRig) -> Door {
    door_on(rig, FakeGpus::without_driver()).await
}

pub async fn door_on(rig: ServerRig, gpus: FakeGpus) -> Door {
    vllm_core::vllm::install_tls_provider();
    let config = Arc::new(Config::load(Some(&rig.config)).unwrap());
    let store = Store::open(&rig.store_path()).unwrap();
    let gpus = Arc::new(gpus);
    let launcher = Arc::new(Launcher::new(config.clone(), store, gpus));
    let gw = Gateway::new(launcher.clone(), Vec::new(), config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(gw.serve(listener, std::future::pending()));
    let duty = launcher.clone();
    tokio::spawn(async move {
        let mut state = DutyState::default();
        let held = Duties {
            queue: true,
            reaper: true,
            autostart: false,
        };
        loop {
            let _ = duty.tick(held, &mut state).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Door {
        url,
        launcher,
        http: reqwest::Client::new(),
        rig,
    }
}

impl Door {
    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }

    pub async fn status(&self, model: &str) -> Option<ModelStatus> {
        self.launcher.get(model).await.unwrap().map(|r| r.status)
    }

    /// The door's own `/metrics`.
    pub async fn metrics(&self) -> String {
        let r = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap();
        r.text().await.unwrap()
    }

    /// The `/v1/models` entry of `id`.
    pub async fn listed(&self, id: &str) -> Value {
        let models = self.get_json("/v1/models").await;
        let found = models["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id);
        found
            .cloned()
            .unwrap_or_else(|| panic!("{id} is not listed: {models}"))
    }

    /// The model's own server's `/metrics`.
    pub async fn backend_metrics(&self, model: &str) -> String {
        let r = self.launcher.get(model).await.unwrap().unwrap();
        let url = format!("http://127.0.0.1:{}/metrics", r.port.unwrap());
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

pub fn chat(model: &str, max_tokens: u32, stream: bool) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "Say something."}],
        "max_tokens": max_tokens,
        "stream": stream,
    })
}

pub const CATALOG: &str = "[catalog.tiny]\nsource = \"mock/tiny\"\n\
                       [catalog.other]\nsource = \"mock/other\"\n";
