//! Diff streams over the in-memory cluster: every variant, applied as
//! `rbd import-diff` would, reproduces each snapshot; fast-diff streams
//! hold only the changed objects.

use super::*;
use crate::format::diff::Piece;
use crate::format::diff::apply_stream;
use crate::image::{DiffMethod, ReadData};
use crate::store::NOSNAP;

fn stream(img: &Image, from: Option<&str>, to: &str) -> (Vec<u8>, DiffMethod) {
    let plan = img.diff(from, to).unwrap();
    let whole = img
        .read_diff(&plan, 0, plan.size() + 10)
        .unwrap()
        .into_vec();
    assert_eq!(whole.len() as u64, plan.size(), "size known before reading");
    // Any split of the reads gives the same bytes.
    let mut pieces = Vec::new();
    let mut at = 0;
    while at < plan.size() {
        let part = img.read_diff(&plan, at, 777).unwrap();
        assert!(!part.is_empty());
        at += part.len() as u64;
        pieces.extend_from_slice(&part);
    }
    assert_eq!(pieces, whole);
    (whole, plan.method)
}

#[test]
fn chains_reproduce_every_snapshot() {
    let store = MemoryStore::new();
    let cache = cache();
    for (name, opts) in variants() {
        let size = 64 << 10; // 16 objects of 4 KiB
        let img = create_open(&store, &cache, name, size, &opts);
        img.write(0, &pattern(1, 40 << 10)).unwrap();
        let s1 = img.read(NOSNAP, 0, size).unwrap();
        img.snap_create("s1").unwrap();
        img.write(5000, &pattern(2, 3000)).unwrap();
        img.write(50 << 10, &pattern(3, 100)).unwrap();
        img.discard(8 << 10, 8 << 10).unwrap();
        img.flush().unwrap();
        let s2 = img.read(NOSNAP, 0, size).unwrap();
        img.snap_create("s2").unwrap();
        img.write(60 << 10, &pattern(4, 4 << 10)).unwrap();
        img.discard(0, 4 << 10).unwrap();
        img.flush().unwrap();
        let s3 = img.read(NOSNAP, 0, size).unwrap();
        img.snap_create("s3").unwrap();

        let mut target = Vec::new();
        let (full, _) = stream(&img, None, "s1");
        assert_eq!(
            apply_stream(&full, &mut target).unwrap(),
            (None, Some("s1".into()))
        );
        assert_eq!(target, s1, "{name}: s1/full");
        let (d12, method) = stream(&img, Some("s1"), "s2");
        assert_eq!(
            apply_stream(&d12, &mut target).unwrap(),
            (Some("s1".into()), Some("s2".into()))
        );
        assert_eq!(target, s2, "{name}: s2/since-s1");
        let (d23, _) = stream(&img, Some("s2"), "s3");
        apply_stream(&d23, &mut target).unwrap();
        assert_eq!(target, s3, "{name}: s3/since-s2");
        let mut skip = s1.clone();
        let (d13, _) = stream(&img, Some("s1"), "s3");
        apply_stream(&d13, &mut skip).unwrap();
        assert_eq!(skip, s3, "{name}: s3/since-s1");

        let features = img.info().features;
        let want = if crate::image::features::has_fast_diff(features) {
            DiffMethod::FastDiff
        } else if crate::image::features::has_object_map(features) {
            DiffMethod::ObjectMap
        } else {
            DiffMethod::ObjectExistence
        };
        assert_eq!(method, want, "{name}");
        if name == "v2lock" {
            // Objects 1, 2 (written), 12 (written), 2..3 discarded: at most
            // 3 objects of data.
            assert!(d12.len() < 3 * 4096 + 200, "{name}: {}", d12.len());
        }
        // Not older, or no such snapshot.
        assert!(img.diff(Some("s3"), "s1").is_err());
        assert!(img.diff(Some("s2"), "s2").is_err());
        assert!(img.diff(None, "nope").is_err());
        img.close().unwrap();
    }
}

#[test]
fn removed_snapshot_fails_reads() {
    let store = MemoryStore::new();
    let cache = cache();
    let opts = &variants()[2].1;
    let img = create_open(&store, &cache, "gone", 64 << 10, opts);
    img.write(0, &pattern(5, 64 << 10)).unwrap();
    img.snap_create("a").unwrap();
    let plan = img.diff(None, "a").unwrap();
    img.read_diff(&plan, 0, 100).unwrap();
    img.snap_remove("a").unwrap();
    let e = img.read_diff(&plan, 100, 4096).unwrap_err();
    assert!(
        matches!(e, crate::error::ImageError::NoSnapshot { .. }),
        "{e}"
    );
    // A new snapshot with the same name is another snapshot.
    img.snap_create("a").unwrap();
    assert!(img.read_diff(&plan, 100, 4096).is_err());
    img.close().unwrap();
}

#[test]
fn clone_full_includes_the_parent() {
    let store = MemoryStore::new();
    let cache = cache();
    let size = 16 << 10;
    let (parent, _, snap) = snapshotted_parent(store.clone(), &cache, 7, size);
    parent.flush().unwrap();
    let features =
        FEATURE_LAYERING | FEATURE_EXCLUSIVE_LOCK | FEATURE_OBJECT_MAP | FEATURE_FAST_DIFF;
    admin::create_image(&*store, "child", 2 * size, &v2(features)).unwrap();
    attach_parent(&*store, "child", parent_spec(&parent, &snap, ""), size);
    let child = Image::open(store.clone(), &cache, "child").unwrap();
    child.write(5000, b"child").unwrap();
    child.write(size + 10, b"past the overlap").unwrap();
    child.flush().unwrap();
    child.snap_create("c1").unwrap();
    child.write(9000, b"again").unwrap();
    child.flush().unwrap();
    child.snap_create("c2").unwrap();
    let want1 = child
        .read(child.info().snapshot("c1").unwrap().id, 0, 2 * size)
        .unwrap();
    let want2 = child.read(NOSNAP, 0, 2 * size).unwrap();
    let mut target = Vec::new();
    apply_stream(&stream(&child, None, "c1").0, &mut target).unwrap();
    assert_eq!(target, want1);
    let (d, method) = stream(&child, Some("c1"), "c2");
    assert_eq!(method, DiffMethod::FastDiff);
    assert!(d.len() < 4096 + 200, "{}", d.len());
    apply_stream(&d, &mut target).unwrap();
    assert_eq!(target, want2);
    child.close().unwrap();
}

/// Removing a snapshot folds its map into the next newer snapshot's (as
/// librbd does), so a diff across the removed one still sees what changed
/// before it.
#[test]
fn removed_middle_snapshot_keeps_changes_visible() {
    let store = MemoryStore::new();
    let cache = cache();
    let opts = &variants()[2].1;
    let size = 32 << 10;
    let img = create_open(&store, &cache, "mid", size, opts);
    img.write(0, &pattern(1, size as usize)).unwrap();
    img.snap_create("s1").unwrap();
    let s1 = img.read(NOSNAP, 0, size).unwrap();
    img.write(5000, &pattern(2, 100)).unwrap();
    img.flush().unwrap();
    img.snap_create("s2").unwrap();
    img.snap_create("s3").unwrap();
    let s3 = img.read(NOSNAP, 0, size).unwrap();
    img.snap_remove("s2").unwrap();
    let (d, method) = stream(&img, Some("s1"), "s3");
    assert_eq!(method, DiffMethod::FastDiff);
    let mut target = s1;
    apply_stream(&d, &mut target).unwrap();
    assert_eq!(target, s3);
    img.close().unwrap();
}

#[test]
fn reads_inside_one_objects_data_are_sent_from_the_cache() {
    let store = MemoryStore::new();
    let cache = cache();
    let opts = &variants()[2].1; // 4 KiB objects, fast-diff
    let img = create_open(&store, &cache, "shared", 64 << 10, opts);
    img.write(4 << 10, &pattern(7, 8 << 10)).unwrap();
    img.flush().unwrap();
    img.snap_create("s1").unwrap();
    let plan = img.diff(None, "s1").unwrap();
    let whole = img.read_diff(&plan, 0, plan.size()).unwrap().into_vec();
    // A range of the stream that is one `w` record's data in one object.
    let (at, len) = (0..plan.size())
        .map(|at| (at, 1000))
        .find(|&(at, len)| {
            matches!(plan.stream.pieces(at, len).as_slice(),
                [Piece::Image { offset, len }] if offset / 4096 == (offset + len - 1) / 4096)
        })
        .expect("a record's data");
    let a = img.read_diff(&plan, at, len).unwrap();
    let b = img.read_diff(&plan, at, len).unwrap();
    let (ReadData::Cached(_), ReadData::Cached(_)) = (&a, &b) else {
        panic!("copied: {a:?} {b:?}");
    };
    assert_eq!(a.as_ptr(), b.as_ptr(), "each read has its own copy");
    assert_eq!(&a[..], &whole[at as usize..(at + len) as usize]);
    // Reads across a record's header are assembled, same bytes.
    let across = img.read_diff(&plan, at - 30, 100).unwrap();
    assert!(matches!(across, ReadData::Owned(_)), "{across:?}");
    assert_eq!(&across[..], &whole[at as usize - 30..at as usize + 70]);
    img.close().unwrap();
}
