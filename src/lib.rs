//! rbdfs: Ceph RBD images as plain files, over FUSE and librados.
//!
//! The modules are layers, each knowing only the ones below it; the order
//! is [`LAYERS`], bottom first, and a unit test holds every `crate::`
//! path in `src/` to it (as well as the table in `docs/architecture.md`).

pub mod cache;
pub mod cli;
pub mod error;
pub mod format;
pub mod fs;
pub mod image;
pub mod layout;
pub mod pool;
pub mod store;

/// The layers of the crate, bottom first; a module may name (through
/// `crate::`) only itself and the modules before it:
///
/// - `format`: bytes ↔ structures, no I/O (also snap ids, `NOSNAP`,
///   `SnapContext`);
/// - `layout`: image offset ↔ object extents;
/// - `store`: the object store trait, librados and in-memory;
/// - `error`: the image error, shared by the cache and the image;
/// - `cache`: the object cache, over the `ObjectIo` trait;
/// - `image`: one open image;
/// - `pool`: the pool's images;
/// - `fs`: the FUSE adapter;
/// - `cli`: arguments, options, daemonising.
pub const LAYERS: &[&str] = &[
    "format", "layout", "store", "error", "cache", "image", "pool", "fs", "cli",
];

#[cfg(test)]
mod layer_tests;
