//! The tree of names: resolving inodes and names to nodes, listing
//! directories, and creating and removing images in the root.

use std::ffi::OsStr;

use log::warn;

use super::inodes::{DIFF_ROOT, Node, SNAP_ROOT};
use super::parts::PartNode;
use super::{
    Attr, DIFF_DIR, DIFF_FULL, DIFF_SINCE, Errno, FileKind, Opened, PART_DIR, RbdFs, SNAP_DIR,
    file_name, is_file_name, is_reserved_root_name,
};
use crate::pool::DIRECTORY;
use crate::store::NOSNAP;

impl RbdFs {
    pub(super) fn node(&self, ino: u64) -> Result<Node, Errno> {
        self.inodes
            .lock()
            .by_ino
            .get(&ino)
            .cloned()
            .ok_or(Errno::ENOENT)
    }

    pub(super) fn lookup_node(&self, parent: &Node, name: &str) -> Result<Node, Errno> {
        match parent {
            Node::Root if name == SNAP_DIR => Ok(Node::SnapRoot),
            Node::Root if name == DIFF_DIR => Ok(Node::DiffRoot),
            Node::Root if name == PART_DIR => Ok(Node::Part(PartNode::Root)),
            Node::Part(p) => self.part_lookup(p, name),
            Node::Root => Ok(Node::Image(name.to_string())),
            Node::SnapRoot => Ok(Node::SnapDir(name.to_string())),
            Node::SnapDir(image) => Ok(Node::Snap(image.clone(), name.to_string())),
            Node::DiffRoot => Ok(Node::DiffImage(name.to_string())),
            Node::DiffImage(image) => Ok(Node::DiffSnap(image.clone(), name.to_string())),
            Node::DiffSnap(image, snap) => {
                let from = if name == DIFF_FULL {
                    None
                } else {
                    Some(name.strip_prefix(DIFF_SINCE).ok_or(Errno::ENOENT)?)
                };
                Ok(Node::DiffFile {
                    image: image.clone(),
                    snap: snap.clone(),
                    from: from.map(str::to_string),
                })
            }
            _ => Err(Errno::ENOTDIR),
        }
    }

    pub(super) fn entry(&self, node: Node) -> Result<Attr, Errno> {
        let ino = self.inodes.lock().ino(node.clone());
        self.node_attr(ino, &node)
    }

    /// `touch`/`open(O_CREAT)` in the root: a new, empty image made as
    /// `rbd create` makes it (format and features from the mount options).
    pub(super) fn create_image(&self, name: &OsStr) -> Result<(Attr, Opened), Errno> {
        let name = file_name(name).ok_or(Errno::EINVAL)?;
        if is_reserved_root_name(name) {
            return Err(Errno::EEXIST);
        }
        let image = self
            .pool
            .create(name, &self.opts.create)
            .map_err(|e| Errno::image(&format!("create {name}"), &e))?;
        let node = Node::Image(name.to_string());
        let ino = self.inodes.lock().ino(node.clone());
        let attr = self.node_attr(ino, &node)?;
        let fh = self.add_handle_with(image, NOSNAP, true);
        Ok((
            attr,
            Opened {
                fh,
                direct_io: true,
            },
        ))
    }

    /// `rm` in the root: the image goes as `rbd rm` takes it. Refused while
    /// one of its files is open here, or it has snapshots (ENOTEMPTY), or
    /// another client uses it (EBUSY).
    pub(super) fn remove_image(&self, name: &OsStr) -> Result<(), Errno> {
        let name = file_name(name).ok_or(Errno::ENOENT)?;
        if is_reserved_root_name(name) {
            return Err(Errno::EPERM);
        }
        if self.is_still_open(name, false) {
            return Err(Errno::EBUSY);
        }
        self.pool
            .remove(name)
            .map_err(|e| Errno::image(&format!("remove {name}"), &e))
    }

    /// Entries of a directory: (inode, type, name), without `.`/`..`.
    pub(super) fn list(&self, node: &Node) -> Result<Vec<(u64, FileKind, String)>, Errno> {
        let mut out = Vec::new();
        let add = |node: Node, kind: FileKind, name: String, out: &mut Vec<_>| {
            let ino = self.inodes.lock().ino(node);
            out.push((ino, kind, name));
        };
        match node {
            Node::Root | Node::SnapRoot | Node::DiffRoot => {
                if *node == Node::Root {
                    out.push((SNAP_ROOT, FileKind::Directory, SNAP_DIR.to_string()));
                    out.push((DIFF_ROOT, FileKind::Directory, DIFF_DIR.to_string()));
                    let part = self.inodes.lock().ino(Node::Part(PartNode::Root));
                    out.push((part, FileKind::Directory, PART_DIR.to_string()));
                }
                let names = self.pool.list().map_err(|e| {
                    Errno::EIO
                        .with_detail(format!("listing images: {e}"))
                        .unexpected()
                })?;
                for name in names {
                    if !is_file_name(&name) {
                        warn!("{DIRECTORY}: image name {name:?} cannot be a file name; skipped");
                        continue;
                    }
                    if is_reserved_root_name(&name) {
                        warn!("image {name:?} is hidden: the name is reserved for the tree");
                        continue;
                    }
                    if *node == Node::Root {
                        add(Node::Image(name.clone()), FileKind::File, name, &mut out);
                    } else if *node == Node::DiffRoot {
                        add(
                            Node::DiffImage(name.clone()),
                            FileKind::Directory,
                            name,
                            &mut out,
                        );
                    } else {
                        add(
                            Node::SnapDir(name.clone()),
                            FileKind::Directory,
                            name,
                            &mut out,
                        );
                    }
                }
            }
            Node::SnapDir(image) => {
                let info = self
                    .image(image)?
                    .current_info()
                    .map_err(|e| Errno::image(image, &e))?;
                for s in &info.snapshots {
                    if is_file_name(&s.name) {
                        add(
                            Node::Snap(image.clone(), s.name.clone()),
                            FileKind::File,
                            s.name.clone(),
                            &mut out,
                        );
                    }
                }
            }
            Node::DiffImage(image) => {
                let info = self
                    .image(image)?
                    .current_info()
                    .map_err(|e| Errno::image(image, &e))?;
                for s in &info.snapshots {
                    if is_file_name(&s.name) {
                        add(
                            Node::DiffSnap(image.clone(), s.name.clone()),
                            FileKind::Directory,
                            s.name.clone(),
                            &mut out,
                        );
                    }
                }
            }
            Node::DiffSnap(image, snap) => {
                let info = self
                    .image(image)?
                    .current_info()
                    .map_err(|e| Errno::image(image, &e))?;
                let to = info.snapshot(snap).ok_or(Errno::ENOENT)?;
                let file = |from: Option<&str>| Node::DiffFile {
                    image: image.clone(),
                    snap: snap.clone(),
                    from: from.map(str::to_string),
                };
                add(file(None), FileKind::File, DIFF_FULL.to_string(), &mut out);
                // Oldest first, as `rbd snap ls` lists them.
                let mut older: Vec<_> = info.snapshots.iter().filter(|s| s.id < to.id).collect();
                older.sort_by_key(|s| s.id);
                for s in older {
                    let name = format!("{DIFF_SINCE}{}", s.name);
                    if is_file_name(&name) {
                        add(file(Some(&s.name)), FileKind::File, name, &mut out);
                    } else {
                        warn!("{image}@{snap}: {name:?} cannot be a file name; skipped");
                    }
                }
            }
            Node::Part(p) => return self.part_list(p),
            _ => return Err(Errno::ENOTDIR),
        }
        Ok(out)
    }
}
