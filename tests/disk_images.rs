//! Disk-image workflows through the filesystem, with `rbd` as the oracle:
//! clones with `ln` (clone v1 and v2), snapshot rename, protect and
//! unprotect (`user.rbd.protected`), rollback (`user.rbd.rollback`),
//! flatten (`user.rbd.flatten`), partitions as files (`.part`).

mod common;

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::json::Json;
use common::*;
use tempfile::TempDir;

const MIB: u64 = 1 << 20;

/// Images removed when the test ends, newest first (clones before their
/// parents), after unprotecting and purging their snapshots. Declare it
/// BEFORE any `Mount`.
struct Images(Cluster, Vec<String>);

impl Images {
    fn new(cluster: &Cluster) -> Images {
        Images(cluster.clone(), Vec::new())
    }

    fn name(&mut self, tag: &str) -> String {
        self.1.push(unique_name(tag));
        self.1.last().unwrap().clone()
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        for name in self.1.drain(..).rev() {
            let s = spec(&name);
            if let Ok(o) = self.0.rbd_try(&["snap", "ls", "--format", "json", &s])
                && o.status.success()
            {
                let snaps = Json::parse(&String::from_utf8_lossy(&o.stdout));
                for snap in snaps.arr() {
                    let _ = self.0.rbd_try(&[
                        "snap",
                        "unprotect",
                        &format!("{s}@{}", snap.at("name").str()),
                    ]);
                }
            }
            let _ = self.0.rbd_try(&["snap", "purge", "--no-progress", &s]);
            match self.0.rbd_try(&["rm", "--no-progress", &s]) {
                Ok(o) if o.status.success() => {}
                Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No such file") => {}
                r => eprintln!("warning: could not remove image {name}: {r:?}"),
            }
        }
    }
}

/// `rbd ARGS` (whitespace-split) as JSON.
fn rbd_json(cluster: &Cluster, args: &str) -> Json {
    let mut v: Vec<&str> = args.split_whitespace().collect();
    v.extend(["--format", "json"]);
    let out = cluster.rbd(&v);
    Json::parse(&String::from_utf8_lossy(&out.stdout))
}

/// `rbd snap ls` names, with whether each is protected.
fn snap_ls(cluster: &Cluster, image: &str) -> Vec<(String, bool)> {
    let snaps = rbd_json(cluster, &format!("snap ls {}", spec(image)));
    let mut out: Vec<(String, bool)> = snaps
        .arr()
        .iter()
        .map(|s| {
            let name = s.at("name").str().to_string();
            let info = rbd_json(cluster, &format!("info {}@{name}", spec(image)));
            let protected = info.get("protected").is_some_and(|p| p.str() == "true");
            (name, protected)
        })
        .collect();
    out.sort();
    out
}

fn setxattr(p: &Path, name: &str, value: &str) -> io::Result<()> {
    let (cp, cn) = (cstr(p.as_os_str().as_bytes()), cstr(name.as_bytes()));
    // SAFETY: `cp` and `cn` are NUL-terminated CStrings alive across the
    // call; `value` is a live slice whose length is passed.
    let rc = unsafe {
        libc::setxattr(
            cp.as_ptr(),
            cn.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[track_caller]
fn fails<T: std::fmt::Debug>(r: io::Result<T>, want: i32, what: &str, mount: &Mount) {
    if let Err(e) = &r
        && e.raw_os_error() == Some(want)
    {
        return;
    }
    let want = io::Error::from_raw_os_error(want);
    panic!("{what}: got {r:?}, want {want}\n{}", mount.log());
}

#[track_caller]
fn ok<T>(r: io::Result<T>, what: &str, mount: &Mount) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}\n{}", mount.log()))
}

/// A copy of the cluster's conf with `rbd default clone format = FORMAT`
/// for this mount only (nothing cluster-wide changes).
fn conf_with_clone_format(cluster: &Cluster, dir: &TempDir, format: &str) -> PathBuf {
    let text = fs::read_to_string(cluster.conf()).unwrap();
    let text = text.replacen(
        "[global]\n",
        &format!("[global]\nrbd default clone format = {format}\n"),
        1,
    );
    let path = dir.path().join(format!("ceph-clone-{format}.conf"));
    fs::write(&path, text).unwrap();
    path
}

/// A mount whose conf says `rbd default clone format = SETTING`.
fn mount_with_clone_format(cluster: &Cluster, dir: &TempDir, setting: &str) -> Mount {
    let conf = conf_with_clone_format(cluster, dir, setting);
    let conf_opt = format!("conf={}", conf.display());
    Mount::new(cluster, &["-o", &conf_opt])
}

#[track_caller]
fn assert_export_eq(cluster: &Cluster, image: &str, want: &[u8], what: &str) {
    assert_bytes_eq(&cluster.export(image), want, what);
}

/// Writes `data` at 0 of the mount's `name` and fsyncs.
fn write_image(mount: &Mount, name: &str, off: u64, data: &[u8]) {
    let f = ok(
        OpenOptions::new().write(true).open(mount.path(name)),
        "open",
        mount,
    );
    ok(f.write_all_at(data, off), "write", mount);
    ok(f.sync_all(), "fsync", mount);
}

/// A format-2 image `gold` of 8 MiB written with random data through the
/// mount, with snapshot `base` made through the mount.
fn golden(
    cluster: &Cluster,
    images: &mut Images,
    mount: &Mount,
    rng: &mut Rng,
) -> (String, Vec<u8>) {
    let gold = images.name("gold");
    cluster.rbd(&["create", "--size", "8M", &spec(&gold)]);
    let data = rng.bytes(8 * MIB as usize);
    write_image(mount, &gold, 0, &data);
    ok(
        fs::File::create(base_snapshot(mount, &gold)),
        "touch .snap/gold/base",
        mount,
    );
    (gold, data)
}

/// The path of `golden`'s snapshot `base` in the mount.
fn base_snapshot(mount: &Mount, gold: &str) -> PathBuf {
    mount.path(".snap").join(gold).join("base")
}

// ---------------------------------------------------------------------------
// 1. Clones with ln
// ---------------------------------------------------------------------------

#[test]
fn clone_with_ln_as_rbd_clone() {
    let cluster = Cluster::get();
    let tmp = TempDir::new().unwrap();
    let require = rbd_compat(&cluster);
    // "auto" follows the cluster's require-min-compat-client, as librbd.
    let auto_format = if require >= 13 { "2" } else { "1" };
    for (setting, want) in [("2", "2"), ("1", "1"), ("auto", auto_format)] {
        let mut images = Images::new(&cluster);
        let mount = mount_with_clone_format(&cluster, &tmp, setting);
        let mut rng = Rng::new();
        let (gold, data) = golden(&cluster, &mut images, &mount, &mut rng);
        let vm1 = images.name("vm1");
        let base = base_snapshot(&mount, &gold);
        let what = format!("ln (clone format {setting})");
        ok(fs::hard_link(&base, mount.path(&vm1)), &what, &mount);
        // EPERM for a head, EEXIST onto an existing name.
        fails(
            fs::hard_link(mount.path(&gold), mount.path("x-not-a-clone")),
            libc::EPERM,
            "ln of a head",
            &mount,
        );
        fails(
            fs::hard_link(&base, mount.path(&gold)),
            libc::EEXIST,
            "ln onto an existing name",
            &mount,
        );
        let info = rbd_json(&cluster, &format!("info {}", spec(&vm1)));
        let parent = info.at("parent");
        assert_eq!(parent.at("image").str(), gold, "{what}: parent");
        assert_eq!(parent.at("snapshot").str(), "base", "{what}: parent snap");
        assert_eq!(parent.at("overlap").u64(), 8 * MIB, "{what}: overlap");
        let op_features = info.at("op_features").strs();
        let snap_info = rbd_json(&cluster, &format!("info {}@base", spec(&gold)));
        let protected = snap_info.at("protected").str() == "true";
        if want == "2" {
            assert_eq!(op_features, ["clone-child"], "{what}: op features");
            assert!(
                !protected,
                "{what}: clone v2 leaves the snapshot unprotected"
            );
        } else {
            assert!(op_features.is_empty(), "{what}: {op_features:?}");
            assert!(protected, "{what}: clone v1 protects the snapshot");
        }
        let children = cluster.rbd(&["children", &format!("{}@base", spec(&gold))]);
        let children = String::from_utf8_lossy(&children.stdout).to_string();
        assert!(children.contains(&vm1), "{what}: rbd children: {children}");
        assert_export_eq(&cluster, &vm1, &data, &format!("{what}: rbd export vm1"));
        let gold_base = format!("{gold}@base");
        let what_base = format!("{what}: rbd export gold@base");
        assert_export_eq(&cluster, &gold_base, &data, &what_base);
        // A write to the clone leaves the parent's snapshot as it was.
        let patch = rng.bytes(100_000);
        write_image(&mount, &vm1, 3 * MIB + 7, &patch);
        let mut want_vm1 = data.clone();
        want_vm1[3 * MIB as usize + 7..][..patch.len()].copy_from_slice(&patch);
        let what_vm1 = format!("{what}: vm1 after write");
        assert_export_eq(&cluster, &vm1, &want_vm1, &what_vm1);
        let what_base = format!("{what}: gold@base after the clone's write");
        assert_export_eq(&cluster, &gold_base, &data, &what_base);
        assert_bytes_eq(
            &ok(fs::read(mount.path(&vm1)), "read vm1", &mount),
            &want_vm1,
            &format!("{what}: vm1 through the mount"),
        );
        drop(mount);
    }
}

/// The cluster's required minimum client release number (luminous 12,
/// mimic 13, ...), from `ceph osd dump`.
fn rbd_compat(cluster: &Cluster) -> u32 {
    let out = cluster.ceph(&["osd", "dump", "--format", "json"]);
    let dump = Json::parse(&String::from_utf8_lossy(&out.stdout));
    let releases = [
        "jewel", "kraken", "luminous", "mimic", "nautilus", "octopus", "pacific", "quincy",
    ];
    let name = dump.at("require_min_compat_client").str().to_string();
    let min = dump.at("min_compat_client").str().to_string();
    let n = |r: &str| {
        releases
            .iter()
            .position(|x| *x == r)
            .map_or(0, |i| 10 + i as u32)
    };
    n(&name).max(n(&min))
}

// ---------------------------------------------------------------------------
// 2. Snapshot rename, protect, unprotect, rm of a protected snapshot
// ---------------------------------------------------------------------------

#[test]
fn snapshot_rename_protect_unprotect() {
    let cluster = Cluster::get();
    let mut images = Images::new(&cluster);
    let mount = Mount::new(&cluster, &[]);
    let mut rng = Rng::new();
    let (gold, data) = golden(&cluster, &mut images, &mount, &mut rng);
    let dir = mount.path(".snap").join(&gold);
    ok(fs::File::create(dir.join("other")), "touch other", &mount);
    let snaps = |want: &[(&str, bool)], what: &str| {
        let want: Vec<(String, bool)> = want.iter().map(|(n, p)| (n.to_string(), *p)).collect();
        assert_eq!(snap_ls(&cluster, &gold), want, "{what}: rbd snap ls");
    };
    snaps(&[("base", false), ("other", false)], "start");

    // Rename.
    ok(
        fs::rename(dir.join("base"), dir.join("golden")),
        "mv base golden",
        &mount,
    );
    snaps(&[("golden", false), ("other", false)], "after mv");
    fails(
        fs::rename(dir.join("golden"), dir.join("other")),
        libc::EEXIST,
        "mv onto other",
        &mount,
    );
    fails(
        fs::rename(dir.join("golden"), mount.path("elsewhere")),
        libc::EXDEV,
        "mv out",
        &mount,
    );
    assert_bytes_eq(
        &ok(fs::read(dir.join("golden")), "read", &mount),
        &data,
        "renamed snapshot",
    );

    // Protect: the sticky bit and the xattr say so.
    let golden = dir.join("golden");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode();
    assert_eq!(mode(&golden) & 0o1000, 0);
    assert_eq!(xattr(&golden, Some("user.rbd.protected")).unwrap(), b"0");
    ok(
        setxattr(&golden, "user.rbd.protected", "1"),
        "protect",
        &mount,
    );
    snaps(&[("golden", true), ("other", false)], "after protect");
    assert_eq!(xattr(&golden, Some("user.rbd.protected")).unwrap(), b"1");
    assert_eq!(
        mode(&golden) & 0o1000,
        0o1000,
        "sticky bit of a protected snapshot"
    );
    fails(
        fs::remove_file(&golden),
        libc::EBUSY,
        "rm of a protected snapshot",
        &mount,
    );
    snaps(&[("golden", true), ("other", false)], "after refused rm");

    // Unprotect with a clone-v1 child: EBUSY, as `rbd snap unprotect`.
    let child = images.name("child");
    cluster.rbd(&[
        "clone",
        "--rbd-default-clone-format",
        "1",
        &format!("{}@golden", spec(&gold)),
        &spec(&child),
    ]);
    fails(
        setxattr(&golden, "user.rbd.protected", "0"),
        libc::EBUSY,
        "unprotect with a child",
        &mount,
    );
    snaps(
        &[("golden", true), ("other", false)],
        "after refused unprotect",
    );
    cluster.remove_image(&child);
    ok(
        setxattr(&golden, "user.rbd.protected", "0"),
        "unprotect",
        &mount,
    );
    snaps(&[("golden", false), ("other", false)], "after unprotect");
    ok(fs::remove_file(&golden), "rm", &mount);
    snaps(&[("other", false)], "after rm");
    drop(mount);
}

// ---------------------------------------------------------------------------
// 3. Rollback
// ---------------------------------------------------------------------------

#[test]
fn rollback_as_rbd_snap_rollback() {
    let cluster = Cluster::get();
    let mut images = Images::new(&cluster);
    let mount = Mount::new(&cluster, &[]);
    let mut rng = Rng::new();
    let (gold, data) = golden(&cluster, &mut images, &mount, &mut rng);
    // Written after the snapshot, and grown.
    let patch = rng.bytes(3 * MIB as usize);
    write_image(&mount, &gold, 6 * MIB, &patch);
    assert_eq!(cluster.image_size(&gold), 9 * MIB);
    let head = mount.path(&gold);
    // Refused while open for writing.
    let f = ok(OpenOptions::new().write(true).open(&head), "open", &mount);
    fails(
        setxattr(&head, "user.rbd.rollback", "base"),
        libc::EBUSY,
        "rollback while open",
        &mount,
    );
    drop(f);
    fails(
        setxattr(&head, "user.rbd.rollback", "nope"),
        libc::ENOENT,
        "rollback to a missing snapshot",
        &mount,
    );
    ok(
        setxattr(&head, "user.rbd.rollback", "base"),
        "rollback",
        &mount,
    );
    assert_eq!(cluster.image_size(&gold), 8 * MIB, "size after rollback");
    assert_export_eq(&cluster, &gold, &data, "rbd export after rollback");
    assert_bytes_eq(
        &ok(fs::read(&head), "read", &mount),
        &data,
        "read after rollback",
    );
    let check = cluster.rbd(&["object-map", "check", &spec(&gold)]);
    assert!(check.status.success(), "object-map check after rollback");
    drop(mount);
}

// ---------------------------------------------------------------------------
// 4. Flatten
// ---------------------------------------------------------------------------

#[test]
fn flatten_as_rbd_flatten() {
    let cluster = Cluster::get();
    let tmp = TempDir::new().unwrap();
    for setting in ["1", "2"] {
        let mut images = Images::new(&cluster);
        let mount = mount_with_clone_format(&cluster, &tmp, setting);
        let mut rng = Rng::new();
        let (gold, data) = golden(&cluster, &mut images, &mount, &mut rng);
        let vm1 = images.name("vm1");
        let base = base_snapshot(&mount, &gold);
        ok(fs::hard_link(&base, mount.path(&vm1)), "ln", &mount);
        let patch = rng.bytes(5000);
        write_image(&mount, &vm1, MIB + 1, &patch);
        let mut want = data.clone();
        want[MIB as usize + 1..][..patch.len()].copy_from_slice(&patch);
        let what = format!("flatten (clone v{setting})");
        ok(
            setxattr(&mount.path(&vm1), "user.rbd.flatten", "1"),
            &what,
            &mount,
        );
        let info = rbd_json(&cluster, &format!("info {}", spec(&vm1)));
        assert!(
            info.get("parent").is_none(),
            "{what}: rbd info still has a parent"
        );
        assert!(
            info.at("op_features").strs().is_empty(),
            "{what}: op features"
        );
        assert_export_eq(&cluster, &vm1, &want, &format!("{what}: rbd export"));
        assert_bytes_eq(
            &ok(fs::read(mount.path(&vm1)), "read", &mount),
            &want,
            &what,
        );
        let children = cluster.rbd(&["children", &format!("{}@base", spec(&gold))]);
        assert!(
            String::from_utf8_lossy(&children.stdout).trim().is_empty(),
            "{what}: rbd children"
        );
        // The parent's snapshot can now be unprotected (v1) and removed.
        let base_prot = xattr(&base, Some("user.rbd.protected")).unwrap();
        if base_prot == b"1" {
            ok(
                setxattr(&base, "user.rbd.protected", "0"),
                "unprotect",
                &mount,
            );
        }
        ok(
            fs::remove_file(&base),
            &format!("{what}: rm parent snapshot"),
            &mount,
        );
        assert!(snap_ls(&cluster, &gold).is_empty(), "{what}: rbd snap ls");
        assert_export_eq(&cluster, &vm1, &want, &format!("{what}: export after rm"));
        drop(mount);
    }
}

// ---------------------------------------------------------------------------
// 5. Partitions as files
// ---------------------------------------------------------------------------

/// Runs a local tool; panics (with rbdfs's log) unless it succeeds.
fn run(cmd: &mut Command, mount: &Mount) -> Output {
    let desc = format!("{cmd:?}");
    let out = run_timeout(cmd, Duration::from_secs(300)).unwrap_or_else(|e| panic!("{e}"));
    let st = out.status;
    assert!(
        st.success(),
        "{desc}: {st}: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        mount.log()
    );
    out
}

/// `sfdisk FILE < SCRIPT`, then what `sfdisk --json FILE` says: the
/// partitions' (number, offset, length) in bytes.
fn sfdisk(mount: &Mount, file: &Path, script: &str) -> Vec<(u32, u64, u64)> {
    let dir = TempDir::new().unwrap();
    let script_path = dir.path().join("script");
    fs::write(&script_path, script).unwrap();
    run(
        Command::new("sh")
            .args(["-c", "sfdisk -q \"$1\" < \"$2\"", "sh"])
            .arg(file)
            .arg(&script_path),
        mount,
    );
    let out = run(Command::new("sfdisk").arg("--json").arg(file), mount);
    let json = Json::parse(&String::from_utf8_lossy(&out.stdout));
    let table = json.at("partitiontable");
    let sector = table.get("sectorsize").map_or(512, |s| s.u64());
    table
        .at("partitions")
        .arr()
        .iter()
        .map(|p| {
            let node = p.at("node").str();
            let digits = node.len() - node.bytes().rev().take_while(u8::is_ascii_digit).count();
            let n: u32 = node[digits..].parse().unwrap();
            (n, p.at("start").u64() * sector, p.at("size").u64() * sector)
        })
        .collect()
}

/// A loop device over a file, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(file: &Path, read_only: bool, mount: &Mount) -> Loop {
        let mut cmd = Command::new("losetup");
        cmd.args(["-f", "--show"]);
        if read_only {
            cmd.arg("-r");
        }
        let out = run(cmd.arg(file), mount);
        Loop(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = run_timeout(
            Command::new("losetup").arg("-d").arg(&self.0),
            Duration::from_secs(30),
        );
        // The backing file is let go of asynchronously.
        let sys = format!("/sys/block/{}/loop/backing_file", &self.0[5..]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&sys).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A block file system mounted (`mount -o OPTS SOURCE`), unmounted on drop.
struct BlockMount(TempDir);

impl BlockMount {
    fn new(source: &Path, opts: &str, mount: &Mount) -> BlockMount {
        let dir = TempDir::new().unwrap();
        run(
            Command::new("mount")
                .args(["-o", opts])
                .arg(source)
                .arg(dir.path()),
            mount,
        );
        BlockMount(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

impl Drop for BlockMount {
    fn drop(&mut self) {
        let _ = run_timeout(
            Command::new("umount").arg(self.0.path()),
            Duration::from_secs(60),
        );
    }
}

fn names(dir: &Path, mount: &Mount) -> Vec<String> {
    let mut out: Vec<String> = ok(fs::read_dir(dir), &format!("ls {}", dir.display()), mount)
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    out.sort();
    out
}

/// A new image `tag` of `size` (an rbd size: "64M"), partitioned through
/// the mount by `sfdisk` with `script`; its name and partitions.
fn partitioned_image(
    cluster: &Cluster,
    images: &mut Images,
    mount: &Mount,
    tag: &str,
    size: &str,
    script: &str,
) -> (String, Vec<(u32, u64, u64)>) {
    let name = images.name(tag);
    cluster.rbd(&["create", "--size", size, &spec(&name)]);
    let parts = sfdisk(mount, &mount.path(&name), script);
    (name, parts)
}

/// Partition files equal to `rbd export`'s bytes at the offsets sfdisk
/// reports, sized as sfdisk says.
fn check_partitions(
    cluster: &Cluster,
    image: &str,
    dir: &Path,
    parts: &[(u32, u64, u64)],
    mount: &Mount,
) {
    let mut want: Vec<String> = parts.iter().map(|p| p.0.to_string()).collect();
    want.sort();
    assert_eq!(names(dir, mount), want, "{}", dir.display());
    let export = cluster.export(image);
    for &(n, offset, len) in parts {
        let p = dir.join(n.to_string());
        let meta = ok(fs::metadata(&p), "stat partition", mount);
        assert_eq!(meta.len(), len, "{}", p.display());
        let got = ok(fs::read(&p), "read partition", mount);
        assert_bytes_eq(
            &got,
            &export[offset as usize..(offset + len) as usize],
            &format!("{} against rbd export", p.display()),
        );
    }
}

#[test]
fn partitions_as_files() {
    let cluster = Cluster::get();
    let mut images = Images::new(&cluster);
    let mount = Mount::new(&cluster, &[]);
    let mut rng = Rng::new();
    let gpt = "label: gpt\n,24M,L\n,,EBD0A0A2-B9E5-4433-87C0-68B99B26599C\n";
    let (img, parts) = partitioned_image(&cluster, &mut images, &mount, "gpt", "64M", gpt);
    assert_eq!(parts.len(), 2, "{parts:?}");
    let pdir = mount.path(".part").join(&img);
    assert!(names(&mount.path(".part"), &mount).contains(&img));
    check_partitions(&cluster, &img, &pdir, &parts, &mount);
    let (p1, p2) = (pdir.join("1"), pdir.join("2"));

    // ext4 on partition 1 and vfat on partition 2, through loop devices
    // over the partition files, with files in them.
    let files = [("a", rng.bytes(3 * MIB as usize)), ("b", rng.bytes(4099))];
    {
        let lo = Loop::attach(&p1, false, &mount);
        run(Command::new("mkfs.ext4").args(["-q", &lo.0]), &mount);
        let fsm = BlockMount::new(Path::new(&lo.0), "rw", &mount);
        for (n, d) in &files {
            fs::write(fsm.path(n), d).unwrap();
        }
    }
    {
        let lo = Loop::attach(&p2, false, &mount);
        run(Command::new("mkfs.vfat").arg(&lo.0), &mount);
    }
    // mtools, not a mount: the kernel may lack vfat (containers).
    let c_txt = TempDir::new().unwrap();
    let c_src = c_txt.path().join("c.txt");
    fs::write(&c_src, &files[1].1).unwrap();
    run(
        Command::new("mcopy")
            .arg("-i")
            .arg(&p2)
            .arg(&c_src)
            .arg("::c.txt"),
        &mount,
    );
    // Nothing outside the partitions changed: the table is intact.
    check_partitions(&cluster, &img, &pdir, &parts, &mount);

    // fsck and a read-only loop mount of the partition files.
    let check = |p1: &Path, p2: &Path, what: &str| {
        run(Command::new("fsck.ext4").arg("-n").arg(p1), &mount);
        run(Command::new("fsck.vfat").arg("-n").arg(p2), &mount);
        let fsm = BlockMount::new(p1, "loop,ro", &mount);
        for (n, d) in &files {
            let got = ok(fs::read(fsm.path(n)), &format!("{what}: read {n}"), &mount);
            assert_bytes_eq(&got, d, &format!("{what}: ext4 file {n}"));
        }
        drop(fsm);
        let out = run(
            Command::new("mtype").arg("-i").arg(p2).arg("::c.txt"),
            &mount,
        );
        assert_bytes_eq(&out.stdout, &files[1].1, &format!("{what}: vfat file"));
        if fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("\tvfat\n")) {
            let fsm = BlockMount::new(p2, "loop,ro", &mount);
            let got = ok(fs::read(fsm.path("c.txt")), "read c.txt", &mount);
            assert_bytes_eq(&got, &files[1].1, &format!("{what}: vfat mount"));
        }
    };
    check(&p1, &p2, "head");

    // The same through a snapshot, which stays as it was while the head
    // changes; its partition files are read-only.
    ok(
        fs::File::create(mount.path(".snap").join(&img).join("s1")),
        "touch .snap/IMG/s1",
        &mount,
    );
    let sdir = mount.path(".part/.snap").join(&img).join("s1");
    assert_eq!(names(&sdir, &mount), ["1", "2"]);
    {
        let lo = Loop::attach(&p1, false, &mount);
        let fsm = BlockMount::new(Path::new(&lo.0), "rw", &mount);
        fs::write(fsm.path("after-snapshot"), b"x").unwrap();
    }
    let (s1, s2) = (sdir.join("1"), sdir.join("2"));
    check(&s1, &s2, "snapshot");
    {
        let fsm = BlockMount::new(&s1, "loop,ro", &mount);
        assert!(!fsm.path("after-snapshot").exists());
    }
    fails(
        OpenOptions::new().write(true).open(&s1),
        libc::EROFS,
        "open a snapshot partition for writing",
        &mount,
    );

    // Head partitions: writable within their bounds, never grown.
    let (_, _, len1) = parts[0];
    let f = ok(OpenOptions::new().write(true).open(&p2), "open p2", &mount);
    let len2 = parts[1].2;
    fails(
        f.write_at(b"abcd", len2 - 2),
        libc::ENOSPC,
        "write past a partition's end",
        &mount,
    );
    drop(f);
    assert_eq!(ok(fs::metadata(&p2), "stat", &mount).len(), len2);
    assert_eq!(ok(fs::metadata(&p1), "stat", &mount).len(), len1);

    // An MBR image.
    let dos = "label: dos\n,8M,83\n,4M,c\n,,83\n";
    let (mbr, mparts) = partitioned_image(&cluster, &mut images, &mount, "mbr", "32M", dos);
    assert_eq!(mparts.len(), 3, "{mparts:?}");
    let mdir = mount.path(".part").join(&mbr);
    write_image(&mount, &mbr, mparts[1].1, &rng.bytes(5000));
    check_partitions(&cluster, &mbr, &mdir, &mparts, &mount);

    // Repartitioned through the mount: the new table shows at once.
    let mparts = sfdisk(&mount, &mount.path(&mbr), "label: dos\n,16M,83\n");
    // (After the kernel's 1 s attribute cache.)
    std::thread::sleep(Duration::from_millis(1100));
    check_partitions(&cluster, &mbr, &mdir, &mparts, &mount);

    // A corrupt GPT (a flipped bit in the header; its CRC32 fails): no
    // partition files, and one log line however often it is looked at.
    let head = ok(
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(mount.path(&img)),
        "open",
        &mount,
    );
    let mut b = [0u8; 1];
    ok(head.read_at(&mut b, 512 + 40), "read", &mount);
    b[0] ^= 1;
    ok(
        head.write_at(&b, 512 + 40),
        "corrupt the GPT header",
        &mount,
    );
    ok(head.sync_all(), "fsync", &mount);
    drop(head);
    for _ in 0..3 {
        // (After the kernel's 1 s name cache.)
        std::thread::sleep(Duration::from_millis(1100));
        assert!(names(&pdir, &mount).is_empty(), "corrupt table listed");
        fails(fs::metadata(pdir.join("1")), libc::ENOENT, "lookup", &mount);
    }
    let log = mount.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("{img}: partition table ignored")))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}\n{log}");
    assert!(lines[0].contains("CRC32"), "{}", lines[0]);
    // The snapshot keeps its table.
    assert_eq!(names(&sdir, &mount), ["1", "2"]);
    drop(mount);
}
