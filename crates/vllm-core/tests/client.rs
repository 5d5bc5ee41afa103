//! The vLLM client against mock-vllm: keys, timeouts, dead servers, https, error bodies.
//!
//! Each failure must become an answer a user can act on, quickly: a stable code, the URL,
//! and vLLM's own message where it sent one.

use mock_vllm::testing::{MockHandle, spawn_for_test};
use serde_json::json;
use std::time::{Duration, Instant};
use vllm_core::config::HttpConfig;
use vllm_core::vllm::{EndpointSpec, Health, VllmClient};

async fn mock(args: &[&str], env: &[(&str, &str)]) -> MockHandle {
    let mut all = vec![
        "serve",
        "mock/tiny",
        "--served-model-name",
        "tiny",
        "--max-model-len",
        "512",
    ];
    all.extend_from_slice(args);
    spawn_for_test(&all, env).await.expect("mock starts")
}

fn client(base_url: &str, edit: impl FnOnce(&mut EndpointSpec)) -> VllmClient {
    let mut spec = EndpointSpec::new("test", base_url, &HttpConfig::default());
    edit(&mut spec);
    VllmClient::new(spec).unwrap()
}

#[tokio::test]
async fn typed_calls_against_a_healthy_server() {
    let m = mock(&[], &[]).await;
    let c = client(m.base_url(), |_| {});
    assert_eq!(c.health().await.unwrap(), Health::Ready);
    assert_eq!(c.version().await.unwrap(), "0.32.0");
    let models = c.models().await.unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].id, "tiny");
    assert_eq!(models[0].max_model_len, Some(512));
    assert_eq!(models[0].root.as_deref(), Some("mock/tiny"));
    let text = c.metrics_text().await.unwrap();
    assert!(text.contains("vllm:num_requests_running"));

    let r = c
        .completion(&json!({"model": "tiny", "prompt": "hello there", "max_tokens": 4}))
        .await
        .unwrap();
    assert_eq!(r["usage"]["completion_tokens"], 4);
    let r = c
        .chat(&json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}))
        .await
        .unwrap();
    assert_eq!(r["object"], "chat.completion");
    let chunks = c
        .completion_stream(&json!({"model": "tiny", "prompt": "a b", "max_tokens": 5}))
        .await
        .unwrap();
    assert!(chunks.len() >= 5, "{chunks:?}");
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
}

#[tokio::test]
async fn model_metadata_is_cached_for_its_ttl() {
    let m = mock(&[], &[]).await;
    let c = client(m.base_url(), |s| s.metadata_ttl = Duration::from_secs(60));
    assert_eq!(c.models().await.unwrap()[0].id, "tiny");
    let url = m.base_url().to_string();
    m.shutdown().await;
    // The server is gone, but the answer is still fresh.
    assert_eq!(c.models().await.unwrap()[0].id, "tiny");
    c.invalidate();
    let e = c.models().await.unwrap_err();
    assert_eq!(e.code(), "BACKEND_UNREACHABLE", "{e}");
    assert!(e.to_string().contains(&url));
}

#[tokio::test]
async fn api_key_guards_v1_only_and_is_sent_as_bearer() {
    let m = mock(&["--api-key", "right-key"], &[]).await;
    let none = client(m.base_url(), |_| {});
    assert_eq!(
        none.health().await.unwrap(),
        Health::Ready,
        "/health is open"
    );
    assert!(none.metrics_text().await.is_ok(), "/metrics is open");
    let e = none.models().await.unwrap_err();
    assert_eq!(e.code(), "BACKEND_ERROR");
    assert_eq!(e.details()["status"], 401);
    assert!(e.to_string().contains("Unauthorized"));
    assert!(e.suggestion().contains("api_key_env"), "{}", e.suggestion());

    let wrong = client(m.base_url(), |s| s.api_key = Some("wrong".into()));
    assert_eq!(wrong.models().await.unwrap_err().details()["status"], 401);
    let right = client(m.base_url(), |s| s.api_key = Some("right-key".into()));
    assert_eq!(right.models().await.unwrap()[0].id, "tiny");
}

#[tokio::test]
async fn a_slow_server_is_a_timeout_not_a_hang() {
    let m = mock(&[], &[("MOCK_VLLM_SLOW_MS", "3000")]).await;
    let c = client(m.base_url(), |s| {
        s.request_timeout = Duration::from_millis(300)
    });
    let t = Instant::now();
    let e = c.models().await.unwrap_err();
    assert_eq!(e.code(), "BACKEND_TIMEOUT", "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(e.details()["timeout_seconds"], 0.3);
}

#[tokio::test]
async fn a_server_that_accepts_and_never_answers_is_a_timeout() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            if let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        }
    });
    let c = client(&format!("http://{addr}"), |s| {
        s.request_timeout = Duration::from_millis(300)
    });
    let t = Instant::now();
    assert_eq!(c.health().await.unwrap_err().code(), "BACKEND_TIMEOUT");
    assert!(t.elapsed() < Duration::from_secs(2));
    hold.abort();
}

#[tokio::test]
async fn a_dead_port_is_unreachable_at_once() {
    let port = vllm_mcp_testkit::free_port();
    let c = client(&format!("http://127.0.0.1:{port}"), |_| {});
    let t = Instant::now();
    let e = c.health().await.unwrap_err();
    assert_eq!(e.code(), "BACKEND_UNREACHABLE");
    assert!(e.to_string().to_lowercase().contains("refused"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn vllm_error_bodies_are_carried() {
    let m = mock(&[], &[]).await;
    let c = client(m.base_url(), |_| {});
    let e = c
        .completion(&json!({"model": "nope", "prompt": "x", "max_tokens": 1}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "BACKEND_ERROR");
    assert_eq!(e.details()["status"], 404);
    assert_eq!(e.details()["vllm_error_type"], "NotFoundError");
    assert!(
        e.to_string().contains("The model `nope` does not exist"),
        "{e}"
    );

    let e = c
        .completion(&json!({"model": "tiny", "prompt": "x", "max_tokens": 100000}))
        .await
        .unwrap_err();
    assert_eq!(e.details()["status"], 400);
    assert!(e.to_string().contains("max_model_len=512"), "{e}");

    // Dev-mode endpoints are absent without VLLM_SERVER_DEV_MODE: FastAPI's 404 body.
    let e = c.is_sleeping().await.unwrap_err();
    assert_eq!(e.details()["status"], 404);
    assert!(e.to_string().contains("Not Found"));
}

#[tokio::test]
async fn a_dying_engine_answers_503_on_health() {
    let m = mock(&[], &[("MOCK_VLLM_DEATH_503_SECONDS", "30")]).await;
    let c = client(m.base_url(), |_| {});
    m.kill_engine();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match c.health().await {
            Ok(Health::Unhealthy(503)) => break,
            other if Instant::now() > deadline => panic!("no 503: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test]
async fn runtime_lora_round_trip_refreshes_the_model_list() {
    let m = mock(
        &["--enable-lora"],
        &[("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "True")],
    )
    .await;
    let c = client(m.base_url(), |s| s.metadata_ttl = Duration::from_secs(60));
    assert_eq!(c.models().await.unwrap().len(), 1);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("adapter_config.json"),
        r#"{"r": 8, "peft_type": "LORA"}"#,
    )
    .unwrap();
    let msg = c
        .load_lora_adapter("ad1", dir.path().to_str().unwrap())
        .await
        .unwrap();
    assert!(msg.contains("ad1"), "{msg}");
    let models = c.models().await.unwrap();
    let lora = models
        .iter()
        .find(|m| m.id == "ad1")
        .expect("the adapter is listed at once");
    assert_eq!(lora.parent.as_deref(), Some("tiny"));
    c.unload_lora_adapter("ad1").await.unwrap();
    assert_eq!(c.models().await.unwrap().len(), 1);
}

mod https {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

    /// A private CA and a server certificate for 127.0.0.1 signed by it, as PEM files.
    fn pki(dir: &std::path::Path) -> (String, String, Vec<u8>) {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, leaf.pem()).unwrap();
        std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
        (
            cert.display().to_string(),
            key.display().to_string(),
            ca.pem().into_bytes(),
        )
    }

    #[tokio::test]
    async fn untrusted_certificates_are_refused_trusted_ones_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, ca_pem) = pki(dir.path());
        let m = mock(&["--ssl-certfile", &cert, "--ssl-keyfile", &key], &[]).await;
        assert!(m.base_url().starts_with("https://"), "{}", m.base_url());

        let e = client(m.base_url(), |_| {}).version().await.unwrap_err();
        assert_eq!(e.code(), "BACKEND_UNREACHABLE", "{e}");
        assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");

        let trusted = client(m.base_url(), |s| s.tls_ca_pem = Some(ca_pem.clone()));
        assert_eq!(trusted.version().await.unwrap(), "0.32.0");

        let lax = client(m.base_url(), |s| s.tls_accept_invalid_certs = true);
        assert_eq!(lax.version().await.unwrap(), "0.32.0");

        // Plain http to an https server is refused, not hung.
        let plain = client(&m.base_url().replace("https://", "http://"), |s| {
            s.request_timeout = Duration::from_secs(2)
        });
        assert!(plain.version().await.is_err());
    }
}
