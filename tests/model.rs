//! Reliability against a byte-exact model, through the real mount:
//!
//! - `model_format1` / `model_format2`: a seeded random sequence of
//!   operations (small, large and object-crossing writes, writes past the
//!   end, verified reads, fsync, close, snapshots by `rbd snap create` and by
//!   `File::create(.snap/IMG/NAME)`, snapshot removal, resize both ways,
//!   remount) on a 64 KiB-object image. Every read is checked against the
//!   model; at the end the head and every snapshot must equal the model
//!   through the mount and through `rbd export`. `RBDFS_MODEL_OPS` sets the
//!   operation count, `RBDFS_TEST_SEED` replays a run (contrib/model.sh).
//! - `concurrency_stress`: processes (this binary re-run as
//!   `stress_worker`) with two threads each write self-describing 4 KiB
//!   blocks into disjoint and shared regions of a format-1 and a format-2
//!   image, read everything, fsync, while snapshots are taken. Every
//!   observation (reads, final heads, snapshots) is checked afterwards
//!   against the logged write history: never torn, never from a write that
//!   had not started, never older than a write that had finished.

mod common;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use std::{env, thread};

use common::*;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const ORDER: u8 = 16;
const OBJ: u64 = 1 << ORDER;

// ---------------------------------------------------------------------------
// Seeds and data
// ---------------------------------------------------------------------------

fn env_u64(name: &str, default: u64) -> u64 {
    env::var(name).map_or(default, |v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be an integer"))
    })
}

/// Straight to fd 2, so the numbers show even for a passing test.
fn report(msg: &str) {
    let _ = writeln!(io::stderr(), "{msg}");
}

/// None if equal, else where and how `got` differs from `want`.
fn diff(got: &[u8], want: &[u8]) -> Option<String> {
    if got == want {
        return None;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    let n = got.iter().zip(want).filter(|(a, b)| a != b).count();
    Some(match first {
        Some(i) => format!(
            "{n} bytes differ, first at +{i} (got {:#04x}, want {:#04x}); lengths {} vs {}",
            got[i],
            want[i],
            got.len(),
            want.len()
        ),
        None => format!("length {} but want {}", got.len(), want.len()),
    })
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// close(2) with its result: `File`'s drop ignores it, but a close of a
/// written file is an acknowledgement (FUSE flush) and may report failure.
fn close_checked(f: File) -> io::Result<()> {
    // SAFETY: into_raw_fd gives up the File's ownership, so this close is
    // the descriptor's only one.
    match unsafe { libc::close(f.into_raw_fd()) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

fn snap_names(cluster: &Cluster, img: &str) -> BTreeMap<String, u64> {
    let out = cluster.rbd(&["snap", "ls", "--format", "json", &spec(img)]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut snaps = BTreeMap::new();
    for obj in text.split('{').skip(1) {
        let field = |key: &str| {
            let i = obj.find(&format!("\"{key}\":")).expect("snap ls field");
            obj[i + key.len() + 3..].trim_start().to_string()
        };
        let name = field("name");
        let name = name.trim_start_matches('"');
        let size = field("size");
        let size = size.split(|c: char| !c.is_ascii_digit()).next().unwrap();
        snaps.insert(
            name[..name.find('"').unwrap()].to_string(),
            size.parse().unwrap(),
        );
    }
    snaps
}

/// `rbd import` as a format-2 image with the default features and 64 KiB objects.
fn import_v2(cluster: &Cluster, name: &str, data: &[u8]) {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(data).unwrap();
    let path = f.path().to_str().unwrap().to_string();
    cluster.rbd(&[
        "import",
        "--no-progress",
        "--object-size",
        "64K",
        &path,
        &spec(name),
    ]);
}

// ---------------------------------------------------------------------------
// The model test
// ---------------------------------------------------------------------------

const MODEL_SIZE: u64 = 8 * MIB;
const MIN_SIZE: u64 = MIB;
const MAX_SIZE: u64 = 12 * MIB;
/// Enough to exercise snapshot interplay; bounds the final exports.
const MAX_SNAPS: usize = 5;
/// Kernel attribute/entry TTL is 1 s: a snapshot made by another client
/// may take that long to show.
const VISIBLE_WITHIN: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Write,
    WritePastEnd,
    Read,
    ReadSnap,
    Fsync,
    Close,
    SnapFs,
    SnapCli,
    SnapRm,
    Resize,
    Remount,
    VerifyHead,
}

/// Per mille. Snapshot create/remove cost 0.7-0.9 s each (a monitor round
/// trip: self-managed snapshot ids come from the osdmap), resize ~0.1 s,
/// remount ~0.3 s, everything else 0.5-10 ms; these weights keep 10,000
/// ops near 2.5 minutes per image. Every run prints its measured costs.
const WEIGHTS: &[(Op, u64)] = &[
    (Op::Write, 380),
    (Op::WritePastEnd, 6),
    (Op::Read, 330),
    (Op::ReadSnap, 90),
    (Op::Fsync, 80),
    (Op::Close, 40),
    (Op::SnapFs, 5),
    (Op::SnapCli, 3),
    (Op::SnapRm, 5),
    (Op::Resize, 12),
    (Op::Remount, 2),
    (Op::VerifyHead, 2),
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Format {
    V1,
    V2,
}

struct ModelRun<'a> {
    cluster: &'a Cluster,
    test: &'static str,
    format: Format,
    img: String,
    seed: u64,
    total: u64,
    rng: Rng,
    head: Vec<u8>,
    snaps: BTreeMap<String, Vec<u8>>,
    free_names: Vec<String>,
    next_name: u64,
    op_no: u64,
    recent: VecDeque<String>,
    stats: BTreeMap<Op, (u64, Duration)>,
    reported: bool,
    // Dropped in this order: the head file before its mount.
    file: Option<File>,
    mount: Option<Mount>,
}

impl Drop for ModelRun<'_> {
    fn drop(&mut self) {
        // A panic that did not go through fail() (harness helpers) still
        // gets the replay information.
        if thread::panicking() && !self.reported {
            eprintln!("{}", self.context());
        }
    }
}

impl ModelRun<'_> {
    fn context(&self) -> String {
        format!(
            "MODEL TEST {} ({:?} image {}) FAILED at op #{} of {}, seed {:#x}\n\
             replay: RBDFS_TEST_SEED={:#x} RBDFS_MODEL_OPS={} cargo test --release --test model -- --exact {}\n\
             last operations:\n  {}",
            self.test,
            self.format,
            self.img,
            self.op_no,
            self.total,
            self.seed,
            self.seed,
            self.total,
            self.test,
            self.recent.iter().cloned().collect::<Vec<_>>().join("\n  ")
        )
    }

    fn fail(&mut self, msg: String) -> ! {
        self.reported = true;
        let log = self.mount.as_ref().map(|m| tail(&m.log(), 60));
        panic!(
            "{msg}\n{}\n----- rbdfs log (last 60 lines) -----\n{}",
            self.context(),
            log.unwrap_or_default()
        );
    }

    /// Records the operation before doing it, so a failure shows it last.
    fn note(&mut self, what: String) {
        if self.recent.len() == 20 {
            self.recent.pop_front();
        }
        self.recent.push_back(format!("#{}: {what}", self.op_no));
    }

    fn mount(&self) -> &Mount {
        self.mount.as_ref().unwrap()
    }

    fn file(&self) -> &File {
        self.file.as_ref().unwrap()
    }

    fn snap_path(&self, name: &str) -> PathBuf {
        self.mount().path(".snap").join(&self.img).join(name)
    }

    fn open_head(&mut self) {
        let p = self.mount().path(&self.img);
        match OpenOptions::new().read(true).write(true).open(&p) {
            Ok(f) => self.file = Some(f),
            Err(e) => self.fail(format!("open {}: {e}", p.display())),
        }
    }

    fn close_head(&mut self) {
        if let Some(f) = self.file.take()
            && let Err(e) = close_checked(f)
        {
            self.fail(format!("close of the head: {e}"));
        }
    }

    fn check(&mut self, got: &[u8], want: &[u8], what: &str) {
        if let Some(d) = diff(got, want) {
            self.fail(format!("{what}: {d}"));
        }
    }

    fn pick_op(&mut self) -> Op {
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

    fn step(&mut self) {
        let op = self.pick_op();
        let t0 = Instant::now();
        match op {
            Op::Write => self.write(),
            Op::WritePastEnd => self.write_past_end(),
            Op::Read => self.read(),
            Op::ReadSnap => self.read_snap(),
            Op::Fsync => self.fsync(),
            Op::Close => {
                self.note("close + reopen the head".into());
                self.close_head();
                self.open_head();
            }
            Op::SnapFs => self.snap_create(false),
            Op::SnapCli => self.snap_create(true),
            Op::SnapRm => self.snap_remove(),
            Op::Resize => self.resize(),
            Op::Remount => self.remount(),
            Op::VerifyHead => {
                self.note("read the whole head".into());
                let got = fs::read(self.mount().path(&self.img));
                let got = got.unwrap_or_else(|e| self.fail(format!("read head: {e}")));
                let want = self.head.clone();
                self.check(&got, &want, "whole head");
            }
        }
        let s = self.stats.entry(op).or_default();
        s.0 += 1;
        s.1 += t0.elapsed();
    }

    /// 1 byte to 3 objects; a fifth deliberately straddle an object
    /// boundary, a tenth end exactly at the end of the image.
    fn write(&mut self) {
        let size = self.head.len() as u64;
        let len = match self.rng.below(100) {
            0..45 => self.rng.range(1, 512),
            45..70 => self.rng.range(513, OBJ),
            _ => self.rng.range(OBJ + 1, 3 * OBJ),
        }
        .min(size);
        let off = match self.rng.below(10) {
            0 | 1 if len >= 2 => {
                let b = self.rng.range(1, (size - 1) / OBJ) * OBJ;
                b - self.rng.range(1, (len - 1).min(b))
            }
            2 => size - len,
            _ => self.rng.below(size - len + 1),
        };
        let len = len.min(size - off);
        let data = self.rng.bytes(len as usize);
        self.note(format!("write {len} B at {off} (size {size})"));
        if let Err(e) = self.file().write_all_at(&data, off) {
            self.fail(format!("write {len} B at {off}: {e}"));
        }
        self.head[off as usize..(off + len) as usize].copy_from_slice(&data);
    }

    /// A short write that starts at or before the end and runs past it
    /// grows the image to the end of the write, as on any file (the
    /// default; `fixed_size` mounts refuse it, tested elsewhere).
    fn write_past_end(&mut self) {
        let size = self.head.len() as u64;
        let off = size - self.rng.below(2049.min(size + 1));
        let len = size - off + self.rng.range(1, 2048);
        if off + len > MAX_SIZE {
            self.note(format!(
                "(write past the end {size} skipped: at the size limit)"
            ));
            return;
        }
        let data = self.rng.bytes(len as usize);
        self.note(format!(
            "write {len} B at {off}, past the end {size}: grows"
        ));
        if let Err(e) = self.file().write_all_at(&data, off) {
            self.fail(format!("write past the end {size}, {len} B at {off}: {e}"));
        }
        self.head.resize((off + len) as usize, 0);
        self.head[off as usize..].copy_from_slice(&data);
    }

    fn read(&mut self) {
        let size = self.head.len() as u64;
        let off = self.rng.below(size + 4 * KIB);
        let len = match self.rng.below(3) {
            0 => self.rng.range(1, 4 * KIB),
            1 => self.rng.range(1, OBJ),
            _ => self.rng.range(OBJ, 3 * OBJ),
        };
        self.note(format!("read {len} B at {off} (size {size})"));
        let got = read_full_at(self.file(), off, len as usize)
            .unwrap_or_else(|e| self.fail(format!("read {len} B at {off}: {e}")));
        let want = self.head[off.min(size) as usize..(off + len).min(size) as usize].to_vec();
        self.check(&got, &want, &format!("head read {len} B at {off}"));
    }

    fn read_snap(&mut self) {
        if self.snaps.is_empty() {
            return self.read();
        }
        let i = self.rng.below(self.snaps.len() as u64) as usize;
        let name = self.snaps.keys().nth(i).unwrap().clone();
        let size = self.snaps[&name].len() as u64;
        let off = self.rng.below(size);
        let len = self.rng.range(1, 3 * OBJ);
        self.note(format!(
            "read {len} B at {off} of snapshot {name} (size {size})"
        ));
        let p = self.snap_path(&name);
        let f = File::open(&p).unwrap_or_else(|e| self.fail(format!("open {name}: {e}")));
        let meta = f.metadata().unwrap();
        if meta.len() != size {
            self.fail(format!("snapshot {name}: size {} want {size}", meta.len()));
        }
        let got = read_full_at(&f, off, len as usize)
            .unwrap_or_else(|e| self.fail(format!("read snapshot {name}: {e}")));
        let want = self.snaps[&name][off as usize..(off + len).min(size) as usize].to_vec();
        self.check(
            &got,
            &want,
            &format!("snapshot {name} read {len} B at {off}"),
        );
    }

    fn fsync(&mut self) {
        self.note("fsync".into());
        if let Err(e) = self.file().sync_all() {
            self.fail(format!("fsync: {e}"));
        }
    }

    fn snap_name(&mut self, prefix: &str) -> String {
        if !self.free_names.is_empty() && self.rng.below(3) == 0 {
            // Reusing a removed name: nothing of the old snapshot may show.
            let i = self.rng.below(self.free_names.len() as u64) as usize;
            return self.free_names.swap_remove(i);
        }
        self.next_name += 1;
        format!("{prefix}{}", self.next_name)
    }

    /// Through the filesystem the snapshot holds every acknowledged write
    /// (rbdfs flushes first). Through the CLI: on format 2 the lock handover
    /// flushes, so no fsync; format 1 has no such protocol, so only what
    /// was fsync'd is on RADOS and the model fsyncs first.
    fn snap_create(&mut self, cli: bool) {
        if self.snaps.len() >= MAX_SNAPS {
            return self.snap_remove();
        }
        let name = self.snap_name(if cli { "cli" } else { "fs" });
        let p = self.snap_path(&name);
        if cli {
            let fsync = self.format == Format::V1;
            self.note(format!("rbd snap create {name} (fsync first: {fsync})"));
            if fsync && let Err(e) = self.file().sync_all() {
                self.fail(format!("fsync: {e}"));
            }
            let target = format!("{}@{name}", spec(&self.img));
            match self
                .cluster
                .rbd_try(&["snap", "create", "--no-progress", &target])
            {
                Ok(o) if o.status.success() => {}
                r => self.fail(format!("rbd snap create {target}: {r:?}")),
            }
            let deadline = Instant::now() + VISIBLE_WITHIN;
            while let Err(e) = fs::metadata(&p) {
                if Instant::now() > deadline {
                    self.fail(format!(
                        "snapshot {name} not visible after {VISIBLE_WITHIN:?}: {e}"
                    ));
                }
                thread::sleep(Duration::from_millis(50));
            }
        } else {
            self.note(format!("File::create(.snap/IMG/{name})"));
            match File::create(&p).and_then(close_checked) {
                Ok(()) => {}
                Err(e) => self.fail(format!("create snapshot {name}: {e}")),
            }
        }
        self.snaps.insert(name, self.head.clone());
    }

    fn snap_remove(&mut self) {
        if self.snaps.is_empty() {
            return;
        }
        let i = self.rng.below(self.snaps.len() as u64) as usize;
        let name = self.snaps.keys().nth(i).unwrap().clone();
        self.note(format!("rm .snap/IMG/{name}"));
        let p = self.snap_path(&name);
        if let Err(e) = fs::remove_file(&p) {
            self.fail(format!("rm snapshot {name}: {e}"));
        }
        match fs::metadata(&p) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            r => self.fail(format!("stat of removed snapshot {name}: {r:?}")),
        }
        self.snaps.remove(&name);
        self.free_names.push(name);
    }

    /// ftruncate grows (zeros) or shrinks the head; snapshots keep their
    /// size and bytes. Sizes are object-aligned or not.
    fn resize(&mut self) {
        let size = self.head.len() as u64;
        let new = match self.rng.below(4) {
            0 => size + self.rng.range(1, 2 * MIB),
            1 => size.saturating_sub(self.rng.range(1, 2 * MIB)),
            2 => self.rng.range(MIN_SIZE / OBJ, MAX_SIZE / OBJ) * OBJ,
            _ => self.rng.range(MIN_SIZE, MAX_SIZE),
        }
        .clamp(MIN_SIZE, MAX_SIZE);
        self.note(format!("ftruncate {size} -> {new}"));
        if let Err(e) = self.file().set_len(new) {
            self.fail(format!("ftruncate to {new}: {e}"));
        }
        self.head.resize(new as usize, 0);
        match self.file().metadata().map(|m| m.len()) {
            Ok(len) if len == new => {}
            r => self.fail(format!("size after ftruncate to {new}: {r:?}")),
        }
    }

    /// A clean unmount flushes, so even un-fsync'd writes survive it.
    fn remount(&mut self) {
        self.note("unmount, check rbd export, mount again".into());
        self.close_head();
        self.mount = None;
        let got = self.cluster.export(&self.img);
        let want = self.head.clone();
        self.check(&got, &want, "rbd export of the head after unmount");
        self.mount = Some(Mount::new(self.cluster, &["-v"]));
        self.open_head();
    }

    /// Head and every snapshot through the mount, the snapshot list, then
    /// (unmounted) through `rbd export`.
    fn finish(&mut self) {
        self.op_no = self.total;
        self.note("final verification".into());
        self.close_head();
        let want = self.head.clone();
        let got = fs::read(self.mount().path(&self.img)).unwrap();
        self.check(&got, &want, "final head through the mount");
        for (name, want) in self.snaps.clone() {
            let got = fs::read(self.snap_path(&name))
                .unwrap_or_else(|e| self.fail(format!("read snapshot {name}: {e}")));
            self.check(
                &got,
                &want,
                &format!("final snapshot {name} through the mount"),
            );
        }
        let listed = snap_names(self.cluster, &self.img);
        let want_list: BTreeMap<String, u64> = self
            .snaps
            .iter()
            .map(|(n, d)| (n.clone(), d.len() as u64))
            .collect();
        if listed != want_list {
            self.fail(format!("rbd snap ls: {listed:?}, want {want_list:?}"));
        }
        self.mount = None;
        let got = self.cluster.export(&self.img);
        self.check(&got, &want, "final rbd export of the head");
        for (name, want) in self.snaps.clone() {
            let got = self.cluster.export(&format!("{}@{name}", self.img));
            self.check(&got, &want, &format!("final rbd export of snapshot {name}"));
        }
    }
}

fn model_test(test: &'static str, format: Format) {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let mut purge = SnapPurge::new(&cluster);
    let img = purge.add(scratch.name("model"));
    let seed = env_seed();
    let total = env_u64("RBDFS_MODEL_OPS", 10_000);
    report(&format!(
        "[{test}] seed {seed:#x}, {total} ops, image {img}"
    ));
    let mut rng = Rng::from_seed(seed);
    // Random data with a hole of whole objects (never-written objects must
    // read as zeros, also in snapshots).
    let mut initial = rng.bytes(MODEL_SIZE as usize);
    initial[(20 * OBJ) as usize..(28 * OBJ) as usize].fill(0);
    match format {
        Format::V1 => cluster.import_v1(&img, &initial, ORDER),
        Format::V2 => import_v2(&cluster, &img, &initial),
    }
    let mut run = ModelRun {
        cluster: &cluster,
        test,
        format,
        img,
        seed,
        total,
        rng,
        head: initial,
        snaps: BTreeMap::new(),
        free_names: Vec::new(),
        next_name: 0,
        op_no: 0,
        recent: VecDeque::new(),
        stats: BTreeMap::new(),
        reported: false,
        file: None,
        mount: Some(Mount::new(&cluster, &["-v"])),
    };
    run.open_head();
    let t0 = Instant::now();
    for i in 0..total {
        run.op_no = i;
        run.step();
    }
    let ops_time = t0.elapsed();
    run.finish();
    let mut lines = vec![format!(
        "[{test}] PASSED: seed {seed:#x}, {total} ops in {ops_time:.1?} (+{:.1?} final checks), {} snapshots at the end",
        t0.elapsed() - ops_time,
        run.snaps.len()
    )];
    for (op, (n, t)) in &run.stats {
        let mean = t.as_secs_f64() * 1000.0 / *n as f64;
        lines.push(format!(
            "  {op:?}: {n} ops, {mean:.2} ms mean, {t:.1?} total"
        ));
    }
    report(&lines.join("\n"));
}

#[test]
fn model_format1() {
    model_test("model_format1", Format::V1);
}

#[test]
fn model_format2() {
    model_test("model_format2", Format::V2);
}

// ---------------------------------------------------------------------------
// Concurrency stress
// ---------------------------------------------------------------------------

const BLOCK: u64 = 4 * KIB;
const STRESS_SIZE: u64 = 4 * MIB;
const BLOCKS: u64 = STRESS_SIZE / BLOCK;
/// Worker processes; each runs THREADS writer threads per image.
const PROCS: u64 = 3;
const THREADS: u64 = 2;
const WRITERS: u64 = PROCS * THREADS;
/// Writer w alone writes blocks [w*OWN, (w+1)*OWN); all share SHARED; the
/// blocks after SHARED are never written and must stay zero.
const OWN: u64 = 80;
const SHARED: std::ops::Range<u64> = WRITERS * OWN..WRITERS * OWN + 256;
const MAGIC: &[u8; 8] = b"rbdfsBLK";
/// A version of a block: (writer, seq), or None for the initial zeros.
type Version = Option<(u64, u64)>;

/// CLOCK_MONOTONIC in ns: one clock for all processes, so write, read,
/// fsync and snapshot intervals of different processes can be compared.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Self-describing content of `block` of image `img` as written by write
/// `seq` of `writer`: a header naming all four, then bytes derived from them.
fn block_bytes(img: u64, block: u64, writer: u64, seq: u64) -> Vec<u8> {
    let mut b = Rng::from_seed(img << 56 ^ writer << 48 ^ seq << 20 ^ block).bytes(BLOCK as usize);
    b[..8].copy_from_slice(MAGIC);
    for (i, v) in [img, writer, seq, block].into_iter().enumerate() {
        b[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
    }
    b
}

/// Which version `data` is, or why it is none (torn, foreign, garbage).
fn classify(img: u64, block: u64, data: &[u8]) -> Result<Version, String> {
    if data.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let field = |i: usize| u64::from_le_bytes(data[8 + 8 * i..16 + 8 * i].try_into().unwrap());
    if &data[..8] != MAGIC || field(0) != img || field(3) != block || field(1) >= WRITERS {
        return Err(format!(
            "img {img} block {block}: not a block header: {:02x?}",
            &data[..40]
        ));
    }
    let (writer, seq) = (field(1), field(2));
    match diff(data, &block_bytes(img, block, writer, seq)) {
        None => Ok(Some((writer, seq))),
        Some(d) => Err(format!(
            "img {img} block {block}: torn write {writer}/{seq}: {d}"
        )),
    }
}

/// The worker side: run by concurrency_stress as a child process.
#[test]
#[ignore = "a worker process of concurrency_stress, started by it"]
fn stress_worker() {
    let Ok(proc_no) = env::var("RBDFS_STRESS_PROC") else {
        return;
    };
    let proc_no: u64 = proc_no.parse().unwrap();
    let dir = PathBuf::from(env::var("RBDFS_STRESS_DIR").unwrap());
    let deadline = env_u64("RBDFS_STRESS_DEADLINE", 0);
    let seed = env_u64("RBDFS_STRESS_SEED", 0);
    let mut threads = Vec::new();
    for img in 0..2 {
        let path = PathBuf::from(env::var(format!("RBDFS_STRESS_IMG{img}")).unwrap());
        for t in 0..THREADS {
            let writer = proc_no * THREADS + t;
            let log = dir.join(format!("img{img}-w{writer}.log"));
            let path = path.clone();
            threads.push(thread::spawn(move || {
                stress_thread(img, writer, &path, &log, deadline, seed)
            }));
        }
    }
    for t in threads {
        t.join().expect("stress thread panicked");
    }
}

/// Writes (own region or shared), reads (anywhere) and fsyncs until
/// `deadline`, logging each with its time interval:
/// `W seq start end first_block n`, `R start end block writer seq` (writer
/// `-` for zeros), `F start end`, and `X message` for anything wrong.
fn stress_thread(img: u64, writer: u64, path: &Path, log: &Path, deadline: u64, seed: u64) {
    let mut out = BufWriter::new(File::create(log).unwrap());
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut rng = Rng::from_seed(seed ^ (img << 8 | writer).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let own = writer * OWN..(writer + 1) * OWN;
    let mut own_latest: Vec<Version> = vec![None; OWN as usize];
    let mut seq = 0;
    while mono_ns() < deadline {
        match rng.below(100) {
            r @ 0..60 => {
                let region = if r < 35 { own.clone() } else { SHARED };
                let n = rng.range(1, 8).min(region.end - region.start);
                let first = region.start + rng.below(region.end - region.start - n + 1);
                seq += 1;
                let buf: Vec<u8> = (first..first + n)
                    .flat_map(|b| block_bytes(img, b, writer, seq))
                    .collect();
                let t0 = mono_ns();
                if let Err(e) = f.write_all_at(&buf, first * BLOCK) {
                    writeln!(out, "X write {seq} of {n} blocks at {first}: {e}").unwrap();
                    break;
                }
                writeln!(out, "W {seq} {t0} {} {first} {n}", mono_ns()).unwrap();
                for b in (first..first + n).filter(|b| own.contains(b)) {
                    own_latest[(b - own.start) as usize] = Some((writer, seq));
                }
            }
            60..95 => {
                let first = rng.below(BLOCKS);
                let n = rng.range(1, 16).min(BLOCKS - first);
                let t0 = mono_ns();
                let data = match read_full_at(&f, first * BLOCK, (n * BLOCK) as usize) {
                    Ok(d) if d.len() == (n * BLOCK) as usize => d,
                    r => {
                        writeln!(
                            out,
                            "X read of {n} blocks at {first}: {:?}",
                            r.map(|d| d.len())
                        )
                        .unwrap();
                        break;
                    }
                };
                let t1 = mono_ns();
                for (i, chunk) in data.chunks(BLOCK as usize).enumerate() {
                    let b = first + i as u64;
                    match classify(img, b, chunk) {
                        Ok(v) => {
                            let (w, s) = v.map_or(("-".into(), 0), |(w, s)| (w.to_string(), s));
                            writeln!(out, "R {t0} {t1} {b} {w} {s}").unwrap();
                            // Our own region: nobody else writes it, so
                            // exactly our last write must show.
                            if own.contains(&b) && v != own_latest[(b - own.start) as usize] {
                                let want = own_latest[(b - own.start) as usize];
                                writeln!(out, "X own block {b} reads {v:?}, last write {want:?}")
                                    .unwrap();
                            }
                        }
                        Err(e) => writeln!(out, "X read at {t0}: {e}").unwrap(),
                    }
                }
            }
            _ => {
                let t0 = mono_ns();
                if let Err(e) = f.sync_all() {
                    writeln!(out, "X fsync: {e}").unwrap();
                    break;
                }
                writeln!(out, "F {t0} {}", mono_ns()).unwrap();
            }
        }
    }
    out.flush().unwrap();
}

struct WriteRec {
    start: u64,
    end: u64,
    blocks: std::ops::Range<u64>,
    /// End of the first fsync by the same thread that started after this
    /// write ended (u64::MAX: none).
    durable: u64,
}

/// Every write of every worker, parsed from the logs.
#[derive(Default)]
struct History {
    writes: HashMap<(u64, u64, u64), WriteRec>,
    by_block: HashMap<(u64, u64), Vec<(u64, u64)>>,
    /// (img, start, end, block, version seen)
    reads: Vec<(u64, u64, u64, u64, Version)>,
    errors: Vec<String>,
    fsyncs: u64,
}

impl History {
    fn load(dir: &Path) -> History {
        let mut h = History::default();
        for img in 0..2 {
            for writer in 0..WRITERS {
                let path = dir.join(format!("img{img}-w{writer}.log"));
                let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let mut fsyncs = Vec::new();
                let mut seqs = Vec::new();
                for line in BufReader::new(file).lines() {
                    let line = line.unwrap();
                    let f: Vec<&str> = line.split(' ').collect();
                    let num = |i: usize| f[i].parse::<u64>().unwrap();
                    match f[0] {
                        "W" => {
                            let blocks = num(4)..num(4) + num(5);
                            for b in blocks.clone() {
                                h.by_block
                                    .entry((img, b))
                                    .or_default()
                                    .push((writer, num(1)));
                            }
                            let rec = WriteRec {
                                start: num(2),
                                end: num(3),
                                blocks,
                                durable: u64::MAX,
                            };
                            h.writes.insert((img, writer, num(1)), rec);
                            seqs.push(num(1));
                        }
                        "R" => {
                            let v = (f[4] != "-").then(|| (num(4), num(5)));
                            h.reads.push((img, num(1), num(2), num(3), v));
                        }
                        "F" => fsyncs.push((num(1), num(2))),
                        _ => h.errors.push(format!("img {img} writer {writer}: {line}")),
                    }
                }
                h.fsyncs += fsyncs.len() as u64;
                for s in seqs {
                    let w = h.writes.get_mut(&(img, writer, s)).unwrap();
                    w.durable = fsyncs
                        .iter()
                        .find(|f| f.0 > w.end)
                        .map_or(u64::MAX, |f| f.1);
                }
            }
        }
        h
    }

    /// Whether `seen` is a version of (img, block) that an observation may
    /// return: written by a logged write covering the block that started
    /// before `upper`, and not superseded by a write that started after it
    /// ended and was complete (or, with `durable`, fsync'd) before `cutoff`.
    fn check(
        &self,
        img: u64,
        block: u64,
        seen: Version,
        cutoff: u64,
        durable: bool,
        upper: u64,
    ) -> Result<(), String> {
        let seen_end = match seen {
            None => 0,
            Some((w, s)) => {
                let rec = self
                    .writes
                    .get(&(img, w, s))
                    .ok_or(format!("{seen:?} was never logged"))?;
                if !rec.blocks.contains(&block) || rec.start >= upper {
                    return Err(format!(
                        "{seen:?} covers {:?}, started {} (limit {upper})",
                        rec.blocks, rec.start
                    ));
                }
                rec.end
            }
        };
        for &(w, s) in self.by_block.get(&(img, block)).into_iter().flatten() {
            let x = &self.writes[&(img, w, s)];
            let done = if durable { x.durable } else { x.end };
            if done < cutoff && x.start > seen_end {
                return Err(format!(
                    "stale: {seen:?} (ended {seen_end}) but write {w}/{s} ran {}..{} (durable {}) before {cutoff}",
                    x.start, x.end, x.durable
                ));
            }
        }
        Ok(())
    }

    /// Checks a whole image state; returns the problems found.
    fn check_image(
        &self,
        img: u64,
        data: &[u8],
        cutoff: u64,
        durable: bool,
        upper: u64,
        what: &str,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        for (b, chunk) in data.chunks(BLOCK as usize).enumerate() {
            let r = classify(img, b as u64, chunk)
                .and_then(|v| self.check(img, b as u64, v, cutoff, durable, upper));
            if let Err(e) = r {
                errors.push(format!("{what}: block {b}: {e}"));
            }
        }
        errors
    }
}

struct StressSnap {
    img: u64,
    name: String,
    start: u64,
    end: u64,
    /// Must hold every write that was fsync'd (true) or complete (false)
    /// when the snapshot began.
    durable: bool,
    via: &'static str,
    at_creation: Vec<u8>,
}

#[test]
fn concurrency_stress() {
    let cluster = Cluster::get();
    let mut scratch = Scratch::new(&cluster);
    let mut purge = SnapPurge::new(&cluster);
    let imgs = [
        purge.add(scratch.name("stress1")),
        purge.add(scratch.name("stress2")),
    ];
    cluster.create_v1_image(&imgs[0], STRESS_SIZE, ORDER);
    cluster.rbd(&[
        "create",
        "--size",
        "4M",
        "--object-size",
        "64K",
        &spec(&imgs[1]),
    ]);
    let secs = env_u64("RBDFS_STRESS_SECS", 30);
    let seed = env_seed();
    report(&format!(
        "[concurrency_stress] seed {seed:#x}, {secs} s, {PROCS} processes x {THREADS} threads per image"
    ));
    let logs = tempfile::TempDir::new().unwrap();
    let mount = Mount::new(&cluster, &["-v"]);
    let start = mono_ns();
    let deadline = start + secs * 1_000_000_000;
    let mut children: Vec<_> = (0..PROCS)
        .map(|p| {
            Command::new(env::current_exe().unwrap())
                .args([
                    "--exact",
                    "stress_worker",
                    "--ignored",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env("RBDFS_STRESS_PROC", p.to_string())
                .env("RBDFS_STRESS_DIR", logs.path())
                .env("RBDFS_STRESS_DEADLINE", deadline.to_string())
                .env("RBDFS_STRESS_SEED", seed.to_string())
                .env("RBDFS_STRESS_IMG0", mount.path(&imgs[0]))
                .env("RBDFS_STRESS_IMG1", mount.path(&imgs[1]))
                .stdout(File::create(logs.path().join(format!("proc{p}.out"))).unwrap())
                .spawn()
                .unwrap()
        })
        .collect();

    // Snapshots while the workers run: format 1 by the CLI (only fsync'd
    // data is on RADOS: format 1 has no flush protocol), format 2 through
    // the filesystem and by the CLI (rbdfs flushes first / on the lock
    // handover, so everything complete must be in).
    let mut snaps = Vec::new();
    for (frac, img, via) in [(3, 0, "cli"), (4, 1, "fs"), (6, 1, "cli")] {
        let at = start + secs * 1_000_000_000 * frac / 10;
        thread::sleep(Duration::from_nanos(at.saturating_sub(mono_ns())));
        let name = format!("mid-{via}");
        let t0 = mono_ns();
        if via == "cli" {
            let target = format!("{}@{name}", spec(&imgs[img as usize]));
            match cluster.rbd_try(&["snap", "create", "--no-progress", &target]) {
                Ok(o) if o.status.success() => {}
                r => panic!(
                    "rbd snap create {target} under load: {r:?}\n{}",
                    mount.log()
                ),
            }
        } else {
            let p = mount.path(".snap").join(&imgs[img as usize]).join(&name);
            File::create(&p).unwrap_or_else(|e| panic!("snapshot {name}: {e}\n{}", mount.log()));
        }
        let t1 = mono_ns();
        let p = mount.path(".snap").join(&imgs[img as usize]).join(&name);
        let mut at_creation = fs::read(&p);
        let wait = Instant::now();
        while at_creation.is_err() && wait.elapsed() < VISIBLE_WITHIN {
            thread::sleep(Duration::from_millis(50));
            at_creation = fs::read(&p);
        }
        let at_creation =
            at_creation.unwrap_or_else(|e| panic!("read {name}: {e}\n{}", mount.log()));
        report(&format!(
            "[concurrency_stress] snapshot {name} of image {img} took {} ms",
            (t1 - t0) / 1_000_000
        ));
        snaps.push(StressSnap {
            img,
            name,
            start: t0,
            end: t1,
            durable: img == 0,
            via,
            at_creation,
        });
    }

    // Bounded time: a worker still running long after the deadline is a
    // deadlock (or an I/O that never returns).
    for (p, child) in children.iter_mut().enumerate() {
        let left =
            Duration::from_nanos(deadline.saturating_sub(mono_ns())) + Duration::from_secs(120);
        match wait_timeout(child, left) {
            Some(st) if st.success() => {}
            Some(st) => panic!(
                "worker {p} failed ({st}):\n{}\n{}",
                fs::read_to_string(logs.path().join(format!("proc{p}.out"))).unwrap_or_default(),
                mount.log()
            ),
            None => panic!(
                "worker {p} still running 120 s after the deadline: deadlock? rbdfs pid {} \
                 (gdb -p PID -batch -ex 'thread apply all bt')\n{}",
                mount.pid(),
                mount.log()
            ),
        }
    }
    let h = History::load(logs.path());
    let mut errors = h.errors.clone();
    for &(img, t0, t1, b, v) in &h.reads {
        if let Err(e) = h.check(img, b, v, t0, false, t1) {
            errors.push(format!(
                "read of img {img} block {b} during {t0}..{t1}: {e}"
            ));
        }
    }
    let mut heads = Vec::new();
    for (i, img) in imgs.iter().enumerate() {
        let data = fs::read(mount.path(img)).unwrap();
        errors.extend(h.check_image(
            i as u64,
            &data,
            u64::MAX,
            false,
            u64::MAX,
            &format!("final head {i}"),
        ));
        heads.push(data);
    }
    for s in &snaps {
        let what = format!("snapshot {} ({}) of image {}", s.name, s.via, s.img);
        errors.extend(h.check_image(s.img, &s.at_creation, s.start, s.durable, s.end, &what));
        let later = fs::read(
            mount
                .path(".snap")
                .join(&imgs[s.img as usize])
                .join(&s.name),
        )
        .unwrap();
        if let Some(d) = diff(&later, &s.at_creation) {
            errors.push(format!(
                "{what} changed after it was taken (through the mount): {d}"
            ));
        }
    }
    let log = mount.log();
    drop(mount);
    for (i, img) in imgs.iter().enumerate() {
        if let Some(d) = diff(&cluster.export(img), &heads[i]) {
            errors.push(format!(
                "rbd export of image {i} differs from the mount: {d}"
            ));
        }
    }
    for s in &snaps {
        let exported = cluster.export(&format!("{}@{}", imgs[s.img as usize], s.name));
        if let Some(d) = diff(&exported, &s.at_creation) {
            errors.push(format!(
                "rbd export of snapshot {} differs from what the mount read: {d}",
                s.name
            ));
        }
    }
    report(&format!(
        "[concurrency_stress] seed {seed:#x}: {} writes, {} block reads, {} fsyncs, {} problems",
        h.writes.len(),
        h.reads.len(),
        h.fsyncs,
        errors.len()
    ));
    assert!(
        errors.is_empty(),
        "concurrency stress (seed {seed:#x}): {} problems, first ones:\n{}\n{}",
        errors.len(),
        errors
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        tail(&log, 80)
    );
}
