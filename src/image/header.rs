//! Loading an image's header into an [`ImageInfo`]: format 1 from the
//! `NAME.rbd` object's data, format 2 through the `rbd` object class on
//! `rbd_header.ID`, as librbd reads it.

use log::info;

use super::features::{
    has_data_pool, has_layering, has_operations, has_striping, op_features_known, read_only_reason,
    unreadable_reason,
};
use super::info::{ImageInfo, ParentInfo};
use crate::error::{ImageError, ImageResult};
use crate::format::v1::{self, HeaderV1};
use crate::format::v2::{self, *};
use crate::format::{FormatError, SnapshotInfo};
use crate::layout::Layout;
use crate::store::{NOSNAP, ObjectStore, StoreError};

/// Which header an image has, as found when it was first opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderRef {
    V1 { name: String },
    V2 { name: String, id: String },
}

impl HeaderRef {
    pub fn name(&self) -> &str {
        match self {
            HeaderRef::V1 { name } | HeaderRef::V2 { name, .. } => name,
        }
    }

    pub fn header_oid(&self) -> String {
        match self {
            HeaderRef::V1 { name } => v1::header_object(name),
            HeaderRef::V2 { id, .. } => v2::header_object(id),
        }
    }
}

fn store_err(name: &str, e: StoreError) -> ImageError {
    ImageError::Store {
        image: name.to_string(),
        source: e,
    }
}

fn corrupt(name: &str) -> impl Fn(FormatError) -> ImageError + '_ {
    move |source| ImageError::Corrupt {
        image: name.to_string(),
        source,
    }
}

/// Finds the image `name`: format 2 if `rbd_id.NAME` exists, else format 1.
pub fn resolve(store: &dyn ObjectStore, name: &str) -> ImageResult<HeaderRef> {
    match store.read_full(&v2::id_object(name)) {
        Ok(raw) => {
            let id = decode_id_object(&raw).map_err(corrupt(name))?;
            Ok(HeaderRef::V2 {
                name: name.to_string(),
                id,
            })
        }
        Err(e) if e.is_not_found() => Ok(HeaderRef::V1 {
            name: name.to_string(),
        }),
        Err(e) => Err(store_err(name, e)),
    }
}

pub fn load(store: &dyn ObjectStore, header: &HeaderRef) -> ImageResult<ImageInfo> {
    match header {
        HeaderRef::V1 { name } => load_v1(store, name),
        HeaderRef::V2 { name, id } => load_v2(store, name, id),
    }
}

fn load_v1(store: &dyn ObjectStore, name: &str) -> ImageResult<ImageInfo> {
    let oid = v1::header_object(name);
    let raw = store.read_full(&oid).map_err(|e| {
        if e.is_not_found() {
            ImageError::NotFound(name.to_string())
        } else {
            store_err(name, e)
        }
    })?;
    let header = HeaderV1::decode(&raw).map_err(corrupt(name))?;
    let mut info = ImageInfo::from_v1(header);
    info.header_oid = oid;
    Ok(info)
}

fn load_v2(store: &dyn ObjectStore, name: &str, id: &str) -> ImageResult<ImageInfo> {
    let oid = v2::header_object(id);
    let call = |method: &str, input: &[u8]| {
        store.exec(&oid, RBD_CLASS, method, input).map_err(|e| {
            if e.is_not_found() {
                ImageError::NotFound(name.to_string())
            } else {
                store_err(name, e)
            }
        })
    };
    let bad = corrupt(name);
    let features =
        decode_get_features(&call("get_features", &get_features_input(false))?).map_err(&bad)?;
    let all_features = features.features | features.incompatible;
    if let Some(reason) = unreadable_reason(all_features) {
        return Err(ImageError::Unsupported {
            image: name.to_string(),
            reason,
        });
    }
    let size = decode_get_size(&call("get_size", &snap_id_input(NOSNAP))?).map_err(&bad)?;
    let object_prefix = decode_get_object_prefix(&call("get_object_prefix", &[])?).map_err(&bad)?;
    let snapc = decode_get_snapcontext(&call("get_snapcontext", &[])?).map_err(&bad)?;
    let layout = if has_striping(features.features) {
        let s = decode_get_stripe_unit_count(&call("get_stripe_unit_count", &[])?).map_err(&bad)?;
        Layout::striped(size.order, s.unit, s.count).ok_or_else(|| {
            bad(FormatError::invalid(
                "striping",
                format!(
                    "stripe unit {} count {} with order {}",
                    s.unit, s.count, size.order
                ),
            ))
        })?
    } else {
        Layout::plain(size.order)
    };
    let data_pool = if has_data_pool(features.features) {
        decode_get_data_pool(&call("get_data_pool", &[])?).map_err(&bad)?
    } else {
        None
    };
    let mut snapshots = Vec::new();
    let mut hidden_snapshots = Vec::new();
    for &snap_id in &snapc.snaps {
        let rec = match call("snapshot_get", &snap_id_input(snap_id)) {
            Ok(reply) => SnapshotRecord::decode(&reply).map_err(&bad)?,
            // Removed between get_snapcontext and now: the next refresh
            // sees a context without it.
            Err(ImageError::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        let s = SnapshotInfo {
            id: rec.id,
            name: rec.name,
            size: rec.image_size,
        };
        if rec.namespace == SnapshotNamespace::User {
            snapshots.push(s);
        } else {
            hidden_snapshots.push(s);
        }
    }
    let parent = if has_layering(features.features) {
        load_parent(&call, &snapc.snaps, &bad)?
    } else {
        None
    };
    // `operations` guards "op features" (clone v2, groups, snapshot
    // trash); writing the head is safe under the ones we know.
    let op_features = if has_operations(features.features) {
        let reply = call("op_features_get", &[])?;
        let op_features = decode_u64_reply(&reply, "rbd.op_features_get reply").map_err(&bad)?;
        if !op_features_known(op_features) {
            info!("image {name}: unknown op features 0x{op_features:x}");
        }
        Some(op_features)
    } else {
        None
    };
    let read_only = read_only_reason(all_features, op_features);
    if let Some(reason) = &read_only {
        info!("image {name} is served read-only: {reason}");
    }
    Ok(ImageInfo {
        format: 2,
        object_prefix,
        order: size.order,
        layout,
        size: size.size,
        snapc,
        snapshots,
        hidden_snapshots,
        read_only,
        id: Some(id.to_string()),
        header_oid: oid.clone(),
        features: features.features,
        data_pool,
        parent,
    })
}

/// A `rbd` class call on the image's header: method, input → reply.
type ClsCall<'a> = dyn Fn(&str, &[u8]) -> ImageResult<Vec<u8>> + 'a;

fn load_parent(
    call: &ClsCall<'_>,
    snaps: &[u64],
    bad: &dyn Fn(FormatError) -> ImageError,
) -> ImageResult<Option<ParentInfo>> {
    let spec = match call("parent_get", &[]) {
        Ok(reply) => decode_parent_get(&reply).map_err(bad)?,
        // Older OSDs lack parent_get; no such cluster runs Pacific clients.
        Err(e) => return Err(e),
    };
    let Some(spec) = spec else {
        return Ok(None);
    };
    let overlap_at = |snap: u64| -> ImageResult<u64> {
        let reply = call("parent_overlap_get", &snap_id_input(snap))?;
        Ok(decode_parent_overlap_get(&reply).map_err(bad)?.unwrap_or(0))
    };
    let overlap = overlap_at(NOSNAP)?;
    let mut snap_overlaps = Vec::with_capacity(snaps.len());
    for &s in snaps {
        match overlap_at(s) {
            Ok(o) => snap_overlaps.push((s, o)),
            Err(ImageError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(ParentInfo {
        spec,
        overlap,
        snap_overlaps,
    }))
}
