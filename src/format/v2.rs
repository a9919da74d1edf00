//! Format-2 images: the inputs and replies of the object-class methods
//! librbd (Pacific, 16.2) calls, the on-disk object map, the `lock` class
//! calls behind the exclusive lock, and the watch/notify payloads on the
//! header object. Pure functions: no I/O, no panics, and no allocation the
//! input bytes cannot justify.
//!
//! A format-2 image `NAME` with id `ID` is spread over:
//!
//! | object | holds |
//! |---|---|
//! | `rbd_directory` (omap) | `name_NAME` → ID, `id_ID` → NAME; read with `rbd.dir_list` / `rbd.dir_get_id` |
//! | `rbd_id.NAME` | the ID as a Ceph string (u32 length + bytes) |
//! | `rbd_header.ID` (omap) | size, order, features, object prefix, snapshots, parent, ...: read with the `rbd.*` methods (below) |
//! | `rbd_object_map.ID[.SNAP]` | the object map: a `BitVector<2>`, see [`ObjectMap`] |
//! | `<object_prefix>.<16 hex>` | data objects (in the data pool if there is one) |
//!
//! Ceph's encodings: integers little-endian; a string is `u32 len` + bytes;
//! `std::optional<T>`/`boost::optional<T>` is `u8 present` + T; a map or
//! vector is `u32 count` + items; a *versioned* struct (`ENCODE_START(v,
//! compat)`) is `u8 v, u8 compat, u32 len` + `len` bytes, and a decoder
//! skips fields it does not know by that length.
//!
//! Replies are checked strictly at the top level (no trailing bytes), but
//! versioned sections may carry fields newer versions add.
//!
//! # Header methods
//! See `header.rs`: `dir_list`, `dir_get_id`, `get_size`, `get_features`,
//! `get_object_prefix`, `get_snapcontext`, `get_stripe_unit_count`,
//! `get_data_pool`, `get_flags`, `parent_get`, `parent_overlap_get`,
//! `get_parent`.
//!
//! # Snapshots
//! See `snapshot.rs`: `snapshot_get` (whose reply is `cls::rbd::SnapshotInfo`,
//! *not* the stored `cls_rbd_snap`: it has no protection status, which
//! comes from `get_protection_status`), `snapshot_add`, `snapshot_remove`.
//!
//! # Exclusive lock, notifications, object map
//! `lock.rs` (the `lock` class: `lock`, `unlock`, `break_lock`,
//! `get_info`, `set_cookie`), `notify.rs` (NotifyMessage, ResponseMessage),
//! `object_map.rs` (the `BitVector<2>` and `object_map_update`/`_resize`).
//!
//! All of it is checked against a 16.2 cluster by `tests/format2_codecs.rs`.

mod clone;
mod header;
mod lock;
mod names;
mod notify;
mod object_map;
mod snapshot;

pub use clone::*;
pub use header::*;
pub use lock::*;
pub use names::*;
pub use notify::*;
pub use object_map::*;
pub use snapshot::*;

use super::FormatError;
use super::decode::{Decoder, Encoder};

/// CEPH_NOSNAP: "the head" wherever a method takes a snap id. Same value as
/// `crate::format::NOSNAP` (u64::MAX is CEPH_SNAPDIR, something else).
pub const CEPH_NOSNAP: u64 = u64::MAX - 1;

/// Ceph's `utime_t` on the wire: u32 seconds, u32 nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Utime {
    pub sec: u32,
    pub nsec: u32,
}

impl Utime {
    fn decode(d: &mut Decoder<'_>) -> Result<Utime, FormatError> {
        Ok(Utime {
            sec: d.u32()?,
            nsec: d.u32()?,
        })
    }

    fn encode(&self, e: &mut Encoder) {
        e.u32(self.sec).u32(self.nsec);
    }
}

/// Writes Ceph's versioned encoding (`ENCODE_START(version, compat)` ..
/// `ENCODE_FINISH`) of what `body` encodes.
fn versioned(e: &mut Encoder, version: u8, compat: u8, body: impl FnOnce(&mut Encoder)) {
    let mut inner = Encoder::new();
    body(&mut inner);
    e.u8(version).u8(compat).blob(&inner.buf);
}

/// `std::optional<u64>`: u8 present, then the value if present.
fn optional_u64(d: &mut Decoder<'_>, what: &'static str) -> Result<Option<u64>, FormatError> {
    match d.u8()? {
        0 => Ok(None),
        1 => Ok(Some(d.u64()?)),
        b => Err(FormatError::invalid(what, format!("optional marker {b}"))),
    }
}

/// A reply must be consumed exactly: trailing bytes mean we misread it.
fn finish(d: &Decoder<'_>, what: &'static str) -> Result<(), FormatError> {
    if d.is_empty() {
        Ok(())
    } else {
        Err(FormatError::invalid(
            what,
            format!("{} trailing bytes", d.remaining()),
        ))
    }
}

/// A string that must be UTF-8 (a name or an id).
fn string(d: &mut Decoder<'_>) -> Result<String, FormatError> {
    d.string()
}

/// Encodes a bare u64 (the input of every method that takes only a snap id).
fn u64_input(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// Test helpers shared by the submodules' proptests.
#[cfg(test)]
pub(crate) mod testutil {
    use proptest::prelude::*;

    /// Random edits of a valid encoding: byte flips, then a truncation.
    pub fn mutations() -> impl Strategy<Value = (Vec<(usize, u8)>, usize)> {
        (
            proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
            any::<usize>(),
        )
    }

    pub fn mutate(mut b: Vec<u8>, (flips, cut): (Vec<(usize, u8)>, usize)) -> Vec<u8> {
        if !b.is_empty() {
            for (i, v) in flips {
                let n = b.len();
                b[i % n] = v;
            }
        }
        b.truncate(cut % (b.len() + 1));
        b
    }

    pub fn noise() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..300)
    }

    /// Bytes that parse as hex (spaces allowed), for byte-exact fixtures.
    pub fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nosnap_matches_the_store() {
        assert_eq!(CEPH_NOSNAP, crate::format::NOSNAP);
    }

    #[test]
    fn versioned_layout() {
        let mut e = Encoder::new();
        versioned(&mut e, 7, 1, |e| {
            e.u32(3);
        });
        assert_eq!(e.finish(), testutil::hex("07 01 04000000 03000000"));
    }

    #[test]
    fn optional_markers() {
        let mut d = Decoder::new(&[0], "t");
        assert_eq!(optional_u64(&mut d, "t").unwrap(), None);
        let mut d = Decoder::new(&[1, 5, 0, 0, 0, 0, 0, 0, 0], "t");
        assert_eq!(optional_u64(&mut d, "t").unwrap(), Some(5));
        let mut d = Decoder::new(&[2], "t");
        assert!(optional_u64(&mut d, "t").is_err());
        let mut d = Decoder::new(&[1, 5], "t");
        assert!(optional_u64(&mut d, "t").is_err());
    }
}
