//! A training step allocates nothing once the workspace and optimiser state exist.
//!
//! A counting global allocator wraps the system one; the count covers every thread,
//! rayon's workers included. This binary holds one test so nothing else runs while
//! it counts.
//!
//! The loops run on a rayon worker (inside `rayon::scope`), as a training loop should:
//! a step called from a thread outside the pool hands its parallel halves to rayon
//! through the pool's injector queue, which allocates one block per 63 jobs it
//! receives. That count is measured and printed too.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use kiln::prelude::*;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

kiln::model! {
    struct Mlp {
        input: [784],
        fc1: Dense(128), Relu,
        Dropout(0.2),
        fc2: Dense(10),
    }
}

kiln::model! {
    struct Wide {
        input: [256],
        Dense(512), Gelu,
        Residual { Dense(512), Tanh },
        LayerOut: Dense(4),
    }
}

kiln::model! {
    struct WideMlp { input: [784], Dense(1024), Relu, Dense(1024), Relu, Dense(10) }
}

kiln::model! {
    struct Cnn {
        input: [1, 28, 28],
        conv1: Conv2d(16, kernel = 3), Relu,
        MaxPool2d(2),
        bn: BatchNorm2d,
        conv2: Conv2d(32, kernel = 3, padding = 1), Relu,
        AvgPool2d(2, floor = true),
        Dropout(0.25),
        GlobalAvgPool,
        fc: Dense(10),
    }
}

kiln::model! {
    /// The benchmark CNN: its second convolution's backward pass takes the sparse
    /// gradients a ReLU and a max pool leave (on processors with AVX-512).
    struct PoolCnn {
        input: [1, 28, 28],
        conv1: Conv2d(32, kernel = 3), Relu,
        MaxPool2d(2),
        conv2: Conv2d(64, kernel = 3), Relu,
        MaxPool2d(2, floor = true),
        Flatten,
        fc1: Dense(128), Relu,
        fc2: Dense(10),
    }
}

kiln::model! {
    /// ResNet-20's first stage in small: 1,024 positions a plane, whose weight
    /// gradients are taken column-major (`conv.rs`, `weight_grad_transposed`).
    struct Cifar {
        input: [3, 32, 32],
        stem: Conv2d(16, kernel = 3, padding = 1, bias = false), BatchNorm2d, Relu,
        block: Residual { Conv2d(16, kernel = 3, padding = 1, bias = false), BatchNorm2d },
        Relu,
        GlobalAvgPool,
        fc: Dense(10),
    }
}

kiln::model! {
    struct Lstm { input: [32, 64], lstm: Lstm(128), LastStep, fc: Dense(10) }
}
kiln::model! {
    /// Two inputs (token ids and features), two outputs.
    struct TwoTower {
        inputs: { user: [1], context: [12] },
        u: user >> { Embedding(100, 16), Flatten },
        joined: Concat(u, context) >> { Dense(64), Relu },
        outputs: { click: joined >> Dense(1), kind: joined >> Dense(5) },
    }
}
kiln::model! {
    /// An encoder–decoder transformer over padded sources (seq2seq_dates, smaller).
    struct Translator {
        inputs: { source: [24], padding: [24], target: [10] },
        encoded: source >> {
            Embedding(vocab = 40, dim = 32), PositionalEmbedding,
            TransformerEncoderLayer(heads = 4, ff = 64, key_padding = padding),
        },
        decoded: target >> {
            Embedding(vocab = 40, dim = 32), PositionalEmbedding,
            TransformerDecoderLayer(heads = 4, ff = 64, memory = encoded, memory_padding = padding),
        },
        outputs: { next: decoded >> Dense(40) },
    }
}
kiln::model! {
    /// A 1-d convolution over the steps, then a bidirectional GRU.
    struct ConvBiGru {
        input: [32, 64],
        Transpose, conv: Conv1d(32, kernel = 3, padding = 1), Relu, Transpose,
        gru: Gru(48, bidirectional = true),
        LastStep, fc: Dense(10),
    }
}

kiln::model! {
    /// Branches concatenated and summed, with an identity branch and a projection.
    struct Branched {
        input: [1, 28, 28],
        stem: Conv2d(8, kernel = 3, padding = 1), Relu,
        mixed: Concat {
            b1: { Conv2d(4, kernel = 1), Relu },
            b3: { Conv2d(4, kernel = 3, padding = 1), Relu },
            skip: {},
        },
        down: Add {
            main: { Conv2d(16, kernel = 3, stride = 2, padding = 1), BatchNorm2d, Relu },
            shortcut: { Conv2d(16, kernel = 1, stride = 2), BatchNorm2d },
        },
        Relu,
        GlobalAvgPool,
        fc: Dense(10),
    }
}

kiln::model! {
    /// A generator: noise to a 28x28 image by transposed convolutions and upsampling.
    struct Decoder {
        input: [32, 1, 1],
        project: ConvTranspose2d(16, kernel = 7), BatchNorm2d, Relu,
        up: ConvTranspose2d(8, kernel = 4, stride = 2, padding = 1), Relu,
        Upsample(2, mode = bilinear),
        out: Conv2d(1, kernel = 3, padding = 1), Sigmoid,
    }
}

/// `y = x · σ(x)` per value, as a user writes a layer: its own parameters (a scale)
/// and saved scratch.
struct ScaledSwish<const N: usize>;

impl<const N: usize> kiln::Layer for ScaledSwish<N> {
    const INPUT: &'static [usize] = &[N];
    const OUTPUT: &'static [usize] = &[N];
    const PARAMS: &'static [kiln::ParamDecl] =
        &[kiln::ParamDecl::new("scale", &[N], kiln::init::Init::Ones)];
    const SAVED: usize = N;

    fn forward<T: Float>(io: kiln::custom::Forward<'_, T>) {
        let scale = io.params.get(0);
        for ((y, s), x) in io
            .output
            .chunks_mut(N)
            .zip(io.saved.chunks_mut(N))
            .zip(io.input.chunks(N))
        {
            for i in 0..N {
                s[i] = T::ONE / (T::ONE + (-x[i]).exp());
                y[i] = scale[i] * x[i] * s[i];
            }
        }
    }

    fn backward<T: Float>(mut io: kiln::custom::Backward<'_, T>) {
        let scale = io.params.get(0);
        let [grad_scale] = io.grad_params.split();
        for (n, (x, s)) in io.input.chunks(N).zip(io.saved.chunks(N)).enumerate() {
            for i in 0..N {
                let dy = io.grad_output[n * N + i];
                grad_scale[i] += dy * x[i] * s[i];
                if let Some(dx) = io.grad_input.as_deref_mut() {
                    dx[n * N + i] += dy * scale[i] * s[i] * (T::ONE + x[i] * (T::ONE - s[i]));
                }
            }
        }
    }
}

kiln::model! {
    struct WithUserLayer {
        input: [784],
        fc1: Dense(128),
        act: use ScaledSwish<128>,
        fc2: Dense(10),
    }
}

kiln::model! {
    /// A model used as a layer of the next: its nodes live in the outer workspace.
    struct Stem {
        input: [1, 28, 28],
        conv: Conv2d(8, kernel = 3, stride = 2, padding = 1), BatchNorm2d, Relu,
        drop: Dropout(0.1),
        GlobalAvgPool,
    }
}

kiln::model! {
    struct WithInnerModel {
        input: [1, 28, 28],
        stem: use Stem -> [8],
        fc: Dense(10),
    }
}

/// Allocations made by `steps` calls of `step` after `warmup` calls.
fn count(warmup: usize, steps: usize, mut step: impl FnMut()) -> usize {
    for _ in 0..warmup {
        step();
    }
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    for _ in 0..steps {
        step();
    }
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCATIONS.load(Ordering::SeqCst)
}

#[test]
fn training_steps_allocate_nothing_after_the_first() {
    // Batch 128 of the MLP takes the multi-threaded path of the dense kernels.
    let batch = 128;
    let x: Vec<f32> = (0..batch * 784)
        .map(|i| ((i * 7919) % 256) as f32 / 255.0)
        .collect();
    let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
    let mut net = Mlp::<f32>::new(1);
    let mut opt = Adam::new(1e-3);
    let x = TensorRef::<f32, Shape1<784>>::new(&x).unwrap();
    let outside = count(2, 200, || {
        net.train_step(x, &labels[..], &CrossEntropy::default(), &mut opt)
            .unwrap();
    });
    println!("mlp, batch 128, called from outside the pool: {outside} allocations in 200 steps");
    // Rayon's injector allocates one 63-slot block per 63 jobs injected from outside
    // its pool, and a step of this MLP injects three (the first layer's forward and
    // weight gradient, the optimiser's halves): 600 jobs, about 10 blocks. Nothing
    // else may allocate; allow for a fourth job per step before calling it a leak.
    assert!(
        outside <= 200 * 4 / 63 + 1,
        "only rayon's injector may allocate: {outside}"
    );
    let n = rayon::scope(|_| {
        count(2, 200, || {
            net.train_step(x, &labels[..], &CrossEntropy::default(), &mut opt)
                .unwrap();
        })
    });
    println!("mlp, batch 128, on a rayon worker: {n} allocations in 200 steps");
    assert_eq!(n, 0, "allocations in 200 training steps of the MLP");

    // A smaller batch after a larger one reuses the workspace.
    let small = x.slice(0, 32);
    let n = rayon::scope(|_| {
        count(1, 50, || {
            net.train_step(small, &labels[..32], &CrossEntropy::default(), &mut opt)
                .unwrap();
        })
    });
    assert_eq!(n, 0, "allocations in 50 steps at a smaller batch");

    // Checked serving through the workspace: the input check allocates nothing either.
    let n = rayon::scope(|_| {
        count(1, 50, || {
            net.try_infer(small).unwrap();
        })
    });
    assert_eq!(n, 0, "allocations in 50 checked inferences");

    let batch = 64;
    let x: Vec<f64> = (0..batch * 256)
        .map(|i| ((i * 31) % 17) as f64 / 17.0 - 0.5)
        .collect();
    let y: Vec<f64> = (0..batch * 4).map(|i| (i % 3) as f64).collect();
    let mut wide = Wide::<f64>::new(2);
    wide.set_regularization(Regularization { l1: 1e-5, l2: 1e-4 });
    let mut sgd = Sgd::new(1e-3).momentum(0.9).nesterov(true);
    let x = TensorRef::<f64, Shape1<256>>::new(&x).unwrap();
    let n = rayon::scope(|_| {
        count(2, 50, || {
            wide.train_step(x, &y[..], &Mse::default(), &mut sgd)
                .unwrap();
        })
    });
    println!("wide residual f64, batch 64: {n} allocations in 50 steps");
    assert_eq!(
        n, 0,
        "allocations in 50 training steps of the residual model"
    );

    // Convolutions (batch split across threads), pooling, batch norm and dropout.
    let batch = 64;
    let x: Vec<f32> = (0..batch * 784)
        .map(|i| ((i * 13) % 255) as f32 / 255.0)
        .collect();
    let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
    let mut cnn = Cnn::<f32>::new(3);
    let mut adam = Adam::new(1e-3);
    let x = TensorRef::<f32, Shape3<1, 28, 28>>::new(&x).unwrap();
    let n = rayon::scope(|_| {
        count(2, 20, || {
            cnn.train_step(x, &labels, &CrossEntropy::default(), &mut adam)
                .unwrap();
        })
    });
    println!("cnn with batch norm, batch 64: {n} allocations in 20 steps");
    assert_eq!(n, 0, "allocations in 20 training steps of the CNN");
    let mut cnn = PoolCnn::<f32>::new(5);
    let mut adam = Adam::new(1e-3);
    let n = rayon::scope(|_| {
        count(2, 20, || {
            cnn.train_step(x, &labels, &CrossEntropy::default(), &mut adam)
                .unwrap();
        })
    });
    println!("cnn with max pools, batch 64: {n} allocations in 20 steps");
    assert_eq!(n, 0, "allocations in 20 training steps of the max-pool CNN");
    let x: Vec<f32> = (0..16 * 3 * 1024)
        .map(|i| ((i * 7) % 255) as f32 / 255.0)
        .collect();
    let x = TensorRef::<f32, Shape3<3, 32, 32>>::new(&x).unwrap();
    let mut cifar = Cifar::<f32>::new(6);
    let mut sgd = Sgd::new(0.1).momentum(0.9);
    let n = rayon::scope(|_| {
        count(2, 20, || {
            cifar
                .train_step(x, &labels[..16], &CrossEntropy::default(), &mut sgd)
                .unwrap();
        })
    });
    println!("32 x 32 convolutions, batch 16: {n} allocations in 20 steps");
    assert_eq!(n, 0, "allocations in 20 training steps of the 32 x 32 CNN");

    // The benchmark's wide MLP with plain SGD: without the non-finite guard, each dense
    // layer's update is added into its weight by the weight-gradient product, inside
    // the backward pass.
    let batch = 128;
    let x: Vec<f32> = (0..batch * 784)
        .map(|i| ((i * 29) % 253) as f32 / 253.0)
        .collect();
    let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
    let mut wide = WideMlp::<f32>::new(4);
    let mut sgd = Sgd::new(0.05);
    let x = TensorRef::<f32, Shape1<784>>::new(&x).unwrap();
    // Guarded (gradients stored and checked before the step), then unguarded (the
    // update inside the pass).
    for guard in [true, false] {
        wide.set_nonfinite_guard(guard);
        let n = rayon::scope(|_| {
            count(2, 10, || {
                wide.train_step(x, &labels, &CrossEntropy::default(), &mut sgd)
                    .unwrap();
            })
        });
        println!("784-1024-1024-10 MLP, batch 128, guard {guard}: {n} allocations in 10 steps");
        assert_eq!(n, 0, "allocations in 10 training steps of the wide MLP");
    }

    // Recurrence with the batch's halves on two threads, weight gradients split by rows.
    let batch = 32;
    let x: Vec<f32> = (0..batch * 32 * 64)
        .map(|i| ((i * 37) % 251) as f32 / 251.0 - 0.5)
        .collect();
    let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
    let mut lstm = Lstm::<f32>::new(5);
    let mut adam = Adam::new(1e-3);
    let x = TensorRef::<f32, Shape2<32, 64>>::new(&x).unwrap();
    let n = rayon::scope(|_| {
        count(2, 20, || {
            lstm.train_step(x, &labels, &CrossEntropy::default(), &mut adam)
                .unwrap();
        })
    });
    println!("lstm 64 -> 128 over 32 steps, batch 32: {n} allocations in 20 steps");
    assert_eq!(n, 0, "allocations in 20 training steps of the LSTM");
    let mut conv_gru = ConvBiGru::<f32>::new(5);
    let mut adam = Adam::new(1e-3);
    let n = rayon::scope(|_| {
        count(2, 20, || {
            conv_gru
                .train_step(x, &labels, &CrossEntropy::default(), &mut adam)
                .unwrap();
        })
    });
    println!("conv1d and a bidirectional GRU over 32 steps, batch 32: {n} allocations in 20 steps");
    assert_eq!(
        n, 0,
        "allocations in 20 training steps of the 1-d convolution and bidirectional GRU"
    );

    // Two inputs and two outputs: the loss of both gathers each output's part into
    // per-thread buffers that grow once; named inference packs into another.
    let batch = 32;
    let users: Vec<f32> = (0..batch).map(|i| (i % 100) as f32).collect();
    let context: Vec<f32> = (0..batch * 12).map(|i| (i % 7) as f32 / 7.0).collect();
    let clicks: Vec<f32> = (0..batch).map(|i| (i % 2) as f32).collect();
    let kinds: Vec<f32> = (0..batch * 5).map(|i| (i % 5 == 0) as u8 as f32).collect();
    let inputs = TwoTowerInputs {
        user: &users[..],
        context: &context[..],
    };
    let data = TwoTower::<f32>::dataset(
        inputs,
        TwoTowerOutputs {
            click: &clicks[..],
            kind: &kinds[..],
        },
    )
    .unwrap();
    let loss = TwoTowerOutputs {
        click: BceWithLogits::default(),
        kind: BceWithLogits::default().weight(0.5),
    };
    let mut towers = TwoTower::<f32>::new(7);
    let mut adam = Adam::new(1e-3);
    let x = data.features();
    let n = rayon::scope(|_| {
        count(2, 20, || {
            towers
                .train_step(x, data.targets(), &loss, &mut adam)
                .unwrap();
        })
    });
    println!("two inputs, two outputs, batch 32: {n} allocations in 20 training steps");
    assert_eq!(
        n, 0,
        "allocations in 20 training steps of a two-input, two-output model"
    );
    let n = count(2, 20, || {
        towers.infer_outputs(inputs).unwrap();
    });
    println!("named inference of two inputs and two outputs: {n} allocations in 20 calls");
    assert_eq!(n, 0, "allocations in 20 calls of infer_outputs");

    // Cross-attention and key padding: an encoder–decoder's training steps (dropout
    // on) and greedy decoding's calls of named inference.
    let sources: Vec<f32> = (0..batch * 24).map(|i| (i * 7 % 40) as f32).collect();
    let padding: Vec<f32> = (0..batch * 24)
        .map(|i| f32::from(u8::from(i % 24 >= 12 + i / 24 % 12)))
        .collect();
    let targets: Vec<f32> = (0..batch * 10).map(|i| (i * 3 % 40) as f32).collect();
    let next: Vec<usize> = (0..batch * 10).map(|i| i * 11 % 40).collect();
    let inputs = TranslatorInputs {
        source: &sources[..],
        padding: &padding[..],
        target: &targets[..],
    };
    let data = Translator::<f32>::dataset(inputs, TranslatorOutputs { next: &next[..] }).unwrap();
    let loss = TranslatorOutputs {
        next: CrossEntropy::default(),
    };
    let mut translator = Translator::<f32>::new(8);
    let mut adam = Adam::new(1e-3);
    let x = data.features();
    let n = rayon::scope(|_| {
        count(2, 20, || {
            translator
                .train_step(x, data.targets(), &loss, &mut adam)
                .unwrap();
        })
    });
    println!("encoder-decoder transformer, batch 32: {n} allocations in 20 training steps");
    assert_eq!(
        n, 0,
        "allocations in 20 training steps of an encoder-decoder"
    );
    // On a worker too: its dense layers are wide enough to split across threads.
    let n = rayon::scope(|_| {
        count(2, 20, || {
            translator.infer_outputs(inputs).unwrap();
        })
    });
    println!("encoder-decoder named inference: {n} allocations in 20 calls");
    assert_eq!(
        n, 0,
        "allocations in 20 calls of the encoder-decoder's infer_outputs"
    );

    // Branch-and-merge blocks, and the input gradient of a custom loop.
    let batch = 16;
    let x: Vec<f32> = (0..batch * 784)
        .map(|i| ((i * 41) % 257) as f32 / 257.0)
        .collect();
    let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
    let mut branched = Branched::<f32>::new(6);
    let mut adam = Adam::new(1e-3);
    let x = TensorRef::<f32, Shape3<1, 28, 28>>::new(&x).unwrap();
    let n = rayon::scope(|_| {
        count(2, 20, || {
            branched
                .train_step(x, &labels, &CrossEntropy::default(), &mut adam)
                .unwrap();
        })
    });
    println!("branched CNN, batch 16: {n} allocations in 20 steps");
    assert_eq!(n, 0, "allocations in 20 training steps of the branched CNN");
    let grad_output = vec![0.1_f32; batch * 10];
    let n = rayon::scope(|_| {
        count(2, 20, || {
            branched.forward_train(x);
            branched.backward_to_input(&grad_output).unwrap();
        })
    });
    println!("branched CNN, batch 16: {n} allocations in 20 input-gradient passes");
    assert_eq!(n, 0, "allocations in 20 input-gradient passes");
    // A custom loop's step: value_and_grad_to_input, then apply_gradients.
    let n = rayon::scope(|_| {
        count(2, 20, || {
            let (_, grad_x) = branched
                .value_and_grad_to_input(x, &labels, &CrossEntropy::default())
                .unwrap();
            assert_eq!(grad_x.len(), batch * 784);
            branched.apply_gradients(&mut adam).unwrap();
        })
    });
    println!("branched CNN, batch 16: {n} allocations in 20 custom-loop steps");
    assert_eq!(n, 0, "allocations in 20 custom-loop steps");
    // The same as one rank's part of a data-parallel step (the all-reduce a copy).
    let comm = kiln::distributed::SingleProcess;
    let part = kiln::data::BatchPart {
        first: batch,
        rows: batch,
        total: 2 * batch,
    };
    branched.set_batch_part(Some(part));
    let n = rayon::scope(|_| {
        count(2, 20, || {
            branched
                .value_and_grad(x, &labels, &CrossEntropy::default())
                .unwrap();
            branched.all_reduce_gradients(&comm, 0.5).unwrap();
            branched.apply_gradients(&mut adam).unwrap();
        })
    });
    branched.set_batch_part(None);
    println!("branched CNN, batch 16: {n} allocations in 20 data-parallel custom-loop steps");
    assert_eq!(n, 0, "allocations in 20 data-parallel custom-loop steps");

    // A decoder: transposed convolutions and bilinear upsampling.
    let batch = 16;
    let z: Vec<f32> = (0..batch * 32)
        .map(|i| ((i * 43) % 97) as f32 / 97.0 - 0.5)
        .collect();
    let target: Vec<f32> = (0..batch * 784).map(|i| (i % 7) as f32 / 7.0).collect();
    let mut decoder = Decoder::<f32>::new(7);
    let mut adam = Adam::new(1e-3);
    let z = TensorRef::<f32, Shape3<32, 1, 1>>::new(&z).unwrap();
    let n = rayon::scope(|_| {
        count(2, 20, || {
            decoder
                .train_step(z, &target[..], &Mse::default(), &mut adam)
                .unwrap();
        })
    });
    println!("decoder, batch 16: {n} allocations in 20 steps");
    assert_eq!(n, 0, "allocations in 20 training steps of the decoder");

    // A user layer: its passes get slices of the workspace, like a built-in one's.
    let batch = 32;
    let x: Vec<f32> = (0..batch * 784)
        .map(|i| ((i * 41) % 257) as f32 / 257.0)
        .collect();
    let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
    let mut net = WithUserLayer::<f32>::new(8);
    let mut adam = Adam::new(1e-3);
    let x = TensorRef::<f32, Shape1<784>>::new(&x).unwrap();
    let n = rayon::scope(|_| {
        count(2, 20, || {
            net.train_step(x, &labels, &CrossEntropy::default(), &mut adam)
                .unwrap();
        })
    });
    println!("MLP with a user layer, batch 32: {n} allocations in 20 steps");
    assert_eq!(n, 0, "allocations in 20 training steps with a user layer");

    // A model used as a layer, with batch norm and dropout: its passes run over
    // slices of the outer model's workspace.
    let images: Vec<f32> = (0..batch * 784)
        .map(|i| ((i * 43) % 251) as f32 / 251.0)
        .collect();
    let mut nested = WithInnerModel::<f32>::new(9);
    let mut adam_nested = Adam::new(1e-3);
    let x_image = TensorRef::<f32, Shape3<1, 28, 28>>::new(&images).unwrap();
    let n = rayon::scope(|_| {
        count(2, 20, || {
            nested
                .train_step(x_image, &labels, &CrossEntropy::default(), &mut adam_nested)
                .unwrap();
        })
    });
    println!("CNN with a model as a layer, batch 32: {n} allocations in 20 steps");
    assert_eq!(
        n, 0,
        "allocations in 20 training steps with a model as a layer"
    );

    // Gradient clipping by norm: one more pass over the gradient buffer, no buffer.
    net.set_grad_clip(Some(GradClip::Norm(0.5))).unwrap();
    let n = rayon::scope(|_| {
        count(2, 20, || {
            net.train_step(x, &labels, &CrossEntropy::default(), &mut adam)
                .unwrap();
        })
    });
    println!("MLP with a user layer and clipping, batch 32: {n} allocations in 20 steps");
    assert_eq!(n, 0, "allocations in 20 training steps with clipping");

    // A frozen layer and a scaled one: their values are kept in a buffer sized when
    // freezing or scaling.
    net.freeze("fc1").unwrap();
    net.set_lr_scale("fc2", 0.1).unwrap();
    let n = rayon::scope(|_| {
        count(2, 20, || {
            net.train_step(x, &labels, &CrossEntropy::default(), &mut adam)
                .unwrap();
        })
    });
    println!("... and fc1 frozen, fc2 at a tenth of the rate: {n} allocations in 20 steps");
    assert_eq!(n, 0, "allocations in 20 training steps with a frozen layer");

    // Gradient accumulation over four micro-batches (its buffer is made on first use).
    let n = rayon::scope(|_| {
        count(2, 20, || {
            for _ in 0..4 {
                net.accumulate_gradients(x, &labels, &CrossEntropy::default())
                    .unwrap();
            }
            net.apply_accumulated(&mut adam).unwrap();
        })
    });
    println!("... accumulating 4 micro-batches a step: {n} allocations in 20 steps");
    assert_eq!(n, 0, "allocations in 20 accumulated steps");
}
