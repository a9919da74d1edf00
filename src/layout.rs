//! Image offset ↔ data object extents, librbd's striping rules
//! (`src/osdc/Striper.cc`). Pure arithmetic, no I/O.
//!
//! With stripe unit `su`, stripe count `sc` and object size `os`
//! (`spo = os / su` stripe units per object), image offset `o` lies in
//! block `o / su`, stripe `block / sc`, position `block % sc`, object set
//! `stripe / spo`, object `objectset * sc + pos`, at
//! `(stripe % spo) * su + o % su` inside that object. Plain images are the
//! case `su = os, sc = 1`.

/// Smallest stripe unit accepted from a header. librbd only asks that it
/// divide the object size, but a unit of a few bytes would turn one read
/// into millions of pieces: hostile, not a layout anyone uses.
pub const MIN_STRIPE_UNIT: u64 = 512;

/// Largest stripe count accepted from a header (librbd sets no limit, but
/// a count this high would already mean millions of objects per stripe).
pub const MAX_STRIPE_COUNT: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub object_size: u64,
    pub stripe_unit: u64,
    pub stripe_count: u64,
}

/// A piece of an image range that lives in one data object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectExtent {
    pub object_no: u64,
    pub offset: u64,
    pub len: u64,
    /// Where this piece starts, relative to the start of the image range.
    pub buf_offset: u64,
}

impl ObjectExtent {
    /// The piece runs to its object's end: a sequential reader is done
    /// with that object.
    pub fn reaches_object_end(&self, object_size: u64) -> bool {
        self.offset + self.len >= object_size
    }
}

impl Layout {
    /// The layout of an image without fancy striping.
    pub fn plain(order: u8) -> Layout {
        let object_size = 1u64 << order;
        Layout {
            object_size,
            stripe_unit: object_size,
            stripe_count: 1,
        }
    }

    /// Validates striping parameters as librbd does: the stripe unit divides
    /// the object size and neither is zero.
    pub fn striped(order: u8, stripe_unit: u64, stripe_count: u64) -> Option<Layout> {
        if !(crate::format::MIN_ORDER..=crate::format::MAX_ORDER).contains(&order) {
            return None;
        }
        let object_size = 1u64 << order;
        // An object set (object size × stripe count) must fit in 64 bits
        // with room for offset arithmetic; real images use small counts.
        if stripe_unit < MIN_STRIPE_UNIT
            || stripe_count == 0
            || stripe_count > MAX_STRIPE_COUNT
            || stripe_unit > object_size
            || !object_size.is_multiple_of(stripe_unit)
        {
            return None;
        }
        Some(Layout {
            object_size,
            stripe_unit,
            stripe_count,
        })
    }

    pub fn is_plain(&self) -> bool {
        self.stripe_count == 1 && self.stripe_unit == self.object_size
    }

    /// Maps one image offset to (object number, offset inside it) and the
    /// number of bytes that stay contiguous in that object from there.
    pub fn locate(&self, offset: u64) -> (u64, u64, u64) {
        let su = self.stripe_unit;
        let sc = self.stripe_count;
        let spo = self.object_size / su;
        let block = offset / su;
        let stripe = block / sc;
        let pos = block % sc;
        let object_set = stripe / spo;
        let object_no = object_set * sc + pos;
        let in_object = (stripe % spo) * su + offset % su;
        // A plain layout is contiguous to the object's end; a striped one
        // only to the end of the stripe unit.
        let run = if sc == 1 {
            self.object_size - in_object
        } else {
            su - offset % su
        };
        (object_no, in_object, run)
    }

    /// Splits `[offset, offset+len)` into object extents in image order.
    /// Adjacent pieces in the same object are merged.
    pub fn map(&self, offset: u64, len: u64) -> Vec<ObjectExtent> {
        let mut out: Vec<ObjectExtent> = Vec::new();
        let mut done = 0;
        while done < len {
            let (object_no, in_object, run) = self.locate(offset + done);
            let n = run.min(len - done);
            match out.last_mut() {
                Some(last)
                    if last.object_no == object_no && last.offset + last.len == in_object =>
                {
                    last.len += n
                }
                _ => out.push(ObjectExtent {
                    object_no,
                    offset: in_object,
                    len: n,
                    buf_offset: done,
                }),
            }
            done += n;
        }
        out
    }

    /// The inverse of [`map`](Self::map): the image ranges that
    /// `[offset, offset+len)` of object `object_no` hold, as
    /// (image offset, length, offset in the object), in object order.
    pub fn unmap(&self, object_no: u64, offset: u64, len: u64) -> Vec<(u64, u64, u64)> {
        let su = self.stripe_unit;
        let sc = self.stripe_count;
        let spo = self.object_size / su;
        let object_set = object_no / sc;
        let pos = object_no % sc;
        let mut out: Vec<(u64, u64, u64)> = Vec::new();
        let end = (offset + len).min(self.object_size);
        let mut at = offset;
        while at < end {
            let stripe = object_set * spo + at / su;
            let block = stripe * sc + pos;
            let image_off = block * su + at % su;
            let n = (su - at % su).min(end - at);
            match out.last_mut() {
                Some(last) if last.0 + last.1 == image_off => last.1 += n,
                _ => out.push((image_off, n, at)),
            }
            at += n;
        }
        out
    }

    /// Number of data objects an image of `size` bytes may use.
    pub fn object_count(&self, size: u64) -> u64 {
        if size == 0 {
            return 0;
        }
        let set_bytes = self.object_size * self.stripe_count;
        let full_sets = size / set_bytes;
        let rest = size % set_bytes;
        let tail = if rest == 0 {
            0
        } else {
            // The partial object set touches at most stripe_count objects.
            (rest.div_ceil(self.stripe_unit)).min(self.stripe_count)
        };
        full_sets * self.stripe_count + tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Byte-at-a-time reference straight from the Striper formula.
    fn reference(l: &Layout, o: u64) -> (u64, u64) {
        let block = o / l.stripe_unit;
        let stripe = block / l.stripe_count;
        let pos = block % l.stripe_count;
        let spo = l.object_size / l.stripe_unit;
        (
            (stripe / spo) * l.stripe_count + pos,
            (stripe % spo) * l.stripe_unit + o % l.stripe_unit,
        )
    }

    fn arb_layout() -> impl Strategy<Value = Layout> {
        (12u8..=16, 0u32..5, 1u64..6).prop_map(|(order, su_shift, sc)| {
            let su = (1u64 << order) >> su_shift.min(order as u32 - 9);
            Layout::striped(order, su, sc).unwrap()
        })
    }

    proptest! {
        #[test]
        fn map_agrees_with_reference(l in arb_layout(), offset in 0u64..(1 << 22), len in 0u64..300_000) {
            let extents = l.map(offset, len);
            let total: u64 = extents.iter().map(|e| e.len).sum();
            prop_assert_eq!(total, len);
            let mut expect_buf = 0;
            for e in &extents {
                prop_assert_eq!(e.buf_offset, expect_buf);
                expect_buf += e.len;
                // Every byte of the extent maps where the reference says;
                // checking both ends and a middle byte keeps this fast.
                for k in [0, e.len / 2, e.len.saturating_sub(1)] {
                    if k < e.len {
                        prop_assert_eq!(reference(&l, offset + e.buf_offset + k), (e.object_no, e.offset + k));
                    }
                }
                prop_assert!(e.offset + e.len <= l.object_size);
            }
        }

        #[test]
        fn unmap_inverts_map(l in arb_layout(), offset in 0u64..(1 << 22), len in 1u64..300_000) {
            for e in l.map(offset, len) {
                let back = l.unmap(e.object_no, e.offset, e.len);
                let total: u64 = back.iter().map(|b| b.1).sum();
                prop_assert_eq!(total, e.len);
                for (image_off, n, obj_off) in back {
                    prop_assert_eq!(reference(&l, image_off), (e.object_no, obj_off));
                    prop_assert_eq!(reference(&l, image_off + n - 1), (e.object_no, obj_off + n - 1));
                }
            }
        }

        #[test]
        fn plain_is_shift_and_mask(order in 12u8..=25, offset in any::<u64>()) {
            let l = Layout::plain(order);
            let (obj, off, _) = l.locate(offset);
            prop_assert_eq!(obj, offset >> order);
            prop_assert_eq!(off, offset & ((1 << order) - 1));
        }
    }

    #[test]
    fn object_count() {
        let l = Layout::plain(22);
        assert_eq!(l.object_count(0), 0);
        assert_eq!(l.object_count(1), 1);
        assert_eq!(l.object_count(4 << 20), 1);
        assert_eq!(l.object_count((4 << 20) + 1), 2);
        let s = Layout::striped(16, 1 << 14, 4).unwrap();
        assert_eq!(s.object_count(1 << 14), 1);
        assert_eq!(s.object_count(5 << 14), 4);
        assert_eq!(s.object_count(4 << 16), 4);
        assert_eq!(s.object_count((4 << 16) + 1), 5);
    }

    #[test]
    fn rejects_bad_striping() {
        assert!(Layout::striped(22, 0, 1).is_none());
        assert!(Layout::striped(22, 256, 1).is_none());
        assert!(Layout::striped(22, 3000, 1).is_none());
        assert!(Layout::striped(22, 8 << 20, 1).is_none());
        assert!(Layout::striped(22, 1 << 16, 0).is_none());
    }
}
