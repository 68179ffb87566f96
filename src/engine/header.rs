//! The iifs bitmap-volume header: a versioned, checksummed record of the set's persistent state.
//! Over 500 lines with its tests because it is the whole on-disk format in one place: the
//! encoder, the decoder and the tests that keep them agreeing change together.
//!
//! Layout of a bitmap volume (all integers little-endian):
//! ```text
//! 0      header slot A (4 KiB)
//! 4096   header slot B (4 KiB)   - updates alternate between slots; the valid slot with the
//!                                  higher sequence number wins, so a torn write loses nothing
//! 8192   shadow bitmap  ("chunks that differ"), LSB-first, in 4 KiB pages
//! 8192+L copy bitmap    ("chunks still to copy")
//! 8192+2L chunk map     (compact sets only: master chunk -> shadow or overflow slot, see
//!                        `chunkmap`)
//! ```
//! Header slot: magic "IIFSBMAP", version, sequence, set type, chunk size, master and shadow
//! sizes, state flags, throttle, PIT time, bitmap offsets, durability, then (version 2) the page
//! layout, the copy's total, the generation and the bitmap id; (version 3) the compact shadow's
//! slot count, the attached overflow's id, the last group operation's number, the set's uuid
//! and an imported set's origin uuid; then the set name and the three volume paths
//! (version 3: and the overflow's name; version 2 on: the last error) as length-prefixed strings,
//! and a CRC-32 of everything before it.
//!
//! Bitmap pages of layout `Checked` (every set made by version 2) hold 4088 bytes of bits, 4
//! reserved bytes and a CRC-32 of the page's bytes salted with the bitmap id, the bitmap and the
//! page number: a flipped bit, a page of another set or a page moved in the file fails it. A page
//! and its CRC are one write, so a crash cannot separate them. Version 1 volumes keep their
//! `Plain` pages (all 4096 bytes are bits, no CRC) so that they open as they are.
//!
//! (Over 500 lines with its unit tests, which check the layout of every version and belong
//! beside it.)

use super::error::{invalid, Result};

pub const MAGIC: &[u8; 8] = b"IIFSBMAP";
/// The version this code writes. Version 1 (before page checksums) is still read: its flag bit 7
/// meant two things (see `flags::from_v1`).
pub const VERSION: u32 = 3;
const VERSION_1: u32 = 1;
/// Version 2 had no compact fields: its strings start at `STRINGS_OFFSET_V2`.
const VERSION_2: u32 = 2;
pub const SLOT_SIZE: u64 = 4096;
pub const BITMAPS_OFFSET: u64 = 2 * SLOT_SIZE;
const CRC_OFFSET: usize = SLOT_SIZE as usize - 4;
const STRINGS_OFFSET_V2: usize = 128;
const STRINGS_OFFSET: usize = 192;
pub const MAX_PATH: usize = 1024;

/// State flags kept in the header: every state bit of a set is defined here and only here.
pub mod flags {
    /// A copy runs (or ran and was aborted) master -> shadow.
    pub const TO_SHADOW: u32 = 1 << 0;
    /// A copy runs (or ran and was aborted) shadow -> master.
    pub const TO_MASTER: u32 = 1 << 1;
    /// The copy is active: resume it after a restart.
    pub const ACTIVE: u32 = 1 << 2;
    /// Roll-forward intents, written before a bulk bitmap change and cleared after it:
    /// `copy := all ones`, then `copy |= shadow`, then `shadow := 0`.
    pub const PENDING_FILL_COPY: u32 = 1 << 3;
    pub const PENDING_OR_COPY: u32 = 1 << 4;
    pub const PENDING_CLEAR_SHADOW: u32 = 1 << 5;
    /// The set is offline: a backing volume failed.
    pub const OFFLINE: u32 = 1 << 6;
    /// With OFFLINE: which volumes failed and can no longer be trusted, so that `reset`
    /// rebuilds the right one (a failed shadow is refilled by a full copy from the master; a
    /// sound one keeps its point in time, every chunk then counting as differing).
    pub const OFFLINE_MASTER: u32 = 1 << 7;
    pub const OFFLINE_SHADOW: u32 = 1 << 8;
    pub const OFFLINE_BITMAP: u32 = 1 << 9;
    pub const OFFLINE_ALL: u32 = OFFLINE | OFFLINE_MASTER | OFFLINE_SHADOW | OFFLINE_BITMAP;
    /// Roll-forward intent `shadow := all ones` (every chunk differs: a reset that keeps a
    /// sound shadow).
    pub const PENDING_FILL_SHADOW: u32 = 1 << 10;
    pub const PENDING: u32 =
        PENDING_FILL_COPY | PENDING_OR_COPY | PENDING_CLEAR_SHADOW | PENDING_FILL_SHADOW;
    /// The recorded copy is a full copy (`copy`), not an update: for the status `state`.
    /// Version 1 kept it in bit 7, which OFFLINE_MASTER also used.
    pub const FULL_COPY: u32 = 1 << 11;
    /// A compact set could not preserve a chunk: shadow and overflow were full. Cleared by the
    /// next point in time (`update shadow`, `reset`).
    pub const OUT_OF_SPACE: u32 = 1 << 12;
    /// The shadow was handed to another host (`export`): it is not served here, and master
    /// changes go on being tracked until `join`.
    pub const EXPORTED: u32 = 1 << 13;
    /// The set is a shadow another host exported, taken in here (`import`): it has no master,
    /// and its shadow bitmap records every write to the shadow.
    pub const IMPORTED: u32 = 1 << 14;
    /// With IMPORTED: the imported set was disabled and its bitmap volume let go; it is final,
    /// ready to be joined on the exporting host.
    pub const RELEASED: u32 = 1 << 15;

    /// Every single state bit, for the check below.
    const ALL: [u32; 16] = [
        TO_SHADOW,
        TO_MASTER,
        ACTIVE,
        PENDING_FILL_COPY,
        PENDING_OR_COPY,
        PENDING_CLEAR_SHADOW,
        OFFLINE,
        OFFLINE_MASTER,
        OFFLINE_SHADOW,
        OFFLINE_BITMAP,
        PENDING_FILL_SHADOW,
        FULL_COPY,
        OUT_OF_SPACE,
        EXPORTED,
        IMPORTED,
        RELEASED,
    ];

    // A build with two state flags sharing a bit fails here.
    const _: () = {
        let mut i = 0;
        while i < ALL.len() {
            assert!(ALL[i].count_ones() == 1, "a state flag is not a single bit");
            let mut j = i + 1;
            while j < ALL.len() {
                assert!(ALL[i] & ALL[j] == 0, "two state flags share a bit");
                j += 1;
            }
            i += 1;
        }
    };

    /// Bit 7 of version 1: FULL_COPY in the copy code, OFFLINE_MASTER in the offline code.
    const V1_BIT7: u32 = 1 << 7;

    /// The flags of a version 1 header in today's meaning. Bit 7 with OFFLINE clear can only
    /// be the full-copy mark (version 1 set OFFLINE_MASTER only together with OFFLINE). With
    /// OFFLINE set it may be either; it is read as "the master failed", the reading that trusts
    /// less: an enable on that master is refused until reset and a reset never copies onto it.
    /// If the other meaning was the true one, a full copy to the shadow was recorded, so the
    /// shadow is half copied: that case is covered by also distrusting the shadow whenever a copy
    /// to the shadow is recorded (what today's code records for any failure during such a copy),
    /// so a reset rebuilds it. Which kind the copy was only matters to the state word of a set
    /// that is not offline. (Version 1 could also lose bit 7 of an offline set when a full copy
    /// ended; such a set reads as offline with no failed volume named, and its reset rebuilds the
    /// shadow, as version 1 did.)
    pub fn from_v1(f: u32) -> u32 {
        if f & V1_BIT7 == 0 {
            f
        } else if f & OFFLINE == 0 {
            (f & !V1_BIT7) | FULL_COPY
        } else if f & TO_SHADOW != 0 {
            f | OFFLINE_MASTER | OFFLINE_SHADOW
        } else {
            f | OFFLINE_MASTER
        }
    }
}

/// How a bitmap page is laid out on the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Version 1: the whole 4 KiB page is bits; nothing checks it.
    Plain,
    /// 4088 bytes of bits, 4 reserved bytes, a CRC-32 of the rest (salted, see `page_crc`).
    Checked,
}

/// Bytes of a page.
pub const PAGE_SIZE: u64 = 4096;
/// Where the CRC sits in a `Checked` page.
const PAGE_CRC_AT: usize = PAGE_SIZE as usize - 4;

impl Layout {
    fn code(self) -> u32 {
        match self {
            Layout::Plain => 1,
            Layout::Checked => 2,
        }
    }

    fn from_code(c: u32) -> Option<Layout> {
        match c {
            1 => Some(Layout::Plain),
            2 => Some(Layout::Checked),
            _ => None,
        }
    }

    /// Bitmap bytes one page holds (a multiple of 8, so a page holds whole bitmap words).
    pub fn page_bytes(self) -> u64 {
        match self {
            Layout::Plain => PAGE_SIZE,
            Layout::Checked => PAGE_SIZE - 8,
        }
    }

    /// Bytes of one bitmap region of `chunks` bits: whole pages, at least one.
    pub fn region_len(self, chunks: u64) -> u64 {
        chunks.div_ceil(8).div_ceil(self.page_bytes()).max(1) * PAGE_SIZE
    }
}

/// The CRC of `Checked` page `page` of bitmap `map` (0 shadow, 1 copy) of the set whose bitmap
/// id is `id`: over the id, the map, the page number and the page's first 4092 bytes.
pub fn page_crc(id: u64, map: u8, page: u64, bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&id.to_le_bytes());
    h.update(&[map]);
    h.update(&page.to_le_bytes());
    h.update(&bytes[..PAGE_CRC_AT.min(bytes.len())]);
    h.finalize()
}

/// Seal a `Checked` page: write its CRC into its last 4 bytes.
pub fn seal_page(id: u64, map: u8, page: u64, bytes: &mut [u8]) {
    let crc = page_crc(id, map, page, bytes);
    put32(bytes, PAGE_CRC_AT, crc);
}

/// Whether a `Checked` page holds the CRC it was sealed with.
pub fn page_is_sound(id: u64, map: u8, page: u64, bytes: &[u8]) -> bool {
    bytes.len() == PAGE_SIZE as usize && get32(bytes, PAGE_CRC_AT) == page_crc(id, map, page, bytes)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    Independent,
    Dependent,
}

impl SetKind {
    fn code(self) -> u32 {
        match self {
            SetKind::Independent => 1,
            SetKind::Dependent => 2,
        }
    }
    fn from_code(c: u32) -> Option<SetKind> {
        match c {
            1 => Some(SetKind::Independent),
            2 => Some(SetKind::Dependent),
            _ => None,
        }
    }
    pub fn word(self) -> &'static str {
        match self {
            SetKind::Independent => "independent",
            SetKind::Dependent => "dependent",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Old chunk and its bit are durable before a master write is acknowledged or issued.
    Strict,
    /// Ordering only: survives a daemon crash, not a power loss.
    Relaxed,
}

impl Durability {
    pub fn word(self) -> &'static str {
        match self {
            Durability::Strict => "strict",
            Durability::Relaxed => "relaxed",
        }
    }
    pub fn parse(s: &str) -> Option<Durability> {
        match s {
            "strict" => Some(Durability::Strict),
            "relaxed" => Some(Durability::Relaxed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub seq: u64,
    pub kind: SetKind,
    pub chunk_size: u32,
    pub master_size: u64,
    pub shadow_size: u64,
    pub flags: u32,
    pub throttle_delay_ms: u32,
    pub throttle_units: u32,
    pub pit_time: u64,
    pub durability: Durability,
    pub name: String,
    pub master: String,
    pub shadow: String,
    pub bitmap: String,
    /// How the bitmap pages are laid out (`Plain` only for sets made by version 1).
    pub layout: Layout,
    /// Chunks the recorded copy had to move when it started (0: not known, as for version 1),
    /// so that its progress goes on from where it was after a restart.
    pub copy_total: u64,
    /// Raised at every start and clean stop of the daemon, and remembered outside the bitmap
    /// volume (the registry): a bitmap volume with an older generation is an older copy.
    pub generation: u64,
    /// Chosen when the set is made; salts the page CRCs (a page of another set fails them).
    pub bitmap_id: u64,
    /// Why the set went offline (empty when it is not offline).
    pub last_error: String,
    /// Chunks the shadow volume holds when the set is compact (a dependent shadow smaller than
    /// the master); 0 for a set whose shadow has the master's size.
    pub shadow_slots: u64,
    /// The overflow volume a compact set spills into: its name and its id (0 and "": none).
    pub overflow: String,
    pub overflow_id: u64,
    /// The last group operation this set took (see `Engine::group_copy`): a group operation a
    /// crash interrupted is rolled forward on the members whose number is lower.
    pub group_seq: u64,
    /// The set's identity, chosen when it is made (0: made before sets had one; given one at
    /// the next start). Export, import and join compare it across hosts.
    pub uuid: u128,
    /// An imported set's: the uuid of the set that exported the shadow (0 otherwise).
    pub origin: u128,
}

impl Header {
    pub fn chunks(&self) -> u64 {
        self.master_size.div_ceil(self.chunk_size as u64)
    }

    /// Bytes of one bitmap region, padded to whole 4 KiB pages.
    pub fn bitmap_len(&self) -> u64 {
        self.layout.region_len(self.chunks())
    }

    pub fn shadow_bitmap_offset(&self) -> u64 {
        BITMAPS_OFFSET
    }

    pub fn copy_bitmap_offset(&self) -> u64 {
        BITMAPS_OFFSET + self.bitmap_len()
    }

    /// Whether the set is compact (its chunks live in slots the chunk map names).
    pub fn is_compact(&self) -> bool {
        self.shadow_slots > 0
    }

    /// Where the chunk map of a compact set starts.
    pub fn map_offset(&self) -> u64 {
        BITMAPS_OFFSET + 2 * self.bitmap_len()
    }

    /// Bytes of the chunk map (0 for a set that is not compact).
    pub fn map_len(&self) -> u64 {
        if self.is_compact() {
            map_region_len(self.chunks())
        } else {
            0
        }
    }

    /// The smallest bitmap volume that holds this set.
    pub fn volume_len(&self) -> u64 {
        self.map_offset() + self.map_len()
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut b = vec![0u8; SLOT_SIZE as usize];
        b[0..8].copy_from_slice(MAGIC);
        put32(&mut b, 8, VERSION);
        put32(&mut b, 12, SLOT_SIZE as u32);
        put64(&mut b, 16, self.seq);
        put32(&mut b, 24, self.kind.code());
        put32(&mut b, 28, self.chunk_size);
        put64(&mut b, 32, self.master_size);
        put64(&mut b, 40, self.shadow_size);
        put32(&mut b, 48, self.flags);
        put32(&mut b, 52, self.throttle_delay_ms);
        put32(&mut b, 56, self.throttle_units);
        put64(&mut b, 64, self.pit_time);
        put64(&mut b, 72, self.shadow_bitmap_offset());
        put64(&mut b, 80, self.copy_bitmap_offset());
        put64(&mut b, 88, self.bitmap_len());
        put32(
            &mut b,
            96,
            match self.durability {
                Durability::Strict => 0,
                Durability::Relaxed => 1,
            },
        );
        put32(&mut b, 100, self.layout.code());
        put64(&mut b, 104, self.copy_total);
        put64(&mut b, 112, self.generation);
        put64(&mut b, 120, self.bitmap_id);
        put64(&mut b, 128, self.shadow_slots);
        put64(&mut b, 136, self.overflow_id);
        put64(&mut b, 144, self.group_seq);
        b[152..168].copy_from_slice(&self.uuid.to_le_bytes());
        b[168..184].copy_from_slice(&self.origin.to_le_bytes());
        let mut at = STRINGS_OFFSET;
        for s in [
            &self.name,
            &self.master,
            &self.shadow,
            &self.bitmap,
            &self.overflow,
        ] {
            let bytes = s.as_bytes();
            // Two bytes stay for the length of the last error.
            if bytes.len() > MAX_PATH || at + 2 + bytes.len() + 2 > CRC_OFFSET {
                return Err(invalid(format!(
                    "name or path too long for the bitmap header (at most {MAX_PATH} bytes each, \
                     {} together): '{}' is {} bytes",
                    CRC_OFFSET - STRINGS_OFFSET - 12,
                    one_line(s),
                    bytes.len()
                )));
            }
            b[at..at + 2].copy_from_slice(&(bytes.len() as u16).to_le_bytes());
            b[at + 2..at + 2 + bytes.len()].copy_from_slice(bytes);
            at += 2 + bytes.len();
        }
        // The reason takes the room the paths leave, cut at a character boundary.
        let room = CRC_OFFSET.saturating_sub(at + 2);
        let mut cut = self.last_error.len().min(room);
        while !self.last_error.is_char_boundary(cut) {
            cut -= 1;
        }
        b[at..at + 2].copy_from_slice(&(cut as u16).to_le_bytes());
        b[at + 2..at + 2 + cut].copy_from_slice(&self.last_error.as_bytes()[..cut]);
        let crc = crc32fast::hash(&b[..CRC_OFFSET]);
        put32(&mut b, CRC_OFFSET, crc);
        Ok(b)
    }

    /// Decode one slot; `None` if it is not a valid iifs header (wrong magic, version or CRC).
    /// A version 1 slot reads as version 2 with its flags translated (`flags::from_v1`), plain
    /// pages and nothing known of the newer fields; the next header write stores version 2.
    pub fn decode(b: &[u8]) -> Option<Header> {
        if b.len() < SLOT_SIZE as usize || &b[0..8] != MAGIC {
            return None;
        }
        let version = get32(b, 8);
        if version != VERSION && version != VERSION_2 && version != VERSION_1 {
            return None;
        }
        if crc32fast::hash(&b[..CRC_OFFSET]) != get32(b, CRC_OFFSET) {
            return None;
        }
        let v1 = version == VERSION_1;
        let v3 = version == VERSION;
        let mut at = if v3 {
            STRINGS_OFFSET
        } else {
            STRINGS_OFFSET_V2
        };
        let mut strings = Vec::with_capacity(6);
        let count = match version {
            VERSION_1 => 4,
            VERSION_2 => 5,
            _ => 6,
        };
        for _ in 0..count {
            let n = u16::from_le_bytes([b[at], b[at + 1]]) as usize;
            if at + 2 + n > CRC_OFFSET {
                return None;
            }
            strings.push(String::from_utf8(b[at + 2..at + 2 + n].to_vec()).ok()?);
            at += 2 + n;
        }
        let last_error = if v1 { String::new() } else { strings.pop()? };
        let overflow = if v3 { strings.pop()? } else { String::new() };
        let bitmap = strings.pop()?;
        let shadow = strings.pop()?;
        let master = strings.pop()?;
        let name = strings.pop()?;
        let chunk_size = get32(b, 28);
        // The stripe locks assume no chunk is larger than 1 MiB.
        if !chunk_size.is_power_of_two() || !(512..=1 << 20).contains(&chunk_size) {
            return None;
        }
        Some(Header {
            seq: get64(b, 16),
            kind: SetKind::from_code(get32(b, 24))?,
            chunk_size,
            master_size: get64(b, 32),
            shadow_size: get64(b, 40),
            flags: if v1 {
                flags::from_v1(get32(b, 48))
            } else {
                get32(b, 48)
            },
            throttle_delay_ms: get32(b, 52),
            throttle_units: get32(b, 56),
            pit_time: get64(b, 64),
            durability: if get32(b, 96) == 1 {
                Durability::Relaxed
            } else {
                Durability::Strict
            },
            name,
            master,
            shadow,
            bitmap,
            layout: if v1 {
                Layout::Plain
            } else {
                Layout::from_code(get32(b, 100))?
            },
            copy_total: if v1 { 0 } else { get64(b, 104) },
            generation: if v1 { 0 } else { get64(b, 112) },
            bitmap_id: if v1 { 0 } else { get64(b, 120) },
            last_error,
            shadow_slots: if v3 { get64(b, 128) } else { 0 },
            overflow,
            overflow_id: if v3 { get64(b, 136) } else { 0 },
            group_seq: if v3 { get64(b, 144) } else { 0 },
            // Zero in a version 3 header written before sets had an identity.
            uuid: if v3 { get128(b, 152) } else { 0 },
            origin: if v3 { get128(b, 168) } else { 0 },
        })
    }

    /// The newer of the two slots that decode, if any.
    pub fn pick(slot_a: &[u8], slot_b: &[u8]) -> Option<(Header, usize)> {
        match (Header::decode(slot_a), Header::decode(slot_b)) {
            (Some(a), Some(b)) => Some(if b.seq > a.seq { (b, 1) } else { (a, 0) }),
            (Some(a), None) => Some((a, 0)),
            (None, Some(b)) => Some((b, 1)),
            (None, None) => None,
        }
    }
}

/// A new set identity (a random, version 4 UUID).
pub fn new_uuid() -> u128 {
    uuid::Uuid::new_v4().as_u128()
}

/// `s` fit to quote in a one-line message: control characters and line or paragraph
/// separators written as escapes (`\n`, `\u{2028}`), so that text from outside (a command
/// word, a value in a file) cannot break a refusal over lines.
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                c.escape_default().to_string()
            }
            c => c.to_string(),
        })
        .collect()
}

/// A set identity as people and files write it ("-" for none).
pub fn uuid_text(u: u128) -> String {
    if u == 0 {
        "-".to_string()
    } else {
        uuid::Uuid::from_u128(u).hyphenated().to_string()
    }
}

/// A set identity read back from its text form.
pub fn parse_uuid(s: &str) -> Option<u128> {
    uuid::Uuid::parse_str(s).ok().map(|u| u.as_u128())
}

/// Bytes of one bitmap region of a new set (checked pages).
pub fn bitmap_region_len(chunks: u64) -> u64 {
    Layout::Checked.region_len(chunks)
}

/// Bytes of a chunk map entry.
pub const MAP_ENTRY: u64 = 8;
/// Chunk map entries one page holds (its last 8 bytes: 4 reserved, then the CRC).
pub const MAP_ENTRIES_PER_PAGE: u64 = (PAGE_SIZE - 8) / MAP_ENTRY;

/// Bytes of the chunk map of `chunks` master chunks: whole checked pages, at least one.
pub fn map_region_len(chunks: u64) -> u64 {
    chunks.div_ceil(MAP_ENTRIES_PER_PAGE).max(1) * PAGE_SIZE
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn get128(b: &[u8], at: usize) -> u128 {
    let mut v = [0u8; 16];
    v.copy_from_slice(&b[at..at + 16]);
    u128::from_le_bytes(v)
}
fn get64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            seq: 7,
            kind: SetKind::Dependent,
            chunk_size: 65536,
            master_size: 1 << 30,
            shadow_size: 1 << 30,
            flags: flags::TO_SHADOW | flags::ACTIVE,
            throttle_delay_ms: 5,
            throttle_units: 100,
            pit_time: 1_700_000_000,
            durability: Durability::Relaxed,
            name: "db".into(),
            master: "/srv/m".into(),
            shadow: "/srv/s".into(),
            bitmap: "/srv/b".into(),
            layout: Layout::Checked,
            copy_total: 12,
            generation: 3,
            bitmap_id: 0x1234_5678_9abc,
            last_error: "read of /srv/m: Input/output error".into(),
            shadow_slots: 0,
            overflow: String::new(),
            overflow_id: 0,
            group_seq: 5,
            uuid: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
            origin: 9,
        }
    }

    #[test]
    fn a_compact_set_keeps_its_slots_and_overflow() {
        let mut h = sample();
        h.shadow_slots = 1024;
        h.overflow = "pool".into();
        h.overflow_id = 99;
        let bytes = h.encode().unwrap();
        assert_eq!(Header::decode(&bytes), Some(h.clone()));
        assert_eq!(h.map_offset(), BITMAPS_OFFSET + 2 * h.bitmap_len());
        // 16384 chunks of 64 KiB, 511 entries a page.
        assert_eq!(
            h.map_len(),
            16384u64.div_ceil(MAP_ENTRIES_PER_PAGE) * PAGE_SIZE
        );
        assert_eq!(h.volume_len(), h.map_offset() + h.map_len());
        h.shadow_slots = 0;
        assert_eq!(h.volume_len(), h.map_offset());
    }

    #[test]
    fn round_trip() {
        let h = sample();
        let bytes = h.encode().unwrap();
        assert_eq!(Header::decode(&bytes), Some(h));
    }

    #[test]
    fn corrupt_slot_is_rejected_and_newer_slot_wins() {
        let mut h = sample();
        let a = h.encode().unwrap();
        h.seq = 8;
        let mut b = h.encode().unwrap();
        assert_eq!(Header::pick(&a, &b).unwrap().0.seq, 8);
        b[200] ^= 1;
        assert_eq!(Header::pick(&a, &b).unwrap().0.seq, 7);
    }

    #[test]
    fn chunks_larger_than_a_stripe_are_rejected() {
        let mut h = sample();
        h.chunk_size = 2 << 20;
        assert_eq!(Header::decode(&h.encode().unwrap()), None);
        h.chunk_size = 1 << 20;
        assert!(Header::decode(&h.encode().unwrap()).is_some());
    }

    #[test]
    fn region_is_page_padded() {
        assert_eq!(Layout::Plain.region_len(1), 4096);
        assert_eq!(Layout::Plain.region_len(4096 * 8), 4096);
        assert_eq!(Layout::Plain.region_len(4096 * 8 + 1), 8192);
        assert_eq!(bitmap_region_len(1), 4096);
        assert_eq!(bitmap_region_len(4088 * 8), 4096);
        assert_eq!(bitmap_region_len(4088 * 8 + 1), 8192);
    }

    /// A version 1 slot as version 1 wrote it (the strings after 128, no newer fields).
    fn v1_slot(flags: u32) -> Vec<u8> {
        let mut h = sample();
        h.flags = flags;
        h.last_error.clear();
        let mut b = h.encode().unwrap();
        put32(&mut b, 8, VERSION_1);
        // Version 1's strings start at 128: move them down, the empty overflow name dropped.
        let strings = b[STRINGS_OFFSET..CRC_OFFSET - (STRINGS_OFFSET - STRINGS_OFFSET_V2)].to_vec();
        b[100..CRC_OFFSET].fill(0);
        b[STRINGS_OFFSET_V2..STRINGS_OFFSET_V2 + strings.len()].copy_from_slice(&strings);
        let crc = crc32fast::hash(&b[..CRC_OFFSET]);
        put32(&mut b, CRC_OFFSET, crc);
        b
    }

    #[test]
    fn version_1_bit_7_is_read_by_the_other_flags() {
        use flags::*;
        let read = |f| Header::decode(&v1_slot(f)).unwrap();
        let h = read(TO_SHADOW | ACTIVE | (1 << 7));
        assert_eq!(h.flags, TO_SHADOW | ACTIVE | FULL_COPY);
        assert_eq!(
            (h.layout, h.copy_total, h.generation),
            (Layout::Plain, 0, 0)
        );
        assert_eq!(h.last_error, "");
        assert_eq!(read(OFFLINE | (1 << 7)).flags, OFFLINE | OFFLINE_MASTER);
        // Ambiguous, with a copy to the shadow recorded: neither volume is trusted.
        assert_eq!(
            read(OFFLINE | TO_SHADOW | (1 << 7)).flags,
            OFFLINE | TO_SHADOW | OFFLINE_MASTER | OFFLINE_SHADOW
        );
        assert_eq!(read(TO_MASTER).flags, TO_MASTER);
        // Written again, it is a version 2 header that keeps today's meaning.
        let again = Header::decode(&h.encode().unwrap()).unwrap();
        assert_eq!(again.flags & FULL_COPY, FULL_COPY);
    }

    #[test]
    fn last_error_is_cut_to_the_room_left() {
        let mut h = sample();
        h.master = "/m".repeat(500);
        h.shadow = "/s".repeat(500);
        h.bitmap = "/b".repeat(500);
        h.last_error = "é".repeat(3000);
        let back = Header::decode(&h.encode().unwrap()).unwrap();
        assert!(back.last_error.len() < h.last_error.len());
        assert!(back.last_error.len() > 100);
        assert!(h.last_error.starts_with(&back.last_error));
    }

    #[test]
    fn page_crc_catches_flips_and_foreign_pages() {
        let mut page = vec![0u8; PAGE_SIZE as usize];
        page[17] = 0x5a;
        seal_page(9, 0, 3, &mut page);
        assert!(page_is_sound(9, 0, 3, &page));
        assert!(!page_is_sound(9, 1, 3, &page), "the copy bitmap's page 3");
        assert!(!page_is_sound(9, 0, 4, &page), "another page");
        assert!(!page_is_sound(8, 0, 3, &page), "another set");
        page[100] ^= 0x11;
        assert!(!page_is_sound(9, 0, 3, &page));
        assert!(
            !page_is_sound(9, 0, 0, &[0u8; PAGE_SIZE as usize]),
            "a page of zeros"
        );
    }
}
