//! Clone (`rbd clone`), format 1 and format 2 clones, as librbd's
//! `CloneRequest` (Pacific) makes them.

use log::{info, warn};

use super::{CreateOptions, create_image, invalid, rbd_call, remove_image, store_err, unsupported};
use crate::error::{ImageError, ImageResult};
use crate::format::v2::*;
use crate::image::features::has_layering;
use crate::image::info::ImageInfo;
use crate::store::ObjectStore;

/// The feature bits librbd sets itself and a clone does not inherit
/// (`RBD_FEATURES_IMPLICIT_ENABLE`).
const IMPLICIT_FEATURES: u64 = FEATURE_STRIPINGV2 | FEATURE_DATA_POOL | FEATURE_OPERATIONS;

/// The clone format `rbd clone` would make for this client and cluster:
/// `rbd_default_clone_format` (1, 2, or auto: 2 when the cluster's
/// minimum compatible client is mimic or newer).
pub fn default_clone_format(store: &dyn ObjectStore, image: &str) -> ImageResult<u8> {
    let setting = store
        .config_value("rbd_default_clone_format")
        .unwrap_or_else(|| "auto".to_string());
    let min_compat = if setting.trim() == "auto" {
        store.min_compat_client().map_err(|e| store_err(image, e))?
    } else {
        0
    };
    Ok(clone_format(&setting, min_compat))
}

/// What [`clone_image`] makes.
#[derive(Debug, Clone)]
pub struct CloneOptions {
    /// 1 (the parent snapshot must be protected, `rbd_children` lists the
    /// child) or 2 (the parent's header lists it).
    pub clone_format: u8,
    /// Feature bits of the child; None: the parent's (without the
    /// implicit ones), as `rbd clone` without `--image-feature`.
    pub features: Option<u64>,
    /// Object order of the child; None: the parent's.
    pub order: Option<u8>,
    /// Data pool of the child.
    pub data_pool: Option<i64>,
}

/// Makes image `child` (in the pool `store` serves) a clone of snapshot
/// `snap` of `parent` (read from `parent_store`), as `rbd clone` does:
///
/// 1. checks: the parent is format 2 with layering (else EINVAL /
///    EOPNOTSUPP), the snapshot exists, for clone v1 it is protected
///    (EINVAL), the child's features have layering, the name is free
///    (EEXIST);
/// 2. creates the child (format 2, the snapshot's size);
/// 3. `parent_attach` on the child's header (overlap: the whole size);
/// 4. v2: `op_features_set(CLONE_CHILD)` on the child and `child_attach`
///    on the parent's header (which marks it CLONE_PARENT); v1:
///    `add_child` on `rbd_children` of the child's pool.
///
/// Any failure after the child was created removes it again. Image
/// metadata (`rbd image-meta`) of the parent is not copied.
pub fn clone_image(
    store: &dyn ObjectStore,
    parent_store: &dyn ObjectStore,
    parent: &ImageInfo,
    parent_name: &str,
    snap: &str,
    child: &str,
    opts: &CloneOptions,
) -> ImageResult<()> {
    // As librbd: rbd_children (clone v1) cannot name another namespace.
    if opts.clone_format == 1 && store.namespace() != parent_store.namespace() {
        return Err(unsupported(
            child,
            "a clone into another namespace needs clone format 2 (clone v2 required)",
        ));
    }
    let Some(parent_id) = parent.id.clone() else {
        return Err(invalid(
            parent_name,
            "the parent of a clone must be format 2",
        ));
    };
    if !has_layering(parent.features) {
        return Err(unsupported(
            parent_name,
            "the parent must have the layering feature",
        ));
    }
    let s = parent
        .snapshot(snap)
        .cloned()
        .ok_or_else(|| ImageError::NoSnapshot {
            image: parent_name.to_string(),
            snap: snap.to_string(),
        })?;
    if opts.clone_format == 1 {
        let status = super::protection_status(parent_store, parent, parent_name, s.id)?;
        if status != ProtectionStatus::Protected {
            return Err(invalid(
                parent_name,
                format!("snapshot {snap} must be protected for a format-1 clone"),
            ));
        }
    }
    let features = opts
        .features
        .unwrap_or(parent.features & !IMPLICIT_FEATURES);
    if !has_layering(features) {
        return Err(unsupported(child, "a clone needs the layering feature"));
    }
    let create = CreateOptions {
        format: 2,
        order: opts.order.unwrap_or(parent.order),
        features: Some(features),
        stripe_unit: None,
        stripe_count: None,
        data_pool: opts.data_pool,
    };
    create_image(store, child, s.size, &create)?;
    let spec = ParentSpec {
        pool_id: parent_store.pool_id(),
        pool_namespace: parent_store.namespace(),
        image_id: parent_id,
        snap_id: s.id,
    };
    if let Err(e) = attach(store, parent_store, parent, child, &spec, s.size, opts) {
        warn!("clone {parent_name}@{snap} -> {child}: {e}; removing {child}");
        if let Err(e2) = remove_image(store, child) {
            warn!("clone {child}: cannot remove the half-made clone: {e2}");
        }
        return Err(e);
    }
    info!(
        "image {child}: cloned from {parent_name}@{snap} (clone format {})",
        opts.clone_format
    );
    Ok(())
}

fn attach(
    store: &dyn ObjectStore,
    parent_store: &dyn ObjectStore,
    parent: &ImageInfo,
    child: &str,
    spec: &ParentSpec,
    size: u64,
    opts: &CloneOptions,
) -> ImageResult<()> {
    let child_info = super::image_info(store, child)?;
    let child_id = child_info.id.clone().unwrap_or_default();
    rbd_call(
        store,
        &child_info.header_oid,
        "parent_attach",
        &parent_attach_input(spec, size, false),
    )
    .map_err(|e| store_err(child, e))?;
    if opts.clone_format == 1 {
        rbd_call(
            store,
            RBD_CHILDREN,
            "add_child",
            &add_child_input(spec, &child_id),
        )
        .map_err(|e| store_err(child, e))?;
        return Ok(());
    }
    rbd_call(
        store,
        &child_info.header_oid,
        "op_features_set",
        &op_features_set_input(OP_FEATURE_CLONE_CHILD, OP_FEATURE_CLONE_CHILD),
    )
    .map_err(|e| store_err(child, e))?;
    rbd_call(
        parent_store,
        &parent.header_oid,
        "child_attach",
        &child_attach_input(spec.snap_id, store.pool_id(), &child_id, &store.namespace()),
    )
    .map_err(|e| store_err(child, e))?;
    Ok(())
}
