//! A fixed pool of I/O threads shared by every image of a mount: prefetch
//! reads and write-backs run here, so a reader or a writer keeps several
//! RADOS operations in flight without a thread per request. Write-backs go
//! first (writers under backpressure and fsync wait for them); prefetch is
//! only ever ahead of a reader.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use log::{error, warn};
use parking_lot::{Condvar, Mutex};

pub(super) type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Priority {
    WriteBack,
    Prefetch,
}

#[derive(Default)]
struct Queues {
    write_back: VecDeque<Job>,
    prefetch: VecDeque<Job>,
    shutdown: bool,
}

struct Inner {
    queues: Mutex<Queues>,
    work: Condvar,
}

pub(super) struct Workers {
    inner: Arc<Inner>,
    threads: usize,
}

impl Workers {
    /// Starts `threads` workers (fewer if the system refuses threads; with
    /// none, jobs run in the submitting thread).
    pub fn new(threads: usize) -> Workers {
        let inner = Arc::new(Inner {
            queues: Mutex::new(Queues::default()),
            work: Condvar::new(),
        });
        let mut started = 0;
        for i in 0..threads {
            let worker_inner = inner.clone();
            match std::thread::Builder::new()
                .name(format!("rbdfs-io-{i}"))
                .spawn(move || worker(&worker_inner))
            {
                Ok(_) => started += 1,
                Err(e) => {
                    warn!("cache: cannot start I/O worker {i}: {e}");
                    break;
                }
            }
        }
        Workers {
            inner,
            threads: started,
        }
    }

    /// Runs `job` on a worker, or here when there is none (no threads, or
    /// the pool is shutting down). Callers must hold no cache lock.
    pub fn submit(&self, priority: Priority, job: Job) {
        if self.threads > 0 {
            let mut q = self.inner.queues.lock();
            if !q.shutdown {
                match priority {
                    Priority::WriteBack => q.write_back.push_back(job),
                    Priority::Prefetch => q.prefetch.push_back(job),
                }
                drop(q);
                self.inner.work.notify_one();
                return;
            }
        }
        run(job);
    }

    /// Workers finish what is queued, then exit.
    pub fn shutdown(&self) {
        self.inner.queues.lock().shutdown = true;
        self.inner.work.notify_all();
    }
}

fn worker(inner: &Inner) {
    loop {
        let job = {
            let mut q = inner.queues.lock();
            loop {
                if let Some(job) = q.write_back.pop_front() {
                    break job;
                }
                if let Some(job) = q.prefetch.pop_front() {
                    break job;
                }
                if q.shutdown {
                    return;
                }
                inner.work.wait(&mut q);
            }
        };
        run(job);
    }
}

fn run(job: Job) {
    // A panicking job is a bug; it must not take a worker with it.
    if catch_unwind(AssertUnwindSafe(job)).is_err() {
        error!("cache: an I/O job panicked");
    }
}
