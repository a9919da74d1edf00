//! Image lifecycle operations (`rbdfs::image::admin`: create, remove,
//! rename, resize) called directly against the test cluster, with the
//! `rbd`/`rados` CLIs as the oracle: what we create must look like what
//! `rbd create` creates, what we remove must leave nothing behind, renames
//! must keep the data, and resizes must keep snapshots intact and pass
//! `rbd object-map check`.

mod common;

use std::collections::BTreeSet;
use std::process::Output;
use std::sync::{Arc, OnceLock};

use common::json::Json;
use common::*;
use parking_lot::Mutex;
use rbdfs::format::v2::{
    self, FEATURE_EXCLUSIVE_LOCK, LOCK_CLASS, LockOp, RBD_LOCK_NAME, rbd_lock_cookie, unlock_input,
};
use rbdfs::image::ImageError;
use rbdfs::image::admin::*;
use rbdfs::store::rados::{RadosCluster, RadosPool};
use rbdfs::store::{
    NotifyReplies, ObjectStore, SnapContext, SnapId, StoreError, StoreResult, Usage, WatchCallback,
    WatchGuard,
};

const MIB: u64 = 1 << 20;
const DATA_POOL: &str = "rbd-data";

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// One librados client shared by the tests of this binary.
fn store(cluster: &Cluster) -> Arc<RadosPool> {
    static STORE: OnceLock<(Arc<RadosCluster>, Arc<RadosPool>)> = OnceLock::new();
    STORE.get_or_init(|| cluster.librados()).1.clone()
}

fn env() -> Option<(Cluster, Arc<RadosPool>)> {
    let cluster = Cluster::get();
    let s = store(&cluster);
    Some((cluster, s))
}

fn info_json(cluster: &Cluster, name: &str) -> Json {
    let out = cluster.rbd(&["info", "--format", "json", &spec(name)]);
    Json::parse(&String::from_utf8_lossy(&out.stdout))
}

/// A CLI's stdout, one entry a line.
fn stdout_lines(out: &Output) -> BTreeSet<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn rados_ls(cluster: &Cluster, pool: &str) -> BTreeSet<String> {
    stdout_lines(&cluster.rados(&["-p", pool, "ls"]))
}

fn omap_keys(cluster: &Cluster, oid: &str) -> BTreeSet<String> {
    stdout_lines(&cluster.rados(&["listomapkeys", oid]))
}

fn pool_id(cluster: &Cluster, pool: &str) -> i64 {
    static RADOS: OnceLock<(Arc<RadosCluster>, Arc<RadosPool>)> = OnceLock::new();
    let (rados, _) = RADOS.get_or_init(|| cluster.librados());
    rados
        .open_pool(pool)
        .unwrap_or_else(|e| panic!("open pool {pool}: {e}"))
        .pool_id()
}

fn errno_of<T: std::fmt::Debug>(r: Result<T, ImageError>) -> i32 {
    match r {
        Ok(v) => panic!("succeeded ({v:?}), expected an error"),
        Err(e) => {
            eprintln!("  expected error: {e}");
            e.errno()
        }
    }
}

fn image_id(cluster: &Cluster, name: &str) -> String {
    info_json(cluster, name).at("id").str().to_string()
}

fn block_name_prefix(cluster: &Cluster, name: &str) -> String {
    info_json(cluster, name)
        .at("block_name_prefix")
        .str()
        .to_string()
}

/// `rbd bench --io-type write` on `name`: data written by librbd.
fn rbd_bench_write(cluster: &Cluster, name: &str, io_size: &str, io_total: &str, pattern: &str) {
    cluster.rbd(&[
        "bench",
        "--io-type",
        "write",
        "--io-size",
        io_size,
        "--io-total",
        io_total,
        "--io-pattern",
        pattern,
        &spec(name),
    ]);
}

/// `rbd import` of `data` as a new image `name` (format 2 unless `extra`
/// says otherwise).
fn import(cluster: &Cluster, name: &str, data: &[u8], extra: &[&str]) {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, data).unwrap();
    let path = f.path().to_str().unwrap().to_string();
    let mut args = vec!["import", "--no-progress"];
    args.extend_from_slice(extra);
    let dest = spec(name);
    args.push(&path);
    args.push(&dest);
    cluster.rbd(&args);
}

fn snap_export(cluster: &Cluster, name: &str, snap: &str) -> Vec<u8> {
    cluster.export(&format!("{name}@{snap}"))
}

/// `rbd object-map check` (images with the object-map feature; a no-op
/// otherwise), then no flags: a mismatch makes the check flag the map
/// invalid.
fn object_map_check(cluster: &Cluster, name: &str) {
    let info = info_json(cluster, name);
    let features = info.get("features").map(Json::strs).unwrap_or_default();
    if !features.iter().any(|f| f == "object-map") {
        return;
    }
    cluster.rbd(&["object-map", "check", "--no-progress", &spec(name)]);
    let info = info_json(cluster, name);
    assert!(
        info.at("flags").strs().is_empty(),
        "{name}: flags after object-map check: {:?}",
        info.at("flags")
    );
}

/// Options for a format-1 image (defaults otherwise).
fn v1_options() -> CreateOptions {
    CreateOptions {
        format: 1,
        ..Default::default()
    }
}

fn with_order(order: u8) -> CreateOptions {
    CreateOptions {
        order,
        ..Default::default()
    }
}

fn with_features(features: u64) -> CreateOptions {
    CreateOptions {
        features: Some(features),
        ..Default::default()
    }
}

fn striped(stripe_unit: u64, stripe_count: u64) -> CreateOptions {
    CreateOptions {
        stripe_unit: Some(stripe_unit),
        stripe_count: Some(stripe_count),
        ..Default::default()
    }
}

fn with_data_pool(pool_id: i64) -> CreateOptions {
    CreateOptions {
        data_pool: Some(pool_id),
        ..Default::default()
    }
}

/// Takes the image's exclusive lock on `header_oid` as librbd does.
fn lock_exclusive(s: &RadosPool, header_oid: &str, cookie: &str) -> StoreResult<Vec<u8>> {
    let op = LockOp::rbd_exclusive(cookie).encode();
    s.exec(header_oid, LOCK_CLASS, "lock", &op)
}

fn unlock_exclusive(s: &RadosPool, header_oid: &str, cookie: &str) -> StoreResult<Vec<u8>> {
    let input = unlock_input(RBD_LOCK_NAME, cookie);
    s.exec(header_oid, LOCK_CLASS, "unlock", &input)
}

/// Holds the image's exclusive lock (as librbd takes it) for `f` when the
/// image has the feature; released afterwards, also on panic.
fn with_lock<T>(s: &RadosPool, name: &str, f: impl FnOnce() -> T) -> T {
    let info = image_info(s, name).expect("image info");
    if info.features & FEATURE_EXCLUSIVE_LOCK == 0 {
        return f();
    }
    struct Unlock<'a>(&'a RadosPool, String, String);
    impl Drop for Unlock<'_> {
        fn drop(&mut self) {
            let _ = unlock_exclusive(self.0, &self.1, &self.2);
        }
    }
    let cookie = rbd_lock_cookie(0x5eed);
    lock_exclusive(s, &info.header_oid, &cookie).expect("take the exclusive lock");
    let _unlock = Unlock(s, info.header_oid.clone(), cookie);
    f()
}

/// Resizes `name` as its lock owner, from a fresh header load.
fn resize(s: &RadosPool, name: &str, size: u64) -> Result<(), ImageError> {
    with_lock(s, name, || {
        let info = image_info(s, name)?;
        resize_image(s, &info, size, &info.snapc)
    })
}

/// Objects of the pool whose name contains `needle`.
fn objects_with(cluster: &Cluster, pool: &str, needle: &str) -> Vec<String> {
    rados_ls(cluster, pool)
        .into_iter()
        .filter(|o| o.contains(needle))
        .collect()
}

// ---------------------------------------------------------------------------
// A store that fails one chosen call (to test the rollback of create)
// ---------------------------------------------------------------------------

struct FailingStore {
    inner: Arc<RadosPool>,
    /// `exec` method, or "write:" + object-name suffix, that fails with EIO.
    fail: String,
    /// Ids seen in `dir_add_image` inputs.
    ids: Mutex<Vec<String>>,
}

impl FailingStore {
    fn new(inner: &Arc<RadosPool>, fail: String) -> FailingStore {
        FailingStore {
            inner: inner.clone(),
            fail,
            ids: Mutex::new(Vec::new()),
        }
    }

    fn eio(&self, op: &'static str, oid: &str) -> StoreError {
        StoreError::Errno {
            op,
            oid: oid.to_string(),
            errno: libc::EIO,
        }
    }
}

impl ObjectStore for FailingStore {
    fn read(&self, oid: &str, offset: u64, len: usize, snap: SnapId) -> StoreResult<Vec<u8>> {
        self.inner.read(oid, offset, len, snap)
    }
    fn write(&self, oid: &str, offset: u64, data: &[u8], snapc: &SnapContext) -> StoreResult<()> {
        if let Some(suffix) = self.fail.strip_prefix("write:")
            && oid.ends_with(suffix)
        {
            return Err(self.eio("write", oid));
        }
        self.inner.write(oid, offset, data, snapc)
    }
    fn stat(&self, oid: &str, snap: SnapId) -> StoreResult<u64> {
        self.inner.stat(oid, snap)
    }
    fn remove(&self, oid: &str, snapc: &SnapContext) -> StoreResult<()> {
        self.inner.remove(oid, snapc)
    }
    fn truncate(&self, oid: &str, size: u64, snapc: &SnapContext) -> StoreResult<()> {
        self.inner.truncate(oid, size, snapc)
    }
    fn zero(&self, oid: &str, offset: u64, len: u64, snapc: &SnapContext) -> StoreResult<()> {
        self.inner.zero(oid, offset, len, snapc)
    }
    fn usage(&self) -> StoreResult<Usage> {
        self.inner.usage()
    }
    fn exec(&self, oid: &str, class: &str, method: &str, input: &[u8]) -> StoreResult<Vec<u8>> {
        if method == "dir_add_image" {
            // name, id: two length-prefixed strings.
            let n = u32::from_le_bytes(input[..4].try_into().unwrap()) as usize;
            let id = &input[4 + n + 4..];
            self.ids
                .lock()
                .push(String::from_utf8_lossy(id).into_owned());
        }
        if method == self.fail {
            return Err(self.eio("exec", oid));
        }
        self.inner.exec(oid, class, method, input)
    }
    fn tmap_update(&self, oid: &str, command: &[u8]) -> StoreResult<()> {
        self.inner.tmap_update(oid, command)
    }
    fn selfmanaged_snap_create(&self) -> StoreResult<SnapId> {
        self.inner.selfmanaged_snap_create()
    }
    fn selfmanaged_snap_remove(&self, snap: SnapId) -> StoreResult<()> {
        self.inner.selfmanaged_snap_remove(snap)
    }
    fn watch(&self, oid: &str, callback: WatchCallback) -> StoreResult<Box<dyn WatchGuard>> {
        self.inner.watch(oid, callback)
    }
    fn notify(&self, oid: &str, payload: &[u8], timeout_ms: u64) -> StoreResult<NotifyReplies> {
        self.inner.notify(oid, payload, timeout_ms)
    }
    fn instance_id(&self) -> u64 {
        self.inner.instance_id()
    }
    fn blocklist_add(&self, address: &str, expire_secs: u32) -> StoreResult<()> {
        self.inner.blocklist_add(address, expire_secs)
    }
    fn pool_by_id(&self, pool_id: i64) -> StoreResult<Arc<dyn ObjectStore>> {
        self.inner.pool_by_id(pool_id)
    }
    fn pool_id(&self) -> i64 {
        self.inner.pool_id()
    }
    fn snap_rollback(&self, oid: &str, snap: SnapId, snapc: &SnapContext) -> StoreResult<()> {
        self.inner.snap_rollback(oid, snap, snapc)
    }
}

// ---------------------------------------------------------------------------
// Create
// ---------------------------------------------------------------------------

/// The `rbd info` fields that must match between our image and rbd's.
const SAME_FIELDS: [&str; 9] = [
    "size",
    "objects",
    "order",
    "object_size",
    "snapshot_count",
    "format",
    "features",
    "op_features",
    "flags",
];

fn assert_like(cluster: &Cluster, ours: &str, theirs: &str, extra: &[&str]) {
    let a = info_json(cluster, ours);
    let b = info_json(cluster, theirs);
    for f in SAME_FIELDS.iter().chain(extra) {
        assert_eq!(a.get(f), b.get(f), "field {f}: ours {a:?}\nrbd's {b:?}");
    }
    // The same keys, whatever the values (timestamps, ids).
    let keys = |j: &Json| match j {
        Json::Obj(m) => m.keys().cloned().collect::<Vec<_>>(),
        _ => unreachable!(),
    };
    let mut ka = keys(&a);
    let mut kb = keys(&b);
    ka.retain(|k| k != "name");
    kb.retain(|k| k != "name");
    assert_eq!(ka, kb, "rbd info keys");
}

#[test]
fn create_v2_defaults_look_like_rbd_create() {
    let Some((cluster, s)) = env() else { return };
    let mut scratch = Scratch::new(&cluster);
    let ours = scratch.name("adm-c2");
    let theirs = scratch.name("adm-c2r");
    let size = 10 * MIB + 4096;
    create_image(&*s, &ours, size, &CreateOptions::default()).unwrap();
    cluster.rbd(&["create", "--size", &format!("{size}B"), &spec(&theirs)]);
    assert_like(&cluster, &ours, &theirs, &[]);

    let info = info_json(&cluster, &ours);
    let id = info.at("id").str();
    let their_id = image_id(&cluster, &theirs);
    assert!(
        id.len() <= 14 && id.len() + 2 >= their_id.len() && id.len() <= their_id.len() + 2,
        "id {id} vs rbd's {their_id}"
    );
    assert!(
        id.starts_with(&format!("{:x}", s.instance_id())),
        "id {id} starts with our instance id {:x}",
        s.instance_id()
    );
    assert_eq!(info.at("block_name_prefix").str(), format!("rbd_data.{id}"));
    assert!(info.get("create_timestamp").is_some());
    assert!(cluster.ls().contains(&ours), "rbd ls lists {ours}");

    // Same header keys, same object map (all nonexistent, same count).
    assert_eq!(
        omap_keys(&cluster, &format!("rbd_header.{id}")),
        omap_keys(&cluster, &format!("rbd_header.{their_id}"))
    );
    assert_eq!(
        cluster.get_object(&format!("rbd_object_map.{id}")),
        cluster.get_object(&format!("rbd_object_map.{their_id}"))
    );
    let dir = omap_keys(&cluster, "rbd_directory");
    assert!(dir.contains(&format!("name_{ours}")) && dir.contains(&format!("id_{id}")));
    let raw = cluster.get_object(&format!("rbd_id.{ours}"));
    assert_eq!(v2::decode_id_object(&raw).unwrap(), id);

    // librbd can use it: write, read back, object map consistent.
    rbd_bench_write(&cluster, &ours, "64K", "2M", "rand");
    object_map_check(&cluster, &ours);
    assert_eq!(cluster.export(&ours).len() as u64, size);
}

#[test]
fn create_v2_options_look_like_rbd_create() {
    let Some((cluster, s)) = env() else { return };
    let data_pool = pool_id(&cluster, DATA_POOL);
    let size = 9 * MIB + 512;
    let cases: Vec<(CreateOptions, Vec<&str>)> = vec![
        (
            CreateOptions {
                order: 20,
                ..with_features(v2::FEATURE_LAYERING)
            },
            vec!["--order", "20", "--image-feature", "layering"],
        ),
        (
            // librbd adds fast-diff to object-map.
            with_features(0x0d),
            vec!["--image-feature", "layering,exclusive-lock,object-map"],
        ),
        (
            striped(64 << 10, 4),
            vec!["--stripe-unit", "65536", "--stripe-count", "4"],
        ),
        (
            // Stripe unit = object size, count 1: not striped.
            striped(4 * MIB, 1),
            vec!["--stripe-unit", "4194304", "--stripe-count", "1"],
        ),
        (
            CreateOptions {
                order: 16,
                features: Some(v2::FEATURE_LAYERING | FEATURE_EXCLUSIVE_LOCK),
                ..striped(16 << 10, 3)
            },
            vec![
                "--order",
                "16",
                "--stripe-unit",
                "16384",
                "--stripe-count",
                "3",
                "--image-feature",
                "layering,exclusive-lock",
            ],
        ),
        (with_data_pool(data_pool), vec!["--data-pool", DATA_POOL]),
        (
            // The image's own pool as data pool is no data pool.
            with_data_pool(s.pool_id()),
            vec![],
        ),
    ];
    for (opts, args) in cases {
        eprintln!("case {opts:?} ~ rbd create {args:?}");
        let mut scratch = Scratch::new(&cluster);
        let ours = scratch.name("adm-co");
        let theirs = scratch.name("adm-cor");
        create_image(&*s, &ours, size, &opts).unwrap();
        let size_arg = format!("{size}B");
        let their_spec = spec(&theirs);
        let mut full = vec!["create", "--size", &size_arg];
        full.extend(args.iter());
        full.push(&their_spec);
        cluster.rbd(&full);
        assert_like(
            &cluster,
            &ours,
            &theirs,
            &["stripe_unit", "stripe_count", "data_pool"],
        );
        let info = info_json(&cluster, &ours);
        let id = info.at("id").str();
        let prefix = match opts.data_pool {
            Some(p) if p != s.pool_id() => format!("rbd_data.{}.{id}", s.pool_id()),
            _ => format!("rbd_data.{id}"),
        };
        assert_eq!(info.at("block_name_prefix").str(), prefix);
        let has_object_map = info
            .at("features")
            .strs()
            .contains(&"object-map".to_string());
        if has_object_map {
            let their_id = image_id(&cluster, &theirs);
            assert_eq!(
                cluster.get_object(&format!("rbd_object_map.{id}")),
                cluster.get_object(&format!("rbd_object_map.{their_id}")),
                "object maps"
            );
        }
        rbd_bench_write(&cluster, &ours, "16K", "1M", "rand");
        if has_object_map {
            object_map_check(&cluster, &ours);
        }
        if opts.data_pool.is_some_and(|p| p != s.pool_id()) {
            assert!(
                !objects_with(&cluster, DATA_POOL, &prefix).is_empty(),
                "data objects in {DATA_POOL}"
            );
        }
    }
}

#[test]
fn create_v1_looks_like_rbd_create() {
    let Some((cluster, s)) = env() else { return };
    let mut scratch = Scratch::new(&cluster);
    let ours = scratch.name("adm-c1");
    let theirs = scratch.name("adm-c1r");
    let size = 5 * MIB + 4096;
    let opts = CreateOptions {
        order: 20,
        ..v1_options()
    };
    create_image(&*s, &ours, size, &opts).unwrap();
    cluster.rbd(&[
        "create",
        "--image-format",
        "1",
        "--order",
        "20",
        "--size",
        &format!("{size}B"),
        &spec(&theirs),
    ]);
    let a = info_json(&cluster, &ours);
    let b = info_json(&cluster, &theirs);
    for f in [
        "size",
        "objects",
        "order",
        "object_size",
        "format",
        "snapshot_count",
        "id",
    ] {
        assert_eq!(a.get(f), b.get(f), "field {f}: {a:?} vs {b:?}");
    }
    let block = a.at("block_name_prefix").str();
    let expect = format!("rb.0.{:x}.", s.instance_id());
    assert!(block.starts_with(&expect), "{block} starts with {expect}");
    // Headers equal but for the block name.
    let mut ha = cluster.get_object(&format!("{ours}.rbd"));
    let mut hb = cluster.get_object(&format!("{theirs}.rbd"));
    assert_eq!(ha.len(), 0x70);
    ha[0x28..0x40].fill(0);
    hb[0x28..0x40].fill(0);
    assert_eq!(ha, hb);
    assert!(cluster.ls().contains(&ours));

    // (seq: rbd bench's default pattern.)
    rbd_bench_write(&cluster, &ours, "64K", "1M", "seq");
    assert_eq!(cluster.export(&ours).len() as u64, size);
}

#[test]
fn create_refusals() {
    let Some((cluster, s)) = env() else { return };
    let mut scratch = Scratch::new(&cluster);
    let v2name = scratch.name("adm-ce2");
    let v1name = scratch.name("adm-ce1");
    let fresh = scratch.name("adm-cef");
    create_image(&*s, &v2name, MIB, &CreateOptions::default()).unwrap();
    let v1 = v1_options();
    create_image(&*s, &v1name, MIB, &v1).unwrap();

    let long = "x".repeat(256);
    for bad in ["", ".", "..", ".snap", "a/b", "a\0b", long.as_str()] {
        assert_eq!(
            errno_of(create_image(&*s, bad, MIB, &CreateOptions::default())),
            libc::EINVAL,
            "{bad:?}"
        );
    }
    for name in [&v2name, &v1name] {
        for opts in [&CreateOptions::default(), &v1] {
            assert_eq!(
                errno_of(create_image(&*s, name, MIB, opts)),
                libc::EEXIST,
                "{name} {opts:?}"
            );
        }
    }
    let bad_opts: Vec<(CreateOptions, i32)> = vec![
        (with_order(11), libc::EINVAL),
        (with_order(26), libc::EINVAL),
        (
            CreateOptions {
                format: 3,
                ..Default::default()
            },
            libc::EINVAL,
        ),
        (
            CreateOptions {
                features: Some(1),
                ..v1_options()
            },
            libc::EINVAL,
        ),
        (
            // A stripe unit without a count.
            CreateOptions {
                stripe_unit: Some(65536),
                ..Default::default()
            },
            libc::EINVAL,
        ),
        (striped(3000, 2), libc::EINVAL),
        (striped(8 * MIB, 2), libc::EINVAL),
        // fast-diff without object-map
        (with_features(0x11), libc::EINVAL),
        // object-map without exclusive-lock
        (with_features(0x09), libc::EINVAL),
        // journaling: no journal can be made
        (with_features(0x45), libc::EOPNOTSUPP),
        // operations is internal
        (with_features(0x101), libc::EINVAL),
        (with_features(1 << 40), libc::EINVAL),
        (with_data_pool(987_654), libc::EINVAL),
    ];
    for (opts, errno) in bad_opts {
        assert_eq!(
            errno_of(create_image(&*s, &fresh, MIB, &opts)),
            errno,
            "{opts:?}"
        );
    }
    // Too many objects for an object map (256M objects of 4 KiB).
    let huge = with_order(12);
    assert_eq!(
        errno_of(create_image(&*s, &fresh, (256_000_001u64) << 12, &huge)),
        libc::EINVAL
    );
    // Nothing of the refused image exists.
    assert_eq!(image_format(&*s, &fresh).unwrap(), None);
    assert!(objects_with(&cluster, POOL, &fresh).is_empty());
    assert!(!cluster.ls().contains(&fresh));
    // The existing ones are untouched.
    assert_eq!(cluster.image_size(&v2name), MIB);
    assert_eq!(cluster.image_size(&v1name), MIB);
}

#[test]
fn create_undoes_what_it_did_on_failure() {
    let Some((cluster, s)) = env() else { return };
    let mut scratch = Scratch::new(&cluster);
    let striped = striped(65536, 2);
    for fail in [
        "set_id",
        "create",
        "set_stripe_unit_count",
        "object_map_resize",
    ] {
        let name = scratch.name("adm-cu");
        let fs = FailingStore::new(&s, fail.to_string());
        let e = create_image(&fs, &name, 3 * MIB, &striped).unwrap_err();
        eprintln!("failing {fail}: {e}");
        assert_eq!(e.errno(), libc::EIO, "{e}");
        let ids = fs.ids.lock().clone();
        assert_eq!(ids.len(), 1, "one directory add");
        let id = &ids[0];
        assert_eq!(image_format(&*s, &name).unwrap(), None, "{fail}");
        let left: Vec<String> = rados_ls(&cluster, POOL)
            .into_iter()
            .filter(|o| o.contains(id.as_str()) || o.contains(name.as_str()))
            .collect();
        assert!(left.is_empty(), "after failing {fail}: {left:?}");
        let dir = omap_keys(&cluster, "rbd_directory");
        assert!(!dir.contains(&format!("name_{name}")) && !dir.contains(&format!("id_{id}")));
    }
    // Format 1: the header write fails, the directory entry goes again.
    let name = scratch.name("adm-cu1");
    let fs = FailingStore::new(&s, format!("write:{name}.rbd"));
    assert_eq!(
        errno_of(create_image(&fs, &name, MIB, &v1_options())),
        libc::EIO
    );
    assert!(!cluster.ls().contains(&name));
    assert_eq!(image_format(&*s, &name).unwrap(), None);
}

// ---------------------------------------------------------------------------
// Remove
// ---------------------------------------------------------------------------

/// Asserts that nothing of a removed format-2 image `name` (id `id`) is
/// left in `pools`, nor in the directory.
fn assert_v2_gone(cluster: &Cluster, name: &str, id: &str, pools: &[&str]) {
    for pool in pools {
        let left: Vec<String> = rados_ls(cluster, pool)
            .into_iter()
            .filter(|o| o.contains(id) || o.ends_with(&format!(".{name}")))
            .collect();
        assert!(left.is_empty(), "left in {pool}: {left:?}");
    }
    let dir = omap_keys(cluster, "rbd_directory");
    assert!(
        !dir.contains(&format!("name_{name}")),
        "directory name entry"
    );
    assert!(!dir.contains(&format!("id_{id}")), "directory id entry");
    assert!(!cluster.ls().contains(&name.to_string()), "rbd ls");
    let r = cluster.rbd_try(&["info", &spec(name)]).unwrap();
    assert!(!r.status.success(), "rbd info {name} after removal");
}

#[test]
fn remove_v2_images_leaves_nothing() {
    let Some((cluster, s)) = env() else { return };
    let mut scratch = Scratch::new(&cluster);
    let data_pool = pool_id(&cluster, DATA_POOL);
    let cases: Vec<(&str, CreateOptions)> = vec![
        ("default", CreateOptions::default()),
        ("no object map", with_features(v2::FEATURE_LAYERING)),
        (
            "striped",
            CreateOptions {
                order: 20,
                ..striped(64 << 10, 3)
            },
        ),
        ("data pool", with_data_pool(data_pool)),
    ];
    for (what, opts) in cases {
        eprintln!("case {what}");
        let name = scratch.name("adm-rm2");
        create_image(&*s, &name, 13 * MIB, &opts).unwrap();
        rbd_bench_write(&cluster, &name, "256K", "6M", "rand");
        let id = image_id(&cluster, &name);
        let pool = if opts.data_pool.is_some() {
            DATA_POOL
        } else {
            POOL
        };
        assert!(!objects_with(&cluster, pool, &id).is_empty());
        remove_image(&*s, &name).unwrap();
        assert_v2_gone(&cluster, &name, &id, &[POOL, DATA_POOL]);
        assert_eq!(errno_of(remove_image(&*s, &name)), libc::ENOENT);
    }
    // An image made by rbd, with data written by rbd.
    let name = scratch.name("adm-rm2r");
    let data: Vec<u8> = (0..(5 * MIB + 999) as usize)
        .map(|i| (i % 251) as u8)
        .collect();
    import(&cluster, &name, &data, &[]);
    let id = image_id(&cluster, &name);
    remove_image(&*s, &name).unwrap();
    assert_v2_gone(&cluster, &name, &id, &[POOL]);
}

#[test]
fn remove_v1_images_leaves_nothing() {
    let Some((cluster, s)) = env() else { return };
    let mut scratch = Scratch::new(&cluster);
    let name = scratch.name("adm-rm1");
    let data: Vec<u8> = (0..(9 * MIB + 5) as usize)
        .map(|i| (i % 253) as u8)
        .collect();
    cluster.import_v1(&name, &data, 22);
    let block = block_name_prefix(&cluster, &name);
    assert_eq!(objects_with(&cluster, POOL, &block).len(), 3);
    remove_image(&*s, &name).unwrap();
    assert!(objects_with(&cluster, POOL, &block).is_empty());
    assert!(!rados_ls(&cluster, POOL).contains(&format!("{name}.rbd")));
    assert!(!cluster.ls().contains(&name));
    assert_eq!(errno_of(remove_image(&*s, &name)), libc::ENOENT);

    // One we created, never written.
    let name = scratch.name("adm-rm1c");
    create_image(&*s, &name, 3 * MIB, &v1_options()).unwrap();
    remove_image(&*s, &name).unwrap();
    assert!(!cluster.ls().contains(&name));
    assert!(!rados_ls(&cluster, POOL).contains(&format!("{name}.rbd")));
}

#[test]
fn remove_refuses_busy_or_snapshotted_images() {
    let Some((cluster, s)) = env() else { return };
    let mut scratch = Scratch::new(&cluster);
    let mut purge = SnapPurge::new(&cluster);
    let v2name = purge.add(scratch.name("adm-rr2"));
    let v1name = purge.add(scratch.name("adm-rr1"));
    create_image(&*s, &v2name, 2 * MIB, &CreateOptions::default()).unwrap();
    create_image(&*s, &v1name, 2 * MIB, &v1_options()).unwrap();

    for bad in ["", "..", ".snap", "a/b"] {
        assert_eq!(errno_of(remove_image(&*s, bad)), libc::EINVAL);
    }
    assert_eq!(
        errno_of(remove_image(&*s, &scratch.name("adm-none"))),
        libc::ENOENT
    );

    // Snapshots.
    for name in [&v2name, &v1name] {
        cluster.rbd(&["snap", "create", &format!("{}@s1", spec(name))]);
        assert_eq!(errno_of(remove_image(&*s, name)), libc::ENOTEMPTY);
        assert_eq!(cluster.image_size(name), 2 * MIB, "still there");
        cluster.rbd(&["snap", "rm", "--no-progress", &format!("{}@s1", spec(name))]);
    }

    // Another client watching the header.
    let (_rados2, s2) = cluster.librados();
    for name in [&v2name, &v1name] {
        let info = image_info(&*s, name).unwrap();
        let watch = s2
            .watch(&info.header_oid, Box::new(|_| Vec::new()))
            .unwrap();
        assert_eq!(errno_of(remove_image(&*s, name)), libc::EBUSY);
        drop(watch);
        assert_eq!(cluster.image_size(name), 2 * MIB, "still there");
    }

    // Another client holding the exclusive lock.
    let info = image_info(&*s, &v2name).unwrap();
    let cookie = rbd_lock_cookie(77);
    lock_exclusive(&s2, &info.header_oid, &cookie).unwrap();
    assert_eq!(errno_of(remove_image(&*s, &v2name)), libc::EBUSY);
    unlock_exclusive(&s2, &info.header_oid, &cookie).unwrap();

    // In a group.
    let group = format!("{POOL}/{}", unique_name("adm-grp"));
    cluster.rbd(&["group", "create", &group]);
    cluster.rbd(&["group", "image", "add", &group, &spec(&v2name)]);
    let r = remove_image(&*s, &v2name);
    cluster.rbd(&["group", "image", "rm", &group, &spec(&v2name)]);
    cluster.rbd(&["group", "rm", &group]);
    assert_eq!(errno_of(r), libc::EBUSY);

    // Free again: removal works.
    remove_image(&*s, &v2name).unwrap();
    remove_image(&*s, &v1name).unwrap();
    assert!(!cluster.ls().contains(&v2name) && !cluster.ls().contains(&v1name));
}

#[test]
fn remove_clones_detaches_them_from_the_parent() {
    let Some((cluster, s)) = env() else { return };
    let mut scratch = Scratch::new(&cluster);
    let mut purge = SnapPurge::new(&cluster);
    // Clones first in the scratch list: they are removed before the parent.
    let c1 = scratch.name("adm-cl1");
    let c2 = scratch.name("adm-cl2");
    let c3 = scratch.name("adm-cl3");
    let parent = purge.add(scratch.name("adm-clp"));
    let data: Vec<u8> = (0..(6 * MIB) as usize).map(|i| (i % 241) as u8).collect();
    import(&cluster, &parent, &data, &[]);
    let snap = format!("{}@s", spec(&parent));
    cluster.rbd(&["snap", "create", &snap]);
    cluster.rbd(&["snap", "protect", &snap]);
    for (clone, format) in [(&c1, "1"), (&c2, "2"), (&c3, "2")] {
        cluster.rbd(&[
            "clone",
            "--rbd-default-clone-format",
            format,
            &snap,
            &spec(clone),
        ]);
    }
    // Give the clones data of their own (seq: rbd bench's default pattern).
    for c in [&c1, &c2] {
        rbd_bench_write(&cluster, c, "64K", "1M", "seq");
    }
    let children = |cluster: &Cluster| -> Vec<String> {
        let out = cluster.rbd(&["children", &snap]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(children(&cluster).len(), 3);
    // The parent has a snapshot with children: refused.
    assert_eq!(errno_of(remove_image(&*s, &parent)), libc::ENOTEMPTY);

    for c in [&c1, &c2] {
        let id = image_id(&cluster, c);
        remove_image(&*s, c).unwrap();
        assert_v2_gone(&cluster, c, &id, &[POOL]);
    }
    assert_eq!(children(&cluster), vec![spec(&c3)]);
    let rbd_children = cluster.rados(&["listomapvals", "rbd_children"]);
    let c1_listed = String::from_utf8_lossy(&rbd_children.stdout).contains(&c1);
    assert!(!c1_listed, "clone v1 still in rbd_children");

    // A clone v2 whose parent snapshot went to the trash: left to rbd rm.
    cluster.rbd(&["snap", "unprotect", &snap]);
    cluster.rbd(&["snap", "rm", "--no-progress", &snap]);
    assert_eq!(errno_of(remove_image(&*s, &c3)), libc::EOPNOTSUPP);
    cluster.remove_image(&c3);
    // With its children gone the parent goes too.
    remove_image(&*s, &parent).unwrap();
    assert!(!cluster.ls().contains(&parent));
}

// ---------------------------------------------------------------------------
// Rename
// ---------------------------------------------------------------------------

#[test]
fn rename_keeps_the_image() {
    let Some((cluster, s)) = env() else { return };
    let mut scratch = Scratch::new(&cluster);
    let data: Vec<u8> = (0..(3 * MIB + 77) as usize)
        .map(|i| (i % 239) as u8)
        .collect();

    // Format 2.
    let a = scratch.name("adm-rn2a");
    let b = scratch.name("adm-rn2b");
    import(&cluster, &a, &data, &[]);
    let id = image_id(&cluster, &a);
    rename_image(&*s, &a, &b).unwrap();
    let ls = cluster.ls();
    assert!(ls.contains(&b) && !ls.contains(&a), "{ls:?}");
    assert_eq!(image_id(&cluster, &b), id);
    assert_bytes_eq(&cluster.export(&b), &data, "renamed v2");
    let objs = rados_ls(&cluster, POOL);
    assert!(objs.contains(&format!("rbd_id.{b}")) && !objs.contains(&format!("rbd_id.{a}")));
    let dir = omap_keys(&cluster, "rbd_directory");
    assert!(dir.contains(&format!("name_{b}")) && !dir.contains(&format!("name_{a}")));
    object_map_check(&cluster, &b);

    // Format 1.
    let c = scratch.name("adm-rn1a");
    let d = scratch.name("adm-rn1b");
    cluster.import_v1(&c, &data, 20);
    let header = cluster.get_object(&format!("{c}.rbd"));
    rename_image(&*s, &c, &d).unwrap();
    let ls = cluster.ls();
    assert!(ls.contains(&d) && !ls.contains(&c), "{ls:?}");
    assert_eq!(cluster.get_object(&format!("{d}.rbd")), header);
    assert!(!rados_ls(&cluster, POOL).contains(&format!("{c}.rbd")));
    assert_bytes_eq(&cluster.export(&d), &data, "renamed v1");

    // Refusals: the target exists (either format, or is the source).
    for (from, to) in [(&b, &d), (&d, &b), (&b, &b), (&d, &d)] {
        assert_eq!(errno_of(rename_image(&*s, from, to)), libc::EEXIST);
    }
    assert_eq!(
        errno_of(rename_image(&*s, &scratch.name("adm-none"), &a)),
        libc::ENOENT
    );
    for bad in ["", ".", ".snap", "x/y"] {
        assert_eq!(errno_of(rename_image(&*s, &b, bad)), libc::EINVAL);
        assert_eq!(errno_of(rename_image(&*s, bad, &a)), libc::EINVAL);
    }
    // Nothing changed by the refusals.
    assert_bytes_eq(&cluster.export(&b), &data, "v2 after refusals");
    assert_bytes_eq(&cluster.export(&d), &data, "v1 after refusals");

    // And back, through our own images too.
    rename_image(&*s, &b, &a).unwrap();
    rename_image(&*s, &d, &c).unwrap();
    assert_bytes_eq(&cluster.export(&a), &data, "v2 renamed back");
    assert_bytes_eq(&cluster.export(&c), &data, "v1 renamed back");
}

// ---------------------------------------------------------------------------
// Resize
// ---------------------------------------------------------------------------

/// The image's expected content after resizes: the head, and snapshot s1.
struct Expect {
    head: Vec<u8>,
    snap: Vec<u8>,
}

impl Expect {
    fn resize(&mut self, s: &RadosPool, cluster: &Cluster, name: &str, size: u64) {
        eprintln!("  resize {name} {} -> {size}", self.head.len());
        resize(s, name, size).unwrap_or_else(|e| panic!("resize {name} to {size}: {e}"));
        self.head.resize(size as usize, 0);
        self.check(cluster, name);
    }

    fn check(&self, cluster: &Cluster, name: &str) {
        assert_eq!(cluster.image_size(name), self.head.len() as u64);
        assert_bytes_eq(&cluster.export(name), &self.head, "head");
        assert_bytes_eq(&snap_export(cluster, name, "s1"), &self.snap, "snapshot s1");
        object_map_check(cluster, name);
    }
}

fn resize_scenario(cluster: &Cluster, s: &RadosPool, name: &str, data: Vec<u8>, sizes: &[u64]) {
    cluster.rbd(&["snap", "create", &format!("{}@s1", spec(name))]);
    let mut e = Expect {
        head: data.clone(),
        snap: data,
    };
    e.check(cluster, name);
    for &size in sizes {
        e.resize(s, cluster, name, size);
    }
}

fn random_data(len: u64) -> Vec<u8> {
    let mut rng = Rng::new();
    rng.bytes(len as usize)
}

#[test]
fn resize_v2_with_object_map_and_snapshot() {
    let Some((cluster, s)) = env() else { return };
    let mut scratch = Scratch::new(&cluster);
    let mut purge = SnapPurge::new(&cluster);
    let name = purge.add(scratch.name("adm-rs2"));
    import(&cluster, &name, &random_data(12 * MIB + 5000), &[]);
    resize_scenario(
        &cluster,
        &s,
        &name,
        cluster.export(&name),
        &[5 * MIB + 777, 21 * MIB, 8 * MIB, 8 * MIB, 3, 0, 9 * MIB + 1],
    );
}

#[test]
fn resize_v1_with_snapshot() {
    let Some((cluster, s)) = env() else { return };
    let mut scratch = Scratch::new(&cluster);
    let mut purge = SnapPurge::new(&cluster);
    let name = purge.add(scratch.name("adm-rs1"));
    let data = random_data(5 * MIB + 3333);
    cluster.import_v1(&name, &data, 20);
    resize_scenario(
        &cluster,
        &s,
        &name,
        data,
        &[2 * MIB + 100, 7 * MIB, MIB, 4096, 3 * MIB + 5],
    );
    // The header is what librbd's resize writes: only the size changed.
    let h = cluster.get_object(&format!("{name}.rbd"));
    assert_eq!(
        u64::from_le_bytes(h[0x50..0x58].try_into().unwrap()),
        3 * MIB + 5
    );
}

#[test]
fn resize_striped_v2() {
    let Some((cluster, s)) = env() else { return };
    let mut scratch = Scratch::new(&cluster);
    let mut purge = SnapPurge::new(&cluster);
    // 1 MiB objects, 64 KiB units, 4 per set: a period is 4 MiB.
    let name = purge.add(scratch.name("adm-rss"));
    let args = [
        "--order",
        "20",
        "--stripe-unit",
        "65536",
        "--stripe-count",
        "4",
    ];
    import(&cluster, &name, &random_data(10 * MIB + 1234), &args);
    assert_eq!(
        info_json(&cluster, &name).at("stripe_count").u64(),
        4,
        "striped"
    );
    resize_scenario(
        &cluster,
        &s,
        &name,
        cluster.export(&name),
        &[
            // 100 KiB + 17 into the third period: objects 8, 9 keep a part,
            // 10 and 11 go.
            8 * MIB + (100 << 10) + 17,
            // Two and a half stripes into the second period: all four keep
            // data.
            4 * MIB + (600 << 10),
            11 * MIB,
            64 << 10,
            5 * MIB + 1,
        ],
    );
    // Also one we created ourselves, without a snapshot: then the removed
    // objects are gone from the pool too.
    let name = scratch.name("adm-rss2");
    let opts = CreateOptions {
        order: 20,
        ..striped(65536, 4)
    };
    create_image(&*s, &name, 12 * MIB, &opts).unwrap();
    rbd_bench_write(&cluster, &name, "64K", "12M", "seq");
    let mut data = cluster.export(&name);
    let prefix = block_name_prefix(&cluster, &name);
    assert_eq!(objects_with(&cluster, POOL, &prefix).len(), 12);
    let new = 4 * MIB + (100 << 10);
    resize(&s, &name, new).unwrap();
    data.truncate(new as usize);
    assert_bytes_eq(&cluster.export(&name), &data, "striped, shrunk");
    // Objects 4 and 5 keep data; 6..12 are gone.
    let left = objects_with(&cluster, POOL, &prefix);
    assert_eq!(left.len(), 6, "{left:?}");
    object_map_check(&cluster, &name);
}

#[test]
fn resize_without_object_map_and_clones() {
    let Some((cluster, s)) = env() else { return };
    let mut scratch = Scratch::new(&cluster);
    let mut purge = SnapPurge::new(&cluster);
    // Layering only: no lock needed, no object map.
    let name = purge.add(scratch.name("adm-rsl"));
    import(
        &cluster,
        &name,
        &random_data(6 * MIB + 10),
        &["--image-feature", "layering"],
    );
    resize_scenario(
        &cluster,
        &s,
        &name,
        cluster.export(&name),
        &[3 * MIB + 1, 9 * MIB],
    );

    // A clone: without snapshots it shrinks (the overlap shrinks with it),
    // with one it is refused.
    let clone = scratch.name("adm-rsc");
    cluster.rbd(&["snap", "protect", &format!("{}@s1", spec(&name))]);
    cluster.rbd(&["clone", &format!("{}@s1", spec(&name)), &spec(&clone)]);
    let parent_data = snap_export(&cluster, &name, "s1");
    let new = 2 * MIB + 300;
    resize(&s, &clone, new).unwrap();
    let info = info_json(&cluster, &clone);
    assert_eq!(info.at("size").u64(), new);
    assert_eq!(info.at("parent").at("overlap").u64(), new);
    let mut expect = parent_data[..new as usize].to_vec();
    assert_bytes_eq(&cluster.export(&clone), &expect, "clone shrunk");
    resize(&s, &clone, 5 * MIB).unwrap();
    expect.resize(5 * MIB as usize, 0);
    assert_bytes_eq(&cluster.export(&clone), &expect, "clone grown");
    object_map_check(&cluster, &clone);
    cluster.rbd(&["snap", "create", &format!("{}@cs", spec(&clone))]);
    assert_eq!(errno_of(resize(&s, &clone, MIB)), libc::EOPNOTSUPP);
    // Growing it is fine.
    resize(&s, &clone, 6 * MIB).unwrap();
    assert_eq!(cluster.image_size(&clone), 6 * MIB);
    cluster.rbd(&["snap", "purge", "--no-progress", &spec(&clone)]);
    cluster.remove_image(&clone);
    cluster.rbd(&["snap", "unprotect", &format!("{}@s1", spec(&name))]);
}

#[test]
fn resize_needs_the_exclusive_lock() {
    let Some((cluster, s)) = env() else { return };
    let mut scratch = Scratch::new(&cluster);
    let name = scratch.name("adm-rlk");
    create_image(&*s, &name, 4 * MIB, &CreateOptions::default()).unwrap();
    let info = image_info(&*s, &name).unwrap();
    assert_eq!(
        errno_of(resize_image(&*s, &info, 8 * MIB, &info.snapc)),
        libc::EBUSY
    );
    // Held by another client: still refused.
    let (_r2, s2) = cluster.librados();
    let cookie = rbd_lock_cookie(99);
    lock_exclusive(&s2, &info.header_oid, &cookie).unwrap();
    let r = resize_image(&*s, &info, 8 * MIB, &info.snapc);
    unlock_exclusive(&s2, &info.header_oid, &cookie).unwrap();
    assert_eq!(errno_of(r), libc::EBUSY);
    assert_eq!(cluster.image_size(&name), 4 * MIB);
    // Same size: nothing to do, no lock needed.
    resize_image(&*s, &info, 4 * MIB, &info.snapc).unwrap();
    // With the lock it works.
    resize(&s, &name, 8 * MIB).unwrap();
    assert_eq!(cluster.image_size(&name), 8 * MIB);
    object_map_check(&cluster, &name);
}
