//! Format-2 images end to end: rbdfs must read and write exactly what librbd
//! reads and writes (default Pacific features, fancy striping, a data pool,
//! clones with copy-up), keep the object map true (`rbd object-map check`,
//! `rbd diff`), share the exclusive lock with librbd clients (`rbd bench`,
//! `rbd snap create`), refuse what it cannot write (journaling) or read
//! (unknown features), and list format-1 and format-2 images together.

mod common;

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::process::{Command, Output};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Images to remove when the test ends, newest first (so clones go before
/// their parents), each after unprotecting its registered snapshots and
/// purging the rest; header omap values are put back before anything else.
/// Declare it BEFORE any `Mount`.
struct Images {
    cluster: Cluster,
    names: Vec<String>,
    protected: Vec<(String, String)>,
    omap_restores: Vec<(String, String, Vec<u8>)>,
}

impl Images {
    fn new(cluster: &Cluster) -> Images {
        Images {
            cluster: cluster.clone(),
            names: Vec::new(),
            protected: Vec::new(),
            omap_restores: Vec::new(),
        }
    }
    fn name(&mut self, tag: &str) -> String {
        let n = unique_name(tag);
        self.names.push(n.clone());
        n
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        for (obj, key, val) in self.omap_restores.drain(..) {
            if let Err(e) = set_omap(&self.cluster, &obj, &key, &val) {
                eprintln!("warning: could not restore {obj} {key}: {e}");
            }
        }
        for name in self.names.drain(..).rev() {
            let s = spec(&name);
            for (img, snap) in &self.protected {
                if *img == name {
                    let _ = self
                        .cluster
                        .rbd_try(&["snap", "unprotect", &format!("{s}@{snap}")]);
                }
            }
            let _ = self
                .cluster
                .rbd_try(&["snap", "purge", "--no-progress", &s]);
            match self.cluster.rbd_try(&["rm", "--no-progress", &s]) {
                Ok(o) if o.status.success() => {}
                Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No such file") => {}
                r => eprintln!("warning: could not remove image {name}: {r:?}"),
            }
        }
    }
}

fn set_omap(cluster: &Cluster, obj: &str, key: &str, val: &[u8]) -> Result<(), String> {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(val).unwrap();
    f.flush().unwrap();
    let path = f.path().to_str().unwrap();
    match cluster.rados_try(&["setomapval", obj, key, "--input-file", path]) {
        Ok(o) if o.status.success() => Ok(()),
        r => Err(format!("{r:?}")),
    }
}

fn get_omap(cluster: &Cluster, obj: &str, key: &str) -> Vec<u8> {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("val");
    cluster.rados(&["getomapval", obj, key, path.to_str().unwrap()]);
    fs::read(&path).unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// `rbd CMD` (CMD split at whitespace); panics unless it succeeds.
fn rbd(cluster: &Cluster, cmd: &str) -> Output {
    cluster.rbd(&cmd.split_whitespace().collect::<Vec<_>>())
}

/// Like [`rbd`], but a failure (or timeout) shows rbdfs's log too: for CLI
/// calls that need rbdfs's cooperation (lock handover, snapshot requests).
fn rbd_with(cluster: &Cluster, mount: &Mount, cmd: &str) -> Output {
    let t0 = Instant::now();
    match cluster.rbd_try(&cmd.split_whitespace().collect::<Vec<_>>()) {
        Ok(o) if o.status.success() => {
            eprintln!("rbd {cmd}: {:?}", t0.elapsed());
            o
        }
        Ok(o) => panic!("rbd {cmd} failed: {}\n{}", text(&o), mount.log()),
        Err(e) => panic!("rbd {cmd}: {e}\n{}", mount.log()),
    }
}

/// Every integer value of `"key":` in (flat) JSON text.
fn json_u64s(text: &str, key: &str) -> Vec<u64> {
    let pat = format!("\"{key}\":");
    text.match_indices(&pat)
        .filter_map(|(i, _)| {
            let rest = text[i + pat.len()..].trim_start();
            let d: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            d.parse().ok()
        })
        .collect()
}

fn json_str(text: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\":\"");
    let rest = &text[text.find(&pat)? + pat.len()..];
    Some(rest[..rest.find('"')?].to_string())
}

fn image_id(cluster: &Cluster, name: &str) -> String {
    let out = cluster.rbd(&["info", "--format", "json", &spec(name)]);
    json_str(&String::from_utf8_lossy(&out.stdout), "id").expect("id in rbd info")
}

/// `rbd import` of `data` as a format-2 image with extra create options.
fn import(cluster: &Cluster, name: &str, data: &[u8], extra: &str) {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(data).unwrap();
    f.flush().unwrap();
    let (p, s) = (f.path().to_str().unwrap(), spec(name));
    rbd(cluster, &format!("import --no-progress {extra} {p} {s}"));
}

/// Random data with a zero hole (so `rbd import` leaves objects absent).
fn data_with_hole(rng: &mut Rng, len: u64, hole: (u64, u64)) -> Vec<u8> {
    let mut d = rng.bytes(len as usize);
    d[hole.0 as usize..hole.1 as usize].fill(0);
    d
}

/// `rbd object-map check` must find nothing wrong. It exits 0 even when it
/// finds a mismatch (it logs "object map error" and invalidates the map), so
/// check its output and the image flags too.
fn assert_object_map_ok(cluster: &Cluster, what: &str) {
    let out = cluster
        .rbd_try(&["object-map", "check", "--no-progress", &spec(what)])
        .unwrap();
    let t = text(&out);
    let bad = !out.status.success() || t.contains("error") || t.contains("failed");
    assert!(!bad, "rbd object-map check {what}: {}\n{t}", out.status);
    let info = rbd(cluster, &format!("info --format json {}", spec(what)));
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(!info.contains("invalid"), "{what} flags: {info}");
}

fn locks(cluster: &Cluster, name: &str) -> String {
    let out = cluster.rbd(&["lock", "ls", "--format", "json", &spec(name)]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn open_rw(mount: &Mount, name: &str) -> File {
    let p = mount.path(name);
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap_or_else(|e| panic!("open {} rw: {e}\n{}", p.display(), mount.log()))
}

fn read_all(mount: &Mount, name: &str) -> Vec<u8> {
    fs::read(mount.path(name)).unwrap_or_else(|e| panic!("read {name}: {e}\n{}", mount.log()))
}

/// Whole file, its size, random windows and a read straddling the end.
fn check_reads(mount: &Mount, name: &str, data: &[u8], rng: &mut Rng) {
    let size = data.len() as u64;
    let meta = fs::metadata(mount.path(name))
        .unwrap_or_else(|e| panic!("stat {name}: {e}\n{}", mount.log()));
    assert_eq!(meta.len(), size, "file size of {name}");
    assert_bytes_eq(&read_all(mount, name), data, &format!("whole {name}"));
    let f = File::open(mount.path(name)).unwrap();
    for _ in 0..15 {
        let len = rng.range(1, (600 * KIB).min(size));
        let off = rng.below(size - len + 1);
        let got = read_full_at(&f, off, len as usize).unwrap();
        let want = &data[off as usize..(off + len) as usize];
        assert_bytes_eq(&got, want, &format!("{name}: read_at({off}, {len})"));
    }
    let tail = 333.min(size);
    let got = read_full_at(&f, size - tail, 4096).unwrap();
    assert_bytes_eq(&got, &data[(size - tail) as usize..], "read over the end");
}

/// `n` random unaligned writes through `f` into the first `model.len()`
/// bytes, a third of them straddling a multiple of `unit`; a read-after-write
/// every 25. Returns (offset, length) of each write.
fn random_writes(
    mount: &Mount,
    f: &File,
    model: &mut [u8],
    rng: &mut Rng,
    n: usize,
    maxlen: u64,
    unit: u64,
) -> Vec<(u64, u64)> {
    let size = model.len() as u64;
    let nunits = size / unit;
    assert!(nunits >= 2, "span too small for unit {unit}");
    let mut done = Vec::new();
    let mut crossing = 0;
    for i in 0..n {
        let mut len = if rng.below(3) == 0 {
            rng.range(1, 4096)
        } else {
            rng.range(1, maxlen)
        };
        // Every third write straddles a unit boundary (by construction, so
        // no seed can leave the boundaries untested).
        let kind = if i % 3 == 0 { 0 } else { rng.range(3, 7) };
        let off = match kind {
            0 => {
                len = len.max(2);
                let b = rng.range(1, nunits - 1) * unit;
                b - rng.range(1, (len - 1).min(b))
            }
            3 => size - len.min(size),
            4 => rng.below(nunits) * unit,
            _ => rng.below(size - len.min(size) + 1),
        };
        let len = len.min(size - off);
        let buf = rng.bytes(len as usize);
        f.write_all_at(&buf, off)
            .unwrap_or_else(|e| panic!("write #{i} ({len} at {off}): {e}\n{}", mount.log()));
        model[off as usize..(off + len) as usize].copy_from_slice(&buf);
        crossing += (off / unit != (off + len - 1) / unit) as u32;
        done.push((off, len));
        if i % 25 == 24 {
            let rlen = rng.range(1, (3 * unit).min(size));
            let roff = rng.below(size - rlen + 1);
            let got = read_full_at(f, roff, rlen as usize).unwrap();
            let want = &model[roff as usize..(roff + rlen) as usize];
            assert_bytes_eq(&got, want, &format!("read_at({roff}, {rlen}) after #{i}"));
        }
    }
    assert!(
        crossing as usize >= n / 5,
        "only {crossing} crossing writes"
    );
    done
}

fn write_at(mount: &Mount, f: &File, model: &mut [u8], off: u64, data: &[u8]) {
    f.write_all_at(data, off)
        .unwrap_or_else(|e| panic!("write {} at {off}: {e}\n{}", data.len(), mount.log()));
    model[off as usize..off as usize + data.len()].copy_from_slice(data);
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn default_images_read_back() {
    let cluster = Cluster::get();
    let mut images = Images::new(&cluster);
    let mut rng = Rng::new();
    let (empty, full) = (images.name("v2empty"), images.name("v2imp"));
    rbd(&cluster, &format!("create --size 64M {}", spec(&empty)));
    let data = data_with_hole(&mut rng, 20 * MIB + 12345, (5 * MIB, 9 * MIB));
    import(&cluster, &full, &data, "");
    let info = cluster.rbd(&["info", "--format", "json", &spec(&full)]);
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains("\"format\":2") && info.contains("fast-diff"),
        "{info}"
    );

    let mount = Mount::new(&cluster, &["-v"]);
    for n in [&empty, &full] {
        let mode = fs::metadata(mount.path(n)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "mode of {n}");
    }
    check_reads(&mount, &empty, &vec![0; (64 * MIB) as usize], &mut rng);
    check_reads(&mount, &full, &data, &mut rng);
    drop(mount);
    assert_bytes_eq(&cluster.export(&full), &data, "rbd export of the import");
}

/// Random writes into an image created empty with default features, then
/// export, object map check and `rbd diff` against the objects written.
fn random_writes_default(create_opts: &str, obj: u64, size: u64, span: u64, tag: &str) {
    let cluster = Cluster::get();
    let mut images = Images::new(&cluster);
    let name = images.name(tag);
    let mut rng = Rng::new();
    let s = spec(&name);
    rbd(
        &cluster,
        &format!("create --size {}M {create_opts} {s}", size / MIB),
    );

    let mut model = vec![0u8; size as usize];
    let mut objects = BTreeSet::new();
    {
        let mount = Mount::new(&cluster, &["-v"]);
        let f = open_rw(&mount, &name);
        let spanned = &mut model[..span as usize];
        let mut writes = random_writes(&mount, &f, spanned, &mut rng, 150, 300 * KIB, obj);
        // One write at the very end of the image (outside the span).
        let tail = rng.bytes(777);
        write_at(&mount, &f, &mut model, size - 777, &tail);
        writes.push((size - 777, 777));
        for (off, len) in writes {
            objects.extend(off / obj..=(off + len - 1) / obj);
        }
        f.sync_all()
            .unwrap_or_else(|e| panic!("fsync: {e}\n{}", mount.log()));
        assert_bytes_eq(&read_all(&mount, &name), &model, "read-back");
        let l = locks(&cluster, &name);
        assert!(l.contains("\"id\":\"auto "), "lock while writing: {l}");
        drop(f);
    }
    assert!(objects.len() < (size / obj) as usize, "all objects written");
    assert_bytes_eq(&cluster.export(&name), &model, "rbd export after unmount");
    assert_eq!(locks(&cluster, &name), "[]", "lock left after unmount");

    // Before the check: a check that finds a mismatch invalidates the map,
    // and diff would then fall back to listing objects.
    let out = cluster.rbd(&["diff", "--whole-object", "--format", "json", &s]);
    let diff = String::from_utf8_lossy(&out.stdout);
    let listed: BTreeSet<u64> = json_u64s(&diff, "offset")
        .into_iter()
        .map(|o| o / obj)
        .collect();
    let extra: Vec<_> = listed.difference(&objects).collect();
    let missing: Vec<_> = objects.difference(&listed).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "rbd diff objects: {} listed, {} written; not written but listed {extra:?}, \
         written but not listed {missing:?}",
        listed.len(),
        objects.len()
    );
    assert_object_map_ok(&cluster, &name);
}

#[test]
fn random_writes_default_features() {
    random_writes_default("", 4 * MIB, 128 * MIB, 40 * MIB + 12345, "v2rw4m");
}

#[test]
fn random_writes_default_features_64k_objects() {
    random_writes_default(
        "--object-size 64K",
        64 * KIB,
        64 * MIB,
        64 * MIB - 777,
        "v2rw64k",
    );
}

#[test]
fn striping_and_data_pool() {
    let cluster = Cluster::get();
    let mut images = Images::new(&cluster);
    let mut rng = Rng::new();
    // (tag, create options, size, hole, unit whose boundaries writes cross)
    type Config = (&'static str, &'static str, u64, (u64, u64), u64);
    #[rustfmt::skip]
    let configs: [Config; 6] = [
        ("su64k", "--stripe-unit 64K --stripe-count 4", 20 * MIB + 12345, (3 * MIB, 4 * MIB), 64 * KIB),
        ("su3", "--object-size 256K --stripe-unit 64K --stripe-count 3", 5 * MIB + 4321, (MIB, 2 * MIB), 64 * KIB),
        ("su4k", "--stripe-unit 4K --stripe-count 16", 5 * MIB + 3, (MIB, 2 * MIB), 4 * KIB),
        ("os64k", "--object-size 64K", 6 * MIB + 999, (MIB, 2 * MIB), 64 * KIB),
        ("dpool", "--data-pool rbd-data", 12 * MIB + 77, (4 * MIB, 8 * MIB), 4 * MIB),
        ("dpsu", "--data-pool rbd-data --object-size 1M --stripe-unit 128K --stripe-count 2", 7 * MIB + 5, (2 * MIB, 3 * MIB), 128 * KIB),
    ];
    let mut models = Vec::new();
    for (tag, opts, size, hole, unit) in configs {
        let name = images.name(tag);
        let data = data_with_hole(&mut rng, size, hole);
        import(&cluster, &name, &data, opts);
        models.push((name, data, unit));
    }
    {
        let mount = Mount::new(&cluster, &["-v"]);
        for (name, model, unit) in models.iter_mut() {
            check_reads(&mount, name, model, &mut rng);
            let f = open_rw(&mount, name);
            // The first write (it takes the lock) spans many objects.
            write_at(&mount, &f, model, 12345, &rng.bytes(4 * MIB as usize));
            random_writes(&mount, &f, model, &mut rng, 60, 300 * KIB, *unit);
            f.sync_all()
                .unwrap_or_else(|e| panic!("fsync: {e}\n{}", mount.log()));
            assert_bytes_eq(&read_all(&mount, name), model, &format!("{name} read-back"));
        }
    }
    for (name, model, _) in &models {
        assert_bytes_eq(&cluster.export(name), model, &format!("rbd export {name}"));
        assert_object_map_ok(&cluster, name);
    }
    // The data-pool images' data objects are in rbd-data, none in rbd.
    let ls = |pool: &str| {
        let mut c = Command::new("rados");
        c.arg("-c").arg(cluster.conf()).args(["-p", pool, "ls"]);
        let out = run_timeout(&mut c, Duration::from_secs(60)).unwrap();
        assert!(out.status.success(), "rados ls {pool}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let (in_rbd, in_data) = (ls("rbd"), ls("rbd-data"));
    for (name, _, _) in models.iter().filter(|(n, _, _)| n.starts_with("t-dp")) {
        let id = image_id(&cluster, name);
        let ours = |l: &&str| l.starts_with("rbd_data.") && l.contains(&format!(".{id}."));
        assert!(
            in_data.lines().any(|l| ours(&l)),
            "{name}: no data objects in rbd-data"
        );
        assert!(
            !in_rbd.lines().any(|l| ours(&l)),
            "{name}: data objects in pool rbd"
        );
    }
}

#[test]
fn clone_reads_and_writes() {
    let cluster = Cluster::get();
    let mut images = Images::new(&cluster);
    let mut rng = Rng::new();
    let parent = images.name("par");
    let psize = 12 * MIB + 4321;
    let pdata = data_with_hole(&mut rng, psize, (6 * MIB, 8 * MIB));
    import(&cluster, &parent, &pdata, "--object-size 1M");
    let psnap = format!("{}@s", spec(&parent));
    cluster.rbd(&["snap", "create", &psnap]);
    cluster.rbd(&["snap", "protect", &psnap]);
    images.protected.push((parent.clone(), "s".into()));

    // (tag, clone options, shrink the clone to (overlap) first, final size,
    // unit for random writes). "big" grows past the parent, "shr" shrinks
    // the overlap to an unaligned 5M+777 and regrows, the last two have a
    // layout other than the parent's (copy-up must map image extents).
    let overlap_shr = 5 * MIB + 777;
    let specs: [(&str, &str, Option<u64>, u64, u64); 5] = [
        ("cl", "", None, psize, MIB),
        ("clbig", "", None, psize + 5 * MIB, MIB),
        ("clshr", "", Some(overlap_shr), 12 * MIB, MIB),
        ("cl4m", "--object-size 4M", None, psize, 4 * MIB),
        (
            "clstr",
            "--object-size 256K --stripe-unit 64K --stripe-count 2 --data-pool rbd-data",
            None,
            psize,
            64 * KIB,
        ),
    ];
    let mut clones = Vec::new();
    for (tag, opts, shrink, size, unit) in specs {
        let c = images.name(tag);
        let cs = spec(&c);
        rbd(&cluster, &format!("clone {opts} {psnap} {cs}"));
        let mut model = pdata.clone();
        if let Some(s) = shrink {
            rbd(
                &cluster,
                &format!("resize --no-progress --allow-shrink --size {s}B {cs}"),
            );
            model.truncate(overlap_shr as usize);
        }
        if size != psize {
            rbd(
                &cluster,
                &format!("resize --no-progress --allow-shrink --size {size}B {cs}"),
            );
        }
        model.resize(size as usize, 0);
        clones.push((c, model, unit));
    }
    let (shr, shr_model, _) = &clones[2];
    assert_bytes_eq(
        &cluster.export(shr),
        shr_model,
        "export of the shrunk clone",
    );

    // Partial writes into parent-only objects (copy-up), across objects,
    // into the parent's hole, a whole 1M object, the object cut by the
    // shrunk overlap, past the parent's end, across its old end.
    let fixed = [
        (2 * MIB + 1000, 5000),
        (4 * MIB - 100, 300),
        (5 * MIB + 2000, 100),
        (6 * MIB + 4096, 100),
        (8 * MIB + 5, 10),
        (9 * MIB, MIB),
        (psize - 50, 50),
        (psize - 10, 20),
        (psize + MIB, 4096),
    ];
    {
        let mount = Mount::new(&cluster, &["-v"]);
        for (c, model, unit) in clones.iter_mut() {
            check_reads(&mount, c, model, &mut rng);
            let f = open_rw(&mount, c);
            // Concurrent first writes into one parent-only object: each
            // must survive the others' copy-up.
            let blocks: Vec<_> = (0..8)
                .map(|i| (10 * MIB + i * 100 * KIB + 7, rng.bytes(4096)))
                .collect();
            let barrier = Barrier::new(blocks.len());
            thread::scope(|s| {
                for (off, data) in &blocks {
                    let (f, barrier, mount) = (&f, &barrier, &mount);
                    s.spawn(move || {
                        barrier.wait();
                        f.write_all_at(data, *off)
                            .unwrap_or_else(|e| panic!("write at {off}: {e}\n{}", mount.log()));
                    });
                }
            });
            for (off, data) in &blocks {
                model[*off as usize..*off as usize + data.len()].copy_from_slice(data);
            }
            assert_bytes_eq(
                &read_all(&mount, c),
                model,
                &format!("{c} concurrent writes"),
            );
            for (off, len) in fixed {
                if off + len <= model.len() as u64 {
                    write_at(&mount, &f, model, off, &rng.bytes(len as usize));
                }
            }
            assert_bytes_eq(&read_all(&mount, c), model, &format!("{c} fixed writes"));
            random_writes(&mount, &f, model, &mut rng, 25, 300 * KIB, *unit);
            f.sync_all()
                .unwrap_or_else(|e| panic!("fsync: {e}\n{}", mount.log()));
        }
        for (c, model, _) in &clones {
            assert_bytes_eq(&read_all(&mount, c), model, &format!("{c} read-back"));
        }
    }
    for (c, model, _) in &clones {
        assert_bytes_eq(&cluster.export(c), model, &format!("rbd export {c}"));
        assert_object_map_ok(&cluster, c);
    }
    assert_bytes_eq(&cluster.export(&format!("{parent}@s")), &pdata, "parent@s");
    assert_bytes_eq(&cluster.export(&parent), &pdata, "parent head");
    for (c, model, _) in &clones {
        cluster.rbd(&["flatten", "--no-progress", &spec(c)]);
        assert_bytes_eq(&cluster.export(c), model, &format!("{c} flattened"));
    }
}

#[test]
fn lock_handover_with_rbd_bench() {
    let cluster = Cluster::get();
    let mut images = Images::new(&cluster);
    let mut rng = Rng::new();
    let name = images.name("lock");
    let size = 32 * MIB;
    let s = spec(&name);
    rbd(&cluster, &format!("create --size 32M --object-size 1M {s}"));
    let bench = format!(
        "bench --io-type write --io-size 4K --io-threads 4 --io-total 8M --io-pattern rand {s}"
    );

    let mount = Mount::new(&cluster, &["-v"]);
    let f = open_rw(&mount, &name);
    f.write_all_at(&rng.bytes(MIB as usize), 5 * MIB).unwrap();
    let l = locks(&cluster, &name);
    assert!(l.contains("\"id\":\"auto "), "no lock after a write: {l}");

    // 1: rbdfs idle holding the lock: bench must get it.
    rbd_with(&cluster, &mount, &bench);

    // 2: bench while rbdfs keeps writing: the lock goes back and forth.
    let (c2, b2) = (cluster.clone(), bench.clone());
    let handle = thread::spawn(move || c2.rbd_try(&b2.split_whitespace().collect::<Vec<_>>()));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut writes = 0;
    while !handle.is_finished() {
        assert!(Instant::now() < deadline, "bench 2 hangs\n{}", mount.log());
        let off = rng.below(size / 4096) * 4096 + rng.below(100);
        f.write_all_at(&rng.bytes(5000), off.min(size - 5000))
            .unwrap_or_else(|e| panic!("write during bench: {e}\n{}", mount.log()));
        writes += 1;
    }
    match handle.join().unwrap() {
        Ok(o) if o.status.success() => {}
        r => panic!("bench 2: {r:?}\n{}", mount.log()),
    }
    eprintln!("{writes} rbdfs writes during bench 2");

    // 3: rbdfs takes the lock back; these bytes (disjoint) are final.
    let mut finals = Vec::new();
    for slot in 0..20 {
        let len = rng.range(1, 200 * KIB);
        let off = slot * (size / 20) + rng.below(size / 20 - len);
        let data = rng.bytes(len as usize);
        f.write_all_at(&data, off)
            .unwrap_or_else(|e| panic!("write after bench: {e}\n{}", mount.log()));
        finals.push((off, data));
    }
    f.sync_all()
        .unwrap_or_else(|e| panic!("fsync: {e}\n{}", mount.log()));
    let l = locks(&cluster, &name);
    assert!(l.contains("\"id\":\"auto "), "lock not taken back: {l}");
    let seen = read_all(&mount, &name);
    drop(f);
    drop(mount);

    assert_eq!(locks(&cluster, &name), "[]", "lock not released on unmount");
    let exported = cluster.export(&name);
    for (off, data) in &finals {
        let got = &exported[*off as usize..*off as usize + data.len()];
        assert_bytes_eq(got, data, &format!("final write at {off} in rbd export"));
    }
    assert_bytes_eq(
        &exported,
        &seen,
        "rbd export vs last read through the mount",
    );
    assert_object_map_ok(&cluster, &name);
}

#[test]
fn journaling_is_read_only_and_unknown_feature_is_refused() {
    let cluster = Cluster::get();
    let mut images = Images::new(&cluster);
    let mut rng = Rng::new();
    let [j, u, g] = ["journal", "unknown", "good"].map(|t| images.name(t));
    let jdata = rng.bytes((3 * MIB + 55) as usize);
    let jfeat = "--image-feature layering,exclusive-lock,journaling";
    import(&cluster, &j, &jdata, jfeat);
    import(&cluster, &u, &rng.bytes((MIB + 1) as usize), "");
    let gdata = rng.bytes((2 * MIB + 3) as usize);
    import(&cluster, &g, &gdata, "");

    let header = format!("rbd_header.{}", image_id(&cluster, &u));
    let orig = get_omap(&cluster, &header, "features");
    assert_eq!(orig.len(), 8, "features value: {orig:?}");
    let features = u64::from_le_bytes(orig.clone().try_into().unwrap());
    assert_eq!(features, 0x3d, "default features");
    images
        .omap_restores
        .push((header.clone(), "features".into(), orig));
    let bad = (features | 1 << 40).to_le_bytes();
    set_omap(&cluster, &header, "features", &bad).unwrap();

    let mount = Mount::new(&cluster, &["-v"]);
    // Journaling: readable, not writable.
    let mode = fs::metadata(mount.path(&j)).unwrap().permissions().mode();
    assert_eq!(mode & 0o222, 0, "journaling image mode {mode:o}");
    check_reads(&mount, &j, &jdata, &mut rng);
    for (what, r, w) in [("O_RDWR", true, true), ("O_WRONLY", false, true)] {
        let res = OpenOptions::new().read(r).write(w).open(mount.path(&j));
        assert_errno(res, &[libc::EROFS], &format!("{what} open"));
    }
    // Unknown feature: an error, whichever step reports it.
    let res = fs::metadata(mount.path(&u))
        .and_then(|_| File::open(mount.path(&u)))
        .and_then(|f| read_full_at(&f, 0, 4096).map(|v| v.len()));
    match res {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EIO)) => {}
        r => panic!(
            "unknown feature: {r:?}, want EOPNOTSUPP/EIO\n{}",
            mount.log()
        ),
    }
    let log = mount.log();
    assert!(log.contains(&u), "no log line names {u}\n{log}");
    check_reads(&mount, &g, &gdata, &mut rng);
    drop(mount);
    assert_bytes_eq(&cluster.export(&j), &jdata, "journaling image unchanged");
}

#[test]
fn cli_snapshot_visible_and_preserved() {
    let cluster = Cluster::get();
    let mut images = Images::new(&cluster);
    let mut rng = Rng::new();
    let name = images.name("clisnap");
    let size = 16 * MIB;
    rbd(
        &cluster,
        &format!("create --size 16M --object-size 1M {}", spec(&name)),
    );
    let mut model = vec![0u8; size as usize];

    let mount = Mount::new(&cluster, &["-v"]);
    let f = open_rw(&mount, &name);
    let m = &mut model;
    write_at(&mount, &f, m, MIB + 123, &rng.bytes(3 * MIB as usize));
    write_at(&mount, &f, &mut model, 10 * MIB - 7, &rng.bytes(5000));
    let a = model.clone();

    let snap = format!("{}@s1", spec(&name));
    rbd_with(
        &cluster,
        &mount,
        &format!("snap create --no-progress {snap}"),
    );

    // B, through the same handle: over A, next to it, and elsewhere.
    write_at(&mount, &f, &mut model, 2 * MIB - 10, &rng.bytes(20));
    let m = &mut model;
    write_at(&mount, &f, m, 3 * MIB, &rng.bytes(MIB as usize + 999));
    write_at(&mount, &f, &mut model, 12 * MIB + 1, &rng.bytes(300));
    f.sync_all()
        .unwrap_or_else(|e| panic!("fsync: {e}\n{}", mount.log()));

    let sp = mount.dir().join(".snap").join(&name).join("s1");
    let deadline = Instant::now() + Duration::from_secs(2);
    while fs::metadata(&sp).is_err() {
        assert!(Instant::now() < deadline, "no {sp:?}\n{}", mount.log());
        thread::sleep(Duration::from_millis(50));
    }
    let got = fs::read(&sp).unwrap_or_else(|e| panic!("read snapshot: {e}\n{}", mount.log()));
    assert_bytes_eq(&got, &a, "snapshot s1 through the mount");
    assert_bytes_eq(&read_all(&mount, &name), &model, "head through the mount");
    let got = read_full_at(&f, 0, size as usize).unwrap();
    assert_bytes_eq(&got, &model, "head through the writing handle");
    drop(f);
    drop(mount);

    assert_bytes_eq(&cluster.export(&format!("{name}@s1")), &a, "export IMG@s1");
    assert_bytes_eq(&cluster.export(&name), &model, "rbd export IMG");
    assert_object_map_ok(&cluster, &name);
    assert_object_map_ok(&cluster, &format!("{name}@s1"));
}

#[test]
fn format1_and_format2_listed_together() {
    let cluster = Cluster::get();
    let mut images = Images::new(&cluster);
    let prefix = format!("{}-", unique_name("mix"));
    let [v1, v2, v2odd] = ["v1", "v2", "v2odd"].map(|t| format!("{prefix}{t}"));
    images.names.extend([v1.clone(), v2.clone(), v2odd.clone()]);
    cluster.create_v1_image(&v1, 8 * MIB, 22);
    rbd(
        &cluster,
        &format!("create --size 3M --object-size 64K {}", spec(&v2)),
    );
    rbd(&cluster, &format!("create --size 12345B {}", spec(&v2odd)));

    let mount = Mount::new(&cluster, &["-v"]);
    let listed: BTreeSet<String> = mount
        .list()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert_eq!(
        listed,
        BTreeSet::from([v1.clone(), v2.clone(), v2odd.clone()])
    );
    for (n, size) in [(&v1, 8 * MIB), (&v2, 3 * MIB), (&v2odd, 12345)] {
        assert_eq!(cluster.image_size(n), size, "rbd info size of {n}");
        let meta = fs::metadata(mount.path(n)).unwrap();
        assert!(meta.is_file(), "{n} is not a regular file");
        assert_eq!(meta.len(), size, "size of {n}");
    }
    assert_bytes_eq(&read_all(&mount, &v2odd), &[0; 12345], "odd-size v2 image");
}
