//! Cluster usage for statfs, asked on a helper thread.

use std::time::Duration;

use log::warn;

use super::RbdFs;
use crate::store::Usage;

/// The last cluster usage seen, and whether a query is outstanding.
#[derive(Default)]
pub(super) struct UsageState {
    last: Option<(std::time::Instant, Usage)>,
    asking: bool,
}

impl RbdFs {
    /// Cluster usage for statfs, which must never hang: `umount` and `df`
    /// call it, and a cluster without a manager never answers the monitor's
    /// statfs. Asked on a helper thread, waited for briefly; otherwise the
    /// last answer (or zeros) is given.
    pub(super) fn usage(&self) -> Usage {
        const WAIT: Duration = Duration::from_secs(2);
        const FRESH: Duration = Duration::from_secs(10);
        let (last, asked) = {
            let state = self.usage_state.lock();
            (state.last, state.asking)
        };
        if let Some((at, u)) = last
            && at.elapsed() < FRESH
        {
            return u;
        }
        let fallback = last.map(|(_, u)| u).unwrap_or_default();
        if asked {
            return fallback;
        }
        self.usage_state.lock().asking = true;
        let (tx, rx) = std::sync::mpsc::channel();
        let pool = self.pool.clone();
        let state = self.usage_state.clone();
        std::thread::spawn(move || {
            let result = pool.store().usage();
            let mut st = state.lock();
            st.asking = false;
            match result {
                Ok(u) => {
                    st.last = Some((std::time::Instant::now(), u));
                    let _ = tx.send(u);
                }
                Err(e) => warn!("statfs: {e}"),
            }
        });
        rx.recv_timeout(WAIT).unwrap_or(fallback)
    }
}
