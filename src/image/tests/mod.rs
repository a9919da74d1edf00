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
use crate::format::v2::*;
use crate::store::ObjectStore;
use crate::store::memory::MemoryStore;

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
