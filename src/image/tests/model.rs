//! Random writes, reads, snapshots and resizes against a byte model.

use proptest::prelude::*;

use super::*;
use crate::store::NOSNAP;

#[derive(Debug, Clone)]
enum Step {
    Write(u64, usize, u8),
    Read(u64, u64),
    Snap,
    Resize(u64),
    Flush,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u64..24_000, 1usize..6000, any::<u8>()).prop_map(|(o, l, s)| Step::Write(o, l, s)),
        2 => (0u64..24_000, 1u64..10_000).prop_map(|(o, l)| Step::Read(o, l)),
        1 => Just(Step::Snap),
        1 => (1u64..24_000).prop_map(Step::Resize),
        1 => Just(Step::Flush),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn image_matches_a_byte_model(
        striped_image in any::<bool>(),
        steps in proptest::collection::vec(step(), 1..25),
    ) {
        let store = MemoryStore::new();
        let opts = if striped_image { super::striped() } else { v2(FEATURE_LAYERING) };
        let img = create_open(&store, &cache(), "p", 16_000, &opts);
        let mut head = vec![0u8; 16_000];
        let mut snaps: Vec<(u64, Vec<u8>)> = Vec::new();
        for (i, s) in steps.into_iter().enumerate() {
            match s {
                Step::Write(off, len, seed) => {
                    let data = pattern(seed, len);
                    let r = img.write(off, &data);
                    if off as usize + len <= head.len() {
                        r.unwrap();
                        head[off as usize..off as usize + len].copy_from_slice(&data);
                    } else {
                        prop_assert!(r.is_err());
                    }
                }
                Step::Read(off, len) => {
                    let got = img.read(NOSNAP, off, len).unwrap();
                    let start = (off as usize).min(head.len());
                    let end = (off as usize + len as usize).min(head.len());
                    prop_assert_eq!(got, &head[start..end]);
                }
                Step::Snap => {
                    let s = img.snap_create(&format!("s{i}")).unwrap();
                    snaps.push((s.id, head.clone()));
                }
                Step::Resize(size) => {
                    img.resize(size).unwrap();
                    head.resize(size as usize, 0);
                }
                Step::Flush => img.flush().unwrap(),
            }
        }
        prop_assert_eq!(img.read(NOSNAP, 0, 1 << 20).unwrap(), head);
        for (id, bytes) in &snaps {
            prop_assert_eq!(&img.read(*id, 0, 1 << 20).unwrap(), bytes);
        }
    }
}
