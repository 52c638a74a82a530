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
//! A layer may also keep non-trained buffers ([`Layer::BUFFERS`], such as running
//! statistics), scratch that does not grow with the batch ([`Layer::FIXED`]) and draw
//! from the model's generator in training ([`Forward::rng`]). Every model `model!`
//! generates implements [`Layer`] too, so one model is used in another as
//! `enc: use Encoder -> [32]`, its tensors named under `enc` (`enc.fc.weight`).
//!
//! `model!` cannot read the constants of a type, so a use states the output shape the
//! model continues with (`use Gate<64> -> [32]`; without `->`, the layer keeps its
//! input's shape), and the compiler checks both shapes against the constants, failing
//! the build with a message that names the layer.
//!
//! Through the `kiln` crate (this example runs as a doc test; the repository's
//! `tests/custom_layer.rs` checks the same layer against finite differences):
//!
//! ```
//! use kiln::custom::{Backward, Forward, Layer, ParamDecl};
//! use kiln::{init::Init, Float, Model};
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
use crate::model::{Mode, Model, ModelSpec, ParamInfo, Pass, TensorKind, SEALED};
use crate::{Float, Rng};

/// A layer written outside kiln, used in `model!` as `name: use Type` (see the
/// [module documentation](self)).
///
/// Both passes see the whole batch, sample after sample (`batch × size` values,
/// batch-major, as every kiln node). Everything they write is theirs alone: the
/// output, the saved scratch, the parameter gradients and the input gradient. Check a
/// layer with [`crate::gradcheck::check_gradients`] on a model that uses it, in `f64`.
///
/// ```
/// use kiln::custom::{Backward, Forward, Layer};
/// use kiln::Float;
///
/// /// `y = x²`, value by value: no parameters, nothing saved (the input is at hand).
/// struct Square<const N: usize>;
///
/// impl<const N: usize> Layer for Square<N> {
///     const INPUT: &'static [usize] = &[N];
///     const OUTPUT: &'static [usize] = &[N];
///     const FLOPS: u64 = N as u64;
///
///     fn forward<T: Float>(io: Forward<'_, T>) {
///         for (y, &x) in io.output.iter_mut().zip(io.input) {
///             *y = x * x;
///         }
///     }
///
///     fn backward<T: Float>(io: Backward<'_, T>) {
///         if let Some(dx) = io.grad_input {
///             for ((d, &x), &g) in dx.iter_mut().zip(io.input).zip(io.grad_output) {
///                 *d += (x + x) * g;
///             }
///         }
///     }
/// }
///
/// kiln::model! { struct Net { input: [3], fc: Dense(4), sq: use Square<4>, out: Dense(2) } }
///
/// use kiln::gradcheck::{check_gradients, GradCheck};
/// use kiln::prelude::*;
/// let x = [0.5, -1.0, 2.0];
/// let report = check_gradients(&Net::<f64>::new(0), &x, &[1usize][..], &CrossEntropy::default(), GradCheck::default())?;
/// assert!(report.worst() < 1e-6);
/// # Ok::<(), kiln::Error>(())
/// ```
pub trait Layer: 'static {
    /// The per-sample input shape the layer takes.
    const INPUT: &'static [usize];
    /// The per-sample output shape it gives.
    const OUTPUT: &'static [usize];
    /// Its parameter tensors, in the order their values lie in its parameter slice.
    const PARAMS: &'static [ParamDecl] = &[];
    /// Non-trained tensors the forward pass reads and may update (running statistics,
    /// as batch norm keeps), in the order their values lie in [`Forward::buffers`].
    /// Saved and loaded with the parameters, never touched by an optimiser.
    const BUFFERS: &'static [ParamDecl] = &[];
    /// Values per sample the forward pass keeps for the backward pass (in
    /// [`Forward::saved`] and then [`Backward::saved`]).
    const SAVED: usize = 0;
    /// Values of scratch that do not grow with the batch ([`Forward::fixed`] and
    /// [`Backward::fixed`]); kept from the forward pass to the backward pass.
    const FIXED: usize = 0;
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
///
/// ```
/// use kiln_runtime::custom::ParamDecl;
/// use kiln_runtime::init::Init;
/// // A scale per channel, left out of weight decay, and a running count saved as an integer.
/// const PARAMS: &[ParamDecl] = &[ParamDecl::new("scale", &[8], Init::Ones).unregularized()];
/// const BUFFERS: &[ParamDecl] = &[ParamDecl::new("seen", &[], Init::Zeros).count()];
/// assert!(!PARAMS[0].regularized && BUFFERS[0].len() == 1);
/// ```
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
    /// How it is stored in a file: floats, or (for a buffer) one count saved as an
    /// integer, as batch norm's `num_batches_tracked`.
    pub kind: TensorKind,
}

impl ParamDecl {
    /// A regularised tensor (a weight).
    ///
    /// ```
    /// use kiln_runtime::custom::ParamDecl;
    /// use kiln_runtime::init::Init;
    /// let weight = ParamDecl::new("weight", &[16, 8], Init::FanInUniform { fan_in: 8 });
    /// assert!(weight.regularized && weight.len() == 128);
    /// ```
    pub const fn new(name: &'static str, shape: &'static [usize], init: Init) -> Self {
        Self {
            name,
            shape,
            init,
            regularized: true,
            kind: TensorKind::Float,
        }
    }

    /// The same tensor, left out of L1/L2 regularisation (a bias, a scale).
    ///
    /// ```
    /// use kiln_runtime::custom::ParamDecl;
    /// use kiln_runtime::init::Init;
    /// assert!(!ParamDecl::new("bias", &[16], Init::Zeros).unregularized().regularized);
    /// ```
    pub const fn unregularized(self) -> Self {
        Self {
            regularized: false,
            ..self
        }
    }

    /// The same tensor, a count of one value saved as an integer (for buffers).
    ///
    /// ```
    /// use kiln_runtime::custom::ParamDecl;
    /// use kiln_runtime::init::Init;
    /// use kiln_runtime::TensorKind;
    /// let tracked = ParamDecl::new("num_batches_tracked", &[], Init::Zeros).count();
    /// assert_eq!(tracked.kind, TensorKind::Count);
    /// ```
    pub const fn count(self) -> Self {
        Self {
            kind: TensorKind::Count,
            ..self
        }
    }

    /// Number of values.
    ///
    /// ```
    /// use kiln_runtime::custom::ParamDecl;
    /// use kiln_runtime::init::Init;
    /// assert_eq!(ParamDecl::new("kernel", &[4, 3, 3], Init::Ones).len(), 36);
    /// assert_eq!(ParamDecl::new("step", &[], Init::Zeros).len(), 1); // a scalar
    /// ```
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
    ///
    /// ```
    /// use kiln_runtime::custom::ParamDecl;
    /// use kiln_runtime::init::Init;
    /// assert!(ParamDecl::new("nothing", &[0], Init::Zeros).is_empty());
    /// ```
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A layer's parameter values, one slice per [`ParamDecl`].
///
/// ```
/// use kiln_runtime::custom::{ParamDecl, Params, ParamsMut};
/// use kiln_runtime::init::Init;
/// const DECLS: &[ParamDecl] = &[
///     ParamDecl::new("weight", &[2, 3], Init::Ones),
///     ParamDecl::new("bias", &[2], Init::Zeros).unregularized(),
/// ];
/// let values = [1.0_f32, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, -0.5];
/// let params = Params::new(&values, DECLS);
/// assert_eq!((params.get(0).len(), params.get(1)), (6, &[0.5, -0.5][..]));
/// ```
#[derive(Debug)]
pub struct Params<'a, T> {
    values: Values<'a, T>,
    decls: &'static [ParamDecl],
}

/// The values behind [`Params`]: borrowed shared in a forward pass, uniquely in a
/// backward pass (where a model used as a layer runs its own backward, whose
/// signature takes them mutably for a fused update it does not make here).
#[derive(Debug)]
enum Values<'a, T> {
    Shared(&'a [T]),
    Unique(&'a mut [T]),
}

impl<'a, T> Params<'a, T> {
    /// `values` laid out as `decls`.
    ///
    /// # Panics
    /// If the lengths disagree.
    ///
    /// ```
    /// use kiln_runtime::custom::{ParamDecl, Params, ParamsMut};
    /// use kiln_runtime::init::Init;
    /// const DECLS: &[ParamDecl] = &[
    ///     ParamDecl::new("weight", &[2, 3], Init::Ones),
    ///     ParamDecl::new("bias", &[2], Init::Zeros).unregularized(),
    /// ];
    /// let values = [0.0_f64; 8];
    /// assert_eq!(Params::new(&values, DECLS).as_slice().len(), 8);
    /// ```
    pub fn new(values: &'a [T], decls: &'static [ParamDecl]) -> Self {
        assert_eq!(
            values.len(),
            total_len(decls),
            "parameter slice of the layer"
        );
        Self {
            values: Values::Shared(values),
            decls,
        }
    }

    /// `values`, borrowed uniquely, laid out as `decls`.
    ///
    /// # Panics
    /// If the lengths disagree.
    #[doc(hidden)]
    pub fn new_unique(values: &'a mut [T], decls: &'static [ParamDecl]) -> Self {
        assert_eq!(
            values.len(),
            total_len(decls),
            "parameter slice of the layer"
        );
        Self {
            values: Values::Unique(values),
            decls,
        }
    }

    /// The values of the tensor declared `index`-th.
    ///
    /// # Panics
    /// If the layer declares fewer tensors.
    ///
    /// ```
    /// use kiln_runtime::custom::{ParamDecl, Params, ParamsMut};
    /// use kiln_runtime::init::Init;
    /// const DECLS: &[ParamDecl] = &[
    ///     ParamDecl::new("weight", &[2, 3], Init::Ones),
    ///     ParamDecl::new("bias", &[2], Init::Zeros).unregularized(),
    /// ];
    /// let values = [1.0_f64, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
    /// assert_eq!(Params::new(&values, DECLS).get(1), [7.0, 8.0]);
    /// ```
    pub fn get(&self, index: usize) -> &[T] {
        let start = offset_of(self.decls, index);
        &self.as_slice()[start..start + self.decls[index].len()]
    }

    /// All the layer's values, in declaration order.
    ///
    /// ```
    /// use kiln_runtime::custom::{ParamDecl, Params, ParamsMut};
    /// use kiln_runtime::init::Init;
    /// const DECLS: &[ParamDecl] = &[
    ///     ParamDecl::new("weight", &[2, 3], Init::Ones),
    ///     ParamDecl::new("bias", &[2], Init::Zeros).unregularized(),
    /// ];
    /// let values = [1.0_f64; 8];
    /// assert_eq!(Params::new(&values, DECLS).as_slice(), values);
    /// ```
    pub fn as_slice(&self) -> &[T] {
        match &self.values {
            Values::Shared(values) => values,
            Values::Unique(values) => values,
        }
    }

    /// The values, if borrowed uniquely (in a backward pass).
    #[doc(hidden)]
    pub fn into_unique(self) -> Option<&'a mut [T]> {
        match self.values {
            Values::Shared(_) => None,
            Values::Unique(values) => Some(values),
        }
    }
}

/// The gradients of a layer's parameters, one slice per [`ParamDecl`].
///
/// ```
/// use kiln_runtime::custom::{ParamDecl, Params, ParamsMut};
/// use kiln_runtime::init::Init;
/// const DECLS: &[ParamDecl] = &[
///     ParamDecl::new("weight", &[2, 3], Init::Ones),
///     ParamDecl::new("bias", &[2], Init::Zeros).unregularized(),
/// ];
/// let mut grads = [0.0_f32; 8];
/// let mut params = ParamsMut::new(&mut grads, DECLS);
/// let [gw, gb] = params.split();
/// gw[0] += 1.0;
/// gb[1] += 2.0;
/// assert_eq!(grads, [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0]);
/// ```
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
    ///
    /// ```
    /// use kiln_runtime::custom::{ParamDecl, Params, ParamsMut};
    /// use kiln_runtime::init::Init;
    /// const DECLS: &[ParamDecl] = &[
    ///     ParamDecl::new("weight", &[2, 3], Init::Ones),
    ///     ParamDecl::new("bias", &[2], Init::Zeros).unregularized(),
    /// ];
    /// let mut grads = [0.0_f64; 8];
    /// assert_eq!(ParamsMut::new(&mut grads, DECLS).as_mut_slice().len(), 8);
    /// ```
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
    ///
    /// ```
    /// use kiln_runtime::custom::{ParamDecl, Params, ParamsMut};
    /// use kiln_runtime::init::Init;
    /// const DECLS: &[ParamDecl] = &[
    ///     ParamDecl::new("weight", &[2, 3], Init::Ones),
    ///     ParamDecl::new("bias", &[2], Init::Zeros).unregularized(),
    /// ];
    /// let mut grads = [0.0_f64; 8];
    /// ParamsMut::new(&mut grads, DECLS).get_mut(1)[0] = 3.0;
    /// assert_eq!(grads[6], 3.0);
    /// ```
    pub fn get_mut(&mut self, index: usize) -> &mut [T] {
        let start = offset_of(self.decls, index);
        &mut self.values[start..start + self.decls[index].len()]
    }

    /// Every tensor at once, in declaration order: `let [gw, gb] = grads.split();`.
    ///
    /// # Panics
    /// If `N` is not the number of tensors the layer declares.
    ///
    /// ```
    /// use kiln_runtime::custom::{ParamDecl, Params, ParamsMut};
    /// use kiln_runtime::init::Init;
    /// const DECLS: &[ParamDecl] = &[
    ///     ParamDecl::new("weight", &[2, 3], Init::Ones),
    ///     ParamDecl::new("bias", &[2], Init::Zeros).unregularized(),
    /// ];
    /// let mut grads = [0.0_f64; 8];
    /// let mut params = ParamsMut::new(&mut grads, DECLS);
    /// let [weight, bias] = params.split();
    /// assert_eq!((weight.len(), bias.len()), (6, 2));
    /// ```
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
    ///
    /// ```
    /// use kiln_runtime::custom::{ParamDecl, Params, ParamsMut};
    /// use kiln_runtime::init::Init;
    /// const DECLS: &[ParamDecl] = &[
    ///     ParamDecl::new("weight", &[2, 3], Init::Ones),
    ///     ParamDecl::new("bias", &[2], Init::Zeros).unregularized(),
    /// ];
    /// let mut grads = [1.0_f64; 8];
    /// ParamsMut::new(&mut grads, DECLS).as_mut_slice().fill(0.0);
    /// assert_eq!(grads, [0.0; 8]);
    /// ```
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        self.values
    }

    /// All the layer's values, for as long as they are borrowed.
    ///
    /// ```
    /// use kiln_runtime::custom::{ParamDecl, Params, ParamsMut};
    /// use kiln_runtime::init::Init;
    /// const DECLS: &[ParamDecl] = &[
    ///     ParamDecl::new("weight", &[2, 3], Init::Ones),
    ///     ParamDecl::new("bias", &[2], Init::Zeros).unregularized(),
    /// ];
    /// let mut grads = [1.0_f64; 8];
    /// let all: &mut [f64] = ParamsMut::new(&mut grads, DECLS).into_mut_slice();
    /// all[7] = 0.0;
    /// assert_eq!(grads[7], 0.0);
    /// ```
    pub fn into_mut_slice(self) -> &'a mut [T] {
        self.values
    }
}

/// What a [`Layer`]'s forward pass reads and writes.
///
/// ```
/// use kiln::custom::{Forward, Layer, Params};
/// # use kiln::custom::Backward;
/// # use kiln::Float;
/// # struct Square<const N: usize>;
/// # impl<const N: usize> Layer for Square<N> {
/// #     const INPUT: &'static [usize] = &[N];
/// #     const OUTPUT: &'static [usize] = &[N];
/// #     fn forward<T: Float>(io: Forward<'_, T>) {
/// #         for (y, &x) in io.output.iter_mut().zip(io.input) { *y = x * x; }
/// #     }
/// #     fn backward<T: Float>(_: Backward<'_, T>) {}
/// # }
/// // What a model gives a layer's forward pass, built by hand to run one directly.
/// let (input, mut output) = ([1.0_f64, -2.0, 3.0, 0.5], [0.0; 4]);
/// Square::<2>::forward(Forward {
///     params: Params::new(&[], &[]),
///     input: &input,
///     output: &mut output,
///     saved: &mut [],
///     buffers: &mut [],
///     fixed: &mut [],
///     batch: 2,
///     training: false,
///     rng: None,
/// });
/// assert_eq!(output, [1.0, 4.0, 9.0, 0.25]);
/// ```
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
    /// The layer's buffers, laid out as [`Layer::BUFFERS`]; update them in training
    /// only.
    pub buffers: &'a mut [T],
    /// `FIXED` values of scratch, which the backward pass sees again.
    pub fixed: &'a mut [T],
    /// Samples in the batch.
    pub batch: usize,
    /// Whether the model trains (`forward_train`, `fit`) or infers.
    pub training: bool,
    /// In training, the model's generator for random draws (dropout's): seeded with
    /// the model, so a run repeats.
    pub rng: Option<&'a mut Rng>,
}

/// What a [`Layer`]'s backward pass reads and writes.
///
/// ```
/// use kiln::custom::{Backward, Layer, Params, ParamsMut};
/// # use kiln::custom::Forward;
/// # use kiln::Float;
/// # struct Square<const N: usize>;
/// # impl<const N: usize> Layer for Square<N> {
/// #     const INPUT: &'static [usize] = &[N];
/// #     const OUTPUT: &'static [usize] = &[N];
/// #     fn forward<T: Float>(_: Forward<'_, T>) {}
/// #     fn backward<T: Float>(io: Backward<'_, T>) {
/// #         if let Some(dx) = io.grad_input {
/// #             for ((d, &x), &g) in dx.iter_mut().zip(io.input).zip(io.grad_output) { *d += (x + x) * g; }
/// #         }
/// #     }
/// # }
/// // The gradient arrives holding another branch's contribution (0.5): the layer adds.
/// let (input, output) = ([1.0_f64, -2.0], [1.0, 4.0]);
/// let mut grad_input = [0.5; 2];
/// Square::<2>::backward(Backward {
///     params: Params::new(&[], &[]),
///     input: &input,
///     output: &output,
///     saved: &mut [],
///     fixed: &mut [],
///     grad_output: &[1.0, 1.0],
///     grad_params: ParamsMut::new(&mut [], &[]),
///     grad_input: Some(&mut grad_input),
///     batch: 1,
/// });
/// assert_eq!(grad_input, [2.5, -3.5]);
/// ```
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
    /// The `FIXED` values of scratch the forward pass left.
    pub fixed: &'a mut [T],
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
///
/// ```
/// use kiln_runtime::custom::{ParamDecl, Params, ParamsMut};
/// use kiln_runtime::init::Init;
/// const DECLS: &[ParamDecl] = &[
///     ParamDecl::new("weight", &[2, 3], Init::Ones),
///     ParamDecl::new("bias", &[2], Init::Zeros).unregularized(),
/// ];
/// const VALUES: usize = kiln_runtime::custom::total_len(DECLS);
/// assert_eq!(VALUES, 8);
/// ```
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

/// Whether the buffers' names are valid (as [`valid_names`]) and none is also a
/// parameter's: both are saved in one file under the layer's name.
#[doc(hidden)]
pub const fn valid_buffer_names(params: &[ParamDecl], buffers: &[ParamDecl]) -> bool {
    if !valid_names(buffers) {
        return false;
    }
    let mut i = 0;
    while i < buffers.len() {
        let mut j = 0;
        while j < params.len() {
            if same_str(params[j].name, buffers[i].name) {
                return false;
            }
            j += 1;
        }
        i += 1;
    }
    true
}

/// Whether every tensor holds floats: a count (`ParamDecl::count`) is a buffer, never
/// trained.
#[doc(hidden)]
pub const fn all_float(decls: &[ParamDecl]) -> bool {
    let mut i = 0;
    while i < decls.len() {
        if matches!(decls[i].kind, TensorKind::Count) {
            return false;
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
            kind: decl.kind,
        };
        i += 1;
    }
    at + decls.len()
}

// ---------------------------------------------------------------------------------
// A model generated by `model!` used as a layer of another.
//
// Every generated model implements `Layer` through the functions below: its tensors
// become the layer's (named by their full names, so that the outer model nests them
// under the layer's name as PyTorch nests modules), its workspace nodes (values, then
// gradients) the layer's saved scratch and its fixed scratch the layer's.

/// The longest full tensor name a model used as a layer may have.
const NAME_CAPACITY: usize = 256;

/// A tensor's full name built in a constant (`scope.name`), for the table of a model
/// used as a layer.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct NameBuf {
    bytes: [u8; NAME_CAPACITY],
    len: usize,
}

impl NameBuf {
    const EMPTY: Self = Self {
        bytes: [0; NAME_CAPACITY],
        len: 0,
    };

    const fn push(mut self, part: &str) -> Self {
        let part = part.as_bytes();
        assert!(
            self.len + part.len() <= NAME_CAPACITY,
            "a tensor's full name is longer than 256 bytes"
        );
        let mut i = 0;
        while i < part.len() {
            self.bytes[self.len + i] = part[i];
            i += 1;
        }
        self.len += part.len();
        self
    }

    /// The name.
    pub const fn as_str(&self) -> &str {
        match core::str::from_utf8(self.bytes.split_at(self.len).0) {
            Ok(name) => name,
            Err(_) => panic!("a tensor name is not UTF-8"),
        }
    }
}

/// The full names (`scope.name`) of `rows`, which must number `N`.
#[doc(hidden)]
pub const fn full_names<const N: usize>(rows: &[ParamInfo]) -> [NameBuf; N] {
    assert!(rows.len() == N);
    let mut names = [NameBuf::EMPTY; N];
    let mut i = 0;
    while i < N {
        let mut name = NameBuf::EMPTY;
        if !rows[i].scope.is_empty() {
            name = name.push(rows[i].scope).push(".");
        }
        names[i] = name.push(rows[i].name);
        i += 1;
    }
    names
}

/// `rows` as a layer declares its tensors, named `names` (their [`full_names`]).
#[doc(hidden)]
pub const fn decls_of<const N: usize>(
    rows: &[ParamInfo],
    names: &'static [NameBuf; N],
) -> [ParamDecl; N] {
    assert!(rows.len() == N);
    let mut decls = [ParamDecl::new("", &[], Init::Zeros); N];
    let mut i = 0;
    while i < N {
        let row = &rows[i];
        decls[i] = ParamDecl {
            name: names[i].as_str(),
            shape: row.shape,
            init: row.init,
            regularized: row.regularized,
            kind: row.kind,
        };
        i += 1;
    }
    decls
}

/// Values per sample a model used as a layer keeps: its nodes' values and gradients.
#[doc(hidden)]
pub const fn model_saved(spec: &ModelSpec) -> usize {
    2 * node_end(spec)
}

const fn node_end(spec: &ModelSpec) -> usize {
    match spec.nodes.last() {
        Some(&end) => end,
        None => 0,
    }
}

/// Whether a model can be used as a layer: it reads values, not token ids (the outer
/// model would not check the ids).
#[doc(hidden)]
pub const fn usable_as_layer(spec: &ModelSpec) -> bool {
    !spec.reads_tokens()
}

/// The range of `node` in a pass over `batch` samples.
fn node_range(spec: &ModelSpec, node: usize, batch: usize) -> core::ops::Range<usize> {
    spec.nodes[node] * batch..spec.nodes[node + 1] * batch
}

/// [`Layer::forward`] of the model `M`: its forward pass over the saved scratch,
/// reading the input where it is, then its output copied out.
#[doc(hidden)]
pub fn model_forward<T: Float, M: Model<T>>(io: Forward<'_, T>) {
    let spec = M::SPEC;
    let batch = io.batch;
    let (values, _) = io.saved.split_at_mut(node_end(spec) * batch);
    let mode = match io.rng {
        Some(rng) if io.training => Mode::Train(rng),
        _ => Mode::Infer,
    };
    let mut pass = Pass::over(
        spec.nodes,
        batch,
        &mut *values,
        &mut [],
        io.fixed,
        Some(io.input),
    );
    M::forward_pass(io.params.as_slice(), io.buffers, &mut pass, mode, SEALED);
    io.output
        .copy_from_slice(&values[node_range(spec, spec.output_node, batch)]);
}

/// [`Layer::backward`] of the model `M`: the output's gradient copied in, its backward
/// pass over the saved scratch, and the input's gradient added out.
#[doc(hidden)]
pub fn model_backward<T: Float, M: Model<T>>(io: Backward<'_, T>) {
    let spec = M::SPEC;
    let batch = io.batch;
    let (values, grads) = io.saved.split_at_mut(node_end(spec) * batch);
    grads[node_range(spec, spec.output_node, batch)].copy_from_slice(io.grad_output);
    let to_input = io.grad_input.is_some();
    let params = io
        .params
        .into_unique()
        .expect("a backward pass borrows the parameters uniquely");
    let mut pass = Pass::over(
        spec.nodes,
        batch,
        values,
        &mut *grads,
        io.fixed,
        Some(io.input),
    );
    M::backward_pass(
        params,
        io.grad_params.into_mut_slice(),
        &mut pass,
        None,
        to_input,
        SEALED,
    );
    if let Some(dx) = io.grad_input {
        for (d, &g) in dx.iter_mut().zip(&grads[node_range(spec, 0, batch)]) {
            *d += g;
        }
    }
}
