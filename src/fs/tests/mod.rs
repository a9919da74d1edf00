//! The file system in-process, without FUSE: the stack `rbdfs mount`
//! builds (store, cache, pool, [`RbdFs`]) over the in-memory cluster,
//! driven through the same methods the FUSE adapter calls.

mod diff;
mod faults;
mod model;
mod parts;
mod scopes;
mod workflows;

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use super::{DIFF_DIR, Errno, FsOptions, PART_DIR, ROOT_INO, RbdFs, SNAP_DIR};
use crate::cache::{Cache, CacheConfig};
use crate::format::v2::*;
use crate::image::admin::CreateOptions;
use crate::pool::Pool;
use crate::store::ObjectStore;

fn cache() -> Arc<Cache> {
    Cache::new(CacheConfig {
        capacity: 4 << 20,
        workers: 2,
        max_dirty_age: Duration::from_millis(50),
        ..CacheConfig::default()
    })
}

fn v1() -> CreateOptions {
    CreateOptions {
        format: 1,
        order: 12,
        ..CreateOptions::default()
    }
}

fn v2(features: u64) -> CreateOptions {
    CreateOptions {
        format: 2,
        order: 12,
        features: Some(features),
        ..CreateOptions::default()
    }
}

fn v2lock() -> CreateOptions {
    v2(FEATURE_LAYERING | FEATURE_EXCLUSIVE_LOCK | FEATURE_OBJECT_MAP | FEATURE_FAST_DIFF)
}

fn striped() -> CreateOptions {
    CreateOptions {
        stripe_unit: Some(1024),
        stripe_count: Some(3),
        ..v2(FEATURE_LAYERING | FEATURE_EXCLUSIVE_LOCK | FEATURE_OBJECT_MAP)
    }
}

/// One mount: what `rbdfs mount` builds over a store (see `cli::run_mount`).
struct Mount {
    pool: Arc<Pool>,
    fs: RbdFs,
}

impl Mount {
    fn new(store: Arc<dyn ObjectStore>, create: CreateOptions) -> Mount {
        let pool = Arc::new(Pool::new(store, cache(), None));
        let fs = RbdFs::new(
            pool.clone(),
            FsOptions {
                read_only: false,
                fixed_size: false,
                create,
                uid: 0,
                gid: 0,
            },
        );
        Mount { pool, fs }
    }

    /// What the end of the FUSE session does: write back, give back locks.
    fn unmount(self) -> Result<(), crate::image::ImageError> {
        self.fs.destroy();
        self.pool.close_all()
    }

    fn ino(&self, parent: u64, name: &str) -> Result<u64, Errno> {
        self.fs.lookup(parent, OsStr::new(name)).map(|a| a.ino)
    }

    fn snap_root(&self) -> u64 {
        self.ino(ROOT_INO, SNAP_DIR).expect(".snap")
    }

    fn snap_dir(&self, image: &str) -> Result<u64, Errno> {
        self.ino(self.snap_root(), image)
    }

    /// Opens the head of `image` read-write.
    fn open_head(&self, image: &str) -> Result<u64, Errno> {
        let ino = self.ino(ROOT_INO, image)?;
        self.fs.open(ino, libc::O_RDWR).map(|o| {
            assert!(o.direct_io, "heads are direct I/O");
            o.fh
        })
    }

    /// Names in directory `ino`, without `.` and `..` (checked here).
    fn names(&self, ino: u64) -> Result<Vec<String>, Errno> {
        let entries = self.fs.readdir(ino, 0)?;
        assert_eq!(entries[0].name, ".");
        assert_eq!(entries[1].name, "..");
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.offset, i as u64 + 1);
        }
        // Going on from an offset gives the rest.
        if entries.len() > 2 {
            let rest = self.fs.readdir(ino, 2)?;
            assert_eq!(rest, entries[2..]);
        }
        Ok(entries.into_iter().skip(2).map(|e| e.name).collect())
    }
}

/// A deterministic byte pattern.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            seed.wrapping_mul(31)
                .wrapping_add(i as u8)
                .wrapping_add((i >> 8) as u8)
        })
        .collect()
}
