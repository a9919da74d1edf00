//! Injected store failures reach the right caller, once.

use super::*;
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
