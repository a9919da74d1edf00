//! What reads see: own writes before flush, snapshots apart from the
//! head, the clean copy patched by writes, heads other clients may write,
//! unrelated objects in parallel, and striped layouts.

use super::super::write::object_len;
use super::*;

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
