//! Disk-image workflows through the filesystem, with `rbd` as the oracle:
//! clones with `ln` (clone v1 and v2), snapshot rename, protect and
//! unprotect (`user.rbd.protected`), rollback (`user.rbd.rollback`),
//! flatten (`user.rbd.flatten`).

mod common;

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
    let snap = mount.path(".snap").join(&gold).join("base");
    ok(fs::File::create(&snap), "touch .snap/gold/base", mount);
    (gold, data)
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
        let conf = conf_with_clone_format(&cluster, &tmp, setting);
        let conf_opt = format!("conf={}", conf.display());
        let mount = Mount::new(&cluster, &["-o", &conf_opt]);
        let mut rng = Rng::new();
        let (gold, data) = golden(&cluster, &mut images, &mount, &mut rng);
        let vm1 = images.name("vm1");
        let base = mount.path(".snap").join(&gold).join("base");
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
        assert_bytes_eq(
            &cluster.export(&vm1),
            &data,
            &format!("{what}: rbd export vm1"),
        );
        assert_bytes_eq(
            &cluster.export(&format!("{gold}@base")),
            &data,
            &format!("{what}: rbd export gold@base"),
        );
        // A write to the clone leaves the parent's snapshot as it was.
        let patch = rng.bytes(100_000);
        write_image(&mount, &vm1, 3 * MIB + 7, &patch);
        let mut want_vm1 = data.clone();
        want_vm1[3 * MIB as usize + 7..][..patch.len()].copy_from_slice(&patch);
        assert_bytes_eq(
            &cluster.export(&vm1),
            &want_vm1,
            &format!("{what}: vm1 after write"),
        );
        assert_bytes_eq(
            &cluster.export(&format!("{gold}@base")),
            &data,
            &format!("{what}: gold@base after the clone's write"),
        );
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
    assert_bytes_eq(&cluster.export(&gold), &data, "rbd export after rollback");
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
        let conf = conf_with_clone_format(&cluster, &tmp, setting);
        let conf_opt = format!("conf={}", conf.display());
        let mount = Mount::new(&cluster, &["-o", &conf_opt]);
        let mut rng = Rng::new();
        let (gold, data) = golden(&cluster, &mut images, &mount, &mut rng);
        let vm1 = images.name("vm1");
        let base = mount.path(".snap").join(&gold).join("base");
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
        assert_bytes_eq(&cluster.export(&vm1), &want, &format!("{what}: rbd export"));
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
        assert_bytes_eq(
            &cluster.export(&vm1),
            &want,
            &format!("{what}: export after rm"),
        );
        drop(mount);
    }
}
