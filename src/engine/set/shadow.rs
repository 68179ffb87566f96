//! The shadow's I/O: writes and discards (after the copy rules moved what must move first),
//! reads redirected to the master where the shadow's content still lives there, and the
//! master reads redirected to the shadow while an update of the master runs.

use std::sync::Arc;

use super::super::chunk::{check_range, region_spans};
use super::super::error::{Error, Kind, Result, Role};
use super::super::header::flags;
use super::super::master::{Imager, Master, Work};
use super::super::tracking::Map;
use super::super::volume::Volume;
use super::Set;

impl Set {
    pub fn write_shadow(&self, data: &[u8], offset: u64) -> Result<()> {
        self.change_shadow(offset, data.len() as u64, "write to", |off, at, n| {
            self.shadow.write_at(&data[at..at + n], off)
        })
    }

    /// A user discard (punch hole) on the shadow: a write of zeros to the image; the backing
    /// file gives the space back where it can.
    pub fn discard_shadow(&self, offset: u64, len: u64) -> Result<()> {
        self.change_shadow(offset, len, "discard on", |off, _, n| {
            self.shadow.punch_hole(off, n as u64)
        })
    }

    /// Change shadow bytes `[offset, offset+len)` with `apply(offset, index into the request,
    /// length)`, region by region, once the copy rules have moved what must move first.
    pub(super) fn change_shadow(
        &self,
        offset: u64,
        len: u64,
        what: &str,
        apply: impl Fn(u64, usize, usize) -> std::io::Result<()>,
    ) -> Result<()> {
        check_range(
            offset,
            len,
            self.size,
            &format!("the shadow of set {}", self.name),
        )?;
        if self.is_offline() && !self.shadow_writable_offline() {
            return Err(self.offline_error());
        }
        self.check_preserved(offset, len, Kind::NoSpace)?;
        self.check_room(offset, len)?;
        self.master
            .with_sets(|sets| self.change_shadow_pieces(sets, offset, len, what, &apply))
    }

    pub(super) fn change_shadow_pieces(
        &self,
        sets: &[Arc<dyn Imager>],
        offset: u64,
        len: u64,
        what: &str,
        apply: &dyn Fn(u64, usize, usize) -> std::io::Result<()>,
    ) -> Result<()> {
        for (off, at, n) in region_spans(offset, len) {
            let _stripe = self.master.lock_region(off);
            let f = self.flags();
            let mut own = Work::default();
            let mut push = Work::default();
            for c in self.chunks_of(off, n as u64) {
                self.plan_chunk(f, c, &mut own, &mut push);
            }
            // Checked for the whole write before; again here, where another set sharing the
            // overflow may have taken the last slots meanwhile.
            if let Some(compact) = &self.compact {
                if !compact.has_room_for(&own.to_shadow) {
                    return Err(self.no_room());
                }
            }
            if !push.is_empty() {
                for &c in &push.to_master {
                    let (o, l) = self.chunk_span(c);
                    self.master
                        .prepare_change(sets, o, l, Some(self as &dyn Imager));
                }
                self.apply(push).map_err(|e| self.fail(e))?;
            }
            self.apply(own).map_err(|e| self.fail(e))?;
            // A compact shadow that could not preserve a chunk just now refuses the write.
            self.check_preserved(off, n as u64, Kind::NoSpace)?;
            apply(off, at, n).map_err(|e| {
                self.fail(Error::io_on(
                    Role::Shadow,
                    format!("{what} shadow {}", self.paths.shadow),
                    &e,
                ))
            })?;
        }
        Ok(())
    }

    /// A compact shadow that cannot preserve the chunks of `[offset, offset+len)` a write
    /// would need refuses the write before anything changes (they keep reading from the master).
    fn check_room(&self, offset: u64, len: u64) -> Result<()> {
        let Some(compact) = &self.compact else {
            return Ok(());
        };
        let to_master = self.is_copying_to_master();
        let need: Vec<u64> = self
            .chunks_of(offset, len)
            .filter(|&c| {
                let preserved = self.tracking.test(Map::Shadow, c);
                let pushed = to_master && self.tracking.test(Map::Copy, c);
                !(preserved || pushed)
            })
            .collect();
        if compact.has_room_for(&need) {
            Ok(())
        } else {
            Err(self.no_room())
        }
    }

    fn no_room(&self) -> Error {
        Error::new(
            Kind::NoSpace,
            format!(
                "the shadow of set {} and its overflow are full: a write to a chunk not yet \
                 preserved needs a slot; 'update shadow' frees them, and an overflow volume \
                 ('attach') gives more",
                self.name
            ),
        )
    }

    /// Where the shadow's content of `chunk` lives right now: on the master or on the shadow.
    pub(super) fn shadow_reads_master(&self, chunk: u64) -> bool {
        let f = self.flags();
        (f & flags::TO_SHADOW != 0 && self.tracking.test(Map::Copy, chunk))
            || (self.is_dependent() && !self.tracking.test(Map::Shadow, chunk))
    }

    pub fn read_shadow(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        // A sound independent shadow reads from itself alone (no copy to it is recorded): it
        // stays readable when only the master or the bitmap failed.
        if self.is_offline() && !self.shadow_sound() {
            return Err(self.offline_error());
        }
        let _gate = self.gate_read();
        self.check_preserved(offset, buf.len() as u64, Kind::Io)?;
        let shadow = (
            self.shadow.as_ref() as &dyn Volume,
            self.paths.shadow.as_str(),
            Role::Shadow,
        );
        let master = (
            self.master.vol.as_ref(),
            self.paths.master.as_str(),
            Role::Master,
        );
        self.read_redirected(buf, offset, shadow, master, |c| self.shadow_reads_master(c))
            .map_err(
                |e| match self.check_preserved(offset, buf.len() as u64, Kind::Io) {
                    // A chunk lost (out of space) during the read: not a failed volume.
                    Err(lost) => lost,
                    Ok(()) => self.fail(e),
                },
            )
    }

    /// A master read while this set updates the master: chunks not yet copied come from the shadow.
    pub fn read_master_through(&self, master: &Master, buf: &mut [u8], offset: u64) -> Result<()> {
        if self.is_offline() {
            return self.read_master_unsettled(master, buf, offset);
        }
        let home = (
            master.vol.as_ref(),
            self.paths.master.as_str(),
            Role::Master,
        );
        let shadow = (
            self.shadow.as_ref() as &dyn Volume,
            self.paths.shadow.as_str(),
            Role::Shadow,
        );
        // A compact chunk that lost its point in time reads as the master holds it.
        self.read_redirected(buf, offset, home, shadow, |c| {
            self.is_copying_to_master() && self.tracking.test(Map::Copy, c) && !self.slotless(c)
        })
    }

    /// A master read after this set went offline with a copy onto the master recorded. The
    /// chunks that copy had not finished read as the shadow's until then; now they are neither
    /// that (the shadow failed, or an offline set no longer pushes it before master writes) nor
    /// surely the old master (the copy may have written part of them): reading them fails
    /// until `reset` or a finished `copy master` settles them. Other chunks read from the master.
    pub(super) fn read_master_unsettled(
        &self,
        master: &Master,
        buf: &mut [u8],
        offset: u64,
    ) -> Result<()> {
        if let Some(c) = self
            .chunks_of(offset, buf.len() as u64)
            .find(|&c| self.tracking.test(Map::Copy, c))
        {
            return Err(Error::new(
                Kind::Io,
                format!(
                    "chunk {c} of master {} was not yet restored from the shadow of set {} \
                     when the set went offline ({}); its content is unknown: {}",
                    self.paths.master,
                    self.name,
                    self.last_error()
                        .unwrap_or_else(|| "a volume failed".into()),
                    self.unsettled_advice()
                ),
            ));
        }
        master
            .vol
            .read_at(buf, offset)
            .map_err(|e| Error::io_on(Role::Master, format!("read of master {}", master.path), &e))
    }

    /// Read chunk by chunk from `home`, or from `elsewhere` for chunks where `redirected` says
    /// the content lives there now. A writer moves the bit before it changes `elsewhere`, so a
    /// redirected read that sees the bit moved afterwards is done again from `home`.
    pub(super) fn read_redirected(
        &self,
        buf: &mut [u8],
        offset: u64,
        home: (&dyn Volume, &str, Role),
        elsewhere: (&dyn Volume, &str, Role),
        redirected: impl Fn(u64) -> bool,
    ) -> Result<()> {
        let read = |(vol, path, role): (&dyn Volume, &str, Role), piece: &mut [u8], off: u64| {
            vol.read_at(piece, off)
                .map_err(|e| Error::io_on(role, format!("read of {path}"), &e))
        };
        let mut at = 0usize;
        while at < buf.len() {
            let off = offset + at as u64;
            let c = off / self.chunk_size;
            let chunk_end = ((c + 1) * self.chunk_size).min(self.size);
            let n = ((chunk_end - off) as usize).min(buf.len() - at);
            let piece = &mut buf[at..at + n];
            loop {
                let away = redirected(c);
                let r = read(if away { elsewhere } else { home }, piece, off);
                // The chunk moved during the read (a writer moves the bit before it changes
                // the side the bit leaves): read it again where it is now.
                if redirected(c) != away {
                    continue;
                }
                r?;
                break;
            }
            at += n;
        }
        Ok(())
    }

    /// fsync of the `shadow` file: the shadow's bytes and bits, then the master as its own
    /// fsync does it (a shadow write during an update of the master may have pushed chunks
    /// onto it, and other sets may have preserved chunks before that).
    pub fn sync_all(&self) -> Result<()> {
        self.sync_shadow_and_bits()?;
        self.master.sync()
    }

    /// The shadow, then the bitmap volume: a bit is never durable before the chunk it vouches
    /// for.
    pub(super) fn sync_shadow_and_bits(&self) -> Result<()> {
        self.shadow.sync().map_err(|e| {
            Error::io_on(Role::Shadow, format!("sync of {}", self.paths.shadow), &e)
        })?;
        self.tracking
            .vol
            .sync()
            .map_err(|e| self.bitmap_error("sync", &e))
    }
}
