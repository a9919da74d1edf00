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
    let (parent, pdata, snap) = snapshotted_parent(pstore.clone(), &cache, 3, size);
    parent.write(0, &[0xee; 64]).unwrap();
    parent.flush().unwrap();
    let pid = parent.info().id.clone().unwrap();

    admin::create_image(&*cstore, "child", size, &v2(FEATURE_LAYERING)).unwrap();
    let gold_parent = parent_spec(&parent, &snap, "gold");
    let child_id = attach_parent(&*cstore, "child", gold_parent, size);
    // The parent snapshot knows its child by pool, namespace and id.
    pstore
        .exec(
            &header_object(&pid),
            RBD_CLASS,
            "child_attach",
            &child_detach_input(snap.id, other_pool, &child_id, "tenant"),
        )
        .unwrap();

    let obj = assert_reads_through_and_copies_up(cstore.clone(), &cache, &pdata, size);
    // Copied up into the child's pool and namespace only.
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
