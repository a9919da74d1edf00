//! Partition tables of a disk image: MBR (primary entries) and GPT (the
//! primary header at LBA 1, 512- or 4096-byte logical sectors), as the
//! Linux kernel reads them (`block/partitions/msdos.c`, `efi.c`):
//! partitions are numbered by their slot (MBR 1-4, GPT entry index + 1),
//! so `N` here is `sdaN` there.
//!
//! The caller reads the first [`SCAN_BYTES`] of the image (fewer if it is
//! smaller) and passes them with the image's size; no I/O happens here.
//! What cannot be trusted is left out with a reason, never a panic:
//! an entry that is out of range or overlaps an earlier one (that
//! partition), a GPT header or entry array with a bad CRC32 or impossible
//! fields (the whole table). Logical partitions inside an MBR extended
//! partition are not followed (their chain is spread over the disk): the
//! extended entry is left out with a reason. The backup GPT at the end of
//! the disk is not read. Allocation is bounded by the input: at most
//! [`SCAN_BYTES`] / 128 entries.

use super::crc::crc32_parts;

/// How much of the image's start the caller reads: the MBR, and the GPT
/// header and a 128-entry array at 512 (17 KiB) or 4096 bytes per
/// sector (24 KiB).
pub const SCAN_BYTES: usize = 64 * 1024;

/// At most this many reasons are kept (then "and N more").
const MAX_PROBLEMS: usize = 16;

const MBR_SIGNATURE: [u8; 2] = [0x55, 0xaa];
const MBR_ENTRIES: usize = 446;
const MBR_PROTECTIVE: u8 = 0xee;
const MBR_EXTENDED: [u8; 3] = [0x05, 0x0f, 0x85];
const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
const GPT_HEADER_MIN: usize = 92;
const GPT_ENTRY_MIN: usize = 128;

/// Which kind of table was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Mbr,
    /// `sector`: the logical sector size, 512 or 4096.
    Gpt {
        sector: u32,
    },
}

/// One partition, in bytes of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub number: u32,
    pub offset: u64,
    pub length: u64,
}

impl Partition {
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// What [`parse`] found. `scheme` None with no problems: no partition
/// table (a bare file system, zeros); with problems: a table was there
/// but is corrupt as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub scheme: Option<Scheme>,
    /// By number, ascending.
    pub partitions: Vec<Partition>,
    /// Why partitions (or the whole table) were left out.
    pub problems: Vec<String>,
}

impl Table {
    pub fn partition(&self, number: u32) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.number == number)
    }

    fn problem(&mut self, reason: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(reason);
        } else if self.problems.len() == MAX_PROBLEMS {
            self.problems.push("more problems left out".to_string());
        }
    }

    fn bad(reason: String) -> Table {
        Table {
            scheme: None,
            partitions: Vec::new(),
            problems: vec![reason],
        }
    }

    /// Adds a partition unless it overlaps one already taken.
    fn add(&mut self, p: Partition) {
        if let Some(q) = self
            .partitions
            .iter()
            .find(|q| p.offset < q.end() && q.offset < p.end())
        {
            let reason = format!("partition {} overlaps partition {}", p.number, q.number);
            self.problem(reason);
        } else {
            self.partitions.push(p);
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// The partition table at the start of an image of `disk_size` bytes;
/// `head` is its first [`SCAN_BYTES`] (or all of it, if smaller).
pub fn parse(head: &[u8], disk_size: u64) -> Table {
    let Some(mbr) = head.get(..512) else {
        return Table::default();
    };
    if mbr[510..512] != MBR_SIGNATURE {
        return Table::default();
    }
    let entry = |i: usize| &mbr[MBR_ENTRIES + 16 * i..MBR_ENTRIES + 16 * (i + 1)];
    // A boot flag other than 0/0x80: a file system's boot sector (FAT),
    // not a partition table.
    if (0..4).any(|i| entry(i)[0] & 0x7f != 0) {
        return Table::default();
    }
    if (0..4).any(|i| entry(i)[4] == MBR_PROTECTIVE) {
        return parse_gpt(head, disk_size);
    }
    let mut table = Table {
        scheme: Some(Scheme::Mbr),
        ..Table::default()
    };
    let sectors = disk_size / 512;
    for i in 0..4 {
        let e = entry(i);
        let number = i as u32 + 1;
        let kind = e[4];
        let start = u64::from(u32_at(e, 8).unwrap_or(0));
        let count = u64::from(u32_at(e, 12).unwrap_or(0));
        if kind == 0 || count == 0 {
            continue;
        }
        if MBR_EXTENDED.contains(&kind) {
            table.problem(format!(
                "partition {number} is an extended partition (type {kind:#04x}): \
                 its logical partitions are not shown"
            ));
            continue;
        }
        if start == 0 {
            table.problem(format!("partition {number} starts at sector 0 (the MBR)"));
            continue;
        }
        if start + count > sectors {
            table.problem(format!(
                "partition {number} (sectors {start}+{count}) ends past the image's end \
                 ({sectors} sectors)"
            ));
            continue;
        }
        table.add(Partition {
            number,
            offset: start * 512,
            length: count * 512,
        });
    }
    table
}

/// The GPT behind a protective MBR: the primary header at LBA 1 of a
/// 512-byte, else a 4096-byte sector disk.
fn parse_gpt(head: &[u8], disk_size: u64) -> Table {
    let Some(sector) = [512usize, 4096]
        .into_iter()
        .find(|&s| head.get(s..s + 8) == Some(&GPT_SIGNATURE[..]))
    else {
        return Table::bad("protective MBR, but no GPT header at LBA 1".to_string());
    };
    match gpt_at(head, disk_size, sector) {
        Ok(t) => t,
        Err(reason) => Table::bad(format!("GPT header at byte {sector}: {reason}")),
    }
}

fn gpt_at(head: &[u8], disk_size: u64, sector: usize) -> Result<Table, String> {
    let hdr = &head[sector..];
    let header_size = u32_at(hdr, 12).ok_or("truncated")? as usize;
    if !(GPT_HEADER_MIN..=sector).contains(&header_size) {
        return Err(format!("header size {header_size}"));
    }
    let bytes = hdr.get(..header_size).ok_or("truncated")?;
    let want = u32_at(bytes, 16).ok_or("truncated")?;
    let crc = crc32_parts(&[&bytes[..16], &[0; 4], &bytes[20..]]);
    if crc != want {
        return Err(format!("header CRC32 {crc:#010x}, recorded {want:#010x}"));
    }
    let field = |at| u64_at(bytes, at).ok_or("truncated");
    let (my_lba, first_usable, last_usable, entries_lba) =
        (field(24)?, field(40)?, field(48)?, field(72)?);
    let count = u32_at(bytes, 80).ok_or("truncated")? as usize;
    let entry_size = u32_at(bytes, 84).ok_or("truncated")? as usize;
    let entries_crc = u32_at(bytes, 88).ok_or("truncated")?;
    let sectors = disk_size / sector as u64;
    if my_lba != 1 {
        return Err(format!("says it is at LBA {my_lba}"));
    }
    if first_usable > last_usable || last_usable >= sectors {
        return Err(format!(
            "usable sectors {first_usable}..={last_usable} are not within the image's \
             {sectors} sectors"
        ));
    }
    if entry_size < GPT_ENTRY_MIN || !entry_size.is_multiple_of(8) || entry_size > SCAN_BYTES {
        return Err(format!("entry size {entry_size}"));
    }
    let start = usize::try_from(entries_lba)
        .ok()
        .filter(|&l| l >= 2)
        .and_then(|l| l.checked_mul(sector));
    let end = start.and_then(|s| s.checked_add(count.checked_mul(entry_size)?));
    let (Some(start), Some(end)) = (start, end) else {
        return Err(format!(
            "entry array at LBA {entries_lba} of {count} entries"
        ));
    };
    let Some(array) = head.get(start..end).filter(|_| end <= SCAN_BYTES) else {
        return Err(format!(
            "entry array (bytes {start}..{end}) is not within the first {} bytes",
            head.len().min(SCAN_BYTES)
        ));
    };
    let crc = crc32_parts(&[array]);
    if crc != entries_crc {
        return Err(format!(
            "entry array CRC32 {crc:#010x}, recorded {entries_crc:#010x}"
        ));
    }
    let mut table = Table {
        scheme: Some(Scheme::Gpt {
            sector: sector as u32,
        }),
        ..Table::default()
    };
    let ss = sector as u64;
    for (i, e) in array.chunks_exact(entry_size).enumerate() {
        let number = i as u32 + 1;
        if e[..16].iter().all(|&b| b == 0) {
            continue;
        }
        let (first, last) = (u64_at(e, 32).unwrap_or(0), u64_at(e, 40).unwrap_or(0));
        if first > last || first < first_usable || last > last_usable {
            table.problem(format!(
                "partition {number} (sectors {first}..={last}) is not within the usable \
                 sectors {first_usable}..={last_usable}"
            ));
            continue;
        }
        // last <= last_usable < sectors: the products fit.
        table.add(Partition {
            number,
            offset: first * ss,
            length: (last - first + 1) * ss,
        });
    }
    Ok(table)
}

/// An MBR (512 bytes) with these primary entries: (type, first sector,
/// sector count) in slots 1.. . For tests and fuzzing.
pub fn encode_mbr(entries: &[(u8, u32, u32)]) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    for (i, &(kind, start, count)) in entries.iter().take(4).enumerate() {
        let e = &mut b[MBR_ENTRIES + 16 * i..MBR_ENTRIES + 16 * (i + 1)];
        e[4] = kind;
        e[8..12].copy_from_slice(&start.to_le_bytes());
        e[12..16].copy_from_slice(&count.to_le_bytes());
    }
    b[510..512].copy_from_slice(&MBR_SIGNATURE);
    b
}

/// The first bytes of a GPT disk of `sectors` sectors of `sector` bytes,
/// as sfdisk lays it out: protective MBR, header at LBA 1, 128 entries
/// at LBA 2; `parts` are (first, last) sectors, inclusive, in slots 1.. .
/// For tests and fuzzing.
pub fn encode_gpt(sector: usize, sectors: u64, parts: &[(u64, u64)]) -> Vec<u8> {
    let entries_len: usize = 128 * 128;
    let array_sectors = entries_len.div_ceil(sector);
    let mut b = vec![0u8; sector * (2 + array_sectors)];
    let pmbr = encode_mbr(&[(
        MBR_PROTECTIVE,
        1,
        u32::try_from(sectors - 1).unwrap_or(u32::MAX),
    )]);
    b[..512].copy_from_slice(&pmbr);
    let array = &mut b[2 * sector..2 * sector + entries_len];
    for (i, &(first, last)) in parts.iter().take(128).enumerate() {
        let e = &mut array[128 * i..128 * (i + 1)];
        // Linux filesystem data, and a unique partition GUID.
        e[..16].copy_from_slice(&[
            0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47,
            0x7d, 0xe4,
        ]);
        e[16] = i as u8 + 1;
        e[32..40].copy_from_slice(&first.to_le_bytes());
        e[40..48].copy_from_slice(&last.to_le_bytes());
    }
    let array_crc = crc32_parts(&[&b[2 * sector..2 * sector + entries_len]]);
    let first_usable = 2 + array_sectors as u64;
    let last_usable = sectors.saturating_sub(first_usable);
    let h = &mut b[sector..sector + 92];
    h[..8].copy_from_slice(GPT_SIGNATURE);
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&1u64.to_le_bytes());
    h[32..40].copy_from_slice(&(sectors - 1).to_le_bytes());
    h[40..48].copy_from_slice(&first_usable.to_le_bytes());
    h[48..56].copy_from_slice(&last_usable.to_le_bytes());
    h[56..72].copy_from_slice(&[0x42; 16]);
    h[72..80].copy_from_slice(&2u64.to_le_bytes());
    h[80..84].copy_from_slice(&128u32.to_le_bytes());
    h[84..88].copy_from_slice(&128u32.to_le_bytes());
    h[88..92].copy_from_slice(&array_crc.to_le_bytes());
    let crc = crc32_parts(&[h]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn parts(t: &Table) -> Vec<(u32, u64, u64)> {
        t.partitions
            .iter()
            .map(|p| (p.number, p.offset, p.length))
            .collect()
    }

    #[test]
    fn crc32_is_the_standard_one() {
        assert_eq!(crc32_parts(&[b"123456789"]), 0xcbf4_3926);
        assert_eq!(crc32_parts(&[b"1234", b"56789"]), 0xcbf4_3926);
        assert_eq!(crc32_parts(&[]), 0);
    }

    #[test]
    fn no_table() {
        for head in [vec![], vec![0; 511], vec![0; SCAN_BYTES], vec![0xff; 4096]] {
            assert_eq!(parse(&head, GIB), Table::default());
        }
        // A FAT boot sector: signature, but boot flags that are code.
        let mut fat = encode_mbr(&[(0x83, 2048, 2048)]);
        fat[MBR_ENTRIES] = 0x3c;
        assert_eq!(parse(&fat, GIB), Table::default());
    }

    #[test]
    fn mbr_primary_entries_numbered_by_slot() {
        let mut head = encode_mbr(&[(0x83, 2048, 4096), (0, 0, 0), (0x0c, 8192, 2048)]);
        head.resize(SCAN_BYTES, 0);
        let t = parse(&head, GIB);
        assert_eq!(t.scheme, Some(Scheme::Mbr));
        assert_eq!(
            parts(&t),
            [(1, 1 << 20, 2 << 20), (3, 4 << 20, 1 << 20)],
            "{t:?}"
        );
        assert!(t.problems.is_empty());
        assert_eq!(t.partition(3).unwrap().end(), 5 << 20);
        assert!(t.partition(2).is_none());
    }

    #[test]
    fn mbr_bad_entries_are_left_out_with_a_reason() {
        let sectors = (GIB / 512) as u32;
        let head = encode_mbr(&[
            (0x83, 2048, 4096),
            (0x83, 4000, 100),         // overlaps 1
            (0x05, 10000, 100),        // extended
            (0x83, sectors - 10, 100), // past the end
        ]);
        let t = parse(&head, GIB);
        assert_eq!(parts(&t), [(1, 1 << 20, 2 << 20)]);
        assert_eq!(t.problems.len(), 3, "{t:?}");
        assert!(t.problems[0].contains("overlaps partition 1"));
        assert!(t.problems[1].contains("extended"));
        assert!(t.problems[2].contains("past the image's end"));
        let t = parse(&encode_mbr(&[(0x83, 0, 10)]), GIB);
        assert!(t.partitions.is_empty() && t.problems.len() == 1);
    }

    #[test]
    fn gpt_512() {
        let sectors = GIB / 512;
        let head = encode_gpt(512, sectors, &[(2048, 4095), (4096, sectors - 34)]);
        let t = parse(&head, GIB);
        assert_eq!(t.scheme, Some(Scheme::Gpt { sector: 512 }));
        assert!(t.problems.is_empty(), "{t:?}");
        assert_eq!(
            parts(&t),
            [
                (1, 1 << 20, 1 << 20),
                (2, 2 << 20, GIB - (2 << 20) - 33 * 512)
            ]
        );
    }

    #[test]
    fn gpt_4096() {
        let sectors = GIB / 4096;
        let head = encode_gpt(4096, sectors, &[(256, 511)]);
        let t = parse(&head, GIB);
        assert_eq!(t.scheme, Some(Scheme::Gpt { sector: 4096 }));
        assert_eq!(parts(&t), [(1, 1 << 20, 1 << 20)]);
    }

    #[test]
    fn gpt_corrupt_header_or_array_drops_the_table() {
        let sectors = GIB / 512;
        let good = encode_gpt(512, sectors, &[(2048, 4095)]);
        for (at, what) in [(512 + 40, "header CRC32"), (1024 + 33, "entry array CRC32")] {
            let mut head = good.clone();
            head[at] ^= 1;
            let t = parse(&head, GIB);
            assert_eq!(t.scheme, None);
            assert!(t.partitions.is_empty());
            assert_eq!(t.problems.len(), 1);
            assert!(t.problems[0].contains(what), "{t:?}");
        }
        // Protective MBR without a GPT.
        let t = parse(&good[..512], GIB);
        assert!(t.scheme.is_none() && t.problems.len() == 1, "{t:?}");
        // The disk is smaller than the header says.
        let t = parse(&good, GIB / 2);
        assert!(
            t.scheme.is_none() && t.problems[0].contains("usable"),
            "{t:?}"
        );
        // Truncated input.
        let t = parse(&good[..4096], GIB);
        assert!(t.scheme.is_none() && t.problems[0].contains("entry array"));
    }

    #[test]
    fn gpt_bad_entries_are_left_out() {
        let sectors = GIB / 512;
        let head = encode_gpt(
            512,
            sectors,
            &[
                (2048, 4095),
                (3000, 5000),
                (10, 20),
                (9000, 8000),
                (8192, 8192),
            ],
        );
        let t = parse(&head, GIB);
        assert_eq!(parts(&t), [(1, 1 << 20, 1 << 20), (5, 4 << 20, 512)]);
        assert_eq!(t.problems.len(), 3, "{t:?}");
    }

    #[test]
    fn many_problems_are_bounded() {
        let sectors = GIB / 512;
        let all: Vec<_> = (0..128).map(|_| (2048, 4095)).collect();
        let t = parse(&encode_gpt(512, sectors, &all), GIB);
        assert_eq!(t.partitions.len(), 1);
        assert_eq!(t.problems.len(), MAX_PROBLEMS + 1);
    }
}
