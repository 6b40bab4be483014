//! The local admin socket: a Unix socket, owner-only, that answers one
//! JSON request per connection.
//!
//! - `{"command":"status"}` → the node report as one JSON line;
//! - `{"command":"metrics"}` → the Prometheus text;
//! - `{"command":"capture","room":"ROOM"}` → `{"ok":true}` and a newline,
//!   then a pcapng stream of every frame entering the room until the
//!   client hangs up (or `{"error":…}` when there is no such room).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::shutdown::ShutdownSignal;
use super::status::NodeStatus;
use crate::stage::LinkId;
use crate::wire::pcapng;

/// An admin request.
#[derive(Debug, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdminRequest {
    /// The node report.
    Status,
    /// The Prometheus text.
    Metrics,
    /// A live pcapng capture of a room.
    Capture {
        /// The room code (`default` on a client or gateway).
        room: String,
        /// Bytes kept per frame. Default 65535.
        #[serde(default)]
        snaplen: Option<u32>,
    },
}

/// Frames a live capture buffers before it drops.
const CAPTURE_QUEUE: usize = 8192;
const REQUEST_LIMIT: usize = 4096;

/// Binds the socket: creates its folder (owner-only) if needed, replaces a
/// stale socket file, refuses when another node answers on it, and makes
/// the socket owner-only.
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!(
                "another lanparty node answers on {}; give this one its own `admin.socket`",
                path.display()
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove the stale socket {}: {e}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot make {} owner-only: {e}", path.display()))?;
    Ok(listener)
}

/// Removes the admin socket file when dropped: the node holds one for as
/// long as it runs, so the file goes on every exit path (a port failing at
/// start, a panic unwinding), not only when [`serve`] sees the shutdown.
#[derive(Debug)]
pub struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Serves the admin socket until shutdown. The socket file is the node's
/// [`SocketFile`]'s to remove.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    status: Arc<NodeStatus>,
    mut shutdown: ShutdownSignal,
) {
    tracing::info!(socket = %path.display(), "admin socket ready (lanparty status)");
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let status = status.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        if let Err(e) = handle(stream, &status, shutdown).await {
                            tracing::debug!("admin connection: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("admin socket accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

async fn handle(
    stream: UnixStream,
    status: &NodeStatus,
    shutdown: ShutdownSignal,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(REQUEST_LIMIT as u64));
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        return reply(&mut write, &json!({"error": "send one JSON request line"})).await;
    }
    let request: AdminRequest = match serde_json::from_str(line.trim()) {
        Ok(r) => r,
        Err(e) => {
            return reply(
                &mut write,
                &json!({"error": format!("bad request: {e}; try {{\"command\":\"status\"}}")}),
            )
            .await;
        }
    };
    match request {
        AdminRequest::Status => reply(&mut write, &status.report().await).await,
        AdminRequest::Metrics => {
            write.write_all(status.metrics().await.as_bytes()).await?;
            write.shutdown().await
        }
        AdminRequest::Capture { room, snaplen } => {
            // A relay files rooms by their upper-case key; a client's or
            // gateway's one local room is `default`.
            let frames = status.rooms.capture(&room, CAPTURE_QUEUE).or_else(|| {
                status
                    .rooms
                    .capture(&crate::control::room_key(&room), CAPTURE_QUEUE)
            });
            let Some(frames) = frames else {
                let rooms = status.rooms.room_names().join(", ");
                return reply(
                    &mut write,
                    &json!({"error": format!("no room `{room}` here; rooms now: [{rooms}]")}),
                )
                .await;
            };
            reply_line(&mut write, &json!({"ok": true, "room": room})).await?;
            stream_capture(
                &mut write,
                frames,
                snaplen.unwrap_or(65_535).clamp(64, 262_144),
                shutdown,
            )
            .await
        }
    }
}

async fn reply_line<W: AsyncWrite + Unpin>(
    write: &mut W,
    value: &impl serde::Serialize,
) -> std::io::Result<()> {
    let mut text = serde_json::to_string(value).map_err(std::io::Error::other)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await
}

async fn reply<W: AsyncWrite + Unpin>(
    write: &mut W,
    value: &impl serde::Serialize,
) -> std::io::Result<()> {
    reply_line(write, value).await?;
    write.shutdown().await
}

/// Writes frames as pcapng until the reader hangs up or the node stops.
async fn stream_capture<W: AsyncWrite + Unpin>(
    write: &mut W,
    mut frames: tokio::sync::mpsc::Receiver<super::rooms::CapturedFrame>,
    snaplen: u32,
    mut shutdown: ShutdownSignal,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(64 * 1024);
    pcapng::section_header(&mut out);
    write.write_all(&out).await?;
    let mut interfaces: HashMap<LinkId, u32> = HashMap::new();
    let mut batch = Vec::with_capacity(256);
    loop {
        let n = tokio::select! {
            _ = shutdown.wait() => 0,
            n = frames.recv_many(&mut batch, 256) => n,
        };
        if n == 0 {
            return write.shutdown().await;
        }
        out.clear();
        for captured in batch.drain(..) {
            let next = interfaces.len() as u32;
            let interface = *interfaces.entry(captured.link).or_insert_with(|| {
                pcapng::interface(&mut out, &captured.link_name, snaplen);
                next
            });
            pcapng::packet(&mut out, interface, captured.at, &captured.frame, snaplen);
        }
        write.write_all(&out).await?;
    }
}

/// Sends one request to the admin socket at `path` and returns the
/// connection positioned after the request (for the caller to read).
pub async fn request(path: &Path, request: &serde_json::Value) -> Result<UnixStream, String> {
    let mut stream = UnixStream::connect(path).await.map_err(|e| {
        format!(
            "cannot reach the admin socket {}: {e}; is the node running, and are you its owner (root)?",
            path.display()
        )
    })?;
    let mut line = request.to_string();
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .await
        .map_err(|e| format!("cannot send to {}: {e}", path.display()))?;
    Ok(stream)
}
