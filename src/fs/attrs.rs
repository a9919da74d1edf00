//! File attributes (`stat`) of the tree's nodes.

use super::inodes::Node;
use super::{Attr, Errno, FileKind, RbdFs};
use std::sync::Arc;

use crate::image::{DiffPlan, Image};
use crate::store::{NOSNAP, SnapId};

impl RbdFs {
    pub(super) fn attr(&self, ino: u64, kind: FileKind, perm: u16, size: u64) -> Attr {
        Attr {
            ino,
            size,
            blocks: size.div_ceil(512),
            time: self.mounted_at,
            kind,
            perm,
            nlink: if kind == FileKind::Directory { 2 } else { 1 },
            uid: self.opts.uid,
            gid: self.opts.gid,
            blksize: 4096,
        }
    }

    pub(super) fn dir_attr(&self, ino: u64) -> Attr {
        self.attr(ino, FileKind::Directory, 0o755, 0)
    }

    /// Attributes of a node, reading image headers as needed.
    pub(super) fn node_attr(&self, ino: u64, node: &Node) -> Result<Attr, Errno> {
        match node {
            Node::Root | Node::SnapRoot => Ok(self.dir_attr(ino)),
            Node::DiffRoot => Ok(self.attr(ino, FileKind::Directory, 0o555, 0)),
            Node::Part(p) => self.part_attr(ino, p),
            Node::DiffImage(name) => {
                self.image(name)?;
                Ok(self.attr(ino, FileKind::Directory, 0o555, 0))
            }
            Node::DiffSnap(name, snap) => {
                let image = self.image(name)?;
                let info = image.current_info().map_err(|e| Errno::image(name, &e))?;
                info.snapshot(snap).ok_or(Errno::ENOENT)?;
                Ok(self.attr(ino, FileKind::Directory, 0o555, 0))
            }
            Node::DiffFile { .. } => {
                let (image, plan) = self.diff_plan(node)?;
                let mut attr = self.attr(ino, FileKind::File, 0o444, plan.size());
                // cp and friends size their buffers by st_blksize.
                attr.blksize = image.info().layout.object_size.clamp(1 << 20, 1 << 22) as u32;
                Ok(attr)
            }
            Node::SnapDir(name) => {
                self.image(name)?;
                Ok(self.dir_attr(ino))
            }
            Node::Image(name) => {
                let image = self.image(name)?;
                let info = image.info();
                let writable = !self.opts.read_only && info.read_only.is_none();
                let perm = if writable { 0o644 } else { 0o444 };
                let mut attr = self.attr(ino, FileKind::File, perm, info.size);
                attr.blocks = self.blocks(&image, NOSNAP, info.size);
                // cp, dd and friends size their buffers by st_blksize.
                attr.blksize = info.layout.object_size.min(1 << 22) as u32;
                Ok(attr)
            }
            Node::Snap(name, snap) => {
                let image = self.image(name)?;
                let info = image.info();
                let s = info.snapshot(snap).ok_or(Errno::ENOENT)?;
                // The sticky bit says the snapshot is protected (`rbd snap
                // protect`); unknown (an error) shows as not protected.
                let protected = image.snap_is_protected(snap).unwrap_or(false);
                let perm = if protected { 0o1444 } else { 0o444 };
                let mut attr = self.attr(ino, FileKind::File, perm, s.size);
                attr.blocks = self.blocks(&image, s.id, s.size);
                attr.blksize = info.layout.object_size.min(1 << 22) as u32;
                Ok(attr)
            }
        }
    }

    /// The image and diff stream of a `.diff` file node (laid out once per
    /// pair of snapshots, from metadata).
    pub(super) fn diff_plan(&self, node: &Node) -> Result<(Arc<Image>, Arc<DiffPlan>), Errno> {
        let Node::DiffFile { image, snap, from } = node else {
            return Err(Errno::EINVAL);
        };
        let img = self.image(image)?;
        let plan = img.diff(from.as_deref(), snap).map_err(|e| {
            let what = match from {
                Some(f) => format!("diff {image}@{f}..{snap}"),
                None => format!("diff {image}@{snap}"),
            };
            match Errno::image(&what, &e) {
                // Not an older snapshot of the same image: no such file.
                e if e == Errno::EINVAL => e.with_code(libc::ENOENT),
                e => e,
            }
        })?;
        Ok((img, plan))
    }

    /// `st_blocks`: what the objects hold, so `cp --sparse` and `du` see
    /// the holes; the full size if it cannot be told.
    pub(super) fn blocks(&self, image: &Image, snap: SnapId, size: u64) -> u64 {
        image.allocated(snap).unwrap_or(size).div_ceil(512)
    }
}
