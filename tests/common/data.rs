//! Data, I/O and checks: a seeded PRNG, full reads, byte/errno assertions.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::{SystemTime, UNIX_EPOCH};

use super::process::test_name;

/// `RBDFS_TEST_SEED` (decimal or 0x-hex) or the clock.
pub fn env_seed() -> u64 {
    match std::env::var("RBDFS_TEST_SEED") {
        Ok(s) => {
            let s = s.trim();
            match s.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => s.parse(),
            }
            .expect("RBDFS_TEST_SEED must be an integer")
        }
        Err(_) => {
            let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32)
        }
    }
}

/// SplitMix64: tiny, deterministic, good enough for test data and offsets.
pub struct Rng(u64);

impl Rng {
    /// Seeded by [`env_seed`]; prints the seed so a failing run can be
    /// replayed.
    pub fn new() -> Rng {
        let seed = env_seed();
        eprintln!(
            "[{}] seed = {seed:#x} (set RBDFS_TEST_SEED={seed:#x} to reproduce)",
            test_name()
        );
        Rng(seed)
    }

    /// A generator whose seed the caller chose (and reports itself).
    pub fn from_seed(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 for n = 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
}

/// Reads up to `len` bytes at `off`, looping over short reads until EOF.
pub fn read_full_at(f: &File, off: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; len];
    let mut done = 0;
    while done < len {
        match f.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

/// Byte-exact comparison that reports the first difference instead of
/// dumping megabytes.
#[track_caller]
pub fn assert_bytes_eq(actual: &[u8], expected: &[u8], what: &str) {
    if actual == expected {
        return;
    }
    let first = actual.iter().zip(expected).position(|(a, b)| a != b);
    let ndiff = actual.iter().zip(expected).filter(|(a, b)| a != b).count();
    match first {
        Some(i) => panic!(
            "{what}: {ndiff} bytes differ, first at offset {i} (got {:#04x}, want {:#04x}); lengths {} vs {}",
            actual[i],
            expected[i],
            actual.len(),
            expected.len()
        ),
        None => panic!(
            "{what}: length {} but expected {} (common prefix equal)",
            actual.len(),
            expected.len()
        ),
    }
}

/// Asserts `r` failed with one of `errnos`.
#[track_caller]
pub fn assert_errno<T: std::fmt::Debug>(r: io::Result<T>, errnos: &[i32], what: &str) {
    match r {
        Ok(v) => panic!("{what}: succeeded ({v:?}), expected errno in {errnos:?}"),
        Err(e) => assert!(
            e.raw_os_error().is_some_and(|c| errnos.contains(&c)),
            "{what}: failed with {e} ({:?}), expected errno in {errnos:?}",
            e.raw_os_error()
        ),
    }
}
