//! Image lifecycle: create, remove, rename and resize, as librbd (Pacific,
//! 16.2) does them, over an [`ObjectStore`]. The results are meant to be
//! indistinguishable from `rbd create|rm|rename|resize` for the `rbd` and
//! `rados` tools.
//!
//! These are plain functions: no image needs to be open. What they do not
//! do, the caller does:
//!
//! - **Exclusive lock.** [`resize_image`] on an image with the
//!   exclusive-lock feature must be called by the lock's owner (this
//!   client); it checks and refuses otherwise. [`remove_image`] refuses an
//!   image whose lock another client holds, but does not take the lock
//!   itself (librbd does: a peer that asks us for it while we remove would
//!   find nobody answering on our side).
//! - **Our own opens.** [`remove_image`] finds other clients that watch the
//!   header (it sends a header-update notification and counts who answers,
//!   see [`other_watchers`]) but ignores watches of this client: the caller
//!   must make sure it does not have the image open itself.
//! - **Notifications.** None of these functions notifies watchers of the
//!   change; after [`resize_image`] or [`rename_image`] the caller sends a
//!   header update (its own watch callback may need locks it holds here),
//!   and reloads what it caches (size, object map).
//! - **Trash.** Pacific's `rbd rm` moves a format-2 image to `rbd_trash`
//!   first and removes it from there; the end state (nothing left) is the
//!   same as the direct removal done here, which is what librbd does when
//!   the trash is not supported. (An interrupted removal is therefore not
//!   listed by `rbd trash ls`; running [`remove_image`] again finishes it.)
//! - **Format-1 directory.** Format-1 names live in a TMAP that only the
//!   OSD's TMAPUP changes atomically; the store's `tmap_update` fails on
//!   Octopus and later librados, and then a non-atomic rewrite is used,
//!   see `update_v1_directory`.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{info, warn};
use parking_lot::Mutex;

use super::header::{self, HeaderRef};
use super::info::{ImageError, ImageInfo, ImageResult};
use crate::format::v1::{self, HeaderV1};
use crate::format::v2::{self, *};
use crate::format::{FormatError, MAX_ORDER, MIN_ORDER, tmap, valid_file_name};
use crate::layout::Layout;
use crate::store::{NOSNAP, ObjectStore, SnapContext, StoreError};

/// librbd's default object order (4 MiB objects).
pub const DEFAULT_ORDER: u8 = 22;

/// Pacific's `rbd_default_features`: layering, exclusive-lock, object-map,
/// fast-diff, deep-flatten (0x3d).
pub const DEFAULT_FEATURES: u64 = FEATURE_LAYERING
    | FEATURE_EXCLUSIVE_LOCK
    | FEATURE_OBJECT_MAP
    | FEATURE_FAST_DIFF
    | FEATURE_DEEP_FLATTEN;

/// Features a new image may ask for. Striping and data-pool are derived
/// from the options (as librbd does); journaling is refused (we cannot
/// create a journal), the rest are internal.
const CREATABLE_FEATURES: u64 = FEATURE_LAYERING
    | FEATURE_STRIPINGV2
    | FEATURE_EXCLUSIVE_LOCK
    | FEATURE_OBJECT_MAP
    | FEATURE_FAST_DIFF
    | FEATURE_DEEP_FLATTEN
    | FEATURE_DATA_POOL;

/// Image ids are cut to their last 14 characters so that `rbd_data.ID`
/// fits the 24-byte block name field (RBD_MAX_BLOCK_NAME_SIZE - len
/// ("rbd_data.") - 1).
pub const MAX_IMAGE_ID_LEN: usize = 14;

/// Format-1 block names live in a 24-byte NUL-terminated field.
const V1_BLOCK_NAME_MAX: usize = 23;

/// Data objects removed concurrently (librbd's
/// `rbd_concurrent_management_ops` default).
pub const CONCURRENT_OPS: usize = 10;

/// How long [`other_watchers`] waits for watchers to acknowledge.
pub const WATCH_PROBE_TIMEOUT_MS: u64 = 5000;

/// The name of the directory of snapshots in the filesystem: no image may
/// be called that.
pub const SNAP_DIR_NAME: &str = ".snap";

/// What [`create_image`] makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOptions {
    /// 1 (old format, deprecated) or 2.
    pub format: u8,
    /// Object size is `1 << order`, 12..=25.
    pub order: u8,
    /// Format 2 feature bits; `None` is [`DEFAULT_FEATURES`], reduced to
    /// what the OSDs support (`get_all_features`) like librbd's defaults.
    /// Striping and data-pool are set or cleared from the options below
    /// whatever is asked here. Object-map implies fast-diff (librbd).
    pub features: Option<u64>,
    /// Both or neither. A stripe unit equal to the object size with a count
    /// of 1 is no striping.
    pub stripe_unit: Option<u64>,
    pub stripe_count: Option<u64>,
    /// Pool id for the data objects (format 2). The image's own pool is the
    /// same as none.
    pub data_pool: Option<i64>,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            format: 2,
            order: DEFAULT_ORDER,
            features: None,
            stripe_unit: None,
            stripe_count: None,
            data_pool: None,
        }
    }
}

// ---------------------------------------------------------------------------
// Errors and small helpers
// ---------------------------------------------------------------------------

fn store_err(image: &str, source: StoreError) -> ImageError {
    ImageError::Store {
        image: image.to_string(),
        source,
    }
}

fn corrupt(image: &str, source: FormatError) -> ImageError {
    ImageError::Corrupt {
        image: image.to_string(),
        source,
    }
}

fn invalid(image: &str, reason: impl Into<String>) -> ImageError {
    ImageError::InvalidArgument {
        image: image.to_string(),
        reason: reason.into(),
    }
}

fn busy(image: &str, reason: impl Into<String>) -> ImageError {
    ImageError::Busy {
        image: image.to_string(),
        reason: reason.into(),
    }
}

fn unsupported(image: &str, reason: impl Into<String>) -> ImageError {
    ImageError::Unsupported {
        image: image.to_string(),
        reason: reason.into(),
    }
}

fn rbd_call(
    store: &dyn ObjectStore,
    oid: &str,
    method: &str,
    input: &[u8],
) -> Result<Vec<u8>, StoreError> {
    store.exec(oid, RBD_CLASS, method, input)
}

/// Ignores "no such object" (removing what is already gone).
fn ignore_enoent<T>(r: Result<T, StoreError>) -> Result<(), StoreError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Best-effort cleanup step: logs instead of failing.
fn cleanup(image: &str, what: &str, r: Result<(), StoreError>) {
    if let Err(e) = r {
        warn!("image {image}: cleanup: cannot {what}: {e}");
    }
}

/// A random u32 (no RNG crate here): std's per-process random hash keys
/// mixed with the clock and a counter.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    let v = h.finish();
    (v ^ (v >> 32)) as u32
}

// ---------------------------------------------------------------------------
// Names and lookup
// ---------------------------------------------------------------------------

/// Checks an image name: non-empty, at most 255 bytes, no `/` or NUL, not
/// `.`, `..` or `.snap`.
pub fn validate_image_name(name: &str) -> ImageResult<()> {
    if !valid_file_name(name) || name == SNAP_DIR_NAME {
        return Err(invalid(
            name,
            "invalid image name (empty, longer than 255 bytes, `/` or NUL in it, or `.`, `..`, `.snap`)",
        ));
    }
    Ok(())
}

/// Which format the image `name` has, if it exists: librbd's
/// `detect_format` (`NAME.rbd` means format 1, `rbd_id.NAME` format 2).
pub fn image_format(store: &dyn ObjectStore, name: &str) -> ImageResult<Option<u8>> {
    match store.stat(&v1::header_object(name), NOSNAP) {
        Ok(_) => return Ok(Some(1)),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(store_err(name, e)),
    }
    match store.stat(&v2::id_object(name), NOSNAP) {
        Ok(_) => Ok(Some(2)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(store_err(name, e)),
    }
}

/// Loads the header of image `name` (either format) as the image code
/// reads it.
pub fn image_info(store: &dyn ObjectStore, name: &str) -> ImageResult<ImageInfo> {
    validate_image_name(name)?;
    let href = header::resolve(store, name)?;
    header::load(store, &href)
}

/// librbd's `generate_image_id`: the client's instance id in hex followed
/// by a random `rand()` value (31 bits) in hex, keeping the last
/// [`MAX_IMAGE_ID_LEN`] characters.
pub fn generate_image_id(instance_id: u64, random: u32) -> String {
    let id = format!("{:x}{:x}", instance_id, random & 0x7fff_ffff);
    let cut = id.len().saturating_sub(MAX_IMAGE_ID_LEN);
    id[cut..].to_string()
}

/// The block name of a new format-1 image as Pacific's `init_rbd_header`
/// makes it: `rb.<instance id high 32 bits>.<low 32 bits>.<rand()>` in hex,
/// cut to fit the 24-byte field. (Older librbd took the middle part from
/// `rbd.assign_bid` on `rbd_info`; Pacific uses the instance id.)
pub fn v1_block_name(instance_id: u64, random: u32) -> String {
    let mut s = format!(
        "rb.{:x}.{:x}.{:x}",
        instance_id >> 32,
        instance_id & 0xffff_ffff,
        random & 0x7fff_ffff
    );
    s.truncate(V1_BLOCK_NAME_MAX);
    s
}

// ---------------------------------------------------------------------------
// The format-1 directory (TMAP in the data of rbd_directory)
// ---------------------------------------------------------------------------

/// One change of the format-1 directory.
#[derive(Debug, Clone, Copy)]
enum DirChange<'a> {
    /// Add (or keep) `NAME` with an empty value, as librbd's `tmap_set`.
    Set(&'a str),
    /// Remove `NAME`; ENOENT when it is not there.
    Remove(&'a str),
}

/// Applies `changes` to the TMAP of `rbd_directory` in one update (the
/// OSD's TMAPUP: atomic).
///
/// librados' C `rados_tmap_update` (what the store calls) is a stub that
/// answers EOPNOTSUPP since Octopus (only the C++ API still sends
/// TMAPUP). When the store answers EOPNOTSUPP, the directory is updated by
/// reading it, changing it and writing it back instead: the same bytes,
/// but not atomic: an update another client makes between our read and
/// write is lost (its image would drop out of `rbd ls`). The store should
/// do this atomically (read with the object version, then write with
/// `assert_version`, retrying), after which this fallback is not used.
fn update_v1_directory(
    store: &dyn ObjectStore,
    changes: &[DirChange<'_>],
) -> Result<(), StoreError> {
    let mut command = Vec::new();
    for c in changes {
        command.extend(match *c {
            DirChange::Set(name) => tmap::set_command(name, &[]),
            DirChange::Remove(name) => tmap::remove_command(name),
        });
    }
    // One TMAPUP buffer: all the changes or none (the store applies it
    // atomically, guarded by the object's version).
    store.tmap_update(RBD_DIRECTORY, &command)
}

// ---------------------------------------------------------------------------
// Create
// ---------------------------------------------------------------------------

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
    if features & FEATURE_OBJECT_MAP != 0 {
        features |= FEATURE_FAST_DIFF;
    }
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
    if striping.is_some() {
        features |= FEATURE_STRIPINGV2;
    } else {
        features &= !FEATURE_STRIPINGV2;
    }
    let data_pool = opts.data_pool.filter(|&p| p != store.pool_id());
    if let Some(pool) = data_pool {
        if pool < 0 {
            return Err(invalid(name, format!("data pool id {pool}")));
        }
        store
            .pool_by_id(pool)
            .map_err(|e| invalid(name, format!("data pool {pool} does not exist: {e}")))?;
        features |= FEATURE_DATA_POOL;
    } else {
        features &= !FEATURE_DATA_POOL;
    }
    if features & FEATURE_OPERATIONS != 0 {
        return Err(invalid(name, "cannot use internally controlled features"));
    }
    if features & FEATURE_JOURNALING != 0 {
        return Err(unsupported(
            name,
            "journaling is not implemented (no journal can be created)",
        ));
    }
    if features & !CREATABLE_FEATURES != 0 {
        return Err(invalid(
            name,
            format!(
                "features 0x{:x} ({:?}) cannot be set at creation",
                features & !CREATABLE_FEATURES,
                feature_names(features & !CREATABLE_FEATURES)
            ),
        ));
    }
    if features & FEATURE_FAST_DIFF != 0 && features & FEATURE_OBJECT_MAP == 0 {
        return Err(invalid(name, "cannot use fast diff without object map"));
    }
    if features & FEATURE_OBJECT_MAP != 0 && features & FEATURE_EXCLUSIVE_LOCK == 0 {
        return Err(invalid(
            name,
            "cannot use object map without exclusive lock",
        ));
    }
    let layout = match striping {
        Some((unit, count)) => Layout::striped(order, unit, count).expect("validated above"),
        None => Layout::plain(order),
    };
    let object_count = layout.object_count(size);
    if features & FEATURE_OBJECT_MAP != 0 && object_count > MAX_OBJECT_MAP_OBJECT_COUNT {
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
        if plan.features & FEATURE_OBJECT_MAP != 0 {
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

// ---------------------------------------------------------------------------
// Checks shared by remove and resize
// ---------------------------------------------------------------------------

/// Other clients watching `header_oid`: a header-update notification (what
/// librbd sends after every header change, so harmless) goes out and
/// everyone who acknowledges it, or times out, is a watcher. Watches of
/// this client (same instance id) are left out. Stands in for `rados
/// listwatchers`, which the store does not offer; waits up to
/// [`WATCH_PROBE_TIMEOUT_MS`] for a watcher that died without unwatching.
pub fn other_watchers(
    store: &dyn ObjectStore,
    header_oid: &str,
) -> Result<Vec<(u64, u64)>, StoreError> {
    let me = store.instance_id();
    let payload = NotifyMessage::HeaderUpdate.encode();
    let replies = match store.notify(header_oid, &payload, WATCH_PROBE_TIMEOUT_MS) {
        Ok(r) => r,
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(replies
        .acks
        .iter()
        .map(|(gid, cookie, _)| (*gid, *cookie))
        .chain(replies.timeouts.iter().copied())
        .filter(|(gid, _)| *gid != me)
        .collect())
}

/// Holders of the image's exclusive lock (`rbd_lock` on the header).
fn lock_holders(
    store: &dyn ObjectStore,
    image: &str,
    header_oid: &str,
) -> ImageResult<Vec<Locker>> {
    match store.exec(
        header_oid,
        LOCK_CLASS,
        "get_info",
        &get_info_input(RBD_LOCK_NAME),
    ) {
        Ok(reply) => Ok(decode_get_info(&reply)
            .map_err(|e| corrupt(image, e))?
            .lockers),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(store_err(image, e)),
    }
}

fn op_features(store: &dyn ObjectStore, info: &ImageInfo, image: &str) -> ImageResult<u64> {
    if info.features & FEATURE_OPERATIONS == 0 {
        return Ok(0);
    }
    let reply = rbd_call(store, &info.header_oid, "op_features_get", &[])
        .map_err(|e| store_err(image, e))?;
    decode_u64_reply(&reply, "rbd.op_features_get reply").map_err(|e| corrupt(image, e))
}

/// The image's head object map, as far as it can be used.
struct HeadMap {
    map: ObjectMap,
    /// False when the image is flagged object-map-invalid: the map is still
    /// kept up to date (as librbd does) but every object may exist.
    trusted: bool,
}

impl HeadMap {
    fn may_exist(&self, object_no: u64) -> bool {
        !self.trusted || self.map.get(object_no).is_none_or(|s| s.may_exist())
    }
}

/// Loads the head object map of an image with the object-map feature.
/// None when the image has no such feature, or the map object is missing
/// (then it is left missing: `rbd object-map rebuild` makes one).
fn load_object_map(
    store: &dyn ObjectStore,
    info: &ImageInfo,
    image: &str,
) -> ImageResult<Option<HeadMap>> {
    let Some(id) = info.id.as_deref() else {
        return Ok(None);
    };
    if info.features & FEATURE_OBJECT_MAP == 0 {
        return Ok(None);
    }
    let flags = rbd_call(store, &info.header_oid, "get_flags", &snap_id_input(NOSNAP))
        .map_err(|e| store_err(image, e))?;
    let flags = decode_get_flags(&flags).map_err(|e| corrupt(image, e))?;
    let trusted = flags & FLAG_OBJECT_MAP_INVALID == 0;
    if !trusted {
        warn!("image {image}: object map flagged invalid; treating every object as present");
    }
    match rbd_call(
        store,
        &object_map_object(id, NOSNAP),
        "object_map_load",
        &[],
    ) {
        Ok(reply) => Ok(Some(HeadMap {
            map: ObjectMap::decode(&reply).map_err(|e| corrupt(image, e))?,
            trusted,
        })),
        Err(e) if e.is_not_found() => {
            warn!("image {image}: object map missing; treating every object as present");
            Ok(None)
        }
        Err(e) => Err(store_err(image, e)),
    }
}

fn may_exist(map: Option<&HeadMap>, object_no: u64) -> bool {
    map.is_none_or(|m| m.may_exist(object_no))
}

/// Runs `f` for every object number in `range`, on up to
/// [`CONCURRENT_OPS`] threads; stops at the first error and returns it.
fn for_each_object(
    range: Range<u64>,
    f: impl Fn(u64) -> ImageResult<()> + Sync,
) -> ImageResult<()> {
    let len = range.end.saturating_sub(range.start);
    if len == 0 {
        return Ok(());
    }
    let threads = (CONCURRENT_OPS as u64).min(len) as usize;
    let next = AtomicU64::new(range.start);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<ImageError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= range.end {
                        break;
                    }
                    if let Err(e) = f(n) {
                        failed.store(true, Ordering::Relaxed);
                        first_error.lock().get_or_insert(e);
                        break;
                    }
                }
            });
        }
    });
    match first_error.into_inner() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Removes the data objects in `range` that the object map (if any) says
/// may exist, with `snapc` so snapshots keep their data. Absent objects
/// are fine.
fn remove_data_objects(
    data: &dyn ObjectStore,
    info: &ImageInfo,
    image: &str,
    range: Range<u64>,
    map: Option<&HeadMap>,
    snapc: &SnapContext,
) -> ImageResult<()> {
    for_each_object(range, |n| {
        if !may_exist(map, n) {
            return Ok(());
        }
        ignore_enoent(data.remove(&info.data_object(n), snapc)).map_err(|e| store_err(image, e))
    })
}

/// Runs `f` with the store that holds the image's data objects.
fn with_data_store<T>(
    store: &dyn ObjectStore,
    info: &ImageInfo,
    image: &str,
    f: impl FnOnce(&dyn ObjectStore) -> ImageResult<T>,
) -> ImageResult<T> {
    match info.data_pool {
        Some(pool) if pool != store.pool_id() => {
            let data = store.pool_by_id(pool).map_err(|e| store_err(image, e))?;
            f(&*data)
        }
        _ => f(store),
    }
}

// ---------------------------------------------------------------------------
// Remove
// ---------------------------------------------------------------------------

/// Removes image `name` as `rbd rm` does (librbd's `PreRemoveRequest` and
/// `RemoveRequest`).
///
/// Refused, with nothing changed:
/// - snapshots of any kind, user or hidden (trash, mirror, group): ENOTEMPTY.
///   A clone parent's children hang on its snapshots, so a parent with
///   children is refused by this too;
/// - other clients watching the header, or holding its exclusive lock
///   (EBUSY); the image in a group (EBUSY, librbd says EMLINK) or being
///   migrated (EBUSY);
/// - features we cannot handle (journaling, mirroring enabled, unknown
///   bits) and a clone v2 whose parent snapshot is in the trash (librbd
///   would also remove that snapshot from the parent): EOPNOTSUPP.
///
/// Format 2, in librbd's order: remove the data objects `0..object count`
/// (those the object map says may exist; [`CONCURRENT_OPS`] at a time,
/// absent ones ignored, in the data pool if there is one); detach from the
/// parent if it is a clone (`child_detach` on the parent's header for clone
/// v2, `remove_child` on `rbd_children` for clone v1); remove
/// `rbd_header.ID`, `rbd_object_map.ID`, `rbd_id.NAME`; `dir_remove_image`.
/// An image whose header is already gone (a half-removed one) gets its
/// leftovers removed, as librbd does.
///
/// Format 1: data objects, `NAME.rbd`, then the TMAP entry.
pub fn remove_image(store: &dyn ObjectStore, name: &str) -> ImageResult<()> {
    validate_image_name(name)?;
    match header::resolve(store, name)? {
        HeaderRef::V1 { .. } => remove_v1(store, name),
        HeaderRef::V2 { id, .. } => remove_v2(store, name, &id),
    }
}

fn check_removable(store: &dyn ObjectStore, info: &ImageInfo, name: &str) -> ImageResult<()> {
    if let Some(reason) = &info.read_only {
        return Err(unsupported(name, format!("cannot remove: {reason}")));
    }
    if info.features & FEATURE_MIGRATING != 0 {
        return Err(busy(name, "image in migration state"));
    }
    let snaps = info.snapshots.len() + info.hidden_snapshots.len();
    if snaps > 0 {
        return Err(ImageError::NotEmpty {
            image: name.to_string(),
            reason: format!(
                "it has {} snapshot(s) ({} hidden: trash, mirror or group); remove them first",
                snaps,
                info.hidden_snapshots.len()
            ),
        });
    }
    let watchers = other_watchers(store, &info.header_oid).map_err(|e| store_err(name, e))?;
    if !watchers.is_empty() {
        let who: Vec<String> = watchers
            .iter()
            .map(|(gid, cookie)| format!("client.{gid} (cookie {cookie})"))
            .collect();
        return Err(busy(name, format!("it has watchers: {}", who.join(", "))));
    }
    if info.format == 2 && info.features & FEATURE_EXCLUSIVE_LOCK != 0 {
        let me = EntityName::client(store.instance_id());
        if let Some(l) = lock_holders(store, name, &info.header_oid)?
            .iter()
            .find(|l| l.entity() != me)
        {
            return Err(busy(
                name,
                format!(
                    "its exclusive lock is held by {} at {} (`rbd lock rm` if that client is dead)",
                    l.entity(),
                    l.address
                ),
            ));
        }
    }
    Ok(())
}

fn remove_v1(store: &dyn ObjectStore, name: &str) -> ImageResult<()> {
    let info = match header::load(
        store,
        &HeaderRef::V1 {
            name: name.to_string(),
        },
    ) {
        Ok(info) => info,
        Err(ImageError::NotFound(_)) => {
            // No header: perhaps a directory entry left by an interrupted
            // removal; removing it is all there is to do.
            return match update_v1_directory(store, &[DirChange::Remove(name)]) {
                Ok(()) => {
                    info!("image {name}: removed a directory entry without header");
                    Ok(())
                }
                Err(e) if e.is_not_found() => Err(ImageError::NotFound(name.to_string())),
                Err(e) => Err(store_err(name, e)),
            };
        }
        Err(e) => return Err(e),
    };
    check_removable(store, &info, name)?;
    let count = info.layout.object_count(info.size);
    remove_data_objects(store, &info, name, 0..count, None, &info.snapc)?;
    ignore_enoent(store.remove(&info.header_oid, &SnapContext::default()))
        .map_err(|e| store_err(name, e))?;
    ignore_enoent(update_v1_directory(store, &[DirChange::Remove(name)]))
        .map_err(|e| store_err(name, e))?;
    info!("image {name}: removed (format 1, {count} data objects checked)");
    Ok(())
}

/// How a clone is attached to its parent.
enum CloneLink {
    None,
    /// `remove_child` on `rbd_children`.
    V1(ParentSpec),
    /// `child_detach` on the parent's header.
    V2(ParentSpec),
}

fn clone_link(store: &dyn ObjectStore, info: &ImageInfo, name: &str) -> ImageResult<CloneLink> {
    let Some(parent) = &info.parent else {
        return Ok(CloneLink::None);
    };
    let spec = parent.spec.clone();
    if !spec.pool_namespace.is_empty() {
        return Err(unsupported(name, "parent in a pool namespace"));
    }
    if op_features(store, info, name)? & OP_FEATURE_CLONE_CHILD == 0 {
        return Ok(CloneLink::V1(spec));
    }
    // Clone v2: when the parent snapshot was removed while we hang on it,
    // it sits in the parent's trash and librbd removes it with its last
    // child. We do not, so leave such a clone to `rbd rm`.
    let parent_store = store
        .pool_by_id(spec.pool_id)
        .map_err(|e| store_err(name, e))?;
    let parent_header = v2::header_object(&spec.image_id);
    match parent_store.exec(
        &parent_header,
        RBD_CLASS,
        "snapshot_get",
        &snap_id_input(spec.snap_id),
    ) {
        Ok(reply) => {
            let snap = SnapshotRecord::decode(&reply).map_err(|e| corrupt(name, e))?;
            if matches!(snap.namespace, SnapshotNamespace::Trash { .. }) && snap.child_count <= 1 {
                return Err(unsupported(
                    name,
                    "its parent snapshot is in the parent's trash and would have to be removed with it; use `rbd rm`",
                ));
            }
        }
        // Parent or snapshot gone: detaching is a no-op then.
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(store_err(name, e)),
    }
    Ok(CloneLink::V2(spec))
}

fn detach_clone(
    store: &dyn ObjectStore,
    link: &CloneLink,
    id: &str,
    name: &str,
) -> ImageResult<()> {
    match link {
        CloneLink::None => Ok(()),
        CloneLink::V1(spec) => ignore_enoent(rbd_call(
            store,
            RBD_CHILDREN,
            "remove_child",
            &remove_child_input(spec, id),
        ))
        .map_err(|e| store_err(name, e)),
        CloneLink::V2(spec) => {
            let parent_store = store
                .pool_by_id(spec.pool_id)
                .map_err(|e| store_err(name, e))?;
            let input = child_detach_input(spec.snap_id, store.pool_id(), id, "");
            ignore_enoent(parent_store.exec(
                &v2::header_object(&spec.image_id),
                RBD_CLASS,
                "child_detach",
                &input,
            ))
            .map_err(|e| store_err(name, e))
        }
    }
}

fn remove_v2(store: &dyn ObjectStore, name: &str, id: &str) -> ImageResult<()> {
    let href = HeaderRef::V2 {
        name: name.to_string(),
        id: id.to_string(),
    };
    let snapc0 = SnapContext::default();
    let info = match header::load(store, &href) {
        Ok(info) => Some(info),
        // Header gone: remove what is left (librbd does the same).
        Err(ImageError::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    if let Some(info) = &info {
        check_removable(store, info, name)?;
        if rbd_call(
            store,
            RBD_MIRRORING,
            "mirror_image_get",
            &dir_get_id_input(id),
        )
        .is_ok()
        {
            return Err(unsupported(name, "mirroring is enabled for it"));
        }
        if op_features(store, info, name)? & OP_FEATURE_GROUP != 0 {
            return Err(busy(
                name,
                "it is in a group (`rbd group image remove` first)",
            ));
        }
        let link = clone_link(store, info, name)?;
        let map = load_object_map(store, info, name)?;
        let count = info.layout.object_count(info.size);
        with_data_store(store, info, name, |data| {
            remove_data_objects(data, info, name, 0..count, map.as_ref(), &info.snapc)
        })?;
        detach_clone(store, &link, id, name)?;
        ignore_enoent(store.remove(&info.header_oid, &snapc0)).map_err(|e| store_err(name, e))?;
    } else {
        warn!("image {name}: header rbd_header.{id} is missing; removing what is left");
    }
    ignore_enoent(store.remove(&object_map_object(id, NOSNAP), &snapc0))
        .map_err(|e| store_err(name, e))?;
    ignore_enoent(store.remove(&v2::id_object(name), &snapc0)).map_err(|e| store_err(name, e))?;
    ignore_enoent(rbd_call(
        store,
        RBD_DIRECTORY,
        "dir_remove_image",
        &dir_image_input(name, id),
    ))
    .map_err(|e| store_err(name, e))?;
    info!("image {name}: removed (format 2, id {id})");
    Ok(())
}

// ---------------------------------------------------------------------------
// Rename
// ---------------------------------------------------------------------------

/// Renames image `old` to `new` as `rbd rename` does (librbd's
/// `RenameRequest`). EEXIST when `new` exists in either format (also when
/// `new == old`), ENOENT when `old` does not exist.
///
/// Format 2: `rbd_id.NEW` is created holding the id (`set_id`, which fails
/// rather than overwrite), `dir_rename_image(old, new, id)` on
/// `rbd_directory`, then `rbd_id.OLD` is removed (a failure there is only
/// logged, as in librbd). If the directory update fails, `rbd_id.NEW` is
/// removed again.
///
/// Format 1: the header `OLD.rbd` is copied to `NEW.rbd`, one TMAP update
/// sets `NEW` and removes `OLD`, then `OLD.rbd` is removed. The data
/// objects keep their block name. (librbd creates `NEW.rbd` exclusively;
/// the store has no exclusive create, so a `NEW.rbd` made between our
/// existence check and the copy would be overwritten.)
///
/// Clients that have the image open are not told; the caller handles its
/// own opens.
pub fn rename_image(store: &dyn ObjectStore, old: &str, new: &str) -> ImageResult<()> {
    validate_image_name(old)?;
    validate_image_name(new)?;
    let format = image_format(store, old)?.ok_or_else(|| ImageError::NotFound(old.to_string()))?;
    if image_format(store, new)?.is_some() {
        return Err(ImageError::Exists(new.to_string()));
    }
    let snapc0 = SnapContext::default();
    if format == 1 {
        let old_oid = v1::header_object(old);
        let new_oid = v1::header_object(new);
        let header = store.read_full(&old_oid).map_err(|e| {
            if e.is_not_found() {
                ImageError::NotFound(old.to_string())
            } else {
                store_err(old, e)
            }
        })?;
        HeaderV1::decode(&header).map_err(|e| corrupt(old, e))?;
        store
            .write(&new_oid, 0, &header, &snapc0)
            .map_err(|e| store_err(new, e))?;
        let changes = [DirChange::Set(new), DirChange::Remove(old)];
        if let Err(e) = update_v1_directory(store, &changes) {
            cleanup(
                new,
                "remove the new header",
                ignore_enoent(store.remove(&new_oid, &snapc0)),
            );
            return Err(store_err(old, e));
        }
        cleanup(
            old,
            "remove the old header",
            ignore_enoent(store.remove(&old_oid, &snapc0)),
        );
        info!("image {old}: renamed to {new} (format 1)");
        return Ok(());
    }
    let old_id_oid = v2::id_object(old);
    let new_id_oid = v2::id_object(new);
    let raw = store.read_full(&old_id_oid).map_err(|e| {
        if e.is_not_found() {
            ImageError::NotFound(old.to_string())
        } else {
            store_err(old, e)
        }
    })?;
    let id = decode_id_object(&raw).map_err(|e| corrupt(old, e))?;
    store
        .write(&new_id_oid, 0, &[], &snapc0)
        .map_err(|e| store_err(new, e))?;
    if let Err(e) = rbd_call(store, &new_id_oid, "set_id", &set_id_input(&id)) {
        if e.errno() == libc::EEXIST {
            return Err(ImageError::Exists(new.to_string()));
        }
        cleanup(
            new,
            "remove the new id object",
            ignore_enoent(store.remove(&new_id_oid, &snapc0)),
        );
        return Err(store_err(new, e));
    }
    if let Err(e) = rbd_call(
        store,
        RBD_DIRECTORY,
        "dir_rename_image",
        &dir_rename_image_input(old, new, &id),
    ) {
        cleanup(
            new,
            "remove the new id object",
            ignore_enoent(store.remove(&new_id_oid, &snapc0)),
        );
        return Err(match e.errno() {
            libc::EEXIST => ImageError::Exists(new.to_string()),
            libc::ENOENT => ImageError::NotFound(old.to_string()),
            _ => store_err(old, e),
        });
    }
    cleanup(
        old,
        "remove the old id object",
        ignore_enoent(store.remove(&old_id_oid, &snapc0)),
    );
    info!("image {old}: renamed to {new} (format 2, id {id})");
    Ok(())
}

// ---------------------------------------------------------------------------
// Resize
// ---------------------------------------------------------------------------

/// What a resize does to the data objects (librbd's `TrimRequest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResizePlan {
    pub old_size: u64,
    pub new_size: u64,
    /// Data objects an image of the old / new size may use.
    pub old_objects: u64,
    pub new_objects: u64,
    /// Objects wholly past the new end, removed: `new_objects..old_objects`
    /// (empty when growing).
    pub remove: Range<u64>,
    /// Objects that keep data below the new end but also hold data past it
    /// (the boundary of the last stripe period): (object number, offset);
    /// everything in the object from `offset` on lies past the new end and
    /// is cut off. Only when shrinking to a size that is not a multiple of
    /// the stripe period (object size × stripe count).
    pub truncate: Vec<(u64, u64)>,
}

/// Works out which objects a resize from `old_size` to `new_size` removes
/// or cuts, for `layout` (plain or striped). Pure arithmetic.
pub fn resize_plan(layout: &Layout, old_size: u64, new_size: u64) -> ResizePlan {
    let old_objects = layout.object_count(old_size);
    let new_objects = layout.object_count(new_size);
    let mut plan = ResizePlan {
        old_size,
        new_size,
        old_objects,
        new_objects,
        remove: new_objects..old_objects.max(new_objects),
        truncate: Vec::new(),
    };
    if new_size >= old_size {
        plan.remove = old_objects..old_objects;
        return plan;
    }
    let su = layout.stripe_unit;
    let sc = layout.stripe_count;
    let os = layout.object_size;
    let period = os * sc;
    let rest = new_size % period;
    if rest == 0 {
        return plan;
    }
    // The last, partial period: object set `set`, objects set*sc .. +sc.
    // Block b of the set (b = k*sc + pos) is stripe unit k of object pos;
    // the new end falls in block `end_block`, `end_in` bytes into it.
    let set = new_size / period;
    let end_block = rest / su;
    let end_in = rest % su;
    for pos in 0..sc {
        let object_no = set * sc + pos;
        if object_no >= old_objects {
            break;
        }
        // Whole blocks of this object below the new end.
        let whole = if end_block > pos {
            (end_block - pos).div_ceil(sc)
        } else {
            0
        };
        let mut keep = whole * su;
        if end_in > 0 && whole * sc + pos == end_block {
            keep += end_in;
        }
        if keep > 0 && keep < os {
            plan.truncate.push((object_no, keep));
        }
        // keep == 0 means the object lies wholly past the new end: it is
        // at or past `new_objects` and in `remove` already.
    }
    plan
}

/// Resizes the image described by `info` to `new_size` as `rbd resize`
/// does (librbd's `ResizeRequest` and `TrimRequest`). Shrinking is always
/// allowed here (the CLI's `--allow-shrink` is the caller's business).
///
/// The caller must own the image's exclusive lock when it has that feature
/// (checked: EBUSY otherwise) and must keep its own writes out meanwhile;
/// `snapc` is the image's current snap context, carried by every data
/// object change so that snapshots keep their data. `info` must be
/// current (a fresh load).
///
/// Growing: the head object map is resized first (new objects
/// nonexistent), then the size in the header (`rbd.set_size`, or 8 bytes
/// at offset 0x50 of a format-1 header).
///
/// Shrinking ([`resize_plan`]): objects wholly past the new end are marked
/// pending in the object map, removed, then marked nonexistent; each
/// boundary object that exists is truncated where the new end falls in it
/// (after marking it exists in the object map, as librbd's discard does).
/// Then the header, then the object map is shrunk. A clone with snapshots is refused (librbd copies the parent's
/// data up into the removed objects for the snapshots' sake; not done
/// here). The class method `set_size` also cuts a clone's parent overlap.
pub fn resize_image(
    store: &dyn ObjectStore,
    info: &ImageInfo,
    new_size: u64,
    snapc: &SnapContext,
) -> ImageResult<()> {
    // ImageInfo has no name: errors name the image by its header.
    let label = match (&info.id, info.header_oid.strip_suffix(v1::HEADER_SUFFIX)) {
        (Some(id), _) => format!("(id {id})"),
        (None, Some(name)) => name.to_string(),
        (None, None) => info.header_oid.clone(),
    };
    let name = label.as_str();
    if let Some(reason) = &info.read_only {
        return Err(ImageError::ReadOnly {
            image: name.to_string(),
            reason: reason.clone(),
        });
    }
    if !snapc.is_valid() {
        return Err(invalid(name, format!("invalid snap context {snapc:?}")));
    }
    if new_size == info.size {
        return Ok(());
    }
    if info.format == 2 && info.features & FEATURE_EXCLUSIVE_LOCK != 0 {
        let me = EntityName::client(store.instance_id());
        if !lock_holders(store, name, &info.header_oid)?
            .iter()
            .any(|l| l.entity() == me)
        {
            return Err(busy(
                name,
                "resizing needs the exclusive lock, and this client does not hold it",
            ));
        }
    }
    let plan = resize_plan(&info.layout, info.size, new_size);
    let object_map = info.format == 2 && info.features & FEATURE_OBJECT_MAP != 0;
    if object_map && plan.new_objects > MAX_OBJECT_MAP_OBJECT_COUNT {
        return Err(invalid(
            name,
            format!(
                "size {new_size} not compatible with object map ({} objects)",
                plan.new_objects
            ),
        ));
    }
    let map_oid = info
        .id
        .as_deref()
        .map(|id| object_map_object(id, NOSNAP))
        .unwrap_or_default();
    // A missing map stays missing (resizing would make one that says no
    // object exists).
    let resize_map = |present: bool| -> ImageResult<()> {
        if object_map && present {
            rbd_call(
                store,
                &map_oid,
                "object_map_resize",
                &object_map_resize_input(plan.new_objects, ObjectState::Nonexistent),
            )
            .map_err(|e| store_err(name, e))?;
        }
        Ok(())
    };
    if new_size > info.size {
        let present = object_map
            && match store.stat(&map_oid, NOSNAP) {
                Ok(_) => true,
                Err(e) if e.is_not_found() => false,
                Err(e) => return Err(store_err(name, e)),
            };
        resize_map(present)?;
        write_size(store, info, name, new_size)?;
        info!("image {name}: grown from {} to {new_size} bytes", info.size);
        return Ok(());
    }

    let has_snapshots = !info.snapshots.is_empty() || !info.hidden_snapshots.is_empty();
    if info.parent.is_some() && has_snapshots {
        return Err(unsupported(
            name,
            "shrinking a clone that has snapshots (its parent data would have to be copied up first)",
        ));
    }
    let map = if object_map {
        load_object_map(store, info, name)?
    } else {
        None
    };
    let map_update = |range: Range<u64>, new: ObjectState, current: Option<ObjectState>| {
        let Some(m) = &map else {
            return Ok(());
        };
        let end = range.end.min(m.map.len());
        if range.start >= end {
            return Ok(());
        }
        rbd_call(
            store,
            &map_oid,
            "object_map_update",
            &object_map_update_input(range.start, end, new, current),
        )
        .map(drop)
        .map_err(|e| store_err(name, e))
    };
    with_data_store(store, info, name, |data| {
        if !plan.remove.is_empty() {
            map_update(
                plan.remove.clone(),
                ObjectState::Pending,
                Some(ObjectState::Exists),
            )?;
            remove_data_objects(data, info, name, plan.remove.clone(), map.as_ref(), snapc)?;
            map_update(
                plan.remove.clone(),
                ObjectState::Nonexistent,
                Some(ObjectState::Pending),
            )?;
        }
        for &(object_no, offset) in &plan.truncate {
            if !may_exist(map.as_ref(), object_no) {
                continue;
            }
            let oid = info.data_object(object_no);
            let size = match data.stat(&oid, NOSNAP) {
                Ok(size) => size,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(store_err(name, e)),
            };
            if size <= offset {
                continue;
            }
            map_update(object_no..object_no + 1, ObjectState::Exists, None)?;
            data.truncate(&oid, offset, snapc)
                .map_err(|e| store_err(name, e))?;
        }
        Ok(())
    })?;
    write_size(store, info, name, new_size)?;
    resize_map(map.is_some())?;
    info!(
        "image {name}: shrunk from {} to {new_size} bytes ({} objects removed, {} cut)",
        info.size,
        plan.remove.end - plan.remove.start,
        plan.truncate.len()
    );
    Ok(())
}

/// The size field of the header: `rbd.set_size`, or for format 1 the
/// 8 bytes at offset 0x50 of `NAME.rbd` (what librbd rewrites).
fn write_size(store: &dyn ObjectStore, info: &ImageInfo, name: &str, size: u64) -> ImageResult<()> {
    let r = if info.format == 1 {
        store.write(
            &info.header_oid,
            V1_SIZE_OFFSET,
            &size.to_le_bytes(),
            &SnapContext::default(),
        )
    } else {
        rbd_call(store, &info.header_oid, "set_size", &set_size_input(size)).map(drop)
    };
    r.map_err(|e| store_err(name, e))
}

/// Offset of the image size in a format-1 header
/// (`offsetof(rbd_obj_header_ondisk, image_size)`).
pub const V1_SIZE_OFFSET: u64 = 0x50;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn image_ids_look_like_librbds() {
        // rbd-format.md: instance 0x101f, rand 0x39e781cb.
        assert_eq!(generate_image_id(0x101f, 0x39e7_81cb), "101f39e781cb");
        // rand() is 31 bits.
        assert_eq!(generate_image_id(0x130ae, 0xbfff_ffff), "130ae3fffffff");
        // Long ids keep their last 14 characters.
        let id = generate_image_id(u64::MAX, 0x7fff_ffff);
        assert_eq!(id.len(), MAX_IMAGE_ID_LEN);
        assert!(id.ends_with("7fffffff"));
        assert_eq!(generate_image_id(0, 0), "00");
    }

    #[test]
    fn v1_block_names() {
        assert_eq!(v1_block_name(0x1029, 0x6b8b_4567), "rb.0.1029.6b8b4567");
        assert_eq!(v1_block_name(0x130a2, 0xeb8b_4567), "rb.0.130a2.6b8b4567");
        let long = v1_block_name(u64::MAX, u32::MAX);
        assert_eq!(long.len(), V1_BLOCK_NAME_MAX);
        assert!(long.starts_with("rb.ffffffff.ffffffff."));
    }

    #[test]
    fn names() {
        for bad in ["", ".", "..", ".snap", "a/b", "a\0b", &"x".repeat(256)] {
            let e = validate_image_name(bad).unwrap_err();
            assert_eq!(e.errno(), libc::EINVAL, "{bad:?}");
        }
        for good in ["a", ".snapx", "a b", "x@y", &"x".repeat(255), "ü"] {
            validate_image_name(good).unwrap();
        }
    }

    #[test]
    fn plain_plan() {
        let l = Layout::plain(22);
        let mb = 1u64 << 20;
        let p = resize_plan(&l, 20 * mb, 5 * mb + 123);
        assert_eq!(p.old_objects, 5);
        assert_eq!(p.new_objects, 2);
        assert_eq!(p.remove, 2..5);
        assert_eq!(p.truncate, vec![(1, mb + 123)]);
        let p = resize_plan(&l, 20 * mb, 8 * mb);
        assert_eq!(p.remove, 2..5);
        assert!(p.truncate.is_empty());
        let p = resize_plan(&l, 20 * mb, 0);
        assert_eq!(p.remove, 0..5);
        let p = resize_plan(&l, 5 * mb, 20 * mb);
        assert!(p.remove.is_empty() && p.truncate.is_empty());
        assert_eq!(p.new_objects, 5);
    }

    #[test]
    fn striped_plan() {
        // 64 KiB objects, 16 KiB units, 4 objects per set: period 256 KiB.
        let l = Layout::striped(16, 16 << 10, 4).unwrap();
        // New end 1.5 units into the second set: object 4 keeps a unit and
        // object 5 half of one; objects 6, 7 are wholly past the end.
        let p = resize_plan(&l, 1 << 20, (256 << 10) + (24 << 10));
        assert_eq!(p.new_objects, 6);
        assert_eq!(p.remove, 6..16);
        assert_eq!(p.truncate, vec![(4, 16 << 10), (5, 8 << 10)]);
    }

    /// Byte-level reference: after the plan, everything below the new end
    /// is kept and everything past it (that the old image had) is gone.
    fn check_plan(l: &Layout, old: u64, new: u64) -> Result<(), TestCaseError> {
        let p = resize_plan(l, old, new);
        prop_assert_eq!(p.new_objects, l.object_count(new));
        if new < old {
            prop_assert_eq!(p.remove.clone(), p.new_objects..p.old_objects);
        } else {
            prop_assert!(p.remove.is_empty() && p.truncate.is_empty());
        }
        let cut = |obj: u64| p.truncate.iter().find(|t| t.0 == obj).map(|t| t.1);
        for t in &p.truncate {
            prop_assert!(t.0 < p.new_objects && t.1 > 0 && t.1 < l.object_size);
        }
        // Sample offsets: every stripe-unit boundary ±1 around both ends.
        let mut probes = Vec::new();
        let step = l.stripe_unit;
        let lo = new.saturating_sub(2 * l.object_size * l.stripe_count);
        let mut o = lo - lo % step;
        while o < old.min(new + 2 * l.object_size * l.stripe_count) {
            for d in [0, 1, step / 2, step - 1] {
                if o + d < old {
                    probes.push(o + d);
                }
            }
            o += step;
        }
        for d in [0, 1, 2] {
            probes.extend(
                [new + d, new.wrapping_sub(d)]
                    .into_iter()
                    .filter(|&x| x < old),
            );
        }
        for off in probes {
            let (obj, in_obj, _) = l.locate(off);
            let removed = p.remove.contains(&obj);
            let cut_away = cut(obj).is_some_and(|c| in_obj >= c);
            if off < new {
                prop_assert!(
                    !removed && !cut_away,
                    "offset {} lost (obj {} at {})",
                    off,
                    obj,
                    in_obj
                );
            } else if new < old {
                prop_assert!(
                    removed || cut_away,
                    "offset {} kept (obj {} at {})",
                    off,
                    obj,
                    in_obj
                );
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn plans_keep_exactly_the_new_image(
            order in 12u8..=16, su_shift in 0u32..4, sc in 1u64..6,
            old in 0u64..(3 << 20), new in 0u64..(3 << 20),
        ) {
            let su = (1u64 << order) >> su_shift;
            let l = Layout::striped(order, su, sc).unwrap();
            check_plan(&l, old, new)?;
        }
    }
}
