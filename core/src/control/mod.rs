//! The control plane: messages, their validation, and the framing codec.

pub mod codec;
pub mod messages;
pub mod validate;

pub use codec::{read_message, write_message, CodecError, MAX_CONTROL_FRAME};
pub use messages::*;
pub use validate::{validate_room_code, ValidationError};

#[cfg(test)]
mod tests;
