//! The file system: inode numbers, attributes, directory listings, file
//! handles and errno values. Everything about images lives below, in
//! [`Pool`] and [`Image`].
//!
//! Tree: `/IMAGE` (the head of each image), `/.snap/IMAGE/SNAP` (read-only
//! snapshot files), `/.diff/IMAGE/SNAP/{full,since-FROM}` (read-only `rbd
//! export-diff` streams, laid out by the image layer), `/.part/IMAGE/N`
//! and `/.part/.snap/IMAGE/SNAP/N` (partitions as files, `parts.rs`). `touch
//! /.snap/IMAGE/NAME` creates snapshot NAME and `rm` removes it.
//!
//! [`RbdFs`] is the file system without FUSE: every operation is a method
//! taking plain arguments (inode numbers, names, offsets, flags) and
//! returning plain results or an [`Errno`] (`ops.rs`), so it runs in-process
//! in tests. `fuse.rs` is the thin `fuser::Filesystem` adapter over it.

mod attrs;
mod errno;
mod fuse;
mod handles;
mod inodes;
mod names;
mod ops;
mod parts;
mod scopes;
mod tree;
mod usage;
mod workflows;
mod xattrs;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use parking_lot::Mutex;

pub use self::errno::Errno;
pub use self::fuse::{FUSE_THREADS, FuseFs};
use self::handles::Handle;
use self::inodes::Inodes;
pub use self::names::{
    DIFF_DIR, DIFF_FULL, DIFF_SINCE, NAME_MAX, PART_DIR, SNAP_DIR, file_name, is_file_name,
    is_reserved_root_name,
};
pub use self::ops::{Attr, DirEntry, FileKind, Opened, StatFs, Xattr};
pub use self::scopes::{MountKind, MultiFs, NS_DIR};
use self::usage::UsageState;
use crate::image::Image;
use crate::image::admin::CreateOptions;
use crate::pool::Pool;

/// Inode number of the root directory.
pub const ROOT_INO: u64 = inodes::ROOT;

#[derive(Debug, Clone)]
pub struct FsOptions {
    pub read_only: bool,
    /// Writes and fallocate past the end fail with ENOSPC instead of
    /// growing the image (except through the handle that created it).
    pub fixed_size: bool,
    /// What images created through the filesystem look like.
    pub create: CreateOptions,
    pub uid: u32,
    pub gid: u32,
}

pub struct RbdFs {
    pool: Arc<Pool>,
    opts: FsOptions,
    inodes: Mutex<Inodes>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    mounted_at: SystemTime,
    usage_state: Arc<Mutex<UsageState>>,
    part_tables: parts::PartTables,
}

impl RbdFs {
    pub fn new(pool: Arc<Pool>, opts: FsOptions) -> RbdFs {
        RbdFs {
            pool,
            opts,
            inodes: Mutex::new(Inodes::new()),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            mounted_at: SystemTime::now(),
            usage_state: Arc::default(),
            part_tables: Default::default(),
        }
    }

    /// Opens (or refreshes) the image behind a name; a corrupt or vanished
    /// image is dropped from the cache so the next use tries afresh.
    fn image(&self, name: &str) -> Result<Arc<Image>, Errno> {
        self.pool.image(name).map_err(|e| {
            self.pool.forget(name);
            Errno::image(&format!("open {name}"), &e)
        })
    }
}
