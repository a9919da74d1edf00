//! Durability and fault tolerance:
//!
//! - `crash_format1`, `crash_format2_locked`: a writer with periodic fsync,
//!   rbdfs SIGKILLed at a random moment. Afterwards (`rbd export`, and a
//!   fresh mount) every fsync'd byte is there and every other byte is either
//!   its fsync'd value or that of a write issued after the last fsync. On
//!   format 2 the dead rbdfs still holds the exclusive lock: a new mount
//!   must break it (after the dead owner's watch expires) and write.
//! - `osd_faults`: on a private cluster (never the shared one), fio with
//!   crc32c verification runs while the OSD is stopped/continued, the
//!   monitor is stopped/continued and the OSD is killed and restarted: no
//!   verify errors, every job completes. Then, with `-o rados_timeout=10`
//!   and the OSD stopped, a read and an fsync fail with an errno instead of
//!   hanging, and the unmount completes.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const ORDER: u8 = 16;
const OBJ: u64 = 1 << ORDER;

/// Straight to fd 2, so the numbers show even for a passing test.
fn report(msg: &str) {
    let _ = writeln!(io::stderr(), "{msg}");
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// All threads' stacks of a hung process (saved to a file; the frames in
/// rbdfs code returned), for a failure message.
fn backtrace(pid: u32) -> String {
    let mut cmd = Command::new("gdb");
    cmd.args([
        "-p",
        &pid.to_string(),
        "-batch",
        "-ex",
        "thread apply all bt",
    ]);
    match run_timeout(&mut cmd, Duration::from_secs(120)) {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let path = std::env::temp_dir().join(format!("rbdfs-{pid}-bt.txt"));
            let _ = fs::write(&path, &text);
            let ours: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("Thread ") || l.contains("rbdfs::"))
                .collect();
            format!(
                "gdb backtrace in {}; rbdfs frames:\n{}",
                path.display(),
                ours.join("\n")
            )
        }
        Err(e) => format!("(gdb failed: {e})"),
    }
}

/// Runs `f` on a thread; None if it has not returned within `limit` (the
/// thread is then left behind, blocked).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

// ---------------------------------------------------------------------------
// Crash test
// ---------------------------------------------------------------------------

const CRASH_SIZE: u64 = 8 * MIB;

/// What the writer did, shared with the test thread: every write is
/// recorded *before* it is issued (so the one in flight at the kill is
/// known), `synced` is how many of them the last successful fsync covered.
#[derive(Default)]
struct WriterLog {
    writes: Vec<(u64, Vec<u8>)>,
    synced: usize,
    fsyncs: usize,
    error: Option<String>,
}

fn writer(path: PathBuf, seed: u64, log: Arc<Mutex<WriterLog>>) {
    let mut rng = Rng::from_seed(seed);
    let f = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(f) => f,
        Err(e) => {
            log.lock().unwrap().error = Some(format!("open: {e}"));
            return;
        }
    };
    let mut since_sync = 0;
    let mut sync_every = rng.range(1, 6);
    loop {
        let len = match rng.below(3) {
            0 => rng.range(1, 4 * KIB),
            1 => rng.range(1, OBJ),
            _ => rng.range(OBJ, 3 * OBJ),
        };
        let off = rng.below(CRASH_SIZE - len + 1);
        let data = rng.bytes(len as usize);
        log.lock().unwrap().writes.push((off, data.clone()));
        if let Err(e) = f.write_all_at(&data, off) {
            log.lock().unwrap().error = Some(format!("write: {e}"));
            return;
        }
        since_sync += 1;
        if since_sync == sync_every {
            let n = log.lock().unwrap().writes.len();
            if let Err(e) = f.sync_all() {
                log.lock().unwrap().error = Some(format!("fsync: {e}"));
                return;
            }
            let mut l = log.lock().unwrap();
            l.synced = n;
            l.fsyncs += 1;
            since_sync = 0;
            sync_every = rng.range(1, 6);
        }
    }
}

/// Checks `got` (the image after the crash) against `base` (before this
/// round) and the writer's log; returns the first problem.
fn check_crash(got: &[u8], base: &[u8], log: &WriterLog) -> Result<(), String> {
    if got.len() != base.len() {
        return Err(format!("size {} want {}", got.len(), base.len()));
    }
    let mut synced = base.to_vec();
    for (off, data) in &log.writes[..log.synced] {
        synced[*off as usize..*off as usize + data.len()].copy_from_slice(data);
    }
    let pending = &log.writes[log.synced..];
    for (i, (&g, &s)) in got.iter().zip(&synced).enumerate() {
        if g == s {
            continue;
        }
        let i64 = i as u64;
        let explained = pending.iter().any(|(off, data)| {
            (*off..*off + data.len() as u64).contains(&i64) && data[(i64 - off) as usize] == g
        });
        if !explained {
            let in_synced = log.writes[..log.synced]
                .iter()
                .any(|(off, d)| (*off..*off + d.len() as u64).contains(&i64));
            return Err(format!(
                "byte {i} is {g:#04x}, want {s:#04x} ({}), and no write after the last fsync wrote {g:#04x} there",
                if in_synced {
                    "fsync'd data"
                } else {
                    "never written: unchanged"
                }
            ));
        }
    }
    Ok(())
}

fn crash_test(test: &str, v2: bool, rounds: usize) {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let img = scratch.name("crash");
    let seed = env_seed();
    report(&format!(
        "[{test}] seed {seed:#x} (RBDFS_TEST_SEED replays the data and kill times)"
    ));
    let mut rng = Rng::from_seed(seed);
    let mut disk = rng.bytes(CRASH_SIZE as usize);
    disk[(40 * OBJ) as usize..(60 * OBJ) as usize].fill(0);
    if v2 {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&disk).unwrap();
        let path = f.path().to_str().unwrap().to_string();
        cluster.rbd(&[
            "import",
            "--no-progress",
            "--object-size",
            "64K",
            &path,
            &spec(&img),
        ]);
    } else {
        cluster.import_v1(&img, &disk, ORDER);
    }
    for round in 0..rounds {
        let mut mount = Mount::new(&cluster, &["-v"]);
        let log = Arc::new(Mutex::new(WriterLog::default()));
        let w = {
            let (path, log, seed) = (mount.path(&img), log.clone(), rng.next_u64());
            thread::spawn(move || writer(path, seed, log))
        };
        let kill_after = Duration::from_millis(rng.range(300, 3000));
        thread::sleep(kill_after);
        let st = mount.signal_and_wait(libc::SIGKILL, Duration::from_secs(10));
        // The writer's next call fails (ENOTCONN) once the connection is gone.
        if within(Duration::from_secs(30), move || w.join()).is_none() {
            panic!("[{test}] writer still blocked 30 s after rbdfs was killed");
        }
        unmount(mount.dir()).unwrap_or_else(|e| panic!("unmount of the dead mount: {e}"));
        let rbdfs_log = mount.log();
        drop(mount);
        let log = log.lock().unwrap();
        report(&format!(
            "[{test}] round {round}: killed after {kill_after:?} ({st}): {} writes, {} fsync'd by {} fsyncs; writer stopped by: {:?}",
            log.writes.len(),
            log.synced,
            log.fsyncs,
            log.error
        ));
        assert!(
            log.fsyncs > 0,
            "[{test}] no fsync before the kill (kill after {kill_after:?})\n{rbdfs_log}"
        );
        let exported = cluster.export(&img);
        if let Err(e) = check_crash(&exported, &disk, &log) {
            panic!(
                "[{test}] seed {seed:#x} round {round}: rbd export after SIGKILL: {e}\n{}",
                tail(&rbdfs_log, 60)
            );
        }
        let mount = Mount::new(&cluster, &["-v"]);
        let read =
            fs::read(mount.path(&img)).unwrap_or_else(|e| panic!("read: {e}\n{}", mount.log()));
        assert_bytes_eq(
            &read,
            &exported,
            &format!("[{test}] round {round}: remount vs rbd export"),
        );
        drop(mount);
        disk = exported;
    }

    // Writing again after the crash. On format 2 the dead rbdfs still owns
    // the exclusive lock: the new mount has to blocklist and break it,
    // which librbd allows only once the dead owner's watch has expired.
    let mount = Mount::new(&cluster, &["-v"]);
    let (path, data) = (mount.path(&img), rng.bytes(3 * OBJ as usize));
    let off = rng.below(CRASH_SIZE - data.len() as u64);
    let t0 = Instant::now();
    let wrote = within(Duration::from_secs(120), {
        let data = data.clone();
        move || {
            let f = OpenOptions::new().write(true).open(&path)?;
            f.write_all_at(&data, off)?;
            f.sync_all()
        }
    });
    match wrote {
        Some(Ok(())) => {}
        Some(Err(e)) => panic!(
            "[{test}] write after the crash failed: {e}\n{}",
            mount.log()
        ),
        None => panic!(
            "[{test}] write after the crash still blocked after 120 s\n{}\n{}",
            backtrace(mount.pid()),
            tail(&mount.log(), 60)
        ),
    }
    report(&format!(
        "[{test}] write + fsync after the crash took {:?}",
        t0.elapsed()
    ));
    drop(mount);
    disk[off as usize..off as usize + data.len()].copy_from_slice(&data);
    assert_bytes_eq(
        &cluster.export(&img),
        &disk,
        &format!("[{test}] rbd export after writing again"),
    );
}

#[test]
fn crash_format1() {
    crash_test("crash_format1", false, 3);
}

#[test]
fn crash_format2_locked() {
    crash_test("crash_format2_locked", true, 1);
}

// ---------------------------------------------------------------------------
// Private cluster, mount and the OSD fault test
// ---------------------------------------------------------------------------

/// The fault test's fio run: 3 jobs of 48 MiB on the 192 MiB image.
fn run_fio(file: &Path) -> Result<String, String> {
    run_fio_verify(file, "48M", Duration::from_secs(900))
}

#[test]
fn osd_faults() {
    assert_fio_installed();
    let guard = OwnCluster::start("faults", 44789, &[]);
    let cluster = guard.handle();
    let t_start = Instant::now();
    cluster.rbd(&["create", "--size", "192M", "rbd/faults"]);
    let mut mount = RawMount::new(&cluster.conf, "rbd", &[]);
    let img = mount.path("faults");

    // Faults on a schedule while fio runs back to back: stop/continue
    // (I/O must wait, then resume), monitor stop, and real OSD restarts.
    let schedule = {
        let c = cluster.clone();
        thread::spawn(move || {
            let mut events = Vec::new();
            let pause = |s| thread::sleep(Duration::from_secs(s));
            pause(5);
            for (daemon, secs) in [("osd.0", 5), ("mon.a", 8), ("osd.0", 15)] {
                c.signal(daemon, libc::SIGSTOP);
                pause(secs);
                c.signal(daemon, libc::SIGCONT);
                events.push(format!("SIGSTOP {daemon} for {secs} s"));
                pause(4);
            }
            for _ in 0..2 {
                let took = c.kill_and_restart("osd.0", Duration::from_secs(3));
                events.push(format!("SIGKILL osd.0 + restart ({took:.1?})"));
                pause(4);
            }
            events
        })
    };
    let mut runs = 0;
    while !schedule.is_finished() || runs == 0 {
        let t0 = Instant::now();
        if let Err(e) = run_fio(&img) {
            let bt = match mount.running_pid() {
                Some(pid) => backtrace(pid),
                None => "rbdfs is gone".into(),
            };
            panic!(
                "fio run {runs} under faults: {e}\n{bt}\n{}",
                tail(&mount.log(), 80)
            );
        }
        runs += 1;
        report(&format!(
            "[osd_faults] fio run {runs} passed in {:.1?}",
            t0.elapsed()
        ));
    }
    let events = schedule.join().unwrap();
    report(&format!("[osd_faults] faults: {}", events.join(", ")));
    // A clean pass after the last restart: everything verifies.
    run_fio(&img)
        .unwrap_or_else(|e| panic!("fio after the faults: {e}\n{}", tail(&mount.log(), 80)));
    match mount.finish(Duration::from_secs(60)) {
        Ok(st) if st.success() => {}
        r => panic!("unmount after the fio runs: {r:?}\n{}", mount.log()),
    }

    // The OSD stays stopped past rados_timeout: calls fail, nothing hangs.
    let mut mount = RawMount::new(&cluster.conf, "rbd", &["-o", "rados_timeout=10"]);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(mount.path("faults"))
        .unwrap();
    read_full_at(&f, 0, 4096)
        .unwrap_or_else(|e| panic!("read before the stop: {e}\n{}", mount.log()));
    cluster.signal("osd.0", libc::SIGSTOP);
    // On the handle opened before: a read of another object (not cached),
    // then a write and an fsync (the write may only fill the cache, after
    // taking the exclusive lock; then the fsync must report the failed
    // write-back). Then a fresh open, which refreshes the header.
    let f = Arc::new(f);
    let path = mount.path("faults");
    type Step = (&'static str, Duration, Option<io::Error>);
    let probes = within(Duration::from_secs(200), move || {
        let mut steps: Vec<Step> = Vec::new();
        let mut step = |name, r: &dyn Fn() -> io::Result<()>| {
            let t = Instant::now();
            let e = r().err();
            steps.push((name, t.elapsed(), e));
        };
        step("read", &|| read_full_at(&f, 100 * MIB, 4096).map(drop));
        step("write", &|| f.write_all_at(&[7; 4096], 50 * MIB));
        step("fsync", &|| f.sync_all());
        step("open", &|| File::open(&path).map(drop));
        steps
    });
    let t0 = Instant::now();
    let finished = mount.finish(Duration::from_secs(60));
    let umount_took = t0.elapsed();
    cluster.signal("osd.0", libc::SIGCONT);
    let log = mount.log();
    let problems: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    report(&format!(
        "[osd_faults] OSD stopped, rados_timeout=10: {probes:?}; unmount -> {finished:?} after {umount_took:.1?}\n\
         rbdfs warnings/errors:\n{}",
        problems.join("\n")
    ));
    let Some(steps) = probes else {
        panic!("I/O with the OSD stopped still blocked after 200 s\n{log}");
    };
    let timed_out = |e: &Option<io::Error>| {
        e.as_ref()
            .and_then(|e| e.raw_os_error())
            .is_some_and(|c| c == libc::EIO || c == libc::ETIMEDOUT)
    };
    for (name, took, _) in &steps {
        // A call may wait for a few RADOS operations to time out in turn.
        assert!(
            *took < Duration::from_secs(45),
            "{name} took {took:?}\n{log}"
        );
    }
    assert!(
        timed_out(&steps[0].2),
        "read with the OSD stopped: {:?}\n{log}",
        steps[0]
    );
    assert!(
        timed_out(&steps[1].2) || timed_out(&steps[2].2),
        "write+fsync with the OSD stopped: {:?}\n{log}",
        &steps[1..3]
    );
    if let Err(e) = finished {
        panic!("unmount with the OSD stopped: {e}\n{log}");
    }
    report(&format!("[osd_faults] passed in {:.1?}", t_start.elapsed()));
}

// ---------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------
