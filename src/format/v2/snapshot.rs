//! Snapshot methods of the `rbd` class.
//!
//! `snapshot_get` (input u64 snap id) replies with `cls::rbd::SnapshotInfo`,
//! versioned (1, 1):
//!
//! | field | encoding |
//! |---|---|
//! | id | u64 |
//! | namespace | versioned (1, 1): u32 type, then the type's payload |
//! | name | string (a UUID for a trash snapshot) |
//! | image_size | u64 |
//! | timestamp | utime (u32 sec, u32 nsec) |
//! | child_count | u32 (clone-v2 children) |
//!
//! This is *not* the `cls_rbd_snap` record stored in the header's
//! `snapshot_<id>` key (that one has the protection status, flags and the
//! parent, in another order); the protection status comes from
//! `get_protection_status` (input u64 snap id, reply u8).
//!
//! Namespace payloads: user (0) none; group (1) s64 pool, string group id,
//! string group snapshot id; trash (2) string original name, u32 original
//! type; mirror (3) state, peers, ... (skipped here by the section length).
//!
//! `snapshot_add` input: string name, u64 snap id, namespace — name first.
//! `snapshot_remove` input: u64 snap id.

use super::{Utime, finish, string, u64_input, versioned};
use crate::format::FormatError;
use crate::format::decode::{Decoder, Encoder};

pub const SNAP_NAMESPACE_USER: u32 = 0;
pub const SNAP_NAMESPACE_GROUP: u32 = 1;
pub const SNAP_NAMESPACE_TRASH: u32 = 2;
pub const SNAP_NAMESPACE_MIRROR: u32 = 3;

/// Who a snapshot belongs to. Only `User` snapshots are what `rbd snap ls`
/// shows and what a person calls a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotNamespace {
    User,
    Group {
        pool: i64,
        group_id: String,
        group_snapshot_id: String,
    },
    /// Removed but still needed (by a clone); the snapshot's name is then a
    /// UUID and the old name is here.
    Trash {
        original_name: String,
        /// The namespace type it had before ([`SNAP_NAMESPACE_USER`], ..).
        original_type: u32,
    },
    /// Mirroring snapshot; its payload is not decoded.
    Mirror,
    /// A type this code does not know.
    Unknown(u32),
}

impl SnapshotNamespace {
    pub fn type_code(&self) -> u32 {
        match self {
            SnapshotNamespace::User => SNAP_NAMESPACE_USER,
            SnapshotNamespace::Group { .. } => SNAP_NAMESPACE_GROUP,
            SnapshotNamespace::Trash { .. } => SNAP_NAMESPACE_TRASH,
            SnapshotNamespace::Mirror => SNAP_NAMESPACE_MIRROR,
            SnapshotNamespace::Unknown(t) => *t,
        }
    }

    /// The type as `rbd snap ls --all --format json` prints it.
    pub fn type_name(&self) -> &'static str {
        match self {
            SnapshotNamespace::User => "user",
            SnapshotNamespace::Group { .. } => "group",
            SnapshotNamespace::Trash { .. } => "trash",
            SnapshotNamespace::Mirror => "mirror",
            SnapshotNamespace::Unknown(_) => "unknown",
        }
    }

    pub fn is_user(&self) -> bool {
        matches!(self, SnapshotNamespace::User)
    }

    fn decode(d: &mut Decoder<'_>) -> Result<SnapshotNamespace, FormatError> {
        let (_, mut s) = d.versioned(1)?;
        Ok(match s.u32()? {
            SNAP_NAMESPACE_USER => SnapshotNamespace::User,
            SNAP_NAMESPACE_GROUP => SnapshotNamespace::Group {
                pool: s.i64()?,
                group_id: string(&mut s)?,
                group_snapshot_id: string(&mut s)?,
            },
            SNAP_NAMESPACE_TRASH => SnapshotNamespace::Trash {
                original_name: string(&mut s)?,
                original_type: s.u32()?,
            },
            SNAP_NAMESPACE_MIRROR => SnapshotNamespace::Mirror,
            t => SnapshotNamespace::Unknown(t),
        })
    }

    /// Mirror and unknown namespaces are written without their payload
    /// (enough for test doubles; rbdfs only ever creates user snapshots).
    fn encode(&self, e: &mut Encoder) {
        versioned(e, 1, 1, |e| {
            e.u32(self.type_code());
            match self {
                SnapshotNamespace::Group {
                    pool,
                    group_id,
                    group_snapshot_id,
                } => {
                    e.u64(*pool as u64)
                        .string(group_id)
                        .string(group_snapshot_id);
                }
                SnapshotNamespace::Trash {
                    original_name,
                    original_type,
                } => {
                    e.string(original_name).u32(*original_type);
                }
                _ => {}
            }
        });
    }
}

/// One snapshot as `snapshot_get` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub id: u64,
    pub namespace: SnapshotNamespace,
    pub name: String,
    pub image_size: u64,
    pub timestamp: Utime,
    pub child_count: u32,
}

const SNAPSHOT_GET: &str = "rbd.snapshot_get reply";

impl SnapshotRecord {
    /// Decodes a `snapshot_get` reply.
    pub fn decode(reply: &[u8]) -> Result<SnapshotRecord, FormatError> {
        let mut d = Decoder::new(reply, SNAPSHOT_GET);
        let (_, mut s) = d.versioned(1)?;
        finish(&d, SNAPSHOT_GET)?;
        let id = s.u64()?;
        let namespace = SnapshotNamespace::decode(&mut s)?;
        let name = string(&mut s)?;
        let image_size = s.u64()?;
        let timestamp = Utime::decode(&mut s)?;
        let child_count = s.u32()?;
        if name.is_empty() {
            return Err(FormatError::invalid(SNAPSHOT_GET, "empty snapshot name"));
        }
        Ok(SnapshotRecord {
            id,
            namespace,
            name,
            image_size,
            timestamp,
            child_count,
        })
    }

    /// The `snapshot_get` reply for this record (for test doubles).
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        versioned(&mut e, 1, 1, |e| {
            e.u64(self.id);
            self.namespace.encode(e);
            e.string(&self.name).u64(self.image_size);
            self.timestamp.encode(e);
            e.u32(self.child_count);
        });
        e.finish()
    }
}

pub fn decode_snapshot_get(reply: &[u8]) -> Result<SnapshotRecord, FormatError> {
    SnapshotRecord::decode(reply)
}

/// `snapshot_add` input for a user snapshot: name, id, user namespace.
/// `snap_id` is a fresh self-managed snapshot id of the pool; the method
/// answers ESTALE when it is below the header's snap_seq and EEXIST when
/// the name or id is taken.
pub fn snapshot_add_input(snap_id: u64, name: &str) -> Vec<u8> {
    let mut e = Encoder::new();
    e.string(name).u64(snap_id);
    SnapshotNamespace::User.encode(&mut e);
    e.finish()
}

/// Reads a `snapshot_add` input back: (snap id, name, namespace).
pub fn decode_snapshot_add_input(
    input: &[u8],
) -> Result<(u64, String, SnapshotNamespace), FormatError> {
    const WHAT: &str = "rbd.snapshot_add input";
    let mut d = Decoder::new(input, WHAT);
    let name = string(&mut d)?;
    let id = d.u64()?;
    let ns = if d.is_empty() {
        SnapshotNamespace::User
    } else {
        SnapshotNamespace::decode(&mut d)?
    };
    finish(&d, WHAT)?;
    Ok((id, name, ns))
}

/// `snapshot_remove` input. The method refuses (EBUSY) a protected
/// snapshot or one with clone-v2 children.
pub fn snapshot_remove_input(snap_id: u64) -> Vec<u8> {
    u64_input(snap_id)
}

/// Protection of a snapshot against removal while clones depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtectionStatus {
    Unprotected = 0,
    Unprotecting = 1,
    Protected = 2,
}

/// `get_protection_status` reply (input: u64 snap id; EINVAL for NOSNAP).
pub fn decode_get_protection_status(reply: &[u8]) -> Result<ProtectionStatus, FormatError> {
    const WHAT: &str = "rbd.get_protection_status reply";
    let mut d = Decoder::new(reply, WHAT);
    let v = d.u8()?;
    finish(&d, WHAT)?;
    match v {
        0 => Ok(ProtectionStatus::Unprotected),
        1 => Ok(ProtectionStatus::Unprotecting),
        2 => Ok(ProtectionStatus::Protected),
        v => Err(FormatError::invalid(WHAT, format!("protection status {v}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{hex, mutate, mutations, noise};
    use super::*;
    use proptest::prelude::*;

    fn user_snap() -> SnapshotRecord {
        SnapshotRecord {
            id: 4,
            namespace: SnapshotNamespace::User,
            name: "s1".into(),
            image_size: 5 << 20,
            timestamp: Utime {
                sec: 0x6b06_f3a0,
                nsec: 0x224a_e081,
            },
            child_count: 0,
        }
    }

    #[test]
    fn layout() {
        let b = user_snap().encode();
        let want = hex("01 01 2c000000
             0400000000000000
             01 01 04000000 00000000
             02000000 7331
             0000500000000000
             a0f3066b 81e04a22
             00000000");
        assert_eq!(b, want);
        assert_eq!(SnapshotRecord::decode(&b).unwrap(), user_snap());
    }

    #[test]
    fn namespaces() {
        let trash = SnapshotRecord {
            namespace: SnapshotNamespace::Trash {
                original_name: "gone".into(),
                original_type: SNAP_NAMESPACE_USER,
            },
            name: "1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
            child_count: 1,
            ..user_snap()
        };
        let got = SnapshotRecord::decode(&trash.encode()).unwrap();
        assert_eq!(got, trash);
        assert_eq!(got.namespace.type_name(), "trash");
        assert!(!got.namespace.is_user());

        // A mirror namespace's payload is skipped by the section length.
        let mirror = hex("01 01 31000000 0700000000000000
             01 01 09000000 03000000 01 00000000
             02000000 6d31 0000100000000000 0100000002000000 00000000");
        let got = SnapshotRecord::decode(&mirror).unwrap();
        assert_eq!(got.namespace, SnapshotNamespace::Mirror);
        assert_eq!(got.name, "m1");
        assert_eq!(got.image_size, 1 << 20);

        let unknown = SnapshotRecord {
            namespace: SnapshotNamespace::Unknown(9),
            ..user_snap()
        };
        assert_eq!(
            SnapshotRecord::decode(&unknown.encode())
                .unwrap()
                .namespace
                .type_name(),
            "unknown"
        );
    }

    #[test]
    fn snapshot_add_is_name_then_id() {
        let b = snapshot_add_input(9, "s1");
        assert_eq!(
            b,
            hex("02000000 7331 0900000000000000 01 01 04000000 00000000")
        );
        assert_eq!(
            decode_snapshot_add_input(&b).unwrap(),
            (9, "s1".to_string(), SnapshotNamespace::User)
        );
        assert_eq!(snapshot_remove_input(9), hex("0900000000000000"));
    }

    #[test]
    fn protection() {
        assert_eq!(
            decode_get_protection_status(&[2]).unwrap(),
            ProtectionStatus::Protected
        );
        assert_eq!(
            decode_get_protection_status(&[0]).unwrap(),
            ProtectionStatus::Unprotected
        );
        assert!(decode_get_protection_status(&[3]).is_err());
        assert!(decode_get_protection_status(&[0, 0]).is_err());
    }

    fn arb_ns() -> impl Strategy<Value = SnapshotNamespace> {
        prop_oneof![
            Just(SnapshotNamespace::User),
            Just(SnapshotNamespace::Mirror),
            (4u32..).prop_map(SnapshotNamespace::Unknown),
            (any::<i64>(), "[a-z0-9]{0,12}", "[a-z0-9]{0,12}").prop_map(
                |(pool, group_id, group_snapshot_id)| {
                    SnapshotNamespace::Group {
                        pool,
                        group_id,
                        group_snapshot_id,
                    }
                }
            ),
            (".{0,12}", any::<u32>()).prop_map(|(original_name, original_type)| {
                SnapshotNamespace::Trash {
                    original_name,
                    original_type,
                }
            }),
        ]
    }

    fn arb_record() -> impl Strategy<Value = SnapshotRecord> {
        (
            any::<u64>(),
            arb_ns(),
            ".{1,30}",
            any::<u64>(),
            any::<(u32, u32)>(),
            any::<u32>(),
        )
            .prop_map(
                |(id, namespace, name, image_size, (sec, nsec), child_count)| SnapshotRecord {
                    id,
                    namespace,
                    name,
                    image_size,
                    timestamp: Utime { sec, nsec },
                    child_count,
                },
            )
    }

    proptest! {
        #[test]
        fn round_trips(r in arb_record(), id: u64, name in ".{1,30}") {
            prop_assert_eq!(SnapshotRecord::decode(&r.encode()).unwrap(), r);
            let got = decode_snapshot_add_input(&snapshot_add_input(id, &name)).unwrap();
            prop_assert_eq!(got, (id, name, SnapshotNamespace::User));
        }

        #[test]
        fn never_panics_on_mutations(r in arb_record(), m in mutations(), id: u64, m2 in mutations()) {
            let _ = SnapshotRecord::decode(&mutate(r.encode(), m));
            let _ = decode_snapshot_add_input(&mutate(snapshot_add_input(id, "x"), m2));
        }

        #[test]
        fn never_panics_on_noise(b in noise()) {
            let _ = SnapshotRecord::decode(&b);
            let _ = decode_snapshot_add_input(&b);
            let _ = decode_get_protection_status(&b);
        }
    }
}
