//! Snapshot protection (`rbd snap protect|unprotect`), and what a
//! snapshot's clones are: the checks `rbd snap rm` and `unprotect` make.

use log::info;

use super::{busy, corrupt, rbd_call, store_err, unsupported};
use crate::error::{ImageError, ImageResult};
use crate::format::SnapshotInfo;
use crate::format::v2::*;
use crate::image::features::has_layering;
use crate::image::info::ImageInfo;
use crate::store::ObjectStore;

fn find<'a>(info: &'a ImageInfo, image: &str, snap: &str) -> ImageResult<&'a SnapshotInfo> {
    info.snapshot(snap).ok_or_else(|| ImageError::NoSnapshot {
        image: image.to_string(),
        snap: snap.to_string(),
    })
}

/// The protection status of snapshot `snap_id` (format 1 and images
/// without layering: never protected).
pub fn protection_status(
    store: &dyn ObjectStore,
    info: &ImageInfo,
    image: &str,
    snap_id: u64,
) -> ImageResult<ProtectionStatus> {
    if info.format == 1 || !has_layering(info.features) {
        return Ok(ProtectionStatus::Unprotected);
    }
    let reply = rbd_call(
        store,
        &info.header_oid,
        "get_protection_status",
        &snap_id_input(snap_id),
    )
    .map_err(|e| store_err(image, e))?;
    decode_get_protection_status(&reply).map_err(|e| corrupt(image, e))
}

/// Clone-v2 children of snapshot `snap_id` (its `child_count`).
pub fn v2_child_count(
    store: &dyn ObjectStore,
    info: &ImageInfo,
    image: &str,
    snap_id: u64,
) -> ImageResult<u32> {
    if info.format == 1 {
        return Ok(0);
    }
    let reply = rbd_call(
        store,
        &info.header_oid,
        "snapshot_get",
        &snap_id_input(snap_id),
    )
    .map_err(|e| store_err(image, e))?;
    Ok(SnapshotRecord::decode(&reply)
        .map_err(|e| corrupt(image, e))?
        .child_count)
}

/// Clone-v1 children of `parent` listed in `rbd_children` of the pool
/// `store` serves (ids).
pub fn v1_children(
    store: &dyn ObjectStore,
    image: &str,
    parent: &ParentSpec,
) -> ImageResult<Vec<String>> {
    match rbd_call(
        store,
        RBD_CHILDREN,
        "get_children",
        &get_children_input(parent),
    ) {
        Ok(reply) => decode_get_children(&reply).map_err(|e| corrupt(image, e)),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(store_err(image, e)),
    }
}

fn set_status(
    store: &dyn ObjectStore,
    info: &ImageInfo,
    image: &str,
    snap_id: u64,
    status: ProtectionStatus,
) -> ImageResult<()> {
    rbd_call(
        store,
        &info.header_oid,
        "set_protection_status",
        &set_protection_status_input(snap_id, status as u8),
    )
    .map(drop)
    .map_err(|e| store_err(image, e))
}

fn require_layering(info: &ImageInfo, image: &str) -> ImageResult<()> {
    if info.format == 1 || !has_layering(info.features) {
        return Err(unsupported(
            image,
            "snapshot protection needs a format-2 image with layering",
        ));
    }
    Ok(())
}

/// Protects snapshot `snap` as librbd's `SnapshotProtectRequest`:
/// format 2 with layering (else EOPNOTSUPP, librbd's ENOSYS), not
/// protected yet (EBUSY, as `rbd snap protect`), then
/// `set_protection_status(PROTECTED)`. The caller holds the exclusive
/// lock where the image has one.
pub fn protect_snapshot(
    store: &dyn ObjectStore,
    info: &ImageInfo,
    image: &str,
    snap: &str,
) -> ImageResult<()> {
    require_layering(info, image)?;
    let s = find(info, image, snap)?;
    if protection_status(store, info, image, s.id)? != ProtectionStatus::Unprotected {
        return Err(busy(image, format!("snapshot {snap} is already protected")));
    }
    set_status(store, info, image, s.id, ProtectionStatus::Protected)?;
    info!("image {image}: protected snapshot {snap}");
    Ok(())
}

/// Unprotects snapshot `snap` as librbd's `SnapshotUnprotectRequest`:
/// EINVAL when not protected; the status goes to UNPROTECTING, the
/// snapshot's children are looked for (clone-v1 children in
/// `rbd_children` of this pool, clone-v2 children counted in the
/// snapshot), and with any left it goes back to PROTECTED and EBUSY;
/// else UNPROTECTED.
pub fn unprotect_snapshot(
    store: &dyn ObjectStore,
    info: &ImageInfo,
    image: &str,
    snap: &str,
) -> ImageResult<()> {
    require_layering(info, image)?;
    let s = find(info, image, snap)?;
    if protection_status(store, info, image, s.id)? == ProtectionStatus::Unprotected {
        return Err(super::invalid(
            image,
            format!("snapshot {snap} is already unprotected"),
        ));
    }
    set_status(store, info, image, s.id, ProtectionStatus::Unprotecting)?;
    let id = info.id.clone().unwrap_or_default();
    let spec = ParentSpec {
        pool_id: store.pool_id(),
        pool_namespace: String::new(),
        image_id: id,
        snap_id: s.id,
    };
    let children = v1_children(store, image, &spec).and_then(|v1| {
        let v2 = v2_child_count(store, info, image, s.id)?;
        Ok(v1.len() + v2 as usize)
    });
    match children {
        Ok(0) => {
            set_status(store, info, image, s.id, ProtectionStatus::Unprotected)?;
            info!("image {image}: unprotected snapshot {snap}");
            Ok(())
        }
        other => {
            set_status(store, info, image, s.id, ProtectionStatus::Protected)?;
            let n = other?;
            Err(busy(image, format!("snapshot {snap} has {n} clone(s)")))
        }
    }
}
