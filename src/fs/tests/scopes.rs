//! Mounts of several pools and namespaces ([`MultiFs`]): `POOL` with
//! `.ns/NAMESPACE/`, `POOL/NAMESPACE`, and `/` with a directory per rbd
//! pool, over the in-memory cluster.

use std::ffi::OsStr;
use std::sync::Arc;

use super::{cache, pattern, v1, v2};
use crate::format::decode::Encoder;
use crate::format::v2::{FEATURE_LAYERING, RBD_NAMESPACE};
use crate::fs::{
    DIFF_DIR, Errno, FsOptions, MountKind, MultiFs, NS_DIR, PART_DIR, ROOT_INO, SNAP_DIR,
};
use crate::image::admin::{self, CreateOptions};
use crate::store::ObjectStore;
use crate::store::memory::MemoryStore;

fn opts(create: CreateOptions) -> FsOptions {
    FsOptions {
        read_only: false,
        fixed_size: false,
        create,
        uid: 0,
        gid: 0,
    }
}

fn mount(kind: MountKind, store: Arc<dyn ObjectStore>, only: Option<&str>) -> MultiFs {
    MultiFs::new(
        kind,
        store,
        cache(),
        only.map(str::to_string),
        opts(v2(FEATURE_LAYERING)),
    )
}

fn add_namespace(store: &dyn ObjectStore, ns: &str) {
    let mut e = Encoder::new();
    e.string(ns);
    store
        .exec(RBD_NAMESPACE, "rbd", "namespace_add", &e.finish())
        .unwrap();
}

fn ino(fs: &MultiFs, parent: u64, name: &str) -> Result<u64, Errno> {
    fs.lookup(parent, OsStr::new(name)).map(|a| a.ino)
}

/// Names in `dir` (after checking `.`, `..` and the offsets).
fn names(fs: &MultiFs, dir: u64) -> Vec<String> {
    let entries = fs.readdir(dir, 0).unwrap();
    assert_eq!(entries[0].name, ".");
    assert_eq!(entries[0].ino, dir);
    assert_eq!(entries[1].name, "..");
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.offset, i as u64 + 1);
    }
    if entries.len() > 2 {
        assert_eq!(fs.readdir(dir, 2).unwrap(), entries[2..]);
    }
    // Every entry is what a lookup of its name gives.
    for e in &entries[2..] {
        assert_eq!(ino(fs, dir, &e.name).unwrap(), e.ino, "{}", e.name);
    }
    entries.into_iter().skip(2).map(|e| e.name).collect()
}

fn parent_of(fs: &MultiFs, dir: u64) -> u64 {
    fs.readdir(dir, 0).unwrap()[1].ino
}

fn write_file(fs: &MultiFs, ino: u64, off: u64, data: &[u8]) {
    let fh = fs.open(ino, libc::O_RDWR).unwrap().fh;
    assert_eq!(fs.write(fh, off, data).unwrap(), data.len() as u32);
    fs.flush(fh).unwrap();
    fs.release(fh);
}

fn read_file(fs: &MultiFs, ino: u64, len: u32) -> Vec<u8> {
    let fh = fs.open(ino, libc::O_RDONLY).unwrap().fh;
    let data = fs.read(fh, 0, len).unwrap();
    fs.release(fh);
    data
}

#[test]
fn pool_mount_shows_namespaces_under_ns() {
    let store = MemoryStore::new();
    let t1 = store.pool_in_namespace(0, "t1").unwrap();
    let t2 = store.pool_in_namespace(0, "t2").unwrap();
    add_namespace(&*store, "t1");
    add_namespace(&*store, "t2");
    add_namespace(&*store, "bad/name");
    admin::create_image(&*store, "top", 8192, &v2(FEATURE_LAYERING)).unwrap();
    admin::create_image(&*t1, "a", 8192, &v2(FEATURE_LAYERING)).unwrap();
    admin::create_image(&*t1, "f1", 8192, &v1()).unwrap();
    admin::create_image(&*t2, "a", 8192, &v2(FEATURE_LAYERING)).unwrap();
    // An image called .ns is hidden, as .snap and .diff are.
    admin::create_image(&*store, NS_DIR, 4096, &v2(FEATURE_LAYERING)).unwrap();

    let fs = mount(MountKind::Pool, store.clone(), None);
    assert_eq!(
        names(&fs, ROOT_INO),
        [SNAP_DIR, DIFF_DIR, NS_DIR, PART_DIR, "top"]
    );
    let ns = ino(&fs, ROOT_INO, NS_DIR).unwrap();
    assert_eq!(parent_of(&fs, ns), ROOT_INO);
    assert_eq!(names(&fs, ns), ["t1", "t2"]);
    let d1 = ino(&fs, ns, "t1").unwrap();
    let d2 = ino(&fs, ns, "t2").unwrap();
    assert_eq!(parent_of(&fs, d1), ns);
    assert!(ino(&fs, ns, "t3").is_err());
    // The same tree inside, without .ns of its own.
    assert_eq!(names(&fs, d1), [SNAP_DIR, DIFF_DIR, PART_DIR, "a", "f1"]);
    assert_eq!(names(&fs, d2), [SNAP_DIR, DIFF_DIR, PART_DIR, "a"]);
    assert_eq!(ino(&fs, d1, NS_DIR), Err(Errno::ENOENT));

    // Same name in two namespaces: two images.
    let a1 = ino(&fs, d1, "a").unwrap();
    let a2 = ino(&fs, d2, "a").unwrap();
    assert_ne!(a1, a2);
    write_file(&fs, a1, 100, &pattern(1, 3000));
    write_file(&fs, a2, 0, &pattern(2, 8192));
    assert_eq!(read_file(&fs, a1, 8192)[100..3100], pattern(1, 3000)[..]);
    assert_eq!(read_file(&fs, a2, 8192), pattern(2, 8192));
    // What went to RADOS is in each namespace.
    let img = crate::image::Image::open(t1.clone(), &cache(), "a").unwrap();
    assert_eq!(
        img.read(crate::store::NOSNAP, 100, 3000).unwrap(),
        pattern(1, 3000)
    );

    // Snapshots through .ns/t1/.snap/IMAGE.
    let snaps = ino(&fs, d1, SNAP_DIR).unwrap();
    let sdir = ino(&fs, snaps, "f1").unwrap();
    let (_, o) = fs.create(sdir, OsStr::new("s1")).unwrap();
    fs.release(o.fh);
    assert_eq!(names(&fs, sdir), ["s1"]);
    assert!(crate::image::admin::image_info(&*t1, "f1").is_ok());

    // Create, rename within, EXDEV across, remove.
    let (attr, o) = fs.create(d2, OsStr::new("new")).unwrap();
    fs.release(o.fh);
    assert_eq!(ino(&fs, d2, "new").unwrap(), attr.ino);
    assert!(admin::image_info(&*t2, "new").is_ok());
    fs.rename(d2, OsStr::new("new"), d2, OsStr::new("newer"))
        .unwrap();
    assert_eq!(
        fs.rename(d2, OsStr::new("newer"), d1, OsStr::new("x")),
        Err(Errno::EXDEV)
    );
    assert_eq!(
        fs.rename(d2, OsStr::new("newer"), ROOT_INO, OsStr::new("x")),
        Err(Errno::EXDEV)
    );
    assert_eq!(
        fs.rename(ROOT_INO, OsStr::new("top"), ROOT_INO, OsStr::new(NS_DIR)),
        Err(Errno::EPERM)
    );
    assert_eq!(
        fs.create(ROOT_INO, OsStr::new(NS_DIR)).err(),
        Some(Errno::EEXIST)
    );
    assert_eq!(fs.unlink(ROOT_INO, OsStr::new(NS_DIR)), Err(Errno::EPERM));
    assert_eq!(fs.create(ns, OsStr::new("t9")).err(), Some(Errno::EPERM));
    fs.unlink(d2, OsStr::new("newer")).unwrap();
    assert!(admin::image_info(&*t2, "newer").is_err());
    // statfs in a namespace: the pool's figures.
    assert_eq!(fs.statfs(d1).blocks, fs.statfs(ROOT_INO).blocks);
    fs.destroy();
    fs.close_all().unwrap();
}

#[test]
fn namespace_mount_and_image_mount() {
    let store = MemoryStore::new();
    let t1 = store.pool_in_namespace(0, "t1").unwrap();
    add_namespace(&*store, "t1");
    admin::create_image(&*store, "top", 4096, &v2(FEATURE_LAYERING)).unwrap();
    admin::create_image(&*t1, "a", 4096, &v2(FEATURE_LAYERING)).unwrap();
    admin::create_image(&*t1, "b", 4096, &v2(FEATURE_LAYERING)).unwrap();
    let fs = mount(MountKind::Single, t1.clone(), None);
    fs.check_mount().unwrap();
    assert_eq!(
        names(&fs, ROOT_INO),
        [SNAP_DIR, DIFF_DIR, PART_DIR, "a", "b"]
    );
    assert_eq!(ino(&fs, ROOT_INO, NS_DIR), Err(Errno::ENOENT));
    let fs = mount(MountKind::Single, t1.clone(), Some("b"));
    fs.check_mount().unwrap();
    assert_eq!(names(&fs, ROOT_INO), [SNAP_DIR, DIFF_DIR, PART_DIR, "b"]);
    let fs = mount(MountKind::Single, t1, Some("top"));
    assert!(fs.check_mount().is_err(), "top is not in t1");
}

#[test]
fn cluster_mount_shows_rbd_pools() {
    let store = MemoryStore::new();
    let cluster = store.cluster().clone();
    let vms = cluster.create_named_pool("vms", &["rbd"]);
    let _objects = cluster.create_named_pool("objects", &["rgw"]);
    let _odd = cluster.create_named_pool("a/b", &["rbd"]);
    let vms_store = store.pool_by_id(vms).unwrap();
    let vms_t = store.pool_in_namespace(vms, "t").unwrap();
    add_namespace(&*vms_store, "t");
    admin::create_image(&*store, "r1", 4096, &v2(FEATURE_LAYERING)).unwrap();
    admin::create_image(&*vms_store, "v1", 4096, &v2(FEATURE_LAYERING)).unwrap();
    admin::create_image(&*vms_t, "vt", 4096, &v2(FEATURE_LAYERING)).unwrap();

    let fs = mount(MountKind::Cluster, store.clone(), None);
    fs.check_mount().unwrap();
    assert_eq!(names(&fs, ROOT_INO), ["rbd", "vms"]);
    assert_eq!(parent_of(&fs, ROOT_INO), ROOT_INO);
    let rbd = ino(&fs, ROOT_INO, "rbd").unwrap();
    let vdir = ino(&fs, ROOT_INO, "vms").unwrap();
    assert_ne!(rbd, ROOT_INO);
    assert_eq!(ino(&fs, ROOT_INO, "objects"), Err(Errno::ENOENT));
    assert_eq!(parent_of(&fs, vdir), ROOT_INO);
    assert_eq!(
        names(&fs, rbd),
        [SNAP_DIR, DIFF_DIR, NS_DIR, PART_DIR, "r1"]
    );
    assert_eq!(
        names(&fs, vdir),
        [SNAP_DIR, DIFF_DIR, NS_DIR, PART_DIR, "v1"]
    );
    let vns = ino(&fs, vdir, NS_DIR).unwrap();
    assert_eq!(parent_of(&fs, vns), vdir);
    assert_eq!(names(&fs, vns), ["t"]);
    let t = ino(&fs, vns, "t").unwrap();
    assert_eq!(names(&fs, t), [SNAP_DIR, DIFF_DIR, PART_DIR, "vt"]);
    let rns = ino(&fs, rbd, NS_DIR).unwrap();
    assert!(names(&fs, rns).is_empty());

    let vt = ino(&fs, t, "vt").unwrap();
    write_file(&fs, vt, 0, b"tenant");
    assert_eq!(&read_file(&fs, vt, 6)[..], b"tenant");
    let r1 = ino(&fs, rbd, "r1").unwrap();
    assert_eq!(
        fs.rename(rbd, OsStr::new("r1"), vdir, OsStr::new("r1")),
        Err(Errno::EXDEV)
    );
    assert_eq!(
        fs.create(ROOT_INO, OsStr::new("p")).err(),
        Some(Errno::EPERM)
    );
    assert_eq!(fs.getattr(r1).unwrap().size, 4096);
    // The root's statfs: the cluster's capacity.
    let st = fs.statfs(ROOT_INO);
    assert!(st.blocks > 0);

    // A pool made while mounted appears; a deleted one vanishes.
    let late = cluster.create_named_pool("late", &["rbd"]);
    assert_eq!(names(&fs, ROOT_INO), ["late", "rbd", "vms"]);
    cluster.delete_pool(late);
    cluster.delete_pool(vms);
    assert_eq!(names(&fs, ROOT_INO), ["rbd"]);
    assert_eq!(ino(&fs, ROOT_INO, "vms"), Err(Errno::ENOENT));
    fs.destroy();
    fs.close_all().unwrap();
}

/// `data_pool`: images created through the mount (a file, a clone) keep
/// their header in the mount's pool and namespace, their data objects in
/// the data pool, in the same namespace (as librbd does).
#[test]
fn created_images_use_the_data_pool_in_the_same_namespace() {
    let store = MemoryStore::new();
    let ec = store.cluster().create_named_pool("rbd-ec", &[]);
    add_namespace(&*store, "t1");
    let t1 = store.pool_in_namespace(0, "t1").unwrap();
    let create = CreateOptions {
        data_pool: Some(ec),
        ..v2(FEATURE_LAYERING)
    };
    for (scope, kind) in [
        (store.clone() as Arc<dyn ObjectStore>, MountKind::Pool),
        (t1, MountKind::Single),
    ] {
        let ns = scope.namespace();
        let fs = MultiFs::new(kind, scope.clone(), cache(), None, opts(create.clone()));
        let (attr, o) = fs.create(ROOT_INO, OsStr::new("f")).unwrap();
        let data = pattern(7, 12288);
        assert_eq!(fs.write(o.fh, 4096, &data).unwrap(), data.len() as u32);
        fs.fsync(o.fh, false).unwrap();
        fs.release(o.fh);
        assert_eq!(read_file(&fs, attr.ino, 16384)[4096..], data[..]);
        let info = admin::image_info(&*scope, "f").unwrap();
        assert_eq!(info.data_pool, Some(ec), "{ns}");
        // The object holding offset 4096.
        let object = info.data_object(4096 >> info.order);
        let data_store = scope.pool_in_namespace(ec, &ns).unwrap();
        assert!(
            data_store.stat(&object, crate::store::NOSNAP).is_ok(),
            "{ns}: {object}"
        );
        assert!(
            scope.stat(&object, crate::store::NOSNAP).is_err(),
            "{ns}: {object}"
        );
        assert!(
            data_store
                .stat(&info.header_oid, crate::store::NOSNAP)
                .is_err()
        );
        // In the default namespace of the data pool only if that is ours.
        let default_ns = scope.pool_in_namespace(ec, "").unwrap();
        assert_eq!(
            default_ns.stat(&object, crate::store::NOSNAP).is_ok(),
            ns.is_empty()
        );
        // A clone made through the mount (ln of a snapshot) too.
        let snaps = ino(&fs, ROOT_INO, SNAP_DIR).unwrap();
        let sdir = ino(&fs, snaps, "f").unwrap();
        let (_, o) = fs.create(sdir, OsStr::new("s")).unwrap();
        fs.release(o.fh);
        let snap = ino(&fs, sdir, "s").unwrap();
        fs.link(snap, ROOT_INO, OsStr::new("c")).unwrap();
        let clone = admin::image_info(&*scope, "c").unwrap();
        assert_eq!(clone.data_pool, Some(ec), "{ns}");
        assert_eq!(
            read_file(&fs, ino(&fs, ROOT_INO, "c").unwrap(), 16384)[4096..],
            data[..]
        );
        fs.destroy();
        fs.close_all().unwrap();
    }
}
