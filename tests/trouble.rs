//! The cluster in trouble (issue 13), on a private cluster of three OSDs
//! with a mgr and an erasure-coded pool (`contrib/cluster.sh start
//! --with-mgr --osds 3 --ec`), never the shared one. One test, in phases
//! that share the cluster (starting it is the expensive part); each phase
//! prints how long it took:
//!
//! - `ec`: an image with `--data-pool rbd-ec` (k=2 m=1), random writes,
//!   snapshots, discard and resize through the mount versus a model, then
//!   `rbd export` of the head and the snapshots equal the model.
//! - `blocklist`: while a writer writes with periodic fsync, rbdfs's client
//!   is blocklisted; every fsync'd range is in `rbd export`, one fsync
//!   fails with EIO, later writes and fsyncs succeed without a remount.
//! - `quota`: a pool at its quota: reads return correct data at once, a
//!   write fails with EDQUOT within `rados_timeout`, and once the quota is
//!   raised writes work again; removing an image works meanwhile.
//! - `data_pool`: a mount with `-o data_pool=rbd-ec` creates a file with
//!   dd: `rbd info` shows `data_pool: rbd-ec`, its data objects are in
//!   rbd-ec and its header in rbd; random writes, then `rbd export` equals
//!   the model.
//! - `full`: the cluster made full (`ceph osd set-full-ratio` below what
//!   the OSDs use): reads correct at once, a write fails with ENOSPC within
//!   `rados_timeout`, removing an image works; once the ratios are back
//!   writes work again without a remount and `rbd export` equals the model.
//! - `syslog`: a daemonised mount without `log_file` logs its mount line
//!   and a write-back failure (pool at its quota) to the system log (an
//!   rsyslogd of the test's own when there is no /dev/log); a header
//!   watch the OSDs refuse (read-only CephX user) is logged once over
//!   five opens, not once per open.
//! - `osd_kill`: fio --verify on a size-3 pool while one OSD, then
//!   another, is SIGKILLed and restarted: no verify or I/O error; the
//!   longest stall of a probe writer is printed and bounded.

mod common;

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

fn report(msg: &str) {
    let _ = writeln!(io::stderr(), "{msg}");
}

fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

// ---------------------------------------------------------------------------

fn phase_ec(c: &OwnCluster, m: &RawMount) {
    let size = 8 * MIB;
    c.rbd(&[
        "create",
        "--size",
        "8M",
        "--object-size",
        "64K",
        "--data-pool",
        "rbd-ec",
        "rbd/ec",
    ]);
    let info = String::from_utf8_lossy(&c.rbd(&["info", "rbd/ec"]).stdout).into_owned();
    assert!(info.contains("data_pool: rbd-ec"), "{info}");
    // librbd keeps header and omap in the replicated pool; data in rbd-ec.
    let mut rng = Rng::from_seed(env_seed());
    let f = open_rw(&m.path("ec"));
    let mut model = vec![0u8; size as usize];
    let mut snaps: Vec<(String, Vec<u8>)> = Vec::new();
    for round in 0..3 {
        for _ in 0..40 {
            let len = rng.range(1, 200 * KIB);
            let off = rng.below(model.len() as u64 - len + 1);
            let data = rng.bytes(len as usize);
            f.write_all_at(&data, off).unwrap();
            model[off as usize..(off + len) as usize].copy_from_slice(&data);
        }
        // Discard a range (punch hole): reads as zeros.
        let len = rng.range(1, 300 * KIB);
        let off = rng.below(model.len() as u64 - len + 1);
        // SAFETY: fallocate(2) on an open fd, plain integers.
        let rc = unsafe {
            libc::fallocate(
                f.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off as i64,
                len as i64,
            )
        };
        assert_eq!(rc, 0, "punch hole: {}", io::Error::last_os_error());
        model[off as usize..(off + len) as usize].fill(0);
        f.sync_all().unwrap();
        let snap = format!("s{round}");
        c.rbd(&["snap", "create", &format!("rbd/ec@{snap}")]);
        snaps.push((snap, model.clone()));
        // Resize: shrink then grow (the regrown tail reads as zeros).
        let new_len = model.len() as u64 - rng.range(1, MIB);
        f.set_len(new_len).unwrap();
        model.truncate(new_len as usize);
        let grown = new_len + rng.range(1, 2 * MIB);
        f.set_len(grown).unwrap();
        model.resize(grown as usize, 0);
    }
    f.sync_all().unwrap();
    assert_bytes_eq(
        &read_full_at(&f, 0, model.len()).unwrap(),
        &model,
        "ec image read back",
    );
    drop(f);
    assert_bytes_eq(&c.export("rbd/ec"), &model, "rbd export rbd/ec");
    for (snap, want) in &snaps {
        assert_bytes_eq(
            &c.export(&format!("rbd/ec@{snap}")),
            want,
            &format!("rbd export rbd/ec@{snap}"),
        );
    }
    let rados = |pool: &str| {
        String::from_utf8_lossy(&c.tool("rados", &["-p", pool, "ls"]).unwrap().stdout).into_owned()
    };
    assert!(
        rados("rbd-ec").contains("rbd_data."),
        "no data objects in rbd-ec"
    );
    assert!(!rados("rbd").contains("rbd_data."), "data objects in rbd");
}

/// The writer of the blocklist phase: what it wrote, which fsyncs failed.
#[derive(Default)]
struct Writes {
    /// (offset, data, fsync outcome covering it: None until an fsync ran,
    /// Some(true) ok, Some(false) failed).
    writes: Vec<(u64, Vec<u8>, Option<bool>)>,
    fsync_errors: Vec<i32>,
    fsyncs_ok: usize,
    error: Option<String>,
}

fn phase_blocklist(c: &OwnCluster, m: &RawMount) {
    let size = 8 * MIB;
    c.rbd(&["create", "--size", "8M", "--object-size", "64K", "rbd/bl"]);
    let log = Arc::new(Mutex::new(Writes::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (log, stop, path) = (log.clone(), stop.clone(), m.path("bl"));
        thread::spawn(move || {
            let f = open_rw(&path);
            let mut rng = Rng::from_seed(env_seed() ^ 0xb1);
            let mut pending = 0;
            while !stop.load(Ordering::SeqCst) {
                let len = rng.range(1, 128 * KIB);
                let off = rng.below(size - len + 1);
                let data = rng.bytes(len as usize);
                if let Err(e) = f.write_all_at(&data, off) {
                    log.lock().unwrap().error = Some(format!("write: {e}"));
                    return;
                }
                log.lock().unwrap().writes.push((off, data, None));
                pending += 1;
                if pending >= 4 {
                    pending = 0;
                    let r = f.sync_all();
                    let mut l = log.lock().unwrap();
                    let ok = r.is_ok();
                    match r {
                        Ok(()) => l.fsyncs_ok += 1,
                        Err(e) => l.fsync_errors.push(errno_of(&e)),
                    }
                    for w in l.writes.iter_mut().rev() {
                        if w.2.is_some() {
                            break;
                        }
                        w.2 = Some(ok);
                    }
                }
                thread::sleep(Duration::from_millis(20));
            }
            let r = f.sync_all();
            let mut l = log.lock().unwrap();
            let ok = r.is_ok();
            if let Err(e) = r {
                l.error = Some(format!("last fsync: {e}"));
            }
            for w in l.writes.iter_mut().rev() {
                if w.2.is_some() {
                    break;
                }
                w.2 = Some(ok);
            }
        })
    };
    // Let it write a while, then blocklist the mount's client.
    thread::sleep(Duration::from_secs(3));
    let status = String::from_utf8_lossy(&c.rbd(&["status", "rbd/bl"]).stdout).into_owned();
    let addr = status
        .split_whitespace()
        .find_map(|w| w.strip_prefix("watcher="))
        .unwrap_or_else(|| panic!("no watcher of rbd/bl: {status}"))
        .to_string();
    let fsyncs_before = log.lock().unwrap().fsyncs_ok;
    assert!(fsyncs_before > 0, "no fsync before the blocklist");
    let t_block = Instant::now();
    c.ceph(&["osd", "blocklist", "add", &addr]);
    // Wait for the failed fsync, then for a few more good ones.
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut failed_at, mut ok_after) = (None, 0);
    while Instant::now() < deadline {
        {
            let l = log.lock().unwrap();
            if let Some(e) = &l.error {
                panic!("writer: {e}\n{}", m.log());
            }
            if failed_at.is_none() && !l.fsync_errors.is_empty() {
                failed_at = Some((t_block.elapsed(), l.fsyncs_ok));
            }
            if let Some((_, n)) = failed_at {
                ok_after = l.fsyncs_ok - n;
            }
        }
        if ok_after >= 5 {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let l = log.lock().unwrap();
    if let Some(e) = &l.error {
        panic!("writer: {e}\n{}", m.log());
    }
    match failed_at {
        Some((after, _)) => {
            report(&format!(
                "[blocklist] fsync failed {after:?} after the blocklist; errors {:?}; {ok_after} good fsyncs after",
                l.fsync_errors
            ));
            assert_eq!(l.fsync_errors, vec![libc::EIO], "one EIO only\n{}", m.log());
            assert!(ok_after >= 5, "writes did not recover\n{}", m.log());
        }
        None => {
            // The blocklist met no acknowledged-but-unwritten data (the
            // writer fsyncs after every write): then nothing may have been
            // dropped, and the client must still have been replaced.
            let log = m.log();
            assert!(
                !log.contains("data lost"),
                "data was dropped but no fsync failed ({} ok)\n{log}",
                l.fsyncs_ok
            );
            assert!(
                log.contains("reconnected to the cluster"),
                "no fsync failed and no reconnection after the blocklist ({} ok)\n{log}",
                l.fsyncs_ok
            );
            report("[blocklist] no data was pending when the blocklist hit: no fsync failed");
        }
    }
    // Bytes whose last write was fsync'd are as written; bytes whose last
    // write's fsync failed may hold anything.
    let mut want: Vec<Option<u8>> = vec![Some(0); size as usize];
    for (off, data, synced) in &l.writes {
        for (i, &b) in data.iter().enumerate() {
            want[*off as usize + i] = match synced {
                Some(true) => Some(b),
                _ => None,
            };
        }
    }
    let got = c.export("rbd/bl");
    assert_eq!(got.len(), size as usize);
    let bad = (0..got.len()).find(|&i| want[i].is_some_and(|w| w != got[i]));
    assert!(
        bad.is_none(),
        "byte {bad:?} of rbd/bl differs from what was fsync'd"
    );
    let text = m.log();
    assert!(
        text.contains("lost:"),
        "no error line for the lost client\n{text}"
    );
    assert!(
        text.contains("reconnected"),
        "no line for the reconnection\n{text}"
    );
    assert!(text.contains("data lost") || l.fsync_errors.is_empty());
}

fn pool_flags(c: &OwnCluster, pool: &str) -> String {
    c.ceph(&["osd", "pool", "ls", "detail"])
        .lines()
        .find(|l| l.contains(&format!("'{pool}'")))
        .unwrap_or_default()
        .to_string()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        thread::sleep(Duration::from_millis(250));
    }
    t0.elapsed()
}

/// Three images on `pool` (`a` 16M with 4 MiB of data, `b` and the one to
/// remove with 64 KiB each; 64K objects) written through one mount with
/// `rados_timeout=10`, before the pool runs out of space.
struct OutOfSpace {
    // Declared before the mount: fields drop in order, and the file must be
    // closed before the mount goes.
    f: File,
    m: RawMount,
    tag: &'static str,
    pool: &'static str,
    names: [&'static str; 3],
    model: Vec<u8>,
    b_data: Vec<u8>,
    rng: Rng,
}

impl OutOfSpace {
    fn new(
        c: &OwnCluster,
        tag: &'static str,
        pool: &'static str,
        names: [&'static str; 3],
        seed: u64,
    ) -> OutOfSpace {
        for (name, size) in names.iter().zip(["16M", "1M", "1M"]) {
            let spec = format!("{pool}/{name}");
            c.rbd(&["create", "--size", size, "--object-size", "64K", &spec]);
        }
        let m = RawMount::new(&c.conf, pool, &["-o", "rados_timeout=10"]);
        let mut rng = Rng::from_seed(env_seed() ^ seed);
        let model = rng.bytes(4 * MIB as usize);
        let f = open_rw(&m.path(names[0]));
        f.write_all_at(&model, 0).unwrap();
        f.sync_all().unwrap();
        let b_data = rng.bytes(64 * KIB as usize);
        for name in &names[1..] {
            let fb = open_rw(&m.path(name));
            fb.write_all_at(&b_data, 0).unwrap();
            fb.sync_all().unwrap();
        }
        OutOfSpace {
            tag,
            pool,
            names,
            m,
            f,
            model,
            b_data,
            rng,
        }
    }

    /// What must hold while the pool is out of space: reads of the open
    /// image and of another opened afresh are correct within 5 s; a write
    /// plus fsync fails with `errno` within the timeout (+2 s); the
    /// failure is reported once (the next fsync is clean); removing the
    /// third image works, as deletes free space. Returns the handle of the
    /// second image.
    fn checks(&mut self, c: &OwnCluster, errno: i32) -> File {
        let (tag, m, f) = (self.tag, &self.m, &self.f);
        let [a_name, b_name, rm_name] = self.names;
        let t0 = Instant::now();
        let model = &self.model;
        assert_bytes_eq(&read_full_at(f, 0, model.len()).unwrap(), model, a_name);
        let fb = File::open(m.path(b_name)).unwrap();
        assert_bytes_eq(
            &read_full_at(&fb, 0, self.b_data.len()).unwrap(),
            &self.b_data,
            b_name,
        );
        let read_time = t0.elapsed();
        report(&format!(
            "[{tag}] reads on the full pool took {read_time:?}"
        ));
        assert!(
            read_time < Duration::from_secs(5),
            "reads took {read_time:?}"
        );
        let t0 = Instant::now();
        let dropped = self.rng.bytes(256 * KIB as usize);
        let r = f.write_all_at(&dropped, 5 * MIB).and_then(|_| f.sync_all());
        let took = t0.elapsed();
        let e = r.expect_err("a write to a full pool succeeded");
        report(&format!("[{tag}] write failed with {e} after {took:?}"));
        assert_eq!(errno_of(&e), errno, "{e}\n{}", m.log());
        assert!(took < Duration::from_secs(12), "{took:?}");
        let _ = f.sync_all();
        let t0 = Instant::now();
        fs::remove_file(m.path(rm_name))
            .unwrap_or_else(|e| panic!("rm on a full pool: {e}\n{}", m.log()));
        report(&format!("[{tag}] rm of an image took {:?}", t0.elapsed()));
        let ls = String::from_utf8_lossy(&c.rbd(&["ls", self.pool]).stdout).into_owned();
        assert!(
            !ls.lines().any(|l| l == rm_name),
            "{rm_name} still listed: {ls}"
        );
        fb
    }

    /// Once space is back: a write works without a remount, and `rbd
    /// export` of the first image equals the model.
    fn recovered(mut self, c: &OwnCluster) {
        let again = self.rng.bytes(128 * KIB as usize);
        self.f.write_all_at(&again, MIB).unwrap();
        self.f.sync_all().unwrap();
        self.model[MIB as usize..MIB as usize + again.len()].copy_from_slice(&again);
        let spec = format!("{}/{}", self.pool, self.names[0]);
        let model = std::mem::take(&mut self.model);
        drop(self);
        let got = c.export(&spec);
        assert_bytes_eq(&got[..model.len()], &model, &format!("rbd export {spec}"));
    }
}

fn phase_quota(c: &OwnCluster) {
    c.ceph(&["osd", "pool", "create", "rbdq", "8", "8"]);
    c.ceph(&["osd", "pool", "application", "enable", "rbdq", "rbd"]);
    let mut scene = OutOfSpace::new(c, "quota", "rbdq", ["a", "b", "c"], 0x9a);
    // Quota below what the pool holds: the pool is flagged full.
    c.ceph(&["osd", "pool", "set-quota", "rbdq", "max_bytes", "1048576"]);
    let t = wait_for("pool rbdq flagged full", Duration::from_secs(120), || {
        pool_flags(c, "rbdq").contains("full")
    });
    report(&format!("[quota] pool flagged full after {t:?}"));
    drop(scene.checks(c, libc::EDQUOT));
    // Space comes back: writes work again, without a remount.
    c.ceph(&["osd", "pool", "set-quota", "rbdq", "max_bytes", "0"]);
    let t = wait_for("pool rbdq not full", Duration::from_secs(120), || {
        !pool_flags(c, "rbdq").contains("full")
    });
    report(&format!("[quota] pool not full after {t:?}"));
    scene.recovered(c);
}

/// `-o data_pool=rbd-ec`: an image created through the mount (dd into a
/// new file) gets its data objects in rbd-ec, its header in rbd, as `rbd
/// create --data-pool rbd-ec` does; random writes, then `rbd export`
/// equals the model.
fn phase_data_pool(c: &OwnCluster) {
    // A data pool that does not exist fails the mount, saying so.
    let dir = MountDir::new();
    let args = [
        "mount",
        "-c",
        c.conf.to_str().unwrap(),
        "-o",
        "data_pool=nope",
        "rbd",
        dir.mnt.to_str().unwrap(),
    ];
    let mut child = spawn_rbdfs(&args, &dir.log, false);
    let st = wait_timeout(&mut child, Duration::from_secs(60)).expect("rbdfs mount hung");
    let err = log_text(&dir.log);
    assert!(!st.success(), "mounted with a missing data pool: {err}");
    assert!(err.contains("data pool nope does not exist"), "{err}");
    assert!(!is_fuse_mounted(&dir.mnt));
    drop(dir);

    let m = RawMount::new(
        &c.conf,
        "rbd",
        &["-o", "rados_timeout=30,data_pool=rbd-ec,object_size=64K"],
    );
    let mut rng = Rng::from_seed(env_seed() ^ 0xd7);
    let mut model = rng.bytes(4 * MIB as usize);
    let src = tempfile::NamedTempFile::new().unwrap();
    fs::write(src.path(), &model).unwrap();
    let mut dd = Command::new("dd");
    dd.arg(format!("if={}", src.path().display()))
        .arg(format!("of={}", m.path("dp").display()))
        .args(["bs=64K", "conv=fsync", "status=none"]);
    let o = run_timeout(&mut dd, Duration::from_secs(120)).unwrap();
    assert!(
        o.status.success(),
        "dd into a new file: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        m.log()
    );
    let f = open_rw(&m.path("dp"));
    for _ in 0..60 {
        let len = rng.range(1, 200 * KIB);
        let off = rng.below(model.len() as u64 - len + 1);
        let data = rng.bytes(len as usize);
        f.write_all_at(&data, off).unwrap();
        model[off as usize..(off + len) as usize].copy_from_slice(&data);
    }
    f.sync_all().unwrap();
    assert_bytes_eq(
        &read_full_at(&f, 0, model.len()).unwrap(),
        &model,
        "data-pool image read back",
    );
    drop(f);
    let info = String::from_utf8_lossy(&c.rbd(&["info", "rbd/dp"]).stdout).into_owned();
    assert!(info.contains("data_pool: rbd-ec"), "{info}");
    assert!(info.contains("format: 2"), "{info}");
    let prefix = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("block_name_prefix: "))
        .unwrap_or_else(|| panic!("no block_name_prefix: {info}"))
        .to_string();
    let id = prefix.rsplit('.').next().unwrap().to_string();
    assert_bytes_eq(&c.export("rbd/dp"), &model, "rbd export rbd/dp");
    let rados = |pool: &str| -> Vec<String> {
        String::from_utf8_lossy(&c.tool("rados", &["-p", pool, "ls"]).unwrap().stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    let ec = rados("rbd-ec");
    // Data objects only (and the `rbd_info` marker `rbd create
    // --data-pool` leaves in a data pool it checked).
    let other: Vec<&String> = ec
        .iter()
        .filter(|o| !o.starts_with("rbd_data.") && *o != "rbd_info")
        .collect();
    assert!(other.is_empty(), "not data objects in rbd-ec: {other:?}");
    assert!(
        ec.iter().any(|o| o.starts_with(&format!("{prefix}."))),
        "no data object {prefix}.* in rbd-ec"
    );
    let rbd = rados("rbd");
    assert!(
        !rbd.iter().any(|o| o.starts_with(&prefix)),
        "data objects of rbd/dp in rbd"
    );
    assert!(
        rbd.contains(&format!("rbd_header.{id}")) && rbd.contains(&"rbd_id.dp".to_string()),
        "header of rbd/dp not in rbd: {rbd:?}"
    );
    drop(m);
}

/// Whether pool `pool` carries the flag `flag` (exactly: `full` is not
/// `nearfull`).
fn pool_has_flag(c: &OwnCluster, pool: &str, flag: &str) -> bool {
    let line = pool_flags(c, pool);
    line.split_whitespace()
        .skip_while(|w| *w != "flags")
        .nth(1)
        .is_some_and(|flags| flags.split(',').any(|f| f == flag))
}

/// The cluster's (nearfull, backfillfull, full) ratios, as `ceph osd dump`
/// prints them.
fn full_ratios(c: &OwnCluster) -> (String, String, String) {
    let dump = c.ceph(&["osd", "dump"]);
    let get = |key: &str| {
        dump.lines()
            .find_map(|l| l.strip_prefix(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} in ceph osd dump:\n{dump}"))
            .trim()
            .to_string()
    };
    (
        get("nearfull_ratio"),
        get("backfillfull_ratio"),
        get("full_ratio"),
    )
}

/// A full cluster (`ceph osd set-full-ratio` below what the OSDs use):
/// reads go on, a write fails with ENOSPC within rados_timeout, removing
/// an image works, and once the ratios are back writes work again
/// without a remount.
fn phase_full(c: &OwnCluster) {
    let mut scene = OutOfSpace::new(c, "full", "rbd", ["fa", "fb", "frm"], 0xf0);
    // Full ratio at half the least used OSD's use (nearfull and
    // backfillfull below it, as the monitors want them ordered).
    let df = common::json::Json::parse(&c.ceph(&["osd", "df", "-f", "json"]));
    let used = df
        .at("nodes")
        .arr()
        .iter()
        .map(|n| n.at("kb_used").u64() as f64 / n.at("kb").u64().max(1) as f64)
        .fold(f64::INFINITY, f64::min);
    assert!(used.is_finite() && used > 0.0, "OSD use {used}");
    let full = used / 2.0;
    let saved = full_ratios(c);
    report(&format!(
        "[full] least used OSD at {:.2}%; full ratio {:.3}% (was {saved:?})",
        used * 100.0,
        full * 100.0
    ));
    for (cmd, ratio) in [
        ("set-nearfull-ratio", full * 0.8),
        ("set-backfillfull-ratio", full * 0.9),
        ("set-full-ratio", full),
    ] {
        c.ceph(&["osd", cmd, &format!("{ratio:.6}")]);
    }
    let t = wait_for("pool rbd flagged full", Duration::from_secs(120), || {
        pool_has_flag(c, "rbd", "full")
    });
    report(&format!("[full] pool rbd flagged full after {t:?}"));
    drop(scene.checks(c, libc::ENOSPC));
    // The data dropped was logged with its byte range.
    assert!(
        scene.m.log().contains("data lost"),
        "no log line for the dropped data\n{}",
        scene.m.log()
    );
    // Space comes back: writes work again, without a remount.
    let (nearfull, backfillfull, full_ratio) = saved;
    c.ceph(&["osd", "set-full-ratio", &full_ratio]);
    c.ceph(&["osd", "set-backfillfull-ratio", &backfillfull]);
    c.ceph(&["osd", "set-nearfull-ratio", &nearfull]);
    let t = wait_for("pool rbd not full", Duration::from_secs(120), || {
        !pool_has_flag(c, "rbd", "full")
    });
    report(&format!("[full] pool rbd not full after {t:?}"));
    scene.recovered(c);
}

/// A system logger to read back what a daemonised mount logs: the one
/// serving /dev/log if there is one (read from the usual files), else an
/// rsyslogd of our own, writing every message raw to a file of ours (a
/// container has no /dev/log); stopped on drop.
struct SystemLog {
    own: Option<Child>,
    files: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

impl SystemLog {
    fn start() -> SystemLog {
        let dir = tempfile::TempDir::new().unwrap();
        if std::os::unix::net::UnixDatagram::unbound()
            .and_then(|s| s.connect("/dev/log"))
            .is_ok()
        {
            return SystemLog {
                own: None,
                files: [
                    "/var/log/syslog",
                    "/var/log/daemon.log",
                    "/var/log/messages",
                ]
                .map(PathBuf::from)
                .to_vec(),
                _dir: dir,
            };
        }
        assert!(
            Command::new("rsyslogd").arg("-v").output().is_ok(),
            "no system logger on /dev/log and rsyslogd is not installed (apt-get install rsyslog)"
        );
        // A dead socket left behind would stop rsyslogd from binding.
        let _ = fs::remove_file("/dev/log");
        let file = dir.path().join("syslog");
        let conf = dir.path().join("rsyslog.conf");
        fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{d}\")\n\
                 module(load=\"imuxsock\" SysSock.Name=\"/dev/log\")\n\
                 template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
                 *.* action(type=\"omfile\" file=\"{f}\" template=\"raw\")\n",
                d = dir.path().display(),
                f = file.display()
            ),
        )
        .unwrap();
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(File::create(dir.path().join("rsyslogd.err")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start rsyslogd: {e}"));
        let log = SystemLog {
            own: Some(child),
            files: vec![file],
            _dir: dir,
        };
        // Ready once a message of ours comes through.
        let mark = format!("rbdfs-test-mark-{}", std::process::id());
        let t = wait_for("the system logger", Duration::from_secs(30), || {
            let _ = Command::new("logger")
                .args(["-t", "rbdfs-test", &mark])
                .output();
            log.text().contains(&mark)
        });
        report(&format!(
            "[syslog] own rsyslogd on /dev/log, ready after {t:?}"
        ));
        log
    }

    fn text(&self) -> String {
        self.files
            .iter()
            .filter_map(|f| fs::read(f).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect()
    }
}

impl Drop for SystemLog {
    fn drop(&mut self) {
        if let Some(mut child) = self.own.take() {
            // SAFETY: kill(2) on the pid of the rsyslogd we started.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            if wait_timeout(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Test 5, logging: a daemonised mount (no -f, no log_file) logs to the
/// system log as `rbdfs[MOUNTPOINT]`: its mount line, and a write-back
/// failure (a pool at its quota); a header watch the OSDs refuse is
/// logged once, not once per open.
fn phase_syslog(c: &OwnCluster) {
    let syslog = SystemLog::start();
    c.ceph(&["osd", "pool", "create", "rbdsl", "8", "8"]);
    c.ceph(&["osd", "pool", "application", "enable", "rbdsl", "rbd"]);
    c.rbd(&["create", "--size", "4M", "--object-size", "64K", "rbdsl/a"]);
    c.rbd(&["create", "--size", "1M", "--object-size", "64K", "rbdsl/b"]);
    let dir = MountDir::new();
    let mnt = dir.mnt.to_str().unwrap().to_string();
    let conf = c.conf.to_str().unwrap().to_string();
    let args = [
        "mount",
        "-c",
        &conf,
        "-o",
        "rados_timeout=10",
        "rbdsl",
        &mnt,
    ];
    let mut parent = spawn_rbdfs(&args, &dir.log, false);
    let st =
        wait_timeout(&mut parent, Duration::from_secs(60)).expect("rbdfs mount did not return");
    assert!(
        st.success(),
        "daemonised mount failed: {}",
        log_text(&dir.log)
    );
    assert!(is_fuse_mounted(&dir.mnt));
    let mut rng = Rng::from_seed(env_seed() ^ 0x51);
    let f = open_rw(&dir.mnt.join("a"));
    f.write_all_at(&rng.bytes(2 * MIB as usize), 0).unwrap();
    f.sync_all().unwrap();
    c.ceph(&["osd", "pool", "set-quota", "rbdsl", "max_bytes", "1048576"]);
    wait_for("pool rbdsl flagged full", Duration::from_secs(120), || {
        pool_flags(c, "rbdsl").contains("full")
    });
    // Opening b again and again on the full pool.
    for _ in 0..5 {
        let fb = File::open(dir.mnt.join("b")).unwrap();
        read_full_at(&fb, 0, 4096).unwrap();
    }
    let e = f
        .write_all_at(&rng.bytes(128 * KIB as usize), 3 * MIB)
        .and_then(|_| f.sync_all())
        .expect_err("a write to a pool at its quota succeeded");
    assert_eq!(errno_of(&e), libc::EDQUOT, "{e}");
    drop(f);
    c.ceph(&["osd", "pool", "set-quota", "rbdsl", "max_bytes", "0"]);
    unmount(&dir.mnt).unwrap();
    let tag = format!("rbdfs[{mnt}]");
    let mine = || -> Vec<String> {
        syslog
            .text()
            .lines()
            .filter(|l| l.contains(&tag))
            .map(str::to_string)
            .collect()
    };
    // The daemon logs its unmount, then exits.
    let t = wait_for(
        "the unmount line in the system log",
        Duration::from_secs(30),
        || mine().iter().any(|l| l.contains("unmounted")),
    );
    let lines = mine();
    let text = lines.join("\n");
    report(&format!(
        "[syslog] {} lines from {tag} (unmount logged {t:?} after umount)",
        lines.len()
    ));
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("mounted rbdsl on {mnt}"))),
        "no mount line in the system log:\n{text}"
    );
    let lost = lines
        .iter()
        .filter(|l| l.contains("image a: data lost") && l.contains("ERROR"))
        .count();
    assert!(
        lost >= 1,
        "no write-back failure in the system log:\n{text}"
    );
    let watch_warnings = lines
        .iter()
        .filter(|l| l.contains("image b: cannot watch the header"))
        .count();
    assert!(
        watch_warnings <= 1,
        "the refused header watch of b was logged {watch_warnings} times:\n{text}"
    );
    report(&format!(
        "[syslog] write-back failure lines: {lost}; watch warnings for b: {watch_warnings}"
    ));

    // A header watch the OSDs refuse (a read-only CephX user) is logged
    // when it starts, once, however often the image is opened.
    let keyring = dir.log.with_file_name("ro.keyring");
    c.ceph(&[
        "auth",
        "get-or-create",
        "client.syslog-ro",
        "mon",
        "profile rbd",
        "osd",
        "profile rbd-read-only pool=rbdsl",
        "-o",
        keyring.to_str().unwrap(),
    ]);
    let dir2 = MountDir::new();
    let mnt2 = dir2.mnt.to_str().unwrap().to_string();
    let args = [
        "mount",
        "-c",
        &conf,
        "--id",
        "syslog-ro",
        "--keyring",
        keyring.to_str().unwrap(),
        "rbdsl",
        &mnt2,
    ];
    let mut parent = spawn_rbdfs(&args, &dir2.log, false);
    let st =
        wait_timeout(&mut parent, Duration::from_secs(60)).expect("rbdfs mount did not return");
    assert!(
        st.success(),
        "read-only user's mount failed: {}",
        log_text(&dir2.log)
    );
    for _ in 0..5 {
        let fb = File::open(dir2.mnt.join("b")).unwrap();
        read_full_at(&fb, 0, 4096).unwrap();
        thread::sleep(Duration::from_millis(300));
    }
    unmount(&dir2.mnt).unwrap();
    let tag2 = format!("rbdfs[{mnt2}]");
    let mine2 = || -> Vec<String> {
        syslog
            .text()
            .lines()
            .filter(|l| l.contains(&tag2))
            .map(str::to_string)
            .collect()
    };
    wait_for(
        "the read-only mount's unmount line",
        Duration::from_secs(30),
        || mine2().iter().any(|l| l.contains("unmounted")),
    );
    let lines2 = mine2();
    let refused = lines2
        .iter()
        .filter(|l| l.contains("image b: cannot watch the header"))
        .count();
    report(&format!(
        "[syslog] refused watch of b over 5 opens: logged {refused} time(s)"
    ));
    assert_eq!(
        refused,
        1,
        "the refused watch of b (5 opens):\n{}",
        lines2.join("\n")
    );
    let _ = c.tool("ceph", &["auth", "rm", "client.syslog-ro"]);
}

/// The osd_kill phase's fio run: 3 jobs of 32 MiB on the 96 MiB image.
fn run_fio(file: &Path) -> Result<String, String> {
    run_fio_verify(file, "32M", Duration::from_secs(600))
}

fn phase_osd_kill(c: &OwnCluster, m: &RawMount) {
    assert_fio_installed();
    c.rbd(&["create", "--size", "96M", "rbd/fio"]);
    c.rbd(&["create", "--size", "4M", "rbd/probe"]);
    let stop = Arc::new(AtomicBool::new(false));
    // A probe: 4 KiB write + fsync in a loop; its longest round is the
    // longest stall the mount showed.
    let probe = {
        let (stop, path) = (stop.clone(), m.path("probe"));
        thread::spawn(move || -> Result<Duration, String> {
            let f = open_rw(&path);
            let mut worst = Duration::ZERO;
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                f.write_all_at(&[i as u8; 4096], (i % 1000) * 4096)
                    .and_then(|_| f.sync_all())
                    .map_err(|e| format!("probe: {e}"))?;
                worst = worst.max(t.elapsed());
                i += 1;
                thread::sleep(Duration::from_millis(100));
            }
            Ok(worst)
        })
    };
    let faults = {
        let c = c.handle().clone();
        thread::spawn(move || {
            for osd in ["osd.0", "osd.1"] {
                thread::sleep(Duration::from_secs(8));
                let t = Instant::now();
                c.kill_and_restart(osd, Duration::from_secs(10));
                report(&format!(
                    "[osd_kill] {osd} killed and back in {:?}",
                    t.elapsed()
                ));
            }
        })
    };
    let fio_path = m.path("fio");
    let mut runs = 0;
    let mut fio_result = Ok(String::new());
    while !faults.is_finished() || runs == 0 {
        runs += 1;
        fio_result = run_fio(&fio_path);
        if fio_result.is_err() {
            break;
        }
    }
    faults.join().unwrap();
    // Once more with every OSD back: data read back is unchanged.
    if fio_result.is_ok() {
        fio_result = run_fio(&fio_path);
    }
    stop.store(true, Ordering::SeqCst);
    let worst = probe.join().unwrap();
    if let Err(e) = fio_result {
        panic!("{e}\n{}", m.log());
    }
    let worst = worst.unwrap_or_else(|e| panic!("{e}\n{}", m.log()));
    report(&format!(
        "[osd_kill] {runs} fio runs while OSDs were killed; longest probe stall {worst:?} (heartbeat grace 6 s)"
    ));
    assert!(worst < Duration::from_secs(6 + 20), "stall {worst:?}");
}

#[test]
fn trouble() {
    let t0 = Instant::now();
    let c = OwnCluster::start("trouble", 46789, &["--with-mgr", "--osds", "3", "--ec"]);
    report(&format!(
        "[trouble] 3-OSD cluster with mgr and EC pool started in {:?}",
        t0.elapsed()
    ));
    let m = RawMount::new(&c.conf, "rbd", &["-o", "rados_timeout=30"]);
    let phase = |name: &str, f: &dyn Fn()| {
        let t = Instant::now();
        f();
        report(&format!("[trouble] phase {name}: {:?}", t.elapsed()));
    };
    phase("ec", &|| phase_ec(&c, &m));
    phase("data_pool", &|| phase_data_pool(&c));
    phase("blocklist", &|| phase_blocklist(&c, &m));
    phase("quota", &|| phase_quota(&c));
    phase("full", &|| phase_full(&c));
    phase("syslog", &|| phase_syslog(&c));
    phase("osd_kill", &|| phase_osd_kill(&c, &m));
    drop(m);
    report(&format!("[trouble] total {:?}", t0.elapsed()));
}
