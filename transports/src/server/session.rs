//! One connection's life at the relay: handshake slot, hello, admission
//! (or a reject with a code and a sentence), then the session that moves
//! its frames and control messages until it ends.

use super::*;

pub(super) async fn handle(shared: &Shared, slot: HandshakeSlot, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let failed = |e: quinn::ConnectionError| {
        shared
            .counters
            .handshake_failures
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%remote, "handshake failed: {e}");
    };
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(e) => return failed(e),
    };
    let conn = match tokio::time::timeout(shared.settings.handshake_timeout.0, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return failed(e),
        Err(_) => {
            // Dropping the handshake closes it and frees its state.
            shared
                .counters
                .handshake_timeouts
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%remote, "no complete handshake within {:?}", shared.settings.handshake_timeout.0);
            return;
        }
    };
    drop(slot);
    if shared.live.load(Ordering::Relaxed) >= shared.settings.max_connections {
        shared
            .counters
            .handshake_failures
            .fetch_add(1, Ordering::Relaxed);
        conn.close(
            close::REJECTED.into(),
            b"the relay has too many connections",
        );
        return;
    }
    shared.live.fetch_add(1, Ordering::Relaxed);
    shared.counters.connections.fetch_add(1, Ordering::Relaxed);
    established(shared, conn).await;
    shared.live.fetch_sub(1, Ordering::Relaxed);
}

/// A connection past its handshake: hello, then the session.
pub(super) async fn established(shared: &Shared, conn: quinn::Connection) {
    let Some((send, recv, hello)) = read_hello(shared, &conn).await else {
        return;
    };
    session(shared, conn, send, recv, hello).await;
}

/// Waits for the hello, refusing datagrams that come before the welcome.
pub(super) async fn read_hello(
    shared: &Shared,
    conn: &quinn::Connection,
) -> Option<(quinn::SendStream, quinn::RecvStream, Hello)> {
    let max = shared.settings.max_control_frame;
    let hello = async {
        let (send, mut recv) = conn
            .accept_bi()
            .await
            .map_err(|e| CodecError::Io(std::io::Error::other(e)))?;
        let message = read_message_unvalidated(&mut recv, max).await?;
        Ok::<_, CodecError>((send, recv, message))
    };
    let timeout = shared.settings.hello_timeout.0;
    tokio::select! {
        result = tokio::time::timeout(timeout, hello) => match result {
            Err(_) => {
                shared.protocol_error(conn, "hello-timeout", &format!("no hello within {timeout:?}"));
                None
            }
            Ok(Err(CodecError::Io(e))) => {
                tracing::debug!(remote = %conn.remote_address(), "connection ended before hello: {e}");
                None
            }
            Ok(Err(e)) => {
                shared.protocol_error(conn, e.reason(), &e.to_string());
                None
            }
            Ok(Ok((_, _, None))) => {
                shared.protocol_error(conn, "control-closed", "control stream closed before hello");
                None
            }
            Ok(Ok((send, recv, Some(ControlMessage::Hello(mut hello))))) => {
                // One room per code, whatever the case it was typed in.
                hello.room = room_key(&hello.room);
                Some((send, recv, hello))
            }
            Ok(Ok((_, _, Some(other)))) => {
                shared.protocol_error(conn, "expected-hello", &format!("expected hello, got {}", other.kind()));
                None
            }
        },
        _ = conn.read_datagram() => {
            shared.protocol_error(conn, "datagram-before-welcome", "sent a datagram before its welcome");
            None
        }
    }
}

pub(super) async fn send_reject(
    shared: &Shared,
    conn: &quinn::Connection,
    mut send: quinn::SendStream,
    hello: &Hello,
    reject: Reject,
) {
    shared.counters.rejects.add(reject.code.as_str());
    tracing::info!(remote = %conn.remote_address(), room = %hello.room, role = %hello.role, mac = %hello.mac, code = %reject.code, "rejected: {}", reject.message);
    let code = reject.code;
    if write_message(&mut send, &ControlMessage::Reject(reject))
        .await
        .is_ok()
    {
        let _ = send.finish();
        // Let the reject arrive: the peer closes on reading it.
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    }
    conn.close(close::REJECTED.into(), code.as_str().as_bytes());
}

pub(super) async fn session(
    shared: &Shared,
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    hello: Hello,
) {
    if shared.ctx.shutdown().is_triggered() {
        let reject = Reject {
            code: RejectCode::ShuttingDown,
            message: "the relay is shutting down".into(),
        };
        return send_reject(shared, &conn, send, &hello, reject).await;
    }
    let policy = match shared.authorize(&conn, &hello).await {
        Ok(policy) => policy,
        Err(reject) => return send_reject(shared, &conn, send, &hello, reject).await,
    };
    if hello.role == PeerRole::Client
        && hello.validate().is_ok()
        && let Some(holder) = shared.ctx.rooms().mac_holder(&hello.room, hello.mac)
        && holder != LinkRole::Client
    {
        let reject = Reject {
            code: RejectCode::DuplicateMac,
            message: format!(
                "MAC {} belongs to a host on the room's LAN (behind its gateway); pick another MAC for this player (ports.relay.mac and the adapter's mac)",
                hello.mac
            ),
        };
        return send_reject(shared, &conn, send, &hello, reject).await;
    }
    shared.free_stale_seat(&hello).await;
    let path_budget = conn.max_datagram_size().unwrap_or(0);
    let (events_tx, events_rx) = mpsc::channel(64);
    let admitted = shared.admissions().admit(
        &hello,
        path_budget,
        events_tx.clone(),
        policy.as_ref().map(|p| &p.policy),
    );
    let admitted = match admitted {
        Ok(a) => a,
        Err(reject) => return send_reject(shared, &conn, send, &hello, reject).await,
    };
    let peer = admitted.peer_id;
    let sender = PeerSender::connected(
        shared.counters.datapath.clone(),
        &shared.settings.queue,
        conn.clone(),
        hello.datagram_budget as usize,
    );
    let compression = hello.header_compression && shared.settings.header_compression;
    sender.compress(compression);
    let link = shared.ctx.attach(
        &hello.room,
        LinkSpec {
            name: format!("{}/{peer}", shared.name),
            role: hello.role.link_role(),
            macs: vec![hello.mac],
            mtu: Some(admitted.mtu),
            sink: Some(sender.clone()),
        },
    );
    if admitted.created_room {
        link.set_room_mtu(admitted.mtu);
    }
    let welcome = ControlMessage::Welcome(Welcome {
        peer_id: peer,
        room_id: link.room_id(),
        mtu: admitted.mtu,
        header_compression: compression,
    });
    if let Err(e) = write_message(&mut send, &welcome).await {
        tracing::debug!(%peer, "could not send welcome: {e}");
        shared
            .admissions()
            .leave(&hello.room, peer, "connection lost");
        return;
    }
    shared.counters.admitted.fetch_add(1, Ordering::Relaxed);
    let kick = Arc::new(Notify::new());
    let replace = Arc::new(Notify::new());
    let answered = Arc::new(Notify::new());
    shared.peers().insert(
        peer,
        PeerEntry {
            room: hello.room.clone(),
            role: hello.role,
            mac: hello.mac,
            mtu: admitted.mtu,
            since: Instant::now(),
            conn: conn.clone(),
            sender: sender.clone(),
            kick: kick.clone(),
            replace: replace.clone(),
            answered: answered.clone(),
            events: events_tx.clone(),
        },
    );
    tracing::info!(
        %peer, remote = %conn.remote_address(), room = %hello.room, role = %hello.role, mac = %hello.mac,
        mtu = admitted.mtu, budget = path_budget, others = admitted.others.len(), "peer admitted"
    );
    for (id, role, mac) in &admitted.others {
        let _ = events_tx.try_send(ControlMessage::PeerJoined {
            peer_id: *id,
            role: *role,
            mac: *mac,
        });
    }
    let mut control =
        crate::control_stream::spawn(send, recv, shared.settings.max_control_frame, events_rx);
    let mut link = link;
    let mut data = DataPath::new(
        reassembly_limits(admitted.mtu),
        Some(shared.reassembly.clone()),
        compression,
    );
    let mut shutdown: ShutdownSignal = shared.ctx.shutdown();
    let counters = &shared.counters.datapath;
    let reason: String = loop {
        tokio::select! {
            why = shutdown.wait() => {
                let _ = events_tx.try_send(ControlMessage::Disconnect { reason: DisconnectReason::Shutdown, message: why.chars().take(200).collect() });
                tokio::time::sleep(Duration::from_millis(100)).await;
                conn.close(close::SHUTDOWN.into(), b"relay shutting down");
                break "relay shutting down".into();
            }
            _ = replace.notified() => {
                conn.close(close::NORMAL.into(), b"replaced by a new session of the same player");
                break "replaced: the same player joined again and this session did not answer".into();
            }
            _ = kick.notified() => {
                let _ = events_tx.try_send(ControlMessage::Disconnect { reason: DisconnectReason::PolicyChanged, message: format!("room {} was closed by the relay operator", hello.room) });
                tokio::time::sleep(Duration::from_millis(100)).await;
                conn.close(close::NORMAL.into(), b"room closed");
                break "room closed by its policy".into();
            }
            datagram = conn.read_datagram() => match datagram {
                Ok(datagram) => data.from_peer(datagram, &sender, &link, counters),
                Err(e) => break format!("connection lost: {e}"),
            },
            // Frames from the room go to `sender` directly.
            () = link.closed() => break "room closed".into(),
            message = control.recv() => match message {
                Some(Ok(Some(ControlMessage::StatsRequest))) => {
                    let _ = events_tx.try_send(ControlMessage::Stats(data.peer_stats(&conn, &sender)));
                }
                Some(Ok(Some(ControlMessage::Stats(_)))) => answered.notify_waiters(),
                Some(Ok(Some(ControlMessage::Disconnect { reason, message }))) => {
                    conn.close(close::NORMAL.into(), b"bye");
                    break format!("peer disconnected ({reason:?}): {}", message.chars().take(200).collect::<String>());
                }
                Some(Ok(Some(other))) => {
                    shared.protocol_error(&conn, "unexpected-control-message", &format!("unexpected {} from a peer", other.kind()));
                    break format!("protocol error: unexpected {}", other.kind());
                }
                Some(Ok(None)) | None => {
                    shared.protocol_error(&conn, "control-closed", "closed its control stream");
                    break "control stream closed".into();
                }
                Some(Err(CodecError::Io(e))) => break format!("connection lost: {e}"),
                Some(Err(e)) => {
                    shared.protocol_error(&conn, e.reason(), &e.to_string());
                    break format!("protocol error: {e}");
                }
            },
        }
    };
    shared.admissions().leave(&hello.room, peer, &reason);
    shared.peers().remove(&peer);
    // Frames still queued for this peer are dropped and counted (`flushed`).
    sender.set_connection(None);
    drop(link);
    let stats = data.peer_stats(&conn, &sender);
    tracing::info!(%peer, room = %hello.room, frames_rx = stats.frames_rx, frames_tx = stats.frames_tx, dropped = stats.dropped, "peer left: {reason}");
}
