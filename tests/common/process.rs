//! Running commands: bounded waits on child processes and their output.

use std::fs::{self, File};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

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

pub(super) fn check_output(what: &str, out: Result<Output, String>) -> Output {
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

pub(super) fn test_name() -> String {
    thread::current().name().unwrap_or("?").to_string()
}
