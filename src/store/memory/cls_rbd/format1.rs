//! Format-1 headers (`NAME.rbd`) and their snapshots.

use super::*;

pub(super) fn v1_header(obj: &ClsObject) -> ClsResult<HeaderV1> {
    HeaderV1::decode(obj.read()?).map_err(corrupt)
}

pub(super) fn v1_snap_add(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
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

pub(super) fn v1_snap_remove(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
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

pub(super) fn v1_snap_rename(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
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
