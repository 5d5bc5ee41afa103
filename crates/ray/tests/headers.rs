//! What the Ray client sends with every call: the configured headers (a proxy's, a
//! bearer token), checked by a dashboard stand-in that refuses a call without them.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vllm_ray::{Error, RayClient};

/// Answers `/api/version` when the request carries both headers, 401 otherwise.
async fn guarded_dashboard() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]).to_lowercase();
            let allowed =
                head.contains("authorization: bearer sekret") && head.contains("x-proxy: p1");
            let (status, body) = if allowed {
                ("200 OK", r#"{"version":"4","ray_version":"2.60.0"}"#)
            } else {
                ("401 Unauthorized", "no token")
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(reply.as_bytes()).await;
        }
    });
    url
}

#[tokio::test]
async fn headers_go_with_every_call_and_the_key_is_never_shown() {
    let url = guarded_dashboard().await;
    let headers = [
        ("Authorization".to_string(), "Bearer sekret".to_string()),
        ("X-Proxy".to_string(), "p1".to_string()),
    ];
    let ray = RayClient::new(&url, &headers, Duration::from_secs(2)).unwrap();
    assert_eq!(ray.version().await.unwrap(), "2.60.0");
    assert!(!format!("{ray:?}").contains("sekret"), "{ray:?}");

    let bare = RayClient::new(&url, &[], Duration::from_secs(2)).unwrap();
    match bare.version().await {
        Err(Error::Refused {
            status: 401, body, ..
        }) => assert_eq!(body, "no token"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        RayClient::new(
            &url,
            &[("bad header".into(), "x".into())],
            Duration::from_secs(1)
        ),
        Err(Error::Invalid(_))
    ));
}
