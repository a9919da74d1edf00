//! The format-1 image header: the data of object `NAME.rbd`.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0x00 | 40 | text `<<< Rados Block Device Image >>>\n`, NUL-padded |
//! | 0x28 | 24 | block name (data object prefix), NUL-padded |
//! | 0x40 | 4 | signature `RBD\0` |
//! | 0x44 | 8 | version `001.005\0` |
//! | 0x4C | 1 | order; 0x4D crypt; 0x4E compression; 0x4F unused |
//! | 0x50 | 8 | image size |
//! | 0x58 | 8 | snap_seq |
//! | 0x60 | 4 | snap_count; 0x64 reserved |
//! | 0x68 | 8 | snap_names_len |
//! | 0x70 | 16 × count | (snap id, size), newest first |
//! | then | names_len | NUL-terminated names, same order |

use super::decode::Decoder;
use super::{FormatError, MAX_ORDER, MAX_SNAPSHOTS, MIN_ORDER, SnapshotInfo};

const WHAT: &str = "format-1 header";
pub const HEADER_TEXT: &[u8] = b"<<< Rados Block Device Image >>>\n";
pub const SIGNATURE: &[u8; 4] = b"RBD\0";
pub const VERSION: &[u8; 8] = b"001.005\0";
/// Size of the fixed part, before the snapshot records.
pub const FIXED_LEN: usize = 0x70;
const BLOCK_NAME_LEN: usize = 24;
const TEXT_LEN: usize = 40;

/// Suffix of a format-1 header object: image `foo` lives in `foo.rbd`.
pub const HEADER_SUFFIX: &str = ".rbd";

pub fn header_object(image: &str) -> String {
    format!("{image}{HEADER_SUFFIX}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderV1 {
    pub block_name: String,
    pub order: u8,
    pub size: u64,
    pub snap_seq: u64,
    /// Newest first, as stored.
    pub snapshots: Vec<SnapshotInfo>,
}

fn nul_padded(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

impl HeaderV1 {
    pub fn decode(buf: &[u8]) -> Result<HeaderV1, FormatError> {
        let mut d = Decoder::new(buf, WHAT);
        let text = d.bytes(TEXT_LEN)?;
        if nul_padded(text) != HEADER_TEXT {
            return Err(FormatError::invalid(WHAT, "missing header text"));
        }
        let block_name = nul_padded(d.bytes(BLOCK_NAME_LEN)?);
        if block_name.is_empty()
            || !block_name
                .iter()
                .all(|b| b.is_ascii_graphic() && *b != b'/')
        {
            return Err(FormatError::invalid(WHAT, "bad block name"));
        }
        let block_name = String::from_utf8_lossy(block_name).into_owned();
        if d.bytes(4)? != SIGNATURE {
            return Err(FormatError::invalid(WHAT, "bad signature"));
        }
        let version = d.bytes(8)?;
        if version != VERSION {
            return Err(FormatError::invalid(
                WHAT,
                format!(
                    "unsupported version {:?}",
                    String::from_utf8_lossy(nul_padded(version))
                ),
            ));
        }
        let order = d.u8()?;
        if !(MIN_ORDER..=MAX_ORDER).contains(&order) {
            return Err(FormatError::invalid(
                WHAT,
                format!("order {order} out of range"),
            ));
        }
        let crypt = d.u8()?;
        let comp = d.u8()?;
        if crypt != 0 || comp != 0 {
            return Err(FormatError::invalid(
                WHAT,
                format!("unsupported crypt {crypt} / compression {comp}"),
            ));
        }
        d.u8()?; // unused
        let size = d.u64()?;
        let snap_seq = d.u64()?;
        let snap_count = d.u32()? as usize;
        d.u32()?; // reserved
        let names_len = d.u64()?;
        if snap_count > MAX_SNAPSHOTS {
            return Err(FormatError::invalid(
                WHAT,
                format!("snap count {snap_count}"),
            ));
        }
        let records = d.bytes(snap_count * 16)?;
        let names_len = usize::try_from(names_len)
            .ok()
            .filter(|&n| n <= d.remaining())
            .ok_or_else(|| FormatError::invalid(WHAT, format!("snap names length {names_len}")))?;
        let names = d.bytes(names_len)?;
        let mut name_iter = names.split(|&b| b == 0);
        let mut snapshots = Vec::with_capacity(snap_count);
        let mut r = Decoder::new(records, WHAT);
        for _ in 0..snap_count {
            let id = r.u64()?;
            let snap_size = r.u64()?;
            let name = name_iter
                .next()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| FormatError::invalid(WHAT, "fewer snapshot names than records"))?;
            let name = String::from_utf8(name.to_vec())
                .map_err(|_| FormatError::invalid(WHAT, "snapshot name is not UTF-8"))?;
            snapshots.push(SnapshotInfo {
                id,
                name,
                size: snap_size,
            });
        }
        Ok(HeaderV1 {
            block_name,
            order,
            size,
            snap_seq,
            snapshots,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_LEN + self.snapshots.len() * 24);
        let mut text = HEADER_TEXT.to_vec();
        text.resize(TEXT_LEN, 0);
        out.extend_from_slice(&text);
        let mut block = self.block_name.as_bytes().to_vec();
        block.resize(BLOCK_NAME_LEN, 0);
        out.extend_from_slice(&block[..BLOCK_NAME_LEN]);
        out.extend_from_slice(SIGNATURE);
        out.extend_from_slice(VERSION);
        out.extend_from_slice(&[self.order, 0, 0, 0]);
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.snap_seq.to_le_bytes());
        out.extend_from_slice(&(self.snapshots.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        let names_len: usize = self.snapshots.iter().map(|s| s.name.len() + 1).sum();
        out.extend_from_slice(&(names_len as u64).to_le_bytes());
        for s in &self.snapshots {
            out.extend_from_slice(&s.id.to_le_bytes());
            out.extend_from_slice(&s.size.to_le_bytes());
        }
        for s in &self.snapshots {
            out.extend_from_slice(s.name.as_bytes());
            out.push(0);
        }
        out
    }

    /// Data object name: `<block name>.<object number, 12 lowercase hex>`.
    pub fn data_object(&self, object_no: u64) -> String {
        format!("{}.{:012x}", self.block_name, object_no)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> HeaderV1 {
        HeaderV1 {
            block_name: "rb.0.1029.6b8b4567".into(),
            order: 22,
            size: 1 << 30,
            snap_seq: 8,
            snapshots: vec![
                SnapshotInfo {
                    id: 8,
                    name: "bb2".into(),
                    size: 1 << 30,
                },
                SnapshotInfo {
                    id: 7,
                    name: "a1".into(),
                    size: 1 << 29,
                },
            ],
        }
    }

    #[test]
    fn layout_matches_the_documented_offsets() {
        let b = sample().encode();
        assert_eq!(&b[0x40..0x44], b"RBD\0");
        assert_eq!(&b[0x44..0x4c], b"001.005\0");
        assert_eq!(b[0x4c], 22);
        assert_eq!(u32::from_le_bytes(b[0x60..0x64].try_into().unwrap()), 2);
        assert_eq!(u64::from_le_bytes(b[0x68..0x70].try_into().unwrap()), 7);
        assert_eq!(&b[0x70 + 32..], b"bb2\0a1\0");
        assert_eq!(HeaderV1::decode(&b).unwrap(), sample());
    }

    #[test]
    fn data_object_names() {
        assert_eq!(
            sample().data_object(0x2a),
            "rb.0.1029.6b8b4567.00000000002a"
        );
    }

    #[test]
    fn rejects_corruption() {
        let good = sample().encode();
        for len in [0, 10, 0x40, 0x6f, 0x70 + 5, good.len() - 1] {
            assert!(
                HeaderV1::decode(&good[..len]).is_err(),
                "truncated at {len}"
            );
        }
        let mut bad = good.clone();
        bad[0x40] = b'X';
        assert!(HeaderV1::decode(&bad).is_err());
        let mut bad = good.clone();
        bad[0x4c] = 40;
        assert!(HeaderV1::decode(&bad).is_err());
        let mut bad = good.clone();
        bad[0x46] = b'9';
        assert!(HeaderV1::decode(&bad).is_err());
        let mut bad = good.clone();
        bad[0x60..0x64].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(HeaderV1::decode(&bad).is_err());
        let mut bad = good;
        bad[0x68..0x70].copy_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(HeaderV1::decode(&bad).is_err());
    }

    fn arb_header() -> impl Strategy<Value = HeaderV1> {
        let snap = ("[a-zA-Z0-9_.-]{1,20}", any::<u64>(), any::<u64>())
            .prop_map(|(name, id, size)| SnapshotInfo { id, name, size });
        (
            "rb\\.0\\.[0-9a-f]{1,4}\\.[0-9a-f]{8}",
            MIN_ORDER..=MAX_ORDER,
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(snap, 0..8),
        )
            .prop_map(|(block_name, order, size, snap_seq, snapshots)| HeaderV1 {
                block_name,
                order,
                size,
                snap_seq,
                snapshots,
            })
    }

    proptest! {
        #[test]
        fn round_trips(h in arb_header()) {
            prop_assert_eq!(HeaderV1::decode(&h.encode()).unwrap(), h);
        }

        #[test]
        fn never_panics_on_mutations(h in arb_header(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
            let mut b = h.encode();
            for (i, v) in flips { let n = b.len(); b[i % n] = v; }
            b.truncate(cut % (b.len() + 1));
            let _ = HeaderV1::decode(&b);
        }

        #[test]
        fn never_panics_on_noise(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = HeaderV1::decode(&b);
        }
    }
}
