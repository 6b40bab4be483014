//! What the data path and the status reports need of a QUIC connection,
//! whichever driver runs it: quinn's tasks (the client) or the relay's one
//! loop over `quinn_proto` ([`crate::server`]).

use std::time::Duration;

use bytes::Bytes;

use crate::congestion::{ControllerShare, DelayController};
use crate::report::PathReport;

/// Why a datagram was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramRefused {
    /// Larger than the path carries.
    TooLarge,
    /// The connection is gone, or the peer takes no datagrams.
    Failed,
}

/// A QUIC connection as the data path uses it: datagrams out, the space
/// and size they may take, and what status reports show.
pub trait QuicConn: Send + Sync + std::fmt::Debug {
    /// Queues a datagram for sending (never waits; the caller checked
    /// [`QuicConn::send_buffer_space`]).
    fn send_datagram(&self, datagram: Bytes) -> Result<(), DatagramRefused>;
    /// Free bytes in the connection's datagram send buffer.
    fn send_buffer_space(&self) -> usize;
    /// The largest datagram the path carries now (`None`: none at all).
    fn max_datagram_size(&self) -> Option<usize>;
    /// The smoothed round-trip time.
    fn rtt(&self) -> Duration;
    /// What the connection's controller shares with the sender, when it
    /// is lanparty's delay controller.
    fn controller_share(&self) -> Option<ControllerShare>;
    /// The path as status shows it.
    fn path(&self) -> PathReport;
}

/// The share of a controller, if it is a [`DelayController`].
pub fn share_of(controller: Box<dyn quinn::congestion::Controller>) -> Option<ControllerShare> {
    controller
        .into_any()
        .downcast::<DelayController>()
        .ok()
        .map(|c| c.share())
}

impl QuicConn for quinn::Connection {
    fn send_datagram(&self, datagram: Bytes) -> Result<(), DatagramRefused> {
        quinn::Connection::send_datagram(self, datagram).map_err(|e| match e {
            quinn::SendDatagramError::TooLarge => DatagramRefused::TooLarge,
            _ => DatagramRefused::Failed,
        })
    }

    fn send_buffer_space(&self) -> usize {
        self.datagram_send_buffer_space()
    }

    fn max_datagram_size(&self) -> Option<usize> {
        quinn::Connection::max_datagram_size(self)
    }

    fn rtt(&self) -> Duration {
        quinn::Connection::rtt(self)
    }

    fn controller_share(&self) -> Option<ControllerShare> {
        share_of(self.congestion_state())
    }

    fn path(&self) -> PathReport {
        PathReport::new(self.remote_address(), self.rtt(), &self.stats().path)
    }
}
