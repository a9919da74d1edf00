//! Checks and helpers shared by remove and resize: watchers, the
//! exclusive lock, op features, the head object map and data objects.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use log::warn;
use parking_lot::Mutex;

use super::{CONCURRENT_OPS, WATCH_PROBE_TIMEOUT_MS, corrupt, ignore_enoent, rbd_call, store_err};
use crate::error::{ImageError, ImageResult};
use crate::format::v2::*;
use crate::image::features::{has_object_map, has_operations};
use crate::image::info::ImageInfo;
use crate::store::{NOSNAP, ObjectStore, SnapContext, StoreError};

/// Other clients watching `header_oid`: a header-update notification (what
/// librbd sends after every header change, so harmless) goes out and
/// everyone who acknowledges it, or times out, is a watcher. Watches of
/// this client (same instance id) are left out. Stands in for `rados
/// listwatchers`, which the store does not offer; waits up to
/// [`WATCH_PROBE_TIMEOUT_MS`] for a watcher that died without unwatching.
pub fn other_watchers(
    store: &dyn ObjectStore,
    header_oid: &str,
) -> Result<Vec<(u64, u64)>, StoreError> {
    let me = store.instance_id();
    let payload = NotifyMessage::HeaderUpdate.encode();
    let replies = match store.notify(header_oid, &payload, WATCH_PROBE_TIMEOUT_MS) {
        Ok(r) => r,
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(replies
        .acks
        .iter()
        .map(|(gid, cookie, _)| (*gid, *cookie))
        .chain(replies.timeouts.iter().copied())
        .filter(|(gid, _)| *gid != me)
        .collect())
}

/// Holders of the image's exclusive lock (`rbd_lock` on the header).
pub(super) fn lock_holders(
    store: &dyn ObjectStore,
    image: &str,
    header_oid: &str,
) -> ImageResult<Vec<Locker>> {
    match store.exec(
        header_oid,
        LOCK_CLASS,
        "get_info",
        &get_info_input(RBD_LOCK_NAME),
    ) {
        Ok(reply) => Ok(decode_get_info(&reply)
            .map_err(|e| corrupt(image, e))?
            .lockers),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(store_err(image, e)),
    }
}

pub(super) fn op_features(
    store: &dyn ObjectStore,
    info: &ImageInfo,
    image: &str,
) -> ImageResult<u64> {
    if !has_operations(info.features) {
        return Ok(0);
    }
    let reply = rbd_call(store, &info.header_oid, "op_features_get", &[])
        .map_err(|e| store_err(image, e))?;
    decode_u64_reply(&reply, "rbd.op_features_get reply").map_err(|e| corrupt(image, e))
}

/// The image's head object map, as far as it can be used.
pub(super) struct HeadMap {
    pub(super) map: ObjectMap,
    /// False when the image is flagged object-map-invalid: the map is still
    /// kept up to date (as librbd does) but every object may exist.
    trusted: bool,
}

impl HeadMap {
    fn may_exist(&self, object_no: u64) -> bool {
        !self.trusted || self.map.get(object_no).is_none_or(|s| s.may_exist())
    }
}

/// Loads the head object map of an image with the object-map feature.
/// None when the image has no such feature, or the map object is missing
/// (then it is left missing: `rbd object-map rebuild` makes one).
pub(super) fn load_object_map(
    store: &dyn ObjectStore,
    info: &ImageInfo,
    image: &str,
) -> ImageResult<Option<HeadMap>> {
    let Some(id) = info.id.as_deref() else {
        return Ok(None);
    };
    if !has_object_map(info.features) {
        return Ok(None);
    }
    let flags = rbd_call(store, &info.header_oid, "get_flags", &snap_id_input(NOSNAP))
        .map_err(|e| store_err(image, e))?;
    let flags = decode_get_flags(&flags).map_err(|e| corrupt(image, e))?;
    let trusted = flags & FLAG_OBJECT_MAP_INVALID == 0;
    if !trusted {
        warn!("image {image}: object map flagged invalid; treating every object as present");
    }
    match rbd_call(
        store,
        &object_map_object(id, NOSNAP),
        "object_map_load",
        &[],
    ) {
        Ok(reply) => Ok(Some(HeadMap {
            map: ObjectMap::decode(&reply).map_err(|e| corrupt(image, e))?,
            trusted,
        })),
        Err(e) if e.is_not_found() => {
            warn!("image {image}: object map missing; treating every object as present");
            Ok(None)
        }
        Err(e) => Err(store_err(image, e)),
    }
}

pub(super) fn may_exist(map: Option<&HeadMap>, object_no: u64) -> bool {
    map.is_none_or(|m| m.may_exist(object_no))
}

/// Runs `f` for every object number in `range`, on up to
/// [`CONCURRENT_OPS`] threads; stops at the first error and returns it.
fn for_each_object(
    range: Range<u64>,
    f: impl Fn(u64) -> ImageResult<()> + Sync,
) -> ImageResult<()> {
    let len = range.end.saturating_sub(range.start);
    if len == 0 {
        return Ok(());
    }
    let threads = (CONCURRENT_OPS as u64).min(len) as usize;
    let next = AtomicU64::new(range.start);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<ImageError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= range.end {
                        break;
                    }
                    if let Err(e) = f(n) {
                        failed.store(true, Ordering::Relaxed);
                        first_error.lock().get_or_insert(e);
                        break;
                    }
                }
            });
        }
    });
    match first_error.into_inner() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// [`for_each_object`] for the other operations of `admin`.
pub(super) fn for_each_object_pub(
    range: Range<u64>,
    f: impl Fn(u64) -> ImageResult<()> + Sync,
) -> ImageResult<()> {
    for_each_object(range, f)
}

/// Removes the data objects in `range` that the object map (if any) says
/// may exist, with `snapc` so snapshots keep their data. Absent objects
/// are fine.
pub(super) fn remove_data_objects(
    data: &dyn ObjectStore,
    info: &ImageInfo,
    image: &str,
    range: Range<u64>,
    map: Option<&HeadMap>,
    snapc: &SnapContext,
) -> ImageResult<()> {
    for_each_object(range, |n| {
        if !may_exist(map, n) {
            return Ok(());
        }
        ignore_enoent(data.remove(&info.data_object(n), snapc)).map_err(|e| store_err(image, e))
    })
}

/// Runs `f` with the store that holds the image's data objects.
pub(super) fn with_data_store<T>(
    store: &dyn ObjectStore,
    info: &ImageInfo,
    image: &str,
    f: impl FnOnce(&dyn ObjectStore) -> ImageResult<T>,
) -> ImageResult<T> {
    match info.data_pool {
        Some(pool) if pool != store.pool_id() => {
            let data = store.pool_by_id(pool).map_err(|e| store_err(image, e))?;
            f(&*data)
        }
        _ => f(store),
    }
}
