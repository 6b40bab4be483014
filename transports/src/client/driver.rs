//! A client's connection to the relay, driven from one loop as the
//! relay's are ([`crate::quic_loop`]): its UDP socket, a `quinn_proto`
//! endpoint with this one connection, the handshake, then the
//! [`ClientSession`] with its control stream and the datagrams to and from
//! the local room — one task, no quinn endpoint or connection tasks in
//! between. The local port's frames reach the connection through the
//! sender ([`PeerSender`]), which wakes the loop to transmit.

use bytes::Bytes;
use quinn_proto::{ConnectionHandle, DatagramEvent, Dir, Endpoint, Event};

use super::*;
use crate::quic_loop::{
    ControlStream, Io, LoopConn, RecvBuffers, Wake, datagram_batches, earliest, exchange,
    sleep_until,
};

/// One connection to the relay with its loop's state.
pub(super) struct Connection {
    io: Io,
    rx: RecvBuffers,
    tx: Vec<u8>,
    endpoint: Endpoint,
    handle: ConnectionHandle,
    pub(super) conn: Arc<LoopConn>,
    wake: Arc<Wake>,
    events: Vec<Event>,
    touched: Vec<ConnectionHandle>,
}

/// Why a handshake did not complete.
pub(super) enum Handshake {
    /// The connection failed with this error.
    Failed(quinn_proto::ConnectionError),
    /// Nothing completed it by the deadline.
    TimedOut,
}

impl Connection {
    /// Starts a handshake with `server_name` at `addr` from `socket`: a
    /// socket the runtime cannot take is retried, a name or configuration
    /// QUIC refuses is final.
    pub(super) fn start(
        socket: std::net::UdpSocket,
        config: quinn::ClientConfig,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<Connection, Attempt> {
        let io = Io::new(socket)
            .map_err(|e| Attempt::Retry(format!("cannot open a UDP socket: {e}")))?;
        let endpoint_config = net::client_endpoint_config();
        let rx = RecvBuffers::new(
            &io,
            endpoint_config.get_max_udp_payload_size().min(64 * 1024) as u16,
        );
        let mut endpoint = Endpoint::new(Arc::new(endpoint_config), None, !io.may_fragment(), None);
        let (handle, conn) = endpoint
            .connect(Instant::now(), config, addr, server_name)
            .map_err(|e| {
                Attempt::Final(format!("cannot connect to {addr} as `{server_name}`: {e}"))
            })?;
        let wake = Arc::new(Wake::default());
        let conn = LoopConn::new(handle, conn, wake.clone());
        Ok(Connection {
            io,
            rx,
            tx: Vec::with_capacity(64 * 1024),
            endpoint,
            handle,
            conn,
            wake,
            events: Vec::new(),
            touched: Vec::new(),
        })
    }

    /// Drives the handshake until it completes, fails, or `deadline`.
    pub(super) async fn handshake(&mut self, deadline: Instant) -> Result<(), Handshake> {
        loop {
            if Instant::now() >= deadline {
                return Err(Handshake::TimedOut);
            }
            self.wait(Some(deadline)).await;
            let now = Instant::now();
            let mut events = self.take_in(now);
            let mut outcome = None;
            for event in events.drain(..) {
                match event {
                    Event::Connected => outcome = outcome.or(Some(Ok(()))),
                    Event::ConnectionLost { reason } => {
                        outcome = Some(Err(Handshake::Failed(reason)));
                    }
                    _ => {}
                }
            }
            self.events = events;
            self.send_out(now).await;
            if let Some(outcome) = outcome {
                return outcome;
            }
        }
    }

    /// Waits for the socket, a touch of the connection, its timer or
    /// `deadline` — at once if the connection was touched meanwhile.
    pub(super) async fn wait(&self, deadline: Option<Instant>) {
        self.wake.set_busy(false);
        if !self.wake.pending() {
            let timer = earliest(self.conn.lock().poll_timeout(), deadline);
            tokio::select! {
                _ = self.io.readable() => {}
                () = self.wake.touched() => {}
                () = sleep_until(timer) => {}
            }
        }
        self.wake.set_busy(true);
    }

    /// What arrived and what is due, into the connection; its events
    /// (hand the vector back through [`Connection::give_back`]).
    pub(super) fn take_in(&mut self, now: Instant) -> Vec<Event> {
        self.wake.set_busy(true);
        self.wake.take(&mut self.touched);
        self.conn.looked_at();
        let Connection {
            io,
            rx,
            tx,
            endpoint,
            handle,
            conn,
            ..
        } = self;
        let received = rx.receive(io, |mut r| {
            let (remote, local, ecn) = (r.remote, r.local, r.ecn);
            for datagram in r.datagrams() {
                tx.clear();
                match endpoint.handle(now, remote, local, ecn, datagram, tx) {
                    Some(DatagramEvent::ConnectionEvent(ch, event)) if ch == *handle => {
                        conn.lock().handle_event(event);
                    }
                    Some(DatagramEvent::NewConnection(attempt)) => endpoint.ignore(attempt),
                    Some(DatagramEvent::Response(t)) => io.respond(&t, tx),
                    _ => {}
                }
            }
        });
        if let Err(e) = received {
            tracing::debug!("client socket receive failed: {e}");
        }
        let mut events = std::mem::take(&mut self.events);
        let mut c = self.conn.lock();
        if c.poll_timeout().is_some_and(|t| t <= now) {
            c.handle_timeout(now);
        }
        exchange(&mut self.endpoint, self.handle, &mut c);
        while let Some(event) = c.poll() {
            events.push(event);
        }
        events
    }

    /// Returns the events vector (its allocation is kept).
    pub(super) fn give_back(&mut self, mut events: Vec<Event>) {
        events.clear();
        self.events = events;
    }

    /// Sends what the connection has to send now.
    pub(super) async fn send_out(&mut self, now: Instant) {
        self.io.transmit(&self.conn, &mut self.tx, now).await;
        let mut c = self.conn.lock();
        exchange(&mut self.endpoint, self.handle, &mut c);
    }

    /// The session is over: the connection closes (as quinn closes one
    /// whose last handle goes) and the close goes out.
    pub(super) async fn finish(mut self) {
        let now = Instant::now();
        self.conn.close_unless_closed(now);
        self.send_out(now).await;
    }

    /// Opens the control stream (the relay allows one).
    pub(super) fn open_control(&self) -> ControlStream {
        let mut control = ControlStream::default();
        control.open(self.conn.lock().streams().open(Dir::Bi));
        control
    }

    /// The datagrams that have arrived, to the room in batches.
    pub(super) fn datagrams(
        &self,
        inbox: &mut Vec<Bytes>,
        data: &mut DataPath,
        sender: &PeerSender,
        link: &LinkHandle,
        counters: &DatapathCounters,
    ) {
        datagram_batches(&self.conn, inbox, |first, rest| {
            data.from_peer_batch(first, rest, sender, link, counters);
        });
    }
}
