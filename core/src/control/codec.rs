//! Length-prefixed JSON framing of control messages over any async byte
//! stream.
//!
//! ```text
//! +----------------------+---------------------------+
//! | length (u32, BE)     | JSON object, `length` bytes|
//! +----------------------+---------------------------+
//! ```
//!
//! A frame longer than the reader's limit is refused before a byte of it is
//! read or buffered. Every error is one the caller can report and close the
//! connection on; none panics.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::messages::ControlMessage;
use super::validate::ValidationError;

/// The default hard limit on one control frame's JSON body.
pub const MAX_CONTROL_FRAME: usize = 16 * 1024;
/// Bytes of length prefix.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// Why a control frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The stream ended inside a frame.
    #[error("control stream ended inside a frame ({got} of {expected} bytes)")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes the frame needed.
        expected: usize,
    },
    /// The length prefix exceeds the limit.
    #[error("control frame of {len} bytes exceeds the {max}-byte limit")]
    Oversize {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A zero-length frame.
    #[error("empty control frame")]
    Empty,
    /// The body is not UTF-8.
    #[error("control frame is not valid UTF-8: {0}")]
    InvalidUtf8(std::str::Utf8Error),
    /// The body is not a control message.
    #[error("control frame is not a valid message: {0}")]
    InvalidJson(serde_json::Error),
    /// The message parsed but a field is unacceptable.
    #[error("invalid control message: {0}")]
    Invalid(#[from] ValidationError),
    /// The underlying stream failed.
    #[error("control stream I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl CodecError {
    /// A short, stable name for counters.
    pub fn reason(&self) -> &'static str {
        match self {
            CodecError::Truncated { .. } => "control-truncated",
            CodecError::Oversize { .. } => "control-oversize",
            CodecError::Empty => "control-empty",
            CodecError::InvalidUtf8(_) => "control-invalid-utf8",
            CodecError::InvalidJson(_) => "control-invalid-json",
            CodecError::Invalid(_) => "control-invalid-field",
            CodecError::Io(_) => "control-io",
        }
    }
}

/// Encodes one message as a frame (prefix and body).
pub fn encode(message: &ControlMessage) -> Vec<u8> {
    // Serializing these plain data types to a Vec cannot fail.
    let body = serde_json::to_vec(message).unwrap_or_default();
    let mut frame = Vec::with_capacity(LENGTH_PREFIX_LEN + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Decodes and validates one frame's body.
pub fn decode_body(body: &[u8]) -> Result<ControlMessage, CodecError> {
    let message = decode_body_unvalidated(body)?;
    message.validate()?;
    Ok(message)
}

/// Decodes one frame's body without checking field values (the relay
/// validates a hello itself, to answer with a precise reject code).
pub fn decode_body_unvalidated(body: &[u8]) -> Result<ControlMessage, CodecError> {
    if body.is_empty() {
        return Err(CodecError::Empty);
    }
    let text = std::str::from_utf8(body).map_err(CodecError::InvalidUtf8)?;
    serde_json::from_str(text).map_err(CodecError::InvalidJson)
}

/// Reads one message and validates it. Returns `Ok(None)` when the stream
/// ends cleanly between frames.
pub async fn read_message<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<ControlMessage>, CodecError> {
    match read_message_unvalidated(reader, max).await? {
        Some(message) => {
            message.validate()?;
            Ok(Some(message))
        }
        None => Ok(None),
    }
}

/// Reads one message without checking field values.
pub async fn read_message_unvalidated<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<ControlMessage>, CodecError> {
    let mut prefix = [0u8; LENGTH_PREFIX_LEN];
    let got = read_full(reader, &mut prefix).await?;
    if got == 0 {
        return Ok(None);
    }
    if got < LENGTH_PREFIX_LEN {
        return Err(CodecError::Truncated {
            got,
            expected: LENGTH_PREFIX_LEN,
        });
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(CodecError::Oversize { len, max });
    }
    let mut body = vec![0u8; len];
    let got = read_full(reader, &mut body).await?;
    if got < len {
        return Err(CodecError::Truncated { got, expected: len });
    }
    decode_body_unvalidated(&body).map(Some)
}

/// Writes one message and flushes.
pub async fn write_message<W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &ControlMessage,
) -> Result<(), CodecError> {
    writer.write_all(&encode(message)).await?;
    writer.flush().await?;
    Ok(())
}

/// Reads until `buf` is full or the stream ends; returns bytes read.
async fn read_full<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = reader.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}
