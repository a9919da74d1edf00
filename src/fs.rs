//! The FUSE adapter: inode numbers, attributes, directory listings, file
//! handles and errno values. Everything about images lives below, in
//! [`Pool`] and [`Image`].
//!
//! Tree: `/IMAGE` (the head of each image), `/.snap/IMAGE/SNAP` (read-only
//! snapshot files). `touch /.snap/IMAGE/NAME` creates snapshot NAME and
//! `rm` removes it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use log::{debug, warn};
use parking_lot::Mutex;

use crate::format::valid_file_name;
use crate::image::admin::CreateOptions;
use crate::image::{Image, ImageError, Seek};
use crate::pool::Pool;
use crate::store::{NOSNAP, SnapId, Usage};

/// Name of the directory that holds the snapshots.
pub const SNAP_DIR: &str = ".snap";

/// How long the kernel may cache names and attributes. Short, because
/// other clients resize images and take snapshots.
const TTL: Duration = Duration::from_secs(1);

const ROOT: u64 = 1;
const SNAP_ROOT: u64 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Node {
    Root,
    SnapRoot,
    Image(String),
    SnapDir(String),
    Snap(String, String),
}

/// Inode numbers for names, stable for the life of the mount.
struct Inodes {
    by_node: HashMap<Node, u64>,
    by_ino: HashMap<u64, Node>,
    next: u64,
}

impl Inodes {
    fn new() -> Inodes {
        let mut t = Inodes {
            by_node: HashMap::new(),
            by_ino: HashMap::new(),
            next: 3,
        };
        t.by_node.insert(Node::Root, ROOT);
        t.by_ino.insert(ROOT, Node::Root);
        t.by_node.insert(Node::SnapRoot, SNAP_ROOT);
        t.by_ino.insert(SNAP_ROOT, Node::SnapRoot);
        t
    }

    /// After `rbd rename`-ing image `old` to `new`: the kernel keeps the
    /// inodes it has (the renamed dentry points at the old number), so the
    /// numbers must follow the names, including the `.snap` tree's.
    fn rename_image(&mut self, old: &str, new: &str) {
        let moved: Vec<(Node, Node)> = self
            .by_node
            .keys()
            .filter_map(|n| {
                let renamed = match n {
                    Node::Image(i) if i == old => Node::Image(new.to_string()),
                    Node::SnapDir(i) if i == old => Node::SnapDir(new.to_string()),
                    Node::Snap(i, s) if i == old => Node::Snap(new.to_string(), s.clone()),
                    _ => return None,
                };
                Some((n.clone(), renamed))
            })
            .collect();
        for (from, to) in moved {
            if let Some(ino) = self.by_node.remove(&from) {
                if let Some(stale) = self.by_node.insert(to.clone(), ino) {
                    self.by_ino.remove(&stale);
                }
                self.by_ino.insert(ino, to);
            }
        }
    }

    fn ino(&mut self, node: Node) -> u64 {
        if let Some(&ino) = self.by_node.get(&node) {
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.by_node.insert(node.clone(), ino);
        self.by_ino.insert(ino, node);
        ino
    }
}

/// An open file: the image and the snap id it reads at (NOSNAP: the head).
struct Handle {
    image: Arc<Image>,
    snap: SnapId,
    /// Opened by creating the image: writes past the end grow it, so
    /// `cp`/`dd` into a new name work. Other handles never grow an image.
    grows: bool,
}

#[derive(Debug, Clone)]
pub struct FsOptions {
    pub read_only: bool,
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

/// The last cluster usage seen, and whether a query is outstanding.
#[derive(Default)]
struct UsageState {
    last: Option<(std::time::Instant, Usage)>,
    asking: bool,
}

fn errno_of(what: &str, e: &ImageError) -> Errno {
    if e.is_expected() {
        debug!("{what}: {e}");
    } else {
        warn!("{what}: {e}");
    }
    Errno::from_i32(e.errno())
}

/// getxattr/listxattr protocol: size 0 asks for the length.
fn reply_xattr(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() <= size as usize {
        reply.data(value);
    } else {
        reply.error(Errno::ERANGE);
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

    fn node(&self, ino: INodeNo) -> Result<Node, Errno> {
        self.inodes
            .lock()
            .by_ino
            .get(&ino.0)
            .cloned()
            .ok_or(Errno::ENOENT)
    }

    fn attr(&self, ino: u64, kind: FileType, perm: u16, size: u64) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.mounted_at,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
            crtime: self.mounted_at,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.opts.uid,
            gid: self.opts.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn dir_attr(&self, ino: u64) -> FileAttr {
        self.attr(ino, FileType::Directory, 0o755, 0)
    }

    /// Opens (or refreshes) the image behind a name; a corrupt or vanished
    /// image is dropped from the cache so the next use tries afresh.
    fn image(&self, name: &str) -> Result<Arc<Image>, Errno> {
        self.pool.image(name).map_err(|e| {
            self.pool.forget(name);
            errno_of(&format!("open {name}"), &e)
        })
    }

    /// Attributes of a node, reading image headers as needed.
    fn node_attr(&self, ino: u64, node: &Node) -> Result<FileAttr, Errno> {
        match node {
            Node::Root | Node::SnapRoot => Ok(self.dir_attr(ino)),
            Node::SnapDir(name) => {
                self.image(name)?;
                Ok(self.dir_attr(ino))
            }
            Node::Image(name) => {
                let image = self.image(name)?;
                let info = image.info();
                let writable = !self.opts.read_only && info.read_only.is_none();
                let perm = if writable { 0o644 } else { 0o444 };
                let mut attr = self.attr(ino, FileType::RegularFile, perm, info.size);
                attr.blocks = self.blocks(&image, NOSNAP, info.size);
                // cp, dd and friends size their buffers by st_blksize.
                attr.blksize = info.layout.object_size.min(1 << 22) as u32;
                Ok(attr)
            }
            Node::Snap(name, snap) => {
                let image = self.image(name)?;
                let info = image.info();
                let s = info.snapshot(snap).ok_or(Errno::ENOENT)?;
                let mut attr = self.attr(ino, FileType::RegularFile, 0o444, s.size);
                attr.blocks = self.blocks(&image, s.id, s.size);
                attr.blksize = info.layout.object_size.min(1 << 22) as u32;
                Ok(attr)
            }
        }
    }

    /// `st_blocks`: what the objects hold, so `cp --sparse` and `du` see
    /// the holes; the full size if it cannot be told.
    fn blocks(&self, image: &Image, snap: SnapId, size: u64) -> u64 {
        image.allocated(snap).unwrap_or(size).div_ceil(512)
    }

    fn lookup_node(&self, parent: &Node, name: &str) -> Result<Node, Errno> {
        match parent {
            Node::Root if name == SNAP_DIR => Ok(Node::SnapRoot),
            Node::Root => Ok(Node::Image(name.to_string())),
            Node::SnapRoot => Ok(Node::SnapDir(name.to_string())),
            Node::SnapDir(image) => Ok(Node::Snap(image.clone(), name.to_string())),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn entry(&self, node: Node) -> Result<FileAttr, Errno> {
        let ino = self.inodes.lock().ino(node.clone());
        self.node_attr(ino, &node)
    }

    fn handle(&self, fh: FileHandle) -> Result<(Arc<Image>, SnapId), Errno> {
        self.handles
            .lock()
            .get(&fh.0)
            .map(|h| (h.image.clone(), h.snap))
            .ok_or(Errno::EBADF)
    }

    fn grows(&self, fh: FileHandle) -> bool {
        self.handles.lock().get(&fh.0).is_some_and(|h| h.grows)
    }

    /// `touch`/`open(O_CREAT)` in the root: a new, empty image made as
    /// `rbd create` makes it (format and features from the mount options).
    fn create_image(&self, name: &OsStr) -> Result<(FileAttr, FileHandle, FopenFlags), Errno> {
        let name = name_str(name).ok_or(Errno::EINVAL)?;
        if name == SNAP_DIR {
            return Err(Errno::EEXIST);
        }
        let image = self
            .pool
            .create(name, &self.opts.create)
            .map_err(|e| errno_of(&format!("create {name}"), &e))?;
        let node = Node::Image(name.to_string());
        let ino = self.inodes.lock().ino(node.clone());
        let attr = self.node_attr(ino, &node)?;
        let fh = self.add_handle_with(image, NOSNAP, true);
        Ok((
            attr,
            fh,
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES,
        ))
    }

    /// `rm` in the root: the image goes as `rbd rm` takes it. Refused while
    /// one of its files is open here, or it has snapshots (ENOTEMPTY), or
    /// another client uses it (EBUSY).
    fn remove_image(&self, name: &OsStr) -> Result<(), Errno> {
        let name = name_str(name).ok_or(Errno::ENOENT)?;
        if name == SNAP_DIR {
            return Err(Errno::EPERM);
        }
        if self.is_open(name) {
            return Err(Errno::EBUSY);
        }
        self.pool
            .remove(name)
            .map_err(|e| errno_of(&format!("remove {name}"), &e))
    }

    /// Whether a file of image `name` (head or snapshot) is open.
    fn is_open(&self, name: &str) -> bool {
        self.handles.lock().values().any(|h| h.image.name() == name)
    }

    fn flush_handle(&self, fh: FileHandle) -> Result<(), Errno> {
        let (image, snap) = self.handle(fh)?;
        if snap != NOSNAP {
            return Ok(());
        }
        image.flush().map_err(|e| {
            // As the kernel reports failed write-back of dirty pages: EIO,
            // except for a full pool or quota, which the user can act on.
            match errno_of(&format!("flush {}", image.name()), &e) {
                e if e == Errno::ENOSPC || e == Errno::EDQUOT => e,
                _ => Errno::EIO,
            }
        })
    }

    /// The cache's counters, for operators (`getfattr -n user.rbdfs.cache
    /// MOUNTPOINT`) and for tests that check its bounds.
    fn cache_report(&self) -> String {
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
    fn xattrs(&self, node: &Node) -> Result<Vec<(&'static str, String)>, Errno> {
        let (name, snap) = match node {
            Node::Image(name) => (name, None),
            Node::Snap(name, snap) => (name, Some(snap)),
            Node::Root => return Ok(vec![("user.rbdfs.cache", self.cache_report())]),
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
        }
        Ok(out)
    }

    /// Cluster usage for statfs, which must never hang: `umount` and `df`
    /// call it, and a cluster without a manager never answers the monitor's
    /// statfs. Asked on a helper thread, waited for briefly; otherwise the
    /// last answer (or zeros) is given.
    fn usage(&self) -> Usage {
        const WAIT: Duration = Duration::from_secs(2);
        const FRESH: Duration = Duration::from_secs(10);
        let (last, asked) = {
            let state = self.usage_state.lock();
            (state.last, state.asking)
        };
        if let Some((at, u)) = last
            && at.elapsed() < FRESH
        {
            return u;
        }
        let fallback = last.map(|(_, u)| u).unwrap_or_default();
        if asked {
            return fallback;
        }
        self.usage_state.lock().asking = true;
        let (tx, rx) = std::sync::mpsc::channel();
        let pool = self.pool.clone();
        let state = self.usage_state.clone();
        std::thread::spawn(move || {
            let result = pool.store().usage();
            let mut st = state.lock();
            st.asking = false;
            match result {
                Ok(u) => {
                    st.last = Some((std::time::Instant::now(), u));
                    let _ = tx.send(u);
                }
                Err(e) => warn!("statfs: {e}"),
            }
        });
        rx.recv_timeout(WAIT).unwrap_or(fallback)
    }

    fn add_handle(&self, image: Arc<Image>, snap: SnapId) -> FileHandle {
        self.add_handle_with(image, snap, false)
    }

    fn add_handle_with(&self, image: Arc<Image>, snap: SnapId, grows: bool) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles
            .lock()
            .insert(fh, Handle { image, snap, grows });
        FileHandle(fh)
    }

    /// Entries of a directory: (inode, type, name), without `.`/`..`.
    fn list(&self, node: &Node) -> Result<Vec<(u64, FileType, String)>, Errno> {
        let mut out = Vec::new();
        let add = |node: Node, kind: FileType, name: String, out: &mut Vec<_>| {
            let ino = self.inodes.lock().ino(node);
            out.push((ino, kind, name));
        };
        match node {
            Node::Root | Node::SnapRoot => {
                if *node == Node::Root {
                    out.push((SNAP_ROOT, FileType::Directory, SNAP_DIR.to_string()));
                }
                let names = self.pool.list().map_err(|e| {
                    warn!("listing images: {e}");
                    Errno::EIO
                })?;
                for name in names {
                    if name == SNAP_DIR {
                        warn!("image {SNAP_DIR:?} is hidden: the name is reserved for snapshots");
                        continue;
                    }
                    if *node == Node::Root {
                        add(
                            Node::Image(name.clone()),
                            FileType::RegularFile,
                            name,
                            &mut out,
                        );
                    } else {
                        add(
                            Node::SnapDir(name.clone()),
                            FileType::Directory,
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
                    .map_err(|e| errno_of(image, &e))?;
                for s in &info.snapshots {
                    if valid_file_name(&s.name) {
                        add(
                            Node::Snap(image.clone(), s.name.clone()),
                            FileType::RegularFile,
                            s.name.clone(),
                            &mut out,
                        );
                    }
                }
            }
            _ => return Err(Errno::ENOTDIR),
        }
        Ok(out)
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
            let end = offset.saturating_add(data.len() as u64);
            if self.grows(fh) && end > image.info().size {
                image
                    .resize(end)
                    .map_err(|e| errno_of(&format!("grow {}", image.name()), &e))?;
            }
            image
                .write(offset, data)
                .map_err(|e| errno_of(&format!("write {}", image.name()), &e))
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
        match self.flush_handle(fh) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.flush_handle(fh) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
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
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
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
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
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

    /// Punch hole and zero range discard (what `fstrim` through a loop
    /// device and `fallocate -p` send); plain allocation is a no-op inside
    /// the image, and cannot grow it.
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
            let size = image.info().size;
            let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
            let discard = mode & (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE) != 0;
            if mode
                & !(libc::FALLOC_FL_KEEP_SIZE
                    | libc::FALLOC_FL_PUNCH_HOLE
                    | libc::FALLOC_FL_ZERO_RANGE)
                != 0
            {
                return Err(Errno::EOPNOTSUPP);
            }
            if discard {
                return image
                    .discard(offset, length)
                    .map_err(|e| errno_of(&format!("discard {}", image.name()), &e));
            }
            // Allocating past the end grows the image, as it grows a file
            // (`fallocate -l 10G NEW`).
            let end = offset.saturating_add(length);
            if !keep_size && end > size {
                return image
                    .resize(end)
                    .map_err(|e| errno_of(&format!("grow {}", image.name()), &e));
            }
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
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
