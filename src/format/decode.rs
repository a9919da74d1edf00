//! A bounds-checked little-endian reader for Ceph's encodings.
//!
//! Every length that comes from the wire is checked against the bytes that
//! are actually left before anything is allocated, so hostile input can make
//! a decode fail but never panic or allocate without bound.

use super::FormatError;

pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Decoder<'a> {
    /// `what` names the structure in error messages ("format-1 header", ...).
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Decoder { buf, pos: 0, what }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    fn truncated(&self, need: usize) -> FormatError {
        FormatError::Truncated {
            what: self.what,
            offset: self.pos,
            need,
            have: self.remaining(),
        }
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if n > self.remaining() {
            return Err(self.truncated(n));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn i32(&mut self) -> Result<i32, FormatError> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64, FormatError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// A Ceph `bufferlist`/string: u32 length then that many bytes.
    pub fn blob(&mut self) -> Result<&'a [u8], FormatError> {
        let len = self.u32()? as usize;
        self.bytes(len)
    }

    pub fn string(&mut self) -> Result<String, FormatError> {
        let what = self.what;
        let raw = self.blob()?;
        String::from_utf8(raw.to_vec()).map_err(|_| FormatError::Invalid {
            what,
            reason: "string is not UTF-8".into(),
        })
    }

    /// A count that is followed by `count` items of at least `min_item_size`
    /// bytes each; rejects counts the remaining input cannot possibly hold.
    pub fn count(&mut self, min_item_size: usize) -> Result<usize, FormatError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item_size.max(1)) > self.remaining() {
            return Err(FormatError::Invalid {
                what: self.what,
                reason: format!("count {n} exceeds the {} bytes left", self.remaining()),
            });
        }
        Ok(n)
    }

    /// Ceph's versioned encoding header (`ENCODE_START`): u8 version,
    /// u8 compat, u32 length. Returns a decoder over exactly that section
    /// so that fields added by newer versions are skipped.
    pub fn versioned(&mut self, max_compat: u8) -> Result<(u8, Decoder<'a>), FormatError> {
        let version = self.u8()?;
        let compat = self.u8()?;
        if compat > max_compat {
            return Err(FormatError::Invalid {
                what: self.what,
                reason: format!("encoding compat {compat} is newer than {max_compat}"),
            });
        }
        let body = self.blob()?;
        Ok((version, Decoder::new(body, self.what)))
    }
}

/// Little-endian encoder, the mirror of [`Decoder`].
#[derive(Default)]
pub struct Encoder {
    pub buf: Vec<u8>,
}

impl Encoder {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn blob(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
        self
    }
    pub fn string(&mut self, v: &str) -> &mut Self {
        self.blob(v.as_bytes())
    }
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}
