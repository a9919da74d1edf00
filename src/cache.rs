//! The object cache between an image and RADOS: bounded clean data
//! (prefetched objects), write-back of dirty extents, sequential prefetch.
//!
//! This first version is write-through and caches nothing; it fixes the
//! interface the image layer calls.

use std::sync::Arc;

use crate::image::ImageError;
use crate::layout::Layout;
use crate::store::SnapId;

/// What the cache needs from an image: object-granular I/O. `read_object`
/// returns exactly `len` bytes (missing objects and the part past an
/// object's end are zeros); `write_object` writes with the image's current
/// snap context (and lock/object-map duties).
pub trait ObjectIo: Send + Sync {
    fn read_object(
        &self,
        snap: SnapId,
        object_no: u64,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, ImageError>;
    fn write_object(&self, object_no: u64, offset: u64, data: &[u8]) -> Result<(), ImageError>;
    /// The image's current striping layout (for prefetch).
    fn layout(&self) -> Layout;
    /// Image size at `snap` (NOSNAP: the head), None if no such snapshot.
    fn size_at(&self, snap: SnapId) -> Option<u64>;
    /// A name for log lines.
    fn name(&self) -> &str;
}

/// Settings of the cache shared by every image of a mount.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Bytes of cached data (clean + dirty) at most.
    pub capacity: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { capacity: 64 << 20 }
    }
}

/// The cache of a mount: one budget shared by all its images.
pub struct Cache {
    #[allow(dead_code)]
    config: CacheConfig,
}

impl Cache {
    pub fn new(config: CacheConfig) -> Arc<Cache> {
        Arc::new(Cache { config })
    }

    /// The cache of one image (head and snapshots).
    pub fn for_image(self: &Arc<Cache>, io: Arc<dyn ObjectIo>) -> ImageCache {
        ImageCache {
            _cache: self.clone(),
            io,
        }
    }
}

/// One image's view of the cache.
pub struct ImageCache {
    _cache: Arc<Cache>,
    io: Arc<dyn ObjectIo>,
}

impl ImageCache {
    /// Reads `len` bytes at `offset` of object `object_no` at `snap`;
    /// always exactly `len` bytes.
    pub fn read(
        &self,
        snap: SnapId,
        object_no: u64,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, ImageError> {
        self.io.read_object(snap, object_no, offset, len)
    }

    /// Writes to the head; acknowledged data must reach RADOS by the next
    /// `flush`.
    pub fn write(&self, object_no: u64, offset: u64, data: &[u8]) -> Result<(), ImageError> {
        self.io.write_object(object_no, offset, data)
    }

    /// Writes back everything dirty; returns the first error of any
    /// write-back since the last flush.
    pub fn flush(&self) -> Result<(), ImageError> {
        Ok(())
    }

    /// Drops clean data (the header changed: resize, snapshot removed).
    pub fn invalidate(&self) {}

    /// A read of [offset, offset+len) of the image at `snap` was served; the
    /// cache may detect a sequential reader and prefetch what follows.
    pub fn note_read(&self, _snap: SnapId, _offset: u64, _len: u64) {}
}
