//! The two CRC-32 variants the on-disk formats use, from one table builder:
//! IEEE CRC-32 (GPT headers and partition arrays) and Castagnoli CRC-32C
//! (Ceph's object-map footer).

/// The lookup table of a reflected (LSB-first) CRC-32 with polynomial
/// `poly` (given reflected), built at compile time.
const fn reflected_table(poly: u32) -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ poly } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC32_TABLE: [u32; 256] = reflected_table(0xedb8_8320);
static CRC32C_TABLE: [u32; 256] = reflected_table(0x82f6_3b78);

/// The register update of a table-driven reflected CRC, no inversions.
fn update(table: &[u32; 256], seed: u32, bytes: impl IntoIterator<Item = u8>) -> u32 {
    bytes.into_iter().fold(seed, |c, b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// The standard CRC-32 (IEEE, as zlib and the UEFI spec) of the
/// concatenated parts.
pub fn crc32_parts(parts: &[&[u8]]) -> u32 {
    !update(
        &CRC32_TABLE,
        !0,
        parts.iter().flat_map(|p| p.iter().copied()),
    )
}

/// Ceph's `ceph_crc32c(seed, data)`: the CRC-32C register update without
/// the standard pre- and post-inversion (standard CRC-32C of `data` is
/// `!crc32c(!0, data)`).
pub fn crc32c(seed: u32, data: &[u8]) -> u32 {
    update(&CRC32C_TABLE, seed, data.iter().copied())
}
