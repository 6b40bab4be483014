//! The Prometheus endpoint: `GET /metrics` over HTTP/1.1 (hyper), meant for
//! 127.0.0.1 or a private network.
//!
//! Bounded on every side: at most [`MAX_CONNECTIONS`] scrapes at once (more
//! wait in the kernel's accept queue), a request head of at most
//! [`HEAD_LIMIT`] bytes that must arrive within [`HEAD_TIMEOUT`], one request
//! per connection, and a connection never lives longer than
//! [`CONNECTION_TIMEOUT`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::metrics;
use super::shutdown::ShutdownSignal;
use super::status::NodeStatus;

/// Scrapes served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// The largest request head read (hyper's smallest read buffer).
pub const HEAD_LIMIT: usize = 8192;
/// How long a client has to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection lives, answer included.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `GET /metrics` on `listener` until shutdown.
pub async fn serve(listener: TcpListener, status: Arc<NodeStatus>, mut shutdown: ShutdownSignal) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(listen = %addr, "metrics endpoint ready (GET /metrics)");
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        tokio::select! {
            _ = shutdown.wait() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let status = status.clone();
                    tokio::spawn(async move {
                        let _slot = slot;
                        let service = service_fn(move |request| {
                            let status = status.clone();
                            async move { Ok::<_, Infallible>(respond(&request, &status).await) }
                        });
                        let connection = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEAD_TIMEOUT)
                            .max_buf_size(HEAD_LIMIT)
                            .keep_alive(false)
                            .serve_connection(TokioIo::new(stream), service);
                        match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::debug!(%peer, "metrics request: {e}"),
                            Err(_) => tracing::debug!(%peer, "metrics request took longer than {CONNECTION_TIMEOUT:?}"),
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

/// The answer to one request.
async fn respond(request: &Request<Incoming>, status: &NodeStatus) -> Response<Full<Bytes>> {
    let (code, kind, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            status.metrics().await,
        ),
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET /metrics\n".to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "lanparty serves GET /metrics only\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(kind));
    if code == StatusCode::METHOD_NOT_ALLOWED {
        response
            .headers_mut()
            .insert(ALLOW, hyper::header::HeaderValue::from_static("GET"));
    }
    response
}

/// Binds the endpoint.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("metrics.listen {addr}: {e}"))
}
