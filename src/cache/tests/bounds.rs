//! The byte bound and the dirty bound: capacity never exceeded,
//! backpressure, zero capacity and writes bigger than the dirty bound.

use super::*;

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
