//! The geometry of a 2-d window (a convolution's or a pool's), which the convolution,
//! pooling and sparse-convolution kernels share.

/// The geometry of a 2-d convolution or pooling window, fixed at compile time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dShape {
    /// Input channels.
    pub in_channels: usize,
    /// Input height and width.
    pub in_size: (usize, usize),
    /// Output channels (for pooling, equal to `in_channels`).
    pub out_channels: usize,
    /// Kernel height and width.
    pub kernel: (usize, usize),
    /// Stride along height and width.
    pub stride: (usize, usize),
    /// Zero padding along height and width.
    pub padding: (usize, usize),
    /// Dilation along height and width.
    pub dilation: (usize, usize),
    /// Output height and width.
    pub out_size: (usize, usize),
}

impl Conv2dShape {
    /// Values per input sample.
    pub const fn input_len(&self) -> usize {
        self.in_channels * self.in_size.0 * self.in_size.1
    }
    /// Values per output sample.
    pub const fn output_len(&self) -> usize {
        self.out_channels * self.out_size.0 * self.out_size.1
    }
    /// Rows of the column matrix: `in_channels · kh · kw`.
    pub const fn k(&self) -> usize {
        self.in_channels * self.kernel.0 * self.kernel.1
    }
    /// Output positions per channel.
    pub const fn p(&self) -> usize {
        self.out_size.0 * self.out_size.1
    }
    /// Values of the column matrix per sample.
    pub const fn cols_len(&self) -> usize {
        self.k() * self.p()
    }
    /// Values of the backward pass's fixed scratch (`partial` of [`conv2d_backward`](super::conv2d_backward)):
    /// three weights' worth, and room to align one of them on a 64-byte line.
    pub const fn partial_len(&self) -> usize {
        3 * self.out_channels * self.k() + 16
    }

    /// The input position `(row, column)` that kernel tap `(i, j)` reads for output
    /// `(oy, ox)`, or `None` in the padding.
    #[inline(always)]
    pub(crate) fn source(
        &self,
        oy: usize,
        ox: usize,
        i: usize,
        j: usize,
    ) -> Option<(usize, usize)> {
        let y = (oy * self.stride.0 + i * self.dilation.0).checked_sub(self.padding.0)?;
        let x = (ox * self.stride.1 + j * self.dilation.1).checked_sub(self.padding.1)?;
        (y < self.in_size.0 && x < self.in_size.1).then_some((y, x))
    }
}
