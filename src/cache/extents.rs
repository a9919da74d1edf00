//! The dirty bytes of one object: non-overlapping runs keyed by their
//! offset in the object, newest bytes winning where writes overlap.
//!
//! A write that continues a run (a sequential writer) extends that run's
//! buffer in place, growing it geometrically when the budget allows, so an
//! object written 4 KiB at a time is not copied over and over. What the
//! runs occupy is counted by buffer capacity plus a per-run overhead, the
//! number the cache charges against its byte budget.

use std::collections::BTreeMap;

/// Bookkeeping charged per run on top of its buffer (map node, Vec header).
pub(super) const EXTENT_OVERHEAD: u64 = 96;

/// Writes at least this big that start a run get a buffer for the rest of
/// the object (see [`Extents::insert`]).
const SPECULATE_MIN: u64 = 64 << 10;

/// Runs of one object that are newer than RADOS.
#[derive(Debug, Default)]
pub(super) struct Extents {
    runs: BTreeMap<u64, Vec<u8>>,
    /// Capacity of every run plus [`EXTENT_OVERHEAD`] each.
    bytes: u64,
}

fn cost(v: &[u8], capacity: usize) -> u64 {
    debug_assert!(v.len() <= capacity);
    capacity as u64 + EXTENT_OVERHEAD
}

impl Extents {
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// What the runs occupy (see the module comment).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn runs(&self) -> &BTreeMap<u64, Vec<u8>> {
        &self.runs
    }

    /// Takes every run out (for write-back): the runs and what they
    /// occupied.
    pub fn take(&mut self) -> (BTreeMap<u64, Vec<u8>>, u64) {
        let bytes = std::mem::take(&mut self.bytes);
        (std::mem::take(&mut self.runs), bytes)
    }

    /// Whether one run covers all of `[start, end)`.
    pub fn covers(&self, start: u64, end: u64) -> bool {
        self.runs
            .range(..=start)
            .next_back()
            .is_some_and(|(&s, v)| s + v.len() as u64 >= end)
    }

    /// Records `data` at `off`, over whatever was there. A run that
    /// continues into the write is extended; growing its buffer beyond the
    /// exact need takes `try_extra(bytes)` to agree (the caller's budget).
    /// Without extra, the bytes occupied grow by at most
    /// `data.len() + EXTENT_OVERHEAD`. `limit` is the object size (no run
    /// grows past it). A big write starting a new run asks for the rest of
    /// the object up front.
    pub fn insert(
        &mut self,
        off: u64,
        data: &[u8],
        limit: u64,
        try_extra: &mut dyn FnMut(u64) -> bool,
    ) {
        let n = data.len() as u64;
        if n == 0 {
            return;
        }
        let end = off + n;
        // Inside one run: overwrite in place.
        if let Some((&s, v)) = self.runs.range_mut(..=off).next_back()
            && s + v.len() as u64 >= end
        {
            let at = (off - s) as usize;
            v[at..at + data.len()].copy_from_slice(data);
            return;
        }
        // Runs starting inside the write are overwritten: dropped, or (the
        // last one, if it reaches past the write) cut to start at `end`.
        let inside: Vec<u64> = self.runs.range(off..end).map(|(&s, _)| s).collect();
        for s in inside {
            if let Some(mut v) = self.runs.remove(&s) {
                let e = s + v.len() as u64;
                if e <= end {
                    self.bytes -= cost(&v, v.capacity());
                } else {
                    v.drain(..(end - s) as usize);
                    self.runs.insert(end, v);
                }
            }
        }
        // A run ending at or after `off`: the write continues it.
        if let Some((&s, v)) = self.runs.range_mut(..off).next_back()
            && s + v.len() as u64 >= off
        {
            v.truncate((off - s) as usize);
            let needed = (end - s) as usize;
            let old = v.capacity();
            if old < needed {
                let room = limit.saturating_sub(s).min(usize::MAX as u64) as usize;
                let grown = old.saturating_mul(2).min(room).max(needed);
                let want = if grown > needed && try_extra((grown - needed) as u64) {
                    grown
                } else {
                    needed
                };
                v.reserve_exact(want - v.len());
                self.bytes += (v.capacity() - old) as u64;
            }
            v.extend_from_slice(data);
            return;
        }
        // A big write starting a run is likely the start of a sequential
        // writer: size the run for the rest of the object now (budget
        // permitting) instead of growing it write by write.
        let room = limit.saturating_sub(off);
        let mut v = if n >= SPECULATE_MIN && room > n && try_extra(room - n) {
            Vec::with_capacity(room as usize)
        } else {
            Vec::with_capacity(data.len())
        };
        v.extend_from_slice(data);
        self.bytes += cost(&v, v.capacity());
        self.runs.insert(off, v);
    }
}

/// Copies the parts of `runs` inside `[start, end)` into `out`, as
/// (offset, bytes) pieces in offset order.
pub(super) fn collect(
    runs: &BTreeMap<u64, Vec<u8>>,
    start: u64,
    end: u64,
    out: &mut Vec<(u64, Vec<u8>)>,
) {
    if start >= end {
        return;
    }
    let first = runs
        .range(..=start)
        .next_back()
        .filter(|(s, v)| **s + v.len() as u64 > start);
    for (&s, v) in first.into_iter().chain(runs.range(start + 1..end)) {
        let a = s.max(start);
        let b = (s + v.len() as u64).min(end);
        if a < b {
            out.push((a, v[(a - s) as usize..(b - s) as usize].to_vec()));
        }
    }
}

/// Whether `pieces` together cover all of `[start, start+len)`.
pub(super) fn covered(pieces: &[(u64, Vec<u8>)], start: u64, len: u64) -> bool {
    let mut spans: Vec<(u64, u64)> = pieces
        .iter()
        .map(|(o, d)| (*o, *o + d.len() as u64))
        .collect();
    spans.sort_unstable();
    let mut reached = start;
    for (s, e) in spans {
        if s > reached {
            break;
        }
        reached = reached.max(e);
    }
    reached >= start + len
}

/// Lays `pieces` (in order, later ones winning) over `buf`, which holds
/// the bytes at `start..start+buf.len()`.
pub(super) fn apply(buf: &mut [u8], start: u64, pieces: &[(u64, Vec<u8>)]) {
    for (o, d) in pieces {
        let Some(at) = o.checked_sub(start).map(|a| a as usize) else {
            continue;
        };
        if let Some(dst) = buf.get_mut(at..at + d.len()) {
            dst.copy_from_slice(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OBJ: u64 = 1 << 14;

    fn check(e: &Extents, model: &[Option<u8>]) -> Result<(), TestCaseError> {
        let mut seen = vec![None; model.len()];
        let mut bytes = 0;
        let mut last_end = 0;
        for (&s, v) in e.runs() {
            prop_assert!(!v.is_empty(), "empty run at {}", s);
            prop_assert!(s >= last_end, "runs overlap at {}", s);
            last_end = s + v.len() as u64;
            prop_assert!(last_end <= OBJ);
            for (i, b) in v.iter().enumerate() {
                seen[s as usize + i] = Some(*b);
            }
            bytes += v.capacity() as u64 + EXTENT_OVERHEAD;
        }
        prop_assert_eq!(bytes, e.bytes());
        prop_assert!(seen == model, "runs differ from the model");
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn insert_matches_byte_model(
            writes in proptest::collection::vec((0u64..OBJ, 1u64..3000, any::<u8>(), any::<bool>()), 1..60)
        ) {
            let mut e = Extents::default();
            let mut model = vec![None; OBJ as usize];
            for (off, len, fill, allow) in writes {
                let len = len.min(OBJ - off);
                let data: Vec<u8> = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
                let before = e.bytes();
                let mut extra = 0;
                e.insert(off, &data, OBJ, &mut |x| { if allow { extra += x; } allow });
                prop_assert!(e.bytes() <= before + len + EXTENT_OVERHEAD + extra,
                    "grew {} for a {}-byte write (extra {})", e.bytes() - before, len, extra);
                for (i, b) in data.iter().enumerate() {
                    model[off as usize + i] = Some(*b);
                }
                check(&e, &model)?;
            }
            let mut pieces = Vec::new();
            collect(e.runs(), 0, OBJ, &mut pieces);
            let mut buf = vec![0u8; OBJ as usize];
            apply(&mut buf, 0, &pieces);
            for (i, m) in model.iter().enumerate() {
                if let Some(b) = m {
                    prop_assert_eq!(buf[i], *b);
                }
            }
        }
    }

    #[test]
    fn sequential_appends_grow_in_place() {
        let obj = 1 << 16;
        let mut e = Extents::default();
        for i in 0..16u64 {
            e.insert(i * 4096, &[i as u8; 4096], obj, &mut |_| true);
        }
        assert_eq!(e.runs().len(), 1);
        assert!(e.covers(0, obj));
        // Doubling stops at the object size.
        assert_eq!(e.bytes(), obj + EXTENT_OVERHEAD);
    }

    #[test]
    fn big_first_write_sizes_the_run() {
        let obj = 1 << 20;
        let mut e = Extents::default();
        let mut asked = 0;
        e.insert(0, &vec![1; 256 << 10], obj, &mut |x| {
            asked += x;
            true
        });
        assert_eq!(asked, obj - (256 << 10));
        assert_eq!(e.bytes(), obj + EXTENT_OVERHEAD);
        for i in 1..4u64 {
            e.insert(i << 18, &vec![1; 256 << 10], obj, &mut |_| {
                panic!("no growth needed")
            });
        }
        assert!(e.covers(0, obj));
    }

    #[test]
    fn without_extra_growth_is_exact() {
        let mut e = Extents::default();
        for i in 0..8u64 {
            e.insert(i * 100, &[1; 100], OBJ, &mut |_| false);
            assert_eq!(e.bytes(), (i + 1) * 100 + EXTENT_OVERHEAD);
        }
    }

    #[test]
    fn coverage_of_pieces() {
        let p = vec![(10, vec![0; 5]), (0, vec![0; 10]), (15, vec![0; 1])];
        assert!(covered(&p, 0, 16));
        assert!(covered(&p, 3, 10));
        assert!(!covered(&p, 0, 17));
        assert!(!covered(&[(1, vec![0; 5])], 0, 3));
    }
}
