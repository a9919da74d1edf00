//! The directory and header methods of the `rbd` class.
//!
//! | method (object) | input | reply |
//! |---|---|---|
//! | `dir_list` (`rbd_directory`) | string start_after, u64 max_return | u32 count × (string name, string id), sorted by name |
//! | `dir_get_id` (`rbd_directory`) | string name | string id |
//! | `get_size` | u64 snap id | u8 order, u64 size |
//! | `get_features` | u64 snap id (ignored; librbd sends NOSNAP), u8 read_only | u64 features, u64 incompatible |
//! | `get_object_prefix` | – | string |
//! | `get_snapcontext` | – | u64 seq, u32 count × u64 ids, newest first |
//! | `get_stripe_unit_count` | – | u64 unit, u64 count (ENOEXEC without the striping feature) |
//! | `get_data_pool` | – | s64 pool id, -1 = none |
//! | `get_flags` | u64 snap id | u64 flags |
//! | `parent_get` | – | versioned(1,1) ParentImageSpec: s64 pool, string namespace, string image id, u64 snap id |
//! | `parent_overlap_get` | u64 snap id | optional u64 |
//! | `get_parent` (pre-Nautilus) | u64 snap id | s64 pool, string image id, u64 snap id, u64 overlap (EXDEV for a parent in a pool namespace) |
//!
//! Methods marked "–" take an empty input.

use super::{CEPH_NOSNAP, finish, optional_u64, string, u64_input, versioned};
use crate::format::SnapContext;
use crate::format::decode::{Decoder, Encoder};
use crate::format::{FormatError, MAX_ORDER, MAX_SNAPSHOTS, MIN_ORDER};

// ---------------------------------------------------------------------------
// rbd_directory
// ---------------------------------------------------------------------------

/// `dir_list` input. `start_after` is the last name of the previous page
/// (empty for the first); the raw bytes, since a name need not be UTF-8.
pub fn dir_list_input(start_after: &[u8], max_return: u64) -> Vec<u8> {
    let mut e = Encoder::new();
    e.blob(start_after).u64(max_return);
    e.finish()
}

/// One `dir_list` entry. Kept as bytes: one image with a name that is not
/// UTF-8 must not make the whole listing fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub id: Vec<u8>,
}

impl DirEntry {
    pub fn name_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.name).ok()
    }
    pub fn id_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.id).ok()
    }
}

const DIR_LIST: &str = "rbd.dir_list reply";

pub fn decode_dir_list(reply: &[u8]) -> Result<Vec<DirEntry>, FormatError> {
    let mut d = Decoder::new(reply, DIR_LIST);
    let n = d.count(8)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let name = d.blob()?.to_vec();
        let id = d.blob()?.to_vec();
        out.push(DirEntry { name, id });
    }
    finish(&d, DIR_LIST)?;
    Ok(out)
}

/// The reply `dir_list` would give for `entries` (for test doubles).
pub fn encode_dir_list_reply(entries: &[DirEntry]) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u32(entries.len() as u32);
    for x in entries {
        e.blob(&x.name).blob(&x.id);
    }
    e.finish()
}

/// The pool's namespace directory (`rbd namespace ls`), in the default
/// namespace: omap keys `name_NAMESPACE`.
pub const RBD_NAMESPACE: &str = "rbd_namespace";

/// `namespace_list` input: the name to list after, and how many at most.
pub fn namespace_list_input(start_after: &str, max_return: u64) -> Vec<u8> {
    let mut e = Encoder::new();
    e.string(start_after).u64(max_return);
    e.finish()
}

const NAMESPACE_LIST: &str = "rbd.namespace_list reply";

/// `namespace_list` reply: a list of names, kept as bytes (one name that
/// is not UTF-8 must not make the whole listing fail).
pub fn decode_namespace_list(reply: &[u8]) -> Result<Vec<Vec<u8>>, FormatError> {
    let mut d = Decoder::new(reply, NAMESPACE_LIST);
    let n = d.count(4)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(d.blob()?.to_vec());
    }
    finish(&d, NAMESPACE_LIST)?;
    Ok(out)
}

/// The reply `namespace_list` would give (for test doubles).
pub fn encode_namespace_list_reply(names: &[&str]) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u32(names.len() as u32);
    for n in names {
        e.string(n);
    }
    e.finish()
}

/// `dir_get_id` input (and `dir_get_name`'s, with an id).
pub fn dir_get_id_input(name: &str) -> Vec<u8> {
    let mut e = Encoder::new();
    e.string(name);
    e.finish()
}

/// A reply (or object) that is exactly one string: `dir_get_id`,
/// `dir_get_name`, `get_object_prefix`, `get_id`, and the data of
/// `rbd_id.NAME`.
pub fn decode_string_reply(reply: &[u8], what: &'static str) -> Result<String, FormatError> {
    let mut d = Decoder::new(reply, what);
    let s = string(&mut d)?;
    finish(&d, what)?;
    Ok(s)
}

pub fn decode_dir_get_id(reply: &[u8]) -> Result<String, FormatError> {
    decode_string_reply(reply, "rbd.dir_get_id reply")
}

/// The data of `rbd_id.NAME`: the image id.
pub fn decode_id_object(data: &[u8]) -> Result<String, FormatError> {
    decode_string_reply(data, "rbd_id object")
}

pub fn encode_string_reply(s: &str) -> Vec<u8> {
    dir_get_id_input(s)
}

// ---------------------------------------------------------------------------
// Header methods
// ---------------------------------------------------------------------------

/// The input of the methods that take just a snap id: `get_size`,
/// `get_flags`, `parent_overlap_get`, `get_parent`, `snapshot_get`,
/// `get_protection_status`, `snapshot_remove`. [`CEPH_NOSNAP`] = head.
pub fn snap_id_input(snap_id: u64) -> Vec<u8> {
    u64_input(snap_id)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeInfo {
    pub order: u8,
    pub size: u64,
}

const GET_SIZE: &str = "rbd.get_size reply";

/// `get_size` reply; rejects orders outside what librbd accepts.
pub fn decode_get_size(reply: &[u8]) -> Result<SizeInfo, FormatError> {
    let mut d = Decoder::new(reply, GET_SIZE);
    let order = d.u8()?;
    let size = d.u64()?;
    finish(&d, GET_SIZE)?;
    if !(MIN_ORDER..=MAX_ORDER).contains(&order) {
        return Err(FormatError::invalid(
            GET_SIZE,
            format!("order {order} out of range"),
        ));
    }
    Ok(SizeInfo { order, size })
}

pub fn encode_get_size_reply(s: SizeInfo) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u8(s.order).u64(s.size);
    e.finish()
}

/// `get_features` input as librbd 16.2 sends it: NOSNAP, then read_only.
/// With read_only the reply's `incompatible` holds only the bits needed to
/// read; without, the bits needed to write.
pub fn get_features_input(read_only: bool) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u64(CEPH_NOSNAP).u8(read_only as u8);
    e.finish()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeaturesInfo {
    pub features: u64,
    /// The subset of `features` the OSD says a client must understand.
    pub incompatible: u64,
}

const GET_FEATURES: &str = "rbd.get_features reply";

pub fn decode_get_features(reply: &[u8]) -> Result<FeaturesInfo, FormatError> {
    let mut d = Decoder::new(reply, GET_FEATURES);
    let features = d.u64()?;
    let incompatible = d.u64()?;
    finish(&d, GET_FEATURES)?;
    Ok(FeaturesInfo {
        features,
        incompatible,
    })
}

pub fn encode_get_features_reply(f: FeaturesInfo) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u64(f.features).u64(f.incompatible);
    e.finish()
}

/// `get_object_prefix` reply, e.g. `rbd_data.101f39e781cb`. Must be a
/// plausible object-name prefix (non-empty, printable, no `/`).
pub fn decode_get_object_prefix(reply: &[u8]) -> Result<String, FormatError> {
    const WHAT: &str = "rbd.get_object_prefix reply";
    let s = decode_string_reply(reply, WHAT)?;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
        return Err(FormatError::invalid(
            WHAT,
            format!("bad object prefix {s:?}"),
        ));
    }
    Ok(s)
}

const GET_SNAPCONTEXT: &str = "rbd.get_snapcontext reply";

/// `get_snapcontext` reply: the context every write to the head carries.
/// Rejects contexts librados would refuse (ids not strictly descending, or
/// above seq) and more than [`MAX_SNAPSHOTS`] ids.
pub fn decode_get_snapcontext(reply: &[u8]) -> Result<SnapContext, FormatError> {
    let mut d = Decoder::new(reply, GET_SNAPCONTEXT);
    let seq = d.u64()?;
    let n = d.count(8)?;
    if n > MAX_SNAPSHOTS {
        return Err(FormatError::invalid(
            GET_SNAPCONTEXT,
            format!("{n} snapshots"),
        ));
    }
    let mut snaps = Vec::with_capacity(n);
    for _ in 0..n {
        snaps.push(d.u64()?);
    }
    finish(&d, GET_SNAPCONTEXT)?;
    let snapc = SnapContext { seq, snaps };
    if !snapc.is_valid() {
        return Err(FormatError::invalid(
            GET_SNAPCONTEXT,
            format!("invalid snap context {snapc:?}"),
        ));
    }
    Ok(snapc)
}

pub fn encode_get_snapcontext_reply(snapc: &SnapContext) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u64(snapc.seq).u32(snapc.snaps.len() as u32);
    for &s in &snapc.snaps {
        e.u64(s);
    }
    e.finish()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripeInfo {
    pub unit: u64,
    pub count: u64,
}

const GET_STRIPE: &str = "rbd.get_stripe_unit_count reply";

/// `get_stripe_unit_count` reply; both must be non-zero (whether they fit
/// the object size is the layout's business).
pub fn decode_get_stripe_unit_count(reply: &[u8]) -> Result<StripeInfo, FormatError> {
    let mut d = Decoder::new(reply, GET_STRIPE);
    let unit = d.u64()?;
    let count = d.u64()?;
    finish(&d, GET_STRIPE)?;
    if unit == 0 || count == 0 {
        return Err(FormatError::invalid(
            GET_STRIPE,
            format!("stripe unit {unit}, count {count}"),
        ));
    }
    Ok(StripeInfo { unit, count })
}

pub fn encode_get_stripe_unit_count_reply(s: StripeInfo) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u64(s.unit).u64(s.count);
    e.finish()
}

const GET_DATA_POOL: &str = "rbd.get_data_pool reply";

/// `get_data_pool` reply: `None` when the data lives in the header's pool.
pub fn decode_get_data_pool(reply: &[u8]) -> Result<Option<i64>, FormatError> {
    let mut d = Decoder::new(reply, GET_DATA_POOL);
    let pool = d.i64()?;
    finish(&d, GET_DATA_POOL)?;
    match pool {
        -1 => Ok(None),
        p if p >= 0 => Ok(Some(p)),
        p => Err(FormatError::invalid(GET_DATA_POOL, format!("pool id {p}"))),
    }
}

pub fn encode_get_data_pool_reply(pool: Option<i64>) -> Vec<u8> {
    pool.unwrap_or(-1).to_le_bytes().to_vec()
}

/// `get_flags` reply (see `FLAG_*`).
pub fn decode_get_flags(reply: &[u8]) -> Result<u64, FormatError> {
    const WHAT: &str = "rbd.get_flags reply";
    let mut d = Decoder::new(reply, WHAT);
    let flags = d.u64()?;
    finish(&d, WHAT)?;
    Ok(flags)
}

// ---------------------------------------------------------------------------
// Parent (clones)
// ---------------------------------------------------------------------------

/// The snapshot a clone was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentSpec {
    pub pool_id: i64,
    /// RADOS namespace inside that pool; empty for the default.
    pub pool_namespace: String,
    pub image_id: String,
    pub snap_id: u64,
}

const PARENT_GET: &str = "rbd.parent_get reply";

/// `parent_get` reply: `None` when the image is not a clone (pool -1).
/// Also `None` for a parent with an empty image id or NOSNAP snap id,
/// which librbd treats as "no parent" too.
pub fn decode_parent_get(reply: &[u8]) -> Result<Option<ParentSpec>, FormatError> {
    let mut d = Decoder::new(reply, PARENT_GET);
    let (_, mut s) = d.versioned(1)?;
    finish(&d, PARENT_GET)?;
    let pool_id = s.i64()?;
    let pool_namespace = string(&mut s)?;
    let image_id = string(&mut s)?;
    let snap_id = s.u64()?;
    if pool_id < -1 {
        return Err(FormatError::invalid(
            PARENT_GET,
            format!("pool id {pool_id}"),
        ));
    }
    if pool_id == -1 || image_id.is_empty() || snap_id == CEPH_NOSNAP {
        return Ok(None);
    }
    Ok(Some(ParentSpec {
        pool_id,
        pool_namespace,
        image_id,
        snap_id,
    }))
}

/// The reply `parent_get` gives for `parent` (None = no parent).
pub fn encode_parent_get_reply(parent: Option<&ParentSpec>) -> Vec<u8> {
    let mut e = Encoder::new();
    versioned(&mut e, 1, 1, |e| match parent {
        Some(p) => {
            e.u64(p.pool_id as u64)
                .string(&p.pool_namespace)
                .string(&p.image_id)
                .u64(p.snap_id);
        }
        None => {
            e.u64(-1i64 as u64).string("").string("").u64(CEPH_NOSNAP);
        }
    });
    e.finish()
}

const OVERLAP_GET: &str = "rbd.parent_overlap_get reply";

/// `parent_overlap_get` reply: how many bytes of the parent show through
/// at that snap id (head or snapshot); `None` when it has no parent.
pub fn decode_parent_overlap_get(reply: &[u8]) -> Result<Option<u64>, FormatError> {
    let mut d = Decoder::new(reply, OVERLAP_GET);
    let overlap = optional_u64(&mut d, OVERLAP_GET)?;
    finish(&d, OVERLAP_GET)?;
    Ok(overlap)
}

pub fn encode_parent_overlap_get_reply(overlap: Option<u64>) -> Vec<u8> {
    let mut e = Encoder::new();
    match overlap {
        Some(o) => e.u8(1).u64(o),
        None => e.u8(0),
    };
    e.finish()
}

const GET_PARENT: &str = "rbd.get_parent reply";

/// The older `get_parent` reply (parent in the default namespace only):
/// the spec and the overlap, or `None` (pool -1).
pub fn decode_get_parent(reply: &[u8]) -> Result<Option<(ParentSpec, u64)>, FormatError> {
    let mut d = Decoder::new(reply, GET_PARENT);
    let pool_id = d.i64()?;
    let image_id = string(&mut d)?;
    let snap_id = d.u64()?;
    let overlap = d.u64()?;
    finish(&d, GET_PARENT)?;
    if pool_id < -1 {
        return Err(FormatError::invalid(
            GET_PARENT,
            format!("pool id {pool_id}"),
        ));
    }
    if pool_id == -1 || image_id.is_empty() || snap_id == CEPH_NOSNAP {
        return Ok(None);
    }
    let spec = ParentSpec {
        pool_id,
        pool_namespace: String::new(),
        image_id,
        snap_id,
    };
    Ok(Some((spec, overlap)))
}

pub fn encode_get_parent_reply(parent: Option<(&ParentSpec, u64)>) -> Vec<u8> {
    let mut e = Encoder::new();
    match parent {
        Some((p, overlap)) => e
            .u64(p.pool_id as u64)
            .string(&p.image_id)
            .u64(p.snap_id)
            .u64(overlap),
        None => e.u64(-1i64 as u64).string("").u64(CEPH_NOSNAP).u64(0),
    };
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{hex, mutate, mutations, noise};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn namespace_list_round_trips() {
        let reply = encode_namespace_list_reply(&["a", "tenant-2"]);
        let names = decode_namespace_list(&reply).unwrap();
        assert_eq!(names, vec![b"a".to_vec(), b"tenant-2".to_vec()]);
        assert!(decode_namespace_list(&reply[..reply.len() - 1]).is_err());
        assert!(decode_namespace_list(&[0xff, 0xff, 0xff, 0x7f]).is_err());
        assert_eq!(
            namespace_list_input("x", 5),
            vec![1, 0, 0, 0, b'x', 5, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn documented_bytes() {
        // rbd-format.md: get_size of a 5 MiB image with order 22.
        assert_eq!(
            decode_get_size(&hex("16 0000500000000000")).unwrap(),
            SizeInfo {
                order: 22,
                size: 5 << 20
            }
        );
        // get_features: 0x3d / 0x3d, and 0x3d / 0x01 with read_only.
        assert_eq!(
            decode_get_features(&hex("3d00000000000000 3d00000000000000")).unwrap(),
            FeaturesInfo {
                features: 0x3d,
                incompatible: 0x3d
            }
        );
        assert_eq!(get_features_input(true), hex("feffffffffffffff 01"));
        // get_snapcontext: seq 4, one snapshot 4.
        assert_eq!(
            decode_get_snapcontext(&hex("0400000000000000 01000000 0400000000000000")).unwrap(),
            SnapContext {
                seq: 4,
                snaps: vec![4]
            }
        );
        // rbd_id.img2 holds the id; the directory maps the name to it.
        let id = hex("0c000000 313031663339653738316362");
        assert_eq!(decode_id_object(&id).unwrap(), "101f39e781cb");
        assert_eq!(decode_dir_get_id(&id).unwrap(), "101f39e781cb");
        assert_eq!(dir_get_id_input("img2"), hex("04000000 696d6732"));
        assert_eq!(snap_id_input(CEPH_NOSNAP), hex("feffffffffffffff"));
        assert_eq!(
            decode_get_data_pool(&hex("ffffffffffffffff")).unwrap(),
            None
        );
        assert_eq!(
            decode_get_data_pool(&hex("0300000000000000")).unwrap(),
            Some(3)
        );
        assert_eq!(dir_list_input(b"", 1024), hex("00000000 0004000000000000"));
    }

    #[test]
    fn rejects_bad_replies() {
        assert!(
            decode_get_size(&hex("40 0000500000000000")).is_err(),
            "order 64"
        );
        assert!(
            decode_get_size(&hex("16 0000500000000000 00")).is_err(),
            "trailing"
        );
        assert!(decode_get_size(&hex("16 00005000")).is_err(), "short");
        // Ascending ids or ids above seq are not a valid snap context.
        assert!(
            decode_get_snapcontext(&hex(
                "0900000000000000 02000000 0100000000000000 0200000000000000"
            ))
            .is_err()
        );
        assert!(
            decode_get_snapcontext(&hex("0100000000000000 01000000 0200000000000000")).is_err()
        );
        assert!(decode_get_snapcontext(&hex("0100000000000000 ffffffff")).is_err());
        assert!(decode_get_stripe_unit_count(&hex("0000000000000000 0100000000000000")).is_err());
        assert!(decode_get_data_pool(&hex("feffffffffffffff")).is_err());
        assert!(decode_get_object_prefix(&hex("00000000")).is_err());
        assert!(decode_get_object_prefix(&hex("03000000 612f62")).is_err());
        assert!(decode_parent_overlap_get(&hex("02")).is_err());
        assert!(decode_dir_list(&hex("05000000")).is_err());
        assert!(
            decode_id_object(&hex("02000000 ff00")).is_err(),
            "not UTF-8"
        );
    }

    #[test]
    fn dir_list_keeps_non_utf8_names() {
        let entries = vec![
            DirEntry {
                name: b"a".to_vec(),
                id: b"1".to_vec(),
            },
            DirEntry {
                name: vec![0xff, 0xfe],
                id: b"2".to_vec(),
            },
        ];
        let got = decode_dir_list(&encode_dir_list_reply(&entries)).unwrap();
        assert_eq!(got, entries);
        assert_eq!(got[0].name_str(), Some("a"));
        assert_eq!(got[1].name_str(), None);
        assert_eq!(got[1].id_str(), Some("2"));
    }

    #[test]
    fn parent_replies() {
        let p = ParentSpec {
            pool_id: 2,
            pool_namespace: "ns".into(),
            image_id: "abc".into(),
            snap_id: 9,
        };
        let b = encode_parent_get_reply(Some(&p));
        assert_eq!(
            b,
            hex("01 01 1d000000 0200000000000000 02000000 6e73 03000000 616263 0900000000000000")
        );
        assert_eq!(decode_parent_get(&b).unwrap(), Some(p.clone()));
        assert_eq!(
            decode_parent_get(&encode_parent_get_reply(None)).unwrap(),
            None
        );
        // A newer encoding with an extra field is still read.
        let newer = hex(
            "02 01 1e000000 0200000000000000 02000000 6e73 03000000 616263 0900000000000000 ff",
        );
        assert_eq!(decode_parent_get(&newer).unwrap(), Some(p.clone()));
        assert!(
            decode_parent_get(&hex("01 02 00000000")).is_err(),
            "compat 2"
        );

        assert_eq!(
            encode_parent_overlap_get_reply(Some(5)),
            hex("01 0500000000000000")
        );
        assert_eq!(decode_parent_overlap_get(&hex("00")).unwrap(), None);

        let legacy = Some((&p, 1u64 << 30));
        let got = decode_get_parent(&encode_get_parent_reply(legacy))
            .unwrap()
            .unwrap();
        assert_eq!(got.0.image_id, "abc");
        assert_eq!(got.0.pool_namespace, "");
        assert_eq!(got.1, 1 << 30);
        assert_eq!(
            decode_get_parent(&encode_get_parent_reply(None)).unwrap(),
            None
        );
    }

    fn arb_snapc() -> impl Strategy<Value = SnapContext> {
        proptest::collection::btree_set(1u64..1000, 0..10).prop_flat_map(|set| {
            let snaps: Vec<u64> = set.into_iter().rev().collect();
            let min = snaps.first().copied().unwrap_or(0);
            (min..2000).prop_map(move |seq| SnapContext {
                seq,
                snaps: snaps.clone(),
            })
        })
    }

    proptest! {
        #[test]
        fn round_trips(
            order in MIN_ORDER..=MAX_ORDER, size: u64, features: u64, incompatible: u64,
            snapc in arb_snapc(), unit in 1u64.., count in 1u64.., pool in proptest::option::of(0i64..),
            overlap: Option<u64>,
            names in proptest::collection::vec((any::<Vec<u8>>(), any::<Vec<u8>>()), 0..5),
            prefix in "rbd_data\\.[0-9a-f]{1,16}",
        ) {
            let s = SizeInfo { order, size };
            prop_assert_eq!(decode_get_size(&encode_get_size_reply(s)).unwrap(), s);
            let f = FeaturesInfo { features, incompatible };
            prop_assert_eq!(decode_get_features(&encode_get_features_reply(f)).unwrap(), f);
            prop_assert_eq!(decode_get_snapcontext(&encode_get_snapcontext_reply(&snapc)).unwrap(), snapc);
            let st = StripeInfo { unit, count };
            prop_assert_eq!(decode_get_stripe_unit_count(&encode_get_stripe_unit_count_reply(st)).unwrap(), st);
            prop_assert_eq!(decode_get_data_pool(&encode_get_data_pool_reply(pool)).unwrap(), pool);
            prop_assert_eq!(decode_parent_overlap_get(&encode_parent_overlap_get_reply(overlap)).unwrap(), overlap);
            let entries: Vec<DirEntry> = names.into_iter().map(|(name, id)| DirEntry { name, id }).collect();
            prop_assert_eq!(decode_dir_list(&encode_dir_list_reply(&entries)).unwrap(), entries);
            prop_assert_eq!(decode_get_object_prefix(&encode_string_reply(&prefix)).unwrap(), prefix);
        }

        #[test]
        fn parent_round_trips(pool_id in 0i64.., ns in "[a-z]{0,5}", id in "[0-9a-f]{1,16}", snap_id in 0u64..CEPH_NOSNAP, overlap: u64) {
            let p = ParentSpec { pool_id, pool_namespace: ns, image_id: id, snap_id };
            prop_assert_eq!(decode_parent_get(&encode_parent_get_reply(Some(&p))).unwrap(), Some(p.clone()));
            let legacy = ParentSpec { pool_namespace: String::new(), ..p };
            let got = decode_get_parent(&encode_get_parent_reply(Some((&legacy, overlap)))).unwrap();
            prop_assert_eq!(got, Some((legacy, overlap)));
        }

        #[test]
        fn never_panics_on_noise(b in noise()) {
            let _ = decode_dir_list(&b);
            let _ = decode_dir_get_id(&b);
            let _ = decode_id_object(&b);
            let _ = decode_get_size(&b);
            let _ = decode_get_features(&b);
            let _ = decode_get_object_prefix(&b);
            let _ = decode_get_snapcontext(&b);
            let _ = decode_get_stripe_unit_count(&b);
            let _ = decode_get_data_pool(&b);
            let _ = decode_get_flags(&b);
            let _ = decode_parent_get(&b);
            let _ = decode_parent_overlap_get(&b);
            let _ = decode_get_parent(&b);
        }

        #[test]
        fn never_panics_on_mutations(snapc in arb_snapc(), m in mutations(), m2 in mutations(), m3 in mutations()) {
            let _ = decode_get_snapcontext(&mutate(encode_get_snapcontext_reply(&snapc), m));
            let p = ParentSpec { pool_id: 1, pool_namespace: "n".into(), image_id: "x".into(), snap_id: 4 };
            let _ = decode_parent_get(&mutate(encode_parent_get_reply(Some(&p)), m2.clone()));
            let _ = decode_get_parent(&mutate(encode_get_parent_reply(Some((&p, 9))), m2));
            let entries = vec![DirEntry { name: b"img".to_vec(), id: b"10ab".to_vec() }; 3];
            let _ = decode_dir_list(&mutate(encode_dir_list_reply(&entries), m3));
        }
    }
}

// ---------------------------------------------------------------------------
// Image lifecycle (create, remove, rename, resize): method inputs
// ---------------------------------------------------------------------------
//
// | method (object) | input | reply |
// |---|---|---|
// | `create` (`rbd_header.ID`) | u64 size, u8 order, u64 features, string object prefix, s64 data pool (-1 = none) | – (EEXIST when the header has an object prefix already) |
// | `set_id` (`rbd_id.NAME`, must exist) | string id | – (EEXIST when the object is not empty) |
// | `dir_add_image` (`rbd_directory`) | string name, string id | – (EEXIST name taken, EBADF id taken) |
// | `dir_remove_image` (`rbd_directory`) | string name, string id | – (ENOENT, ESTALE on a mismatch) |
// | `dir_rename_image` (`rbd_directory`) | string src, string dest, string id | – (EEXIST dest taken) |
// | `set_size` | u64 size | – (shrinks the parent overlap too) |
// | `set_stripe_unit_count` | u64 unit, u64 count | – |
// | `get_all_features` (`rbd_directory`) | – | u64 features the OSD supports |
// | `op_features_get` | – | u64 op features |
// | `child_detach` (parent's header) | u64 snap id, versioned (2, 1) ChildImageSpec: s64 pool, string image id, string namespace | – |
// | `remove_child` (`rbd_children`) | s64 parent pool, string parent id, u64 snap id, string child id | – |
// | `mirror_image_get` (`rbd_mirroring`) | string image id | ENOENT when mirroring is off for it |

/// `create` input as librbd 16.2 sends it (the data pool is always
/// encoded, -1 when none).
pub fn create_input(
    size: u64,
    order: u8,
    features: u64,
    object_prefix: &str,
    data_pool: Option<i64>,
) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u64(size)
        .u8(order)
        .u64(features)
        .string(object_prefix)
        .u64(data_pool.unwrap_or(-1) as u64);
    e.finish()
}

/// `set_id` input: the id as a string (also the data of `rbd_id.NAME`).
pub fn set_id_input(id: &str) -> Vec<u8> {
    dir_get_id_input(id)
}

/// `dir_add_image` / `dir_remove_image` input: name, id.
pub fn dir_image_input(name: &str, id: &str) -> Vec<u8> {
    let mut e = Encoder::new();
    e.string(name).string(id);
    e.finish()
}

/// `dir_rename_image` input: old name, new name, id.
pub fn dir_rename_image_input(src: &str, dest: &str, id: &str) -> Vec<u8> {
    let mut e = Encoder::new();
    e.string(src).string(dest).string(id);
    e.finish()
}

/// `set_size` input.
pub fn set_size_input(size: u64) -> Vec<u8> {
    u64_input(size)
}

/// `set_stripe_unit_count` input.
pub fn set_stripe_unit_count_input(unit: u64, count: u64) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u64(unit).u64(count);
    e.finish()
}

/// A reply that is exactly one u64: `get_all_features`, `op_features_get`.
pub fn decode_u64_reply(reply: &[u8], what: &'static str) -> Result<u64, FormatError> {
    let mut d = Decoder::new(reply, what);
    let v = d.u64()?;
    finish(&d, what)?;
    Ok(v)
}

/// Op features (`op_features_get`, under the `operations` feature).
pub const OP_FEATURE_CLONE_PARENT: u64 = 1 << 0;
pub const OP_FEATURE_CLONE_CHILD: u64 = 1 << 1;
pub const OP_FEATURE_GROUP: u64 = 1 << 2;
pub const OP_FEATURE_SNAP_TRASH: u64 = 1 << 3;

/// The pool's clone-v1 parent → children index.
pub const RBD_CHILDREN: &str = "rbd_children";
/// The pool's mirroring state.
pub const RBD_MIRRORING: &str = "rbd_mirroring";

/// `child_detach` input (on the parent's header): the parent snapshot and
/// the child (pool, image id, pool namespace).
pub fn child_detach_input(
    snap_id: u64,
    child_pool: i64,
    child_id: &str,
    child_namespace: &str,
) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u64(snap_id);
    versioned(&mut e, 2, 1, |e| {
        e.u64(child_pool as u64)
            .string(child_id)
            .string(child_namespace);
    });
    e.finish()
}

/// `remove_child` input (on `rbd_children` of the child's pool, clone v1).
pub fn remove_child_input(parent: &ParentSpec, child_id: &str) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u64(parent.pool_id as u64)
        .string(&parent.image_id)
        .u64(parent.snap_id)
        .string(child_id);
    e.finish()
}

#[cfg(test)]
mod lifecycle_input_tests {
    use super::super::testutil::hex;
    use super::*;

    #[test]
    fn inputs() {
        assert_eq!(
            create_input(1 << 20, 22, 0x3d, "rbd_data.ab", None),
            hex(
                "0000100000000000 16 3d00000000000000 0b000000 7262645f646174612e6162 ffffffffffffffff"
            )
        );
        assert_eq!(
            &create_input(1, 12, 0x81, "p", Some(3))[22..],
            &hex("0300000000000000")[..]
        );
        assert_eq!(set_id_input("ab"), hex("02000000 6162"));
        assert_eq!(dir_image_input("n", "i"), hex("01000000 6e 01000000 69"));
        assert_eq!(
            dir_rename_image_input("a", "b", "c"),
            hex("01000000 61 01000000 62 01000000 63")
        );
        assert_eq!(set_size_input(5), hex("0500000000000000"));
        assert_eq!(
            set_stripe_unit_count_input(65536, 4),
            hex("0000010000000000 0400000000000000")
        );
        assert_eq!(
            child_detach_input(4, 2, "ab", ""),
            hex("0400000000000000 02 01 12000000 0200000000000000 02000000 6162 00000000")
        );
        let parent = ParentSpec {
            pool_id: 2,
            pool_namespace: String::new(),
            image_id: "p".into(),
            snap_id: 7,
        };
        assert_eq!(
            remove_child_input(&parent, "c"),
            hex("0200000000000000 01000000 70 0700000000000000 01000000 63")
        );
        assert_eq!(
            decode_u64_reply(&hex("3d00000000000000"), "t").unwrap(),
            0x3d
        );
        assert!(decode_u64_reply(&hex("3d000000000000"), "t").is_err());
        assert!(decode_u64_reply(&hex("3d00000000000000 00"), "t").is_err());
    }
}
