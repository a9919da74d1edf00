//! Several pools and RBD namespaces in one mount. Each (pool, namespace)
//! the mount shows is a *scope*: its own [`Pool`] and [`RbdFs`] (the tree
//! of today's pool mount: images, `.snap`, `.diff`), all sharing one
//! cache. [`MultiFs`] routes every operation to the scope of its inode
//! or file handle, numbering each scope's inodes and handles apart
//! (scope number in the high bits), and adds the nodes that tie the
//! scopes together:
//!
//! - a `POOL` mount: scope 0 is the pool's default namespace, numbered as
//!   a plain pool mount always was, plus `.ns/NAMESPACE/` in its root;
//! - a `POOL/NAMESPACE` (or `--image`) mount: scope 0 only, no `.ns`;
//! - a `/` mount: the root lists every pool with the `rbd` application,
//!   each a scope's root (with its own `.ns`).
//!
//! Renames across scopes fail with EXDEV; `.ns` is reserved in a scope's
//! root (an image so named is hidden, as `.snap` and `.diff` are).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::SystemTime;

use log::{info, warn};
use parking_lot::Mutex;

use super::{
    Attr, DIFF_DIR, DirEntry, Errno, FileKind, FsOptions, Opened, RbdFs, StatFs, Xattr, file_name,
    is_file_name,
};
use crate::cache::Cache;
use crate::image::{ImageError, ReadData};
use crate::pool::Pool;
use crate::pool::namespaces::list_namespaces;
use crate::store::{ObjectStore, PoolEntry, StoreError};

/// The directory of a pool's other namespaces, in the root of its default
/// namespace.
pub const NS_DIR: &str = ".ns";

/// What the mount shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    /// One pool namespace and nothing else (`POOL/NAMESPACE`, `--image`).
    Single,
    /// A pool's default namespace, its other namespaces under `.ns`.
    Pool,
    /// Every rbd pool of the cluster, a directory each.
    Cluster,
}

/// Low bits of an inode or handle number: the scope's own number.
const SHIFT: u32 = 40;
const LOCAL: u64 = (1 << SHIFT) - 1;
/// The scope number of the nodes [`MultiFs`] itself owns.
const OWN: u64 = (1 << 20) - 1;
/// Root inode number, of the mount and of every scope.
const ROOT: u64 = super::inodes::ROOT;

fn global(scope: usize, local: u64) -> u64 {
    ((scope as u64) << SHIFT) | (local & LOCAL)
}

struct Scope {
    idx: usize,
    pool_id: i64,
    pool_name: String,
    namespace: String,
    /// The inode of this scope root's `..`.
    parent: u64,
    pool: Arc<Pool>,
    fs: RbdFs,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum OwnNode {
    /// `.ns` of a pool: (pool id, pool name).
    NsDir(i64, String),
}

enum At {
    ClusterRoot,
    NsDir(i64, String),
    Scope(Arc<Scope>, u64),
}

#[derive(Default)]
struct Own {
    by_ino: HashMap<u64, OwnNode>,
    by_node: HashMap<OwnNode, u64>,
}

/// The file system of a mount: one or more scopes (see the module doc).
pub struct MultiFs {
    kind: MountKind,
    /// The mount's store: scope 0's (Single, Pool) or any pool's (Cluster),
    /// used to list pools and open the others.
    base: Arc<dyn ObjectStore>,
    cache: Arc<Cache>,
    only: Option<String>,
    opts: FsOptions,
    scopes: Mutex<Vec<Option<Arc<Scope>>>>,
    by_key: Mutex<HashMap<(i64, String), usize>>,
    own: Mutex<Own>,
    /// Pools and namespaces we may not read, each logged once.
    denied: Mutex<HashSet<String>>,
    mounted_at: SystemTime,
}

fn is_denied(e: &StoreError) -> bool {
    matches!(e.errno(), libc::EPERM | libc::EACCES)
}

fn image_denied(e: &ImageError) -> bool {
    matches!(e, ImageError::Store { source, .. } if is_denied(source))
}

impl MultiFs {
    /// The mount's file system. For `Single` and `Pool`, `store` is the
    /// (pool, namespace) shown in the root; for `Cluster`, any pool of the
    /// cluster. `only` (`--image`) is for `Single` mounts.
    pub fn new(
        kind: MountKind,
        store: Arc<dyn ObjectStore>,
        cache: Arc<Cache>,
        only: Option<String>,
        opts: FsOptions,
    ) -> MultiFs {
        let fs = MultiFs {
            kind,
            base: store.clone(),
            cache,
            only,
            opts,
            scopes: Mutex::new(Vec::new()),
            by_key: Mutex::new(HashMap::new()),
            own: Mutex::new(Own::default()),
            denied: Mutex::new(HashSet::new()),
            mounted_at: SystemTime::now(),
        };
        if kind == MountKind::Cluster {
            // Scope 0 would own inode 1, which is the cluster's root.
            fs.scopes.lock().push(None);
        } else {
            fs.add_scope(store, ROOT);
        }
        fs
    }

    /// The pools (scope 0's, for `Single` and `Pool` mounts) whose open
    /// images the unmount writes back.
    pub fn close_all(&self) -> Result<(), ImageError> {
        let scopes: Vec<Arc<Scope>> = self.scopes.lock().iter().flatten().cloned().collect();
        let mut first = Ok(());
        for s in scopes {
            if let Err(e) = s.pool.close_all()
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }

    fn add_scope(&self, store: Arc<dyn ObjectStore>, parent: u64) -> Arc<Scope> {
        let key = (store.pool_id(), store.namespace());
        let mut scopes = self.scopes.lock();
        let mut by_key = self.by_key.lock();
        if let Some(&i) = by_key.get(&key)
            && let Some(Some(s)) = scopes.get(i)
        {
            return s.clone();
        }
        let only = if self.kind == MountKind::Single {
            self.only.clone()
        } else {
            None
        };
        let pool = Arc::new(Pool::new(store.clone(), self.cache.clone(), only));
        let idx = scopes.len();
        let scope = Arc::new(Scope {
            idx,
            pool_id: key.0,
            pool_name: store.pool_name(),
            namespace: key.1.clone(),
            parent,
            fs: RbdFs::new(pool.clone(), self.opts.clone()),
            pool,
        });
        scopes.push(Some(scope.clone()));
        by_key.insert(key, idx);
        scope
    }

    /// The scope of (pool, namespace), made on first use.
    fn scope(&self, pool_id: i64, namespace: &str, parent: u64) -> Result<Arc<Scope>, Errno> {
        if let Some(&i) = self.by_key.lock().get(&(pool_id, namespace.to_string()))
            && let Some(Some(s)) = self.scopes.lock().get(i)
        {
            return Ok(s.clone());
        }
        let store = self
            .base
            .pool_in_namespace(pool_id, namespace)
            .map_err(|e| {
                Errno::EIO
                    .with_detail(format!("open pool {pool_id} namespace {namespace:?}: {e}"))
                    .unexpected()
            })?;
        Ok(self.add_scope(store, parent))
    }

    fn ns_dir_ino(&self, pool_id: i64, pool_name: &str) -> u64 {
        let node = OwnNode::NsDir(pool_id, pool_name.to_string());
        let mut own = self.own.lock();
        if let Some(&ino) = own.by_node.get(&node) {
            return ino;
        }
        let ino = global(OWN as usize, own.by_ino.len() as u64 + 1);
        own.by_ino.insert(ino, node.clone());
        own.by_node.insert(node, ino);
        ino
    }

    fn at(&self, ino: u64) -> Result<At, Errno> {
        if self.kind == MountKind::Cluster && ino == ROOT {
            return Ok(At::ClusterRoot);
        }
        let scope = ino >> SHIFT;
        if scope == OWN {
            return match self.own.lock().by_ino.get(&ino) {
                Some(OwnNode::NsDir(id, name)) => Ok(At::NsDir(*id, name.clone())),
                None => Err(Errno::ENOENT),
            };
        }
        match self.scopes.lock().get(scope as usize) {
            Some(Some(s)) => Ok(At::Scope(s.clone(), ino & LOCAL)),
            _ => Err(Errno::ENOENT),
        }
    }

    /// The scope of a file handle and its number there.
    fn fh(&self, fh: u64) -> Result<(Arc<Scope>, u64), Errno> {
        match self.at(fh) {
            Ok(At::Scope(s, local)) => Ok((s, local)),
            _ => Err(Errno::EBADF),
        }
    }

    /// Whether this scope's root has a `.ns` directory.
    fn has_ns(&self, s: &Scope) -> bool {
        self.kind != MountKind::Single && s.namespace.is_empty()
    }

    fn own_attr(&self, ino: u64, perm: u16) -> Attr {
        Attr {
            ino,
            size: 0,
            blocks: 0,
            time: self.mounted_at,
            kind: FileKind::Directory,
            perm,
            nlink: 2,
            uid: self.opts.uid,
            gid: self.opts.gid,
            blksize: 4096,
        }
    }

    fn out(s: &Scope, mut a: Attr) -> Attr {
        a.ino = global(s.idx, a.ino);
        a
    }

    fn out_opened(s: &Scope, mut o: Opened) -> Opened {
        o.fh = global(s.idx, o.fh);
        o
    }

    /// The rbd pools of the cluster whose names can be file names.
    fn rbd_pools(&self) -> Result<Vec<PoolEntry>, Errno> {
        let pools = self.base.list_pools().map_err(|e| {
            Errno::EIO
                .with_detail(format!("listing pools: {e}"))
                .unexpected()
        })?;
        let mut pools: Vec<PoolEntry> = pools.into_iter().filter(|p| p.is_rbd()).collect();
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(pools
            .into_iter()
            .filter(|p| {
                let ok = is_file_name(&p.name);
                if !ok {
                    warn!("pool name {:?} cannot be a file name; skipped", p.name);
                }
                ok
            })
            .collect())
    }

    fn log_denied(&self, what: String, e: &dyn std::fmt::Display) {
        if self.denied.lock().insert(what.clone()) {
            warn!("{what}: permission denied ({e}); left out");
        }
    }

    /// The namespaces of a pool that can be file names (none, with a log
    /// line, when we may not list them).
    fn namespaces(&self, pool_id: i64, pool_name: &str) -> Vec<String> {
        let store: &dyn ObjectStore;
        let scope;
        if self.kind == MountKind::Cluster {
            match self.scope(pool_id, "", ROOT) {
                Ok(s) => scope = s,
                Err(_) => return Vec::new(),
            }
            store = &**scope.pool.store();
        } else {
            store = &*self.base;
        }
        match list_namespaces(store) {
            Ok(names) => names
                .into_iter()
                .filter(|n| {
                    let ok = is_file_name(n);
                    if !ok {
                        warn!(
                            "pool {pool_name}: namespace name {n:?} cannot be a file name; skipped"
                        );
                    }
                    ok
                })
                .collect(),
            Err(e) if is_denied(&e) => {
                self.log_denied(format!("namespaces of pool {pool_name}"), &e);
                Vec::new()
            }
            Err(e) => {
                warn!("pool {pool_name}: listing namespaces: {e}");
                Vec::new()
            }
        }
    }

    fn scope_root_attr(&self, s: &Scope) -> Result<Attr, Errno> {
        s.fs.getattr(ROOT).map(|a| Self::out(s, a))
    }
}

/// The operations, as [`RbdFs`] has them.
impl MultiFs {
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr, Errno> {
        match self.at(parent)? {
            At::ClusterRoot => {
                let name = file_name(name).ok_or(Errno::ENOENT)?;
                let p = self
                    .rbd_pools()?
                    .into_iter()
                    .find(|p| p.name == name)
                    .ok_or(Errno::ENOENT)?;
                let s = self.scope(p.id, "", ROOT)?;
                self.scope_root_attr(&s)
            }
            At::NsDir(id, pool) => {
                let name = file_name(name).ok_or(Errno::ENOENT)?;
                if !self.namespaces(id, &pool).iter().any(|n| n == name) {
                    return Err(Errno::ENOENT);
                }
                let s = self.scope(id, name, self.ns_dir_ino(id, &pool))?;
                self.scope_root_attr(&s)
            }
            At::Scope(s, local) => {
                if local == ROOT && name == NS_DIR {
                    if !self.has_ns(&s) {
                        return Err(Errno::ENOENT);
                    }
                    let ino = self.ns_dir_ino(s.pool_id, &s.pool_name);
                    return Ok(self.own_attr(ino, 0o555));
                }
                s.fs.lookup(local, name).map(|a| Self::out(&s, a))
            }
        }
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr, Errno> {
        match self.at(ino)? {
            At::ClusterRoot => Ok(self.own_attr(ino, 0o555)),
            At::NsDir(..) => Ok(self.own_attr(ino, 0o555)),
            At::Scope(s, local) => s.fs.getattr(local).map(|a| Self::out(&s, a)),
        }
    }

    pub fn setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
    ) -> Result<Attr, Errno> {
        match self.at(ino)? {
            At::Scope(s, local) => {
                s.fs.setattr(local, mode, uid, gid, size)
                    .map(|a| Self::out(&s, a))
            }
            _ if mode.is_none() && uid.is_none() && gid.is_none() && size.is_none() => {
                self.getattr(ino)
            }
            _ => Err(Errno::EPERM),
        }
    }

    pub fn open(&self, ino: u64, flags: i32) -> Result<Opened, Errno> {
        match self.at(ino)? {
            At::Scope(s, local) => s.fs.open(local, flags).map(|o| Self::out_opened(&s, o)),
            _ => Err(Errno::EISDIR),
        }
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let (s, fh) = self.fh(fh)?;
        s.fs.read(fh, offset, size)
    }

    /// [`read`](Self::read), possibly from the cache's own buffer.
    pub fn read_data(&self, fh: u64, offset: u64, size: u32) -> Result<ReadData, Errno> {
        let (s, fh) = self.fh(fh)?;
        s.fs.read_data(fh, offset, size)
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let (s, fh) = self.fh(fh)?;
        s.fs.write(fh, offset, data)
    }

    pub fn flush(&self, fh: u64) -> Result<(), Errno> {
        let (s, fh) = self.fh(fh)?;
        s.fs.flush(fh)
    }

    pub fn fsync(&self, fh: u64, datasync: bool) -> Result<(), Errno> {
        let (s, fh) = self.fh(fh)?;
        s.fs.fsync(fh, datasync)
    }

    pub fn release(&self, fh: u64) {
        if let Ok((s, fh)) = self.fh(fh) {
            s.fs.release(fh);
        }
    }

    pub fn opendir(&self, ino: u64) -> Result<u64, Errno> {
        match self.at(ino)? {
            At::Scope(s, local) => s.fs.opendir(local),
            _ => Ok(0),
        }
    }

    pub fn readdir(&self, ino: u64, offset: u64) -> Result<Vec<DirEntry>, Errno> {
        let dir = FileKind::Directory;
        let mut all: Vec<(u64, FileKind, String)> = Vec::new();
        match self.at(ino)? {
            At::ClusterRoot => {
                all.push((ino, dir, ".".into()));
                all.push((ino, dir, "..".into()));
                for p in self.rbd_pools()? {
                    // Deleted since the listing: not shown.
                    let Ok(s) = self.scope(p.id, "", ROOT) else {
                        continue;
                    };
                    // A pool we may not read is left out (one log line).
                    match s.pool.list() {
                        Err(e) if is_denied(&e) => {
                            self.log_denied(format!("pool {}", p.name), &e);
                            continue;
                        }
                        _ => all.push((global(s.idx, ROOT), dir, p.name)),
                    }
                }
            }
            At::NsDir(id, pool) => {
                all.push((ino, dir, ".".into()));
                let up = if self.kind == MountKind::Cluster {
                    global(self.scope(id, "", ROOT)?.idx, ROOT)
                } else {
                    ROOT
                };
                all.push((up, dir, "..".into()));
                let here = self.ns_dir_ino(id, &pool);
                for ns in self.namespaces(id, &pool) {
                    let s = self.scope(id, &ns, here)?;
                    all.push((global(s.idx, ROOT), dir, ns));
                }
            }
            At::Scope(s, local) => {
                for e in s.fs.readdir(local, 0)? {
                    if local == ROOT {
                        if e.name == ".." {
                            all.push((s.parent, e.kind, e.name));
                            continue;
                        }
                        if e.name == NS_DIR {
                            warn!("image {NS_DIR:?} is hidden: the name is reserved for the tree");
                            continue;
                        }
                    }
                    let after_diff = local == ROOT && e.name == DIFF_DIR;
                    all.push((global(s.idx, e.ino), e.kind, e.name));
                    if after_diff && self.has_ns(&s) {
                        let ns = self.ns_dir_ino(s.pool_id, &s.pool_name);
                        all.push((ns, dir, NS_DIR.into()));
                    }
                }
            }
        }
        Ok(all
            .into_iter()
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

    /// In a scope's root, `.ns` is reserved.
    fn reserved(&self, local: u64, name: &OsStr) -> bool {
        local == ROOT && name == NS_DIR
    }

    pub fn create(&self, parent: u64, name: &OsStr) -> Result<(Attr, Opened), Errno> {
        match self.at(parent)? {
            At::Scope(s, local) => {
                if self.opts.read_only {
                    return Err(Errno::EROFS);
                }
                if self.reserved(local, name) {
                    return Err(Errno::EEXIST);
                }
                let (a, o) = s.fs.create(local, name)?;
                Ok((Self::out(&s, a), Self::out_opened(&s, o)))
            }
            _ if self.opts.read_only => Err(Errno::EROFS),
            _ => Err(Errno::EPERM),
        }
    }

    pub fn mkdir(&self, parent: u64, name: &OsStr) -> Result<Attr, Errno> {
        match self.at(parent)? {
            At::Scope(s, local) => s.fs.mkdir(local, name).map(|a| Self::out(&s, a)),
            _ => Err(Errno::EPERM),
        }
    }

    pub fn unlink(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        if self.opts.read_only {
            return Err(Errno::EROFS);
        }
        match self.at(parent)? {
            At::Scope(s, local) if !self.reserved(local, name) => s.fs.unlink(local, name),
            _ => Err(Errno::EPERM),
        }
    }

    /// Within one scope as a pool mount renames; across pools or
    /// namespaces EXDEV (`mv` then copies).
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
        match (self.at(parent)?, self.at(newparent)?) {
            (At::Scope(a, la), At::Scope(b, lb)) => {
                if a.idx != b.idx {
                    return Err(Errno::EXDEV);
                }
                if self.reserved(la, name) || self.reserved(lb, newname) {
                    return Err(Errno::EPERM);
                }
                a.fs.rename(la, name, lb, newname)
            }
            (At::Scope(..), _) | (_, At::Scope(..)) => Err(Errno::EXDEV),
            _ => Err(Errno::EPERM),
        }
    }

    /// The pool's figures in a pool or namespace; the cluster's at the
    /// root of a `/` mount.
    pub fn statfs(&self, ino: u64) -> StatFs {
        let (scope, cluster) = match self.at(ino) {
            Ok(At::Scope(s, local)) => return s.fs.statfs(local),
            Ok(At::NsDir(id, _)) => (self.scope(id, "", ROOT).ok(), false),
            _ => {
                let first = self.scopes.lock().iter().flatten().next().cloned();
                let first = first.or_else(|| {
                    let p = self.rbd_pools().ok()?.into_iter().next()?;
                    self.scope(p.id, "", ROOT).ok()
                });
                (first, self.kind == MountKind::Cluster)
            }
        };
        match scope {
            Some(s) => {
                let mut st = s.fs.statfs(ROOT);
                if cluster {
                    // Capacity is the cluster's; objects are per pool.
                    st.files = 0;
                }
                st
            }
            None => StatFs {
                blocks: 0,
                bfree: 0,
                bavail: 0,
                files: 0,
                ffree: u64::MAX / 2,
                bsize: 4096,
                namelen: super::NAME_MAX as u32,
                frsize: 4096,
            },
        }
    }

    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> Result<u64, Errno> {
        let (s, fh) = self.fh(fh)?;
        s.fs.lseek(fh, offset, whence)
    }

    pub fn fallocate(&self, fh: u64, offset: u64, length: u64, mode: i32) -> Result<(), Errno> {
        let (s, fh) = self.fh(fh)?;
        s.fs.fallocate(fh, offset, length, mode)
    }

    pub fn getxattr(&self, ino: u64, name: &OsStr, size: u32) -> Result<Xattr, Errno> {
        match self.at(ino)? {
            At::Scope(s, local) => s.fs.getxattr(local, name, size),
            _ => Err(Errno::ENODATA),
        }
    }

    /// The `user.rbd.*` operations (protect, rollback, flatten) of the
    /// scope the file is in.
    pub fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8]) -> Result<(), Errno> {
        match self.at(ino)? {
            At::Scope(s, local) => s.fs.setxattr(local, name, value),
            _ => Err(Errno::EOPNOTSUPP),
        }
    }

    /// `ln .snap/PARENT/SNAP CHILD`, CHILD in the same or another pool or
    /// namespace of the mount (a clone whose parent lives elsewhere).
    pub fn link(&self, ino: u64, newparent: u64, newname: &OsStr) -> Result<Attr, Errno> {
        if self.opts.read_only {
            return Err(Errno::EROFS);
        }
        match (self.at(ino)?, self.at(newparent)?) {
            (At::Scope(a, la), At::Scope(b, lb)) => {
                if self.reserved(lb, newname) {
                    return Err(Errno::EEXIST);
                }
                a.fs.link_into(la, &b.fs, lb, newname)
                    .map(|attr| Self::out(&b, attr))
            }
            (At::Scope(..), _) | (_, At::Scope(..)) => Err(Errno::EXDEV),
            _ => Err(Errno::EPERM),
        }
    }

    pub fn listxattr(&self, ino: u64, size: u32) -> Result<Xattr, Errno> {
        match self.at(ino)? {
            At::Scope(s, local) => s.fs.listxattr(local, size),
            _ if size == 0 => Ok(Xattr::Size(0)),
            _ => Ok(Xattr::Data(Vec::new())),
        }
    }

    pub fn destroy(&self) {
        let scopes: Vec<Arc<Scope>> = self.scopes.lock().iter().flatten().cloned().collect();
        for s in scopes {
            s.fs.destroy();
        }
    }

    /// Checks at mount time that the root can be listed, with an error a
    /// user understands ("permission denied for pool X").
    pub fn check_mount(&self) -> Result<(), String> {
        if self.kind == MountKind::Cluster {
            self.rbd_pools()
                .map_err(|e| format!("cannot list the cluster's pools: {e}"))?;
            return Ok(());
        }
        let s = self
            .scope(self.base.pool_id(), &self.base.namespace(), ROOT)
            .map_err(|e| e.to_string())?;
        let what = if s.namespace.is_empty() {
            format!("pool '{}'", s.pool_name)
        } else {
            format!("pool '{}' namespace '{}'", s.pool_name, s.namespace)
        };
        match s.pool.list() {
            Err(e) if is_denied(&e) => return Err(format!("permission denied for {what}: {e}")),
            Err(e) => return Err(format!("cannot list images in {what}: {e}")),
            Ok(_) => {}
        }
        if let Some(image) = &self.only {
            match s.pool.image(image) {
                Err(e) if image_denied(&e) => {
                    return Err(format!("permission denied for {what}: {e}"));
                }
                Err(e) => return Err(e.to_string()),
                Ok(_) => {}
            }
        }
        info!("serving {what}");
        Ok(())
    }
}
