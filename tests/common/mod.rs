//! Shared harness for rbdfs integration tests: talks to the local test
//! cluster through the `rbd`/`rados` CLIs (the oracle), mounts rbdfs as a
//! foreground child process, and offers a seeded PRNG plus byte/errno checks.
//!
//! Environment:
//! - `RBDFS_TEST_CONF`: cluster conf (default `/var/tmp/rbdfs-cluster/ceph.conf`).
//! - `CI=true`: an unreachable cluster or a failed mount is a test failure;
//!   otherwise cluster tests print "SKIPPED" and return.
//! - `RBDFS_TEST_SEED`: reproduce a run's random data/offsets.
#![allow(dead_code)] // each test binary uses a different subset

pub mod json;

use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rbdfs::store::rados::{ConnectOptions, RadosCluster, RadosPool};
use tempfile::TempDir;

/// The binary under test.
pub const RBDFS: &str = env!("CARGO_BIN_EXE_rbdfs");
/// The pool the tests use (created by `contrib/cluster.sh start`).
pub const POOL: &str = "rbd";
pub const DEFAULT_CONF: &str = "/var/tmp/rbdfs-cluster/ceph.conf";
/// Upper bound for one rbd/rados CLI call: a hung cluster must fail the test,
/// not hang it.
const CLI_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a foreground mount may take to appear in mountinfo.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long rbdfs may take to exit after its mount went away / SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

pub fn ci() -> bool {
    matches!(
        std::env::var("CI")
            .map(|v| v.to_ascii_lowercase())
            .as_deref(),
        Ok("true" | "1" | "yes")
    )
}

pub fn conf_path() -> PathBuf {
    std::env::var_os("RBDFS_TEST_CONF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONF))
}

fn test_name() -> String {
    thread::current().name().unwrap_or("?").to_string()
}

// ---------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------

/// Runs `cmd` to completion with stdout/stderr captured in anonymous temp
/// files rather than pipes: a daemonising child (rbdfs without `-f`) may keep
/// the inherited descriptors open, which would make `Command::output` block
/// forever. Kills the process and returns Err on timeout.
pub fn run_timeout(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    let mut out = tempfile::tempfile().expect("temp file for stdout");
    let mut err = tempfile::tempfile().expect("temp file for stderr");
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .spawn()
        .map_err(|e| format!("cannot spawn {desc}: {e}"))?;
    let status = wait_timeout(&mut child, limit);
    let read_back = |f: &mut File| {
        let mut v = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut v).unwrap();
        v
    };
    let (stdout, stderr) = (read_back(&mut out), read_back(&mut err));
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "{desc} did not finish within {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            ))
        }
    }
}

/// Polls `child` until it exits or `limit` passes (None = still running).
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Kills `child` if it has not exited within `limit`, panicking with `log`.
pub fn wait_or_kill(child: &mut Child, limit: Duration, what: &str, log: &Path) -> ExitStatus {
    match wait_timeout(child, limit) {
        Some(st) => st,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what}: still running after {limit:?}, killed\n{}",
                log_text(log)
            );
        }
    }
}

/// Where `spawn_rbdfs` sends the child's stdout (stderr goes to `log`).
pub fn stdout_path(log: &Path) -> PathBuf {
    log.with_extension("stdout")
}

/// The child's stderr (and stdout, if any) framed for a panic message.
pub fn log_text(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_else(|e| format!("(no log: {e})"));
    let out = fs::read_to_string(stdout_path(log)).unwrap_or_default();
    let out = if out.is_empty() {
        String::new()
    } else {
        format!("----- stdout -----\n{out}\n")
    };
    format!(
        "----- rbdfs stderr {} -----\n{text}\n{out}----- end of rbdfs output -----",
        log.display()
    )
}

fn check_output(what: &str, out: Result<Output, String>) -> Output {
    let out = out.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

// ---------------------------------------------------------------------------
// The cluster (oracle side)
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Cluster {
    conf: PathBuf,
}

impl Cluster {
    /// The test cluster if it answers. Probed once per process. When it does
    /// not: panics under `CI=true`, otherwise prints a SKIPPED banner and
    /// returns None (the caller then returns early).
    pub fn get() -> Option<Cluster> {
        static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
        let conf = conf_path();
        match PROBE.get_or_init(|| probe(&conf)) {
            Ok(()) => Some(Cluster { conf }),
            Err(why) if ci() => panic!(
                "no cluster at {} ({why}); CI=true makes this fatal. \
                 Start one with `contrib/cluster.sh start` or set RBDFS_TEST_CONF.",
                conf.display()
            ),
            Err(why) => {
                // Straight to fd 2: libtest captures eprintln! of passing
                // tests, and a skip must never be silent.
                let _ = writeln!(
                    io::stderr(),
                    "\n*** [{}] SKIPPED: no cluster at {} (set CI=true to make this fatal)\n*** reason: {why}\n",
                    test_name(),
                    conf.display()
                );
                None
            }
        }
    }

    pub fn conf(&self) -> &Path {
        &self.conf
    }

    fn cli(&self, tool: &str, args: &[&str]) -> Command {
        let mut c = Command::new(tool);
        c.arg("-c").arg(&self.conf).args(args);
        // Needed for every format-1 create/import; harmless elsewhere.
        c.env("RBD_FORCE_ALLOW_V1", "1");
        c
    }

    /// Runs `rbd ARGS`, panicking with stderr unless it succeeds.
    pub fn rbd(&self, args: &[&str]) -> Output {
        check_output(&format!("rbd {}", args.join(" ")), self.rbd_try(args))
    }

    /// Runs `rbd ARGS` and returns whatever happened (Err only on timeout).
    pub fn rbd_try(&self, args: &[&str]) -> Result<Output, String> {
        run_timeout(&mut self.cli("rbd", args), CLI_TIMEOUT)
    }

    /// Runs `rados -p rbd ARGS`, panicking unless it succeeds.
    pub fn rados(&self, args: &[&str]) -> Output {
        check_output(&format!("rados {}", args.join(" ")), self.rados_try(args))
    }

    pub fn rados_try(&self, args: &[&str]) -> Result<Output, String> {
        let mut full = vec!["-p", POOL];
        full.extend_from_slice(args);
        run_timeout(&mut self.cli("rados", &full), CLI_TIMEOUT)
    }

    /// A librados client of the test cluster (rbdfs's own bindings) and the
    /// test pool: for tests that look at RADOS without spawning a process.
    pub fn librados(&self) -> (Arc<RadosCluster>, Arc<RadosPool>) {
        let rados = RadosCluster::connect(&ConnectOptions {
            conf: Some(self.conf.clone()),
            timeout_secs: 30,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("cluster answers the CLI but not librados: {e}"));
        let pool = rados.open_pool(POOL).expect("open pool rbd");
        (rados, Arc::new(pool))
    }

    /// Runs `ceph ARGS` (monitor commands), panicking unless it succeeds.
    pub fn ceph(&self, args: &[&str]) -> Output {
        check_output(
            &format!("ceph {}", args.join(" ")),
            run_timeout(&mut self.cli("ceph", args), CLI_TIMEOUT),
        )
    }

    /// `rbd create` of an empty format-1 image.
    pub fn create_v1_image(&self, name: &str, size: u64, order: u8) {
        // rbd defaults to MiB when no unit is given.
        let size = if size.is_multiple_of(1 << 20) {
            format!("{}M", size >> 20)
        } else {
            format!("{size}B")
        };
        let spec = spec(name);
        self.rbd(&[
            "create",
            "--image-format",
            "1",
            "--order",
            &order.to_string(),
            "--size",
            &size,
            &spec,
        ]);
    }

    /// `rbd import` of `data` as a format-1 image (image size = data length).
    pub fn import_v1(&self, name: &str, data: &[u8], order: u8) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(data).unwrap();
        f.flush().unwrap();
        let path = f.path().to_str().unwrap().to_string();
        let spec = spec(name);
        self.rbd(&[
            "import",
            "--no-progress",
            "--image-format",
            "1",
            "--order",
            &order.to_string(),
            &path,
            &spec,
        ]);
    }

    /// The image's bytes as `rbd export` sees them.
    pub fn export(&self, name: &str) -> Vec<u8> {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("export.img");
        self.rbd(&[
            "export",
            "--no-progress",
            &spec(name),
            path.to_str().unwrap(),
        ]);
        fs::read(&path).unwrap()
    }

    /// Image size in bytes from `rbd info --format json`.
    pub fn image_size(&self, name: &str) -> u64 {
        let out = self.rbd(&["info", "--format", "json", &spec(name)]);
        let text = String::from_utf8_lossy(&out.stdout);
        json_u64(&text, "size").unwrap_or_else(|| panic!("no size in rbd info output: {text}"))
    }

    /// `rbd ls` of the pool.
    pub fn ls(&self) -> Vec<String> {
        let out = self.rbd(&["ls", POOL]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    }

    pub fn remove_image(&self, name: &str) {
        self.rbd(&["rm", "--no-progress", &spec(name)]);
    }

    pub fn get_object(&self, obj: &str) -> Vec<u8> {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("obj");
        self.rados(&["get", obj, path.to_str().unwrap()]);
        fs::read(&path).unwrap()
    }

    /// Replaces a whole object (`rados put` writes the file as the full object).
    pub fn put_object(&self, obj: &str, data: &[u8]) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(data).unwrap();
        f.flush().unwrap();
        self.rados(&["put", obj, f.path().to_str().unwrap()]);
    }
}

/// Round trip to the cluster; `timeout` bounds it because a client with no
/// reachable monitor otherwise waits for `client mount timeout` (300 s).
fn probe(conf: &Path) -> Result<(), String> {
    if !conf.exists() {
        return Err(format!("{} does not exist", conf.display()));
    }
    let mut cmd = Command::new("timeout");
    cmd.args(["15", "rados", "-c"]).arg(conf).arg("lspools");
    let out = run_timeout(&mut cmd, Duration::from_secs(30))?;
    if !out.status.success() {
        return Err(format!(
            "`rados lspools` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let pools = String::from_utf8_lossy(&out.stdout);
    if !pools.lines().any(|l| l.trim() == POOL) {
        return Err(format!(
            "cluster has no pool `{POOL}` (pools: {})",
            pools.trim()
        ));
    }
    Ok(())
}

pub fn spec(name: &str) -> String {
    format!("{POOL}/{name}")
}

/// Minimal extraction of `"key": <integer>` from flat JSON (no serde here).
fn json_u64(text: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\"");
    let rest = &text[text.find(&pat)? + pat.len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// A name no other test (in this or a parallel process) uses:
/// `t-<tag>-<pid>-<start stamp>-<counter>`. The stamp guards against leftovers
/// of an earlier crashed run that had the same pid.
pub fn unique_name(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static STAMP: OnceLock<u64> = OnceLock::new();
    let stamp = *STAMP.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            % 1_000_000
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("t-{tag}-{}-{stamp}-{n}", std::process::id())
}

/// Images (and object restorations) to clean up when the test ends, passing
/// or panicking. Declare it BEFORE any `Mount` so the mount is dropped
/// (unmounted) first: `rbd rm` refuses images that still have watchers.
pub struct Scratch {
    cluster: Cluster,
    images: Vec<String>,
    restores: Vec<(String, Vec<u8>)>,
}

impl Scratch {
    pub fn new(cluster: &Cluster) -> Scratch {
        Scratch {
            cluster: cluster.clone(),
            images: Vec::new(),
            restores: Vec::new(),
        }
    }

    /// A fresh unique image name that will be removed on drop.
    pub fn name(&mut self, tag: &str) -> String {
        let n = unique_name(tag);
        self.images.push(n.clone());
        n
    }

    /// Registers an exact name (e.g. prefix-derived) for removal on drop.
    pub fn adopt(&mut self, name: &str) -> String {
        self.images.push(name.to_string());
        name.to_string()
    }

    /// Puts `data` back into `obj` before removing images (used to repair a
    /// deliberately corrupted header so `rbd rm` can work).
    pub fn restore_object_on_drop(&mut self, obj: &str, data: Vec<u8>) {
        self.restores.push((obj.to_string(), data));
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for (obj, data) in self.restores.drain(..) {
            let mut f = tempfile::NamedTempFile::new().unwrap();
            f.write_all(&data).unwrap();
            let r = self
                .cluster
                .rados_try(&["put", &obj, f.path().to_str().unwrap()]);
            if !matches!(&r, Ok(o) if o.status.success()) {
                eprintln!("warning: could not restore object {obj}: {r:?}");
            }
        }
        for name in self.images.drain(..) {
            match self.cluster.rbd_try(&["rm", "--no-progress", &spec(&name)]) {
                Ok(o) if o.status.success() => {}
                // Never created (test failed early) is fine.
                Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No such file") => {}
                r => eprintln!("warning: could not remove image {name}: {r:?}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Mounts
// ---------------------------------------------------------------------------

/// An entry of /proc/self/mountinfo.
#[derive(Debug, Clone)]
pub struct MountEntry {
    pub fstype: String,
    pub source: String,
    pub mount_opts: String,
    pub super_opts: String,
}

/// The (topmost) mount at `dir`, if any. `dir` must be canonical.
pub fn mount_entry(dir: &Path) -> Option<MountEntry> {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let want = dir.to_str()?;
    let mut found = None;
    for line in info.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() >= 6 && post.len() >= 3 && unescape_mountinfo(pre[4]) == want {
            found = Some(MountEntry {
                fstype: post[0].into(),
                source: unescape_mountinfo(post[1]),
                mount_opts: pre[5].into(),
                super_opts: post[2].into(),
            });
        }
    }
    found
}

/// True if a FUSE file system (`fuse` or `fuse.<subtype>`) is mounted at `dir`.
pub fn is_fuse_mounted(dir: &Path) -> bool {
    mount_entry(dir).is_some_and(|e| e.fstype == "fuse" || e.fstype.starts_with("fuse."))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push(u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts `dir`: `fusermount3 -u`, then `umount`, then lazy `umount -l`.
pub fn unmount(dir: &Path) -> Result<(), String> {
    let mut errors = Vec::new();
    for (tool, args) in [
        ("fusermount3", &["-u"][..]),
        ("umount", &[][..]),
        ("umount", &["-l"][..]),
    ] {
        if !is_fuse_mounted(dir) {
            return Ok(());
        }
        let mut cmd = Command::new(tool);
        cmd.args(args).arg(dir);
        match run_timeout(&mut cmd, Duration::from_secs(30)) {
            Ok(o) if o.status.success() => {}
            Ok(o) => errors.push(format!(
                "{tool} {args:?}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => errors.push(e),
        }
    }
    if is_fuse_mounted(dir) {
        Err(errors.join("; "))
    } else {
        Ok(())
    }
}

/// A working directory with an empty mountpoint `mnt/` and a log file next to
/// it (never inside the mount).
pub struct MountDir {
    work: Option<TempDir>,
    pub mnt: PathBuf,
    pub log: PathBuf,
}

impl MountDir {
    pub fn new() -> MountDir {
        let work = TempDir::new().expect("temp dir");
        let base = work.path().canonicalize().unwrap();
        let mnt = base.join("mnt");
        fs::create_dir(&mnt).unwrap();
        MountDir {
            mnt,
            log: base.join("rbdfs.log"),
            work: Some(work),
        }
    }
}

impl Drop for MountDir {
    fn drop(&mut self) {
        // Whatever happened, never let TempDir's recursive delete walk into a
        // live mount (it would try to unlink the images).
        let _ = unmount(&self.mnt);
        if is_fuse_mounted(&self.mnt) {
            let kept = self.work.take().unwrap().keep();
            eprintln!(
                "warning: {} is still mounted; leaving {} in place",
                self.mnt.display(),
                kept.display()
            );
        }
    }
}

/// Spawns `rbdfs ARGS` with stderr going to `log` and stdout next to it.
/// `verbose`: RUST_LOG defaults to info so the log is useful when printed on
/// failure; without it RUST_LOG is removed, so stderr holds only what rbdfs
/// reports by default (tests that check its error messages want that).
pub fn spawn_rbdfs<S: AsRef<OsStr>>(args: &[S], log: &Path, verbose: bool) -> Child {
    let err = File::create(log).expect("create log");
    let out = File::create(stdout_path(log)).expect("create stdout log");
    let mut cmd = Command::new(RBDFS);
    cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    if !verbose {
        cmd.env_remove("RUST_LOG");
    } else if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {RBDFS}: {e}"))
}

/// A live foreground `rbdfs mount -f` of the `rbd` pool.
/// Drop unmounts it, waits for rbdfs to exit 0 and fails loudly otherwise.
pub struct Mount {
    child: Option<Child>,
    dir: MountDir,
}

impl Mount {
    /// `rbdfs mount -f -c CONF EXTRA.. rbd MNT`; waits until it is live.
    pub fn new(cluster: &Cluster, extra: &[&str]) -> Mount {
        Self::with_pool(cluster, extra, POOL)
    }

    pub fn with_pool(cluster: &Cluster, extra: &[&str], pool: &str) -> Mount {
        let dir = MountDir::new();
        let mut args: Vec<&OsStr> = vec![
            "mount".as_ref(),
            "-f".as_ref(),
            "-c".as_ref(),
            cluster.conf().as_os_str(),
        ];
        args.extend(extra.iter().map(|a| OsStr::new(*a)));
        args.push(pool.as_ref());
        args.push(dir.mnt.as_os_str());
        let mut child = spawn_rbdfs(&args, &dir.log, true);
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        while !is_fuse_mounted(&dir.mnt) {
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "rbdfs {args:?} exited before mounting ({st})\n{}",
                    log_text(&dir.log)
                );
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "rbdfs {args:?} not mounted after {MOUNT_TIMEOUT:?}\n{}",
                    log_text(&dir.log)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        Mount {
            child: Some(child),
            dir,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir.mnt
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.mnt.join(name)
    }

    pub fn log(&self) -> String {
        log_text(&self.dir.log)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("rbdfs already reaped").id()
    }

    /// Names in the mount root.
    pub fn list(&self) -> Vec<String> {
        fs::read_dir(self.dir())
            .unwrap_or_else(|e| panic!("readdir {}: {e}\n{}", self.dir().display(), self.log()))
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }

    /// Sends `sig` to rbdfs and waits up to `limit` for it to exit; the
    /// caller checks the status. Drop then only cleans up leftovers.
    pub fn signal_and_wait(&mut self, sig: i32, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("rbdfs already reaped");
        let r = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        assert_eq!(r, 0, "kill: {}", io::Error::last_os_error());
        let st = wait_or_kill(child, limit, "rbdfs after signal", &self.dir.log);
        self.child = None;
        st
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let mut problems = Vec::new();
        if let Some(st) = child.try_wait().unwrap() {
            problems.push(format!("rbdfs exited while still in use ({st})"));
        }
        if let Err(e) = unmount(&self.dir.mnt) {
            problems.push(format!("unmount failed: {e}"));
        }
        match wait_timeout(&mut child, EXIT_TIMEOUT) {
            Some(st) if st.success() => {}
            Some(st) => problems.push(format!("rbdfs exited with {st} after unmount")),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                problems.push(format!(
                    "rbdfs still running {EXIT_TIMEOUT:?} after unmount; killed"
                ));
            }
        }
        if thread::panicking() {
            // The test already failed: show what rbdfs said, but don't double-panic.
            eprintln!("{}\n{}", problems.join("\n"), self.log());
        } else if !problems.is_empty() {
            panic!("{}\n{}", problems.join("\n"), self.log());
        }
    }
}

/// Opens an image file for reading and writing, panicking with the path.
pub fn open_rw(p: &Path) -> File {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap_or_else(|e| panic!("open {} rw: {e}", p.display()))
}

/// Pids of processes whose command line contains `needle` as one argument
/// (finds a daemonised rbdfs by its mountpoint).
pub fn pids_with_arg(needle: &Path) -> Vec<u32> {
    let needle = needle.as_os_str().as_encoded_bytes();
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline"))
            && cmdline.split(|&b| b == 0).any(|a| a == needle)
        {
            pids.push(pid);
        }
    }
    pids
}

// ---------------------------------------------------------------------------
// Data, I/O and checks
// ---------------------------------------------------------------------------

/// `RBDFS_TEST_SEED` (decimal or 0x-hex) or the clock.
pub fn env_seed() -> u64 {
    match std::env::var("RBDFS_TEST_SEED") {
        Ok(s) => {
            let s = s.trim();
            match s.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => s.parse(),
            }
            .expect("RBDFS_TEST_SEED must be an integer")
        }
        Err(_) => {
            let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32)
        }
    }
}

/// SplitMix64: tiny, deterministic, good enough for test data and offsets.
pub struct Rng(u64);

impl Rng {
    /// Seeded by [`env_seed`]; prints the seed so a failing run can be
    /// replayed.
    pub fn new() -> Rng {
        let seed = env_seed();
        eprintln!(
            "[{}] seed = {seed:#x} (set RBDFS_TEST_SEED={seed:#x} to reproduce)",
            test_name()
        );
        Rng(seed)
    }

    /// A generator whose seed the caller chose (and reports itself).
    pub fn from_seed(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 for n = 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
}

/// Reads up to `len` bytes at `off`, looping over short reads until EOF.
pub fn read_full_at(f: &File, off: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; len];
    let mut done = 0;
    while done < len {
        match f.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

/// Byte-exact comparison that reports the first difference instead of
/// dumping megabytes.
#[track_caller]
pub fn assert_bytes_eq(actual: &[u8], expected: &[u8], what: &str) {
    if actual == expected {
        return;
    }
    let first = actual.iter().zip(expected).position(|(a, b)| a != b);
    let ndiff = actual.iter().zip(expected).filter(|(a, b)| a != b).count();
    match first {
        Some(i) => panic!(
            "{what}: {ndiff} bytes differ, first at offset {i} (got {:#04x}, want {:#04x}); lengths {} vs {}",
            actual[i],
            expected[i],
            actual.len(),
            expected.len()
        ),
        None => panic!(
            "{what}: length {} but expected {} (common prefix equal)",
            actual.len(),
            expected.len()
        ),
    }
}

/// Asserts `r` failed with one of `errnos`.
#[track_caller]
pub fn assert_errno<T: std::fmt::Debug>(r: io::Result<T>, errnos: &[i32], what: &str) {
    match r {
        Ok(v) => panic!("{what}: succeeded ({v:?}), expected errno in {errnos:?}"),
        Err(e) => assert!(
            e.raw_os_error().is_some_and(|c| errnos.contains(&c)),
            "{what}: failed with {e} ({:?}), expected errno in {errnos:?}",
            e.raw_os_error()
        ),
    }
}

// ---------------------------------------------------------------------------
// Snapshot cleanup
// ---------------------------------------------------------------------------

/// `rbd snap purge` of the registered images on drop: `rbd rm` (what
/// `Scratch` runs) refuses an image that still has snapshots. Declare it
/// AFTER the `Scratch` and BEFORE any `Mount`, so it runs after the unmount
/// and before the removal.
pub struct SnapPurge {
    cluster: Cluster,
    images: Vec<String>,
}

impl SnapPurge {
    pub fn new(cluster: &Cluster) -> SnapPurge {
        SnapPurge {
            cluster: cluster.clone(),
            images: Vec::new(),
        }
    }

    /// Registers `name` (already registered with a `Scratch`); returns it.
    pub fn add(&mut self, name: String) -> String {
        self.images.push(name.clone());
        name
    }
}

impl Drop for SnapPurge {
    fn drop(&mut self) {
        for name in self.images.drain(..) {
            let r = self
                .cluster
                .rbd_try(&["snap", "purge", "--no-progress", &spec(&name)]);
            match r {
                Ok(o) if o.status.success() => {}
                Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No such file") => {}
                r => eprintln!("warning: could not purge snapshots of {name}: {r:?}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Extended attributes
// ---------------------------------------------------------------------------

pub fn cstr(s: &[u8]) -> CString {
    CString::new(s).unwrap()
}

/// getxattr (`name`) or listxattr (None): size query, then the value.
pub fn xattr(p: &Path, name: Option<&str>) -> io::Result<Vec<u8>> {
    let (cp, cn) = (
        cstr(p.as_os_str().as_bytes()),
        cstr(name.unwrap_or("").as_bytes()),
    );
    let call = |buf: &mut [u8]| unsafe {
        let (ptr, len) = (buf.as_mut_ptr(), buf.len());
        match name {
            Some(_) => libc::getxattr(cp.as_ptr(), cn.as_ptr(), ptr.cast(), len),
            None => libc::listxattr(cp.as_ptr(), ptr.cast(), len),
        }
    };
    let n = call(&mut []);
    let mut buf = vec![0u8; n.max(0) as usize];
    let m = if n < 0 { n } else { call(&mut buf) };
    if m < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(m as usize);
    Ok(buf)
}
