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
