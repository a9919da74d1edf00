//! Incremental backups: the `rbd export-diff` stream of a snapshot, from
//! the beginning or since an older snapshot, decided from metadata alone
//! (object maps, else object existence) so its exact size is known before
//! any data is read, and served at any byte offset.
//!
//! Which objects changed: librbd's object-map diff rules
//! ([`object_map_diff`]) over the maps of every snapshot from the older one
//! to the newer one (fast-diff). Without a usable fast-diff (no feature, a
//! map flagged FAST_DIFF_INVALID) every object that exists at the newer
//! snapshot is data; without a usable object map at all (format 1, no
//! feature, a map missing or flagged OBJECT_MAP_INVALID) the objects are
//! asked whether they exist at each snapshot. A changed object becomes `w`
//! records of its image extents (through the layout) with its bytes at the
//! newer snapshot, a removed one `z` records. A clone's objects inside the
//! parent overlap are data from the beginning (as `rbd export-diff`
//! includes the parent).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use log::debug;

use super::features::{has_fast_diff, has_object_map};
use super::info::ImageInfo;
use super::store_image::StoreImage;
use super::{Image, ReadData};
use crate::error::{ImageError, ImageResult};
use crate::format::SnapshotInfo;
use crate::format::diff::{
    Extent, ObjectChange, Piece, StreamLayout, existence_diff, object_map_diff,
};
use crate::format::v2::{
    FLAG_FAST_DIFF_INVALID, FLAG_OBJECT_MAP_INVALID, ObjectMap, RBD_CLASS, decode_get_flags,
    object_map_object,
};
use crate::store::SnapId;

/// Objects stat'ed at once when there is no object map.
const STAT_BATCH: usize = 64;

/// Largest `w` record we merge adjacent extents into (never less than an
/// object): `rbd import-diff` holds one record in memory.
const MAX_WRITE_RECORD: u64 = 4 << 20;

/// Plans an image keeps (they are small: one record per changed object).
const MAX_PLANS: usize = 256;

/// How the changed objects were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffMethod {
    /// Object maps with fast-diff: only objects written between the two
    /// snapshots.
    FastDiff,
    /// Object maps without (usable) fast-diff: every object that exists
    /// at the newer snapshot.
    ObjectMap,
    /// No usable object map: every object that exists at the newer
    /// snapshot, found by asking each object.
    ObjectExistence,
}

impl DiffMethod {
    pub fn name(self) -> &'static str {
        match self {
            DiffMethod::FastDiff => "fast-diff",
            DiffMethod::ObjectMap => "object-map",
            DiffMethod::ObjectExistence => "object-existence",
        }
    }
}

/// One diff stream, laid out: what `rbd export-diff [--from-snap FROM]
/// IMAGE@TO` writes, object-granular.
#[derive(Debug)]
pub struct DiffPlan {
    pub from: Option<SnapshotInfo>,
    pub to: SnapshotInfo,
    pub method: DiffMethod,
    pub stream: StreamLayout,
    /// Stream offset up to which read-ahead was asked for.
    prefetched: AtomicU64,
    /// The cache's stream id of its readers (they share the read-ahead
    /// window with the mount's other sequential readers).
    stream_id: u64,
}

impl DiffPlan {
    /// The stream's exact size.
    pub fn size(&self) -> u64 {
        self.stream.size()
    }
}

/// The key of a plan: (from snap id, to snap id).
pub(super) type PlanKey = (Option<SnapId>, SnapId);

fn no_snapshot(image: &str, snap: &str) -> ImageError {
    ImageError::NoSnapshot {
        image: image.to_string(),
        snap: snap.to_string(),
    }
}

impl Image {
    /// The diff stream of snapshot `to`, from the beginning (`from` None)
    /// or since the older snapshot `from`. Computed once per pair of
    /// snapshots (they never change) from metadata only.
    pub fn diff(&self, from: Option<&str>, to: &str) -> ImageResult<Arc<DiffPlan>> {
        let info = self.current_info()?;
        let name = self.name();
        let to = info
            .snapshot(to)
            .ok_or_else(|| no_snapshot(name, to))?
            .clone();
        let from = match from {
            Some(f) => {
                let s = info.snapshot(f).ok_or_else(|| no_snapshot(name, f))?;
                if s.id >= to.id {
                    return Err(ImageError::InvalidArgument {
                        image: name.to_string(),
                        reason: format!("snapshot {f} is not older than {}", to.name),
                    });
                }
                Some(s.clone())
            }
            None => None,
        };
        let key = (from.as_ref().map(|s| s.id), to.id);
        if let Some(plan) = self.diff_plans.lock().get(&key) {
            return Ok(plan.clone());
        }
        let (method, changes) =
            self.store_image
                .diff_changes(&info, from.as_ref().map(|s| s.id), to.id)?;
        let layout = info.layout;
        let mut extents = Vec::new();
        for (n, change) in changes.iter().enumerate() {
            let data = match change {
                ObjectChange::Unchanged => continue,
                ObjectChange::Data => true,
                ObjectChange::Zero => false,
            };
            for (offset, len, _) in layout.unmap(n as u64, 0, layout.object_size) {
                if offset < to.size {
                    extents.push(Extent {
                        offset,
                        len: len.min(to.size - offset),
                        data,
                    });
                }
            }
        }
        let stream = StreamLayout::new(
            from.as_ref().map(|s| s.name.as_str()),
            &to.name,
            to.size,
            extents,
            MAX_WRITE_RECORD.max(layout.object_size),
        );
        debug!(
            "image {name}: diff {:?}..{}: {} ({} records, {} bytes)",
            from.as_ref().map(|s| &s.name),
            to.name,
            method.name(),
            stream.records().len(),
            stream.size()
        );
        let plan = Arc::new(DiffPlan {
            from,
            to,
            method,
            stream,
            prefetched: AtomicU64::new(0),
            stream_id: self.cache.new_stream(),
        });
        let mut plans = self.diff_plans.lock();
        if plans.len() >= MAX_PLANS {
            plans.clear();
        }
        plans.insert(key, plan.clone());
        Ok(plan)
    }

    /// Both snapshots of the plan still exist (same ids); NoSnapshot if
    /// one was removed (its data may be gone: never serve it).
    fn check_diff_snapshots(&self, plan: &DiffPlan) -> ImageResult<()> {
        let info = self.current_info()?;
        for s in plan.from.iter().chain([&plan.to]) {
            if info.snapshot(&s.name).is_none_or(|now| now.id != s.id) {
                return Err(no_snapshot(self.name(), &s.name));
            }
        }
        Ok(())
    }

    /// Bytes `[offset, offset+len)` of the plan's stream (short at its
    /// end). Changed objects ahead of the reader are read ahead in
    /// parallel, as for a sequential reader of a snapshot. Fails (never
    /// returns other bytes) once either snapshot or the image is gone.
    pub fn read_diff(&self, plan: &DiffPlan, offset: u64, len: u64) -> ImageResult<ReadData> {
        self.check_diff_snapshots(plan)?;
        let end = offset.saturating_add(len).min(plan.size());
        self.prefetch_diff(plan, end);
        let info = self.current_info()?;
        let layout = info.layout;
        let pieces = plan.stream.pieces(offset, len);
        // Most reads lie inside one record's data in one object.
        let single = match pieces.as_slice() {
            [Piece::Image { offset, len }] => match layout.map(*offset, *len).as_slice() {
                [e] => Some((*offset, *len, *e)),
                _ => None,
            },
            _ => None,
        };
        let reply = match single {
            // Sent from the cache's buffer: no copy.
            Some((offset, len, e)) => {
                self.check_diff_extent(&info, plan, offset, len)?;
                let bytes = self
                    .cache
                    .read_shared(plan.to.id, e.object_no, e.offset, e.len)?;
                if e.reaches_object_end(layout.object_size) {
                    self.cache.done_with(plan.to.id, e.object_no);
                }
                ReadData::Cached(bytes)
            }
            None => {
                let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
                for piece in pieces {
                    match piece {
                        Piece::Bytes(b) => out.extend_from_slice(&b),
                        Piece::Image { offset, len } => {
                            self.check_diff_extent(&info, plan, offset, len)?;
                            let at = out.len();
                            out.resize(at + len as usize, 0);
                            self.read_range_into(&info, plan.to.id, offset, &mut out[at..], false)?;
                            self.done_with_diff_objects(&info, plan, offset, len);
                        }
                    }
                }
                ReadData::Owned(out)
            }
        };
        // Removed while we read: what we read may not be the snapshot's.
        self.check_diff_snapshots(plan)?;
        Ok(reply)
    }

    /// The image extent of a `w` record lies inside the to-snapshot (a
    /// plan outliving a shrink never reads past the end).
    fn check_diff_extent(
        &self,
        info: &ImageInfo,
        plan: &DiffPlan,
        offset: u64,
        len: u64,
    ) -> ImageResult<()> {
        let size = info.size_at(plan.to.id).unwrap_or(0);
        if offset.checked_add(len).is_none_or(|e| e > size) {
            return Err(no_snapshot(self.name(), &plan.to.name));
        }
        Ok(())
    }

    /// Objects read to their end are done: evict them before what was
    /// read ahead.
    fn done_with_diff_objects(&self, info: &ImageInfo, plan: &DiffPlan, offset: u64, len: u64) {
        for e in info.layout.map(offset, len) {
            if e.reaches_object_end(info.layout.object_size) {
                self.cache.done_with(plan.to.id, e.object_no);
            }
        }
    }

    /// Asks the cache to read the data of the records in the window after
    /// stream offset `end` (it skips what it holds or is reading).
    fn prefetch_diff(&self, plan: &DiffPlan, end: u64) {
        let window = self.cache.prefetch_window(plan.to.id, plan.stream_id);
        if window == 0 {
            return;
        }
        let done = plan.prefetched.load(Ordering::Relaxed);
        let to = end.saturating_add(window);
        // Keep the window scheduled ahead of the reader, topped up once a
        // quarter of it is read (objects are read whole and in parallel,
        // so this keeps as many in flight as the window holds). A mark
        // further ahead than a window is another (earlier) reader's: this
        // one starts its own from where it is.
        let behind = done > to;
        if !behind && done >= to.saturating_sub(window / 4) {
            return;
        }
        let from = if behind { end } else { done.max(end) };
        let mut reached = to;
        for (offset, len) in plan.stream.data_ranges(from, to - from) {
            if !self.cache.prefetch(plan.to.id, offset, offset + len) {
                // No room now: try from here on the next read.
                reached = from;
                break;
            }
        }
        if behind {
            plan.prefetched.store(reached, Ordering::Relaxed);
        } else {
            plan.prefetched.fetch_max(reached, Ordering::Relaxed);
        }
    }
}

impl StoreImage {
    /// Each object's change between `from` (None: the beginning) and
    /// `to`, for the objects of the image at `to`, and how it was found.
    pub(super) fn diff_changes(
        &self,
        info: &ImageInfo,
        from: Option<SnapId>,
        to: SnapId,
    ) -> ImageResult<(DiffMethod, Vec<ObjectChange>)> {
        let size = info
            .size_at(to)
            .ok_or_else(|| no_snapshot(&self.name, &to.to_string()))?;
        let count = info.layout.object_count(size);
        let (method, mut changes) = match self.map_diff(info, from, to, count)? {
            Some(found) => found,
            None => {
                let exists = self.objects_exist(info, to, count)?;
                let existed = match from {
                    Some(f) => Some(self.objects_exist(info, f, count)?),
                    None => None,
                };
                (
                    DiffMethod::ObjectExistence,
                    existence_diff(existed.as_deref(), &exists),
                )
            }
        };
        // A clone shows its parent where it has no object: inside the
        // overlap, from the beginning that is data; since a snapshot, an
        // object gone from the child shows the parent again (not zeros),
        // and where the overlap shrank the parent's bytes became zeros.
        if let Some(parent) = &info.parent {
            let overlap_to = parent.overlap_at(to);
            let overlap_from = from.map_or(0, |f| parent.overlap_at(f));
            let layout = info.layout;
            for (n, change) in changes.iter_mut().enumerate() {
                let pieces = layout.unmap(n as u64, 0, layout.object_size);
                let below = |limit: u64| pieces.iter().any(|&(off, _, _)| off < limit);
                let in_overlap = below(overlap_to);
                *change = match *change {
                    ObjectChange::Unchanged if from.is_none() && in_overlap => ObjectChange::Data,
                    ObjectChange::Unchanged if overlap_from > overlap_to && below(overlap_from) => {
                        ObjectChange::Data
                    }
                    ObjectChange::Zero if in_overlap => ObjectChange::Data,
                    c => c,
                };
            }
        }
        Ok((method, changes))
    }

    /// The diff from object maps, or None when they cannot be used.
    #[allow(clippy::type_complexity)]
    fn map_diff(
        &self,
        info: &ImageInfo,
        from: Option<SnapId>,
        to: SnapId,
        count: u64,
    ) -> ImageResult<Option<(DiffMethod, Vec<ObjectChange>)>> {
        let Some(id) = info.id.as_deref().filter(|_| has_object_map(info.features)) else {
            return Ok(None);
        };
        let fast = has_fast_diff(info.features);
        // The maps after `from` up to `to`, oldest first (every snapshot
        // with fast-diff, hidden ones too; else only `to`'s).
        let mut after: Vec<SnapId> = if fast {
            info.snapshots
                .iter()
                .chain(&info.hidden_snapshots)
                .map(|s| s.id)
                .filter(|&s| from.is_none_or(|f| s > f) && s <= to)
                .collect()
        } else {
            vec![to]
        };
        after.sort_unstable();
        after.dedup();
        let mut fast_usable = fast;
        let mut load = |snap: SnapId| -> ImageResult<Option<ObjectMap>> {
            let flags = match self.store.exec(
                &info.header_oid,
                RBD_CLASS,
                "get_flags",
                &snap.to_le_bytes(),
            ) {
                Ok(reply) => decode_get_flags(&reply).map_err(|source| ImageError::Corrupt {
                    image: self.name.clone(),
                    source,
                })?,
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(self.store_err(e)),
            };
            if flags & FLAG_OBJECT_MAP_INVALID != 0 {
                debug!("image {}: object map of snap {snap} invalid", self.name);
                return Ok(None);
            }
            if flags & FLAG_FAST_DIFF_INVALID != 0 {
                fast_usable = false;
            }
            match self.store.read_full(&object_map_object(id, snap)) {
                Ok(raw) => Ok(ObjectMap::decode(&raw).ok()),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(self.store_err(e)),
            }
        };
        let from_map = match from {
            Some(f) => match load(f)? {
                Some(m) => Some(m),
                None => return Ok(None),
            },
            None => None,
        };
        let mut maps = Vec::with_capacity(after.len());
        for s in after {
            match load(s)? {
                Some(m) => maps.push(m),
                None => return Ok(None),
            }
        }
        let method = if fast_usable {
            DiffMethod::FastDiff
        } else {
            DiffMethod::ObjectMap
        };
        Ok(Some((
            method,
            object_map_diff(from_map.as_ref(), &maps, count, fast_usable),
        )))
    }

    /// Whether each of the first `count` data objects exists at `snap`
    /// (the child's own objects only), asked of the OSDs in batches.
    fn objects_exist(&self, info: &ImageInfo, snap: SnapId, count: u64) -> ImageResult<Vec<bool>> {
        let mut out = Vec::with_capacity(count as usize);
        let numbers: Vec<u64> = (0..count).collect();
        for chunk in numbers.chunks(STAT_BATCH) {
            let found: Vec<ImageResult<bool>> = std::thread::scope(|s| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|&n| {
                        s.spawn(
                            move || match self.data_store().stat(&info.data_object(n), snap) {
                                Ok(_) => Ok(true),
                                Err(e) if e.is_not_found() => Ok(false),
                                Err(e) => Err(self.store_err(e)),
                            },
                        )
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
}
