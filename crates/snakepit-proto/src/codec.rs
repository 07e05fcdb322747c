//! The MessagePack reader and writer behind [`Value`] and the message envelopes.
//!
//! Hand-written rather than generic: the reader works on a borrowed slice with an
//! offset (no copies until a value is built), can skip a value without building it
//! (to find where a RESULT's payload ends), and rejects what the protocol forbids
//! (float 32, non-str map keys, unknown ext types, uint64 above `i64::MAX`).

use crate::value::{DateTime, Value, EXT_DATE, EXT_DATETIME, EXT_DECIMAL};
use crate::DecodeError;

/// Deepest nesting the reader accepts; deeper input is hostile, not data.
pub const MAX_DEPTH: usize = 256;

pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }

    /// A writer whose buffer starts with a 4-byte placeholder for the frame length.
    pub(crate) fn frame() -> Self {
        let mut w = Writer::with_capacity(128);
        w.buf.extend_from_slice(&[0; 4]);
        w
    }

    pub(crate) fn into_inner(self) -> Vec<u8> {
        self.buf
    }

    /// Patches the frame length in and returns the frame.
    pub(crate) fn finish_frame(mut self) -> Vec<u8> {
        let n = (self.buf.len() - 4) as u32;
        self.buf[..4].copy_from_slice(&n.to_be_bytes());
        self.buf
    }

    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    pub(crate) fn nil(&mut self) {
        self.buf.push(0xc0);
    }

    pub(crate) fn bool(&mut self, b: bool) {
        self.buf.push(if b { 0xc3 } else { 0xc2 });
    }

    pub(crate) fn int(&mut self, v: i64) {
        let b = &mut self.buf;
        match v {
            0..=127 => b.push(v as u8),
            -32..=-1 => b.push(v as u8),
            128..=255 => b.extend_from_slice(&[0xcc, v as u8]),
            256..=65535 => {
                b.push(0xcd);
                b.extend_from_slice(&(v as u16).to_be_bytes())
            }
            65536..=0xffff_ffff => {
                b.push(0xce);
                b.extend_from_slice(&(v as u32).to_be_bytes())
            }
            0x1_0000_0000.. => {
                b.push(0xcf);
                b.extend_from_slice(&(v as u64).to_be_bytes())
            }
            -128..=-33 => b.extend_from_slice(&[0xd0, v as u8]),
            -32768..=-129 => {
                b.push(0xd1);
                b.extend_from_slice(&(v as i16).to_be_bytes())
            }
            -2_147_483_648..=-32769 => {
                b.push(0xd2);
                b.extend_from_slice(&(v as i32).to_be_bytes())
            }
            _ => {
                b.push(0xd3);
                b.extend_from_slice(&v.to_be_bytes())
            }
        }
    }

    pub(crate) fn float(&mut self, f: f64) {
        self.buf.push(0xcb);
        self.buf.extend_from_slice(&f.to_be_bytes());
    }

    fn len_header(&mut self, len: usize, fix: Option<(u8, usize)>, markers: [u8; 3]) {
        let b = &mut self.buf;
        match (fix, len) {
            (Some((base, max)), n) if n <= max => b.push(base | n as u8),
            (_, n) if n <= 0xff && markers[0] != 0 => b.extend_from_slice(&[markers[0], n as u8]),
            (_, n) if n <= 0xffff => {
                b.push(markers[1]);
                b.extend_from_slice(&(n as u16).to_be_bytes())
            }
            (_, n) => {
                b.push(markers[2]);
                b.extend_from_slice(&(n as u32).to_be_bytes())
            }
        }
    }

    pub(crate) fn str(&mut self, s: &str) {
        self.len_header(s.len(), Some((0xa0, 31)), [0xd9, 0xda, 0xdb]);
        self.buf.extend_from_slice(s.as_bytes());
    }

    pub(crate) fn bin(&mut self, bytes: &[u8]) {
        self.len_header(bytes.len(), None, [0xc4, 0xc5, 0xc6]);
        self.buf.extend_from_slice(bytes);
    }

    pub(crate) fn array_len(&mut self, n: usize) {
        self.len_header(n, Some((0x90, 15)), [0, 0xdc, 0xdd]);
    }

    pub(crate) fn map_len(&mut self, n: usize) {
        self.len_header(n, Some((0x80, 15)), [0, 0xde, 0xdf]);
    }

    fn ext(&mut self, ty: i8, data: &[u8]) {
        let b = &mut self.buf;
        match data.len() {
            1 => b.push(0xd4),
            2 => b.push(0xd5),
            4 => b.push(0xd6),
            8 => b.push(0xd7),
            16 => b.push(0xd8),
            n if n <= 0xff => b.extend_from_slice(&[0xc7, n as u8]),
            n if n <= 0xffff => {
                b.push(0xc8);
                b.extend_from_slice(&(n as u16).to_be_bytes())
            }
            n => {
                b.push(0xc9);
                b.extend_from_slice(&(n as u32).to_be_bytes())
            }
        }
        b.push(ty as u8);
        b.extend_from_slice(data);
    }

    pub(crate) fn value(&mut self, v: &Value) {
        match v {
            Value::Nil => self.nil(),
            Value::Bool(b) => self.bool(*b),
            Value::Int(i) => self.int(*i),
            Value::Float(f) => self.float(*f),
            Value::Str(s) => self.str(s),
            Value::Bytes(b) => self.bin(b),
            Value::List(items) => {
                self.array_len(items.len());
                items.iter().for_each(|i| self.value(i));
            }
            Value::Map(pairs) => {
                self.map_len(pairs.len());
                for (k, v) in pairs {
                    self.str(k);
                    self.value(v);
                }
            }
            Value::DateTime(dt) => {
                let mut data = dt.micros.to_be_bytes().to_vec();
                if let Some(off) = dt.offset {
                    data.extend_from_slice(&off.to_be_bytes());
                }
                self.ext(EXT_DATETIME, &data);
            }
            Value::Date(days) => self.ext(EXT_DATE, &days.to_be_bytes()),
            Value::Decimal(s) => self.ext(EXT_DECIMAL, s.as_bytes()),
        }
    }
}

/// A cursor over a borrowed MessagePack buffer.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.buf.len() - self.pos))
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or(DecodeError::Truncated)?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn be<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("take returned N bytes"))
    }

    fn peek(&self) -> Result<u8, DecodeError> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or(DecodeError::Truncated)
    }

    pub(crate) fn array_len(&mut self) -> Result<usize, DecodeError> {
        match self.byte()? {
            m @ 0x90..=0x9f => Ok((m & 0x0f) as usize),
            0xdc => Ok(u16::from_be_bytes(self.be()?) as usize),
            0xdd => Ok(u32::from_be_bytes(self.be()?) as usize),
            m => Err(DecodeError::Unexpected("array", m)),
        }
    }

    pub(crate) fn int(&mut self) -> Result<i64, DecodeError> {
        let m = self.byte()?;
        self.int_after(m)
    }

    fn int_after(&mut self, m: u8) -> Result<i64, DecodeError> {
        Ok(match m {
            0x00..=0x7f => m as i64,
            0xe0..=0xff => m as i8 as i64,
            0xcc => self.byte()? as i64,
            0xcd => u16::from_be_bytes(self.be()?) as i64,
            0xce => u32::from_be_bytes(self.be()?) as i64,
            0xcf => {
                let u = u64::from_be_bytes(self.be()?);
                i64::try_from(u).map_err(|_| DecodeError::IntRange(u))?
            }
            0xd0 => self.byte()? as i8 as i64,
            0xd1 => i16::from_be_bytes(self.be()?) as i64,
            0xd2 => i32::from_be_bytes(self.be()?) as i64,
            0xd3 => i64::from_be_bytes(self.be()?),
            m => return Err(DecodeError::Unexpected("int", m)),
        })
    }

    pub(crate) fn opt_int(&mut self) -> Result<Option<i64>, DecodeError> {
        if self.peek()? == 0xc0 {
            self.pos += 1;
            return Ok(None);
        }
        self.int().map(Some)
    }

    pub(crate) fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.byte()? {
            0xc2 => Ok(false),
            0xc3 => Ok(true),
            m => Err(DecodeError::Unexpected("bool", m)),
        }
    }

    pub(crate) fn float(&mut self) -> Result<f64, DecodeError> {
        match self.byte()? {
            0xcb => Ok(f64::from_be_bytes(self.be()?)),
            m => Err(DecodeError::Unexpected("float 64", m)),
        }
    }

    fn str_len_after(&mut self, m: u8) -> Result<Option<usize>, DecodeError> {
        Ok(Some(match m {
            0xa0..=0xbf => (m & 0x1f) as usize,
            0xd9 => self.byte()? as usize,
            0xda => u16::from_be_bytes(self.be()?) as usize,
            0xdb => u32::from_be_bytes(self.be()?) as usize,
            _ => return Ok(None),
        }))
    }

    pub(crate) fn str(&mut self) -> Result<&'a str, DecodeError> {
        let m = self.byte()?;
        let n = self
            .str_len_after(m)?
            .ok_or(DecodeError::Unexpected("str", m))?;
        std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError::Utf8)
    }

    pub(crate) fn opt_str(&mut self) -> Result<Option<&'a str>, DecodeError> {
        if self.peek()? == 0xc0 {
            self.pos += 1;
            return Ok(None);
        }
        self.str().map(Some)
    }

    /// Skips one value and returns the bytes it spans.
    pub(crate) fn raw_value(&mut self) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        self.skip(0)?;
        Ok(&self.buf[start..self.pos])
    }

    fn skip(&mut self, depth: usize) -> Result<(), DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        let m = self.byte()?;
        let (items, bytes) = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (2 * (m & 0x0f) as usize, 0),
            0x90..=0x9f => ((m & 0x0f) as usize, 0),
            0xa0..=0xbf => (0, (m & 0x1f) as usize),
            0xcc | 0xd0 => (0, 1),
            0xcd | 0xd1 => (0, 2),
            0xce | 0xd2 => (0, 4),
            0xcf | 0xd3 | 0xcb => (0, 8),
            0xc4 | 0xd9 => (0, self.byte()? as usize),
            0xc5 | 0xda => (0, u16::from_be_bytes(self.be()?) as usize),
            0xc6 | 0xdb => (0, u32::from_be_bytes(self.be()?) as usize),
            0xdc => (u16::from_be_bytes(self.be()?) as usize, 0),
            0xdd => (u32::from_be_bytes(self.be()?) as usize, 0),
            0xde => (2 * u16::from_be_bytes(self.be()?) as usize, 0),
            0xdf => (2 * u32::from_be_bytes(self.be()?) as usize, 0),
            0xd4 => (0, 2),
            0xd5 => (0, 3),
            0xd6 => (0, 5),
            0xd7 => (0, 9),
            0xd8 => (0, 17),
            0xc7 => (0, self.byte()? as usize + 1),
            0xc8 => (0, u16::from_be_bytes(self.be()?) as usize + 1),
            0xc9 => (0, u32::from_be_bytes(self.be()?) as usize + 1),
            m => return Err(DecodeError::Unexpected("value", m)),
        };
        self.take(bytes)?;
        for _ in 0..items {
            self.skip(depth + 1)?;
        }
        Ok(())
    }

    pub(crate) fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        let m = self.byte()?;
        if let Some(n) = self.str_len_after(m)? {
            let s = std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError::Utf8)?;
            return Ok(Value::Str(s.to_owned()));
        }
        Ok(match m {
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xcb => Value::Float(f64::from_be_bytes(self.be()?)),
            0x80..=0x8f | 0xde | 0xdf => {
                let n = match m {
                    0xde => u16::from_be_bytes(self.be()?) as usize,
                    0xdf => u32::from_be_bytes(self.be()?) as usize,
                    _ => (m & 0x0f) as usize,
                };
                // Every entry takes at least 2 bytes: bound the allocation by the input.
                let mut pairs = Vec::with_capacity(n.min(self.buf.len() - self.pos));
                for _ in 0..n {
                    let key = self.str().map_err(|e| match e {
                        DecodeError::Unexpected(_, m) => DecodeError::MapKey(m),
                        e => e,
                    })?;
                    pairs.push((key.to_owned(), self.value(depth + 1)?));
                }
                Value::Map(pairs)
            }
            0x90..=0x9f | 0xdc | 0xdd => {
                let n = match m {
                    0xdc => u16::from_be_bytes(self.be()?) as usize,
                    0xdd => u32::from_be_bytes(self.be()?) as usize,
                    _ => (m & 0x0f) as usize,
                };
                let mut items = Vec::with_capacity(n.min(self.buf.len() - self.pos));
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Value::List(items)
            }
            0xc4..=0xc6 => {
                let n = match m {
                    0xc4 => self.byte()? as usize,
                    0xc5 => u16::from_be_bytes(self.be()?) as usize,
                    _ => u32::from_be_bytes(self.be()?) as usize,
                };
                Value::Bytes(self.take(n)?.to_vec())
            }
            0xd4..=0xd8 | 0xc7..=0xc9 => {
                let n = match m {
                    0xd4 => 1,
                    0xd5 => 2,
                    0xd6 => 4,
                    0xd7 => 8,
                    0xd8 => 16,
                    0xc7 => self.byte()? as usize,
                    0xc8 => u16::from_be_bytes(self.be()?) as usize,
                    _ => u32::from_be_bytes(self.be()?) as usize,
                };
                let ty = self.byte()? as i8;
                ext_value(ty, self.take(n)?)?
            }
            m => Value::Int(self.int_after(m)?),
        })
    }
}

fn ext_value(ty: i8, data: &[u8]) -> Result<Value, DecodeError> {
    let bad = || DecodeError::Ext(ty, data.len());
    Ok(match (ty, data.len()) {
        (EXT_DATETIME, 8) => Value::DateTime(DateTime {
            micros: i64::from_be_bytes(data.try_into().map_err(|_| bad())?),
            offset: None,
        }),
        (EXT_DATETIME, 12) => Value::DateTime(DateTime {
            micros: i64::from_be_bytes(data[..8].try_into().map_err(|_| bad())?),
            offset: Some(i32::from_be_bytes(data[8..].try_into().map_err(|_| bad())?)),
        }),
        (EXT_DATE, 4) => Value::Date(i32::from_be_bytes(data.try_into().map_err(|_| bad())?)),
        (EXT_DECIMAL, _) if data.is_ascii() && !data.is_empty() => {
            Value::Decimal(String::from_utf8_lossy(data).into_owned())
        }
        _ => return Err(bad()),
    })
}
