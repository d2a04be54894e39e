//! The process allocator: mimalloc, called the way its C API is fastest.
//!
//! The `mimalloc` crate's `GlobalAlloc` sends every request through `mi_malloc_aligned`, whose
//! fast path only covers blocks up to 1 KiB: every larger block (a stored body, a read buffer)
//! took the generic aligned path, about 230 instructions more, although Rust asks for more than
//! word alignment only for a few types (tokio's task cells). Here word-aligned requests go to
//! `mi_malloc`, which aligns every block to the word; the rest keep the aligned calls.
//!
//! Also here: whether the kernel may back the process's memory with transparent huge pages
//! (`cache.transparent_huge_pages`, off by default). mimalloc asks for them on its arenas
//! (`MADV_HUGEPAGE`); the process-wide switch outranks that.
//!
//! And the memory budget claimed at start-up (`cache.preallocate`, off by default): see
//! [`preallocate`]; or, without it, freed memory handed back to the system within a fraction of
//! a second: see [`start_purging`].

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// mimalloc, with plain calls for the alignment every block has.
pub struct MiMalloc;

/// Every mimalloc block is aligned to the machine word.
const WORD: usize = std::mem::size_of::<usize>();

unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation calls accept any size; alignment is a power of two.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from one of the calls above (GlobalAlloc's contract).
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout` (GlobalAlloc's contract); the
        // block keeps its alignment.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

/// Lets the kernel back this process's memory with transparent huge pages, or not
/// (`PR_SET_THP_DISABLE`, kept across `fork` and `execve`). Without them, memory is faulted in
/// 4 KiB at a time: a cache growing one stored object at a time no longer stops, with every
/// connection it serves, while the kernel clears a whole 2 MiB page (milliseconds on a VM whose
/// host backs that memory only at its first touch).
#[cfg(target_os = "linux")]
pub fn set_transparent_huge_pages(on: bool) -> std::io::Result<()> {
    let disable = libc::c_ulong::from(!on);
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and touches no memory of ours.
    let r = unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, disable, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Elsewhere there is no such switch: the system's policy applies.
#[cfg(not(target_os = "linux"))]
pub fn set_transparent_huge_pages(_on: bool) -> std::io::Result<()> {
    Ok(())
}

/// mimalloc v3's `mi_option_purge_delay` (its `include/mimalloc.h`), which libmimalloc-sys does
/// not name. A unit test checks that the option reads v3's default (1000 ms, its `options.c`).
const MI_OPTION_PURGE_DELAY: mi::mi_option_t = 15;

/// How long mimalloc keeps freed memory before handing it back to the system, unless the
/// environment sets `MIMALLOC_PURGE_DELAY`: a tenth of v3's default.
const PURGE_DELAY_MS: libc::c_long = 100;

/// How often the purging thread lets mimalloc hand back the memory that is due.
const PURGE_TICK: std::time::Duration = std::time::Duration::from_millis(50);

/// Has freed memory handed back to the system within about [`PURGE_DELAY_MS`] +
/// [`PURGE_TICK`] (150 ms) of its free, whatever the rest of the process does.
///
/// mimalloc hands freed memory back (`purge`) only after its purge delay (1 s in v3), and only
/// when one of its calls that allocate or free runs afterwards: once a fill is over and the
/// workers wait for requests, none does, and what the fill freed (its buffers, the objects it
/// evicted) stays resident for good. A thread of its own calls `mi_collect(false)` every tick,
/// which purges what is due and nothing more; with the shorter delay, what a fill freed is back
/// with the system a fraction of a second after the fill, not a second or more.
///
/// The price: a block freed and not reused within the delay is faulted in again when it is,
/// which in a long run of large misses is more often than with the 1 s delay. Measured in
/// `benches/RESULTS.md` ("Memory budget with large objects").
pub fn start_purging() -> std::io::Result<()> {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: setting an option is allowed at any time; mimalloc reads it at its next purge.
        unsafe { mi::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    std::thread::Builder::new().name("purge".into()).spawn(|| {
        // SAFETY: no preconditions. mimalloc's collection does nothing on a thread it has not
        // set up, and this one may not have allocated through it yet.
        unsafe { mi::mi_thread_init() };
        loop {
            std::thread::sleep(PURGE_TICK);
            // SAFETY: no preconditions; collects this thread's (empty) heap and purges the
            // freed memory of the whole process that is due.
            unsafe { mi::mi_collect(false) };
        }
    })?;
    Ok(())
}

/// Blocks the preallocation asks mimalloc for. Small enough to come from mimalloc's arenas, the
/// memory later allocations are served from (its largest blocks are mapped on their own and
/// unmapped when freed); large enough that one `madvise` faults in 16 pages.
const PREALLOCATION_BLOCK: usize = 64 << 10;

/// Claims `bytes` of memory for the process and faults in every page of it, then hands it back
/// to the allocator, which from then on keeps what it has instead of returning freed memory to
/// the system.
///
/// What it buys: a cache that grows one stored object at a time takes new memory on every
/// miss, and each new page is a page fault (0.4 per stored 1 KiB object). On a virtual machine
/// whose host backs guest memory only at its first touch, or takes back what the guest frees
/// (free page reporting), such a fault costs several microseconds, and what it costs depends on
/// what ran before. Measured here: 1.5 µs per 4 KiB page served from memory the host still
/// backs, 9.6 µs from memory it does not. Paid once at start-up instead, before the listener
/// opens, a miss costs about a tenth less (`benches/RESULTS.md`, eleventh pass).
/// What it costs: the budget is resident from the start, and start-up takes a few seconds per
/// GiB on such a machine. The JVM's `-XX:+AlwaysPreTouch` and memcached's `-L` make the same trade.
///
/// Fails, before claiming anything, when the system reports less memory available than asked
/// (`MemAvailable`); and when faulting in fails, after freeing what it claimed.
pub fn preallocate(bytes: u64) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    if let Some(available) = available_memory() {
        if bytes > available {
            return Err(Error::new(
                ErrorKind::OutOfMemory,
                format!("{} MiB asked, {} MiB available", bytes >> 20, available >> 20),
            ));
        }
    }
    let count = usize::try_from(bytes.div_ceil(PREALLOCATION_BLOCK as u64))
        .map_err(|_| Error::new(ErrorKind::OutOfMemory, "more than this machine can address"))?;
    // SAFETY: setting an option is allowed at any time; mimalloc reads it at its next purge.
    unsafe { mi::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let mut blocks: Vec<*mut c_void> = Vec::with_capacity(count);
    let mut result = Ok(());
    for _ in 0..count {
        // SAFETY: any size may be asked for; a null answer is handled.
        let block = unsafe { mi::mi_malloc(PREALLOCATION_BLOCK) };
        if block.is_null() {
            result = Err(Error::new(ErrorKind::OutOfMemory, "the allocator found no more memory"));
            break;
        }
        blocks.push(block);
        // SAFETY: `block` is ours, PREALLOCATION_BLOCK bytes long, and holds nothing yet.
        if let Err(e) = unsafe { fault_in(block.cast(), PREALLOCATION_BLOCK) } {
            result = Err(e);
            break;
        }
    }
    for block in blocks {
        // SAFETY: every block came from `mi_malloc` above and is freed once.
        unsafe { mi::mi_free(block) };
    }
    result
}

/// Makes every page of `[start, start + len)` resident: `MADV_POPULATE_WRITE` (Linux 5.14) faults
/// in the whole pages inside at once and a write to the first and the last byte does the pages
/// at the ends; without it (other systems, older kernels), one write a page.
///
/// # Safety
/// The range must be memory the caller owns and may overwrite, at least one byte long.
unsafe fn fault_in(start: *mut u8, len: usize) -> std::io::Result<()> {
    const PAGE: usize = 4096;
    // SAFETY (every write below): inside the caller's range, which it may overwrite; volatile,
    // so that a write is not dropped for a value nobody reads.
    let touch = |offset: usize| unsafe { start.add(offset).write_volatile(0) };
    #[cfg(target_os = "linux")]
    {
        let first = (start as usize).next_multiple_of(PAGE);
        let end = (start as usize + len) & !(PAGE - 1);
        // SAFETY: the whole pages lie inside the caller's range.
        let r = if end > first {
            unsafe { libc::madvise(first as *mut c_void, end - first, libc::MADV_POPULATE_WRITE) }
        } else {
            0
        };
        if r == 0 {
            touch(0);
            touch(len - 1);
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        // EINVAL: a kernel without MADV_POPULATE_WRITE; the writes below do the same.
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(e);
        }
    }
    (0..len).step_by(PAGE).for_each(touch);
    touch(len - 1);
    Ok(())
}

/// What the system can give without swapping (`MemAvailable` in `/proc/meminfo`), where known.
fn available_memory() -> Option<u64> {
    kib_field(&std::fs::read_to_string("/proc/meminfo").ok()?, "MemAvailable:")
}

/// A `Name:   1234 kB` line of a `/proc` file, in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib << 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn transparent_huge_pages_switch_both_ways() {
        // SAFETY: PR_GET_THP_DISABLE takes integer arguments only.
        let disabled = || unsafe {
            libc::prctl(
                libc::PR_GET_THP_DISABLE,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        set_transparent_huge_pages(false).unwrap();
        assert_eq!(disabled(), 1);
        set_transparent_huge_pages(true).unwrap();
        assert_eq!(disabled(), 0);
        set_transparent_huge_pages(false).unwrap();
        assert_eq!(disabled(), 1);
    }

    /// The one test that touches mimalloc's purge option, so no other test sees it change.
    #[cfg(target_os = "linux")]
    #[test]
    fn preallocation_keeps_the_memory_it_faulted_in() {
        // SAFETY: reading an option has no preconditions.
        let delay = || unsafe { mi::mi_option_get(MI_OPTION_PURGE_DELAY) };
        // mimalloc v3's default, unless the environment sets one: the number names the option.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(delay(), 1000, "MI_OPTION_PURGE_DELAY is not mimalloc's purge_delay");
        }
        preallocate(64 << 20).expect("64 MiB");
        assert_eq!(delay(), -1, "freed memory is kept");
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let resident = kib_field(&status, "VmRSS:").expect("VmRSS");
        assert!(resident >= 64 << 20, "{resident} bytes resident after preallocating 64 MiB");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn preallocation_refuses_more_than_the_system_has() {
        let e = preallocate(u64::MAX / 2).expect_err("no machine has that");
        assert_eq!(e.kind(), std::io::ErrorKind::OutOfMemory);
        assert!(e.to_string().contains("MiB available"), "{e}");
    }

    #[test]
    fn blocks_have_the_alignment_asked_for() {
        let a = MiMalloc;
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [1, 7, 8, 24, 100, 1025, 5000, 70_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero size; every block is freed with its layout.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write_bytes(0xab, size);
                    let q = a.realloc(p, layout, size * 3);
                    assert_eq!(q as usize % align, 0, "realloc size {size} align {align}");
                    assert_eq!(*q.add(size - 1), 0xab, "realloc keeps the contents");
                    a.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
