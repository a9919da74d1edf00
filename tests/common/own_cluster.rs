//! A throwaway cluster of a test's own (`contrib/cluster.sh`), for the
//! tests that stop, kill, blocklist or fill its daemons: doing that to the
//! shared cluster would break the tests running in parallel. Also a
//! foreground rbdfs mounted on it, and fio with verification as the
//! workload that runs through the faults.

use std::fs;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::thread;
use std::time::{Duration, Instant};

use super::mount::{MountDir, is_fuse_mounted, spawn_rbdfs, unmount};
use super::process::{log_text, run_timeout, wait_timeout};

pub const CLUSTER_SH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/cluster.sh");

/// The private cluster, destroyed on drop even when the test panics.
/// Derefs to its handle, which runs the CLIs and signals the daemons.
pub struct OwnCluster {
    handle: OwnClusterHandle,
}

/// What a thread needs to run CLIs on the private cluster or signal and
/// restart its daemons while the test runs; cloning it never destroys the
/// cluster (only the `OwnCluster` guard does).
#[derive(Clone)]
pub struct OwnClusterHandle {
    pub dir: PathBuf,
    pub conf: PathBuf,
}

impl OwnCluster {
    /// `contrib/cluster.sh start START_ARGS /var/tmp/rbdfs-TAG-PID`, its
    /// monitor on a port derived from `port_base` (each suite has its own
    /// base, so suites running at once do not collide). A panic if none can
    /// be made: a missing prerequisite is a failure, never a silent pass.
    pub fn start(tag: &str, port_base: u32, start_args: &[&str]) -> OwnCluster {
        let dir = PathBuf::from(format!("/var/tmp/rbdfs-{tag}-{}", std::process::id()));
        let mut why = String::from("ceph-mon not installed");
        if Command::new("ceph-mon").arg("--version").output().is_ok() {
            // The script refuses a mon port in use: try a few.
            for attempt in 0..4u32 {
                let port = port_base + ((std::process::id() + attempt * 7) % 40) * 50;
                match start_cluster(&dir, port, start_args) {
                    Ok(()) => {
                        let conf = dir.join("ceph.conf");
                        let handle = OwnClusterHandle { dir, conf };
                        return OwnCluster { handle };
                    }
                    Err(e) => why = e,
                }
                let _ = Command::new(CLUSTER_SH).arg("destroy").arg(&dir).output();
                if !why.contains("already in use") {
                    break;
                }
            }
        }
        panic!(
            "[{tag}] cannot start a private cluster in {}: {why}",
            dir.display()
        );
    }

    pub fn handle(&self) -> &OwnClusterHandle {
        &self.handle
    }
}

/// One `cluster.sh start` with the monitor on `port`; Err says why not.
fn start_cluster(dir: &Path, port: u32, start_args: &[&str]) -> Result<(), String> {
    let mut cmd = Command::new(CLUSTER_SH);
    cmd.arg("start")
        .args(start_args)
        .arg(dir)
        .env("RBDFS_CLUSTER_PORT", port.to_string());
    let o = run_timeout(&mut cmd, Duration::from_secs(300))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

impl Deref for OwnCluster {
    type Target = OwnClusterHandle;

    fn deref(&self) -> &OwnClusterHandle {
        &self.handle
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let dir = &self.handle.dir;
        // A stopped daemon would only take SIGTERM after 30 s of waiting.
        for pid in daemon_pids(dir) {
            // SAFETY: kill(2) takes plain integers and touches no memory of ours.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
        let mut cmd = Command::new(CLUSTER_SH);
        cmd.arg("destroy").arg(dir);
        if let Err(e) = run_timeout(&mut cmd, Duration::from_secs(120)) {
            eprintln!("warning: could not destroy {}: {e}", dir.display());
        }
    }
}

/// The pids in the cluster's `run/*.pid` files (the daemons cluster.sh
/// started), for cleanup: unreadable files are skipped.
fn daemon_pids(dir: &Path) -> Vec<i32> {
    let Ok(entries) = fs::read_dir(dir.join("run")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
        .filter_map(|e| fs::read_to_string(e.path()).ok()?.trim().parse().ok())
        .collect()
}

impl OwnClusterHandle {
    /// Runs `TOOL -c CONF ARGS`; Err (with stderr) unless it succeeds.
    pub fn tool(&self, tool: &str, args: &[&str]) -> Result<Output, String> {
        let mut cmd = Command::new(tool);
        cmd.arg("-c").arg(&self.conf).args(args);
        let o = run_timeout(&mut cmd, Duration::from_secs(180))?;
        if o.status.success() {
            Ok(o)
        } else {
            Err(format!(
                "{tool} {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            ))
        }
    }

    /// Runs `rbd ARGS`, panicking unless it succeeds.
    pub fn rbd(&self, args: &[&str]) -> Output {
        self.tool("rbd", args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `ceph ARGS`, panicking unless it succeeds; its stdout.
    pub fn ceph(&self, args: &[&str]) -> String {
        let out = self.tool("ceph", args).unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `rbd export` of `spec` (`POOL/IMAGE[@SNAP]`).
    pub fn export(&self, spec: &str) -> Vec<u8> {
        let f = tempfile::NamedTempFile::new().unwrap();
        let path = f.path().to_str().unwrap().to_string();
        // rbd export refuses to overwrite: keep only the unique name.
        fs::remove_file(&path).unwrap();
        self.rbd(&["export", "--no-progress", spec, &path]);
        fs::read(&path).unwrap()
    }

    /// The pid of `daemon` (`osd.0`, `mon.a`, ...).
    pub fn pid(&self, daemon: &str) -> i32 {
        let p = self.dir.join(format!("run/{daemon}.pid"));
        fs::read_to_string(&p).unwrap().trim().parse().unwrap()
    }

    pub fn signal(&self, daemon: &str, sig: i32) {
        assert_eq!(
            // SAFETY: kill(2) takes plain integers and touches no memory of ours.
            unsafe { libc::kill(self.pid(daemon), sig) },
            0,
            "kill {daemon}"
        );
    }

    /// SIGKILLs `daemon`, waits until it is gone, waits `down`, then starts
    /// it again from its data (cluster.sh waits until I/O works). Returns
    /// how long the restart took.
    pub fn kill_and_restart(&self, daemon: &str, down: Duration) -> Duration {
        let pid = self.pid(daemon);
        self.signal(daemon, libc::SIGKILL);
        while Path::new(&format!("/proc/{pid}")).exists() {
            thread::sleep(Duration::from_millis(50));
        }
        thread::sleep(down);
        let t0 = Instant::now();
        let mut cmd = Command::new(CLUSTER_SH);
        cmd.arg("start").arg(&self.dir);
        let o = run_timeout(&mut cmd, Duration::from_secs(300)).unwrap();
        assert!(
            o.status.success(),
            "restart of {daemon}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        t0.elapsed()
    }
}

/// A foreground rbdfs on a cluster the harness's `Mount` cannot name (it
/// only knows the shared one); unmounted on drop, and the caller decides
/// what a clean end is (`finish`).
pub struct RawMount {
    child: Option<Child>,
    dir: MountDir,
}

impl RawMount {
    /// `rbdfs mount -f -v -c CONF EXTRA.. POOL MNT`; waits until it is live.
    pub fn new(conf: &Path, pool: &str, extra: &[&str]) -> RawMount {
        let dir = MountDir::new();
        let mut args: Vec<String> = vec!["mount".into(), "-f".into(), "-v".into(), "-c".into()];
        args.push(conf.to_str().unwrap().into());
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend([pool.to_string(), dir.mnt.to_str().unwrap().to_string()]);
        let mut child = spawn_rbdfs(&args, &dir.log, true);
        let t0 = Instant::now();
        while !is_fuse_mounted(&dir.mnt) {
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "rbdfs exited before mounting ({st})\n{}",
                    log_text(&dir.log)
                );
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "not mounted\n{}",
                log_text(&dir.log)
            );
            thread::sleep(Duration::from_millis(50));
        }
        RawMount {
            child: Some(child),
            dir,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.mnt.join(name)
    }

    pub fn log(&self) -> String {
        log_text(&self.dir.log)
    }

    /// rbdfs's pid while it still runs; None once it has exited.
    pub fn running_pid(&mut self) -> Option<u32> {
        let child = self.child.as_mut().expect("rbdfs already reaped");
        match child.try_wait().unwrap() {
            None => Some(child.id()),
            Some(_) => None,
        }
    }

    /// `fusermount3 -u`, then rbdfs's exit; Err if either takes longer
    /// than `limit`.
    pub fn finish(&mut self, limit: Duration) -> Result<ExitStatus, String> {
        let mut cmd = Command::new("fusermount3");
        cmd.arg("-u").arg(&self.dir.mnt);
        let o = run_timeout(&mut cmd, limit)?;
        if !o.status.success() {
            return Err(format!(
                "fusermount3 -u: {}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        let child = self.child.as_mut().unwrap();
        let st = wait_timeout(child, limit)
            .ok_or(format!("rbdfs still running {limit:?} after the unmount"))?;
        self.child = None;
        Ok(st)
    }
}

impl Drop for RawMount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = unmount(&self.dir.mnt);
            if wait_timeout(&mut child, Duration::from_secs(30)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Fails the test unless fio can run: the fault tests need it.
pub fn assert_fio_installed() {
    assert!(
        Command::new("fio").arg("--version").output().is_ok(),
        "fio is not installed (contrib/quickstart.sh and .ci/run install it)"
    );
}

/// One fio run with crc32c verification: 3 jobs on disjoint regions of
/// `region` (e.g. "48M") each (overlapping jobs would overwrite each
/// other's verify headers); Err with fio's output on any I/O or verify
/// error, or if it takes longer than `limit`.
pub fn run_fio_verify(file: &Path, region: &str, limit: Duration) -> Result<String, String> {
    let mut cmd = Command::new("fio");
    cmd.arg("--name=v")
        .arg(format!("--filename={}", file.display()))
        .args([
            "--direct=1",
            "--ioengine=libaio",
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=8",
            "--numjobs=3",
        ])
        .arg(format!("--size={region}"))
        .arg(format!("--offset_increment={region}"))
        .args(["--group_reporting", "--verify=crc32c", "--verify_fatal=1"])
        .args(["--do_verify=1", "--verify_state_save=0"]);
    let o = run_timeout(&mut cmd, limit)?;
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    let errs = text
        .lines()
        .any(|l| l.contains("err=") && !l.contains("err= 0"));
    if !o.status.success() || errs || text.contains("verify:") || text.contains("bad magic") {
        return Err(format!("fio failed ({}):\n{text}", o.status));
    }
    Ok(text)
}
