//! How much memory a set needs, and whether the daemon can have it: a set too large for the
//! memory left is refused with the figure, before anything is allocated or written (an
//! allocation that fails aborts the whole daemon, every set with it).

use super::error::{Error, Kind, Result};
use super::header::{bitmap_region_len, Header};

/// Memory the daemon keeps for itself beyond what sets need (threads, buffers of copies).
const RESERVE: u64 = 64 << 20;

/// Bytes of memory a set over `chunks` chunks takes: four bitmaps of one bit per chunk (the
/// shadow and the copy map, each as the I/O paths see it and as it is being written) and one
/// bitmap's worth of buffer while a map is read or written whole.
pub fn set_bytes(chunks: u64) -> u64 {
    let map = chunks.div_ceil(64).saturating_mul(8);
    map.saturating_mul(4)
        .saturating_add(bitmap_region_len(chunks))
}

/// Refuse (ENOMEM, with the figures) a set that needs more memory than the daemon can have;
/// `extra` bytes are needed besides while it is enabled.
pub fn check(name: &str, header: &Header, extra: u64) -> Result<()> {
    // A compact set also keeps its chunk map in memory (8 bytes a chunk), and its pages once
    // more while the map is read or written whole.
    let map = if header.is_compact() {
        header
            .chunks()
            .saturating_mul(8)
            .saturating_add(header.map_len())
    } else {
        0
    };
    let need = set_bytes(header.chunks())
        .saturating_add(map)
        .saturating_add(extra);
    let Some(avail) = available() else {
        return Ok(());
    };
    if need.saturating_add(RESERVE) <= avail {
        return Ok(());
    }
    Err(Error::new(
        Kind::NoMemory,
        format!(
            "needs {} of memory for its bitmaps ({} chunks of {} bytes over {} \
             bytes), but the daemon can have {} more; use a larger chunk size (each doubling \
             halves it) or give the daemon more memory",
            mib(need),
            header.chunks(),
            header.chunk_size,
            header.master_size,
            mib(avail.saturating_sub(RESERVE))
        ),
    )
    .in_set(name))
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes.div_ceil(1 << 20))
}

/// The memory this process can still allocate: the least of the system's available memory,
/// its address space and data limits (setrlimit, `prlimit --as`) and its cgroup's limit.
/// `None` when none of them can be read.
pub fn available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    [
        kib_field(&meminfo, "MemAvailable:"),
        limit_headroom(libc::RLIMIT_AS, kib_field(&status, "VmSize:")),
        limit_headroom(libc::RLIMIT_DATA, kib_field(&status, "VmData:")),
        cgroup_headroom(),
    ]
    .into_iter()
    .flatten()
    .min()
}

/// A "Key:   N kB" line of a /proc file, in bytes.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

fn limit_headroom(resource: libc::__rlimit_resource_t, used: Option<u64>) -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    if unsafe { libc::getrlimit(resource, &mut lim) } != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(lim.rlim_cur.saturating_sub(used.unwrap_or(0)))
}

/// memory.max minus memory.current of this process's cgroup (v2).
fn cgroup_headroom() -> Option<u64> {
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cg.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    let max: u64 = read("memory.max")?.trim().parse().ok()?;
    let current: u64 = read("memory.current")?.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_grows_with_chunks() {
        // 1 GiB in 64 KiB chunks: 16384 chunks, 2 KiB per map, one 4 KiB page of buffer.
        assert_eq!(set_bytes(16384), 4 * 2048 + 4096);
        // 1 PiB in 4 KiB chunks: 2^38 chunks, 32 GiB per map, and one map's worth of buffer
        // (a little over 32 GiB: the pages carry checksums).
        assert_eq!(
            set_bytes(1 << 38),
            4 * (32 << 30) + bitmap_region_len(1 << 38)
        );
        assert!(set_bytes(1 << 38) < 5 * (33 << 30));
        assert_eq!(
            kib_field("MemAvailable:   2048 kB\n", "MemAvailable:"),
            Some(2 << 20)
        );
        assert!(available().is_some());
    }
}
