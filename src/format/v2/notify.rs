//! Watch/notify payloads on `rbd_header.ID` (librbd's WatchNotifyTypes).
//!
//! A NotifyMessage is versioned (v, compat 1): u32 op, then the op's
//! payload. Pacific writes v = 7. Payloads of the lock ops are the sender's
//! ClientId (u64 gid, u64 handle) when v >= 2, and request-lock adds a u8
//! `force` when v >= 3. Header-update has no payload, and an *empty*
//! notification also means header-update (the legacy form).
//!
//! A ResponseMessage (the ack payload of a request-lock, and of the async
//! operations) is versioned (1, 1): s32 result.
//!
//! Pacific's `rbd snap create` also notifies op 18 (quiesce) before and 19
//! (unquiesce) after, payload AsyncRequestId (ClientId + u64 request id);
//! a watcher that acks them empty does not stop the snapshot (seen on
//! 16.2.15). They decode as [`NotifyMessage::Other`].

use super::{finish, versioned};
use crate::format::FormatError;
use crate::format::decode::{Decoder, Encoder};

pub const NOTIFY_OP_ACQUIRED_LOCK: u32 = 0;
pub const NOTIFY_OP_RELEASED_LOCK: u32 = 1;
pub const NOTIFY_OP_REQUEST_LOCK: u32 = 2;
pub const NOTIFY_OP_HEADER_UPDATE: u32 = 3;
pub const NOTIFY_OP_QUIESCE: u32 = 18;
pub const NOTIFY_OP_UNQUIESCE: u32 = 19;

/// The NotifyMessage version Pacific librbd writes.
pub const NOTIFY_MESSAGE_VERSION: u8 = 7;

/// A watcher: the client's global id and its watch handle (the cookie
/// `rados_watch2` returned).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ClientId {
    pub gid: u64,
    pub handle: u64,
}

impl ClientId {
    fn decode(d: &mut Decoder<'_>) -> Result<ClientId, FormatError> {
        Ok(ClientId {
            gid: d.u64()?,
            handle: d.u64()?,
        })
    }

    fn encode(&self, e: &mut Encoder) {
        e.u64(self.gid).u64(self.handle);
    }
}

/// A notification on the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyMessage {
    AcquiredLock(ClientId),
    ReleasedLock(ClientId),
    /// `force`: the requester wants the lock even from a busy owner
    /// (librbd's lock policy decides; the owner still answers with a
    /// ResponseMessage).
    RequestLock {
        client: ClientId,
        force: bool,
    },
    HeaderUpdate,
    /// Any other op (async operations: resize, snap create, ...). Its owner
    /// answers -EOPNOTSUPP (see [`response_message`]); others ack empty.
    Other(u32),
}

const WHAT: &str = "image notification";

impl NotifyMessage {
    pub fn op(&self) -> u32 {
        match self {
            NotifyMessage::AcquiredLock(_) => NOTIFY_OP_ACQUIRED_LOCK,
            NotifyMessage::ReleasedLock(_) => NOTIFY_OP_RELEASED_LOCK,
            NotifyMessage::RequestLock { .. } => NOTIFY_OP_REQUEST_LOCK,
            NotifyMessage::HeaderUpdate => NOTIFY_OP_HEADER_UPDATE,
            NotifyMessage::Other(op) => *op,
        }
    }

    /// Encodes as Pacific does (version 7). `Other` is written with an
    /// empty payload; rbdfs never sends one.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        versioned(&mut e, NOTIFY_MESSAGE_VERSION, 1, |e| {
            e.u32(self.op());
            match self {
                NotifyMessage::AcquiredLock(c) | NotifyMessage::ReleasedLock(c) => c.encode(e),
                NotifyMessage::RequestLock { client, force } => {
                    client.encode(e);
                    e.u8(*force as u8);
                }
                NotifyMessage::HeaderUpdate | NotifyMessage::Other(_) => {}
            }
        });
        e.finish()
    }

    /// Decodes a notification payload. Fields past what this code knows
    /// are skipped; a version-1 lock message (no ClientId) gives the
    /// default ClientId.
    pub fn decode(payload: &[u8]) -> Result<NotifyMessage, FormatError> {
        if payload.is_empty() {
            return Ok(NotifyMessage::HeaderUpdate);
        }
        let mut d = Decoder::new(payload, WHAT);
        let (version, mut s) = d.versioned(1)?;
        finish(&d, WHAT)?;
        let op = s.u32()?;
        let client = |s: &mut Decoder<'_>| {
            if version >= 2 {
                ClientId::decode(s)
            } else {
                Ok(ClientId::default())
            }
        };
        Ok(match op {
            NOTIFY_OP_ACQUIRED_LOCK => NotifyMessage::AcquiredLock(client(&mut s)?),
            NOTIFY_OP_RELEASED_LOCK => NotifyMessage::ReleasedLock(client(&mut s)?),
            NOTIFY_OP_REQUEST_LOCK => {
                let client = client(&mut s)?;
                let force = version >= 3 && s.u8()? != 0;
                NotifyMessage::RequestLock { client, force }
            }
            NOTIFY_OP_HEADER_UPDATE => NotifyMessage::HeaderUpdate,
            op => NotifyMessage::Other(op),
        })
    }
}

/// A ResponseMessage: 0 = "I will release the lock" / done, or -errno
/// (-EROFS: will not release; -EOPNOTSUPP: op not handled).
pub fn response_message(result: i32) -> Vec<u8> {
    let mut e = Encoder::new();
    versioned(&mut e, 1, 1, |e| {
        e.u32(result as u32);
    });
    e.finish()
}

/// The result in a ResponseMessage (an ack payload).
pub fn decode_response_message(payload: &[u8]) -> Result<i32, FormatError> {
    const W: &str = "notify response";
    let mut d = Decoder::new(payload, W);
    let (_, mut s) = d.versioned(1)?;
    finish(&d, W)?;
    s.i32()
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{hex, mutate, mutations, noise};
    use super::*;
    use proptest::prelude::*;

    const C: ClientId = ClientId {
        gid: 4321,
        handle: 140086666597536,
    };

    #[test]
    fn layouts() {
        assert_eq!(
            NotifyMessage::AcquiredLock(C).encode(),
            hex("07 01 14000000 00000000 e110000000000000 a0140078687f0000")
        );
        assert_eq!(
            NotifyMessage::RequestLock {
                client: C,
                force: false
            }
            .encode(),
            hex("07 01 15000000 02000000 e110000000000000 a0140078687f0000 00")
        );
        assert_eq!(
            NotifyMessage::HeaderUpdate.encode(),
            hex("07 01 04000000 03000000")
        );
        assert_eq!(response_message(0), hex("01 01 04000000 00000000"));
        assert_eq!(response_message(-30), hex("01 01 04000000 e2ffffff"));
        assert_eq!(
            decode_response_message(&response_message(-95)).unwrap(),
            -95
        );
    }

    #[test]
    fn decodes_older_and_newer_senders() {
        assert_eq!(
            NotifyMessage::decode(&[]).unwrap(),
            NotifyMessage::HeaderUpdate
        );
        // Version 2 (Jewel..Luminous): request-lock without force.
        let v2 = hex("02 01 14000000 02000000 e110000000000000 a0140078687f0000");
        assert_eq!(
            NotifyMessage::decode(&v2).unwrap(),
            NotifyMessage::RequestLock {
                client: C,
                force: false
            }
        );
        // Version 1: no ClientId.
        let v1 = hex("01 01 04000000 00000000");
        assert_eq!(
            NotifyMessage::decode(&v1).unwrap(),
            NotifyMessage::AcquiredLock(ClientId::default())
        );
        // A future version with more fields.
        let v9 = hex("09 01 19000000 01000000 e110000000000000 a0140078687f0000 0102030405");
        assert_eq!(
            NotifyMessage::decode(&v9).unwrap(),
            NotifyMessage::ReleasedLock(C)
        );
        // Async ops (e.g. 7 = resize) are Other.
        let resize = hex("07 01 0c000000 07000000 0000000000000000");
        assert_eq!(
            NotifyMessage::decode(&resize).unwrap(),
            NotifyMessage::Other(7)
        );
        // compat 2 is beyond us; truncation and trailing bytes are errors.
        assert!(NotifyMessage::decode(&hex("07 02 04000000 03000000")).is_err());
        assert!(NotifyMessage::decode(&hex("07 01 08000000 00000000 e110")).is_err());
        assert!(NotifyMessage::decode(&hex("07 01 04000000 03000000 00")).is_err());
    }

    fn arb_msg() -> impl Strategy<Value = NotifyMessage> {
        let c = (any::<u64>(), any::<u64>()).prop_map(|(gid, handle)| ClientId { gid, handle });
        prop_oneof![
            c.clone().prop_map(NotifyMessage::AcquiredLock),
            c.clone().prop_map(NotifyMessage::ReleasedLock),
            (c, any::<bool>())
                .prop_map(|(client, force)| NotifyMessage::RequestLock { client, force }),
            Just(NotifyMessage::HeaderUpdate),
            (4u32..).prop_map(NotifyMessage::Other),
        ]
    }

    proptest! {
        #[test]
        fn round_trips(m in arb_msg(), r: i32) {
            prop_assert_eq!(NotifyMessage::decode(&m.encode()).unwrap(), m);
            prop_assert_eq!(decode_response_message(&response_message(r)).unwrap(), r);
        }

        #[test]
        fn never_panics_on_mutations(m in arb_msg(), muts in mutations(), r: i32, m2 in mutations()) {
            let _ = NotifyMessage::decode(&mutate(m.encode(), muts));
            let _ = decode_response_message(&mutate(response_message(r), m2));
        }

        #[test]
        fn never_panics_on_noise(b in noise()) {
            let _ = NotifyMessage::decode(&b);
            let _ = decode_response_message(&b);
        }
    }
}
