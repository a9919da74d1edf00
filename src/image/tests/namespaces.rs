//! Clone parents in another pool and RADOS namespace than the child.

use super::*;
use crate::store::NOSNAP;

#[test]
fn clone_parent_in_another_pool_and_namespace() {
    let base = MemoryStore::new();
    let other_pool = base.cluster().create_pool();
    // Parent: pool 0, namespace "gold"; child: the other pool, "tenant".
    let pstore = base.pool_in_namespace(0, "gold").unwrap();
    let cstore = base.pool_in_namespace(other_pool, "tenant").unwrap();
    let cache = cache();
    let size = 16u64 << 10;
    admin::create_image(&*pstore, "parent", size, &v2(FEATURE_LAYERING)).unwrap();
    let parent = Image::open(pstore.clone(), &cache, "parent").unwrap();
    let pdata = pattern(3, size as usize);
    parent.write(0, &pdata).unwrap();
    let snap = parent.snap_create("base").unwrap();
    parent.write(0, &[0xee; 64]).unwrap();
    parent.flush().unwrap();
    let pid = parent.info().id.clone().unwrap();

    admin::create_image(&*cstore, "child", size, &v2(FEATURE_LAYERING)).unwrap();
    let child_id = admin::image_info(&*cstore, "child").unwrap().id.unwrap();
    let mut input = encode_parent_get_reply(Some(&ParentSpec {
        pool_id: 0,
        pool_namespace: "gold".into(),
        image_id: pid.clone(),
        snap_id: snap.id,
    }));
    input.extend_from_slice(&size.to_le_bytes());
    input.push(0);
    cstore
        .exec(
            &header_object(&child_id),
            RBD_CLASS,
            "parent_attach",
            &input,
        )
        .unwrap();
    // The parent snapshot knows its child by pool, namespace and id.
    pstore
        .exec(
            &header_object(&pid),
            RBD_CLASS,
            "child_attach",
            &child_detach_input(snap.id, other_pool, &child_id, "tenant"),
        )
        .unwrap();

    let child = Image::open(cstore.clone(), &cache, "child").unwrap();
    assert_eq!(child.read(NOSNAP, 0, size).unwrap(), pdata, "read through");
    child.write(5000, b"child").unwrap();
    child.flush().unwrap();
    let mut want = pdata.clone();
    want[5000..5005].copy_from_slice(b"child");
    let fresh = Image::open(cstore.clone(), &super::cache(), "child").unwrap();
    assert_eq!(fresh.read(NOSNAP, 0, size).unwrap(), want);
    // Copied up into the child's pool and namespace only.
    let obj = fresh.info().data_object(1);
    assert_eq!(
        cstore.read(&obj, 0, 4096, NOSNAP).unwrap(),
        &want[4096..8192]
    );
    let default_ns = base.pool_by_id(other_pool).unwrap();
    assert!(
        default_ns
            .read(&obj, 0, 1, NOSNAP)
            .unwrap_err()
            .is_not_found()
    );
    // The parent is unchanged at its snapshot.
    assert_eq!(parent.read(snap.id, 0, size).unwrap(), pdata);
    // Nothing of either image shows in the default namespaces.
    assert!(admin::image_info(&*base, "parent").is_err());
    assert!(admin::image_info(&*default_ns, "child").is_err());
}
