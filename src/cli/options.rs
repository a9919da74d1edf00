//! The mount options, each declared once: as a clap field of
//! [`MountOptions`], whose long flag, value name, help text and default are
//! all there is. `-o key=value,flag` is rewritten into those long flags
//! ([`super::fstab`]) and parsed by the same parser, `rbdfs mount --help`
//! lists them, and the README's table is generated from them
//! ([`options_table`]; a unit test compares it with README.md).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use fuser::SessionACL;

use crate::cache::CacheConfig;
use crate::image::admin::CreateOptions;
use crate::store::rados::ConnectOptions;

pub(super) const CEPH: &str = "Ceph connection";
pub(super) const MOUNT: &str = "Mount (FUSE)";
pub(super) const CACHE: &str = "Cache";
pub(super) const CREATE: &str = "Image creation";
pub(super) const LOGGING: &str = "Logging";

/// The headings of `rbdfs mount --help` that group the mount options, in
/// the order the README's table lists them.
pub(super) const GROUPS: [&str; 5] = [CEPH, MOUNT, CACHE, CREATE, LOGGING];

/// `rados_timeout`'s default, in seconds.
pub const DEFAULT_RADOS_TIMEOUT: u64 = 60;

/// `cache_size` and friends are MiB; more than this many bytes is refused.
const MAX_CACHE_BYTES: u64 = 1 << 50;

/// Every mount option: a long flag (`--cache-size 256`) and the same as
/// `-o cache_size=256` (the long name with `_` for `-`).
#[derive(Args, Debug, Clone)]
pub struct MountOptions {
    /// Ceph configuration file (default: $CEPH_CONF, then librados' search:
    /// /etc/ceph/ceph.conf, ~/.ceph/config, ./ceph.conf). CEPH_ARGS overrides it.
    #[arg(short = 'c', long, value_name = "FILE", help_heading = CEPH)]
    pub conf: Option<PathBuf>,
    /// Client id, without the 'client.' prefix (default: admin).
    #[arg(long, value_name = "ID", help_heading = CEPH)]
    pub id: Option<String>,
    /// Keyring file (default: from the configuration).
    #[arg(long, value_name = "FILE", help_heading = CEPH)]
    pub keyring: Option<PathBuf>,
    /// Connect, monitor and OSD operation timeout in seconds: a cluster
    /// that does not answer makes the mount fail, or the I/O fail with
    /// EIO/ETIMEDOUT, after this long (0 = librados' own timeouts).
    #[arg(long, value_name = "SECONDS", help_heading = CEPH,
          default_value_t = DEFAULT_RADOS_TIMEOUT, value_parser = number::<u64>)]
    pub rados_timeout: u64,

    /// Expose only this image.
    #[arg(long, value_name = "NAME", help_heading = MOUNT)]
    pub image: Option<String>,
    /// Read-only mount: every write, truncate, snapshot create/remove fails
    /// with EROFS.
    #[arg(long, help_heading = MOUNT, overrides_with = "rw")]
    pub ro: bool,
    /// Read-write mount (the default; undoes an earlier ro).
    #[arg(long, help_heading = MOUNT, overrides_with = "ro")]
    pub rw: bool,
    /// Images never change size by writing: writes and fallocate past the
    /// end fail with ENOSPC and write nothing (a file created through the
    /// mount still grows through the handle that created it); truncate still
    /// resizes. Without it, writes past the end grow the image, as POSIX and
    /// Ceph's rbd-fuse do.
    #[arg(long, help_heading = MOUNT)]
    pub fixed_size: bool,
    /// Every user may use the mount (FUSE's allow_other; a user other than
    /// root needs user_allow_other in /etc/fuse.conf).
    #[arg(long, help_heading = MOUNT, overrides_with = "allow_root")]
    pub allow_other: bool,
    /// The mounting user and root may use the mount (FUSE's allow_root).
    #[arg(long, help_heading = MOUNT, overrides_with = "allow_other")]
    pub allow_root: bool,
    /// The kernel checks file modes against the caller (FUSE's
    /// default_permissions).
    #[arg(long, help_heading = MOUNT)]
    pub default_permissions: bool,
    /// Owner of the files, 0 to 4294967295 (default: the user who mounts).
    #[arg(long, value_name = "N", help_heading = MOUNT, value_parser = id_number)]
    pub uid: Option<u32>,
    /// Group of the files, 0 to 4294967295 (default: the group of the user
    /// who mounts).
    #[arg(long, value_name = "N", help_heading = MOUNT, value_parser = id_number)]
    pub gid: Option<u32>,
    /// The source shown in mount(8) (default: rbd:POOL).
    #[arg(long, value_name = "NAME", help_heading = MOUNT)]
    pub fsname: Option<String>,

    /// Memory for the object cache in MiB, 0 to 1073741824 (0 = no cache:
    /// every read and write goes straight to RADOS). It bounds clean data,
    /// dirty data and the buffers of RADOS operations in flight together.
    #[arg(long, value_name = "MiB", help_heading = CACHE,
          default_value_t = CacheConfig::default().capacity >> 20, value_parser = mib)]
    pub cache_size: u64,
    /// Dirty (not yet written back) data at most, in MiB (default: 3/8 of
    /// cache_size); a writer past it waits for write-back.
    #[arg(long, value_name = "MiB", help_heading = CACHE, value_parser = mib)]
    pub cache_max_dirty: Option<u64>,
    /// Dirty data older than this many seconds is written back, 0 to 3600
    /// (fractions allowed).
    #[arg(long, value_name = "SECONDS", help_heading = CACHE,
          default_value_t = CacheConfig::default().max_dirty_age.as_secs_f64(),
          value_parser = dirty_age)]
    pub cache_max_dirty_age: f64,
    /// Largest read-ahead window of a sequential reader in MiB (default:
    /// cache_size/4, at most 64, for image heads; 3/8 of cache_size, at
    /// most 96, for snapshots and diff streams; 0 = none). Sequential
    /// readers active at once share it.
    #[arg(long, value_name = "MiB", help_heading = CACHE, value_parser = mib)]
    pub cache_prefetch: Option<u64>,
    /// I/O threads for prefetch and write-back, 1 to 256.
    #[arg(long, value_name = "N", help_heading = CACHE,
          default_value_t = CacheConfig::default().workers, value_parser = workers)]
    pub cache_workers: usize,

    /// Format of the images created through the mount: 1 (old, deprecated)
    /// or 2.
    #[arg(long, value_name = "1|2", help_heading = CREATE,
          default_value_t = CreateOptions::default().format, value_parser = image_format)]
    pub image_format: u8,
    /// Features of the format-2 images created through the mount: a number,
    /// or names joined by + (a comma would end the mount option), e.g.
    /// layering+exclusive-lock+object-map+fast-diff+deep-flatten (default:
    /// the cluster's default features).
    #[arg(long, value_name = "FEATURES", help_heading = CREATE, value_parser = parse_features)]
    pub image_features: Option<u64>,
    /// Object size of the images created through the mount: a power of two
    /// from 4K to 32M, in bytes or with a K or M suffix.
    #[arg(long, value_name = "SIZE", help_heading = CREATE,
          default_value_t = ObjectSize(CreateOptions::default().order),
          value_parser = parse_object_size)]
    pub object_size: ObjectSize,
    /// Pool for the data objects of the images created through the mount
    /// (format 2 only), as rbd create --data-pool: e.g. an erasure-coded
    /// pool with allow_ec_overwrites; header and metadata stay in the
    /// image's pool, and the data keeps the image's namespace. Checked at
    /// mount time (default: the image's own pool).
    #[arg(long, value_name = "POOL", help_heading = CREATE)]
    pub data_pool: Option<String>,

    /// Log to this file (default: stderr in the foreground, the system log
    /// once detached, as rbdfs[MOUNTPOINT] with facility daemon).
    // The doc comment is the --help text, where [MOUNTPOINT] is literal.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long, value_name = "PATH", help_heading = LOGGING)]
    pub log_file: Option<PathBuf>,
    /// Debug logging (as -v; RUST_LOG overrides).
    #[arg(long, help_heading = LOGGING)]
    pub debug: bool,
}

/// `rbdfs mount`'s arguments: the mount options and what only the command
/// line has (`-f`, `-v`, `-o`, the positionals).
#[derive(Args, Debug, Clone)]
pub struct MountArgs {
    #[command(flatten)]
    pub opts: MountOptions,
    /// Stay in the foreground (default: detach once the mount is live).
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// Log more (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, help_heading = LOGGING)]
    pub verbose: u8,
    /// Mount options, comma-separated: each option below as key=value or
    /// key, its long name with _ for - (-o ro,cache_size=256 is --ro
    /// --cache-size 256); later options win. Generic mount(8) options
    /// (defaults, _netdev, nofail, noatime, x-systemd.*, ...) are accepted
    /// and ignored.
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// What to show: POOL, POOL/NAMESPACE, or / (every pool with the rbd
    /// application).
    pub pool: String,
    /// Where to mount it.
    pub mountpoint: PathBuf,
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
    /// How images created through the filesystem are made
    /// (`create.data_pool` is set at mount time from `data_pool`).
    pub create: CreateOptions,
    /// `data_pool`: the pool's name, resolved to `create.data_pool` once
    /// connected.
    pub data_pool: Option<String>,
}

impl PartialEq for ConnectOptions {
    fn eq(&self, o: &Self) -> bool {
        self.conf == o.conf
            && self.id == o.id
            && self.keyring == o.keyring
            && self.timeout_secs == o.timeout_secs
    }
}

impl MountArgs {
    pub fn into_config(self) -> Result<MountConfig, String> {
        if !self.options.is_empty() {
            // `parse` rewrites every -o into long flags before clap sees it.
            return Err(format!(
                "mount options {:?} were not expanded (use cli::parse)",
                self.options
            ));
        }
        let o = self.opts;
        Ok(MountConfig {
            pool: self.pool,
            mountpoint: self.mountpoint,
            connect: ConnectOptions {
                conf: o.conf,
                id: o.id,
                keyring: o.keyring,
                timeout_secs: o.rados_timeout,
            },
            image: o.image,
            foreground: self.foreground,
            // `ro` and `rw` override each other: the later one is set.
            read_only: o.ro && !o.rw,
            fixed_size: o.fixed_size,
            acl: if o.allow_other {
                SessionACL::All
            } else if o.allow_root {
                SessionACL::RootAndOwner
            } else {
                SessionACL::Owner
            },
            default_permissions: o.default_permissions,
            // SAFETY: getuid/getgid take no arguments, cannot fail and
            // touch no memory of ours.
            uid: o.uid.unwrap_or_else(|| unsafe { libc::getuid() }),
            // SAFETY: as above.
            gid: o.gid.unwrap_or_else(|| unsafe { libc::getgid() }),
            log_file: o.log_file,
            log_level: if o.debug {
                log::LevelFilter::Debug
            } else {
                match self.verbose {
                    0 => log::LevelFilter::Info,
                    1 => log::LevelFilter::Debug,
                    _ => log::LevelFilter::Trace,
                }
            },
            fsname: o.fsname,
            cache: CacheConfig {
                capacity: o.cache_size << 20,
                max_dirty: o.cache_max_dirty.map(|m| m << 20),
                max_dirty_age: Duration::from_secs_f64(o.cache_max_dirty_age),
                max_prefetch: o.cache_prefetch.map(|m| m << 20),
                workers: o.cache_workers,
                ..CacheConfig::default()
            },
            create: CreateOptions {
                format: o.image_format,
                order: o.object_size.0,
                features: o.image_features,
                ..CreateOptions::default()
            },
            data_pool: o.data_pool,
        })
    }
}

/// Options mount(8) and fstab pass along that mean nothing to us.
pub(super) fn is_generic_mount_option(key: &str) -> bool {
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
            // mount.fuse3 may pass these through; we are always a FUSE fs.
            | "subtype"
            | "fstype"
    ) || key.starts_with("x-")
}

/// The mount options as clap declares them (long flags, help, defaults).
pub(super) fn mount_option_args() -> Vec<clap::Arg> {
    MountOptions::augment_args(clap::Command::new("rbdfs"))
        .get_arguments()
        .cloned()
        .collect()
}

/// The `-o` spelling of a mount option's long flag.
pub(super) fn option_key(arg: &clap::Arg) -> String {
    arg.get_long()
        .expect("every mount option has a long flag")
        .replace('-', "_")
}

fn number<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.parse().map_err(|_| "not a number".to_string())
}

/// A uid or gid.
fn id_number(v: &str) -> Result<u32, String> {
    v.parse()
        .map_err(|_| format!("not a number from 0 to {}", u32::MAX))
}

/// MiB, as long as the bytes stay within [`MAX_CACHE_BYTES`].
fn mib(v: &str) -> Result<u64, String> {
    let n: u64 = number(v)?;
    n.checked_mul(1 << 20)
        .filter(|&b| b <= MAX_CACHE_BYTES)
        .map(|_| n)
        .ok_or_else(|| format!("{n} MiB is too large (at most {})", MAX_CACHE_BYTES >> 20))
}

fn dirty_age(v: &str) -> Result<f64, String> {
    v.parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s >= 0.0 && *s <= 3600.0)
        .ok_or_else(|| "seconds, 0 to 3600".to_string())
}

fn workers(v: &str) -> Result<usize, String> {
    match number::<u64>(v)? {
        n @ 1..=256 => Ok(n as usize),
        _ => Err("1 to 256 threads".to_string()),
    }
}

fn image_format(v: &str) -> Result<u8, String> {
    match v {
        "1" => Ok(1),
        "2" => Ok(2),
        _ => Err("1 or 2".to_string()),
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
            .ok_or_else(|| format!("unknown feature '{name}'"))?;
        bits |= bit;
    }
    Ok(bits)
}

/// An object size, as its order (`1 << order` bytes); shown as `4M`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectSize(pub u8);

impl fmt::Display for ObjectSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = 1u64 << self.0;
        if bytes >= 1 << 20 {
            write!(f, "{}M", bytes >> 20)
        } else if bytes >= 1 << 10 {
            write!(f, "{}K", bytes >> 10)
        } else {
            write!(f, "{bytes}")
        }
    }
}

/// `object_size=`: bytes with an optional K/M suffix, a power of two
/// between 4K and 32M.
fn parse_object_size(v: &str) -> Result<ObjectSize, String> {
    let (digits, mult) = match v.chars().last() {
        Some('K' | 'k') => (&v[..v.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&v[..v.len() - 1], 1u64 << 20),
        _ => (v, 1),
    };
    let bytes = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or("not a size")?;
    let order = bytes.trailing_zeros() as u8;
    if !bytes.is_power_of_two()
        || !(crate::format::MIN_ORDER..=crate::format::MAX_ORDER).contains(&order)
    {
        return Err("a power of two from 4K to 32M".to_string());
    }
    Ok(ObjectSize(order))
}

/// The README's mount-option tables (one per help heading), generated from
/// the declarations above; `readme_table_matches_declarations` checks that
/// README.md holds exactly this between its markers.
pub fn options_table() -> String {
    let args = mount_option_args();
    let mut out = String::new();
    for group in GROUPS {
        out.push_str(&format!(
            "**{group}**\n\n| -o option | flag | meaning |\n|---|---|---|\n"
        ));
        for arg in args.iter().filter(|a| a.get_help_heading() == Some(group)) {
            out.push_str(&table_row(arg));
            out.push('\n');
        }
        out.push('\n');
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

fn table_row(arg: &clap::Arg) -> String {
    let key = option_key(arg);
    let long = arg.get_long().unwrap();
    let takes_value = arg.get_action().takes_values();
    let value = arg
        .get_value_names()
        .and_then(|v| v.first())
        .filter(|_| takes_value)
        .map(|v| v.to_string());
    let (option, mut flag) = match &value {
        Some(v) => (format!("`{key}={v}`"), format!("`--{long} {v}`")),
        None => (format!("`{key}`"), format!("`--{long}`")),
    };
    if let Some(short) = arg.get_short() {
        flag = format!("`-{short}`, {flag}");
    }
    let mut meaning = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
    if !meaning.ends_with('.') {
        meaning.push('.');
    }
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .filter(|_| takes_value)
        .map(|d| d.to_string_lossy().into_owned())
        .collect();
    if !defaults.is_empty() {
        meaning.push_str(&format!(" Default: {}.", defaults.join(", ")));
    }
    // A `|` would end the cell, even in a code span.
    let cell = |s: &str| s.replace('|', "\\|");
    format!(
        "| {} | {} | {} |",
        cell(&option),
        cell(&flag),
        cell(&meaning)
    )
}

/// Checks that nothing keeps an option out of `-o` or the table: every
/// mount option has a long flag and a help heading of [`GROUPS`].
#[cfg(test)]
pub(super) fn assert_declarations_complete() {
    for arg in mount_option_args() {
        let id = arg.get_id().as_str();
        assert!(arg.get_long().is_some(), "{id}: no long flag");
        assert!(arg.get_help().is_some(), "{id}: no help");
        assert!(
            arg.get_help_heading().is_some_and(|h| GROUPS.contains(&h)),
            "{id}: help heading {:?} is not one of {GROUPS:?}",
            arg.get_help_heading()
        );
    }
    // The whole command line agrees with itself (clap's own checks).
    <super::Cli as clap::CommandFactory>::command().debug_assert();
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::super::parse;
    use super::*;

    /// A value for every mount option (None: a flag). A new option without
    /// one here fails `every_option_means_the_same_in_both_forms`.
    const SAMPLES: &[(&str, Option<&str>)] = &[
        ("conf", Some("/etc/ceph/other.conf")),
        ("id", Some("bob")),
        ("keyring", Some("/etc/ceph/bob.keyring")),
        ("rados_timeout", Some("5")),
        ("image", Some("vm1")),
        ("ro", None),
        ("rw", None),
        ("fixed_size", None),
        ("allow_other", None),
        ("allow_root", None),
        ("default_permissions", None),
        ("uid", Some("123")),
        ("gid", Some("456")),
        ("fsname", Some("rbd:elsewhere")),
        ("cache_size", Some("128")),
        ("cache_max_dirty", Some("16")),
        ("cache_max_dirty_age", Some("2.5")),
        ("cache_prefetch", Some("8")),
        ("cache_workers", Some("3")),
        ("image_format", Some("1")),
        ("image_features", Some("layering+exclusive-lock")),
        ("object_size", Some("64K")),
        ("data_pool", Some("rbd-ec")),
        ("log_file", Some("/var/log/rbdfs.log")),
        ("debug", None),
    ];

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn ok(v: &[&str]) -> MountConfig {
        parse(args(v)).unwrap_or_else(|e| panic!("{v:?}: {e}"))
    }

    fn err(v: &[&str]) -> String {
        match parse(args(v)) {
            Ok(c) => panic!("{v:?} parsed: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// The four ways to give one option: helper form and subcommand form
    /// with `-o`, and the long flag with its value apart or joined.
    fn all_forms(key: &str, long: &str, value: Option<&str>) -> Vec<Vec<String>> {
        let (opt, flag) = match value {
            Some(v) => (
                format!("{key}={v}"),
                vec![format!("--{long}"), v.to_string()],
            ),
            None => (key.to_string(), vec![format!("--{long}")]),
        };
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let mut flag_args = s(&["rbdfs", "mount"]);
        flag_args.extend(flag);
        flag_args.extend(s(&["p", "/m"]));
        let mut joined = s(&["rbdfs", "mount"]);
        joined.push(match value {
            Some(v) => format!("--{long}={v}"),
            None => format!("--{long}"),
        });
        joined.extend(s(&["p", "/m"]));
        vec![
            s(&["rbdfs", "p", "/m", "-o", &opt]),
            s(&["rbdfs", "mount", "-o", &opt, "p", "/m"]),
            flag_args,
            joined,
        ]
    }

    fn strs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    #[test]
    fn declarations_are_complete() {
        assert_declarations_complete();
    }

    #[test]
    fn every_option_means_the_same_in_both_forms() {
        let default = ok(&["rbdfs", "p", "/m"]);
        let declared = mount_option_args();
        for arg in &declared {
            let key = option_key(arg);
            let long = arg.get_long().unwrap();
            let &(_, value) = SAMPLES
                .iter()
                .find(|(k, _)| *k == key)
                .unwrap_or_else(|| panic!("no sample value for mount option {key}: add one"));
            assert_eq!(
                value.is_some(),
                arg.get_action().takes_values(),
                "{key}: the sample and the declaration disagree on taking a value"
            );
            let forms = all_forms(&key, long, value);
            let first = ok(&strs(&forms[0]));
            for form in &forms[1..] {
                assert_eq!(ok(&strs(form)), first, "{form:?} vs {:?}", forms[0]);
            }
            if key != "rw" {
                assert_ne!(first, default, "{key} changed nothing");
            }
        }
        for (key, _) in SAMPLES {
            assert!(
                declared.iter().any(|a| option_key(a) == *key),
                "sample for {key}, which is not a mount option"
            );
        }

        // All of them at once (later ones win, so rw after ro, allow_root
        // after allow_other): one -o list, several -o, the long flags.
        let opts: Vec<String> = SAMPLES
            .iter()
            .map(|(k, v)| v.map_or(k.to_string(), |v| format!("{k}={v}")))
            .collect();
        let mut one = args(&["rbdfs", "p", "/m", "-o"]);
        one.push(opts.join(",").into());
        let mut several = args(&["rbdfs", "mount"]);
        let mut flags = args(&["rbdfs", "mount"]);
        for ((k, v), opt) in SAMPLES.iter().zip(&opts) {
            several.extend(["-o".into(), opt.into()]);
            flags.push(format!("--{}", k.replace('_', "-")).into());
            flags.extend(v.map(OsString::from));
        }
        several.extend(args(&["p", "/m"]));
        flags.extend(args(&["p", "/m"]));
        let (one, several, flags) = (
            parse(one).unwrap(),
            parse(several).unwrap(),
            parse(flags).unwrap(),
        );
        assert_eq!(one, several);
        assert_eq!(one, flags);
        assert!(!one.read_only);
        assert_eq!(one.acl, SessionACL::RootAndOwner);
        assert!(one.fixed_size);
        assert_eq!((one.uid, one.gid), (123, 456));
        assert_eq!(one.cache.max_dirty_age, Duration::from_millis(2500));
        assert_eq!(one.create.order, 16);
        assert_eq!(one.log_level, log::LevelFilter::Debug);
    }

    #[test]
    fn bad_values_fail_alike_in_both_forms() {
        for (key, bad) in [
            ("rados_timeout", "x"),
            ("uid", "-1"),
            ("gid", "4294967296"),
            ("cache_size", "1073741825"),
            ("cache_max_dirty", "x"),
            ("cache_max_dirty_age", "inf"),
            ("cache_prefetch", "-2"),
            ("cache_workers", "257"),
            ("image_format", "3"),
            ("image_features", "layering+bogus"),
            ("object_size", "2K"),
            ("object_size", "64G"),
        ] {
            let long = key.replace('_', "-");
            let forms = all_forms(key, &long, Some(bad));
            let first = err(&strs(&forms[0]));
            assert!(first.contains(&format!("--{long}")), "{first}");
            assert!(first.contains(bad), "{first}");
            for form in &forms[1..] {
                if bad.starts_with('-') && form.contains(&bad.to_string()) {
                    // `--uid -1`: clap takes -1 for a flag (as it would any
                    // value starting with -); `-o` gives `--uid=-1`.
                    continue;
                }
                assert_eq!(err(&strs(form)), first, "{form:?}");
            }
        }
    }

    #[test]
    fn errors_name_the_option() {
        let e = err(&["rbdfs", "p", "/m", "-o", "ro,bogus=1"]);
        assert!(e.contains("unknown mount option 'bogus=1'"), "{e}");
        let e = err(&["rbdfs", "p", "/m", "-o", "foreground"]);
        assert!(e.contains("unknown mount option 'foreground'"), "{e}");
        let e = err(&["rbdfs", "p", "/m", "-o", "cache-size=1"]);
        assert!(e.contains("unknown mount option 'cache-size=1'"), "{e}");
        let e = err(&["rbdfs", "p", "/m", "-o", "conf"]);
        assert!(e.contains("mount option conf needs a value"), "{e}");
        let e = err(&["rbdfs", "p", "/m", "-o", "ro=1"]);
        assert!(e.contains("mount option ro takes no value"), "{e}");
        let e = err(&["rbdfs", "p", "/m", "-o", "cache_workers=0"]);
        assert!(
            e.contains("--cache-workers") && e.contains("1 to 256"),
            "{e}"
        );
        let e = err(&["rbdfs", "p", "/m", "-o", "cache_max_dirty_age=-1"]);
        assert!(e.contains("0 to 3600"), "{e}");
    }

    #[test]
    fn generic_mount_options_are_ignored() {
        let plain = ok(&["rbdfs", "p", "/m"]);
        let generic = ok(&[
            "rbdfs",
            "p",
            "/m",
            "-o",
            "defaults,_netdev,nofail,noatime,rw,x-systemd.automount,x-systemd.mount-timeout=30,subtype=rbdfs,fstype=fuse.rbdfs,comment=x,nodev,nosuid,,",
        ]);
        assert_eq!(generic, plain);
    }

    #[test]
    fn defaults_are_the_config_defaults() {
        let c = ok(&["rbdfs", "mount", "p", "/m"]);
        assert_eq!(c.cache, CacheConfig::default());
        assert_eq!(c.create, CreateOptions::default());
        assert_eq!(c.connect.timeout_secs, DEFAULT_RADOS_TIMEOUT);
        assert_eq!(c.connect.conf, None);
        assert!(!c.read_only && !c.fixed_size && !c.default_permissions);
        assert_eq!(c.acl, SessionACL::Owner);
        // SAFETY: getuid/getgid take no arguments and cannot fail.
        assert_eq!((c.uid, c.gid), unsafe { (libc::getuid(), libc::getgid()) });
        assert_eq!(c.log_level, log::LevelFilter::Info);
    }

    #[test]
    fn later_options_win() {
        assert!(!ok(&["rbdfs", "p", "/m", "-o", "ro,rw"]).read_only);
        assert!(ok(&["rbdfs", "p", "/m", "-o", "rw,ro"]).read_only);
        assert!(ok(&["rbdfs", "p", "/m", "-o", "ro,ro"]).read_only);
        // Every option may come more than once, as with the old -o parser.
        let twice: Vec<String> = SAMPLES
            .iter()
            .map(|(k, v)| v.map_or(format!("{k},{k}"), |v| format!("{k}={v},{k}={v}")))
            .collect();
        ok(&["rbdfs", "p", "/m", "-o", &twice.join(",")]);
        assert_eq!(
            ok(&["rbdfs", "p", "/m", "-vv", "-v"]).log_level,
            log::LevelFilter::Trace
        );
        assert!(!ok(&["rbdfs", "mount", "--ro", "-o", "rw", "p", "/m"]).read_only);
        assert!(ok(&["rbdfs", "mount", "-o", "rw", "--ro", "p", "/m"]).read_only);
        let acl = |o: &str| ok(&["rbdfs", "p", "/m", "-o", o]).acl;
        assert_eq!(acl("allow_other,allow_root"), SessionACL::RootAndOwner);
        assert_eq!(acl("allow_root,allow_other"), SessionACL::All);
        assert_eq!(ok(&["rbdfs", "p", "/m", "-o", "uid=1,uid=2"]).uid, 2);
        let conf = |v: &[&str]| ok(v).connect.conf.unwrap();
        assert_eq!(
            conf(&["rbdfs", "mount", "-c", "/a", "-o", "conf=/b", "p", "/m"]),
            PathBuf::from("/b")
        );
        assert_eq!(
            conf(&["rbdfs", "mount", "-o", "conf=/b", "--conf", "/a", "p", "/m"]),
            PathBuf::from("/a")
        );
        // `debug` means debug logging wherever it is, as before.
        assert_eq!(
            ok(&["rbdfs", "p", "/m", "-o", "debug", "-vv"]).log_level,
            log::LevelFilter::Debug
        );
        assert_eq!(
            ok(&["rbdfs", "p", "/m", "-vv"]).log_level,
            log::LevelFilter::Trace
        );
    }

    #[test]
    fn every_spelling_of_dash_o() {
        let want = ok(&["rbdfs", "mount", "-f", "-o", "ro,uid=7", "p", "/m"]);
        for v in [
            &["rbdfs", "mount", "-fo", "ro,uid=7", "p", "/m"][..],
            &["rbdfs", "mount", "-f", "-oro,uid=7", "p", "/m"],
            &["rbdfs", "mount", "-f", "-o=ro,uid=7", "p", "/m"],
            &["rbdfs", "mount", "-fo=ro,uid=7", "p", "/m"],
            &["rbdfs", "mount", "-foro,uid=7", "p", "/m"],
            &["rbdfs", "p", "/m", "-f", "-o", "ro", "-o", "uid=7"],
            &["rbdfs", "p", "-fo", "ro", "/m", "-o", "uid=7"],
        ] {
            assert_eq!(ok(v), want, "{v:?}");
        }
        // A value that looks like -o belongs to its option: clap refuses
        // it apart (as before), and takes it joined.
        for v in [
            &["rbdfs", "mount", "--fsname", "-o", "ro", "p", "/m"][..],
            &["rbdfs", "mount", "-c", "-o", "ro", "p", "/m"],
        ] {
            let e = err(v);
            assert!(e.contains("a value is required"), "{v:?}: {e}");
        }
        let c = ok(&["rbdfs", "mount", "--fsname=-o", "p", "/m"]);
        assert_eq!(c.fsname.as_deref(), Some("-o"));
        let c = ok(&["rbdfs", "mount", "-c=-o", "p", "/m"]);
        assert_eq!(c.connect.conf, Some(PathBuf::from("-o")));
        let c = ok(&["rbdfs", "mount", "-o", "fsname=-x,id=a=b", "p", "/m"]);
        assert_eq!(c.fsname.as_deref(), Some("-x"));
        assert_eq!(c.connect.id.as_deref(), Some("a=b"));
        // After `--`, everything is a positional.
        let c = ok(&["rbdfs", "mount", "-o", "ro", "--", "-o", "/m"]);
        assert_eq!(c.pool, "-o");
        assert!(c.read_only);
        assert!(parse(args(&["rbdfs", "mount", "p", "/m", "-o"])).is_err());
    }

    #[test]
    fn help_lists_every_option() {
        let help = match parse(args(&["rbdfs", "mount", "--help"])) {
            Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => e.to_string(),
            other => panic!("--help gave {other:?}"),
        };
        let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let help_flat = flat(&help);
        for group in GROUPS {
            assert!(help.contains(&format!("\n{group}:\n")), "{group}\n{help}");
        }
        for arg in mount_option_args() {
            let long = format!("--{}", arg.get_long().unwrap());
            assert!(help.contains(&long), "{long} missing\n{help}");
            let text = flat(&arg.get_help().unwrap().to_string());
            assert!(help_flat.contains(&text), "help of {long} missing\n{help}");
            for d in arg.get_default_values() {
                let d = format!("[default: {}]", d.to_string_lossy());
                assert!(help_flat.contains(&d), "{long}: {d} missing\n{help}");
            }
        }
        for (key, _) in SAMPLES {
            assert!(help.contains(&key.replace('_', "-")), "{key}\n{help}");
        }
    }

    /// README.md's table of mount options is [`options_table`], verbatim,
    /// between its two markers.
    #[test]
    fn readme_table_matches_declarations() {
        const BEGIN: &str = "<!-- mount options: generated from src/cli/options.rs";
        const END: &str = "<!-- end of mount options -->";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let expected = options_table();
        let help = format!(
            "\nREADME.md must hold, between the lines\n{BEGIN} ... -->\nand\n{END}\n\
             exactly this (from the declarations in src/cli/options.rs):\n\n{expected}"
        );
        let start = readme
            .find(BEGIN)
            .unwrap_or_else(|| panic!("no start marker{help}"));
        let start = start + readme[start..].find('\n').unwrap() + 1;
        let len = readme[start..]
            .find(END)
            .unwrap_or_else(|| panic!("no end marker{help}"));
        let actual = &readme[start..start + len];

        // Name the rows that differ before showing the whole table.
        let rows = |t: &str| -> Vec<(String, String)> {
            t.lines()
                .filter(|l| l.starts_with("| `"))
                .map(|l| {
                    let key = l.split(" | ").next().unwrap().trim_start_matches("| ");
                    (key.to_string(), l.to_string())
                })
                .collect()
        };
        let (want, have) = (rows(&expected), rows(actual));
        let mut problems = vec![];
        for (key, row) in &want {
            match have.iter().find(|(k, _)| k == key) {
                None => problems.push(format!("missing from README: {key}")),
                Some((_, r)) if r != row => {
                    problems.push(format!("differs: {key}\n  README: {r}\n  wanted: {row}"))
                }
                Some(_) => {}
            }
        }
        for (key, _) in &have {
            if !want.iter().any(|(k, _)| k == key) {
                problems.push(format!("in README but not a mount option: {key}"));
            }
        }
        assert!(
            problems.is_empty() && actual == expected,
            "{}{help}",
            problems.join("\n")
        );
        assert_eq!(want.len(), mount_option_args().len());
    }

    #[test]
    fn object_size_round_trips() {
        for order in crate::format::MIN_ORDER..=crate::format::MAX_ORDER {
            let shown = ObjectSize(order).to_string();
            assert_eq!(parse_object_size(&shown), Ok(ObjectSize(order)), "{shown}");
        }
        assert_eq!(ObjectSize(22).to_string(), "4M");
        assert_eq!(ObjectSize(16).to_string(), "64K");
    }
}
