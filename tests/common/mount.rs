//! Mounts: mountinfo, unmounting, and rbdfs as a foreground child process.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::cluster::{Cluster, POOL};
use super::process::{log_text, run_timeout, stdout_path, wait_or_kill, wait_timeout};

/// The binary under test.
pub const RBDFS: &str = env!("CARGO_BIN_EXE_rbdfs");
/// How long a foreground mount may take to appear in mountinfo.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long rbdfs may take to exit after its mount went away / SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

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
        // SAFETY: kill(2) takes plain integers and touches no memory of ours.
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
