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

fn u64_reply(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

fn opt_u64(obj: &ClsObject, key: &str) -> ClsResult<Option<u64>> {
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

fn header_u64(obj: &ClsObject, key: &str) -> ClsResult<u64> {
    opt_u64(obj, key)?.ok_or(libc::ENOENT)
}

fn header_u8(obj: &ClsObject, key: &str) -> ClsResult<u8> {
    obj.omap_get(key)?.first().copied().ok_or(libc::EIO)
}

/// cls_rbd's `require_feature`: ENOEXEC when the image lacks it.
fn require_feature(obj: &ClsObject, feature: u64) -> ClsResult<()> {
    obj.check_exists()?;
    if header_u64(obj, "features")? & feature == 0 {
        return Err(libc::ENOEXEC);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Directory and id
// ---------------------------------------------------------------------------

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
}

fn name_and_id(d: &mut Decoder<'_>) -> ClsResult<(String, String)> {
    let name = d.string().map_err(bad_input)?;
    let id = d.string().map_err(bad_input)?;
    done(d)?;
    Ok((name, id))
}

fn encoded_string(s: &str) -> Vec<u8> {
    encode_string_reply(s)
}

fn dir_add_image(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
    let (name, id) = name_and_id(d)?;
    if name.is_empty() || !valid_id(&id) {
        return Err(libc::EINVAL);
    }
    if obj.omap.contains_key(&format!("name_{name}")) {
        return Err(libc::EEXIST);
    }
    if obj.omap.contains_key(&format!("id_{id}")) {
        return Err(libc::EBADF);
    }
    obj.omap_set(&format!("name_{name}"), encoded_string(&id));
    obj.omap_set(&format!("id_{id}"), encoded_string(&name));
    Ok(Vec::new())
}

fn stored_string(raw: &[u8]) -> ClsResult<String> {
    decode_string_reply(raw, "omap string").map_err(corrupt)
}

fn dir_remove_image(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
    let (name, id) = name_and_id(d)?;
    let stored_id = stored_string(obj.omap_get(&format!("name_{name}"))?)?;
    let stored_name = stored_string(obj.omap_get(&format!("id_{id}"))?)?;
    if stored_id != id || stored_name != name {
        return Err(libc::ESTALE);
    }
    obj.omap_remove(&format!("name_{name}"))?;
    obj.omap_remove(&format!("id_{id}"))?;
    Ok(Vec::new())
}

fn dir_rename_image(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
    let src = d.string().map_err(bad_input)?;
    let dest = d.string().map_err(bad_input)?;
    let id = d.string().map_err(bad_input)?;
    done(d)?;
    if obj.exists() && obj.omap.contains_key(&format!("name_{dest}")) {
        return Err(libc::EEXIST);
    }
    let stored_id = stored_string(obj.omap_get(&format!("name_{src}"))?)?;
    if stored_id != id {
        return Err(libc::ESTALE);
    }
    obj.omap_remove(&format!("name_{src}"))?;
    obj.omap_set(&format!("name_{dest}"), encoded_string(&id));
    obj.omap_set(&format!("id_{id}"), encoded_string(&dest));
    Ok(Vec::new())
}

fn dir_list(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
    let start_after = d.blob().map_err(bad_input)?.to_vec();
    let max = d.u64().map_err(bad_input)?;
    done(d)?;
    obj.check_exists()?;
    let mut entries = Vec::new();
    for (key, value) in &obj.omap {
        let Some(name) = key.strip_prefix("name_") else {
            continue;
        };
        if name.as_bytes() <= start_after.as_slice() {
            continue;
        }
        if entries.len() as u64 >= max {
            break;
        }
        entries.push(DirEntry {
            name: name.as_bytes().to_vec(),
            id: stored_string(value)?.into_bytes(),
        });
    }
    Ok(encode_dir_list_reply(&entries))
}

fn set_id(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
    let id = d.string().map_err(bad_input)?;
    done(d)?;
    if !valid_id(&id) {
        return Err(libc::EINVAL);
    }
    if !obj.read()?.is_empty() {
        return Err(libc::EEXIST);
    }
    obj.write_full(encoded_string(&id));
    Ok(Vec::new())
}

// ---------------------------------------------------------------------------
// Header
// ---------------------------------------------------------------------------

fn utime_bytes(t: Utime) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u32(t.sec).u32(t.nsec);
    e.finish()
}

fn create(obj: &mut ClsObject, caller: &Caller, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
    let size = d.u64().map_err(bad_input)?;
    let order = d.u8().map_err(bad_input)?;
    let features = d.u64().map_err(bad_input)?;
    let prefix = d.string().map_err(bad_input)?;
    let data_pool = if d.is_empty() {
        -1
    } else {
        d.i64().map_err(bad_input)?
    };
    done(d)?;
    if prefix.is_empty() || !(MIN_ORDER..=MAX_ORDER).contains(&order) {
        return Err(libc::EINVAL);
    }
    if features & !KNOWN_FEATURES != 0 {
        return Err(libc::ENOSYS);
    }
    if obj.exists() {
        return Err(libc::EEXIST);
    }
    obj.omap_set("size", u64_reply(size));
    obj.omap_set("order", vec![order]);
    obj.omap_set("features", u64_reply(features));
    obj.omap_set("object_prefix", encoded_string(&prefix));
    obj.omap_set("snap_seq", u64_reply(0));
    if data_pool >= 0 {
        obj.omap_set("data_pool_id", u64_reply(data_pool as u64));
    }
    for key in ["create_timestamp", "access_timestamp", "modify_timestamp"] {
        obj.omap_set(key, utime_bytes(caller.now));
    }
    Ok(Vec::new())
}

fn get_size(obj: &ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
    let snap = d.u64().map_err(bad_input)?;
    done(d)?;
    obj.check_exists()?;
    let order = header_u8(obj, "order")?;
    let size = if snap == CEPH_NOSNAP {
        header_u64(obj, "size")?
    } else {
        read_snap(obj, snap)?.record.image_size
    };
    Ok(encode_get_size_reply(SizeInfo { order, size }))
}

fn set_size(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
    let size = d.u64().map_err(bad_input)?;
    done(d)?;
    obj.check_exists()?;
    let old = header_u64(obj, "size")?;
    // Shrinking below the parent overlap shrinks the overlap.
    if size < old
        && let Some((spec, Some(overlap))) = read_parent(obj)?
        && overlap > size
    {
        write_parent(obj, &spec, Some(size));
    }
    obj.omap_set("size", u64_reply(size));
    Ok(Vec::new())
}

fn get_features(obj: &ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
    let _snap = d.u64().map_err(bad_input)?;
    let read_only = if d.is_empty() {
        false
    } else {
        d.u8().map_err(bad_input)? != 0
    };
    done(d)?;
    obj.check_exists()?;
    let features = header_u64(obj, "features")?;
    let mask = if read_only {
        FEATURES_INCOMPATIBLE
    } else {
        FEATURES_RW_INCOMPATIBLE
    };
    Ok(encode_get_features_reply(FeaturesInfo {
        features,
        incompatible: features & mask,
    }))
}

fn set_stripe_unit_count(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
    let unit = d.u64().map_err(bad_input)?;
    let count = d.u64().map_err(bad_input)?;
    done(d)?;
    require_feature(obj, FEATURE_STRIPINGV2)?;
    let object_size = 1u64 << header_u8(obj, "order")?.min(63);
    if unit == 0 || count == 0 || unit > object_size || !object_size.is_multiple_of(unit) {
        return Err(libc::EINVAL);
    }
    obj.omap_set("stripe_unit", u64_reply(unit));
    obj.omap_set("stripe_count", u64_reply(count));
    Ok(Vec::new())
}

// ---------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------

/// A snapshot as this store keeps it under `snapshot_<16 hex>`.
struct StoredSnap {
    record: SnapshotRecord,
    /// The parent overlap at the time of the snapshot (clones).
    parent_overlap: Option<u64>,
    protection: u8,
    flags: u64,
}

impl StoredSnap {
    fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.blob(&self.record.encode());
        match self.parent_overlap {
            Some(o) => e.u8(1).u64(o),
            None => e.u8(0),
        };
        e.u8(self.protection).u64(self.flags);
        e.finish()
    }

    fn decode(raw: &[u8]) -> ClsResult<StoredSnap> {
        let mut d = Decoder::new(raw, "stored snapshot");
        let record = SnapshotRecord::decode(d.blob().map_err(corrupt)?).map_err(corrupt)?;
        let parent_overlap = match d.u8().map_err(corrupt)? {
            0 => None,
            _ => Some(d.u64().map_err(corrupt)?),
        };
        Ok(StoredSnap {
            record,
            parent_overlap,
            protection: d.u8().map_err(corrupt)?,
            flags: d.u64().map_err(corrupt)?,
        })
    }
}

fn snap_key(id: u64) -> String {
    format!("snapshot_{id:016x}")
}

fn read_snap(obj: &ClsObject, id: u64) -> ClsResult<StoredSnap> {
    StoredSnap::decode(obj.omap_get(&snap_key(id))?)
}

fn snapshots(obj: &ClsObject) -> ClsResult<Vec<StoredSnap>> {
    obj.omap
        .range("snapshot_".to_string().."snapshot`".to_string())
        .map(|(_, v)| StoredSnap::decode(v))
        .collect()
}

fn snap_context(obj: &ClsObject) -> ClsResult<SnapContext> {
    obj.check_exists()?;
    let seq = header_u64(obj, "snap_seq")?;
    let mut snaps: Vec<u64> = snapshots(obj)?.iter().map(|s| s.record.id).collect();
    snaps.sort_unstable_by(|a, b| b.cmp(a));
    Ok(SnapContext { seq, snaps })
}

fn snapshot_add(obj: &mut ClsObject, caller: &Caller, input: &[u8]) -> ClsResult<Vec<u8>> {
    let (id, name, namespace) = decode_snapshot_add_input(input).map_err(bad_input)?;
    obj.check_exists()?;
    if name.is_empty() || id >= CEPH_NOSNAP {
        return Err(libc::EINVAL);
    }
    let seq = header_u64(obj, "snap_seq")?;
    for s in snapshots(obj)? {
        if s.record.id == id || (s.record.name == name && s.record.namespace == namespace) {
            return Err(libc::EEXIST);
        }
    }
    if seq > id {
        return Err(libc::ESTALE);
    }
    let parent_overlap = read_parent(obj)?.and_then(|(_, o)| o);
    let snap = StoredSnap {
        record: SnapshotRecord {
            id,
            namespace,
            name,
            image_size: header_u64(obj, "size")?,
            timestamp: caller.now,
            child_count: 0,
        },
        parent_overlap,
        protection: 0,
        flags: opt_u64(obj, "flags")?.unwrap_or(0),
    };
    obj.omap_set(&snap_key(id), snap.encode());
    obj.omap_set("snap_seq", u64_reply(id));
    Ok(Vec::new())
}

fn snapshot_remove(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
    let id = d.u64().map_err(bad_input)?;
    done(d)?;
    obj.check_exists()?;
    let snap = read_snap(obj, id)?;
    // Protected (2) or still has clone-v2 children.
    if snap.protection == 2 || snap.record.child_count > 0 {
        return Err(libc::EBUSY);
    }
    obj.omap_remove(&snap_key(id))?;
    let _ = obj.omap_remove(&format!("snap_children_{id:016x}"));
    Ok(Vec::new())
}

// ---------------------------------------------------------------------------
// Parent (clones)
// ---------------------------------------------------------------------------

/// The head's parent: spec and overlap (None = the overlap is unknown).
fn read_parent(obj: &ClsObject) -> ClsResult<Option<(ParentSpec, Option<u64>)>> {
    let raw = match obj.omap_get("parent") {
        Ok(raw) => raw,
        Err(libc::ENOENT) if obj.exists() => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut d = Decoder::new(raw, "stored parent");
    let spec_len = d.u32().map_err(corrupt)? as usize;
    let spec = decode_parent_get(d.bytes(spec_len).map_err(corrupt)?).map_err(corrupt)?;
    let overlap = match d.u8().map_err(corrupt)? {
        0 => None,
        _ => Some(d.u64().map_err(corrupt)?),
    };
    Ok(spec.map(|s| (s, overlap)))
}

fn write_parent(obj: &mut ClsObject, spec: &ParentSpec, overlap: Option<u64>) {
    let mut e = Encoder::new();
    e.blob(&encode_parent_get_reply(Some(spec)));
    match overlap {
        Some(o) => e.u8(1).u64(o),
        None => e.u8(0),
    };
    obj.omap_set("parent", e.finish());
}

fn parent_overlap(obj: &ClsObject, snap: u64) -> ClsResult<Option<u64>> {
    let parent = read_parent(obj)?;
    if snap == CEPH_NOSNAP {
        return Ok(parent.and_then(|(_, o)| o));
    }
    Ok(read_snap(obj, snap)?.parent_overlap)
}

/// `parent_attach`: versioned ParentImageSpec, u64 overlap, bool reattach.
fn parent_attach(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
    let (_, mut s) = d.versioned(1).map_err(bad_input)?;
    let pool_id = s.i64().map_err(bad_input)?;
    let pool_namespace = s.string().map_err(bad_input)?;
    let image_id = s.string().map_err(bad_input)?;
    let snap_id = s.u64().map_err(bad_input)?;
    let overlap = d.u64().map_err(bad_input)?;
    let reattach = if d.is_empty() {
        false
    } else {
        d.u8().map_err(bad_input)? != 0
    };
    done(d)?;
    require_feature(obj, FEATURE_LAYERING)?;
    if pool_id < 0 || image_id.is_empty() || snap_id == CEPH_NOSNAP {
        return Err(libc::EINVAL);
    }
    if read_parent(obj)?.is_some() && !reattach {
        return Err(libc::EEXIST);
    }
    let spec = ParentSpec {
        pool_id,
        pool_namespace,
        image_id,
        snap_id,
    };
    write_parent(obj, &spec, Some(overlap));
    Ok(Vec::new())
}

/// `child_attach` / `child_detach` on the parent's header: u64 snap id,
/// versioned ChildImageSpec (pool, image id, namespace). Keeps the set in
/// `snap_children_<16 hex>` and the snapshot's child count.
fn child_link(obj: &mut ClsObject, d: &mut Decoder<'_>, attach: bool) -> ClsResult<Vec<u8>> {
    let snap_id = d.u64().map_err(bad_input)?;
    let (_, mut s) = d.versioned(2).map_err(bad_input)?;
    let pool = s.i64().map_err(bad_input)?;
    let image_id = s.string().map_err(bad_input)?;
    let namespace = if s.is_empty() {
        String::new()
    } else {
        s.string().map_err(bad_input)?
    };
    done(d)?;
    obj.check_exists()?;
    let mut snap = read_snap(obj, snap_id)?;
    let key = format!("snap_children_{snap_id:016x}");
    let child = format!("{pool}/{namespace}/{image_id}");
    let mut children: Vec<String> = match obj.omap.get(&key) {
        Some(raw) => {
            let mut d = Decoder::new(raw, "snap children");
            let n = d.count(4).map_err(corrupt)?;
            (0..n)
                .map(|_| d.string().map_err(corrupt))
                .collect::<ClsResult<_>>()?
        }
        None => Vec::new(),
    };
    let at = children.iter().position(|c| *c == child);
    match (attach, at) {
        (true, Some(_)) => return Err(libc::EEXIST),
        (false, None) => return Err(libc::ENOENT),
        (true, None) => children.push(child),
        (false, Some(i)) => {
            children.remove(i);
        }
    }
    snap.record.child_count = children.len() as u32;
    if children.is_empty() {
        obj.omap.remove(&key);
    } else {
        let mut e = Encoder::new();
        e.u32(children.len() as u32);
        for c in &children {
            e.string(c);
        }
        obj.omap_set(&key, e.finish());
    }
    obj.omap_set(&snap_key(snap_id), snap.encode());
    // cls_rbd: the parent carries CLONE_PARENT while any snapshot has
    // clone-v2 children.
    let in_use = snapshots(obj)?.iter().any(|s| s.record.child_count > 0);
    let bit = if in_use { OP_FEATURE_CLONE_PARENT } else { 0 };
    set_op_features(obj, bit, OP_FEATURE_CLONE_PARENT)?;
    Ok(Vec::new())
}

/// cls_rbd's `set_op_features`: the `op_features` key, and the
/// `operations` feature bit while any op feature is set.
fn set_op_features(obj: &mut ClsObject, value: u64, mask: u64) -> ClsResult<()> {
    obj.check_exists()?;
    let old = opt_u64(obj, "op_features")?.unwrap_or(0);
    let new = (old & !mask) | (value & mask);
    let features = header_u64(obj, "features")?;
    let features = if new == 0 {
        let _ = obj.omap.remove("op_features");
        features & !FEATURE_OPERATIONS
    } else {
        obj.omap_set("op_features", u64_reply(new));
        features | FEATURE_OPERATIONS
    };
    obj.omap_set("features", u64_reply(features));
    Ok(())
}

/// `snapshot_rename`: u64 snap id, new name. EEXIST when a user snapshot
/// has the name, ENOENT for an unknown id.
fn snapshot_rename(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
    let id = d.u64().map_err(bad_input)?;
    let name = d.string().map_err(bad_input)?;
    done(d)?;
    obj.check_exists()?;
    if snapshots(obj)?
        .iter()
        .any(|s| s.record.namespace.is_user() && s.record.name == name)
    {
        return Err(libc::EEXIST);
    }
    let mut snap = read_snap(obj, id)?;
    snap.record.name = name;
    obj.omap_set(&snap_key(id), snap.encode());
    Ok(Vec::new())
}

/// `set_protection_status`: u64 snap id, u8 status (0..=2). Needs
/// layering (ENOEXEC).
fn set_protection_status(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
    let id = d.u64().map_err(bad_input)?;
    let status = d.u8().map_err(bad_input)?;
    done(d)?;
    require_feature(obj, FEATURE_LAYERING)?;
    if status > 2 {
        return Err(libc::EINVAL);
    }
    let mut snap = read_snap(obj, id)?;
    snap.protection = status;
    obj.omap_set(&snap_key(id), snap.encode());
    Ok(Vec::new())
}

/// `add_child`, `remove_child`, `get_children` on `rbd_children`: the
/// parent key (pool, image id, snap id) maps to a set of child ids.
fn v1_children(method: &str, obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
    let pool = d.u64().map_err(bad_input)?;
    let image = d.string().map_err(bad_input)?;
    let snap = d.u64().map_err(bad_input)?;
    let child = if method == "get_children" {
        None
    } else {
        Some(d.string().map_err(bad_input)?)
    };
    done(d)?;
    let key = format!("children_{pool}_{image}_{snap:016x}");
    let mut children: Vec<String> = match obj.omap.get(&key) {
        Some(raw) => decode_get_children(raw).map_err(corrupt)?,
        None => Vec::new(),
    };
    match (method, child) {
        ("add_child", Some(c)) => {
            if children.contains(&c) {
                return Err(libc::EEXIST);
            }
            children.push(c);
            children.sort();
        }
        ("remove_child", Some(c)) => {
            let i = children.iter().position(|x| *x == c).ok_or(libc::ENOENT)?;
            children.remove(i);
        }
        _ => {
            if children.is_empty() {
                return Err(libc::ENOENT);
            }
            return Ok(encode_get_children_reply(&children));
        }
    }
    if children.is_empty() {
        obj.omap.remove(&key);
        obj.changed = true;
    } else {
        obj.omap_set(&key, encode_get_children_reply(&children));
    }
    Ok(Vec::new())
}

// ---------------------------------------------------------------------------
// Object map
// ---------------------------------------------------------------------------

fn load_map(obj: &ClsObject) -> ClsResult<ObjectMap> {
    ObjectMap::decode(obj.read()?).map_err(corrupt)
}

fn object_map_resize(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
    let count = d.u64().map_err(bad_input)?;
    let default = d.u8().map_err(bad_input)?;
    done(d)?;
    if count > MAX_OBJECT_MAP_OBJECT_COUNT || default > 3 {
        return Err(libc::EINVAL);
    }
    let default = ObjectState::from_bits(default);
    let old = if obj.exists() {
        Some(load_map(obj)?)
    } else {
        None
    };
    let mut map = ObjectMap::new(count, default);
    if let Some(old) = old {
        // Shrinking drops only objects in the default state.
        if (count..old.len()).any(|n| old.get(n) != Some(default)) {
            return Err(libc::ESTALE);
        }
        for n in 0..count.min(old.len()) {
            if let Some(s) = old.get(n) {
                map.set(n, s);
            }
        }
    }
    obj.write_full(map.encode(true));
    Ok(Vec::new())
}

fn object_map_update(obj: &mut ClsObject, input: &[u8]) -> ClsResult<Vec<u8>> {
    let (start, end, new, current) = decode_object_map_update_input(input).map_err(bad_input)?;
    let mut map = load_map(obj)?;
    if start >= end || end > map.len() {
        return Err(libc::ERANGE);
    }
    let mut changed = false;
    for n in start..end {
        let Some(state) = map.get(n) else { break };
        let matches = match current {
            None => true,
            Some(c) => {
                state == c || (c == ObjectState::Exists && state == ObjectState::ExistsClean)
            }
        };
        if matches && state != new {
            map.set(n, new);
            changed = true;
        }
    }
    if changed {
        obj.write_full(map.encode(true));
    }
    Ok(Vec::new())
}

// ---------------------------------------------------------------------------
// Format 1
// ---------------------------------------------------------------------------

fn v1_header(obj: &ClsObject) -> ClsResult<HeaderV1> {
    HeaderV1::decode(obj.read()?).map_err(corrupt)
}

fn v1_snap_add(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
    let name = d.string().map_err(bad_input)?;
    let id = d.u64().map_err(bad_input)?;
    done(d)?;
    let mut h = v1_header(obj)?;
    if name.is_empty() {
        return Err(libc::EINVAL);
    }
    if h.snapshots.iter().any(|s| s.name == name) {
        return Err(libc::EEXIST);
    }
    if h.snap_seq > id {
        return Err(libc::ESTALE);
    }
    h.snapshots.insert(
        0,
        SnapshotInfo {
            id,
            name,
            size: h.size,
        },
    );
    h.snap_seq = id;
    obj.write_full(h.encode());
    Ok(Vec::new())
}

fn v1_snap_remove(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
    let name = d.string().map_err(bad_input)?;
    done(d)?;
    let mut h = v1_header(obj)?;
    let i = h
        .snapshots
        .iter()
        .position(|s| s.name == name)
        .ok_or(libc::ENOENT)?;
    h.snapshots.remove(i);
    obj.write_full(h.encode());
    Ok(Vec::new())
}

fn v1_snap_rename(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
    let id = d.u64().map_err(bad_input)?;
    let name = d.string().map_err(bad_input)?;
    done(d)?;
    let mut h = v1_header(obj)?;
    if h.snapshots.iter().any(|s| s.name == name) {
        return Err(libc::EEXIST);
    }
    let s = h
        .snapshots
        .iter_mut()
        .find(|s| s.id == id)
        .ok_or(libc::ENOENT)?;
    s.name = name;
    obj.write_full(h.encode());
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::cls::now;
    use std::collections::BTreeMap;

    fn obj(exists: bool) -> ClsObject {
        ClsObject {
            data: exists.then(Vec::new),
            omap: BTreeMap::new(),
            xattrs: BTreeMap::new(),
            changed: false,
        }
    }

    fn me() -> Caller {
        Caller {
            gid: 1,
            addr: EntityAddr {
                addr_type: ADDR_TYPE_LEGACY,
                nonce: 1,
                ip: None,
            },
            now: now(),
        }
    }

    #[test]
    fn header_snapshots_and_errors() {
        let c = me();
        let mut h = obj(false);
        assert_eq!(
            call("get_size", &mut h, &c, &snap_id_input(CEPH_NOSNAP)),
            Err(libc::ENOENT)
        );
        call(
            "create",
            &mut h,
            &c,
            &create_input(8192, 12, 1, "rbd_data.x", None),
        )
        .unwrap();
        let again = create_input(8192, 12, 1, "rbd_data.x", None);
        assert_eq!(call("create", &mut h, &c, &again), Err(libc::EEXIST));
        let r = call("get_size", &mut h, &c, &snap_id_input(CEPH_NOSNAP)).unwrap();
        assert_eq!(
            decode_get_size(&r).unwrap(),
            SizeInfo {
                order: 12,
                size: 8192
            }
        );
        assert_eq!(
            call("get_stripe_unit_count", &mut h, &c, &[]),
            Err(libc::ENOEXEC)
        );
        call("snapshot_add", &mut h, &c, &snapshot_add_input(5, "a")).unwrap();
        assert_eq!(
            call("snapshot_add", &mut h, &c, &snapshot_add_input(6, "a")),
            Err(libc::EEXIST)
        );
        assert_eq!(
            call("snapshot_add", &mut h, &c, &snapshot_add_input(4, "b")),
            Err(libc::ESTALE)
        );
        call("snapshot_add", &mut h, &c, &snapshot_add_input(7, "b")).unwrap();
        let r = call("get_snapcontext", &mut h, &c, &[]).unwrap();
        let sc = decode_get_snapcontext(&r).unwrap();
        assert_eq!((sc.seq, sc.snaps), (7, vec![7, 5]));
        call("set_size", &mut h, &c, &set_size_input(100)).unwrap();
        let r = call("get_size", &mut h, &c, &snap_id_input(5)).unwrap();
        assert_eq!(decode_get_size(&r).unwrap().size, 8192);
        call("snapshot_remove", &mut h, &c, &snapshot_remove_input(5)).unwrap();
        assert_eq!(
            call("snapshot_remove", &mut h, &c, &snapshot_remove_input(5)),
            Err(libc::ENOENT)
        );
        assert_eq!(
            call("snapshot_get", &mut h, &c, &snap_id_input(5)),
            Err(libc::ENOENT)
        );
        assert_eq!(call("get_size", &mut h, &c, b"x"), Err(libc::EINVAL));
        assert_eq!(
            call("no_such_method", &mut h, &c, &[]),
            Err(libc::EOPNOTSUPP)
        );
    }

    #[test]
    fn directory_and_object_map() {
        let c = me();
        let mut dir = obj(false);
        call("dir_add_image", &mut dir, &c, &dir_image_input("a", "id1")).unwrap();
        assert_eq!(
            call("dir_add_image", &mut dir, &c, &dir_image_input("a", "id2")),
            Err(libc::EEXIST)
        );
        assert_eq!(
            call("dir_add_image", &mut dir, &c, &dir_image_input("b", "id1")),
            Err(libc::EBADF)
        );
        call("dir_add_image", &mut dir, &c, &dir_image_input("b", "id2")).unwrap();
        let r = call("dir_list", &mut dir, &c, &dir_list_input(b"a", 10)).unwrap();
        let names: Vec<_> = decode_dir_list(&r)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, vec![b"b".to_vec()]);
        assert_eq!(
            call(
                "dir_remove_image",
                &mut dir,
                &c,
                &dir_image_input("a", "id2")
            ),
            Err(libc::ESTALE)
        );
        call(
            "dir_rename_image",
            &mut dir,
            &c,
            &dir_rename_image_input("a", "c", "id1"),
        )
        .unwrap();
        let r = call("dir_get_id", &mut dir, &c, &dir_get_id_input("c")).unwrap();
        assert_eq!(decode_dir_get_id(&r).unwrap(), "id1");
        call(
            "dir_remove_image",
            &mut dir,
            &c,
            &dir_image_input("c", "id1"),
        )
        .unwrap();

        let mut m = obj(false);
        call(
            "object_map_resize",
            &mut m,
            &c,
            &object_map_resize_input(10, ObjectState::Nonexistent),
        )
        .unwrap();
        let up = object_map_update_input(2, 4, ObjectState::Exists, None);
        call("object_map_update", &mut m, &c, &up).unwrap();
        let bad = object_map_update_input(2, 11, ObjectState::Exists, None);
        assert_eq!(
            call("object_map_update", &mut m, &c, &bad),
            Err(libc::ERANGE)
        );
        let shrink = object_map_resize_input(3, ObjectState::Nonexistent);
        assert_eq!(
            call("object_map_resize", &mut m, &c, &shrink),
            Err(libc::ESTALE)
        );
        call("object_map_snap_add", &mut m, &c, &[]).unwrap();
        let map = ObjectMap::decode(&call("object_map_load", &mut m, &c, &[]).unwrap()).unwrap();
        assert_eq!(map.get(2), Some(ObjectState::ExistsClean));
        assert_eq!(map.get(4), Some(ObjectState::Nonexistent));
        // The stored object is what object_map_load decodes (CRCs valid).
        assert_eq!(ObjectMap::decode(m.data.as_deref().unwrap()).unwrap(), map);
    }
}
