//! The Prometheus endpoint: `GET /metrics` over plain HTTP/1.1, one
//! request per connection. Meant for 127.0.0.1 or a private network.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::shutdown::ShutdownSignal;
use super::status::NodeStatus;

const HEAD_LIMIT: usize = 8192;

/// Serves `GET /metrics` on `listener` until shutdown.
pub async fn serve(listener: TcpListener, status: Arc<NodeStatus>, mut shutdown: ShutdownSignal) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(listen = %addr, "metrics endpoint ready (GET /metrics)");
    }
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let status = status.clone();
                    tokio::spawn(async move {
                        if let Err(e) = handle(stream, &status).await {
                            tracing::debug!(%peer, "metrics request: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("metrics accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

async fn handle(mut stream: TcpStream, status: &NodeStatus) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < HEAD_LIMIT {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(Duration::from_secs(5), read_head)
        .await
        .is_err()
    {
        return Ok(());
    }
    let request_line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let (code, kind, body) =
        if request_line.starts_with(b"GET /metrics ") || request_line == b"GET /metrics" {
            (
                "200 OK",
                "text/plain; version=0.0.4",
                status.metrics().await,
            )
        } else {
            (
                "404 Not Found",
                "text/plain",
                "lanparty serves GET /metrics only\n".to_string(),
            )
        };
    let response = format!(
        "HTTP/1.1 {code}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Binds the endpoint.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("metrics.listen {addr}: {e}"))
}
