//! TMAP: the "trivial map" stored in the *data* of `rbd_directory` that
//! lists format-1 images. Layout: `u32 header_len | header | u32 count |
//! count × (string key, string value)`, keys sorted.

use super::FormatError;
use super::decode::{Decoder, Encoder};

const WHAT: &str = "rbd_directory TMAP";

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tmap {
    pub header: Vec<u8>,
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Tmap {
    /// An absent or empty object is an empty map (a pool with no format-1
    /// image may have no `rbd_directory` data at all).
    pub fn decode(buf: &[u8]) -> Result<Tmap, FormatError> {
        if buf.is_empty() {
            return Ok(Tmap::default());
        }
        let mut d = Decoder::new(buf, WHAT);
        let header = d.blob()?.to_vec();
        // Each entry is at least two u32 lengths.
        let count = d.count(8)?;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let key = d.blob()?.to_vec();
            let value = d.blob()?.to_vec();
            entries.push((key, value));
        }
        if !d.is_empty() {
            return Err(FormatError::invalid(
                WHAT,
                format!("{} trailing bytes", d.remaining()),
            ));
        }
        Ok(Tmap { header, entries })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.blob(&self.header).u32(self.entries.len() as u32);
        for (k, v) in &self.entries {
            e.blob(k).blob(v);
        }
        e.finish()
    }
}

/// Why a TMAP update command could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// Not a command we know, or a malformed one.
    Invalid,
    /// `r` of a key that is not there.
    NoKey,
}

impl Tmap {
    /// Applies a TMAPUP buffer: one or more commands (`s` set, `c`
    /// create, `r` remove), in order, as the OSD does. Keys stay sorted.
    /// On error nothing is applied.
    pub fn apply(&mut self, commands: &[u8]) -> Result<(), ApplyError> {
        let mut next = self.entries.clone();
        let mut d = Decoder::new(commands, "tmap command");
        if d.is_empty() {
            return Err(ApplyError::Invalid);
        }
        while !d.is_empty() {
            let op = d.u8().map_err(|_| ApplyError::Invalid)?;
            let key = d.blob().map_err(|_| ApplyError::Invalid)?.to_vec();
            let pos = next.binary_search_by(|(k, _)| k.cmp(&key));
            match op {
                b's' | b'c' => {
                    let value = d.blob().map_err(|_| ApplyError::Invalid)?.to_vec();
                    match pos {
                        Ok(i) if op == b's' => next[i].1 = value,
                        Ok(_) => return Err(ApplyError::Invalid),
                        Err(i) => next.insert(i, (key, value)),
                    }
                }
                b'r' => match pos {
                    Ok(i) => {
                        next.remove(i);
                    }
                    Err(_) => return Err(ApplyError::NoKey),
                },
                _ => return Err(ApplyError::Invalid),
            }
        }
        self.entries = next;
        Ok(())
    }
}

/// The TMAP update commands librbd sends with `rados_tmap_update`.
pub fn set_command(key: &str, value: &[u8]) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u8(b's').string(key).blob(value);
    e.finish()
}

pub fn remove_command(key: &str) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u8(b'r').string(key);
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_the_bytes_seen_on_a_cluster() {
        let bytes = [
            0, 0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, b'v', b'1', b'i', b'm', b'g', 0, 0, 0, 0,
        ];
        let t = Tmap::decode(&bytes).unwrap();
        assert_eq!(t.entries, vec![(b"v1img".to_vec(), vec![])]);
        assert_eq!(t.encode(), bytes);
    }

    #[test]
    fn apply_set_and_remove() {
        let mut t = Tmap::default();
        t.apply(&set_command("b", b"")).unwrap();
        t.apply(&set_command("a", b"x")).unwrap();
        assert_eq!(
            t.entries,
            vec![(b"a".to_vec(), b"x".to_vec()), (b"b".to_vec(), vec![])]
        );
        t.apply(&remove_command("a")).unwrap();
        assert_eq!(t.apply(&remove_command("a")), Err(ApplyError::NoKey));
        assert_eq!(t.apply(&[b'z', 0, 0, 0, 0]), Err(ApplyError::Invalid));
    }

    #[test]
    fn rejects_absurd_counts_without_allocating() {
        let bytes = [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        assert!(Tmap::decode(&bytes).is_err());
    }

    proptest! {
        #[test]
        fn round_trips(entries in proptest::collection::vec((any::<Vec<u8>>(), any::<Vec<u8>>()), 0..20),
                       header in any::<Vec<u8>>()) {
            let t = Tmap { header, entries };
            prop_assert_eq!(Tmap::decode(&t.encode()).unwrap(), t);
        }

        #[test]
        fn never_panics(bytes in any::<Vec<u8>>()) {
            let _ = Tmap::decode(&bytes);
        }
    }
}
