//! Object names, class names and the feature bits of format-2 images.

use super::CEPH_NOSNAP;

/// The object class of the image methods, and of the lock methods.
pub const RBD_CLASS: &str = "rbd";
pub const LOCK_CLASS: &str = "lock";

/// The pool's image directory (format-2 names live in its omap).
pub const RBD_DIRECTORY: &str = "rbd_directory";
pub const ID_OBJECT_PREFIX: &str = "rbd_id.";
pub const HEADER_OBJECT_PREFIX: &str = "rbd_header.";
pub const OBJECT_MAP_OBJECT_PREFIX: &str = "rbd_object_map.";

/// `rbd_id.NAME`: holds the image id.
pub fn id_object(image_name: &str) -> String {
    format!("{ID_OBJECT_PREFIX}{image_name}")
}

/// `rbd_header.ID`: the header (omap), the exclusive lock, the watch.
pub fn header_object(image_id: &str) -> String {
    format!("{HEADER_OBJECT_PREFIX}{image_id}")
}

/// `rbd_object_map.ID` for the head ([`CEPH_NOSNAP`]), or
/// `rbd_object_map.ID.<snap id, 16 lowercase hex>` for a snapshot.
pub fn object_map_object(image_id: &str, snap_id: u64) -> String {
    if snap_id == CEPH_NOSNAP {
        format!("{OBJECT_MAP_OBJECT_PREFIX}{image_id}")
    } else {
        format!("{OBJECT_MAP_OBJECT_PREFIX}{image_id}.{snap_id:016x}")
    }
}

/// Data object `object_no`: `<object_prefix>.<16 lowercase hex digits>`.
pub fn data_object(object_prefix: &str, object_no: u64) -> String {
    format!("{object_prefix}.{object_no:016x}")
}

// Feature bits (include/rbd/features.h, Pacific).
pub const FEATURE_LAYERING: u64 = 1 << 0;
pub const FEATURE_STRIPINGV2: u64 = 1 << 1;
pub const FEATURE_EXCLUSIVE_LOCK: u64 = 1 << 2;
pub const FEATURE_OBJECT_MAP: u64 = 1 << 3;
pub const FEATURE_FAST_DIFF: u64 = 1 << 4;
pub const FEATURE_DEEP_FLATTEN: u64 = 1 << 5;
pub const FEATURE_JOURNALING: u64 = 1 << 6;
pub const FEATURE_DATA_POOL: u64 = 1 << 7;
pub const FEATURE_OPERATIONS: u64 = 1 << 8;
pub const FEATURE_MIGRATING: u64 = 1 << 9;
pub const FEATURE_NON_PRIMARY: u64 = 1 << 10;
pub const FEATURE_DIRTY_CACHE: u64 = 1 << 11;

/// Every bit Pacific defines.
pub const KNOWN_FEATURES: u64 = (1 << 12) - 1;

/// Bits a client must understand to open the image at all (Ceph's
/// RBD_FEATURES_INCOMPATIBLE).
pub const FEATURES_INCOMPATIBLE: u64 =
    FEATURE_LAYERING | FEATURE_STRIPINGV2 | FEATURE_DATA_POOL | FEATURE_DIRTY_CACHE;

/// Bits a client must understand to write the image (Ceph's
/// RBD_FEATURES_RW_INCOMPATIBLE): in Pacific, every known bit.
pub const FEATURES_RW_INCOMPATIBLE: u64 = KNOWN_FEATURES;

/// Names as `rbd info` prints them, lowest bit first.
const FEATURE_NAMES: [(u64, &str); 12] = [
    (FEATURE_LAYERING, "layering"),
    (FEATURE_STRIPINGV2, "striping"),
    (FEATURE_EXCLUSIVE_LOCK, "exclusive-lock"),
    (FEATURE_OBJECT_MAP, "object-map"),
    (FEATURE_FAST_DIFF, "fast-diff"),
    (FEATURE_DEEP_FLATTEN, "deep-flatten"),
    (FEATURE_JOURNALING, "journaling"),
    (FEATURE_DATA_POOL, "data-pool"),
    (FEATURE_OPERATIONS, "operations"),
    (FEATURE_MIGRATING, "migrating"),
    (FEATURE_NON_PRIMARY, "non-primary"),
    (FEATURE_DIRTY_CACHE, "dirty-cache"),
];

/// The names of the known bits set in `features`, as `rbd info` lists them.
pub fn feature_names(features: u64) -> Vec<&'static str> {
    FEATURE_NAMES
        .iter()
        .filter(|(bit, _)| features & bit != 0)
        .map(|&(_, name)| name)
        .collect()
}

/// What a client that implements the features in `supported` may do with
/// an image whose feature bits are `features`. Each field holds the
/// offending bits (0 = allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureCheck {
    /// Bits that forbid opening the image: unsupported bits of
    /// [`FEATURES_INCOMPATIBLE`] and unknown bits.
    pub unreadable: u64,
    /// Bits that forbid writing it: every unsupported bit (in Pacific every
    /// known bit is write-incompatible, and unknown bits count as both).
    pub unwritable: u64,
}

impl FeatureCheck {
    pub fn can_read(&self) -> bool {
        self.unreadable == 0
    }
    pub fn can_write(&self) -> bool {
        self.unreadable == 0 && self.unwritable == 0
    }
}

/// Unknown bits are never supported, whatever `supported` says.
pub fn classify_features(features: u64, supported: u64) -> FeatureCheck {
    let missing = features & !(supported & KNOWN_FEATURES);
    FeatureCheck {
        unreadable: missing & (FEATURES_INCOMPATIBLE | !KNOWN_FEATURES),
        unwritable: missing & (FEATURES_RW_INCOMPATIBLE | !KNOWN_FEATURES),
    }
}

/// Image flags (`get_flags`): the object map / fast-diff data cannot be
/// trusted and must be rebuilt before use.
pub const FLAG_OBJECT_MAP_INVALID: u64 = 1 << 0;
pub const FLAG_FAST_DIFF_INVALID: u64 = 1 << 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names() {
        assert_eq!(id_object("img2"), "rbd_id.img2");
        assert_eq!(header_object("101f39e781cb"), "rbd_header.101f39e781cb");
        assert_eq!(
            object_map_object("101f39e781cb", CEPH_NOSNAP),
            "rbd_object_map.101f39e781cb"
        );
        assert_eq!(
            object_map_object("101f39e781cb", 0x2a),
            "rbd_object_map.101f39e781cb.000000000000002a"
        );
        assert_eq!(
            data_object("rbd_data.101f39e781cb", 0x1234),
            "rbd_data.101f39e781cb.0000000000001234"
        );
        assert_eq!(
            data_object("rbd_data.x", u64::MAX),
            "rbd_data.x.ffffffffffffffff"
        );
    }

    #[test]
    fn pacific_default_features() {
        // Pacific's default: layering, exclusive-lock, object-map,
        // fast-diff, deep-flatten.
        assert_eq!(
            feature_names(0x3d),
            [
                "layering",
                "exclusive-lock",
                "object-map",
                "fast-diff",
                "deep-flatten"
            ]
        );
        // get_features on such an image answers 0x3d incompatible for
        // writing and 0x01 for reading (rbd-format.md).
        assert_eq!(0x3d & FEATURES_RW_INCOMPATIBLE, 0x3d);
        assert_eq!(0x3d & FEATURES_INCOMPATIBLE, 0x01);
        assert_eq!(feature_names(1 << 40), Vec::<&str>::new());
    }

    #[test]
    fn classification() {
        let reads_only = FEATURE_LAYERING | FEATURE_STRIPINGV2 | FEATURE_DATA_POOL;
        let c = classify_features(0x3d, reads_only);
        assert!(c.can_read());
        assert!(!c.can_write());
        assert_eq!(c.unwritable, 0x3c);

        let c = classify_features(FEATURE_LAYERING | FEATURE_DIRTY_CACHE, reads_only);
        assert_eq!(c.unreadable, FEATURE_DIRTY_CACHE);

        let c = classify_features(1 << 20, u64::MAX);
        assert!(!c.can_read() && !c.can_write(), "unknown bits forbid both");

        let all = KNOWN_FEATURES;
        assert!(classify_features(all, all).can_write());
        assert!(classify_features(0, 0).can_write());
    }
}
