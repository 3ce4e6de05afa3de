//! Large request buffers kept for reuse.
//!
//! A 1 MiB write payload or read buffer that is allocated and freed per request costs far more than its copy: glibc
//! serves it from its heap (the server fixes the mmap threshold above it) and, once more than 128 KiB is free at the
//! top of the heap, gives those pages back to the system, so the next buffer faults in and clears 256 fresh pages.
//! On 1 MiB sequential writes that was about a fifth of the server's CPU. Buffers of at least [`Buffers::MIN`] bytes
//! come back here when their request is answered, up to [`Buffers::KEEP_BYTES`] for a listener.
//!
//! A buffer handed out is always empty (length 0): whoever takes it writes every byte it then holds (a payload read
//! from the socket, or a read buffer zeroed before the image is read into it), so nothing one request left in a buffer
//! can reach another client.

use std::sync::Mutex;

/// A listener's spare buffers.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    free: Mutex<Vec<Vec<u8>>>,
}

impl Buffers {
    /// Buffers smaller than this are not kept: the allocator serves them cheaply.
    pub const MIN: usize = 64 << 10;
    /// The most bytes of capacity kept.
    pub const KEEP_BYTES: usize = 16 << 20;

    /// An empty buffer with room for at least `capacity` bytes: a kept one if one is large enough.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        if capacity >= Self::MIN {
            let mut free = self.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(i) = free.iter().position(|b| b.capacity() >= capacity) {
                let mut buffer = free.swap_remove(i);
                buffer.clear();
                return buffer;
            }
        }
        Vec::with_capacity(capacity)
    }

    /// A zeroed buffer of `len` bytes (for a read to fill).
    pub fn take_zeroed(&self, len: usize) -> Vec<u8> {
        let mut buffer = self.take(len);
        buffer.resize(len, 0);
        buffer
    }

    /// Keeps a buffer for a later request, if it is large enough and there is room.
    pub fn give(&self, buffer: Vec<u8>) {
        if buffer.capacity() < Self::MIN {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let kept: usize = free.iter().map(Vec::capacity).sum();
        if kept + buffer.capacity() <= Self::KEEP_BYTES {
            free.push(buffer);
        }
    }

    /// Bytes of capacity kept.
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().map(Vec::capacity).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::Buffers;

    #[test]
    fn a_large_buffer_given_back_is_handed_out_again_empty_and_small_ones_are_not_kept() {
        let buffers = Buffers::default();
        let mut first = buffers.take(1 << 20);
        first.extend_from_slice(&[7u8; 1 << 20]);
        let at = first.as_ptr();
        buffers.give(first);
        let again = buffers.take(4096 + (1 << 19));
        assert_eq!(again.as_ptr(), at, "the kept buffer is reused");
        assert!(again.is_empty(), "a buffer is handed out empty");
        let zeroed = {
            buffers.give(again);
            buffers.take_zeroed(1 << 20)
        };
        assert_eq!(zeroed.as_ptr(), at);
        assert!(zeroed.iter().all(|&b| b == 0), "a zeroed buffer holds nothing of the request before");

        buffers.give(vec![1u8; 4096]);
        assert_eq!(buffers.kept(), 0, "a small buffer is not kept");
        assert!(buffers.take(1 << 21).capacity() >= 1 << 21, "too small kept buffers are passed over");
    }

    #[test]
    fn no_more_than_the_limit_is_kept() {
        let buffers = Buffers::default();
        for _ in 0..2 * Buffers::KEEP_BYTES / (1 << 20) {
            buffers.give(Vec::with_capacity(1 << 20));
        }
        assert!(buffers.kept() <= Buffers::KEEP_BYTES);
        assert!(buffers.kept() >= Buffers::KEEP_BYTES - (1 << 20));
    }
}
