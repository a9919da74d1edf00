//! rbdfs: Ceph RBD images as plain files, over FUSE and librados.
//!
//! Layers, each knowing only the ones below it: [`store`] (object store
//! trait: librados and in-memory) → [`format`] (bytes ↔ structures) →
//! [`layout`] (offset ↔ object math) → [`image`] (one open image) →
//! [`pool`] (the pool's images) → [`fs`] (the FUSE adapter) → `cli`.

pub mod cache;
pub mod cli;
pub mod format;
pub mod fs;
pub mod image;
pub mod layout;
pub mod pool;
pub mod store;
