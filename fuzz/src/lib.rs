//! What every fuzz target links: an allocator that aborts on any single allocation over
//! [`MAX_ALLOCATION`], so that a parser trusting a size it read is a finding (libFuzzer keeps
//! the input that did it), not a machine out of memory.
//!
//! It stands in for libFuzzer's `-malloc_limit_mb`, which needs a sanitizer's malloc hooks:
//! the targets are built without AddressSanitizer (`-s none`), as every parser here is safe
//! Rust and the sanitizer more than doubles the build of burn.

use std::alloc::{GlobalAlloc, Layout, System};

/// The largest allocation any target may make: 128 MiB.
pub const MAX_ALLOCATION: usize = 128 << 20;

struct Bounded;

unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn check(size: usize) {
    if size > MAX_ALLOCATION {
        // Formatting into stderr allocates nothing.
        eprintln!("fuzz: an allocation of {size} bytes, over the bound of {MAX_ALLOCATION}");
        std::process::abort();
    }
}

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;
