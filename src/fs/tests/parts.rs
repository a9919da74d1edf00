//! The `.part` tree in-process: partition files of the head and of
//! snapshots, their bounds, and the table read again after it changes.

use super::*;
use crate::format::partitions::{encode_gpt, encode_mbr};
use crate::store::memory::MemoryStore;

const MIB: u64 = 1 << 20;

fn read_all(m: &Mount, fh: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let part = m.fs.read(fh, out.len() as u64, 100_000).unwrap();
        if part.is_empty() {
            break;
        }
        out.extend(part);
    }
    out
}

#[test]
fn partitions_as_files() {
    let store = MemoryStore::new();
    for (tag, opts) in [("v1", v1()), ("v2lock", v2lock()), ("striped", striped())] {
        let m = Mount::new(store.clone(), opts);
        let name = format!("disk-{tag}");
        let (_, o) = m.fs.create(ROOT_INO, OsStr::new(&name)).unwrap();
        let head = o.fh;
        let size = 8 * MIB;
        m.fs.write(head, 0, &pattern(3, size as usize)).unwrap();
        // GPT: 1 MiB..3 MiB and 3 MiB..(end - 34 sectors).
        let sectors = size / 512;
        let gpt = encode_gpt(512, sectors, &[(2048, 6143), (6144, sectors - 34)]);
        m.fs.write(head, 0, &gpt).unwrap();
        let image = {
            let mut b = pattern(3, size as usize);
            b[..gpt.len()].copy_from_slice(&gpt);
            b
        };

        let proot = m.ino(ROOT_INO, PART_DIR).unwrap();
        assert!(m.names(proot).unwrap().contains(&name));
        let dir = m.ino(proot, &name).unwrap();
        assert_eq!(m.names(dir).unwrap(), ["1", "2"], "{tag}");
        for bad in ["0", "3", "01", "x", "+1"] {
            assert_eq!(m.ino(dir, bad).unwrap_err(), Errno::ENOENT, "{tag} {bad}");
        }
        let p1 = m.fs.lookup(dir, OsStr::new("1")).unwrap();
        assert_eq!(p1.size, 2 * MIB);
        assert_eq!(p1.perm, 0o644);
        let p2 = m.fs.lookup(dir, OsStr::new("2")).unwrap();
        assert_eq!(p2.size, size - 3 * MIB - 33 * 512);

        // Reads are the image's bytes at the partition's offset.
        let o1 = m.fs.open(p1.ino, libc::O_RDWR).unwrap();
        assert!(o1.direct_io);
        assert_eq!(read_all(&m, o1.fh), &image[MIB as usize..3 * MIB as usize]);
        // Writes land there; past the end: ENOSPC, nothing written.
        m.fs.write(o1.fh, 5, b"hello").unwrap();
        assert_eq!(m.fs.read(head, MIB + 5, 5).unwrap(), b"hello");
        assert_eq!(
            m.fs.write(o1.fh, 2 * MIB - 2, b"abcd").unwrap_err(),
            Errno::ENOSPC
        );
        assert_eq!(
            m.fs.read(head, 3 * MIB - 2, 4).unwrap(),
            &image[3 * MIB as usize - 2..3 * MIB as usize + 2]
        );
        m.fs.write(o1.fh, 2 * MIB - 2, b"ab").unwrap();
        assert_eq!(m.fs.read(o1.fh, 2 * MIB - 2, 100).unwrap(), b"ab");
        assert_eq!(
            m.fs.fallocate(o1.fh, 0, 2 * MIB + 1, 0).unwrap_err(),
            Errno::ENOSPC
        );
        assert_eq!(
            m.fs.setattr(p1.ino, None, None, None, Some(MIB))
                .unwrap_err(),
            Errno::EPERM
        );
        m.fs.flush(o1.fh).unwrap();

        // A snapshot's partitions: read-only, its bytes.
        let sdir = m.snap_dir(&name).unwrap();
        let (_, created) = m.fs.create(sdir, OsStr::new("s")).unwrap();
        m.fs.release(created.fh);
        let psnaps = m.ino(proot, SNAP_DIR).unwrap();
        let psimg = m.ino(psnaps, &name).unwrap();
        assert_eq!(m.names(psimg).unwrap(), ["s"]);
        let ps = m.ino(psimg, "s").unwrap();
        assert_eq!(m.names(ps).unwrap(), ["1", "2"]);
        let s1 = m.fs.lookup(ps, OsStr::new("1")).unwrap();
        assert_eq!(s1.perm, 0o444);
        assert_eq!(m.fs.open(s1.ino, libc::O_RDWR).unwrap_err(), Errno::EROFS);
        let so = m.fs.open(s1.ino, libc::O_RDONLY).unwrap();
        assert!(!so.direct_io);
        assert_eq!(m.fs.write(so.fh, 0, b"x").unwrap_err(), Errno::EROFS);
        let snap1 = read_all(&m, so.fh);
        assert_eq!(&snap1[5..10], b"hello");
        assert_eq!(snap1.len() as u64, 2 * MIB);

        // The head's table rewritten as an MBR: re-read; the snapshot's
        // stays.
        let mbr = encode_mbr(&[(0x83, 4096, 2048)]);
        m.fs.write(head, 0, &mbr).unwrap();
        // stat sees it at once: the write touched the table.
        assert_eq!(m.fs.getattr(p1.ino).unwrap().size, MIB);
        assert_eq!(m.fs.getattr(p2.ino).unwrap_err(), Errno::ENOENT);
        assert_eq!(m.names(dir).unwrap(), ["1"]);
        assert_eq!(m.fs.lookup(dir, OsStr::new("1")).unwrap().size, MIB);
        assert_eq!(m.names(ps).unwrap(), ["1", "2"]);
        // The open file keeps its range.
        assert_eq!(m.fs.read(o1.fh, 5, 5).unwrap(), b"hello");
        // Corrupt: no partition files.
        m.fs.write(head, 510, &[0, 0]).unwrap();
        assert!(m.names(dir).unwrap().is_empty());
        assert_eq!(m.ino(dir, "1").unwrap_err(), Errno::ENOENT);

        // Not an image, not a place for new files.
        assert_eq!(
            m.fs.create(ROOT_INO, OsStr::new(PART_DIR)).unwrap_err(),
            Errno::EEXIST
        );
        assert_eq!(
            m.fs.unlink(ROOT_INO, OsStr::new(PART_DIR)).unwrap_err(),
            Errno::EPERM
        );
        assert_eq!(m.fs.create(dir, OsStr::new("5")).unwrap_err(), Errno::EPERM);
        assert_eq!(m.fs.open(dir, libc::O_RDONLY).unwrap_err(), Errno::EISDIR);
        assert_eq!(m.fs.opendir(dir).unwrap(), 0);
        // `..` of the directories.
        assert_eq!(m.fs.readdir(dir, 0).unwrap()[1].ino, proot);
        assert_eq!(m.fs.readdir(ps, 0).unwrap()[1].ino, psimg);
        assert_eq!(m.fs.readdir(proot, 0).unwrap()[1].ino, ROOT_INO);
        for fh in [o1.fh, so.fh, head] {
            m.fs.release(fh);
        }
        m.fs.unlink(sdir, OsStr::new("s")).unwrap();
        m.fs.unlink(ROOT_INO, OsStr::new(&name)).unwrap();
        m.unmount().unwrap();
    }
}

#[test]
fn the_image_layer_refuses_the_name() {
    let m = Mount::new(MemoryStore::new(), v2lock());
    let e = m.pool.create(PART_DIR, &v2lock()).unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL);
}
