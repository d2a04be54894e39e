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
