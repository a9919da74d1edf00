//! Fuzzing of every decoder of on-disk and on-wire RBD data: valid
//! encodings, mutated (bit flips, hostile counts and lengths, truncation,
//! extension) and random bytes. No input may panic, hang, or make a
//! decoder allocate more than the input justifies.
//!
//! `RBDFS_FUZZ_CASES` sets the number of inputs per decoder (default
//! 20,000 here; `contrib/fuzz.sh` runs 1,000,000); `RBDFS_FUZZ_SEED`
//! replays a run.

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use rbdfs::format::tmap::Tmap;
use rbdfs::format::v1::HeaderV1;
use rbdfs::format::v2::*;
use rbdfs::format::{SnapshotInfo, decode::Encoder};
use rbdfs::layout::Layout;
use rbdfs::store::{SnapContext, decode_notify_replies};

/// Records the largest single allocation, so a decoder that trusts a
/// hostile length is caught even when the allocation would succeed.
/// Per thread, so that tests running side by side each see their own.
struct Tracking;
thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // try_with: the thread-local may already be gone at thread exit.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every call is passed to the system allocator unchanged; `note`
// only records a size in a const-initialised thread-local and never
// allocates.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller upholds alloc's contract, which System shares.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        // SAFETY: `ptr` came from System.alloc/realloc above with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr` came from System with `layout`; the caller upholds
        // realloc's contract for `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// No input here is over a few KiB; anything near this is a decoder
/// believing a length field.
const ALLOCATION_LIMIT: usize = 16 << 20;
// Generous: CI machines are shared and slow; a loop takes forever.
const SLOW_INPUT: Duration = Duration::from_secs(5);

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

fn cases() -> u64 {
    std::env::var("RBDFS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn seed() -> u64 {
    std::env::var("RBDFS_FUZZ_SEED")
        .ok()
        .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// One mutation of `base`: what hostile metadata looks like.
fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut b = base.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        match rng.below(7) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len() as u64) as usize;
                b[i] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => {
                let i = rng.below(b.len() as u64) as usize;
                b[i] = [0, 0xff, 0x7f, 0x80, 1][rng.below(5) as usize];
            }
            2 if b.len() >= 4 => {
                // A hostile u32 count or length at a random place.
                let i = rng.below(b.len() as u64 - 3) as usize;
                let v: u32 = [u32::MAX, 1 << 31, 1 << 28, 0x10000, 0][rng.below(5) as usize];
                b[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            3 if b.len() >= 8 => {
                let i = rng.below(b.len() as u64 - 7) as usize;
                let v: u64 = [u64::MAX, 1 << 60, u64::MAX - 1, 1 << 40][rng.below(4) as usize];
                b[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            4 => b.truncate(rng.below(b.len() as u64 + 1) as usize),
            5 => {
                let n = rng.below(64);
                b.extend((0..n).map(|_| rng.next() as u8));
            }
            _ => {
                let i = rng.below(b.len() as u64 + 1) as usize;
                b.insert(i, rng.next() as u8);
            }
        }
    }
    b
}

/// Runs `decode` over the corpus, mutations of it and noise.
fn fuzz(what: &str, corpus: &[Vec<u8>], decode: impl Fn(&[u8])) {
    let seed = seed();
    let mut rng = Rng(seed);
    let n = cases();
    for base in corpus {
        decode(base);
    }
    for i in 0..n {
        let input = if corpus.is_empty() || rng.below(5) == 0 {
            let len = rng.below(300);
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            let base = &corpus[rng.below(corpus.len() as u64) as usize];
            mutate(&mut rng, base)
        };
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode(&input)));
        assert!(
            outcome.is_ok(),
            "{what}: panic on input #{i} (RBDFS_FUZZ_SEED={seed:x}): {input:02x?}"
        );
        assert!(
            started.elapsed() < SLOW_INPUT,
            "{what}: input #{i} took {:?} (RBDFS_FUZZ_SEED={seed:x})",
            started.elapsed()
        );
    }
    let largest = LARGEST.with(|l| l.get());
    assert!(
        largest < ALLOCATION_LIMIT,
        "{what}: an allocation of {largest} bytes (RBDFS_FUZZ_SEED={seed:x})"
    );
}

#[test]
fn format1_header() {
    let h = HeaderV1 {
        block_name: "rb.0.1029.6b8b4567".into(),
        order: 22,
        size: 1 << 30,
        snap_seq: 9,
        snapshots: vec![
            SnapshotInfo {
                id: 9,
                name: "b".into(),
                size: 1 << 30,
            },
            SnapshotInfo {
                id: 3,
                name: "first".into(),
                size: 1 << 29,
            },
        ],
    };
    let empty = HeaderV1 {
        snapshots: vec![],
        ..h.clone()
    };
    fuzz("format-1 header", &[h.encode(), empty.encode()], |b| {
        let _ = HeaderV1::decode(b);
    });
}

#[test]
fn tmap() {
    let t = Tmap {
        header: vec![],
        entries: vec![(b"a".to_vec(), vec![]), (b"img".to_vec(), b"x".to_vec())],
    };
    fuzz("TMAP", &[t.encode(), Tmap::default().encode()], |b| {
        let _ = Tmap::decode(b);
    });
}

#[test]
fn format2_header_replies() {
    let snapc = SnapContext {
        seq: 9,
        snaps: vec![9, 4, 1],
    };
    let parent = ParentSpec {
        pool_id: 2,
        pool_namespace: String::new(),
        image_id: "1234abcd".into(),
        snap_id: 4,
    };
    let corpus = vec![
        encode_get_size_reply(SizeInfo {
            order: 22,
            size: 1 << 30,
        }),
        encode_get_features_reply(FeaturesInfo {
            features: 0x3d,
            incompatible: 1,
        }),
        encode_string_reply("rbd_data.101f39e781cb"),
        encode_get_snapcontext_reply(&snapc),
        encode_get_stripe_unit_count_reply(StripeInfo {
            unit: 65536,
            count: 4,
        }),
        encode_get_data_pool_reply(Some(3)),
        encode_parent_get_reply(Some(&parent)),
        encode_parent_overlap_get_reply(Some(1 << 20)),
        encode_get_parent_reply(Some((&parent, 1 << 20))),
        encode_dir_list_reply(&[DirEntry {
            name: b"img".to_vec(),
            id: b"1234".to_vec(),
        }]),
    ];
    fuzz("format-2 header replies", &corpus, |b| {
        let _ = decode_get_size(b);
        let _ = decode_get_features(b);
        let _ = decode_get_object_prefix(b);
        let _ = decode_string_reply(b, "fuzz");
        let _ = decode_id_object(b);
        let _ = decode_get_snapcontext(b);
        let _ = decode_get_stripe_unit_count(b);
        let _ = decode_get_data_pool(b);
        let _ = decode_get_flags(b);
        let _ = decode_parent_get(b);
        let _ = decode_parent_overlap_get(b);
        let _ = decode_get_parent(b);
        let _ = decode_dir_list(b);
        let _ = decode_dir_get_id(b);
    });
}

#[test]
fn snapshot_records() {
    let rec = SnapshotRecord {
        id: 7,
        namespace: SnapshotNamespace::User,
        name: "daily".into(),
        image_size: 1 << 30,
        timestamp: Utime {
            sec: 1_700_000_000,
            nsec: 5,
        },
        child_count: 0,
    };
    let trash = SnapshotRecord {
        namespace: SnapshotNamespace::Trash {
            original_name: "old".into(),
            original_type: 0,
        },
        ..rec.clone()
    };
    fuzz(
        "snapshot records",
        &[rec.encode(), trash.encode(), snapshot_add_input(7, "x")],
        |b| {
            let _ = SnapshotRecord::decode(b);
            let _ = decode_snapshot_add_input(b);
            let _ = decode_get_protection_status(b);
        },
    );
}

#[test]
fn lock_and_notify() {
    let corpus = vec![
        LockOp::rbd_exclusive("auto 140086666597536").encode(),
        NotifyMessage::AcquiredLock(ClientId {
            gid: 4321,
            handle: 99,
        })
        .encode(),
        NotifyMessage::RequestLock {
            client: ClientId { gid: 1, handle: 2 },
            force: true,
        }
        .encode(),
        NotifyMessage::HeaderUpdate.encode(),
        response_message(-16),
    ];
    fuzz("lock and notify", &corpus, |b| {
        let _ = LockOp::decode(b);
        let _ = LockInfo::decode(b);
        let _ = decode_get_info(b);
        let _ = NotifyMessage::decode(b);
        let _ = decode_response_message(b);
        let _ = decode_notify_replies(b);
    });
}

#[test]
fn object_map() {
    let mut map = ObjectMap::new(1000, ObjectState::Nonexistent);
    map.set(3, ObjectState::Exists);
    map.set(999, ObjectState::ExistsClean);
    let corpus = vec![
        map.encode(true),
        map.encode(false),
        ObjectMap::new(0, ObjectState::Nonexistent).encode(true),
        object_map_update_input(1, 2, ObjectState::Exists, Some(ObjectState::Nonexistent)),
    ];
    fuzz("object map", &corpus, |b| {
        if let Ok(m) = ObjectMap::decode(b) {
            // Lookups anywhere are answered, never out of bounds.
            let _ = m.get(0);
            let _ = m.get(m.len());
            let _ = m.get(u64::MAX);
        }
        let _ = decode_object_map_update_input(b);
    });
}

#[test]
fn striping_parameters() {
    // Layouts come from headers too: any (order, unit, count) must either
    // be refused or map every offset without overflow.
    let mut corpus = Vec::new();
    for (order, su, sc) in [(22u8, 65536u64, 4u64), (12, 4096, 1), (25, 1 << 25, 1)] {
        let mut e = Encoder::new();
        e.u8(order).u64(su).u64(sc).u64(1 << 40).u64(12345);
        corpus.push(e.finish());
    }
    fuzz("striping parameters", &corpus, |b| {
        if b.len() < 33 {
            return;
        }
        let order = b[0];
        let u = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let (su, sc, offset, len) = (u(1), u(9), u(17), u(25) % (1 << 22));
        if let Some(layout) = Layout::striped(order, su, sc) {
            let offset = offset % (1 << 50);
            for e in layout.map(offset, len) {
                let _ = layout.unmap(e.object_no, e.offset, e.len);
            }
            let _ = layout.object_count(offset);
        }
    });
}

#[test]
fn partition_tables() {
    use rbdfs::format::partitions::{SCAN_BYTES, encode_gpt, encode_mbr, parse};
    const GIB: u64 = 1 << 30;
    let corpus = vec![
        encode_mbr(&[(0x83, 2048, 4096), (0x05, 8192, 100), (0x0c, 10000, 1)]),
        encode_mbr(&[(0xee, 1, u32::MAX)]),
        encode_gpt(512, GIB / 512, &[(2048, 4095), (4096, 8191)]),
        encode_gpt(4096, GIB / 4096, &[(256, 511)]),
        // Header only: the entry array is missing.
        encode_gpt(512, GIB / 512, &[(2048, 4095)])[..1024].to_vec(),
    ];
    fuzz("partition table", &corpus, |b| {
        // Mutated GPTs mostly fail their CRCs; with the CRCs made right
        // again, the hostile fields reach the entry checks.
        let fixed = fix_gpt_crcs(b);
        for (b, size) in [b, &fixed[..]]
            .into_iter()
            .flat_map(|b| [0, b.len() as u64, GIB, u64::MAX].map(|s| (b, s)))
        {
            let t = parse(b, size);
            // Every partition is within the image and none overlap.
            for (i, p) in t.partitions.iter().enumerate() {
                assert!(p.length > 0 && p.offset.checked_add(p.length).is_some());
                assert!(p.end() <= size, "{p:?} past {size}");
                for q in &t.partitions[i + 1..] {
                    assert!(p.end() <= q.offset || q.end() <= p.offset, "{p:?} {q:?}");
                }
            }
            assert!(t.partitions.len() <= SCAN_BYTES / 128);
            assert!(t.problems.len() <= 17);
        }
    });
}

/// `b` with the CRC32s of a GPT header (at 512 or 4096) and of its entry
/// array (where it lies within `b`) recomputed.
fn fix_gpt_crcs(b: &[u8]) -> Vec<u8> {
    use rbdfs::format::crc::crc32_parts;
    let mut b = b.to_vec();
    for s in [512usize, 4096] {
        if b.get(s..s + 8) != Some(&b"EFI PART"[..]) || b.len() < s + 92 {
            continue;
        }
        let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        let lba = u64::from_le_bytes(b[s + 72..s + 80].try_into().unwrap());
        let len = u64::from(u32_at(&b, s + 80)) * u64::from(u32_at(&b, s + 84));
        let start = lba.saturating_mul(s as u64);
        if start.saturating_add(len) <= b.len() as u64 {
            let crc = crc32_parts(&[&b[start as usize..(start + len) as usize]]);
            b[s + 88..s + 92].copy_from_slice(&crc.to_le_bytes());
        }
        let hs = (u32_at(&b, s + 12) as usize).min(b.len() - s);
        if hs >= 20 {
            b[s + 16..s + 20].fill(0);
            let crc = crc32_parts(&[&b[s..s + hs]]);
            b[s + 16..s + 20].copy_from_slice(&crc.to_le_bytes());
        }
        break;
    }
    b
}
