//! Validation of control messages, with errors that name the field.

use super::messages::{ControlMessage, Hello, PeerId, PeerRole, Welcome};
use crate::wire::mtu::validate_mtu;

/// The longest room code accepted.
pub const MAX_ROOM_CODE_LEN: usize = 32;
/// The longest human-readable text accepted in a message.
pub const MAX_TEXT_LEN: usize = 512;
/// The longest credential accepted.
pub const MAX_CREDENTIAL_LEN: usize = 256;
/// The largest datagram budget that means anything (a UDP payload).
pub const MAX_DATAGRAM_BUDGET: u32 = 65_527;

/// A field of a control message that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} field `{field}`: {problem}")]
pub struct ValidationError {
    /// The message type.
    pub message: &'static str,
    /// The field that is wrong.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

fn invalid(
    message: &'static str,
    field: &'static str,
    problem: impl Into<String>,
) -> ValidationError {
    ValidationError {
        message,
        field,
        problem: problem.into(),
    }
}

/// The form a relay files a room under: room codes are case-insensitive
/// (`friday` and `FRIDAY` are one room, the one players read out to each
/// other), so the relay upper-cases the code of every hello, every policy
/// file name and every capture request. Status, metrics and logs show this
/// form.
pub fn room_key(code: &str) -> String {
    code.to_ascii_uppercase()
}

/// Checks a room code: 1 to 32 characters of `A–Z a–z 0–9 . _ -`.
pub fn validate_room_code(room: &str) -> Result<(), String> {
    if room.is_empty() {
        return Err("room code is empty".into());
    }
    if room.len() > MAX_ROOM_CODE_LEN {
        return Err(format!(
            "room code is {} bytes long; at most {MAX_ROOM_CODE_LEN} allowed",
            room.len()
        ));
    }
    if let Some(bad) = room
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "room code contains {bad:?}; only letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

fn validate_text(
    message: &'static str,
    field: &'static str,
    text: &str,
) -> Result<(), ValidationError> {
    if text.len() > MAX_TEXT_LEN {
        return Err(invalid(
            message,
            field,
            format!("longer than {MAX_TEXT_LEN} bytes"),
        ));
    }
    Ok(())
}

fn validate_peer_id(message: &'static str, id: PeerId) -> Result<(), ValidationError> {
    if id.0 == 0 {
        return Err(invalid(message, "peer_id", "peer id 0 is reserved"));
    }
    Ok(())
}

impl Hello {
    /// Checks every field. The protocol version is checked separately by the
    /// relay so that a mismatch gets its own reject code.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_room_code(&self.room).map_err(|p| invalid("hello", "room", p))?;
        self.mac
            .validate_adapter_mac()
            .map_err(|e| invalid("hello", "mac", e.to_string()))?;
        if self.datagram_budget == 0 || self.datagram_budget > MAX_DATAGRAM_BUDGET {
            return Err(invalid(
                "hello",
                "datagram_budget",
                format!(
                    "{} is outside 1..={MAX_DATAGRAM_BUDGET}",
                    self.datagram_budget
                ),
            ));
        }
        if let Some(credential) = &self.credential {
            if credential.0.is_empty() || credential.0.len() > MAX_CREDENTIAL_LEN {
                return Err(invalid(
                    "hello",
                    "credential",
                    format!("must be 1..={MAX_CREDENTIAL_LEN} bytes"),
                ));
            }
        }
        Ok(())
    }
}

impl Welcome {
    /// Checks the peer id and MTU.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_peer_id("welcome", self.peer_id)?;
        validate_mtu(u32::from(self.mtu)).map_err(|e| invalid("welcome", "mtu", e.to_string()))?;
        Ok(())
    }
}

impl ControlMessage {
    /// Checks every field of the message.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            ControlMessage::Hello(hello) => hello.validate(),
            ControlMessage::Welcome(welcome) => welcome.validate(),
            ControlMessage::Reject(reject) => validate_text("reject", "message", &reject.message),
            ControlMessage::PeerJoined { peer_id, role, mac } => {
                validate_peer_id("peer_joined", *peer_id)?;
                if *role == PeerRole::Client {
                    mac.validate_adapter_mac()
                        .map_err(|e| invalid("peer_joined", "mac", e.to_string()))?;
                }
                Ok(())
            }
            ControlMessage::PeerLeft { peer_id, reason } => {
                validate_peer_id("peer_left", *peer_id)?;
                validate_text("peer_left", "reason", reason)
            }
            ControlMessage::StatsRequest | ControlMessage::Stats(_) => Ok(()),
            ControlMessage::Disconnect { message, .. } => {
                validate_text("disconnect", "message", message)
            }
        }
    }
}
