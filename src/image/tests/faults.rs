//! Injected store failures reach the right caller, once.

use super::*;
use crate::pool::Pool;
use crate::store::NOSNAP;
use crate::store::failing::{Effect, FailingStore, Op, Rule};

#[test]
fn write_back_error_reaches_the_next_flush_once() {
    let mem = MemoryStore::new();
    let store = FailingStore::new(mem.clone());
    admin::create_image(&*store, "img", 16 << 10, &v2(FEATURE_LAYERING)).unwrap();
    let img = Image::open(store.clone(), &cache(), "img").unwrap();
    store.add_rule(Rule::always(Op::Write, Effect::Fail(libc::EIO)).on("rbd_data"));
    img.write(0, &[7; 5000]).unwrap();
    let e = img.flush().unwrap_err();
    assert_eq!(e.errno(), libc::EIO);
    store.clear_rules();
    img.flush().unwrap();
    img.write(0, &[8; 10]).unwrap();
    img.flush().unwrap();
    assert_eq!(img.read(NOSNAP, 0, 10).unwrap(), vec![8; 10]);
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
