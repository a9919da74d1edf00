//! The byte budget of a mount and its clean data.
//!
//! One [`Budget`] per mount, behind one lock that is only ever held for
//! bookkeeping (never across I/O, and never while copying more than one
//! write's bytes): clean extents in an LRU keyed by (image, snap, object),
//! plus the counts of dirty bytes, of bytes reserved for reads in flight
//! and of librados's copies of write-backs in flight.
//!
//! librados copies what it writes, so a dirty byte costs twice while its
//! write-back is in flight. The budget charges that up front:
//! `clean + 2*dirty + reserved <= capacity` always holds (making room
//! evicts clean objects, least recently used first), and since only dirty
//! bytes are ever in flight, the memory actually held,
//! `clean + dirty + reserved + writing`, stays within `capacity` too, and
//! a write-back never waits for room.
//!
//! Clean extents of the head are the newest view of those bytes: writes
//! patch them (or drop them) as they become dirty, so a hit needs no
//! dirty overlay.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use lru::LruCache;

use crate::store::SnapId;

/// (image id, snap id, object number).
pub(super) type Key = (u64, SnapId, u64);

/// Bookkeeping charged per clean extent on top of its buffer.
pub(super) const ENTRY_OVERHEAD: u64 = 384;

#[derive(Default)]
struct CleanObject {
    /// Non-overlapping extents by offset in the object.
    extents: BTreeMap<u64, Arc<Vec<u8>>>,
    bytes: u64,
    /// Read-ahead of a head other clients may be writing: trusted only
    /// until then (None: until invalidated).
    expires: Option<Instant>,
    /// Read ahead for a reader that has not finished it yet: until then,
    /// another prefetch may not evict it (a demand read still may).
    ahead_until: Option<Instant>,
}

impl CleanObject {
    fn expired(&self) -> bool {
        self.expires.is_some_and(|t| Instant::now() >= t)
    }

    fn protected(&self, now: Instant) -> bool {
        self.ahead_until.is_some_and(|t| now < t)
    }
}

fn cost(v: &Vec<u8>) -> u64 {
    v.capacity() as u64 + ENTRY_OVERHEAD
}

/// Offsets of the extents of `map` that overlap `[start, end)`.
fn overlapping(map: &BTreeMap<u64, Arc<Vec<u8>>>, start: u64, end: u64) -> Vec<u64> {
    let mut keys = Vec::new();
    if start >= end {
        return keys;
    }
    if let Some((&s, v)) = map.range(..=start).next_back()
        && s + v.len() as u64 > start
    {
        keys.push(s);
    }
    keys.extend(map.range(start + 1..end).map(|(&s, _)| s));
    keys
}

pub(super) struct Budget {
    lru: LruCache<Key, CleanObject>,
    pub capacity: u64,
    pub max_dirty: u64,
    pub clean: u64,
    pub dirty: u64,
    pub reserved: u64,
    /// librados's copies of the write-back batches in flight.
    pub writing: u64,
    /// Highest `used()` seen.
    pub peak: u64,
}

impl Budget {
    pub fn new(capacity: u64, max_dirty: u64) -> Budget {
        Budget {
            lru: LruCache::unbounded(),
            capacity,
            max_dirty,
            clean: 0,
            dirty: 0,
            reserved: 0,
            writing: 0,
            peak: 0,
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.clean + self.dirty + self.reserved + self.writing
    }

    /// Bytes held at most once every dirty byte is being written back.
    fn committed(&self) -> u64 {
        self.clean + 2 * self.dirty + self.reserved
    }

    fn note_peak(&mut self) {
        self.peak = self.peak.max(self.used());
    }

    /// Evicts clean objects until `n` more committed bytes fit; false if
    /// they cannot.
    fn evict_for(&mut self, n: u64) -> bool {
        while self.committed().saturating_add(n) > self.capacity {
            match self.lru.pop_lru() {
                Some((_, obj)) => self.clean -= obj.bytes,
                None => return false,
            }
        }
        true
    }

    /// Counts `n` more dirty bytes if they fit under both bounds.
    pub fn try_charge_dirty(&mut self, n: u64) -> bool {
        if self.dirty.saturating_add(n) > self.max_dirty || !self.evict_for(2 * n) {
            return false;
        }
        self.dirty += n;
        self.note_peak();
        true
    }

    pub fn uncharge_dirty(&mut self, n: u64) {
        self.dirty = self.dirty.saturating_sub(n);
    }

    /// Sets `n` bytes aside for a read, if they fit.
    pub fn try_reserve(&mut self, n: u64) -> bool {
        if !self.evict_for(n) {
            return false;
        }
        self.reserved += n;
        self.note_peak();
        true
    }

    /// Sets `n` bytes aside for a prefetch read, if they fit without
    /// evicting what was read ahead for a reader and not yet read by it
    /// (see [`protect`](Self::protect)): read-ahead must not evict the
    /// read-ahead that readers are about to use, its own stream's or
    /// another's.
    pub fn try_reserve_ahead(&mut self, n: u64) -> bool {
        let now = Instant::now();
        while self.committed().saturating_add(n) > self.capacity {
            // The least recently used object that is not protected (the
            // protected ones are few: at most a window per stream).
            let victim = self
                .lru
                .iter()
                .rev()
                .find(|(_, obj)| !obj.protected(now))
                .map(|(k, _)| *k);
            match victim.and_then(|k| self.lru.pop(&k)) {
                Some(obj) => self.clean -= obj.bytes,
                None => return false,
            }
        }
        self.reserved += n;
        self.note_peak();
        true
    }

    /// `key` was read ahead for a reader: no other prefetch evicts it
    /// until the reader is done with it ([`demote`](Self::demote)) or
    /// `until`, whichever comes first.
    pub fn protect(&mut self, key: &Key, until: Instant) {
        if let Some(obj) = self.lru.peek_mut(key) {
            obj.ahead_until = Some(until);
        }
    }

    pub fn unreserve(&mut self, n: u64) {
        self.reserved = self.reserved.saturating_sub(n);
    }

    /// Counts librados's copy of a write-back batch of `n` dirty bytes
    /// (paid for when they became dirty).
    pub fn charge_writing(&mut self, n: u64) {
        self.writing += n;
        self.note_peak();
    }

    pub fn uncharge_writing(&mut self, n: u64) {
        self.writing = self.writing.saturating_sub(n);
    }

    /// Makes `key` the first to be evicted (and no longer protected).
    pub fn demote(&mut self, key: &Key) {
        if let Some(obj) = self.lru.peek_mut(key) {
            obj.ahead_until = None;
        }
        self.lru.demote(key);
    }

    /// The extent holding all of `[off, off+len)`, with its offset; marks
    /// the object recently used.
    pub fn lookup(&mut self, key: &Key, off: u64, len: u64) -> Option<(u64, Arc<Vec<u8>>)> {
        if self.lru.peek(key)?.expired() {
            self.remove_object(key);
            return None;
        }
        let obj = self.lru.get(key)?;
        let (&s, data) = obj.extents.range(..=off).next_back()?;
        (s + data.len() as u64 >= off + len).then(|| (s, data.clone()))
    }

    /// Whether `[start, end)` is held (without marking it used).
    pub fn covers(&self, key: &Key, start: u64, end: u64) -> bool {
        self.lru.peek(key).is_some_and(|obj| {
            !obj.expired()
                && obj
                    .extents
                    .range(..=start)
                    .next_back()
                    .is_some_and(|(&s, d)| s + d.len() as u64 >= end)
        })
    }

    /// Adds `data` (the bytes at `start`) in place of the extents it
    /// overlaps, first releasing `prepaid` reserved bytes. False (and
    /// nothing added) when it does not fit or one extent already holds
    /// all of it. With `expires`, the whole object is trusted until then
    /// at most.
    pub fn insert(
        &mut self,
        key: Key,
        start: u64,
        data: Arc<Vec<u8>>,
        prepaid: u64,
        expires: Option<Instant>,
    ) -> bool {
        self.unreserve(prepaid);
        let end = start + data.len() as u64;
        // Already held: what is held is as current (a write in between would
        // have made `data` stale, and patches what is held), and possibly
        // larger (a prefetched object must not shrink to one read of it).
        if self.covers(&key, start, end) {
            return false;
        }
        // Out of the LRU while we make room, so eviction cannot pick it.
        let mut obj = match self.lru.pop(&key) {
            Some(obj) if obj.expired() => {
                self.clean -= obj.bytes;
                CleanObject::default()
            }
            Some(obj) => obj,
            None => CleanObject {
                expires,
                ..Default::default()
            },
        };
        if let Some(t) = expires {
            obj.expires = Some(obj.expires.map_or(t, |old| old.min(t)));
        }
        for s in overlapping(&obj.extents, start, end) {
            if let Some(old) = obj.extents.remove(&s) {
                obj.bytes -= cost(&old);
                self.clean -= cost(&old);
            }
        }
        let c = cost(&data);
        let fits = !data.is_empty() && self.evict_for(c);
        if fits {
            obj.extents.insert(start, data);
            obj.bytes += c;
            self.clean += c;
            self.note_peak();
        }
        if !obj.extents.is_empty() {
            self.lru.put(key, obj);
        }
        fits
    }

    /// A write of `data` at `off` of a head object: the clean extents it
    /// overlaps take the new bytes (or are dropped while a reader still
    /// holds them).
    pub fn patch(&mut self, key: &Key, off: u64, data: &[u8]) {
        let Some(obj) = self.lru.peek_mut(key) else {
            return;
        };
        let end = off + data.len() as u64;
        for s in overlapping(&obj.extents, off, end) {
            let Some(arc) = obj.extents.get_mut(&s) else {
                continue;
            };
            match Arc::get_mut(arc) {
                Some(v) => {
                    let a = off.max(s);
                    let b = end.min(s + v.len() as u64);
                    v[(a - s) as usize..(b - s) as usize]
                        .copy_from_slice(&data[(a - off) as usize..(b - off) as usize]);
                }
                None => {
                    if let Some(old) = obj.extents.remove(&s) {
                        obj.bytes -= cost(&old);
                        self.clean -= cost(&old);
                    }
                }
            }
        }
        if obj.extents.is_empty() {
            self.lru.pop(key);
        }
    }

    pub fn remove_object(&mut self, key: &Key) {
        if let Some(obj) = self.lru.pop(key) {
            self.clean -= obj.bytes;
        }
    }

    /// Drops every clean object of image `image`.
    pub fn remove_image(&mut self, image: u64) {
        let keys: Vec<Key> = self
            .lru
            .iter()
            .filter(|(k, _)| k.0 == image)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.remove_object(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_keeps_the_bound_and_order() {
        let mut b = Budget::new(3 * (1000 + ENTRY_OVERHEAD), 0);
        for o in 0..3 {
            assert!(b.insert((1, 0, o), 0, Arc::new(vec![o as u8; 1000]), 0, None));
        }
        assert!(b.lookup(&(1, 0, 0), 10, 10).is_some()); // 0 is now recent
        assert!(b.insert((1, 0, 3), 0, Arc::new(vec![3; 1000]), 0, None));
        assert!(b.covers(&(1, 0, 0), 0, 1000));
        assert!(!b.covers(&(1, 0, 1), 0, 1), "LRU object should be gone");
        assert!(b.used() <= b.capacity);
        assert_eq!(b.peak, b.capacity);
    }

    #[test]
    fn insert_replaces_overlaps_and_patch_updates() {
        let mut b = Budget::new(1 << 20, 0);
        let k = (1, 0, 0);
        b.insert(k, 0, Arc::new(vec![1; 100]), 0, None);
        b.insert(k, 200, Arc::new(vec![2; 100]), 0, None);
        b.insert(k, 50, Arc::new(vec![3; 100]), 0, None);
        // Held already: not replaced by a smaller piece.
        assert!(!b.insert(k, 60, Arc::new(vec![4; 10]), 0, None));
        assert!(!b.covers(&k, 0, 10));
        assert!(b.covers(&k, 50, 150));
        assert!(b.covers(&k, 200, 300));
        b.patch(&k, 140, &[9; 70]);
        let (s, d) = b.lookup(&k, 50, 100).unwrap();
        assert_eq!(s, 50);
        assert_eq!(d[89], 3);
        assert_eq!(d[90], 9);
        let (_, d) = b.lookup(&k, 200, 100).unwrap();
        assert_eq!(&d[..10], &[9; 10]);
        assert_eq!(d[10], 2);
        // A reader holding the extent: the patch drops it instead.
        let held = b.lookup(&k, 200, 1).unwrap();
        b.patch(&k, 250, &[7]);
        assert!(!b.covers(&k, 200, 201));
        drop(held);
        assert_eq!(b.clean, 100 + ENTRY_OVERHEAD);
        b.remove_image(1);
        assert_eq!(b.clean, 0);
    }

    #[test]
    fn too_big_is_refused() {
        let mut b = Budget::new(1000, 0);
        assert!(!b.insert((1, 0, 0), 0, Arc::new(vec![0; 1000]), 0, None));
        assert_eq!(b.used(), 0);
        assert!(b.try_reserve(500));
        assert!(!b.try_reserve(501));
        b.unreserve(500);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn read_ahead_expires() {
        let mut b = Budget::new(1 << 20, 0);
        let (k, j) = ((1, 0, 0), (1, 0, 1));
        let past = Instant::now() - std::time::Duration::from_millis(1);
        let later = Instant::now() + std::time::Duration::from_secs(60);
        assert!(b.insert(k, 0, Arc::new(vec![1; 100]), 0, Some(past)));
        assert!(!b.covers(&k, 0, 100), "expired read-ahead is not held");
        assert!(b.lookup(&k, 0, 10).is_none());
        assert_eq!(b.clean, 0, "an expired object's bytes are released");
        assert!(b.insert(j, 0, Arc::new(vec![2; 100]), 0, Some(later)));
        assert!(b.lookup(&j, 0, 10).is_some());
        // A permanent insert does not make a read-ahead object permanent.
        assert!(b.insert(j, 100, Arc::new(vec![3; 100]), 0, None));
        assert!(b.insert(j, 200, Arc::new(vec![4; 100]), 0, Some(past)));
        assert!(!b.covers(&j, 0, 10), "the earliest deadline wins");
    }
}
