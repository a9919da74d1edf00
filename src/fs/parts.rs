//! Partitions as files: `.part/IMAGE/N` is partition N of the head of
//! IMAGE, `.part/.snap/IMAGE/SNAP/N` partition N of snapshot SNAP. Every
//! image (and snapshot) has its directory; it lists the partitions of the
//! MBR or GPT at the image's start (empty without a valid table), as
//! [`crate::format::partitions`] reads it, numbered as Linux numbers them
//! (`sdaN`).
//!
//! A partition file is exactly the partition's bytes: reads and writes go
//! to the image at the partition's offset through the same [`Image`] path
//! as the image file's (so the cache serves them). Head partitions are
//! writable within their bounds (past the end: ENOSPC, never grows);
//! snapshot partitions are read-only.
//!
//! The table is read afresh at every lookup, listing and open of `.part`
//! entries; `stat` uses the last reading unless a write through the mount
//! touched the first [`SCAN_BYTES`] of the image since (or its size
//! changed). An open partition file keeps the range it was opened with.
//! A table that is corrupt, or entries left out, are logged once per
//! change (one line).

use std::collections::HashMap;
use std::sync::Arc;

use log::{debug, warn};
use parking_lot::Mutex;

use super::inodes::Node;
use super::{Attr, Errno, FileKind, Opened, RbdFs, SNAP_DIR, is_file_name};
use crate::format::partitions::{Partition, SCAN_BYTES, Scheme, Table, parse};
use crate::image::{Image, Seek};
use crate::pool::DIRECTORY;
use crate::store::{NOSNAP, SnapId};

/// The nodes under `.part`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum PartNode {
    /// `.part`: `.snap` and a directory per image.
    Root,
    /// `.part/.snap`: a directory per image.
    SnapRoot,
    /// `.part/IMAGE`: the head's partitions.
    Image(String),
    /// `.part/.snap/IMAGE`: a directory per snapshot.
    SnapImage(String),
    /// `.part/.snap/IMAGE/SNAP`: the snapshot's partitions.
    Snap(String, String),
    /// A partition file: of the head (snap None) or a snapshot.
    File {
        image: String,
        snap: Option<String>,
        number: u32,
    },
}

impl PartNode {
    fn is_dir(&self) -> bool {
        !matches!(self, PartNode::File { .. })
    }

    /// This node after image `old` was renamed to `new`, if it changes.
    pub(super) fn renamed(&self, old: &str, new: &str) -> Option<PartNode> {
        let n = new.to_string();
        match self {
            PartNode::Image(i) if i == old => Some(PartNode::Image(n)),
            PartNode::SnapImage(i) if i == old => Some(PartNode::SnapImage(n)),
            PartNode::Snap(i, s) if i == old => Some(PartNode::Snap(n, s.clone())),
            PartNode::File {
                image,
                snap,
                number,
            } if image == old => Some(PartNode::File {
                image: n,
                snap: snap.clone(),
                number: *number,
            }),
            _ => None,
        }
    }
}

/// The tables read so far, by image name and snap id.
#[derive(Default)]
pub(super) struct PartTables(Mutex<HashMap<(String, SnapId), Cached>>);

struct Cached {
    /// The image's size at the snap when read.
    size: u64,
    table: Arc<Table>,
    /// False once a write through the mount touched the table's bytes.
    fresh: bool,
}

/// A partition file's open state: the range it was opened with.
#[derive(Debug, Clone, Copy)]
pub(super) struct PartRange(pub(super) Partition);

fn is_reserved(name: &str) -> bool {
    super::names::is_reserved_root_name(name)
}

impl RbdFs {
    pub(super) fn part_lookup(&self, parent: &PartNode, name: &str) -> Result<Node, Errno> {
        let node = match parent {
            PartNode::Root if name == SNAP_DIR => PartNode::SnapRoot,
            PartNode::Root => PartNode::Image(name.to_string()),
            PartNode::SnapRoot => PartNode::SnapImage(name.to_string()),
            PartNode::SnapImage(image) => PartNode::Snap(image.clone(), name.to_string()),
            PartNode::Image(image) | PartNode::Snap(image, _) => {
                let number: u32 = name.parse().map_err(|_| Errno::ENOENT)?;
                if number.to_string() != name {
                    return Err(Errno::ENOENT);
                }
                let snap = match parent {
                    PartNode::Snap(_, s) => Some(s.clone()),
                    _ => None,
                };
                let (_, _, table) = self.part_table(image, snap.as_deref(), true)?;
                table.partition(number).ok_or(Errno::ENOENT)?;
                PartNode::File {
                    image: image.clone(),
                    snap,
                    number,
                }
            }
            PartNode::File { .. } => return Err(Errno::ENOTDIR),
        };
        Ok(Node::Part(node))
    }

    /// Entries of a `.part` directory.
    pub(super) fn part_list(&self, node: &PartNode) -> Result<Vec<(u64, FileKind, String)>, Errno> {
        let mut out = Vec::new();
        let mut add = |node: PartNode, kind: FileKind, name: String| {
            let ino = self.inodes.lock().ino(Node::Part(node));
            out.push((ino, kind, name));
        };
        match node {
            PartNode::Root | PartNode::SnapRoot => {
                if *node == PartNode::Root {
                    add(
                        PartNode::SnapRoot,
                        FileKind::Directory,
                        SNAP_DIR.to_string(),
                    );
                }
                let names = self.pool.list().map_err(|e| {
                    Errno::EIO
                        .with_detail(format!("listing images: {e}"))
                        .unexpected()
                })?;
                for name in names {
                    if !is_file_name(&name) {
                        debug!("{DIRECTORY}: image name {name:?} cannot be a file name");
                        continue;
                    }
                    if is_reserved(&name) {
                        continue;
                    }
                    let dir = if *node == PartNode::Root {
                        PartNode::Image(name.clone())
                    } else {
                        PartNode::SnapImage(name.clone())
                    };
                    add(dir, FileKind::Directory, name);
                }
            }
            PartNode::SnapImage(image) => {
                let info = self
                    .image(image)?
                    .current_info()
                    .map_err(|e| Errno::image(image, &e))?;
                for s in &info.snapshots {
                    if is_file_name(&s.name) {
                        let dir = PartNode::Snap(image.clone(), s.name.clone());
                        add(dir, FileKind::Directory, s.name.clone());
                    }
                }
            }
            PartNode::Image(image) | PartNode::Snap(image, _) => {
                let snap = match node {
                    PartNode::Snap(_, s) => Some(s.clone()),
                    _ => None,
                };
                let (_, _, table) = self.part_table(image, snap.as_deref(), true)?;
                for p in &table.partitions {
                    let file = PartNode::File {
                        image: image.clone(),
                        snap: snap.clone(),
                        number: p.number,
                    };
                    add(file, FileKind::File, p.number.to_string());
                }
            }
            PartNode::File { .. } => return Err(Errno::ENOTDIR),
        }
        Ok(out)
    }

    /// The directory `..` of a `.part` directory names.
    pub(super) fn part_parent(&self, node: &PartNode) -> u64 {
        let parent = match node {
            PartNode::Root => return super::ROOT_INO,
            PartNode::SnapRoot | PartNode::Image(_) => PartNode::Root,
            PartNode::SnapImage(_) => PartNode::SnapRoot,
            PartNode::Snap(image, _) => PartNode::SnapImage(image.clone()),
            PartNode::File { .. } => return super::ROOT_INO,
        };
        self.inodes.lock().ino(Node::Part(parent))
    }

    pub(super) fn part_is_dir(&self, node: &PartNode) -> bool {
        node.is_dir()
    }

    pub(super) fn part_attr(&self, ino: u64, node: &PartNode) -> Result<Attr, Errno> {
        let dir = self.attr(ino, FileKind::Directory, 0o555, 0);
        match node {
            PartNode::Root | PartNode::SnapRoot => Ok(dir),
            PartNode::Image(image) | PartNode::SnapImage(image) => {
                self.image(image)?;
                Ok(dir)
            }
            PartNode::Snap(image, snap) => {
                let info = self
                    .image(image)?
                    .current_info()
                    .map_err(|e| Errno::image(image, &e))?;
                info.snapshot(snap).ok_or(Errno::ENOENT)?;
                Ok(dir)
            }
            PartNode::File {
                image,
                snap,
                number,
            } => {
                let (img, _, table) = self.part_table(image, snap.as_deref(), false)?;
                let p = table.partition(*number).ok_or(Errno::ENOENT)?;
                let info = img.info();
                let writable = snap.is_none() && !self.opts.read_only && info.read_only.is_none();
                let perm = if writable { 0o644 } else { 0o444 };
                let mut attr = self.attr(ino, FileKind::File, perm, p.length);
                attr.blksize = info.layout.object_size.min(1 << 22) as u32;
                Ok(attr)
            }
        }
    }

    /// `user.rbd.partition_*` on a partition file: where it lies.
    pub(super) fn part_xattrs(
        &self,
        node: &PartNode,
    ) -> Result<Vec<(&'static str, String)>, Errno> {
        let PartNode::File {
            image,
            snap,
            number,
        } = node
        else {
            return Ok(Vec::new());
        };
        let (_, _, table) = self.part_table(image, snap.as_deref(), false)?;
        let p = table.partition(*number).ok_or(Errno::ENOENT)?;
        let scheme = match table.scheme {
            Some(Scheme::Mbr) => "mbr".to_string(),
            Some(Scheme::Gpt { sector }) => format!("gpt sector={sector}"),
            None => String::new(),
        };
        Ok(vec![
            ("user.rbd.partition_table", scheme),
            ("user.rbd.partition_offset", p.offset.to_string()),
            ("user.rbd.partition_length", p.length.to_string()),
        ])
    }

    pub(super) fn part_open(&self, node: &PartNode, flags: i32) -> Result<Opened, Errno> {
        let PartNode::File {
            image,
            snap,
            number,
        } = node
        else {
            return Err(Errno::EISDIR);
        };
        let wants_write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if snap.is_some() && (wants_write || flags & libc::O_TRUNC != 0) {
            return Err(Errno::EROFS);
        }
        // Opening is where a user expects to see other clients' changes.
        let img = self.image(image)?;
        let info = img.refresh().map_err(|e| Errno::image(image, &e))?;
        if wants_write && (self.opts.read_only || info.read_only.is_some()) {
            return Err(Errno::EROFS);
        }
        let (img, id, table) = self.part_table(image, snap.as_deref(), true)?;
        let p = *table.partition(*number).ok_or(Errno::ENOENT)?;
        Ok(Opened {
            fh: self.add_part_handle(img, id, PartRange(p)),
            // As the image files: the head uncached, snapshots cached.
            direct_io: id == NOSNAP,
        })
    }

    /// The table of `image` at `snap` (None: the head), read afresh if
    /// `reread`, else the last reading while it is still good.
    fn part_table(
        &self,
        image: &str,
        snap: Option<&str>,
        reread: bool,
    ) -> Result<(Arc<Image>, SnapId, Arc<Table>), Errno> {
        let img = self.image(image)?;
        let info = img.current_info().map_err(|e| Errno::image(image, &e))?;
        let id = match snap {
            None => NOSNAP,
            Some(s) => info.snapshot(s).ok_or(Errno::ENOENT)?.id,
        };
        let size = info.size_at(id).ok_or(Errno::ENOENT)?;
        let key = (image.to_string(), id);
        if !reread
            && let Some(c) = self.part_tables.0.lock().get(&key)
            && c.fresh
            && c.size == size
        {
            return Ok((img, id, c.table.clone()));
        }
        let head = img
            .read(id, 0, SCAN_BYTES as u64)
            .map_err(|e| Errno::image(&format!("read the partition table of {image}"), &e))?;
        let table = Arc::new(parse(&head, size));
        let mut tables = self.part_tables.0.lock();
        let before = tables.get(&key).map(|c| c.table.clone());
        if before.as_ref().is_none_or(|b| b.problems != table.problems)
            && !table.problems.is_empty()
        {
            let what = match snap {
                Some(s) => format!("{image}@{s}"),
                None => image.to_string(),
            };
            let problems = table.problems.join("; ");
            if table.scheme.is_none() {
                warn!("{what}: partition table ignored, no partition files: {problems}");
            } else {
                warn!("{what}: partitions left out: {problems}");
            }
        }
        tables.insert(
            key,
            Cached {
                size,
                table: table.clone(),
                fresh: true,
            },
        );
        Ok((img, id, table))
    }

    /// After a write (or discard) of `[offset, offset+len)` of the head of
    /// `image` through the mount: the head's table is read again if the
    /// range touches it.
    pub(super) fn part_note_write(&self, image: &str, offset: u64, len: u64) {
        if offset < SCAN_BYTES as u64 && len > 0 {
            self.part_forget(image);
        }
    }

    /// The head of `image` changed as a whole (rollback, resize).
    pub(super) fn part_forget(&self, image: &str) {
        if let Some(c) = self
            .part_tables
            .0
            .lock()
            .get_mut(&(image.to_string(), NOSNAP))
        {
            c.fresh = false;
        }
    }

    /// A read of a partition file, if `fh` is one.
    pub(super) fn part_read(
        &self,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> Option<Result<Vec<u8>, Errno>> {
        let (image, snap, PartRange(p)) = self.part_handle(fh)?;
        if offset >= p.length {
            return Some(Ok(Vec::new()));
        }
        let len = u64::from(size).min(p.length - offset);
        Some(
            image
                .read(snap, p.offset + offset, len)
                .map_err(|e| Errno::image(&format!("read {}", image.name()), &e)),
        )
    }

    /// A write to a partition file, if `fh` is one: within the partition
    /// or nothing (ENOSPC).
    pub(super) fn part_write(
        &self,
        fh: u64,
        offset: u64,
        data: &[u8],
    ) -> Option<Result<u32, Errno>> {
        let (image, snap, PartRange(p)) = self.part_handle(fh)?;
        Some((|| {
            if snap != NOSNAP || self.opts.read_only {
                return Err(Errno::EROFS);
            }
            let len = data.len() as u64;
            if offset.checked_add(len).is_none_or(|end| end > p.length) {
                return Err(Errno::ENOSPC);
            }
            image
                .write(p.offset + offset, data)
                .map_err(|e| Errno::image(&format!("write {}", image.name()), &e))?;
            self.part_note_write(image.name(), p.offset + offset, len);
            Ok(data.len() as u32)
        })())
    }

    /// SEEK_DATA/SEEK_HOLE in a partition file, if `fh` is one.
    pub(super) fn part_lseek(
        &self,
        fh: u64,
        offset: u64,
        what: Seek,
    ) -> Option<Result<u64, Errno>> {
        let (image, snap, PartRange(p)) = self.part_handle(fh)?;
        Some((|| {
            if offset >= p.length {
                return Err(Errno::ENXIO);
            }
            let found = image
                .seek(snap, p.offset + offset, what)
                .map_err(|e| Errno::image(&format!("lseek {}", image.name()), &e))?;
            match (found, what) {
                (Some(at), _) if at < p.end() => Ok(at - p.offset),
                // The partition ends in data: its end is a hole.
                (_, Seek::Hole) => Ok(p.length),
                _ => Err(Errno::ENXIO),
            }
        })())
    }

    /// fallocate of a partition file, if `fh` is one: as on the image
    /// file, but the file never grows (ENOSPC past its end).
    pub(super) fn part_fallocate(
        &self,
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> Option<Result<(), Errno>> {
        let (image, snap, PartRange(p)) = self.part_handle(fh)?;
        Some((|| {
            if snap != NOSNAP || self.opts.read_only {
                return Err(Errno::EROFS);
            }
            let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
            let punch = mode & libc::FALLOC_FL_PUNCH_HOLE != 0;
            let zero = mode & libc::FALLOC_FL_ZERO_RANGE != 0;
            let known =
                libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
            if mode & !known != 0 || (punch && (zero || !keep_size)) {
                return Err(Errno::EOPNOTSUPP);
            }
            let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
            if !keep_size && end > p.length {
                return Err(Errno::ENOSPC);
            }
            let end = end.min(p.length);
            if (punch || zero) && offset < end {
                image
                    .discard(p.offset + offset, end - offset)
                    .map_err(|e| Errno::image(&format!("discard {}", image.name()), &e))?;
                self.part_note_write(image.name(), p.offset + offset, end - offset);
            }
            Ok(())
        })())
    }
}
