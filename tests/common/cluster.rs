//! The cluster (oracle side): the `rbd`/`rados`/`ceph` CLIs, scratch
//! images and their cleanup.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rbdfs::store::rados::{ConnectOptions, RadosCluster, RadosPool};
use tempfile::TempDir;

use super::process::{check_output, run_timeout};

/// The pool the tests use (created by `contrib/cluster.sh start`).
pub const POOL: &str = "rbd";
pub const DEFAULT_CONF: &str = "/var/tmp/rbdfs-cluster/ceph.conf";
/// Upper bound for one rbd/rados CLI call: a hung cluster must fail the test,
/// not hang it.
const CLI_TIMEOUT: Duration = Duration::from_secs(180);

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

#[derive(Clone, Debug)]
pub struct Cluster {
    conf: PathBuf,
}

impl Cluster {
    /// The test cluster. Probed once per process; a cluster that does not
    /// answer fails the test (these suites are only built with the
    /// `cluster-tests` feature, which `contrib/test.sh` and CI turn on, so
    /// a plain `cargo test` never counts them as passed without one).
    pub fn get() -> Cluster {
        static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
        let conf = conf_path();
        match PROBE.get_or_init(|| probe(&conf)) {
            Ok(()) => Cluster { conf },
            Err(why) => panic!(
                "no cluster at {} ({why}). Start one with `contrib/cluster.sh start` \
                 (contrib/test.sh does) or set RBDFS_TEST_CONF.",
                conf.display()
            ),
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

    /// `rbd import` of `data` as a new image (rbd's default format and
    /// features) at `image_spec`: `POOL/NAME` or `POOL/NAMESPACE/NAME`.
    pub fn import_to(&self, image_spec: &str, data: &[u8]) {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        fs::write(tmp.path(), data).unwrap();
        self.rbd(&[
            "import",
            "--no-progress",
            tmp.path().to_str().unwrap(),
            image_spec,
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
            // A killed client's watch outlives it by the OSD's watch timeout
            // (30 s), and `rbd rm` refuses an image with watchers: wait that
            // out, or every crash test leaves its image behind.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match self.cluster.rbd_try(&["rm", "--no-progress", &spec(&name)]) {
                    Ok(o) if o.status.success() => {}
                    // Never created (test failed early) is fine.
                    Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No such file") => {}
                    Ok(o)
                        if String::from_utf8_lossy(&o.stderr).contains("still has watchers")
                            && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_secs(2));
                        continue;
                    }
                    r => eprintln!("warning: could not remove image {name}: {r:?}"),
                }
                break;
            }
        }
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
