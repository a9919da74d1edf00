//! The `lock` object class of the in-memory store (Ceph Pacific's
//! `src/cls/lock/cls_lock.cc`, the part rbdfs uses): `lock`, `unlock`,
//! `break_lock`, `get_info`, `set_cookie`. A lock's state lives in the
//! object's xattr `lock.<name>`, encoded like `get_info`'s reply (which is
//! also the layout of Ceph's `lock_info_t`).
//!
//! A locker is (caller entity, cookie). Errors as cls_lock: EINVAL for a
//! bad type or empty name, EEXIST when the caller already holds the lock
//! with that cookie (without the renew flag), EBUSY when someone else holds
//! it exclusively (or with another tag or type), ENOENT for unlocking or
//! breaking a lock that is not held.

use super::cls::{Caller, ClsObject, ClsResult, bad_input, corrupt};
use crate::format::v2::*;

const XATTR_PREFIX: &str = "lock.";

pub fn call(
    method: &str,
    obj: &mut ClsObject,
    caller: &Caller,
    input: &[u8],
) -> ClsResult<Vec<u8>> {
    match method {
        "lock" => lock(obj, caller, input),
        "unlock" => {
            let (name, cookie) = decode_unlock_input(input).map_err(bad_input)?;
            remove_locker(obj, &name, EntityName::client(caller.gid), &cookie)
        }
        "break_lock" => {
            let (name, locker, cookie) = decode_break_lock_input(input).map_err(bad_input)?;
            remove_locker(obj, &name, locker, &cookie)
        }
        "get_info" => {
            let name = decode_get_info_input(input).map_err(bad_input)?;
            Ok(read_lock(obj, &name)?.encode())
        }
        "set_cookie" => set_cookie(obj, caller, input),
        _ => Err(libc::EOPNOTSUPP),
    }
}

fn empty_lock() -> LockInfo {
    LockInfo {
        lockers: Vec::new(),
        exclusive: false,
        tag: String::new(),
    }
}

/// The lock's state; a lock never taken reads as none (ENOENT only when
/// the object itself is missing).
fn read_lock(obj: &ClsObject, name: &str) -> ClsResult<LockInfo> {
    match obj.xattr_get(&format!("{XATTR_PREFIX}{name}")) {
        Ok(raw) => LockInfo::decode(raw).map_err(corrupt),
        Err(libc::ENODATA) => Ok(empty_lock()),
        Err(e) => Err(e),
    }
}

fn write_lock(obj: &mut ClsObject, name: &str, mut info: LockInfo) {
    if info.lockers.is_empty() {
        info = empty_lock();
    }
    obj.xattr_set(&format!("{XATTR_PREFIX}{name}"), info.encode());
}

fn lock(obj: &mut ClsObject, caller: &Caller, input: &[u8]) -> ClsResult<Vec<u8>> {
    let op = LockOp::decode(input).map_err(bad_input)?;
    if op.lock_type != LOCK_EXCLUSIVE && op.lock_type != LOCK_SHARED {
        return Err(libc::EINVAL);
    }
    if op.name.is_empty() {
        return Err(libc::EINVAL);
    }
    // The lock methods create the object when needed (Pacific).
    let mut info = if obj.exists() {
        read_lock(obj, &op.name)?
    } else {
        empty_lock()
    };
    let me = EntityName::client(caller.gid);
    let mine = info
        .lockers
        .iter()
        .position(|l| l.entity() == me && l.cookie == op.cookie);
    if let Some(i) = mine {
        if op.flags & LOCK_FLAG_MAY_RENEW == 0 {
            return Err(libc::EEXIST);
        }
        info.lockers.remove(i);
    }
    if !info.lockers.is_empty() {
        let held_exclusive = info.exclusive;
        if op.lock_type == LOCK_EXCLUSIVE || held_exclusive || info.tag != op.tag {
            return Err(libc::EBUSY);
        }
    }
    let expiration = if op.duration == Utime::default() {
        Utime::default()
    } else {
        let nsec = caller.now.nsec as u64 + op.duration.nsec as u64;
        Utime {
            sec: caller
                .now
                .sec
                .saturating_add(op.duration.sec)
                .saturating_add((nsec / 1_000_000_000) as u32),
            nsec: (nsec % 1_000_000_000) as u32,
        }
    };
    info.lockers.push(Locker {
        entity_type: me.entity_type,
        entity_num: me.num,
        cookie: op.cookie,
        address: caller.addr.legacy_str(),
        addr: caller.addr,
        expiration,
        description: op.description,
    });
    info.exclusive = op.lock_type == LOCK_EXCLUSIVE;
    info.tag = op.tag;
    write_lock(obj, &op.name, info);
    Ok(Vec::new())
}

/// `unlock` (the caller's own locker) and `break_lock` (anyone's).
fn remove_locker(
    obj: &mut ClsObject,
    name: &str,
    who: EntityName,
    cookie: &str,
) -> ClsResult<Vec<u8>> {
    let mut info = read_lock(obj, name)?;
    let i = info
        .lockers
        .iter()
        .position(|l| l.entity() == who && l.cookie == cookie)
        .ok_or(libc::ENOENT)?;
    info.lockers.remove(i);
    write_lock(obj, name, info);
    Ok(Vec::new())
}

fn set_cookie(obj: &mut ClsObject, caller: &Caller, input: &[u8]) -> ClsResult<Vec<u8>> {
    let (name, lock_type, cookie, tag, new_cookie) =
        decode_set_cookie_input(input).map_err(bad_input)?;
    if lock_type != LOCK_EXCLUSIVE && lock_type != LOCK_SHARED {
        return Err(libc::EINVAL);
    }
    if name.is_empty() || cookie == new_cookie {
        return Err(libc::EINVAL);
    }
    let mut info = read_lock(obj, &name)?;
    let me = EntityName::client(caller.gid);
    let i = info
        .lockers
        .iter()
        .position(|l| l.entity() == me && l.cookie == cookie)
        .ok_or(libc::ENOENT)?;
    let held_type = if info.exclusive {
        LOCK_EXCLUSIVE
    } else {
        LOCK_SHARED
    };
    if held_type != lock_type || info.tag != tag {
        return Err(libc::EBUSY);
    }
    if info
        .lockers
        .iter()
        .any(|l| l.entity() == me && l.cookie == new_cookie)
    {
        return Err(libc::EBUSY);
    }
    info.lockers[i].cookie = new_cookie;
    write_lock(obj, &name, info);
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::cls::now;
    use std::collections::BTreeMap;

    fn header() -> ClsObject {
        ClsObject {
            data: Some(Vec::new()),
            omap: BTreeMap::new(),
            xattrs: BTreeMap::new(),
            changed: false,
        }
    }

    fn client(gid: u64) -> Caller {
        Caller {
            gid,
            addr: EntityAddr {
                addr_type: ADDR_TYPE_LEGACY,
                nonce: gid as u32,
                ip: Some(([127, 0, 0, 1], 0).into()),
            },
            now: now(),
        }
    }

    fn info(obj: &mut ClsObject, c: &Caller) -> LockInfo {
        let r = call("get_info", obj, c, &get_info_input(RBD_LOCK_NAME)).unwrap();
        LockInfo::decode(&r).unwrap()
    }

    #[test]
    fn exclusive_lock_lifecycle() {
        let (a, b) = (client(1), client(2));
        let mut h = header();
        let lock_a = LockOp::rbd_exclusive("auto 7").encode();
        assert!(info(&mut h, &a).lockers.is_empty());
        call("lock", &mut h, &a, &lock_a).unwrap();
        assert_eq!(call("lock", &mut h, &a, &lock_a), Err(libc::EEXIST));
        let lock_b = LockOp::rbd_exclusive("auto 8").encode();
        assert_eq!(call("lock", &mut h, &b, &lock_b), Err(libc::EBUSY));
        let i = info(&mut h, &b);
        assert!(i.exclusive);
        assert_eq!(i.tag, RBD_LOCK_TAG);
        assert_eq!(i.lockers[0].entity_num, 1);
        assert_eq!(i.lockers[0].cookie, "auto 7");
        assert_eq!(i.lockers[0].address, "127.0.0.1:0/1");
        // b cannot unlock a's lock, but can break it.
        let unlock = unlock_input(RBD_LOCK_NAME, "auto 7");
        assert_eq!(call("unlock", &mut h, &b, &unlock), Err(libc::ENOENT));
        let brk = break_lock_input(RBD_LOCK_NAME, EntityName::client(1), "auto 7");
        call("break_lock", &mut h, &b, &brk).unwrap();
        assert_eq!(call("break_lock", &mut h, &b, &brk), Err(libc::ENOENT));
        let i = info(&mut h, &b);
        assert!(i.lockers.is_empty() && i.tag.is_empty() && !i.exclusive);
        call("lock", &mut h, &b, &lock_b).unwrap();
        let sc = set_cookie_input(
            RBD_LOCK_NAME,
            LOCK_EXCLUSIVE,
            "auto 8",
            "internal",
            "auto 9",
        );
        call("set_cookie", &mut h, &b, &sc).unwrap();
        assert_eq!(info(&mut h, &a).lockers[0].cookie, "auto 9");
        let unlock = unlock_input(RBD_LOCK_NAME, "auto 9");
        call("unlock", &mut h, &b, &unlock).unwrap();
        assert_eq!(call("unlock", &mut h, &b, &unlock), Err(libc::ENOENT));
    }

    #[test]
    fn bad_inputs_and_missing_objects() {
        let a = client(1);
        let mut h = header();
        assert_eq!(call("lock", &mut h, &a, b"junk"), Err(libc::EINVAL));
        let mut op = LockOp::rbd_exclusive("c");
        op.lock_type = 3;
        assert_eq!(call("lock", &mut h, &a, &op.encode()), Err(libc::EINVAL));
        let mut gone = header();
        gone.data = None;
        let r = call("get_info", &mut gone, &a, &get_info_input(RBD_LOCK_NAME));
        assert_eq!(r, Err(libc::ENOENT));
        assert_eq!(call("nope", &mut h, &a, &[]), Err(libc::EOPNOTSUPP));
        // Shared lockers with one tag coexist; an exclusive one does not.
        let mut s1 = LockOp::rbd_exclusive("c1");
        s1.lock_type = LOCK_SHARED;
        let mut s2 = s1.clone();
        s2.cookie = "c2".into();
        call("lock", &mut h, &a, &s1.encode()).unwrap();
        call("lock", &mut h, &client(2), &s2.encode()).unwrap();
        assert_eq!(info(&mut h, &a).lockers.len(), 2);
        let x = LockOp::rbd_exclusive("c3").encode();
        assert_eq!(call("lock", &mut h, &client(3), &x), Err(libc::EBUSY));
    }
}
