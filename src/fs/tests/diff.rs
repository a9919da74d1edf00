//! The `.diff` tree in-process: names, sizes equal to what reads return,
//! read-only everywhere, the method xattr, and EIO once a snapshot is gone.

use super::*;
use crate::format::diff::apply_stream;
use crate::store::memory::MemoryStore;

fn read_all(m: &Mount, ino: u64) -> Vec<u8> {
    let fh = m.fs.open(ino, libc::O_RDONLY).unwrap().fh;
    let mut out = Vec::new();
    loop {
        let part = m.fs.read(fh, out.len() as u64, 5000).unwrap();
        if part.is_empty() {
            break;
        }
        out.extend(part);
    }
    m.fs.release(fh);
    out
}

fn xattr(m: &Mount, ino: u64, name: &str) -> String {
    match m.fs.getxattr(ino, OsStr::new(name), 1024).unwrap() {
        crate::fs::Xattr::Data(d) => String::from_utf8(d).unwrap(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn diff_tree() {
    let store = MemoryStore::new();
    for (tag, opts) in [("v1", v1()), ("v2lock", v2lock()), ("striped", striped())] {
        let m = Mount::new(store.clone(), opts);
        let name = format!("img-{tag}");
        let (_, o) = m.fs.create(ROOT_INO, OsStr::new(&name)).unwrap();
        let size = 64 << 10;
        m.fs.write(o.fh, 0, &pattern(1, size)).unwrap();
        m.fs.flush(o.fh).unwrap();
        let sdir = m.snap_dir(&name).unwrap();
        m.fs.create(sdir, OsStr::new("a")).unwrap();
        m.fs.write(o.fh, 10_000, &pattern(2, 100)).unwrap();
        m.fs.flush(o.fh).unwrap();
        m.fs.create(sdir, OsStr::new("b")).unwrap();
        let snap_a = read_all(&m, m.ino(sdir, "a").unwrap());
        let snap_b = read_all(&m, m.ino(sdir, "b").unwrap());

        let droot = m.ino(ROOT_INO, DIFF_DIR).unwrap();
        assert!(m.names(droot).unwrap().contains(&name));
        let dimg = m.ino(droot, &name).unwrap();
        let mut snaps = m.names(dimg).unwrap();
        snaps.sort();
        assert_eq!(snaps, ["a", "b"]);
        let da = m.ino(dimg, "a").unwrap();
        let db = m.ino(dimg, "b").unwrap();
        assert_eq!(m.names(da).unwrap(), ["full"]);
        assert_eq!(m.names(db).unwrap(), ["full", "since-a"]);
        assert_eq!(
            m.ino(da, "since-b").unwrap_err(),
            Errno::ENOENT,
            "{tag}: newer"
        );
        assert_eq!(m.ino(db, "since-zz").unwrap_err(), Errno::ENOENT);
        assert_eq!(m.ino(db, "other").unwrap_err(), Errno::ENOENT);
        assert_eq!(m.ino(dimg, "zz").unwrap_err(), Errno::ENOENT);

        let mut target = Vec::new();
        for (dir, file, want) in [(da, "full", &snap_a), (db, "since-a", &snap_b)] {
            let ino = m.ino(dir, file).unwrap();
            let attr = m.fs.getattr(ino).unwrap();
            assert_eq!(attr.perm, 0o444);
            let bytes = read_all(&m, ino);
            assert_eq!(
                bytes.len() as u64,
                attr.size,
                "{tag} {file}: stat size = bytes read"
            );
            apply_stream(&bytes, &mut target).unwrap();
            assert_eq!(&target, want, "{tag} {file}");
            let method = xattr(&m, ino, "user.rbd.diff_method");
            assert!(
                ["fast-diff", "object-map", "object-existence"].contains(&method.as_str()),
                "{method}"
            );
            // Read-only, however asked.
            assert_eq!(m.fs.open(ino, libc::O_RDWR).unwrap_err(), Errno::EROFS);
            assert_eq!(
                m.fs.setattr(ino, None, None, None, Some(0)).unwrap_err(),
                Errno::EROFS
            );
            let fh = m.fs.open(ino, libc::O_RDONLY).unwrap().fh;
            assert_eq!(m.fs.write(fh, 0, b"x").unwrap_err(), Errno::EROFS);
            assert_eq!(m.fs.lseek(fh, 0, libc::SEEK_HOLE).unwrap(), attr.size);
            m.fs.release(fh);
        }
        if tag == "v2lock" {
            let ino = m.ino(db, "since-a").unwrap();
            assert_eq!(xattr(&m, ino, "user.rbd.diff_method"), "fast-diff");
            // One 4 KiB object changed.
            assert!(m.fs.getattr(ino).unwrap().size < 4096 + 100);
        }
        assert_eq!(m.fs.create(db, OsStr::new("x")).unwrap_err(), Errno::EROFS);
        assert_eq!(m.fs.mkdir(dimg, OsStr::new("x")).unwrap_err(), Errno::EROFS);
        assert_eq!(
            m.fs.unlink(db, OsStr::new("full")).unwrap_err(),
            Errno::EROFS
        );

        // Removed while open: EIO, not other bytes.
        let ino = m.ino(db, "full").unwrap();
        let fh = m.fs.open(ino, libc::O_RDONLY).unwrap().fh;
        m.fs.read(fh, 0, 10).unwrap();
        m.fs.unlink(sdir, OsStr::new("b")).unwrap();
        assert_eq!(m.fs.read(fh, 10, 4096).unwrap_err(), Errno::EIO);
        m.fs.release(fh);
        assert_eq!(m.ino(dimg, "b").unwrap_err(), Errno::ENOENT);
        m.fs.unlink(sdir, OsStr::new("a")).unwrap();
        m.fs.release(o.fh);
        m.unmount().unwrap();
    }
}

#[test]
fn diff_is_reserved() {
    let store = MemoryStore::new();
    let m = Mount::new(store, v2lock());
    assert_eq!(
        m.fs.create(ROOT_INO, OsStr::new(DIFF_DIR)).unwrap_err(),
        Errno::EEXIST
    );
    assert_eq!(
        m.fs.unlink(ROOT_INO, OsStr::new(DIFF_DIR)).unwrap_err(),
        Errno::EPERM
    );
    let (_, o) = m.fs.create(ROOT_INO, OsStr::new("x")).unwrap();
    m.fs.release(o.fh);
    assert_eq!(
        m.fs.rename(ROOT_INO, OsStr::new("x"), ROOT_INO, OsStr::new(DIFF_DIR))
            .unwrap_err(),
        Errno::EPERM
    );
    m.unmount().unwrap();
}
