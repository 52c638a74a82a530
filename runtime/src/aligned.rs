//! A buffer whose first value sits on a 64-byte boundary: a cache line, and an AVX-512
//! register of f32.
//!
//! A weight at the start of such a buffer whose rows are whole multiples of 64 bytes
//! (784 f32 values are 49 lines) is read a line per vector load. From the 16-byte
//! boundary an allocator gives, every 64-byte load straddles two lines: streaming the
//! 784 x 128 f32 weight from L2 took 3.83 µs that way against 3.51 µs aligned (a
//! scratch program, the batch-1 kernel's loop, same machine as BENCHMARKS.md).

use std::fmt;
use std::ops::{Deref, DerefMut};

/// Sixteen values, aligned to 64 bytes; with 4- or 8-byte values there is no padding,
/// so a run of lines is a run of values.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line<T>([T; 16]);

/// A fixed-length buffer of `T` that starts on a 64-byte boundary; it derefs to `[T]`.
#[derive(Clone)]
pub(crate) struct AlignedVec<T> {
    lines: Vec<Line<T>>,
    len: usize,
}

impl<T: Copy> AlignedVec<T> {
    /// `len` copies of `value`.
    pub(crate) fn new(len: usize, value: T) -> Self {
        const {
            assert!(
                std::mem::size_of::<Line<T>>() == 16 * std::mem::size_of::<T>(),
                "a line of values must have no padding"
            );
        }
        Self {
            lines: vec![Line([value; 16]); len.div_ceil(16)],
            len,
        }
    }
}

impl<T> Deref for AlignedVec<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: `Line<T>` is `repr(C)` around `[T; 16]` with no padding (checked in
        // `new`, the only constructor), so the lines are `16 * lines.len()` contiguous,
        // initialised values of `T`, of which the first `len` are in use.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<T>(), self.len) }
    }
}

impl<T> DerefMut for AlignedVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, through the unique borrow of the lines.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<T>(), self.len) }
    }
}

impl<T: fmt::Debug> fmt::Debug for AlignedVec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_line_and_holds_exactly_its_values() {
        for len in [0, 1, 15, 16, 17, 100_353] {
            let mut a = AlignedVec::new(len, 1.5f32);
            assert_eq!(a.len(), len);
            assert_eq!(a.as_ptr() as usize % 64, 0);
            assert!(a.iter().all(|&v| v == 1.5));
            if let Some(last) = a.last_mut() {
                *last = 2.0;
            }
            let b = a.clone();
            assert_eq!(&a[..], &b[..]);
            assert_eq!(b.as_ptr() as usize % 64, 0);
            let d = AlignedVec::new(len, 0.25f64);
            assert_eq!(d.as_ptr() as usize % 64, 0);
            assert_eq!(d.len(), len);
        }
    }
}
