//! Feature policy, in one place: which RBD feature bits rbdfs reads,
//! writes and creates, the rules between bits, and named predicates for
//! the bits the image layer acts on. The bits themselves (and their
//! names, and which are incompatible for readers or writers) are the
//! format's: [`crate::format::v2`].
//!
//! - **Read**: layering (clone parents), striping v2, data pool. An image
//!   with any other *incompatible* bit (or an unknown one) is refused.
//! - **Write**: those, plus exclusive-lock, object-map, fast-diff,
//!   deep-flatten, and `operations` when every op feature under it is
//!   one we know. An image with another read-write-incompatible bit (or
//!   an unknown one) is served read-only, saying which.
//! - **Create**: layering, exclusive-lock, object-map, fast-diff,
//!   deep-flatten by choice; striping v2 and data pool follow from the
//!   options; journaling is refused (we cannot make a journal); the
//!   internal bits (`operations`, ...) cannot be asked for.
//! - **Rules** ([`FEATURE_DEPENDENCIES`]): fast-diff needs object-map,
//!   object-map needs exclusive-lock, journaling needs exclusive-lock.
//!   At creation object-map brings fast-diff along, as librbd does.

use crate::format::v2::{
    FEATURE_DATA_POOL, FEATURE_DEEP_FLATTEN, FEATURE_EXCLUSIVE_LOCK, FEATURE_FAST_DIFF,
    FEATURE_JOURNALING, FEATURE_LAYERING, FEATURE_MIGRATING, FEATURE_OBJECT_MAP,
    FEATURE_OPERATIONS, FEATURE_STRIPINGV2, OP_FEATURE_CLONE_CHILD, OP_FEATURE_CLONE_PARENT,
    OP_FEATURE_GROUP, OP_FEATURE_SNAP_TRASH, classify_features, feature_names,
};

/// Feature bits this build implements for reading.
pub const READ_FEATURES: u64 = FEATURE_LAYERING | FEATURE_STRIPINGV2 | FEATURE_DATA_POOL;

/// Feature bits this build implements for writing (`operations` comes on
/// top when its op features are known, see [`writable_features`]).
pub const WRITE_FEATURES: u64 = FEATURE_LAYERING
    | FEATURE_STRIPINGV2
    | FEATURE_DATA_POOL
    | FEATURE_EXCLUSIVE_LOCK
    | FEATURE_OBJECT_MAP
    | FEATURE_FAST_DIFF
    | FEATURE_DEEP_FLATTEN;

/// Op features (under the `operations` feature) whose meaning for a
/// writer we know.
pub const KNOWN_OP_FEATURES: u64 =
    OP_FEATURE_CLONE_PARENT | OP_FEATURE_CLONE_CHILD | OP_FEATURE_GROUP | OP_FEATURE_SNAP_TRASH;

/// Pacific's `rbd_default_features`: layering, exclusive-lock, object-map,
/// fast-diff, deep-flatten (0x3d).
pub const DEFAULT_FEATURES: u64 = FEATURE_LAYERING
    | FEATURE_EXCLUSIVE_LOCK
    | FEATURE_OBJECT_MAP
    | FEATURE_FAST_DIFF
    | FEATURE_DEEP_FLATTEN;

/// Features a new image may ask for. Striping and data-pool are derived
/// from the options (as librbd does); journaling is refused (we cannot
/// create a journal), the rest are internal.
pub const CREATABLE_FEATURES: u64 = FEATURE_LAYERING
    | FEATURE_STRIPINGV2
    | FEATURE_EXCLUSIVE_LOCK
    | FEATURE_OBJECT_MAP
    | FEATURE_FAST_DIFF
    | FEATURE_DEEP_FLATTEN
    | FEATURE_DATA_POOL;

/// A rule between bits: `feature` needs `requires`; `message` is what
/// creation answers when it is broken (librbd's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureRule {
    pub feature: u64,
    pub requires: u64,
    pub message: &'static str,
}

/// The dependencies between feature bits, in the order creation checks
/// them.
pub const FEATURE_DEPENDENCIES: &[FeatureRule] = &[
    FeatureRule {
        feature: FEATURE_FAST_DIFF,
        requires: FEATURE_OBJECT_MAP,
        message: "cannot use fast diff without object map",
    },
    FeatureRule {
        feature: FEATURE_OBJECT_MAP,
        requires: FEATURE_EXCLUSIVE_LOCK,
        message: "cannot use object map without exclusive lock",
    },
    FeatureRule {
        feature: FEATURE_JOURNALING,
        requires: FEATURE_EXCLUSIVE_LOCK,
        message: "cannot use journaling without exclusive lock",
    },
];

/// The first dependency `features` breaks.
pub fn broken_dependency(features: u64) -> Option<&'static FeatureRule> {
    FEATURE_DEPENDENCIES
        .iter()
        .find(|r| features & r.feature != 0 && features & r.requires == 0)
}

/// Clone parents (`parent_get`) may be involved.
pub fn has_layering(features: u64) -> bool {
    features & FEATURE_LAYERING != 0
}

/// The image has its own striping (`get_stripe_unit_count`).
pub fn has_striping(features: u64) -> bool {
    features & FEATURE_STRIPINGV2 != 0
}

/// Data objects live in another pool (`get_data_pool`).
pub fn has_data_pool(features: u64) -> bool {
    features & FEATURE_DATA_POOL != 0
}

/// The image has the exclusive-lock feature: object writes and header
/// changes are made by the lock's owner only.
pub fn needs_lock(features: u64) -> bool {
    features & FEATURE_EXCLUSIVE_LOCK != 0
}

/// The head (and each snapshot) has an object map to keep true.
pub fn has_object_map(features: u64) -> bool {
    features & FEATURE_OBJECT_MAP != 0
}

/// The object map also tracks exists-clean, which snapshots change.
pub fn has_fast_diff(features: u64) -> bool {
    features & FEATURE_FAST_DIFF != 0
}

/// The `operations` bit guards op features (clone v2, groups, snapshot
/// trash: `op_features_get`).
pub fn has_operations(features: u64) -> bool {
    features & FEATURE_OPERATIONS != 0
}

/// Deep-flatten: flattening a clone also detaches its snapshots from the
/// parent.
pub fn has_deep_flatten(features: u64) -> bool {
    features & FEATURE_DEEP_FLATTEN != 0
}

/// The image is being migrated (live migration's source or target).
pub fn is_migrating(features: u64) -> bool {
    features & FEATURE_MIGRATING != 0
}

/// Whether every op feature in `op_features` is one we know.
pub fn op_features_known(op_features: u64) -> bool {
    op_features & !KNOWN_OP_FEATURES == 0
}

/// What we can write: [`WRITE_FEATURES`], plus `operations` when its op
/// features (`None`: not read, the bit being off) are all known.
pub fn writable_features(op_features: Option<u64>) -> u64 {
    match op_features {
        Some(op) if op_features_known(op) => WRITE_FEATURES | FEATURE_OPERATIONS,
        _ => WRITE_FEATURES,
    }
}

/// Why an image with `features` (with its incompatible bits) cannot be
/// opened at all, if it cannot.
pub fn unreadable_reason(features: u64) -> Option<String> {
    let unreadable = classify_features(features, READ_FEATURES).unreadable;
    (unreadable != 0).then(|| {
        format!(
            "features {:?} (0x{unreadable:x}) are not implemented",
            feature_names(unreadable)
        )
    })
}

/// Why an image with `features` (with its incompatible bits) is served
/// read-only, if it is; `op_features` as for [`writable_features`].
pub fn read_only_reason(features: u64, op_features: Option<u64>) -> Option<String> {
    let unwritable = classify_features(features, writable_features(op_features)).unwritable;
    (unwritable != 0).then(|| {
        format!(
            "features {:?} (0x{unwritable:x}) are not implemented for writing",
            feature_names(unwritable)
        )
    })
}

/// At creation, object-map brings fast-diff along (librbd's rule).
pub fn with_creation_implied(features: u64) -> u64 {
    if has_object_map(features) {
        features | FEATURE_FAST_DIFF
    } else {
        features
    }
}

/// At creation, striping v2 and data pool say what the options chose
/// (own striping, another data pool), whatever was asked for.
pub fn with_derived_bits(features: u64, striped: bool, data_pool: bool) -> u64 {
    let set = |f: u64, bit: u64, on: bool| if on { f | bit } else { f & !bit };
    set(
        set(features, FEATURE_STRIPINGV2, striped),
        FEATURE_DATA_POOL,
        data_pool,
    )
}

/// Why creation refuses a feature set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateRefusal {
    /// Not a valid request (EINVAL).
    Invalid(String),
    /// Valid, but not something we can make (EOPNOTSUPP).
    Unsupported(String),
}

/// Checks the features of a new image (after striping and data pool were
/// derived from the options), in librbd's order: no internal bits, no
/// journaling, only creatable bits, then [`FEATURE_DEPENDENCIES`].
pub fn validate_create_features(features: u64) -> Result<(), CreateRefusal> {
    if has_operations(features) {
        return Err(CreateRefusal::Invalid(
            "cannot use internally controlled features".into(),
        ));
    }
    if features & FEATURE_JOURNALING != 0 {
        return Err(CreateRefusal::Unsupported(
            "journaling is not implemented (no journal can be created)".into(),
        ));
    }
    let uncreatable = features & !CREATABLE_FEATURES;
    if uncreatable != 0 {
        return Err(CreateRefusal::Invalid(format!(
            "features 0x{:x} ({:?}) cannot be set at creation",
            uncreatable,
            feature_names(uncreatable)
        )));
    }
    if let Some(rule) = broken_dependency(features) {
        return Err(CreateRefusal::Invalid(rule.message.into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::v2::{
        FEATURE_DIRTY_CACHE, FEATURE_NON_PRIMARY, FEATURES_INCOMPATIBLE, FEATURES_RW_INCOMPATIBLE,
    };

    #[test]
    fn predicates_test_their_bit() {
        type Predicate = fn(u64) -> bool;
        let cases: [(Predicate, u64); 8] = [
            (has_layering, FEATURE_LAYERING),
            (has_striping, FEATURE_STRIPINGV2),
            (has_data_pool, FEATURE_DATA_POOL),
            (needs_lock, FEATURE_EXCLUSIVE_LOCK),
            (has_object_map, FEATURE_OBJECT_MAP),
            (has_fast_diff, FEATURE_FAST_DIFF),
            (has_operations, FEATURE_OPERATIONS),
            (is_migrating, FEATURE_MIGRATING),
        ];
        for (pred, bit) in cases {
            assert!(pred(bit));
            assert!(pred(u64::MAX));
            assert!(!pred(0));
            assert!(!pred(!bit));
        }
    }

    #[test]
    fn policy_sets_nest() {
        assert_eq!(READ_FEATURES & !WRITE_FEATURES, 0, "we write what we read");
        assert_eq!(DEFAULT_FEATURES & !CREATABLE_FEATURES, 0);
        assert_eq!(DEFAULT_FEATURES, 0x3d);
        assert_eq!(
            CREATABLE_FEATURES & !WRITE_FEATURES,
            0,
            "we write what we create"
        );
        assert!(validate_create_features(DEFAULT_FEATURES).is_ok());
        assert!(broken_dependency(DEFAULT_FEATURES).is_none());
    }

    #[test]
    fn dependencies() {
        assert_eq!(
            broken_dependency(FEATURE_FAST_DIFF).map(|r| r.requires),
            Some(FEATURE_OBJECT_MAP)
        );
        assert_eq!(
            broken_dependency(FEATURE_OBJECT_MAP | FEATURE_FAST_DIFF).map(|r| r.requires),
            Some(FEATURE_EXCLUSIVE_LOCK)
        );
        assert_eq!(
            broken_dependency(FEATURE_JOURNALING).map(|r| r.requires),
            Some(FEATURE_EXCLUSIVE_LOCK)
        );
        // fast-diff is checked before object-map, as librbd does.
        assert_eq!(
            broken_dependency(FEATURE_FAST_DIFF).map(|r| r.message),
            Some("cannot use fast diff without object map")
        );
        for ok in [
            0,
            FEATURE_EXCLUSIVE_LOCK,
            FEATURE_EXCLUSIVE_LOCK | FEATURE_OBJECT_MAP,
            FEATURE_EXCLUSIVE_LOCK | FEATURE_OBJECT_MAP | FEATURE_FAST_DIFF,
            FEATURE_EXCLUSIVE_LOCK | FEATURE_JOURNALING,
        ] {
            assert_eq!(broken_dependency(ok), None, "{ok:#x}");
        }
    }

    #[test]
    fn creation_rules() {
        use CreateRefusal::*;
        let v = validate_create_features;
        assert!(matches!(v(FEATURE_OPERATIONS), Err(Invalid(_))));
        // Journaling is refused as unsupported, before its dependency.
        assert!(matches!(v(FEATURE_JOURNALING), Err(Unsupported(_))));
        assert!(matches!(
            v(FEATURE_EXCLUSIVE_LOCK | FEATURE_JOURNALING),
            Err(Unsupported(_))
        ));
        assert_eq!(
            v(FEATURE_MIGRATING),
            Err(Invalid(format!(
                "features 0x200 ({:?}) cannot be set at creation",
                feature_names(FEATURE_MIGRATING)
            )))
        );
        assert_eq!(
            v(FEATURE_OBJECT_MAP),
            Err(Invalid(
                "cannot use object map without exclusive lock".into()
            ))
        );
        assert_eq!(
            v(FEATURE_EXCLUSIVE_LOCK | FEATURE_FAST_DIFF),
            Err(Invalid("cannot use fast diff without object map".into()))
        );
        for ok in [
            0,
            FEATURE_LAYERING,
            FEATURE_STRIPINGV2 | FEATURE_DATA_POOL,
            FEATURE_EXCLUSIVE_LOCK | FEATURE_OBJECT_MAP | FEATURE_FAST_DIFF | FEATURE_DEEP_FLATTEN,
        ] {
            assert_eq!(v(ok), Ok(()), "{ok:#x}");
        }
        assert_eq!(
            with_creation_implied(FEATURE_EXCLUSIVE_LOCK | FEATURE_OBJECT_MAP),
            FEATURE_EXCLUSIVE_LOCK | FEATURE_OBJECT_MAP | FEATURE_FAST_DIFF
        );
        assert_eq!(with_creation_implied(FEATURE_LAYERING), FEATURE_LAYERING);
        let both = FEATURE_STRIPINGV2 | FEATURE_DATA_POOL;
        assert_eq!(with_derived_bits(both, false, false), 0);
        assert_eq!(with_derived_bits(0, true, true), both);
        assert_eq!(
            with_derived_bits(FEATURE_LAYERING | FEATURE_DATA_POOL, true, false),
            FEATURE_LAYERING | FEATURE_STRIPINGV2
        );
    }

    #[test]
    fn what_we_read_and_write() {
        assert_eq!(unreadable_reason(READ_FEATURES), None);
        assert_eq!(unreadable_reason(WRITE_FEATURES), None);
        assert_eq!(read_only_reason(WRITE_FEATURES, None), None);
        // Journaling lets readers in but not writers.
        const { assert!(FEATURE_JOURNALING & FEATURES_INCOMPATIBLE == 0) };
        const { assert!(FEATURE_JOURNALING & FEATURES_RW_INCOMPATIBLE != 0) };
        assert_eq!(unreadable_reason(FEATURE_JOURNALING), None);
        assert!(
            read_only_reason(FEATURE_JOURNALING, None)
                .is_some_and(|r| r.contains("not implemented for writing"))
        );
        // An unknown bit is neither read nor written.
        assert!(unreadable_reason(1 << 40).is_some());
        assert!(read_only_reason(1 << 40, None).is_some());
        // `operations` is writable only with known op features.
        assert_eq!(read_only_reason(FEATURE_OPERATIONS, Some(0)), None);
        assert_eq!(
            read_only_reason(FEATURE_OPERATIONS, Some(KNOWN_OP_FEATURES)),
            None
        );
        assert!(read_only_reason(FEATURE_OPERATIONS, Some(1 << 20)).is_some());
        assert!(read_only_reason(FEATURE_OPERATIONS, None).is_some());
        assert!(op_features_known(KNOWN_OP_FEATURES));
        assert!(!op_features_known(1 << 4));
        for bit in [FEATURE_NON_PRIMARY, FEATURE_DIRTY_CACHE, FEATURE_MIGRATING] {
            let blocks_writes = bit & FEATURES_RW_INCOMPATIBLE != 0;
            assert_eq!(
                read_only_reason(bit, None).is_some(),
                blocks_writes,
                "{bit:#x}"
            );
        }
    }
}
