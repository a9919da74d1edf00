//! Create (`rbd create`), format 1 and format 2.

use log::info;

use super::{
    CreateOptions, DEFAULT_FEATURES, DirChange, busy, cleanup, generate_image_id, ignore_enoent,
    image_format, invalid, random_u32, rbd_call, store_err, unsupported, update_v1_directory,
    v1_block_name, validate_image_name,
};
use crate::error::{ImageError, ImageResult};
use crate::format::v1::{self, HeaderV1};
use crate::format::v2::{self, *};
use crate::format::{MAX_ORDER, MIN_ORDER};
use crate::image::features::{
    CreateRefusal, has_object_map, validate_create_features, with_creation_implied,
    with_derived_bits,
};
use crate::layout::Layout;
use crate::store::{NOSNAP, ObjectStore, SnapContext};

/// Creates image `name` of `size` bytes as `rbd create` does.
///
/// Format 2 (librbd's `image::CreateRequest`):
/// 1. validate the name; refuse if `NAME.rbd` or `rbd_id.NAME` exists
///    (EEXIST); validate order (12..=25), features, striping, data pool and
///    the object-map size limit (EINVAL; journaling: EOPNOTSUPP);
/// 2. id = [`generate_image_id`] (instance id + random);
/// 3. `rbd.dir_add_image(name, id)` on `rbd_directory` (EEXIST: taken);
/// 4. `rbd_id.NAME` created and `rbd.set_id(id)` on it;
/// 5. `rbd.create(size, order, features, "rbd_data.[POOL.]ID", data pool)`
///    on `rbd_header.ID` (the class sets snap_seq 0 and the create, access
///    and modify timestamps);
/// 6. with striping, `rbd.set_stripe_unit_count`;
/// 7. with object-map, `rbd.object_map_resize(object count, nonexistent)`
///    on `rbd_object_map.ID`.
///
/// A failure undoes the steps already done, newest first.
///
/// Format 1 (librbd's `create_v1`): TMAP set `NAME` on `rbd_directory`
/// (see `update_v1_directory` for the store's TMAP problem), then the
/// 112-byte header written to `NAME.rbd` with block name
/// [`v1_block_name`]; the directory entry is removed again if the header
/// write fails.
pub fn create_image(
    store: &dyn ObjectStore,
    name: &str,
    size: u64,
    opts: &CreateOptions,
) -> ImageResult<()> {
    validate_image_name(name)?;
    // librbd's order: existence (either format), then the options.
    if image_format(store, name)?.is_some() {
        return Err(ImageError::Exists(name.to_string()));
    }
    if !(MIN_ORDER..=MAX_ORDER).contains(&opts.order) {
        return Err(invalid(
            name,
            format!("order {} is outside [{MIN_ORDER}, {MAX_ORDER}]", opts.order),
        ));
    }
    match opts.format {
        1 => {
            if opts.features.is_some_and(|f| f != 0)
                || opts.stripe_unit.is_some_and(|s| s != 0)
                || opts.stripe_count.is_some_and(|s| s != 0)
                || opts.data_pool.is_some()
            {
                return Err(invalid(
                    name,
                    "format 1 images have no features, striping or data pool",
                ));
            }
            create_v1(store, name, size, opts.order)
        }
        2 => {
            let plan = plan_v2(store, name, size, opts)?;
            create_v2(store, name, size, &plan)
        }
        f => Err(invalid(name, format!("image format {f} (must be 1 or 2)"))),
    }
}

fn create_v1(store: &dyn ObjectStore, name: &str, size: u64, order: u8) -> ImageResult<()> {
    let header = HeaderV1 {
        block_name: v1_block_name(store.instance_id(), random_u32()),
        order,
        size,
        snap_seq: 0,
        snapshots: Vec::new(),
    };
    update_v1_directory(store, &[DirChange::Set(name)]).map_err(|e| store_err(name, e))?;
    let oid = v1::header_object(name);
    if let Err(e) = store.write(&oid, 0, &header.encode(), &SnapContext::default()) {
        cleanup(
            name,
            "remove the directory entry",
            update_v1_directory(store, &[DirChange::Remove(name)]),
        );
        return Err(store_err(name, e));
    }
    info!(
        "image {name}: created (format 1, {size} bytes, order {order}, block name {})",
        header.block_name
    );
    Ok(())
}

/// The validated parameters of a format-2 image.
struct V2Plan {
    order: u8,
    features: u64,
    /// Some when the image is striped (stripe unit, count).
    striping: Option<(u64, u64)>,
    data_pool: Option<i64>,
    object_count: u64,
}

/// librbd's feature and striping rules (CreateRequest's constructor and
/// `validate_*`).
fn plan_v2(
    store: &dyn ObjectStore,
    name: &str,
    size: u64,
    opts: &CreateOptions,
) -> ImageResult<V2Plan> {
    let order = opts.order;
    let object_size = 1u64 << order;
    let mut features = opts.features.unwrap_or(DEFAULT_FEATURES);
    if opts.features.is_none() {
        // librbd narrows its defaults to what the OSDs implement.
        if let Ok(reply) = store.exec(RBD_DIRECTORY, RBD_CLASS, "get_all_features", &[])
            && let Ok(all) = decode_u64_reply(&reply, "rbd.get_all_features reply")
        {
            features &= all;
        }
    }
    features = with_creation_implied(features);
    let striping = match (
        opts.stripe_unit.filter(|&s| s != 0),
        opts.stripe_count.filter(|&s| s != 0),
    ) {
        (None, None) => None,
        (Some(unit), Some(count)) => {
            if Layout::striped(order, unit, count).is_none() {
                return Err(invalid(
                    name,
                    format!("stripe unit {unit} is not a factor of the object size {object_size}"),
                ));
            }
            (unit != object_size || count != 1).then_some((unit, count))
        }
        _ => {
            return Err(invalid(
                name,
                "must specify both (or neither) of stripe unit and stripe count",
            ));
        }
    };
    let data_pool = opts.data_pool.filter(|&p| p != store.pool_id());
    if let Some(pool) = data_pool {
        if pool < 0 {
            return Err(invalid(name, format!("data pool id {pool}")));
        }
        store
            .pool_by_id(pool)
            .map_err(|e| invalid(name, format!("data pool {pool} does not exist: {e}")))?;
    }
    features = with_derived_bits(features, striping.is_some(), data_pool.is_some());
    match validate_create_features(features) {
        Ok(()) => {}
        Err(CreateRefusal::Invalid(reason)) => return Err(invalid(name, reason)),
        Err(CreateRefusal::Unsupported(reason)) => return Err(unsupported(name, reason)),
    }
    let layout = match striping {
        Some((unit, count)) => Layout::striped(order, unit, count).expect("validated above"),
        None => Layout::plain(order),
    };
    let object_count = layout.object_count(size);
    if has_object_map(features) && object_count > MAX_OBJECT_MAP_OBJECT_COUNT {
        return Err(invalid(
            name,
            format!("image size not compatible with object map ({object_count} objects)"),
        ));
    }
    Ok(V2Plan {
        order,
        features,
        striping,
        data_pool,
        object_count,
    })
}

/// What a format-2 creation has done so far (undone newest first).
#[derive(Default)]
struct V2Progress {
    dir_entry: bool,
    id_object: bool,
    header: bool,
    object_map: bool,
}

fn create_v2(store: &dyn ObjectStore, name: &str, size: u64, plan: &V2Plan) -> ImageResult<()> {
    let id = generate_image_id(store.instance_id(), random_u32());
    let id_oid = v2::id_object(name);
    let header_oid = v2::header_object(&id);
    let map_oid = object_map_object(&id, NOSNAP);
    let mut done = V2Progress::default();
    let result = (|| -> ImageResult<()> {
        rbd_call(
            store,
            RBD_DIRECTORY,
            "dir_add_image",
            &dir_image_input(name, &id),
        )
        .map_err(|e| match e.errno() {
            libc::EEXIST => ImageError::Exists(name.to_string()),
            _ => store_err(name, e),
        })?;
        done.dir_entry = true;

        // librbd creates the object and sets the id in one operation; the
        // class method needs the object to exist, and fails EEXIST when it
        // holds an id already (someone else's image: not ours to undo).
        store
            .write(&id_oid, 0, &[], &SnapContext::default())
            .map_err(|e| store_err(name, e))?;
        match rbd_call(store, &id_oid, "set_id", &set_id_input(&id)) {
            Ok(_) => done.id_object = true,
            Err(e) if e.errno() == libc::EEXIST => {
                return Err(ImageError::Exists(name.to_string()));
            }
            Err(e) => {
                done.id_object = true;
                return Err(store_err(name, e));
            }
        }

        let mut prefix = String::from("rbd_data.");
        if plan.data_pool.is_some() {
            prefix.push_str(&format!("{}.", store.pool_id()));
        }
        prefix.push_str(&id);
        let input = create_input(size, plan.order, plan.features, &prefix, plan.data_pool);
        rbd_call(store, &header_oid, "create", &input).map_err(|e| match e.errno() {
            libc::EEXIST => busy(name, format!("image id {id} is already in use")),
            _ => store_err(name, e),
        })?;
        done.header = true;

        if let Some((unit, count)) = plan.striping {
            rbd_call(
                store,
                &header_oid,
                "set_stripe_unit_count",
                &set_stripe_unit_count_input(unit, count),
            )
            .map_err(|e| store_err(name, e))?;
        }
        if has_object_map(plan.features) {
            done.object_map = true;
            rbd_call(
                store,
                &map_oid,
                "object_map_resize",
                &object_map_resize_input(plan.object_count, ObjectState::Nonexistent),
            )
            .map_err(|e| store_err(name, e))?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let snapc = SnapContext::default();
        if done.object_map {
            cleanup(
                name,
                "remove the object map",
                ignore_enoent(store.remove(&map_oid, &snapc)),
            );
        }
        if done.header {
            cleanup(
                name,
                "remove the header",
                ignore_enoent(store.remove(&header_oid, &snapc)),
            );
        }
        if done.id_object {
            cleanup(
                name,
                "remove the id object",
                ignore_enoent(store.remove(&id_oid, &snapc)),
            );
        }
        if done.dir_entry {
            cleanup(
                name,
                "remove the directory entry",
                ignore_enoent(rbd_call(
                    store,
                    RBD_DIRECTORY,
                    "dir_remove_image",
                    &dir_image_input(name, &id),
                )),
            );
        }
        return Err(e);
    }
    info!(
        "image {name}: created (format 2, id {id}, {size} bytes, order {}, features 0x{:x})",
        plan.order, plan.features
    );
    Ok(())
}
