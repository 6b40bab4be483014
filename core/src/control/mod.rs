//! The control plane: messages, their validation, and the framing codec.

pub mod codec;
pub mod messages;
pub mod validate;

pub use codec::{
    CodecError, Decoder, MAX_CONTROL_FRAME, read_message, read_message_unvalidated, write_message,
};
pub use messages::*;
pub use validate::{ValidationError, room_key, validate_room_code};

#[cfg(test)]
mod tests;
