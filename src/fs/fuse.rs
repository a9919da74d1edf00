//! The fuser adapter: each handler calls the [`RbdFs`] method of the same
//! name with plain arguments and replies. Errors are logged here only, in
//! [`fail`], with the request's id and the inode: debug for expected
//! outcomes (ENOENT, EEXIST, ENOSPC, EROFS...), warn for the rest.

use std::ffi::OsStr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use fuser::{
    FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use log::{debug, error, warn};
use parking_lot::Mutex;

use super::{Attr, Errno, FileKind, MultiFs, Opened, Xattr};

/// How long the kernel may cache names and attributes. Short, because
/// other clients resize images and take snapshots.
const TTL: Duration = Duration::from_secs(1);

/// Threads that read requests from the kernel. Few, because each holds a
/// request buffer as big as the largest write (1 MiB), touched by the
/// first big write it receives: 16 of them held 16 MiB of the process.
pub const FUSE_THREADS: usize = 4;

/// Threads that serve the requests that wait on RADOS for as long as an
/// object operation takes (reads, flush, fsync, fallocate), handed over by
/// the FUSE threads. Enough that queued direct I/O (fio QD16, a VM's disk)
/// keeps RADOS busy: each waits on one operation at a time. They need no
/// request buffer: a read's reply comes from the cache.
const WAITING_THREADS: usize = 16;

type Job = Box<dyn FnOnce() + Send>;

/// The waiting threads and the queue they take jobs from.
struct WaitingThreads {
    /// `None` once finished.
    jobs: Option<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl WaitingThreads {
    fn new(n: usize) -> WaitingThreads {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let threads = (0..n)
            .filter_map(|i| {
                let queue = queue.clone();
                std::thread::Builder::new()
                    .name(format!("fuse-wait-{i}"))
                    .spawn(move || serve_jobs(&queue))
                    .map_err(|e| warn!("cannot start a request thread: {e}"))
                    .ok()
            })
            .collect();
        WaitingThreads {
            jobs: Some(jobs),
            threads,
        }
    }

    /// Runs `job` on a waiting thread, or here if there is none.
    fn run(&self, job: Job) {
        let job = match &self.jobs {
            Some(jobs) if !self.threads.is_empty() => match jobs.send(job) {
                Ok(()) => return,
                Err(mpsc::SendError(job)) => job,
            },
            _ => job,
        };
        job();
    }

    /// Waits for the jobs handed over so far; later ones run in the caller.
    fn finish(&mut self) {
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A waiting thread: runs jobs until the queue closes. A panic fails its
/// request with EIO (the reply's drop) and leaves the thread serving.
fn serve_jobs(queue: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        let job = queue.lock().recv();
        let Ok(job) = job else { return };
        if catch_unwind(AssertUnwindSafe(job)).is_err() {
            error!("a request panicked; it failed with EIO");
        }
    }
}

/// [`MultiFs`] (one or more pools' [`super::RbdFs`]) served over FUSE.
pub struct FuseFs {
    fs: Arc<MultiFs>,
    waiting: WaitingThreads,
}

impl FuseFs {
    pub fn new(fs: Arc<MultiFs>) -> FuseFs {
        FuseFs {
            fs,
            waiting: WaitingThreads::new(WAITING_THREADS),
        }
    }

    pub fn fs(&self) -> &MultiFs {
        &self.fs
    }

    /// Runs `job` on a waiting thread, so that the FUSE thread goes back
    /// to the kernel for the next request.
    fn off_thread(&self, job: impl FnOnce(&MultiFs) + Send + 'static) {
        let fs = self.fs.clone();
        self.waiting.run(Box::new(move || job(&fs)));
    }
}

/// The one place errors are logged; gives fuser's errno for the reply.
fn fail(req: &Request, op: &str, ino: u64, e: Errno) -> fuser::Errno {
    fail_request(req.unique().0, op, ino, e)
}

/// [`fail`] for a request served off the FUSE thread, by its id.
fn fail_request(unique: u64, op: &str, ino: u64, e: Errno) -> fuser::Errno {
    if e.is_expected() {
        debug!("{op} (request {unique}, inode {ino}): {e}");
    } else {
        warn!("{op} (request {unique}, inode {ino}): {e}");
    }
    fuser::Errno::from_i32(e.code())
}

fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::File => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.time,
        mtime: a.time,
        ctime: a.time,
        crtime: a.time,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: a.blksize,
        flags: 0,
    }
}

fn fopen_flags(o: &Opened) -> FopenFlags {
    if o.direct_io {
        FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES
    } else {
        FopenFlags::empty()
    }
}

fn reply_empty(req: &Request, op: &str, ino: INodeNo, reply: ReplyEmpty, r: Result<(), Errno>) {
    reply_done(req.unique().0, op, ino, reply, r)
}

fn reply_done(unique: u64, op: &str, ino: INodeNo, reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(fail_request(unique, op, ino.0, e)),
    }
}

fn reply_xattr(req: &Request, op: &str, ino: INodeNo, reply: ReplyXattr, r: Result<Xattr, Errno>) {
    match r {
        Ok(Xattr::Size(n)) => reply.size(n),
        Ok(Xattr::Data(d)) => reply.data(&d),
        Err(e) => reply.error(fail(req, op, ino.0, e)),
    }
}

impl Filesystem for FuseFs {
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

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name) {
            Ok(attr) => reply.entry(&TTL, &file_attr(&attr), Generation(0)),
            Err(e) => reply.error(fail(req, "lookup", parent.0, e)),
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(e) => reply.error(fail(req, "getattr", ino.0, e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
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
        match self.fs.setattr(ino.0, mode, uid, gid, size) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(e) => reply.error(fail(req, "setattr", ino.0, e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.open(ino.0, flags.0) {
            Ok(o) => reply.opened(FileHandle(o.fh), fopen_flags(&o)),
            Err(e) => reply.error(fail(req, "open", ino.0, e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let unique = req.unique().0;
        self.off_thread(move |fs| match fs.read_data(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(fail_request(unique, "read", ino.0, e)),
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.fs.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(fail(req, "write", ino.0, e)),
        }
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        let unique = req.unique().0;
        self.off_thread(move |fs| reply_done(unique, "flush", ino, reply, fs.flush(fh.0)));
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let unique = req.unique().0;
        self.off_thread(move |fs| {
            reply_done(unique, "fsync", ino, reply, fs.fsync(fh.0, datasync))
        });
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
        self.fs.release(fh.0);
        reply.ok();
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(fail(req, "opendir", ino.0, e)),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.fs.readdir(ino.0, offset) {
            Ok(e) => e,
            Err(e) => return reply.error(fail(req, "readdir", ino.0, e)),
        };
        for e in entries {
            if reply.add(INodeNo(e.ino), e.offset, file_type(e.kind), &e.name) {
                break;
            }
        }
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.fs.create(parent.0, name) {
            Ok((attr, o)) => reply.created(
                &TTL,
                &file_attr(&attr),
                Generation(0),
                FileHandle(o.fh),
                fopen_flags(&o),
            ),
            Err(e) => reply.error(fail(req, "create", parent.0, e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        match self.fs.mkdir(parent.0, name) {
            Ok(attr) => reply.entry(&TTL, &file_attr(&attr), Generation(0)),
            Err(e) => reply.error(fail(req, "mkdir", parent.0, e)),
        }
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(req, "unlink", parent, reply, self.fs.unlink(parent.0, name));
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self.fs.rename(parent.0, name, newparent.0, newname);
        reply_empty(req, "rename", parent, reply, r);
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs(ino.0);
        reply.statfs(
            s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
        )
    }

    fn lseek(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.fs.lseek(fh.0, offset, whence) {
            Ok(o) => reply.offset(o as i64),
            Err(e) => reply.error(fail(req, "lseek", ino.0, e)),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let unique = req.unique().0;
        self.off_thread(move |fs| {
            let r = fs.fallocate(fh.0, offset, length, mode);
            reply_done(unique, "fallocate", ino, reply, r)
        });
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let r = self.fs.getxattr(ino.0, name, size);
        reply_xattr(req, "getxattr", ino, reply, r);
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let r = self.fs.setxattr(ino.0, name, value);
        reply_empty(req, "setxattr", ino, reply, r);
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match self.fs.link(ino.0, newparent.0, newname) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(fail(req, "link", ino.0, e)),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let r = self.fs.listxattr(ino.0, size);
        reply_xattr(req, "listxattr", ino, reply, r);
    }

    fn destroy(&mut self) {
        // Requests handed over finish first: the image may not be closed
        // under a flush.
        self.waiting.finish();
        self.fs.destroy();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    use super::WaitingThreads;

    #[test]
    fn jobs_run_at_once_on_different_threads() {
        let mut waiting = WaitingThreads::new(4);
        // Each job waits for all four: only passes if four run at once.
        let all = Arc::new(Barrier::new(4));
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..4 {
            let (all, done) = (all.clone(), done.clone());
            waiting.run(Box::new(move || {
                all.wait();
                done.fetch_add(1, Ordering::SeqCst);
            }));
        }
        waiting.finish();
        assert_eq!(done.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn a_panicking_job_leaves_its_thread_serving() {
        let mut waiting = WaitingThreads::new(1);
        let done = Arc::new(AtomicUsize::new(0));
        waiting.run(Box::new(|| panic!("a bug in one request")));
        let d = done.clone();
        waiting.run(Box::new(move || {
            d.fetch_add(1, Ordering::SeqCst);
        }));
        waiting.finish();
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn after_finish_jobs_run_in_the_caller() {
        let mut waiting = WaitingThreads::new(2);
        waiting.finish();
        let caller = std::thread::current().id();
        let ran_on = Arc::new(parking_lot::Mutex::new(None));
        let r = ran_on.clone();
        waiting.run(Box::new(move || {
            *r.lock() = Some(std::thread::current().id())
        }));
        assert_eq!(*ran_on.lock(), Some(caller));
    }
}
