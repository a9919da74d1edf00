//! The disk-image workflows as file operations: snapshot rename (`mv` in
//! `.snap/IMAGE`), protection, rollback and flatten (`setfattr` of
//! `user.rbd.*`), and clones (`ln .snap/PARENT/SNAP CHILD`).

use std::ffi::OsStr;

use super::inodes::Node;
use super::{Errno, RbdFs, file_name};

/// Set on a snapshot file: "1" protects it, "0" unprotects it.
pub const XATTR_PROTECTED: &str = "user.rbd.protected";
/// Set on an image: the name of the snapshot to roll the head back to.
pub const XATTR_ROLLBACK: &str = "user.rbd.rollback";
/// Set on a clone: "1" copies the parent's data in and detaches it.
pub const XATTR_FLATTEN: &str = "user.rbd.flatten";

impl RbdFs {
    /// `mv .snap/IMAGE/A .snap/IMAGE/B`.
    pub(super) fn rename_snapshot(
        &self,
        image_name: &str,
        name: &OsStr,
        to: &Node,
        newname: &OsStr,
    ) -> Result<(), Errno> {
        match to {
            Node::SnapDir(other) if other == image_name => {}
            _ => return Err(Errno::EXDEV),
        }
        let old = file_name(name).ok_or(Errno::ENOENT)?;
        let new = file_name(newname).ok_or(Errno::EINVAL)?;
        if old == new {
            return Ok(());
        }
        let image = self.image(image_name)?;
        image.snap_rename(old, new).map_err(|e| {
            Errno::image(&format!("rename snapshot {image_name}@{old} to {new}"), &e)
        })?;
        self.inodes.lock().rename_snap(image_name, old, new);
        Ok(())
    }

    /// Rollback needs the image to itself: EBUSY while its head is open
    /// through this mount or another client watches it.
    fn check_exclusive_use(&self, image_name: &str) -> Result<(), Errno> {
        if self.is_still_open(image_name, true) {
            return Err(Errno::EBUSY.with_detail(format!("{image_name} is open")));
        }
        let image = self.image(image_name)?;
        let info = image.refresh().map_err(|e| Errno::image(image_name, &e))?;
        if info.format == 2 {
            let others =
                crate::image::admin::other_watchers(&**self.pool.store(), &info.header_oid)
                    .map_err(|e| {
                        Errno::EIO.with_detail(format!("watchers of {image_name}: {e}"))
                    })?;
            if !others.is_empty() {
                return Err(
                    Errno::EBUSY.with_detail(format!("{image_name} is used by another client"))
                );
            }
        }
        Ok(())
    }

    /// `ln .snap/PARENT/SNAP CHILD`.
    /// Clones PARENT@SNAP of this file system's pool into `target`'s (the
    /// same, or another pool or namespace of the mount), with `target`'s
    /// creation options.
    pub(super) fn clone_image(
        &self,
        parent: &str,
        snap: &str,
        target: &RbdFs,
        child: &str,
    ) -> Result<(), Errno> {
        self.pool
            .clone_image_into(&target.pool, parent, snap, child, &target.opts.create)
            .map_err(|e| Errno::image(&format!("clone {parent}@{snap} to {child}"), &e))
    }

    /// setxattr of the `user.rbd.*` operations; any other name: EOPNOTSUPP
    /// (the attributes that describe the image cannot be set).
    pub(super) fn set_xattr(&self, node: &Node, name: &str, value: &[u8]) -> Result<(), Errno> {
        let value = std::str::from_utf8(value)
            .map_err(|_| Errno::EINVAL)?
            .trim_end_matches(['\n', '\0'])
            .trim();
        match (node, name) {
            (Node::Snap(image_name, snap), XATTR_PROTECTED) => {
                if self.opts.read_only {
                    return Err(Errno::EROFS);
                }
                let protect = match value {
                    "1" => true,
                    "0" => false,
                    _ => return Err(Errno::EINVAL),
                };
                let image = self.image(image_name)?;
                let verb = if protect { "protect" } else { "unprotect" };
                image
                    .snap_set_protected(snap, protect)
                    .map_err(|e| Errno::image(&format!("{verb} {image_name}@{snap}"), &e))
            }
            (Node::Image(image_name), XATTR_ROLLBACK) => {
                if self.opts.read_only {
                    return Err(Errno::EROFS);
                }
                self.check_exclusive_use(image_name)?;
                let image = self.image(image_name)?;
                image
                    .rollback(value)
                    .map_err(|e| Errno::image(&format!("rollback {image_name} to {value}"), &e))
            }
            (Node::Image(image_name), XATTR_FLATTEN) => {
                if self.opts.read_only {
                    return Err(Errno::EROFS);
                }
                if value != "1" {
                    return Err(Errno::EINVAL);
                }
                let image = self.image(image_name)?;
                image
                    .flatten()
                    .map_err(|e| Errno::image(&format!("flatten {image_name}"), &e))
            }
            _ => Err(Errno::EOPNOTSUPP),
        }
    }
}
