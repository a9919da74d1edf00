//! Image lifecycle through the filesystem: `touch`/`truncate`/`cp` create
//! images as `rbd create` does, `truncate -s` resizes as `rbd resize`, `rm`
//! and `mv` remove and rename as `rbd rm`/`rbd rename` (refused while in use
//! or with snapshots), O_TRUNC on an existing image is ignored, images are
//! sparse files (SEEK_DATA/SEEK_HOLE, st_blocks, punch hole), a loop device
//! carries ext4 on one, and `user.rbd.*` xattrs say what `rbd info` says.
//! The `rbd`/`rados` CLIs are the oracle.

mod common;

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use tempfile::TempDir;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const FEATURES: &str = "layering,exclusive-lock,object-map,fast-diff,deep-flatten";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Images removed when the test ends (newest first, so clones go before
/// parents), after unprotecting and purging snapshots; names that no longer
/// exist are skipped. Declare it BEFORE any `Mount`.
struct Images(Cluster, Vec<String>, Vec<(String, String)>);

impl Images {
    fn name(&mut self, tag: &str) -> String {
        self.1.push(unique_name(tag));
        self.1.last().unwrap().clone()
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        for name in self.1.drain(..).rev() {
            let s = spec(&name);
            for (_, snap) in self.2.iter().filter(|(i, _)| *i == name) {
                let _ = self
                    .0
                    .rbd_try(&["snap", "unprotect", &format!("{s}@{snap}")]);
            }
            let _ = self.0.rbd_try(&["snap", "purge", "--no-progress", &s]);
            match self.0.rbd_try(&["rm", "--no-progress", &s]) {
                Ok(o) if o.status.success() => {}
                Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No such file") => {}
                r => eprintln!("warning: could not remove image {name}: {r:?}"),
            }
        }
    }
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// `rbd CMD` split at whitespace; panics unless it succeeds.
fn rbd(cluster: &Cluster, cmd: &str) -> Output {
    cluster.rbd(&cmd.split_whitespace().collect::<Vec<_>>())
}

/// Runs a local tool; panics (with rbdfs's log) unless it succeeds.
fn run(cmd: &mut Command, mount: Option<&Mount>) -> Output {
    let desc = format!("{cmd:?}");
    let out = run_timeout(cmd, Duration::from_secs(300)).unwrap_or_else(|e| panic!("{e}"));
    let log = mount.map(|m| m.log()).unwrap_or_default();
    let st = out.status;
    assert!(st.success(), "{desc}: {st}: {}\n{log}", text(&out));
    out
}

/// `CMD ARGS.. PATH`.
fn tool(mount: &Mount, cmd: &str, args: &[&str], path: &Path) -> Output {
    run(Command::new(cmd).args(args).arg(path), Some(mount))
}

/// Unwraps `r` or panics with `what`, the error and rbdfs's log.
#[track_caller]
fn ok<T>(r: io::Result<T>, what: &str, mount: &Mount) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}\n{}", mount.log()))
}

fn errno<T>(r: io::Result<T>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// `r` failed with `want`.
#[track_caller]
fn fails<T: Debug>(r: io::Result<T>, want: i32, what: &str, mount: &Mount) {
    if let Err(e) = &r
        && e.raw_os_error() == Some(want)
    {
        return;
    }
    let want = io::Error::from_raw_os_error(want);
    panic!("{what}: got {r:?}, want {want}\n{}", mount.log());
}

/// `rbd ls` has every `has` and no `lacks`.
#[track_caller]
fn in_ls(cluster: &Cluster, has: &[&String], lacks: &[&String], what: &str) {
    let ls = cluster.ls();
    let ok = has.iter().all(|n| ls.contains(n)) && !lacks.iter().any(|n| ls.contains(n));
    assert!(ok, "{what}: rbd ls is {ls:?}; want {has:?}, not {lacks:?}");
}

/// The head's size both as st_size and in `rbd info`.
#[track_caller]
fn sizes(cluster: &Cluster, mount: &Mount, img: &str, want: u64, what: &str) {
    assert_eq!(size_of(mount, &mount.path(img)), want, "{what}: st_size");
    assert_eq!(cluster.image_size(img), want, "{what}: rbd info size");
}

/// Content through the mount.
#[track_caller]
fn reads(mount: &Mount, p: &Path, want: &[u8], what: &str) {
    let got = ok(fs::read(p), &format!("read {}", p.display()), mount);
    assert_bytes_eq(&got, want, what);
}

/// Content as `rbd export` sees it.
#[track_caller]
fn exports(cluster: &Cluster, what: &str, want: &[u8]) {
    assert_bytes_eq(&cluster.export(what), want, &format!("rbd export {what}"));
}

fn info(cluster: &Cluster, what: &str) -> String {
    text(&rbd(cluster, &format!("info --format json {}", spec(what))))
}

fn jstr(text: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\":\"");
    let rest = &text[text.find(&pat)? + pat.len()..];
    Some(rest[..rest.find('"')?].to_string())
}

fn jnum(text: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let rest = &text[text.find(&pat)? + pat.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A JSON list of strings as "a,b,c".
fn jlist(text: &str, key: &str) -> String {
    let pat = format!("\"{key}\":[");
    let Some(i) = text.find(&pat) else {
        return String::new();
    };
    let rest = &text[i + pat.len()..];
    rest[..rest.find(']').unwrap()].replace('"', "")
}

fn rados_ls(cluster: &Cluster) -> Vec<String> {
    text(&cluster.rados(&["ls"]))
        .lines()
        .map(str::to_string)
        .collect()
}

/// `rbd object-map check` exits 0 even on a mismatch, so read its output.
fn assert_object_map_ok(cluster: &Cluster, what: &str) {
    let args = ["object-map", "check", "--no-progress", &spec(what)];
    let out = cluster.rbd_try(&args).unwrap();
    let t = text(&out);
    let bad = !out.status.success() || t.contains("error") || t.contains("failed");
    assert!(!bad, "rbd object-map check {what}: {}\n{t}", out.status);
    let invalid = info(cluster, what).contains("invalid");
    assert!(!invalid, "{what}: object map flagged invalid");
}

fn open_rw(mount: &Mount, p: &Path) -> File {
    let r = OpenOptions::new().read(true).write(true).open(p);
    ok(r, &format!("open {} rw", p.display()), mount)
}

fn size_of(mount: &Mount, p: &Path) -> u64 {
    ok(fs::metadata(p), &format!("stat {}", p.display()), mount).len()
}

fn snap_path(mount: &Mount, img: &str, snap: &str) -> PathBuf {
    mount.path(".snap").join(img).join(snap)
}

fn import(cluster: &Cluster, name: &str, data: &[u8], extra: &str) {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(data).unwrap();
    f.flush().unwrap();
    let p = f.path().to_str().unwrap();
    rbd(
        cluster,
        &format!("import --no-progress {extra} {p} {}", spec(name)),
    );
}

fn lseek(f: &File, off: u64, whence: i32) -> Result<u64, i32> {
    // SAFETY: `f` keeps the descriptor open across the call; lseek touches
    // no memory of ours.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off as i64, whence) };
    let e = io::Error::last_os_error().raw_os_error().unwrap();
    if r < 0 { Err(e) } else { Ok(r as u64) }
}

fn fallocate(f: &File, mode: i32, off: u64, len: u64) -> io::Result<()> {
    // SAFETY: `f` keeps the descriptor open across the call; fallocate
    // touches no memory of ours.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, off as i64, len as i64) };
    if r != 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Retries `check` until Ok or `limit` passes.
fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + limit;
    while let Err(e) = check() {
        assert!(
            Instant::now() < deadline,
            "{what}: still {e} after {limit:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// st_blocks of `p` (a fresh stat each try) comes into `range` within 8 s
/// (the head's allocation is cached for about 5 s).
fn wait_blocks(p: &Path, range: std::ops::RangeInclusive<u64>, what: &str) {
    eventually(what, Duration::from_secs(8), || {
        let b = fs::metadata(p).map_err(|e| e.to_string())?.blocks() * 512;
        match range.contains(&b) {
            true => Ok(()),
            false => Err(format!("{b} bytes, want {range:?}")),
        }
    });
}

/// `path` is `size` bytes: zeros overlaid with `extents`. Compared in chunks
/// (these files are 1 GiB and mostly holes).
#[track_caller]
fn assert_file_model(path: &Path, size: u64, extents: &[(u64, Vec<u8>)], what: &str) {
    let f = File::open(path).unwrap_or_else(|e| panic!("{what}: open: {e}"));
    assert_eq!(f.metadata().unwrap().len(), size, "{what}: size");
    const CH: u64 = 16 * MIB;
    for start in (0..size).step_by(CH as usize) {
        let len = CH.min(size - start);
        let got = read_full_at(&f, start, len as usize).unwrap();
        let mut want = vec![0u8; len as usize];
        for (off, d) in extents {
            let (s, e) = ((*off).max(start), (off + d.len() as u64).min(start + len));
            if s < e {
                let src = &d[(s - off) as usize..(e - off) as usize];
                want[(s - start) as usize..(e - start) as usize].copy_from_slice(src);
            }
        }
        if got != want {
            assert_bytes_eq(&got, &want, &format!("{what}: chunk at {start}"));
        }
    }
}

fn export_to(cluster: &Cluster, what: &str, dir: &Path) -> PathBuf {
    let p = dir.join(what.replace('@', "_at_"));
    let cmd = format!("export --no-progress {} {}", spec(what), p.display());
    rbd(cluster, &cmd);
    p
}

// ---------------------------------------------------------------------------
// 1. create / remove
// ---------------------------------------------------------------------------

#[test]
fn create_then_remove_leaves_nothing() {
    let cluster = Cluster::get();
    let mut rng = Rng::new();
    for (opt, format, order) in [
        (None, 2, 22),
        (Some("image_format=1"), 1, 22),
        (Some("object_size=64K"), 2, 16),
    ] {
        let mut images = Images(cluster.clone(), vec![], vec![]);
        let name = images.name("new");
        let mut args = vec!["-v"];
        args.extend(opt.iter().flat_map(|o| ["-o", *o]));
        let mount = Mount::new(&cluster, &args);
        let p = mount.path(&name);
        let what = format!("{name} (-o {opt:?})");

        tool(&mount, "truncate", &["-s", "1G"], &p);
        let i = info(&cluster, &name);
        let (id, prefix) = (
            jstr(&i, "id").unwrap(),
            jstr(&i, "block_name_prefix").unwrap(),
        );
        let want = (Some(GIB), Some(format), Some(order));
        let got = (jnum(&i, "size"), jnum(&i, "format"), jnum(&i, "order"));
        assert_eq!(got, want, "{what}: size, format, order in {i}");
        if format == 2 {
            assert_eq!(jlist(&i, "features"), FEATURES, "{what}: features");
            assert_eq!(prefix, format!("rbd_data.{id}"), "{what}: object prefix");
        } else {
            assert!(prefix.starts_with("rb.0."), "{what}: v1 prefix {prefix}");
        }
        in_ls(&cluster, &[&name], &[], &what);
        assert_eq!(size_of(&mount, &p), GIB, "{what}: st_size");

        // Data in several objects, one write straddling an object boundary.
        let obj = 1u64 << order;
        let f = open_rw(&mount, &p);
        let writes = [
            (0, 100 * KIB),
            (5 * obj - 100, obj + 200),
            (GIB - 3000, 3000),
        ];
        for (off, len) in writes {
            let d = rng.bytes(len as usize);
            ok(
                f.write_all_at(&d, off),
                &format!("{what}: write at {off}"),
                &mount,
            );
            assert_bytes_eq(&read_full_at(&f, off, len as usize).unwrap(), &d, &what);
        }
        f.sync_all().unwrap();
        drop(f);
        let header = match format {
            2 => format!("rbd_header.{id}"),
            _ => format!("{name}.rbd"),
        };
        let others = [format!("rbd_id.{name}"), format!("rbd_object_map.{id}")];
        let mine = |o: &String| {
            o.starts_with(&format!("{prefix}."))
                || *o == header
                || (format == 2 && others.iter().any(|x| o.starts_with(x)))
        };
        let before: Vec<String> = rados_ls(&cluster).into_iter().filter(mine).collect();
        let ndata = before.iter().filter(|o| o.starts_with(&prefix)).count();
        let objs = writes.iter().flat_map(|(o, l)| o / obj..=(o + l - 1) / obj);
        let objs: BTreeSet<u64> = objs.collect();
        assert_eq!(ndata, objs.len(), "{what}: data objects: {before:?}");
        assert!(
            before.contains(&header),
            "{what}: no {header} in {before:?}"
        );

        ok(fs::remove_file(&p), &format!("{what}: rm"), &mount);
        in_ls(&cluster, &[], &[&name], &format!("{what}: after rm"));
        assert!(!mount.list().contains(&name), "{what}: still in the mount");
        assert_eq!(errno(fs::metadata(&p)), Some(libc::ENOENT), "{what}: stat");
        let left: Vec<String> = rados_ls(&cluster).into_iter().filter(mine).collect();
        assert!(left.is_empty(), "{what}: left: {left:?}\n{}", mount.log());
        let keys = text(&cluster.rados(&["listomapkeys", "rbd_directory"]));
        let stale = [format!("name_{name}"), format!("id_{id}")];
        let stale = keys.lines().any(|k| stale.iter().any(|s| s == k));
        assert!(!stale, "{what}: rbd_directory still maps it: {keys}");

        // The name can be used again: a new, empty image (File::create = touch).
        ok(File::create(&p), &format!("{what}: re-create"), &mount);
        sizes(&cluster, &mount, &name, 0, &format!("{what}: re-created"));
        let id2 = jstr(&info(&cluster, &name), "id").unwrap();
        assert!(format == 1 || id2 != id, "{what}: re-created with id {id}");
        ok(fs::remove_file(&p), &format!("{what}: rm 2"), &mount);
        in_ls(&cluster, &[], &[&name], &format!("{what}: after rm 2"));

        if opt.is_none() {
            // Bad names fail and leave nothing.
            let before = cluster.ls();
            let bad = mount.path(".snap").join(unique_name("insnap"));
            assert!(File::create(mount.path(".snap")).is_err(), "created .snap");
            assert!(File::create(bad).is_err(), "created in .snap");
            assert_eq!(cluster.ls(), before, "bad names changed rbd ls");
        }
    }
}

// ---------------------------------------------------------------------------
// 2. rename
// ---------------------------------------------------------------------------

#[test]
fn rename_keeps_data() {
    let cluster = Cluster::get();
    let mut images = Images(cluster.clone(), vec![], vec![]);
    let mut rng = Rng::new();
    let (a, b) = (images.name("rena"), images.name("renb"));
    let (c, d) = (images.name("renc"), images.name("rend"));
    rbd(
        &cluster,
        &format!("create --size 12M --object-size 1M rbd/{a}"),
    );
    let cdata = rng.bytes((3 * MIB + 99) as usize);
    cluster.import_v1(&c, &cdata, 20);
    let id = jstr(&info(&cluster, &a), "id").unwrap();

    let mount = Mount::new(&cluster, &["-v"]);
    let path = |n: &str| mount.path(n);
    let mut model = vec![0u8; (12 * MIB) as usize];
    let f = open_rw(&mount, &path(&a));
    for (off, len) in [(0, 5000), (MIB - 10, 2 * MIB), (12 * MIB - 777, 777)] {
        let buf = rng.bytes(len as usize);
        ok(f.write_all_at(&buf, off), "write", &mount);
        model[off as usize..(off + len) as usize].copy_from_slice(&buf);
    }
    f.sync_all().unwrap();
    drop(f);
    ok(fs::rename(path(&a), path(&b)), "mv a b", &mount);
    in_ls(&cluster, &[&b], &[&a], "after mv");
    let i = info(&cluster, &b);
    assert_eq!(jstr(&i, "id"), Some(id), "id after rename: {i}");
    assert_eq!(jnum(&i, "size"), Some(12 * MIB));
    let objs = rados_ls(&cluster);
    assert!(objs.contains(&format!("rbd_id.{b}")), "no rbd_id.{b}");
    assert!(!objs.contains(&format!("rbd_id.{a}")), "rbd_id.{a} left");
    fails(fs::metadata(path(&a)), libc::ENOENT, "old name", &mount);
    reads(&mount, &path(&b), &model, "renamed image via mount");

    // Format 1 too.
    ok(fs::rename(path(&c), path(&d)), "mv c d", &mount);
    let objs = rados_ls(&cluster);
    assert!(objs.contains(&format!("{d}.rbd")), "no {d}.rbd");
    assert!(!objs.contains(&format!("{c}.rbd")), "{c}.rbd left");
    in_ls(&cluster, &[&d], &[&c], "after v1 mv");
    reads(&mount, &path(&d), &cdata, "renamed v1 via mount");

    // Onto an existing image: EEXIST, nothing changes.
    fails(
        fs::rename(path(&b), path(&d)),
        libc::EEXIST,
        "mv onto image",
        &mount,
    );
    in_ls(&cluster, &[&b, &d], &[], "after mv onto an image");
    reads(&mount, &path(&b), &model, "source after EEXIST");
    reads(&mount, &path(&d), &cdata, "target after EEXIST");

    // While open: EBUSY. Into .snap: refused.
    let f = File::open(path(&b)).unwrap();
    fails(
        fs::rename(path(&b), path(&a)),
        libc::EBUSY,
        "mv open image",
        &mount,
    );
    in_ls(&cluster, &[&b], &[&a], "after mv of an open image");
    drop(f);
    let e = errno(fs::rename(path(&b), path(".snap").join(&b).join("x")));
    assert!(
        matches!(e, Some(libc::EXDEV | libc::EPERM)),
        "mv into .snap: {e:?}"
    );
    in_ls(&cluster, &[&b], &[], "after mv into .snap");
    drop(mount);
    exports(&cluster, &b, &model);
    exports(&cluster, &d, &cdata);
}

// ---------------------------------------------------------------------------
// 3. resize
// ---------------------------------------------------------------------------

#[test]
fn grow_then_shrink_with_snapshot() {
    let cluster = Cluster::get();
    let mut images = Images(cluster.clone(), vec![], vec![]);
    let mut rng = Rng::new();
    let img = images.name("resz");
    let (s0, s1, s2) = (3 * MIB + 12345, 5 * MIB + 777, MIB + 4321);
    let a = rng.bytes(s0 as usize);
    import(&cluster, &img, &a, "--object-size 64K");

    let mount = Mount::new(&cluster, &["-v"]);
    let head = mount.path(&img);
    let (sp1, sp2) = (snap_path(&mount, &img, "s1"), snap_path(&mount, &img, "s2"));
    ok(File::create(&sp1), "touch .snap/IMG/s1", &mount);
    let f = open_rw(&mount, &head);
    ok(f.set_len(s1), "grow", &mount);
    sizes(&cluster, &mount, &img, s1, "after grow");
    assert_eq!(size_of(&mount, &sp1), s0, "s1 size after grow");
    reads(&mount, &sp1, &a, "s1 after grow");
    let mut model = a.clone();
    model.resize(s1 as usize, 0);
    reads(&mount, &head, &model, "head after grow");

    for (off, len) in [(s1 - 200 * KIB - 3, 200 * KIB + 3), (s0 - 10, 70 * KIB)] {
        let buf = rng.bytes(len as usize);
        ok(
            f.write_all_at(&buf, off),
            &format!("write at {off}"),
            &mount,
        );
        model[off as usize..(off + len) as usize].copy_from_slice(&buf);
    }
    f.sync_all().unwrap();
    rbd(&cluster, &format!("snap create --no-progress rbd/{img}@s2"));
    let model2 = model.clone();
    eventually("s2 visible", Duration::from_secs(5), || {
        fs::metadata(&sp2).map(|_| ()).map_err(|e| e.to_string())
    });
    reads(&mount, &sp2, &model2, "s2 via mount");

    // Shrink below the original size, by path (not through the handle).
    tool(&mount, "truncate", &["-s", &s2.to_string()], &head);
    model.truncate(s2 as usize);
    sizes(&cluster, &mount, &img, s2, "after shrink");
    reads(&mount, &head, &model, "head after shrink");
    reads(&mount, &sp1, &a, "s1 after shrink");
    reads(&mount, &sp2, &model2, "s2 after shrink");

    // Growing again must not bring the cut-off bytes back.
    ok(f.set_len(s1), "regrow", &mount);
    model.resize(s1 as usize, 0);
    reads(&mount, &head, &model, "head after shrink + regrow");
    drop(f);
    drop(mount);

    exports(&cluster, &img, &model);
    exports(&cluster, &format!("{img}@s1"), &a);
    exports(&cluster, &format!("{img}@s2"), &model2);
    for w in [img.clone(), format!("{img}@s1"), format!("{img}@s2")] {
        assert_object_map_ok(&cluster, &w);
    }
}

// ---------------------------------------------------------------------------
// 4. sparse files
// ---------------------------------------------------------------------------

#[test]
fn sparse_extents_and_punch_hole() {
    const OBJ: u64 = 4 * MIB;
    let cluster = Cluster::get();
    let mut images = Images(cluster.clone(), vec![], vec![]);
    let mut rng = Rng::new();
    let tmp = TempDir::new().unwrap();
    let (v2, v1) = (images.name("sp2"), images.name("sp1"));
    cluster.create_v1_image(&v1, GIB, 22);
    let mount = Mount::new(&cluster, &["-v"]);
    tool(&mount, "truncate", &["-s", "1G"], &mount.path(&v2));
    let keep = libc::FALLOC_FL_KEEP_SIZE;
    let (data, hole) = (libc::SEEK_DATA, libc::SEEK_HOLE);

    // v2 has an object map, v1 only its objects.
    for img in [&v2, &v1] {
        let t0 = Instant::now();
        let p = mount.path(img);
        // Objects 2, 74+75 (straddling), 175.
        let ext = [
            (10 * MIB + 5000, 100 * KIB),
            (300 * MIB - 50 * KIB, 100 * KIB),
        ];
        let ext = [ext[0], ext[1], (700 * MIB, 3 * MIB)];
        let mut ext = ext.map(|(o, l)| (o, rng.bytes(l as usize))).to_vec();
        let f = open_rw(&mount, &p);
        for (off, d) in &ext {
            ok(f.write_all_at(d, *off), &format!("{img}: write"), &mount);
        }
        f.sync_all().unwrap();

        let seek = |off: u64, whence: i32, want: Result<u64, i32>| {
            let w = [(data, "SEEK_DATA"), (hole, "SEEK_HOLE")];
            let w = w.iter().find(|x| x.0 == whence).unwrap().1;
            let got = lseek(&f, off, whence);
            assert_eq!(got, want, "{img}: {w} from {off}\n{}", mount.log());
        };
        let mut prev = 0;
        for (s, e) in [(2, 3), (74, 76), (175, 176)].map(|(s, e)| (s * OBJ, e * OBJ)) {
            seek(prev, data, Ok(s));
            seek(prev, hole, Ok(prev));
            seek(s + 1, data, Ok(s + 1));
            seek(s, hole, Ok(e));
            seek(e - 1, hole, Ok(e));
            prev = e;
        }
        seek(prev, data, Err(libc::ENXIO));
        seek(GIB - 1, hole, Ok(GIB - 1));
        seek(GIB, hole, Err(libc::ENXIO));
        seek(GIB, data, Err(libc::ENXIO));

        let written: u64 = ext.iter().map(|(_, d)| d.len() as u64).sum();
        wait_blocks(&p, written..=4 * OBJ, &format!("{img}: st_blocks"));

        let sp = snap_path(&mount, img, "s1");
        ok(File::create(&sp), "snapshot", &mount);
        let snap_ext = ext.clone();
        for (src, what) in [(&p, img.to_string()), (&sp, format!("{img}@s1"))] {
            let copy = tmp.path().join("copy");
            tool(
                &mount,
                "cp",
                &["--sparse=always", src.to_str().unwrap()],
                &copy,
            );
            let used = fs::metadata(&copy).unwrap().blocks() * 512;
            assert!(used <= 5 * OBJ, "{what}: cp --sparse=always: {used} bytes");
            assert_file_model(&copy, GIB, &ext, &format!("cp of {what}"));
            let exp = export_to(&cluster, &what, tmp.path());
            assert_file_model(&exp, GIB, &ext, &format!("rbd export {what}"));
            fs::remove_file(&copy).unwrap();
            fs::remove_file(&exp).unwrap();
        }

        // Punch out object 175 entirely.
        let r = fallocate(&f, libc::FALLOC_FL_PUNCH_HOLE | keep, 175 * OBJ, OBJ);
        ok(r, &format!("{img}: punch object 175"), &mount);
        ext[2].1.fill(0);
        assert_eq!(f.metadata().unwrap().len(), GIB, "{img}: size after punch");
        let diff = format!("diff --whole-object --format json rbd/{img}");
        let diff = text(&rbd(&cluster, &diff));
        let listed: BTreeSet<u64> = diff
            .split('{')
            .filter(|e| e.contains("\"exists\":\"true\""))
            .filter_map(|e| jnum(e, "offset"))
            .map(|o| o / OBJ)
            .collect();
        let want = BTreeSet::from([2, 74, 75]);
        assert_eq!(listed, want, "{img}: rbd diff after punch: {diff}");
        let got = read_full_at(&f, 175 * OBJ, OBJ as usize).unwrap();
        assert!(
            got.iter().all(|&b| b == 0),
            "{img}: punched object not zero"
        );
        seek(76 * OBJ, data, Err(libc::ENXIO));
        let snap_obj = read_full_at(&File::open(&sp).unwrap(), 700 * MIB, 100).unwrap();
        assert_bytes_eq(&snap_obj, &snap_ext[2].1[..100], "snapshot after punch");

        // Partial: object 74's tail (truncate) + 75's head (zero), and a
        // zero-range in the middle of object 2.
        let (po, pl) = (300 * MIB - 20 * KIB, 30 * KIB);
        let r = fallocate(&f, libc::FALLOC_FL_PUNCH_HOLE | keep, po, pl);
        ok(r, &format!("{img}: partial punch"), &mount);
        let o = (po - ext[1].0) as usize;
        ext[1].1[o..o + pl as usize].fill(0);
        let (zo, zl) = (10 * MIB + 6000, 1000);
        let r = fallocate(&f, libc::FALLOC_FL_ZERO_RANGE | keep, zo, zl);
        ok(r, &format!("{img}: zero range"), &mount);
        let o = (zo - ext[0].0) as usize;
        ext[0].1[o..o + zl as usize].fill(0);
        for (off, d) in &ext[..2] {
            let got = read_full_at(&f, *off, d.len()).unwrap();
            assert_bytes_eq(&got, d, &format!("{img}: extent at {off} after punch"));
        }
        drop(f);
        wait_blocks(&p, 1..=3 * OBJ, &format!("{img}: st_blocks after punch"));
        let exp = export_to(&cluster, img, tmp.path());
        assert_file_model(&exp, GIB, &ext, &format!("rbd export {img} after punch"));
        fs::remove_file(&exp).unwrap();
        eprintln!("{img}: {:?}", t0.elapsed());
    }
    drop(mount);
    assert_object_map_ok(&cluster, &v2);
    assert_object_map_ok(&cluster, &format!("{v2}@s1"));
}

// ---------------------------------------------------------------------------
// 5. ext4 on a loop device
// ---------------------------------------------------------------------------

/// A loop device, detached on drop (after its file system is unmounted).
struct Loop(String);

impl Loop {
    fn attach(file: &Path, extra: &[&str], mount: &Mount) -> Loop {
        let out = tool(
            mount,
            "losetup",
            &[&["-f", "--show"][..], extra].concat(),
            file,
        );
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let sys = format!("/sys/block/{}/loop/dio", &dev[5..]);
        let dio = fs::read_to_string(sys).unwrap_or_default();
        eprintln!("{dev} {extra:?}: dio={}", dio.trim());
        Loop(dev)
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let mut cmd = Command::new("losetup");
        let _ = run_timeout(cmd.arg("-d").arg(&self.0), Duration::from_secs(30));
        // The backing file is let go of asynchronously.
        let sys = format!("/sys/block/{}/loop/backing_file", &self.0[5..]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&sys).exists() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A mounted block file system, unmounted on drop.
struct BlockMount(TempDir);

impl BlockMount {
    fn new(dev: &str, opts: &str) -> BlockMount {
        let dir = TempDir::new().unwrap();
        run(
            Command::new("mount")
                .args(["-o", opts, dev])
                .arg(dir.path()),
            None,
        );
        BlockMount(dir)
    }
}

impl Drop for BlockMount {
    fn drop(&mut self) {
        let mut cmd = Command::new("umount");
        let _ = run_timeout(cmd.arg(self.0.path()), Duration::from_secs(60));
    }
}

#[test]
fn losetup_ext4_end_to_end() {
    let cluster = Cluster::get();
    let mut images = Images(cluster.clone(), vec![], vec![]);
    let mut rng = Rng::new();
    let img = images.name("ext4");
    let files = [("a", 5 * MIB), ("b", 8 * MIB), ("c", MIB + 7)];
    let files = files.map(|(n, l)| (n, rng.bytes(l as usize)));
    let mount = Mount::new(&cluster, &["-v"]);
    let p = mount.path(&img);
    tool(&mount, "truncate", &["-s", "512M"], &p);
    {
        let lo = Loop::attach(&p, &["--direct-io=on"], &mount);
        run(Command::new("mkfs.ext4").args(["-q", &lo.0]), Some(&mount));
        fails(
            fs::remove_file(&p),
            libc::EBUSY,
            "rm while on a loop device",
            &mount,
        );
        let fsm = BlockMount::new(&lo.0, "rw");
        let dir = fsm.0.path();
        for (n, d) in &files {
            let mut f = File::create(dir.join(n)).unwrap();
            f.write_all(d).unwrap();
            f.sync_all().unwrap();
        }
        run(Command::new("fstrim").arg(dir), Some(&mount));
        fs::remove_file(dir.join("b")).unwrap();
        run(&mut Command::new("sync"), None);
        let t = text(&run(
            Command::new("fstrim").arg("-v").arg(dir),
            Some(&mount),
        ));
        let trimmed = t
            .split('(')
            .nth(1)
            .and_then(|s| s.split_whitespace().next());
        let trimmed: u64 = trimmed.and_then(|n| n.parse().ok()).expect(&t);
        assert!(trimmed > 0, "fstrim after deleting a file: {t}");
        eprintln!("fstrim: {}", t.trim());
        drop(fsm);
        let fsck = Command::new("fsck.ext4")
            .args(["-n", "-f", &lo.0])
            .output()
            .unwrap();
        let log = mount.log();
        assert!(
            fsck.status.success(),
            "fsck.ext4 -n -f: {}\n{log}",
            text(&fsck)
        );
    }
    drop(mount);

    let mount = Mount::new(&cluster, &["-v"]);
    let lo = Loop::attach(&mount.path(&img), &["--read-only"], &mount);
    let fsm = BlockMount::new(&lo.0, "ro");
    for (n, d) in &files {
        let fp = fsm.0.path().join(n);
        match *n {
            "b" => assert!(!fp.exists(), "deleted file is back"),
            _ => assert_bytes_eq(&fs::read(&fp).unwrap(), d, &format!("{n} after remount")),
        }
    }
}

// ---------------------------------------------------------------------------
// 6. remove refused
// ---------------------------------------------------------------------------

#[test]
fn remove_refused_with_snapshots_or_open() {
    let cluster = Cluster::get();
    let mut images = Images(cluster.clone(), vec![], vec![]);
    let mut rng = Rng::new();
    let names = ["rmsnap", "rmopen", "rmbench", "rmmount"].map(|t| images.name(t));
    let datas = names.clone().map(|n| {
        let d = rng.bytes((2 * MIB + 5) as usize);
        import(&cluster, &n, &d, "--object-size 1M");
        d
    });
    let mount = Mount::new(&cluster, &["-v"]);
    let refused = |i: usize, want: i32, why: &str| {
        fails(fs::remove_file(mount.path(&names[i])), want, why, &mount);
        in_ls(&cluster, &[&names[i]], &[], why);
        assert!(
            mount.list().contains(&names[i]),
            "{why}: gone from the mount"
        );
        let size = jnum(&info(&cluster, &names[i]), "size");
        assert_eq!(size, Some(2 * MIB + 5), "{why}: rbd info");
    };
    let removed = |i: usize, why: &str| {
        ok(fs::remove_file(mount.path(&names[i])), why, &mount);
        in_ls(&cluster, &[], &[&names[i]], why);
    };

    // With a snapshot: ENOTEMPTY, data intact; fine once it is gone.
    rbd(
        &cluster,
        &format!("snap create --no-progress rbd/{}@s", names[0]),
    );
    refused(0, libc::ENOTEMPTY, "rm with a snapshot");
    reads(&mount, &mount.path(&names[0]), &datas[0], "after ENOTEMPTY");
    exports(&cluster, &names[0], &datas[0]);
    ok(
        fs::remove_file(snap_path(&mount, &names[0], "s")),
        "rm snap",
        &mount,
    );
    removed(0, "rm after removing the snapshot");

    // Open in this mount: EBUSY.
    let f = File::open(mount.path(&names[1])).unwrap();
    refused(1, libc::EBUSY, "rm while open here");
    drop(f);
    exports(&cluster, &names[1], &datas[1]);
    removed(1, "rm after close");

    // Watched by rbd bench (rate-limited to run ~7 s): EBUSY.
    let mut bench = Command::new("rbd");
    bench
        .arg("-c")
        .arg(cluster.conf())
        .args(["bench", "--rbd-qos-iops-limit", "300"]);
    bench.args(["--io-type", "write", "--io-size", "4K", "--io-total", "8M"]);
    bench
        .arg(spec(&names[2]))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = bench.spawn().unwrap();
    eventually("bench watching", Duration::from_secs(20), || {
        let s = format!("status --format json rbd/{}", names[2]);
        let s = text(&rbd(&cluster, &s));
        if s.contains("\"address\"") {
            Ok(())
        } else {
            Err(s)
        }
    });
    let r = fs::remove_file(mount.path(&names[2]));
    let still_running = child.try_wait().unwrap().is_none();
    fails(r, libc::EBUSY, "rm while rbd bench has it open", &mount);
    assert!(
        still_running,
        "bench ended before the rm: test inconclusive"
    );
    in_ls(&cluster, &[&names[2]], &[], "after rm under bench");
    let st = wait_timeout(&mut child, Duration::from_secs(120)).expect("bench hangs");
    assert!(st.success(), "rbd bench failed after the refused rm: {st}");
    eventually("rm after bench", Duration::from_secs(10), || {
        fs::remove_file(mount.path(&names[2])).map_err(|e| e.to_string())
    });
    in_ls(&cluster, &[], &[&names[2]], "after bench");

    // Open in another rbdfs mount: EBUSY.
    let other = Mount::new(&cluster, &["-v"]);
    let f = File::open(other.path(&names[3])).unwrap();
    let got = read_full_at(&f, 0, 4096).unwrap();
    assert_bytes_eq(&got, &datas[3][..4096], "other mount");
    refused(3, libc::EBUSY, "rm while open in another mount");
    drop((f, other));
    exports(&cluster, &names[3], &datas[3]);
    removed(3, "rm after the other mount went away");
}

// ---------------------------------------------------------------------------
// 7. O_TRUNC and growth
// ---------------------------------------------------------------------------

#[test]
fn o_trunc_is_ignored_and_fixed_size_writes_dont_grow() {
    let cluster = Cluster::get();
    let mut images = Images(cluster.clone(), vec![], vec![]);
    let mut rng = Rng::new();
    let tmp = TempDir::new().unwrap();
    let img = images.name("trunc");
    let size = 8 * MIB;
    let mut model = rng.bytes(size as usize);
    import(&cluster, &img, &model, "--object-size 1M");
    let src = tmp.path().join("src");
    let b = rng.bytes((3 * MIB + 100) as usize);
    fs::write(&src, &b).unwrap();

    // fixed_size: writes past the end are refused, except through the
    // handle that created the image (cp, fallocate into new names).
    let mount = Mount::new(&cluster, &["-v", "-o", "fixed_size"]);
    let p = mount.path(&img);
    let (dd_if, dd_of) = (
        format!("if={}", src.display()),
        format!("of={}", p.display()),
    );
    run(
        Command::new("dd").args([&dd_if, &dd_of, "bs=1M"]),
        Some(&mount),
    );
    model[..b.len()].copy_from_slice(&b);
    sizes(&cluster, &mount, &img, size, "after dd without notrunc");
    reads(&mount, &p, &model, "content after dd");
    let trunc = OpenOptions::new().write(true).truncate(true).open(&p);
    let len = ok(trunc, "O_TRUNC open", &mount).metadata().unwrap().len();
    assert_eq!(len, size, "size after O_TRUNC open");
    let len = ok(File::create(&p), "File::create", &mount)
        .metadata()
        .unwrap()
        .len();
    assert_eq!(len, size, "size after File::create");

    // Writes past the end through a normal handle: ENOSPC, size unchanged.
    let f = open_rw(&mount, &p);
    fails(
        f.write_at(&[1; 100], size),
        libc::ENOSPC,
        "write at EOF",
        &mount,
    );
    let buf = rng.bytes(1000);
    let r = f.write_at(&buf, size - 300);
    eprintln!("write straddling the end: {r:?}");
    if let Ok(n) = r {
        assert_eq!(n, 300, "straddling write wrote {n}");
        model[(size - 300) as usize..].copy_from_slice(&buf[..300]);
    } else {
        fails(r, libc::ENOSPC, "straddling write", &mount);
    }
    let mut app = OpenOptions::new().append(true).open(&p).unwrap();
    fails(app.write(&[2; 10]), libc::ENOSPC, "O_APPEND write", &mount);
    drop((f, app));
    sizes(&cluster, &mount, &img, size, "after refused writes");

    // cp (plain and sparse) and fs::write into new names: exactly the source.
    let src2 = tmp.path().join("src2");
    let c = rng.bytes((5 * MIB + 1234) as usize);
    fs::write(&src2, &c).unwrap();
    let sparse = tmp.path().join("sparse");
    let s = File::create(&sparse).unwrap();
    let tail = rng.bytes(70000);
    s.write_all_at(&tail, 15 * MIB).unwrap();
    s.set_len(20 * MIB).unwrap();
    let mut sdata = vec![0u8; (20 * MIB) as usize];
    sdata[(15 * MIB) as usize..][..tail.len()].copy_from_slice(&tail);
    let (n1, n2, n3) = (images.name("cp"), images.name("cpsp"), images.name("wr"));
    tool(&mount, "cp", &[src2.to_str().unwrap()], &mount.path(&n1));
    let args = ["--sparse=always", sparse.to_str().unwrap()];
    tool(&mount, "cp", &args, &mount.path(&n2));
    ok(
        fs::write(mount.path(&n3), &b),
        "fs::write to a new name",
        &mount,
    );
    let news = [(&n1, &c), (&n2, &sdata), (&n3, &b)];
    for (n, d) in news {
        sizes(&cluster, &mount, n, d.len() as u64, n);
        reads(&mount, &mount.path(n), d, &format!("{n} via mount"));
    }
    // fallocate past the end grows a new image; with --keep-size it does not.
    let n4 = images.name("falloc");
    tool(&mount, "fallocate", &["-l", "12M"], &mount.path(&n4));
    sizes(&cluster, &mount, &n4, 12 * MIB, "after fallocate -l 12M");
    tool(&mount, "fallocate", &["-n", "-l", "20M"], &mount.path(&n4));
    sizes(&cluster, &mount, &n4, 12 * MIB, "after fallocate -n -l 20M");
    drop(mount);
    exports(&cluster, &img, &model);
    for (n, d) in news {
        exports(&cluster, n, d);
    }
}

// ---------------------------------------------------------------------------
// 8. xattrs
// ---------------------------------------------------------------------------

#[test]
fn xattrs_describe_the_image() {
    let cluster = Cluster::get();
    let mut images = Images(cluster.clone(), vec![], vec![]);
    let (v2, v1, cl) = (images.name("xa2"), images.name("xa1"), images.name("xacl"));
    rbd(
        &cluster,
        &format!("create --size 10M --object-size 1M rbd/{v2}"),
    );
    cluster.create_v1_image(&v1, 8 * MIB, 16);
    rbd(&cluster, &format!("snap create --no-progress rbd/{v2}@s"));
    rbd(&cluster, &format!("snap protect rbd/{v2}@s"));
    images.2.push((v2.clone(), "s".into()));
    rbd(&cluster, &format!("clone rbd/{v2}@s rbd/{cl}"));
    rbd(
        &cluster,
        &format!("resize --no-progress --allow-shrink --size 7M rbd/{cl}"),
    );
    let snaps = text(&rbd(&cluster, &format!("snap ls --format json rbd/{v2}")));
    let sid = jnum(&snaps, "id").unwrap().to_string();

    let mount = Mount::new(&cluster, &["-v"]);
    let cases = [
        (v2.clone(), mount.path(&v2)),
        (v1.clone(), mount.path(&v1)),
        (cl.clone(), mount.path(&cl)),
        (format!("{v2}@s"), snap_path(&mount, &v2, "s")),
    ];
    for (what, p) in &cases {
        let i = info(&cluster, what);
        let names = ok(xattr(p, None), &format!("listxattr {what}"), &mount);
        let names = String::from_utf8(names).unwrap();
        let names: BTreeSet<&str> = names.split('\0').filter(|s| !s.is_empty()).collect();
        // Listed exactly when readable.
        let get = |k: &str| -> Option<String> {
            let k = format!("user.rbd.{k}");
            match (xattr(p, Some(&k)), names.contains(&*k)) {
                (Ok(v), true) => Some(String::from_utf8(v).unwrap()),
                (Err(e), false) if e.raw_os_error() == Some(libc::ENODATA) => None,
                (r, listed) => panic!("{what}: {k}: {r:?}, listed {listed}\n{}", mount.log()),
            }
        };
        let want = |k: &str, v: String| {
            assert_eq!(get(k), Some(v), "{what}: user.rbd.{k} (rbd info: {i})");
        };
        let format = jnum(&i, "format").unwrap();
        want("format", format.to_string());
        want("order", jnum(&i, "order").unwrap().to_string());
        want("object_size", jnum(&i, "object_size").unwrap().to_string());
        want("object_prefix", jstr(&i, "block_name_prefix").unwrap());
        if format == 2 {
            want("id", jstr(&i, "id").unwrap());
            let feats = get("features").unwrap_or_default().replace(' ', ",");
            let set = |s: &str| -> BTreeSet<String> { s.split(',').map(String::from).collect() };
            let (got, exp) = (set(&feats), set(&jlist(&i, "features")));
            assert_eq!(got, exp, "{what}: user.rbd.features {feats:?}");
        } else {
            let none = |k| get(k).is_none_or(|v| v.is_empty());
            assert!(
                none("id") && none("features"),
                "{what}: v1 with id/features"
            );
        }
        match i.find("\"parent\":") {
            Some(at) => {
                let v = get("parent").unwrap_or_else(|| panic!("{what}: no parent"));
                let (pid, overlap) = (jstr(&i[at..], "id").unwrap(), jnum(&i[at..], "overlap"));
                let words: Vec<&str> = v.split_whitespace().collect();
                let want = [pid, overlap.unwrap().to_string(), sid.clone()];
                let missing: Vec<_> = want.iter().filter(|w| !words.contains(&&***w)).collect();
                assert!(missing.is_empty(), "{what}: parent {v:?} lacks {missing:?}");
            }
            None => assert!(get("parent").is_none(), "{what}: parent on a non-clone"),
        }
        match what.contains('@') {
            true => want("snap_id", sid.clone()),
            false => assert!(get("snap_id").is_none(), "{what}: snap_id on a head"),
        }
        fails(
            xattr(p, Some("user.rbd.nope")),
            libc::ENODATA,
            "unknown",
            &mount,
        );
        // A too-small buffer is ERANGE.
        let (cp, cn) = (
            cstr(p.as_os_str().as_bytes()),
            cstr(b"user.rbd.object_prefix"),
        );
        let mut small = [0u8; 2];
        // SAFETY: `cp` and `cn` are NUL-terminated CStrings alive across the
        // call; `small` has the 2 bytes the kernel may write.
        let r = unsafe { libc::getxattr(cp.as_ptr(), cn.as_ptr(), small.as_mut_ptr().cast(), 2) };
        let e = io::Error::last_os_error().raw_os_error();
        assert!(
            r < 0 && e == Some(libc::ERANGE),
            "{what}: 2-byte buffer: {r} {e:?}"
        );
    }
}
