//! Flatten (`rbd flatten`): after the caller copied the parent's data
//! into every object of the clone, the clone is detached from its parent
//! as librbd's `FlattenRequest` does (`DetachChildRequest`, then
//! `DetachParentRequest`).

use log::info;

use super::shared::op_features;
use super::{rbd_call, store_err};
use crate::error::ImageResult;
use crate::format::v2::*;
use crate::image::features::has_deep_flatten;
use crate::image::info::ImageInfo;
use crate::store::ObjectStore;

/// Detaches clone `info` from its parent: the parent's record of the
/// child goes (`child_detach` on the parent's header for a clone v2,
/// `remove_child` on `rbd_children` for a clone v1), unless snapshots of
/// the clone still read from the parent (no deep-flatten); then
/// `parent_detach` on the clone's header (which also drops its
/// CLONE_CHILD op feature). A clone whose parent is already gone from
/// the parent's lists is detached all the same.
pub fn detach_parent(store: &dyn ObjectStore, info: &ImageInfo, image: &str) -> ImageResult<()> {
    let Some(parent) = &info.parent else {
        return Ok(());
    };
    let child_id = info.id.clone().unwrap_or_default();
    let snaps_keep_parent = !info.snapshots.is_empty() && !has_deep_flatten(info.features);
    if !snaps_keep_parent {
        let parent_store = store
            .pool_by_id(parent.spec.pool_id)
            .map_err(|e| store_err(image, e))?;
        let r = if op_features(store, info, image)? & OP_FEATURE_CLONE_CHILD != 0 {
            rbd_call(
                &*parent_store,
                &header_object(&parent.spec.image_id),
                "child_detach",
                &child_detach_input(parent.spec.snap_id, store.pool_id(), &child_id, ""),
            )
        } else {
            rbd_call(
                store,
                RBD_CHILDREN,
                "remove_child",
                &remove_child_input(&parent.spec, &child_id),
            )
        };
        match r {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(store_err(image, e)),
        }
    }
    match rbd_call(store, &info.header_oid, "parent_detach", &[]) {
        Ok(_) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(store_err(image, e)),
    }
    info!("image {image}: flattened (detached from its parent)");
    Ok(())
}
