//! What a client shows: its session in `lanparty status` and its metrics.

use super::*;
use crate::report::{CLIENT_KIND, ClientReport, ClientState, SessionReport};

/// The session as `lanparty status` shows it.
#[derive(Default)]
pub(super) struct SessionState {
    pub(super) live: Option<(Arc<crate::quic_loop::LoopConn>, Welcome, Instant)>,
    pub(super) last_error: Option<String>,
}

pub(super) struct ClientStatus {
    pub(super) relay: String,
    pub(super) room: String,
    pub(super) role: PeerRole,
    pub(super) mac: MacAddr,
    pub(super) counters: Arc<ClientCounters>,
    pub(super) sender: Arc<PeerSender>,
    pub(super) state: Mutex<SessionState>,
}

impl ClientStatus {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn connected(&self, conn: Arc<crate::quic_loop::LoopConn>, welcome: Welcome) {
        self.lock().live = Some((conn, welcome, Instant::now()));
    }

    pub(super) fn disconnected(&self, why: String) {
        let mut state = self.lock();
        state.live = None;
        state.last_error = Some(why);
    }
}

impl StatusSource for ClientStatus {
    fn status(&self) -> serde_json::Value {
        let state = self.lock();
        let sessions = self.counters.sessions.load(Ordering::Relaxed);
        let session = state.live.as_ref().map(|(conn, w, since)| SessionReport {
            peer_id: w.peer_id.0,
            room_id: w.room_id,
            mtu: w.mtu,
            path: conn.path(),
            uptime_s: since.elapsed().as_secs(),
            header_compression: w.header_compression,
        });
        let report = ClientReport {
            kind: CLIENT_KIND.into(),
            relay: self.relay.clone(),
            room: self.room.clone(),
            role: self.role,
            mac: self.mac,
            state: if session.is_some() {
                ClientState::Connected
            } else {
                ClientState::Reconnecting
            },
            session,
            last_error: state.last_error.clone(),
            sessions,
            reconnects: sessions.saturating_sub(1),
            failed_attempts: self.counters.failed_attempts.load(Ordering::Relaxed),
            datapath: self.counters.datapath.snapshot(),
            send: self.sender.send_report(),
        };
        serde_json::to_value(report).unwrap_or_default()
    }

    fn metrics(&self, out: &mut Metrics) {
        let connected = u64::from(self.lock().live.is_some());
        let room = [("room", self.room.as_str())];
        out.gauge(
            "lanparty_client_connected",
            "1 while the session with the relay is up",
            &room,
            connected,
        );
        out.counter(
            "lanparty_client_sessions_total",
            "Sessions established with the relay",
            &room,
            self.counters.sessions.load(Ordering::Relaxed),
        );
        out.counter(
            "lanparty_client_reconnects_total",
            "Sessions after the first",
            &room,
            self.counters
                .sessions
                .load(Ordering::Relaxed)
                .saturating_sub(1),
        );
        out.counter(
            "lanparty_client_failed_attempts_total",
            "Connection attempts that failed or were refused",
            &room,
            self.counters.failed_attempts.load(Ordering::Relaxed),
        );
        datapath_metrics(out, &self.counters.datapath.snapshot(), &room);
    }
}
