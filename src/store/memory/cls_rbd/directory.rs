//! The `rbd_directory` methods and `set_id`: name ↔ id entries in the
//! directory's omap, the id in `rbd_id.NAME`.

use super::*;

pub(super) fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
}

pub(super) fn name_and_id(d: &mut Decoder<'_>) -> ClsResult<(String, String)> {
    let name = d.string().map_err(bad_input)?;
    let id = d.string().map_err(bad_input)?;
    done(d)?;
    Ok((name, id))
}

pub(super) fn encoded_string(s: &str) -> Vec<u8> {
    encode_string_reply(s)
}

pub(super) fn dir_add_image(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
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

pub(super) fn stored_string(raw: &[u8]) -> ClsResult<String> {
    decode_string_reply(raw, "omap string").map_err(corrupt)
}

pub(super) fn dir_remove_image(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
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

pub(super) fn dir_rename_image(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
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

pub(super) fn dir_list(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
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

pub(super) fn set_id(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
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
