//! The shutdown signal every port and room task listens to.

use tokio::sync::watch;

/// Fires once, for everyone.
#[derive(Debug, Clone)]
pub struct ShutdownTrigger {
    tx: std::sync::Arc<watch::Sender<Option<String>>>,
}

/// Waits for the trigger.
#[derive(Debug, Clone)]
pub struct ShutdownSignal {
    rx: watch::Receiver<Option<String>>,
}

/// A connected trigger and signal.
pub fn shutdown_pair() -> (ShutdownTrigger, ShutdownSignal) {
    let (tx, rx) = watch::channel(None);
    (
        ShutdownTrigger {
            tx: std::sync::Arc::new(tx),
        },
        ShutdownSignal { rx },
    )
}

impl ShutdownTrigger {
    /// Fires the signal with a reason that ports pass on to peers. Later
    /// calls keep the first reason. The first call logs `shutting down`
    /// before anyone is woken, so it comes before every port's last lines.
    pub fn trigger(&self, reason: impl Into<String>) {
        let reason = reason.into();
        self.tx.send_if_modified(|current| {
            if current.is_none() {
                tracing::info!(%reason, "shutting down");
                *current = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// A new signal connected to this trigger.
    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal {
            rx: self.tx.subscribe(),
        }
    }
}

impl ShutdownSignal {
    /// True once the trigger fired.
    pub fn is_triggered(&self) -> bool {
        self.rx.borrow().is_some()
    }

    /// The reason given, once triggered.
    pub fn reason(&self) -> Option<String> {
        self.rx.borrow().clone()
    }

    /// Resolves when the trigger fires (or was dropped), with the reason.
    pub async fn wait(&mut self) -> String {
        match self.rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "node stopped".to_string(),
        }
    }
}
