//! The RBD namespaces of a pool (`rbd namespace ls`): the omap of
//! `rbd_namespace` in the pool's default namespace, read with
//! `rbd.namespace_list`.

use log::warn;

use crate::format::v2::{RBD_NAMESPACE, decode_namespace_list, namespace_list_input};
use crate::store::{ObjectStore, StoreError};

/// The namespaces of the pool `store` is in (whatever namespace `store`
/// itself is set to), sorted. A pool without any has no `rbd_namespace`:
/// empty. Names that are not UTF-8 are left out with a log line.
pub fn list_namespaces(store: &dyn ObjectStore) -> Result<Vec<String>, StoreError> {
    const PAGE: u64 = 1024;
    let default;
    let store = if store.namespace().is_empty() {
        store
    } else {
        default = store.pool_in_namespace(store.pool_id(), "")?;
        &*default
    };
    let mut names = Vec::new();
    let mut after = String::new();
    loop {
        let reply = match store.exec(
            RBD_NAMESPACE,
            "rbd",
            "namespace_list",
            &namespace_list_input(&after, PAGE),
        ) {
            Ok(r) => r,
            Err(e) if e.is_not_found() => break,
            Err(e) => return Err(e),
        };
        let page = match decode_namespace_list(&reply) {
            Ok(p) => p,
            Err(e) => {
                warn!("{RBD_NAMESPACE}: {e}; listing no more namespaces");
                break;
            }
        };
        let full = page.len() as u64 >= PAGE;
        let mut last = None;
        for raw in page {
            match String::from_utf8(raw) {
                Ok(n) => {
                    last = Some(n.clone());
                    names.push(n);
                }
                Err(e) => warn!(
                    "{RBD_NAMESPACE}: namespace name {:?} is not UTF-8; skipped",
                    e.as_bytes()
                ),
            }
        }
        match last {
            Some(l) if full && l > after => after = l,
            _ => break,
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}
