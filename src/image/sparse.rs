//! Holes and data: which objects hold data (for SEEK_DATA/SEEK_HOLE and
//! `st_blocks`), and discard (punch hole, fstrim through a loop device),
//! which removes, truncates or zeroes objects as librbd's discard does.

use std::sync::Arc;

use super::features::{has_object_map, needs_lock};
use super::info::ImageInfo;
use super::store_image::StoreImage;
use crate::cache::ObjectIo;
use crate::error::{ImageError, ImageResult};
use crate::format::v2::{ObjectMap, ObjectState, object_map_object};
use crate::store::SnapId;

/// Objects asked about at once when there is no object map to read.
const STAT_BATCH: usize = 64;
/// Without an object map, images with more objects than this report every
/// object as allocated rather than stat them all for `st_blocks`.
const MAX_STAT_SCAN: u64 = 4096;

impl StoreImage {
    /// The object map of the head or a snapshot, when the image keeps one
    /// (and it decodes). A cluster that does not answer is an error, not a
    /// reason to ask again object by object.
    fn read_object_map(&self, info: &ImageInfo, snap: SnapId) -> ImageResult<Option<ObjectMap>> {
        let Some(id) = info.id.as_deref().filter(|_| has_object_map(info.features)) else {
            return Ok(None);
        };
        match self.store.read_full(&object_map_object(id, snap)) {
            Ok(raw) => Ok(ObjectMap::decode(&raw).ok()),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(self.store_err(e)),
        }
    }

    /// Whether each object in `first..end` may hold data at `snap`. A
    /// clone's objects inside the parent overlap count as data: the parent
    /// may have it.
    pub(super) fn objects_present(
        &self,
        info: &ImageInfo,
        snap: SnapId,
        first: u64,
        end: u64,
    ) -> ImageResult<Vec<bool>> {
        let overlap = info.parent.as_ref().map_or(0, |p| p.overlap_at(snap));
        let object_size = info.layout.object_size;
        let from_parent = |n: u64| n * object_size < overlap;
        if let Some(map) = self.read_object_map(info, snap)? {
            return Ok((first..end)
                .map(|n| from_parent(n) || map.get(n).is_none_or(|s| s.may_exist()))
                .collect());
        }
        let mut out = Vec::with_capacity((end - first) as usize);
        let numbers: Vec<u64> = (first..end).collect();
        for chunk in numbers.chunks(STAT_BATCH) {
            let found: Vec<ImageResult<bool>> = std::thread::scope(|s| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|&n| {
                        s.spawn(move || {
                            if from_parent(n) {
                                return Ok(true);
                            }
                            match self.data_store().stat(&info.data_object(n), snap) {
                                Ok(_) => Ok(true),
                                Err(e) if e.is_not_found() => Ok(false),
                                Err(e) => Err(self.store_err(e)),
                            }
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or(Ok(true)))
                    .collect()
            });
            for f in found {
                out.push(f?);
            }
        }
        Ok(out)
    }

    /// Discards `[offset, offset+len)` of object `object_no` of the head as
    /// librbd does: a whole object is removed (marked pending, then
    /// nonexistent in the object map), a tail is truncated, a middle part
    /// zeroed. Inside a clone's parent overlap, removing would bring the
    /// parent's bytes back, so zeros are written instead.
    pub(super) fn discard_object(&self, object_no: u64, offset: u64, len: u64) -> ImageResult<()> {
        let info = self.current_info()?;
        let object_size = info.layout.object_size;
        let overlap = info.parent.as_ref().map_or(0, |p| p.overlap);
        if object_no * object_size < overlap {
            return self.write_object(object_no, offset, &vec![0u8; len as usize]);
        }
        let lock = self.lock.as_ref().filter(|_| needs_lock(info.features));
        let _guard = match lock {
            Some(l) => Some(l.owned_guard(self.watch_cookie_for_lock()?)?),
            None => None,
        };
        let oid = info.data_object(object_no);
        let store = self.data_store();
        let not_found_ok = |r: Result<(), crate::store::StoreError>| match r {
            Err(e) if !e.is_not_found() => Err(self.store_err(e)),
            _ => Ok(()),
        };
        if offset == 0 && len >= object_size {
            if let Some(l) = lock {
                l.set_object_state(object_no, ObjectState::Pending)?;
            }
            not_found_ok(store.remove(&oid, &info.snapc))?;
            if let Some(l) = lock {
                l.set_object_state(object_no, ObjectState::Nonexistent)?;
            }
            return Ok(());
        }
        if let Some(l) = lock {
            // Truncate and zero create nothing, but may touch an object
            // that exists: it must not stay "exists-clean" for fast-diff.
            if l.object_state(object_no).is_some_and(|s| s.may_exist()) {
                l.set_object_state(object_no, ObjectState::Exists)?;
            }
        }
        if offset + len >= object_size {
            not_found_ok(store.truncate(&oid, offset, &info.snapc))
        } else {
            not_found_ok(store.zero(&oid, offset, len, &info.snapc))
        }
    }
}

/// What `lseek` looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seek {
    Data,
    Hole,
}

/// Finds the next data or hole at or after `offset` (object-granular), or
/// None (ENXIO) when `offset` is at or past the end, or no data follows.
pub(super) fn seek(
    store_image: &Arc<StoreImage>,
    info: &ImageInfo,
    snap: SnapId,
    offset: u64,
    what: Seek,
) -> ImageResult<Option<u64>> {
    let size = info.size_at(snap).ok_or_else(|| ImageError::NoSnapshot {
        image: store_image.name().to_string(),
        snap: snap.to_string(),
    })?;
    if offset >= size {
        return Ok(None);
    }
    // Striped images scatter an object over the image: call it all data.
    if !info.layout.is_plain() {
        return Ok(Some(if what == Seek::Data { offset } else { size }));
    }
    let object_size = info.layout.object_size;
    let count = info.layout.object_count(size);
    let mut n = offset / object_size;
    while n < count {
        let end = (n + 1024).min(count);
        let present = store_image.objects_present(info, snap, n, end)?;
        for (i, p) in present.into_iter().enumerate() {
            let hit = match what {
                Seek::Data => p,
                Seek::Hole => !p,
            };
            if hit {
                return Ok(Some(((n + i as u64) * object_size).max(offset).min(size)));
            }
        }
        n = end;
    }
    Ok(match what {
        Seek::Data => None,
        Seek::Hole => Some(size),
    })
}

/// Bytes of the image at `snap` that objects hold (object-granular), for
/// `st_blocks`. Without an object map, big images count as fully
/// allocated rather than being stat'ed object by object.
pub(super) fn allocated(
    store_image: &Arc<StoreImage>,
    info: &ImageInfo,
    snap: SnapId,
) -> ImageResult<u64> {
    let size = info.size_at(snap).unwrap_or(0);
    let count = info.layout.object_count(size);
    let has_map = has_object_map(info.features);
    if !info.layout.is_plain() || (!has_map && count > MAX_STAT_SCAN) {
        return Ok(size);
    }
    let object_size = info.layout.object_size;
    let present = store_image.objects_present(info, snap, 0, count)?;
    Ok(present
        .iter()
        .enumerate()
        .filter(|(_, p)| **p)
        .map(|(n, _)| object_size.min(size - n as u64 * object_size))
        .sum())
}
