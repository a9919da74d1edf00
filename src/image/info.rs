//! The image's header state as one immutable value.

use crate::format::SnapshotInfo;
use crate::format::v1::HeaderV1;
use crate::format::v2::ParentSpec;
use crate::format::{NOSNAP, SnapContext, SnapId};
use crate::layout::Layout;

/// The header state of an image, as one immutable value: a refresh swaps in
/// a new one, so a reader never sees a half-updated header.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub format: u8,
    pub object_prefix: String,
    pub order: u8,
    pub layout: Layout,
    pub size: u64,
    pub snapc: SnapContext,
    /// Newest first.
    pub snapshots: Vec<SnapshotInfo>,
    /// Snapshots that are not the user's (trash, group, mirror): readable
    /// by id (a clone's parent may be one), never listed.
    pub hidden_snapshots: Vec<SnapshotInfo>,
    /// Why writes are refused, if they are.
    pub read_only: Option<String>,
    /// Format 2: the image id (`rbd_id.NAME` holds it).
    pub id: Option<String>,
    /// Object holding the header: `NAME.rbd` or `rbd_header.ID`.
    pub header_oid: String,
    /// Format-2 feature bits (0 for format 1).
    pub features: u64,
    /// Pool of the data objects, when not the image's own (data-pool).
    pub data_pool: Option<i64>,
    /// The parent of a clone, with the overlap at the head.
    pub parent: Option<ParentInfo>,
}

/// Where a clone reads what it does not have yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentInfo {
    pub spec: ParentSpec,
    /// Bytes of the child (from offset 0) that come from the parent.
    pub overlap: u64,
    /// The overlap at each of the child's snapshots.
    pub snap_overlaps: Vec<(SnapId, u64)>,
}

impl ParentInfo {
    pub fn overlap_at(&self, snap: SnapId) -> u64 {
        if snap == NOSNAP {
            return self.overlap;
        }
        self.snap_overlaps
            .iter()
            .find(|(id, _)| *id == snap)
            .map_or(0, |(_, o)| *o)
    }
}

impl ImageInfo {
    pub(super) fn from_v1(h: HeaderV1) -> ImageInfo {
        let snaps: Vec<SnapId> = h.snapshots.iter().map(|s| s.id).collect();
        ImageInfo {
            format: 1,
            object_prefix: h.block_name,
            order: h.order,
            layout: Layout::plain(h.order),
            size: h.size,
            snapc: SnapContext {
                seq: h.snap_seq,
                snaps,
            },
            snapshots: h.snapshots,
            hidden_snapshots: Vec::new(),
            read_only: None,
            id: None,
            header_oid: String::new(),
            features: 0,
            data_pool: None,
            parent: None,
        }
    }

    pub fn data_object(&self, object_no: u64) -> String {
        match self.format {
            1 => format!("{}.{:012x}", self.object_prefix, object_no),
            _ => format!("{}.{:016x}", self.object_prefix, object_no),
        }
    }

    pub fn snapshot(&self, name: &str) -> Option<&SnapshotInfo> {
        self.snapshots.iter().find(|s| s.name == name)
    }

    /// Image size at `snap` (NOSNAP: the head).
    pub fn size_at(&self, snap: SnapId) -> Option<u64> {
        if snap == NOSNAP {
            return Some(self.size);
        }
        self.snapshots
            .iter()
            .chain(&self.hidden_snapshots)
            .find(|s| s.id == snap)
            .map(|s| s.size)
    }
}
