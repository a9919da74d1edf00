//! The image layer in-process, over the in-memory cluster: create, open
//! with a cache, write/read/flush against a byte model, snapshots,
//! resize, rename, remove, clones, two clients sharing the exclusive
//! lock, and injected failures. (Listing through the pool is tested in
//! `pool::tests`, which uses these helpers.)

mod basics;
mod clients;
mod diff;
mod faults;
mod model;
mod namespaces;

use std::sync::Arc;
use std::time::Duration;

use super::Image;
use super::admin::{self, CreateOptions};
use crate::cache::{Cache, CacheConfig};
use crate::format::SnapshotInfo;
use crate::format::v2::*;
use crate::store::memory::MemoryStore;
use crate::store::{NOSNAP, ObjectStore};

pub(crate) fn cache() -> Arc<Cache> {
    Cache::new(CacheConfig {
        capacity: 8 << 20,
        workers: 2,
        max_dirty_age: Duration::from_millis(50),
        ..CacheConfig::default()
    })
}

pub(crate) fn v1() -> CreateOptions {
    CreateOptions {
        format: 1,
        order: 12,
        ..CreateOptions::default()
    }
}

pub(crate) fn v2(features: u64) -> CreateOptions {
    CreateOptions {
        format: 2,
        order: 12,
        features: Some(features),
        ..CreateOptions::default()
    }
}

fn striped() -> CreateOptions {
    CreateOptions {
        stripe_unit: Some(1024),
        stripe_count: Some(3),
        ..v2(FEATURE_LAYERING | FEATURE_EXCLUSIVE_LOCK | FEATURE_OBJECT_MAP)
    }
}

/// Every creation variant the tests run through.
pub(crate) fn variants() -> Vec<(&'static str, CreateOptions)> {
    vec![
        ("v1", v1()),
        ("v2plain", v2(FEATURE_LAYERING)),
        (
            "v2lock",
            v2(FEATURE_LAYERING | FEATURE_EXCLUSIVE_LOCK | FEATURE_OBJECT_MAP | FEATURE_FAST_DIFF),
        ),
        ("v2striped", striped()),
    ]
}

fn create_open(
    store: &Arc<MemoryStore>,
    cache: &Arc<Cache>,
    name: &str,
    size: u64,
    opts: &CreateOptions,
) -> Arc<Image> {
    admin::create_image(&**store, name, size, opts).unwrap();
    let dyn_store: Arc<dyn ObjectStore> = store.clone();
    Image::open(dyn_store, cache, name).unwrap()
}

/// A deterministic byte pattern.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            seed.wrapping_mul(31)
                .wrapping_add(i as u8)
                .wrapping_add((i >> 8) as u8)
        })
        .collect()
}

/// A layering image `parent` of `size` bytes holding `pattern(seed, size)`,
/// with snapshot `base` of that: the parent the clone tests attach their
/// child to. Returns the image, its data and the snapshot.
fn snapshotted_parent(
    store: Arc<dyn ObjectStore>,
    cache: &Arc<Cache>,
    seed: u8,
    size: u64,
) -> (Arc<Image>, Vec<u8>, SnapshotInfo) {
    admin::create_image(&*store, "parent", size, &v2(FEATURE_LAYERING)).unwrap();
    let parent = Image::open(store, cache, "parent").unwrap();
    let data = pattern(seed, size as usize);
    parent.write(0, &data).unwrap();
    let snap = parent.snap_create("base").unwrap();
    (parent, data, snap)
}

/// `parent` at `snap` as a clone's parent, in pool 0's `pool_namespace`.
fn parent_spec(parent: &Image, snap: &SnapshotInfo, pool_namespace: &str) -> ParentSpec {
    ParentSpec {
        pool_id: 0,
        pool_namespace: pool_namespace.to_string(),
        image_id: parent.info().id.clone().unwrap(),
        snap_id: snap.id,
    }
}

/// Makes the existing image `child` a clone of `parent` (its first
/// `overlap` bytes) with `parent_attach` on the child's header, encoded
/// here as librbd sends it, so these tests do not lean on the admin clone
/// code. Returns the child's image id.
fn attach_parent(store: &dyn ObjectStore, child: &str, parent: ParentSpec, overlap: u64) -> String {
    let child_id = admin::image_info(store, child).unwrap().id.unwrap();
    let mut input = encode_parent_get_reply(Some(&parent));
    input.extend_from_slice(&overlap.to_le_bytes());
    input.push(0); // not a reattach
    store
        .exec(
            &header_object(&child_id),
            RBD_CLASS,
            "parent_attach",
            &input,
        )
        .unwrap();
    child_id
}

/// The clone `child` of `pdata` (`size` bytes, no data of its own yet)
/// reads its parent's bytes; a write copies up: opened afresh (a new
/// cache), the child holds the parent's bytes around its own, in its own
/// object 1 of `store`. Returns that object's name.
fn assert_reads_through_and_copies_up(
    store: Arc<dyn ObjectStore>,
    cache: &Arc<Cache>,
    pdata: &[u8],
    size: u64,
) -> String {
    let child = Image::open(store.clone(), cache, "child").unwrap();
    assert_eq!(child.read(NOSNAP, 0, size).unwrap(), pdata, "read through");
    child.write(5000, b"child").unwrap();
    child.flush().unwrap();
    let mut want = pdata.to_vec();
    want[5000..5005].copy_from_slice(b"child");
    let fresh = Image::open(store.clone(), &self::cache(), "child").unwrap();
    assert_eq!(fresh.read(NOSNAP, 0, size).unwrap(), want);
    // The copied-up object holds the parent's bytes around ours.
    let obj = fresh.info().data_object(1);
    let raw = store.read(&obj, 0, 4096, NOSNAP).unwrap();
    assert_eq!(raw, &want[4096..8192]);
    obj
}
