//! Snapshot rename (`rbd snap rename`), format 1 and format 2.

use log::info;

use super::store_err;
use crate::error::{ImageError, ImageResult};
use crate::format::v2::snapshot_rename_input;
use crate::image::info::ImageInfo;
use crate::image::{NameKind, check_name};
use crate::store::ObjectStore;

/// Renames snapshot `old` of `image` to `new` as librbd's
/// `SnapshotRenameRequest` does: `snap_rename` (format 1) or
/// `snapshot_rename` (format 2) on the header, with the snapshot's id.
/// EEXIST when `new` is taken, ENOENT when `old` does not exist, EINVAL
/// for a bad name. The caller holds the exclusive lock where the image
/// has one, and notifies watchers afterwards.
pub fn rename_snapshot(
    store: &dyn ObjectStore,
    info: &ImageInfo,
    image: &str,
    old: &str,
    new: &str,
) -> ImageResult<()> {
    check_name(NameKind::Snapshot, new)?;
    let snap = info.snapshot(old).ok_or_else(|| ImageError::NoSnapshot {
        image: image.to_string(),
        snap: old.to_string(),
    })?;
    if info.snapshot(new).is_some() {
        return Err(ImageError::SnapshotExists {
            image: image.to_string(),
            snap: new.to_string(),
        });
    }
    let method = if info.format == 1 {
        "snap_rename"
    } else {
        "snapshot_rename"
    };
    let input = snapshot_rename_input(snap.id, new);
    match store.exec(&info.header_oid, "rbd", method, &input) {
        Ok(_) => {
            info!("image {image}: renamed snapshot {old} to {new}");
            Ok(())
        }
        Err(e) if e.errno() == libc::EEXIST => Err(ImageError::SnapshotExists {
            image: image.to_string(),
            snap: new.to_string(),
        }),
        Err(e) if e.errno() == libc::ENOENT => Err(ImageError::NoSnapshot {
            image: image.to_string(),
            snap: old.to_string(),
        }),
        Err(e) => Err(store_err(image, e)),
    }
}
