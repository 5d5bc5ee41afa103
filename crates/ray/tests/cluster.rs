//! The Ray client against a real Ray cluster of two nodes on this machine (a head on
//! 127.0.0.2, a second node on 127.0.0.3, started by the testkit from `scripts/ray.sh`'s
//! Ray), with mock-vllm as the jobs' command: placement on a named node, the server
//! reachable on that node's address, metadata, logs, stop, a job that fails at start, a
//! node lost under a job; and a dashboard that is not there.

use std::time::{Duration, Instant};

use vllm_mcp_testkit::ray::{HEAD_IP, RayCluster, WORKER_IP};
use vllm_mcp_testkit::{bin, free_port, http_status_at};
use vllm_ray::{Error, Job, JobSpec, JobStatus, RayClient};

fn client(address: &str) -> RayClient {
    RayClient::new(address, &[], Duration::from_secs(10)).unwrap()
}

fn ip(addr: &str) -> [u8; 4] {
    addr.parse::<std::net::Ipv4Addr>().unwrap().octets()
}

/// A job serving mock-vllm as `name` on `node`'s address, pinned to that node.
fn serve_on(node: &str, port: u16, name: &str, model: &str) -> JobSpec {
    let mut spec = JobSpec {
        entrypoint: format!(
            "exec {} serve {model} --host {node} --port {port} --served-model-name {name}",
            bin("mock-vllm").display()
        ),
        submission_id: Some(format!("vllm-mcp-test-{name}-{port}")),
        metadata: [("vllm_mcp.model_id".to_string(), name.to_string())].into(),
        ..Default::default()
    };
    spec.pin_to_node(node);
    spec
}

/// Polls the job until `done` holds for it.
async fn wait_job(ray: &RayClient, id: &str, what: &str, done: impl Fn(&Job) -> bool) -> Job {
    let t = Instant::now();
    loop {
        let job = ray.job(id).await.unwrap();
        if done(&job) {
            return job;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "{id}: not {what} after 90 s: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn wait_health(node: &str, port: u16, want: Option<u16>) {
    let t = Instant::now();
    while http_status_at(ip(node), port, "/health") != want {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{node}:{port}/health is not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_on_a_real_two_node_cluster() {
    let mut cluster = RayCluster::start();
    let ray = client(&cluster.dashboard());
    assert_eq!(ray.version().await.unwrap(), "2.60.0");

    // Two nodes, one cluster, each on its own loopback address.
    let nodes = ray.nodes().await.unwrap();
    let alive: Vec<_> = nodes.iter().filter(|n| n.is_alive()).collect();
    assert_eq!(alive.len(), 2, "{nodes:?}");
    let head = alive.iter().find(|n| n.is_head_node).expect("a head");
    assert_eq!(head.node_ip, HEAD_IP);
    let worker = alive
        .iter()
        .find(|n| n.node_ip == WORKER_IP)
        .expect("the second node");
    assert!(
        worker
            .resources_total
            .contains_key(&format!("node:{WORKER_IP}"))
    );
    assert!(worker.memory_mb() > 0 && worker.gpus() == 0, "{worker:?}");

    // Each node's agent reports its memory (and GPUs: none here).
    let stats = ray.node_stats().await.unwrap();
    for ip in [HEAD_IP, WORKER_IP] {
        let n = stats.iter().find(|n| n.ip == ip).expect(ip);
        assert!(
            n.alive && n.mem_total_mb > 0 && n.mem_available_mb > 0,
            "{n:?}"
        );
        assert!(
            n.mem_available_mb <= n.mem_total_mb && n.gpus.is_empty(),
            "{n:?}"
        );
    }

    // One server placed on each node, reachable on that node's address.
    let (p1, p2) = (free_port(), free_port());
    let a = ray
        .submit(&serve_on(HEAD_IP, p1, "a", "mock/a"))
        .await
        .unwrap();
    let b = ray
        .submit(&serve_on(WORKER_IP, p2, "b", "mock/b"))
        .await
        .unwrap();
    assert_eq!(
        b,
        format!("vllm-mcp-test-b-{p2}"),
        "our submission id is kept"
    );
    for (id, node, port, node_id) in [
        (&a, HEAD_IP, p1, &head.node_id),
        (&b, WORKER_IP, p2, &worker.node_id),
    ] {
        let job = wait_job(&ray, id, "running", |j| {
            j.status == Some(JobStatus::Running)
        })
        .await;
        assert_eq!(
            job.driver_node_id.as_ref(),
            Some(node_id),
            "{id} ran elsewhere: {job:?}"
        );
        wait_health(node, port, Some(200)).await;
    }
    assert_eq!(
        http_status_at(ip(HEAD_IP), p2, "/health"),
        None,
        "b listens on its node only"
    );

    // Any client finds them by their metadata.
    let listed = ray.jobs().await.unwrap();
    let ours: Vec<&str> = listed
        .iter()
        .filter_map(|j| j.metadata.get("vllm_mcp.model_id").map(String::as_str))
        .collect();
    assert!(ours.contains(&"a") && ours.contains(&"b"), "{listed:?}");

    // The command's output, as the log resource will show it.
    let logs = ray.logs(&b).await.unwrap();
    assert!(logs.contains("mock-vllm serve mock/b"), "{logs}");
    assert!(
        logs.contains("Starting vLLM") || logs.contains("non-default args"),
        "{logs}"
    );

    // Stop: the job ends and the server with it.
    assert!(ray.stop(&a).await.unwrap());
    let job = wait_job(&ray, &a, "stopped", |j| {
        j.status.is_some_and(|s| s.is_terminal())
    })
    .await;
    assert_eq!(job.status, Some(JobStatus::Stopped));
    wait_health(HEAD_IP, p1, None).await;
    assert!(
        !ray.stop(&a).await.unwrap(),
        "stopping it again stops nothing"
    );

    // A command that fails at start: the job fails, and its log says why.
    let bad = ray
        .submit(&serve_on(
            WORKER_IP,
            free_port(),
            "bad",
            "/nonexistent/model",
        ))
        .await
        .unwrap();
    let job = wait_job(&ray, &bad, "ended", |j| {
        j.status.is_some_and(|s| s.is_terminal())
    })
    .await;
    assert_eq!(job.status, Some(JobStatus::Failed), "{job:?}");
    assert_ne!(job.driver_exit_code, Some(0), "{job:?}");
    let logs = ray.logs(&bad).await.unwrap();
    assert!(logs.contains("/nonexistent/model"), "{logs}");

    // Unknown ids are their own error.
    assert!(matches!(
        ray.job("no-such-job").await,
        Err(Error::NotFound { .. })
    ));

    // The node under b is lost: Ray marks the job failed and says the node died.
    cluster.kill_node(WORKER_IP);
    wait_health(WORKER_IP, p2, None).await;
    let job = wait_job(&ray, &b, "failed", |j| j.status == Some(JobStatus::Failed)).await;
    let message = job.message.unwrap_or_default();
    assert!(message.contains("node"), "{message}");
    let nodes = ray.nodes().await.unwrap();
    assert!(
        nodes
            .iter()
            .any(|n| n.node_ip == WORKER_IP && !n.is_alive()),
        "{nodes:?}"
    );
}

#[tokio::test]
async fn a_dashboard_that_is_not_there_is_an_answer_not_a_hang() {
    // Nothing listens on this loopback address and port.
    let ray = client(&format!("http://127.0.0.4:{}", free_port()));
    let t = Instant::now();
    let err = ray.jobs().await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let Error::Unreachable { address, reason } = &err else {
        panic!("{err:?}")
    };
    assert!(address.starts_with("http://127.0.0.4:"));
    assert!(!reason.is_empty());
    assert!(err.to_string().contains("unreachable"), "{err}");

    // A listener that never answers: the call's own time limit ends it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let ray = RayClient::new(
        &format!("http://127.0.0.1:{port}"),
        &[],
        Duration::from_millis(500),
    )
    .unwrap();
    let t = Instant::now();
    assert!(matches!(
        ray.version().await,
        Err(Error::Unreachable { .. })
    ));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    // Not a URL at all: refused before any request.
    assert!(matches!(
        RayClient::new("head:8265", &[], Duration::from_secs(1)),
        Err(Error::Invalid(_))
    ));
}
