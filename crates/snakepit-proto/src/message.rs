//! The messages of both directions, and their envelopes.

use bytes::Bytes;

use crate::codec::{Reader, Writer};
use crate::value::Value;
use crate::{DecodeError, RawValue, PROTOCOL_VERSION};

/// Message type codes (the first element of every frame's array).
pub mod kind {
    pub const HANDSHAKE: u8 = 0;
    pub const CALL: u8 = 1;
    pub const CANCEL: u8 = 2;
    pub const SHUTDOWN: u8 = 3;
    pub const HOST_REPLY: u8 = 4;
    pub const VALIDATE: u8 = 5;
    pub const RESULT: u8 = 16;
    pub const EXCEPTION: u8 = 17;
    pub const LOG: u8 = 18;
    pub const HOST_REQUEST: u8 = 19;
    pub const USAGE: u8 = 20;
    pub const SPAWN: u8 = 32;
    pub const SPAWNED: u8 = 33;
    pub const EXITED: u8 = 34;
}

/// A message from the supervisor to a worker.
#[derive(Debug, Clone, PartialEq)]
pub enum ToWorker {
    Call {
        call_id: u64,
        reference: String,
        kwargs: Vec<(String, Value)>,
        context: Vec<(String, Value)>,
        /// The caller wants the call's figures: the worker answers with a USAGE frame
        /// (and takes the CPU readings that costs) only when this is set.
        measure: bool,
    },
    Cancel {
        call_id: u64,
    },
    Shutdown,
    HostReply {
        request_id: u64,
        reply: Result<Value, HostFailure>,
    },
    Validate {
        call_id: u64,
        reference: String,
        kwargs: Vec<(String, Value)>,
        context_keys: Vec<String>,
    },
    /// To a fork-server: fork a worker on the file descriptor sent with this frame.
    Spawn {
        worker_id: u64,
    },
}

/// Why the supervisor could not serve a host request: a type name and a message, raised
/// in the worker as `snakepit_shim.HostError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFailure {
    pub type_name: String,
    pub message: String,
}

/// What kind of failure an EXCEPTION reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceptionKind {
    /// The plugin raised.
    Raised,
    /// The reference does not resolve or the arguments do not fit its signature.
    Reference,
    /// The call was cancelled by a CANCEL.
    Cancelled,
    /// The return value cannot cross the wire.
    Encode,
}

impl ExceptionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExceptionKind::Raised => "raised",
            ExceptionKind::Reference => "reference",
            ExceptionKind::Cancelled => "cancelled",
            ExceptionKind::Encode => "encode",
        }
    }

    fn parse(s: &str) -> Result<Self, DecodeError> {
        Ok(match s {
            "raised" => ExceptionKind::Raised,
            "reference" => ExceptionKind::Reference,
            "cancelled" => ExceptionKind::Cancelled,
            "encode" => ExceptionKind::Encode,
            other => return Err(DecodeError::Field("exception kind", other.to_owned())),
        })
    }
}

/// A Python exception as the worker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyException {
    pub kind: ExceptionKind,
    /// Qualified type name: `billing.errors.PeriodClosed`, `ValueError`.
    pub type_name: String,
    pub message: String,
    /// Formatted traceback, chained causes included.
    pub traceback: String,
}

/// A log record from a worker: a `logging` record or a line printed to stdout/stderr.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    pub call_id: Option<u64>,
    /// Python's levels: 10 DEBUG, 20 INFO, 30 WARNING, 40 ERROR, 50 CRITICAL.
    pub level: i64,
    pub logger: String,
    pub message: String,
    pub exc_text: Option<String>,
    /// Unix seconds.
    pub time: f64,
}

/// The name of a Python log level: the standard level at or below it. A level between
/// two (15) takes the lower name (DEBUG), as Python's filters treat it: it passes a DEBUG
/// threshold, not an INFO one, so a line shown as INFO always passed the shim's INFO.
pub fn level_name(level: i64) -> &'static str {
    match level {
        50.. => "CRITICAL",
        40.. => "ERROR",
        30.. => "WARNING",
        20.. => "INFO",
        _ => "DEBUG",
    }
}

/// What a call cost its worker, as the worker measured it (USAGE): the CPU time of the
/// worker process (every thread) since the end of its previous call, in seconds, and its
/// resident high-water mark.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WorkerUsage {
    pub cpu_user: f64,
    pub cpu_sys: f64,
    /// `ru_maxrss`: the worker's peak resident size so far, in KiB.
    pub max_rss_kib: u64,
}

/// A message from a worker (or a fork-server) to the supervisor.
#[derive(Debug, Clone, PartialEq)]
pub enum FromWorker {
    Handshake {
        version: u32,
        pid: u32,
        python: String,
        codec: String,
    },
    /// The call's return value, kept encoded.
    Result {
        call_id: u64,
        value: RawValue,
    },
    Exception {
        call_id: u64,
        exception: PyException,
    },
    Log(LogRecord),
    /// What call `call_id` cost; sent just before its RESULT or EXCEPTION.
    Usage {
        call_id: u64,
        usage: WorkerUsage,
    },
    HostRequest {
        request_id: u64,
        call_id: Option<u64>,
        method: String,
        payload: RawValue,
    },
    /// From a fork-server: the worker `worker_id` runs as `pid`.
    Spawned {
        worker_id: u64,
        pid: u32,
    },
    /// From a fork-server: `pid` exited with the raw wait status `status`.
    Exited {
        pid: u32,
        status: i32,
    },
}

fn pairs(w: &mut Writer, map: &[(String, Value)]) {
    w.map_len(map.len());
    for (k, v) in map {
        w.str(k);
        w.value(v);
    }
}

/// Encodes a CALL frame from borrowed parts: what `ToWorker::Call { .. }.encode()` gives,
/// for a caller that keeps its kwargs and context (to make the same call again).
pub fn encode_call(
    call_id: u64,
    reference: &str,
    kwargs: &[(String, Value)],
    context: &[(String, Value)],
    measure: bool,
) -> Vec<u8> {
    let mut w = Writer::frame();
    w.array_len(6);
    w.int(kind::CALL as i64);
    w.int(call_id as i64);
    w.str(reference);
    pairs(&mut w, kwargs);
    pairs(&mut w, context);
    w.bool(measure);
    w.finish_frame()
}

impl ToWorker {
    /// Encodes the message as a whole frame (length header included).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::frame();
        match self {
            ToWorker::Call {
                call_id,
                reference,
                kwargs,
                context,
                measure,
            } => return encode_call(*call_id, reference, kwargs, context, *measure),
            ToWorker::Cancel { call_id } => {
                w.array_len(2);
                w.int(kind::CANCEL as i64);
                w.int(*call_id as i64);
            }
            ToWorker::Shutdown => {
                w.array_len(1);
                w.int(kind::SHUTDOWN as i64);
            }
            ToWorker::HostReply { request_id, reply } => {
                w.array_len(4);
                w.int(kind::HOST_REPLY as i64);
                w.int(*request_id as i64);
                match reply {
                    Ok(v) => {
                        w.bool(true);
                        w.value(v);
                    }
                    Err(f) => {
                        w.bool(false);
                        w.array_len(2);
                        w.str(&f.type_name);
                        w.str(&f.message);
                    }
                }
            }
            ToWorker::Validate {
                call_id,
                reference,
                kwargs,
                context_keys,
            } => {
                w.array_len(5);
                w.int(kind::VALIDATE as i64);
                w.int(*call_id as i64);
                w.str(reference);
                pairs(&mut w, kwargs);
                w.array_len(context_keys.len());
                context_keys.iter().for_each(|k| w.str(k));
            }
            ToWorker::Spawn { worker_id } => {
                w.array_len(2);
                w.int(kind::SPAWN as i64);
                w.int(*worker_id as i64);
            }
        }
        w.finish_frame()
    }

    /// Decodes a frame body (without the length header).
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let n = r.array_len()?;
        let ty = r.int()?;
        let want = |expected: usize| {
            if n == expected {
                Ok(())
            } else {
                Err(DecodeError::Arity(ty, n))
            }
        };
        let map = |r: &mut Reader| match r.value(1)? {
            Value::Map(m) => Ok(m),
            other => Err(DecodeError::Field("map", other.type_name().to_owned())),
        };
        let msg = match u8::try_from(ty).unwrap_or(u8::MAX) {
            kind::CALL => {
                want(6)?;
                ToWorker::Call {
                    call_id: id(&mut r)?,
                    reference: r.str()?.to_owned(),
                    kwargs: map(&mut r)?,
                    context: map(&mut r)?,
                    measure: r.bool()?,
                }
            }
            kind::CANCEL => {
                want(2)?;
                ToWorker::Cancel {
                    call_id: id(&mut r)?,
                }
            }
            kind::SHUTDOWN => {
                want(1)?;
                ToWorker::Shutdown
            }
            kind::HOST_REPLY => {
                want(4)?;
                let request_id = id(&mut r)?;
                let reply = if r.bool()? {
                    Ok(r.value(0)?)
                } else {
                    if r.array_len()? != 2 {
                        return Err(DecodeError::Field("host failure", "not a pair".into()));
                    }
                    Err(HostFailure {
                        type_name: r.str()?.to_owned(),
                        message: r.str()?.to_owned(),
                    })
                };
                ToWorker::HostReply { request_id, reply }
            }
            kind::VALIDATE => {
                want(5)?;
                let call_id = id(&mut r)?;
                let reference = r.str()?.to_owned();
                let kwargs = map(&mut r)?;
                let keys = (0..r.array_len()?)
                    .map(|_| r.str().map(str::to_owned))
                    .collect::<Result<_, _>>()?;
                ToWorker::Validate {
                    call_id,
                    reference,
                    kwargs,
                    context_keys: keys,
                }
            }
            kind::SPAWN => {
                want(2)?;
                ToWorker::Spawn {
                    worker_id: id(&mut r)?,
                }
            }
            _ => return Err(DecodeError::UnknownType(ty)),
        };
        r.finish()?;
        Ok(msg)
    }
}

fn id(r: &mut Reader) -> Result<u64, DecodeError> {
    let v = r.int()?;
    u64::try_from(v).map_err(|_| DecodeError::Field("id", v.to_string()))
}

fn opt_id(r: &mut Reader) -> Result<Option<u64>, DecodeError> {
    match r.opt_int()? {
        None => Ok(None),
        Some(v) => u64::try_from(v)
            .map(Some)
            .map_err(|_| DecodeError::Field("id", v.to_string())),
    }
}

fn small(r: &mut Reader, what: &'static str) -> Result<u32, DecodeError> {
    let v = r.int()?;
    u32::try_from(v).map_err(|_| DecodeError::Field(what, v.to_string()))
}

impl FromWorker {
    /// Decodes a frame body (without the length header). A RESULT's value and a
    /// HOST_REQUEST's payload are sliced out of `body` without decoding them.
    pub fn decode(body: &Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let n = r.array_len()?;
        let ty = r.int()?;
        let want = |expected: usize| {
            if n == expected {
                Ok(())
            } else {
                Err(DecodeError::Arity(ty, n))
            }
        };
        let msg = match u8::try_from(ty).unwrap_or(u8::MAX) {
            kind::HANDSHAKE => {
                want(5)?;
                FromWorker::Handshake {
                    version: small(&mut r, "version")?,
                    pid: small(&mut r, "pid")?,
                    python: r.str()?.to_owned(),
                    codec: r.str()?.to_owned(),
                }
            }
            kind::RESULT => {
                want(3)?;
                let call_id = id(&mut r)?;
                // The value is the rest of the body, taken without walking it (a 10k-row
                // result would cost ≈ 0.7 ms to walk); it is checked when decoded.
                let start = r.pos();
                if start == body.len() {
                    return Err(DecodeError::Truncated);
                }
                return Ok(FromWorker::Result {
                    call_id,
                    value: RawValue::from_bytes_unchecked(body.slice(start..)),
                });
            }
            kind::EXCEPTION => {
                want(6)?;
                let call_id = id(&mut r)?;
                let kind = ExceptionKind::parse(r.str()?)?;
                FromWorker::Exception {
                    call_id,
                    exception: PyException {
                        kind,
                        type_name: r.str()?.to_owned(),
                        message: r.str()?.to_owned(),
                        traceback: r.str()?.to_owned(),
                    },
                }
            }
            kind::LOG => {
                want(7)?;
                FromWorker::Log(LogRecord {
                    call_id: opt_id(&mut r)?,
                    level: r.int()?,
                    logger: r.str()?.to_owned(),
                    message: r.str()?.to_owned(),
                    exc_text: r.opt_str()?.map(str::to_owned),
                    time: r.float()?,
                })
            }
            kind::USAGE => {
                want(5)?;
                let call_id = id(&mut r)?;
                let (cpu_user, cpu_sys) = (r.float()?, r.float()?);
                let rss = r.int()?;
                FromWorker::Usage {
                    call_id,
                    usage: WorkerUsage {
                        cpu_user,
                        cpu_sys,
                        max_rss_kib: u64::try_from(rss)
                            .map_err(|_| DecodeError::Field("max_rss_kib", rss.to_string()))?,
                    },
                }
            }
            kind::HOST_REQUEST => {
                want(5)?;
                let request_id = id(&mut r)?;
                let call_id = opt_id(&mut r)?;
                let method = r.str()?.to_owned();
                let start = r.pos();
                r.raw_value()?;
                FromWorker::HostRequest {
                    request_id,
                    call_id,
                    method,
                    payload: RawValue::from_bytes_unchecked(body.slice(start..r.pos())),
                }
            }
            kind::SPAWNED => {
                want(3)?;
                FromWorker::Spawned {
                    worker_id: id(&mut r)?,
                    pid: small(&mut r, "pid")?,
                }
            }
            kind::EXITED => {
                want(3)?;
                let pid = small(&mut r, "pid")?;
                let status = r.int()?;
                FromWorker::Exited {
                    pid,
                    status: i32::try_from(status)
                        .map_err(|_| DecodeError::Field("status", status.to_string()))?,
                }
            }
            _ => return Err(DecodeError::UnknownType(ty)),
        };
        r.finish()?;
        Ok(msg)
    }

    /// Encodes the message as a whole frame (length header included).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::frame();
        match self {
            FromWorker::Handshake {
                version,
                pid,
                python,
                codec,
            } => {
                w.array_len(5);
                w.int(kind::HANDSHAKE as i64);
                w.int(*version as i64);
                w.int(*pid as i64);
                w.str(python);
                w.str(codec);
            }
            FromWorker::Result { call_id, value } => {
                w.array_len(3);
                w.int(kind::RESULT as i64);
                w.int(*call_id as i64);
                w.raw(value.as_bytes());
            }
            FromWorker::Exception { call_id, exception } => {
                w.array_len(6);
                w.int(kind::EXCEPTION as i64);
                w.int(*call_id as i64);
                w.str(exception.kind.as_str());
                w.str(&exception.type_name);
                w.str(&exception.message);
                w.str(&exception.traceback);
            }
            FromWorker::Log(rec) => {
                w.array_len(7);
                w.int(kind::LOG as i64);
                match rec.call_id {
                    Some(id) => w.int(id as i64),
                    None => w.nil(),
                }
                w.int(rec.level);
                w.str(&rec.logger);
                w.str(&rec.message);
                match &rec.exc_text {
                    Some(t) => w.str(t),
                    None => w.nil(),
                }
                w.float(rec.time);
            }
            FromWorker::Usage { call_id, usage } => {
                w.array_len(5);
                w.int(kind::USAGE as i64);
                w.int(*call_id as i64);
                w.float(usage.cpu_user);
                w.float(usage.cpu_sys);
                w.int(usage.max_rss_kib as i64);
            }
            FromWorker::HostRequest {
                request_id,
                call_id,
                method,
                payload,
            } => {
                w.array_len(5);
                w.int(kind::HOST_REQUEST as i64);
                w.int(*request_id as i64);
                match call_id {
                    Some(id) => w.int(*id as i64),
                    None => w.nil(),
                }
                w.str(method);
                w.raw(payload.as_bytes());
            }
            FromWorker::Spawned { worker_id, pid } => {
                w.array_len(3);
                w.int(kind::SPAWNED as i64);
                w.int(*worker_id as i64);
                w.int(*pid as i64);
            }
            FromWorker::Exited { pid, status } => {
                w.array_len(3);
                w.int(kind::EXITED as i64);
                w.int(*pid as i64);
                w.int(*status as i64);
            }
        }
        w.finish_frame()
    }

    /// The handshake this version of the protocol expects, for tests and fake workers.
    pub fn handshake(pid: u32, python: &str, codec: &str) -> Self {
        FromWorker::Handshake {
            version: PROTOCOL_VERSION,
            pid,
            python: python.to_owned(),
            codec: codec.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::level_name;

    /// `snakepit run` once named 11–19 INFO and `snakepit call` DEBUG.
    #[test]
    fn a_level_between_two_takes_the_lower_name() {
        let names: Vec<_> = [5, 10, 11, 15, 19, 20, 25, 30, 40, 50, 60]
            .into_iter()
            .map(level_name)
            .collect();
        assert_eq!(
            names,
            [
                "DEBUG", "DEBUG", "DEBUG", "DEBUG", "DEBUG", "INFO", "INFO", "WARNING", "ERROR",
                "CRITICAL", "CRITICAL"
            ]
        );
    }
}
