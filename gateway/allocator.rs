//! The global allocator: mimalloc, asked for plain blocks whenever a plain block is aligned
//! enough.
//!
//! The `mimalloc` crate sends every request through `mi_malloc_aligned`. In mimalloc 3 that
//! call takes its fast path only when a free block of the size class happens to be at hand,
//! and otherwise over-allocates from a bigger class unless the class size is a power of two.
//! Most of our blocks (24, 40, 48, 80 bytes...) are not, so about one allocation in seven
//! took the slow path: 3,100 instructions per proxied request (benches/README.md).
//! mimalloc's author advises plain `mi_malloc` for small alignments
//! (microsoft/mimalloc#314), as Rust's own `System` allocator does with malloc.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// A page's first block is 16-byte aligned and every size class is a multiple of 8 (of 16
/// past 64 bytes), so a plain block of a size that is a multiple of the alignment is
/// aligned when the alignment is at most this (`MI_MAX_ALIGN_SIZE`).
const PLAIN_ALIGN: usize = 16;

fn plain(align: usize, size: usize) -> bool {
    align <= PLAIN_ALIGN && size.is_multiple_of(align)
}

pub struct Mimalloc;

/// A new block from `plain_call(size)` when a plain block is aligned enough, else from
/// `aligned_call(size, align)`.
#[inline(always)]
fn new_block(
    layout: Layout,
    plain_call: unsafe extern "C" fn(usize) -> *mut c_void,
    aligned_call: unsafe extern "C" fn(usize, usize) -> *mut c_void,
) -> *mut u8 {
    let (size, align) = (layout.size(), layout.align());
    // SAFETY: plain FFI calls; mimalloc accepts any size and power-of-two alignment.
    let p = unsafe {
        if plain(align, size) {
            plain_call(size)
        } else {
            aligned_call(size, align)
        }
    };
    p.cast()
}

// SAFETY: every block comes from mimalloc and goes back to it (`mi_free` and `mi_realloc`
// take blocks from either kind of call); `plain` picks the aligned calls whenever a plain
// block might not meet the layout's alignment.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        new_block(layout, mi::mi_malloc, mi::mi_malloc_aligned)
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        new_block(layout, mi::mi_zalloc, mi::mi_zalloc_aligned)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: the caller passes a block this allocator returned.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        // SAFETY: the caller passes a block this allocator returned, with its layout.
        let p = unsafe {
            if plain(align, new_size) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size)
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, align)
            }
        };
        p.cast()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes up to 4 KiB (and some past mimalloc's small and large classes) at every
    /// alignment up to 256: the block is aligned, usable, and keeps its bytes when it grows
    /// or shrinks.
    #[test]
    fn blocks_meet_their_alignment() {
        let sizes = (1..=1100).chain((1100..=4200).step_by(52)).chain([
            8_000,
            65_536,
            100_000,
            1 << 20,
            (4 << 20) + 8,
        ]);
        for size in sizes {
            for align in [1, 2, 4, 8, 16, 32, 64, 256] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero size; every block is written within its size, then
                // freed once with its own layout.
                unsafe {
                    let p = Mimalloc.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size}, align {align}");
                    p.write_bytes(0xa5, size);
                    let grown = size * 3 + 5;
                    let q = Mimalloc.realloc(p, layout, grown);
                    assert_eq!(q as usize % align, 0, "realloc to {grown}, align {align}");
                    assert!(
                        std::slice::from_raw_parts(q, size)
                            .iter()
                            .all(|b| *b == 0xa5)
                    );
                    let shrunk = size.div_ceil(2);
                    let r =
                        Mimalloc.realloc(q, Layout::from_size_align(grown, align).unwrap(), shrunk);
                    assert_eq!(r as usize % align, 0, "realloc to {shrunk}, align {align}");
                    assert!(
                        std::slice::from_raw_parts(r, shrunk)
                            .iter()
                            .all(|b| *b == 0xa5)
                    );
                    Mimalloc.dealloc(r, Layout::from_size_align(shrunk, align).unwrap());

                    let z = Mimalloc.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed size {size}, align {align}");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|b| *b == 0));
                    Mimalloc.dealloc(z, layout);
                }
            }
        }
    }
}
