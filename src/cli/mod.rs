//! Command line, mount options and the mount's life cycle: daemonising,
//! signals, clean unmount.
//!
//! Two forms reach us: `rbdfs mount [OPTIONS] POOL MOUNTPOINT`, and the
//! mount-helper form that `mount -t fuse.rbdfs POOL MNT -o ...` produces
//! through mount.fuse3: `rbdfs POOL MNT -o conf=...,id=...,ro`.
//!
//! Each mount option is declared once, in [`options::MountOptions`] (long
//! flag, value, help, default); `fstab.rs` rewrites `-o key=value,flag` into
//! those long flags, so both forms go through the same clap parser.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use clap::{CommandFactory as _, Parser, Subcommand};
#[cfg(test)]
use fuser::SessionACL;
use fuser::{Config, MountOption};
use log::{error, info, warn};

use crate::cache::Cache;
use crate::fs::{FsOptions, FuseFs, MultiFs};
use crate::store::rados::RadosCluster;

mod fstab;
mod options;
mod source;

pub use fstab::expand_mount_options;
pub use options::{MountArgs, MountConfig, MountOptions, ObjectSize, options_table};

#[derive(Parser, Debug)]
#[command(
    name = "rbdfs",
    version,
    about = "Mount a Ceph pool: every RBD image becomes a file, every snapshot a read-only file under .snap/IMAGE/",
    after_help = "Mount helper form (fstab: `POOL MOUNTPOINT fuse.rbdfs conf=/etc/ceph/ceph.conf,id=admin,_netdev 0 0`):\n  rbdfs POOL MOUNTPOINT -o conf=FILE,id=ID,ro,allow_other\n\nDisk-image workflows (as the rbd commands):\n  ln MNT/.snap/IMG/SNAP MNT/CLONE                        rbd clone IMG@SNAP CLONE\n  mv MNT/.snap/IMG/A MNT/.snap/IMG/B                     rbd snap rename\n  setfattr -n user.rbd.protected -v 1|0 MNT/.snap/IMG/S  rbd snap protect|unprotect\n  setfattr -n user.rbd.rollback -v SNAP MNT/IMG          rbd snap rollback\n  setfattr -n user.rbd.flatten -v 1 MNT/CLONE            rbd flatten\n  MNT/.part/IMG/N, MNT/.part/.snap/IMG/SNAP/N           partition N (MBR/GPT) as a file"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Mount POOL at MOUNTPOINT.
    // An option given twice (`-o ro,ro`, `-o uid=1,uid=2`) is not an error:
    // the later one wins.
    #[command(args_override_self = true)]
    Mount(MountArgs),
}

/// Accepts the mount-helper form by inserting the `mount` subcommand when
/// the first argument is neither a subcommand nor a flag.
pub fn normalize_args(mut args: Vec<OsString>) -> Vec<OsString> {
    if let Some(first) = args.get(1).and_then(|a| a.to_str()) {
        let is_flag = first.starts_with('-');
        if !is_flag && first != "mount" && first != "help" {
            args.insert(1, "mount".into());
        }
    }
    args
}

/// Parses either form: `-o` options are rewritten into the long flags of
/// the same options first ([`expand_mount_options`]), so one parser
/// validates both.
pub fn parse(args: Vec<OsString>) -> Result<MountConfig, clap::Error> {
    let mut cmd = Cli::command();
    cmd.build();
    let mount = cmd
        .find_subcommand("mount")
        .expect("the mount subcommand is declared");
    let args = expand_mount_options(normalize_args(args), mount).map_err(|msg| {
        mount
            .clone()
            .error(clap::error::ErrorKind::InvalidValue, msg)
    })?;
    let cli = Cli::try_parse_from(args)?;
    let Command::Mount(m) = cli.command;
    m.into_config()
        .map_err(|msg| clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{msg}\n")))
}

pub fn main() -> i32 {
    let cfg = match parse(std::env::args_os().collect()) {
        Ok(cfg) => cfg,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    if cfg.foreground {
        init_logging(&cfg, true);
        return match run_mount(&cfg, None) {
            Ok(()) => 0,
            Err(msg) => {
                error!("{msg}");
                eprintln!("rbdfs: {msg}");
                1
            }
        };
    }
    daemonize_and_mount(&cfg)
}

fn init_logging(cfg: &MountConfig, to_stderr: bool) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(log::LevelFilter::Warn);
    builder.filter_module("rbdfs", cfg.log_level);
    // fuser warns about each unimplemented call and about unmounts that
    // the kernel already did; only its errors are news to a user.
    let fuser_level = if cfg.log_level >= log::LevelFilter::Debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Error
    };
    builder.filter_module("fuser", fuser_level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    if let Some(path) = &cfg.log_file {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => {
                builder.target(env_logger::Target::Pipe(Box::new(f)));
            }
            Err(e) => eprintln!("rbdfs: cannot open log file {}: {e}", path.display()),
        }
    } else if !to_stderr {
        // Daemonised without a log file: the system log (syslog, or the
        // journal through it), tagged with the mount point.
        let logger = builder.build();
        let max = logger.filter();
        if log::set_boxed_logger(Box::new(Syslog::open(&cfg.mountpoint, logger))).is_ok() {
            log::set_max_level(max);
        }
        return;
    }
    let _ = builder.try_init();
}

/// Logs to the system log through libc's `syslog(3)` (facility daemon),
/// with env_logger's filter. libc is already a dependency and the call is
/// all we need; a syslog crate would add its own socket handling and
/// formats for nothing more.
struct Syslog {
    filter: env_logger::Logger,
    /// openlog keeps the pointer: it must live as long as the process.
    _ident: &'static std::ffi::CStr,
}

impl Syslog {
    fn open(mountpoint: &std::path::Path, filter: env_logger::Logger) -> Syslog {
        let ident = format!("rbdfs[{}]", mountpoint.display()).replace('\0', "?");
        let ident: &'static std::ffi::CStr = Box::leak(
            std::ffi::CString::new(ident)
                .unwrap_or_default()
                .into_boxed_c_str(),
        );
        // SAFETY: `ident` is a NUL-terminated string leaked for the life of
        // the process, as openlog(3) requires; the other arguments are
        // plain flags.
        unsafe { libc::openlog(ident.as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
        Syslog {
            filter,
            _ident: ident,
        }
    }
}

impl log::Log for Syslog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        let priority = match record.level() {
            log::Level::Error => libc::LOG_ERR,
            log::Level::Warn => libc::LOG_WARNING,
            log::Level::Info => libc::LOG_INFO,
            log::Level::Debug | log::Level::Trace => libc::LOG_DEBUG,
        };
        let text = format!("{} {}: {}", record.level(), record.target(), record.args());
        let Ok(msg) = std::ffi::CString::new(text.replace('\0', "?")) else {
            return;
        };
        // SAFETY: the format is a literal "%s" and `msg` a NUL-terminated
        // string alive across the call.
        unsafe { libc::syslog(priority, c"%s".as_ptr(), msg.as_ptr()) };
    }

    fn flush(&self) {}
}

/// Forks before any librados thread exists (they do not survive a fork).
/// The parent waits on a pipe until the child reports that the mount is
/// live, or why it failed, so the exit status means what it says.
fn daemonize_and_mount(cfg: &MountConfig) -> i32 {
    let mut fds = [0; 2];
    // SAFETY: `fds` is an array of two c_ints, what pipe() writes.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        eprintln!("rbdfs: pipe: {}", std::io::Error::last_os_error());
        return 1;
    }
    // SAFETY: pipe() succeeded, so both are open descriptors that nothing
    // else owns; each OwnedFd takes sole ownership of one.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no other thread exists yet (we fork before the cache and
    // librados start theirs), so the child's copy of memory is consistent;
    // the child only continues in Rust as the sole thread.
    match unsafe { libc::fork() } {
        -1 => {
            eprintln!("rbdfs: fork: {}", std::io::Error::last_os_error());
            1
        }
        0 => {
            drop(rd);
            // SAFETY: setsid takes no arguments and touches no memory of
            // ours; failure (already a group leader) is harmless here.
            unsafe { libc::setsid() };
            init_logging(cfg, false);
            let mut report = std::fs::File::from(wr);
            let result = run_mount(cfg, Some(&mut report));
            if let Err(msg) = result {
                error!("{msg}");
                // The parent may still be waiting for this.
                let _ = report.write_all(format!("E{msg}").as_bytes());
                return 1;
            }
            0
        }
        _child => {
            drop(wr);
            // The child keeps its end open while it serves, so read the
            // one status byte first; only an error is followed by more.
            let mut rd = std::fs::File::from(rd);
            let mut first = [0u8; 1];
            match rd.read(&mut first) {
                Ok(1) if first[0] == b'K' => 0,
                Ok(1) if first[0] == b'E' => {
                    let mut msg = String::new();
                    let _ = rd.read_to_string(&mut msg);
                    eprintln!("rbdfs: {msg}");
                    1
                }
                _ => {
                    eprintln!("rbdfs: the mount process exited before the mount was live");
                    1
                }
            }
        }
    }
}

fn fuse_config(cfg: &MountConfig) -> Config {
    let mut options = vec![
        MountOption::FSName(
            cfg.fsname
                .clone()
                .unwrap_or_else(|| format!("rbd:{}", cfg.pool)),
        ),
        MountOption::Subtype("rbdfs".into()),
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if cfg.read_only {
        options.push(MountOption::RO);
    }
    if cfg.default_permissions {
        options.push(MountOption::DefaultPermissions);
    }
    let mut config = Config::default();
    config.mount_options = options;
    config.acl = cfg.acl;
    // Requests that wait on RADOS are handed to FuseFs's own threads.
    config.n_threads = Some(crate::fs::FUSE_THREADS);
    config.clone_fd = true;
    config
}

/// Connects, mounts, serves until unmounted or signalled. `report` is the
/// daemon's pipe to its waiting parent: it gets "K" once the mount is live,
/// then stdio is detached.
/// A new RADOS client and the store the mount's tree starts from: the
/// pool, the pool's namespace, or (for `/`) any pool, through which the
/// others are opened.
fn open_base(
    connect: &crate::store::rados::ConnectOptions,
    source: &source::Source,
) -> Result<Arc<dyn crate::store::ObjectStore>, String> {
    let cluster = RadosCluster::connect(connect).map_err(|e| e.to_string())?;
    Ok(match source {
        source::Source::Pool(pool) => Arc::new(cluster.open_pool(pool).map_err(|e| e.to_string())?),
        source::Source::Namespace(pool, ns) => Arc::new(
            cluster
                .open_pool_in_namespace(pool, ns)
                .map_err(|e| e.to_string())?,
        ),
        source::Source::Cluster => {
            let pools = cluster
                .list_pools()
                .map_err(|e| format!("cannot list the cluster's pools: {e}"))?;
            let first = pools.first().ok_or("the cluster has no pools")?;
            Arc::new(cluster.open_pool(&first.name).map_err(|e| e.to_string())?)
        }
    })
}

/// The id of the `data_pool` mount option's pool (as `rbd create
/// --data-pool` resolves it), checked once at mount time: the pool must
/// exist and images must be created in format 2.
fn data_pool_id(
    store: &dyn crate::store::ObjectStore,
    create: &crate::image::admin::CreateOptions,
    name: Option<&str>,
) -> Result<Option<i64>, String> {
    let Some(name) = name else {
        return Ok(None);
    };
    if create.format != 2 {
        return Err(format!(
            "data_pool={name} needs image_format=2 (format-1 images keep their data in their own pool)"
        ));
    }
    match store.pool_by_name(name, &store.namespace()) {
        Ok(pool) => Ok(Some(pool.pool_id())),
        Err(e) if e.is_not_found() => Err(format!("data pool {name} does not exist")),
        Err(e) => Err(format!("cannot open data pool {name}: {e}")),
    }
}

fn run_mount(cfg: &MountConfig, report: Option<&mut std::fs::File>) -> Result<(), String> {
    let source = source::Source::parse(&cfg.pool)?;
    if source == source::Source::Cluster && cfg.image.is_some() {
        return Err("--image needs a POOL or POOL/NAMESPACE source".into());
    }
    // A client the cluster blocklists is replaced by a new one (see
    // store::reconnecting): the mount goes on without a remount.
    let first = open_base(&cfg.connect, &source)?;
    let mut create = cfg.create.clone();
    create.data_pool = data_pool_id(&*first, &create, cfg.data_pool.as_deref())?;
    let (connect, base) = (cfg.connect.clone(), source.clone());
    let reconnect = move || {
        open_base(&connect, &base).map_err(|e| crate::store::StoreError::Errno {
            op: "connect",
            oid: e,
            errno: libc::ENOTCONN,
        })
    };
    let store: Arc<dyn crate::store::ObjectStore> = Arc::new(
        crate::store::reconnecting::Reconnecting::with_store(first, Box::new(reconnect)),
    );
    let cache = Cache::new(cfg.cache.clone());
    let fs = Arc::new(MultiFs::new(
        source.kind(cfg.image.is_some()),
        store,
        cache,
        cfg.image.clone(),
        FsOptions {
            read_only: cfg.read_only,
            fixed_size: cfg.fixed_size,
            create,
            uid: cfg.uid,
            gid: cfg.gid,
        },
    ));
    // One round trip now, so a pool we cannot read fails the mount rather
    // than every later `ls`.
    fs.check_mount()?;
    let mut session =
        fuser::Session::new(FuseFs::new(fs.clone()), &cfg.mountpoint, &fuse_config(cfg))
            .map_err(|e| format!("cannot mount on {}: {e}", cfg.mountpoint.display()))?;
    info!(
        "mounted {} on {}{}",
        cfg.pool,
        cfg.mountpoint.display(),
        if cfg.read_only { " (read-only)" } else { "" }
    );
    if let Some(report) = report {
        let _ = report.write_all(b"K");
        detach_stdio();
    }
    let unmounter = session.unmount_callable();
    spawn_signal_watcher(unmounter, cfg.mountpoint.clone());
    let mut result = session.run();
    if let Err(e) = &result
        && !is_mounted(&cfg.mountpoint)
    {
        // Unmounted all the same (seen once: ECONNABORTED from /dev/fuse
        // right after an orderly `fusermount3 -u`): the session is over as
        // it should be, so this is not a failure of the mount.
        warn!("FUSE session ended with {e} after the unmount");
        result = Ok(());
    }
    // Unmounted: whatever is still dirty goes to RADOS before we exit.
    let flushed = fs.close_all();
    info!("unmounted {}", cfg.mountpoint.display());
    flushed.map_err(|e| format!("write-back at unmount failed: {e}"))?;
    result.map_err(|e| format!("FUSE session failed: {e}"))
}

/// Whether something is mounted on `mountpoint` (per /proc/self/mountinfo,
/// whose fifth field is the mount point, with spaces etc. octal-escaped).
fn is_mounted(mountpoint: &std::path::Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return true;
    };
    let want = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let want = want.to_string_lossy().replace(' ', "\\040");
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| mp == want)
}

fn detach_stdio() {
    // SAFETY: the path is a NUL-terminated C string literal; dup2 only
    // redirects descriptors 0-2 (Rust's std handles keep working, now on
    // /dev/null) and close releases the descriptor opened here, which
    // nothing else owns.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
    }
}

static SIGNAL_PIPE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(std::sync::atomic::Ordering::SeqCst);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; it reads one byte from `b`,
        // which lives across the call. A stale or closed fd only makes it fail.
        unsafe { libc::write(fd, &b as *const u8 as *const libc::c_void, 1) };
    }
}

/// SIGINT/SIGTERM unmount the filesystem, which ends the session loop; the
/// handler only writes to a pipe (async-signal-safe), a thread does the rest.
fn spawn_signal_watcher(mut unmounter: fuser::SessionUnmounter, mountpoint: PathBuf) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is an array of two c_ints, what pipe() writes.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        warn!(
            "cannot set up signal handling: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    SIGNAL_PIPE.store(fds[1], std::sync::atomic::Ordering::SeqCst);
    // SAFETY: `on_signal` is an `extern "C" fn(c_int)`, the handler type
    // signal() expects, and does only async-signal-safe work (an atomic
    // load and write(2)).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    // SAFETY: pipe() succeeded, so fds[0] is an open descriptor owned by
    // nothing else; the File takes sole ownership (the write end stays
    // open for the handler, for the life of the process).
    let mut rd = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    std::thread::spawn(move || {
        let mut sig = [0u8; 1];
        if rd.read_exact(&mut sig).is_err() {
            return;
        }
        info!("signal {}: unmounting {}", sig[0], mountpoint.display());
        if let Err(e) = unmounter.unmount() {
            // Busy (open files): detach lazily so the session still ends.
            warn!("unmount failed ({e}); detaching lazily");
            if let Ok(path) = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes()) {
                // SAFETY: `path` is a NUL-terminated CString alive across
                // the call; umount2 only reads it.
                unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn helper_form_equals_subcommand_form() {
        let a = parse(args(&[
            "rbdfs",
            "rbd",
            "/mnt",
            "-o",
            "conf=/c,id=bob,ro,_netdev,allow_other",
        ]))
        .unwrap();
        let b = parse(args(&[
            "rbdfs",
            "mount",
            "-c",
            "/c",
            "--id",
            "bob",
            "-o",
            "ro",
            "-o",
            "allow_other",
            "rbd",
            "/mnt",
        ]))
        .unwrap();
        assert_eq!(a, b);
        assert!(a.read_only);
        assert_eq!(a.acl, SessionACL::All);
        assert_eq!(a.connect.id.as_deref(), Some("bob"));
        assert!(!a.foreground);
    }

    #[test]
    fn rejects_unknown_options() {
        assert!(parse(args(&["rbdfs", "rbd", "/mnt", "-o", "bogus=1"])).is_err());
        assert!(parse(args(&["rbdfs", "rbd", "/mnt", "-o", "rados_timeout=x"])).is_err());
    }

    #[test]
    fn create_options() {
        let c = parse(args(&[
            "rbdfs",
            "p",
            "/m",
            "-o",
            "image_format=1,object_size=64K,image_features=layering+striping",
        ]))
        .unwrap();
        assert_eq!(c.create.format, 1);
        assert_eq!(c.create.order, 16);
        assert_eq!(c.create.features, Some(3));
        assert!(parse(args(&["rbdfs", "p", "/m", "-o", "object_size=3M"])).is_err());
        assert!(parse(args(&["rbdfs", "p", "/m", "-o", "image_features=bogus"])).is_err());
    }

    #[test]
    fn data_pool_is_resolved_at_mount_time() {
        use crate::store::ObjectStore;
        let store = crate::store::memory::MemoryStore::new();
        let ec = store.cluster().create_named_pool("rbd-ec", &[]);
        let c = parse(args(&["rbdfs", "rbd", "/m", "-o", "data_pool=rbd-ec"])).unwrap();
        assert_eq!(c.data_pool.as_deref(), Some("rbd-ec"));
        assert_eq!(c.create.data_pool, None, "set once connected");
        assert_eq!(
            data_pool_id(&*store, &c.create, c.data_pool.as_deref()),
            Ok(Some(ec))
        );
        assert_eq!(data_pool_id(&*store, &c.create, None), Ok(None));
        // In a namespace: the same pool id (the namespace is the image's).
        let ns = store.pool_in_namespace(0, "t1").unwrap();
        assert_eq!(data_pool_id(&*ns, &c.create, Some("rbd-ec")), Ok(Some(ec)));
        let err = data_pool_id(&*store, &c.create, Some("nope")).unwrap_err();
        assert_eq!(err, "data pool nope does not exist");
        let c = parse(args(&[
            "rbdfs",
            "rbd",
            "/m",
            "-o",
            "data_pool=rbd-ec,image_format=1",
        ]))
        .unwrap();
        let err = data_pool_id(&*store, &c.create, c.data_pool.as_deref()).unwrap_err();
        assert!(err.contains("image_format=2"), "{err}");
    }

    #[test]
    fn timeout_option() {
        let c = parse(args(&[
            "rbdfs",
            "mount",
            "-f",
            "-o",
            "rados_timeout=5",
            "p",
            "/m",
        ]))
        .unwrap();
        assert_eq!(c.connect.timeout_secs, 5);
        assert!(c.foreground);
    }

    #[test]
    fn cache_options() {
        let c = parse(args(&[
            "rbdfs",
            "p",
            "/m",
            "-o",
            "cache_size=256,cache_max_dirty=32,cache_max_dirty_age=0.5,cache_prefetch=0,cache_workers=4",
        ]))
        .unwrap();
        assert_eq!(c.cache.capacity, 256 << 20);
        assert_eq!(c.cache.max_dirty, Some(32 << 20));
        assert_eq!(c.cache.max_dirty_age, std::time::Duration::from_millis(500));
        assert_eq!(c.cache.max_prefetch, Some(0));
        assert_eq!(c.cache.workers, 4);
        assert_eq!(c.cache.prefetch_limit(), 0);
        for bad in [
            "cache_size=-1",
            "cache_size=99999999999999999",
            "cache_max_dirty_age=nan",
            "cache_max_dirty_age=-1",
            "cache_workers=0",
            "cache_workers=1000",
        ] {
            assert!(
                parse(args(&["rbdfs", "p", "/m", "-o", bad])).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn is_mounted_reads_mountinfo() {
        assert!(is_mounted(std::path::Path::new("/")));
        let dir = std::env::temp_dir().join(format!("rbdfs-not-a-mount-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(!is_mounted(&dir));
        std::fs::remove_dir(&dir).unwrap();
    }
}
