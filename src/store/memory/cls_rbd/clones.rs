//! Clones: the parent record, child links (clone v2) and `rbd_children`
//! (clone v1), snapshot rename and protection, op features.

use super::*;

/// The head's parent: spec and overlap (None = the overlap is unknown).
pub(super) fn read_parent(obj: &ClsObject) -> ClsResult<Option<(ParentSpec, Option<u64>)>> {
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

pub(super) fn write_parent(obj: &mut ClsObject, spec: &ParentSpec, overlap: Option<u64>) {
    let mut e = Encoder::new();
    e.blob(&encode_parent_get_reply(Some(spec)));
    match overlap {
        Some(o) => e.u8(1).u64(o),
        None => e.u8(0),
    };
    obj.omap_set("parent", e.finish());
}

pub(super) fn parent_overlap(obj: &ClsObject, snap: u64) -> ClsResult<Option<u64>> {
    let parent = read_parent(obj)?;
    if snap == CEPH_NOSNAP {
        return Ok(parent.and_then(|(_, o)| o));
    }
    Ok(read_snap(obj, snap)?.parent_overlap)
}

/// `parent_attach`: versioned ParentImageSpec, u64 overlap, bool reattach.
pub(super) fn parent_attach(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
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
pub(super) fn child_link(
    obj: &mut ClsObject,
    d: &mut Decoder<'_>,
    attach: bool,
) -> ClsResult<Vec<u8>> {
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
pub(super) fn set_op_features(obj: &mut ClsObject, value: u64, mask: u64) -> ClsResult<()> {
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
pub(super) fn snapshot_rename(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
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
pub(super) fn set_protection_status(
    obj: &mut ClsObject,
    d: &mut Decoder<'_>,
) -> ClsResult<Vec<u8>> {
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
pub(super) fn v1_children(
    method: &str,
    obj: &mut ClsObject,
    d: &mut Decoder<'_>,
) -> ClsResult<Vec<u8>> {
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
