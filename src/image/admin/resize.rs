//! Resize (`rbd resize`): the plan of what happens to the data objects,
//! and carrying it out.

use std::ops::Range;

use log::info;

use super::shared::{
    load_object_map, lock_holders, may_exist, remove_data_objects, with_data_store,
};
use super::{busy, invalid, rbd_call, store_err, unsupported};
use crate::error::{ImageError, ImageResult};
use crate::format::v1;
use crate::format::v2::*;
use crate::image::features::{has_object_map, needs_lock};
use crate::image::info::ImageInfo;
use crate::layout::Layout;
use crate::store::{NOSNAP, ObjectStore, SnapContext};

/// What a resize does to the data objects (librbd's `TrimRequest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResizePlan {
    pub old_size: u64,
    pub new_size: u64,
    /// Data objects an image of the old / new size may use.
    pub old_objects: u64,
    pub new_objects: u64,
    /// Objects wholly past the new end, removed: `new_objects..old_objects`
    /// (empty when growing).
    pub remove: Range<u64>,
    /// Objects that keep data below the new end but also hold data past it
    /// (the boundary of the last stripe period): (object number, offset);
    /// everything in the object from `offset` on lies past the new end and
    /// is cut off. Only when shrinking to a size that is not a multiple of
    /// the stripe period (object size × stripe count).
    pub truncate: Vec<(u64, u64)>,
}

/// Works out which objects a resize from `old_size` to `new_size` removes
/// or cuts, for `layout` (plain or striped). Pure arithmetic.
pub fn resize_plan(layout: &Layout, old_size: u64, new_size: u64) -> ResizePlan {
    let old_objects = layout.object_count(old_size);
    let new_objects = layout.object_count(new_size);
    let mut plan = ResizePlan {
        old_size,
        new_size,
        old_objects,
        new_objects,
        remove: new_objects..old_objects.max(new_objects),
        truncate: Vec::new(),
    };
    if new_size >= old_size {
        plan.remove = old_objects..old_objects;
        return plan;
    }
    let su = layout.stripe_unit;
    let sc = layout.stripe_count;
    let os = layout.object_size;
    let period = os * sc;
    let rest = new_size % period;
    if rest == 0 {
        return plan;
    }
    // The last, partial period: object set `set`, objects set*sc .. +sc.
    // Block b of the set (b = k*sc + pos) is stripe unit k of object pos;
    // the new end falls in block `end_block`, `end_in` bytes into it.
    let set = new_size / period;
    let end_block = rest / su;
    let end_in = rest % su;
    for pos in 0..sc {
        let object_no = set * sc + pos;
        if object_no >= old_objects {
            break;
        }
        // Whole blocks of this object below the new end.
        let whole = if end_block > pos {
            (end_block - pos).div_ceil(sc)
        } else {
            0
        };
        let mut keep = whole * su;
        if end_in > 0 && whole * sc + pos == end_block {
            keep += end_in;
        }
        if keep > 0 && keep < os {
            plan.truncate.push((object_no, keep));
        }
        // keep == 0 means the object lies wholly past the new end: it is
        // at or past `new_objects` and in `remove` already.
    }
    plan
}

/// Resizes the image described by `info` to `new_size` as `rbd resize`
/// does (librbd's `ResizeRequest` and `TrimRequest`). Shrinking is always
/// allowed here (the CLI's `--allow-shrink` is the caller's business).
///
/// The caller must own the image's exclusive lock when it has that feature
/// (checked: EBUSY otherwise) and must keep its own writes out meanwhile;
/// `snapc` is the image's current snap context, carried by every data
/// object change so that snapshots keep their data. `info` must be
/// current (a fresh load).
///
/// Growing: the head object map is resized first (new objects
/// nonexistent), then the size in the header (`rbd.set_size`, or 8 bytes
/// at offset 0x50 of a format-1 header).
///
/// Shrinking ([`resize_plan`]): objects wholly past the new end are marked
/// pending in the object map, removed, then marked nonexistent; each
/// boundary object that exists is truncated where the new end falls in it
/// (after marking it exists in the object map, as librbd's discard does).
/// Then the header, then the object map is shrunk. A clone with snapshots is refused (librbd copies the parent's
/// data up into the removed objects for the snapshots' sake; not done
/// here). The class method `set_size` also cuts a clone's parent overlap.
pub fn resize_image(
    store: &dyn ObjectStore,
    info: &ImageInfo,
    new_size: u64,
    snapc: &SnapContext,
) -> ImageResult<()> {
    // ImageInfo has no name: errors name the image by its header.
    let label = match (&info.id, info.header_oid.strip_suffix(v1::HEADER_SUFFIX)) {
        (Some(id), _) => format!("(id {id})"),
        (None, Some(name)) => name.to_string(),
        (None, None) => info.header_oid.clone(),
    };
    let name = label.as_str();
    if let Some(reason) = &info.read_only {
        return Err(ImageError::ReadOnly {
            image: name.to_string(),
            reason: reason.clone(),
        });
    }
    if !snapc.is_valid() {
        return Err(invalid(name, format!("invalid snap context {snapc:?}")));
    }
    if new_size == info.size {
        return Ok(());
    }
    if info.format == 2 && needs_lock(info.features) {
        let me = EntityName::client(store.instance_id());
        if !lock_holders(store, name, &info.header_oid)?
            .iter()
            .any(|l| l.entity() == me)
        {
            return Err(busy(
                name,
                "resizing needs the exclusive lock, and this client does not hold it",
            ));
        }
    }
    let plan = resize_plan(&info.layout, info.size, new_size);
    let object_map = info.format == 2 && has_object_map(info.features);
    if object_map && plan.new_objects > MAX_OBJECT_MAP_OBJECT_COUNT {
        return Err(invalid(
            name,
            format!(
                "size {new_size} not compatible with object map ({} objects)",
                plan.new_objects
            ),
        ));
    }
    let map_oid = info
        .id
        .as_deref()
        .map(|id| object_map_object(id, NOSNAP))
        .unwrap_or_default();
    // A missing map stays missing (resizing would make one that says no
    // object exists).
    let resize_map = |present: bool| -> ImageResult<()> {
        if object_map && present {
            rbd_call(
                store,
                &map_oid,
                "object_map_resize",
                &object_map_resize_input(plan.new_objects, ObjectState::Nonexistent),
            )
            .map_err(|e| store_err(name, e))?;
        }
        Ok(())
    };
    if new_size > info.size {
        let present = object_map
            && match store.stat(&map_oid, NOSNAP) {
                Ok(_) => true,
                Err(e) if e.is_not_found() => false,
                Err(e) => return Err(store_err(name, e)),
            };
        resize_map(present)?;
        write_size(store, info, name, new_size)?;
        info!("image {name}: grown from {} to {new_size} bytes", info.size);
        return Ok(());
    }

    let has_snapshots = !info.snapshots.is_empty() || !info.hidden_snapshots.is_empty();
    if info.parent.is_some() && has_snapshots {
        return Err(unsupported(
            name,
            "shrinking a clone that has snapshots (its parent data would have to be copied up first)",
        ));
    }
    let map = if object_map {
        load_object_map(store, info, name)?
    } else {
        None
    };
    let map_update = |range: Range<u64>, new: ObjectState, current: Option<ObjectState>| {
        let Some(m) = &map else {
            return Ok(());
        };
        let end = range.end.min(m.map.len());
        if range.start >= end {
            return Ok(());
        }
        rbd_call(
            store,
            &map_oid,
            "object_map_update",
            &object_map_update_input(range.start, end, new, current),
        )
        .map(drop)
        .map_err(|e| store_err(name, e))
    };
    with_data_store(store, info, name, |data| {
        if !plan.remove.is_empty() {
            map_update(
                plan.remove.clone(),
                ObjectState::Pending,
                Some(ObjectState::Exists),
            )?;
            remove_data_objects(data, info, name, plan.remove.clone(), map.as_ref(), snapc)?;
            map_update(
                plan.remove.clone(),
                ObjectState::Nonexistent,
                Some(ObjectState::Pending),
            )?;
        }
        for &(object_no, offset) in &plan.truncate {
            if !may_exist(map.as_ref(), object_no) {
                continue;
            }
            let oid = info.data_object(object_no);
            let size = match data.stat(&oid, NOSNAP) {
                Ok(size) => size,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(store_err(name, e)),
            };
            if size <= offset {
                continue;
            }
            map_update(object_no..object_no + 1, ObjectState::Exists, None)?;
            data.truncate(&oid, offset, snapc)
                .map_err(|e| store_err(name, e))?;
        }
        Ok(())
    })?;
    write_size(store, info, name, new_size)?;
    resize_map(map.is_some())?;
    info!(
        "image {name}: shrunk from {} to {new_size} bytes ({} objects removed, {} cut)",
        info.size,
        plan.remove.end - plan.remove.start,
        plan.truncate.len()
    );
    Ok(())
}

/// The size field of the header: `rbd.set_size`, or for format 1 the
/// 8 bytes at offset 0x50 of `NAME.rbd` (what librbd rewrites).
fn write_size(store: &dyn ObjectStore, info: &ImageInfo, name: &str, size: u64) -> ImageResult<()> {
    let r = if info.format == 1 {
        store.write(
            &info.header_oid,
            V1_SIZE_OFFSET,
            &size.to_le_bytes(),
            &SnapContext::default(),
        )
    } else {
        rbd_call(store, &info.header_oid, "set_size", &set_size_input(size)).map(drop)
    };
    r.map_err(|e| store_err(name, e))
}

/// Offset of the image size in a format-1 header
/// (`offsetof(rbd_obj_header_ondisk, image_size)`).
pub const V1_SIZE_OFFSET: u64 = 0x50;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_plan() {
        let l = Layout::plain(22);
        let mb = 1u64 << 20;
        let p = resize_plan(&l, 20 * mb, 5 * mb + 123);
        assert_eq!(p.old_objects, 5);
        assert_eq!(p.new_objects, 2);
        assert_eq!(p.remove, 2..5);
        assert_eq!(p.truncate, vec![(1, mb + 123)]);
        let p = resize_plan(&l, 20 * mb, 8 * mb);
        assert_eq!(p.remove, 2..5);
        assert!(p.truncate.is_empty());
        let p = resize_plan(&l, 20 * mb, 0);
        assert_eq!(p.remove, 0..5);
        let p = resize_plan(&l, 5 * mb, 20 * mb);
        assert!(p.remove.is_empty() && p.truncate.is_empty());
        assert_eq!(p.new_objects, 5);
    }

    #[test]
    fn striped_plan() {
        // 64 KiB objects, 16 KiB units, 4 objects per set: period 256 KiB.
        let l = Layout::striped(16, 16 << 10, 4).unwrap();
        // New end 1.5 units into the second set: object 4 keeps a unit and
        // object 5 half of one; objects 6, 7 are wholly past the end.
        let p = resize_plan(&l, 1 << 20, (256 << 10) + (24 << 10));
        assert_eq!(p.new_objects, 6);
        assert_eq!(p.remove, 6..16);
        assert_eq!(p.truncate, vec![(4, 16 << 10), (5, 8 << 10)]);
    }

    /// Byte-level reference: after the plan, everything below the new end
    /// is kept and everything past it (that the old image had) is gone.
    fn check_plan(l: &Layout, old: u64, new: u64) -> Result<(), TestCaseError> {
        let p = resize_plan(l, old, new);
        prop_assert_eq!(p.new_objects, l.object_count(new));
        if new < old {
            prop_assert_eq!(p.remove.clone(), p.new_objects..p.old_objects);
        } else {
            prop_assert!(p.remove.is_empty() && p.truncate.is_empty());
        }
        let cut = |obj: u64| p.truncate.iter().find(|t| t.0 == obj).map(|t| t.1);
        for t in &p.truncate {
            prop_assert!(t.0 < p.new_objects && t.1 > 0 && t.1 < l.object_size);
        }
        // Sample offsets: every stripe-unit boundary ±1 around both ends.
        let mut probes = Vec::new();
        let step = l.stripe_unit;
        let lo = new.saturating_sub(2 * l.object_size * l.stripe_count);
        let mut o = lo - lo % step;
        while o < old.min(new + 2 * l.object_size * l.stripe_count) {
            for d in [0, 1, step / 2, step - 1] {
                if o + d < old {
                    probes.push(o + d);
                }
            }
            o += step;
        }
        for d in [0, 1, 2] {
            probes.extend(
                [new + d, new.wrapping_sub(d)]
                    .into_iter()
                    .filter(|&x| x < old),
            );
        }
        for off in probes {
            let (obj, in_obj, _) = l.locate(off);
            let removed = p.remove.contains(&obj);
            let cut_away = cut(obj).is_some_and(|c| in_obj >= c);
            if off < new {
                prop_assert!(
                    !removed && !cut_away,
                    "offset {} lost (obj {} at {})",
                    off,
                    obj,
                    in_obj
                );
            } else if new < old {
                prop_assert!(
                    removed || cut_away,
                    "offset {} kept (obj {} at {})",
                    off,
                    obj,
                    in_obj
                );
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn plans_keep_exactly_the_new_image(
            order in 12u8..=16, su_shift in 0u32..4, sc in 1u64..6,
            old in 0u64..(3 << 20), new in 0u64..(3 << 20),
        ) {
            let su = (1u64 << order) >> su_shift;
            let l = Layout::striped(order, su, sc).unwrap();
            check_plan(&l, old, new)?;
        }
    }
}
