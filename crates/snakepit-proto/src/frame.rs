//! Frames: a 4-byte big-endian length, then that many bytes of MessagePack.

use std::io::{self, Read};

use bytes::{Buf, Bytes, BytesMut};

/// The default frame limit: 64 MiB.
pub const DEFAULT_FRAME_LIMIT: usize = 64 * 1024 * 1024;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is over the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("frame of length 0")]
    Empty,
    #[error("stream ended inside a frame: {got} of {expected} bytes came")]
    Truncated { got: usize, expected: usize },
    #[error("i/o error reading a frame")]
    Io(#[from] io::Error),
}

/// Checks a frame header against the limit, before anything is allocated for the body.
pub fn body_len(header: [u8; 4], limit: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 {
        Err(FrameError::Empty)
    } else if len > limit {
        Err(FrameError::TooLarge { len, limit })
    } else {
        Ok(len)
    }
}

/// Reassembles frames from a byte stream read in arbitrary pieces.
///
/// Feed it with [`FrameBuffer::read_space`] (or `BytesMut` reads) and take whole frame
/// bodies out with [`FrameBuffer::next_frame`]. The body's space is reserved only after
/// its length passed the limit check.
#[derive(Debug)]
pub struct FrameBuffer {
    buf: BytesMut,
    limit: usize,
}

impl FrameBuffer {
    pub fn new(limit: usize) -> Self {
        FrameBuffer {
            buf: BytesMut::with_capacity(8 * 1024),
            limit,
        }
    }

    /// The buffer to read into (for `AsyncReadExt::read_buf`).
    pub fn read_space(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes received but not yet returned as a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame body, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buf.len() < 4 {
            self.buf.reserve(4);
            return Ok(None);
        }
        let header: [u8; 4] = self.buf[..4].try_into().expect("4 bytes");
        let len = body_len(header, self.limit)?;
        if self.buf.len() < 4 + len {
            self.buf.reserve(4 + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(4);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Turns an end of stream into an error when it cut a frame short.
    pub fn check_eof(&self) -> Result<(), FrameError> {
        match self.buf.len() {
            0 => Ok(()),
            got if got < 4 => Err(FrameError::Truncated { got, expected: 4 }),
            got => {
                let header: [u8; 4] = self.buf[..4].try_into().expect("4 bytes");
                Err(FrameError::Truncated {
                    got: got - 4,
                    expected: u32::from_be_bytes(header) as usize,
                })
            }
        }
    }
}

/// A frame: `body` after its length.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(4 + body.len());
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// Reads one frame body from a blocking reader; `Ok(None)` at a clean end of stream.
pub fn read_frame(r: &mut impl Read, limit: usize) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; 4];
    let got = read_full(r, &mut header)?;
    if got == 0 {
        return Ok(None);
    }
    if got < 4 {
        return Err(FrameError::Truncated { got, expected: 4 });
    }
    let len = body_len(header, limit)?;
    let mut body = vec![0; len];
    let got = read_full(r, &mut body)?;
    if got < len {
        return Err(FrameError::Truncated { got, expected: len });
    }
    Ok(Some(body))
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_length_is_refused_before_allocation() {
        let mut fb = FrameBuffer::new(1024);
        fb.read_space().extend_from_slice(&u32::MAX.to_be_bytes());
        let cap = fb.read_space().capacity();
        assert!(
            matches!(fb.next_frame(), Err(FrameError::TooLarge { len, limit: 1024 }) if len == u32::MAX as usize)
        );
        assert_eq!(
            fb.read_space().capacity(),
            cap,
            "nothing reserved for the body"
        );
    }

    #[test]
    fn two_frames_back_to_back_and_split_reads() {
        let mut fb = FrameBuffer::new(1024);
        let mut stream = vec![0, 0, 0, 2, 0x91, 0x03, 0, 0, 0, 1];
        stream.push(0xc0);
        for b in &stream[..5] {
            fb.read_space().extend_from_slice(&[*b]);
            assert!(fb.next_frame().unwrap().is_none());
        }
        fb.read_space().extend_from_slice(&stream[5..]);
        assert_eq!(&fb.next_frame().unwrap().unwrap()[..], &[0x91, 0x03]);
        assert_eq!(&fb.next_frame().unwrap().unwrap()[..], &[0xc0]);
        assert!(fb.next_frame().unwrap().is_none());
        fb.check_eof().unwrap();
    }

    #[test]
    fn truncated_stream_says_how_much_came() {
        let mut r: &[u8] = &[0, 0, 0, 9, 1, 2];
        let err = read_frame(&mut r, 1024).unwrap_err();
        assert_eq!(
            err.to_string(),
            "stream ended inside a frame: 2 of 9 bytes came"
        );
        let mut empty: &[u8] = &[];
        assert!(read_frame(&mut empty, 1024).unwrap().is_none());
        let mut zero: &[u8] = &[0, 0, 0, 0];
        assert!(matches!(
            read_frame(&mut zero, 1024),
            Err(FrameError::Empty)
        ));
    }
}
