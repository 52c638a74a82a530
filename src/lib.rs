//! # kiln
//!
//! Neural networks whose shape is checked when the program compiles. The [`model!`]
//! macro reads a declarative layer list, infers every tensor shape, rejects an
//! impossible network with an error on the layer at fault, and generates a plain
//! struct with a forward pass and a hand-derived backward pass on faer's GEMM.
//!
//! ```
//! use kiln::prelude::*;
//!
//! kiln::model! {
//!     /// Two features in, one logit out.
//!     pub struct Logistic { input: [2], out: Dense(1) }
//! }
//!
//! let mut net = Logistic::<f64>::new(0);
//! let x = Tensor::<f64, Shape1<2>>::from_vec(vec![0.0, 1.0, 1.0, 0.0]).unwrap();
//! let y = [1.0, 0.0];
//! let mut opt = Sgd::new(0.5);
//! let first = net.train_step(&x, &y[..], &BceWithLogits::default(), &mut opt).unwrap();
//! for _ in 0..100 {
//!     net.train_step(&x, &y[..], &BceWithLogits::default(), &mut opt).unwrap();
//! }
//! let last = net.evaluate_loss(&x, &y[..], &BceWithLogits::default()).unwrap();
//! assert!(last < first / 10.0);
//! assert_eq!(Logistic::<f32>::PARAM_COUNT, 3);
//! ```
//!
//! A custom loop gets the gradient with respect to the batch itself, as a GAN's
//! generator needs its discriminator's (see [`Model::backward_to_input`]):
//!
//! ```
//! use kiln::prelude::*;
//!
//! kiln::model! { struct Critic { input: [3], fc: Dense(4), Relu, out: Dense(1) } }
//!
//! let mut critic = Critic::<f64>::new(0);
//! let x = [0.5, -1.0, 2.0];
//! critic.forward_train(TensorRef::new(&x)?);
//! let grad_x = critic.backward_to_input(&[1.0])?; // d(output)/dx, laid out as x
//! assert_eq!(grad_x.len(), 3);
//! # Ok::<(), kiln::Error>(())
//! ```
//!
//! and ends its step with [`Model::apply_gradients`], which updates the parameters
//! from the last backward pass with any optimiser:
//!
//! ```
//! use kiln::prelude::*;
//!
//! kiln::model! { struct Net { input: [2], fc: Dense(1) } }
//!
//! let mut net = Net::<f64>::new(0);
//! let mut opt = Adam::new(1e-2);
//! let x = [1.0, 2.0];
//! let before = net.forward_train(TensorRef::new(&x)?)[0];
//! net.backward(&[1.0])?; // minimise the output itself: dL/d(output) = 1
//! net.apply_gradients(&mut opt)?;
//! assert!(net.forward_train(TensorRef::new(&x)?)[0] < before);
//! assert!(net.apply_gradients(&mut opt).is_err()); // no new backward pass
//! # Ok::<(), kiln::Error>(())
//! ```
//!
//! [`Model::grads`] shows the gradients a backward pass stored; a training step with
//! plain SGD adds its dense layers' updates straight into the weights and stores none:
//!
//! ```
//! use kiln::prelude::*;
//!
//! kiln::model! { struct Net { input: [3], out: Dense(2) } }
//!
//! let mut net = Net::<f64>::new(0);
//! assert!(net.grads().is_err()); // no backward pass yet
//! let x = TensorRef::<f64, Shape1<3>>::new(&[1.0, 2.0, 3.0])?;
//! let loss = CrossEntropy::default();
//! net.value_and_grad(x, &[1usize][..], &loss)?;
//! assert_eq!(net.grads()?.get("out.weight").unwrap().len(), 6);
//! net.train_step(x, &[1usize][..], &loss, &mut Sgd::new(0.1))?;
//! assert!(net.grads().is_err()); // applied inside the backward pass, never stored
//! net.train_step(x, &[1usize][..], &loss, &mut Adam::new(1e-3))?;
//! assert!(net.grads().is_ok());
//! # Ok::<(), kiln::Error>(())
//! ```
//!
//! A model writes itself as ONNX for inference elsewhere ([`Model::save_onnx`]; the
//! [`onnx`] module lists the layers it covers):
//!
//! ```
//! use kiln::prelude::*;
//!
//! kiln::model! { struct Net { input: [4], fc: Dense(3), Relu, out: Dense(2) } }
//!
//! let bytes = Net::<f32>::new(0).to_onnx()?;
//! assert!(bytes.len() > 4 * (4 * 3 + 3 + 3 * 2 + 2)); // the weights, and the graph
//! kiln::model! { struct Seq { input: [5, 2], lstm: Lstm(3), LastStep, out: Dense(1) } }
//! assert!(Seq::<f32>::new(0).to_onnx().is_ok());
//! kiln::model! { struct Outer { input: [5, 2], seq: use Seq -> [1], out: Dense(1) } }
//! assert!(matches!(Outer::<f32>::new(0).to_onnx(), Err(kiln::Error::OnnxUnsupported { .. })));
//! # Ok::<(), kiln::Error>(())
//! ```
//!
//! Data-parallel training ([`distributed`]) runs the same loop on every rank of a
//! [`distributed::Communicator`] (MPI with the `mpi` feature; here one process): each
//! rank trains on its part of every global batch, and
//! [`Model::all_reduce_gradients`] sums the ranks' gradients before the update:
//!
//! ```
//! use kiln::distributed::{Communicator, SingleProcess};
//! use kiln::prelude::*;
//!
//! kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, Dropout(0.1), out: Dense(2) } }
//!
//! let comm = SingleProcess; // or kiln::distributed::Mpi::init()?
//! let data = Dataset::<f32, Shape1<4>>::new(vec![0.5; 4 * 40], vec![1; 40], Some(2))?;
//! let mut net = Net::<f32>::new(0);
//! net.broadcast_parameters(&comm)?; // every rank starts from rank 0's parameters
//! let mut sgd = Sgd::new(0.1);
//! let mut batches = data.batches(8, Some(0)).sharded(comm.rank(), comm.size());
//! while let Some((x, y, part)) = batches.next_batch_part() {
//!     net.set_batch_part(Some(part)); // dropout draws the global batch's masks
//!     net.value_and_grad(x, y, &CrossEntropy::default())?;
//!     net.all_reduce_gradients(&comm, part.rows as f64 / part.total as f64)?;
//!     net.apply_gradients(&mut sgd)?;
//! }
//! assert_eq!(net.steps(), 5);
//! # Ok::<(), kiln::Error>(())
//! ```
//!
//! The DSL is described in `docs/dsl.md`, every compile error in `docs/errors.md`.

pub use kiln_macros::model;

// The public API: the runtime's user-facing modules and types. The machinery generated
// models run on (passes, workspaces, model state, layer kernels) is in `__private`.
#[cfg(feature = "plot")]
pub use kiln_runtime::plot;
pub use kiln_runtime::{
    custom, data, distributed, error, float, gradcheck, init, io, loss, metrics, onnx, optim,
    outputs, tensor, threads, train,
};
pub use kiln_runtime::{
    Adam, AdamW, BceWithLogits, BinaryCrossEntropy, CategoricalCrossEntropy, CosineAnnealing,
    CrossEntropy, Error, Float, GradClip, Grads, Layer, LayerInfo, Loss, LrSchedule, Model,
    ModelSpec, Mse, Optimizer, ParamDecl, ParamInfo, ParamSet, Reduction, Regularization, Result,
    RmsProp, Rng, Sgd, Shape, Shape1, Shape2, Shape3, Shape4, StepLr, Summary, Tensor, TensorKind,
    TensorRef,
};

/// What a program using kiln needs in scope: the `Model` trait, tensors and shapes,
/// datasets, losses, optimisers and schedules, and `fit`'s configuration and callbacks.
///
/// ```
/// use kiln::prelude::*;
///
/// kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(2) } }
///
/// let data = Dataset::<f32, Shape1<4>>::new(vec![0.5; 4 * 32], vec![1; 32], Some(2))?;
/// let config = FitConfig::new(2, 8)
///     .schedule(StepLr { step_size: 1, gamma: 0.5 })
///     .progress(Progress::Silent);
/// let mut net = Net::<f32>::new(0);
/// let history = net.fit(&data, None, &CrossEntropy::default(), &mut Adam::new(1e-2), &config)?;
/// assert_eq!(history.epochs[1].learning_rate, 5e-3); // StepLr halved it
/// net.set_grad_clip(Some(GradClip::Norm(1.0)))?;
/// # Ok::<(), Error>(())
/// ```
pub mod prelude {
    pub use kiln_runtime::data::{Dataset, LabelColumn};
    pub use kiln_runtime::io::{LoadOptions, LoadReport};
    pub use kiln_runtime::loss::{
        BceWithLogits, BinaryCrossEntropy, CategoricalCrossEntropy, CrossEntropy, Loss, Mse,
        Reduction, Regularization,
    };
    pub use kiln_runtime::metrics::ConfusionMatrix;
    pub use kiln_runtime::optim::{
        Adam, AdamW, Constant, CosineAnnealing, GradClip, LrSchedule, Optimizer, RmsProp, Sgd,
        StepLr, WarmupCosine,
    };
    pub use kiln_runtime::train::{
        BatchLog, Callback, CsvLogger, EarlyStopping, FitConfig, FitState, History, Monitor,
        Progress, ReduceLrOnPlateau,
    };
    pub use kiln_runtime::{
        Error, Float, Model, Shape, Shape1, Shape2, Shape3, Shape4, Tensor, TensorRef,
    };
}

/// Paths the generated code uses; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use kiln_runtime::custom::{
        all_float, copy_rows, decls_of, full_names, model_backward, model_forward, model_saved,
        push_decls, same_shape, total_len, usable_as_layer, valid_buffer_names, valid_names,
        Backward, Forward, Layer, NameBuf, ParamDecl, Params, ParamsMut, EMPTY_PARAM,
    };
    pub use kiln_runtime::init::Init;
    pub use kiln_runtime::layers;
    pub use kiln_runtime::onnx;
    pub use kiln_runtime::optim::apply_linear_step;
    pub use kiln_runtime::{
        AttentionNodes, DeferredWeight, Float, LayerInfo, MergeGradIo, Mode, Model, ModelSpec,
        ModelState, ParamInfo, Pass, Rng, Sealed, Shape1, Shape2, Shape3, Shape4, TensorKind,
        Workspace,
    };
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
