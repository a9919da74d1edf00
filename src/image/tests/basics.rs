//! One client: data, snapshots, resize, rename, remove, clones.

use super::*;
use crate::store::NOSNAP;

#[test]
fn write_read_flush_every_variant() {
    let store = MemoryStore::new();
    let cache = cache();
    for (name, opts) in variants() {
        let size = 64 << 10;
        let img = create_open(&store, &cache, name, size, &opts);
        let mut model = vec![0u8; size as usize];
        for (i, &(off, len)) in [
            (0u64, 100usize),
            (4000, 5000),
            (30_000, 20_000),
            (size - 7, 7),
        ]
        .iter()
        .enumerate()
        {
            let data = pattern(i as u8 + 1, len);
            img.write(off, &data).unwrap();
            model[off as usize..off as usize + len].copy_from_slice(&data);
        }
        assert_eq!(img.read(NOSNAP, 0, size).unwrap(), model, "{name} cached");
        img.flush().unwrap();
        // A fresh open (new cache) reads what reached the store.
        let fresh = Image::open(store.clone(), &super::cache(), name).unwrap();
        assert_eq!(fresh.read(NOSNAP, 0, size).unwrap(), model, "{name} stored");
        assert!(img.write(size - 1, b"xx").is_err(), "{name}: past the end");
        img.close().unwrap();
        fresh.close().unwrap();
    }
}

#[test]
fn snapshots_keep_old_bytes() {
    let store = MemoryStore::new();
    let cache = cache();
    for (name, opts) in variants() {
        let size = 32 << 10;
        let img = create_open(&store, &cache, name, size, &opts);
        let old = pattern(3, size as usize);
        img.write(0, &old).unwrap();
        let snap = img.snap_create("s1").unwrap();
        assert!(img.snap_create("s1").is_err(), "{name}: duplicate name");
        let new = pattern(9, size as usize);
        img.write(0, &new).unwrap();
        img.flush().unwrap();
        assert_eq!(img.read(snap.id, 0, size).unwrap(), old, "{name} snapshot");
        assert_eq!(img.read(NOSNAP, 0, size).unwrap(), new, "{name} head");
        let fresh = Image::open(store.clone(), &super::cache(), name).unwrap();
        assert_eq!(
            fresh.read(snap.id, 0, size).unwrap(),
            old,
            "{name} reopened"
        );
        fresh.close().unwrap();
        img.snap_remove("s1").unwrap();
        assert!(img.info().snapshot("s1").is_none());
        assert_eq!(img.snap_remove("s1").unwrap_err().errno(), libc::ENOENT);
        img.close().unwrap();
    }
}

#[test]
fn resize_grow_and_shrink() {
    let store = MemoryStore::new();
    let cache = cache();
    for (name, opts) in variants() {
        let size = 40 << 10;
        let img = create_open(&store, &cache, name, size, &opts);
        let data = pattern(5, size as usize);
        img.write(0, &data).unwrap();
        let snap = img.snap_create("before").unwrap();
        img.resize(10_000).unwrap();
        assert_eq!(img.info().size, 10_000);
        assert_eq!(
            img.read(NOSNAP, 0, size).unwrap(),
            &data[..10_000],
            "{name}"
        );
        img.resize(size).unwrap();
        let mut want = data[..10_000].to_vec();
        want.resize(size as usize, 0);
        assert_eq!(
            img.read(NOSNAP, 0, size).unwrap(),
            want,
            "{name}: cut data gone"
        );
        assert_eq!(
            img.read(snap.id, 0, size).unwrap(),
            data,
            "{name}: snapshot kept"
        );
        img.close().unwrap();
    }
}

#[test]
fn clone_reads_parent_and_copies_up() {
    let store = MemoryStore::new();
    let cache = cache();
    let size = 16 << 10;
    let (parent, pdata, snap) = snapshotted_parent(store.clone(), &cache, 7, size);
    parent.write(0, &[0xee; 100]).unwrap();
    parent.flush().unwrap();
    admin::create_image(&*store, "child", size, &v2(FEATURE_LAYERING)).unwrap();
    attach_parent(&*store, "child", parent_spec(&parent, &snap, ""), size);
    assert_reads_through_and_copies_up(store, &cache, &pdata, size);
}
