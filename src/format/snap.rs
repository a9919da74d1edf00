//! Snapshot ids and the snapshot context, as RADOS and the RBD header
//! both speak them. They live here, at the bottom, because the format
//! decodes them (`get_snapcontext`, format-1 headers) and every layer
//! above (the store's writes, the cache's keys, the image) uses them.

/// A RADOS snapshot id. [`NOSNAP`] is the head (the live image).
pub type SnapId = u64;

/// CEPH_NOSNAP: reads "at" this id read the head. (u64::MAX is CEPH_SNAPDIR,
/// a different thing.)
pub const NOSNAP: SnapId = u64::MAX - 1;

/// The snapshot context every write to the head carries: the newest snap
/// seq and the image's snap ids, newest first. The OSD preserves an object's
/// old data for each snap id in it that the object has not seen yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SnapContext {
    pub seq: u64,
    pub snaps: Vec<SnapId>,
}

impl SnapContext {
    /// librados rejects a context whose ids are not strictly descending or
    /// exceed seq; checking here turns that into a clear error.
    pub fn is_valid(&self) -> bool {
        self.snaps.first().is_none_or(|&s| s <= self.seq)
            && self.snaps.windows(2).all(|w| w[0] > w[1])
    }
}
