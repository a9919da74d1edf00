//! Inputs and replies of the `rbd` class methods behind snapshot rename,
//! protection, clones (v1 and v2) and flatten (`cls_rbd.cc`,
//! `cls_rbd_client.cc`, Pacific).

use super::{ParentSpec, finish, string, u64_input, versioned};
use crate::format::FormatError;
use crate::format::decode::{Decoder, Encoder};

/// `snapshot_rename` (format 2) and `snap_rename` (format 1) input: the
/// snap id, then the new name. EEXIST when a user snapshot has the name,
/// ENOENT when the id is unknown.
pub fn snapshot_rename_input(snap_id: u64, new_name: &str) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u64(snap_id).string(new_name);
    e.finish()
}

/// `set_protection_status` input: snap id, u8 status (0 unprotected, 1
/// unprotecting, 2 protected). ENOEXEC on an image without layering.
pub fn set_protection_status_input(snap_id: u64, status: u8) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u64(snap_id).u8(status);
    e.finish()
}

/// The parent key of `rbd_children` methods (clone v1): pool id, image id,
/// snap id, without namespace (v1 clones cannot cross namespaces).
fn v1_parent(e: &mut Encoder, parent: &ParentSpec) {
    e.u64(parent.pool_id as u64)
        .string(&parent.image_id)
        .u64(parent.snap_id);
}

/// `add_child` input on `rbd_children` (clone v1); same bytes as
/// `remove_child`.
pub fn add_child_input(parent: &ParentSpec, child_id: &str) -> Vec<u8> {
    let mut e = Encoder::new();
    v1_parent(&mut e, parent);
    e.string(child_id);
    e.finish()
}

/// `get_children` input on `rbd_children`: the parent snapshot.
pub fn get_children_input(parent: &ParentSpec) -> Vec<u8> {
    let mut e = Encoder::new();
    v1_parent(&mut e, parent);
    e.finish()
}

/// Children of a v1 parent: more than this in one reply is corrupt.
pub const MAX_CHILDREN: usize = 1 << 20;

/// `get_children` reply: `set<string>` of child image ids (ENOENT from
/// the method means none).
pub fn decode_get_children(reply: &[u8]) -> Result<Vec<String>, FormatError> {
    const WHAT: &str = "rbd.get_children reply";
    let mut d = Decoder::new(reply, WHAT);
    let n = d.count(4)?;
    if n > MAX_CHILDREN {
        return Err(FormatError::invalid(WHAT, format!("{n} children")));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(string(&mut d)?);
    }
    finish(&d, WHAT)?;
    Ok(out)
}

/// Encodes a `get_children` reply (for test doubles).
pub fn encode_get_children_reply(children: &[String]) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u32(children.len() as u32);
    for c in children {
        e.string(c);
    }
    e.finish()
}

/// `parent_attach` input on the child's header: the versioned
/// ParentImageSpec, the overlap, and whether to replace a parent.
pub fn parent_attach_input(parent: &ParentSpec, overlap: u64, reattach: bool) -> Vec<u8> {
    let mut e = Encoder::new();
    versioned(&mut e, 1, 1, |e| {
        e.u64(parent.pool_id as u64)
            .string(&parent.pool_namespace)
            .string(&parent.image_id)
            .u64(parent.snap_id);
    });
    e.u64(overlap).u8(reattach as u8);
    e.finish()
}

/// `op_features_set` input: the op feature bits, and which bits to change.
pub fn op_features_set_input(op_features: u64, mask: u64) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u64(op_features).u64(mask);
    e.finish()
}

/// `child_attach` input on the parent's header (clone v2): the same bytes
/// as `child_detach`.
pub fn child_attach_input(
    snap_id: u64,
    child_pool: i64,
    child_id: &str,
    child_namespace: &str,
) -> Vec<u8> {
    super::child_detach_input(snap_id, child_pool, child_id, child_namespace)
}

/// `children_list` input: the parent snap id.
pub fn children_list_input(snap_id: u64) -> Vec<u8> {
    u64_input(snap_id)
}

/// `rbd_default_clone_format` and the cluster's compat client: which
/// clone format `rbd clone` makes. `setting` is the option's value
/// ("1", "2" or "auto"); `min_compat` the larger of the cluster's
/// minimum and required-minimum compatible client release (mimic = 13).
pub fn clone_format(setting: &str, min_compat: i8) -> u8 {
    const MIMIC: i8 = 13;
    match setting.trim() {
        "1" => 1,
        "2" => 2,
        _ if min_compat < MIMIC => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::hex;
    use super::*;
    use proptest::prelude::*;

    fn spec() -> ParentSpec {
        ParentSpec {
            pool_id: 2,
            pool_namespace: String::new(),
            image_id: "p".into(),
            snap_id: 7,
        }
    }

    #[test]
    fn inputs() {
        assert_eq!(
            snapshot_rename_input(4, "b"),
            hex("0400000000000000 01000000 62")
        );
        assert_eq!(
            set_protection_status_input(4, 2),
            hex("0400000000000000 02")
        );
        assert_eq!(
            add_child_input(&spec(), "c"),
            super::super::remove_child_input(&spec(), "c")
        );
        assert_eq!(
            get_children_input(&spec()),
            hex("0200000000000000 01000000 70 0700000000000000")
        );
        assert_eq!(
            parent_attach_input(&spec(), 5, false),
            hex(
                "01 01 19000000 0200000000000000 00000000 01000000 70 0700000000000000 0500000000000000 00"
            )
        );
        assert_eq!(
            op_features_set_input(2, 2),
            hex("0200000000000000 0200000000000000")
        );
    }

    #[test]
    fn children_round_trip() {
        let c = vec!["a".to_string(), "bc".to_string()];
        assert_eq!(
            decode_get_children(&encode_get_children_reply(&c)).unwrap(),
            c
        );
        assert!(decode_get_children(&hex("ffffffff")).is_err());
        assert!(decode_get_children(&hex("01000000 02000000 61")).is_err());
        assert!(decode_get_children(&hex("00000000 00")).is_err());
    }

    #[test]
    fn clone_formats() {
        assert_eq!(clone_format("auto", 12), 1);
        assert_eq!(clone_format("auto", 13), 2);
        assert_eq!(clone_format("auto", 16), 2);
        assert_eq!(clone_format("1", 16), 1);
        assert_eq!(clone_format("2", 1), 2);
    }

    proptest! {
        #[test]
        fn children_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_get_children(&b);
        }
    }
}
