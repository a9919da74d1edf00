//! The `lock` object class (cls_lock) as the exclusive lock uses it on
//! `rbd_header.ID`: lock `rbd_lock`, exclusive, tag `internal`, cookie
//! `auto <watch handle>`.
//!
//! Every input is versioned (1, 1):
//!
//! | method | fields |
//! |---|---|
//! | `lock` | string name, u8 type (1 exclusive, 2 shared), string cookie, string tag, string description, utime duration (0 = forever), u8 flags |
//! | `unlock` | string name, string cookie |
//! | `break_lock` | string name, entity_name locker (u8 type, s64 num), string cookie |
//! | `get_info` | string name |
//! | `set_cookie` | string name, u8 type, string cookie, string tag, string new cookie |
//!
//! `get_info` reply, versioned (1, 1): u32 count × (locker id, locker
//! info), u8 lock type, string tag; a locker id is versioned (1, 1)
//! {entity_name, string cookie}; a locker info is versioned (1, 1) {utime
//! expiration, entity_addr, string description}.
//!
//! entity_addr (msg/msg_types.h): new style is u8 marker 1, then versioned
//! (1, 1) {u32 type (0 none, 1 legacy/v1, 2 msgr2/v2, 3 any), u32 nonce,
//! u32 sockaddr length, then the sockaddr: u16 family (little-endian),
//! the rest as in the kernel's struct (port big-endian, ...)}. Old style is
//! u32 0, u32 nonce, 128-byte sockaddr_storage with the family big-endian.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::{Utime, finish, string, versioned};
use crate::format::FormatError;
use crate::format::decode::{Decoder, Encoder};

/// The exclusive lock's name, tag and cookie prefix (librbd).
pub const RBD_LOCK_NAME: &str = "rbd_lock";
pub const RBD_LOCK_TAG: &str = "internal";
pub const RBD_LOCK_COOKIE_PREFIX: &str = "auto ";

/// librbd's lock cookie for watch handle `handle`: `auto <handle>`.
pub fn rbd_lock_cookie(handle: u64) -> String {
    format!("{RBD_LOCK_COOKIE_PREFIX}{handle}")
}

/// The watch handle in a librbd lock cookie, if it is one.
pub fn parse_rbd_lock_cookie(cookie: &str) -> Option<u64> {
    cookie.strip_prefix(RBD_LOCK_COOKIE_PREFIX)?.parse().ok()
}

pub const LOCK_EXCLUSIVE: u8 = 1;
pub const LOCK_SHARED: u8 = 2;
/// `lock` flag: renew a lock we already hold instead of failing EEXIST.
pub const LOCK_FLAG_MAY_RENEW: u8 = 1;

/// The input of `lock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockOp {
    pub name: String,
    /// [`LOCK_EXCLUSIVE`] or [`LOCK_SHARED`].
    pub lock_type: u8,
    pub cookie: String,
    pub tag: String,
    pub description: String,
    /// Zero: held until unlocked or broken.
    pub duration: Utime,
    pub flags: u8,
}

impl LockOp {
    /// The lock librbd takes: `rbd_lock`, exclusive, tag `internal`, empty
    /// description, no expiry, no flags.
    pub fn rbd_exclusive(cookie: &str) -> LockOp {
        LockOp {
            name: RBD_LOCK_NAME.into(),
            lock_type: LOCK_EXCLUSIVE,
            cookie: cookie.into(),
            tag: RBD_LOCK_TAG.into(),
            description: String::new(),
            duration: Utime::default(),
            flags: 0,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        versioned(&mut e, 1, 1, |e| {
            e.string(&self.name)
                .u8(self.lock_type)
                .string(&self.cookie)
                .string(&self.tag)
                .string(&self.description);
            self.duration.encode(e);
            e.u8(self.flags);
        });
        e.finish()
    }

    /// Reads a `lock` input back (for test doubles).
    pub fn decode(input: &[u8]) -> Result<LockOp, FormatError> {
        const W: &str = "lock.lock input";
        let mut d = Decoder::new(input, W);
        let (_, mut s) = d.versioned(1)?;
        finish(&d, W)?;
        Ok(LockOp {
            name: string(&mut s)?,
            lock_type: s.u8()?,
            cookie: string(&mut s)?,
            tag: string(&mut s)?,
            description: string(&mut s)?,
            duration: Utime::decode(&mut s)?,
            flags: s.u8()?,
        })
    }
}

/// `unlock` input. ENOENT when no such (name, cookie) is held by us.
pub fn unlock_input(name: &str, cookie: &str) -> Vec<u8> {
    let mut e = Encoder::new();
    versioned(&mut e, 1, 1, |e| {
        e.string(name).string(cookie);
    });
    e.finish()
}

/// `break_lock` input: removes the lock that `locker` holds with `cookie`.
pub fn break_lock_input(name: &str, locker: EntityName, cookie: &str) -> Vec<u8> {
    let mut e = Encoder::new();
    versioned(&mut e, 1, 1, |e| {
        e.string(name);
        locker.encode(e);
        e.string(cookie);
    });
    e.finish()
}

/// `get_info` input.
pub fn get_info_input(name: &str) -> Vec<u8> {
    let mut e = Encoder::new();
    versioned(&mut e, 1, 1, |e| {
        e.string(name);
    });
    e.finish()
}

/// `set_cookie` input: moves our lock to `new_cookie` (after a re-watch
/// changed the handle).
pub fn set_cookie_input(
    name: &str,
    lock_type: u8,
    cookie: &str,
    tag: &str,
    new_cookie: &str,
) -> Vec<u8> {
    let mut e = Encoder::new();
    versioned(&mut e, 1, 1, |e| {
        e.string(name)
            .u8(lock_type)
            .string(cookie)
            .string(tag)
            .string(new_cookie);
    });
    e.finish()
}

/// A Ceph entity: `client.4321` is type 8, num 4321 (the client's global
/// id, `rados_get_instance_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntityName {
    pub entity_type: u8,
    pub num: i64,
}

pub const ENTITY_TYPE_MON: u8 = 0x01;
pub const ENTITY_TYPE_MDS: u8 = 0x02;
pub const ENTITY_TYPE_OSD: u8 = 0x04;
pub const ENTITY_TYPE_CLIENT: u8 = 0x08;
pub const ENTITY_TYPE_MGR: u8 = 0x10;

impl EntityName {
    pub fn client(gid: u64) -> EntityName {
        EntityName {
            entity_type: ENTITY_TYPE_CLIENT,
            num: gid as i64,
        }
    }

    fn decode(d: &mut Decoder<'_>) -> Result<EntityName, FormatError> {
        Ok(EntityName {
            entity_type: d.u8()?,
            num: d.i64()?,
        })
    }

    fn encode(&self, e: &mut Encoder) {
        e.u8(self.entity_type).u64(self.num as u64);
    }
}

impl fmt::Display for EntityName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = match self.entity_type {
            ENTITY_TYPE_MON => "mon",
            ENTITY_TYPE_MDS => "mds",
            ENTITY_TYPE_OSD => "osd",
            ENTITY_TYPE_CLIENT => "client",
            ENTITY_TYPE_MGR => "mgr",
            _ => "unknown",
        };
        write!(f, "{t}.{}", self.num)
    }
}

/// A messenger address (entity_addr_t).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntityAddr {
    /// 0 none, 1 legacy (v1), 2 msgr2 (v2), 3 any.
    pub addr_type: u32,
    pub nonce: u32,
    /// None for an empty address or a family other than IPv4/IPv6.
    pub ip: Option<SocketAddr>,
}

pub const ADDR_TYPE_NONE: u32 = 0;
pub const ADDR_TYPE_LEGACY: u32 = 1;
pub const ADDR_TYPE_MSGR2: u32 = 2;
pub const ADDR_TYPE_ANY: u32 = 3;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCKADDR_STORAGE_LEN: usize = 128;

/// sockaddr bytes after the family: port (big-endian) and the address.
fn parse_sockaddr(family: u16, rest: &[u8]) -> Option<SocketAddr> {
    let port = u16::from_be_bytes(rest.get(0..2)?.try_into().ok()?);
    match family {
        AF_INET => {
            let ip: [u8; 4] = rest.get(2..6)?.try_into().ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        }
        AF_INET6 => {
            let flow = u32::from_be_bytes(rest.get(2..6)?.try_into().ok()?);
            let ip: [u8; 16] = rest.get(6..22)?.try_into().ok()?;
            // scope_id is in host order (little-endian here); absent = 0.
            let scope = rest
                .get(22..26)
                .and_then(|s| s.try_into().ok())
                .map_or(0, u32::from_le_bytes);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flow,
                scope,
            )))
        }
        _ => None,
    }
}

impl EntityAddr {
    fn decode(d: &mut Decoder<'_>) -> Result<EntityAddr, FormatError> {
        const W: &str = "entity_addr";
        match d.u8()? {
            0 => {
                // Legacy: the rest of a u32 0, nonce, sockaddr_storage.
                d.bytes(3)?;
                let nonce = d.u32()?;
                let ss = d.bytes(SOCKADDR_STORAGE_LEN)?;
                let family = u16::from_be_bytes([ss[0], ss[1]]);
                let ip = parse_sockaddr(family, &ss[2..]);
                let addr_type = if family == 0 {
                    ADDR_TYPE_NONE
                } else {
                    ADDR_TYPE_LEGACY
                };
                Ok(EntityAddr {
                    addr_type,
                    nonce,
                    ip,
                })
            }
            1 => {
                let (_, mut s) = d.versioned(1)?;
                let addr_type = s.u32()?;
                let nonce = s.u32()?;
                let sa = s.blob()?;
                let ip = match sa {
                    [] => None,
                    [_] => return Err(FormatError::invalid(W, "sockaddr shorter than its family")),
                    [lo, hi, rest @ ..] => parse_sockaddr(u16::from_le_bytes([*lo, *hi]), rest),
                };
                Ok(EntityAddr {
                    addr_type,
                    nonce,
                    ip,
                })
            }
            m => Err(FormatError::invalid(W, format!("address marker {m}"))),
        }
    }

    /// New-style encoding (what a Pacific OSD sends to a Pacific client).
    fn encode(&self, e: &mut Encoder) {
        e.u8(1);
        versioned(e, 1, 1, |e| {
            e.u32(self.addr_type).u32(self.nonce);
            let mut sa = Vec::new();
            match self.ip {
                None => {}
                Some(SocketAddr::V4(a)) => {
                    sa.extend_from_slice(&AF_INET.to_le_bytes());
                    sa.extend_from_slice(&a.port().to_be_bytes());
                    sa.extend_from_slice(&a.ip().octets());
                    sa.extend_from_slice(&[0; 8]);
                }
                Some(SocketAddr::V6(a)) => {
                    sa.extend_from_slice(&AF_INET6.to_le_bytes());
                    sa.extend_from_slice(&a.port().to_be_bytes());
                    sa.extend_from_slice(&a.flowinfo().to_be_bytes());
                    sa.extend_from_slice(&a.ip().octets());
                    sa.extend_from_slice(&a.scope_id().to_le_bytes());
                }
            }
            e.blob(&sa);
        });
    }

    /// `ip:port/nonce`, as `rbd lock ls` prints it and as the blocklist
    /// takes it (Ceph's `get_legacy_str`); `-/nonce` without an IP.
    pub fn legacy_str(&self) -> String {
        match self.ip {
            Some(ip) => format!("{ip}/{}", self.nonce),
            None => format!("-/{}", self.nonce),
        }
    }
}

/// One holder of a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locker {
    /// Entity type (8 = client) and number (the client's global id).
    pub entity_type: u8,
    pub entity_num: i64,
    pub cookie: String,
    /// Best-effort text form of `addr`, e.g. `127.0.0.1:0/12345`.
    pub address: String,
    pub addr: EntityAddr,
    /// Zero: never expires.
    pub expiration: Utime,
    pub description: String,
}

impl Locker {
    pub fn entity(&self) -> EntityName {
        EntityName {
            entity_type: self.entity_type,
            num: self.entity_num,
        }
    }
}

/// What `get_info` says about one lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    pub lockers: Vec<Locker>,
    /// Type exclusive (1); false for shared or none (0, no lockers).
    pub exclusive: bool,
    pub tag: String,
}

const GET_INFO: &str = "lock.get_info reply";

impl LockInfo {
    /// Decodes a `get_info` reply. A lock that was never taken, or was
    /// released, reads as no lockers, type none (`exclusive` false) and an
    /// empty tag; ENOENT means the object itself does not exist.
    pub fn decode(reply: &[u8]) -> Result<LockInfo, FormatError> {
        let mut d = Decoder::new(reply, GET_INFO);
        let (_, mut s) = d.versioned(1)?;
        finish(&d, GET_INFO)?;
        // A locker is at least two 6-byte section headers.
        let n = s.count(12)?;
        let mut lockers = Vec::with_capacity(n);
        for _ in 0..n {
            let (_, mut id) = s.versioned(1)?;
            let entity = EntityName::decode(&mut id)?;
            let cookie = string(&mut id)?;
            let (_, mut info) = s.versioned(1)?;
            let expiration = Utime::decode(&mut info)?;
            let addr = EntityAddr::decode(&mut info)?;
            // Informational only: a non-UTF-8 description must not hide
            // who holds the lock.
            let description = String::from_utf8_lossy(info.blob()?).into_owned();
            lockers.push(Locker {
                entity_type: entity.entity_type,
                entity_num: entity.num,
                cookie,
                address: addr.legacy_str(),
                addr,
                expiration,
                description,
            });
        }
        let lock_type = s.u8()?;
        let tag = string(&mut s)?;
        Ok(LockInfo {
            lockers,
            exclusive: lock_type == LOCK_EXCLUSIVE,
            tag,
        })
    }

    /// The `get_info` reply for this lock (for test doubles).
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        versioned(&mut e, 1, 1, |e| {
            e.u32(self.lockers.len() as u32);
            for l in &self.lockers {
                versioned(e, 1, 1, |e| {
                    l.entity().encode(e);
                    e.string(&l.cookie);
                });
                versioned(e, 1, 1, |e| {
                    l.expiration.encode(e);
                    l.addr.encode(e);
                    e.string(&l.description);
                });
            }
            let t = match (self.exclusive, self.lockers.is_empty()) {
                (true, _) => LOCK_EXCLUSIVE,
                (false, true) => 0,
                (false, false) => LOCK_SHARED,
            };
            e.u8(t).string(&self.tag);
        });
        e.finish()
    }
}

pub fn decode_get_info(reply: &[u8]) -> Result<LockInfo, FormatError> {
    LockInfo::decode(reply)
}

/// Opens the versioned (1, 1) section every `lock` input is wrapped in.
fn lock_input<'a>(input: &'a [u8], what: &'static str) -> Result<Decoder<'a>, FormatError> {
    let mut d = Decoder::new(input, what);
    let (_, s) = d.versioned(1)?;
    finish(&d, what)?;
    Ok(s)
}

/// Reads an `unlock` input back (for test doubles): (name, cookie).
pub fn decode_unlock_input(input: &[u8]) -> Result<(String, String), FormatError> {
    let mut s = lock_input(input, "lock.unlock input")?;
    Ok((string(&mut s)?, string(&mut s)?))
}

/// Reads a `break_lock` input back (for test doubles): (name, locker,
/// cookie).
pub fn decode_break_lock_input(input: &[u8]) -> Result<(String, EntityName, String), FormatError> {
    let mut s = lock_input(input, "lock.break_lock input")?;
    let name = string(&mut s)?;
    let locker = EntityName::decode(&mut s)?;
    Ok((name, locker, string(&mut s)?))
}

/// Reads a `get_info` input back (for test doubles): the lock name.
pub fn decode_get_info_input(input: &[u8]) -> Result<String, FormatError> {
    let mut s = lock_input(input, "lock.get_info input")?;
    string(&mut s)
}

/// Reads a `set_cookie` input back (for test doubles): (name, type,
/// cookie, tag, new cookie).
pub fn decode_set_cookie_input(
    input: &[u8],
) -> Result<(String, u8, String, String, String), FormatError> {
    let mut s = lock_input(input, "lock.set_cookie input")?;
    Ok((
        string(&mut s)?,
        s.u8()?,
        string(&mut s)?,
        string(&mut s)?,
        string(&mut s)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{hex, mutate, mutations, noise};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lock_inputs_decode_back() {
        assert_eq!(
            decode_unlock_input(&unlock_input("rbd_lock", "auto 1")).unwrap(),
            ("rbd_lock".to_string(), "auto 1".to_string())
        );
        let who = EntityName::client(4321);
        assert_eq!(
            decode_break_lock_input(&break_lock_input("l", who, "c")).unwrap(),
            ("l".to_string(), who, "c".to_string())
        );
        assert_eq!(decode_get_info_input(&get_info_input("l")).unwrap(), "l");
        assert_eq!(
            decode_set_cookie_input(&set_cookie_input("l", 1, "a", "t", "b")).unwrap(),
            ("l".into(), 1, "a".into(), "t".into(), "b".into())
        );
        assert!(decode_unlock_input(&[1, 1, 0, 0, 0, 0, 9]).is_err());
        assert!(decode_get_info_input(&[]).is_err());
    }

    #[test]
    fn lock_input_layout() {
        let b = LockOp::rbd_exclusive(&rbd_lock_cookie(123)).encode();
        let want = hex("01 01 32000000
             08000000 7262645f6c6f636b
             01
             08000000 6175746f20313233
             08000000 696e7465726e616c
             00000000
             00000000 00000000
             00");
        assert_eq!(b, want);
        assert_eq!(
            LockOp::decode(&b).unwrap(),
            LockOp::rbd_exclusive("auto 123")
        );
        assert_eq!(
            parse_rbd_lock_cookie("auto 140086666597536"),
            Some(140086666597536)
        );
        assert_eq!(parse_rbd_lock_cookie("other"), None);
    }

    #[test]
    fn other_inputs() {
        assert_eq!(
            unlock_input("rbd_lock", "auto 1"),
            hex("01 01 16000000 08000000 7262645f6c6f636b 06000000 6175746f2031")
        );
        assert_eq!(
            break_lock_input("l", EntityName::client(4321), "c"),
            hex("01 01 13000000 01000000 6c 08 e110000000000000 01000000 63")
        );
        assert_eq!(get_info_input("l"), hex("01 01 05000000 01000000 6c"));
        assert_eq!(EntityName::client(4321).to_string(), "client.4321");
        assert_eq!(
            set_cookie_input("l", LOCK_EXCLUSIVE, "a", "t", "b"),
            hex("01 01 15000000 01000000 6c 01 01000000 61 01000000 74 01000000 62")
        );
    }

    fn sample() -> LockInfo {
        let addr = EntityAddr {
            addr_type: ADDR_TYPE_ANY,
            nonce: 1039610640,
            ip: Some("127.0.0.1:0".parse().unwrap()),
        };
        LockInfo {
            lockers: vec![Locker {
                entity_type: ENTITY_TYPE_CLIENT,
                entity_num: 4321,
                cookie: "auto 140086666597536".into(),
                address: addr.legacy_str(),
                addr,
                expiration: Utime::default(),
                description: String::new(),
            }],
            exclusive: true,
            tag: "internal".into(),
        }
    }

    #[test]
    fn get_info_reply() {
        let info = sample();
        assert_eq!(info.lockers[0].address, "127.0.0.1:0/1039610640");
        let b = info.encode();
        assert_eq!(LockInfo::decode(&b).unwrap(), info);
        assert_eq!(info.lockers[0].entity().to_string(), "client.4321");

        let none = LockInfo {
            lockers: vec![],
            exclusive: false,
            tag: String::new(),
        };
        assert_eq!(LockInfo::decode(&none.encode()).unwrap(), none);
    }

    #[test]
    fn new_style_address_bytes() {
        // marker 1, versioned(1,1){type 3 (any), nonce, len 16, AF_INET LE,
        // port 6789 BE, 10.1.2.3, 8 zero bytes}.
        let b =
            hex("01 01 01 1c000000 03000000 15cd5b07 10000000 0200 1a85 0a010203 0000000000000000");
        let mut d = Decoder::new(&b, "t");
        let a = EntityAddr::decode(&mut d).unwrap();
        assert!(d.is_empty());
        assert_eq!(a.addr_type, ADDR_TYPE_ANY);
        assert_eq!(a.legacy_str(), "10.1.2.3:6789/123456789");
        let mut e = Encoder::new();
        a.encode(&mut e);
        assert_eq!(e.finish(), b);
    }

    #[test]
    fn legacy_and_odd_addresses() {
        // Old style: u32 0, nonce, sockaddr_storage with the family
        // big-endian.
        let mut b = hex("00000000 07000000 0002 1a85 7f000001");
        b.resize(4 + 4 + 128, 0);
        let mut d = Decoder::new(&b, "t");
        let a = EntityAddr::decode(&mut d).unwrap();
        assert!(d.is_empty());
        assert_eq!(a.addr_type, ADDR_TYPE_LEGACY);
        assert_eq!(a.legacy_str(), "127.0.0.1:6789/7");

        // IPv6.
        let v6 = EntityAddr {
            addr_type: ADDR_TYPE_MSGR2,
            nonce: 9,
            ip: Some("[::1]:3300".parse().unwrap()),
        };
        let mut e = Encoder::new();
        v6.encode(&mut e);
        let b = e.finish();
        let back = EntityAddr::decode(&mut Decoder::new(&b, "t")).unwrap();
        assert_eq!(back, v6);
        assert_eq!(back.legacy_str(), "[::1]:3300/9");

        // Empty address, unknown family, bad marker.
        let empty = hex("01 01 01 0c000000 00000000 05000000 00000000");
        let a = EntityAddr::decode(&mut Decoder::new(&empty, "t")).unwrap();
        assert_eq!((a.ip, a.legacy_str()), (None, "-/5".to_string()));
        let unix = hex("01 01 01 10000000 01000000 05000000 04000000 0100 2f78");
        assert_eq!(
            EntityAddr::decode(&mut Decoder::new(&unix, "t"))
                .unwrap()
                .ip,
            None
        );
        assert!(EntityAddr::decode(&mut Decoder::new(&hex("02"), "t")).is_err());
        let short = hex("01 01 01 0d000000 00000000 05000000 01000000 02");
        assert!(EntityAddr::decode(&mut Decoder::new(&short, "t")).is_err());
    }

    fn arb_addr() -> impl Strategy<Value = EntityAddr> {
        let ip = prop_oneof![
            Just(None),
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(a, p)| Some(SocketAddr::from((a, p)))),
            (any::<[u8; 16]>(), any::<u16>(), any::<u32>(), any::<u32>()).prop_map(
                |(a, p, f, s)| {
                    Some(SocketAddr::V6(SocketAddrV6::new(
                        Ipv6Addr::from(a),
                        p,
                        f,
                        s,
                    )))
                }
            ),
        ];
        (0u32..4, any::<u32>(), ip).prop_map(|(addr_type, nonce, ip)| EntityAddr {
            addr_type,
            nonce,
            ip,
        })
    }

    fn arb_info() -> impl Strategy<Value = LockInfo> {
        let locker = (
            any::<u8>(),
            any::<i64>(),
            ".{0,20}",
            arb_addr(),
            any::<(u32, u32)>(),
            ".{0,10}",
        )
            .prop_map(
                |(entity_type, entity_num, cookie, addr, (sec, nsec), description)| Locker {
                    entity_type,
                    entity_num,
                    cookie,
                    address: addr.legacy_str(),
                    addr,
                    expiration: Utime { sec, nsec },
                    description,
                },
            );
        (
            proptest::collection::vec(locker, 0..4),
            any::<bool>(),
            ".{0,10}",
        )
            .prop_map(|(lockers, exclusive, tag)| LockInfo {
                lockers,
                exclusive,
                tag,
            })
    }

    proptest! {
        #[test]
        fn round_trips(info in arb_info(), cookie in ".{0,30}", dur: (u32, u32), flags: u8, t in 1u8..3) {
            prop_assert_eq!(LockInfo::decode(&info.encode()).unwrap(), info);
            let op = LockOp {
                lock_type: t,
                duration: Utime { sec: dur.0, nsec: dur.1 },
                flags,
                ..LockOp::rbd_exclusive(&cookie)
            };
            prop_assert_eq!(LockOp::decode(&op.encode()).unwrap(), op);
        }

        #[test]
        fn never_panics_on_mutations(info in arb_info(), m in mutations(), m2 in mutations()) {
            let _ = LockInfo::decode(&mutate(info.encode(), m));
            let _ = LockOp::decode(&mutate(LockOp::rbd_exclusive("auto 1").encode(), m2));
        }

        #[test]
        fn never_panics_on_noise(b in noise()) {
            let _ = LockInfo::decode(&b);
            let _ = LockOp::decode(&b);
            let _ = EntityAddr::decode(&mut Decoder::new(&b, "t"));
        }
    }
}
