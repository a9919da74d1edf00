//! Files that behave like files: a file-system exerciser in the spirit of
//! fsx (random writes, also past the end, reads, mmap reads and writes,
//! truncates up and down, fallocate in every mode Linux local filesystems
//! take, copy_file_range, fsync, close/reopen), checked size for size and
//! byte for byte against an in-memory model after every operation, then
//! against `rbd export`; appends from two processes; `fixed_size` mounts.
//!
//! `RBDFS_FSX_OPS` sets the operation count (default 20,000 per run),
//! `RBDFS_TEST_SEED` replays a run (the seed is printed).

mod common;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// Largest file the exerciser makes: small enough to compare whole after
/// every operation, large enough to span many objects.
const MAX_SIZE: u64 = 768 * KIB;

fn ops_from_env() -> u64 {
    std::env::var("RBDFS_FSX_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn fallocate(f: &File, mode: i32, off: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall on an open descriptor.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, off as i64, len as i64) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One `copy_file_range` call; returns the bytes copied.
fn copy_range(src: &File, src_off: u64, dst: &File, dst_off: u64, len: u64) -> io::Result<u64> {
    let mut so = src_off as i64;
    let mut d = dst_off as i64;
    // SAFETY: the offsets point at live i64s; the descriptors are open.
    let r = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut so,
            dst.as_raw_fd(),
            &mut d,
            len as usize,
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}

/// A shared mapping of `[off, off+len)` of `f` (page-aligned start).
struct Map {
    ptr: *mut libc::c_void,
    map_len: usize,
    skew: usize,
    len: usize,
}

impl Map {
    fn new(f: &File, off: u64, len: u64, writable: bool) -> io::Result<Map> {
        let page = 4096u64;
        let start = off / page * page;
        let skew = (off - start) as usize;
        let map_len = skew + len as usize;
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        // SAFETY: a fresh mapping of an open file; checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                prot,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                start as i64,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Map {
            ptr,
            map_len,
            skew,
            len: len as usize,
        })
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is map_len bytes long and lives as long as self.
        unsafe { std::slice::from_raw_parts_mut((self.ptr as *mut u8).add(self.skew), self.len) }
    }

    fn sync(&self) -> io::Result<()> {
        // SAFETY: our own live mapping.
        if unsafe { libc::msync(self.ptr, self.map_len, libc::MS_SYNC) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: our own live mapping, unmapped once.
        unsafe { libc::munmap(self.ptr, self.map_len) };
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Write,
    WritePastEnd,
    Read,
    MmapRead,
    MmapWrite,
    Truncate,
    Allocate,
    AllocateKeepSize,
    ZeroRange,
    ZeroRangeKeepSize,
    PunchHole,
    CopyRange,
    Fsync,
    Reopen,
}

/// Per mille; close/reopen about every 20 operations, as the fsx run
/// that found the handle bug.
const WEIGHTS: &[(Op, u64)] = &[
    (Op::Write, 250),
    (Op::WritePastEnd, 60),
    (Op::Read, 150),
    (Op::MmapRead, 60),
    (Op::MmapWrite, 60),
    (Op::Truncate, 60),
    (Op::Allocate, 40),
    (Op::AllocateKeepSize, 20),
    (Op::ZeroRange, 40),
    (Op::ZeroRangeKeepSize, 30),
    (Op::PunchHole, 50),
    (Op::CopyRange, 50),
    (Op::Fsync, 40),
    (Op::Reopen, 50),
];

struct Exerciser<'a> {
    mount: &'a Mount,
    path: PathBuf,
    file: Option<File>,
    model: Vec<u8>,
    rng: Rng,
    seed: u64,
    op_no: u64,
    recent: Vec<String>,
    counts: std::collections::BTreeMap<Op, u64>,
}

impl Exerciser<'_> {
    fn fail(&self, msg: String) -> ! {
        panic!(
            "{msg}\nexerciser on {} failed at op #{}, seed {:#x} (RBDFS_TEST_SEED={:#x} replays)\nlast operations:\n  {}\n----- rbdfs log (tail) -----\n{}",
            self.path.display(),
            self.op_no,
            self.seed,
            self.seed,
            self.recent.join("\n  "),
            tail(&self.mount.log(), 40)
        )
    }

    fn note(&mut self, what: String) {
        if self.recent.len() == 20 {
            self.recent.remove(0);
        }
        self.recent.push(format!("#{}: {what}", self.op_no));
    }

    fn file(&self) -> &File {
        self.file.as_ref().expect("file open")
    }

    fn size(&self) -> u64 {
        self.model.len() as u64
    }

    fn io<T>(&self, r: io::Result<T>, what: &str) -> T {
        r.unwrap_or_else(|e| self.fail(format!("{what}: {e}")))
    }

    /// A range inside `[0, limit)`, biased to small and to object edges.
    fn range_within(&mut self, limit: u64, max_len: u64) -> (u64, u64) {
        if limit == 0 {
            return (0, 0);
        }
        let off = self.rng.below(limit);
        let len = match self.rng.below(4) {
            0 => self.rng.range(1, 16),
            1 => self.rng.range(1, 4 * KIB),
            _ => self.rng.range(1, max_len),
        };
        (off, len.min(limit - off))
    }

    fn pick(&mut self) -> Op {
        let total: u64 = WEIGHTS.iter().map(|w| w.1).sum();
        let mut r = self.rng.below(total);
        for &(op, w) in WEIGHTS {
            if r < w {
                return op;
            }
            r -= w;
        }
        unreachable!()
    }

    fn grow_model(&mut self, end: u64) {
        if end > self.size() {
            self.model.resize(end as usize, 0);
        }
    }

    fn step(&mut self) {
        let op = self.pick();
        *self.counts.entry(op).or_default() += 1;
        let size = self.size();
        match op {
            Op::Write => {
                let (off, len) = self.range_within(size.max(1), 96 * KIB);
                let len = len.max(1).min(MAX_SIZE - off);
                let data = self.rng.bytes(len as usize);
                self.note(format!("write {len} at {off} (size {size})"));
                self.io(self.file().write_all_at(&data, off), "write");
                self.grow_model(off + len);
                self.model[off as usize..(off + len) as usize].copy_from_slice(&data);
            }
            Op::WritePastEnd => {
                // At, just before, or beyond the end (leaving a hole).
                let off = match self.rng.below(3) {
                    0 => size,
                    1 => size.saturating_sub(self.rng.below(5000)),
                    _ => size + self.rng.below(100 * KIB),
                };
                if off >= MAX_SIZE - 1 {
                    self.note("(write past end skipped: size limit)".into());
                    return;
                }
                let len = self.rng.range(1, 64 * KIB).min(MAX_SIZE - off);
                let data = self.rng.bytes(len as usize);
                self.note(format!("write {len} at {off}, past the end {size}"));
                self.io(self.file().write_all_at(&data, off), "write past the end");
                self.grow_model(off + len);
                self.model[off as usize..(off + len) as usize].copy_from_slice(&data);
            }
            Op::Read => {
                let off = self.rng.below(size + 8 * KIB);
                let len = self.rng.range(1, 128 * KIB);
                self.note(format!("read {len} at {off} (size {size})"));
                let got = self.io(read_full_at(self.file(), off, len as usize), "read");
                let lo = off.min(size) as usize;
                let hi = (off + len).min(size) as usize;
                if got != self.model[lo..hi] {
                    self.fail(format!(
                        "read {len} at {off}: {}",
                        first_diff(&got, &self.model[lo..hi])
                    ));
                }
            }
            Op::MmapRead => {
                let (off, len) = self.range_within(size, 64 * KIB);
                if len == 0 {
                    return;
                }
                self.note(format!("mmap read {len} at {off}"));
                let mut map = self.io(Map::new(self.file(), off, len, false), "mmap");
                let got = map.bytes().to_vec();
                drop(map);
                let want = &self.model[off as usize..(off + len) as usize];
                if got != want {
                    self.fail(format!(
                        "mmap read {len} at {off}: {}",
                        first_diff(&got, want)
                    ));
                }
            }
            Op::MmapWrite => {
                let (off, len) = self.range_within(size, 32 * KIB);
                if len == 0 {
                    return;
                }
                let data = self.rng.bytes(len as usize);
                self.note(format!("mmap write {len} at {off}"));
                let mut map = self.io(Map::new(self.file(), off, len, true), "mmap rw");
                map.bytes().copy_from_slice(&data);
                self.io(map.sync(), "msync");
                drop(map);
                self.model[off as usize..(off + len) as usize].copy_from_slice(&data);
            }
            Op::Truncate => {
                let new = match self.rng.below(3) {
                    0 => self.rng.below(size + 1),
                    1 => size + self.rng.below(128 * KIB),
                    _ => self.rng.below(MAX_SIZE),
                }
                .min(MAX_SIZE);
                self.note(format!("ftruncate {size} -> {new}"));
                self.io(self.file().set_len(new), "ftruncate");
                self.model.resize(new as usize, 0);
            }
            Op::Allocate | Op::AllocateKeepSize => {
                let keep = op == Op::AllocateKeepSize;
                let off = self.rng.below(size + 64 * KIB).min(MAX_SIZE - 1);
                let len = self.rng.range(1, 128 * KIB).min(MAX_SIZE - off);
                let mode = if keep { libc::FALLOC_FL_KEEP_SIZE } else { 0 };
                self.note(format!(
                    "fallocate mode {mode:#x} {len} at {off} (size {size})"
                ));
                self.io(fallocate(self.file(), mode, off, len), "fallocate");
                if !keep {
                    self.grow_model(off + len);
                }
            }
            Op::ZeroRange | Op::ZeroRangeKeepSize | Op::PunchHole => {
                let keep = op != Op::ZeroRange;
                let off = self.rng.below(size + 64 * KIB).min(MAX_SIZE - 1);
                let len = match self.rng.below(3) {
                    0 => self.rng.range(1, 4 * KIB),
                    _ => self.rng.range(1, 256 * KIB),
                }
                .min(MAX_SIZE - off);
                let mode = match op {
                    Op::PunchHole => libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    Op::ZeroRange => libc::FALLOC_FL_ZERO_RANGE,
                    _ => libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                };
                self.note(format!(
                    "fallocate mode {mode:#x} {len} at {off} (size {size})"
                ));
                self.io(
                    fallocate(self.file(), mode, off, len),
                    "fallocate zero/punch",
                );
                if !keep {
                    self.grow_model(off + len);
                }
                let hi = (off + len).min(self.size());
                if off < hi {
                    self.model[off as usize..hi as usize].fill(0);
                }
            }
            Op::CopyRange => {
                // Within the file, source and destination apart; the
                // destination may run past the end (the file grows).
                let (src, len) = self.range_within(size, 64 * KIB);
                if len == 0 {
                    return;
                }
                let dst = self.rng.below(size + 32 * KIB).min(MAX_SIZE - len);
                if dst < src + len && src < dst + len {
                    return;
                }
                self.note(format!(
                    "copy_file_range {len} from {src} to {dst} (size {size})"
                ));
                let n = self.io(
                    copy_range(self.file(), src, self.file(), dst, len),
                    "copy_file_range",
                );
                if n != len {
                    self.fail(format!("copy_file_range copied {n} of {len}"));
                }
                let chunk = self.model[src as usize..(src + len) as usize].to_vec();
                self.grow_model(dst + len);
                self.model[dst as usize..(dst + len) as usize].copy_from_slice(&chunk);
            }
            Op::Fsync => {
                self.note("fsync".into());
                self.io(self.file().sync_all(), "fsync");
            }
            Op::Reopen => {
                self.note("close + reopen".into());
                let f = self.file.take().expect("open");
                self.io(close_checked(f), "close");
                let f = OpenOptions::new().read(true).write(true).open(&self.path);
                self.file = Some(self.io(f, "reopen"));
            }
        }
    }

    /// Size for size and byte for byte, after every operation.
    fn check(&mut self) {
        let st = self.io(self.file().metadata(), "fstat").len();
        if st != self.size() {
            self.fail(format!("st_size {st}, model {}", self.size()));
        }
        let got = self.io(
            read_full_at(self.file(), 0, self.model.len() + 4096),
            "read back",
        );
        if got != self.model {
            self.fail(format!("content: {}", first_diff(&got, &self.model)));
        }
    }

    fn run(&mut self, ops: u64) {
        let t0 = Instant::now();
        for n in 0..ops {
            self.op_no = n;
            self.step();
            self.check();
        }
        let f = self.file.take().expect("open");
        self.io(close_checked(f), "final close");
        eprintln!(
            "exerciser {}: {ops} ops in {:.1} s, final size {}, seed {:#x}; ops: {:?}",
            self.path.display(),
            t0.elapsed().as_secs_f64(),
            self.size(),
            self.seed,
            self.counts
        );
    }
}

fn first_diff(got: &[u8], want: &[u8]) -> String {
    if got.len() != want.len() {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        return format!(
            "length {} vs model {} (first differing byte: {at:?})",
            got.len(),
            want.len()
        );
    }
    match got.iter().zip(want).position(|(a, b)| a != b) {
        Some(i) => {
            let end = got[i..]
                .iter()
                .zip(&want[i..])
                .position(|(a, b)| a == b)
                .map_or(got.len(), |n| i + n);
            format!(
                "bytes {i}..{end} differ (got {:02x?}.., model {:02x?}..)",
                &got[i..(i + 8).min(end)],
                &want[i..(i + 8).min(end)]
            )
        }
        None => "equal".into(),
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// close(2) with its error (flush reports failed write-back there).
fn close_checked(f: File) -> io::Result<()> {
    use std::os::unix::io::IntoRawFd;
    let fd = f.into_raw_fd();
    // SAFETY: we own fd (into_raw_fd) and close it once.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn exercise(cluster: &Cluster, mount: &Mount, name: &str, start: Vec<u8>, create: bool) {
    let path = mount.path(name);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(create)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}\n{}", path.display(), mount.log()));
    let seed = env_seed();
    eprintln!("exerciser seed = {seed:#x} (set RBDFS_TEST_SEED={seed:#x} to reproduce)");
    let mut x = Exerciser {
        mount,
        path,
        file: Some(file),
        model: start,
        rng: Rng::from_seed(seed),
        seed,
        op_no: 0,
        recent: Vec::new(),
        counts: Default::default(),
    };
    x.check();
    x.run(ops_from_env());
    let exported = cluster.export(name);
    if exported != x.model {
        x.fail(format!(
            "rbd export after the run: {}",
            first_diff(&exported, &x.model)
        ));
    }
}

#[test]
fn exerciser_on_a_file_created_through_the_mount() {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let name = scratch.name("fsx-new");
    // Small objects so that ranges cross many object boundaries.
    let mount = Mount::new(&cluster, &["-o", "object_size=16K"]);
    exercise(&cluster, &mount, &name, Vec::new(), true);
    drop(mount);
}

#[test]
fn exerciser_on_an_existing_striped_image() {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let name = scratch.name("fsx-old");
    let mut rng = Rng::new();
    let start = rng.bytes((200 * KIB + 123) as usize);
    let tmp = tempfile::NamedTempFile::new().unwrap();
    fs::write(tmp.path(), &start).unwrap();
    cluster.rbd(&[
        "import",
        "--no-progress",
        "--image-format",
        "2",
        "--object-size",
        "32K",
        "--stripe-unit",
        "8K",
        "--stripe-count",
        "3",
        "--image-feature",
        "layering,exclusive-lock,object-map,fast-diff,striping",
        tmp.path().to_str().unwrap(),
        &spec(&name),
    ]);
    let mount = Mount::new(&cluster, &[]);
    exercise(&cluster, &mount, &name, start, false);
    drop(mount);
}

#[test]
fn exerciser_on_a_format_1_image() {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let name = scratch.name("fsx-v1");
    let mut rng = Rng::new();
    let start = rng.bytes((100 * KIB + 7) as usize);
    cluster.import_v1(&name, &start, 14);
    let mount = Mount::new(&cluster, &[]);
    exercise(&cluster, &mount, &name, start, false);
    drop(mount);
}

/// Two shells appending fixed-size records with `>>` to one image: the
/// final size is the sum and every record is there once, whole.
#[test]
fn appends_from_two_processes_lose_nothing() {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let name = scratch.name("append");
    cluster.rbd(&["create", "--size", "4K", &spec(&name)]);
    let mount = Mount::new(&cluster, &[]);
    let path = mount.path(&name);
    // Records of exactly 1000 bytes: "A0001" padded with dots, newline.
    const RECORDS: u64 = 150;
    let script = format!(
        "for i in $(seq 1 {RECORDS}); do printf '%s%04d%0994d\\n' \"$1\" \"$i\" 0 >> \"$2\" || exit 1; done"
    );
    let children: Vec<_> = ["A", "B"]
        .iter()
        .map(|tag| {
            Command::new("bash")
                .args(["-c", &script, "append", tag])
                .arg(&path)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        let st = wait_timeout(&mut c, Duration::from_secs(300)).expect("appender hung");
        assert!(st.success(), "appender failed: {st}\n{}", mount.log());
    }
    let want = 4 * KIB + 2 * RECORDS * 1000;
    let got = fs::read(&path).unwrap();
    assert_eq!(got.len() as u64, want, "size after the appends");
    assert!(got[..4096].iter().all(|&b| b == 0), "the first 4K changed");
    let mut seen = std::collections::BTreeSet::new();
    for rec in got[4096..].chunks(1000) {
        let s = String::from_utf8_lossy(rec);
        assert!(
            rec.len() == 1000 && rec[999] == b'\n' && (rec[0] == b'A' || rec[0] == b'B'),
            "torn record {s:?}"
        );
        assert!(seen.insert(s[..5].to_string()), "record {} twice", &s[..5]);
    }
    assert_eq!(seen.len() as u64, 2 * RECORDS, "records");
    drop(mount);
    assert_eq!(cluster.export(&name), got, "rbd export after the appends");
    assert_eq!(cluster.image_size(&name), want, "rbd info size");
}

/// `-o fixed_size`: writes and fallocate past the end fail with ENOSPC and
/// change nothing; truncate still resizes; the default mount grows.
#[test]
fn fixed_size_refuses_growth_and_the_default_grows() {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let name = scratch.name("fixed");
    let mut rng = Rng::new();
    let mut model = rng.bytes((MIB + 5) as usize);
    let tmp = tempfile::NamedTempFile::new().unwrap();
    fs::write(tmp.path(), &model).unwrap();
    cluster.rbd(&[
        "import",
        "--no-progress",
        "--object-size",
        "64K",
        tmp.path().to_str().unwrap(),
        &spec(&name),
    ]);
    let size = model.len() as u64;
    {
        let mount = Mount::new(&cluster, &["-o", "fixed_size"]);
        let p = mount.path(&name);
        let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        for (what, off, len) in [
            ("at the end", size, 10u64),
            ("straddling the end", size - 100, 1000),
            ("beyond the end", size + MIB, 10),
        ] {
            assert_errno(
                f.write_at(&vec![0xEE; len as usize], off),
                &[libc::ENOSPC],
                what,
            );
        }
        assert_errno(
            fallocate(&f, 0, size - 10, 100),
            &[libc::ENOSPC],
            "fallocate past the end",
        );
        assert_errno(
            fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, size - 10, 100),
            &[libc::ENOSPC],
            "zero range past the end",
        );
        let mut app = OpenOptions::new().append(true).open(&p).unwrap();
        assert_errno(
            std::io::Write::write(&mut app, b"tail"),
            &[libc::ENOSPC],
            "O_APPEND write",
        );
        drop(app);
        // Inside the image, KEEP_SIZE modes work as usual.
        fallocate(
            &f,
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            size - 10,
            100,
        )
        .unwrap();
        model[(size - 10) as usize..].fill(0);
        f.sync_all().unwrap();
        assert_eq!(f.metadata().unwrap().len(), size, "size after refusals");
        assert_bytes_eq(&fs::read(&p).unwrap(), &model, "content after refusals");
        // truncate still resizes.
        f.set_len(size + 4096).unwrap();
        model.resize((size + 4096) as usize, 0);
        drop(f);
        assert_eq!(
            cluster.image_size(&name),
            size + 4096,
            "truncate on fixed_size"
        );
        drop(mount);
    }
    assert_bytes_eq(&cluster.export(&name), &model, "rbd export (fixed_size)");

    // The default: ZERO_RANGE and mode 0 past the end extend, a write past
    // the end leaves a hole between, PUNCH_HOLE without KEEP_SIZE is
    // refused (as Linux does).
    let mount = Mount::new(&cluster, &[]);
    let p = mount.path(&name);
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    let size = model.len() as u64;
    fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, size - 100, 5000).unwrap();
    model[(size - 100) as usize..].fill(0);
    model.resize((size + 4900) as usize, 0);
    assert_eq!(
        f.metadata().unwrap().len(),
        size + 4900,
        "ZERO_RANGE extends"
    );
    let size = model.len() as u64;
    fallocate(&f, 0, size, 7000).unwrap();
    model.resize((size + 7000) as usize, 0);
    assert_eq!(f.metadata().unwrap().len(), size + 7000, "mode 0 extends");
    assert_errno(
        fallocate(&f, libc::FALLOC_FL_PUNCH_HOLE, 0, 10),
        &[libc::EOPNOTSUPP],
        "punch hole without keep size",
    );
    let size = model.len() as u64;
    let tail_data = rng.bytes(3000);
    f.write_all_at(&tail_data, size + 200 * KIB).unwrap();
    model.resize((size + 200 * KIB) as usize, 0);
    model.extend_from_slice(&tail_data);
    f.sync_all().unwrap();
    drop(f);
    assert_bytes_eq(&fs::read(&p).unwrap(), &model, "content after growth");
    drop(mount);
    assert_eq!(
        cluster.image_size(&name),
        model.len() as u64,
        "rbd info size"
    );
    assert_bytes_eq(&cluster.export(&name), &model, "rbd export (grown)");
}
