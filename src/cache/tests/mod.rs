//! The cache against a mock object store: a map of objects with optional
//! delays and injected write failures, counting every call.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::*;
use crate::store::StoreError;

mod bounds;
mod deep;
mod model;
mod prefetch;
mod reads;
mod write_back;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

struct MockIo {
    layout: Layout,
    size: u64,
    head: Mutex<HashMap<u64, Vec<u8>>>,
    snaps: Mutex<HashMap<SnapId, HashMap<u64, Vec<u8>>>>,
    read_delay: Mutex<Duration>,
    write_delay: Mutex<Duration>,
    fail_writes: Mutex<HashSet<u64>>,
    /// Reads per (snap, object).
    reads: Mutex<HashMap<(SnapId, u64), u64>>,
    /// (object, offset, len) of every read, in order.
    read_log: Mutex<Vec<(u64, u64, u64)>>,
    writes: AtomicU64,
    /// What `cache_head` answers.
    cache_head: std::sync::atomic::AtomicBool,
    /// Extents per `write_object_extents` call.
    batches: Mutex<Vec<usize>>,
    busy: AtomicU64,
    max_busy: AtomicU64,
}

impl MockIo {
    fn new(order: u8, size: u64) -> Arc<MockIo> {
        Self::with_layout(Layout::plain(order), size)
    }

    fn with_layout(layout: Layout, size: u64) -> Arc<MockIo> {
        Arc::new(MockIo {
            layout,
            size,
            head: Mutex::new(HashMap::new()),
            snaps: Mutex::new(HashMap::new()),
            read_delay: Mutex::new(Duration::ZERO),
            write_delay: Mutex::new(Duration::ZERO),
            fail_writes: Mutex::new(HashSet::new()),
            reads: Mutex::new(HashMap::new()),
            read_log: Mutex::new(Vec::new()),
            writes: AtomicU64::new(0),
            cache_head: std::sync::atomic::AtomicBool::new(true),
            batches: Mutex::new(Vec::new()),
            busy: AtomicU64::new(0),
            max_busy: AtomicU64::new(0),
        })
    }

    fn set_delays(&self, read: Duration, write: Duration) {
        *self.read_delay.lock() = read;
        *self.write_delay.lock() = write;
    }

    fn reads_of(&self, snap: SnapId, object_no: u64) -> u64 {
        self.reads
            .lock()
            .get(&(snap, object_no))
            .copied()
            .unwrap_or(0)
    }

    fn total_reads(&self) -> u64 {
        self.reads.lock().values().sum()
    }

    /// The head's bytes at image offsets [0, len) (plain layouts).
    fn image_bytes(&self, len: u64) -> Vec<u8> {
        let mut out = vec![0u8; len as usize];
        let os = self.layout.object_size;
        for (&n, data) in self.head.lock().iter() {
            let at = (n * os) as usize;
            if at < out.len() {
                let k = data.len().min(out.len() - at);
                out[at..at + k].copy_from_slice(&data[..k]);
            }
        }
        out
    }

    fn snapshot(&self, id: SnapId) {
        let copy = self.head.lock().clone();
        self.snaps.lock().insert(id, copy);
    }

    fn busy_guard(&self) -> BusyGuard<'_> {
        let now = self.busy.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_busy.fetch_max(now, Ordering::SeqCst);
        BusyGuard(&self.busy)
    }
}

struct BusyGuard<'a>(&'a AtomicU64);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn injected(object_no: u64) -> ImageError {
    ImageError::Store {
        image: "mock".into(),
        source: StoreError::Errno {
            op: "write",
            oid: format!("obj.{object_no}"),
            errno: libc::EIO,
        },
    }
}

impl ObjectIo for MockIo {
    fn read_object(
        &self,
        snap: SnapId,
        object_no: u64,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, ImageError> {
        let _busy = self.busy_guard();
        *self.reads.lock().entry((snap, object_no)).or_default() += 1;
        self.read_log.lock().push((object_no, offset, len));
        let delay = *self.read_delay.lock();
        if !delay.is_zero() {
            thread::sleep(delay);
        }
        let mut out = vec![0u8; len as usize];
        let copy = |data: &Vec<u8>, out: &mut Vec<u8>| {
            let a = (offset as usize).min(data.len());
            let b = ((offset + len) as usize).min(data.len());
            out[..b - a].copy_from_slice(&data[a..b]);
        };
        if snap == NOSNAP {
            if let Some(d) = self.head.lock().get(&object_no) {
                copy(d, &mut out);
            }
        } else if let Some(d) = self.snaps.lock().get(&snap).and_then(|s| s.get(&object_no)) {
            copy(d, &mut out);
        }
        Ok(out)
    }

    fn write_object(&self, object_no: u64, offset: u64, data: &[u8]) -> Result<(), ImageError> {
        let _busy = self.busy_guard();
        let delay = *self.write_delay.lock();
        if !delay.is_zero() {
            thread::sleep(delay);
        }
        if self.fail_writes.lock().contains(&object_no) {
            return Err(injected(object_no));
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        let mut head = self.head.lock();
        let obj = head.entry(object_no).or_default();
        let end = (offset as usize) + data.len();
        if obj.len() < end {
            obj.resize(end, 0);
        }
        obj[offset as usize..end].copy_from_slice(data);
        Ok(())
    }

    fn write_object_extents(
        &self,
        object_no: u64,
        extents: &[(u64, &[u8])],
    ) -> Result<(), ImageError> {
        self.batches.lock().push(extents.len());
        extents
            .iter()
            .try_for_each(|&(offset, data)| self.write_object(object_no, offset, data))
    }

    fn cache_head(&self) -> bool {
        self.cache_head.load(Ordering::SeqCst)
    }

    fn layout(&self) -> Layout {
        self.layout
    }

    fn size_at(&self, snap: SnapId) -> Option<u64> {
        (snap == NOSNAP || self.snaps.lock().contains_key(&snap)).then_some(self.size)
    }

    fn name(&self) -> &str {
        "mock"
    }
}

/// Image-level reads and writes over the cache, as `Image` does them.
struct Img {
    io: Arc<MockIo>,
    cache: Arc<Cache>,
    ic: ImageCache,
}

impl Img {
    fn new(io: Arc<MockIo>, config: CacheConfig) -> Img {
        let cache = Cache::new(config);
        let ic = cache.for_image(io.clone());
        Img { io, cache, ic }
    }

    fn read_at(&self, snap: SnapId, off: u64, len: u64) -> Vec<u8> {
        let mut out = vec![0u8; len as usize];
        for e in self.io.layout.map(off, len) {
            let d = self
                .ic
                .read(snap, e.object_no, e.offset, e.len)
                .expect("read");
            assert_eq!(d.len() as u64, e.len, "read length");
            out[e.buf_offset as usize..(e.buf_offset + e.len) as usize].copy_from_slice(&d);
        }
        self.ic.note_read(snap, off, len);
        out
    }

    fn read(&self, off: u64, len: u64) -> Vec<u8> {
        self.read_at(NOSNAP, off, len)
    }

    fn write(&self, off: u64, data: &[u8]) {
        for e in self.io.layout.map(off, data.len() as u64) {
            self.ic
                .write(
                    e.object_no,
                    e.offset,
                    &data[e.buf_offset as usize..(e.buf_offset + e.len) as usize],
                )
                .expect("write");
        }
    }
}

fn config(capacity: u64) -> CacheConfig {
    CacheConfig {
        capacity,
        ..CacheConfig::default()
    }
}

/// Deterministic bytes for tests.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A small xorshift for the randomized (non-proptest) tests.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(2));
    }
}
