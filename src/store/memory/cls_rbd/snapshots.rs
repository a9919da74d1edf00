//! Snapshots of a format-2 image: this store's own records in the header's
//! omap, and the snap context they make.

use super::*;

/// A snapshot as this store keeps it under `snapshot_<16 hex>`.
pub(super) struct StoredSnap {
    pub(super) record: SnapshotRecord,
    /// The parent overlap at the time of the snapshot (clones).
    pub(super) parent_overlap: Option<u64>,
    pub(super) protection: u8,
    pub(super) flags: u64,
}

impl StoredSnap {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.blob(&self.record.encode());
        match self.parent_overlap {
            Some(o) => e.u8(1).u64(o),
            None => e.u8(0),
        };
        e.u8(self.protection).u64(self.flags);
        e.finish()
    }

    pub(super) fn decode(raw: &[u8]) -> ClsResult<StoredSnap> {
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

pub(super) fn snap_key(id: u64) -> String {
    format!("snapshot_{id:016x}")
}

pub(super) fn read_snap(obj: &ClsObject, id: u64) -> ClsResult<StoredSnap> {
    StoredSnap::decode(obj.omap_get(&snap_key(id))?)
}

pub(super) fn snapshots(obj: &ClsObject) -> ClsResult<Vec<StoredSnap>> {
    obj.omap
        .range("snapshot_".to_string().."snapshot`".to_string())
        .map(|(_, v)| StoredSnap::decode(v))
        .collect()
}

pub(super) fn snap_context(obj: &ClsObject) -> ClsResult<SnapContext> {
    obj.check_exists()?;
    let seq = header_u64(obj, "snap_seq")?;
    let mut snaps: Vec<u64> = snapshots(obj)?.iter().map(|s| s.record.id).collect();
    snaps.sort_unstable_by(|a, b| b.cmp(a));
    Ok(SnapContext { seq, snaps })
}

pub(super) fn snapshot_add(
    obj: &mut ClsObject,
    caller: &Caller,
    input: &[u8],
) -> ClsResult<Vec<u8>> {
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

pub(super) fn snapshot_remove(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
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
