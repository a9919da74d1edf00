//! Injected failures at the file-system level: the errno reaches the right
//! call, once, for the right file only, and never as a panic or a hang.

use std::time::Instant;

use super::*;
use crate::image::{Image, admin};
use crate::store::failing::{Effect, FailingStore, Op as StoreOp, Rule};
use crate::store::memory::MemoryCluster;

#[test]
fn write_back_error_reaches_the_next_fsync_once() {
    for (errno, want) in [(libc::EIO, libc::EIO), (libc::ENOSPC, libc::ENOSPC)] {
        let cluster = MemoryCluster::new();
        let store = FailingStore::new(cluster.client());
        admin::create_image(&*store, "img", 16 << 10, &v2lock()).unwrap();
        let m = Mount::new(store.clone(), v2lock());
        let fh = m.open_head("img").unwrap();
        m.fs.write(fh, 0, &[1; 100]).unwrap();
        m.fs.fsync(fh, false).unwrap();
        store.add_rule(Rule::always(StoreOp::Write, Effect::Fail(errno)).on("rbd_data"));
        m.fs.write(fh, 0, &[7; 5000]).unwrap();
        let e = m.fs.fsync(fh, false).unwrap_err();
        assert_eq!(e.code(), want, "{e}");
        store.clear_rules();
        // Reported once: the next fsync (and close) succeed.
        m.fs.fsync(fh, true).unwrap();
        m.fs.write(fh, 0, &[8; 10]).unwrap();
        m.fs.flush(fh).unwrap();
        assert_eq!(m.fs.read(fh, 0, 10).unwrap(), vec![8; 10]);
        m.fs.release(fh);
        m.unmount().unwrap();
    }
}

#[test]
fn header_read_error_is_eio_for_that_image_only() {
    let cluster = MemoryCluster::new();
    let store = FailingStore::new(cluster.client());
    admin::create_image(&*store, "bad", 8192, &v2lock()).unwrap();
    admin::create_image(&*store, "good", 8192, &v1()).unwrap();
    admin::create_image(&*store, "good2", 8192, &striped()).unwrap();
    let bad_id = admin::image_info(&*store, "bad").unwrap().id.unwrap();
    store.add_rule(
        Rule::always(
            StoreOp::Exec(RBD_CLASS.into(), String::new()),
            Effect::Fail(libc::EIO),
        )
        .on(&header_object(&bad_id)),
    );
    let m = Mount::new(store.clone(), v2lock());
    assert_eq!(m.ino(ROOT_INO, "bad").unwrap_err(), Errno::EIO);
    assert_eq!(m.snap_dir("bad").unwrap_err(), Errno::EIO);
    // The root still lists every name, and the other images work.
    assert_eq!(
        m.names(ROOT_INO).unwrap(),
        [SNAP_DIR, DIFF_DIR, PART_DIR, "bad", "good", "good2"]
    );
    for name in ["good", "good2"] {
        let fh = m.open_head(name).unwrap();
        m.fs.write(fh, 100, b"fine").unwrap();
        m.fs.fsync(fh, false).unwrap();
        assert_eq!(m.fs.read(fh, 100, 4).unwrap(), b"fine");
        m.fs.release(fh);
        let dir = m.snap_dir(name).unwrap();
        m.fs.create(dir, OsStr::new("s")).unwrap();
        assert_eq!(m.names(dir).unwrap(), ["s"]);
    }
    // Still EIO, and once the header reads again, the image is back.
    assert_eq!(m.ino(ROOT_INO, "bad").unwrap_err(), Errno::EIO);
    store.clear_rules();
    let fh = m.open_head("bad").unwrap();
    m.fs.write(fh, 0, b"back").unwrap();
    m.fs.flush(fh).unwrap();
    m.fs.release(fh);
    m.unmount().unwrap();
}

#[test]
fn lock_lost_mid_write_is_an_errno_not_a_panic_or_hang() {
    let cluster = MemoryCluster::new();
    let (a, b) = (cluster.client(), cluster.client());
    admin::create_image(&*a, "img", 16 << 10, &v2lock()).unwrap();
    let m = Mount::new(a.clone(), v2lock());
    let fh = m.open_head("img").unwrap();
    m.fs.write(fh, 0, &[1; 4096]).unwrap();
    m.fs.fsync(fh, false).unwrap();
    // The mount hangs (answers nothing); another client takes over:
    // blocklists it and breaks its lock.
    a.set_watches_paused(true);
    let img_b = Image::open(b.clone(), &cache(), "img").unwrap();
    img_b.write(0, &[2; 4096]).unwrap();
    img_b.flush().unwrap();
    let t = Instant::now();
    let r =
        m.fs.write(fh, 4096, &[3; 4096])
            .and_then(|_| m.fs.fsync(fh, false));
    let e = r.unwrap_err();
    assert!([libc::ESHUTDOWN, libc::EIO].contains(&e.code()), "{e}");
    // Everything else answers with an errno or a value, promptly.
    let _ = m.fs.read(fh, 0, 4096);
    let _ = m.fs.getattr(m.ino(ROOT_INO, "img").unwrap_or(ROOT_INO));
    let _ = m.fs.write(fh, 0, &[4; 10]);
    let _ = m.fs.fsync(fh, false);
    m.fs.release(fh);
    let _ = m.names(ROOT_INO);
    let _ = m.unmount();
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert_eq!(
        img_b.read(crate::store::NOSNAP, 0, 4096).unwrap(),
        vec![2; 4096]
    );
}

/// The mount's client is blocklisted (another client broke its lock, or
/// an operator): the mount's store connects a new client; the fsync after
/// the blocklist reports the lost write-back once (EIO), then writes take
/// the lock again and land, reads work, without a remount.
#[test]
fn blocklisted_mount_reconnects_and_goes_on() {
    use crate::store::reconnecting::Reconnecting;
    let cluster = MemoryCluster::new();
    let other = cluster.client();
    admin::create_image(&*other, "img", 64 << 10, &v2lock()).unwrap();
    admin::create_image(&*other, "second", 16 << 10, &v2lock()).unwrap();
    let connect_to = cluster.clone();
    let store = Arc::new(
        Reconnecting::new(Box::new(move || {
            Ok(connect_to.client() as Arc<dyn ObjectStore>)
        }))
        .unwrap(),
    );
    let first_id = store.instance_id();
    // Write-back only on fsync (not after 50 ms), so the write below is
    // still dirty when the client is blocklisted.
    let lazy = Cache::new(CacheConfig {
        capacity: 4 << 20,
        workers: 2,
        max_dirty_age: Duration::from_secs(3600),
        ..CacheConfig::default()
    });
    let pool = Arc::new(Pool::new(store.clone(), lazy, None));
    let fs = RbdFs::new(
        pool.clone(),
        FsOptions {
            read_only: false,
            fixed_size: false,
            create: v2lock(),
            uid: 0,
            gid: 0,
        },
    );
    let m = Mount { pool, fs };
    let fh = m.open_head("img").unwrap();
    let fh2 = m.open_head("second").unwrap();
    m.fs.write(fh, 0, &[1; 4096]).unwrap();
    m.fs.fsync(fh, false).unwrap();
    m.fs.write(fh2, 0, &[5; 100]).unwrap();
    m.fs.fsync(fh2, false).unwrap();
    // Acknowledged, not yet written back.
    m.fs.write(fh, 4096, &[2; 4096]).unwrap();
    other.blocklist_add(&store.client_address(), 0).unwrap();
    let t = Instant::now();
    // The dirty write either met the blocklist (lost: EIO, once) or went
    // out through the new client after it took the lock again (the first
    // failure was a read, which is retried): never silently lost.
    let lost = match m.fs.fsync(fh, false) {
        Err(e) => {
            assert_eq!(e, Errno::EIO);
            true
        }
        Ok(()) => false,
    };
    // Once only.
    m.fs.fsync(fh, false).unwrap();
    // A read that goes to RADOS meets the blocklist (if nothing did yet)
    // and is retried through a new client.
    m.pool.image("second").unwrap().refresh().unwrap();
    assert_ne!(store.instance_id(), first_id);
    assert_eq!(store.generation(), 1);
    assert_eq!(m.fs.read(fh, 0, 4096).unwrap(), vec![1; 4096]);
    m.fs.write(fh, 8192, &[3; 4096]).unwrap();
    m.fs.fsync(fh, false).unwrap();
    // The other image goes on too: reads, and writes under a new lock.
    assert_eq!(m.fs.read(fh2, 0, 100).unwrap(), vec![5; 100]);
    m.fs.write(fh2, 100, &[6; 100]).unwrap();
    m.fs.fsync(fh2, false).unwrap();
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    m.fs.release(fh);
    m.fs.release(fh2);
    m.unmount().unwrap();
    // What was written after the recovery is there for everyone.
    let check = Image::open(other.clone(), &cache(), "img").unwrap();
    assert_eq!(
        check.read(crate::store::NOSNAP, 8192, 4096).unwrap(),
        vec![3; 4096]
    );
    assert_eq!(
        check.read(crate::store::NOSNAP, 0, 4096).unwrap(),
        vec![1; 4096]
    );
    if !lost {
        assert_eq!(
            check.read(crate::store::NOSNAP, 4096, 4096).unwrap(),
            vec![2; 4096]
        );
    }
    let check = Image::open(other.clone(), &cache(), "second").unwrap();
    assert_eq!(
        check.read(crate::store::NOSNAP, 100, 100).unwrap(),
        vec![6; 100]
    );
}
