//! Every file-system operation as a method of [`RbdFs`], with plain
//! arguments and results and no fuser types: the FUSE adapter (`fuse.rs`)
//! calls these and replies; tests call them directly.

use std::ffi::OsStr;
use std::time::SystemTime;

use log::debug;

use super::inodes::{DIFF_ROOT, Node, ROOT, SNAP_ROOT};
use super::{Errno, NAME_MAX, RbdFs, file_name, is_reserved_root_name};
use crate::image::{ReadData, Seek};
use crate::store::NOSNAP;

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Directory,
}

/// A node's attributes (`stat`). Every time stamp is the mount's time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    /// 512-byte blocks the data takes.
    pub blocks: u64,
    pub time: SystemTime,
    pub kind: FileKind,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub blksize: u32,
}

/// An open file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub fh: u64,
    /// The head of an image: no page cache (FOPEN_DIRECT_IO), and writes to
    /// different ranges need not queue behind each other
    /// (FOPEN_PARALLEL_DIRECT_WRITES). Snapshots never change: cached.
    pub direct_io: bool,
}

/// One directory entry; `offset` is where the listing goes on after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub offset: u64,
    pub kind: FileKind,
    pub name: String,
}

/// What statfs reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// getxattr/listxattr answer: size 0 asks for the length only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Xattr {
    Size(u32),
    Data(Vec<u8>),
}

impl Xattr {
    /// The getxattr/listxattr protocol: the length for size 0, else the
    /// value if it fits in `size` bytes, else ERANGE.
    fn answer(size: u32, value: &[u8]) -> Result<Xattr, Errno> {
        if size == 0 {
            Ok(Xattr::Size(value.len() as u32))
        } else if value.len() <= size as usize {
            Ok(Xattr::Data(value.to_vec()))
        } else {
            Err(Errno::ERANGE)
        }
    }
}

impl RbdFs {
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr, Errno> {
        let parent = self.node(parent)?;
        let name = file_name(name).ok_or(Errno::ENOENT)?;
        let node = self.lookup_node(&parent, name)?;
        self.entry(node)
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr, Errno> {
        self.node(ino).and_then(|n| self.node_attr(ino, &n))
    }

    /// chmod/chown are refused (EPERM); truncate/ftruncate resize the image
    /// as `rbd resize` does. Time updates (touch, cp -p) are accepted and
    /// not stored: RBD keeps no per-image times we could set.
    pub fn setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
    ) -> Result<Attr, Errno> {
        let node = self.node(ino)?;
        let attr = self.node_attr(ino, &node)?;
        let changes_content = mode.is_some()
            || uid.is_some()
            || gid.is_some()
            || size.is_some_and(|s| s != attr.size);
        if !changes_content {
            return Ok(attr);
        }
        match node {
            Node::Snap(..) | Node::DiffFile { .. } => Err(Errno::EROFS),
            // A partition's size is the table's.
            Node::Part(_) => Err(Errno::EPERM),
            _ if self.opts.read_only => Err(Errno::EROFS),
            Node::Image(name) if mode.is_none() && uid.is_none() && gid.is_none() => {
                let image = self.image(&name)?;
                let new_size = size.unwrap_or(attr.size);
                image
                    .resize(new_size)
                    .map_err(|e| Errno::image(&format!("resize {name}"), &e))?;
                self.node_attr(ino, &Node::Image(name))
            }
            _ => Err(Errno::EPERM),
        }
    }

    /// The head of an image is opened with direct I/O: the kernel's page
    /// cache would serve stale data after another client (librbd, krbd)
    /// writes the image, and would split unaligned writes at page
    /// boundaries, so a write running past the end could half-succeed.
    /// `flags` are open(2)'s.
    pub fn open(&self, ino: u64, flags: i32) -> Result<Opened, Errno> {
        let wants_write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        match self.node(ino)? {
            Node::Image(name) => {
                if flags & libc::O_TRUNC != 0 {
                    // An image is a disk, not a log: `dd of=IMG` must
                    // write into it, not shrink it to nothing first.
                    // Resizing is `truncate -s`.
                    debug!("open {name}: O_TRUNC ignored");
                }
                let image = self.image(&name)?;
                // Opening is where a user expects to see other clients'
                // changes, so re-read the header.
                let info = image.refresh().map_err(|e| Errno::image(&name, &e))?;
                if wants_write && (self.opts.read_only || info.read_only.is_some()) {
                    return Err(Errno::EROFS);
                }
                Ok(Opened {
                    fh: self.add_handle(image, NOSNAP),
                    direct_io: true,
                })
            }
            Node::Snap(name, snap) => {
                // O_TRUNC asks to change it, even on a read-only open.
                if wants_write || flags & libc::O_TRUNC != 0 {
                    return Err(Errno::EROFS);
                }
                let image = self.image(&name)?;
                let info = image.refresh().map_err(|e| Errno::image(&name, &e))?;
                let id = info.snapshot(&snap).ok_or(Errno::ENOENT)?.id;
                // A snapshot never changes: the page cache may keep it.
                Ok(Opened {
                    fh: self.add_handle(image, id),
                    direct_io: false,
                })
            }
            node @ Node::DiffFile { .. } => {
                if wants_write || flags & libc::O_TRUNC != 0 {
                    return Err(Errno::EROFS);
                }
                let (image, plan) = self.diff_plan(&node)?;
                // Its snapshots never change: the page cache may keep it.
                Ok(Opened {
                    fh: self.add_diff_handle(image, plan),
                    direct_io: false,
                })
            }
            Node::Part(p) => self.part_open(&p, flags),
            _ => Err(Errno::EISDIR),
        }
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        self.read_data(fh, offset, size).map(ReadData::into_vec)
    }

    /// [`read`](Self::read), with the bytes possibly in the cache's own
    /// buffer (the reply is sent from it, no copy).
    pub fn read_data(&self, fh: u64, offset: u64, size: u32) -> Result<ReadData, Errno> {
        if let Some((image, plan)) = self.diff_handle(fh)? {
            // A snapshot or the image removed while open: EIO, never
            // other bytes.
            return image.read_diff(&plan, offset, size as u64).map_err(|e| {
                Errno::image(&format!("read diff of {}", image.name()), &e)
                    .with_code(libc::EIO)
                    .unexpected()
            });
        }
        if let Some(r) = self.part_read(fh, offset, size) {
            return r.map(ReadData::Owned);
        }
        self.handle(fh).and_then(|(image, snap)| {
            image
                .read_data(snap, offset, size as u64)
                .map_err(|e| Errno::image(&format!("read {}", image.name()), &e))
        })
    }

    /// Writes all of `data` or nothing; returns the bytes written.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        if let Some(r) = self.part_write(fh, offset, data) {
            return r;
        }
        self.handle(fh).and_then(|(image, snap)| {
            if snap != NOSNAP || self.opts.read_only {
                return Err(Errno::EROFS);
            }
            let result = if self.may_grow(fh) {
                image.write_or_grow(offset, data)
            } else {
                image.write(offset, data)
            };
            result.map_err(|e| Errno::image(&format!("write {}", image.name()), &e))?;
            self.part_note_write(image.name(), offset, data.len() as u64);
            Ok(data.len() as u32)
        })
    }

    /// close(): acknowledged writes must be on RADOS before it returns,
    /// and a failed write-back is reported here.
    pub fn flush(&self, fh: u64) -> Result<(), Errno> {
        let result = self.flush_handle(fh);
        // A dup'd descriptor's close flushes too and leaves the file open:
        // being marked only makes `is_still_open` wait up to a second.
        self.mark_closing(fh);
        result
    }

    pub fn fsync(&self, fh: u64, _datasync: bool) -> Result<(), Errno> {
        self.flush_handle(fh)
    }

    pub fn release(&self, fh: u64) {
        self.handles.lock().remove(&fh);
    }

    /// Directories need no handle: returns 0.
    pub fn opendir(&self, ino: u64) -> Result<u64, Errno> {
        match self.node(ino)? {
            Node::Root
            | Node::SnapRoot
            | Node::SnapDir(_)
            | Node::DiffRoot
            | Node::DiffImage(_)
            | Node::DiffSnap(..) => Ok(0),
            Node::Part(p) if self.part_is_dir(&p) => Ok(0),
            _ => Err(Errno::ENOTDIR),
        }
    }

    /// The entries of directory `ino` from `offset` on (0: from the start,
    /// with `.` and `..`); each says the offset of the one after it.
    pub fn readdir(&self, ino: u64, offset: u64) -> Result<Vec<DirEntry>, Errno> {
        let entries = self.node(ino).and_then(|node| self.list(&node))?;
        let parent = match self.node(ino) {
            Ok(Node::SnapDir(_)) => SNAP_ROOT,
            Ok(Node::DiffImage(_)) => DIFF_ROOT,
            Ok(Node::DiffSnap(image, _)) => self.inodes.lock().ino(Node::DiffImage(image)),
            Ok(Node::Part(p)) => self.part_parent(&p),
            _ => ROOT,
        };
        let dots = [
            (ino, FileKind::Directory, ".".to_string()),
            (parent, FileKind::Directory, "..".to_string()),
        ];
        Ok(dots
            .into_iter()
            .chain(entries)
            .enumerate()
            .skip(offset as usize)
            .map(|(i, (ino, kind, name))| DirEntry {
                ino,
                offset: (i + 1) as u64,
                kind,
                name,
            })
            .collect())
    }

    /// A file created in the root is a new image; in `.snap/IMAGE`, a
    /// snapshot of IMAGE (opened for reading).
    pub fn create(&self, parent: u64, name: &OsStr) -> Result<(Attr, Opened), Errno> {
        if self.opts.read_only {
            return Err(Errno::EROFS);
        }
        let image_name = match self.node(parent)? {
            Node::SnapDir(image_name) => image_name,
            Node::Root => return self.create_image(name),
            Node::DiffRoot | Node::DiffImage(_) | Node::DiffSnap(..) => return Err(Errno::EROFS),
            _ => return Err(Errno::EPERM),
        };
        let snap = name.to_str().ok_or(Errno::EINVAL)?;
        let image = self.image(&image_name)?;
        let info = image
            .snap_create(snap)
            .map_err(|e| Errno::image(&format!("snapshot {image_name}@{snap}"), &e))?;
        let node = Node::Snap(image_name, snap.to_string());
        let ino = self.inodes.lock().ino(node);
        let attr = self.attr(ino, FileKind::File, 0o444, info.size);
        let fh = self.add_handle(image, info.id);
        Ok((
            attr,
            Opened {
                fh,
                direct_io: false,
            },
        ))
    }

    /// There are no directories to make; in `.snap/IMAGE` the log says how
    /// snapshots are made.
    pub fn mkdir(&self, parent: u64, name: &OsStr) -> Result<Attr, Errno> {
        match self.node(parent) {
            Ok(Node::DiffRoot | Node::DiffImage(_) | Node::DiffSnap(..)) => Err(Errno::EROFS),
            Ok(Node::SnapDir(image)) => Err(Errno::EPERM
                .with_detail(format!(
                    "mkdir {image}/{name:?}: snapshots are files; create one with `touch`"
                ))
                .unexpected()),
            _ => Err(Errno::EPERM),
        }
    }

    /// `rm` of an image in the root, of a snapshot in `.snap/IMAGE`.
    pub fn unlink(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        if self.opts.read_only {
            return Err(Errno::EROFS);
        }
        let image_name = match self.node(parent)? {
            Node::SnapDir(image_name) => image_name,
            Node::Root => return self.remove_image(name),
            Node::DiffRoot | Node::DiffImage(_) | Node::DiffSnap(..) => return Err(Errno::EROFS),
            _ => return Err(Errno::EPERM),
        };
        let snap = file_name(name).ok_or(Errno::ENOENT)?;
        let image = self.image(&image_name)?;
        image
            .snap_remove(snap)
            .map_err(|e| Errno::image(&format!("remove snapshot {image_name}@{snap}"), &e))
    }

    /// `mv A B` in the root renames the image as `rbd rename` does. Onto an
    /// existing name (no replacing images), across directories, or while a
    /// file of it is open: refused. In `.snap/IMAGE`, renames the snapshot
    /// as `rbd snap rename` does (EXDEV to another image's directory).
    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
    ) -> Result<(), Errno> {
        if self.opts.read_only {
            return Err(Errno::EROFS);
        }
        if let (Node::SnapDir(image), to) = (self.node(parent)?, self.node(newparent)?) {
            return self.rename_snapshot(&image, name, &to, newname);
        }
        if self.node(parent)? != Node::Root || self.node(newparent)? != Node::Root {
            return Err(Errno::EXDEV);
        }
        let old = file_name(name).ok_or(Errno::ENOENT)?;
        let new = file_name(newname).ok_or(Errno::EINVAL)?;
        if is_reserved_root_name(old) || is_reserved_root_name(new) {
            return Err(Errno::EPERM);
        }
        if self.is_still_open(old, false) {
            return Err(Errno::EBUSY);
        }
        self.pool
            .rename(old, new)
            .map_err(|e| Errno::image(&format!("rename {old} to {new}"), &e))?;
        self.inodes.lock().rename_image(old, new);
        Ok(())
    }

    pub fn statfs(&self, _ino: u64) -> StatFs {
        const BSIZE: u64 = 4096;
        let u = self.usage();
        let blocks = u.total_bytes / BSIZE;
        let free = u.avail_bytes / BSIZE;
        StatFs {
            blocks,
            bfree: free,
            bavail: free,
            files: u.pool_objects,
            ffree: u64::MAX / 2,
            bsize: BSIZE as u32,
            namelen: NAME_MAX as u32,
            frsize: BSIZE as u32,
        }
    }

    /// SEEK_DATA and SEEK_HOLE (SEEK_SET/CUR/END are the kernel's
    /// business: EINVAL).
    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> Result<u64, Errno> {
        let what = match whence {
            libc::SEEK_DATA => Seek::Data,
            libc::SEEK_HOLE => Seek::Hole,
            _ => return Err(Errno::EINVAL),
        };
        if let Ok(offset) = u64::try_from(offset)
            && let Some(r) = self.part_lseek(fh, offset, what)
        {
            return r;
        }
        if let Some((_, plan)) = self.diff_handle(fh)? {
            // A stream has no holes.
            let offset = u64::try_from(offset).map_err(|_| Errno::ENXIO)?;
            if offset >= plan.size() {
                return Err(Errno::ENXIO);
            }
            return Ok(match what {
                Seek::Data => offset,
                Seek::Hole => plan.size(),
            });
        }
        self.handle(fh).and_then(|(image, snap)| {
            let offset = u64::try_from(offset).map_err(|_| Errno::ENXIO)?;
            image
                .seek(snap, offset, what)
                .map_err(|e| Errno::image(&format!("lseek {}", image.name()), &e))?
                .ok_or(Errno::ENXIO)
        })
    }

    /// As on a local Linux filesystem: mode 0 allocates (a no-op inside
    /// the image) and, past the end, grows it; ZERO_RANGE zeroes and,
    /// without KEEP_SIZE, grows too; PUNCH_HOLE needs KEEP_SIZE. Zeroing
    /// and punching discard as librbd does (what `fstrim` through a loop
    /// device and `fallocate -p`/`-z` send). The grown range is a hole.
    pub fn fallocate(&self, fh: u64, offset: u64, length: u64, mode: i32) -> Result<(), Errno> {
        if let Some(r) = self.part_fallocate(fh, offset, length, mode) {
            return r;
        }
        self.handle(fh).and_then(|(image, snap)| {
            if snap != NOSNAP || self.opts.read_only {
                return Err(Errno::EROFS);
            }
            let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
            let punch = mode & libc::FALLOC_FL_PUNCH_HOLE != 0;
            let zero = mode & libc::FALLOC_FL_ZERO_RANGE != 0;
            let known =
                libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
            // COLLAPSE_RANGE, INSERT_RANGE, UNSHARE: not for a disk image.
            if mode & !known != 0 || (punch && (zero || !keep_size)) {
                return Err(Errno::EOPNOTSUPP);
            }
            let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
            let info = image
                .current_info()
                .map_err(|e| Errno::image(&format!("fallocate {}", image.name()), &e))?;
            let grows = !keep_size && end > info.size;
            if grows && !self.may_grow(fh) {
                // fixed_size: nothing is changed.
                return Err(Errno::ENOSPC);
            }
            if punch || zero {
                image
                    .discard(offset, length)
                    .map_err(|e| Errno::image(&format!("discard {}", image.name()), &e))?;
                self.part_note_write(image.name(), offset, length);
            }
            if grows {
                image
                    .grow_to(end)
                    .map_err(|e| Errno::image(&format!("grow {}", image.name()), &e))?;
            }
            Ok(())
        })
    }

    pub fn getxattr(&self, ino: u64, name: &OsStr, size: u32) -> Result<Xattr, Errno> {
        let value = self.node(ino).and_then(|node| {
            let name = name.to_str().ok_or(Errno::ENODATA)?;
            self.xattrs(&node)?
                .into_iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v)
                .ok_or(Errno::ENODATA)
        })?;
        Xattr::answer(size, value.as_bytes())
    }

    /// The `user.rbd.*` operations (see `xattrs.rs`): protect/unprotect a
    /// snapshot, roll an image back, flatten a clone.
    pub fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8]) -> Result<(), Errno> {
        let node = self.node(ino)?;
        let name = name.to_str().ok_or(Errno::EOPNOTSUPP)?;
        self.set_xattr(&node, name, value)?;
        if let Node::Image(image) = &node {
            // Rolled back: the head's partition table may have changed.
            self.part_forget(image);
        }
        Ok(())
    }

    /// `ln SNAPSHOT NAME`: `ino` is `.snap/PARENT/SNAP`, `newparent` the
    /// root; makes image NAME a clone of PARENT@SNAP as `rbd clone` does.
    /// Anything else: EPERM.
    pub fn link(&self, ino: u64, newparent: u64, newname: &OsStr) -> Result<Attr, Errno> {
        self.link_into(ino, self, newparent, newname)
    }

    /// [`link`](Self::link) with the new name in `target`'s root: the
    /// same file system, or another pool's or namespace's of the mount (a
    /// clone whose parent lives elsewhere). The attributes are `target`'s.
    pub fn link_into(
        &self,
        ino: u64,
        target: &RbdFs,
        newparent: u64,
        newname: &OsStr,
    ) -> Result<Attr, Errno> {
        if self.opts.read_only || target.opts.read_only {
            return Err(Errno::EROFS);
        }
        let (parent, snap) = match self.node(ino)? {
            Node::Snap(parent, snap) => (parent, snap),
            _ => return Err(Errno::EPERM),
        };
        if target.node(newparent)? != Node::Root {
            return Err(Errno::EPERM);
        }
        let child = file_name(newname).ok_or(Errno::EINVAL)?;
        if is_reserved_root_name(child) {
            return Err(Errno::EEXIST);
        }
        self.clone_image(&parent, &snap, target, child)?;
        target.entry(Node::Image(child.to_string()))
    }

    pub fn listxattr(&self, ino: u64, size: u32) -> Result<Xattr, Errno> {
        let attrs = self.node(ino).and_then(|node| self.xattrs(&node))?;
        let mut names = Vec::new();
        for (k, _) in attrs {
            names.extend_from_slice(k.as_bytes());
            names.push(0);
        }
        Xattr::answer(size, &names)
    }

    /// Unmount: the pool's owner writes back what is dirty.
    pub fn destroy(&self) {
        let open = self.handles.lock().len();
        if open > 0 {
            debug!("unmounting with {open} open files");
        }
    }
}
