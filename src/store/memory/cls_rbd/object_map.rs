//! Object maps in the data of `rbd_object_map.ID[.SNAP]`.

use super::*;

pub(super) fn load_map(obj: &ClsObject) -> ClsResult<ObjectMap> {
    ObjectMap::decode(obj.read()?).map_err(corrupt)
}

pub(super) fn object_map_resize(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
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

pub(super) fn object_map_update(obj: &mut ClsObject, input: &[u8]) -> ClsResult<Vec<u8>> {
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
