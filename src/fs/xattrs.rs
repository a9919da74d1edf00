//! Extended attributes: `user.rbd.*` (what `rbd info` says) on image and
//! snapshot files, `user.rbdfs.cache` on the root; and the operations set
//! through them (`user.rbd.protected` on snapshots, `user.rbd.rollback`
//! and `user.rbd.flatten` on images: see `workflows.rs`).

use super::inodes::Node;
use super::workflows::{XATTR_FLATTEN, XATTR_PROTECTED, XATTR_ROLLBACK};
use super::{Errno, RbdFs};

impl RbdFs {
    /// The cache's counters, for operators (`getfattr -n user.rbdfs.cache
    /// MOUNTPOINT`) and for tests that check its bounds.
    pub(super) fn cache_report(&self) -> String {
        let s = self.pool.cache_stats();
        format!(
            "capacity={} clean={} dirty={} reserved={} writing={} peak={} hits={} joined={} \
             misses={} prefetched={} written_back={} writeback_errors={} dirty_waits={}",
            s.capacity,
            s.clean_bytes,
            s.dirty_bytes,
            s.reserved_bytes,
            s.writing_bytes,
            s.peak_bytes,
            s.hits,
            s.joined,
            s.misses,
            s.prefetched_bytes,
            s.written_back_bytes,
            s.writeback_errors,
            s.dirty_waits
        )
    }

    /// `user.rbd.*` attributes: what `rbd info` says about the image.
    pub(super) fn xattrs(&self, node: &Node) -> Result<Vec<(&'static str, String)>, Errno> {
        let (name, snap) = match node {
            Node::Image(name) => (name, None),
            Node::Snap(name, snap) => (name, Some(snap)),
            Node::Root => return Ok(vec![("user.rbdfs.cache", self.cache_report())]),
            Node::Part(p) => return self.part_xattrs(p),
            Node::DiffFile { .. } => {
                // How the stream was computed, and what it holds.
                let (_, plan) = self.diff_plan(node)?;
                let mut out = vec![
                    ("user.rbd.diff_method", plan.method.name().to_string()),
                    ("user.rbd.diff_to", plan.to.name.clone()),
                    ("user.rbd.diff_to_snap_id", plan.to.id.to_string()),
                    (
                        "user.rbd.diff_records",
                        plan.stream.records().len().to_string(),
                    ),
                    (
                        "user.rbd.diff_data_bytes",
                        plan.stream.data_bytes().to_string(),
                    ),
                ];
                if let Some(from) = &plan.from {
                    out.push(("user.rbd.diff_from", from.name.clone()));
                    out.push(("user.rbd.diff_from_snap_id", from.id.to_string()));
                }
                return Ok(out);
            }
            _ => return Ok(Vec::new()),
        };
        let info = self.image(name)?.info();
        let mut out = vec![
            ("user.rbd.format", info.format.to_string()),
            ("user.rbd.order", info.order.to_string()),
            ("user.rbd.object_size", info.layout.object_size.to_string()),
            ("user.rbd.object_prefix", info.object_prefix.clone()),
        ];
        if let Some(id) = &info.id {
            out.push(("user.rbd.id", id.clone()));
            out.push((
                "user.rbd.features",
                crate::format::v2::feature_names(info.features).join(","),
            ));
        }
        if !info.layout.is_plain() {
            out.push(("user.rbd.stripe_unit", info.layout.stripe_unit.to_string()));
            out.push((
                "user.rbd.stripe_count",
                info.layout.stripe_count.to_string(),
            ));
        }
        if let Some(pool) = info.data_pool {
            out.push(("user.rbd.data_pool_id", pool.to_string()));
        }
        if let Some(p) = &info.parent {
            out.push((
                "user.rbd.parent",
                format!(
                    "pool {} image {} snap {} overlap {}",
                    p.spec.pool_id, p.spec.image_id, p.spec.snap_id, p.overlap
                ),
            ));
        }
        if let Some(reason) = &info.read_only {
            out.push(("user.rbd.read_only", reason.clone()));
        }
        if let Some(snap) = snap {
            let s = info.snapshot(snap).ok_or(Errno::ENOENT)?;
            out.push(("user.rbd.snap_id", s.id.to_string()));
            let protected = self
                .image(name)?
                .snap_is_protected(snap)
                .map_err(|e| Errno::image(&format!("protection of {name}@{snap}"), &e))?;
            out.push((XATTR_PROTECTED, (protected as u8).to_string()));
        } else {
            // The operations, listed so that `getfattr -d` shows them:
            // set to a snapshot name, set to 1 on a clone.
            out.push((XATTR_ROLLBACK, String::new()));
            if info.parent.is_some() {
                out.push((XATTR_FLATTEN, "0".to_string()));
            }
        }
        Ok(out)
    }
}
