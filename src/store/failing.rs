//! A failure-injecting [`ObjectStore`] wrapper for tests: by rules that
//! can be added and cleared while in use, the Nth call (or calls N..M, or
//! every call) of an operation kind, optionally only on objects whose
//! name contains a given text, fails with an errno or is delayed first.
//! Calls are counted per kind.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::*;

/// The kinds of operation a rule matches. `Exec` matches by class and
/// method (empty = any).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    Read,
    Write,
    Stat,
    Remove,
    Truncate,
    Zero,
    Exec(String, String),
    TmapUpdate,
    SnapCreate,
    SnapRemove,
    Watch,
    Notify,
    Blocklist,
    PoolById,
    Usage,
}

impl Op {
    fn matches(&self, actual: &Op) -> bool {
        match (self, actual) {
            (Op::Exec(c, m), Op::Exec(ac, am)) => {
                (c.is_empty() || c == ac) && (m.is_empty() || m == am)
            }
            _ => self == actual,
        }
    }

    /// The counter key: exec calls count per class.method.
    fn key(&self) -> String {
        match self {
            Op::Exec(c, m) => format!("exec {c}.{m}"),
            other => format!("{other:?}").to_lowercase(),
        }
    }
}

/// What a rule does to a matching call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Fail with this errno (ENOENT becomes NotFound).
    Fail(i32),
    /// Sleep, then perform the call.
    Delay(Duration),
}

/// One rule: matching calls numbered (from 1, counting only calls that
/// match this rule) within `from..=to` get `effect`.
#[derive(Debug, Clone)]
pub struct Rule {
    pub op: Op,
    /// Only objects whose name contains this (empty = every object).
    pub oid_contains: String,
    pub from: u64,
    pub to: u64,
    pub effect: Effect,
    seen: u64,
}

impl Rule {
    /// Every matching call.
    pub fn always(op: Op, effect: Effect) -> Rule {
        Rule::calls(op, 1, u64::MAX, effect)
    }

    /// Only the `n`th matching call (from 1).
    pub fn nth(op: Op, n: u64, effect: Effect) -> Rule {
        Rule::calls(op, n, n, effect)
    }

    /// Matching calls `from..=to` (from 1).
    pub fn calls(op: Op, from: u64, to: u64, effect: Effect) -> Rule {
        Rule {
            op,
            oid_contains: String::new(),
            from,
            to,
            effect,
            seen: 0,
        }
    }

    /// Restricts the rule to objects whose name contains `text`.
    pub fn on(mut self, text: &str) -> Rule {
        self.oid_contains = text.to_string();
        self
    }
}

pub struct FailingStore {
    inner: Arc<dyn ObjectStore>,
    rules: Mutex<Vec<Rule>>,
    counts: Mutex<HashMap<String, u64>>,
}

impl FailingStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Arc<FailingStore> {
        Arc::new(FailingStore {
            inner,
            rules: Mutex::new(Vec::new()),
            counts: Mutex::new(HashMap::new()),
        })
    }

    pub fn add_rule(&self, rule: Rule) {
        self.rules.lock().push(rule);
    }

    pub fn clear_rules(&self) {
        self.rules.lock().clear();
    }

    /// Calls of `op` so far (exec: of that class.method).
    pub fn count(&self, op: &Op) -> u64 {
        self.counts.lock().get(&op.key()).copied().unwrap_or(0)
    }

    fn check(&self, op: Op, name: &'static str, oid: &str) -> StoreResult<()> {
        *self.counts.lock().entry(op.key()).or_default() += 1;
        let mut effects = Vec::new();
        for rule in self.rules.lock().iter_mut() {
            if !rule.op.matches(&op) || !oid.contains(&rule.oid_contains) {
                continue;
            }
            rule.seen += 1;
            if (rule.from..=rule.to).contains(&rule.seen) {
                effects.push(rule.effect);
            }
        }
        for effect in effects {
            match effect {
                Effect::Delay(d) => std::thread::sleep(d),
                Effect::Fail(errno) => return Err(StoreError::from_rc(name, oid, -errno)),
            }
        }
        Ok(())
    }
}

impl ObjectStore for FailingStore {
    fn read(&self, oid: &str, offset: u64, len: usize, snap: SnapId) -> StoreResult<Vec<u8>> {
        self.check(Op::Read, "read", oid)?;
        self.inner.read(oid, offset, len, snap)
    }

    fn read_full(&self, oid: &str) -> StoreResult<Vec<u8>> {
        self.check(Op::Read, "read", oid)?;
        self.inner.read_full(oid)
    }

    fn write(&self, oid: &str, offset: u64, data: &[u8], snapc: &SnapContext) -> StoreResult<()> {
        self.check(Op::Write, "write", oid)?;
        self.inner.write(oid, offset, data, snapc)
    }

    fn write_extents(
        &self,
        oid: &str,
        extents: &[(u64, &[u8])],
        snapc: &SnapContext,
    ) -> StoreResult<()> {
        self.check(Op::Write, "write", oid)?;
        self.inner.write_extents(oid, extents, snapc)
    }

    fn stat(&self, oid: &str, snap: SnapId) -> StoreResult<u64> {
        self.check(Op::Stat, "stat", oid)?;
        self.inner.stat(oid, snap)
    }

    fn remove(&self, oid: &str, snapc: &SnapContext) -> StoreResult<()> {
        self.check(Op::Remove, "remove", oid)?;
        self.inner.remove(oid, snapc)
    }

    fn truncate(&self, oid: &str, size: u64, snapc: &SnapContext) -> StoreResult<()> {
        self.check(Op::Truncate, "truncate", oid)?;
        self.inner.truncate(oid, size, snapc)
    }

    fn zero(&self, oid: &str, offset: u64, len: u64, snapc: &SnapContext) -> StoreResult<()> {
        self.check(Op::Zero, "zero", oid)?;
        self.inner.zero(oid, offset, len, snapc)
    }

    fn usage(&self) -> StoreResult<Usage> {
        self.check(Op::Usage, "usage", "")?;
        self.inner.usage()
    }

    fn exec(&self, oid: &str, class: &str, method: &str, input: &[u8]) -> StoreResult<Vec<u8>> {
        self.check(Op::Exec(class.into(), method.into()), "exec", oid)?;
        self.inner.exec(oid, class, method, input)
    }

    fn tmap_update(&self, oid: &str, command: &[u8]) -> StoreResult<()> {
        self.check(Op::TmapUpdate, "tmap_update", oid)?;
        self.inner.tmap_update(oid, command)
    }

    fn selfmanaged_snap_create(&self) -> StoreResult<SnapId> {
        self.check(Op::SnapCreate, "selfmanaged_snap_create", "")?;
        self.inner.selfmanaged_snap_create()
    }

    fn selfmanaged_snap_remove(&self, snap: SnapId) -> StoreResult<()> {
        self.check(Op::SnapRemove, "selfmanaged_snap_remove", "")?;
        self.inner.selfmanaged_snap_remove(snap)
    }

    fn watch(&self, oid: &str, callback: WatchCallback) -> StoreResult<Box<dyn WatchGuard>> {
        self.check(Op::Watch, "watch", oid)?;
        self.inner.watch(oid, callback)
    }

    fn notify(&self, oid: &str, payload: &[u8], timeout_ms: u64) -> StoreResult<NotifyReplies> {
        self.check(Op::Notify, "notify", oid)?;
        self.inner.notify(oid, payload, timeout_ms)
    }

    fn instance_id(&self) -> u64 {
        self.inner.instance_id()
    }

    fn client_address(&self) -> String {
        self.inner.client_address()
    }

    fn blocklist_add(&self, address: &str, expire_secs: u32) -> StoreResult<()> {
        self.check(Op::Blocklist, "blocklist_add", address)?;
        self.inner.blocklist_add(address, expire_secs)
    }

    fn pool_by_id(&self, pool_id: i64) -> StoreResult<Arc<dyn ObjectStore>> {
        self.check(Op::PoolById, "pool_by_id", "")?;
        self.inner.pool_by_id(pool_id)
    }

    fn pool_id(&self) -> i64 {
        self.inner.pool_id()
    }

    fn snap_rollback(&self, oid: &str, snap: SnapId, snapc: &SnapContext) -> StoreResult<()> {
        self.check(Op::Write, "snap_rollback", oid)?;
        self.inner.snap_rollback(oid, snap, snapc)
    }

    fn config_value(&self, key: &str) -> Option<String> {
        self.inner.config_value(key)
    }

    fn min_compat_client(&self) -> StoreResult<i8> {
        self.inner.min_compat_client()
    }

    fn namespace(&self) -> String {
        self.inner.namespace()
    }

    fn pool_in_namespace(
        &self,
        pool_id: i64,
        namespace: &str,
    ) -> StoreResult<Arc<dyn ObjectStore>> {
        self.check(Op::PoolById, "pool_in_namespace", "")?;
        self.inner.pool_in_namespace(pool_id, namespace)
    }

    fn pool_name(&self) -> String {
        self.inner.pool_name()
    }

    fn list_pools(&self) -> StoreResult<Vec<PoolEntry>> {
        self.inner.list_pools()
    }

    fn pool_by_name(&self, name: &str, namespace: &str) -> StoreResult<Arc<dyn ObjectStore>> {
        self.check(Op::PoolById, "pool_by_name", "")?;
        self.inner.pool_by_name(name, namespace)
    }

    fn generation(&self) -> u64 {
        self.inner.generation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[test]
    fn rules_fail_delay_and_count() {
        let f = FailingStore::new(MemoryStore::new());
        let none = SnapContext::default();
        f.add_rule(Rule::nth(Op::Write, 2, Effect::Fail(libc::EIO)).on("data"));
        f.write("data.1", 0, b"a", &none).unwrap();
        f.write("other", 0, b"a", &none).unwrap();
        let e = f.write("data.2", 0, b"a", &none).unwrap_err();
        assert_eq!(e.errno(), libc::EIO);
        f.write("data.3", 0, b"a", &none).unwrap();
        assert_eq!(f.count(&Op::Write), 4);
        f.add_rule(Rule::always(
            Op::Exec("rbd".into(), String::new()),
            Effect::Fail(libc::ENOENT),
        ));
        assert!(
            f.exec("x", "rbd", "get_size", &[])
                .unwrap_err()
                .is_not_found()
        );
        assert_eq!(f.count(&Op::Exec("rbd".into(), "get_size".into())), 1);
        f.clear_rules();
        f.add_rule(Rule::calls(
            Op::Read,
            1,
            1,
            Effect::Delay(Duration::from_millis(20)),
        ));
        let t = std::time::Instant::now();
        f.read("data.1", 0, 1, NOSNAP).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(20));
    }
}
