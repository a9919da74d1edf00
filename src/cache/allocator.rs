//! glibc's allocator, tuned for a cache's traffic: buffers of an object
//! size come and go hundreds of times a second, across dozens of threads
//! (FUSE, I/O workers, librados). With an arena per thread, freed buffers
//! pile up in arenas other threads do not use, and the process holds two
//! to four times what the cache holds (measured: 190-330 MiB peak RSS for
//! a 64 MiB cache under sequential I/O). One arena keeps it near the
//! budget. Freed memory goes back to the system only when the process
//! holds more than the budget plus [`TRIM_ABOVE_BUDGET`], or once I/O has
//! stopped: each page given back faults again when reused. Making big
//! buffers mmap'd instead (M_MMAP_THRESHOLD) also bounds RSS but costs
//! ~40% of sequential throughput in page faults. The few big blocks that
//! glibc would still hand back zeroed by the kernel are kept for reuse by
//! [`RecyclingAllocator`], the daemon's global allocator.

use std::time::{Duration, Instant};

/// Looks at the process's memory this often while I/O goes on: between
/// two looks, four read-ahead streams grew it by up to 14 MiB at 100 ms.
pub const TRIM_EVERY: Duration = Duration::from_millis(25);

/// After this long without I/O, everything free goes back to the system.
pub const IDLE_AFTER: Duration = Duration::from_secs(1);

/// When the flusher trims: while I/O goes on, at most every [`TRIM_EVERY`]
/// and only over the limit; once it stops for [`IDLE_AFTER`], once,
/// whatever the process holds.
pub struct Trimmer {
    last_trim: Instant,
    activity: u64,
    last_io: Instant,
    idle_trimmed: bool,
}

impl Trimmer {
    pub fn new() -> Trimmer {
        let now = Instant::now();
        Trimmer {
            last_trim: now,
            activity: 0,
            last_io: now,
            idle_trimmed: true,
        }
    }

    /// At every flusher tick, with the cache's activity counter and the
    /// resident bytes above which to trim while I/O goes on.
    pub fn tick(&mut self, activity: u64, limit: u64) {
        let now = Instant::now();
        if activity != self.activity {
            self.activity = activity;
            self.last_io = now;
            self.idle_trimmed = false;
        }
        if self.idle_trimmed || now.duration_since(self.last_trim) < TRIM_EVERY {
            return;
        }
        if now.duration_since(self.last_io) >= IDLE_AFTER {
            trim(0);
            self.idle_trimmed = true;
        } else {
            trim(limit);
        }
        self.last_trim = now;
    }
}

/// What the process may hold beyond the cache's budget before a trim:
/// the idle process (~30 MiB, half of it shared libraries), the FUSE
/// threads' request buffers (4 MiB) and the kept blocks (8 MiB).
pub const TRIM_ABOVE_BUDGET: u64 = 32 << 20;

/// Best called before any thread starts (arenas already made stay);
/// `Cache::new` calls it for callers that did not.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: mallopt only changes allocator parameters.
        ONCE.call_once(|| unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        });
    }
}

/// Returns free memory inside the heap to the system if the process's
/// resident memory is over `limit` bytes, and the kept big blocks if none
/// was reused since the last call. Only over the limit: after a trim,
/// every freed buffer that is allocated again faults its pages back in,
/// librados's socket buffers most of all (trimming every 100 ms cost
/// 125 thousand faults per GiB read, none over the limit 19 thousand, and
/// 16 % of the daemon's CPU), while the heap's free memory, left alone,
/// grows to about 50 MiB (peak RSS 150 MiB at a 64 MiB cache).
pub fn trim(limit: u64) {
    release_unused_kept();
    if resident_bytes().is_some_and(|r| r <= limit) {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The process's resident memory (RSS), from /proc/self/statm.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// The global allocator: the system's (glibc's), except that a few freed
/// big blocks are kept and handed out again for an allocation of the same
/// size. Buffers of an object's size (reads, read-ahead, dirty runs) are
/// freed and allocated hundreds of times a second, and `trim` gives freed
/// memory back to the system, so each fresh buffer cost a page fault per
/// 4 KiB, zeroed by the kernel: 130-150 thousand faults per GiB read or
/// written, 16 % of the daemon's CPU in a sequential read (perf). At most
/// `KEPT_BYTES` are kept, outside the cache's budget, and all of them
/// are freed at a trim when none was reused since the last one.
pub struct RecyclingAllocator;

/// Smallest block kept: the small ones come from glibc's bins, which
/// reuse them without faults.
const KEPT_MIN: usize = 1 << 20;
/// Most bytes kept: two 4 MiB objects.
pub const KEPT_BYTES: usize = 8 << 20;
const KEPT_SLOTS: usize = 8;
/// glibc's malloc alignment: a block made for any alignment up to it can
/// serve any other.
const MALLOC_ALIGN: usize = 16;

/// Freed big blocks kept for reuse, by address and size.
struct Kept {
    /// (address, size) of kept blocks; size 0: empty slot.
    blocks: [(usize, usize); KEPT_SLOTS],
    bytes: usize,
    /// Blocks reused since the last `take_unused`.
    reused: u64,
}

impl Kept {
    const EMPTY: Kept = Kept {
        blocks: [(0, 0); KEPT_SLOTS],
        bytes: 0,
        reused: 0,
    };

    /// A kept block of exactly `size` bytes, out of the store.
    fn take(&mut self, size: usize) -> Option<usize> {
        let slot = self.blocks.iter().position(|&(_, s)| s == size)?;
        let (addr, _) = std::mem::take(&mut self.blocks[slot]);
        self.bytes -= size;
        self.reused += 1;
        Some(addr)
    }

    /// Keeps a freed block if there is room.
    fn keep(&mut self, addr: usize, size: usize) -> bool {
        if size == 0 || self.bytes + size > KEPT_BYTES {
            return false;
        }
        let Some(slot) = self.blocks.iter().position(|&(_, s)| s == 0) else {
            return false;
        };
        self.blocks[slot] = (addr, size);
        self.bytes += size;
        true
    }

    /// All the blocks, out of the store, if none was reused since the
    /// last call (the I/O that needed them has stopped); else none.
    fn take_unused(&mut self) -> [(usize, usize); KEPT_SLOTS] {
        if std::mem::take(&mut self.reused) > 0 {
            return [(0, 0); KEPT_SLOTS];
        }
        self.bytes = 0;
        std::mem::replace(&mut self.blocks, [(0, 0); KEPT_SLOTS])
    }
}

/// A plain futex lock: it never allocates, as the allocator must not.
static KEPT: std::sync::Mutex<Kept> = std::sync::Mutex::new(Kept::EMPTY);

fn kept() -> std::sync::MutexGuard<'static, Kept> {
    KEPT.lock().unwrap_or_else(|e| e.into_inner())
}

fn recyclable(layout: std::alloc::Layout) -> bool {
    layout.size() >= KEPT_MIN && layout.align() <= MALLOC_ALIGN
}

/// Frees the kept blocks if none was reused since the last call.
fn release_unused_kept() {
    let blocks = kept().take_unused();
    for (addr, size) in blocks {
        if size > 0 {
            // SAFETY: a block is kept only by `dealloc`, which got it from
            // the system allocator with this size and an alignment of at
            // most MALLOC_ALIGN (so plain malloc), and nobody else has it.
            unsafe {
                std::alloc::GlobalAlloc::dealloc(
                    &std::alloc::System,
                    addr as *mut u8,
                    std::alloc::Layout::from_size_align_unchecked(size, 1),
                )
            };
        }
    }
}

// SAFETY: every block handed out comes from `System` (fresh, or kept after
// a `dealloc` of a System block of the same size with an alignment of at
// most MALLOC_ALIGN, which glibc's malloc gives every block), and a kept
// block is handed out once.
unsafe impl std::alloc::GlobalAlloc for RecyclingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if recyclable(layout)
            && let Some(p) = kept().take(layout.size())
        {
            return p as *mut u8;
        }
        // SAFETY: the caller's contract for `layout`.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if recyclable(layout)
            && let Some(p) = kept().take(layout.size())
        {
            let p = p as *mut u8;
            // SAFETY: the block has `layout.size()` writable bytes.
            unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
            return p;
        }
        // SAFETY: the caller's contract for `layout`.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        if recyclable(layout) && kept().keep(ptr as usize, layout.size()) {
            return;
        }
        // SAFETY: the caller's contract: `ptr` was allocated here with
        // `layout`, so by `System` (see the impl's SAFETY).
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for dealloc; glibc's realloc keeps the block's
        // alignment.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::{KEPT_BYTES, KEPT_SLOTS, Kept};

    const MIB: usize = 1 << 20;

    #[test]
    fn a_kept_block_serves_only_its_own_size_once() {
        let mut k = Kept::EMPTY;
        assert!(k.keep(0x1000, 4 * MIB));
        assert_eq!(k.take(2 * MIB), None);
        assert_eq!(k.take(4 * MIB), Some(0x1000));
        assert_eq!(k.take(4 * MIB), None);
        assert_eq!(k.bytes, 0);
    }

    #[test]
    fn keeps_no_more_than_the_bound() {
        let mut k = Kept::EMPTY;
        let mut kept = 0;
        for i in 1..=(KEPT_SLOTS + 4) {
            if k.keep(i * 0x1000, 3 * MIB) {
                kept += 1;
            }
        }
        assert_eq!(kept, KEPT_BYTES / (3 * MIB));
        assert!(k.bytes <= KEPT_BYTES);
        let mut small = Kept::EMPTY;
        for i in 1..=(KEPT_SLOTS + 2) {
            small.keep(i * 0x1000, 1);
        }
        assert_eq!(small.bytes, KEPT_SLOTS, "one block per slot");
    }

    #[test]
    fn unused_blocks_are_given_back_only_after_a_period_without_reuse() {
        let mut k = Kept::EMPTY;
        k.keep(0x1000, 4 * MIB);
        k.keep(0x2000, 4 * MIB);
        assert_eq!(k.take(4 * MIB), Some(0x1000));
        k.keep(0x1000, 4 * MIB);
        // Reused since the last look: kept.
        assert!(k.take_unused().iter().all(|&(_, s)| s == 0));
        assert_eq!(k.bytes, 8 * MIB);
        // Not reused since: all given back.
        let mut back: Vec<usize> = k
            .take_unused()
            .iter()
            .filter(|&&(_, s)| s > 0)
            .map(|&(a, _)| a)
            .collect();
        back.sort_unstable();
        assert_eq!(back, vec![0x1000, 0x2000]);
        assert_eq!(k.bytes, 0);
        assert_eq!(k.take(4 * MIB), None);
    }
}
