//! Narrow CephX users, as operators mount in production: `profile rbd`
//! (what any RBD client may do in one pool) works for everything rbdfs
//! does; `profile rbd-read-only` reads heads and snapshots at full speed
//! (no header watch may be set: nothing waits for one) and refuses writes
//! at once. The `rbd` CLI run as admin is the oracle.

mod common;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1 << 20;

#[test]
fn profile_rbd_user_reads_writes_snapshots_and_manages_images() {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let img = scratch.name("narrow");
    let new = scratch.name("narrow-new");
    let mut rng = Rng::new();
    let mut model = rng.bytes((3 * MIB) as usize);
    cluster.import_to(&spec(&img), &model);
    let user = CephxUser::new(&cluster, "narrow", "profile rbd pool=rbd");
    let args = user.mount_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mount = Mount::new(&cluster, &args);

    let head = mount.path(&img);
    assert_bytes_eq(&fs::read(&head).unwrap(), &model, "head read");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&head)
        .unwrap();
    let data = rng.bytes(MIB as usize);
    f.write_all_at(&data, MIB + 7)
        .unwrap_or_else(|e| panic!("write: {e}\n{}", mount.log()));
    f.sync_all()
        .unwrap_or_else(|e| panic!("fsync: {e}\n{}", mount.log()));
    drop(f);
    model[(MIB + 7) as usize..][..data.len()].copy_from_slice(&data);

    // A snapshot through the mount, read back, then removed.
    let snap = mount.path(".snap").join(&img).join("s1");
    fs::File::create(&snap).unwrap_or_else(|e| panic!("snapshot: {e}\n{}", mount.log()));
    assert_bytes_eq(&fs::read(&snap).unwrap(), &model, "snapshot read");
    assert_bytes_eq(
        &cluster.export(&format!("{img}@s1")),
        &model,
        "rbd export of the snapshot",
    );

    // Create, grow by writing, and remove an image.
    let nf = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(mount.path(&new))
        .unwrap_or_else(|e| panic!("create: {e}\n{}", mount.log()));
    nf.write_all_at(b"hello", 2 * MIB).unwrap();
    nf.sync_all().unwrap();
    drop(nf);
    assert_eq!(cluster.image_size(&new), 2 * MIB + 5, "created image size");
    fs::remove_file(&snap).unwrap_or_else(|e| panic!("rm snapshot: {e}\n{}", mount.log()));
    fs::remove_file(mount.path(&new)).unwrap_or_else(|e| panic!("rm: {e}\n{}", mount.log()));
    drop(mount);
    assert!(!cluster.ls().contains(&new), "image removed");
    assert_bytes_eq(&cluster.export(&img), &model, "rbd export of the head");
}

#[test]
fn read_only_user_reads_at_once_and_writes_fail_at_once() {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let mut purge = SnapPurge::new(&cluster);
    let img = purge.add(scratch.name("rouser"));
    let mut rng = Rng::new();
    let old = rng.bytes((2 * MIB + 3) as usize);
    cluster.import_to(&spec(&img), &old);
    cluster.rbd(&["snap", "create", &format!("{}@s0", spec(&img))]);
    let mut head_data = old.clone();
    head_data[..4096].copy_from_slice(&rng.bytes(4096));
    // The head moves on after the snapshot (written as admin, fsync'd).
    {
        let admin = Mount::new(&cluster, &[]);
        let f = OpenOptions::new()
            .write(true)
            .open(admin.path(&img))
            .unwrap();
        f.write_all_at(&head_data[..4096], 0).unwrap();
        f.sync_all().unwrap();
    }

    // Images without the exclusive lock: nothing but the write itself can
    // be refused there, so the user's capability must be known before the
    // write is acknowledged into the cache.
    let v1 = scratch.name("rouser-v1");
    let v1_data = rng.bytes((MIB + 9) as usize);
    cluster.import_v1(&v1, &v1_data, 16);
    let plain = scratch.name("rouser-plain");
    let plain_data = rng.bytes((MIB + 11) as usize);
    let tmp_plain = tempfile::NamedTempFile::new().unwrap();
    fs::write(tmp_plain.path(), &plain_data).unwrap();
    cluster.rbd(&[
        "import",
        "--no-progress",
        "--image-feature",
        "layering",
        tmp_plain.path().to_str().unwrap(),
        &spec(&plain),
    ]);

    let user = CephxUser::new(&cluster, "ro", "profile rbd-read-only pool=rbd");
    let args = user.mount_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mount = Mount::new(&cluster, &args);
    let t0 = Instant::now();
    assert_bytes_eq(&fs::read(mount.path(&img)).unwrap(), &head_data, "head");
    let snap = mount.path(".snap").join(&img).join("s0");
    assert_bytes_eq(&fs::read(&snap).unwrap(), &old, "snapshot");
    let reads = t0.elapsed();
    // Nothing in the read path waits for the watch this user may not set.
    assert!(
        reads < Duration::from_secs(10),
        "reads took {reads:?}\n{}",
        mount.log()
    );

    let t1 = Instant::now();
    let w = OpenOptions::new()
        .write(true)
        .open(mount.path(&img))
        .and_then(|f| {
            f.write_all_at(b"nope", 0)?;
            f.sync_all()
        });
    assert_errno(w, &[libc::EROFS, libc::EPERM, libc::EACCES], "write");
    let s = fs::File::create(mount.path(".snap").join(&img).join("x"));
    assert_errno(
        s,
        &[libc::EROFS, libc::EPERM, libc::EACCES],
        "snapshot create",
    );
    for (name, data) in [(&v1, &v1_data), (&plain, &plain_data)] {
        for round in 0..3 {
            // A fresh open each time: the refused watch is warned about
            // once per image, not once per open.
            assert_bytes_eq(&fs::read(mount.path(name)).unwrap(), data, name);
            let f = OpenOptions::new().write(true).open(mount.path(name));
            let w = f.and_then(|f| f.write_all_at(b"nope", 4096));
            assert_errno(
                w,
                &[libc::EROFS, libc::EPERM, libc::EACCES],
                &format!("write to {name} (round {round}): refused at once, not at fsync"),
            );
        }
    }
    let refused = t1.elapsed();
    assert!(
        refused < Duration::from_secs(10),
        "refusals took {refused:?}\n{}",
        mount.log()
    );
    let log = mount.log();
    for name in [&img, &v1, &plain] {
        let warnings = log
            .lines()
            .filter(|l| l.contains("cannot watch the header") && l.contains(name.as_str()))
            .count();
        assert!(
            warnings <= 1,
            "the refused watch of {name} was warned about {warnings} times (once is enough)\n{log}"
        );
    }
    drop(mount);
    assert_bytes_eq(&cluster.export(&img), &head_data, "rbd export of the head");
    assert_bytes_eq(
        &cluster.export(&v1),
        &v1_data,
        "rbd export of the format-1 image",
    );
    assert_bytes_eq(
        &cluster.export(&plain),
        &plain_data,
        "rbd export of the plain image",
    );
}
