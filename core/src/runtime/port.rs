//! The port contract: the one stage contract that meets the runtime (a
//! port runs as a task with a [`PortContext`]), so it lives here; the
//! frame-level contracts (filters, routers, links) are in
//! [`crate::stage`] and know nothing of tokio.
//!
//! A port is a configured stage that owns links: a TAP device owns one, a
//! QUIC server owns one per admitted peer. The runtime builds ports from the
//! config (without opening anything, so `lanparty check` can build them too)
//! and then calls [`Port::run`] with a [`PortContext`]. A
//! running port attaches links to rooms with
//! [`PortContext::attach`], pushes received frames into the
//! returned [`crate::runtime::LinkHandle`], sends out what the room routes to
//! it, and drops the handle (which detaches the link) when the link goes
//! away. It returns when the context's shutdown signal fires, after undoing
//! what it changed on the system.

use std::future::Future;
use std::pin::Pin;

use super::PortContext;
use super::identity::MacIdentity;

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

    /// The same error under the port's config name: the runtime calls this
    /// on every error a port returns, so the first line a user reads names
    /// the key they wrote (`adapter`), whatever a port put there.
    pub fn named(mut self, port: &str) -> PortError {
        self.port = port.to_string();
        self
    }
}

/// A configured port, ready to run.
pub trait Port: Send + 'static {
    /// Runs the port until `ctx`'s shutdown signal fires or it fails.
    fn run(self: Box<Self>, ctx: PortContext) -> BoxFuture<'static, Result<(), PortError>>;

    /// The port's part in the node's one MAC identity (see
    /// [`crate::runtime::identity`]). Default: none.
    fn mac_identity(&mut self) -> MacIdentity<'_> {
        MacIdentity::None
    }
}

/// Implements [`Port`] for a type that has an inherent
/// `async fn run(self, ctx: PortContext) -> Result<(), PortError>`.
///
/// ```text
/// lanparty_core::impl_port!(TapPort);
/// ```
///
/// `impl_port!(TapPort, mac_identity)` also forwards
/// [`Port::mac_identity`] to an inherent method of that name.
#[macro_export]
macro_rules! impl_port {
    ($ty:ty) => {
        $crate::impl_port!(@impl $ty, {});
    };
    ($ty:ty, mac_identity) => {
        $crate::impl_port!(@impl $ty, {
            fn mac_identity(&mut self) -> $crate::runtime::MacIdentity<'_> {
                <$ty>::mac_identity(self)
            }
        });
    };
    (@impl $ty:ty, { $($extra:tt)* }) => {
        impl $crate::runtime::Port for $ty {
            fn run(
                self: Box<Self>,
                ctx: $crate::runtime::PortContext,
            ) -> $crate::runtime::BoxFuture<'static, Result<(), $crate::runtime::PortError>> {
                Box::pin((*self).run(ctx))
            }

            $($extra)*
        }
    };
}
