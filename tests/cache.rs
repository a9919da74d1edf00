//! The write-back cache seen from outside, on the real cluster and a real
//! FUSE mount: dirty data reaches RADOS exactly when it was promised
//! (fsync, close, snapshot creation, the end of the FUSE session), a failed
//! write-back reaches the next fsync/close, the cache stays within its bound
//! (its own accounting and the process's peak RSS), sequential readers get
//! prefetch and random readers do not, and a head and its snapshot read
//! concurrently never see each other's bytes. `rbd export` is the oracle.

mod common;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use rbdfs::cache::{Cache, CacheConfig};
use rbdfs::image::Image;
use rbdfs::store::rados::RadosPool;
use rbdfs::store::{NOSNAP, ObjectStore};

const MIB: u64 = 1 << 20;

/// Dirty data is never written back for its age in these mounts: only the
/// event under test may write it back.
const HOLD: &str = "cache_max_dirty_age=3600";

/// The tests of this file run one at a time. A test that holds dirty data
/// in an open file must not see another thread of this process spawn a
/// command: the child gets a copy of every descriptor, and its close
/// (exec or exit) flushes the file.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The mount's cache counters (`user.rbdfs.cache` on the mount root).
fn cache_stats(mount: &Mount) -> HashMap<String, u64> {
    let raw = xattr(mount.dir(), Some("user.rbdfs.cache"))
        .unwrap_or_else(|e| panic!("getxattr user.rbdfs.cache: {e}\n{}", mount.log()));
    let text = String::from_utf8(raw).unwrap();
    text.split_whitespace()
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("bad stat {kv}"));
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

/// Peak resident memory (VmHWM) of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/PID/status");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

/// What RADOS holds of the head, read in this process with the cache off.
/// No child process (`rbd export`) while a file of the mount is open: the
/// fork gets a copy of the descriptor, and its close flushes the file.
fn assert_on_rados(pool: &Arc<RadosPool>, name: &str, off: u64, want: &[u8], what: &str) {
    let cache = Cache::new(CacheConfig {
        capacity: 0,
        workers: 1,
        ..Default::default()
    });
    let image = Image::open(pool.clone(), &cache, name).expect("open image in-process");
    let got = image.read(NOSNAP, off, want.len() as u64).unwrap();
    assert_bytes_eq(&got, want, what);
}

fn assert_exported(cluster: &Cluster, spec_name: &str, off: u64, want: &[u8], what: &str) {
    let all = cluster.export(spec_name);
    assert_bytes_eq(&all[off as usize..off as usize + want.len()], want, what);
}

/// The fusectl directory of the mount's connection (mounting fusectl if
/// needed), whose `abort` file ends the FUSE session at once.
fn fuse_connection(mount: &Mount) -> std::path::PathBuf {
    let base = Path::new("/sys/fs/fuse/connections");
    let dev = fs::metadata(mount.dir()).unwrap().dev();
    let minor = libc::minor(dev);
    let dir = base.join(minor.to_string());
    if !dir.exists() {
        let out = Command::new("mount")
            .args(["-t", "fusectl", "fusectl"])
            .arg(base)
            .output()
            .unwrap();
        assert!(
            out.status.success() || dir.exists(),
            "mount fusectl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(dir.join("abort").exists(), "no {}", dir.display());
    dir
}

/// Write-back happens on fsync, on close, before a snapshot is taken, and
/// when the FUSE session ends with dirty data still held; not before.
#[test]
fn write_back_on_fsync_close_snapshot_and_session_end() {
    let _serial = serial();
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let mut purge = SnapPurge::new(&cluster);
    let name = purge.add(scratch.name("wb"));
    cluster.create_v1_image(&name, 32 * MIB, 22);
    let mut rng = Rng::new();
    let zeros = vec![0u8; 64 << 10];
    let (_rados, pool) = cluster.librados();

    let mut mount = Mount::new(&cluster, &["-o", HOLD]);
    let path = mount.path(&name);
    // Mounts fusectl if needed: a child process, so before any file is open.
    let conn = fuse_connection(&mount);

    // fsync.
    let a = rng.bytes(64 << 10);
    let f = open_rw(&path);
    f.write_all_at(&a, MIB + 17).unwrap();
    // Acknowledged but not yet promised: the cache holds it (this is what
    // makes it a write-back cache), and a read through the mount sees it.
    assert_on_rados(&pool, &name, MIB + 17, &zeros, "before fsync");
    assert_bytes_eq(
        &read_full_at(&f, MIB + 17, a.len()).unwrap(),
        &a,
        "read of dirty data",
    );
    f.sync_all()
        .unwrap_or_else(|e| panic!("fsync: {e}\n{}", mount.log()));
    assert_exported(&cluster, &name, MIB + 17, &a, "after fsync");

    // close.
    let b = rng.bytes(64 << 10);
    f.write_all_at(&b, 5 * MIB + 3).unwrap();
    assert_on_rados(&pool, &name, 5 * MIB + 3, &zeros, "before close");
    drop(f);
    assert_exported(&cluster, &name, 5 * MIB + 3, &b, "after close");

    // Snapshot creation (through the mount) takes what was written before
    // it, while the file is still open.
    let c = rng.bytes(64 << 10);
    let f = open_rw(&path);
    f.write_all_at(&c, 9 * MIB).unwrap();
    assert_on_rados(&pool, &name, 9 * MIB, &zeros, "before snapshot");
    let snap_file = mount.dir().join(".snap").join(&name).join("s1");
    File::create(&snap_file).unwrap_or_else(|e| {
        panic!(
            "create snapshot {}: {e}\n{}",
            snap_file.display(),
            mount.log()
        )
    });
    assert_exported(&cluster, &format!("{name}@s1"), 9 * MIB, &c, "snapshot");
    assert_exported(&cluster, &name, 9 * MIB, &c, "head after snapshot");

    // The session ends (connection aborted) while dirty data is held and
    // the file is still open: rbdfs writes it back before it exits.
    let d = rng.bytes(64 << 10);
    f.write_all_at(&d, 13 * MIB + 5).unwrap();
    assert_on_rados(&pool, &name, 13 * MIB + 5, &zeros, "before session end");
    fs::write(conn.join("abort"), "1").unwrap();
    let st = mount.signal_and_wait(libc::SIGTERM, Duration::from_secs(60));
    drop(f);
    let _ = unmount(mount.dir());
    assert!(
        st.success(),
        "rbdfs exit after abort: {st}\n{}",
        mount.log()
    );
    assert_exported(&cluster, &name, 13 * MIB + 5, &d, "after session end");
    // Nothing else changed.
    let all = cluster.export(&name);
    let mut want = vec![0u8; 32 * MIB as usize];
    for (off, data) in [
        (MIB + 17, &a),
        (5 * MIB + 3, &b),
        (9 * MIB, &c),
        (13 * MIB + 5, &d),
    ] {
        want[off as usize..off as usize + data.len()].copy_from_slice(data);
    }
    assert_bytes_eq(&all, &want, "whole image");
}

/// Removes a blocklist entry when the test ends, passing or not.
struct Unblock<'a>(&'a Cluster, String);

impl Drop for Unblock<'_> {
    fn drop(&mut self) {
        self.0.ceph(&["osd", "blocklist", "rm", &self.1]);
    }
}

/// rbdfs's client address, from the watchers of a format-1 header.
fn watcher_address(cluster: &Cluster, name: &str) -> String {
    let out = cluster.rados(&["listwatchers", &format!("{name}.rbd")]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // "watcher=127.0.0.1:0/3719276 client.4171 cookie=1"
    let addrs: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("watcher="))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(addrs.len(), 1, "watchers of {name}: {text}");
    addrs[0].to_string()
}

/// A write-back that fails (this client was blocklisted, as a peer that
/// broke our lock would do) is reported to the next fsync, or to close,
/// never swallowed; and once.
#[test]
fn failed_write_back_reaches_fsync_and_close() {
    let _serial = serial();
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let (a, b) = (scratch.name("wbfail-a"), scratch.name("wbfail-b"));
    cluster.create_v1_image(&a, 16 * MIB, 22);
    cluster.create_v1_image(&b, 16 * MIB, 22);
    let mut rng = Rng::new();

    let (_rados, pool) = cluster.librados();

    let mut mount = Mount::new(&cluster, &["-o", &format!("{HOLD},rados_timeout=20")]);
    // stat opens (and watches) both images; the address is found, by a
    // child process, before any file is open (see `assert_on_rados`).
    fs::metadata(mount.path(&a)).unwrap();
    fs::metadata(mount.path(&b)).unwrap();
    let addr = watcher_address(&cluster, &a);
    let _unblock = Unblock(&cluster, addr.clone());

    let (fa, fb) = (open_rw(&mount.path(&a)), open_rw(&mount.path(&b)));
    fa.write_all_at(&rng.bytes(8192), 4096).unwrap();
    fb.write_all_at(&rng.bytes(8192), 4096).unwrap();
    fa.sync_all().unwrap();
    fb.sync_all().unwrap();
    // Acknowledged into the cache, not yet on RADOS.
    fa.write_all_at(&rng.bytes(8192), MIB).unwrap();
    fb.write_all_at(&rng.bytes(8192), 2 * MIB).unwrap();
    // In this process: a child would close (flush) our files.
    ObjectStore::blocklist_add(&*pool, &addr, 3600).expect("blocklist rbdfs");
    // The monitor has committed it; give the OSD a moment to get the map
    // (an op that reaches it first still succeeds).
    thread::sleep(Duration::from_secs(3));

    let err = fa.sync_all().expect_err("fsync after a failed write-back");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "fsync: {err}");
    // Reported once, as the kernel does for a file's write-back errors.
    fa.sync_all()
        .expect("the same error reported to a second fsync");

    // SAFETY: into_raw_fd gives up the File's ownership, so this close is
    // the descriptor's only one.
    let r = unsafe { libc::close(std::os::unix::io::IntoRawFd::into_raw_fd(fb)) };
    let close_err = io::Error::last_os_error();
    assert_eq!(r, -1, "close after a failed write-back succeeded");
    assert_eq!(
        close_err.raw_os_error(),
        Some(libc::EIO),
        "close: {close_err}"
    );

    let log = mount.log();
    assert!(
        log.contains("data lost: write-back of bytes"),
        "no error line naming the lost bytes:\n{log}"
    );
    drop(fa);
    // Nothing is left to write back; rbdfs must still end when asked (its
    // exit status is not the point here: the client is blocklisted).
    let _ = mount.signal_and_wait(libc::SIGTERM, Duration::from_secs(90));
}

/// Heavy sequential and random I/O through a small cache: the cache's own
/// accounting never passes its capacity, the process's peak RSS stays
/// within capacity + 48 MiB (issue 17's bound), sequential reads are served by prefetch and
/// random reads start none, and every byte matches `rbd export`.
#[test]
fn cache_stays_within_its_bound() {
    let _serial = serial();
    let cluster = Cluster::get();
    const CACHE_MIB: u64 = 16;
    const SIZE: u64 = 192 * MIB;
    let mut scratch = Scratch::new(&cluster);
    let name = scratch.name("bound");
    cluster.create_v1_image(&name, SIZE, 22);
    let mut rng = Rng::new();

    let mount = Mount::new(&cluster, &["-o", &format!("cache_size={CACHE_MIB}")]);
    let path = mount.path(&name);

    // Sequential write of the whole image, 1 MiB at a time.
    let data = Arc::new(rng.bytes(SIZE as usize));
    let f = open_rw(&path);
    for (i, chunk) in data.chunks(MIB as usize).enumerate() {
        f.write_all_at(chunk, i as u64 * MIB)
            .unwrap_or_else(|e| panic!("write {i}: {e}\n{}", mount.log()));
    }
    f.sync_all().unwrap();
    drop(f);

    // Two sequential readers and a random reader at once.
    let before_random = {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (path, data) = (path.clone(), data.clone());
                thread::spawn(move || {
                    let mut f = File::open(&path).unwrap();
                    let mut got = Vec::with_capacity(SIZE as usize);
                    f.read_to_end(&mut got).unwrap();
                    assert_bytes_eq(&got, &data, "sequential read");
                })
            })
            .collect();
        for r in readers {
            r.join().unwrap();
        }
        cache_stats(&mount)
    };
    assert!(
        before_random["prefetched"] > 0 && before_random["joined"] > 0,
        "sequential reads got no prefetch: {before_random:?}"
    );

    // Random 4 KiB reads never start a prefetch.
    let f = File::open(&path).unwrap();
    for _ in 0..2000 {
        let off = rng.below(SIZE - 4096);
        let got = read_full_at(&f, off, 4096).unwrap();
        assert_bytes_eq(
            &got,
            &data[off as usize..off as usize + 4096],
            "random read",
        );
    }
    let after_random = cache_stats(&mount);
    assert_eq!(
        after_random["prefetched"], before_random["prefetched"],
        "random reads started a prefetch"
    );

    // Random 4 KiB writes over the whole image, checked by export.
    let f = open_rw(&path);
    let mut want = data.to_vec();
    for _ in 0..4000 {
        let off = rng.below(SIZE / 4096) * 4096;
        let block = rng.bytes(4096);
        f.write_all_at(&block, off).unwrap();
        want[off as usize..off as usize + 4096].copy_from_slice(&block);
    }
    f.sync_all().unwrap();
    drop(f);
    assert_bytes_eq(&cluster.export(&name), &want, "export after random writes");

    let stats = cache_stats(&mount);
    let capacity = CACHE_MIB * MIB;
    assert_eq!(stats["capacity"], capacity, "{stats:?}");
    assert!(
        stats["peak"] <= capacity,
        "cache held {} bytes, capacity {capacity}: {stats:?}",
        stats["peak"]
    );
    assert_eq!(stats["dirty"], 0, "dirty after fsync: {stats:?}");
    let rss = peak_rss(mount.pid());
    assert!(
        rss <= capacity + 48 * MIB,
        "peak RSS {} MiB > cache {CACHE_MIB} MiB + 48 MiB ({stats:?})",
        rss >> 20
    );
    eprintln!("peak RSS {} MiB, cache {stats:?}", rss >> 20);
}

/// The head and a snapshot of the same image, read at once by several
/// readers each (their cached objects share one budget and one prefetcher
/// per image), never show each other's bytes; nor does a writer on the
/// head disturb the snapshot.
fn head_and_snapshot_concurrently(format2: bool) {
    let _serial = serial();
    let cluster = Cluster::get();
    const SIZE: u64 = 48 * MIB;
    let mut scratch = Scratch::new(&cluster);
    let mut purge = SnapPurge::new(&cluster);
    let name = purge.add(scratch.name(if format2 { "hs2" } else { "hs1" }));
    let mut rng = Rng::new();
    let old = Arc::new(rng.bytes(SIZE as usize));
    if format2 {
        import_v2(&cluster, &name, &old);
    } else {
        cluster.import_v1(&name, &old, 22);
    }
    cluster.rbd(&["snap", "create", &spec(&format!("{name}@before"))]);

    let mount = Mount::new(&cluster, &["-o", "cache_size=32"]);
    let head = mount.path(&name);
    let snap = mount.dir().join(".snap").join(&name).join("before");
    let new = Arc::new(rng.bytes(SIZE as usize));
    {
        let f = open_rw(&head);
        f.write_all_at(&new, 0).unwrap();
        f.sync_all().unwrap();
    }

    let mut workers = Vec::new();
    for round in 0..2 {
        for (path, want, what) in [
            (head.clone(), new.clone(), "head"),
            (snap.clone(), old.clone(), "snapshot"),
        ] {
            workers.push(thread::spawn(move || {
                for pass in 0..2 {
                    let mut f = File::open(&path).unwrap();
                    let mut got = Vec::with_capacity(SIZE as usize);
                    f.read_to_end(&mut got).unwrap();
                    assert_bytes_eq(&got, &want, &format!("{what} reader {round} pass {pass}"));
                }
            }));
        }
    }
    // Meanwhile a writer rewrites the head's first 8 MiB with its own bytes.
    {
        let f = open_rw(&head);
        for i in 0..8 {
            let chunk = &new[(i * MIB) as usize..((i + 1) * MIB) as usize];
            f.write_all_at(chunk, i * MIB).unwrap();
        }
        f.sync_all().unwrap();
    }
    for w in workers {
        w.join()
            .unwrap_or_else(|_| panic!("a reader failed\n{}", mount.log()));
    }
    assert_bytes_eq(&cluster.export(&name), &new, "head export");
    assert_bytes_eq(
        &cluster.export(&format!("{name}@before")),
        &old,
        "snapshot export",
    );
}

#[test]
fn head_and_snapshot_read_concurrently_format1() {
    head_and_snapshot_concurrently(false);
}

#[test]
fn head_and_snapshot_read_concurrently_format2() {
    head_and_snapshot_concurrently(true);
}

/// 8 MiB of random 64 KiB writes by librbd (`rbd bench`), which takes the
/// exclusive lock from rbdfs if rbdfs holds it.
fn librbd_writes(cluster: &Cluster, name: &str) {
    cluster.rbd(&[
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "64K",
        "--io-threads",
        "4",
        "--io-total",
        "8M",
        "--io-pattern",
        "rand",
        &spec(name),
    ]);
}

/// A format-2 image with exclusive-lock written by librbd (`rbd bench`)
/// between rbdfs's reads: rbdfs never serves what it cached before the
/// other client wrote. Reading without the lock, only read-ahead is kept,
/// for a second at most; after rbdfs wrote (taking the lock) and handed
/// the lock to `rbd bench`, nothing it cached is kept.
#[test]
fn another_clients_writes_are_seen() {
    let _serial = serial();
    let cluster = Cluster::get();
    const SIZE: u64 = 24 * MIB;
    let mut scratch = Scratch::new(&cluster);
    let name = scratch.name("other");
    let mut rng = Rng::new();
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, &rng.bytes(SIZE as usize)).unwrap();
    cluster.rbd(&[
        "import",
        "--no-progress",
        "--image-format",
        "2",
        "--object-size",
        "1M",
        "--image-feature",
        "layering,exclusive-lock,object-map,fast-diff",
        f.path().to_str().unwrap(),
        &spec(&name),
    ]);
    let mount = Mount::new(&cluster, &[]);
    let path = mount.path(&name);
    let read_all = || {
        let mut got = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut got).unwrap();
        got
    };

    // Reader only: sequential reads with read-ahead, then librbd writes.
    assert_bytes_eq(&read_all(), &cluster.export(&name), "first read");
    librbd_writes(&cluster, &name);
    thread::sleep(Duration::from_millis(1200));
    assert_bytes_eq(
        &read_all(),
        &cluster.export(&name),
        "after rbd bench, reader",
    );

    // Writer: rbdfs takes the lock and caches; rbd bench takes it over.
    {
        let f = open_rw(&path);
        f.write_all_at(&rng.bytes(MIB as usize), 3 * MIB).unwrap();
        f.sync_all().unwrap();
    }
    assert_bytes_eq(&read_all(), &cluster.export(&name), "after our write");
    librbd_writes(&cluster, &name);
    // No sleep: nothing read while we held the lock may be kept.
    assert_bytes_eq(
        &read_all(),
        &cluster.export(&name),
        "after rbd bench, writer",
    );
}

/// `rbd snap create` by another client gets what rbdfs acknowledged (as
/// librbd flushes its own cache): without exclusive-lock, rbdfs writes back
/// when `rbd` quiesces it; with it, rbdfs took the lock at the write and
/// writes back when `rbd` asks for the lock.
fn snapshot_by_another_client(features: &str) {
    let _serial = serial();
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let mut purge = SnapPurge::new(&cluster);
    let name = purge.add(scratch.name("quiesce"));
    cluster.rbd(&[
        "create",
        "--size",
        "16M",
        "--image-feature",
        features,
        &spec(&name),
    ]);
    let (_rados, pool) = cluster.librados();
    let mount = Mount::new(&cluster, &["-o", HOLD]);
    let path = mount.path(&name);
    // The writer is a process of its own (perl, which Debian always has),
    // and this process holds no descriptor of the file: `rbd snap create`
    // below must not get a copy whose close would flush the file (see
    // `SERIAL`), and the writer itself must not dup or close it (a shell's
    // redirections do both).
    let mut writer = Command::new("perl")
        .arg("-e")
        .arg(
            r#"open(my $f, "+<", $ARGV[0]) or die "open: $!";
               syswrite($f, " " x 65536) == 65536 or die "write: $!";
               $| = 1; print "written\n"; <STDIN>;"#,
        )
        .arg(&path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn perl");
    let mut line = String::new();
    io::BufRead::read_line(
        &mut io::BufReader::new(writer.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "written", "writer: {line:?}\n{}", mount.log());
    let spaces = vec![b' '; 65536];
    assert_on_rados(&pool, &name, 0, &vec![0u8; 65536], "before the snapshot");

    cluster.rbd(&["snap", "create", &spec(&format!("{name}@theirs"))]);
    assert_exported(
        &cluster,
        &format!("{name}@theirs"),
        0,
        &spaces,
        "their snapshot",
    );

    drop(writer.stdin.take());
    let st = writer.wait().unwrap();
    assert!(st.success(), "writer: {st}");
    assert_exported(&cluster, &name, 0, &spaces, "head");
}

#[test]
fn snapshot_by_another_client_takes_acknowledged_writes() {
    snapshot_by_another_client("layering");
}

#[test]
fn snapshot_by_another_client_takes_acknowledged_writes_exclusive_lock() {
    snapshot_by_another_client("layering,exclusive-lock,object-map,fast-diff");
}

/// Imports `data` as a format-2 image with rbd's usual features.
fn import_v2(cluster: &Cluster, name: &str, data: &[u8]) {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, data).unwrap();
    cluster.rbd(&[
        "import",
        "--no-progress",
        "--image-format",
        "2",
        "--image-feature",
        "layering,exclusive-lock,object-map,fast-diff",
        f.path().to_str().unwrap(),
        &spec(name),
    ]);
}

/// Reads `path` from start to end in 1 MiB reads (a `dd bs=1M` reader).
fn read_sequentially(path: &Path, size: u64) -> Vec<u8> {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut got = Vec::with_capacity(size as usize);
    let mut off = 0;
    while off < size {
        let n = MIB.min(size - off) as usize;
        let chunk =
            read_full_at(&f, off, n).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        got.extend_from_slice(&chunk);
        off += n as u64;
    }
    got
}

/// Snapshots are read ahead deeply (immutable data): a sequential reader
/// of a snapshot gets exactly `rbd export IMG@SNAP`'s bytes while the
/// image head is written meanwhile, by another client (`rbd bench`,
/// which takes the exclusive lock) and then through the mount itself.
#[test]
fn deep_snapshot_read_ahead_while_the_head_is_written() {
    let _serial = serial();
    let cluster = Cluster::get();
    const SIZE: u64 = 128 * MIB;
    let mut scratch = Scratch::new(&cluster);
    let mut purge = SnapPurge::new(&cluster);
    let name = purge.add(scratch.name("deepsnap"));
    let mut rng = Rng::new();
    let old = rng.bytes(SIZE as usize);
    import_v2(&cluster, &name, &old);
    cluster.rbd(&["snap", "create", &spec(&format!("{name}@s1"))]);

    let mount = Mount::new(&cluster, &["-o", "cache_size=64"]);
    let snap1 = mount.dir().join(".snap").join(&name).join("s1");

    // Phase 1: another client writes the head while the snapshot is read.
    let reader = {
        let snap1 = snap1.clone();
        thread::spawn(move || read_sequentially(&snap1, SIZE))
    };
    cluster.rbd(&[
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "4M",
        "--io-threads",
        "4",
        "--io-total",
        "128M",
        "--io-pattern",
        "rand",
        &spec(&name),
    ]);
    let got = reader
        .join()
        .unwrap_or_else(|_| panic!("snapshot reader failed\n{}", mount.log()));
    assert_bytes_eq(
        &got,
        &old,
        "snapshot s1 read while rbd bench wrote the head",
    );
    let after_phase1 = cache_stats(&mount);
    assert!(
        after_phase1["prefetched"] >= SIZE / 2,
        "the snapshot was not read ahead: {after_phase1:?}"
    );

    // Phase 2: the mount writes the head while a second snapshot is read.
    cluster.rbd(&["snap", "create", &spec(&format!("{name}@s2"))]);
    let s2 = cluster.export(&format!("{name}@s2"));
    let snap2 = mount.dir().join(".snap").join(&name).join("s2");
    let reader = {
        let snap2 = snap2.clone();
        thread::spawn(move || read_sequentially(&snap2, SIZE))
    };
    let new = rng.bytes(SIZE as usize);
    {
        let f = open_rw(&mount.path(&name));
        for (i, chunk) in new.chunks(4 * MIB as usize).enumerate() {
            f.write_all_at(chunk, i as u64 * 4 * MIB).unwrap();
        }
        f.sync_all().unwrap();
    }
    let got = reader
        .join()
        .unwrap_or_else(|_| panic!("snapshot reader failed\n{}", mount.log()));
    assert_bytes_eq(&got, &s2, "snapshot s2 read while the mount wrote the head");

    // The oracle: librbd's export of each snapshot, and of the head.
    assert_bytes_eq(
        &cluster.export(&format!("{name}@s1")),
        &old,
        "rbd export of s1",
    );
    assert_bytes_eq(&cluster.export(&name), &new, "rbd export of the head");
    let stats = cache_stats(&mount);
    assert!(
        stats["peak"] <= stats["capacity"],
        "cache held {} bytes: {stats:?}",
        stats["peak"]
    );
}

/// Four sequential readers of snapshots at once (two snapshots, two
/// readers each, in different halves) through the default 64 MiB cache:
/// the cache's accounting stays within its capacity, the process's peak
/// RSS within capacity + 48 MiB, and every byte is the snapshot's.
#[test]
fn four_sequential_streams_stay_within_the_bound() {
    let _serial = serial();
    let cluster = Cluster::get();
    const CACHE_MIB: u64 = 64;
    const SIZE: u64 = 256 * MIB;
    let mut scratch = Scratch::new(&cluster);
    let mut purge = SnapPurge::new(&cluster);
    let name = purge.add(scratch.name("fourstreams"));
    let mut rng = Rng::new();
    let a = Arc::new(rng.bytes(SIZE as usize));
    import_v2(&cluster, &name, &a);
    cluster.rbd(&["snap", "create", &spec(&format!("{name}@a"))]);
    // Snapshot b: the first half rewritten through a mount.
    let b = rng.bytes(SIZE as usize / 2);
    let mut want_b = a.to_vec();
    {
        let mount = Mount::new(&cluster, &[]);
        let f = open_rw(&mount.path(&name));
        f.write_all_at(&b, 0).unwrap();
        f.sync_all().unwrap();
        want_b[..b.len()].copy_from_slice(&b);
    }
    cluster.rbd(&["snap", "create", &spec(&format!("{name}@b"))]);
    let want_b = Arc::new(want_b);

    let mount = Mount::new(&cluster, &["-o", &format!("cache_size={CACHE_MIB}")]);
    let snaps = mount.dir().join(".snap").join(&name);
    let half = SIZE / 2;
    let readers: Vec<_> = [("a", 0), ("a", half), ("b", 0), ("b", half)]
        .into_iter()
        .map(|(snap, start)| {
            let path = snaps.join(snap);
            let want = if snap == "a" {
                a.clone()
            } else {
                want_b.clone()
            };
            thread::spawn(move || {
                let f = File::open(&path).unwrap();
                let mut off = start;
                while off < start + half {
                    let got = read_full_at(&f, off, MIB as usize).unwrap();
                    assert_bytes_eq(
                        &got,
                        &want[off as usize..(off + MIB) as usize],
                        &format!("snapshot {snap} at {off}"),
                    );
                    off += MIB;
                }
            })
        })
        .collect();
    for r in readers {
        r.join()
            .unwrap_or_else(|_| panic!("a reader failed\n{}", mount.log()));
    }
    let stats = cache_stats(&mount);
    let capacity = CACHE_MIB * MIB;
    assert!(
        stats["peak"] <= capacity,
        "cache held {} bytes, capacity {capacity}: {stats:?}",
        stats["peak"]
    );
    assert!(
        stats["prefetched"] >= SIZE,
        "four sequential readers got little read-ahead: {stats:?}"
    );
    let rss = peak_rss(mount.pid());
    eprintln!("four streams: peak RSS {} MiB, cache {stats:?}", rss >> 20);
    assert!(
        rss <= capacity + 48 * MIB,
        "peak RSS {} MiB > cache {CACHE_MIB} MiB + 48 MiB ({stats:?})",
        rss >> 20
    );
    // A clean unmount unwatches every header it watched: no watcher is
    // left for the OSD to time out (rbd rm would refuse the image).
    drop(mount);
    let status = cluster.rbd(&["status", &spec(&name)]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        !text.contains("watcher="),
        "a watcher is left after the unmount: {text}"
    );
}
