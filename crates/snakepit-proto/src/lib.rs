//! The wire types and the codec of snakepit, with no process logic: [`ToWorker`] and
//! [`FromWorker`] encode to whole frames and decode from frame bodies; [`FrameBuffer`]
//! reassembles frames from a stream and checks each length before allocating; [`Value`]
//! is the value tree and [`RawValue`] an encoded value kept as bytes until it is read.
//!
//! ```
//! use snakepit_proto::{FromWorker, FrameBuffer, RawValue, Value};
//!
//! let frame = FromWorker::Result { call_id: 7, value: RawValue::encode(&Value::from("ok")) }.encode();
//! let mut buf = FrameBuffer::new(snakepit_proto::DEFAULT_FRAME_LIMIT);
//! buf.read_space().extend_from_slice(&frame);
//! let body = buf.next_frame().unwrap().unwrap();
//! let FromWorker::Result { value, .. } = FromWorker::decode(&body).unwrap() else { panic!() };
//! assert_eq!(value.decode().unwrap(), Value::from("ok"));
//! ```
//!
//! # The protocol
//!
#![doc = include_str!("../PROTOCOL.md")]

mod codec;
mod frame;
mod json;
mod message;
mod value;

use bytes::Bytes;

pub use frame::{body_len, frame, read_frame, FrameBuffer, FrameError, DEFAULT_FRAME_LIMIT};
pub use message::{
    encode_call, kind, level_name, ExceptionKind, FromWorker, HostFailure, LogRecord, PyException,
    ToWorker, WorkerUsage,
};
pub use value::{date_iso, parse_date, DateTime, Value, EXT_DATE, EXT_DATETIME, EXT_DECIMAL};

/// The protocol version this crate speaks; the HANDSHAKE must carry the same.
pub const PROTOCOL_VERSION: u32 = 3;

/// Why a frame body or a value did not decode.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("input ends in the middle of a value")]
    Truncated,
    #[error("{0} bytes left over after the message")]
    Trailing(usize),
    #[error("expected {0}, found marker 0x{1:02x}")]
    Unexpected(&'static str, u8),
    #[error("map key must be a str, found marker 0x{0:02x}")]
    MapKey(u8),
    #[error("integer {0} is outside the signed 64-bit range")]
    IntRange(u64),
    #[error("invalid UTF-8 in a str")]
    Utf8,
    #[error("ext type {0} with {1} bytes is not a wire type")]
    Ext(i8, usize),
    #[error("nesting deeper than {} levels", codec::MAX_DEPTH)]
    TooDeep,
    #[error("unknown message type {0}")]
    UnknownType(i64),
    #[error("message type {0} with {1} fields")]
    Arity(i64, usize),
    #[error("bad {0}: {1}")]
    Field(&'static str, String),
    #[error("{0}")]
    Typed(String),
}

/// One encoded value, kept as the bytes that crossed the wire.
///
/// A RESULT's payload stays a `RawValue` through the supervisor: decode it with
/// [`RawValue::decode`] into a [`Value`], with [`RawValue::deserialize`] into your own
/// serde type, or with [`RawValue::to_json`]; or hand the bytes on untouched.
#[derive(Clone, PartialEq, Eq)]
pub struct RawValue(Bytes);

impl RawValue {
    /// Encodes a value.
    pub fn encode(v: &Value) -> Self {
        RawValue(Bytes::from(v.to_msgpack()))
    }

    /// Wraps bytes that the caller knows to hold exactly one value.
    pub(crate) fn from_bytes_unchecked(b: Bytes) -> Self {
        RawValue(b)
    }

    /// Wraps bytes, checking that they hold exactly one well-formed value.
    pub fn from_bytes(b: Bytes) -> Result<Self, DecodeError> {
        Value::from_msgpack(&b)?;
        Ok(RawValue(b))
    }

    /// The MessagePack bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Decodes into a value tree.
    pub fn decode(&self) -> Result<Value, DecodeError> {
        Value::from_msgpack(&self.0)
    }

    /// Decodes into a serde type (ext types are not supported on this path: read
    /// datetimes, dates and decimals through [`RawValue::decode`]).
    pub fn deserialize<T: serde::de::DeserializeOwned>(&self) -> Result<T, DecodeError> {
        rmp_serde::from_slice(&self.0).map_err(|e| DecodeError::Typed(e.to_string()))
    }

    /// Is this the encoded `None`?
    pub fn is_nil(&self) -> bool {
        self.0[..] == [0xc0]
    }
}

impl std::fmt::Debug for RawValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.decode() {
            Ok(v) => write!(f, "RawValue({v:?})"),
            Err(_) => write!(f, "RawValue({} undecodable bytes)", self.0.len()),
        }
    }
}
