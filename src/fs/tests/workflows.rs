//! The disk-image workflows in-process: snapshot rename, protection,
//! clones with `ln` (v1 and v2), over the in-memory cluster.

use super::*;
use crate::fs::Xattr;
use crate::image::admin;
use crate::store::memory::MemoryCluster;

fn setup(create: CreateOptions) -> (Arc<MemoryCluster>, Mount) {
    let cluster = MemoryCluster::new();
    let store = cluster.client();
    admin::create_image(&*store, "gold", 64 << 10, &create).unwrap();
    let m = Mount::new(store, create);
    let fh = m.open_head("gold").unwrap();
    m.fs.write(fh, 0, &pattern(1, 64 << 10)).unwrap();
    m.fs.release(fh);
    let dir = m.snap_dir("gold").unwrap();
    let (_, o) = m.fs.create(dir, OsStr::new("base")).unwrap();
    m.fs.release(o.fh);
    (cluster, m)
}

fn snap_ino(m: &Mount, image: &str, snap: &str) -> Result<u64, Errno> {
    let dir = m.snap_dir(image)?;
    m.ino(dir, snap)
}

fn protected(m: &Mount, image: &str, snap: &str) -> bool {
    let ino = snap_ino(m, image, snap).unwrap();
    let by_mode = m.fs.getattr(ino).unwrap().perm & 0o1000 != 0;
    let by_xattr = match m
        .fs
        .getxattr(ino, OsStr::new("user.rbd.protected"), 64)
        .unwrap()
    {
        Xattr::Data(v) => v == b"1",
        Xattr::Size(_) => unreachable!(),
    };
    assert_eq!(by_mode, by_xattr);
    by_xattr
}

fn set_protected(m: &Mount, image: &str, snap: &str, v: &str) -> Result<(), Errno> {
    let ino = snap_ino(m, image, snap)?;
    m.fs.setxattr(ino, OsStr::new("user.rbd.protected"), v.as_bytes())
}

fn read_all(m: &Mount, ino: u64, len: u32) -> Vec<u8> {
    let o = m.fs.open(ino, libc::O_RDONLY).unwrap();
    let data = m.fs.read(o.fh, 0, len).unwrap();
    m.fs.release(o.fh);
    data
}

#[test]
fn snapshot_rename_and_protection() {
    for create in [v2lock(), v2(FEATURE_LAYERING), v1()] {
        let (_c, m) = setup(create.clone());
        let dir = m.snap_dir("gold").unwrap();
        let (_, o) = m.fs.create(dir, OsStr::new("other")).unwrap();
        m.fs.release(o.fh);
        m.fs.rename(dir, OsStr::new("base"), dir, OsStr::new("b2"))
            .unwrap();
        let mut names = m.names(dir).unwrap();
        names.sort();
        assert_eq!(names, ["b2", "other"]);
        assert_eq!(
            m.fs.rename(dir, OsStr::new("b2"), dir, OsStr::new("other")),
            Err(Errno::EEXIST)
        );
        assert_eq!(
            m.fs.rename(dir, OsStr::new("nope"), dir, OsStr::new("x")),
            Err(Errno::ENOENT)
        );
        assert_eq!(
            m.fs.rename(dir, OsStr::new("b2"), ROOT_INO, OsStr::new("x")),
            Err(Errno::EXDEV)
        );
        let b2 = m.ino(dir, "b2").unwrap();
        assert_eq!(read_all(&m, b2, 64 << 10), pattern(1, 64 << 10));
        if create.format == 1 {
            assert!(!protected(&m, "gold", "b2"));
            assert_eq!(set_protected(&m, "gold", "b2", "1"), Err(Errno::EOPNOTSUPP));
            continue;
        }
        assert!(!protected(&m, "gold", "b2"));
        set_protected(&m, "gold", "b2", "1").unwrap();
        assert!(protected(&m, "gold", "b2"));
        assert_eq!(set_protected(&m, "gold", "b2", "1"), Err(Errno::EBUSY));
        assert_eq!(m.fs.unlink(dir, OsStr::new("b2")), Err(Errno::EBUSY));
        assert_eq!(set_protected(&m, "gold", "b2", "x"), Err(Errno::EINVAL));
        set_protected(&m, "gold", "b2", "0").unwrap();
        assert!(!protected(&m, "gold", "b2"));
        assert_eq!(set_protected(&m, "gold", "b2", "0"), Err(Errno::EINVAL));
        m.fs.unlink(dir, OsStr::new("b2")).unwrap();
        assert_eq!(m.names(dir).unwrap(), ["other"]);
        m.unmount().unwrap();
    }
}

#[test]
fn clone_with_ln_v1_and_v2() {
    for (format, setting) in [(2, "auto"), (1, "1")] {
        let (cluster, m) = setup(v2lock());
        cluster.set_config("rbd_default_clone_format", setting);
        let base = snap_ino(&m, "gold", "base").unwrap();
        // Anything but a snapshot: EPERM; an existing name: EEXIST.
        let head = m.ino(ROOT_INO, "gold").unwrap();
        assert_eq!(
            m.fs.link(head, ROOT_INO, OsStr::new("x")).unwrap_err(),
            Errno::EPERM
        );
        assert_eq!(
            m.fs.link(base, ROOT_INO, OsStr::new("gold")).unwrap_err(),
            Errno::EEXIST
        );
        let attr = m.fs.link(base, ROOT_INO, OsStr::new("vm1")).unwrap();
        assert_eq!(attr.size, 64 << 10);
        let store = m.pool.store().clone();
        let info = admin::image_info(&*store, "vm1").unwrap();
        let parent = info.parent.as_ref().expect("a clone");
        let gold = admin::image_info(&*store, "gold").unwrap();
        assert_eq!(parent.spec.image_id, gold.id.clone().unwrap());
        assert_eq!(parent.spec.snap_id, gold.snapshot("base").unwrap().id);
        assert_eq!(parent.overlap, 64 << 10);
        assert_eq!(info.features & FEATURE_LAYERING, FEATURE_LAYERING);
        let op = rbd_op_features(&*store, &info.header_oid);
        let gold_op = rbd_op_features(&*store, &gold.header_oid);
        if format == 2 {
            assert_eq!(op, OP_FEATURE_CLONE_CHILD);
            assert_eq!(gold_op, OP_FEATURE_CLONE_PARENT);
            assert!(!protected(&m, "gold", "base"));
        } else {
            assert_eq!(op, 0);
            assert!(protected(&m, "gold", "base"), "v1 protects the parent");
            assert_eq!(set_protected(&m, "gold", "base", "0"), Err(Errno::EBUSY));
            let spec = &parent.spec;
            let kids = admin::v1_children(&*store, "gold", spec).unwrap();
            assert_eq!(kids, [info.id.clone().unwrap()]);
        }
        let vm1 = m.ino(ROOT_INO, "vm1").unwrap();
        assert_eq!(read_all(&m, vm1, 64 << 10), pattern(1, 64 << 10));
        let fh = m.open_head("vm1").unwrap();
        m.fs.write(fh, 100, &[9; 5000]).unwrap();
        m.fs.fsync(fh, false).unwrap();
        m.fs.release(fh);
        let mut want = pattern(1, 64 << 10);
        want[100..5100].fill(9);
        assert_eq!(read_all(&m, vm1, 64 << 10), want);
        assert_eq!(read_all(&m, base, 64 << 10), pattern(1, 64 << 10));
        // The parent's snapshot cannot go while the clone reads from it.
        let dir = m.snap_dir("gold").unwrap();
        assert_eq!(m.fs.unlink(dir, OsStr::new("base")), Err(Errno::EBUSY));
        m.unmount().unwrap();
    }
}

fn rbd_op_features(store: &dyn ObjectStore, header: &str) -> u64 {
    let r = store
        .exec(header, RBD_CLASS, "op_features_get", &[])
        .unwrap();
    decode_u64_reply(&r, "op features").unwrap()
}

#[test]
fn rollback_and_flatten() {
    for create in [v2lock(), v2(FEATURE_LAYERING)] {
        let (cluster, m) = setup(create);
        cluster.set_config("rbd_default_clone_format", "2");
        let gold = m.ino(ROOT_INO, "gold").unwrap();
        // Rollback: refused while the head is open, then the snapshot's bytes.
        let fh = m.open_head("gold").unwrap();
        m.fs.write(fh, 10, &[5; 9000]).unwrap();
        assert_eq!(
            m.fs.setxattr(gold, OsStr::new("user.rbd.rollback"), b"base"),
            Err(Errno::EBUSY)
        );
        m.fs.release(fh);
        assert_eq!(
            m.fs.setxattr(gold, OsStr::new("user.rbd.rollback"), b"nope"),
            Err(Errno::ENOENT)
        );
        m.fs.setxattr(gold, OsStr::new("user.rbd.rollback"), b"base")
            .unwrap();
        assert_eq!(read_all(&m, gold, 64 << 10), pattern(1, 64 << 10));

        // Flatten a v2 clone: same bytes, no parent, the snapshot can go.
        let base = snap_ino(&m, "gold", "base").unwrap();
        m.fs.link(base, ROOT_INO, OsStr::new("vm1")).unwrap();
        let vm1 = m.ino(ROOT_INO, "vm1").unwrap();
        let fh = m.open_head("vm1").unwrap();
        m.fs.write(fh, 5000, &[3; 100]).unwrap();
        m.fs.release(fh);
        let mut want = pattern(1, 64 << 10);
        want[5000..5100].fill(3);
        assert_eq!(
            m.fs.setxattr(gold, OsStr::new("user.rbd.flatten"), b"1"),
            Err(Errno::EINVAL)
        );
        m.fs.setxattr(vm1, OsStr::new("user.rbd.flatten"), b"1")
            .unwrap();
        assert_eq!(read_all(&m, vm1, 64 << 10), want);
        let store = m.pool.store().clone();
        let info = admin::image_info(&*store, "vm1").unwrap();
        assert!(info.parent.is_none());
        assert_eq!(rbd_op_features(&*store, &info.header_oid), 0);
        let g = admin::image_info(&*store, "gold").unwrap();
        assert_eq!(rbd_op_features(&*store, &g.header_oid), 0);
        let dir = m.snap_dir("gold").unwrap();
        m.fs.unlink(dir, OsStr::new("base")).unwrap();
        assert_eq!(read_all(&m, vm1, 64 << 10), want);
        m.unmount().unwrap();
    }
}
