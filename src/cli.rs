//! Command line, mount options and the mount's life cycle: daemonising,
//! signals, clean unmount.
//!
//! Two forms reach us: `rbdfs mount [OPTIONS] POOL MOUNTPOINT`, and the
//! mount-helper form that `mount -t fuse.rbdfs POOL MNT -o ...` produces
//! through mount.fuse3: `rbdfs POOL MNT -o conf=...,id=...,ro`.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use fuser::{Config, MountOption, SessionACL};
use log::{error, info, warn};

use crate::cache::{Cache, CacheConfig};
use crate::fs::{FsOptions, RbdFs};
use crate::image::admin::CreateOptions;
use crate::pool::Pool;
use crate::store::rados::{ConnectOptions, RadosCluster};

#[derive(Parser, Debug)]
#[command(
    name = "rbdfs",
    version,
    about = "Mount a Ceph pool: every RBD image becomes a file, every snapshot a read-only file under .snap/IMAGE/",
    after_help = "Mount helper form (fstab: `POOL MOUNTPOINT fuse.rbdfs conf=/etc/ceph/ceph.conf,id=admin,_netdev 0 0`):\n  rbdfs POOL MOUNTPOINT -o conf=FILE,id=ID,ro,allow_other"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Mount POOL at MOUNTPOINT.
    Mount(MountArgs),
}

#[derive(Args, Debug, Clone)]
pub struct MountArgs {
    /// Ceph configuration file (default: $CEPH_CONF, then librados' search: /etc/ceph/ceph.conf, ...).
    #[arg(short = 'c', long = "conf", value_name = "FILE")]
    conf: Option<PathBuf>,
    /// Client id, without the `client.` prefix (default: admin).
    #[arg(long, value_name = "ID")]
    id: Option<String>,
    /// Keyring file (default: from the configuration).
    #[arg(long, value_name = "FILE")]
    keyring: Option<PathBuf>,
    /// Expose only this image.
    #[arg(long, value_name = "NAME")]
    image: Option<String>,
    /// Stay in the foreground (default: detach once the mount is live).
    #[arg(short = 'f', long)]
    foreground: bool,
    /// Log more (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,
    /// Mount options, comma-separated: conf=FILE, id=ID, keyring=FILE, image=NAME,
    /// ro, rw, fixed_size (writes past the end fail with ENOSPC instead of growing the image), allow_other, allow_root, default_permissions, uid=N, gid=N,
    /// rados_timeout=SECONDS (default 60), log_file=PATH, debug, fsname=NAME;
    /// cache: cache_size=MiB (default 64, 0 = off), cache_max_dirty=MiB (default 3/8 of the size),
    /// cache_max_dirty_age=SECONDS (default 1), cache_prefetch=MiB (default size/4, at most 64; 0 = off),
    /// cache_workers=N (I/O threads, default 16).
    /// Generic mount(8) options (defaults, _netdev, nofail, noatime, ...) are accepted and ignored.
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// The pool whose images to show.
    pool: String,
    /// Where to mount it.
    mountpoint: PathBuf,
}

/// Everything a mount needs, after merging flags and `-o` options.
#[derive(Debug, Clone, PartialEq)]
pub struct MountConfig {
    pub pool: String,
    pub mountpoint: PathBuf,
    pub connect: ConnectOptions,
    pub image: Option<String>,
    pub foreground: bool,
    pub read_only: bool,
    /// Images never change size by writing: writes and fallocate past the
    /// end fail with ENOSPC (truncate still resizes).
    pub fixed_size: bool,
    pub acl: SessionACL,
    pub default_permissions: bool,
    pub uid: u32,
    pub gid: u32,
    pub log_file: Option<PathBuf>,
    pub log_level: log::LevelFilter,
    pub fsname: Option<String>,
    pub cache: CacheConfig,
    /// How images created through the filesystem are made.
    pub create: CreateOptions,
}

impl PartialEq for ConnectOptions {
    fn eq(&self, o: &Self) -> bool {
        self.conf == o.conf
            && self.id == o.id
            && self.keyring == o.keyring
            && self.timeout_secs == o.timeout_secs
    }
}

/// Options mount(8) and fstab pass along that mean nothing to us.
fn is_generic_mount_option(key: &str) -> bool {
    matches!(
        key,
        "defaults"
            | "auto"
            | "noauto"
            | "user"
            | "nouser"
            | "users"
            | "_netdev"
            | "nofail"
            | "dev"
            | "nodev"
            | "suid"
            | "nosuid"
            | "exec"
            | "noexec"
            | "async"
            | "atime"
            | "noatime"
            | "relatime"
            | "strictatime"
            | "nodiratime"
            | "diratime"
            | "lazytime"
            | "nonempty"
            | "comment"
    ) || key.starts_with("x-")
}

impl MountArgs {
    pub fn into_config(self) -> Result<MountConfig, String> {
        let mut cfg = MountConfig {
            pool: self.pool,
            mountpoint: self.mountpoint,
            connect: ConnectOptions {
                conf: self.conf,
                id: self.id,
                keyring: self.keyring,
                timeout_secs: 60,
            },
            image: self.image,
            foreground: self.foreground,
            read_only: false,
            fixed_size: false,
            acl: SessionACL::Owner,
            default_permissions: false,
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
            log_file: None,
            log_level: match self.verbose {
                0 => log::LevelFilter::Info,
                1 => log::LevelFilter::Debug,
                _ => log::LevelFilter::Trace,
            },
            fsname: None,
            cache: CacheConfig::default(),
            create: CreateOptions::default(),
        };
        for opt in self
            .options
            .iter()
            .flat_map(|o| o.split(','))
            .filter(|o| !o.is_empty())
        {
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            let need = |v: Option<&str>| {
                v.map(str::to_string)
                    .ok_or(format!("mount option {key} needs a value"))
            };
            let mib = |n: u64| -> Result<u64, String> {
                n.checked_mul(1 << 20)
                    .filter(|&b| b <= 1 << 50)
                    .ok_or_else(|| format!("mount option {key}: {n} MiB is too large"))
            };
            let num = |v: Option<&str>| -> Result<u64, String> {
                need(v)?
                    .parse()
                    .map_err(|_| format!("mount option {key}: not a number"))
            };
            match key {
                "conf" => cfg.connect.conf = Some(need(value)?.into()),
                "id" => cfg.connect.id = Some(need(value)?),
                "keyring" => cfg.connect.keyring = Some(need(value)?.into()),
                "image" => cfg.image = Some(need(value)?),
                "ro" => cfg.read_only = true,
                "rw" => cfg.read_only = false,
                "fixed_size" => cfg.fixed_size = true,
                "allow_other" => cfg.acl = SessionACL::All,
                "allow_root" => cfg.acl = SessionACL::RootAndOwner,
                "default_permissions" => cfg.default_permissions = true,
                "uid" => cfg.uid = num(value)? as u32,
                "gid" => cfg.gid = num(value)? as u32,
                "rados_timeout" => cfg.connect.timeout_secs = num(value)?,
                "log_file" => cfg.log_file = Some(need(value)?.into()),
                "debug" => cfg.log_level = log::LevelFilter::Debug,
                "fsname" => cfg.fsname = Some(need(value)?),
                "cache_size" => cfg.cache.capacity = mib(num(value)?)?,
                "cache_max_dirty" => cfg.cache.max_dirty = Some(mib(num(value)?)?),
                "cache_max_dirty_age" => {
                    let secs: f64 = need(value)?
                        .parse()
                        .ok()
                        .filter(|s: &f64| s.is_finite() && *s >= 0.0 && *s <= 3600.0)
                        .ok_or_else(|| format!("{key}: seconds, 0 to 3600"))?;
                    cfg.cache.max_dirty_age = std::time::Duration::from_secs_f64(secs);
                }
                "cache_prefetch" => cfg.cache.max_prefetch = Some(mib(num(value)?)?),
                "cache_workers" => {
                    cfg.cache.workers = match num(value)? {
                        n @ 1..=256 => n as usize,
                        _ => return Err(format!("{key}: 1 to 256 threads")),
                    }
                }
                "image_format" => {
                    cfg.create.format = match need(value)?.as_str() {
                        "1" => 1,
                        "2" => 2,
                        v => return Err(format!("image_format={v}: 1 or 2")),
                    }
                }
                "image_features" => cfg.create.features = Some(parse_features(&need(value)?)?),
                "object_size" => cfg.create.order = parse_object_size(&need(value)?)?,
                // mount.fuse3 may pass these through; we are always a FUSE fs.
                "subtype" | "fstype" => {}
                k if is_generic_mount_option(k) => {}
                _ => {
                    return Err(format!(
                        "unknown mount option '{opt}' (see rbdfs mount --help)"
                    ));
                }
            }
        }
        Ok(cfg)
    }
}

/// `image_features=`: a number, or feature names joined by `+` (a comma
/// would end the mount option), e.g. `layering+exclusive-lock`.
fn parse_features(v: &str) -> Result<u64, String> {
    if let Ok(n) = v.parse::<u64>() {
        return Ok(n);
    }
    let mut bits = 0;
    for name in v.split('+') {
        let bit = (0..64)
            .map(|b| 1u64 << b)
            .find(|&bit| crate::format::v2::feature_names(bit) == [name])
            .ok_or_else(|| format!("image_features: unknown feature '{name}'"))?;
        bits |= bit;
    }
    Ok(bits)
}

/// `object_size=`: bytes with an optional K/M suffix, a power of two
/// between 4K and 32M.
fn parse_object_size(v: &str) -> Result<u8, String> {
    let (digits, mult) = match v.chars().last() {
        Some('K' | 'k') => (&v[..v.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&v[..v.len() - 1], 1u64 << 20),
        _ => (v, 1),
    };
    let bytes = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or(format!("object_size={v}: not a size"))?;
    let order = bytes.trailing_zeros() as u8;
    if !bytes.is_power_of_two()
        || !(crate::format::MIN_ORDER..=crate::format::MAX_ORDER).contains(&order)
    {
        return Err(format!("object_size={v}: a power of two from 4K to 32M"));
    }
    Ok(order)
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

pub fn parse(args: Vec<OsString>) -> Result<MountConfig, clap::Error> {
    let cli = Cli::try_parse_from(normalize_args(args))?;
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
        builder.target(env_logger::Target::Pipe(Box::new(std::io::sink())));
    }
    let _ = builder.try_init();
}

/// Forks before any librados thread exists (they do not survive a fork).
/// The parent waits on a pipe until the child reports that the mount is
/// live, or why it failed, so the exit status means what it says.
fn daemonize_and_mount(cfg: &MountConfig) -> i32 {
    let mut fds = [0; 2];
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        eprintln!("rbdfs: pipe: {}", std::io::Error::last_os_error());
        return 1;
    }
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    match unsafe { libc::fork() } {
        -1 => {
            eprintln!("rbdfs: fork: {}", std::io::Error::last_os_error());
            1
        }
        0 => {
            drop(rd);
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
    // Enough threads that queued direct I/O (fio QD16, a VM's disk) keeps
    // RADOS busy: each thread waits on one object operation at a time.
    config.n_threads = Some(16);
    config.clone_fd = true;
    config
}

/// Connects, mounts, serves until unmounted or signalled. `report` is the
/// daemon's pipe to its waiting parent: it gets "K" once the mount is live,
/// then stdio is detached.
fn run_mount(cfg: &MountConfig, report: Option<&mut std::fs::File>) -> Result<(), String> {
    let cluster = RadosCluster::connect(&cfg.connect).map_err(|e| e.to_string())?;
    let store = Arc::new(cluster.open_pool(&cfg.pool).map_err(|e| e.to_string())?);
    let cache = Cache::new(cfg.cache.clone());
    let pool = Arc::new(Pool::new(store, cache, cfg.image.clone()));
    // One round trip now, so a pool we cannot read fails the mount rather
    // than every later `ls`.
    pool.list()
        .map_err(|e| format!("cannot list images in pool '{}': {e}", cfg.pool))?;
    if let Some(image) = &cfg.image {
        pool.image(image).map_err(|e| e.to_string())?;
    }
    let fs = RbdFs::new(
        pool.clone(),
        FsOptions {
            read_only: cfg.read_only,
            fixed_size: cfg.fixed_size,
            create: cfg.create.clone(),
            uid: cfg.uid,
            gid: cfg.gid,
        },
    );
    let mut session = fuser::Session::new(fs, &cfg.mountpoint, &fuse_config(cfg))
        .map_err(|e| format!("cannot mount on {}: {e}", cfg.mountpoint.display()))?;
    info!(
        "mounted pool {} on {}{}",
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
    let flushed = pool.close_all();
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
        unsafe { libc::write(fd, &b as *const u8 as *const libc::c_void, 1) };
    }
}

/// SIGINT/SIGTERM unmount the filesystem, which ends the session loop; the
/// handler only writes to a pipe (async-signal-safe), a thread does the rest.
fn spawn_signal_watcher(mut unmounter: fuser::SessionUnmounter, mountpoint: PathBuf) {
    let mut fds = [0; 2];
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        warn!(
            "cannot set up signal handling: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    SIGNAL_PIPE.store(fds[1], std::sync::atomic::Ordering::SeqCst);
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
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
