//! The checker of a bitmap volume (`iiadm check`, and the daemon before it brings a set back):
//! the header, both bitmaps, a compact set's chunk map and its overflow accounting, against
//! what the registry recorded of the set. It only reads; `repair` reclaims what is harmless to
//! reclaim (leaks) and never touches a volume that holds corruption.
//!
//! A finding is a *leak* when the point in time is whole and only space or work is wasted
//! (a bit past the last chunk, chunks marked to copy with no copy recorded, a chunk-map slot
//! of a chunk that holds nothing, a damaged spare header slot), and *corruption* when which
//! chunks of the shadow are valid is no longer known (no sound header, a page that fails its
//! checksum, a slot outside its volume or shared by two chunks, a chunk marked preserved with
//! no slot, the wrong overflow volume, an older copy of the volume).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::Arc;

use super::bitmap::Bitmap;
use super::chunkmap::{ChunkMap, Slot};
use super::error::VolumeFault;
use super::header::{self, flags, Header, Layout, PAGE_SIZE, SLOT_SIZE};
use super::overflow::{slot_end, OverflowHeader};
use super::tracking::{Map, Tracking};
use super::volume::Volume;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Harmless: `repair` reclaims it.
    Leak,
    /// Which chunks of the shadow are valid is not known: nothing repairs it in place.
    Corrupt,
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub severity: Severity,
    pub text: String,
}

/// What a check found, and what a repair did.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub repaired: Vec<String>,
    /// The set's header, when one could be read.
    pub header: Option<Header>,
    /// The overflow slots the chunk map uses (for the accounting across sets).
    pub overflow_slots: Vec<u64>,
    leaks: Leaks,
}

/// The leaks found, in the form `repair` needs.
#[derive(Debug, Default)]
struct Leaks {
    spare_slot: bool,
    past_end: Vec<Map>,
    copy_bits: Vec<u64>,
    map_entries: Vec<u64>,
}

impl Report {
    /// 0 clean, 1 leaks only, 2 corruption.
    pub fn status(&self) -> u8 {
        match self.findings.iter().map(|f| f.severity).max() {
            None => 0,
            Some(Severity::Leak) => 1,
            Some(Severity::Corrupt) => 2,
        }
    }

    /// The first corruption found, if any.
    pub fn corruption(&self) -> Option<&str> {
        self.findings
            .iter()
            .find(|f| f.severity == Severity::Corrupt)
            .map(|f| f.text.as_str())
    }

    fn leak(&mut self, text: String) {
        self.findings.push(Finding {
            severity: Severity::Leak,
            text,
        });
    }

    fn corrupt(&mut self, text: String) {
        self.findings.push(Finding {
            severity: Severity::Corrupt,
            text,
        });
    }
}

/// What the registry recorded of the set a bitmap volume belongs to (see
/// `SetRecord::recorded`).
pub struct Recorded<'a> {
    pub name: &'a str,
    pub master: &'a str,
    pub shadow: &'a str,
    pub bitmap: &'a str,
    /// The bitmap volume's generation when the record was written.
    pub generation: u64,
}

/// At most this many findings of one kind are listed one by one.
const LISTED: usize = 8;

/// Check the bitmap volume `vol`, against the registry's record of its set when known, and
/// the overflow volume the set spills into when it has one and it is known.
pub fn inspect(
    vol: &Arc<dyn Volume>,
    record: Option<&Recorded<'_>>,
    overflow: Option<&dyn Volume>,
) -> io::Result<Report> {
    let mut r = Report::default();
    let mut slots = vec![0u8; 2 * SLOT_SIZE as usize];
    if vol.len() < slots.len() as u64 {
        r.corrupt(format!(
            "the volume is {} bytes, too short for an iifs bitmap volume",
            vol.len()
        ));
        return Ok(r);
    }
    vol.read_at(&mut slots, 0)?;
    let (a, b) = slots.split_at(SLOT_SIZE as usize);
    let Some((h, current)) = Header::pick(a, b) else {
        r.corrupt(format!(
            "{}: not an iifs bitmap volume, or both copies of its header are damaged",
            VolumeFault::NoHeader
        ));
        return Ok(r);
    };
    let spare = if current == 0 { b } else { a };
    // A spare slot is all zeros until the first header update; anything else must decode.
    if spare.iter().any(|&x| x != 0) && Header::decode(spare).is_none() {
        r.leak(format!(
            "header slot {} (the spare copy) is damaged; the current header is sound",
            1 - current
        ));
        r.leaks.spare_slot = true;
    }
    if let Some(rec) = record {
        check_record(&mut r, &h, rec);
    }
    if vol.len() < h.volume_len() {
        r.corrupt(format!(
            "{} ({} bytes; the set needs {})",
            VolumeFault::BitmapTooShort {
                len: vol.len(),
                need: h.volume_len()
            },
            vol.len(),
            h.volume_len()
        ));
        r.header = Some(h);
        return Ok(r);
    }
    let chunks = h.chunks();
    let (shd, cpy) = (Bitmap::new(chunks), Bitmap::new(chunks));
    for (map, bits) in [(Map::Shadow, &shd), (Map::Copy, &cpy)] {
        read_map(&mut r, vol.as_ref(), &h, map, bits)?;
    }
    roll_forward(h.flags, &shd, &cpy);
    if h.flags & (flags::TO_SHADOW | flags::TO_MASTER) == 0 && cpy.count() > 0 {
        let mut c = cpy.next_set(0);
        while let Some(chunk) = c {
            r.leaks.copy_bits.push(chunk);
            c = cpy.next_set(chunk + 1);
        }
        r.leak(format!(
            "{} chunks are marked to copy, but no copy is recorded",
            r.leaks.copy_bits.len()
        ));
    }
    if h.is_compact() {
        check_map(&mut r, vol, &h, &shd, overflow)?;
    }
    r.header = Some(h);
    Ok(r)
}

/// The header against the registry's record of the set (the daemon's own refusals, in the
/// same words).
fn check_record(r: &mut Report, h: &Header, rec: &Recorded<'_>) {
    if h.name != rec.name || h.master != rec.master || h.shadow != rec.shadow {
        r.corrupt(format!(
            "bitmap volume {} belongs to set {} ({} -> {}), not to {}",
            rec.bitmap, h.name, h.master, h.shadow, rec.name
        ));
    }
    if h.generation < rec.generation {
        r.corrupt(format!(
            "bitmap volume {} is an older copy of itself (generation {}, the registry recorded \
             {}): its bitmaps are out of date; put the current bitmap volume back, or disable \
             the set and enable it again",
            rec.bitmap, h.generation, rec.generation
        ));
    }
}

/// Read bitmap `map` into `bits`, checking every page's checksum and that no bit past the last
/// chunk is set.
fn read_map(
    r: &mut Report,
    vol: &dyn Volume,
    h: &Header,
    map: Map,
    bits: &Bitmap,
) -> io::Result<()> {
    let (offset, word) = match map {
        Map::Shadow => (h.shadow_bitmap_offset(), "shadow"),
        Map::Copy => (h.copy_bitmap_offset(), "copy"),
    };
    let mut raw = vec![0u8; h.bitmap_len() as usize];
    vol.read_at(&mut raw, offset)?;
    let keep = h.layout.page_bytes() as usize;
    let mut bytes = Vec::with_capacity(raw.len());
    let mut bad = Vec::new();
    for (page, p) in raw.chunks(PAGE_SIZE as usize).enumerate() {
        if h.layout == Layout::Checked
            && !header::page_is_sound(h.bitmap_id, map as u8, page as u64, p)
        {
            bad.push(page as u64);
        }
        bytes.extend_from_slice(&p[..keep.min(p.len())]);
    }
    for &page in bad.iter().take(LISTED) {
        r.corrupt(
            VolumeFault::BadPage {
                map: word,
                page,
                offset: offset + page * PAGE_SIZE,
            }
            .to_string(),
        );
    }
    if bad.len() > LISTED {
        r.corrupt(format!(
            "{} more pages of the {word} bitmap fail their checksums",
            bad.len() - LISTED
        ));
    }
    let chunks = h.chunks() as usize;
    let full = chunks / 8;
    let tail_mask = match chunks % 8 {
        0 => 0xff,
        n => 0xffu8 << n,
    };
    let past_end = bytes
        .get(full)
        .is_some_and(|&b| b & tail_mask != 0 && chunks % 8 != 0)
        || bytes
            .iter()
            .skip(full + usize::from(chunks % 8 != 0))
            .any(|&b| b != 0);
    if past_end && bad.is_empty() {
        r.leak(format!(
            "bits past the last chunk ({chunks}) are set in the {word} bitmap"
        ));
        r.leaks.past_end.push(map);
    }
    bits.load_bytes(&bytes);
    Ok(())
}

/// The bitmaps as the daemon will see them once it finishes an interrupted bulk change.
fn roll_forward(f: u32, shd: &Bitmap, cpy: &Bitmap) {
    if f & flags::PENDING_FILL_COPY != 0 {
        cpy.fill();
    }
    if f & flags::PENDING_OR_COPY != 0 {
        cpy.or_with(shd);
    }
    if f & flags::PENDING_CLEAR_SHADOW != 0 {
        shd.clear_all();
    }
    if f & flags::PENDING_FILL_SHADOW != 0 {
        shd.fill();
    }
}

/// A compact set's chunk map: every slot inside its volume and used once, every preserved
/// chunk with a slot (unless the set ran out of space), the overflow volume the one the set
/// was attached to.
fn check_map(
    r: &mut Report,
    vol: &Arc<dyn Volume>,
    h: &Header,
    shd: &Bitmap,
    overflow: Option<&dyn Volume>,
) -> io::Result<()> {
    // Loading only reads.
    let map = match ChunkMap::load(Arc::clone(vol), h.map_offset(), h.chunks(), h.bitmap_id) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            r.corrupt(format!(
                "the chunk map of the compact shadow is damaged: {e}"
            ));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let overflow_end = match (h.overflow_id, overflow) {
        (0, _) => None,
        (_, None) => None,
        (id, Some(o)) => match OverflowHeader::read(o) {
            None => {
                r.corrupt(format!(
                    "overflow volume {} holds no sound overflow header",
                    h.overflow
                ));
                None
            }
            Some(oh) if oh.id != id || oh.chunk_size != h.chunk_size as u64 => {
                r.corrupt(format!(
                    "the overflow volume registered as {} is not the one set {} was attached \
                     to (id {:x} chunk size {}, the set recorded id {id:x} chunk size {})",
                    h.overflow, h.name, oh.id, oh.chunk_size, h.chunk_size
                ));
                None
            }
            Some(oh) => Some(slot_end(oh.size, oh.chunk_size)),
        },
    };
    let mut owner: HashMap<Slot, u64> = HashMap::new();
    let mut problems: BTreeMap<&'static str, Vec<u64>> = BTreeMap::new();
    for (c, slot) in map.mapped() {
        if !shd.get(c) {
            r.leaks.map_entries.push(c);
            continue;
        }
        let outside = match slot {
            Slot::Shadow(n) => n >= h.shadow_slots,
            Slot::Overflow(n) => {
                r.overflow_slots.push(n);
                h.overflow_id == 0 || n == 0 || overflow_end.is_some_and(|end| n >= end)
            }
        };
        if outside {
            problems
                .entry("have a slot outside their volume (or an overflow slot with no overflow)")
                .or_default()
                .push(c);
        }
        if owner.insert(slot, c).is_some() {
            problems
                .entry("share a slot with another chunk")
                .or_default()
                .push(c);
        }
    }
    if h.flags & flags::OUT_OF_SPACE == 0 {
        let mut c = shd.next_set(0);
        while let Some(chunk) = c {
            if map.get(chunk).is_none() {
                problems
                    .entry(
                        "are marked preserved but have no slot, and the set never ran out of space",
                    )
                    .or_default()
                    .push(chunk);
            }
            c = shd.next_set(chunk + 1);
        }
    }
    for (what, chunks) in problems {
        let listed: Vec<String> = chunks.iter().take(LISTED).map(u64::to_string).collect();
        let more = match chunks.len() > LISTED {
            true => format!(" and {} more", chunks.len() - LISTED),
            false => String::new(),
        };
        r.corrupt(format!(
            "chunks {}{more} of the compact shadow {what}",
            listed.join(", ")
        ));
    }
    if !r.leaks.map_entries.is_empty() {
        r.leak(format!(
            "{} chunk-map slots are held by chunks that hold nothing",
            r.leaks.map_entries.len()
        ));
    }
    Ok(())
}

/// Overflow slots used by more than one set attached to the same overflow volume.
pub fn shared_overflow_slots(used: &[(String, Vec<u64>)]) -> Vec<Finding> {
    let mut by_slot: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for (set, slots) in used {
        for &s in slots {
            by_slot.entry(s).or_default().push(set);
        }
    }
    by_slot
        .into_iter()
        .filter(|(_, sets)| sets.len() > 1)
        .take(LISTED)
        .map(|(slot, sets)| Finding {
            severity: Severity::Corrupt,
            text: format!(
                "overflow slot {slot} is used by sets {} at once",
                sets.join(" and ")
            ),
        })
        .collect()
}

/// Reclaim the leaks `report` found on `vol` (the caller has checked there is no corruption):
/// what was done, one line each.
pub fn repair(vol: Arc<dyn Volume>, report: &Report) -> io::Result<Vec<String>> {
    let leaks = &report.leaks;
    let mut done = Vec::new();
    // Opening the volume as the daemon does finishes an interrupted bulk change too.
    let t = Tracking::open(vol.clone())?;
    if leaks.spare_slot {
        t.update_header(|_| {})?;
        done.push("rewrote the damaged spare header slot".to_string());
    }
    if !leaks.copy_bits.is_empty() {
        t.clear_now(Map::Copy, &leaks.copy_bits)?;
        done.push(format!(
            "cleared {} copy bits no copy was going to use",
            leaks.copy_bits.len()
        ));
    }
    for &map in &leaks.past_end {
        // Rewriting the last page from memory drops the bits past the end.
        let last = t.header().chunks().saturating_sub(1);
        t.persist(&[(map, last, t.test(map, last))])?;
        done.push("cleared the bits past the last chunk".to_string());
    }
    if let (Some(map), false) = (t.chunk_map(), leaks.map_entries.is_empty()) {
        let changes: Vec<(u64, Option<Slot>)> =
            leaks.map_entries.iter().map(|&c| (c, None)).collect();
        map.set(&changes)?;
        done.push(format!(
            "freed {} chunk-map slots of chunks that hold nothing",
            changes.len()
        ));
    }
    vol.sync()?;
    Ok(done)
}
