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

/// A watch that cannot be set (full pool, read-only CephX user) never
/// holds up opening or reading: it is retried in the background, the
/// header is re-read meanwhile, and writes that need the lock say why.
#[test]
fn a_watch_that_cannot_be_set_does_not_block_reads() {
    let mem = MemoryStore::new();
    let store = FailingStore::new(mem.clone());
    let features = FEATURE_LAYERING | FEATURE_EXCLUSIVE_LOCK | FEATURE_OBJECT_MAP;
    admin::create_image(&*store, "img", 64 << 10, &v2(features)).unwrap();
    let setup = Image::open(store.clone(), &cache(), "img").unwrap();
    setup.write(0, &[5; 4096]).unwrap();
    setup.close().unwrap();
    drop(setup);

    // The watch would wait for space for 10 s: opening and reading must not.
    store.add_rule(Rule::always(
        Op::Watch,
        Effect::Delay(Duration::from_secs(10)),
    ));
    let t0 = std::time::Instant::now();
    let img = Image::open(store.clone(), &cache(), "img").unwrap();
    assert_eq!(img.read(NOSNAP, 0, 4096).unwrap(), vec![5; 4096]);
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "open + read waited {:?} for the watch",
        t0.elapsed()
    );
    drop(img);
    store.clear_rules();

    // A user who may not watch: reads work, the header is re-read without
    // notifications, and a write is refused as read-only (EROFS).
    store.add_rule(Rule::always(Op::Watch, Effect::Fail(libc::EPERM)));
    let img = Image::open(store.clone(), &cache(), "img").unwrap();
    assert_eq!(img.read(NOSNAP, 0, 10).unwrap(), vec![5; 10]);
    let e = img.write(0, b"x").and_then(|_| img.flush()).unwrap_err();
    assert_eq!(e.errno(), libc::EROFS, "{e}");
    // Another client grows the image: seen within the unwatched refresh.
    let other = Image::open(mem.clone(), &cache(), "img").unwrap();
    other.resize(128 << 10).unwrap();
    other.close().unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(img.current_info().unwrap().size, 128 << 10);
    // Full pool: the watch fails with EDQUOT, and so does a write.
    store.clear_rules();
    drop(img);
    store.add_rule(Rule::always(Op::Watch, Effect::Fail(libc::EDQUOT)));
    let img = Image::open(store.clone(), &cache(), "img").unwrap();
    let e = img.write(0, b"x").and_then(|_| img.flush()).unwrap_err();
    assert_eq!(e.errno(), libc::EDQUOT, "{e}");
    // Space comes back: the background retry sets the watch, writes work.
    store.clear_rules();
    img.write(0, b"y").unwrap();
    img.flush().unwrap();
    assert_eq!(img.read(NOSNAP, 0, 1).unwrap(), b"y");
}
