//! The port contract.
//!
//! A port is a configured stage that owns links: a TAP device owns one, a
//! QUIC server owns one per admitted peer. The runtime builds ports from the
//! config (without opening anything, so `lanparty check` can build them too)
//! and then calls [`Port::run`] with a [`crate::runtime::PortContext`]. A
//! running port attaches links to rooms with
//! [`crate::runtime::PortContext::attach`], pushes received frames into the
//! returned [`crate::runtime::LinkHandle`], sends out what the room routes to
//! it, and drops the handle (which detaches the link) when the link goes
//! away. It returns when the context's shutdown signal fires, after undoing
//! what it changed on the system.

use std::future::Future;
use std::pin::Pin;

use crate::runtime::PortContext;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a port stopped.
#[derive(Debug, thiserror::Error)]
#[error("port `{port}`: {message}")]
pub struct PortError {
    /// The port's name.
    pub port: String,
    /// What went wrong and what to do about it.
    pub message: String,
}

impl PortError {
    /// An error for the named port.
    pub fn new(port: impl Into<String>, message: impl Into<String>) -> PortError {
        PortError {
            port: port.into(),
            message: message.into(),
        }
    }
}

/// A configured port, ready to run.
pub trait Port: Send + 'static {
    /// Runs the port until `ctx`'s shutdown signal fires or it fails.
    fn run(self: Box<Self>, ctx: PortContext) -> BoxFuture<'static, Result<(), PortError>>;
}

/// Implements [`Port`] for a type that has an inherent
/// `async fn run(self, ctx: PortContext) -> Result<(), PortError>`.
///
/// ```text
/// lanparty_core::impl_port!(TapPort);
/// ```
#[macro_export]
macro_rules! impl_port {
    ($ty:ty) => {
        impl $crate::stage::Port for $ty {
            fn run(
                self: Box<Self>,
                ctx: $crate::runtime::PortContext,
            ) -> $crate::stage::BoxFuture<'static, Result<(), $crate::stage::PortError>> {
                Box::pin((*self).run(ctx))
            }
        }
    };
}
