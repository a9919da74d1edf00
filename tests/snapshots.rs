//! Snapshots of format-1 images: `MOUNT/.snap/IMAGE/SNAP` must read exactly
//! what librbd (`rbd export IMAGE@SNAP`) reads, writes through the mount
//! must carry the snap context (so the OSDs preserve snapshot data), snapshots
//! made by other clients must show up without a remount, and snapshots made
//! through the filesystem must be real librbd snapshots. Snapshot files are
//! read-only and every refused operation leaves `rbd snap ls` unchanged.
//!
//! Images use order 16 (64 KiB objects) so random writes cross objects.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1 << 20;
const ORDER: u8 = 16;
const OBJ: u64 = 1 << ORDER;
/// Kernel attr/entry caching is 1 s; allow twice that (plus slack) for
/// changes made by other clients to show.
const VISIBLE_WITHIN: Duration = Duration::from_secs(3);

fn open_rw(mount: &Mount, p: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap_or_else(|e| panic!("open {} rw: {e}\n{}", p.display(), mount.log()))
}

fn snap_path(mount: &Mount, img: &str, snap: &str) -> PathBuf {
    mount.path(".snap").join(img).join(snap)
}

/// `rbd snap ls --format json` as name -> size. Minimal scan (no serde in
/// the dev-dependencies); test snapshot names contain no quotes.
fn snap_ls(cluster: &Cluster, img: &str) -> BTreeMap<String, u64> {
    let out = cluster.rbd(&["snap", "ls", "--format", "json", &spec(img)]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut snaps = BTreeMap::new();
    for obj in text.split('{').skip(1) {
        let field = |key: &str| -> &str {
            let pat = format!("\"{key}\":");
            let i = obj
                .find(&pat)
                .unwrap_or_else(|| panic!("no {key} in {text}"));
            obj[i + pat.len()..].trim_start()
        };
        let name = field("name").trim_start_matches('"');
        let name = &name[..name.find('"').unwrap()];
        let size: String = field("size")
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        snaps.insert(name.to_string(), size.parse().unwrap());
    }
    snaps
}

fn snap_create(cluster: &Cluster, img: &str, snap: &str) {
    cluster.rbd(&[
        "snap",
        "create",
        "--no-progress",
        &format!("{}@{snap}", spec(img)),
    ]);
}

fn resize(cluster: &Cluster, img: &str, size: u64, shrink: bool) {
    let size = format!("{size}B");
    let mut args = vec!["resize", "--no-progress", "--size", &size];
    if shrink {
        args.push("--allow-shrink");
    }
    let spec = spec(img);
    args.push(&spec);
    cluster.rbd(&args);
}

/// `rbd export` of `what` (IMAGE or IMAGE@SNAP) equals `want`.
#[track_caller]
fn assert_export(cluster: &Cluster, what: &str, want: &[u8]) {
    assert_bytes_eq(&cluster.export(what), want, &format!("rbd export {what}"));
}

/// `n` random writes through `f` (unaligned; about a third straddle an
/// object boundary), mirrored into `model`. Returns the objects touched.
fn random_writes(
    mount: &Mount,
    f: &File,
    model: &mut [u8],
    rng: &mut Rng,
    n: usize,
) -> BTreeSet<u64> {
    let size = model.len() as u64;
    let mut touched = BTreeSet::new();
    for i in 0..n {
        let len = rng.range(2, (3 * OBJ).min(size));
        let off = if rng.below(3) == 0 {
            let b = rng.range(1, (size - 1) / OBJ) * OBJ;
            b - rng.range(1, (len - 1).min(b))
        } else {
            rng.below(size - len + 1)
        };
        let len = len.min(size - off);
        let buf = rng.bytes(len as usize);
        f.write_all_at(&buf, off)
            .unwrap_or_else(|e| panic!("write #{i} ({len} at {off}): {e}\n{}", mount.log()));
        model[off as usize..(off + len) as usize].copy_from_slice(&buf);
        touched.extend(off / OBJ..=(off + len - 1) / OBJ);
    }
    f.sync_all()
        .unwrap_or_else(|e| panic!("fsync: {e}\n{}", mount.log()));
    touched
}

/// The snapshot file: a regular file, mode 0444, the snapshot's size, and
/// `want` both as a whole and in a few unaligned windows.
#[track_caller]
fn assert_snap_file(mount: &Mount, img: &str, snap: &str, want: &[u8], rng: &mut Rng) {
    let p = snap_path(mount, img, snap);
    let what = format!(".snap/{img}/{snap}");
    let meta = fs::metadata(&p).unwrap_or_else(|e| panic!("stat {what}: {e}\n{}", mount.log()));
    assert!(meta.is_file(), "{what} is not a regular file: {meta:?}");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o444, "mode of {what}");
    assert_eq!(meta.len(), want.len() as u64, "size of {what}");
    let got = fs::read(&p).unwrap_or_else(|e| panic!("read {what}: {e}\n{}", mount.log()));
    assert_bytes_eq(&got, want, &format!("content of {what}"));
    let f = File::open(&p).unwrap();
    for _ in 0..5 {
        let len = rng.range(1, (2 * OBJ).min(want.len() as u64));
        let off = rng.below(want.len() as u64 - len + 1);
        let got = read_full_at(&f, off, len as usize).unwrap();
        let want = &want[off as usize..(off + len) as usize];
        assert_bytes_eq(&got, want, &format!("{what}: read_at({off}, {len})"));
    }
}

/// The head through the mount: size and content.
#[track_caller]
fn assert_head(mount: &Mount, img: &str, want: &[u8], what: &str) {
    let p = mount.path(img);
    let meta = fs::metadata(&p).unwrap_or_else(|e| panic!("stat {img}: {e}\n{}", mount.log()));
    assert_eq!(meta.len(), want.len() as u64, "{what}: size of the head");
    assert_bytes_eq(
        &fs::read(&p).unwrap(),
        want,
        &format!("{what}: head content"),
    );
}

/// Retries `check` until it returns Ok or VISIBLE_WITHIN passes.
fn eventually(what: &str, mount: &Mount, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + VISIBLE_WITHIN;
    while let Err(e) = check() {
        if Instant::now() >= deadline {
            panic!(
                "{what}: still {e} after {VISIBLE_WITHIN:?}\n{}",
                mount.log()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for the head's size, as a fresh open + fstat sees it, to become
/// `want` after a resize by another client.
fn wait_head_size(mount: &Mount, img: &str, want: u64) {
    eventually(&format!("size of {img}"), mount, || {
        let len = File::open(mount.path(img)).and_then(|f| f.metadata());
        match len.map(|m| m.len()) {
            Ok(len) if len == want => Ok(()),
            r => Err(format!("{r:?}, want {want}")),
        }
    });
}

/// Waits for the listing of `dir` to become exactly `want`.
fn wait_names(mount: &Mount, dir: &Path, want: &[&str]) {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    eventually(
        &format!("listing of {}", dir.display()),
        mount,
        || match names_in(dir) {
            Ok(got) if got == want => Ok(()),
            r => Err(format!("{r:?}, want {want:?}")),
        },
    );
}

fn names_in(dir: &Path) -> io::Result<BTreeSet<String>> {
    fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().into_string().unwrap()))
        .collect()
}

#[test]
fn snapshot_by_cli_preserves_old_data() {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let mut purge = SnapPurge::new(&cluster);
    let img = purge.add(scratch.name("snapcli"));
    let mut rng = Rng::new();
    // A zero run leaves some objects nonexistent at snapshot time: writes
    // create them, and the snapshot must still read zeros there.
    let mut a = rng.bytes((2 * MIB + 4321) as usize);
    a[(5 * OBJ) as usize..(8 * OBJ) as usize].fill(0);
    cluster.import_v1(&img, &a, ORDER);
    snap_create(&cluster, &img, "s1");

    let mount = Mount::new(&cluster, &[]);
    let mut model = a.clone();
    {
        let f = open_rw(&mount, &mount.path(&img));
        let touched = random_writes(&mount, &f, &mut model, &mut rng, 40);
        // Writing only a few objects would make the snap-context check weak.
        assert!(
            touched.len() >= 16,
            "generator sanity: only {touched:?} touched"
        );
        // Deterministically write into the hole, too.
        let buf = rng.bytes(OBJ as usize + 1000);
        let off = 5 * OBJ + 500;
        f.write_all_at(&buf, off).unwrap();
        model[off as usize..off as usize + buf.len()].copy_from_slice(&buf);
        f.sync_all().unwrap();
    }
    // Without the snap context in every write the OSDs would not clone the
    // objects, and s1 would read (parts of) the new data.
    assert_snap_file(&mount, &img, "s1", &a, &mut rng);
    assert_head(&mount, &img, &model, "after writes");
    drop(mount);

    assert_export(&cluster, &format!("{img}@s1"), &a);
    assert_export(&cluster, &img, &model);
}

#[test]
fn snapshot_taken_while_mounted() {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let mut purge = SnapPurge::new(&cluster);
    let img = purge.add(scratch.name("snaplive"));
    let mut rng = Rng::new();
    // Imported data: every object exists, so a write with a stale snap
    // context would overwrite snapshot data in place.
    let mut model = rng.bytes((2 * MIB + 999) as usize);
    cluster.import_v1(&img, &model, ORDER);

    let mount = Mount::new(&cluster, &[]);
    let f = open_rw(&mount, &mount.path(&img));
    random_writes(&mount, &f, &mut model, &mut rng, 20);
    let after_b1 = model.clone();
    snap_create(&cluster, &img, "s1");
    // Same handle, no re-open and no sleep: the header watch must have
    // brought in the new snap context before `rbd snap create` returned
    // (librbd's notify waits for our ack).
    random_writes(&mount, &f, &mut model, &mut rng, 20);
    let after_b2 = model.clone();
    snap_create(&cluster, &img, "s2");
    random_writes(&mount, &f, &mut model, &mut rng, 20);
    drop(f);

    // The oracle first: a write with a stale snap context shows here even
    // if the mount's lookups are broken too.
    assert_export(&cluster, &format!("{img}@s1"), &after_b1);
    assert_export(&cluster, &format!("{img}@s2"), &after_b2);
    assert_export(&cluster, &img, &model);
    assert_snap_file(&mount, &img, "s1", &after_b1, &mut rng);
    assert_snap_file(&mount, &img, "s2", &after_b2, &mut rng);
    assert_head(&mount, &img, &model, "after B3");
}

#[test]
fn snapshot_via_filesystem() {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let mut purge = SnapPurge::new(&cluster);
    let img = purge.add(scratch.name("snapfs"));
    let mut rng = Rng::new();
    let mut model = rng.bytes((MIB + 77_777) as usize);
    cluster.import_v1(&img, &model, ORDER);

    let mount = Mount::new(&cluster, &[]);
    let f = open_rw(&mount, &mount.path(&img));
    // Kept open and not fsynced before the snapshot: a write that returned
    // is acknowledged, and the snapshot must contain it.
    for _ in 0..10 {
        let len = rng.range(1, 3 * OBJ);
        let off = rng.below(model.len() as u64 - len + 1);
        let buf = rng.bytes(len as usize);
        f.write_all_at(&buf, off).unwrap();
        model[off as usize..(off + len) as usize].copy_from_slice(&buf);
    }
    let at_snap = model.clone();
    let sp = snap_path(&mount, &img, "mysnap");
    File::create(&sp).unwrap_or_else(|e| panic!("create {}: {e}\n{}", sp.display(), mount.log()));

    let listed = snap_ls(&cluster, &img);
    assert_eq!(
        listed,
        BTreeMap::from([("mysnap".to_string(), at_snap.len() as u64)]),
        "rbd snap ls after creating mysnap through the filesystem"
    );
    assert_export(&cluster, &format!("{img}@mysnap"), &at_snap);
    assert_snap_file(&mount, &img, "mysnap", &at_snap, &mut rng);

    // The new snapshot must be in our own snap context too.
    random_writes(&mount, &f, &mut model, &mut rng, 20);
    assert_snap_file(&mount, &img, "mysnap", &at_snap, &mut rng);
    assert_head(&mount, &img, &model, "after writes following mysnap");
    assert_export(&cluster, &format!("{img}@mysnap"), &at_snap);

    // `touch` (open O_CREAT + utimensat) is the documented way.
    let out = Command::new("touch")
        .arg(snap_path(&mount, &img, "viatouch"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "touch: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        mount.log()
    );
    assert_snap_file(&mount, &img, "viatouch", &model, &mut rng);

    fs::remove_file(&sp).unwrap_or_else(|e| panic!("rm mysnap: {e}\n{}", mount.log()));
    let listed = snap_ls(&cluster, &img);
    assert_eq!(
        listed.keys().collect::<Vec<_>>(),
        ["viatouch"],
        "rbd snap ls after rm mysnap"
    );
    assert_errno(
        fs::metadata(&sp),
        &[libc::ENOENT],
        "stat of the removed snapshot",
    );

    // Same name again, different content: nothing cached from the old one.
    random_writes(&mount, &f, &mut model, &mut rng, 10);
    File::create(&sp).unwrap_or_else(|e| panic!("re-create mysnap: {e}\n{}", mount.log()));
    assert_snap_file(&mount, &img, "mysnap", &model, &mut rng);
    drop(f);
    drop(mount);
    assert_export(&cluster, &format!("{img}@mysnap"), &model);
    assert_export(&cluster, &img, &model);
}

#[test]
fn snapshot_of_resized_image_keeps_old_size() {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let mut purge = SnapPurge::new(&cluster);
    let img = purge.add(scratch.name("snaprs"));
    let mut rng = Rng::new();
    let small = rng.bytes((MIB + 333) as usize);
    cluster.import_v1(&img, &small, ORDER);
    snap_create(&cluster, &img, "small");

    let mount = Mount::new(&cluster, &[]);
    assert_head(&mount, &img, &small, "before resize");
    let big_size = 3 * MIB + 4097;
    resize(&cluster, &img, big_size, false);
    let head = mount.path(&img);
    wait_head_size(&mount, &img, big_size);
    let mut model = small.clone();
    model.resize(big_size as usize, 0);
    assert_head(&mount, &img, &model, "after grow");
    assert_snap_file(&mount, &img, "small", &small, &mut rng);

    // Write across the old end and near the new end: only possible if the
    // new size is known, and must not touch the snapshot.
    {
        let f = open_rw(&mount, &head);
        for off in [small.len() as u64 - 1000, big_size - 70_000] {
            let buf = rng.bytes(70_000);
            f.write_all_at(&buf, off)
                .unwrap_or_else(|e| panic!("write at {off} after grow: {e}\n{}", mount.log()));
            model[off as usize..off as usize + buf.len()].copy_from_slice(&buf);
        }
        f.sync_all().unwrap();
    }
    assert_head(&mount, &img, &model, "after writes past the old end");
    assert_snap_file(&mount, &img, "small", &small, &mut rng);

    // Shrink below the first snapshot's size; the new snapshot keeps all
    // of the big image, the old one its own size.
    snap_create(&cluster, &img, "big");
    let big = model.clone();
    let shrunk_size = 700_001;
    resize(&cluster, &img, shrunk_size, true);
    wait_head_size(&mount, &img, shrunk_size);
    model.truncate(shrunk_size as usize);
    assert_head(&mount, &img, &model, "after shrink");
    assert_snap_file(&mount, &img, "big", &big, &mut rng);
    assert_snap_file(&mount, &img, "small", &small, &mut rng);
    // Writing past the shrunk end grows the head again, one byte, and
    // leaves the snapshots their sizes and bytes.
    let f = open_rw(&mount, &head);
    f.write_all_at(b"x", shrunk_size)
        .unwrap_or_else(|e| panic!("write past the shrunk end: {e}\n{}", mount.log()));
    f.sync_all().unwrap();
    drop(f);
    model.push(b'x');
    wait_head_size(&mount, &img, shrunk_size + 1);
    assert_head(&mount, &img, &model, "after growing by a write");
    assert_snap_file(&mount, &img, "big", &big, &mut rng);
    assert_snap_file(&mount, &img, "small", &small, &mut rng);

    let sizes = snap_ls(&cluster, &img);
    assert_eq!(
        sizes,
        BTreeMap::from([
            ("small".into(), small.len() as u64),
            ("big".into(), big_size)
        ]),
        "rbd snap ls sizes"
    );
    drop(mount);
    assert_export(&cluster, &format!("{img}@small"), &small);
    assert_export(&cluster, &format!("{img}@big"), &big);
    assert_export(&cluster, &img, &model);
}

/// `truncate(2)` by path: the only way to ask for a truncate of a file no
/// writable descriptor can be opened for.
fn truncate_path(p: &Path, len: i64) -> io::Result<()> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated CString alive across the call.
    if unsafe { libc::truncate(c.as_ptr(), len) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[test]
fn snapshot_files_are_read_only_and_names_are_checked() {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let mut purge = SnapPurge::new(&cluster);
    let img = purge.add(scratch.name("snapro"));
    let mut rng = Rng::new();
    let data = rng.bytes((MIB / 2 + 11) as usize);
    cluster.import_v1(&img, &data, ORDER);
    snap_create(&cluster, &img, "s");

    let mount = Mount::new(&cluster, &[]);
    let s = snap_path(&mount, &img, "s");
    let dir = s.parent().unwrap().to_path_buf();

    // The one writable descriptor a snapshot file can have is the one its
    // creation returns: writes and ftruncate through it must fail too.
    let created = File::create(dir.join("fresh"))
        .unwrap_or_else(|e| panic!("create snapshot fresh: {e}\n{}", mount.log()));
    assert_errno(
        created.write_at(b"x", 0),
        &[libc::EROFS],
        "write to a new snapshot's fd",
    );
    assert_errno(
        created.set_len(1),
        &[libc::EROFS],
        "ftruncate of a new snapshot's fd",
    );
    drop(created);
    let before = snap_ls(&cluster, &img);
    assert_eq!(before.keys().collect::<Vec<_>>(), ["fresh", "s"]);

    let open = |o: &mut OpenOptions, name: &str| o.open(dir.join(name)).map(drop);
    let no_image = mount.path(".snap").join(unique_name("noimg"));
    let excl = || OpenOptions::new().write(true).create_new(true).clone();
    #[rustfmt::skip]
    let refused: Vec<(&str, io::Result<()>, i32)> = vec![
        ("open write-only", open(OpenOptions::new().write(true), "s"), libc::EROFS),
        ("open read-write", open(OpenOptions::new().read(true).write(true), "s"), libc::EROFS),
        // File::create of an existing name opens it O_WRONLY|O_TRUNC.
        ("File::create of existing s", File::create(&s).map(drop), libc::EROFS),
        // O_RDONLY|O_TRUNC truncates on Linux: a read-only open must not
        // quietly swallow it.
        ("open O_RDONLY|O_TRUNC",
         open(OpenOptions::new().read(true).custom_flags(libc::O_TRUNC), "s"), libc::EROFS),
        ("truncate(2) to 0", truncate_path(&s, 0), libc::EROFS),
        ("truncate(2) to 2 MiB", truncate_path(&s, 2 * MIB as i64), libc::EROFS),
        ("chmod 0644", fs::set_permissions(&s, fs::Permissions::from_mode(0o644)), libc::EROFS),
        ("mkdir in .snap/IMG", fs::create_dir(dir.join("newdir")), libc::EPERM),
        ("create snapshot a@b", File::create(dir.join("a@b")).map(drop), libc::EINVAL),
        ("O_EXCL create x@", open(&mut excl(), "x@"), libc::EINVAL),
        // The kernel itself answers O_EXCL on an existing name.
        ("O_EXCL create of existing s", open(&mut excl(), "s"), libc::EEXIST),
        ("rm missing snapshot", fs::remove_file(dir.join("nope")), libc::ENOENT),
        ("snapshot of a missing image", File::create(no_image.join("x")).map(drop), libc::ENOENT),
    ];
    for (what, result, errno) in refused {
        assert_errno(result, &[errno], what);
    }

    assert_eq!(
        snap_ls(&cluster, &img),
        before,
        "rbd snap ls after refused operations"
    );
    assert_snap_file(&mount, &img, "s", &data, &mut rng);
    assert_head(&mount, &img, &data, "after refused operations");
    assert_eq!(
        names_in(&dir).unwrap(),
        BTreeSet::from(["fresh".to_string(), "s".to_string()]),
        "listing after refused operations"
    );
    drop(mount);

    let ro = Mount::new(&cluster, &["-o", "ro"]);
    let dir = ro.path(".snap").join(&img);
    assert_errno(
        File::create(dir.join("new")),
        &[libc::EROFS],
        "create snapshot on ro mount",
    );
    let r = Command::new("touch")
        .arg(dir.join("new2"))
        .output()
        .unwrap();
    assert!(
        !r.status.success(),
        "touch of a snapshot on an ro mount succeeded"
    );
    assert_errno(
        fs::remove_file(dir.join("s")),
        &[libc::EROFS],
        "rm snapshot on ro mount",
    );
    assert_snap_file(&ro, &img, "s", &data, &mut rng);
    drop(ro);
    assert_eq!(
        snap_ls(&cluster, &img),
        before,
        "rbd snap ls after the ro mount"
    );
    assert_export(&cluster, &format!("{img}@s"), &data);
    assert_export(&cluster, &img, &data);
}

#[test]
fn listing_of_snap_dirs() {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let mut purge = SnapPurge::new(&cluster);
    let mut rng = Rng::new();
    // Trailing '-' so "...-1-" never matches another test's "...-10-".
    let prefix = format!("{}-", unique_name("lssnap"));
    let a = purge.add(scratch.adopt(&format!("{prefix}a")));
    let b = purge.add(scratch.adopt(&format!("{prefix}b")));
    let data = rng.bytes(100_003);
    cluster.import_v1(&a, &data, ORDER);
    cluster.create_v1_image(&b, MIB, ORDER);
    for s in ["x", "y", "z"] {
        snap_create(&cluster, &a, s);
    }

    let mount = Mount::new(&cluster, &[]);
    // (name, is_file, is_dir) of the entries of `dir` that `keep` accepts,
    // as readdir reports them.
    let entries = |dir: &Path, keep: &dyn Fn(&str) -> bool| -> Vec<(String, bool, bool)> {
        let mut v: Vec<_> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("readdir {dir:?}: {e}\n{}", mount.log()))
            .map(|e| e.unwrap())
            .map(|e| (e.file_name().into_string().unwrap(), e.file_type().unwrap()))
            .filter(|(n, _)| keep(n))
            .map(|(n, t)| (n, t.is_file(), t.is_dir()))
            .collect();
        v.sort();
        v
    };
    let ours = |n: &str| n.starts_with(&prefix) || n == ".snap";
    let file = |n: &str| (n.to_string(), true, false);
    let dir = |n: &str| (n.to_string(), false, true);

    // Root: the images as files; `.snap` (if listed) only as a directory.
    let mut root = entries(mount.dir(), &ours);
    if root.first().is_some_and(|e| e.0 == ".snap") {
        assert_eq!(root.remove(0), dir(".snap"), ".snap in the root");
    }
    assert_eq!(root, [file(&a), file(&b)], "root listing");
    assert!(fs::metadata(mount.path(".snap")).unwrap().is_dir());

    // .snap: one directory per image; .snap/IMG: the snapshots as files.
    let snap_root = mount.path(".snap");
    let (dir_a, dir_b) = (snap_root.join(&a), snap_root.join(&b));
    assert_eq!(entries(&snap_root, &ours), [dir(&a), dir(&b)], ".snap");
    let all = |_: &str| true;
    assert_eq!(
        entries(&dir_a, &all),
        [file("x"), file("y"), file("z")],
        ".snap/a"
    );
    assert_eq!(entries(&dir_b, &all), [], ".snap/b");
    assert_errno(
        fs::read_dir(snap_root.join(unique_name("noimg"))),
        &[libc::ENOENT],
        ".snap/ of a missing image",
    );

    // Changes by another client show up without a remount.
    snap_create(&cluster, &a, "w");
    cluster.rbd(&["snap", "rm", "--no-progress", &format!("{}@x", spec(&a))]);
    snap_create(&cluster, &b, "only");
    wait_names(&mount, &dir_a, &["w", "y", "z"]);
    wait_names(&mount, &dir_b, &["only"]);
    eventually("lookup of removed x", &mount, || {
        match fs::metadata(dir_a.join("x")) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => Err(format!("{r:?}")),
        }
    });
    assert_snap_file(&mount, &a, "w", &data, &mut rng);
    assert_snap_file(&mount, &b, "only", &vec![0; MIB as usize], &mut rng);
}

/// Two clients snapshotting one image at once: each takes a snap id from
/// the pool, then `rbd.snap_add` refuses an id older than the header's
/// snap_seq with ESTALE. librbd then takes a new id and retries; a client
/// that does not fails a perfectly valid create.
#[test]
fn concurrent_snapshot_creates_from_two_mounts() {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let mut purge = SnapPurge::new(&cluster);
    let img = purge.add(scratch.name("snaprace"));
    let mut rng = Rng::new();
    let data = rng.bytes(200_001);
    cluster.import_v1(&img, &data, ORDER);

    let mounts = [Mount::new(&cluster, &[]), Mount::new(&cluster, &[])];
    const PER_MOUNT: usize = 8;
    let failures: Vec<String> = thread::scope(|s| {
        let workers: Vec<_> = mounts
            .iter()
            .enumerate()
            .map(|(m, mount)| {
                let dir = mount.path(".snap").join(&img);
                s.spawn(move || {
                    let mut failed = Vec::new();
                    for i in 0..PER_MOUNT {
                        if let Err(e) = File::create(dir.join(format!("m{m}-{i}"))) {
                            failed.push(format!("m{m}-{i}: {e}"));
                        }
                    }
                    failed
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let listed = snap_ls(&cluster, &img);
    assert!(
        failures.is_empty(),
        "{} of {} concurrent creates failed: {failures:?}\nrbd snap ls: {:?}\n{}\n{}",
        failures.len(),
        2 * PER_MOUNT,
        listed.keys().collect::<Vec<_>>(),
        mounts[0].log(),
        mounts[1].log()
    );
    assert_eq!(listed.len(), 2 * PER_MOUNT, "rbd snap ls: {listed:?}");
    for name in listed.keys() {
        assert_snap_file(&mounts[0], &img, name, &data, &mut rng);
    }
}

/// While another client snapshots the image (and so rewrites its header),
/// opening, reading and writing the head must keep working: every open
/// re-reads the header, and a header read must never see half of a change.
#[test]
fn head_stays_usable_while_another_client_snapshots() {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let mut purge = SnapPurge::new(&cluster);
    let img = purge.add(scratch.name("snapbusy"));
    let mut rng = Rng::new();
    let data = rng.bytes((MIB / 4) as usize);
    cluster.import_v1(&img, &data, ORDER);

    let mount = Mount::new(&cluster, &[]);
    let head = mount.path(&img);
    let done = AtomicBool::new(false);
    // Bounded even if the main thread panics before it sets `done`.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (ops, errors) = thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let (mut ops, mut errors) = (0u64, Vec::new());
                    while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                        // Same bytes at the same place: the image does not
                        // change, only the header does.
                        let r = OpenOptions::new()
                            .read(true)
                            .write(true)
                            .open(&head)
                            .and_then(|f| f.write_all_at(&data[..4096], 0).map(|_| f))
                            .and_then(|f| read_full_at(&f, 0, 4096));
                        match r {
                            Ok(got) if got == data[..4096] => {}
                            Ok(_) => errors.push("wrong data".to_string()),
                            Err(e) => errors.push(e.to_string()),
                        }
                        ops += 1;
                    }
                    (ops, errors)
                })
            })
            .collect();
        for i in 0..8 {
            snap_create(&cluster, &img, &format!("s{i}"));
        }
        done.store(true, Ordering::Relaxed);
        let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        let ops: u64 = results.iter().map(|r| r.0).sum();
        (
            ops,
            results.into_iter().flat_map(|r| r.1).collect::<Vec<_>>(),
        )
    });
    assert!(
        errors.is_empty(),
        "{} of {ops} open+write+read rounds failed during `rbd snap create`: {errors:?}\n{}",
        errors.len(),
        mount.log()
    );
    assert_snap_file(&mount, &img, "s7", &data, &mut rng);
}
