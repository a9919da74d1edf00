//! `rbd export-diff` streams (`rbd diff v1`) and librbd's object-map diff
//! rules. Pure: which objects changed between two snapshots is decided
//! from their object maps here, and a stream's layout (where each record
//! starts, how long it is, the stream's exact size) is computed from the
//! records alone, before any image data is read.
//!
//! Stream (all integers little-endian, a string is le32 length + bytes):
//!
//! | record | bytes |
//! |---|---|
//! | banner | `rbd diff v1\n` |
//! | `f` string | from-snapshot (only for a diff since a snapshot) |
//! | `t` string | to-snapshot |
//! | `s` le64 | image size at the to-snapshot |
//! | `w` le64 offset, le64 length, data | data, ascending offsets |
//! | `z` le64 offset, le64 length | zeros / hole |
//! | `e` | end |
//!
//! See `/work/shared/docs/backup-formats.md` and Ceph's
//! `src/tools/rbd/action/ExportDiff.cc`.

use super::v2::{ObjectMap, ObjectState};

/// The first bytes of every v1 stream.
pub const BANNER: &[u8] = b"rbd diff v1\n";

/// Bytes of a `w` or `z` record before its data: tag, offset, length.
pub const EXTENT_HEADER: u64 = 17;

/// What happened to one object between the from-point and the
/// to-snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectChange {
    /// Same bytes at both points: no record.
    Unchanged,
    /// Exists at the to-snapshot and (may have) changed: a `w` record
    /// with its bytes there.
    Data,
    /// Existed at the from-snapshot (or on the way) and is gone at the
    /// to-snapshot: a `z` record.
    Zero,
}

fn exists(map: &ObjectMap, n: u64) -> bool {
    map.get(n).is_some_and(|s| s.may_exist())
}

/// librbd's object-map diff (object_map::DiffRequest), object by object
/// for the first `count` objects (the image's objects at the
/// to-snapshot).
///
/// `from` is the from-snapshot's map (None: from the beginning, where
/// every object that exists at the to-snapshot is data). `after` are the
/// maps of every snapshot after the from-snapshot up to the to-snapshot,
/// oldest first (the last is the to-snapshot's). An object past the end of
/// a map (the image was smaller then) does not exist there.
///
/// With `fast_diff`, an object that exists at the to-snapshot changed
/// unless it existed at the from-snapshot and every map after it says
/// EXISTS_CLEAN (written since no snapshot). Without it (no fast-diff, or
/// a map flagged FAST_DIFF_INVALID), every object that exists at the
/// to-snapshot is data: correct, larger. Either way an object that does
/// not exist at the to-snapshot but did at the from-snapshot or in a map
/// between is a `z`.
pub fn object_map_diff(
    from: Option<&ObjectMap>,
    after: &[ObjectMap],
    count: u64,
    fast_diff: bool,
) -> Vec<ObjectChange> {
    let Some(to) = after.last() else {
        return vec![ObjectChange::Unchanged; count as usize];
    };
    let between = &after[..after.len() - 1];
    (0..count)
        .map(|n| {
            let Some(from) = from else {
                return if exists(to, n) {
                    ObjectChange::Data
                } else {
                    ObjectChange::Unchanged
                };
            };
            if exists(to, n) {
                let clean = fast_diff
                    && exists(from, n)
                    && after
                        .iter()
                        .all(|m| m.get(n) == Some(ObjectState::ExistsClean));
                if clean {
                    ObjectChange::Unchanged
                } else {
                    ObjectChange::Data
                }
            } else if exists(from, n) || between.iter().any(|m| exists(m, n)) {
                ObjectChange::Zero
            } else {
                ObjectChange::Unchanged
            }
        })
        .collect()
}

/// The same decision from object existence alone (format 1, images
/// without a usable object map): every object that exists at the
/// to-snapshot is data, one that existed only at the from-snapshot a `z`.
pub fn existence_diff(existed: Option<&[bool]>, exists: &[bool]) -> Vec<ObjectChange> {
    exists
        .iter()
        .enumerate()
        .map(|(n, &now)| {
            if now {
                ObjectChange::Data
            } else if existed.is_some_and(|e| e.get(n).copied().unwrap_or(false)) {
                ObjectChange::Zero
            } else {
                ObjectChange::Unchanged
            }
        })
        .collect()
}

/// A data record: image range `[offset, offset+len)` as it is at the
/// to-snapshot (`w`), or zeros (`z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
    pub data: bool,
}

/// One record of a laid-out stream: where it starts in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub at: u64,
    pub extent: Extent,
}

impl Record {
    /// Bytes the record takes in the stream.
    pub fn stream_len(&self) -> u64 {
        EXTENT_HEADER + if self.extent.data { self.extent.len } else { 0 }
    }

    /// Its 17 header bytes.
    pub fn header(&self) -> [u8; 17] {
        let mut h = [0u8; 17];
        h[0] = if self.extent.data { b'w' } else { b'z' };
        h[1..9].copy_from_slice(&self.extent.offset.to_le_bytes());
        h[9..17].copy_from_slice(&self.extent.len.to_le_bytes());
        h
    }
}

/// A piece of a stream byte range: bytes we have, or image bytes at the
/// to-snapshot that the reader must fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Bytes(Vec<u8>),
    /// `len` bytes of the image at `offset` (to-snapshot).
    Image {
        offset: u64,
        len: u64,
    },
}

/// A stream laid out from metadata: its prelude (banner, `f`, `t`, `s`),
/// records at known offsets, the `e`, and so its exact size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamLayout {
    prelude: Vec<u8>,
    records: Vec<Record>,
    size: u64,
}

fn push_string(out: &mut Vec<u8>, tag: u8, s: &str) {
    out.push(tag);
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl StreamLayout {
    /// Lays out the stream `rbd export-diff [--from-snap FROM] IMAGE@TO`
    /// would write for these extents: sorted by offset; adjacent extents
    /// of the same kind merged (`w` records up to `max_write` bytes, so a
    /// reader such as `rbd import-diff`, which holds one record in memory,
    /// is never asked for more; `z` records without bound). Extents must
    /// not overlap.
    pub fn new(
        from: Option<&str>,
        to: &str,
        image_size: u64,
        mut extents: Vec<Extent>,
        max_write: u64,
    ) -> StreamLayout {
        let mut prelude = BANNER.to_vec();
        if let Some(from) = from {
            push_string(&mut prelude, b'f', from);
        }
        push_string(&mut prelude, b't', to);
        prelude.push(b's');
        prelude.extend_from_slice(&image_size.to_le_bytes());
        extents.retain(|e| e.len > 0);
        extents.sort_by_key(|e| e.offset);
        let mut merged: Vec<Extent> = Vec::with_capacity(extents.len());
        for e in extents {
            match merged.last_mut() {
                Some(last)
                    if last.data == e.data
                        && last.offset + last.len == e.offset
                        && (!e.data || last.len + e.len <= max_write) =>
                {
                    last.len += e.len
                }
                _ => merged.push(e),
            }
        }
        let mut at = prelude.len() as u64;
        let records: Vec<Record> = merged
            .into_iter()
            .map(|extent| {
                let r = Record { at, extent };
                at += r.stream_len();
                r
            })
            .collect();
        StreamLayout {
            prelude,
            records,
            size: at + 1,
        }
    }

    /// The stream's exact size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Bytes of `w` data in the stream.
    pub fn data_bytes(&self) -> u64 {
        self.records
            .iter()
            .filter(|r| r.extent.data)
            .map(|r| r.extent.len)
            .sum()
    }

    /// Index of the first record that ends after stream offset `offset`.
    fn first_record(&self, offset: u64) -> usize {
        self.records
            .partition_point(|r| r.at + r.stream_len() <= offset)
    }

    /// What stream bytes `[offset, offset+len)` are made of (clipped at
    /// the end), in order: concatenating the pieces (image pieces read at
    /// the to-snapshot) gives those bytes.
    pub fn pieces(&self, offset: u64, len: u64) -> Vec<Piece> {
        let end = offset.saturating_add(len).min(self.size);
        let mut out = Vec::new();
        if offset >= end {
            return out;
        }
        let bytes = |out: &mut Vec<Piece>, b: &[u8]| match out.last_mut() {
            Some(Piece::Bytes(v)) => v.extend_from_slice(b),
            _ => out.push(Piece::Bytes(b.to_vec())),
        };
        // Slice of `src` (which sits at stream offset `at`) inside the range.
        let clip = |at: u64, src_len: u64| -> Option<(usize, usize)> {
            let s = offset.max(at);
            let e = end.min(at + src_len);
            (s < e).then(|| ((s - at) as usize, (e - at) as usize))
        };
        if let Some((s, e)) = clip(0, self.prelude.len() as u64) {
            bytes(&mut out, &self.prelude[s..e]);
        }
        for r in &self.records[self.first_record(offset)..] {
            if r.at >= end {
                break;
            }
            if let Some((s, e)) = clip(r.at, EXTENT_HEADER) {
                bytes(&mut out, &r.header()[s..e]);
            }
            if r.extent.data
                && let Some((s, e)) = clip(r.at + EXTENT_HEADER, r.extent.len)
            {
                out.push(Piece::Image {
                    offset: r.extent.offset + s as u64,
                    len: (e - s) as u64,
                });
            }
        }
        if end == self.size {
            bytes(&mut out, b"e");
        }
        out
    }

    /// The image ranges of `w` records whose data lies in stream range
    /// `[offset, offset+len)`, for read-ahead.
    pub fn data_ranges(&self, offset: u64, len: u64) -> Vec<(u64, u64)> {
        self.pieces(offset, len)
            .into_iter()
            .filter_map(|p| match p {
                Piece::Image { offset, len } => Some((offset, len)),
                Piece::Bytes(_) => None,
            })
            .collect()
    }
}

/// What `rbd import-diff` does with a v1 stream, on a byte image (for
/// tests): resizes at `s`, writes `w`, zeroes `z`; returns the `f` and `t`
/// names. Strict: anything after `e`, or a missing `e`, is an error.
#[cfg(test)]
pub(crate) fn apply_stream(
    stream: &[u8],
    image: &mut Vec<u8>,
) -> Result<(Option<String>, Option<String>), String> {
    let mut d = stream
        .strip_prefix(BANNER)
        .ok_or("no banner")?
        .iter()
        .copied();
    let mut take = |n: usize| -> Result<Vec<u8>, String> {
        let v: Vec<u8> = d.by_ref().take(n).collect();
        if v.len() == n {
            Ok(v)
        } else {
            Err("truncated".into())
        }
    };
    let u64_of = |b: Vec<u8>| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
    let (mut from, mut to) = (None, None);
    let mut last_end = 0;
    loop {
        let tag = take(1)?[0];
        match tag {
            b'f' | b't' => {
                let n = u32::from_le_bytes(take(4)?.try_into().unwrap_or([0; 4])) as usize;
                let name = String::from_utf8(take(n)?).map_err(|e| e.to_string())?;
                if tag == b'f' {
                    from = Some(name)
                } else {
                    to = Some(name)
                }
            }
            b's' => {
                let size = u64_of(take(8)?);
                image.resize(size as usize, 0);
            }
            b'w' | b'z' => {
                let off = u64_of(take(8)?);
                let len = u64_of(take(8)?);
                if off < last_end {
                    return Err(format!("record at {off} before {last_end}"));
                }
                last_end = off + len;
                let end = (off + len) as usize;
                if end > image.len() {
                    return Err(format!("record {off}+{len} past the end"));
                }
                if tag == b'w' {
                    let data = take(len as usize)?;
                    image[off as usize..end].copy_from_slice(&data);
                } else {
                    image[off as usize..end].fill(0);
                }
            }
            b'e' => {
                return match take(1) {
                    Ok(_) => Err("bytes after e".into()),
                    Err(_) => Ok((from, to)),
                };
            }
            t => return Err(format!("unknown tag {t}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(states: &[u8]) -> ObjectMap {
        let mut m = ObjectMap::new(states.len() as u64, ObjectState::Nonexistent);
        for (i, &s) in states.iter().enumerate() {
            m.set(i as u64, ObjectState::from_bits(s));
        }
        m
    }

    use ObjectChange::{Data as D, Unchanged as U, Zero as Z};

    const N: u8 = 0;
    const E: u8 = 1;
    const P: u8 = 2;
    const C: u8 = 3;

    #[test]
    fn from_the_beginning_every_existing_object_is_data() {
        let to = map(&[N, E, P, C]);
        assert_eq!(
            object_map_diff(None, std::slice::from_ref(&to), 4, true),
            vec![U, D, D, D]
        );
        assert_eq!(object_map_diff(None, &[to], 4, false), vec![U, D, D, D]);
    }

    #[test]
    fn fast_diff_rules() {
        // Objects: 0 untouched, 1 rewritten, 2 discarded, 3 new, 4 never,
        // 5 pending at TO, 6 past FROM's end (grown), clean at TO.
        let from = map(&[E, E, E, N, N, E]);
        let to = map(&[C, E, N, E, N, P, C]);
        assert_eq!(
            object_map_diff(Some(&from), std::slice::from_ref(&to), 7, true),
            vec![U, D, Z, D, U, D, D]
        );
        // Without fast-diff every existing object is data.
        assert_eq!(
            object_map_diff(Some(&from), &[to], 7, false),
            vec![D, D, Z, D, U, D, D]
        );
    }

    #[test]
    fn intermediate_snapshots_count() {
        let from = map(&[E, E, N, E, E]);
        // Changed after FROM, clean since: still changed. Created and
        // removed in between: a z. Shrunk away in between and back: changed.
        let mid = map(&[E, C, E, C]);
        let to = map(&[C, C, N, C, C]);
        assert_eq!(
            object_map_diff(Some(&from), &[mid, to], 5, true),
            vec![D, U, Z, U, D]
        );
    }

    #[test]
    fn count_bounds_the_objects() {
        let from = map(&[E, E, E]);
        let to = map(&[C]);
        assert_eq!(object_map_diff(Some(&from), &[to], 1, true), vec![U]);
        assert_eq!(object_map_diff(Some(&from), &[], 2, true), vec![U, U]);
    }

    #[test]
    fn existence_rules() {
        assert_eq!(
            existence_diff(
                Some(&[true, true, false, false]),
                &[true, false, true, false]
            ),
            vec![D, Z, D, U]
        );
        assert_eq!(existence_diff(None, &[true, false]), vec![D, U]);
        assert_eq!(existence_diff(Some(&[]), &[true, false]), vec![D, U]);
    }

    fn w(offset: u64, len: u64) -> Extent {
        Extent {
            offset,
            len,
            data: true,
        }
    }

    fn z(offset: u64, len: u64) -> Extent {
        Extent {
            offset,
            len,
            data: false,
        }
    }

    /// The whole stream, with image bytes at offset o being (o % 251).
    fn render(s: &StreamLayout, offset: u64, len: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for p in s.pieces(offset, len) {
            match p {
                Piece::Bytes(b) => out.extend_from_slice(&b),
                Piece::Image { offset, len } => {
                    out.extend((offset..offset + len).map(|o| (o % 251) as u8))
                }
            }
        }
        out
    }

    #[test]
    fn stream_bytes() {
        let s = StreamLayout::new(Some("a"), "bc", 0x1000, vec![z(16, 8), w(4, 2)], 1 << 20);
        let mut want = b"rbd diff v1\n".to_vec();
        want.extend_from_slice(b"f\x01\0\0\0a");
        want.extend_from_slice(b"t\x02\0\0\0bc");
        want.extend_from_slice(b"s\0\x10\0\0\0\0\0\0");
        want.extend_from_slice(b"w\x04\0\0\0\0\0\0\0\x02\0\0\0\0\0\0\0\x04\x05");
        want.extend_from_slice(b"z\x10\0\0\0\0\0\0\0\x08\0\0\0\0\0\0\0");
        want.push(b'e');
        assert_eq!(s.size(), want.len() as u64);
        assert_eq!(render(&s, 0, u64::MAX), want);
        assert_eq!(s.data_bytes(), 2);
        // Without a from-snapshot: no `f`.
        let full = StreamLayout::new(None, "s", 0, Vec::new(), 1);
        assert_eq!(
            render(&full, 0, 100),
            b"rbd diff v1\nt\x01\0\0\0ss\0\0\0\0\0\0\0\0e"
        );
        assert_eq!(full.size(), 12 + 6 + 9 + 1);
    }

    #[test]
    fn merging() {
        let s = StreamLayout::new(
            None,
            "t",
            100,
            vec![w(0, 4), w(4, 4), w(8, 4), z(12, 4), z(16, 4), w(20, 4)],
            8,
        );
        let got: Vec<Extent> = s.records().iter().map(|r| r.extent).collect();
        assert_eq!(got, vec![w(0, 8), w(8, 4), z(12, 8), w(20, 4)]);
    }

    proptest! {
        #[test]
        fn any_range_is_a_slice_of_the_whole(
            lens in proptest::collection::vec((0u64..40, 1u64..40, any::<bool>()), 0..12),
            a in 0u64..600, b in 0u64..600, max_write in 1u64..100,
        ) {
            let mut at = 0;
            let extents: Vec<Extent> = lens.iter().map(|&(gap, len, data)| {
                at += gap;
                let e = Extent { offset: at, len, data };
                at += len;
                e
            }).collect();
            let s = StreamLayout::new(Some("from"), "to", at, extents, max_write);
            let whole = render(&s, 0, u64::MAX);
            prop_assert_eq!(whole.len() as u64, s.size());
            prop_assert_eq!(whole.last().copied(), Some(b'e'));
            let (lo, hi) = (a.min(b), a.max(b));
            let part = render(&s, lo, hi - lo);
            let lo = (lo as usize).min(whole.len());
            let hi = (hi as usize).min(whole.len());
            prop_assert_eq!(&part[..], &whole[lo..hi]);
            for r in s.records() {
                prop_assert!(!r.extent.data || r.extent.len <= max_write.max(39));
            }
        }
    }
}
