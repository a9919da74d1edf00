//! Snapshot rollback (`rbd snap rollback`): the head's objects go back to
//! a snapshot's, as librbd's `SnapshotRollbackRequest` does it.

use log::info;

use super::shared::for_each_object_pub;
use super::store_err;
use crate::error::ImageResult;
use crate::format::SnapshotInfo;
use crate::format::v2::object_map_object;
use crate::image::features::has_object_map;
use crate::image::info::ImageInfo;
use crate::store::{NOSNAP, ObjectStore, SnapContext};

/// Rolls every data object of the head back to snapshot `snap` (the OSD's
/// self-managed snapshot rollback, with the head's snap context; objects
/// that did not exist then are removed), after the caller has resized the
/// head to the snapshot's size. With the object-map feature the head's map
/// becomes the snapshot's map first. The caller has written back its cache,
/// holds the exclusive lock where the image has one, and reloads its object
/// map and drops its cache afterwards.
pub fn rollback_objects(
    store: &dyn ObjectStore,
    data: &dyn ObjectStore,
    info: &ImageInfo,
    image: &str,
    snap: &SnapshotInfo,
    snapc: &SnapContext,
) -> ImageResult<()> {
    if let Some(id) = info.id.as_deref()
        && has_object_map(info.features)
    {
        let src = object_map_object(id, snap.id);
        let dst = object_map_object(id, NOSNAP);
        match store.read_full(&src) {
            Ok(map) => {
                let none = SnapContext::default();
                let _ = store.remove(&dst, &none);
                store
                    .write(&dst, 0, &map, &none)
                    .map_err(|e| store_err(image, e))?;
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(store_err(image, e)),
        }
    }
    let count = info.layout.object_count(snap.size);
    for_each_object_pub(0..count, |n| {
        match data.snap_rollback(&info.data_object(n), snap.id, snapc) {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(store_err(image, e)),
        }
    })?;
    info!("image {image}: rolled back to snapshot {}", snap.name);
    Ok(())
}
