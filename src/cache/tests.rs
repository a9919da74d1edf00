//! The cache against a mock object store: a map of objects with optional
//! delays and injected write failures, counting every call.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use proptest::prelude::*;

use super::write::object_len;
use super::*;
use crate::store::StoreError;

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

#[test]
fn read_your_writes_before_flush() {
    let io = MockIo::new(16, 4 * MIB);
    let base = pattern(1, 4 * MIB as usize);
    for (n, chunk) in base.chunks(64 * KIB as usize).enumerate() {
        io.head.lock().insert(n as u64, chunk.to_vec());
    }
    let img = Img::new(io.clone(), config(8 * MIB));
    // Object 1 becomes entirely dirty and goes back at once: hold that
    // write-back in flight while we read.
    io.set_delays(Duration::ZERO, Duration::from_millis(300));
    let mut model = base.clone();
    let data = pattern(2, 100_000);
    img.write(50_000, &data);
    model[50_000..150_000].copy_from_slice(&data);
    assert_eq!(
        io.writes.load(Ordering::SeqCst),
        0,
        "write-back, not write-through"
    );
    // Partly dirty objects overlay RADOS; the wholly dirty one (its bytes
    // in flight) needs no read.
    assert_eq!(img.read(0, 300_000), &model[..300_000]);
    assert_eq!(io.reads_of(NOSNAP, 1), 0, "object 1 is entirely dirty");
    assert_eq!(img.read(70_000, 10), &model[70_000..70_010]);
    img.ic.flush().unwrap();
    assert_eq!(io.image_bytes(4 * MIB), model);
    assert_eq!(img.read(0, 300_000), &model[..300_000]);
}

#[test]
fn overlapping_writes_newest_wins_after_flush() {
    let io = MockIo::new(16, 2 * MIB);
    let img = Img::new(io.clone(), config(8 * MIB));
    let mut model = vec![0u8; 2 * MIB as usize];
    let mut rng = Rng(7);
    for i in 0..300 {
        let len = 1 + rng.below(20_000);
        let off = rng.below(2 * MIB - len);
        let data = pattern(i, len as usize);
        img.write(off, &data);
        model[off as usize..(off + len) as usize].copy_from_slice(&data);
    }
    img.ic.flush().unwrap();
    assert_eq!(io.image_bytes(2 * MIB), model);
    assert_eq!(img.ic.dirty_bytes(), 0);
    assert_eq!(img.cache.stats().dirty_bytes, 0);
}

#[test]
fn flush_writes_everything_in_parallel() {
    let io = MockIo::new(16, 4 * MIB);
    let img = Img::new(io.clone(), config(16 * MIB));
    let data = pattern(3, 2 * MIB as usize);
    // Half of each object, so nothing is written back before the flush.
    for n in 0..32u64 {
        img.write(
            n * 64 * KIB,
            &data[(n * 32 * KIB) as usize..((n + 1) * 32 * KIB) as usize],
        );
    }
    assert_eq!(io.writes.load(Ordering::SeqCst), 0);
    io.set_delays(Duration::ZERO, Duration::from_millis(100));
    let t = Instant::now();
    img.ic.flush().unwrap();
    let took = t.elapsed();
    assert_eq!(io.writes.load(Ordering::SeqCst), 32);
    // Serially: 3.2 s.
    assert!(
        took < Duration::from_millis(1600),
        "flush of 32 objects took {took:?}"
    );
    assert!(
        io.max_busy.load(Ordering::SeqCst) >= 8,
        "write-back was not parallel"
    );
    let bytes = io.image_bytes(4 * MIB);
    for n in 0..32usize {
        let got = &bytes[n * 65536..n * 65536 + 32768];
        assert_eq!(got, &data[n * 32768..(n + 1) * 32768], "object {n}");
    }
    assert_eq!(img.cache.stats().dirty_bytes, 0);
}

#[test]
fn failed_write_back_surfaces_once() {
    let io = MockIo::new(16, MIB);
    let img = Img::new(io.clone(), config(8 * MIB));
    io.fail_writes.lock().insert(3);
    img.write(3 * 65536 + 10, b"lost");
    img.write(4 * 65536 + 10, b"kept");
    assert!(!img.ic.write_back(), "error pending");
    assert!(
        !img.ic.write_back(),
        "write_back leaves the error for flush"
    );
    let err = img.ic.flush().expect_err("write-back of object 3 fails");
    assert_eq!(err.errno(), libc::EIO);
    img.ic.flush().expect("reported once only");
    assert_eq!(
        &io.image_bytes(MIB)[4 * 65536 + 10..4 * 65536 + 14],
        b"kept"
    );
    assert_eq!(img.cache.stats().writeback_errors, 1);
    assert_eq!(img.cache.stats().dirty_bytes, 0, "failed data is dropped");

    // A failure in the background (age-triggered) reaches the next flush.
    let io = MockIo::new(16, MIB);
    let img = Img::new(
        io.clone(),
        CacheConfig {
            max_dirty_age: Duration::from_millis(10),
            ..config(8 * MIB)
        },
    );
    io.fail_writes.lock().insert(2);
    img.write(2 * 65536, b"x");
    wait_until("background write-back", Duration::from_secs(5), || {
        img.cache.stats().writeback_errors == 1
    });
    assert!(img.ic.flush().is_err());
    assert!(img.ic.flush().is_ok());
}

#[test]
fn scattered_writes_go_back_as_one_batch() {
    let io = MockIo::new(16, MIB);
    let img = Img::new(io.clone(), config(8 * MIB));
    for i in 0..10u64 {
        img.write(65536 + i * 5000, &[i as u8; 100]);
    }
    img.write(0, b"single");
    img.ic.flush().unwrap();
    assert_eq!(
        *io.batches.lock(),
        vec![10],
        "object 1: one call, 10 extents"
    );
    assert_eq!(io.writes.load(Ordering::SeqCst), 11);
    let b = io.image_bytes(MIB);
    assert_eq!(&b[..6], b"single");
    assert_eq!(b[65536 + 9 * 5000], 9);
}

#[test]
fn dirty_data_is_written_back_by_age() {
    let io = MockIo::new(16, MIB);
    let img = Img::new(
        io.clone(),
        CacheConfig {
            max_dirty_age: Duration::from_millis(20),
            ..config(8 * MIB)
        },
    );
    img.write(100, b"aged");
    wait_until("age write-back", Duration::from_secs(5), || {
        io.writes.load(Ordering::SeqCst) == 1
    });
    assert_eq!(&io.image_bytes(200)[100..104], b"aged");
}

#[test]
fn whole_dirty_objects_go_back_at_once() {
    let io = MockIo::new(16, MIB);
    let img = Img::new(io.clone(), config(8 * MIB));
    img.write(0, &pattern(5, 3 * 65536));
    wait_until("write-back of full objects", Duration::from_secs(5), || {
        io.writes.load(Ordering::SeqCst) == 3
    });
}

#[test]
fn byte_bound_holds_under_random_io() {
    let capacity = 512 * KIB;
    let io = MockIo::new(16, 8 * MIB);
    io.set_delays(Duration::from_micros(300), Duration::from_micros(500));
    let img = Arc::new(Img::new(
        io.clone(),
        CacheConfig {
            max_dirty_age: Duration::from_millis(5),
            ..config(capacity)
        },
    ));
    let model = Arc::new(Mutex::new(vec![0u8; 8 * MIB as usize]));
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let img = img.clone();
            let model = model.clone();
            thread::spawn(move || {
                let mut rng = Rng(t + 11);
                // Each thread owns a 1 MiB band, so the model is exact.
                let band = t * MIB;
                let mut seq = band;
                for i in 0..300 {
                    match rng.below(4) {
                        0 => {
                            let len = 1 + rng.below(100 * KIB);
                            let off = band + rng.below(MIB - len);
                            let data = pattern(t * 1000 + i, len as usize);
                            img.write(off, &data);
                            model.lock()[off as usize..(off + len) as usize].copy_from_slice(&data);
                        }
                        1 => {
                            let len = 1 + rng.below(64 * KIB);
                            let off = band + rng.below(MIB - len);
                            let got = img.read(off, len);
                            assert_eq!(got, &model.lock()[off as usize..(off + len) as usize]);
                        }
                        _ => {
                            // Sequential reads: prefetch joins in.
                            let len = 32 * KIB;
                            if seq + len > band + MIB {
                                seq = band;
                            }
                            let got = img.read(seq, len);
                            assert_eq!(got, &model.lock()[seq as usize..(seq + len) as usize]);
                            seq += len;
                        }
                    }
                    let s = img.cache.stats();
                    assert!(s.clean_bytes + s.dirty_bytes + s.reserved_bytes <= capacity);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("worker thread");
    }
    img.ic.flush().unwrap();
    let s = img.cache.stats();
    assert!(
        s.peak_bytes <= capacity,
        "peak {} > capacity {capacity}",
        s.peak_bytes
    );
    assert!(
        s.peak_bytes > capacity / 2,
        "bound not exercised: peak {}",
        s.peak_bytes
    );
    assert!(s.dirty_waits > 0, "backpressure not exercised");
    assert_eq!(io.image_bytes(8 * MIB), *model.lock());
}

#[test]
fn sequential_reads_prefetch_ahead() {
    let io = MockIo::new(20, 64 * MIB);
    io.set_delays(Duration::from_millis(5), Duration::ZERO);
    let img = Img::new(io.clone(), config(32 * MIB));
    let bs = 256 * KIB;
    for i in 0..8 {
        img.read(i * bs, bs);
    }
    // Reader is in object 1; the window reaches several objects further.
    wait_until("prefetch", Duration::from_secs(5), || {
        io.reads_of(NOSNAP, 5) > 0 && img.cache.stats().reserved_bytes == 0
    });
    let before = io.total_reads();
    for i in 8..(20 * MIB / bs) {
        img.read(i * bs, bs);
    }
    let s = img.cache.stats();
    assert!(s.prefetched_bytes >= 8 * MIB, "{s:?}");
    assert!(s.hits + s.joined >= 40, "{s:?}");
    // Every object read once, whole, not once per request.
    for n in 2..20 {
        assert_eq!(
            io.reads_of(NOSNAP, n),
            1,
            "object {n}: {:?}",
            img.cache.stats()
        );
    }
    assert!(
        io.total_reads() - before <= 20,
        "reads: {}",
        io.total_reads() - before
    );
}

/// Regression: a read that just missed a prefetch completing must not
/// read again, nor replace the prefetched object with its own piece (which
/// made the rest of the object miss too).
#[test]
fn sequential_prefetch_reads_each_object_once() {
    for round in 0..10 {
        let io = MockIo::new(20, 64 * MIB);
        io.set_delays(Duration::from_millis(5), Duration::ZERO);
        let img = Img::new(io.clone(), config(32 * MIB));
        let bs = 256 * KIB;
        for i in 0..(20 * MIB / bs) {
            img.read(i * bs, bs);
        }
        for n in 2..20 {
            assert_eq!(io.reads_of(NOSNAP, n), 1, "round {round}, object {n}");
        }
    }
}

#[test]
fn prefetch_keeps_several_reads_in_flight() {
    let io = MockIo::new(22, 256 * MIB);
    io.set_delays(Duration::from_millis(40), Duration::ZERO);
    let img = Img::new(io.clone(), config(64 * MIB));
    let t = Instant::now();
    let bs = MIB;
    for i in 0..(64 * MIB / bs) {
        img.read(i * bs, bs);
    }
    let took = t.elapsed();
    // 16 objects at 40 ms each: serially 640 ms of reads alone.
    assert!(
        io.max_busy.load(Ordering::SeqCst) >= 4,
        "max in flight {}",
        io.max_busy.load(Ordering::SeqCst)
    );
    assert!(took < Duration::from_millis(600), "64 MiB took {took:?}");
}

#[test]
fn random_reads_do_not_prefetch() {
    let io = MockIo::new(22, 4 << 30);
    let img = Img::new(io.clone(), config(64 * MIB));
    let mut rng = Rng(99);
    for _ in 0..2000 {
        let off = rng.below((4 << 30) / 4096) * 4096;
        img.read(off, 4096);
    }
    let s = img.cache.stats();
    assert_eq!(s.prefetched_bytes, 0, "{s:?}");
    // One RADOS read per request (a repeated offset may be a hit).
    assert_eq!(io.total_reads() + s.hits, 2000, "{s:?}");
    assert!(io.read_log.lock().iter().all(|&(_, _, len)| len == 4096));
}

#[test]
fn reader_waits_for_prefetch_in_flight() {
    let io = MockIo::new(20, 64 * MIB);
    io.set_delays(Duration::from_millis(100), Duration::ZERO);
    let img = Img::new(io.clone(), config(32 * MIB));
    for i in 0..4 {
        img.read(i * 64 * KIB, 64 * KIB);
    }
    wait_until(
        "prefetch of object 3 in flight",
        Duration::from_secs(5),
        || io.reads_of(NOSNAP, 3) == 1,
    );
    // Object 3 is being read by the pool: this read joins it.
    img.read(3 * MIB, 4 * KIB);
    assert_eq!(io.reads_of(NOSNAP, 3), 1);
    assert!(img.cache.stats().joined + img.cache.stats().hits >= 1);
}

#[test]
fn write_during_prefetch_is_not_lost() {
    let io = MockIo::new(20, 64 * MIB);
    io.head.lock().insert(3, vec![1u8; MIB as usize]);
    io.set_delays(Duration::from_millis(100), Duration::ZERO);
    let img = Img::new(io.clone(), config(32 * MIB));
    for i in 0..4 {
        img.read(i * 64 * KIB, 64 * KIB);
    }
    wait_until(
        "prefetch of object 3 in flight",
        Duration::from_secs(5),
        || io.reads_of(NOSNAP, 3) == 1,
    );
    img.write(3 * MIB + 10, b"new");
    wait_until("prefetch done", Duration::from_secs(5), || {
        img.cache.stats().reserved_bytes == 0
    });
    let got = img.read(3 * MIB, 16);
    assert_eq!(&got[10..13], b"new");
    assert_eq!(got[0], 1);
    img.ic.flush().unwrap();
    // The stale prefetch was not kept: a later read sees RADOS + write.
    let got = img.read(3 * MIB, 16);
    assert_eq!(&got[10..13], b"new");
}

#[test]
fn unrelated_objects_proceed_concurrently() {
    let io = MockIo::new(16, 16 * MIB);
    io.set_delays(Duration::from_millis(200), Duration::from_millis(200));
    let img = Arc::new(Img::new(io.clone(), config(32 * MIB)));
    let t = Instant::now();
    let readers: Vec<_> = (0..8u64)
        .map(|n| {
            let img = img.clone();
            thread::spawn(move || img.read(n * 65536 * 3, 4096))
        })
        .collect();
    for r in readers {
        r.join().expect("reader");
    }
    let took = t.elapsed();
    assert!(took < Duration::from_millis(800), "8 readers took {took:?}");

    let t = Instant::now();
    let writers: Vec<_> = (0..8u64)
        .map(|n| {
            let img = img.clone();
            thread::spawn(move || {
                img.write(n * 65536 * 5 + 7, &[n as u8; 1000]);
                img.ic.flush()
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer").expect("flush");
    }
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(800),
        "8 writers + flush took {took:?}"
    );
    assert_eq!(io.writes.load(Ordering::SeqCst), 8);
}

#[test]
fn writes_of_one_object_reach_rados_in_order() {
    let io = MockIo::new(16, MIB);
    io.set_delays(Duration::ZERO, Duration::from_millis(1));
    let img = Img::new(
        io.clone(),
        CacheConfig {
            max_dirty_age: Duration::from_millis(1),
            ..config(MIB)
        },
    );
    for i in 0..300u64 {
        img.write(100, &i.to_le_bytes());
        if i % 7 == 0 {
            thread::sleep(Duration::from_micros(500));
        }
    }
    img.ic.flush().unwrap();
    assert_eq!(&io.image_bytes(108)[100..108], &299u64.to_le_bytes());
    assert!(
        io.writes.load(Ordering::SeqCst) > 1,
        "write-back did not interleave"
    );
}

#[test]
fn backpressure_bounds_dirty_bytes() {
    let io = MockIo::new(16, 16 * MIB);
    io.set_delays(Duration::ZERO, Duration::from_millis(2));
    let img = Img::new(
        io.clone(),
        CacheConfig {
            max_dirty: Some(256 * KIB),
            ..config(MIB)
        },
    );
    let data = pattern(8, 16 * MIB as usize);
    for (i, chunk) in data.chunks(10_000).enumerate() {
        img.write(i as u64 * 10_000, chunk);
        assert!(img.cache.stats().dirty_bytes <= 256 * KIB);
    }
    img.ic.flush().unwrap();
    assert!(img.cache.stats().dirty_waits > 0);
    assert_eq!(io.image_bytes(16 * MIB), data);
}

#[test]
fn zero_capacity_is_write_through() {
    let io = MockIo::new(16, MIB);
    let img = Img::new(io.clone(), config(0));
    img.write(10, b"direct");
    assert_eq!(io.writes.load(Ordering::SeqCst), 1);
    assert_eq!(&img.read(10, 6), b"direct");
    assert_eq!(&img.read(10, 6), b"direct");
    assert_eq!(io.total_reads(), 2, "nothing is cached");
    let s = img.cache.stats();
    assert_eq!(s.peak_bytes, 0);
    assert!(img.ic.flush().is_ok());
}

#[test]
fn write_bigger_than_dirty_bound_keeps_order() {
    let io = MockIo::new(16, MIB);
    let img = Img::new(
        io.clone(),
        CacheConfig {
            max_dirty: Some(8 * KIB),
            ..config(MIB)
        },
    );
    img.write(0, &[1u8; 1000]); // dirty
    img.write(500, &[2u8; 20_000]); // through, after the dirty bytes
    img.ic.flush().unwrap();
    let b = io.image_bytes(30_000);
    assert!(b[..500].iter().all(|&x| x == 1));
    assert!(b[500..20_500].iter().all(|&x| x == 2));
    assert_eq!(img.read(0, 30_000), b);
}

#[test]
fn snapshot_reads_are_cached_and_separate() {
    let io = MockIo::new(16, MIB);
    io.head.lock().insert(0, vec![1u8; 65536]);
    io.snapshot(7);
    let img = Img::new(io.clone(), config(8 * MIB));
    img.write(0, &[2u8; 100]);
    assert_eq!(img.read_at(7, 0, 4)[..], [1, 1, 1, 1]);
    assert_eq!(img.read(0, 4)[..], [2, 2, 2, 2]);
    assert_eq!(img.read_at(7, 0, 4)[..], [1, 1, 1, 1]);
    assert_eq!(io.reads_of(7, 0), 1, "second snapshot read is a hit");
    img.ic.invalidate();
    assert_eq!(img.read_at(7, 0, 4)[..], [1, 1, 1, 1]);
    assert_eq!(io.reads_of(7, 0), 2, "invalidate dropped clean data");
    assert_eq!(
        img.read(0, 4)[..],
        [2, 2, 2, 2],
        "dirty data survives invalidate"
    );
}

#[test]
fn clean_copy_follows_writes() {
    let io = MockIo::new(16, MIB);
    io.head.lock().insert(0, vec![1u8; 65536]);
    let img = Img::new(io.clone(), config(8 * MIB));
    assert_eq!(img.read(0, 8)[..], [1; 8]);
    img.write(2, &[5, 5]);
    assert_eq!(img.read(0, 8)[..], [1, 1, 5, 5, 1, 1, 1, 1]);
    assert_eq!(
        io.reads_of(NOSNAP, 0),
        1,
        "patched clean copy served the read"
    );
    img.ic.flush().unwrap();
    assert_eq!(img.read(0, 8)[..], [1, 1, 5, 5, 1, 1, 1, 1]);
}

#[test]
fn head_is_not_kept_while_others_may_write_it() {
    let io = MockIo::new(16, 16 * MIB);
    io.head.lock().insert(0, vec![1u8; 65536]);
    io.snapshot(7);
    io.cache_head.store(false, Ordering::SeqCst);
    let mut cfg = config(8 * MIB);
    cfg.readahead_ttl = Duration::from_millis(300);
    let img = Img::new(io.clone(), cfg);
    // Random (demand) reads of the head are never kept.
    assert_eq!(img.read(0, 4)[..], [1; 4]);
    assert_eq!(img.read(0, 4)[..], [1; 4]);
    assert_eq!(
        io.reads_of(NOSNAP, 0),
        2,
        "head data read on demand is not kept"
    );
    // A sequential reader still gets read-ahead: every object once.
    for i in 0..32 {
        img.read(i * 65536, 65536);
        img.read_at(7, i * 65536, 65536);
    }
    for o in 1..32 {
        assert!(io.reads_of(NOSNAP, o) <= 1, "object {o} read twice");
    }
    assert!(img.ic.stats().prefetched_bytes > 0, "no read-ahead");
    assert!(io.reads_of(7, 31) <= 1, "snapshots are cached as ever");
    // Read-ahead left over goes stale after readahead_ttl: a later read
    // goes to RADOS again, where another client may have written.
    let before = io.reads_of(NOSNAP, 31);
    std::thread::sleep(Duration::from_millis(400));
    img.read(31 * 65536, 16);
    assert_eq!(
        io.reads_of(NOSNAP, 31),
        before + 1,
        "stale read-ahead served"
    );
    // Snapshot data read on demand is kept regardless.
    img.read_at(7, 200 * 65536, 16);
    img.read_at(7, 200 * 65536, 16);
    assert_eq!(io.reads_of(7, 200), 1, "snapshot data not kept");
    // Our own writes are still ours to read back.
    img.write(10, b"mine");
    assert_eq!(&img.read(10, 4), b"mine");
}

#[test]
fn drop_writes_back() {
    let io = MockIo::new(16, MIB);
    {
        let img = Img::new(io.clone(), config(8 * MIB));
        img.write(5, b"bye");
    }
    assert_eq!(&io.image_bytes(8)[5..8], b"bye");
}

#[test]
fn striped_layout_prefetch_and_full_objects() {
    let layout = Layout::striped(16, 16 * KIB, 4).expect("layout");
    let size = 4 * 65536 * 4 + 5000;
    let io = MockIo::with_layout(layout, size);
    assert_eq!(object_len(&layout, size, 0), 65536);
    assert_eq!(object_len(&layout, size, 16), 5000);
    assert_eq!(object_len(&layout, size, 17), 0);
    assert_eq!(object_len(&layout, 4 * 65536 + 20 * KIB, 4), 16 * KIB);
    assert_eq!(object_len(&layout, 4 * 65536 + 20 * KIB, 5), 4 * KIB);
    let img = Img::new(io.clone(), config(8 * MIB));
    let data = pattern(9, size as usize);
    img.write(0, &data);
    for i in 0..(size / 8192) {
        assert_eq!(
            img.read(i * 8192, 8192),
            &data[(i * 8192) as usize..((i + 1) * 8192) as usize]
        );
    }
    img.ic.flush().unwrap();
    assert_eq!(img.read(0, size), data);
}

#[derive(Debug, Clone)]
enum Op {
    Write(u64, u64, u64),
    Read(u64, u64),
    Seq(u64, u64),
    Flush,
    Invalidate,
}

fn op(size: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..size, 1u64..20_000, any::<u64>()).prop_map(move |(o, l, s)| Op::Write(o, l, s)),
        3 => (0..size, 1u64..20_000).prop_map(|(o, l)| Op::Read(o, l)),
        2 => (0..size, 1u64..8).prop_map(|(o, n)| Op::Seq(o, n)),
        1 => Just(Op::Flush),
        1 => Just(Op::Invalidate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn random_interleavings_match_a_byte_model(
        ops in proptest::collection::vec(op(256 * 1024), 1..60),
        capacity in prop_oneof![Just(0u64), Just(24 * KIB), Just(96 * KIB), Just(4 * MIB)],
        age_ms in 0u64..3,
    ) {
        let size = 256 * KIB;
        let io = MockIo::new(14, size);
        let img = Img::new(io.clone(), CacheConfig {
            max_dirty_age: Duration::from_millis(age_ms),
            workers: 4,
            ..config(capacity)
        });
        let mut model = vec![0u8; size as usize];
        let clip = |o: u64, l: u64| (o, l.min(size - o));
        for op in ops {
            match op {
                Op::Write(o, l, s) => {
                    let (o, l) = clip(o, l);
                    let data = pattern(s, l as usize);
                    img.write(o, &data);
                    model[o as usize..(o + l) as usize].copy_from_slice(&data);
                }
                Op::Read(o, l) => {
                    let (o, l) = clip(o, l);
                    prop_assert_eq!(img.read(o, l), &model[o as usize..(o + l) as usize]);
                }
                Op::Seq(o, n) => {
                    for i in 0..n {
                        let at = o + i * 4096;
                        if at >= size { break; }
                        let (at, l) = clip(at, 4096);
                        prop_assert_eq!(img.read(at, l), &model[at as usize..(at + l) as usize]);
                    }
                }
                Op::Flush => {
                    img.ic.flush().unwrap();
                    prop_assert!(io.image_bytes(size) == model, "RADOS differs after flush");
                }
                Op::Invalidate => img.ic.invalidate(),
            }
            let s = img.cache.stats();
            prop_assert!(s.clean_bytes + s.dirty_bytes + s.reserved_bytes <= capacity);
        }
        img.ic.flush().unwrap();
        prop_assert!(io.image_bytes(size) == model, "RADOS differs at the end");
        prop_assert_eq!(img.read(0, size), model);
        prop_assert!(img.cache.stats().peak_bytes <= capacity);
    }
}
