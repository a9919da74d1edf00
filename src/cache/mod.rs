//! The object cache between an image and RADOS: bounded clean data
//! (prefetched and recently read object extents), write-back of dirty
//! extents, sequential prefetch.
//!
//! One [`Cache`] per mount holds the byte budget, a small pool of I/O
//! threads and a background flusher; one [`ImageCache`] per open image
//! holds that image's dirty extents, its RADOS reads in flight and its
//! sequential-stream detector.
//!
//! - **Budget.** Everything the cache makes the process hold stays within
//!   `capacity` (see `clean.rs`): clean extents, dirty extents, the buffers
//!   of RADOS reads in flight, and librados's copies of reads and
//!   write-backs in flight (librados copies both ways, so an operation in
//!   flight costs twice its bytes). Dirty bytes alone stay within
//!   `max_dirty` (3/8 of the capacity: each may need its copy while
//!   written back); a writer that would go past waits while write-back
//!   makes room (backpressure). Outside the budget: the request buffers of FUSE
//!   threads (at most one request each) and the allocator's slack, which
//!   `allocator.rs` keeps small.
//! - **Dirty data** (head only) is kept per object as non-overlapping runs,
//!   newest bytes winning. An object's runs go to RADOS as one batch, and
//!   an object has at most one batch in flight, so two writes of the same
//!   bytes reach RADOS in the order they were made. While a batch is in
//!   flight its bytes stay visible to readers. Write-back starts when an
//!   object is entirely dirty, when its oldest dirty byte is older than
//!   `max_dirty_age`, when a writer is held back by `max_dirty`, and on
//!   [`ImageCache::flush`] (fsync, close, snapshot creation, unmount).
//! - **Failed write-back** is recorded for the image, logged, and returned
//!   by the next `flush` (once). The data of the failed batch is dropped,
//!   as the kernel does with dirty pages whose write-back failed: keeping
//!   it would retry forever against a permanent error (read-only image,
//!   blocklisted client, full pool) and hold the dirty budget, stalling
//!   every writer of the mount. The object's clean extents are dropped
//!   with it, so reads show what RADOS holds.
//! - **Reads** are served from a clean extent, else by joining a RADOS read
//!   in flight that covers them (a prefetch or another reader's), else by
//!   a read of their own. At the head, the dirty runs are copied *before*
//!   RADOS is read and laid over its bytes after, so a write-back that
//!   completes in between cannot hide a write. A read in flight is marked
//!   stale by any write to its object; a stale read neither enters the
//!   cache nor takes new joiners.
//! - **Prefetch**: each image tracks a few read streams per snap id. A read
//!   that starts near where a stream's last one ended (and goes further)
//!   counts as sequential; once a stream has two, whole objects ahead of
//!   the reader are read by the pool, over a window that starts at 4 MiB
//!   (or an object) and doubles per read up to `max_prefetch` (deeper for
//!   snapshots, which never change), shared by the streams of the mount
//!   active at once. Objects a sequential reader has finished are evicted
//!   first; read-ahead its reader has not finished is never evicted by
//!   another prefetch (for a few seconds at most). Random reads never
//!   start a prefetch, and a 4 KiB random read costs one 4 KiB RADOS read.
//! - **A head others may write** (an exclusive-lock image whose lock we do
//!   not hold, see [`ObjectIo::cache_head`]): nothing read on demand is
//!   kept, and read-ahead is kept for `readahead_ttl` only, so a
//!   sequential reader still has its reads in flight ahead of it.
//! - **Threads**: a pool of `workers` I/O threads (prefetch, write-back)
//!   and one flusher thread per mount; they end when the [`Cache`] is
//!   dropped (after finishing what is queued). Reads and writes that miss
//!   run in the caller's thread; no lock is held across I/O, and locks
//!   are per object where data is copied, so unrelated objects never wait
//!   for each other.

mod allocator;
mod budget;
mod extents;
mod read;
#[cfg(test)]
mod tests;
mod workers;
mod write;

pub use allocator::RecyclingAllocator;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use parking_lot::{Condvar, Mutex};

use self::budget::{Budget, Key};
use self::read::{Fills, Streams};
use self::workers::Workers;
use self::write::{Slot, flusher};
use crate::error::ImageError;
use crate::layout::Layout;
use crate::store::{NOSNAP, SnapId};

/// A sequential stream that has not read for this long no longer shares
/// the read-ahead window.
const STREAM_IDLE: Duration = Duration::from_secs(1);

/// What the cache needs from an image: object-granular I/O. `read_object`
/// returns exactly `len` bytes (missing objects and the part past an
/// object's end are zeros); `write_object` writes with the image's current
/// snap context (and lock/object-map duties).
pub trait ObjectIo: Send + Sync {
    fn read_object(
        &self,
        snap: SnapId,
        object_no: u64,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, ImageError>;
    fn write_object(&self, object_no: u64, offset: u64, data: &[u8]) -> Result<(), ImageError>;
    /// Writes non-overlapping extents of one object (offset order). Best
    /// as one RADOS operation: one OSD transaction instead of one per
    /// extent is what makes many small dirty extents cheap to write back.
    /// This default writes them one by one.
    fn write_object_extents(
        &self,
        object_no: u64,
        extents: &[(u64, &[u8])],
    ) -> Result<(), ImageError> {
        extents
            .iter()
            .try_for_each(|&(offset, data)| self.write_object(object_no, offset, data))
    }
    /// Whether the head's data may be kept (clean) now. An image that
    /// other clients may write while we do not hold its exclusive lock
    /// answers false then (its read-ahead is then kept only for
    /// `readahead_ttl`); its lock handover should also `write_back_all` and
    /// `invalidate` the cache, and so should taking the lock. Dirty data
    /// is kept regardless (it is ours).
    fn cache_head(&self) -> bool {
        true
    }
    /// The image's current striping layout (for prefetch).
    fn layout(&self) -> Layout;
    /// Image size at `snap` (NOSNAP: the head), None if no such snapshot.
    fn size_at(&self, snap: SnapId) -> Option<u64>;
    /// A name for log lines.
    fn name(&self) -> &str;
}

/// Settings of the cache shared by every image of a mount.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Bytes the cache may hold: clean and dirty data, plus the buffers of
    /// its RADOS operations in flight (its own and librados's copies).
    /// 0 turns the cache off (reads and writes go straight to RADOS).
    pub capacity: u64,
    /// Dirty bytes at most; None: 3/8 of `capacity`. Each dirty byte also
    /// needs room for librados's copy while it is written back, so this
    /// leaves a quarter of the capacity to clean data under any load.
    pub max_dirty: Option<u64>,
    /// Dirty data older than this is written back.
    pub max_dirty_age: Duration,
    /// Largest prefetch window (bytes read ahead of a sequential reader);
    /// None: min(capacity / 4, 64 MiB) at the head, min(capacity * 3/8,
    /// 96 MiB) for snapshots and diff streams (immutable: never stale,
    /// never written back). 0 turns prefetch off. Sequential readers
    /// active at once share it.
    pub max_prefetch: Option<u64>,
    /// I/O threads for prefetch and write-back, shared by all images.
    pub workers: usize,
    /// How long read-ahead of a head that other clients may be writing
    /// (we do not hold its exclusive lock) stays usable.
    pub readahead_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            capacity: 64 << 20,
            max_dirty: None,
            max_dirty_age: Duration::from_secs(1),
            max_prefetch: None,
            workers: 16,
            readahead_ttl: Duration::from_secs(1),
        }
    }
}

impl CacheConfig {
    /// The dirty-byte bound in effect.
    pub fn dirty_limit(&self) -> u64 {
        self.max_dirty
            .unwrap_or(self.capacity / 8 * 3)
            .min(self.capacity)
    }

    /// The largest prefetch window in effect (head).
    pub fn prefetch_limit(&self) -> u64 {
        self.max_prefetch
            .unwrap_or((self.capacity / 4).min(64 << 20))
            .min(self.capacity / 2)
    }

    /// The largest prefetch window in effect for snapshots and diff
    /// streams. A read in flight is charged twice (its buffer and
    /// librados's reply), so a window of 3/8 of the cache all in flight,
    /// plus the object being read, fits in it.
    pub fn immutable_prefetch_limit(&self) -> u64 {
        self.max_prefetch
            .unwrap_or((self.capacity / 8 * 3).min(96 << 20))
            .min(self.capacity / 2)
    }
}

/// A snapshot of the cache's counters (all images of the mount).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub capacity: u64,
    /// Bytes held by clean extents.
    pub clean_bytes: u64,
    /// Bytes held by dirty extents (including write-backs in flight).
    pub dirty_bytes: u64,
    /// Bytes set aside for reads in flight (their buffer and librados's).
    pub reserved_bytes: u64,
    /// librados's copies of write-backs in flight.
    pub writing_bytes: u64,
    /// Highest clean + dirty + reserved + writing seen.
    pub peak_bytes: u64,
    /// Reads served from clean extents.
    pub hits: u64,
    /// Reads served by a RADOS read already in flight (mostly prefetch).
    pub joined: u64,
    /// Reads that went to RADOS themselves.
    pub misses: u64,
    /// Bytes requested by prefetch.
    pub prefetched_bytes: u64,
    /// Bytes written back to RADOS (including write-through).
    pub written_back_bytes: u64,
    /// Failed write-back batches.
    pub writeback_errors: u64,
    /// Writes that had to wait for write-back (backpressure).
    pub dirty_waits: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    joined: AtomicU64,
    misses: AtomicU64,
    prefetched: AtomicU64,
    written_back: AtomicU64,
    writeback_errors: AtomicU64,
    dirty_waits: AtomicU64,
}

impl Counters {
    /// Changes whenever the cache moves data.
    fn activity(&self) -> u64 {
        [
            &self.hits,
            &self.joined,
            &self.misses,
            &self.prefetched,
            &self.written_back,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .fold(0u64, u64::wrapping_add)
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

#[derive(Default)]
struct FlusherState {
    wake: bool,
    /// A writer is held back: write back everything dirty.
    pressure: bool,
    shutdown: bool,
}

/// What every image of a mount shares.
struct Shared {
    /// The budget's capacity (bytes).
    capacity: u64,
    max_dirty: u64,
    max_age: Duration,
    max_window: u64,
    /// The same for snapshots and diff streams.
    max_window_immutable: u64,
    /// Sequential streams of the mount by id, with their last read: the
    /// window is shared among those read in the last `STREAM_IDLE`.
    active_streams: Mutex<HashMap<u64, Instant>>,
    next_stream: AtomicU64,
    readahead_ttl: Duration,
    budget: Mutex<Budget>,
    /// Signalled whenever bytes leave the budget.
    space: Condvar,
    counters: Counters,
    workers: Workers,
    images: Mutex<Vec<Weak<ImageState>>>,
    flusher: Mutex<FlusherState>,
    flusher_cv: Condvar,
    next_image: AtomicU64,
}

impl Shared {
    /// Counts `n` dirty bytes, waiting (and pushing write-back) while they
    /// do not fit.
    fn charge_dirty(&self, n: u64) {
        let mut waited = false;
        loop {
            let mut b = self.budget.lock();
            if b.try_charge_dirty(n) {
                return;
            }
            if !waited {
                waited = true;
                bump(&self.counters.dirty_waits, 1);
            }
            self.wake_flusher(true);
            self.space.wait_for(&mut b, Duration::from_millis(50));
        }
    }

    /// Runs `f` on the budget, then wakes whoever waits for room.
    fn release(&self, f: impl FnOnce(&mut Budget)) {
        f(&mut self.budget.lock());
        self.space.notify_all();
    }

    /// The read-ahead window of stream `id` (reading a snapshot or diff
    /// stream if `immutable`), marking it active: the largest window shared
    /// with the other streams of the mount active now, so that no stream
    /// takes the whole cache from the others.
    fn stream_window(&self, id: u64, immutable: bool) -> u64 {
        let max = if immutable {
            self.max_window_immutable
        } else {
            self.max_window
        };
        if max == 0 {
            return 0;
        }
        let now = Instant::now();
        let mut active = self.active_streams.lock();
        active.insert(id, now);
        active.retain(|_, t| now.duration_since(*t) < STREAM_IDLE);
        max / active.len().max(1) as u64
    }

    fn wake_flusher(&self, pressure: bool) {
        let mut f = self.flusher.lock();
        f.wake = true;
        f.pressure |= pressure;
        drop(f);
        self.flusher_cv.notify_one();
    }

    fn stats(&self) -> CacheStats {
        let b = self.budget.lock();
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            capacity: b.capacity,
            clean_bytes: b.clean,
            dirty_bytes: b.dirty,
            reserved_bytes: b.reserved,
            writing_bytes: b.writing,
            peak_bytes: b.peak,
            hits: get(&c.hits),
            joined: get(&c.joined),
            misses: get(&c.misses),
            prefetched_bytes: get(&c.prefetched),
            written_back_bytes: get(&c.written_back),
            writeback_errors: get(&c.writeback_errors),
            dirty_waits: get(&c.dirty_waits),
        }
    }
}

/// The cache of a mount: one budget shared by all its images.
pub struct Cache {
    config: CacheConfig,
    shared: Arc<Shared>,
}

/// Tunes the C allocator for the cache's traffic (see `allocator.rs`):
/// call it first thing in `main`, before any thread starts. `Cache::new`
/// calls it too, but arenas made by then (librados's threads) stay.
pub fn tune_allocator() {
    allocator::limit_arenas();
}

impl Cache {
    /// The cache of a mount; starts its I/O workers and flusher thread.
    pub fn new(config: CacheConfig) -> Arc<Cache> {
        allocator::limit_arenas();
        let shared = Arc::new(Shared {
            capacity: config.capacity,
            max_dirty: config.dirty_limit(),
            max_age: config.max_dirty_age,
            max_window: config.prefetch_limit(),
            max_window_immutable: config.immutable_prefetch_limit(),
            active_streams: Mutex::new(HashMap::new()),
            next_stream: AtomicU64::new(1),
            readahead_ttl: config.readahead_ttl,
            budget: Mutex::new(Budget::new(config.capacity, config.dirty_limit())),
            space: Condvar::new(),
            counters: Counters::default(),
            workers: Workers::new(config.workers),
            images: Mutex::new(Vec::new()),
            flusher: Mutex::new(FlusherState::default()),
            flusher_cv: Condvar::new(),
            next_image: AtomicU64::new(1),
        });
        let s = shared.clone();
        if let Err(e) = std::thread::Builder::new()
            .name("rbdfs-flusher".into())
            .spawn(move || flusher(s))
        {
            // Dirty data then goes back on flush and under pressure only.
            warn!("cache: cannot start the flusher thread: {e}");
        }
        Arc::new(Cache { config, shared })
    }

    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// The cache of one image (head and snapshots).
    pub fn for_image(self: &Arc<Cache>, io: Arc<dyn ObjectIo>) -> ImageCache {
        let state = Arc::new(ImageState {
            id: self.shared.next_image.fetch_add(1, Ordering::Relaxed),
            io,
            shared: self.shared.clone(),
            slots: Mutex::new(HashMap::new()),
            fills: Mutex::new(HashMap::new()),
            streams: Mutex::new(Streams::default()),
            error: Mutex::new(None),
            seq: AtomicU64::new(0),
            progress: Mutex::new(()),
            progress_cv: Condvar::new(),
        });
        self.shared.images.lock().push(Arc::downgrade(&state));
        ImageCache {
            _cache: self.clone(),
            state,
        }
    }

    pub fn stats(&self) -> CacheStats {
        self.shared.stats()
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        info!("cache: {:?}", self.shared.stats());
        // Every ImageCache (each holds the Cache) has flushed by now.
        self.shared.flusher.lock().shutdown = true;
        self.shared.flusher_cv.notify_all();
        self.shared.workers.shutdown();
    }
}

/// The state of one image, shared with the I/O jobs working for it.
///
/// Lock order: `progress` → `slots` → a slot → `fills` → the budget;
/// `streams` → the shared active-stream table; `error`, the pool and the
/// flusher state are leaves.
struct ImageState {
    id: u64,
    io: Arc<dyn ObjectIo>,
    shared: Arc<Shared>,
    slots: Mutex<HashMap<u64, Slot>>,
    fills: Mutex<Fills>,
    streams: Mutex<Streams>,
    /// The first write-back error since the last flush.
    error: Mutex<Option<ImageError>>,
    /// Numbers writes, so flush knows which ones it must wait for.
    seq: AtomicU64,
    /// Signalled whenever a batch completes.
    progress: Mutex<()>,
    progress_cv: Condvar,
}

impl ImageState {
    fn key(&self, snap: SnapId, object_no: u64) -> Key {
        (self.id, snap, object_no)
    }

    /// The head's clean copy of `object_no` is no longer to be trusted.
    fn forget_clean(&self, object_no: u64) {
        self.stale_fills(object_no);
        let key = self.key(NOSNAP, object_no);
        self.shared.release(|b| b.remove_object(&key));
    }

    /// A write-back failed and its data (image byte ranges `lost`) is
    /// dropped: logged at error level, kept for the next flush.
    fn record_error(&self, e: ImageError, lost: &[(u64, u64)]) {
        bump(&self.shared.counters.writeback_errors, 1);
        const SHOWN: usize = 8;
        let mut list: Vec<String> = lost
            .iter()
            .take(SHOWN)
            .map(|(a, b)| format!("[{a}, {b})"))
            .collect();
        if lost.len() > SHOWN {
            list.push(format!("and {} more ranges", lost.len() - SHOWN));
        }
        error!(
            "image {}: data lost: write-back of bytes {} failed ({e}); \
             reported to the next fsync/close",
            self.io.name(),
            list.join(", ")
        );
        let mut slot = self.error.lock();
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    fn notify_progress(&self) {
        let _g = self.progress.lock();
        self.progress_cv.notify_all();
    }

    /// Drops clean data and marks reads in flight stale.
    fn invalidate(&self) {
        for list in self.fills.lock().values() {
            for f in list {
                f.stale.store(true, Ordering::SeqCst);
            }
        }
        let id = self.id;
        self.shared.release(|b| b.remove_image(id));
    }
}

/// Bytes of a clean extent of the cache, shared (not copied): a reply
/// can be sent from the cache's own buffer. A write to those bytes after
/// this was taken does not change it (the cache then drops or replaces its
/// extent instead of patching it).
#[derive(Clone)]
pub struct CachedBytes {
    data: Arc<Vec<u8>>,
    start: usize,
    end: usize,
}

impl std::ops::Deref for CachedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }
}

/// One image's view of the cache.
pub struct ImageCache {
    _cache: Arc<Cache>,
    state: Arc<ImageState>,
}

impl ImageCache {
    /// Reads `len` bytes at `offset` of object `object_no` at `snap`;
    /// always exactly `len` bytes.
    pub fn read(
        &self,
        snap: SnapId,
        object_no: u64,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, ImageError> {
        // One copy out of the shared buffer, no zero-filled buffer first.
        self.read_shared(snap, object_no, offset, len)
            .map(|bytes| bytes.to_vec())
    }

    /// Like [`read`](Self::read), but the bytes stay in the cache's own
    /// buffer (a clean extent's, or that of the RADOS read that brought
    /// them): a reply can be sent from it without a copy.
    pub fn read_shared(
        &self,
        snap: SnapId,
        object_no: u64,
        offset: u64,
        len: u64,
    ) -> Result<CachedBytes, ImageError> {
        if len == 0 {
            return Ok(CachedBytes {
                data: Arc::new(Vec::new()),
                start: 0,
                end: 0,
            });
        }
        let (data, start) = self.state.read_shared(snap, object_no, offset, len)?;
        Ok(CachedBytes {
            data,
            start,
            end: start + len as usize,
        })
    }

    /// Like [`read`](Self::read), into `out` (`out.len()` bytes): one copy
    /// less for callers that assemble a larger buffer.
    pub fn read_into(
        &self,
        snap: SnapId,
        object_no: u64,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), ImageError> {
        self.state.read(snap, object_no, offset, out)
    }

    /// Writes to the head; acknowledged data must reach RADOS by the next
    /// `flush`.
    pub fn write(&self, object_no: u64, offset: u64, data: &[u8]) -> Result<(), ImageError> {
        self.state.write(object_no, offset, data)
    }

    /// Writes back everything dirty; returns the first error of any
    /// write-back since the last flush.
    pub fn flush(&self) -> Result<(), ImageError> {
        self.state.flush()
    }

    /// Writes back everything dirty and waits, like [`flush`](Self::flush),
    /// but leaves a write-back error recorded for the next `flush` (which
    /// reports it to fsync/close). For internal callers, e.g. handing the
    /// exclusive lock over. False if an error is pending.
    pub fn write_back_all(&self) -> bool {
        self.state.write_back_all();
        self.state.error.lock().is_none()
    }

    /// Drops clean data (the header changed: resize, snapshot removed).
    pub fn invalidate(&self) {
        self.state.invalidate()
    }

    /// The RADOS client that acknowledged this image's dirty data was
    /// replaced (blocklisted): that data must not reach RADOS through the
    /// new client (another may own the image now). Drops it, logs the lost
    /// ranges and reports `e` to the next flush; returns the bytes dropped.
    pub fn drop_dirty(&self, e: ImageError) -> u64 {
        self.state.drop_dirty(e)
    }

    /// A read of [offset, offset+len) of the image at `snap` was served; the
    /// cache may detect a sequential reader and prefetch what follows.
    pub fn note_read(&self, snap: SnapId, offset: u64, len: u64) {
        self.state.note_read(snap, offset, len)
    }

    /// [`note_read`](Self::note_read) in two halves, around the read:
    /// read-ahead starts before the read waits. Returns what to pass to
    /// [`finish_read`](Self::finish_read).
    pub fn start_read(&self, snap: SnapId, offset: u64, len: u64) -> bool {
        self.state.start_read(snap, offset, len)
    }

    /// The read announced by [`start_read`](Self::start_read) was served.
    pub fn finish_read(&self, snap: SnapId, offset: u64, len: u64, sequential: bool) {
        self.state.finish_read(snap, offset, len, sequential)
    }

    /// Reads image range `[from, to)` at `snap` ahead of a reader that
    /// will want it (whole objects, by the I/O threads, skipping what is
    /// held or being read); false if the budget had no room for all of it.
    pub fn prefetch(&self, snap: SnapId, from: u64, to: u64) -> bool {
        self.state.prefetch(snap, from, to)
    }

    /// A reader is done with object `object_no` at `snap`: it goes first
    /// when room is needed (before what was read ahead for that reader).
    pub fn done_with(&self, snap: SnapId, object_no: u64) {
        let key = self.state.key(snap, object_no);
        self.state.shared.budget.lock().demote(&key);
    }

    /// A new id for a sequential reader that prefetches on its own (a
    /// diff stream), for [`prefetch_window`](Self::prefetch_window).
    pub fn new_stream(&self) -> u64 {
        self.state
            .shared
            .next_stream
            .fetch_add(1, Ordering::Relaxed)
    }

    /// The read-ahead window of stream `stream` reading at `snap` now (0:
    /// no prefetch): the largest window, shared with the mount's other
    /// sequential readers active now.
    pub fn prefetch_window(&self, snap: SnapId, stream: u64) -> u64 {
        self.state.shared.stream_window(stream, snap != NOSNAP)
    }

    /// The mount's cache counters.
    pub fn stats(&self) -> CacheStats {
        self.state.shared.stats()
    }

    /// Bytes of this image not yet on RADOS (dirty or being written back).
    pub fn dirty_bytes(&self) -> u64 {
        let slots: Vec<Slot> = self.state.slots.lock().values().cloned().collect();
        slots
            .iter()
            .map(|s| {
                let st = s.lock();
                st.dirty.bytes() + st.inflight_bytes
            })
            .sum()
    }
}

impl Drop for ImageCache {
    fn drop(&mut self) {
        if let Err(e) = self.state.flush() {
            warn!("image {}: data lost at close: {e}", self.state.io.name());
        }
        self.state.streams.lock().list.clear();
        self.state.invalidate();
    }
}
