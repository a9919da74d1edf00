//! Writes: dirty runs per object, write-back batches (one per object in
//! flight, so writes reach RADOS in order), write-through of oversized
//! writes, flush, and the background flusher.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::extents::{EXTENT_OVERHEAD, Extents};
use super::workers::Priority;
use super::{ImageState, Shared, allocator, bump};
use crate::error::ImageError;
use crate::layout::Layout;
use crate::store::NOSNAP;

/// The dirty state of one head object.
#[derive(Default)]
pub(super) struct SlotState {
    pub(super) dirty: Extents,
    /// When `dirty` last went from empty to not.
    pub(super) dirty_since: Option<Instant>,
    /// Sequence number of the oldest write in `dirty`.
    pub(super) first_seq: u64,
    /// The batch being written to RADOS (older than `dirty`).
    pub(super) inflight: Option<Arc<BTreeMap<u64, Vec<u8>>>>,
    /// Sequence number of the oldest write in the batch (MAX: none).
    pub(super) inflight_seq: u64,
    pub(super) inflight_bytes: u64,
    /// A batch (or a write-through) is in flight.
    pub(super) flushing: bool,
    /// A write-back job is queued.
    pub(super) queued: bool,
    /// Became entirely dirty while flushing: queue again when done.
    pub(super) requeue: bool,
    /// Taken out of the image's table; look it up again.
    pub(super) removed: bool,
}

impl SlotState {
    pub(super) fn idle(&self) -> bool {
        self.dirty.is_empty() && !self.flushing && !self.queued
    }
}

pub(super) type Slot = Arc<Mutex<SlotState>>;

/// Bytes of object `object_no` that lie inside an image of `size` bytes.
pub(super) fn object_len(layout: &Layout, size: u64, object_no: u64) -> u64 {
    let (os, su, sc) = (layout.object_size, layout.stripe_unit, layout.stripe_count);
    let set_bytes = os.saturating_mul(sc);
    let set_start = (object_no / sc).saturating_mul(set_bytes);
    if size <= set_start {
        return 0;
    }
    let in_set = (size - set_start).min(set_bytes);
    let row = su.saturating_mul(sc);
    let pos = object_no % sc;
    (in_set / row) * su + (in_set % row).saturating_sub(pos * su).min(su)
}

/// Writes back dirty data that is old enough, or all of it under pressure.
pub(super) fn flusher(shared: Arc<Shared>) {
    let tick = (shared.max_age / 4).clamp(Duration::from_millis(5), allocator::TRIM_EVERY);
    let mut trimmer = allocator::Trimmer::new();
    loop {
        let pressure = {
            let mut f = shared.flusher.lock();
            if !f.wake && !f.shutdown {
                shared.flusher_cv.wait_for(&mut f, tick);
            }
            if f.shutdown {
                return;
            }
            f.wake = false;
            std::mem::take(&mut f.pressure)
        };
        let images: Vec<Arc<ImageState>> = {
            let mut list = shared.images.lock();
            list.retain(|w| w.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        let now = Instant::now();
        for image in images {
            image.queue_due(now, pressure);
        }
        // Give memory freed by the churn of big buffers back to the system
        // (see `allocator`).
        trimmer.tick(
            shared.counters.activity(),
            shared.capacity + allocator::TRIM_ABOVE_BUDGET,
        );
    }
}

impl ImageState {
    /// Runs `f` on the (live) dirty state of `object_no`, creating it.
    pub(super) fn with_slot<R>(
        &self,
        object_no: u64,
        f: impl FnOnce(&Slot, &mut SlotState) -> R,
    ) -> R {
        loop {
            let slot = self.slots.lock().entry(object_no).or_default().clone();
            let mut st = slot.lock();
            if st.removed {
                continue;
            }
            return f(&slot, &mut st);
        }
    }

    pub(super) fn existing_slot(&self, object_no: u64) -> Option<Slot> {
        self.slots.lock().get(&object_no).cloned()
    }

    /// Forgets the dirty state of `object_no` if nothing is left in it.
    pub(super) fn remove_if_idle(&self, object_no: u64) {
        let mut slots = self.slots.lock();
        let Some(slot) = slots.get(&object_no).cloned() else {
            return;
        };
        let mut st = slot.lock();
        if st.idle() {
            st.removed = true;
            drop(st);
            slots.remove(&object_no);
        }
    }

    pub(super) fn write(
        self: &Arc<Self>,
        object_no: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<(), ImageError> {
        if data.is_empty() {
            return Ok(());
        }
        let charge = data.len() as u64 + EXTENT_OVERHEAD;
        if charge > self.shared.max_dirty {
            return self.write_through(object_no, offset, data);
        }
        self.shared.charge_dirty(charge);
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let layout = self.io.layout();
        let valid = object_len(&layout, self.io.size_at(NOSNAP).unwrap_or(0), object_no);
        let key = self.key(NOSNAP, object_no);
        let shared = &self.shared;
        let queue = self.with_slot(object_no, |_, st| {
            let before = st.dirty.bytes();
            let was_empty = st.dirty.is_empty();
            let mut extra = 0;
            st.dirty
                .insert(offset, data, layout.object_size, &mut |more| {
                    let ok = shared.budget.lock().try_charge_dirty(more);
                    if ok {
                        extra += more;
                    }
                    ok
                });
            let after = st.dirty.bytes();
            if was_empty {
                st.dirty_since = Some(Instant::now());
                st.first_seq = seq;
            }
            // Readers in flight may have missed this write; clean copies
            // take it now, under the slot lock, so they follow write order.
            self.stale_fills(object_no);
            let charged = charge + extra;
            shared.release(|b| {
                if after > before + charged {
                    // Not reached (insert's bound); counted all the same.
                    b.dirty += after - before - charged;
                } else {
                    b.uncharge_dirty(before + charged - after);
                }
                b.patch(&key, offset, data);
            });
            let full = valid > 0 && st.dirty.covers(0, valid);
            if full && st.flushing {
                st.requeue = true;
            }
            let queue = full && !st.flushing && !st.queued;
            if queue {
                st.queued = true;
            }
            queue
        });
        if queue {
            self.queue_object_write_back(object_no);
        }
        Ok(())
    }

    /// A write bigger than the dirty bound goes straight to RADOS, after
    /// (and in the same exclusive turn as) the object's older dirty data.
    pub(super) fn write_through(
        self: &Arc<Self>,
        object_no: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<(), ImageError> {
        let (slot, older) = loop {
            let mut g = self.progress.lock();
            let taken = self.with_slot(object_no, |slot, st| {
                if st.flushing {
                    return None;
                }
                self.shared.budget.lock().charge_writing(st.dirty.bytes());
                let batch = Self::start_batch(st);
                self.forget_clean(object_no);
                Some((slot.clone(), batch))
            });
            match taken {
                Some(t) => break t,
                None => self.progress_cv.wait(&mut g),
            }
        };
        let older_result = self.write_batch(object_no, &older);
        let result = self.io.write_object(object_no, offset, data);
        if result.is_ok() {
            bump(&self.shared.counters.written_back, data.len() as u64);
        }
        self.finish_batch(&slot, object_no, &older, older_result, true);
        result
    }

    pub(super) fn write_batch(
        &self,
        object_no: u64,
        batch: &BTreeMap<u64, Vec<u8>>,
    ) -> Result<(), ImageError> {
        match batch.len() {
            0 => Ok(()),
            1 => batch
                .iter()
                .try_for_each(|(&off, d)| self.io.write_object(object_no, off, d)),
            _ => {
                let extents: Vec<(u64, &[u8])> =
                    batch.iter().map(|(&off, d)| (off, d.as_slice())).collect();
                self.io.write_object_extents(object_no, &extents)
            }
        }
    }

    /// Moves the dirty runs of a slot into a batch in flight.
    pub(super) fn start_batch(st: &mut SlotState) -> Arc<BTreeMap<u64, Vec<u8>>> {
        let (runs, bytes) = st.dirty.take();
        st.inflight_seq = if runs.is_empty() {
            u64::MAX
        } else {
            st.first_seq
        };
        let batch = Arc::new(runs);
        st.inflight = Some(batch.clone());
        st.inflight_bytes = bytes;
        st.flushing = true;
        st.first_seq = 0;
        st.dirty_since = None;
        batch
    }

    pub(super) fn queue_object_write_back(self: &Arc<Self>, object_no: u64) {
        let image = self.clone();
        self.shared.workers.submit(
            Priority::WriteBack,
            Box::new(move || image.write_back_object(object_no)),
        );
    }

    /// The write-back job of one object: its dirty runs as one batch.
    pub(super) fn write_back_object(self: &Arc<Self>, object_no: u64) {
        let Some(slot) = self.existing_slot(object_no) else {
            return;
        };
        let batch = {
            let mut st = slot.lock();
            st.queued = false;
            if st.removed || st.flushing || st.dirty.is_empty() {
                drop(st);
                self.notify_progress();
                return;
            }
            self.shared.budget.lock().charge_writing(st.dirty.bytes());
            Self::start_batch(&mut st)
        };
        let result = self.write_batch(object_no, &batch);
        self.finish_batch(&slot, object_no, &batch, result, false);
    }

    pub(super) fn finish_batch(
        self: &Arc<Self>,
        slot: &Slot,
        object_no: u64,
        batch: &BTreeMap<u64, Vec<u8>>,
        result: Result<(), ImageError>,
        forget: bool,
    ) {
        let result_failed = result.is_err();
        // The error and the counters first, the budget next, and only then
        // the slot says "nothing in flight": a flush that sees the slot idle
        // must also see the error (or it would report success and leave the
        // failure to the next fsync) and the bytes released.
        match result {
            Ok(()) => {
                let n: usize = batch.values().map(Vec::len).sum();
                bump(&self.shared.counters.written_back, n as u64);
            }
            Err(e) => self.record_error(e, &self.lost_ranges(object_no, batch)),
        }
        let requeue = {
            let mut st = slot.lock();
            let freed = std::mem::take(&mut st.inflight_bytes);
            // Slot before budget, as where a batch starts.
            self.shared.release(|b| {
                b.uncharge_dirty(freed);
                b.uncharge_writing(freed);
            });
            st.inflight = None;
            st.inflight_seq = 0;
            st.flushing = false;
            if forget || result_failed {
                self.forget_clean(object_no);
            }
            let requeue = std::mem::take(&mut st.requeue) && !st.dirty.is_empty() && !st.queued;
            if requeue {
                st.queued = true;
            }
            requeue
        };
        if requeue {
            self.queue_object_write_back(object_no);
        }
        self.notify_progress();
        self.remove_if_idle(object_no);
    }

    /// The image byte ranges of a batch of `object_no` (for the log line
    /// of data that could not be written back), merged, in order.
    /// Fencing: the RADOS client that acknowledged the dirty data is gone
    /// (blocklisted, so another client may own the image now): drops every
    /// dirty byte not yet in flight, logs the ranges as lost and keeps `e`
    /// for the next flush. Returns the bytes dropped.
    pub(super) fn drop_dirty(self: &Arc<Self>, e: ImageError) -> u64 {
        let slots: Vec<(u64, Slot)> = self
            .slots
            .lock()
            .iter()
            .map(|(&n, s)| (n, s.clone()))
            .collect();
        let mut lost = Vec::new();
        let mut dropped = 0;
        for (object_no, slot) in slots {
            let freed = {
                let mut st = slot.lock();
                let dirty = std::mem::take(&mut st.dirty);
                st.dirty_since = None;
                let freed = dirty.bytes();
                if freed > 0 {
                    lost.extend(self.lost_ranges(object_no, dirty.runs()));
                    // Slot before budget, as where a batch starts.
                    self.shared.release(|b| b.uncharge_dirty(freed));
                }
                freed
            };
            dropped += freed;
            self.remove_if_idle(object_no);
        }
        if dropped > 0 {
            self.record_error(e, &lost);
        }
        self.notify_progress();
        dropped
    }

    fn lost_ranges(&self, object_no: u64, batch: &BTreeMap<u64, Vec<u8>>) -> Vec<(u64, u64)> {
        let layout = self.io.layout();
        let mut ranges: Vec<(u64, u64)> = batch
            .iter()
            .flat_map(|(&off, data)| layout.unmap(object_no, off, data.len() as u64))
            .map(|(image_off, len, _)| (image_off, image_off + len))
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
    }

    /// Queues write-back of dirty objects older than the age bound (all of
    /// them under pressure).
    pub(super) fn queue_due(self: &Arc<Self>, now: Instant, pressure: bool) {
        let slots: Vec<(u64, Slot)> = self
            .slots
            .lock()
            .iter()
            .map(|(&n, s)| (n, s.clone()))
            .collect();
        let max_age = self.shared.max_age;
        for (object_no, slot) in slots {
            let queue = {
                let mut st = slot.lock();
                let due = st
                    .dirty_since
                    .is_some_and(|t| now.duration_since(t) >= max_age);
                let queue = !st.removed
                    && !st.flushing
                    && !st.queued
                    && !st.dirty.is_empty()
                    && (pressure || due);
                if queue {
                    st.queued = true;
                }
                queue
            };
            if queue {
                self.queue_object_write_back(object_no);
            }
        }
    }

    /// Writes back every write made before the call; the first write-back
    /// error since the last flush.
    pub(super) fn flush(self: &Arc<Self>) -> Result<(), ImageError> {
        self.write_back_all();
        match self.error.lock().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Writes back every write made before the call and waits for it.
    pub(super) fn write_back_all(self: &Arc<Self>) {
        let target = self.seq.load(Ordering::SeqCst);
        loop {
            let mut g = self.progress.lock();
            let slots: Vec<(u64, Slot)> = self
                .slots
                .lock()
                .iter()
                .map(|(&n, s)| (n, s.clone()))
                .collect();
            let mut pending = false;
            let mut submit = Vec::new();
            for (object_no, slot) in slots {
                let mut st = slot.lock();
                let dirty = !st.dirty.is_empty() && st.first_seq <= target;
                if dirty || (st.flushing && st.inflight_seq <= target) {
                    pending = true;
                }
                if dirty && !st.flushing && !st.queued {
                    st.queued = true;
                    submit.push(object_no);
                }
            }
            if !submit.is_empty() {
                drop(g);
                for object_no in submit {
                    self.queue_object_write_back(object_no);
                }
                continue;
            }
            if !pending {
                break;
            }
            // Every batch end signals; the timeout is only a safety net.
            self.progress_cv.wait_for(&mut g, Duration::from_secs(1));
        }
    }
}
