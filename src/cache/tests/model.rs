//! Random interleavings of reads, writes, flushes and invalidations
//! against a byte model (proptest).

use proptest::prelude::*;

use super::*;

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
