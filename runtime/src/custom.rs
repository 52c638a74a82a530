//! Layers users write: implement [`Layer`] for a type and use it in `model!` as
//! `name: use MyLayer`, like a built-in layer.
//!
//! A user layer is a type, not a value: its per-sample shapes, its parameter tensors
//! and the scratch it keeps from the forward pass to the backward pass are associated
//! constants (const generics carry its sizes, as in `Gate<64>`), and its passes are
//! associated functions over the batch. The generated model owns the layer's
//! parameters in its one parameter buffer (after the built-in layers' ones), names them
//! under the layer's name (`gate.weight`), initialises, saves, loads and updates them
//! like any other, and gives the layer's passes slices of its workspace: a step still
//! allocates nothing.
//!
//! `model!` cannot read the constants of a type, so a use states the output shape the
//! model continues with (`use Gate<64> -> [32]`; without `->`, the layer keeps its
//! input's shape), and the compiler checks both shapes against the constants, failing
//! the build with a message that names the layer.
//!
//! Through the `kiln` crate (this example is compiled and checked against finite
//! differences in the repository's `tests/custom_layer.rs`):
//!
//! ```ignore
//! use kiln::custom::{Backward, Forward, Layer, ParamDecl};
//! use kiln::{init::Init, Float};
//!
//! /// `y = x · σ(w ⊙ x + b)`, one gate per feature.
//! pub struct Gate<const N: usize>;
//!
//! impl<const N: usize> Layer for Gate<N> {
//!     const INPUT: &'static [usize] = &[N];
//!     const OUTPUT: &'static [usize] = &[N];
//!     const PARAMS: &'static [ParamDecl] = &[
//!         ParamDecl::new("weight", &[N], Init::Ones),
//!         ParamDecl::new("bias", &[N], Init::Zeros).unregularized(),
//!     ];
//!     // σ(w ⊙ x + b) per value, for the backward pass.
//!     const SAVED: usize = N;
//!     const FLOPS: u64 = 6 * N as u64;
//!
//!     fn forward<T: Float>(io: Forward<'_, T>) {
//!         let (w, b) = (io.params.get(0), io.params.get(1));
//!         let rows = io.input.chunks(N).zip(io.output.chunks_mut(N));
//!         for ((x, y), s) in rows.zip(io.saved.chunks_mut(N)) {
//!             for i in 0..N {
//!                 s[i] = T::ONE / (T::ONE + (-(w[i] * x[i] + b[i])).exp());
//!                 y[i] = x[i] * s[i];
//!             }
//!         }
//!     }
//!
//!     fn backward<T: Float>(mut io: Backward<'_, T>) {
//!         let w = io.params.get(0);
//!         let [gw, gb] = io.grad_params.split();
//!         for (n, (x, s)) in io.input.chunks(N).zip(io.saved.chunks(N)).enumerate() {
//!             let dy = &io.grad_output[n * N..][..N];
//!             for i in 0..N {
//!                 // dy/dz for z = w x + b: x · s (1 - s)
//!                 let dz = dy[i] * x[i] * s[i] * (T::ONE - s[i]);
//!                 gw[i] += dz * x[i];
//!                 gb[i] += dz;
//!                 if let Some(dx) = io.grad_input.as_deref_mut() {
//!                     dx[n * N + i] += dy[i] * s[i] + dz * w[i];
//!                 }
//!             }
//!         }
//!     }
//! }
//!
//! kiln::model! {
//!     pub struct Gated {
//!         input: [16],
//!         fc: Dense(8),
//!         gate: use Gate<8>,
//!         head: Dense(2),
//!     }
//! }
//!
//! let net = Gated::<f32>::new(0);
//! assert_eq!(net.params().get("gate.bias"), Some(&[0.0_f32; 8][..]));
//! ```

use crate::init::Init;
use crate::model::{ParamInfo, TensorKind};
use crate::Float;

/// A layer written outside kiln, used in `model!` as `name: use Type` (see the
/// [module documentation](self)).
///
/// Both passes see the whole batch, sample after sample (`batch × size` values,
/// batch-major, as every kiln node). Everything they write is theirs alone: the
/// output, the saved scratch, the parameter gradients and the input gradient. Check a
/// layer with [`crate::gradcheck::check_gradients`] on a model that uses it, in `f64`.
pub trait Layer: 'static {
    /// The per-sample input shape the layer takes.
    const INPUT: &'static [usize];
    /// The per-sample output shape it gives.
    const OUTPUT: &'static [usize];
    /// Its parameter tensors, in the order their values lie in its parameter slice.
    const PARAMS: &'static [ParamDecl] = &[];
    /// Values per sample the forward pass keeps for the backward pass (in
    /// [`Forward::saved`] and then [`Backward::saved`]).
    const SAVED: usize = 0;
    /// Floating-point operations per sample of the forward pass, for summaries.
    const FLOPS: u64 = 0;

    /// Writes the output of `io.batch` samples.
    fn forward<T: Float>(io: Forward<'_, T>);

    /// Adds the gradients of the loss with respect to the parameters into
    /// `io.grad_params` and, when asked for, with respect to the input into
    /// `io.grad_input`. Both arrive holding zeros or other layers' contributions, so
    /// the layer adds (`+=`), never overwrites. Runs after a forward pass in training
    /// mode over the same batch.
    fn backward<T: Float>(io: Backward<'_, T>);
}

/// One parameter tensor of a [`Layer`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamDecl {
    /// Its name under the layer's (`weight` of the layer `gate` is `gate.weight`).
    pub name: &'static str,
    /// Its shape, as saved.
    pub shape: &'static [usize],
    /// How it starts.
    pub init: Init,
    /// Whether L1/L2 regularisation applies (as for weights; not for biases).
    pub regularized: bool,
}

impl ParamDecl {
    /// A regularised tensor (a weight).
    pub const fn new(name: &'static str, shape: &'static [usize], init: Init) -> Self {
        Self {
            name,
            shape,
            init,
            regularized: true,
        }
    }

    /// The same tensor, left out of L1/L2 regularisation (a bias, a scale).
    pub const fn unregularized(self) -> Self {
        Self {
            regularized: false,
            ..self
        }
    }

    /// Number of values.
    pub const fn len(&self) -> usize {
        let mut len = 1;
        let mut i = 0;
        while i < self.shape.len() {
            len *= self.shape[i];
            i += 1;
        }
        len
    }

    /// Whether it holds no values.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A layer's parameter values, one slice per [`ParamDecl`].
#[derive(Debug, Clone, Copy)]
pub struct Params<'a, T> {
    values: &'a [T],
    decls: &'static [ParamDecl],
}

impl<'a, T> Params<'a, T> {
    /// `values` laid out as `decls`.
    ///
    /// # Panics
    /// If the lengths disagree.
    pub fn new(values: &'a [T], decls: &'static [ParamDecl]) -> Self {
        assert_eq!(
            values.len(),
            total_len(decls),
            "parameter slice of the layer"
        );
        Self { values, decls }
    }

    /// The values of the tensor declared `index`-th.
    ///
    /// # Panics
    /// If the layer declares fewer tensors.
    pub fn get(&self, index: usize) -> &'a [T] {
        let start = offset_of(self.decls, index);
        &self.values[start..start + self.decls[index].len()]
    }

    /// All the layer's values, in declaration order.
    pub fn as_slice(&self) -> &'a [T] {
        self.values
    }
}

/// The gradients of a layer's parameters, one slice per [`ParamDecl`].
#[derive(Debug)]
pub struct ParamsMut<'a, T> {
    values: &'a mut [T],
    decls: &'static [ParamDecl],
}

impl<'a, T> ParamsMut<'a, T> {
    /// `values` laid out as `decls`.
    ///
    /// # Panics
    /// If the lengths disagree.
    pub fn new(values: &'a mut [T], decls: &'static [ParamDecl]) -> Self {
        assert_eq!(
            values.len(),
            total_len(decls),
            "parameter slice of the layer"
        );
        Self { values, decls }
    }

    /// The tensor declared `index`-th.
    ///
    /// # Panics
    /// If the layer declares fewer tensors.
    pub fn get_mut(&mut self, index: usize) -> &mut [T] {
        let start = offset_of(self.decls, index);
        &mut self.values[start..start + self.decls[index].len()]
    }

    /// Every tensor at once, in declaration order: `let [gw, gb] = grads.split();`.
    ///
    /// # Panics
    /// If `N` is not the number of tensors the layer declares.
    pub fn split<const N: usize>(&mut self) -> [&mut [T]; N] {
        assert_eq!(N, self.decls.len(), "tensors the layer declares");
        let mut rest: &mut [T] = self.values;
        core::array::from_fn(|i| {
            let (head, tail) = core::mem::take(&mut rest).split_at_mut(self.decls[i].len());
            rest = tail;
            head
        })
    }

    /// All the layer's values, in declaration order.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        self.values
    }
}

/// What a [`Layer`]'s forward pass reads and writes.
#[derive(Debug)]
pub struct Forward<'a, T> {
    /// The layer's parameters.
    pub params: Params<'a, T>,
    /// `batch × INPUT` values.
    pub input: &'a [T],
    /// `batch × OUTPUT` values, to write.
    pub output: &'a mut [T],
    /// `batch × SAVED` values to keep for the backward pass.
    pub saved: &'a mut [T],
    /// Samples in the batch.
    pub batch: usize,
    /// Whether the model trains (`forward_train`, `fit`) or infers.
    pub training: bool,
}

/// What a [`Layer`]'s backward pass reads and writes.
#[derive(Debug)]
pub struct Backward<'a, T> {
    /// The layer's parameters.
    pub params: Params<'a, T>,
    /// The forward pass's input.
    pub input: &'a [T],
    /// The forward pass's output.
    pub output: &'a [T],
    /// What the forward pass saved (the layer may reuse it as scratch).
    pub saved: &'a mut [T],
    /// dL/d`output`.
    pub grad_output: &'a [T],
    /// dL/d(parameters), to add to.
    pub grad_params: ParamsMut<'a, T>,
    /// dL/d`input`, to add to; `None` when nothing needs it (the layer comes first and
    /// the input's gradient was not asked for).
    pub grad_input: Option<&'a mut [T]>,
    /// Samples in the batch.
    pub batch: usize,
}

/// Total values of `decls`.
pub const fn total_len(decls: &[ParamDecl]) -> usize {
    offset_of(decls, decls.len())
}

/// Where the tensor declared `index`-th starts.
const fn offset_of(decls: &[ParamDecl], index: usize) -> usize {
    let mut offset = 0;
    let mut i = 0;
    while i < index {
        offset += decls[i].len();
        i += 1;
    }
    offset
}

/// Whether two shapes are equal, in a constant.
#[doc(hidden)]
pub const fn same_shape(a: &[usize], b: &[usize]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn same_str(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether every tensor has a name that can follow the layer's in a file (letters,
/// digits and `_`, `.` only between parts), and no two share one.
#[doc(hidden)]
pub const fn valid_names(decls: &[ParamDecl]) -> bool {
    let mut i = 0;
    while i < decls.len() {
        let name = decls[i].name.as_bytes();
        if name.is_empty() || name[0] == b'.' || name[name.len() - 1] == b'.' {
            return false;
        }
        let mut k = 0;
        while k < name.len() {
            let c = name[k];
            let dot_pair = c == b'.' && k + 1 < name.len() && name[k + 1] == b'.';
            if !(c.is_ascii_alphanumeric() || c == b'_' || c == b'.') || dot_pair {
                return false;
            }
            k += 1;
        }
        let mut j = 0;
        while j < i {
            if same_str(decls[j].name, decls[i].name) {
                return false;
            }
            j += 1;
        }
        i += 1;
    }
    true
}

/// A placeholder row of a parameter table being filled in a constant.
#[doc(hidden)]
pub const EMPTY_PARAM: ParamInfo = ParamInfo {
    name: "",
    scope: "",
    shape: &[],
    offset: 0,
    len: 0,
    init: Init::Zeros,
    regularized: false,
    kind: TensorKind::Float,
};

/// Copies `rows` into `table` from `at`; returns the next free row.
#[doc(hidden)]
pub const fn copy_rows(table: &mut [ParamInfo], at: usize, rows: &[ParamInfo]) -> usize {
    let mut i = 0;
    while i < rows.len() {
        table[at + i] = rows[i];
        i += 1;
    }
    at + rows.len()
}

/// Writes the rows of a user layer's tensors into `table` from row `at`, their values
/// from `offset` of the parameter buffer, named under `scope`; returns the next free
/// row.
#[doc(hidden)]
pub const fn push_decls(
    table: &mut [ParamInfo],
    at: usize,
    offset: usize,
    scope: &'static str,
    decls: &'static [ParamDecl],
) -> usize {
    let mut i = 0;
    while i < decls.len() {
        let decl = &decls[i];
        table[at + i] = ParamInfo {
            name: decl.name,
            scope,
            shape: decl.shape,
            offset: offset + offset_of(decls, i),
            len: decl.len(),
            init: decl.init,
            regularized: decl.regularized,
            kind: TensorKind::Float,
        };
        i += 1;
    }
    at + decls.len()
}
