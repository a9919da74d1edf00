//! Rename (`rbd rename`), format 1 and format 2.

use log::info;

use super::{
    DirChange, cleanup, corrupt, ignore_enoent, image_format, rbd_call, store_err,
    update_v1_directory, validate_image_name,
};
use crate::error::{ImageError, ImageResult};
use crate::format::v1::{self, HeaderV1};
use crate::format::v2::{self, *};
use crate::store::{ObjectStore, SnapContext};

/// Renames image `old` to `new` as `rbd rename` does (librbd's
/// `RenameRequest`). EEXIST when `new` exists in either format (also when
/// `new == old`), ENOENT when `old` does not exist.
///
/// Format 2: `rbd_id.NEW` is created holding the id (`set_id`, which fails
/// rather than overwrite), `dir_rename_image(old, new, id)` on
/// `rbd_directory`, then `rbd_id.OLD` is removed (a failure there is only
/// logged, as in librbd). If the directory update fails, `rbd_id.NEW` is
/// removed again.
///
/// Format 1: the header `OLD.rbd` is copied to `NEW.rbd`, one TMAP update
/// sets `NEW` and removes `OLD`, then `OLD.rbd` is removed. The data
/// objects keep their block name. (librbd creates `NEW.rbd` exclusively;
/// the store has no exclusive create, so a `NEW.rbd` made between our
/// existence check and the copy would be overwritten.)
///
/// Clients that have the image open are not told; the caller handles its
/// own opens.
pub fn rename_image(store: &dyn ObjectStore, old: &str, new: &str) -> ImageResult<()> {
    validate_image_name(old)?;
    validate_image_name(new)?;
    let format = image_format(store, old)?.ok_or_else(|| ImageError::NotFound(old.to_string()))?;
    if image_format(store, new)?.is_some() {
        return Err(ImageError::Exists(new.to_string()));
    }
    let snapc0 = SnapContext::default();
    if format == 1 {
        let old_oid = v1::header_object(old);
        let new_oid = v1::header_object(new);
        let header = store.read_full(&old_oid).map_err(|e| {
            if e.is_not_found() {
                ImageError::NotFound(old.to_string())
            } else {
                store_err(old, e)
            }
        })?;
        HeaderV1::decode(&header).map_err(|e| corrupt(old, e))?;
        store
            .write(&new_oid, 0, &header, &snapc0)
            .map_err(|e| store_err(new, e))?;
        let changes = [DirChange::Set(new), DirChange::Remove(old)];
        if let Err(e) = update_v1_directory(store, &changes) {
            cleanup(
                new,
                "remove the new header",
                ignore_enoent(store.remove(&new_oid, &snapc0)),
            );
            return Err(store_err(old, e));
        }
        cleanup(
            old,
            "remove the old header",
            ignore_enoent(store.remove(&old_oid, &snapc0)),
        );
        info!("image {old}: renamed to {new} (format 1)");
        return Ok(());
    }
    let old_id_oid = v2::id_object(old);
    let new_id_oid = v2::id_object(new);
    let raw = store.read_full(&old_id_oid).map_err(|e| {
        if e.is_not_found() {
            ImageError::NotFound(old.to_string())
        } else {
            store_err(old, e)
        }
    })?;
    let id = decode_id_object(&raw).map_err(|e| corrupt(old, e))?;
    store
        .write(&new_id_oid, 0, &[], &snapc0)
        .map_err(|e| store_err(new, e))?;
    if let Err(e) = rbd_call(store, &new_id_oid, "set_id", &set_id_input(&id)) {
        if e.errno() == libc::EEXIST {
            return Err(ImageError::Exists(new.to_string()));
        }
        cleanup(
            new,
            "remove the new id object",
            ignore_enoent(store.remove(&new_id_oid, &snapc0)),
        );
        return Err(store_err(new, e));
    }
    if let Err(e) = rbd_call(
        store,
        RBD_DIRECTORY,
        "dir_rename_image",
        &dir_rename_image_input(old, new, &id),
    ) {
        cleanup(
            new,
            "remove the new id object",
            ignore_enoent(store.remove(&new_id_oid, &snapc0)),
        );
        return Err(match e.errno() {
            libc::EEXIST => ImageError::Exists(new.to_string()),
            libc::ENOENT => ImageError::NotFound(old.to_string()),
            _ => store_err(old, e),
        });
    }
    cleanup(
        old,
        "remove the old id object",
        ignore_enoent(store.remove(&old_id_oid, &snapc0)),
    );
    info!("image {old}: renamed to {new} (format 2, id {id})");
    Ok(())
}
