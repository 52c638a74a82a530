//! The geometry of kiln's layers, shared by the `model!` macro and the runtime: the
//! macro lays out every workspace node and scratch range from these sizes, and the
//! kernels check their buffers against the same functions, so a size is written once.
//!
//! This crate has no dependencies, and nothing in it is part of kiln's API: the `kiln`
//! crate does not re-export it.

/// The geometry of a 2-d convolution or pooling window, fixed at compile time.
///
/// ```
/// use kiln_shapes::Conv2dShape;
/// // Conv2d(16, kernel = 3, padding = 1) on a [3, 32, 32] input.
/// let conv = Conv2dShape {
///     in_channels: 3, in_size: (32, 32), out_channels: 16, kernel: (3, 3),
///     stride: (1, 1), padding: (1, 1), dilation: (1, 1), out_size: (32, 32),
/// };
/// assert_eq!((conv.input_len(), conv.output_len()), (3 * 32 * 32, 16 * 32 * 32));
/// ```
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
    ///
    /// ```
    /// use kiln_shapes::Conv2dShape;
    /// // Conv2d(16, kernel = 3, padding = 1) on a [3, 32, 32] input.
    /// let conv = Conv2dShape {
    ///     in_channels: 3, in_size: (32, 32), out_channels: 16, kernel: (3, 3),
    ///     stride: (1, 1), padding: (1, 1), dilation: (1, 1), out_size: (32, 32),
    /// };
    /// assert_eq!(conv.input_len(), 3072);
    /// ```
    #[inline]
    pub const fn input_len(&self) -> usize {
        self.in_channels * self.in_size.0 * self.in_size.1
    }
    /// Values per output sample.
    ///
    /// ```
    /// use kiln_shapes::Conv2dShape;
    /// // Conv2d(16, kernel = 3, padding = 1) on a [3, 32, 32] input.
    /// let conv = Conv2dShape {
    ///     in_channels: 3, in_size: (32, 32), out_channels: 16, kernel: (3, 3),
    ///     stride: (1, 1), padding: (1, 1), dilation: (1, 1), out_size: (32, 32),
    /// };
    /// assert_eq!(conv.output_len(), 16384);
    /// ```
    #[inline]
    pub const fn output_len(&self) -> usize {
        self.out_channels * self.out_size.0 * self.out_size.1
    }
    /// Rows of the column matrix: `in_channels · kh · kw`.
    ///
    /// ```
    /// use kiln_shapes::Conv2dShape;
    /// // Conv2d(16, kernel = 3, padding = 1) on a [3, 32, 32] input.
    /// let conv = Conv2dShape {
    ///     in_channels: 3, in_size: (32, 32), out_channels: 16, kernel: (3, 3),
    ///     stride: (1, 1), padding: (1, 1), dilation: (1, 1), out_size: (32, 32),
    /// };
    /// assert_eq!(conv.k(), 27);
    /// ```
    #[inline]
    pub const fn k(&self) -> usize {
        self.in_channels * self.kernel.0 * self.kernel.1
    }
    /// Output positions per channel.
    ///
    /// ```
    /// use kiln_shapes::Conv2dShape;
    /// // Conv2d(16, kernel = 3, padding = 1) on a [3, 32, 32] input.
    /// let conv = Conv2dShape {
    ///     in_channels: 3, in_size: (32, 32), out_channels: 16, kernel: (3, 3),
    ///     stride: (1, 1), padding: (1, 1), dilation: (1, 1), out_size: (32, 32),
    /// };
    /// assert_eq!(conv.p(), 1024);
    /// ```
    #[inline]
    pub const fn p(&self) -> usize {
        self.out_size.0 * self.out_size.1
    }
    /// Values of the column matrix per sample.
    ///
    /// ```
    /// use kiln_shapes::Conv2dShape;
    /// // Conv2d(16, kernel = 3, padding = 1) on a [3, 32, 32] input.
    /// let conv = Conv2dShape {
    ///     in_channels: 3, in_size: (32, 32), out_channels: 16, kernel: (3, 3),
    ///     stride: (1, 1), padding: (1, 1), dilation: (1, 1), out_size: (32, 32),
    /// };
    /// assert_eq!(conv.cols_len(), 27 * 1024);
    /// ```
    #[inline]
    pub const fn cols_len(&self) -> usize {
        self.k() * self.p()
    }
    /// Whether each tap's row of the column matrix is the input plane shifted as a
    /// whole: a stride of 1 and output rows as wide as input rows (a "same" convolution
    /// such as 3x3 with padding 1). im2col is then one copy per tap, cheap enough to
    /// run again in the backward pass, so these convolutions rebuild their columns there
    /// from one sample's scratch per thread ([`Self::cols_scratch_len`]); the others keep
    /// the whole batch's columns from the forward pass (`batch x` [`Self::cols_len`]).
    ///
    /// ```
    /// use kiln_shapes::Conv2dShape;
    /// // Conv2d(16, kernel = 3, padding = 1) on a [3, 32, 32] input.
    /// let conv = Conv2dShape {
    ///     in_channels: 3, in_size: (32, 32), out_channels: 16, kernel: (3, 3),
    ///     stride: (1, 1), padding: (1, 1), dilation: (1, 1), out_size: (32, 32),
    /// };
    /// assert!(conv.rebuilds_columns());
    /// // Without padding, output rows are narrower than input rows.
    /// let valid = Conv2dShape { padding: (0, 0), out_size: (30, 30), ..conv };
    /// assert!(!valid.rebuilds_columns());
    /// ```
    #[inline]
    pub const fn rebuilds_columns(&self) -> bool {
        self.stride.0 == 1 && self.stride.1 == 1 && self.out_size.1 == self.in_size.1
    }
    /// Values of the column scratch of a convolution that [rebuilds its
    /// columns](Self::rebuilds_columns): one sample's column matrix for each of the two
    /// halves a batch is split into.
    ///
    /// ```
    /// use kiln_shapes::Conv2dShape;
    /// // Conv2d(16, kernel = 3, padding = 1) on a [3, 32, 32] input.
    /// let conv = Conv2dShape {
    ///     in_channels: 3, in_size: (32, 32), out_channels: 16, kernel: (3, 3),
    ///     stride: (1, 1), padding: (1, 1), dilation: (1, 1), out_size: (32, 32),
    /// };
    /// assert_eq!(conv.cols_scratch_len(), 2 * 27 * 1024);
    /// ```
    #[inline]
    pub const fn cols_scratch_len(&self) -> usize {
        2 * self.cols_len()
    }
    /// Values of `cols` for the runtime's `conv2d_forward` and `conv2d_backward` at
    /// `batch` samples: [`Self::cols_scratch_len`] if the convolution [rebuilds its
    /// columns](Self::rebuilds_columns), else the whole batch's columns.
    #[inline]
    pub const fn cols_buffer_len(&self, batch: usize) -> usize {
        if self.rebuilds_columns() {
            self.cols_scratch_len()
        } else {
            batch * self.cols_len()
        }
    }
    /// Values of the convolution's backward fixed scratch (`partial` of the runtime's
    /// `conv2d_backward`):
    /// three weights' worth, and room to align one of them on a 64-byte line.
    ///
    /// ```
    /// use kiln_shapes::Conv2dShape;
    /// // Conv2d(16, kernel = 3, padding = 1) on a [3, 32, 32] input.
    /// let conv = Conv2dShape {
    ///     in_channels: 3, in_size: (32, 32), out_channels: 16, kernel: (3, 3),
    ///     stride: (1, 1), padding: (1, 1), dilation: (1, 1), out_size: (32, 32),
    /// };
    /// assert_eq!(conv.partial_len(), 3 * 16 * 27 + 16);
    /// ```
    #[inline]
    pub const fn partial_len(&self) -> usize {
        3 * self.out_channels * self.k() + 16
    }

    /// Values of the transposed convolution's backward fixed scratch (the runtime's
    /// `conv_transpose2d_backward`): one weight's worth, the second half of the
    /// batch's weight gradient.
    ///
    /// ```
    /// use kiln_shapes::Conv2dShape;
    /// // Conv2d(16, kernel = 3, padding = 1) on a [3, 32, 32] input.
    /// let conv = Conv2dShape {
    ///     in_channels: 3, in_size: (32, 32), out_channels: 16, kernel: (3, 3),
    ///     stride: (1, 1), padding: (1, 1), dilation: (1, 1), out_size: (32, 32),
    /// };
    /// assert_eq!(conv.transposed_partial_len(), 16 * 27);
    /// ```
    #[inline]
    pub const fn transposed_partial_len(&self) -> usize {
        self.out_channels * self.k()
    }

    /// The input position `(row, column)` that kernel tap `(i, j)` reads for output
    /// `(oy, ox)`, or `None` in the padding.
    ///
    /// ```
    /// use kiln_shapes::Conv2dShape;
    /// // Conv2d(16, kernel = 3, padding = 1) on a [3, 32, 32] input.
    /// let conv = Conv2dShape {
    ///     in_channels: 3, in_size: (32, 32), out_channels: 16, kernel: (3, 3),
    ///     stride: (1, 1), padding: (1, 1), dilation: (1, 1), out_size: (32, 32),
    /// };
    /// assert_eq!(conv.source(0, 0, 0, 0), None); // the padding above the first row
    /// assert_eq!(conv.source(5, 7, 2, 1), Some((6, 7)));
    /// ```
    #[inline(always)]
    pub fn source(&self, oy: usize, ox: usize, i: usize, j: usize) -> Option<(usize, usize)> {
        let y = (oy * self.stride.0 + i * self.dilation.0).checked_sub(self.padding.0)?;
        let x = (ox * self.stride.1 + j * self.dilation.1).checked_sub(self.padding.1)?;
        (y < self.in_size.0 && x < self.in_size.1).then_some((y, x))
    }
}

/// Which recurrent cell.
///
/// ```
/// use kiln_shapes::{Cell, RecurrentShape};
/// let gates = |cell| RecurrentShape { cell, steps: 1, features: 1, hidden: 1 }.gates();
/// assert_eq!((gates(Cell::Rnn), gates(Cell::Lstm), gates(Cell::Gru)), (1, 4, 3));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    /// Elman RNN with tanh.
    Rnn,
    /// Long short-term memory.
    Lstm,
    /// Gated recurrent unit.
    Gru,
}

/// The geometry of a recurrent layer.
///
/// ```
/// use kiln_shapes::{Cell, RecurrentShape};
/// // Lstm(32) over 10 steps of 8 features.
/// let lstm = RecurrentShape { cell: Cell::Lstm, steps: 10, features: 8, hidden: 32 };
/// assert_eq!(lstm.params_len(), 4 * 32 * (8 + 32 + 2)); // PyTorch's nn.LSTM(8, 32)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecurrentShape {
    /// The cell.
    pub cell: Cell,
    /// Time steps per sample.
    pub steps: usize,
    /// Input features per step.
    pub features: usize,
    /// Hidden units.
    pub hidden: usize,
}

impl RecurrentShape {
    /// Gates per hidden unit.
    ///
    /// ```
    /// use kiln_shapes::{Cell, RecurrentShape};
    /// // Lstm(32) over 10 steps of 8 features.
    /// let lstm = RecurrentShape { cell: Cell::Lstm, steps: 10, features: 8, hidden: 32 };
    /// assert_eq!(lstm.gates(), 4);
    /// ```
    #[inline]
    pub const fn gates(&self) -> usize {
        match self.cell {
            Cell::Rnn => 1,
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }

    /// Width of the gate rows, `G · hidden`.
    ///
    /// ```
    /// use kiln_shapes::{Cell, RecurrentShape};
    /// // Lstm(32) over 10 steps of 8 features.
    /// let lstm = RecurrentShape { cell: Cell::Lstm, steps: 10, features: 8, hidden: 32 };
    /// assert_eq!(lstm.width(), 128);
    /// ```
    #[inline]
    pub const fn width(&self) -> usize {
        self.gates() * self.hidden
    }

    /// Multiply-adds ×2 of one sample's forward GEMMs, which decides whether a batch is
    /// worth splitting across threads.
    ///
    /// ```
    /// use kiln_shapes::{Cell, RecurrentShape};
    /// // Lstm(32) over 10 steps of 8 features.
    /// let lstm = RecurrentShape { cell: Cell::Lstm, steps: 10, features: 8, hidden: 32 };
    /// assert_eq!(lstm.flops_per_sample(), (2 * 10 * 128 * (8 + 32)) as f64);
    /// ```
    #[inline]
    pub fn flops_per_sample(&self) -> f64 {
        (2 * self.steps * self.width() * (self.features + self.hidden)) as f64
    }

    /// Batch-independent scratch of the runtime's `recurrent_forward` and
    /// `recurrent_backward`: both weights, transposed or packed, in forward; `W_hh`
    /// packed, in backward.
    ///
    /// ```
    /// use kiln_shapes::{Cell, RecurrentShape};
    /// // Lstm(32) over 10 steps of 8 features.
    /// let lstm = RecurrentShape { cell: Cell::Lstm, steps: 10, features: 8, hidden: 32 };
    /// assert_eq!(lstm.scratch_len(), 128 * 40);
    /// ```
    #[inline]
    pub const fn scratch_len(&self) -> usize {
        self.width() * (self.features + self.hidden)
    }

    /// Per-sample auxiliary values: the gates of every step, then the cell states, a
    /// carry and a row for `tanh(c_t)` (LSTM) or the hidden-side projections (GRU).
    /// The layer keeps the gates of all samples of a batch together, ahead of the rest.
    ///
    /// ```
    /// use kiln_shapes::{Cell, RecurrentShape};
    /// // Lstm(32) over 10 steps of 8 features.
    /// let lstm = RecurrentShape { cell: Cell::Lstm, steps: 10, features: 8, hidden: 32 };
    /// assert_eq!(lstm.aux_len(), 10 * 128 + 12 * 32);
    /// ```
    #[inline]
    pub const fn aux_len(&self) -> usize {
        let gates = self.steps * self.width();
        match self.cell {
            Cell::Rnn => gates,
            Cell::Lstm => gates + (self.steps + 2) * self.hidden,
            Cell::Gru => 2 * gates,
        }
    }

    /// Values of every parameter of one direction: `weight_ih`, `weight_hh` and both
    /// biases.
    ///
    /// ```
    /// use kiln_shapes::{Cell, RecurrentShape};
    /// // Lstm(32) over 10 steps of 8 features.
    /// let lstm = RecurrentShape { cell: Cell::Lstm, steps: 10, features: 8, hidden: 32 };
    /// assert_eq!(lstm.params_len(), 128 * 42);
    /// ```
    #[inline]
    pub const fn params_len(&self) -> usize {
        self.width() * (self.features + self.hidden + 2)
    }

    /// Per-sample auxiliary values of a bidirectional layer (`bidirectional = true`):
    /// each direction's [`aux_len`](Self::aux_len), each direction's hidden states,
    /// the input with its steps reversed, and backward's scratch (each direction's
    /// hidden-state gradient and the reverse direction's input gradient).
    ///
    /// ```
    /// use kiln_shapes::{Cell, RecurrentShape};
    /// // Lstm(32) over 10 steps of 8 features.
    /// let lstm = RecurrentShape { cell: Cell::Lstm, steps: 10, features: 8, hidden: 32 };
    /// assert_eq!(lstm.bidirectional_aux_len(), 2 * lstm.aux_len() + 4 * 10 * 32 + 2 * 10 * 8);
    /// ```
    #[inline]
    pub const fn bidirectional_aux_len(&self) -> usize {
        2 * self.aux_len() + 4 * self.steps * self.hidden + 2 * self.steps * self.features
    }
}

/// The geometry of an attention layer: self-attention (`keys == steps`, keys and
/// values from the queries' own sequence) or cross-attention (keys and values from a
/// memory sequence of `keys` steps).
///
/// ```
/// use kiln_shapes::AttentionShape;
/// // MultiHeadAttention(heads = 4) over 16 steps of width 64.
/// let attention = AttentionShape { steps: 16, keys: 16, dim: 64, heads: 4, causal: true };
/// assert_eq!(attention.params_len(), 4 * 64 * 64 + 4 * 64); // nn.MultiheadAttention(64, 4)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    /// Query steps per sample.
    pub steps: usize,
    /// Key (and value) steps per sample: `steps` for self-attention.
    pub keys: usize,
    /// Model width.
    pub dim: usize,
    /// Heads (dividing `dim`).
    pub heads: usize,
    /// Whether step `i` may only attend to steps `j ≤ i`.
    pub causal: bool,
}

impl AttentionShape {
    /// Per-sample auxiliary values: queries, keys and values, attention weights, head
    /// outputs and backward scratch (the projections' gradients and one weight
    /// matrix).
    ///
    /// ```
    /// use kiln_shapes::AttentionShape;
    /// // MultiHeadAttention(heads = 4) over 16 steps of width 64.
    /// let attention = AttentionShape { steps: 16, keys: 16, dim: 64, heads: 4, causal: true };
    /// assert!(attention.aux_len() > 4 * 16 * 16); // at least the four heads' weights
    /// ```
    #[inline]
    pub const fn aux_len(&self) -> usize {
        let (s, k, d) = (self.steps, self.keys, self.dim);
        s * d + 2 * k * d + self.heads * s * k + s * d + s * d + 2 * k * d + s * k
    }

    /// Forward floating-point operations per sample (two per multiply-add): the
    /// projections, the scores and the weighted sums.
    ///
    /// ```
    /// use kiln_shapes::AttentionShape;
    /// // MultiHeadAttention(heads = 4) over 16 steps of width 64.
    /// let attention = AttentionShape { steps: 16, keys: 16, dim: 64, heads: 4, causal: true };
    /// assert_eq!(attention.flops(), (2 * 16 * 64 * 64 * 4 + 4 * 16 * 16 * 64) as f64);
    /// ```
    #[inline]
    pub fn flops(&self) -> f64 {
        let (s, k, d) = (self.steps, self.keys, self.dim);
        (2 * s * d * d + 4 * k * d * d + 4 * s * k * d + 2 * s * d * d) as f64
    }

    /// Parameters: the packed input projection, the output projection and their biases
    /// (`4·dim² + 4·dim`).
    ///
    /// ```
    /// use kiln_shapes::AttentionShape;
    /// // MultiHeadAttention(heads = 4) over 16 steps of width 64.
    /// let attention = AttentionShape { steps: 16, keys: 16, dim: 64, heads: 4, causal: true };
    /// assert_eq!(attention.params_len(), 16640);
    /// ```
    #[inline]
    pub const fn params_len(&self) -> usize {
        4 * self.dim * self.dim + 4 * self.dim
    }
}
