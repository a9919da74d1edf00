//! Creating a format-2 header and its size, features and striping.

use super::*;

pub(super) fn utime_bytes(t: Utime) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u32(t.sec).u32(t.nsec);
    e.finish()
}

pub(super) fn create(
    obj: &mut ClsObject,
    caller: &Caller,
    d: &mut Decoder<'_>,
) -> ClsResult<Vec<u8>> {
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

pub(super) fn get_size(obj: &ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
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

pub(super) fn set_size(obj: &mut ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
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

pub(super) fn get_features(obj: &ClsObject, d: &mut Decoder<'_>) -> ClsResult<Vec<u8>> {
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

pub(super) fn set_stripe_unit_count(
    obj: &mut ClsObject,
    d: &mut Decoder<'_>,
) -> ClsResult<Vec<u8>> {
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
