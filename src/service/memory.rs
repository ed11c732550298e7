//! Start-up touches a large part of the agent's code once (the configuration loader, the AWS
//! SDK's client set-up, credential chains) and never again. Those pages stay mapped, and count in
//! the daemon's resident memory, for its whole life. Once started, the agent tells the kernel it
//! no longer needs them: the clean, read-only mappings of its own executable are dropped from its
//! page tables (`MADV_DONTNEED`). They stay in the page cache, shared and reclaimable, and a page
//! used again is mapped again on its next access. Mappings holding anything private (relocated
//! data, written pages) are left alone: for those the call would lose what was written. An idle
//! daemon does the same at the end of every status period in which nothing was read or sent, so
//! what stays mapped is what it runs while idle. Then the allocator's free pages are given back
//! (`malloc_trim`).

use std::path::{Path, PathBuf};

/// One mapping of `/proc/self/smaps`: its range, whether it may be written, its file, and the
/// kilobytes of private memory in it.
#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
    writable: bool,
    path: Option<PathBuf>,
    anonymous_kb: u64,
}

fn parse_smaps(text: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).filter(|p| p.starts_with('/')).map(PathBuf::from);
            out.push(Mapping {
                start,
                end,
                writable: perms.contains('w'),
                path,
                // Unknown until read: counted as private, so an unreadable entry is left alone.
                anonymous_kb: u64::MAX,
            });
            continue;
        }
        let Some(last) = out.last_mut() else { continue };
        let kb = || fields.clone().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(u64::MAX);
        if first == "Anonymous:" {
            last.anonymous_kb = kb();
        }
    }
    out
}

/// The mappings whose pages can be dropped: read-only, of the executable, nothing private. A
/// page written in a private file mapping (relocations) is a copy, counted as `Anonymous`;
/// `Private_Dirty` alone is the file's own page cache not yet written back (a binary just
/// installed), which dropping our mapping of does not lose.
fn droppable<'a>(maps: &'a [Mapping], exe: &'a Path) -> impl Iterator<Item = &'a Mapping> {
    maps.iter().filter(move |m| !m.writable && m.path.as_deref() == Some(exe) && m.anonymous_kb == 0)
}

/// Drop the executable's clean pages from the page tables; returns the bytes of the ranges
/// released. Best effort: anything unexpected leaves everything as it is.
pub fn release_code_pages() -> usize {
    let (Ok(exe), Ok(text)) = (std::fs::read_link("/proc/self/exe"), std::fs::read_to_string("/proc/self/smaps"))
    else {
        return 0;
    };
    let maps = parse_smaps(&text);
    drop(text);
    let mut released = 0;
    for m in droppable(&maps, &exe) {
        // SAFETY: the range is a whole mapping of this process, read-only and backed by the
        // executable file with no private pages: dropping its page-table entries loses nothing,
        // and the next access maps the page from the file again.
        let rc = unsafe { libc::madvise(m.start as *mut libc::c_void, m.end - m.start, libc::MADV_DONTNEED) };
        if rc == 0 {
            released += m.end - m.start;
        }
    }
    // Heap freed since start (the configuration's text, the CA bundle's parsing, start-up's
    // buffers) stays with the allocator's arenas; give their free pages back too.
    // SAFETY: malloc_trim only returns free memory of glibc's arenas to the system.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
    released
}

/// One malloc arena for the whole process (glibc gives each thread that contends one of its own,
/// up to 8 per core). Records are read into buffers on one thread and freed on another, and each
/// arena kept the memory freed into it: with one, the peak of a 2,000,000-line run fell from
/// 27-28 to 22-23 MiB at the same CPU per line (the small allocations of the hot path are served
/// by each thread's cache without the arena's lock; at most 4 runtime threads share it). A number
/// set in `GLIBC_TUNABLES` (`glibc.malloc.arena_max`) is left alone. Call before any thread starts.
pub fn one_arena() {
    #[cfg(target_env = "gnu")]
    if !std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max")) {
        // SAFETY: mallopt only changes a malloc parameter; no thread is running yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0100000 r--p 00000000 fd:01 123 /usr/bin/kinesis-agent
Size:               1024 kB
Rss:                 900 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
55d0c0100000-55d0c0d00000 r-xp 00100000 fd:01 123 /usr/bin/kinesis-agent
Rss:                8000 kB
Private_Dirty:      8000 kB
Anonymous:             0 kB
55d0c0d00000-55d0c0e00000 r--p 00d00000 fd:01 123 /usr/bin/kinesis-agent
Private_Dirty:       600 kB
Anonymous:           600 kB
55d0c0e00000-55d0c0e40000 rw-p 00e00000 fd:01 123 /usr/bin/kinesis-agent
Private_Dirty:        40 kB
Anonymous:            40 kB
7f0000000000-7f0000100000 r-xp 00000000 fd:01 9 /usr/lib/x86_64-linux-gnu/libc.so.6
Private_Dirty:         0 kB
Anonymous:             0 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
Anonymous:           100 kB
7f0000400000-7f0000500000 r-xp 00000000 fd:01 123 /usr/bin/kinesis-agent
Rss:                   4 kB
";

    #[test]
    fn only_clean_read_only_mappings_of_the_executable_are_released() {
        let maps = parse_smaps(SMAPS);
        assert_eq!(maps.len(), 7);
        let exe = Path::new("/usr/bin/kinesis-agent");
        let starts: Vec<usize> = droppable(&maps, exe).map(|m| m.start).collect();
        // Not the relocated read-only data (private pages), not the writable data, not libc,
        // not anonymous memory, and not a mapping whose counts could not be read.
        assert_eq!(starts, [0x55d0c0000000, 0x55d0c0100000]);
    }

    #[test]
    fn releasing_keeps_the_process_working() {
        // Whatever the test binary's mappings are, dropping the clean ones and running code
        // and reading constants again must work.
        release_code_pages();
        let v: Vec<u64> = (0..1000).collect();
        assert_eq!(v.iter().sum::<u64>(), 499_500);
        assert_eq!(format!("{:?}", Some("x")), "Some(\"x\")");
    }
}
