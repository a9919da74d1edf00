use super::*;
use crate::store::memory::cls::now;
use std::collections::BTreeMap;

fn obj(exists: bool) -> ClsObject {
    ClsObject {
        data: exists.then(Vec::new),
        omap: BTreeMap::new(),
        xattrs: BTreeMap::new(),
        changed: false,
    }
}

fn me() -> Caller {
    Caller {
        gid: 1,
        addr: EntityAddr {
            addr_type: ADDR_TYPE_LEGACY,
            nonce: 1,
            ip: None,
        },
        now: now(),
    }
}

#[test]
fn header_snapshots_and_errors() {
    let c = me();
    let mut h = obj(false);
    assert_eq!(
        call("get_size", &mut h, &c, &snap_id_input(CEPH_NOSNAP)),
        Err(libc::ENOENT)
    );
    call(
        "create",
        &mut h,
        &c,
        &create_input(8192, 12, 1, "rbd_data.x", None),
    )
    .unwrap();
    let again = create_input(8192, 12, 1, "rbd_data.x", None);
    assert_eq!(call("create", &mut h, &c, &again), Err(libc::EEXIST));
    let r = call("get_size", &mut h, &c, &snap_id_input(CEPH_NOSNAP)).unwrap();
    assert_eq!(
        decode_get_size(&r).unwrap(),
        SizeInfo {
            order: 12,
            size: 8192
        }
    );
    assert_eq!(
        call("get_stripe_unit_count", &mut h, &c, &[]),
        Err(libc::ENOEXEC)
    );
    call("snapshot_add", &mut h, &c, &snapshot_add_input(5, "a")).unwrap();
    assert_eq!(
        call("snapshot_add", &mut h, &c, &snapshot_add_input(6, "a")),
        Err(libc::EEXIST)
    );
    assert_eq!(
        call("snapshot_add", &mut h, &c, &snapshot_add_input(4, "b")),
        Err(libc::ESTALE)
    );
    call("snapshot_add", &mut h, &c, &snapshot_add_input(7, "b")).unwrap();
    let r = call("get_snapcontext", &mut h, &c, &[]).unwrap();
    let sc = decode_get_snapcontext(&r).unwrap();
    assert_eq!((sc.seq, sc.snaps), (7, vec![7, 5]));
    call("set_size", &mut h, &c, &set_size_input(100)).unwrap();
    let r = call("get_size", &mut h, &c, &snap_id_input(5)).unwrap();
    assert_eq!(decode_get_size(&r).unwrap().size, 8192);
    call("snapshot_remove", &mut h, &c, &snapshot_remove_input(5)).unwrap();
    assert_eq!(
        call("snapshot_remove", &mut h, &c, &snapshot_remove_input(5)),
        Err(libc::ENOENT)
    );
    assert_eq!(
        call("snapshot_get", &mut h, &c, &snap_id_input(5)),
        Err(libc::ENOENT)
    );
    assert_eq!(call("get_size", &mut h, &c, b"x"), Err(libc::EINVAL));
    assert_eq!(
        call("no_such_method", &mut h, &c, &[]),
        Err(libc::EOPNOTSUPP)
    );
}

#[test]
fn directory_and_object_map() {
    let c = me();
    let mut dir = obj(false);
    call("dir_add_image", &mut dir, &c, &dir_image_input("a", "id1")).unwrap();
    assert_eq!(
        call("dir_add_image", &mut dir, &c, &dir_image_input("a", "id2")),
        Err(libc::EEXIST)
    );
    assert_eq!(
        call("dir_add_image", &mut dir, &c, &dir_image_input("b", "id1")),
        Err(libc::EBADF)
    );
    call("dir_add_image", &mut dir, &c, &dir_image_input("b", "id2")).unwrap();
    let r = call("dir_list", &mut dir, &c, &dir_list_input(b"a", 10)).unwrap();
    let names: Vec<_> = decode_dir_list(&r)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec![b"b".to_vec()]);
    assert_eq!(
        call(
            "dir_remove_image",
            &mut dir,
            &c,
            &dir_image_input("a", "id2")
        ),
        Err(libc::ESTALE)
    );
    call(
        "dir_rename_image",
        &mut dir,
        &c,
        &dir_rename_image_input("a", "c", "id1"),
    )
    .unwrap();
    let r = call("dir_get_id", &mut dir, &c, &dir_get_id_input("c")).unwrap();
    assert_eq!(decode_dir_get_id(&r).unwrap(), "id1");
    call(
        "dir_remove_image",
        &mut dir,
        &c,
        &dir_image_input("c", "id1"),
    )
    .unwrap();

    let mut m = obj(false);
    call(
        "object_map_resize",
        &mut m,
        &c,
        &object_map_resize_input(10, ObjectState::Nonexistent),
    )
    .unwrap();
    let up = object_map_update_input(2, 4, ObjectState::Exists, None);
    call("object_map_update", &mut m, &c, &up).unwrap();
    let bad = object_map_update_input(2, 11, ObjectState::Exists, None);
    assert_eq!(
        call("object_map_update", &mut m, &c, &bad),
        Err(libc::ERANGE)
    );
    let shrink = object_map_resize_input(3, ObjectState::Nonexistent);
    assert_eq!(
        call("object_map_resize", &mut m, &c, &shrink),
        Err(libc::ESTALE)
    );
    call("object_map_snap_add", &mut m, &c, &[]).unwrap();
    let map = ObjectMap::decode(&call("object_map_load", &mut m, &c, &[]).unwrap()).unwrap();
    assert_eq!(map.get(2), Some(ObjectState::ExistsClean));
    assert_eq!(map.get(4), Some(ObjectState::Nonexistent));
    // The stored object is what object_map_load decodes (CRCs valid).
    assert_eq!(ObjectMap::decode(m.data.as_deref().unwrap()).unwrap(), map);
}
