//! Length-prefixed JSON framing of control messages: [`Decoder`], the
//! framing rules with no I/O (bytes in, messages out, in whatever chunks
//! the stream delivers), and [`read_message`] / [`write_message`] over any
//! async byte stream, built on it.
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

/// The framing rules with no I/O: push the stream's bytes as they come,
/// take whole messages out. Holds at most one frame (prefix and body); a
/// frame over the limit is refused from its prefix, before its body is
/// buffered.
#[derive(Debug)]
pub struct Decoder {
    max: usize,
    /// Bytes of the frame being read: the prefix, then the body.
    buf: Vec<u8>,
    /// The body's length once the prefix is complete.
    body_len: Option<usize>,
}

impl Decoder {
    /// A decoder refusing frames over `max` bytes of body.
    pub fn new(max: usize) -> Decoder {
        Decoder {
            max,
            buf: Vec::new(),
            body_len: None,
        }
    }

    /// How many bytes the frame being read still needs (a reader that must
    /// not read past a frame asks for exactly this many).
    pub fn needed(&self) -> usize {
        match self.body_len {
            None => LENGTH_PREFIX_LEN - self.buf.len(),
            Some(len) => LENGTH_PREFIX_LEN + len - self.buf.len(),
        }
    }

    /// True between frames: the stream may end here cleanly.
    pub fn is_between_frames(&self) -> bool {
        self.buf.is_empty()
    }

    /// Takes bytes from the front of `bytes` towards the next frame and
    /// returns how many it took with the frame's body once it is whole
    /// (undecoded: see [`decode_body`] / [`decode_body_unvalidated`]). Call
    /// again with the rest while bytes remain.
    pub fn push(&mut self, bytes: &[u8]) -> (usize, Result<Option<Vec<u8>>, CodecError>) {
        let mut took = 0;
        loop {
            let take = self.needed().min(bytes.len() - took);
            self.buf.extend_from_slice(&bytes[took..took + take]);
            took += take;
            match self.body_len {
                None if self.buf.len() == LENGTH_PREFIX_LEN => {
                    let mut prefix = [0u8; LENGTH_PREFIX_LEN];
                    prefix.copy_from_slice(&self.buf);
                    let len = u32::from_be_bytes(prefix) as usize;
                    if len > self.max {
                        self.buf.clear();
                        return (took, Err(CodecError::Oversize { len, max: self.max }));
                    }
                    // The body follows, in this push if the bytes are here.
                    self.body_len = Some(len);
                }
                Some(len) if self.buf.len() == LENGTH_PREFIX_LEN + len => {
                    let body = self.buf.split_off(LENGTH_PREFIX_LEN);
                    self.buf.clear();
                    self.body_len = None;
                    return (took, Ok(Some(body)));
                }
                _ => return (took, Ok(None)),
            }
        }
    }

    /// The stream ended: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), CodecError> {
        match self.body_len {
            _ if self.buf.is_empty() => Ok(()),
            None => Err(CodecError::Truncated {
                got: self.buf.len(),
                expected: LENGTH_PREFIX_LEN,
            }),
            Some(len) => Err(CodecError::Truncated {
                got: self.buf.len() - LENGTH_PREFIX_LEN,
                expected: len,
            }),
        }
    }
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

/// Reads one message without checking field values, never past its
/// frame (the stream may carry other data after it).
pub async fn read_message_unvalidated<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<ControlMessage>, CodecError> {
    let mut decoder = Decoder::new(max);
    let mut chunk = [0u8; 4096];
    loop {
        let want = decoder.needed().min(chunk.len());
        let n = reader.read(&mut chunk[..want]).await?;
        if n == 0 {
            decoder.finish()?;
            return Ok(None);
        }
        let mut at = 0;
        while at < n {
            let (took, body) = decoder.push(&chunk[at..n]);
            at += took;
            if let Some(body) = body? {
                return decode_body_unvalidated(&body).map(Some);
            }
        }
    }
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
