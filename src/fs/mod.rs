//! The FUSE adapter: inode numbers, attributes, directory listings, file
//! handles and errno values. Everything about images lives below, in
//! [`Pool`] and [`Image`].
//!
//! Tree: `/IMAGE` (the head of each image), `/.snap/IMAGE/SNAP` (read-only
//! snapshot files). `touch /.snap/IMAGE/NAME` creates snapshot NAME and
//! `rm` removes it.

mod attrs;
mod handles;
mod inodes;
mod tree;
mod usage;
mod xattrs;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use log::{debug, warn};
use parking_lot::Mutex;

use self::handles::Handle;
use self::inodes::{Inodes, Node, ROOT, SNAP_ROOT};
use self::usage::UsageState;
use self::xattrs::reply_xattr;
use crate::format::valid_file_name;
use crate::image::admin::CreateOptions;
use crate::image::{Image, ImageError, Seek};
use crate::pool::Pool;
use crate::store::NOSNAP;

/// Name of the directory that holds the snapshots.
pub const SNAP_DIR: &str = ".snap";

/// How long the kernel may cache names and attributes. Short, because
/// other clients resize images and take snapshots.
const TTL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct FsOptions {
    pub read_only: bool,
    /// Writes and fallocate past the end fail with ENOSPC instead of
    /// growing the image (except through the handle that created it).
    pub fixed_size: bool,
    /// What images created through the filesystem look like.
    pub create: CreateOptions,
    pub uid: u32,
    pub gid: u32,
}

pub struct RbdFs {
    pool: Arc<Pool>,
    opts: FsOptions,
    inodes: Mutex<Inodes>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    mounted_at: SystemTime,
    usage_state: Arc<Mutex<UsageState>>,
}

fn errno_of(what: &str, e: &ImageError) -> Errno {
    if e.is_expected() {
        debug!("{what}: {e}");
    } else {
        warn!("{what}: {e}");
    }
    Errno::from_i32(e.errno())
}

/// Answers a request that returns nothing but success or an errno.
fn reply_empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn name_str(name: &OsStr) -> Option<&str> {
    name.to_str().filter(|n| valid_file_name(n))
}

impl RbdFs {
    pub fn new(pool: Arc<Pool>, opts: FsOptions) -> RbdFs {
        RbdFs {
            pool,
            opts,
            inodes: Mutex::new(Inodes::new()),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            mounted_at: SystemTime::now(),
            usage_state: Arc::default(),
        }
    }

    /// Opens (or refreshes) the image behind a name; a corrupt or vanished
    /// image is dropped from the cache so the next use tries afresh.
    fn image(&self, name: &str) -> Result<Arc<Image>, Errno> {
        self.pool.image(name).map_err(|e| {
            self.pool.forget(name);
            errno_of(&format!("open {name}"), &e)
        })
    }
}

impl Filesystem for RbdFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Large requests mean fewer round trips through FUSE and RADOS.
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        // Let the kernel keep many requests in flight: async direct I/O
        // (io_submit returns before the reply), background requests
        // (readahead of snapshot files), and mmap of direct-I/O heads.
        // O_TRUNC arrives as an open flag, not as a truncate to 0 (see open).
        for flag in [
            InitFlags::FUSE_ASYNC_DIO,
            InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP,
            InitFlags::FUSE_ATOMIC_O_TRUNC,
        ] {
            if config.add_capabilities(flag).is_err() {
                debug!("kernel lacks FUSE capability {flag:?}");
            }
        }
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = (|| {
            let parent = self.node(parent)?;
            let name = name_str(name).ok_or(Errno::ENOENT)?;
            let node = self.lookup_node(&parent, name)?;
            self.entry(node)
        })();
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino).and_then(|n| self.node_attr(ino.0, &n)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = (|| {
            let node = self.node(ino)?;
            let attr = self.node_attr(ino.0, &node)?;
            let changes_content = mode.is_some()
                || uid.is_some()
                || gid.is_some()
                || size.is_some_and(|s| s != attr.size);
            // Time updates (touch, cp -p) are accepted and not stored: RBD
            // keeps no per-image times we could set.
            if !changes_content {
                return Ok(attr);
            }
            match node {
                Node::Snap(..) => Err(Errno::EROFS),
                _ if self.opts.read_only => Err(Errno::EROFS),
                // truncate/ftruncate resize the image as `rbd resize` does.
                Node::Image(name) if mode.is_none() && uid.is_none() && gid.is_none() => {
                    let image = self.image(&name)?;
                    let new_size = size.unwrap_or(attr.size);
                    image
                        .resize(new_size)
                        .map_err(|e| errno_of(&format!("resize {name}"), &e))?;
                    self.node_attr(ino.0, &Node::Image(name))
                }
                _ => Err(Errno::EPERM),
            }
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    /// The head of an image is opened with direct I/O: the kernel's page
    /// cache would serve stale data after another client (librbd, krbd)
    /// writes the image, and would split unaligned writes at page
    /// boundaries, so a write running past the end could half-succeed.
    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let wants_write = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let result = (|| {
            match self.node(ino)? {
                Node::Image(name) => {
                    if flags.0 & libc::O_TRUNC != 0 {
                        // An image is a disk, not a log: `dd of=IMG` must
                        // write into it, not shrink it to nothing first.
                        // Resizing is `truncate -s`.
                        debug!("open {name}: O_TRUNC ignored");
                    }
                    let image = self.image(&name)?;
                    // Opening is where a user expects to see other clients'
                    // changes, so re-read the header.
                    let info = image.refresh().map_err(|e| errno_of(&name, &e))?;
                    if wants_write && (self.opts.read_only || info.read_only.is_some()) {
                        return Err(Errno::EROFS);
                    }
                    Ok((
                        self.add_handle(image, NOSNAP),
                        // Writes to different ranges need not queue behind each other.
                        FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES,
                    ))
                }
                Node::Snap(name, snap) => {
                    // O_TRUNC asks to change it, even on a read-only open.
                    if wants_write || flags.0 & libc::O_TRUNC != 0 {
                        return Err(Errno::EROFS);
                    }
                    let image = self.image(&name)?;
                    let info = image.refresh().map_err(|e| errno_of(&name, &e))?;
                    let id = info.snapshot(&snap).ok_or(Errno::ENOENT)?.id;
                    // A snapshot never changes: the page cache may keep it.
                    Ok((self.add_handle(image, id), FopenFlags::empty()))
                }
                _ => Err(Errno::EISDIR),
            }
        })();
        match result {
            Ok((fh, flags)) => reply.opened(fh, flags),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let result = self.handle(fh).and_then(|(image, snap)| {
            image
                .read(snap, offset, size as u64)
                .map_err(|e| errno_of(&format!("read {}", image.name()), &e))
        });
        match result {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let result = self.handle(fh).and_then(|(image, snap)| {
            if snap != NOSNAP || self.opts.read_only {
                return Err(Errno::EROFS);
            }
            let result = if self.may_grow(fh) {
                image.write_or_grow(offset, data)
            } else {
                image.write(offset, data)
            };
            result.map_err(|e| errno_of(&format!("write {}", image.name()), &e))
        });
        match result {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(): acknowledged writes must be on RADOS before it returns,
        // and a failed write-back is reported here.
        reply_empty(reply, self.flush_handle(fh));
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.flush_handle(fh));
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.handles.lock().remove(&fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.node(ino) {
            Ok(Node::Root | Node::SnapRoot | Node::SnapDir(_)) => {
                reply.opened(FileHandle(0), FopenFlags::empty())
            }
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let result = self.node(ino).and_then(|node| self.list(&node));
        let entries = match result {
            Ok(e) => e,
            Err(e) => return reply.error(e),
        };
        let parent = match self.node(ino) {
            Ok(Node::SnapDir(_)) => SNAP_ROOT,
            _ => ROOT,
        };
        let dots = [
            (ino.0, FileType::Directory, ".".to_string()),
            (parent, FileType::Directory, "..".to_string()),
        ];
        for (i, (e_ino, kind, name)) in dots
            .into_iter()
            .chain(entries)
            .enumerate()
            .skip(offset as usize)
        {
            if reply.add(INodeNo(e_ino), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let result = (|| {
            if self.opts.read_only {
                return Err(Errno::EROFS);
            }
            let image_name = match self.node(parent)? {
                Node::SnapDir(image_name) => image_name,
                Node::Root => return self.create_image(name),
                _ => return Err(Errno::EPERM),
            };
            let snap = name.to_str().ok_or(Errno::EINVAL)?;
            let image = self.image(&image_name)?;
            let info = image
                .snap_create(snap)
                .map_err(|e| errno_of(&format!("snapshot {image_name}@{snap}"), &e))?;
            let node = Node::Snap(image_name, snap.to_string());
            let ino = self.inodes.lock().ino(node);
            let attr = self.attr(ino, FileType::RegularFile, 0o444, info.size);
            Ok((attr, self.add_handle(image, info.id), FopenFlags::empty()))
        })();
        match result {
            Ok((attr, fh, flags)) => reply.created(&TTL, &attr, Generation(0), fh, flags),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        if let Ok(Node::SnapDir(image)) = self.node(parent) {
            warn!("mkdir {image}/{name:?}: snapshots are files; create one with `touch`");
        }
        reply.error(Errno::EPERM);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = (|| {
            if self.opts.read_only {
                return Err(Errno::EROFS);
            }
            let image_name = match self.node(parent)? {
                Node::SnapDir(image_name) => image_name,
                Node::Root => return self.remove_image(name),
                _ => return Err(Errno::EPERM),
            };
            let snap = name_str(name).ok_or(Errno::ENOENT)?;
            let image = self.image(&image_name)?;
            image
                .snap_remove(snap)
                .map_err(|e| errno_of(&format!("remove snapshot {image_name}@{snap}"), &e))
        })();
        reply_empty(reply, result);
    }

    /// `mv A B` in the root renames the image as `rbd rename` does. Onto an
    /// existing name (no replacing images), across directories, or while a
    /// file of it is open: refused.
    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = (|| {
            if self.opts.read_only {
                return Err(Errno::EROFS);
            }
            if self.node(parent)? != Node::Root || self.node(newparent)? != Node::Root {
                return Err(Errno::EXDEV);
            }
            let old = name_str(name).ok_or(Errno::ENOENT)?;
            let new = name_str(newname).ok_or(Errno::EINVAL)?;
            if old == SNAP_DIR || new == SNAP_DIR {
                return Err(Errno::EPERM);
            }
            if self.is_open(old) {
                return Err(Errno::EBUSY);
            }
            self.pool
                .rename(old, new)
                .map_err(|e| errno_of(&format!("rename {old} to {new}"), &e))?;
            self.inodes.lock().rename_image(old, new);
            Ok(())
        })();
        reply_empty(reply, result);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        const BSIZE: u64 = 4096;
        let u = self.usage();
        let blocks = u.total_bytes / BSIZE;
        let free = u.avail_bytes / BSIZE;
        reply.statfs(
            blocks,
            free,
            free,
            u.pool_objects,
            u64::MAX / 2,
            BSIZE as u32,
            255,
            BSIZE as u32,
        )
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let what = match whence {
            libc::SEEK_DATA => Seek::Data,
            libc::SEEK_HOLE => Seek::Hole,
            // SEEK_SET/CUR/END are the kernel's business.
            _ => return reply.error(Errno::EINVAL),
        };
        let result = self.handle(fh).and_then(|(image, snap)| {
            let offset = u64::try_from(offset).map_err(|_| Errno::ENXIO)?;
            image
                .seek(snap, offset, what)
                .map_err(|e| errno_of(&format!("lseek {}", image.name()), &e))?
                .ok_or(Errno::ENXIO)
        });
        match result {
            Ok(o) => reply.offset(o as i64),
            Err(e) => reply.error(e),
        }
    }

    /// As on a local Linux filesystem: mode 0 allocates (a no-op inside
    /// the image) and, past the end, grows it; ZERO_RANGE zeroes and,
    /// without KEEP_SIZE, grows too; PUNCH_HOLE needs KEEP_SIZE. Zeroing
    /// and punching discard as librbd does (what `fstrim` through a loop
    /// device and `fallocate -p`/`-z` send). The grown range is a hole.
    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let result = self.handle(fh).and_then(|(image, snap)| {
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
                .map_err(|e| errno_of(&format!("fallocate {}", image.name()), &e))?;
            let grows = !keep_size && end > info.size;
            if grows && !self.may_grow(fh) {
                // fixed_size: nothing is changed.
                return Err(Errno::ENOSPC);
            }
            if punch || zero {
                image
                    .discard(offset, length)
                    .map_err(|e| errno_of(&format!("discard {}", image.name()), &e))?;
            }
            if grows {
                image
                    .grow_to(end)
                    .map_err(|e| errno_of(&format!("grow {}", image.name()), &e))?;
            }
            Ok(())
        });
        reply_empty(reply, result);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let result = self.node(ino).and_then(|node| {
            let name = name.to_str().ok_or(Errno::ENODATA)?;
            self.xattrs(&node)?
                .into_iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v)
                .ok_or(Errno::ENODATA)
        });
        match result {
            Ok(value) => reply_xattr(reply, size, value.as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let result = self.node(ino).and_then(|node| self.xattrs(&node));
        match result {
            Ok(attrs) => {
                let mut names = Vec::new();
                for (k, _) in attrs {
                    names.extend_from_slice(k.as_bytes());
                    names.push(0);
                }
                reply_xattr(reply, size, &names)
            }
            Err(e) => reply.error(e),
        }
    }

    fn destroy(&mut self) {
        let open = self.handles.lock().len();
        if open > 0 {
            debug!("unmounting with {open} open files");
        }
    }
}
