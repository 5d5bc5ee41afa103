//! The stdio framing guard: one JSON-RPC message per line, checked before rmcp sees it.
//!
//! rmcp drops a line that is not JSON without a word and buffers a line of any length.
//! Between the real stdin/stdout and rmcp's end of an in-process pipe, the guard
//! answers a line that is not JSON, or is longer than [`MAX_LINE`], with a JSON-RPC
//! parse error (-32700, `id: null`) and passes every other line through whole. A long
//! line is skipped as it arrives, so memory stays bounded whatever the client sends.
//! When stdin closes, rmcp's input closes, and the server exits as before.

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::mpsc;

/// The longest line (one JSON-RPC message) accepted: 16 MiB.
pub const MAX_LINE: usize = 16 << 20;

/// The end rmcp serves on, with the guard running between it and `input`/`output`
/// (the process's stdin and stdout in the servers).
pub fn guard<R, W>(input: R, output: W) -> DuplexStream
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (rmcp_end, guard_end) = tokio::io::duplex(256 * 1024);
    let (from_rmcp, to_rmcp) = tokio::io::split(guard_end);
    let (errors_tx, errors_rx) = mpsc::unbounded_channel();
    tokio::spawn(inbound(input, to_rmcp, errors_tx));
    tokio::spawn(outbound(from_rmcp, output, errors_rx));
    rmcp_end
}

/// What one read line turned out to be.
#[derive(Debug, PartialEq)]
enum Line {
    /// A JSON value, to pass on.
    Message(Vec<u8>),
    /// Nothing but whitespace: skipped.
    Blank,
    /// Not JSON, or too long: answered with a parse error.
    Bad(String),
}

fn classify(line: Vec<u8>, too_long: bool) -> Line {
    if too_long {
        return Line::Bad(format!(
            "Parse error: a message longer than {MAX_LINE} bytes"
        ));
    }
    if line.iter().all(u8::is_ascii_whitespace) {
        return Line::Blank;
    }
    match serde_json::from_slice::<serde::de::IgnoredAny>(&line) {
        Ok(_) => Line::Message(line),
        Err(e) => Line::Bad(format!("Parse error: {e}")),
    }
}

/// Reads one line (without its newline) of at most [`MAX_LINE`] bytes kept; the rest
/// of a longer line is read and dropped. `None` at the end of input.
async fn read_line<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
) -> std::io::Result<Option<(Vec<u8>, bool)>> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok((!line.is_empty() || too_long).then_some((line, too_long)));
        }
        let (chunk, found) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i)),
            None => (buf, None),
        };
        if !too_long {
            if line.len() + chunk.len() > MAX_LINE {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = found.map_or(buf.len(), |i| i + 1);
        r.consume(used);
        if found.is_some() {
            return Ok(Some((line, too_long)));
        }
    }
}

async fn inbound<R, W>(input: R, mut to_rmcp: W, errors: mpsc::UnboundedSender<String>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut r = BufReader::with_capacity(64 * 1024, input);
    loop {
        match read_line(&mut r).await {
            Ok(Some((line, too_long))) => match classify(line, too_long) {
                Line::Message(mut m) => {
                    m.push(b'\n');
                    if to_rmcp.write_all(&m).await.is_err() {
                        break;
                    }
                }
                Line::Blank => {}
                Line::Bad(why) => {
                    tracing::warn!("{why}");
                    let e = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": why}});
                    let _ = errors.send(e.to_string());
                }
            },
            Ok(None) => break,
            Err(e) => {
                tracing::warn!("cannot read stdin: {e}");
                break;
            }
        }
    }
    // rmcp sees the end of its input and the session ends.
    let _ = to_rmcp.shutdown().await;
}

async fn outbound<R, W>(from_rmcp: R, mut output: W, mut errors: mpsc::UnboundedReceiver<String>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut r = BufReader::with_capacity(64 * 1024, from_rmcp);
    let mut line = Vec::new();
    let mut errors_open = true;
    loop {
        tokio::select! {
            // Errors first: one queued before a later request was passed on goes out
            // before rmcp's answer to that request.
            biased;
            e = errors.recv(), if errors_open => match e {
                Some(e) => {
                    // Between whole lines of rmcp's output, never inside one: a line
                    // half read is finished first.
                    if !line.is_empty() && r.read_until(b'\n', &mut line).await.is_err() {
                        break;
                    }
                    let ok = output.write_all(&line).await.is_ok()
                        && output.write_all(format!("{e}\n").as_bytes()).await.is_ok()
                        && output.flush().await.is_ok();
                    line.clear();
                    if !ok {
                        break;
                    }
                }
                None => errors_open = false,
            },
            n = r.read_until(b'\n', &mut line) => match n {
                Ok(0) | Err(_) => {
                    // rmcp is done: answers to bad lines already read still go out.
                    while let Ok(e) = errors.try_recv() {
                        if output.write_all(format!("{e}\n").as_bytes()).await.is_err() {
                            break;
                        }
                    }
                    let _ = output.flush().await;
                    break;
                }
                Ok(_) => {
                    if output.write_all(&line).await.is_err() || output.flush().await.is_err() {
                        break;
                    }
                    line.clear();
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn lines_are_classified() {
        assert_eq!(
            classify(b"{\"a\":1}".to_vec(), false),
            Line::Message(b"{\"a\":1}".to_vec())
        );
        assert_eq!(classify(b"  \r".to_vec(), false), Line::Blank);
        assert!(matches!(
            classify(b"{\"broken\":".to_vec(), false),
            Line::Bad(_)
        ));
        assert!(matches!(classify(b"hello".to_vec(), false), Line::Bad(_)));
        assert!(matches!(classify(Vec::new(), true), Line::Bad(m) if m.contains("longer than")));
    }

    #[tokio::test]
    async fn bad_lines_get_parse_errors_and_good_ones_pass_whole() {
        let big = "x".repeat(MAX_LINE + 10);
        let input = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}}\nnot json\n{big}\n\n[1]\n"
        );
        let (mut client_out, server_out) = tokio::io::duplex(1 << 16);
        let mut rmcp_end = guard(std::io::Cursor::new(input.into_bytes()), server_out);
        // What rmcp receives: the two JSON lines, then the end of input.
        let mut got = String::new();
        rmcp_end.read_to_string(&mut got).await.unwrap();
        assert_eq!(
            got,
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n[1]\n"
        );
        drop(rmcp_end);
        let mut out = String::new();
        client_out.read_to_string(&mut out).await.unwrap();
        let errors: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(errors.len(), 2, "{out}");
        for e in &errors {
            assert_eq!(e["error"]["code"], -32700);
            assert_eq!(e["id"], serde_json::Value::Null);
        }
        assert!(
            errors[1]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("longer than")
        );
    }
}
