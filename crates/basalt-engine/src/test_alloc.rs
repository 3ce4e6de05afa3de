//! The unit tests' global allocator: the system's, counting per thread the bytes glibc's malloc takes for each
//! allocation (the request and an 8-byte header, in chunks of 16, 32 at least), so a test can compare what a
//! structure charges to the bitmap budget with what it really holds.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static HEAP: Cell<isize> = const { Cell::new(0) };
}

fn chunk(size: usize) -> isize {
    (size + 8).next_multiple_of(16).max(32) as isize
}

fn add(bytes: isize) {
    // `try_with`: nothing to count once the thread's locals are gone.
    let _ = HEAP.try_with(|heap| heap.set(heap.get() + bytes));
}

// SAFETY: every call is passed to `System` as is; only the counting is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees are `System::alloc`'s.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            add(chunk(layout.size()));
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            add(chunk(layout.size()));
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) };
        add(-chunk(layout.size()));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            add(chunk(new_size) - chunk(layout.size()));
        }
        new
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Heap bytes this thread holds now (allocated minus freed, since it started).
pub(crate) fn heap_bytes() -> isize {
    HEAP.with(Cell::get)
}
