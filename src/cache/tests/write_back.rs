//! Write-back: flush, ordering, batching, age and whole-object triggers,
//! errors, and the write-back on drop.

use super::*;

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
    assert!(!img.ic.write_back_all(), "error pending");
    assert!(
        !img.ic.write_back_all(),
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
fn drop_writes_back() {
    let io = MockIo::new(16, MIB);
    {
        let img = Img::new(io.clone(), config(8 * MIB));
        img.write(5, b"bye");
    }
    assert_eq!(&io.image_bytes(8)[5..8], b"bye");
}
