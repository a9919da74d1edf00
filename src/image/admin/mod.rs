//! Image lifecycle: create, remove, rename and resize, as librbd (Pacific,
//! 16.2) does them, over an [`ObjectStore`]. The results are meant to be
//! indistinguishable from `rbd create|rm|rename|resize` for the `rbd` and
//! `rados` tools.
//!
//! These are plain functions: no image needs to be open. What they do not
//! do, the caller does:
//!
//! - **Exclusive lock.** [`resize_image`] on an image with the
//!   exclusive-lock feature must be called by the lock's owner (this
//!   client); it checks and refuses otherwise. [`remove_image`] refuses an
//!   image whose lock another client holds, but does not take the lock
//!   itself (librbd does: a peer that asks us for it while we remove would
//!   find nobody answering on our side).
//! - **Our own opens.** [`remove_image`] finds other clients that watch the
//!   header (it sends a header-update notification and counts who answers,
//!   see [`other_watchers`]) but ignores watches of this client: the caller
//!   must make sure it does not have the image open itself.
//! - **Notifications.** None of these functions notifies watchers of the
//!   change; after [`resize_image`] or [`rename_image`] the caller sends a
//!   header update (its own watch callback may need locks it holds here),
//!   and reloads what it caches (size, object map).
//! - **Trash.** Pacific's `rbd rm` moves a format-2 image to `rbd_trash`
//!   first and removes it from there; the end state (nothing left) is the
//!   same as the direct removal done here, which is what librbd does when
//!   the trash is not supported. (An interrupted removal is therefore not
//!   listed by `rbd trash ls`; running [`remove_image`] again finishes it.)
//! - **Format-1 directory.** Format-1 names live in a TMAP that only the
//!   OSD's TMAPUP changes atomically; the store's `tmap_update` fails on
//!   Octopus and later librados, and then a non-atomic rewrite is used,
//!   see `update_v1_directory`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use log::warn;

use super::header;
use super::info::ImageInfo;
use crate::error::{ImageError, ImageResult};
use crate::format::v1;
use crate::format::v2::{self, *};
use crate::format::{FormatError, tmap};
use crate::store::{NOSNAP, ObjectStore, StoreError};

mod clone;
mod create;
mod flatten;
mod protect;
mod remove;
mod rename;
mod resize;
mod rollback;
mod shared;
mod snap_rename;

pub use self::clone::{CloneOptions, clone_image, default_clone_format};
pub use self::create::create_image;
pub use self::flatten::detach_parent;
pub use self::protect::{
    protect_snapshot, protection_status, unprotect_snapshot, v1_children, v2_child_count,
};
pub use self::remove::remove_image;
pub use self::rename::rename_image;
pub use self::resize::{ResizePlan, V1_SIZE_OFFSET, resize_image, resize_plan};
pub use self::rollback::rollback_objects;
pub use self::shared::other_watchers;
pub use self::snap_rename::rename_snapshot;

/// librbd's default object order (4 MiB objects).
pub const DEFAULT_ORDER: u8 = 22;

pub use crate::image::features::DEFAULT_FEATURES;

/// Image ids are cut to their last 14 characters so that `rbd_data.ID`
/// fits the 24-byte block name field (RBD_MAX_BLOCK_NAME_SIZE - len
/// ("rbd_data.") - 1).
pub const MAX_IMAGE_ID_LEN: usize = 14;

/// Format-1 block names live in a 24-byte NUL-terminated field.
const V1_BLOCK_NAME_MAX: usize = 23;

/// Data objects removed concurrently (librbd's
/// `rbd_concurrent_management_ops` default).
pub const CONCURRENT_OPS: usize = 10;

/// How long [`other_watchers`] waits for watchers to acknowledge.
pub const WATCH_PROBE_TIMEOUT_MS: u64 = 5000;

/// What [`create_image`] makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOptions {
    /// 1 (old format, deprecated) or 2.
    pub format: u8,
    /// Object size is `1 << order`, 12..=25.
    pub order: u8,
    /// Format 2 feature bits; `None` is [`DEFAULT_FEATURES`], reduced to
    /// what the OSDs support (`get_all_features`) like librbd's defaults.
    /// Striping and data-pool are set or cleared from the options below
    /// whatever is asked here. Object-map implies fast-diff (librbd).
    pub features: Option<u64>,
    /// Both or neither. A stripe unit equal to the object size with a count
    /// of 1 is no striping.
    pub stripe_unit: Option<u64>,
    pub stripe_count: Option<u64>,
    /// Pool id for the data objects (format 2). The image's own pool is the
    /// same as none.
    pub data_pool: Option<i64>,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            format: 2,
            order: DEFAULT_ORDER,
            features: None,
            stripe_unit: None,
            stripe_count: None,
            data_pool: None,
        }
    }
}

// ---------------------------------------------------------------------------
// Errors and small helpers
// ---------------------------------------------------------------------------

fn store_err(image: &str, source: StoreError) -> ImageError {
    ImageError::Store {
        image: image.to_string(),
        source,
    }
}

fn corrupt(image: &str, source: FormatError) -> ImageError {
    ImageError::Corrupt {
        image: image.to_string(),
        source,
    }
}

fn invalid(image: &str, reason: impl Into<String>) -> ImageError {
    ImageError::InvalidArgument {
        image: image.to_string(),
        reason: reason.into(),
    }
}

fn busy(image: &str, reason: impl Into<String>) -> ImageError {
    ImageError::Busy {
        image: image.to_string(),
        reason: reason.into(),
    }
}

fn unsupported(image: &str, reason: impl Into<String>) -> ImageError {
    ImageError::Unsupported {
        image: image.to_string(),
        reason: reason.into(),
    }
}

fn rbd_call(
    store: &dyn ObjectStore,
    oid: &str,
    method: &str,
    input: &[u8],
) -> Result<Vec<u8>, StoreError> {
    store.exec(oid, RBD_CLASS, method, input)
}

/// Ignores "no such object" (removing what is already gone).
fn ignore_enoent<T>(r: Result<T, StoreError>) -> Result<(), StoreError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Best-effort cleanup step: logs instead of failing.
fn cleanup(image: &str, what: &str, r: Result<(), StoreError>) {
    if let Err(e) = r {
        warn!("image {image}: cleanup: cannot {what}: {e}");
    }
}

/// A random u32 (no RNG crate here): std's per-process random hash keys
/// mixed with the clock and a counter.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    let v = h.finish();
    (v ^ (v >> 32)) as u32
}

// ---------------------------------------------------------------------------
// Names and lookup
// ---------------------------------------------------------------------------

/// Checks an image name (see [`super::check_name`]).
pub fn validate_image_name(name: &str) -> ImageResult<()> {
    super::check_name(super::NameKind::Image, name)
}

/// Which format the image `name` has, if it exists: librbd's
/// `detect_format` (`NAME.rbd` means format 1, `rbd_id.NAME` format 2).
pub fn image_format(store: &dyn ObjectStore, name: &str) -> ImageResult<Option<u8>> {
    match store.stat(&v1::header_object(name), NOSNAP) {
        Ok(_) => return Ok(Some(1)),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(store_err(name, e)),
    }
    match store.stat(&v2::id_object(name), NOSNAP) {
        Ok(_) => Ok(Some(2)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(store_err(name, e)),
    }
}

/// Loads the header of image `name` (either format) as the image code
/// reads it.
pub fn image_info(store: &dyn ObjectStore, name: &str) -> ImageResult<ImageInfo> {
    validate_image_name(name)?;
    let href = header::resolve(store, name)?;
    header::load(store, &href)
}

/// librbd's `generate_image_id`: the client's instance id in hex followed
/// by a random `rand()` value (31 bits) in hex, keeping the last
/// [`MAX_IMAGE_ID_LEN`] characters.
pub fn generate_image_id(instance_id: u64, random: u32) -> String {
    let id = format!("{:x}{:x}", instance_id, random & 0x7fff_ffff);
    let cut = id.len().saturating_sub(MAX_IMAGE_ID_LEN);
    id[cut..].to_string()
}

/// The block name of a new format-1 image as Pacific's `init_rbd_header`
/// makes it: `rb.<instance id high 32 bits>.<low 32 bits>.<rand()>` in hex,
/// cut to fit the 24-byte field. (Older librbd took the middle part from
/// `rbd.assign_bid` on `rbd_info`; Pacific uses the instance id.)
pub fn v1_block_name(instance_id: u64, random: u32) -> String {
    let mut s = format!(
        "rb.{:x}.{:x}.{:x}",
        instance_id >> 32,
        instance_id & 0xffff_ffff,
        random & 0x7fff_ffff
    );
    s.truncate(V1_BLOCK_NAME_MAX);
    s
}

// ---------------------------------------------------------------------------
// The format-1 directory (TMAP in the data of rbd_directory)
// ---------------------------------------------------------------------------

/// One change of the format-1 directory.
#[derive(Debug, Clone, Copy)]
enum DirChange<'a> {
    /// Add (or keep) `NAME` with an empty value, as librbd's `tmap_set`.
    Set(&'a str),
    /// Remove `NAME`; ENOENT when it is not there.
    Remove(&'a str),
}

/// Applies `changes` to the TMAP of `rbd_directory` in one update (the
/// OSD's TMAPUP: atomic).
///
/// librados' C `rados_tmap_update` (what the store calls) is a stub that
/// answers EOPNOTSUPP since Octopus (only the C++ API still sends
/// TMAPUP). When the store answers EOPNOTSUPP, the directory is updated by
/// reading it, changing it and writing it back instead: the same bytes,
/// but not atomic: an update another client makes between our read and
/// write is lost (its image would drop out of `rbd ls`). The store should
/// do this atomically (read with the object version, then write with
/// `assert_version`, retrying), after which this fallback is not used.
fn update_v1_directory(
    store: &dyn ObjectStore,
    changes: &[DirChange<'_>],
) -> Result<(), StoreError> {
    let mut command = Vec::new();
    for c in changes {
        command.extend(match *c {
            DirChange::Set(name) => tmap::set_command(name, &[]),
            DirChange::Remove(name) => tmap::remove_command(name),
        });
    }
    // One TMAPUP buffer: all the changes or none (the store applies it
    // atomically, guarded by the object's version).
    store.tmap_update(RBD_DIRECTORY, &command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ids_look_like_librbds() {
        // rbd-format.md: instance 0x101f, rand 0x39e781cb.
        assert_eq!(generate_image_id(0x101f, 0x39e7_81cb), "101f39e781cb");
        // rand() is 31 bits.
        assert_eq!(generate_image_id(0x130ae, 0xbfff_ffff), "130ae3fffffff");
        // Long ids keep their last 14 characters.
        let id = generate_image_id(u64::MAX, 0x7fff_ffff);
        assert_eq!(id.len(), MAX_IMAGE_ID_LEN);
        assert!(id.ends_with("7fffffff"));
        assert_eq!(generate_image_id(0, 0), "00");
    }

    #[test]
    fn v1_block_names() {
        assert_eq!(v1_block_name(0x1029, 0x6b8b_4567), "rb.0.1029.6b8b4567");
        assert_eq!(v1_block_name(0x130a2, 0xeb8b_4567), "rb.0.130a2.6b8b4567");
        let long = v1_block_name(u64::MAX, u32::MAX);
        assert_eq!(long.len(), V1_BLOCK_NAME_MAX);
        assert!(long.starts_with("rb.ffffffff.ffffffff."));
    }

    #[test]
    fn names() {
        for bad in ["", ".", "..", ".snap", "a/b", "a\0b", &"x".repeat(256)] {
            let e = validate_image_name(bad).unwrap_err();
            assert_eq!(e.errno(), libc::EINVAL, "{bad:?}");
        }
        for good in ["a", ".snapx", "a b", "x@y", &"x".repeat(255), "ü"] {
            validate_image_name(good).unwrap();
        }
    }
}
