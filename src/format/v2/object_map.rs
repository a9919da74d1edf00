//! The object map: `rbd_object_map.ID` (head) and `rbd_object_map.ID.<snap
//! 16 hex>`, a Ceph `BitVector<2>` with one 2-bit state per data object.
//!
//! | part | encoding |
//! |---|---|
//! | header | u32 length (14), then versioned (1, 1): u64 object count |
//! | data | ⌈count / 4⌉ bytes, no length prefix; object `n` is in byte `n / 4`, most significant bits first (`(byte >> (6 - 2·(n % 4))) & 3`) |
//! | footer | u32 length, then (if non-zero) u32 header CRC, u32 block count, one u32 CRC per 4096-byte data block |
//!
//! CRCs are Ceph's `crc32c(0, ..)`: CRC-32C with seed 0 and no final xor.
//! The stored object has them; the reply of `object_map_load` has an empty
//! footer.
//!
//! Change the map only with `object_map_update` (input: u64 start, u64 end
//! (exclusive), u8 new state, optional u8 current state: only objects in
//! that state change, and `Exists` also matches `ExistsClean`) and
//! `object_map_resize` (u64 object count, u8 default state), and only while
//! holding the exclusive lock.

use super::{finish, versioned};
use crate::format::FormatError;
use crate::format::crc::crc32c;
use crate::format::decode::{Decoder, Encoder};

/// The largest object count `object_map_resize` accepts
/// (cls::rbd::MAX_OBJECT_MAP_OBJECT_COUNT).
pub const MAX_OBJECT_MAP_OBJECT_COUNT: u64 = 256_000_000;

/// Bytes of data covered by one CRC.
const CRC_BLOCK: usize = 4096;

const WHAT: &str = "object map";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectState {
    Nonexistent = 0,
    Exists = 1,
    /// Being removed.
    Pending = 2,
    /// Exists and unchanged since the newest snapshot (fast-diff).
    ExistsClean = 3,
}

impl ObjectState {
    pub fn from_bits(bits: u8) -> ObjectState {
        match bits & 3 {
            0 => ObjectState::Nonexistent,
            1 => ObjectState::Exists,
            2 => ObjectState::Pending,
            _ => ObjectState::ExistsClean,
        }
    }

    /// Whether the data object may exist (anything but `Nonexistent`;
    /// `Pending` may still be there).
    pub fn may_exist(self) -> bool {
        self != ObjectState::Nonexistent
    }
}

/// A decoded object map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMap {
    count: u64,
    data: Vec<u8>,
}

fn data_len(count: u64) -> Option<usize> {
    usize::try_from(count.div_ceil(4)).ok()
}

impl ObjectMap {
    /// `count` objects, all in `state`. Allocates ⌈count / 4⌉ bytes: the
    /// caller bounds `count` (see [`MAX_OBJECT_MAP_OBJECT_COUNT`]).
    pub fn new(count: u64, state: ObjectState) -> ObjectMap {
        let s = state as u8;
        let byte = s << 6 | s << 4 | s << 2 | s;
        let len = data_len(count).expect("object map too large for memory");
        let mut m = ObjectMap {
            count,
            data: vec![byte; len],
        };
        m.clear_tail();
        m
    }

    /// Zeroes the unused bits after the last object (Ceph keeps them 0).
    fn clear_tail(&mut self) {
        let used = (self.count % 4) as u32;
        if used != 0
            && let Some(last) = self.data.last_mut()
        {
            *last &= !(0xffu8 >> (2 * used));
        }
    }

    /// Number of objects the map covers.
    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The state of object `object_no`, or `None` past the end.
    pub fn get(&self, object_no: u64) -> Option<ObjectState> {
        if object_no >= self.count {
            return None;
        }
        let byte = self.data[(object_no / 4) as usize];
        let shift = 6 - 2 * (object_no % 4) as u32;
        Some(ObjectState::from_bits(byte >> shift))
    }

    /// Sets object `object_no`; false (and no change) past the end.
    pub fn set(&mut self, object_no: u64, state: ObjectState) -> bool {
        if object_no >= self.count {
            return false;
        }
        let byte = &mut self.data[(object_no / 4) as usize];
        let shift = 6 - 2 * (object_no % 4) as u32;
        *byte = (*byte & !(3 << shift)) | ((state as u8) << shift);
        true
    }

    /// Extends the map to `count` objects, the new ones nonexistent (what
    /// `object_map_resize` does on the OSD when an image grows); never
    /// shrinks. The caller bounds `count` as for [`ObjectMap::new`].
    pub fn grow(&mut self, count: u64) {
        if count <= self.count {
            return;
        }
        let len = data_len(count).expect("object map too large for memory");
        // Nonexistent is 0b00, and the unused tail bits are kept 0.
        self.data.resize(len, 0);
        self.count = count;
    }

    /// Every object's state, in order.
    pub fn states(&self) -> impl Iterator<Item = ObjectState> + '_ {
        (0..self.count).filter_map(|n| self.get(n))
    }

    /// Decodes the stored object (CRCs checked) or an `object_map_load`
    /// reply (no CRCs).
    pub fn decode(buf: &[u8]) -> Result<ObjectMap, FormatError> {
        let mut d = Decoder::new(buf, WHAT);
        let header = d.blob()?;
        let mut h = Decoder::new(header, WHAT);
        let (_, mut hv) = h.versioned(1)?;
        finish(&h, WHAT)?;
        let count = hv.u64()?;
        let len = data_len(count)
            .filter(|&l| l <= d.remaining())
            .ok_or_else(|| {
                FormatError::invalid(WHAT, format!("{count} objects but {} bytes", buf.len()))
            })?;
        let data = d.bytes(len)?;
        let footer = d.blob()?;
        finish(&d, WHAT)?;
        if !footer.is_empty() {
            let mut f = Decoder::new(footer, WHAT);
            let header_crc = f.u32()?;
            if header_crc != crc32c(0, header) {
                return Err(FormatError::invalid(WHAT, "header CRC mismatch"));
            }
            let blocks = data.len().div_ceil(CRC_BLOCK);
            let n = f.u32()? as usize;
            if n != blocks || f.remaining() != 4 * blocks {
                return Err(FormatError::invalid(
                    WHAT,
                    format!("{n} block CRCs for {blocks} data blocks"),
                ));
            }
            for (i, block) in data.chunks(CRC_BLOCK).enumerate() {
                if f.u32()? != crc32c(0, block) {
                    return Err(FormatError::invalid(
                        WHAT,
                        format!("data block {i} CRC mismatch"),
                    ));
                }
            }
        }
        let mut m = ObjectMap {
            count,
            data: data.to_vec(),
        };
        m.clear_tail();
        Ok(m)
    }

    /// The encoding: with CRCs as the stored object has them, or without
    /// as `object_map_load` replies.
    pub fn encode(&self, with_crc: bool) -> Vec<u8> {
        let mut h = Encoder::new();
        versioned(&mut h, 1, 1, |e| {
            e.u64(self.count);
        });
        let header = h.finish();
        let mut e = Encoder::new();
        e.blob(&header);
        e.buf.extend_from_slice(&self.data);
        let mut footer = Encoder::new();
        if with_crc {
            let blocks: Vec<&[u8]> = self.data.chunks(CRC_BLOCK).collect();
            footer.u32(crc32c(0, &header)).u32(blocks.len() as u32);
            for b in blocks {
                footer.u32(crc32c(0, b));
            }
        }
        e.blob(&footer.buf);
        e.finish()
    }
}

/// `object_map_update` input: set objects `start..end` to `new_state`,
/// only those currently in `current` when given.
pub fn object_map_update_input(
    start: u64,
    end: u64,
    new_state: ObjectState,
    current: Option<ObjectState>,
) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u64(start).u64(end).u8(new_state as u8);
    match current {
        Some(c) => e.u8(1).u8(c as u8),
        None => e.u8(0),
    };
    e.finish()
}

/// Reads an `object_map_update` input back (for test doubles):
/// (start, end, new state, current state).
pub fn decode_object_map_update_input(
    input: &[u8],
) -> Result<(u64, u64, ObjectState, Option<ObjectState>), FormatError> {
    const W: &str = "rbd.object_map_update input";
    let mut d = Decoder::new(input, W);
    let start = d.u64()?;
    let end = d.u64()?;
    let new_state = state_byte(d.u8()?, W)?;
    let current = match d.u8()? {
        0 => None,
        1 => Some(state_byte(d.u8()?, W)?),
        b => return Err(FormatError::invalid(W, format!("optional marker {b}"))),
    };
    finish(&d, W)?;
    Ok((start, end, new_state, current))
}

fn state_byte(b: u8, what: &'static str) -> Result<ObjectState, FormatError> {
    if b > 3 {
        return Err(FormatError::invalid(what, format!("object state {b}")));
    }
    Ok(ObjectState::from_bits(b))
}

/// `object_map_resize` input: grow (new objects get `default_state`) or
/// shrink (ESTALE unless every dropped object is in `default_state`).
pub fn object_map_resize_input(object_count: u64, default_state: ObjectState) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u64(object_count).u8(default_state as u8);
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{hex, mutate, mutations, noise};
    use super::*;
    use proptest::prelude::*;

    /// The header's length prefix (4) + versioned header (6) + count (8).
    const HEADER_LEN: usize = 18;

    #[test]
    fn crc32c_check_value() {
        // The standard CRC-32C check value, and Ceph's seed-0 convention.
        assert_eq!(!crc32c(!0, b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(0, b""), 0);
    }

    #[test]
    fn two_written_objects() {
        // rbd-format.md: two written objects -> first data byte 0x50.
        let mut m = ObjectMap::new(16, ObjectState::Nonexistent);
        m.set(0, ObjectState::Exists);
        m.set(1, ObjectState::Exists);
        let b = m.encode(false);
        assert_eq!(
            b,
            hex("0e000000 01 01 08000000 1000000000000000 50000000 00000000")
        );
        let back = ObjectMap::decode(&b).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.get(0), Some(ObjectState::Exists));
        assert_eq!(back.get(2), Some(ObjectState::Nonexistent));
        assert_eq!(back.get(16), None);
        assert_eq!(back.states().filter(|s| s.may_exist()).count(), 2);

        let with_crc = m.encode(true);
        assert_eq!(ObjectMap::decode(&with_crc).unwrap(), m);
        // Footer: header CRC, 1 block, its CRC.
        assert_eq!(with_crc.len(), HEADER_LEN + 4 + 4 + 4 + 4 + 4);
    }

    #[test]
    fn bit_order_and_tail() {
        let mut m = ObjectMap::new(5, ObjectState::ExistsClean);
        assert_eq!(m.encode(false)[HEADER_LEN..HEADER_LEN + 2], [0xff, 0xc0]);
        assert!(m.set(3, ObjectState::Pending));
        assert!(!m.set(5, ObjectState::Exists));
        assert_eq!(m.encode(false)[HEADER_LEN], 0xfe);
        assert_eq!(m.get(3), Some(ObjectState::Pending));
        assert_eq!(
            ObjectMap::new(0, ObjectState::Exists).encode(false).len(),
            HEADER_LEN + 4
        );
    }

    #[test]
    fn crc_mismatch_is_an_error() {
        let m = ObjectMap::new(20000, ObjectState::Exists); // 2 CRC blocks
        let mut b = m.encode(true);
        assert_eq!(ObjectMap::decode(&b).unwrap(), m);
        b[HEADER_LEN + 4097] ^= 1;
        let err = ObjectMap::decode(&b).unwrap_err();
        assert!(err.to_string().contains("block 1"), "{err}");
        let mut b = m.encode(true);
        b[HEADER_LEN - 1] = 0x10; // count changes: header CRC and length
        assert!(ObjectMap::decode(&b).is_err());
    }

    #[test]
    fn huge_counts_do_not_allocate() {
        let b = hex("0e000000 01 01 08000000 ffffffffffffffff 00000000");
        assert!(ObjectMap::decode(&b).is_err());
    }

    #[test]
    fn method_inputs() {
        assert_eq!(
            object_map_update_input(0, 2, ObjectState::Exists, None),
            hex("0000000000000000 0200000000000000 01 00")
        );
        let b = object_map_update_input(4, 5, ObjectState::Nonexistent, Some(ObjectState::Pending));
        assert_eq!(b, hex("0400000000000000 0500000000000000 00 01 02"));
        assert_eq!(
            decode_object_map_update_input(&b).unwrap(),
            (4, 5, ObjectState::Nonexistent, Some(ObjectState::Pending))
        );
        assert_eq!(
            object_map_resize_input(16, ObjectState::Nonexistent),
            hex("1000000000000000 00")
        );
    }

    fn arb_map() -> impl Strategy<Value = ObjectMap> {
        proptest::collection::vec(0u8..4, 0..3000).prop_map(|states| {
            let mut m = ObjectMap::new(states.len() as u64, ObjectState::Nonexistent);
            for (i, s) in states.into_iter().enumerate() {
                m.set(i as u64, ObjectState::from_bits(s));
            }
            m
        })
    }

    proptest! {
        #[test]
        fn round_trips(m in arb_map(), crc: bool, s in 0u8..4, start: u64, end: u64, cur in proptest::option::of(0u8..4)) {
            prop_assert_eq!(&ObjectMap::decode(&m.encode(crc)).unwrap(), &m);
            let new_state = ObjectState::from_bits(s);
            let current = cur.map(ObjectState::from_bits);
            let got = decode_object_map_update_input(&object_map_update_input(start, end, new_state, current)).unwrap();
            prop_assert_eq!(got, (start, end, new_state, current));
        }

        #[test]
        fn never_panics_on_mutations(m in arb_map(), crc: bool, muts in mutations()) {
            if let Ok(d) = ObjectMap::decode(&mutate(m.encode(crc), muts)) {
                let _ = d.get(d.len().saturating_sub(1));
                let _ = d.states().count();
            }
        }

        #[test]
        fn never_panics_on_noise(b in noise()) {
            let _ = ObjectMap::decode(&b);
            let _ = decode_object_map_update_input(&b);
        }
    }
}
