//! Whole clusters: RBD namespaces (`POOL` mounts with `.ns/NAMESPACE/`,
//! `POOL/NAMESPACE` mounts), `/` mounts with a directory per rbd pool,
//! clone parents in other pools and namespaces, and CephX users limited
//! to one namespace. Each test makes its own pools and removes them; the
//! `rbd` CLI run as admin is the oracle.

mod common;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

const MIB: usize = 1 << 20;

/// A pool of the test's own, deleted (with everything in it) on drop.
/// Declare it before any `Mount` so the mount goes first.
struct TempPool {
    cluster: Cluster,
    name: String,
}

impl TempPool {
    /// A pool; `rbd pool init` (application rbd) when `rbd` is true.
    fn new(cluster: &Cluster, tag: &str, rbd: bool) -> TempPool {
        let name = unique_name(tag);
        cluster.ceph(&["osd", "pool", "create", &name, "8"]);
        let pool = TempPool {
            cluster: cluster.clone(),
            name,
        };
        if rbd {
            cluster.rbd(&["pool", "init", &pool.name]);
        }
        pool
    }

    fn namespace(&self, ns: &str) {
        self.cluster
            .rbd(&["namespace", "create", &format!("{}/{ns}", self.name)]);
    }
}

impl Drop for TempPool {
    fn drop(&mut self) {
        let _ = self.cluster.ceph(&[
            "osd",
            "pool",
            "delete",
            &self.name,
            &self.name,
            "--yes-i-really-really-mean-it",
        ]);
    }
}

fn export(cluster: &Cluster, spec: &str) -> Vec<u8> {
    cluster.rbd(&["export", "--no-progress", spec, "-"]).stdout
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn write_at(path: &Path, off: u64, data: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(data, off).unwrap();
    f.sync_all().unwrap();
}

fn snaps(cluster: &Cluster, spec: &str) -> String {
    String::from_utf8(cluster.rbd(&["snap", "ls", spec]).stdout).unwrap()
}

#[test]
fn pool_mount_shows_each_namespace_under_ns() {
    let cluster = Cluster::get();
    let mut rng = Rng::new();
    let pool = TempPool::new(&cluster, "nsp", true);
    let p = pool.name.clone();
    pool.namespace("t1");
    pool.namespace("t2");
    let top = rng.bytes(3 * MIB);
    let a1 = rng.bytes(5 * MIB);
    let a2 = rng.bytes(2 * MIB);
    cluster.import_to(&format!("{p}/top"), &top);
    cluster.import_to(&format!("{p}/t1/a"), &a1);
    cluster.import_to(&format!("{p}/t2/a"), &a2);
    cluster.rbd(&["snap", "create", &format!("{p}/t1/a@s1")]);
    // After the snapshot: the head and s1 differ.
    let tail = rng.bytes(MIB);
    let mut a1_head = a1.clone();
    a1_head[..MIB].copy_from_slice(&tail);
    bench_write(&cluster, &format!("{p}/t2/a"), 4096);
    let a2_head = export(&cluster, &format!("{p}/t2/a"));

    let m = Mount::with_pool(&cluster, &[], &p);
    assert_eq!(names(m.dir()), [".diff", ".ns", ".part", ".snap", "top"]);
    let ns = m.path(".ns");
    assert_eq!(names(&ns), ["t1", "t2"]);
    assert_eq!(names(&ns.join("t1")), [".diff", ".part", ".snap", "a"]);
    assert_bytes_eq(&fs::read(m.path("top")).unwrap(), &top, "top");
    assert_bytes_eq(&fs::read(ns.join("t1/a")).unwrap(), &a1, "t1/a");
    assert_bytes_eq(&fs::read(ns.join("t2/a")).unwrap(), &a2_head, "t2/a");
    assert_bytes_eq(&fs::read(ns.join("t1/.snap/a/s1")).unwrap(), &a1, "t1/a@s1");
    assert_eq!(names(&ns.join("t1/.snap/a")), ["s1"]);

    // Writes through each path land in their namespace.
    write_at(&ns.join("t1/a"), 0, &tail);
    let mut top2 = top.clone();
    top2[MIB..MIB + 4096].copy_from_slice(&tail[..4096]);
    write_at(&m.path("top"), MIB as u64, &tail[..4096]);
    assert_bytes_eq(
        &export(&cluster, &format!("{p}/t1/a")),
        &a1_head,
        "export t1/a",
    );
    assert_bytes_eq(
        &export(&cluster, &format!("{p}/t1/a@s1")),
        &a1,
        "export t1/a@s1",
    );
    assert_bytes_eq(&export(&cluster, &format!("{p}/top")), &top2, "export top");
    assert_bytes_eq(
        &export(&cluster, &format!("{p}/t2/a")),
        &a2_head,
        "t2/a unchanged",
    );

    // A snapshot made in .ns/t1/.snap/a is rbd's.
    fs::File::create(ns.join("t1/.snap/a/made-here")).unwrap();
    assert!(snaps(&cluster, &format!("{p}/t1/a")).contains("made-here"));
    assert_bytes_eq(
        &fs::read(ns.join("t1/.snap/a/made-here")).unwrap(),
        &a1_head,
        "made-here",
    );
    fs::remove_file(ns.join("t1/.snap/a/made-here")).unwrap();
    assert!(!snaps(&cluster, &format!("{p}/t1/a")).contains("made-here"));

    // Create, rename, remove inside a namespace; EXDEV across.
    fs::write(ns.join("t2/new"), b"hello").unwrap();
    fs::rename(ns.join("t2/new"), ns.join("t2/newer")).unwrap();
    assert_eq!(&export(&cluster, &format!("{p}/t2/newer"))[..5], b"hello");
    let e = fs::rename(ns.join("t2/newer"), ns.join("t1/newer")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EXDEV));
    let e = fs::rename(ns.join("t2/newer"), m.path("newer")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EXDEV));
    fs::remove_file(ns.join("t2/newer")).unwrap();
    let ls = String::from_utf8(cluster.rbd(&["ls", &format!("{p}/t2")]).stdout).unwrap();
    assert!(!ls.contains("newer"), "{ls}");
    // statfs inside a namespace works (the pool's figures).
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%b"])
        .arg(ns.join("t1"))
        .output()
        .unwrap();
    assert!(out.status.success());
    drop(m);
}

#[test]
fn namespace_and_cluster_mounts() {
    let cluster = Cluster::get();
    let pool = TempPool::new(&cluster, "nsq", true);
    let plain = TempPool::new(&cluster, "nsraw", false);
    let p = pool.name.clone();
    pool.namespace("t1");
    cluster.rbd(&["create", "--size", "4M", &format!("{p}/t1/a")]);
    cluster.rbd(&["create", "--size", "4M", &format!("{p}/t1/b")]);
    cluster.rbd(&["create", "--size", "4M", &format!("{p}/d")]);

    // POOL/NAMESPACE: the namespace only, no .ns.
    {
        let m = Mount::with_pool(&cluster, &[], &format!("{p}/t1"));
        assert_eq!(names(m.dir()), [".diff", ".part", ".snap", "a", "b"]);
        write_at(&m.path("b"), 4096, b"in t1");
        assert_eq!(
            &export(&cluster, &format!("{p}/t1/b"))[4096..4101],
            b"in t1"
        );
    }
    // --image of a namespace.
    {
        let m = Mount::with_pool(&cluster, &["--image", "a"], &format!("{p}/t1"));
        assert_eq!(names(m.dir()), [".diff", ".part", ".snap", "a"]);
    }

    // /: every rbd pool, not the others; pools come and go.
    let m = Mount::with_pool(&cluster, &[], "/");
    let root = names(m.dir());
    assert!(root.contains(&p), "{root:?}");
    assert!(root.contains(&"rbd".to_string()), "{root:?}");
    assert!(!root.contains(&plain.name), "{root:?}");
    assert_eq!(names(&m.path(&p)), [".diff", ".ns", ".part", ".snap", "d"]);
    assert_eq!(names(&m.path(&p).join(".ns")), ["t1"]);
    assert_eq!(
        &fs::read(m.path(&p).join(".ns/t1/b")).unwrap()[4096..4101],
        b"in t1"
    );
    write_at(&m.path(&p).join("d"), 0, b"via /");
    assert_eq!(&export(&cluster, &format!("{p}/d"))[..5], b"via /");
    let e = fs::rename(m.path(&p).join("d"), m.path("rbd").join("d")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EXDEV));
    let late = TempPool::new(&cluster, "nslate", true);
    assert!(names(m.dir()).contains(&late.name));
    let late_name = late.name.clone();
    drop(late);
    let deadline = Instant::now() + Duration::from_secs(30);
    while names(m.dir()).contains(&late_name) {
        assert!(Instant::now() < deadline, "deleted pool still listed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%b"])
        .arg(m.dir())
        .output()
        .unwrap();
    assert!(out.status.success());
    drop(m);
}

#[test]
fn clone_parents_in_other_pools_and_namespaces() {
    let cluster = Cluster::get();
    let mut rng = Rng::new();
    let a = TempPool::new(&cluster, "nsca", true);
    let b = TempPool::new(&cluster, "nscb", true);
    a.namespace("t1");
    let (pa, pb) = (a.name.clone(), b.name.clone());
    let pdata = rng.bytes(8 * MIB);
    cluster.import_to(&format!("{pa}/parent"), &pdata);
    cluster.rbd(&["snap", "create", &format!("{pa}/parent@base")]);
    cluster.rbd(&["snap", "protect", &format!("{pa}/parent@base")]);
    let children = [
        (format!("{pb}/c1"), "1"),
        (format!("{pb}/c2"), "2"),
        (format!("{pa}/t1/c2"), "2"),
    ];
    for (child, format) in &children {
        cluster.rbd(&[
            "clone",
            "--rbd-default-clone-format",
            format,
            &format!("{pa}/parent@base"),
            child,
        ]);
    }
    // The parent's head moves on: the children must read the snapshot.
    bench_write(&cluster, &format!("{pa}/parent"), MIB);

    let m = Mount::with_pool(&cluster, &[], "/");
    let path = |spec: &str| -> PathBuf {
        let parts: Vec<&str> = spec.split('/').collect();
        match parts.as_slice() {
            [pool, img] => m.path(pool).join(img),
            [pool, ns, img] => m.path(pool).join(".ns").join(ns).join(img),
            _ => unreachable!(),
        }
    };
    for (i, (child, _)) in children.iter().enumerate() {
        assert_bytes_eq(&fs::read(path(child)).unwrap(), &pdata, child);
        // First write to an object copies the parent's data up.
        let patch = rng.bytes(10_000);
        let off = (i as u64 + 1) * MIB as u64 + 1234;
        write_at(&path(child), off, &patch);
        let mut want = pdata.clone();
        want[off as usize..off as usize + patch.len()].copy_from_slice(&patch);
        assert_bytes_eq(&fs::read(path(child)).unwrap(), &want, child);
        assert_bytes_eq(&export(&cluster, child), &want, &format!("export {child}"));
    }
    assert_bytes_eq(
        &export(&cluster, &format!("{pa}/parent@base")),
        &pdata,
        "parent@base",
    );
    // Removing the clone-v2 child in the namespace detaches it from the
    // parent snapshot (child_detach names pool, namespace and id).
    fs::remove_file(path(&children[2].0)).unwrap();
    let left = String::from_utf8(
        cluster
            .rbd(&["children", &format!("{pa}/parent@base")])
            .stdout,
    )
    .unwrap();
    assert!(!left.contains("t1/c2"), "{left}");
    assert!(left.contains(&format!("{pb}/c2")), "{left}");
    drop(m);
    for (child, _) in &children[..2] {
        cluster.rbd(&["rm", "--no-progress", child]);
    }
    cluster.rbd(&["snap", "unprotect", &format!("{pa}/parent@base")]);
}

/// Writes the first `len` bytes of an image with `rbd bench` (its own
/// data): the head moves on from its snapshots.
fn bench_write(cluster: &Cluster, spec: &str, len: usize) {
    cluster.rbd(&[
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "4K",
        "--io-total",
        &len.to_string(),
        "--io-pattern",
        "seq",
        spec,
    ]);
}

#[test]
fn user_limited_to_one_namespace() {
    let cluster = Cluster::get();
    let mut rng = Rng::new();
    let pool = TempPool::new(&cluster, "nsu", true);
    let p = pool.name.clone();
    pool.namespace("t1");
    pool.namespace("t2");
    let data = rng.bytes(2 * MIB);
    cluster.import_to(&format!("{p}/t1/a"), &data);
    cluster.rbd(&["create", "--size", "1M", &format!("{p}/t2/other")]);
    let user = CephxUser::new(
        &cluster,
        "nsuser",
        &format!("profile rbd pool={p} namespace=t1"),
    );
    let args = user.mount_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    {
        let m = Mount::with_pool(&cluster, &args, &format!("{p}/t1"));
        assert_eq!(names(m.dir()), [".diff", ".part", ".snap", "a"]);
        assert_bytes_eq(&fs::read(m.path("a")).unwrap(), &data, "read");
        write_at(&m.path("a"), 4096, b"user wrote");
        fs::File::create(m.path(".snap/a/by-user")).unwrap();
        fs::write(m.path("new"), b"created").unwrap();
        assert_eq!(names(m.dir()), [".diff", ".part", ".snap", "a", "new"]);
        fs::remove_file(m.path("new")).unwrap();
        assert_eq!(names(m.dir()), [".diff", ".part", ".snap", "a"]);
    }
    assert_eq!(
        &export(&cluster, &format!("{p}/t1/a"))[4096..4106],
        b"user wrote"
    );
    assert!(snaps(&cluster, &format!("{p}/t1/a")).contains("by-user"));
    assert_bytes_eq(
        &export(&cluster, &format!("{p}/t1/a@by-user"))[..4096],
        &data[..4096],
        "snap",
    );

    // The pool (its default namespace, the namespace list) is not this
    // user's: a clear error, at once.
    let dir = MountDir::new();
    let started = Instant::now();
    let mut all: Vec<&str> = vec!["mount", "-f", "-c", cluster.conf().to_str().unwrap()];
    all.extend(&args);
    all.push(&p);
    all.push(dir.mnt.to_str().unwrap());
    let mut child = spawn_rbdfs(&all, &dir.log, false);
    let st = wait_or_kill(&mut child, Duration::from_secs(60), "rbdfs mount", &dir.log);
    assert!(!st.success());
    let log = log_text(&dir.log);
    assert!(
        log.contains(&format!("permission denied for pool '{p}'")),
        "{log}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));

    // A `/` mount by this user leaves out what it may not read.
    let m = Mount::with_pool(&cluster, &args, "/");
    let root = names(m.dir());
    assert!(!root.contains(&p), "{root:?}");
    assert!(m.log().contains("permission denied"), "{}", m.log());
    drop(m);
    cluster.rbd(&["snap", "purge", "--no-progress", &format!("{p}/t1/a")]);
}

/// `ln` across the tree: a clone of a snapshot in the pool's default
/// namespace, made in `.ns/t1/` (clone format 2), reads as the snapshot and
/// copies up on write; clone format 1 cannot cross namespaces (as `rbd
/// clone` refuses it), and nothing is left behind.
#[test]
fn ln_clones_into_another_namespace() {
    let cluster = Cluster::get();
    let mut rng = Rng::new();
    let pool = TempPool::new(&cluster, "nsln", true);
    let p = pool.name.clone();
    pool.namespace("t1");
    let data = rng.bytes(3 * MIB + 5);
    cluster.import_to(&format!("{p}/gold"), &data);
    cluster.rbd(&["snap", "create", &format!("{p}/gold@base")]);
    let tmp = tempfile::tempdir().unwrap();
    for (format, works) in [("2", true), ("1", false)] {
        let text = fs::read_to_string(cluster.conf()).unwrap().replacen(
            "[global]\n",
            &format!("[global]\nrbd default clone format = {format}\n"),
            1,
        );
        let conf = tmp.path().join(format!("clone-{format}.conf"));
        fs::write(&conf, text).unwrap();
        let conf_opt = format!("conf={}", conf.display());
        let mount = Mount::with_pool(&cluster, &["-o", &conf_opt], &p);
        let base = mount.path(".snap").join("gold").join("base");
        let child = format!("child{format}");
        let child_path = mount.path(".ns").join("t1").join(&child);
        let r = fs::hard_link(&base, &child_path);
        if !works {
            assert_errno(
                r,
                &[libc::EOPNOTSUPP, libc::EXDEV],
                "clone v1 across namespaces",
            );
            drop(mount);
            let ls = String::from_utf8(cluster.rbd(&["ls", &format!("{p}/t1")]).stdout).unwrap();
            assert!(!ls.contains(&child), "a refused clone left {child}: {ls}");
            continue;
        }
        r.unwrap_or_else(|e| panic!("ln into .ns/t1: {e}\n{}", mount.log()));
        let info =
            String::from_utf8(cluster.rbd(&["info", &format!("{p}/t1/{child}")]).stdout).unwrap();
        assert!(
            info.contains(&format!("parent: {p}/gold@base")),
            "rbd info of the clone: {info}"
        );
        assert_bytes_eq(&fs::read(&child_path).unwrap(), &data, "clone reads");
        write_at(&child_path, 0, b"changed");
        drop(mount);
        let mut want = data.clone();
        want[..7].copy_from_slice(b"changed");
        assert_bytes_eq(
            &export(&cluster, &format!("{p}/t1/{child}")),
            &want,
            "rbd export of the clone",
        );
        assert_bytes_eq(
            &export(&cluster, &format!("{p}/gold@base")),
            &data,
            "the parent snapshot after the clone's write",
        );
    }
}
