//! Sequential read-ahead: prefetch, joining reads in flight, random
//! reads left alone, and writes that race a prefetch.

use super::*;

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

/// A snapshot file read through the kernel's page cache: its read-ahead
/// sends several requests at once (in order, a moment apart), each
/// waiting while the next arrive. Each object is still read from RADOS
/// once, whole (a request that starts or continues an object reads the
/// rest of it; the others join that read), and the bytes are the
/// snapshot's. Reading each request's piece alone, as before, read most
/// objects several times (pieces, then our read-ahead of the object).
#[test]
fn snapshot_reads_arriving_together_read_each_object_once() {
    const SNAP: SnapId = 7;
    let os = 4 * MIB;
    let objects = 12;
    let io = MockIo::new(22, objects * os);
    for n in 0..objects {
        io.head.lock().insert(n, pattern(n, os as usize));
    }
    io.snapshot(SNAP);
    io.set_delays(Duration::from_millis(10), Duration::ZERO);
    let img = Img::new(io.clone(), config(64 * MIB));
    let expected = io.image_bytes(objects * os);
    let bs = MIB;
    let batch = 4;
    let mut got = vec![0u8; (objects * os) as usize];
    for first in (0..objects * os / bs).step_by(batch) {
        // One batch of requests in flight together.
        let pieces: Vec<(u64, CachedBytes)> = thread::scope(|s| {
            let handles: Vec<_> = (first..first + batch as u64)
                .map(|i| {
                    let ic = &img.ic;
                    thread::sleep(Duration::from_millis(2));
                    s.spawn(move || {
                        let off = i * bs;
                        let seq = ic.start_read(SNAP, off, bs);
                        let bytes = ic.read_shared(SNAP, off / os, off % os, bs).expect("read");
                        ic.finish_read(SNAP, off, bs, seq);
                        (off, bytes)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (off, bytes) in pieces {
            assert_eq!(bytes.len() as u64, bs);
            got[off as usize..(off + bs) as usize].copy_from_slice(&bytes);
        }
    }
    assert!(got == expected, "bytes differ from the snapshot's");
    for n in 0..objects {
        assert_eq!(
            io.reads_of(SNAP, n),
            1,
            "object {n}: {:?}",
            img.cache.stats()
        );
    }
    for &(object_no, offset, len) in io.read_log.lock().iter() {
        assert_eq!(
            offset + len,
            os,
            "object {object_no} read from {offset} but not to its end"
        );
    }
}

/// A read served from the cache hands out the cache's own buffer.
#[test]
fn shared_reads_do_not_copy() {
    const SNAP: SnapId = 3;
    let io = MockIo::new(20, 8 * MIB);
    io.head.lock().insert(1, pattern(1, MIB as usize));
    io.snapshot(SNAP);
    let img = Img::new(io.clone(), config(16 * MIB));
    let a = img.ic.read_shared(SNAP, 1, 0, MIB).expect("read");
    let b = img.ic.read_shared(SNAP, 1, 4 * KIB, 8 * KIB).expect("read");
    assert!(Arc::ptr_eq(&a.data, &b.data), "second read copied");
    assert_eq!(&b[..], &pattern(1, MIB as usize)[4096..12288]);
    assert_eq!(io.reads_of(SNAP, 1), 1);
}
