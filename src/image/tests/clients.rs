//! Two clients of one cluster sharing an exclusive-lock image.

use super::*;
use crate::store::NOSNAP;
use crate::store::memory::{EBLOCKLISTED, MemoryCluster};

fn lock_owner(store: &MemoryStore, img: &Image) -> Option<i64> {
    let reply = store
        .exec(
            &img.info().header_oid,
            LOCK_CLASS,
            "get_info",
            &get_info_input(RBD_LOCK_NAME),
        )
        .unwrap();
    LockInfo::decode(&reply)
        .unwrap()
        .lockers
        .first()
        .map(|l| l.entity_num)
}

#[test]
fn lock_hand_over_keeps_both_writers_data() {
    let cluster = MemoryCluster::new();
    let (a, b) = (cluster.client(), cluster.client());
    let size = 32 << 10;
    let opts = v2(FEATURE_LAYERING | FEATURE_EXCLUSIVE_LOCK | FEATURE_OBJECT_MAP);
    admin::create_image(&*a, "shared", size, &opts).unwrap();
    let img_a = Image::open(a.clone(), &cache(), "shared").unwrap();
    let img_b = Image::open(b.clone(), &cache(), "shared").unwrap();
    // A writes (acknowledged, maybe still dirty) and holds the lock.
    img_a.write(0, &[0xaa; 10_000]).unwrap();
    assert_eq!(lock_owner(&a, &img_a), Some(a.instance_id() as i64));
    // B's write asks A for the lock; A writes back and hands over.
    img_b.write(5000, &[0xbb; 10_000]).unwrap();
    img_b.flush().unwrap();
    assert_eq!(lock_owner(&b, &img_b), Some(b.instance_id() as i64));
    let mut want = vec![0u8; size as usize];
    want[..10_000].fill(0xaa);
    want[5000..15_000].fill(0xbb);
    let check = Image::open(a.clone(), &cache(), "shared").unwrap();
    assert_eq!(check.read(NOSNAP, 0, size).unwrap(), want);
    assert_eq!(img_b.read(NOSNAP, 0, size).unwrap(), want);
    img_a.close().unwrap();
    img_b.close().unwrap();
}

#[test]
fn notify_reaches_every_client_and_times_out_on_a_hung_one() {
    let cluster = MemoryCluster::new();
    let (a, b) = (cluster.client(), cluster.client());
    a.write("obj", 0, b"x", &Default::default()).unwrap();
    let _wa = a.watch("obj", Box::new(|_| b"from a".to_vec())).unwrap();
    let wb = b.watch("obj", Box::new(|_| b"from b".to_vec())).unwrap();
    let r = a.notify("obj", b"hi", 1000).unwrap();
    assert_eq!(r.acks.len(), 2);
    assert!(
        r.acks
            .contains(&(b.instance_id(), wb.cookie(), b"from b".to_vec()))
    );
    b.set_watches_paused(true);
    let r = a.notify("obj", b"hi", 100).unwrap();
    assert_eq!(r.acks.len(), 1);
    assert_eq!(r.timeouts, vec![(b.instance_id(), wb.cookie())]);
    // Blocklisting b: its operations fail as librados reports it.
    a.blocklist_add(&b.client_address(), 0).unwrap();
    let e = b.read("obj", 0, 1, NOSNAP).unwrap_err();
    assert_eq!(e.errno(), EBLOCKLISTED);
    assert_eq!(a.read("obj", 0, 1, NOSNAP).unwrap(), b"x");
}

#[test]
fn lock_lost_mid_write_is_an_error_not_a_hang() {
    let cluster = MemoryCluster::new();
    let (a, b) = (cluster.client(), cluster.client());
    let size = 16 << 10;
    let opts = v2(FEATURE_LAYERING | FEATURE_EXCLUSIVE_LOCK);
    admin::create_image(&*a, "img", size, &opts).unwrap();
    let img_a = Image::open(a.clone(), &cache(), "img").unwrap();
    img_a.write(0, &[1; 4096]).unwrap();
    img_a.flush().unwrap();
    // A hangs (does not answer); B takes over: blocklists A, breaks its lock.
    a.set_watches_paused(true);
    let img_b = Image::open(b.clone(), &cache(), "img").unwrap();
    img_b.write(0, &[2; 4096]).unwrap();
    img_b.flush().unwrap();
    assert_eq!(lock_owner(&b, &img_b), Some(b.instance_id() as i64));
    // A's next write fails (blocklisted) instead of hanging or panicking.
    let t = std::time::Instant::now();
    let r = img_a.write(4096, &[3; 4096]).and_then(|_| img_a.flush());
    let e = r.unwrap_err();
    assert!(
        [EBLOCKLISTED, libc::EIO].contains(&e.errno()),
        "{e} ({})",
        e.errno()
    );
    assert!(t.elapsed() < Duration::from_secs(30));
    assert_eq!(img_b.read(NOSNAP, 0, 4096).unwrap(), vec![2; 4096]);
}
