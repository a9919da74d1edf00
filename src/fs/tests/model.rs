//! The file system against a byte-exact model: writes (also past the end:
//! images grow), reads, fsync, close and reopen, snapshots made and removed
//! through `.snap` and read back, truncate up and down, remount, image
//! create/remove/rename in the root, and directory listings. Format 1,
//! format 2 with exclusive-lock + object-map, and striped format 2 images,
//! all in one pool over the in-memory cluster. Proptest shrinks a failing
//! run to a minimal op sequence.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use super::*;
use crate::image::admin;
use crate::store::memory::MemoryCluster;

/// Image names: the first three exist at the start (format 1, format 2
/// with exclusive-lock + object-map, striped); the rest are made by create
/// or rename.
const NAMES: [&str; 6] = ["f1", "l2", "s2", "n1", "n2", "n3"];
const SNAPS: [&str; 3] = ["s0", "s1", ".snap"];
/// Offsets and sizes stay within a few 4 KiB objects, so writes straddle
/// objects and stripes, and truncates cut through them.
const SPAN: u64 = 40 << 10;

#[derive(Debug, Clone)]
enum Op {
    Write {
        img: usize,
        off: u64,
        len: usize,
        seed: u8,
    },
    Read {
        img: usize,
        off: u64,
        len: u32,
    },
    Fsync(usize),
    Close(usize),
    Snap(usize, usize),
    ReadSnap {
        img: usize,
        snap: usize,
        off: u64,
        len: u32,
    },
    SnapRm(usize, usize),
    Truncate(usize, u64),
    Remount,
    Create(usize),
    Remove {
        img: usize,
        close_first: bool,
    },
    Rename {
        img: usize,
        to: usize,
        close_first: bool,
    },
    ListRoot,
    ListSnaps(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let img = 0..NAMES.len();
    let snap = 0..SNAPS.len();
    prop_oneof![
        300 => (img.clone(), 0..SPAN, 1usize..9000, any::<u8>())
            .prop_map(|(img, off, len, seed)| Op::Write { img, off, len, seed }),
        250 => (img.clone(), 0..SPAN + 8192, 1u32..12_000)
            .prop_map(|(img, off, len)| Op::Read { img, off, len }),
        60 => img.clone().prop_map(Op::Fsync),
        60 => img.clone().prop_map(Op::Close),
        25 => (img.clone(), snap.clone()).prop_map(|(i, s)| Op::Snap(i, s)),
        80 => (img.clone(), snap.clone(), 0..SPAN, 1u32..12_000)
            .prop_map(|(img, snap, off, len)| Op::ReadSnap { img, snap, off, len }),
        25 => (img.clone(), snap).prop_map(|(i, s)| Op::SnapRm(i, s)),
        40 => (img.clone(), 0..SPAN).prop_map(|(i, s)| Op::Truncate(i, s)),
        3 => Just(Op::Remount),
        20 => img.clone().prop_map(Op::Create),
        20 => (img.clone(), any::<bool>())
            .prop_map(|(img, close_first)| Op::Remove { img, close_first }),
        20 => (img.clone(), img.clone(), any::<bool>())
            .prop_map(|(img, to, close_first)| Op::Rename { img, to, close_first }),
        15 => Just(Op::ListRoot),
        15 => img.prop_map(Op::ListSnaps),
    ]
}

#[derive(Default, Clone)]
struct ImageModel {
    head: Vec<u8>,
    snaps: BTreeMap<String, Vec<u8>>,
}

/// The cluster, the mount over it, and what every file should hold.
struct Run {
    cluster: Arc<MemoryCluster>,
    create: CreateOptions,
    mount: Option<Mount>,
    images: BTreeMap<String, ImageModel>,
    /// Open head handle per image name.
    handles: HashMap<String, u64>,
}

fn errno<T: std::fmt::Debug>(r: Result<T, Errno>) -> Result<i32, TestCaseError> {
    match r {
        Ok(v) => Err(TestCaseError::fail(format!("expected an error, got {v:?}"))),
        Err(e) => Ok(e.code()),
    }
}

fn ok<T>(what: &str, r: Result<T, Errno>) -> Result<T, TestCaseError> {
    r.map_err(|e| TestCaseError::fail(format!("{what}: {e}")))
}

fn clip(data: &[u8], off: u64, len: u32) -> &[u8] {
    let start = (off as usize).min(data.len());
    let end = (off as usize).saturating_add(len as usize).min(data.len());
    &data[start..end]
}

impl Run {
    fn new(create: CreateOptions) -> Run {
        let cluster = MemoryCluster::new();
        let store = cluster.client();
        let mut images = BTreeMap::new();
        for (name, opts) in [("f1", v1()), ("l2", v2lock()), ("s2", striped())] {
            admin::create_image(&*store, name, 8192, &opts).expect("create");
            images.insert(
                name.to_string(),
                ImageModel {
                    head: vec![0; 8192],
                    ..ImageModel::default()
                },
            );
        }
        let mount = Some(Mount::new(store, create.clone()));
        Run {
            cluster,
            create,
            mount,
            images,
            handles: HashMap::new(),
        }
    }

    fn m(&self) -> &Mount {
        self.mount.as_ref().expect("mounted")
    }

    /// The head handle of `name`, opening one if needed; the errno the
    /// open gave if the image does not exist.
    fn head(&mut self, name: &str) -> Result<Result<u64, i32>, TestCaseError> {
        if let Some(&fh) = self.handles.get(name) {
            return Ok(Ok(fh));
        }
        match self.m().open_head(name) {
            Ok(fh) => {
                prop_assert!(self.images.contains_key(name), "{name} opened");
                self.handles.insert(name.to_string(), fh);
                Ok(Ok(fh))
            }
            Err(e) => {
                prop_assert!(!self.images.contains_key(name), "open {name}: {e}");
                Ok(Err(e.code()))
            }
        }
    }

    fn close(&mut self, name: &str) -> Result<(), TestCaseError> {
        if let Some(fh) = self.handles.remove(name) {
            ok(&format!("close {name}"), self.m().fs.flush(fh))?;
            self.m().fs.release(fh);
        }
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Write {
                img,
                off,
                len,
                seed,
            } => {
                let name = NAMES[img];
                let Ok(fh) = self.head(name)? else {
                    return Ok(());
                };
                let data = pattern(seed, len);
                let n = ok(
                    &format!("write {name} {off}+{len}"),
                    self.m().fs.write(fh, off, &data),
                )?;
                prop_assert_eq!(n as usize, len);
                let model = self.images.get_mut(name).expect("modelled");
                let end = off as usize + len;
                if model.head.len() < end {
                    model.head.resize(end, 0);
                }
                model.head[off as usize..end].copy_from_slice(&data);
            }
            Op::Read { img, off, len } => {
                let name = NAMES[img];
                let Ok(fh) = self.head(name)? else {
                    return Ok(());
                };
                let got = ok(&format!("read {name}"), self.m().fs.read(fh, off, len))?;
                let want = &self.images[name].head;
                prop_assert!(
                    got == clip(want, off, len),
                    "read {} {}+{}: {} bytes, want {}",
                    name,
                    off,
                    len,
                    got.len(),
                    clip(want, off, len).len()
                );
                let ino = ok("lookup", self.m().ino(ROOT_INO, name))?;
                let attr = ok("getattr", self.m().fs.getattr(ino))?;
                prop_assert_eq!(attr.size, want.len() as u64);
            }
            Op::Fsync(img) => {
                if let Some(&fh) = self.handles.get(NAMES[img]) {
                    ok("fsync", self.m().fs.fsync(fh, false))?;
                }
            }
            Op::Close(img) => self.close(NAMES[img])?,
            Op::Snap(img, snap) => {
                let (name, snap) = (NAMES[img], SNAPS[snap]);
                let Some(model) = self.images.get(name) else {
                    prop_assert_eq!(errno(self.m().snap_dir(name))?, libc::ENOENT);
                    return Ok(());
                };
                let dir = ok("snap dir", self.m().snap_dir(name))?;
                let r = self.m().fs.create(dir, OsStr::new(snap));
                if model.snaps.contains_key(snap) {
                    prop_assert_eq!(errno(r)?, libc::EEXIST);
                } else {
                    let (attr, opened) = ok(&format!("snapshot {name}@{snap}"), r)?;
                    prop_assert_eq!(attr.size, model.head.len() as u64);
                    prop_assert!(!opened.direct_io);
                    self.m().fs.release(opened.fh);
                    let head = model.head.clone();
                    self.images
                        .get_mut(name)
                        .expect("modelled")
                        .snaps
                        .insert(snap.to_string(), head);
                }
            }
            Op::ReadSnap {
                img,
                snap,
                off,
                len,
            } => {
                let (name, snap) = (NAMES[img], SNAPS[snap]);
                let Ok(dir) = self.m().snap_dir(name) else {
                    prop_assert!(!self.images.contains_key(name));
                    return Ok(());
                };
                let want = self.images.get(name).and_then(|m| m.snaps.get(snap));
                let ino = match (self.m().ino(dir, snap), want) {
                    (Ok(ino), Some(_)) => ino,
                    (Err(e), None) if e.code() == libc::ENOENT => return Ok(()),
                    (r, _) => {
                        return Err(TestCaseError::fail(format!(
                            "lookup {name}@{snap}: {r:?}, modelled: {}",
                            want.is_some()
                        )));
                    }
                };
                let want = want.expect("checked");
                prop_assert_eq!(errno(self.m().fs.open(ino, libc::O_RDWR))?, libc::EROFS);
                let opened = ok("open snapshot", self.m().fs.open(ino, libc::O_RDONLY))?;
                let got = self.m().fs.read(opened.fh, off, len);
                prop_assert_eq!(errno(self.m().fs.write(opened.fh, 0, b"x"))?, libc::EROFS);
                self.m().fs.release(opened.fh);
                let got = ok("read snapshot", got)?;
                prop_assert!(
                    got == clip(want, off, len),
                    "read {}@{} {}+{}",
                    name,
                    snap,
                    off,
                    len
                );
                prop_assert_eq!(
                    ok("getattr", self.m().fs.getattr(ino))?.size,
                    want.len() as u64
                );
            }
            Op::SnapRm(img, snap) => {
                let (name, snap) = (NAMES[img], SNAPS[snap]);
                let Ok(dir) = self.m().snap_dir(name) else {
                    prop_assert!(!self.images.contains_key(name));
                    return Ok(());
                };
                let r = self.m().fs.unlink(dir, OsStr::new(snap));
                let model = self.images.get_mut(name).expect("modelled");
                if model.snaps.remove(snap).is_some() {
                    ok(&format!("remove {name}@{snap}"), r)?;
                } else {
                    prop_assert_eq!(errno(r)?, libc::ENOENT);
                }
            }
            Op::Truncate(img, size) => {
                let name = NAMES[img];
                let Ok(ino) = self.m().ino(ROOT_INO, name) else {
                    prop_assert!(!self.images.contains_key(name));
                    return Ok(());
                };
                let attr = ok(
                    &format!("truncate {name} {size}"),
                    self.m().fs.setattr(ino, None, None, None, Some(size)),
                )?;
                prop_assert_eq!(attr.size, size);
                self.images
                    .get_mut(name)
                    .expect("modelled")
                    .head
                    .resize(size as usize, 0);
            }
            Op::Remount => self.remount()?,
            Op::Create(img) => {
                let name = NAMES[img];
                let r = self.m().fs.create(ROOT_INO, OsStr::new(name));
                if self.images.contains_key(name) {
                    prop_assert_eq!(errno(r)?, libc::EEXIST);
                } else {
                    let (attr, opened) = ok(&format!("create {name}"), r)?;
                    prop_assert_eq!(attr.size, 0);
                    prop_assert!(opened.direct_io);
                    self.images.insert(name.to_string(), ImageModel::default());
                    // The creating handle is the image's head handle.
                    self.handles.insert(name.to_string(), opened.fh);
                }
            }
            Op::Remove { img, close_first } => {
                let name = NAMES[img];
                if close_first {
                    self.close(name)?;
                }
                let r = self.m().fs.unlink(ROOT_INO, OsStr::new(name));
                match self.images.get(name) {
                    None => prop_assert_eq!(errno(r)?, libc::ENOENT),
                    Some(_) if self.handles.contains_key(name) => {
                        prop_assert_eq!(errno(r)?, libc::EBUSY)
                    }
                    Some(m) if !m.snaps.is_empty() => {
                        prop_assert_eq!(errno(r)?, libc::ENOTEMPTY)
                    }
                    Some(_) => {
                        ok(&format!("remove {name}"), r)?;
                        self.images.remove(name);
                    }
                }
            }
            Op::Rename {
                img,
                to,
                close_first,
            } => {
                let (old, new) = (NAMES[img], NAMES[to]);
                if close_first {
                    self.close(old)?;
                }
                let r = self
                    .m()
                    .fs
                    .rename(ROOT_INO, OsStr::new(old), ROOT_INO, OsStr::new(new));
                if self.handles.contains_key(old) {
                    prop_assert_eq!(errno(r)?, libc::EBUSY);
                } else if !self.images.contains_key(old) {
                    prop_assert_eq!(errno(r)?, libc::ENOENT);
                } else if self.images.contains_key(new) {
                    prop_assert_eq!(errno(r)?, libc::EEXIST);
                } else {
                    ok(&format!("rename {old} {new}"), r)?;
                    let model = self.images.remove(old).expect("modelled");
                    self.images.insert(new.to_string(), model);
                }
            }
            Op::ListRoot => {
                let names = ok("readdir /", self.m().names(ROOT_INO))?;
                let mut want = vec![
                    SNAP_DIR.to_string(),
                    DIFF_DIR.to_string(),
                    PART_DIR.to_string(),
                ];
                want.extend(self.images.keys().cloned());
                prop_assert_eq!(&names, &want);
                let snap_root = self.m().snap_root();
                let names = ok("readdir /.snap", self.m().names(snap_root))?;
                prop_assert_eq!(&names[..], &want[3..]);
                let diff_root = ok("lookup /.diff", self.m().ino(ROOT_INO, DIFF_DIR))?;
                let names = ok("readdir /.diff", self.m().names(diff_root))?;
                prop_assert_eq!(&names[..], &want[3..]);
                // `.part`: its `.snap`, then a directory per image, in
                // both; no image here has a partition table.
                let part_root = ok("lookup /.part", self.m().ino(ROOT_INO, PART_DIR))?;
                let names = ok("readdir /.part", self.m().names(part_root))?;
                prop_assert_eq!(&names[0], SNAP_DIR);
                prop_assert_eq!(&names[1..], &want[3..]);
                let part_snaps = ok("lookup /.part/.snap", self.m().ino(part_root, SNAP_DIR))?;
                let names = ok("readdir /.part/.snap", self.m().names(part_snaps))?;
                prop_assert_eq!(&names[..], &want[3..]);
            }
            Op::ListSnaps(img) => {
                let name = NAMES[img];
                let Some(model) = self.images.get(name) else {
                    prop_assert_eq!(errno(self.m().snap_dir(name))?, libc::ENOENT);
                    return Ok(());
                };
                let dir = ok("snap dir", self.m().snap_dir(name))?;
                let mut names = ok("readdir snaps", self.m().names(dir))?;
                names.sort();
                let want: Vec<String> = model.snaps.keys().cloned().collect();
                prop_assert_eq!(names, want);
            }
        }
        Ok(())
    }

    /// Every file closed (flush: nothing may fail), the mount's end (write
    /// back, locks given back), and a new mount by a new client.
    fn remount(&mut self) -> Result<(), TestCaseError> {
        let names: Vec<String> = self.handles.keys().cloned().collect();
        for name in names {
            self.close(&name)?;
        }
        let mount = self.mount.take().expect("mounted");
        ok(
            "unmount",
            mount.unmount().map_err(|e| Errno::image("unmount", &e)),
        )?;
        self.mount = Some(Mount::new(self.cluster.client(), self.create.clone()));
        Ok(())
    }

    /// At the end: every head and snapshot, read whole after a remount.
    fn verify_all(&mut self) -> Result<(), TestCaseError> {
        self.remount()?;
        let names: Vec<String> = self.images.keys().cloned().collect();
        for name in names {
            let fh = self
                .head(&name)?
                .map_err(|e| TestCaseError::fail(format!("open {name}: errno {e}")))?;
            let got = ok("read", self.m().fs.read(fh, 0, 1 << 20))?;
            prop_assert!(
                got == self.images[&name].head,
                "{} differs after remount",
                name
            );
            self.close(&name)?;
            let snaps: Vec<String> = self.images[&name].snaps.keys().cloned().collect();
            for (i, snap) in snaps.iter().enumerate() {
                self.step(&Op::ReadSnap {
                    img: NAMES.iter().position(|n| *n == name).expect("known"),
                    snap: SNAPS.iter().position(|s| s == snap).expect("known"),
                    off: i as u64,
                    len: 1 << 20,
                })?;
            }
        }
        Ok(())
    }
}

fn creates() -> impl Strategy<Value = (&'static str, CreateOptions)> {
    prop_oneof![
        Just(("v1", v1())),
        Just(("v2lock", v2lock())),
        Just(("striped", striped())),
    ]
}

#[test]
fn fs_matches_a_byte_model() {
    // 26 cases of 3500-5000 ops: over 100,000 ops, ~20 s with --release;
    // a debug build runs fewer.
    const CASES: u32 = if cfg!(debug_assertions) { 3 } else { 26 };
    let total = AtomicU64::new(0);
    let slowest = AtomicU64::new(0);
    let started = Instant::now();
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (creates(), proptest::collection::vec(op(), 3500..5000));
    let result = runner.run(&strategy, |((_, create), ops)| {
        total.fetch_add(ops.len() as u64, Ordering::Relaxed);
        let case = Instant::now();
        let mut run = Run::new(create);
        for op in &ops {
            run.step(op)?;
        }
        let result = run.verify_all();
        slowest.fetch_max(case.elapsed().as_millis() as u64, Ordering::Relaxed);
        result
    });
    let elapsed = started.elapsed();
    println!(
        "fs model: {} cases, {} ops in {:.1} s (slowest case {} ms)",
        CASES,
        total.load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
        slowest.load(Ordering::Relaxed)
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
