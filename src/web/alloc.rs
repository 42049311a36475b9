//! The wasm allocator: power-of-two size classes with one free list each, carved from a bump region that grows
//! the linear memory. Much smaller than the default allocator (the bundle budget is tight) and fast on the hot
//! path, where the same few small sizes are allocated and freed per frame. The cost is up to 2x slack per block;
//! freed blocks are reused for their class only. Single-threaded: wasm32-unknown-unknown has one thread.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr::null_mut;

const PAGE: usize = 65_536;
/// Classes 2^4 (16 bytes) .. 2^31.
const MIN_CLASS: u32 = 4;
const CLASSES: usize = 28;

struct State {
    free: [*mut u8; CLASSES],
    bump: usize,
    end: usize,
}

pub struct SizeClassAlloc(UnsafeCell<State>);

// SAFETY: wasm32-unknown-unknown runs one thread; the allocator is never shared across threads.
unsafe impl Sync for SizeClassAlloc {}

impl SizeClassAlloc {
    pub const fn new() -> Self {
        SizeClassAlloc(UnsafeCell::new(State {
            free: [null_mut(); CLASSES],
            bump: 0,
            end: 0,
        }))
    }
}

fn class_of(layout: &Layout) -> Option<usize> {
    let size = layout.size().max(layout.align()).max(1 << MIN_CLASS);
    let class = size.checked_next_power_of_two()?.trailing_zeros();
    let index = (class - MIN_CLASS) as usize;
    (index < CLASSES).then_some(index)
}

unsafe impl GlobalAlloc for SizeClassAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(index) = class_of(&layout) else {
            return null_mut();
        };
        // SAFETY: single-threaded, and no reference into the state outlives this call.
        let state = unsafe { &mut *self.0.get() };
        let head = state.free[index];
        if !head.is_null() {
            // SAFETY: a free block stores the next free block of its class in its first word.
            state.free[index] = unsafe { *(head as *mut *mut u8) };
            return head;
        }
        let size = 1usize << (index as u32 + MIN_CLASS);
        // Blocks are aligned to their size (up to a page), so any layout of this class fits.
        let align = size.min(PAGE);
        let start = (state.bump + align - 1) & !(align - 1);
        let Some(next) = start.checked_add(size) else {
            return null_mut();
        };
        if next > state.end || state.end == 0 {
            let pages = (size + PAGE) / PAGE;
            let grown = core::arch::wasm32::memory_grow(0, pages);
            if grown == usize::MAX {
                return null_mut();
            }
            let base = grown * PAGE;
            if base != state.end || state.end == 0 {
                // The region restarts at the new memory (the tail of the old one is left unused).
                state.bump = base;
            }
            state.end = (grown + pages) * PAGE;
            return unsafe { self.alloc(layout) };
        }
        state.bump = next;
        start as *mut u8
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(index) = class_of(&layout) {
            // SAFETY: single-threaded; `ptr` came from `alloc` with this layout's class.
            let state = unsafe { &mut *self.0.get() };
            unsafe { *(ptr as *mut *mut u8) = state.free[index] };
            state.free[index] = ptr;
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return null_mut();
        };
        if class_of(&layout) == class_of(&new_layout) {
            return ptr;
        }
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}
