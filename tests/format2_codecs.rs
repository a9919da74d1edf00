//! The format-2 codecs (`rbdfs::format::v2`) against a real 16.2 cluster:
//! every class method is called through the crate's librados store, its
//! reply decoded with our code and compared with what the `rbd`/`rados`
//! CLIs (librbd itself) print; our inputs (lock, snapshot_add, notify
//! payloads, lock responses) must be understood by the OSD and by librbd.
//!
//! Each test makes its own uniquely named images and removes them at the
//! end (clones first, snapshots unprotected and purged).

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::json::Json;
use common::{Cluster, POOL, run_timeout, spec, unique_name, wait_timeout};
use rbdfs::format::v2::*;
use rbdfs::store::rados::{RadosCluster, RadosPool};
use rbdfs::store::{NOSNAP, ObjectStore, SnapContext, StoreError, WatchEvent};

const MIB: u64 = 1 << 20;

#[test]
fn json_parser_sanity() {
    let j = Json::parse(
        r#" {"a": [1, -2, "x\"y", true, null, {}], "b": {"c": 18446744073709551615}} "#,
    );
    assert_eq!(j.at("a").arr()[1].i64(), -2);
    assert_eq!(j.at("a").arr()[2].str(), "x\"y");
    assert_eq!(j.at("b").at("c").u64(), u64::MAX);
}

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

struct Env {
    cluster: Cluster,
    rados: Arc<RadosCluster>,
    pool: Arc<RadosPool>,
}

fn env() -> Option<Env> {
    let cluster = Cluster::get();
    let (rados, pool) = cluster.librados();
    Some(Env {
        cluster,
        rados,
        pool,
    })
}

impl Env {
    fn rbd_json(&self, args: &[&str]) -> Json {
        let mut full = args.to_vec();
        full.extend(["--format", "json"]);
        let out = self.cluster.rbd(&full);
        Json::parse(&String::from_utf8_lossy(&out.stdout))
    }

    fn info(&self, name: &str) -> Json {
        self.rbd_json(&["info", &spec(name)])
    }

    /// Pool name -> id, from the monitors.
    fn pool_ids(&self) -> BTreeMap<String, i64> {
        let mut cmd = Command::new("ceph");
        cmd.arg("-c")
            .arg(self.cluster.conf())
            .args(["osd", "lspools", "--format", "json"]);
        let out = run_timeout(&mut cmd, Duration::from_secs(60)).expect("ceph osd lspools");
        assert!(out.status.success(), "ceph osd lspools: {out:?}");
        Json::parse(&String::from_utf8_lossy(&out.stdout))
            .arr()
            .iter()
            .map(|p| (p.at("poolname").str().to_string(), p.at("poolnum").i64()))
            .collect()
    }

    fn exec(
        &self,
        oid: &str,
        class: &str,
        method: &str,
        input: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        self.pool.exec(oid, class, method, input)
    }

    fn rbd_exec(&self, id: &str, method: &str, input: &[u8]) -> Vec<u8> {
        self.exec(&header_object(id), RBD_CLASS, method, input)
            .unwrap_or_else(|e| panic!("rbd.{method} on {id}: {e}"))
    }
}

/// Images to remove when the test ends, newest first: clones before their
/// parents; each one's snapshots unprotected and purged before `rbd rm`.
struct Images {
    cluster: Cluster,
    names: Vec<String>,
}

impl Images {
    fn new(cluster: &Cluster) -> Images {
        Images {
            cluster: cluster.clone(),
            names: Vec::new(),
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
        for name in self.names.iter().rev() {
            let s = spec(name);
            if let Ok(o) = self
                .cluster
                .rbd_try(&["snap", "ls", "--format", "json", &s])
                && o.status.success()
            {
                let snaps = Json::parse(&String::from_utf8_lossy(&o.stdout));
                for snap in snaps.arr() {
                    if snap.get("protected").map(|p| p.str()) == Some("true") {
                        let _ = self.cluster.rbd_try(&[
                            "snap",
                            "unprotect",
                            &format!("{s}@{}", snap.at("name").str()),
                        ]);
                    }
                }
                let _ = self
                    .cluster
                    .rbd_try(&["snap", "purge", "--no-progress", &s]);
            }
            match self.cluster.rbd_try(&["rm", "--no-progress", &s]) {
                Ok(o) if o.status.success() => {}
                Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No such file") => {}
                r => eprintln!("warning: could not remove image {name}: {r:?}"),
            }
        }
    }
}

fn create(env: &Env, name: &str, extra: &[&str]) -> String {
    create_sized(env, name, "64M", extra)
}

fn create_sized(env: &Env, name: &str, size: &str, extra: &[&str]) -> String {
    let s = spec(name);
    let mut args = vec!["create", "--size", size];
    args.extend_from_slice(extra);
    args.push(&s);
    env.cluster.rbd(&args);
    env.info(name).at("id").str().to_string()
}

fn write_some(env: &Env, name: &str, total: &str) {
    env.cluster.rbd(&[
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "4K",
        "--io-total",
        total,
        "--io-pattern",
        "rand",
        &spec(name),
    ]);
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---------------------------------------------------------------------------
// Directory, header, parent and snapshot methods
// ---------------------------------------------------------------------------

#[test]
fn header_methods_match_rbd_info() {
    let Some(env) = env() else { return };
    let mut images = Images::new(&env.cluster);
    let pools = env.pool_ids();
    let rbd_pool = pools["rbd"];

    // a: default features, two user snapshots with a resize between them,
    // one more snapshot that ends up in the trash (a clone-v2 child keeps
    // it), s1 protected with a clone-v1 child.
    let a = images.name("v2codec-a");
    let a_id = create(&env, &a, &[]);
    env.cluster
        .rbd(&["snap", "create", &format!("{}@s1", spec(&a))]);
    env.cluster.rbd(&["resize", "--size", "80M", &spec(&a)]);
    env.cluster
        .rbd(&["snap", "create", &format!("{}@s2", spec(&a))]);
    env.cluster
        .rbd(&["snap", "create", &format!("{}@s3", spec(&a))]);
    env.cluster
        .rbd(&["snap", "protect", &format!("{}@s1", spec(&a))]);
    let c = images.name("v2codec-clone");
    env.cluster
        .rbd(&["clone", &format!("{}@s1", spec(&a)), &spec(&c)]);
    let c2 = images.name("v2codec-clone2");
    env.cluster.rbd(&[
        "clone",
        "--rbd-default-clone-format",
        "2",
        &format!("{}@s3", spec(&a)),
        &spec(&c2),
    ]);
    env.cluster
        .rbd(&["snap", "rm", "--no-progress", &format!("{}@s3", spec(&a))]);
    let s = images.name("v2codec-striped");
    create(&env, &s, &["--stripe-unit", "64K", "--stripe-count", "4"]);
    let d = images.name("v2codec-datapool");
    create(&env, &d, &["--data-pool", "rbd-data"]);

    let all = [&a, &c, &c2, &s, &d];

    // --- rbd_directory / rbd_id ---------------------------------------
    let mut listed = BTreeMap::new();
    let mut pages = 0;
    let mut after: Vec<u8> = Vec::new();
    loop {
        let reply = env
            .exec(
                RBD_DIRECTORY,
                RBD_CLASS,
                "dir_list",
                &dir_list_input(&after, 7),
            )
            .expect("dir_list");
        let page = decode_dir_list(&reply).expect("decode dir_list");
        assert!(
            page.len() <= 7 + 64,
            "dir_list returned {} for max 7",
            page.len()
        );
        pages += 1;
        let Some(last) = page.last() else { break };
        after = last.name.clone();
        for e in page {
            assert!(
                listed
                    .insert(
                        e.name_str().unwrap().to_string(),
                        e.id_str().unwrap().to_string()
                    )
                    .is_none(),
                "a name came twice"
            );
        }
    }
    assert!(pages >= 2);
    let one_shot = decode_dir_list(
        &env.exec(
            RBD_DIRECTORY,
            RBD_CLASS,
            "dir_list",
            &dir_list_input(b"", 100_000),
        )
        .unwrap(),
    )
    .unwrap();
    let sorted: Vec<&[u8]> = one_shot.iter().map(|e| e.name.as_slice()).collect();
    assert!(
        sorted.windows(2).all(|w| w[0] < w[1]),
        "dir_list is sorted by name"
    );
    for name in all {
        let info = env.info(name);
        let id = info.at("id").str();
        assert_eq!(
            listed.get(name.as_str()).map(String::as_str),
            Some(id),
            "{name} in dir_list"
        );
        let reply = env
            .exec(
                RBD_DIRECTORY,
                RBD_CLASS,
                "dir_get_id",
                &dir_get_id_input(name),
            )
            .unwrap();
        assert_eq!(decode_dir_get_id(&reply).unwrap(), id);
        let data = env.pool.read_full(&id_object(name)).unwrap();
        assert_eq!(decode_id_object(&data).unwrap(), id);
        let reply = env
            .exec(&id_object(name), RBD_CLASS, "get_id", &[])
            .unwrap();
        assert_eq!(decode_string_reply(&reply, "get_id").unwrap(), id);
    }
    let missing = env.exec(
        RBD_DIRECTORY,
        RBD_CLASS,
        "dir_get_id",
        &dir_get_id_input(&unique_name("absent")),
    );
    assert!(matches!(missing, Err(e) if e.is_not_found()));

    // --- header methods on every image ----------------------------------
    for name in all {
        let info = env.info(name);
        let id = info.at("id").str();
        let what = name.as_str();

        let size = decode_get_size(&env.rbd_exec(id, "get_size", &snap_id_input(NOSNAP))).unwrap();
        assert_eq!(size.size, info.at("size").u64(), "{what} size");
        assert_eq!(
            u64::from(size.order),
            info.at("order").u64(),
            "{what} order"
        );
        assert_eq!(1u64 << size.order, info.at("object_size").u64());

        let rw = decode_get_features(&env.rbd_exec(id, "get_features", &get_features_input(false)))
            .unwrap();
        let ro = decode_get_features(&env.rbd_exec(id, "get_features", &get_features_input(true)))
            .unwrap();
        let names: Vec<&str> = info.at("features").arr().iter().map(Json::str).collect();
        assert_eq!(feature_names(rw.features), names, "{what} features");
        assert_eq!(rw.features & !KNOWN_FEATURES, 0);
        assert_eq!(ro.features, rw.features);
        // The OSD's view of what a client must understand agrees with ours.
        assert_eq!(
            rw.incompatible,
            rw.features & FEATURES_RW_INCOMPATIBLE,
            "{what} rw incompatible"
        );
        assert_eq!(
            ro.incompatible,
            rw.features & FEATURES_INCOMPATIBLE,
            "{what} ro incompatible"
        );
        // The input without read_only (pre-Nautilus clients) is accepted too.
        let old =
            decode_get_features(&env.rbd_exec(id, "get_features", &snap_id_input(NOSNAP))).unwrap();
        assert_eq!(old, rw);

        let prefix = decode_get_object_prefix(&env.rbd_exec(id, "get_object_prefix", &[])).unwrap();
        assert_eq!(prefix, info.at("block_name_prefix").str());

        let flags =
            decode_get_flags(&env.rbd_exec(id, "get_flags", &snap_id_input(NOSNAP))).unwrap();
        assert_eq!(flags, 0, "{what} flags: {:?}", info.at("flags"));

        let stripe = env.exec(&header_object(id), RBD_CLASS, "get_stripe_unit_count", &[]);
        match info.get("stripe_unit") {
            Some(unit) => {
                let st = decode_get_stripe_unit_count(&stripe.unwrap()).unwrap();
                assert_eq!(
                    st,
                    StripeInfo {
                        unit: unit.u64(),
                        count: info.at("stripe_count").u64()
                    }
                );
                assert_eq!(
                    st,
                    StripeInfo {
                        unit: 64 << 10,
                        count: 4
                    }
                );
            }
            None => assert_eq!(
                stripe.unwrap_err().errno(),
                libc::ENOEXEC,
                "{what} without striping"
            ),
        }

        let data_pool = decode_get_data_pool(&env.rbd_exec(id, "get_data_pool", &[])).unwrap();
        assert_eq!(
            data_pool,
            info.get("data_pool").map(|p| pools[p.str()]),
            "{what} data pool"
        );

        // Parent: both the current and the legacy method.
        let parent = decode_parent_get(&env.rbd_exec(id, "parent_get", &[])).unwrap();
        let overlap = decode_parent_overlap_get(&env.rbd_exec(
            id,
            "parent_overlap_get",
            &snap_id_input(NOSNAP),
        ))
        .unwrap();
        let legacy =
            decode_get_parent(&env.rbd_exec(id, "get_parent", &snap_id_input(NOSNAP))).unwrap();
        match info.get("parent") {
            None => {
                assert_eq!(parent, None, "{what}");
                assert_eq!(overlap, None, "{what}");
                assert_eq!(legacy, None, "{what}");
            }
            Some(p) => {
                let parent = parent.expect("a clone has a parent");
                assert_eq!(parent.pool_id, pools[p.at("pool").str()]);
                assert_eq!(parent.pool_namespace, p.at("pool_namespace").str());
                assert_eq!(parent.image_id, p.at("id").str());
                assert_eq!(parent.image_id, a_id);
                let snaps = env.rbd_json(&["snap", "ls", "--all", &spec(&a)]);
                let snap = snaps
                    .arr()
                    .iter()
                    .find(|s| s.at("name").str() == p.at("snapshot").str())
                    .expect("parent snapshot listed");
                assert_eq!(parent.snap_id, snap.at("id").u64());
                assert_eq!(overlap, Some(p.at("overlap").u64()));
                let (lspec, loverlap) = legacy.expect("legacy get_parent");
                assert_eq!(
                    (lspec.pool_id, &lspec.image_id, lspec.snap_id),
                    (parent.pool_id, &parent.image_id, parent.snap_id)
                );
                assert_eq!(Some(loverlap), overlap);
            }
        }

        // Snapshots: the snap context and one snapshot_get per id.
        let snapc = decode_get_snapcontext(&env.rbd_exec(id, "get_snapcontext", &[])).unwrap();
        let listed = env.rbd_json(&["snap", "ls", "--all", &spec(name)]);
        let mut ids: Vec<u64> = listed.arr().iter().map(|s| s.at("id").u64()).collect();
        ids.sort_unstable_by(|x, y| y.cmp(x));
        assert_eq!(snapc.snaps, ids, "{what} snap context ids");
        assert!(snapc.seq >= ids.first().copied().unwrap_or(0));
        for snap in listed.arr() {
            let sid = snap.at("id").u64();
            let rec = decode_snapshot_get(&env.rbd_exec(id, "snapshot_get", &snap_id_input(sid)))
                .unwrap();
            assert_eq!(rec.id, sid);
            assert_eq!(rec.name, snap.at("name").str());
            assert_eq!(rec.image_size, snap.at("size").u64());
            let ns = snap.at("namespace");
            assert_eq!(rec.namespace.type_name(), ns.at("type").str());
            if let SnapshotNamespace::Trash {
                original_name,
                original_type,
            } = &rec.namespace
            {
                assert_eq!(original_name, ns.at("original_name").str());
                assert_eq!(*original_type, SNAP_NAMESPACE_USER);
            }
            let age = now_secs().abs_diff(u64::from(rec.timestamp.sec));
            assert!(
                age < 3600,
                "snapshot timestamp {:?} is {age} s off",
                rec.timestamp
            );
            let size_at =
                decode_get_size(&env.rbd_exec(id, "get_size", &snap_id_input(sid))).unwrap();
            assert_eq!(size_at.size, rec.image_size);
            let prot = decode_get_protection_status(&env.rbd_exec(
                id,
                "get_protection_status",
                &snap_id_input(sid),
            ))
            .unwrap();
            let want = if snap.at("protected").str() == "true" {
                ProtectionStatus::Protected
            } else {
                ProtectionStatus::Unprotected
            };
            assert_eq!(prot, want, "{what}@{}", rec.name);
        }
    }

    // Details of a's snapshots that `rbd snap ls` does not print.
    let recs: Vec<SnapshotRecord> =
        decode_get_snapcontext(&env.rbd_exec(&a_id, "get_snapcontext", &[]))
            .unwrap()
            .snaps
            .iter()
            .map(|&sid| {
                decode_snapshot_get(&env.rbd_exec(&a_id, "snapshot_get", &snap_id_input(sid)))
                    .unwrap()
            })
            .collect();
    let by_name = |n: &str| {
        recs.iter().find(|r| r.name == n || matches!(&r.namespace, SnapshotNamespace::Trash { original_name, .. } if original_name == n)).unwrap()
    };
    assert_eq!(by_name("s1").image_size, 64 * MIB);
    assert_eq!(by_name("s2").image_size, 80 * MIB);
    let trashed = by_name("s3");
    assert_eq!(trashed.namespace.type_name(), "trash");
    assert_eq!(trashed.child_count, 1, "the clone-v2 child is counted");
    assert_eq!(
        by_name("s1").child_count,
        0,
        "clone-v1 children are not counted"
    );

    // The head is CEPH_NOSNAP; u64::MAX (CEPH_SNAPDIR) is something else.
    assert!(
        env.exec(
            &header_object(&a_id),
            RBD_CLASS,
            "get_size",
            &snap_id_input(u64::MAX)
        )
        .is_err()
    );
    // snapshot_get of the head is refused.
    assert!(
        env.exec(
            &header_object(&a_id),
            RBD_CLASS,
            "snapshot_get",
            &snap_id_input(NOSNAP)
        )
        .is_err()
    );
    assert_eq!(rbd_pool, pools[POOL]);
}

// ---------------------------------------------------------------------------
// snapshot_add / snapshot_remove inputs
// ---------------------------------------------------------------------------

#[test]
fn snapshot_add_and_remove_inputs_are_what_librbd_writes() {
    let Some(env) = env() else { return };
    let mut images = Images::new(&env.cluster);
    let name = images.name("v2codec-snapadd");
    // layering only: no object map that a raw snapshot_add would leave
    // without its per-snapshot copy.
    let id = create(&env, &name, &["--image-feature", "layering"]);

    let snap_id = env
        .pool
        .selfmanaged_snap_create()
        .expect("selfmanaged_snap_create");
    env.rbd_exec(
        &id,
        "snapshot_add",
        &snapshot_add_input(snap_id, "via-rbdfs"),
    );
    let listed = env.rbd_json(&["snap", "ls", "--all", &spec(&name)]);
    let found = listed
        .arr()
        .iter()
        .find(|s| s.at("name").str() == "via-rbdfs")
        .unwrap_or_else(|| panic!("rbd snap ls does not show it: {listed:?}"));
    assert_eq!(found.at("id").u64(), snap_id);
    assert_eq!(found.at("size").u64(), 64 * MIB);
    assert_eq!(found.at("namespace").at("type").str(), "user");
    let snapc = decode_get_snapcontext(&env.rbd_exec(&id, "get_snapcontext", &[])).unwrap();
    assert_eq!(
        snapc,
        SnapContext {
            seq: snap_id,
            snaps: vec![snap_id]
        }
    );

    // The same name again: EEXIST; an id below snap_seq: ESTALE.
    let again = env.exec(
        &header_object(&id),
        RBD_CLASS,
        "snapshot_add",
        &snapshot_add_input(snap_id + 1, "via-rbdfs"),
    );
    assert_eq!(again.unwrap_err().errno(), libc::EEXIST);
    let stale = env.exec(
        &header_object(&id),
        RBD_CLASS,
        "snapshot_add",
        &snapshot_add_input(snap_id - 1, "older"),
    );
    assert_eq!(stale.unwrap_err().errno(), libc::ESTALE);

    env.rbd_exec(&id, "snapshot_remove", &snapshot_remove_input(snap_id));
    env.pool
        .selfmanaged_snap_remove(snap_id)
        .expect("selfmanaged_snap_remove");
    let listed = env.rbd_json(&["snap", "ls", "--all", &spec(&name)]);
    assert_eq!(listed.arr().len(), 0, "{listed:?}");
    let snapc = decode_get_snapcontext(&env.rbd_exec(&id, "get_snapcontext", &[])).unwrap();
    assert_eq!(
        snapc,
        SnapContext {
            seq: snap_id,
            snaps: vec![]
        }
    );
}

// ---------------------------------------------------------------------------
// Object map
// ---------------------------------------------------------------------------

/// Object numbers `rbd diff --whole-object [--from-snap SNAP]` reports.
fn diff_objects(env: &Env, name: &str, obj_size: u64, from_snap: Option<&str>) -> Vec<u64> {
    let mut args = vec!["diff", "--whole-object"];
    if let Some(snap) = from_snap {
        args.extend(["--from-snap", snap]);
    }
    let s = spec(name);
    args.push(&s);
    let diff = env.rbd_json(&args);
    let mut objs: Vec<u64> = diff
        .arr()
        .iter()
        .filter(|e| e.at("exists").str() == "true")
        .flat_map(|e| {
            let off = e.at("offset").u64();
            let len = e.at("length").u64();
            (off / obj_size)..(off + len).div_ceil(obj_size)
        })
        .collect();
    objs.dedup();
    objs
}

/// Data objects `rados ls` shows for `prefix`.
fn rados_objects(env: &Env, prefix: &str) -> Vec<u64> {
    let out = env.cluster.rados(&["ls"]);
    let mut v: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(prefix)?.strip_prefix('.'))
        .map(|hex| u64::from_str_radix(hex, 16).unwrap())
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn object_map_matches_diff_and_rados_ls() {
    let Some(env) = env() else { return };
    let mut images = Images::new(&env.cluster);
    let name = images.name("v2codec-omap");
    // 64 objects, a few of them written: most stay absent.
    let id = create_sized(&env, &name, "256M", &[]);
    let info = env.info(&name);
    let obj_size = info.at("object_size").u64();
    let prefix = info.at("block_name_prefix").str().to_string();
    let count = info.at("size").u64().div_ceil(obj_size);

    // Freshly created: every object nonexistent.
    let raw = env.pool.read_full(&object_map_object(&id, NOSNAP)).unwrap();
    let m = ObjectMap::decode(&raw).expect("stored object map (CRCs checked)");
    assert_eq!(m.len(), count);
    assert!(m.states().all(|s| s == ObjectState::Nonexistent));

    // Data, a snapshot, more data: the snapshot's map has Exists, the
    // head's ExistsClean for what the snapshot holds (fast-diff), Exists for
    // what was written after.
    write_some(&env, &name, "32K");
    let before = diff_objects(&env, &name, obj_size, None);
    assert!(!before.is_empty());
    env.cluster
        .rbd(&["snap", "create", &format!("{}@s1", spec(&name))]);
    write_some(&env, &name, "16K");
    let head_objs = diff_objects(&env, &name, obj_size, None);
    let changed = diff_objects(&env, &name, obj_size, Some("s1"));
    assert_eq!(head_objs, rados_objects(&env, &prefix), "diff vs rados ls");

    let snap_id = env.rbd_json(&["snap", "ls", &spec(&name)]).arr()[0]
        .at("id")
        .u64();
    let snap_map = ObjectMap::decode(
        &env.pool
            .read_full(&object_map_object(&id, snap_id))
            .unwrap(),
    )
    .unwrap();
    let head_raw = env.pool.read_full(&object_map_object(&id, NOSNAP)).unwrap();
    let head_map = ObjectMap::decode(&head_raw).unwrap();
    let loaded = ObjectMap::decode(
        &env.exec(
            &object_map_object(&id, NOSNAP),
            RBD_CLASS,
            "object_map_load",
            &[],
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        loaded, head_map,
        "object_map_load reply (no CRCs) = stored object"
    );
    assert_eq!(
        head_map.encode(true),
        head_raw,
        "our CRCs are byte-identical to librbd's"
    );
    for n in 0..count {
        let in_snap = before.contains(&n);
        let in_head = head_objs.contains(&n);
        assert!(!in_snap || in_head, "object {n} vanished");
        let want_snap = if in_snap {
            ObjectState::Exists
        } else {
            ObjectState::Nonexistent
        };
        assert_eq!(snap_map.get(n), Some(want_snap), "snapshot map, object {n}");
        let want_head = if !in_head {
            ObjectState::Nonexistent
        } else if changed.contains(&n) {
            ObjectState::Exists
        } else {
            ObjectState::ExistsClean
        };
        assert_eq!(head_map.get(n), Some(want_head), "head map, object {n}");
    }
    assert!(
        head_map.states().any(|s| s == ObjectState::ExistsClean),
        "nothing clean: {before:?} -> {changed:?}"
    );

    // object_map_update with our input (under the exclusive lock in real
    // use; no one else has the image open here): mark an absent object
    // Exists, check `rbd object-map check` notices the lie, undo it.
    let absent = (0..count)
        .find(|n| !head_objs.contains(n))
        .expect("some object absent");
    let omap = object_map_object(&id, NOSNAP);
    env.exec(
        &omap,
        RBD_CLASS,
        "object_map_update",
        &object_map_update_input(absent, absent + 1, ObjectState::Exists, None),
    )
    .unwrap();
    let m = ObjectMap::decode(&env.pool.read_full(&omap).unwrap()).expect("CRCs still valid");
    assert_eq!(m.get(absent), Some(ObjectState::Exists));
    // A conditional update that does not match changes nothing.
    env.exec(
        &omap,
        RBD_CLASS,
        "object_map_update",
        &object_map_update_input(
            absent,
            absent + 1,
            ObjectState::Pending,
            Some(ObjectState::Nonexistent),
        ),
    )
    .unwrap();
    assert_eq!(
        ObjectMap::decode(&env.pool.read_full(&omap).unwrap())
            .unwrap()
            .get(absent),
        Some(ObjectState::Exists)
    );
    env.exec(
        &omap,
        RBD_CLASS,
        "object_map_update",
        &object_map_update_input(
            absent,
            absent + 1,
            ObjectState::Nonexistent,
            Some(ObjectState::Exists),
        ),
    )
    .unwrap();
    let m = ObjectMap::decode(&env.pool.read_full(&omap).unwrap()).unwrap();
    assert_eq!(m, head_map);
    // Out of range: ERANGE.
    let r = env.exec(
        &omap,
        RBD_CLASS,
        "object_map_update",
        &object_map_update_input(count, count + 1, ObjectState::Exists, None),
    );
    assert_eq!(r.unwrap_err().errno(), libc::ERANGE);
    env.cluster.rbd(&["object-map", "check", &spec(&name)]);
    let flags = decode_get_flags(&env.rbd_exec(&id, "get_flags", &snap_id_input(NOSNAP))).unwrap();
    assert_eq!(
        flags & FLAG_OBJECT_MAP_INVALID,
        0,
        "object-map check found the map valid"
    );

    // object_map_resize input: grow by 4 objects, then shrink back.
    env.exec(
        &omap,
        RBD_CLASS,
        "object_map_resize",
        &object_map_resize_input(count + 4, ObjectState::Nonexistent),
    )
    .unwrap();
    let m = ObjectMap::decode(&env.pool.read_full(&omap).unwrap()).unwrap();
    assert_eq!(m.len(), count + 4);
    env.exec(
        &omap,
        RBD_CLASS,
        "object_map_resize",
        &object_map_resize_input(count, ObjectState::Nonexistent),
    )
    .unwrap();
    assert_eq!(
        ObjectMap::decode(&env.pool.read_full(&omap).unwrap()).unwrap(),
        head_map
    );

    // Data objects of a format-2 image are named as we name them.
    for &n in &head_objs {
        env.pool
            .stat(&data_object(&prefix, n), NOSNAP)
            .unwrap_or_else(|e| panic!("object {n}: {e}"));
    }
}

// ---------------------------------------------------------------------------
// cls_lock
// ---------------------------------------------------------------------------

/// Unlocks on drop, so a failed test never leaves a lock that `rbd rm`
/// would break (and blocklist this client for).
struct Unlock<'a> {
    env: &'a Env,
    header: String,
    cookie: String,
}

impl Drop for Unlock<'_> {
    fn drop(&mut self) {
        let _ = self.env.exec(
            &self.header,
            LOCK_CLASS,
            "unlock",
            &unlock_input(RBD_LOCK_NAME, &self.cookie),
        );
    }
}

fn lock_info(env: &Env, header: &str) -> LockInfo {
    decode_get_info(
        &env.exec(
            header,
            LOCK_CLASS,
            "get_info",
            &get_info_input(RBD_LOCK_NAME),
        )
        .unwrap(),
    )
    .unwrap()
}

#[test]
fn lock_methods_match_rbd_lock_ls() {
    let Some(env) = env() else { return };
    let mut images = Images::new(&env.cluster);
    let name = images.name("v2codec-lock");
    let id = create(&env, &name, &[]);
    let header = header_object(&id);
    let gid = env.rados.instance_id();

    // Never locked: cls_lock answers an empty lock, not ENOENT.
    let info = lock_info(&env, &header);
    assert_eq!(
        info,
        LockInfo {
            lockers: vec![],
            exclusive: false,
            tag: String::new()
        }
    );

    let cookie = "auto 123";
    let _guard = Unlock {
        env: &env,
        header: header.clone(),
        cookie: cookie.into(),
    };
    env.exec(
        &header,
        LOCK_CLASS,
        "lock",
        &LockOp::rbd_exclusive(cookie).encode(),
    )
    .expect("lock");
    // Exclusive: a second cookie is refused.
    let r = env.exec(
        &header,
        LOCK_CLASS,
        "lock",
        &LockOp::rbd_exclusive("auto 124").encode(),
    );
    assert_eq!(r.unwrap_err().errno(), libc::EBUSY);

    let info = lock_info(&env, &header);
    assert!(info.exclusive);
    assert_eq!(info.tag, RBD_LOCK_TAG);
    assert_eq!(info.lockers.len(), 1);
    let l = &info.lockers[0];
    assert_eq!(l.cookie, cookie);
    assert_eq!(l.entity_type, ENTITY_TYPE_CLIENT);
    assert_eq!(l.entity_num, gid as i64);
    assert_eq!(l.entity().to_string(), format!("client.{gid}"));
    assert_eq!(l.expiration, Utime::default());
    assert_eq!(l.description, "");
    assert!(l.addr.ip.is_some(), "{:?}", l.addr);

    // librbd's view.
    let ls = env.rbd_json(&["lock", "ls", &spec(&name)]);
    assert_eq!(ls.arr().len(), 1, "{ls:?}");
    let entry = &ls.arr()[0];
    assert_eq!(entry.at("id").str(), cookie);
    assert_eq!(entry.at("locker").str(), format!("client.{gid}"));
    assert_eq!(entry.at("address").str(), l.address);
    // And the lock class's own CLI view (tag and type).
    let out = env.cluster.rados(&["lock", "info", &header, RBD_LOCK_NAME]);
    let rados_info = Json::parse(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(rados_info.at("type").str(), "exclusive");
    assert_eq!(rados_info.at("tag").str(), "internal");
    assert_eq!(
        rados_info.at("lockers").arr()[0].at("addr").str(),
        l.address
    );
    assert_eq!(
        rados_info.at("lockers").arr()[0].at("name").str(),
        format!("client.{gid}")
    );

    // set_cookie moves the lock to a new cookie.
    env.exec(
        &header,
        LOCK_CLASS,
        "set_cookie",
        &set_cookie_input(
            RBD_LOCK_NAME,
            LOCK_EXCLUSIVE,
            cookie,
            RBD_LOCK_TAG,
            "auto 456",
        ),
    )
    .expect("set_cookie");
    assert_eq!(lock_info(&env, &header).lockers[0].cookie, "auto 456");
    // Unlock with the wrong cookie: ENOENT; with the right one: gone.
    let r = env.exec(
        &header,
        LOCK_CLASS,
        "unlock",
        &unlock_input(RBD_LOCK_NAME, cookie),
    );
    assert!(matches!(r, Err(e) if e.is_not_found()));
    env.exec(
        &header,
        LOCK_CLASS,
        "unlock",
        &unlock_input(RBD_LOCK_NAME, "auto 456"),
    )
    .expect("unlock");
    let info = lock_info(&env, &header);
    assert!(info.lockers.is_empty(), "{info:?}");
    assert_eq!(env.rbd_json(&["lock", "ls", &spec(&name)]).arr().len(), 0);

    // break_lock names the holder by entity.
    env.exec(
        &header,
        LOCK_CLASS,
        "lock",
        &LockOp::rbd_exclusive(cookie).encode(),
    )
    .expect("lock again");
    let wrong = EntityName::client(gid + 1);
    let r = env.exec(
        &header,
        LOCK_CLASS,
        "break_lock",
        &break_lock_input(RBD_LOCK_NAME, wrong, cookie),
    );
    assert!(matches!(r, Err(e) if e.is_not_found()));
    env.exec(
        &header,
        LOCK_CLASS,
        "break_lock",
        &break_lock_input(RBD_LOCK_NAME, EntityName::client(gid), cookie),
    )
    .expect("break_lock");
    assert!(lock_info(&env, &header).lockers.is_empty());
}

// ---------------------------------------------------------------------------
// Watch/notify: librbd's messages decode, ours are understood by librbd
// ---------------------------------------------------------------------------

/// One notification seen by our watch: raw payload and its decoding.
type Seen = (Vec<u8>, Result<NotifyMessage, String>);

/// Spawns `rbd bench` writing `total` bytes at random offsets, 1 thread.
fn spawn_bench(env: &Env, name: &str, total: u64) -> std::process::Child {
    Command::new("rbd")
        .arg("-c")
        .arg(env.cluster.conf())
        .args([
            "bench",
            "--io-type",
            "write",
            "--io-size",
            "4K",
            "--io-threads",
            "1",
        ])
        .args([
            "--io-pattern",
            "rand",
            "--io-total",
            &total.to_string(),
            &spec(name),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn rbd bench")
}

fn finish_bench(mut bench: std::process::Child, what: &str) {
    let status = wait_timeout(&mut bench, Duration::from_secs(120));
    if status.is_none() {
        let _ = bench.kill();
        let _ = bench.wait();
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "{what}: rbd bench ended with {status:?}"
    );
}

#[test]
fn notifications_and_lock_handover_with_librbd() {
    let Some(env) = env() else { return };
    let mut images = Images::new(&env.cluster);
    let name = images.name("v2codec-notify");
    let id = create(&env, &name, &[]);
    let header = header_object(&id);
    let gid = env.rados.instance_id();

    // Every notification, raw and decoded. A request-lock is answered "I
    // will release it" (our ResponseMessage) while we hold the lock.
    let (tx, rx) = mpsc::channel::<Seen>();
    let tx = std::sync::Mutex::new(tx);
    let we_own = Arc::new(AtomicBool::new(false));
    let owned = we_own.clone();
    let watch = env
        .pool
        .watch(
            &header,
            Box::new(move |ev| match ev {
                WatchEvent::Notify(payload) => {
                    let msg =
                        NotifyMessage::decode(payload).map_err(|e| format!("{e}: {payload:02x?}"));
                    let reply = match &msg {
                        Ok(NotifyMessage::RequestLock { .. }) if owned.load(Ordering::SeqCst) => {
                            response_message(0)
                        }
                        _ => Vec::new(),
                    };
                    let _ = tx.lock().unwrap().send((payload.to_vec(), msg));
                    reply
                }
                WatchEvent::Error(e) => {
                    let _ = tx
                        .lock()
                        .unwrap()
                        .send((Vec::new(), Err(format!("watch error {e}"))));
                    Vec::new()
                }
            }),
        )
        .expect("watch header");
    let me = ClientId {
        gid,
        handle: watch.cookie(),
    };
    let next = |what: &str| -> (Vec<u8>, NotifyMessage) {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok((raw, Ok(m))) => (raw, m),
            Ok((_, Err(e))) => panic!("{what}: undecodable notification: {e}"),
            Err(e) => panic!("{what}: no notification: {e}"),
        }
    };
    let drain = || {
        let mut v = Vec::new();
        while let Ok((raw, m)) = rx.recv_timeout(Duration::from_secs(2)) {
            v.push((raw, m.expect("decodable notification")));
        }
        v
    };

    // 1. librbd's messages: a snapshot create takes the lock, updates the
    // header and releases the lock. Each decodes, and our encoding of the
    // same message is byte-identical to librbd's.
    env.cluster
        .rbd(&["snap", "create", &format!("{}@n1", spec(&name))]);
    let mut seen = Vec::new();
    while !matches!(seen.last(), Some((_, NotifyMessage::ReleasedLock(_)))) {
        assert!(
            seen.len() < 50,
            "no released-lock after snap create: {seen:?}"
        );
        seen.push(next("snap create"));
    }
    seen.extend(drain());
    for (raw, msg) in &seen {
        // Other ops (Pacific's snap create also sends quiesce (18) and
        // unquiesce (19)) are only recognised, not re-encoded.
        if !raw.is_empty() && !matches!(msg, NotifyMessage::Other(_)) {
            assert_eq!(
                &msg.encode(),
                raw,
                "our encoding of {msg:?} differs from librbd's"
            );
        }
    }
    let msgs: Vec<&NotifyMessage> = seen.iter().map(|(_, m)| m).collect();
    let owner = msgs
        .iter()
        .find_map(|m| match m {
            NotifyMessage::AcquiredLock(c) => Some(*c),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no acquired-lock: {msgs:?}"));
    assert!(msgs.contains(&&NotifyMessage::HeaderUpdate), "{msgs:?}");
    assert!(
        msgs.contains(&&NotifyMessage::ReleasedLock(owner)),
        "{msgs:?}"
    );
    assert_ne!(owner.gid, gid);
    assert_ne!(owner.handle, 0);

    // 2. Our header-update reaches watchers and decodes.
    let replies = env
        .pool
        .notify(&header, &NotifyMessage::HeaderUpdate.encode(), 10_000)
        .expect("notify header-update");
    assert!(replies.timeouts.is_empty(), "{replies:?}");
    assert_eq!(next("our header update").1, NotifyMessage::HeaderUpdate);

    // 3. librbd owns the lock (rbd bench) and we ask for it: librbd's
    // answer is a ResponseMessage byte-identical to ours; it then releases
    // the lock. Retried with a longer bench if it finished too early.
    let mut total = 16 * MIB;
    let mut answered = None;
    for _ in 0..6 {
        let bench = spawn_bench(&env, &name, total);
        let holder = loop {
            match next("bench taking the lock") {
                (_, NotifyMessage::AcquiredLock(c)) => break c,
                _ => continue,
            }
        };
        let replies = env
            .pool
            .notify(
                &header,
                &NotifyMessage::RequestLock {
                    client: me,
                    force: false,
                }
                .encode(),
                10_000,
            )
            .expect("notify request-lock");
        let from_owner = replies.acks.iter().find(|(g, cookie, payload)| {
            (*g, *cookie) == (holder.gid, holder.handle) && !payload.is_empty()
        });
        if let Some((_, _, payload)) = from_owner {
            let r = decode_response_message(payload).expect("librbd's ResponseMessage decodes");
            assert_eq!(
                &response_message(r),
                payload,
                "our ResponseMessage encoding differs"
            );
            answered = Some((holder, r));
        }
        finish_bench(bench, "bench asked for its lock");
        let after = drain();
        if answered.is_some() {
            let msgs: Vec<&NotifyMessage> = after.iter().map(|(_, m)| m).collect();
            assert!(
                msgs.contains(&&NotifyMessage::ReleasedLock(holder)),
                "{msgs:?}"
            );
            break;
        }
        total *= 4;
    }
    let (_, r) = answered.expect("librbd never answered our request-lock while holding the lock");
    assert_eq!(r, 0, "librbd refused to release the lock");

    // 4. We hold the lock (cookie = our watch handle) and `rbd bench` asks
    // for it: we answer 0, unlock and announce released-lock; librbd must
    // then take it and finish.
    let cookie = rbd_lock_cookie(me.handle);
    let guard = Unlock {
        env: &env,
        header: header.clone(),
        cookie: cookie.clone(),
    };
    env.exec(
        &header,
        LOCK_CLASS,
        "lock",
        &LockOp::rbd_exclusive(&cookie).encode(),
    )
    .expect("take the lock");
    we_own.store(true, Ordering::SeqCst);
    let replies = env
        .pool
        .notify(&header, &NotifyMessage::AcquiredLock(me).encode(), 10_000)
        .expect("notify acquired-lock");
    assert!(replies.timeouts.is_empty());
    assert_eq!(next("our acquired-lock").1, NotifyMessage::AcquiredLock(me));
    let ls = env.rbd_json(&["lock", "ls", &spec(&name)]);
    assert_eq!(ls.arr()[0].at("id").str(), cookie);

    let bench = spawn_bench(&env, &name, 16 * 4096);
    let (raw, requester) = loop {
        match next("bench requesting the lock") {
            (raw, NotifyMessage::RequestLock { client, force }) => {
                assert!(!force);
                break (raw, client);
            }
            _ => continue,
        }
    };
    assert_eq!(
        NotifyMessage::RequestLock {
            client: requester,
            force: false
        }
        .encode(),
        raw,
        "our request-lock encoding differs from librbd's"
    );
    assert_ne!(requester.gid, gid);
    we_own.store(false, Ordering::SeqCst);
    env.exec(
        &header,
        LOCK_CLASS,
        "unlock",
        &unlock_input(RBD_LOCK_NAME, &cookie),
    )
    .expect("unlock");
    drop(guard);
    env.pool
        .notify(&header, &NotifyMessage::ReleasedLock(me).encode(), 10_000)
        .expect("notify released-lock");
    finish_bench(bench, "bench after our released-lock");
    let after: Vec<NotifyMessage> = drain().into_iter().map(|(_, m)| m).collect();
    assert!(
        after.contains(&NotifyMessage::AcquiredLock(requester)),
        "{after:?}"
    );
    assert!(
        after.contains(&NotifyMessage::ReleasedLock(requester)),
        "{after:?}"
    );
    assert!(lock_info(&env, &header).lockers.is_empty());
    drop(watch);
}
