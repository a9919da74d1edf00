//! Remove (`rbd rm`), format 1 and format 2.

use log::{info, warn};

use super::shared::{
    load_object_map, lock_holders, op_features, other_watchers, remove_data_objects,
    with_data_store,
};
use super::{
    DirChange, busy, corrupt, ignore_enoent, rbd_call, store_err, unsupported, update_v1_directory,
    validate_image_name,
};
use crate::error::{ImageError, ImageResult};
use crate::format::v2::{self, *};
use crate::image::features::{is_migrating, needs_lock};
use crate::image::header::{self, HeaderRef};
use crate::image::info::ImageInfo;
use crate::store::{NOSNAP, ObjectStore, SnapContext};

/// Removes image `name` as `rbd rm` does (librbd's `PreRemoveRequest` and
/// `RemoveRequest`).
///
/// Refused, with nothing changed:
/// - snapshots of any kind, user or hidden (trash, mirror, group): ENOTEMPTY.
///   A clone parent's children hang on its snapshots, so a parent with
///   children is refused by this too;
/// - other clients watching the header, or holding its exclusive lock
///   (EBUSY); the image in a group (EBUSY, librbd says EMLINK) or being
///   migrated (EBUSY);
/// - features we cannot handle (journaling, mirroring enabled, unknown
///   bits) and a clone v2 whose parent snapshot is in the trash (librbd
///   would also remove that snapshot from the parent): EOPNOTSUPP.
///
/// Format 2, in librbd's order: remove the data objects `0..object count`
/// (those the object map says may exist;
/// [`CONCURRENT_OPS`](super::CONCURRENT_OPS) at a time, absent ones
/// ignored, in the data pool if there is one); detach from the
/// parent if it is a clone (`child_detach` on the parent's header for clone
/// v2, `remove_child` on `rbd_children` for clone v1); remove
/// `rbd_header.ID`, `rbd_object_map.ID`, `rbd_id.NAME`; `dir_remove_image`.
/// An image whose header is already gone (a half-removed one) gets its
/// leftovers removed, as librbd does.
///
/// Format 1: data objects, `NAME.rbd`, then the TMAP entry.
pub fn remove_image(store: &dyn ObjectStore, name: &str) -> ImageResult<()> {
    validate_image_name(name)?;
    match header::resolve(store, name)? {
        HeaderRef::V1 { .. } => remove_v1(store, name),
        HeaderRef::V2 { id, .. } => remove_v2(store, name, &id),
    }
}

fn check_removable(store: &dyn ObjectStore, info: &ImageInfo, name: &str) -> ImageResult<()> {
    if let Some(reason) = &info.read_only {
        return Err(unsupported(name, format!("cannot remove: {reason}")));
    }
    if is_migrating(info.features) {
        return Err(busy(name, "image in migration state"));
    }
    let snaps = info.snapshots.len() + info.hidden_snapshots.len();
    if snaps > 0 {
        return Err(ImageError::NotEmpty {
            image: name.to_string(),
            reason: format!(
                "it has {} snapshot(s) ({} hidden: trash, mirror or group); remove them first",
                snaps,
                info.hidden_snapshots.len()
            ),
        });
    }
    let watchers = other_watchers(store, &info.header_oid).map_err(|e| store_err(name, e))?;
    if !watchers.is_empty() {
        let who: Vec<String> = watchers
            .iter()
            .map(|(gid, cookie)| format!("client.{gid} (cookie {cookie})"))
            .collect();
        return Err(busy(name, format!("it has watchers: {}", who.join(", "))));
    }
    if info.format == 2 && needs_lock(info.features) {
        let me = EntityName::client(store.instance_id());
        if let Some(l) = lock_holders(store, name, &info.header_oid)?
            .iter()
            .find(|l| l.entity() != me)
        {
            return Err(busy(
                name,
                format!(
                    "its exclusive lock is held by {} at {} (`rbd lock rm` if that client is dead)",
                    l.entity(),
                    l.address
                ),
            ));
        }
    }
    Ok(())
}

fn remove_v1(store: &dyn ObjectStore, name: &str) -> ImageResult<()> {
    let info = match header::load(
        store,
        &HeaderRef::V1 {
            name: name.to_string(),
        },
    ) {
        Ok(info) => info,
        Err(ImageError::NotFound(_)) => {
            // No header: perhaps a directory entry left by an interrupted
            // removal; removing it is all there is to do.
            return match update_v1_directory(store, &[DirChange::Remove(name)]) {
                Ok(()) => {
                    info!("image {name}: removed a directory entry without header");
                    Ok(())
                }
                Err(e) if e.is_not_found() => Err(ImageError::NotFound(name.to_string())),
                Err(e) => Err(store_err(name, e)),
            };
        }
        Err(e) => return Err(e),
    };
    check_removable(store, &info, name)?;
    let count = info.layout.object_count(info.size);
    remove_data_objects(store, &info, name, 0..count, None, &info.snapc)?;
    ignore_enoent(store.remove(&info.header_oid, &SnapContext::default()))
        .map_err(|e| store_err(name, e))?;
    ignore_enoent(update_v1_directory(store, &[DirChange::Remove(name)]))
        .map_err(|e| store_err(name, e))?;
    info!("image {name}: removed (format 1, {count} data objects checked)");
    Ok(())
}

/// How a clone is attached to its parent.
enum CloneLink {
    None,
    /// `remove_child` on `rbd_children`.
    V1(ParentSpec),
    /// `child_detach` on the parent's header.
    V2(ParentSpec),
}

fn clone_link(store: &dyn ObjectStore, info: &ImageInfo, name: &str) -> ImageResult<CloneLink> {
    let Some(parent) = &info.parent else {
        return Ok(CloneLink::None);
    };
    let spec = parent.spec.clone();
    if op_features(store, info, name)? & OP_FEATURE_CLONE_CHILD == 0 {
        return Ok(CloneLink::V1(spec));
    }
    // Clone v2: when the parent snapshot was removed while we hang on it,
    // it sits in the parent's trash and librbd removes it with its last
    // child. We do not, so leave such a clone to `rbd rm`.
    let parent_store = store
        .pool_in_namespace(spec.pool_id, &spec.pool_namespace)
        .map_err(|e| store_err(name, e))?;
    let parent_header = v2::header_object(&spec.image_id);
    match parent_store.exec(
        &parent_header,
        RBD_CLASS,
        "snapshot_get",
        &snap_id_input(spec.snap_id),
    ) {
        Ok(reply) => {
            let snap = SnapshotRecord::decode(&reply).map_err(|e| corrupt(name, e))?;
            if matches!(snap.namespace, SnapshotNamespace::Trash { .. }) && snap.child_count <= 1 {
                return Err(unsupported(
                    name,
                    "its parent snapshot is in the parent's trash and would have to be removed with it; use `rbd rm`",
                ));
            }
        }
        // Parent or snapshot gone: detaching is a no-op then.
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(store_err(name, e)),
    }
    Ok(CloneLink::V2(spec))
}

fn detach_clone(
    store: &dyn ObjectStore,
    link: &CloneLink,
    id: &str,
    name: &str,
) -> ImageResult<()> {
    match link {
        CloneLink::None => Ok(()),
        CloneLink::V1(spec) => ignore_enoent(rbd_call(
            store,
            RBD_CHILDREN,
            "remove_child",
            &remove_child_input(spec, id),
        ))
        .map_err(|e| store_err(name, e)),
        CloneLink::V2(spec) => {
            let parent_store = store
                .pool_in_namespace(spec.pool_id, &spec.pool_namespace)
                .map_err(|e| store_err(name, e))?;
            // The child is named by its pool and namespace, as librbd
            // attached it.
            let input = child_detach_input(spec.snap_id, store.pool_id(), id, &store.namespace());
            ignore_enoent(parent_store.exec(
                &v2::header_object(&spec.image_id),
                RBD_CLASS,
                "child_detach",
                &input,
            ))
            .map_err(|e| store_err(name, e))
        }
    }
}

fn remove_v2(store: &dyn ObjectStore, name: &str, id: &str) -> ImageResult<()> {
    let href = HeaderRef::V2 {
        name: name.to_string(),
        id: id.to_string(),
    };
    let snapc0 = SnapContext::default();
    let info = match header::load(store, &href) {
        Ok(info) => Some(info),
        // Header gone: remove what is left (librbd does the same).
        Err(ImageError::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    if let Some(info) = &info {
        check_removable(store, info, name)?;
        if rbd_call(
            store,
            RBD_MIRRORING,
            "mirror_image_get",
            &dir_get_id_input(id),
        )
        .is_ok()
        {
            return Err(unsupported(name, "mirroring is enabled for it"));
        }
        if op_features(store, info, name)? & OP_FEATURE_GROUP != 0 {
            return Err(busy(
                name,
                "it is in a group (`rbd group image remove` first)",
            ));
        }
        let link = clone_link(store, info, name)?;
        let map = load_object_map(store, info, name)?;
        let count = info.layout.object_count(info.size);
        with_data_store(store, info, name, |data| {
            remove_data_objects(data, info, name, 0..count, map.as_ref(), &info.snapc)
        })?;
        detach_clone(store, &link, id, name)?;
        ignore_enoent(store.remove(&info.header_oid, &snapc0)).map_err(|e| store_err(name, e))?;
    } else {
        warn!("image {name}: header rbd_header.{id} is missing; removing what is left");
    }
    ignore_enoent(store.remove(&object_map_object(id, NOSNAP), &snapc0))
        .map_err(|e| store_err(name, e))?;
    ignore_enoent(store.remove(&v2::id_object(name), &snapc0)).map_err(|e| store_err(name, e))?;
    ignore_enoent(rbd_call(
        store,
        RBD_DIRECTORY,
        "dir_remove_image",
        &dir_image_input(name, id),
    ))
    .map_err(|e| store_err(name, e))?;
    info!("image {name}: removed (format 2, id {id})");
    Ok(())
}
