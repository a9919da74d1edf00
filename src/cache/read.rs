//! Reads: clean hits, RADOS reads in flight that others join ("fills"),
//! the dirty overlay at the head, and sequential prefetch.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::debug;
use parking_lot::{Condvar, Mutex};

use super::budget::{ENTRY_OVERHEAD, Key};
use super::workers::Priority;
use super::{ImageState, bump, extents};
use crate::error::ImageError;
use crate::store::{NOSNAP, SnapId};

/// Below this many sequential reads in a row a stream does not prefetch.
const SEQUENTIAL_READS: u32 = 2;

/// Read streams tracked per image.
const MAX_STREAMS: usize = 8;

/// First prefetch window (at least one object).
const INITIAL_WINDOW: u64 = 4 << 20;

/// How long read-ahead waits for its reader before other prefetches may
/// evict it (until then only demand reads, writes and the reader's own
/// progress do).
const AHEAD_PROTECTION: Duration = Duration::from_secs(3);

/// A RADOS read of `[start, end)` of one object, in flight; others reading
/// inside that range wait for it instead of reading again.
pub(super) struct Fill {
    pub(super) snap: SnapId,
    pub(super) object_no: u64,
    pub(super) start: u64,
    pub(super) end: u64,
    /// Budget bytes set aside for it: its buffer and librados's (0 if
    /// there was no room; a demand read does not wait for room).
    pub(super) reserved: u64,
    /// Read ahead of a reader (by the pool), not asked for by one.
    pub(super) prefetch: bool,
    /// A write (or invalidation) since it started: its bytes may be old.
    pub(super) stale: AtomicBool,
    pub(super) state: Mutex<FillState>,
    pub(super) done: Condvar,
}

pub(super) enum FillState {
    /// Waiting for a worker; a reader that needs it may run it instead.
    Queued,
    Running,
    /// The bytes, or None if the read failed.
    Done(Option<Arc<Vec<u8>>>),
}

impl Fill {
    pub(super) fn new(
        snap: SnapId,
        object_no: u64,
        (start, end): (u64, u64),
        reserved: u64,
        queued: bool,
    ) -> Arc<Fill> {
        Arc::new(Fill {
            snap,
            object_no,
            start,
            end,
            reserved,
            prefetch: queued,
            stale: AtomicBool::new(false),
            state: Mutex::new(if queued {
                FillState::Queued
            } else {
                FillState::Running
            }),
            done: Condvar::new(),
        })
    }

    pub(super) fn serves(&self, start: u64, end: u64) -> bool {
        self.start <= start && end <= self.end && !self.stale.load(Ordering::SeqCst)
    }
}

/// Reads in flight by (snap, object).
pub(super) type Fills = HashMap<(SnapId, u64), Vec<Arc<Fill>>>;

/// A reader of one snap id (or the head) moving forward through the image.
pub(super) struct Stream {
    /// The mount-wide id the window is shared under.
    pub(super) id: u64,
    pub(super) snap: SnapId,
    /// Where the next sequential read is expected.
    pub(super) next: u64,
    /// Sequential reads so far.
    pub(super) sequential: u32,
    /// Bytes to keep read ahead of `next`.
    pub(super) window: u64,
    /// Prefetch was scheduled up to here.
    pub(super) scheduled: u64,
    /// `Streams::tick` of its last read (the least recent goes first).
    pub(super) used: u64,
}

/// The read streams of one image.
#[derive(Default)]
pub(super) struct Streams {
    pub(super) list: Vec<Stream>,
    pub(super) tick: u64,
}

fn round_up(x: u64, unit: u64) -> u64 {
    if unit == 0 {
        return x;
    }
    x.div_ceil(unit).saturating_mul(unit)
}

impl ImageState {
    /// Marks the head reads of `object_no` in flight stale.
    pub(super) fn stale_fills(&self, object_no: u64) {
        if let Some(list) = self.fills.lock().get(&(NOSNAP, object_no)) {
            for f in list {
                f.stale.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Copies `out.len()` bytes at `offset` of an object at `snap` into
    /// `out` (see [`read_shared`](Self::read_shared)).
    pub(super) fn read(
        self: &Arc<Self>,
        snap: SnapId,
        object_no: u64,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), ImageError> {
        if out.is_empty() {
            return Ok(());
        }
        let (data, at) = self.read_shared(snap, object_no, offset, out.len() as u64)?;
        out.copy_from_slice(&data[at..at + out.len()]);
        Ok(())
    }

    /// The `len` (> 0) bytes at `offset` of an object at `snap`, as a
    /// buffer and where they start in it, without copying them: a clean
    /// extent's buffer, else that of a RADOS read in flight that covers
    /// them (joined), else that of a new read of exactly them.
    pub(super) fn read_shared(
        self: &Arc<Self>,
        snap: SnapId,
        object_no: u64,
        offset: u64,
        len: u64,
    ) -> Result<(Arc<Vec<u8>>, usize), ImageError> {
        let key = self.key(snap, object_no);
        let end = offset + len;
        let counters = &self.shared.counters;
        let hit = self.shared.budget.lock().lookup(&key, offset, len);
        if let Some((start, data)) = hit {
            bump(&counters.hits, 1);
            return Ok((data, (offset - start) as usize));
        }
        // Asked here, not under the fills lock (the image's own locks).
        let object_size = if snap == NOSNAP {
            0
        } else {
            self.io.layout().object_size
        };
        let mut may_join = true;
        loop {
            let (fill, joined) = {
                let mut fills = self.fills.lock();
                // Fills complete under this lock: one that completed since
                // the lookup above has its bytes in the cache by now.
                let hit = self.shared.budget.lock().lookup(&key, offset, len);
                if let Some((start, data)) = hit {
                    drop(fills);
                    bump(&counters.hits, 1);
                    return Ok((data, (offset - start) as usize));
                }
                let list = fills.entry((snap, object_no)).or_default();
                match list.iter().find(|f| may_join && f.serves(offset, end)) {
                    Some(f) => (f.clone(), true),
                    None => {
                        let fill_end = self.demand_fill_end(&key, list, offset, end, object_size);
                        let cost = 2 * (fill_end - offset) + ENTRY_OVERHEAD;
                        let reserved = if self.shared.budget.lock().try_reserve(cost) {
                            cost
                        } else {
                            0
                        };
                        let f = Fill::new(snap, object_no, (offset, fill_end), reserved, false);
                        list.push(f.clone());
                        (f, false)
                    }
                }
            };
            if !joined {
                bump(&counters.misses, 1);
                return Ok((self.run_fill(&fill)?, 0));
            }
            match self.await_fill(&fill) {
                Some(data) => {
                    bump(&counters.joined, 1);
                    return Ok((data, (offset - fill.start) as usize));
                }
                // It failed: read on our own (and report our own error).
                None => may_join = false,
            }
        }
    }

    /// Waits for a fill to complete, running it here if no worker has
    /// started it yet. None if it failed.
    pub(super) fn await_fill(self: &Arc<Self>, fill: &Arc<Fill>) -> Option<Arc<Vec<u8>>> {
        loop {
            let mut st = fill.state.lock();
            match &*st {
                FillState::Done(data) => return data.clone(),
                FillState::Running => fill.done.wait(&mut st),
                FillState::Queued => {
                    *st = FillState::Running;
                    drop(st);
                    return self.run_fill(fill).ok();
                }
            }
        }
    }

    /// Where a RADOS read for a miss at `[offset, end)` of an object ends:
    /// at `end`, or for a snapshot (which never changes) at the object's
    /// end when the read continues what is held or being read of the
    /// object, or starts it. That is how the kernel's read-ahead of a
    /// snapshot file arrives: several requests at once, ahead of our own
    /// read-ahead, often out of order; read piece by piece, each piece
    /// would be read again by our read-ahead of the whole object.
    fn demand_fill_end(
        &self,
        key: &Key,
        fills: &[Arc<Fill>],
        offset: u64,
        end: u64,
        object_size: u64,
    ) -> u64 {
        if key.1 == NOSNAP {
            return end;
        }
        let continues = offset == 0
            || fills.iter().any(|f| f.start < offset && offset <= f.end)
            || self.shared.budget.lock().covers(key, offset - 1, offset);
        if continues { end.max(object_size) } else { end }
    }

    /// Claims a queued fill for the caller; false if someone else has.
    pub(super) fn claim(fill: &Fill) -> bool {
        let mut st = fill.state.lock();
        if matches!(*st, FillState::Queued) {
            *st = FillState::Running;
            true
        } else {
            false
        }
    }

    /// Performs a (claimed) fill: reads, completes it for its joiners and
    /// keeps its bytes if still current.
    pub(super) fn run_fill(self: &Arc<Self>, fill: &Arc<Fill>) -> Result<Arc<Vec<u8>>, ImageError> {
        let result = self
            .fetch(fill.snap, fill.object_no, fill.start, fill.end - fill.start)
            .map(Arc::new);
        self.finish_fill(fill, result.as_ref().ok().cloned());
        result
    }

    /// Completes a fill with its bytes (None: failed or abandoned): out of
    /// the table, into the clean cache if still current, to its joiners.
    pub(super) fn finish_fill(&self, fill: &Arc<Fill>, data: Option<Arc<Vec<u8>>>) {
        {
            let mut fills = self.fills.lock();
            let k = (fill.snap, fill.object_no);
            if let Some(list) = fills.get_mut(&k) {
                list.retain(|f| !Arc::ptr_eq(f, fill));
                if list.is_empty() {
                    fills.remove(&k);
                }
            }
            // Under the fills lock: a write that marks fills stale after
            // this point patches what we insert.
            let key = self.key(fill.snap, fill.object_no);
            // Kept: snapshots, and the head while no one else may write it.
            // Otherwise only read-ahead is kept, for the reader it was made
            // for and briefly, as if that reader had read it a moment ago.
            let keep = if fill.snap != NOSNAP || self.io.cache_head() {
                Some(None)
            } else if fill.prefetch {
                Some(Some(Instant::now() + self.shared.readahead_ttl))
            } else {
                None
            };
            self.shared.release(|b| match (&data, keep) {
                (Some(d), Some(expires)) if !fill.stale.load(Ordering::SeqCst) => {
                    if b.insert(key, fill.start, d.clone(), fill.reserved, expires) && fill.prefetch
                    {
                        b.protect(&key, Instant::now() + AHEAD_PROTECTION);
                    }
                }
                _ => b.unreserve(fill.reserved),
            });
        }
        *fill.state.lock() = FillState::Done(data);
        fill.done.notify_all();
    }

    /// The bytes at `[offset, offset+len)` of an object: RADOS with, at
    /// the head, the dirty data laid over it.
    pub(super) fn fetch(
        &self,
        snap: SnapId,
        object_no: u64,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, ImageError> {
        // Copied before RADOS is read: a write-back completing meanwhile
        // is then either in RADOS's answer or in this copy.
        let overlay = if snap == NOSNAP {
            self.overlay(object_no, offset, len)
        } else {
            Vec::new()
        };
        let mut buf = if !overlay.is_empty() && extents::covered(&overlay, offset, len) {
            vec![0u8; len as usize]
        } else {
            self.io.read_object(snap, object_no, offset, len)?
        };
        buf.resize(len as usize, 0);
        buf.shrink_to_fit();
        extents::apply(&mut buf, offset, &overlay);
        Ok(buf)
    }

    /// Copies of the dirty bytes of `[offset, offset+len)`, oldest first.
    pub(super) fn overlay(&self, object_no: u64, offset: u64, len: u64) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        if let Some(slot) = self.existing_slot(object_no) {
            let st = slot.lock();
            if let Some(batch) = &st.inflight {
                extents::collect(batch, offset, offset + len, &mut out);
            }
            extents::collect(st.dirty.runs(), offset, offset + len, &mut out);
        }
        out
    }

    pub(super) fn has_dirty(&self, object_no: u64) -> bool {
        self.existing_slot(object_no).is_some_and(|s| {
            let st = s.lock();
            !st.dirty.is_empty() || st.inflight.is_some()
        })
    }

    /// A read was served: [`start_read`](Self::start_read) and
    /// [`finish_read`](Self::finish_read) at once.
    pub(super) fn note_read(self: &Arc<Self>, snap: SnapId, offset: u64, len: u64) {
        let sequential = self.start_read(snap, offset, len);
        self.finish_read(snap, offset, len, sequential);
    }

    /// A read of `[offset, offset+len)` at `snap` is about to be served:
    /// tracks sequential readers and schedules read-ahead for one now, so
    /// it is under way while the read itself waits. True if the read
    /// continues a stream (see [`finish_read`](Self::finish_read)).
    pub(super) fn start_read(self: &Arc<Self>, snap: SnapId, offset: u64, len: u64) -> bool {
        if len == 0 || self.shared.max_window.max(self.shared.max_window_immutable) == 0 {
            return false;
        }
        let layout = self.io.layout();
        let unit = if layout.is_plain() {
            layout.object_size
        } else {
            layout.stripe_unit
        };
        let end = offset.saturating_add(len);
        // Reads may arrive out of order (several FUSE threads, the
        // kernel's read-ahead keeping several requests in flight):
        // "sequential" is "near where the last ended".
        let slack = len.saturating_mul(4).clamp(64 << 10, 4 << 20);
        let plan = {
            let mut s = self.streams.lock();
            s.tick += 1;
            let tick = s.tick;
            let found = s.list.iter_mut().find(|st| {
                st.snap == snap
                    && offset.saturating_add(slack) >= st.next
                    && offset <= st.next.saturating_add(slack)
            });
            match found {
                // Re-reading what the stream already covered is no progress.
                Some(st) if end <= st.next => {
                    st.used = tick;
                    (false, None)
                }
                Some(st) => {
                    st.used = tick;
                    st.sequential += 1;
                    st.next = end;
                    if st.sequential < SEQUENTIAL_READS {
                        (true, None)
                    } else {
                        let max = self.shared.stream_window(st.id, snap != NOSNAP);
                        st.window = if st.window == 0 {
                            INITIAL_WINDOW.max(layout.object_size).max(2 * len).min(max)
                        } else {
                            (st.window * 2).min(max)
                        };
                        let from = st.scheduled.max(st.next);
                        let to = round_up(st.next.saturating_add(st.window), unit);
                        let plan = (to > from && st.window > 0).then(|| {
                            st.scheduled = to;
                            (from, to)
                        });
                        (true, plan)
                    }
                }
                None => {
                    if s.list.len() >= MAX_STREAMS
                        && let Some(i) = (0..s.list.len()).min_by_key(|&i| s.list[i].used)
                    {
                        s.list.swap_remove(i);
                    }
                    let id = self.shared.next_stream.fetch_add(1, Ordering::Relaxed);
                    s.list.push(Stream {
                        id,
                        snap,
                        next: end,
                        sequential: 0,
                        window: 0,
                        scheduled: 0,
                        used: tick,
                    });
                    (false, None)
                }
            }
        };
        let (sequential, plan) = plan;
        if let Some((from, to)) = plan
            && !self.prefetch(snap, from, to)
        {
            // No room now: try again from here on the next read.
            let mut s = self.streams.lock();
            if let Some(st) = s
                .list
                .iter_mut()
                .find(|st| st.snap == snap && st.scheduled == to)
            {
                st.scheduled = from;
            }
        }
        sequential
    }

    /// The read [`start_read`](Self::start_read) announced was served. A
    /// sequential reader is done with the objects it read to their end:
    /// those are evicted first, before what was read ahead for it.
    pub(super) fn finish_read(&self, snap: SnapId, offset: u64, len: u64, sequential: bool) {
        if !sequential {
            return;
        }
        let layout = self.io.layout();
        let done: Vec<Key> = layout
            .map(offset, len)
            .iter()
            .filter(|e| e.reaches_object_end(layout.object_size))
            .map(|e| self.key(snap, e.object_no))
            .collect();
        if !done.is_empty() {
            let mut b = self.shared.budget.lock();
            for key in &done {
                b.demote(key);
            }
        }
    }

    /// Schedules reads of the objects behind image range `[from, to)` at
    /// `snap` that are neither held nor being read; false if the budget ran
    /// out on the way.
    pub(super) fn prefetch(self: &Arc<Self>, snap: SnapId, from: u64, to: u64) -> bool {
        let Some(size) = self.io.size_at(snap) else {
            return true;
        };
        let to = to.min(size);
        if from >= to {
            return true;
        }
        // One span per object (a plain layout's range ends on an object
        // boundary, so spans run to the object's end).
        let mut spans: Vec<(u64, u64, u64)> = Vec::new();
        let mut index: HashMap<u64, usize> = HashMap::new();
        for e in self.io.layout().map(from, to - from) {
            match index.get(&e.object_no) {
                Some(&i) => {
                    spans[i].1 = spans[i].1.min(e.offset);
                    spans[i].2 = spans[i].2.max(e.offset + e.len);
                }
                None => {
                    index.insert(e.object_no, spans.len());
                    spans.push((e.object_no, e.offset, e.offset + e.len));
                }
            }
        }
        for (object_no, start, end) in spans {
            let key = self.key(snap, object_no);
            if self.shared.budget.lock().covers(&key, start, end) {
                continue;
            }
            // Objects being written are read on demand only: a prefetch
            // would copy their dirty bytes for nothing.
            if snap == NOSNAP && self.has_dirty(object_no) {
                continue;
            }
            let fill = {
                let mut fills = self.fills.lock();
                let k = (snap, object_no);
                if fills
                    .get(&k)
                    .is_some_and(|l| l.iter().any(|f| f.serves(start, end)))
                {
                    continue;
                }
                // Until it completes, librados holds a copy as well.
                let cost = 2 * (end - start) + ENTRY_OVERHEAD;
                if !self.shared.budget.lock().try_reserve_ahead(cost) {
                    return false;
                }
                let fill = Fill::new(snap, object_no, (start, end), cost, true);
                fills.entry(k).or_default().push(fill.clone());
                fill
            };
            bump(&self.shared.counters.prefetched, end - start);
            let image = self.clone();
            self.shared.workers.submit(
                Priority::Prefetch,
                Box::new(move || {
                    if !Self::claim(&fill) {
                        return;
                    }
                    if fill.stale.load(Ordering::SeqCst) {
                        // Written to (or invalidated) before it started.
                        image.finish_fill(&fill, None);
                    } else if let Err(e) = image.run_fill(&fill) {
                        debug!(
                            "image {}: prefetch of object {object_no}: {e}",
                            image.io.name()
                        );
                    }
                }),
            );
        }
        true
    }
}
