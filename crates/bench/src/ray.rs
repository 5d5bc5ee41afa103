//! The launcher's Ray backend on a real two-node Ray cluster of this machine (the
//! testkit's, from `scripts/ray.sh`), with mock-vllm as `vllm serve`: a load through Ray
//! against the local backend (and Ray's own floor, a trivial job's submit-to-running),
//! list-models with 32 models on the cluster, and a manager with an empty data directory
//! adopting those 32.

use crate::table::{Row, Samples, ms};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vllm_core::config::Config;
use vllm_core::gpu::FakeGpus;
use vllm_core::models::ModelStatus;
use vllm_core::store::Store;
use vllm_fleet::launcher::supervisor::{LaunchRequest, Launcher};
use vllm_mcp_testkit::ray::RayCluster;
use vllm_mcp_testkit::{McpProcess, ServerRig, bin};
use vllm_ray::{JobSpec, JobStatus, RayClient};

/// Models on the cluster for the list and adoption figures.
const FLEET: usize = 32;

fn launcher(rig: &ServerRig) -> Launcher {
    let config = Arc::new(Config::load(Some(&rig.config)).expect("config"));
    let store = Store::open(&rig.store_path()).expect("store");
    Launcher::new(config, store, Arc::new(FakeGpus::without_driver()))
}

fn ray_rig(address: &str) -> ServerRig {
    // The mock starts at once: what is measured is the backend's own cost.
    ServerRig::new("\n[limits]\nmax_models = 64\n")
        .with_launcher_env(&[("MOCK_VLLM_START_DELAY", "0")])
        .on_ray(address, "")
}

/// Seconds from `launch` to `loaded`, `runs` times, each model stopped after.
async fn load_times(l: &Launcher, prefix: &str, runs: usize) -> Samples {
    let mut took = Vec::new();
    for i in 0..runs {
        let id = format!("{prefix}{i}");
        let req = LaunchRequest {
            model_id: id.clone(),
            source: Some(format!("mock/{id}")),
            ..LaunchRequest::default()
        };
        let t = Instant::now();
        l.launch(&req).await.expect("launch");
        let r = l
            .wait_settled_every(
                &id,
                Duration::from_secs(120),
                Duration::from_millis(20),
                |_| {},
            )
            .await
            .expect("settled");
        assert_eq!(r.status, ModelStatus::Loaded, "{id}: {:?}", r.error);
        took.push(t.elapsed());
        l.stop(&id, true).await.expect("stop");
    }
    Samples::new(took)
}

/// A trivial job's submit-to-running on the cluster: Ray's own floor.
async fn ray_floor(ray: &RayClient, runs: usize) -> Samples {
    let mut took = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let id = ray
            .submit(&JobSpec {
                entrypoint: "sleep 30".into(),
                ..Default::default()
            })
            .await
            .expect("submit");
        while ray.job(&id).await.expect("job").status != Some(JobStatus::Running) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        took.push(t.elapsed());
        let _ = ray.stop(&id).await;
    }
    Samples::new(took)
}

async fn list_call(m: &McpProcess) -> (Value, Duration) {
    let t = Instant::now();
    let a = m.call("list-models", json!({"limit": 100})).await;
    let took = t.elapsed();
    assert!(!a.is_error, "{}", a.json);
    (a.json, took)
}

fn count_loaded(list: &Value) -> usize {
    list["models"]
        .as_array()
        .map(|m| m.iter().filter(|x| x["status"] == "loaded").count())
        .unwrap_or(0)
}

/// The section's rows.
pub async fn rows(runs: usize) -> Vec<Row> {
    vllm_core::vllm::install_tls_provider();
    eprintln!("ray: starting a two-node cluster");
    let cluster = RayCluster::start();
    let runs = runs.clamp(1, 10);
    let mut out = Vec::new();

    let local_rig = ServerRig::new("").with_launcher_env(&[("MOCK_VLLM_START_DELAY", "0")]);
    let local = load_times(&launcher(&local_rig), "local", runs).await;
    let rig = ray_rig(&cluster.dashboard());
    let l = launcher(&rig);
    let on_ray = load_times(&l, "ray", runs).await;
    let ray = RayClient::new(&cluster.dashboard(), &[], Duration::from_secs(10)).expect("client");
    let floor = ray_floor(&ray, runs).await;
    out.push(Row::info(
        "load-model to loaded, mock-vllm: local backend (median)",
        format!("{:.0} ms", ms(local.median())),
    ));
    out.push(Row::info(
        "load-model to loaded, mock-vllm: Ray backend (median)",
        format!("{:.0} ms", ms(on_ray.median())),
    ));
    out.push(Row::info(
        "Ray's floor: a trivial job, submit to running (median)",
        format!("{:.0} ms", ms(floor.median())),
    ));

    eprintln!("ray: {FLEET} models on the cluster");
    for i in 0..FLEET {
        let id = format!("fleet{i}");
        let req = LaunchRequest {
            model_id: id.clone(),
            source: Some(format!("mock/{id}")),
            ..LaunchRequest::default()
        };
        l.launch(&req).await.expect("launch");
    }
    let t = Instant::now();
    loop {
        let all = l.list().await.expect("list");
        if all
            .iter()
            .filter(|r| r.status == ModelStatus::Loaded)
            .count()
            >= FLEET
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "the fleet never loaded"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let m = rig.spawn(&bin("vllm-model-manager"), &[]).await;
    let mut lists = Vec::new();
    for _ in 0..20 {
        let (list, took) = list_call(&m).await;
        assert_eq!(count_loaded(&list), FLEET, "{list}");
        lists.push(took);
    }
    m.close().await;
    let lists = Samples::new(lists);
    out.push(Row::info(
        format!("list-models, {FLEET} models on the cluster (median)"),
        format!("{:.1} ms", ms(lists.median())),
    ));

    // A manager with an empty data directory: its first list-models adopts the fleet.
    let empty = ray_rig(&cluster.dashboard());
    let fresh = empty.spawn(&bin("vllm-model-manager"), &[]).await;
    let (list, adopt) = list_call(&fresh).await;
    fresh.close().await;
    let adopted = count_loaded(&list);
    out.push(Row::target(
        format!("adoption of {FLEET} models by a manager with an empty data directory"),
        "< 1 s",
        format!("{:.0} ms ({adopted} loaded)", ms(adopt)),
        adopt < Duration::from_secs(1) && adopted == FLEET,
    ));
    for i in 0..FLEET {
        let _ = l.stop(&format!("fleet{i}"), true).await;
    }
    drop(cluster);
    out
}
