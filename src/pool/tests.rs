//! The pool over the in-memory cluster: listing, rename and remove
//! through the pool, and a header that cannot be read failing only its
//! own image. (The image layer's helpers make the images.)

use super::Pool;
use crate::format::v2::*;
use crate::image::admin;
use crate::image::tests::{cache, v1, v2, variants};
use crate::store::NOSNAP;
use crate::store::failing::{Effect, FailingStore, Op, Rule};
use crate::store::memory::MemoryStore;

#[test]
fn pool_lists_renames_and_removes() {
    let store = MemoryStore::new();
    let pool = Pool::new(store.clone(), cache(), None);
    for (name, opts) in variants() {
        admin::create_image(&*store, name, 8192, &opts).unwrap();
    }
    let mut names = pool.list().unwrap();
    names.sort();
    assert_eq!(names, ["v1", "v2lock", "v2plain", "v2striped"]);
    let e = admin::create_image(&*store, "v2plain", 1, &v2(0)).unwrap_err();
    assert_eq!(e.errno(), libc::EEXIST);
    let img = pool.image("v2lock").unwrap();
    img.write(0, b"hello").unwrap();
    img.flush().unwrap();
    pool.rename("v2lock", "renamed").unwrap();
    pool.rename("v1", "old1").unwrap();
    let mut names = pool.list().unwrap();
    names.sort();
    assert_eq!(names, ["old1", "renamed", "v2plain", "v2striped"]);
    assert_eq!(
        pool.image("renamed").unwrap().read(NOSNAP, 0, 5).unwrap(),
        b"hello"
    );
    for n in ["renamed", "old1", "v2plain", "v2striped"] {
        pool.remove(n).unwrap();
    }
    assert!(pool.list().unwrap().is_empty());
    // Nothing of the images is left but the directories.
    let left: Vec<String> = store
        .object_names()
        .into_iter()
        .filter(|o| o != "rbd_directory")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn header_read_error_fails_one_image_only() {
    let mem = MemoryStore::new();
    let store = FailingStore::new(mem.clone());
    admin::create_image(&*store, "bad", 8192, &v2(FEATURE_LAYERING)).unwrap();
    admin::create_image(&*store, "good", 8192, &v1()).unwrap();
    let bad_id = admin::image_info(&*store, "bad").unwrap().id.unwrap();
    store.add_rule(
        Rule::always(
            Op::Exec(RBD_CLASS.into(), String::new()),
            Effect::Fail(libc::EIO),
        )
        .on(&header_object(&bad_id)),
    );
    let pool = Pool::new(store.clone(), cache(), None);
    assert_eq!(pool.image("bad").unwrap_err().errno(), libc::EIO);
    let good = pool.image("good").unwrap();
    good.write(0, b"fine").unwrap();
    assert_eq!(good.read(NOSNAP, 0, 4).unwrap(), b"fine");
    assert!(store.count(&Op::Exec(RBD_CLASS.into(), "get_features".into())) >= 1);
}
