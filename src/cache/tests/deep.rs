//! Deep read-ahead of immutable data: a deeper window for snapshots, the
//! window shared by the streams active at once, and read-ahead that no
//! other prefetch evicts before its reader got to it.

use super::super::budget::{Budget, ENTRY_OVERHEAD};
use super::*;

/// A snapshot with every object of `io` holding its own pattern.
fn snapshot_with_data(io: &MockIo, objects: u64, snap: SnapId) -> Vec<u8> {
    let os = io.layout.object_size;
    for n in 0..objects {
        io.head.lock().insert(n, pattern(n + 7, os as usize));
    }
    io.snapshot(snap);
    io.image_bytes(objects * os)
}

#[test]
fn snapshots_read_ahead_deeper_than_the_head() {
    let cfg = config(64 * MIB);
    assert_eq!(cfg.prefetch_limit(), 16 * MIB);
    assert_eq!(cfg.immutable_prefetch_limit(), 24 * MIB);
    // An explicit window applies to both.
    let explicit = CacheConfig {
        max_prefetch: Some(8 * MIB),
        ..config(64 * MIB)
    };
    assert_eq!(explicit.immutable_prefetch_limit(), 8 * MIB);
    // Never past half the cache.
    let big = CacheConfig {
        max_prefetch: Some(1 << 30),
        ..config(64 * MIB)
    };
    assert_eq!(big.immutable_prefetch_limit(), 32 * MIB);
    assert_eq!(config(4 << 30).immutable_prefetch_limit(), 96 * MIB);

    let (head_depth, snap_depth) = [NOSNAP, 5]
        .map(|snap| {
            let io = MockIo::new(22, 256 * MIB);
            if snap != NOSNAP {
                snapshot_with_data(&io, 64, snap);
            }
            io.set_delays(Duration::from_millis(30), Duration::ZERO);
            let img = Img::new(io.clone(), config(64 * MIB));
            for i in 0..64u64 {
                img.read_at(snap, i * MIB, MIB);
            }
            let s = img.cache.stats();
            assert!(s.peak_bytes <= 64 * MIB, "{s:?}");
            io.max_busy.load(Ordering::SeqCst)
        })
        .into();
    assert!(head_depth >= 4, "head: {head_depth} in flight");
    assert!(
        snap_depth > head_depth && snap_depth >= 6,
        "snapshot: {snap_depth} in flight, head {head_depth}"
    );
}

#[test]
fn streams_active_at_once_share_the_window() {
    let cache = Cache::new(config(64 * MIB));
    let s = &cache.shared;
    assert_eq!(s.stream_window(1, true), 24 * MIB);
    assert_eq!(s.stream_window(1, false), 16 * MIB);
    assert_eq!(s.stream_window(2, true), 12 * MIB);
    assert_eq!(s.stream_window(3, true), 8 * MIB);
    assert_eq!(s.stream_window(4, true), 6 * MIB);
    // Idle streams give their share back.
    s.active_streams
        .lock()
        .values_mut()
        .for_each(|t| *t -= STREAM_IDLE);
    assert_eq!(s.stream_window(4, true), 24 * MIB);
    let off = Cache::new(CacheConfig {
        max_prefetch: Some(0),
        ..config(64 * MIB)
    });
    assert_eq!(off.shared.stream_window(1, true), 0);
}

#[test]
fn prefetch_does_not_evict_read_ahead_not_yet_read() {
    let mut b = Budget::new(4 * (1000 + ENTRY_OVERHEAD), 0);
    let later = Instant::now() + Duration::from_secs(60);
    for o in 0..4 {
        assert!(b.insert((1, 5, o), 0, Arc::new(vec![1; 1000]), 0, None));
        b.protect(&(1, 5, o), later);
    }
    // Another stream's prefetch finds no room...
    assert!(!b.try_reserve_ahead(1000));
    assert_eq!(b.reserved, 0);
    // ...until the reader is done with an object.
    b.demote(&(1, 5, 0));
    assert!(b.try_reserve_ahead(1000));
    assert!(!b.covers(&(1, 5, 0), 0, 1));
    assert!(b.covers(&(1, 5, 1), 0, 1000));
    b.unreserve(1000);
    // A demand read may evict anything (here the least recently used).
    assert!(b.try_reserve(2 * (1000 + ENTRY_OVERHEAD)));
    assert!(!b.covers(&(1, 5, 1), 0, 1));
    b.unreserve(2 * (1000 + ENTRY_OVERHEAD));
    // Protection ends in time, for a reader that never came back.
    let past = Instant::now() - Duration::from_millis(1);
    b.protect(&(1, 5, 2), past);
    assert!(!b.try_reserve_ahead(4 * (1000 + ENTRY_OVERHEAD)));
    assert!(b.try_reserve_ahead(3 * (1000 + ENTRY_OVERHEAD)));
    assert!(!b.covers(&(1, 5, 2), 0, 1));
    assert!(b.covers(&(1, 5, 3), 0, 1000));
}

/// Four sequential readers of one snapshot at different places: the bound
/// holds, every byte is the snapshot's, and no object is read from RADOS
/// more than once per reader (read-ahead is not evicted before use).
#[test]
fn four_streams_stay_bounded_and_read_each_object_once() {
    let capacity = 64 * MIB;
    let io = MockIo::new(22, 256 * MIB);
    let want = Arc::new(snapshot_with_data(&io, 64, 9));
    // The head moves on after the snapshot.
    for n in 0..64 {
        io.head.lock().insert(n, vec![0xee; 4 * MIB as usize]);
    }
    io.set_delays(Duration::from_millis(10), Duration::ZERO);
    let img = Arc::new(Img::new(io.clone(), config(capacity)));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (img, want) = (img.clone(), want.clone());
            thread::spawn(move || {
                let band = t * 64 * MIB;
                for i in 0..64u64 {
                    let off = band + i * MIB;
                    let got = img.read_at(9, off, MIB);
                    assert!(
                        got == want[off as usize..(off + MIB) as usize],
                        "stream {t}: bytes at {off}"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("reader thread");
    }
    let s = img.cache.stats();
    assert!(s.peak_bytes <= capacity, "{s:?}");
    assert!(s.prefetched_bytes > 0, "{s:?}");
    for n in 0..64 {
        let reads = io.reads_of(9, n);
        assert!(reads >= 1, "object {n} never read");
    }
    // Demand reads of the first objects are of pieces; past them, whole
    // objects read once: far fewer RADOS reads than 1 MiB requests.
    assert!(
        io.total_reads() <= 64 + 4 * 8,
        "{} RADOS reads for 64 objects: {s:?}",
        io.total_reads()
    );
}
