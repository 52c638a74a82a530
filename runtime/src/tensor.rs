//! Batch-major tensors whose per-sample shape is part of their type.
//!
//! A [`Tensor<T, S>`] owns a batch of samples laid out one after another, each of shape
//! `S` (row-major, PyTorch's order). The batch size is a run-time value; the sample shape
//! is a type such as [`Shape1<784>`] or [`Shape3<1, 28, 28>`], so feeding one model's
//! output into another model is checked by rustc, and the only shape check left at run
//! time is that a buffer holds a whole, non-zero number of samples.
//!
//! ```
//! use kiln::prelude::*;
//! kiln::model! { struct Encoder { input: [1, 28, 28], Flatten, out: Dense(32) } }
//! kiln::model! { struct Head { input: [32], out: Dense(10) } }
//! let images = vec![0.0_f32; 3 * 784];
//! let x = TensorRef::<f32, Shape3<1, 28, 28>>::new(&images)?;
//! let codes: Tensor<f32, Shape1<32>> = Encoder::<f32>::new(0).forward(x);
//! let logits = Head::<f32>::new(0).forward(&codes); // rustc checks that [32] meets [32]
//! assert_eq!(logits.batch(), 3);
//! # Ok::<(), kiln::Error>(())
//! ```

use core::fmt;
use core::marker::PhantomData;

use crate::{Error, Float, Result};

/// A per-sample shape known at compile time.
///
/// ```
/// use kiln_runtime::{Shape, Shape3};
/// type Image = Shape3<1, 28, 28>;
/// assert_eq!((Image::DIMS, Image::SIZE), (&[1, 28, 28][..], 784));
/// ```
pub trait Shape: 'static + Copy + Default + Send + Sync + fmt::Debug {
    /// The dimensions, outermost first.
    const DIMS: &'static [usize];
    /// Number of values in one sample: the product of [`Shape::DIMS`].
    const SIZE: usize;
}

macro_rules! shapes {
    ($($(#[$doc:meta])* $name:ident<$($d:ident),+>;)+) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
        pub struct $name<$(const $d: usize),+>;
        impl<$(const $d: usize),+> Shape for $name<$($d),+> {
            const DIMS: &'static [usize] = &[$($d),+];
            const SIZE: usize = 1 $(* $d)+;
        }
    )+};
}

shapes! {
    /// A vector of `A` features.
    ///
    /// ```
    /// use kiln_runtime::{Shape, Shape1};
    /// assert_eq!((Shape1::<784>::DIMS, Shape1::<784>::SIZE), (&[784][..], 784));
    /// ```
    Shape1<A>;
    /// `[A, B]`, such as `[steps, features]`.
    ///
    /// ```
    /// use kiln_runtime::{Shape, Shape2};
    /// // 50 steps of 8 features: what an LSTM reads.
    /// assert_eq!((Shape2::<50, 8>::DIMS, Shape2::<50, 8>::SIZE), (&[50, 8][..], 400));
    /// ```
    Shape2<A, B>;
    /// `[A, B, C]`, such as `[channels, height, width]`.
    ///
    /// ```
    /// use kiln_runtime::{Shape, Shape3};
    /// assert_eq!(Shape3::<3, 32, 32>::SIZE, 3 * 32 * 32); // a CIFAR image
    /// ```
    Shape3<A, B, C>;
    /// `[A, B, C, D]`.
    ///
    /// ```
    /// use kiln_runtime::{Shape, Shape4};
    /// assert_eq!(Shape4::<2, 3, 4, 5>::DIMS, [2, 3, 4, 5]);
    /// ```
    Shape4<A, B, C, D>;
}

/// Checks that `len` values are a whole, non-zero number of samples of `S`.
///
/// ```
/// use kiln_runtime::{tensor::batch_of, Error, Shape2};
/// assert_eq!(batch_of::<Shape2<2, 3>>(12), Ok(2));
/// assert_eq!(batch_of::<Shape2<2, 3>>(0), Err(Error::EmptyBatch));
/// assert!(batch_of::<Shape2<2, 3>>(7).is_err());
/// ```
pub fn batch_of<S: Shape>(len: usize) -> Result<usize> {
    if !len.is_multiple_of(S::SIZE) {
        return Err(Error::BatchLength {
            len,
            sample_size: S::SIZE,
        });
    }
    match len / S::SIZE {
        0 => Err(Error::EmptyBatch),
        batch => Ok(batch),
    }
}

/// An owned batch of samples of shape `S`.
///
/// ```
/// use kiln_runtime::{Shape1, Tensor};
/// let x = Tensor::<f32, Shape1<2>>::from_vec(vec![0.0, 1.0, 1.0, 0.0]).unwrap();
/// assert_eq!(x.batch(), 2);
/// assert_eq!(x.sample(1), &[1.0, 0.0]);
/// assert!(Tensor::<f32, Shape1<2>>::from_vec(vec![1.0; 3]).is_err());
/// ```
#[derive(Clone, PartialEq)]
pub struct Tensor<T, S: Shape> {
    data: Vec<T>,
    shape: PhantomData<S>,
}

impl<T: Float, S: Shape> Tensor<T, S> {
    /// Wraps a buffer holding a whole, non-zero number of samples.
    ///
    /// ```
    /// use kiln_runtime::{Shape1, Tensor};
    /// let mut x = Tensor::<f32, Shape1<3>>::from_vec(vec![0.0, 2.0, 1.0, 5.0, 4.0, 3.0])?;
    /// assert_eq!(x.batch(), 2);
    /// assert!(Tensor::<f32, Shape1<3>>::from_vec(vec![]).is_err());
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn from_vec(data: Vec<T>) -> Result<Self> {
        batch_of::<S>(data.len())?;
        Ok(Self {
            data,
            shape: PhantomData,
        })
    }

    /// A batch of `batch` samples filled with zeros (`batch` must be at least 1).
    ///
    /// ```
    /// use kiln_runtime::{Shape1, Tensor};
    /// let mut x = Tensor::<f32, Shape1<3>>::from_vec(vec![0.0, 2.0, 1.0, 5.0, 4.0, 3.0])?;
    /// let zeros = Tensor::<f32, Shape1<3>>::zeros(4)?;
    /// assert_eq!(zeros.as_slice(), [0.0; 12]);
    /// assert!(Tensor::<f32, Shape1<3>>::zeros(0).is_err());
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn zeros(batch: usize) -> Result<Self> {
        Self::from_vec(vec![T::ZERO; batch * S::SIZE])
    }

    /// Number of samples.
    ///
    /// ```
    /// use kiln_runtime::{Shape2, Tensor};
    /// let x = Tensor::<f32, Shape2<2, 3>>::zeros(5)?; // five samples of [2, 3]
    /// assert_eq!(x.batch(), 5);
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn batch(&self) -> usize {
        self.data.len() / S::SIZE
    }

    /// All values, sample after sample.
    ///
    /// ```
    /// use kiln_runtime::{Shape1, Tensor};
    /// let x = Tensor::<f32, Shape1<2>>::from_vec(vec![1.0, 2.0, 3.0, 4.0])?;
    /// assert_eq!(x.as_slice(), [1.0, 2.0, 3.0, 4.0]);
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn as_slice(&self) -> &[T] {
        &self.data
    }

    /// All values, mutably (the length cannot change, so the batch stays whole).
    ///
    /// ```
    /// use kiln_runtime::{Shape1, Tensor};
    /// let mut x = Tensor::<f32, Shape1<3>>::from_vec(vec![0.0, 2.0, 1.0, 5.0, 4.0, 3.0])?;
    /// x.as_mut_slice()[0] = 9.0;
    /// assert_eq!(x.as_slice()[..3], [9.0, 2.0, 1.0]);
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.data
    }

    /// The values of sample `index`.
    ///
    /// # Panics
    /// If `index >= self.batch()`.
    ///
    /// ```
    /// use kiln_runtime::{Shape1, Tensor};
    /// let mut x = Tensor::<f32, Shape1<3>>::from_vec(vec![0.0, 2.0, 1.0, 5.0, 4.0, 3.0])?;
    /// assert_eq!(x.sample(1), [5.0, 4.0, 3.0]);
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn sample(&self, index: usize) -> &[T] {
        &self.data[index * S::SIZE..(index + 1) * S::SIZE]
    }

    /// Iterates over the samples.
    ///
    /// ```
    /// use kiln_runtime::{Shape1, Tensor};
    /// let mut x = Tensor::<f32, Shape1<3>>::from_vec(vec![0.0, 2.0, 1.0, 5.0, 4.0, 3.0])?;
    /// let sums: Vec<f32> = x.samples().map(|s| s.iter().sum()).collect();
    /// assert_eq!(sums, [3.0, 12.0]);
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn samples(&self) -> core::slice::ChunksExact<'_, T> {
        self.data.chunks_exact(S::SIZE)
    }

    /// Gives the buffer back.
    ///
    /// ```
    /// use kiln_runtime::{Shape1, Tensor};
    /// let mut x = Tensor::<f32, Shape1<3>>::from_vec(vec![0.0, 2.0, 1.0, 5.0, 4.0, 3.0])?;
    /// assert_eq!(x.into_vec().len(), 6);
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn into_vec(self) -> Vec<T> {
        self.data
    }

    /// A borrowed view of this batch.
    ///
    /// ```
    /// use kiln_runtime::{Shape1, Tensor};
    /// let mut x = Tensor::<f32, Shape1<3>>::from_vec(vec![0.0, 2.0, 1.0, 5.0, 4.0, 3.0])?;
    /// assert_eq!(x.view().slice(1, 2).as_slice(), [5.0, 4.0, 3.0]);
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn view(&self) -> TensorRef<'_, T, S> {
        TensorRef {
            data: &self.data,
            shape: PhantomData,
        }
    }

    /// Index of the largest value of each sample (row-wise argmax for classifiers).
    ///
    /// ```
    /// use kiln_runtime::{Shape1, Tensor};
    /// let mut x = Tensor::<f32, Shape1<3>>::from_vec(vec![0.0, 2.0, 1.0, 5.0, 4.0, 3.0])?;
    /// assert_eq!(x.argmax(), [1, 0]);
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn argmax(&self) -> Vec<usize> {
        self.view().argmax()
    }
}

impl<T: Float, S: Shape> fmt::Debug for Tensor<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor")
            .field("batch", &self.batch())
            .field("sample", &S::DIMS)
            .field("data", &self.data)
            .finish()
    }
}

/// A borrowed batch of samples of shape `S`: what models take as input.
///
/// ```
/// use kiln_runtime::{Shape1, TensorRef};
/// let raw = [1.0_f32, 2.0, 3.0, 4.0];
/// let x = TensorRef::<f32, Shape1<2>>::new(&raw).unwrap();
/// assert_eq!(x.batch(), 2);
/// ```
#[derive(Clone, Copy, PartialEq)]
pub struct TensorRef<'a, T, S: Shape> {
    data: &'a [T],
    shape: PhantomData<S>,
}

impl<'a, T: Float, S: Shape> TensorRef<'a, T, S> {
    /// Views a buffer holding a whole, non-zero number of samples.
    ///
    /// ```
    /// use kiln_runtime::{Shape1, TensorRef};
    /// let raw = [0.0_f32, 2.0, 1.0, 5.0, 4.0, 3.0];
    /// let x = TensorRef::<f32, Shape1<3>>::new(&raw)?;
    /// assert!(TensorRef::<f32, Shape1<4>>::new(&raw).is_err()); // 6 values, 4 a sample
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn new(data: &'a [T]) -> Result<Self> {
        batch_of::<S>(data.len())?;
        Ok(Self {
            data,
            shape: PhantomData,
        })
    }

    /// Number of samples.
    ///
    /// ```
    /// use kiln_runtime::{Shape2, TensorRef};
    /// let raw = [0.0_f32; 12];
    /// assert_eq!(TensorRef::<f32, Shape2<2, 3>>::new(&raw)?.batch(), 2);
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn batch(&self) -> usize {
        self.data.len() / S::SIZE
    }

    /// All values, sample after sample.
    ///
    /// ```
    /// use kiln_runtime::{Shape1, TensorRef};
    /// let raw = [0.0_f32, 2.0, 1.0, 5.0, 4.0, 3.0];
    /// let x = TensorRef::<f32, Shape1<3>>::new(&raw)?;
    /// assert_eq!(x.as_slice(), raw);
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn as_slice(&self) -> &'a [T] {
        self.data
    }

    /// Samples `start..end` as a smaller batch.
    ///
    /// # Panics
    /// If the range is empty or reaches past the batch.
    ///
    /// ```
    /// use kiln_runtime::{Shape1, TensorRef};
    /// let raw = [0.0_f32, 2.0, 1.0, 5.0, 4.0, 3.0];
    /// let x = TensorRef::<f32, Shape1<3>>::new(&raw)?;
    /// assert_eq!(x.slice(1, 2).batch(), 1);
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn slice(&self, start: usize, end: usize) -> TensorRef<'a, T, S> {
        assert!(start < end && end <= self.batch(), "bad sample range");
        TensorRef {
            data: &self.data[start * S::SIZE..end * S::SIZE],
            shape: PhantomData,
        }
    }

    /// Copies the batch into an owned tensor.
    ///
    /// ```
    /// use kiln_runtime::{Shape1, TensorRef};
    /// let raw = [0.0_f32, 2.0, 1.0, 5.0, 4.0, 3.0];
    /// let x = TensorRef::<f32, Shape1<3>>::new(&raw)?;
    /// assert_eq!(x.to_tensor().into_vec(), raw);
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn to_tensor(&self) -> Tensor<T, S> {
        Tensor {
            data: self.data.to_vec(),
            shape: PhantomData,
        }
    }

    /// Index of the largest value of each sample.
    ///
    /// ```
    /// use kiln_runtime::{Shape1, TensorRef};
    /// let raw = [0.0_f32, 2.0, 1.0, 5.0, 4.0, 3.0];
    /// let x = TensorRef::<f32, Shape1<3>>::new(&raw)?;
    /// assert_eq!(x.argmax(), [1, 0]);
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn argmax(&self) -> Vec<usize> {
        self.data
            .chunks_exact(S::SIZE)
            .map(|sample| {
                let mut best = 0;
                for (i, &v) in sample.iter().enumerate() {
                    if v > sample[best] {
                        best = i;
                    }
                }
                best
            })
            .collect()
    }
}

impl<'a, T: Float, S: Shape> From<&'a Tensor<T, S>> for TensorRef<'a, T, S> {
    fn from(tensor: &'a Tensor<T, S>) -> Self {
        tensor.view()
    }
}

impl<T: Float, S: Shape> fmt::Debug for TensorRef<'_, T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TensorRef")
            .field("batch", &self.batch())
            .field("sample", &S::DIMS)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_know_their_size() {
        assert_eq!(Shape3::<1, 28, 28>::SIZE, 784);
        assert_eq!(Shape2::<5, 3>::DIMS, &[5, 3]);
    }

    #[test]
    fn ragged_and_empty_batches_are_errors() {
        assert_eq!(
            TensorRef::<f64, Shape1<3>>::new(&[0.0; 4]).unwrap_err(),
            Error::BatchLength {
                len: 4,
                sample_size: 3
            }
        );
        assert_eq!(
            TensorRef::<f64, Shape1<3>>::new(&[]).unwrap_err(),
            Error::EmptyBatch
        );
    }
}
