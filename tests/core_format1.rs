//! Core behaviour on format-1 images: rbdfs must read and write exactly what
//! librbd (`rbd import`/`rbd export`) reads and writes, list what `rbd ls`
//! lists, keep a corrupt image from poisoning the others, and mount/unmount
//! cleanly in every supported way. Every test makes its own uniquely named
//! images (tests run in parallel in one pool) and removes them at the end.

mod common;

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, symlink};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1 << 20;

/// Checks the whole file plus a few unaligned windows and the end-of-image
/// behaviour against `data`.
fn check_reads(mount: &Mount, name: &str, data: &[u8], rng: &mut Rng, obj: u64) {
    let p = mount.path(name);
    let size = data.len() as u64;
    let meta =
        fs::metadata(&p).unwrap_or_else(|e| panic!("stat {}: {e}\n{}", p.display(), mount.log()));
    assert!(meta.is_file(), "{name} is not a regular file: {meta:?}");
    assert_eq!(meta.len(), size, "file size of {name} != image size");
    assert_bytes_eq(&fs::read(&p).unwrap(), data, "whole-file read");

    let f = File::open(&p).unwrap();
    for _ in 0..20 {
        let len = rng.range(1, (3 * obj).min(size));
        let off = rng.below(size - len + 1);
        let got = read_full_at(&f, off, len as usize).unwrap();
        assert_bytes_eq(
            &got,
            &data[off as usize..(off + len) as usize],
            &format!("read_at({off}, {len})"),
        );
    }
    // A read straddling the end returns only the tail.
    let tail = 300.min(size);
    let got = read_full_at(&f, size - tail, 1000).unwrap();
    assert_bytes_eq(
        &got,
        &data[(size - tail) as usize..],
        "read straddling the end",
    );
    let mut buf = [0u8; 1000];
    let n = f.read_at(&mut buf, size - tail).unwrap();
    assert!(
        n > 0 && n as u64 <= tail,
        "single read_at straddling the end returned {n} bytes"
    );
    // At and after the end: empty.
    assert_eq!(f.read_at(&mut buf, size).unwrap(), 0, "read at the end");
    assert_eq!(
        f.read_at(&mut buf, size + 4096).unwrap(),
        0,
        "read past the end"
    );
}

/// 20 MiB + an odd tail, with a zero hole so `rbd import` (which skips
/// zero runs) leaves some data objects nonexistent: those must read as zeros.
fn import_reads_back(order: u8, tag: &str) {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let name = scratch.name(tag);
    let mut rng = Rng::new();
    let mut data = rng.bytes((20 * MIB + 12345) as usize);
    data[(5 * MIB) as usize..(9 * MIB) as usize].fill(0);
    cluster.import_v1(&name, &data, order);
    assert_eq!(cluster.image_size(&name), data.len() as u64);

    let mount = Mount::new(&cluster, &[]);
    check_reads(&mount, &name, &data, &mut rng, 1 << order);
}

#[test]
fn import_reads_back_default_order() {
    import_reads_back(22, "rd22");
}

#[test]
fn import_reads_back_small_order() {
    import_reads_back(16, "rd16");
}

#[test]
fn random_unaligned_writes_match_export() {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let name = scratch.name("rw");
    let mut rng = Rng::new();
    let order = 16u8;
    let obj = 1u64 << order;
    let size = 16 * MIB;
    let nobj = size / obj;

    // Pre-fill the first ~5 MiB; the rest stays zero, i.e. absent objects,
    // so writes hit both existing and nonexistent objects.
    let mut model = vec![0u8; size as usize];
    rng.fill(&mut model[..(5 * MIB + 12345) as usize]);
    cluster.import_v1(&name, &model, order);

    let mount = Mount::new(&cluster, &[]);
    let p = mount.path(&name);
    let f = open_rw(&p);
    let (mut crossing, mut at_end) = (0, 0);
    for i in 0..200 {
        let mut len = if rng.below(2) == 0 {
            rng.range(1, 4096)
        } else {
            rng.range(1, 200 * 1024)
        };
        let off = match rng.below(8) {
            0..=2 => {
                // Straddle the boundary at b: start 1..len-1 bytes before it.
                len = len.max(2);
                let b = rng.range(1, nobj - 1) * obj;
                b - rng.range(1, (len - 1).min(b))
            }
            3 => size - len,            // ends exactly at the end of the image
            4 => rng.below(nobj) * obj, // starts on a boundary
            _ => rng.below(size - len + 1),
        };
        let len = len.min(size - off);
        let buf = rng.bytes(len as usize);
        f.write_all_at(&buf, off)
            .unwrap_or_else(|e| panic!("write #{i} ({len} bytes at {off}): {e}\n{}", mount.log()));
        model[off as usize..(off + len) as usize].copy_from_slice(&buf);
        crossing += (off / obj != (off + len - 1) / obj) as u32;
        at_end += (off + len == size) as u32;

        if i % 25 == 24 {
            // Read-after-write through the same handle, somewhere random.
            let rlen = rng.range(1, 3 * obj);
            let roff = rng.below(size - rlen + 1);
            let got = read_full_at(&f, roff, rlen as usize).unwrap();
            assert_bytes_eq(
                &got,
                &model[roff as usize..(roff + rlen) as usize],
                &format!("read_at({roff}, {rlen}) after write #{i}"),
            );
        }
    }
    assert!(
        crossing >= 30 && at_end >= 5,
        "generator sanity: {crossing} crossing, {at_end} at end"
    );
    f.sync_all()
        .unwrap_or_else(|e| panic!("fsync: {e}\n{}", mount.log()));
    assert_bytes_eq(
        &fs::read(&p).unwrap(),
        &model,
        "read-back through the mount",
    );
    assert_eq!(
        fs::metadata(&p).unwrap().len(),
        size,
        "writes changed the file size"
    );
    drop(f);
    drop(mount);

    assert_bytes_eq(&cluster.export(&name), &model, "rbd export after unmount");
}

#[test]
fn listing_matches_rbd_ls() {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let mut rng = Rng::new();
    // Trailing '-' so e.g. "...-1-" never matches another test's "...-10-".
    let prefix = format!("{}-", unique_name("ls"));
    let a = scratch.adopt(&format!("{prefix}a"));
    let b = scratch.adopt(&format!("{prefix}b"));
    let c = scratch.adopt(&format!("{prefix}c"));
    cluster.create_v1_image(&a, 8 * MIB, 22);
    cluster.import_v1(&b, &rng.bytes(12345), 16);
    cluster.create_v1_image(&c, 40 * MIB, 20);
    let expected_sizes = [
        (a.clone(), 8 * MIB),
        (b.clone(), 12345),
        (c.clone(), 40 * MIB),
    ];

    let mount = Mount::new(&cluster, &[]);
    let ours = |names: Vec<String>| -> BTreeSet<String> {
        names
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect()
    };
    let listed = ours(mount.list());
    let rbd_ls = ours(cluster.ls());
    assert_eq!(listed, rbd_ls, "mount listing vs rbd ls (prefix {prefix})");
    assert_eq!(listed, BTreeSet::from([a, b, c]));

    for entry in fs::read_dir(mount.dir()).unwrap() {
        let entry = entry.unwrap();
        let n = entry.file_name().into_string().unwrap();
        if n.starts_with(&prefix) {
            assert!(
                entry.file_type().unwrap().is_file(),
                "{n}: readdir type is not a regular file"
            );
        }
    }
    for (n, size) in expected_sizes {
        assert_eq!(cluster.image_size(&n), size, "rbd info size of {n}");
        let meta = fs::symlink_metadata(mount.path(&n)).unwrap();
        assert!(meta.is_file(), "{n} is not a regular file");
        assert_eq!(meta.len(), size, "size of {n}");
    }
}

/// The corrupt image must not be readable as data: absent from the listing,
/// or failing with EIO on open or read. Readdir itself must keep working.
fn assert_unreadable(mount: &Mount, name: &str, case: &str) {
    let listed = mount.list().iter().any(|n| n == name);
    match File::open(mount.path(name)) {
        Err(e) if listed => assert_eq!(
            e.raw_os_error(),
            Some(libc::EIO),
            "[{case}] open of listed corrupt image: {e}"
        ),
        Err(e) => assert!(
            matches!(e.raw_os_error(), Some(libc::EIO | libc::ENOENT)),
            "[{case}] open of unlisted corrupt image: {e}"
        ),
        Ok(f) => assert_errno(
            read_full_at(&f, 0, 4096).map(|v| v.len()),
            &[libc::EIO],
            &format!("[{case}] read of corrupt image"),
        ),
    }
}

#[test]
fn corrupt_header_isolated() {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let mut rng = Rng::new();
    let (a, b) = (scratch.name("good"), scratch.name("bad"));
    let data_a = rng.bytes((MIB + 777) as usize);
    cluster.import_v1(&a, &data_a, 16);
    cluster.import_v1(&b, &rng.bytes((MIB + 99) as usize), 16);

    let header_obj = format!("{b}.rbd");
    let good_header = cluster.get_object(&header_obj);
    assert!(
        good_header.len() >= 0x70,
        "unexpected v1 header length {}",
        good_header.len()
    );
    // Put the real header back before cleanup so `rbd rm` can remove B.
    scratch.restore_object_on_drop(&header_obj, good_header.clone());

    let mut bad_signature = good_header.clone();
    bad_signature[0x40..0x44].copy_from_slice(b"XXX\0");
    let cases: [(&str, Vec<u8>); 4] = [
        ("200 random bytes", rng.bytes(200)),
        (
            "first 60 bytes of a valid header",
            good_header[..60].to_vec(),
        ),
        ("bad signature", bad_signature),
        ("empty object", Vec::new()),
    ];
    for (case, garbage) in cases {
        cluster.put_object(&header_obj, &garbage);
        // A fresh mount per case so nothing is cached from a previous one.
        let mount = Mount::new(&cluster, &[]);
        assert_bytes_eq(
            &fs::read(mount.path(&a)).unwrap(),
            &data_a,
            &format!("[{case}] A before touching B"),
        );
        assert_unreadable(&mount, &b, case);
        assert_bytes_eq(
            &fs::read(mount.path(&a)).unwrap(),
            &data_a,
            &format!("[{case}] A after touching B"),
        );
        drop(mount);
    }
}

#[test]
fn write_past_end_fails_and_writes_nothing() {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let name = scratch.name("eof");
    let mut rng = Rng::new();
    let data = rng.bytes(300_017);
    let size = data.len() as u64;
    cluster.import_v1(&name, &data, 16);

    // fixed_size: images do not grow by writing (the default grows them;
    // see tests/file_semantics.rs).
    let mount = Mount::new(&cluster, &["-o", "fixed_size"]);
    let p = mount.path(&name);
    let f = open_rw(&p);
    let attempts = [
        ("starts inside, runs 90 bytes past the end", size - 10, 100),
        (
            "starts inside, spans objects, runs past the end",
            size - 150 * 1024,
            200 * 1024,
        ),
        ("starts exactly at the end", size, 10),
        ("starts past the end", size + 4096, 10),
    ];
    for (what, off, len) in attempts {
        // One write_at call: a short write would already have written bytes.
        let r = f.write_at(&vec![0xAA; len], off);
        assert_errno(r, &[libc::ENOSPC, libc::EFBIG], what);
    }
    f.sync_all()
        .unwrap_or_else(|e| panic!("fsync after failed writes: {e}\n{}", mount.log()));
    assert_eq!(
        fs::metadata(&p).unwrap().len(),
        size,
        "failed writes changed the size"
    );
    assert_bytes_eq(
        &fs::read(&p).unwrap(),
        &data,
        "read-back after failed writes",
    );
    drop(f);
    drop(mount);
    assert_bytes_eq(
        &cluster.export(&name),
        &data,
        "rbd export after failed writes",
    );
}

#[test]
fn read_only_mount_refuses_writes() {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let name = scratch.name("ro");
    let mut rng = Rng::new();
    let data = rng.bytes((MIB + 5) as usize);
    cluster.import_v1(&name, &data, 22);

    let mount = Mount::new(&cluster, &["-o", "ro"]);
    let p = mount.path(&name);
    for (what, opts) in [
        ("write-only", OpenOptions::new().write(true).clone()),
        (
            "read-write",
            OpenOptions::new().read(true).write(true).clone(),
        ),
    ] {
        match opts.open(&p) {
            Err(e) => assert_eq!(
                e.raw_os_error(),
                Some(libc::EROFS),
                "{what} open on ro mount: {e}"
            ),
            Ok(f) => assert_errno(
                f.write_at(b"x", 0),
                &[libc::EROFS],
                &format!("write after {what} open on ro mount"),
            ),
        }
    }
    assert_bytes_eq(&fs::read(&p).unwrap(), &data, "read on ro mount");
    drop(mount);
    assert_bytes_eq(&cluster.export(&name), &data, "rbd export after ro mount");
}

#[test]
fn single_image_option() {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let mut rng = Rng::new();
    let (a, b) = (scratch.name("only"), scratch.name("other"));
    let data = rng.bytes(70_001);
    cluster.import_v1(&a, &data, 16);
    cluster.create_v1_image(&b, MIB, 22);

    let mount = Mount::new(&cluster, &["--image", &a]);
    // Dot entries (the `.snap` tree) are not images.
    let images: Vec<String> = mount
        .list()
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(
        images,
        vec![a.clone()],
        "--image {a} must expose exactly that image"
    );
    assert_bytes_eq(
        &fs::read(mount.path(&a)).unwrap(),
        &data,
        "read of the single image",
    );
    assert_errno(
        fs::metadata(mount.path(&b)),
        &[libc::ENOENT],
        "other image under --image",
    );
}

/// Waits for the daemonised rbdfs processes to go away after unmount;
/// kills (our own) stragglers by pid and fails.
fn assert_daemons_exit(pids: &[u32], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let alive = |pid: &u32| {
        // A zombie (unreaped by a container's init) counts as gone.
        fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
    };
    while pids.iter().any(alive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left: Vec<u32> = pids.iter().copied().filter(alive).collect();
    for &pid in &left {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    assert!(
        left.is_empty(),
        "{what}: rbdfs daemon(s) {left:?} still running 15 s after unmount (killed)"
    );
}

#[test]
fn mount_helper_form() {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let name = scratch.name("helper");
    let mut rng = Rng::new();
    let data = rng.bytes((MIB + 3) as usize);
    cluster.import_v1(&name, &data, 22);
    let conf_opt = format!("conf={}", cluster.conf().display());

    // mount.fuse3 runs the file system program through /bin/sh. mount(8)
    // (util-linux 2.38) strips PATH from a helper's environment, so under
    // `mount -t fuse.rbdfs` only an installed rbdfs would be found; the test
    // binary is therefore reached (1) by mount(8) with the `PROGRAM#SOURCE`
    // form, and (2) by calling mount.fuse3 itself with `-t fuse.rbdfs` and a
    // PATH holding a `rbdfs` symlink, which is what mount(8) then execs.
    let bin = tempfile::TempDir::new().unwrap();
    symlink(RBDFS, bin.path().join("rbdfs")).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let forms = [
        "mount -t fuse RBDFS#POOL",
        "mount.fuse3 POOL MNT -t fuse.rbdfs",
        "rbdfs POOL MNT -o",
    ];
    for (i, form) in forms.into_iter().enumerate() {
        let dir = MountDir::new(); // its Drop unmounts if we fail half-way
        // Each form ends with the argument shape mount.fuse3 documents:
        // SOURCE MOUNTPOINT -o OPTIONS [-t TYPE].
        let mut cmd = match i {
            0 => {
                let mut c = Command::new("mount");
                c.args(["-t", "fuse", &format!("{RBDFS}#{POOL}")])
                    .arg(&dir.mnt)
                    .args(["-o", &conf_opt]);
                c
            }
            1 => {
                let mut c = Command::new("mount.fuse3");
                c.arg(POOL)
                    .arg(&dir.mnt)
                    .args(["-o", &conf_opt, "-t", "fuse.rbdfs"])
                    .env("PATH", &path);
                c
            }
            _ => {
                let mut c = Command::new(RBDFS);
                c.arg(POOL).arg(&dir.mnt).args(["-o", &conf_opt]);
                c
            }
        };
        let out = run_timeout(&mut cmd, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{form}: {e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{form}: exited {} \nstderr: {stderr}",
            out.status
        );
        // The contract: it returns only once the mount is live.
        let entry = mount_entry(&dir.mnt);
        assert!(
            is_fuse_mounted(&dir.mnt),
            "{form}: returned 0 but no FUSE mount at {} ({entry:?}); stderr: {stderr}",
            dir.mnt.display()
        );
        assert_bytes_eq(
            &fs::read(dir.mnt.join(&name)).unwrap(),
            &data,
            &format!("{form}: read through the mount"),
        );

        let daemons = pids_with_arg(&dir.mnt);
        assert!(
            !daemons.is_empty(),
            "{form}: no rbdfs process with {} in its arguments",
            dir.mnt.display()
        );
        let mut umount = Command::new("umount");
        umount.arg(&dir.mnt);
        let out = run_timeout(&mut umount, Duration::from_secs(30)).unwrap();
        assert!(
            out.status.success(),
            "{form}: umount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !is_fuse_mounted(&dir.mnt),
            "{form}: still mounted after umount"
        );
        assert_daemons_exit(&daemons, form);
    }
}

#[test]
fn unreachable_cluster_fails_fast() {
    // No real cluster needed: nothing listens on port 1. Auth is off so the
    // client gets as far as trying to reach the monitor.
    let tmp = tempfile::TempDir::new().unwrap();
    let conf = tmp.path().join("unreachable.conf");
    fs::write(
        &conf,
        "[global]\nmon host = 127.0.0.1:1\nclient mount timeout = 5\nauth cluster required = none\n\
         auth service required = none\nauth client required = none\nms bind ipv6 = false\n",
    )
    .unwrap();
    let dir = MountDir::new();
    let start = Instant::now();
    let args = [
        "mount".as_ref(),
        "-f".as_ref(),
        "-c".as_ref(),
        conf.as_os_str(),
        "-o".as_ref(),
        "rados_timeout=5".as_ref(),
        POOL.as_ref(),
        dir.mnt.as_os_str(),
    ];
    let mut child = spawn_rbdfs(&args, &dir.log, false);
    let st = wait_or_kill(
        &mut child,
        Duration::from_secs(30),
        "rbdfs with an unreachable cluster",
        &dir.log,
    );
    let stderr = fs::read_to_string(&dir.log).unwrap();
    assert!(
        !st.success(),
        "rbdfs exited 0 with no cluster\n{}",
        log_text(&dir.log)
    );
    assert!(
        !stderr.trim().is_empty(),
        "rbdfs failed ({st}) without a message on stderr"
    );
    assert!(
        !is_fuse_mounted(&dir.mnt),
        "mountpoint is mounted although rbdfs failed"
    );
    eprintln!(
        "failed as expected in {:?} with {st}: {}",
        start.elapsed(),
        stderr.trim()
    );
}

#[test]
fn missing_pool_fails_clearly() {
    let cluster = Cluster::get();
    let pool = "no-such-pool-xyz";
    let dir = MountDir::new();
    let args = [
        "mount".as_ref(),
        "-f".as_ref(),
        "-c".as_ref(),
        cluster.conf().as_os_str(),
        pool.as_ref(),
        dir.mnt.as_os_str(),
    ];
    let mut child = spawn_rbdfs(&args, &dir.log, false);
    let st = wait_or_kill(
        &mut child,
        Duration::from_secs(30),
        "rbdfs with a missing pool",
        &dir.log,
    );
    let stderr = fs::read_to_string(&dir.log).unwrap();
    assert!(
        !st.success(),
        "rbdfs exited 0 for a missing pool\n{}",
        log_text(&dir.log)
    );
    assert!(
        stderr.contains(pool),
        "stderr does not name the pool `{pool}`\n{}",
        log_text(&dir.log)
    );
    assert!(
        !is_fuse_mounted(&dir.mnt),
        "mountpoint is mounted although rbdfs failed"
    );
}

#[test]
fn sigterm_unmounts_cleanly() {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let name = scratch.name("term");
    let mut rng = Rng::new();
    let order = 16u8;
    let obj = 1u64 << order;
    let mut model = rng.bytes((4 * MIB + 99) as usize);
    cluster.import_v1(&name, &model, order);

    let mut mount = Mount::new(&cluster, &[]);
    {
        let f = open_rw(&mount.path(&name));
        // Unaligned, one crossing an object boundary, one at the very end.
        let size = model.len() as u64;
        for (off, len) in [
            (12_345u64, 777u64),
            (3 * obj - 1000, 5000),
            (size - 4321, 4321),
        ] {
            let buf = rng.bytes(len as usize);
            f.write_all_at(&buf, off)
                .unwrap_or_else(|e| panic!("write at {off}: {e}\n{}", mount.log()));
            model[off as usize..(off + len) as usize].copy_from_slice(&buf);
        }
        // Closed without fsync: SIGTERM must still flush what rbdfs holds.
    }
    let st = mount.signal_and_wait(libc::SIGTERM, Duration::from_secs(10));
    assert!(
        st.success(),
        "rbdfs exited with {st} on SIGTERM\n{}",
        mount.log()
    );
    assert!(
        !is_fuse_mounted(mount.dir()),
        "still mounted after rbdfs exited on SIGTERM"
    );
    drop(mount);
    assert_bytes_eq(&cluster.export(&name), &model, "rbd export after SIGTERM");
}
