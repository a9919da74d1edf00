//! Tests of the in-memory cluster: snapshots, clients, watch/notify,
//! blocklist, and the object classes through `exec`.

use super::*;

#[test]
fn snapshots_preserve_old_data() {
    let s = MemoryStore::new();
    let none = SnapContext::default();
    s.write("o", 0, b"aaaa", &none).unwrap();
    let s1 = s.selfmanaged_snap_create().unwrap();
    let c1 = SnapContext {
        seq: s1,
        snaps: vec![s1],
    };
    s.write("o", 1, b"bb", &c1).unwrap();
    s.write("new", 0, b"x", &c1).unwrap();
    assert_eq!(s.read("o", 0, 10, NOSNAP).unwrap(), b"abba");
    assert_eq!(s.read("o", 0, 10, s1).unwrap(), b"aaaa");
    assert!(s.read("new", 0, 10, s1).unwrap_err().is_not_found());
    // A write with a stale (empty) context does not preserve anything.
    let s2 = s.selfmanaged_snap_create().unwrap();
    s.write("o", 0, b"z", &c1).unwrap();
    assert_eq!(s.read("o", 0, 10, s2).unwrap(), b"zbba");
}

#[test]
fn namespaces_keep_objects_apart() {
    let s = MemoryStore::new();
    let none = SnapContext::default();
    s.write("o", 0, b"default", &none).unwrap();
    let t1 = s.pool_in_namespace(0, "t1").unwrap();
    assert_eq!(t1.namespace(), "t1");
    assert!(t1.read("o", 0, 10, NOSNAP).unwrap_err().is_not_found());
    t1.write("o", 0, b"t1", &none).unwrap();
    assert_eq!(s.read("o", 0, 10, NOSNAP).unwrap(), b"default");
    // The same namespace again is the same objects; pool_by_id keeps it
    // (data pools), pool_in_namespace("") is the default one.
    let again = s.pool_in_namespace(0, "t1").unwrap();
    assert_eq!(again.read("o", 0, 10, NOSNAP).unwrap(), b"t1");
    assert_eq!(again.pool_by_id(0).unwrap().namespace(), "t1");
    let back = t1.pool_in_namespace(0, "").unwrap();
    assert_eq!(back.read("o", 0, 10, NOSNAP).unwrap(), b"default");
    assert!(s.pool_in_namespace(7, "t1").err().unwrap().is_not_found());
}

#[test]
fn pools_by_name_and_listing() {
    let s = MemoryStore::new();
    let c = s.cluster().clone();
    let other = c.create_named_pool("objects", &["rgw"]);
    let pools = s.list_pools().unwrap();
    assert_eq!(pools.len(), 2);
    assert!(pools[0].is_rbd() && pools[0].name == "rbd");
    assert!(!pools[1].is_rbd() && pools[1].id == other);
    let p = s.pool_by_name("objects", "n").unwrap();
    assert_eq!(
        (p.pool_id(), p.namespace(), p.pool_name()),
        (other, "n".into(), "objects".into())
    );
    c.delete_pool(other);
    assert_eq!(s.list_pools().unwrap().len(), 1);
    assert!(s.pool_by_name("objects", "").err().unwrap().is_not_found());
}

#[test]
fn namespace_directory_methods() {
    use crate::format::v2::{RBD_NAMESPACE, decode_namespace_list, namespace_list_input};
    let s = MemoryStore::new();
    let add = |n: &str| {
        let mut e = crate::format::decode::Encoder::new();
        e.string(n);
        s.exec(RBD_NAMESPACE, "rbd", "namespace_add", &e.finish())
    };
    add("b").unwrap();
    add("a").unwrap();
    assert_eq!(add("a").unwrap_err().errno(), libc::EEXIST);
    let list = |after: &str, max| {
        let r = s
            .exec(
                RBD_NAMESPACE,
                "rbd",
                "namespace_list",
                &namespace_list_input(after, max),
            )
            .unwrap();
        decode_namespace_list(&r).unwrap()
    };
    assert_eq!(list("", 10), vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(list("a", 10), vec![b"b".to_vec()]);
    assert_eq!(list("", 1), vec![b"a".to_vec()]);
}
