//! The `rbd` object class of the in-memory store: the methods rbdfs calls
//! (Ceph Pacific's `src/cls/rbd/cls_rbd.cc`), with their error codes.
//!
//! State is kept where Ceph keeps it: the format-2 header in the omap of
//! `rbd_header.ID` (`size`, `order`, `features`, `object_prefix`,
//! `snap_seq`, `stripe_unit`, `stripe_count`, `data_pool_id`, `flags`,
//! `op_features`, `parent`, `snapshot_<16 hex>`, timestamps), the
//! directory in the omap of `rbd_directory` (`name_N` → id, `id_I` →
//! name), the id in the data of `rbd_id.NAME`, object maps in the data of
//! `rbd_object_map.ID[.SNAP]`, format-1 headers in the data of `NAME.rbd`.
//! Values are Ceph's encodings except the snapshot and parent records,
//! which are this store's own (only these methods read them).

use super::cls::{Caller, ClsObject, ClsResult, bad_input, corrupt, done};
use crate::format::decode::{Decoder, Encoder};
use crate::format::v1::HeaderV1;
use crate::format::v2::*;
use crate::format::{MAX_ORDER, MIN_ORDER, SnapshotInfo};
use crate::store::SnapContext;

mod clones;
mod directory;
mod format1;
mod header;
mod object_map;
mod snapshots;
#[cfg(test)]
mod tests;

use self::clones::*;
use self::directory::*;
use self::format1::*;
use self::header::*;
use self::object_map::*;
use self::snapshots::*;

pub fn call(
    method: &str,
    obj: &mut ClsObject,
    caller: &Caller,
    input: &[u8],
) -> ClsResult<Vec<u8>> {
    let mut d = Decoder::new(input, "rbd method input");
    let d = &mut d;
    let reply = match method {
        // rbd_directory
        "get_all_features" => u64_reply(KNOWN_FEATURES),
        "dir_add_image" => dir_add_image(obj, d)?,
        "dir_remove_image" => dir_remove_image(obj, d)?,
        "dir_rename_image" => dir_rename_image(obj, d)?,
        "dir_list" => dir_list(obj, d)?,
        // rbd_namespace (default namespace)
        "namespace_add" | "namespace_remove" => {
            let name = d.string().map_err(bad_input)?;
            done(d)?;
            let key = format!("name_{name}");
            let exists = obj.exists() && obj.omap.contains_key(&key);
            if method == "namespace_add" {
                if exists {
                    return Err(libc::EEXIST);
                }
                obj.omap_set(&key, Vec::new());
            } else {
                obj.omap_remove(&key)?;
            }
            Vec::new()
        }
        "namespace_list" => {
            let after = d.string().map_err(bad_input)?;
            let max = d.u64().map_err(bad_input)?;
            done(d)?;
            obj.check_exists()?;
            let names: Vec<&str> = obj
                .omap
                .keys()
                .filter_map(|k| k.strip_prefix("name_"))
                .filter(|n| *n > after.as_str())
                .take(max.min(1 << 20) as usize)
                .collect();
            encode_namespace_list_reply(&names)
        }
        "dir_get_id" => {
            let name = d.string().map_err(bad_input)?;
            done(d)?;
            obj.omap_get(&format!("name_{name}"))?.to_vec()
        }
        "dir_get_name" => {
            let id = d.string().map_err(bad_input)?;
            done(d)?;
            obj.omap_get(&format!("id_{id}"))?.to_vec()
        }
        // rbd_id.NAME
        "set_id" => set_id(obj, d)?,
        "get_id" => {
            let data = obj.read()?;
            decode_id_object(data).map_err(corrupt)?;
            data.to_vec()
        }
        // rbd_header.ID
        "create" => create(obj, caller, d)?,
        "get_size" => get_size(obj, d)?,
        "set_size" => set_size(obj, d)?,
        "get_features" => get_features(obj, d)?,
        "get_object_prefix" => {
            done(d)?;
            obj.check_exists()?;
            obj.omap_get("object_prefix")?.to_vec()
        }
        "get_snapcontext" => {
            done(d)?;
            encode_get_snapcontext_reply(&snap_context(obj)?)
        }
        "get_stripe_unit_count" => {
            done(d)?;
            require_feature(obj, FEATURE_STRIPINGV2)?;
            let order = header_u8(obj, "order")?;
            let unit = opt_u64(obj, "stripe_unit")?.unwrap_or(1 << order);
            let count = opt_u64(obj, "stripe_count")?.unwrap_or(1);
            encode_get_stripe_unit_count_reply(StripeInfo { unit, count })
        }
        "set_stripe_unit_count" => set_stripe_unit_count(obj, d)?,
        "get_data_pool" => {
            done(d)?;
            obj.check_exists()?;
            let pool = opt_u64(obj, "data_pool_id")?.map(|p| p as i64);
            encode_get_data_pool_reply(pool.filter(|&p| p >= 0))
        }
        "get_flags" => {
            let snap = d.u64().map_err(bad_input)?;
            done(d)?;
            obj.check_exists()?;
            let flags = if snap == CEPH_NOSNAP {
                opt_u64(obj, "flags")?.unwrap_or(0)
            } else {
                read_snap(obj, snap)?.flags
            };
            u64_reply(flags)
        }
        "op_features_get" => {
            done(d)?;
            obj.check_exists()?;
            u64_reply(opt_u64(obj, "op_features")?.unwrap_or(0))
        }
        "snapshot_get" => {
            let snap = d.u64().map_err(bad_input)?;
            done(d)?;
            obj.check_exists()?;
            read_snap(obj, snap)?.record.encode()
        }
        "snapshot_add" => snapshot_add(obj, caller, input)?,
        "snapshot_remove" => snapshot_remove(obj, d)?,
        "get_protection_status" => {
            let snap = d.u64().map_err(bad_input)?;
            done(d)?;
            if snap == CEPH_NOSNAP {
                return Err(libc::EINVAL);
            }
            vec![read_snap(obj, snap)?.protection]
        }
        "parent_get" => {
            done(d)?;
            require_feature(obj, FEATURE_LAYERING)?;
            encode_parent_get_reply(read_parent(obj)?.as_ref().map(|p| &p.0))
        }
        "parent_overlap_get" => {
            let snap = d.u64().map_err(bad_input)?;
            done(d)?;
            require_feature(obj, FEATURE_LAYERING)?;
            encode_parent_overlap_get_reply(parent_overlap(obj, snap)?)
        }
        "get_parent" => {
            let snap = d.u64().map_err(bad_input)?;
            done(d)?;
            require_feature(obj, FEATURE_LAYERING)?;
            let parent = read_parent(obj)?;
            match (&parent, parent_overlap(obj, snap)?) {
                (Some((spec, _)), Some(o)) => encode_get_parent_reply(Some((spec, o))),
                _ => encode_get_parent_reply(None),
            }
        }
        "parent_attach" => parent_attach(obj, d)?,
        "child_attach" | "child_detach" => child_link(obj, d, method == "child_attach")?,
        "snapshot_rename" => snapshot_rename(obj, d)?,
        "set_protection_status" => set_protection_status(obj, d)?,
        "op_features_set" => {
            let value = d.u64().map_err(bad_input)?;
            let mask = d.u64().map_err(bad_input)?;
            done(d)?;
            set_op_features(obj, value, mask)?;
            Vec::new()
        }
        "children_list" => {
            let snap = d.u64().map_err(bad_input)?;
            done(d)?;
            obj.check_exists()?;
            read_snap(obj, snap)?;
            let raw = obj
                .omap
                .get(&format!("snap_children_{snap:016x}"))
                .ok_or(libc::ENOENT)?;
            raw.clone()
        }
        "parent_detach" => {
            done(d)?;
            require_feature(obj, FEATURE_LAYERING)?;
            let (spec, overlap) = read_parent(obj)?.ok_or(libc::ENOENT)?;
            if overlap.is_none() {
                return Err(libc::ENOENT);
            }
            // Snapshots that still read from the parent keep it, unless
            // deep-flatten lets them go too.
            let deep = header_u64(obj, "features")? & FEATURE_DEEP_FLATTEN != 0;
            let mut child_snaps = false;
            for mut s in snapshots(obj)? {
                if s.parent_overlap.is_some() {
                    if deep {
                        s.parent_overlap = None;
                        obj.omap_set(&snap_key(s.record.id), s.encode());
                    } else {
                        child_snaps = true;
                    }
                }
            }
            if child_snaps {
                write_parent(obj, &spec, None);
            } else {
                obj.omap_remove("parent")?;
                set_op_features(obj, 0, OP_FEATURE_CLONE_CHILD)?;
            }
            Vec::new()
        }
        // rbd_children (clone v1): `<parent key>` → set of child ids.
        "add_child" | "remove_child" | "get_children" => v1_children(method, obj, d)?,
        // Pool-level objects rbdfs only probes.
        "mirror_image_get" => {
            obj.check_exists()?;
            return Err(libc::ENOENT);
        }
        // rbd_object_map.ID[.SNAP]
        "object_map_load" => {
            done(d)?;
            load_map(obj)?.encode(false)
        }
        "object_map_resize" => object_map_resize(obj, d)?,
        "object_map_update" => object_map_update(obj, input)?,
        "object_map_snap_add" => {
            done(d)?;
            let mut map = load_map(obj)?;
            for n in 0..map.len() {
                if map.get(n) == Some(ObjectState::Exists) {
                    map.set(n, ObjectState::ExistsClean);
                }
            }
            obj.write_full(map.encode(true));
            Vec::new()
        }
        "object_map_snap_remove" => {
            let src = ObjectMap::decode(input).map_err(bad_input)?;
            let mut map = load_map(obj)?;
            for n in 0..map.len().min(src.len()) {
                if map.get(n) == Some(ObjectState::ExistsClean)
                    && src.get(n) == Some(ObjectState::Exists)
                {
                    map.set(n, ObjectState::Exists);
                }
            }
            obj.write_full(map.encode(true));
            Vec::new()
        }
        // Format 1 (NAME.rbd)
        "snap_add" => v1_snap_add(obj, d)?,
        "snap_remove" => v1_snap_remove(obj, d)?,
        "snap_rename" => v1_snap_rename(obj, d)?,
        "snap_list" => {
            done(d)?;
            let h = v1_header(obj)?;
            let mut e = Encoder::new();
            e.u64(h.snap_seq).u32(h.snapshots.len() as u32);
            for s in &h.snapshots {
                e.u64(s.id).u64(s.size).string(&s.name);
            }
            e.finish()
        }
        _ => return Err(libc::EOPNOTSUPP),
    };
    Ok(reply)
}

pub(super) fn u64_reply(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

pub(super) fn opt_u64(obj: &ClsObject, key: &str) -> ClsResult<Option<u64>> {
    match obj.omap_get(key) {
        Ok(raw) => {
            let mut d = Decoder::new(raw, "omap value");
            let v = d.u64().map_err(corrupt)?;
            Ok(Some(v))
        }
        Err(libc::ENOENT) if obj.exists() => Ok(None),
        Err(e) => Err(e),
    }
}

pub(super) fn header_u64(obj: &ClsObject, key: &str) -> ClsResult<u64> {
    opt_u64(obj, key)?.ok_or(libc::ENOENT)
}

pub(super) fn header_u8(obj: &ClsObject, key: &str) -> ClsResult<u8> {
    obj.omap_get(key)?.first().copied().ok_or(libc::EIO)
}

/// cls_rbd's `require_feature`: ENOEXEC when the image lacks it.
pub(super) fn require_feature(obj: &ClsObject, feature: u64) -> ClsResult<()> {
    obj.check_exists()?;
    if header_u64(obj, "features")? & feature == 0 {
        return Err(libc::ENOEXEC);
    }
    Ok(())
}
