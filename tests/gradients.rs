//! Whole generated models checked against central finite differences in f64: every
//! parameter's gradient and the input's (`backward_to_input`), the fused and unfused
//! paths of each activation, dense layers on sequences, residual blocks (including
//! nested ones sharing an input) and softmax layers inside a network.

use kiln::prelude::*;

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        })
        .collect()
}

/// Checks d(loss)/d(params) of `model` on `x` against central differences.
fn check_model<M, L>(mut model: M, x: &[f64], target: &L::Target, loss: &L, tolerance: f64)
where
    M: Model<f64>,
    L: Loss<f64>,
{
    let x = TensorRef::<f64, M::Input>::new(x).unwrap();
    let layout_width = *M::SPEC.output.last().unwrap();
    let output = model.forward_train(x).to_vec();
    let mut grad_output = vec![0.0; output.len()];
    let layout = kiln::loss::OutputLayout {
        batch: x.batch(),
        width: layout_width,
    };
    loss.evaluate(&output, target, layout, Some(&mut grad_output))
        .unwrap();
    model.backward(&grad_output).unwrap();
    let analytic = model.grads().unwrap().as_slice().to_vec();

    let h = 1e-6;
    let params = model.params().as_slice().to_vec();
    let mut worst: f64 = 0.0;
    // The numeric loss runs the training forward too, so batch norm normalises with
    // the batch's statistics as it did for the analytic gradient (none of these models
    // has a dropout probability above zero).
    let train_loss = |model: &mut M| {
        let output = model.forward_train(x).to_vec();
        loss.evaluate(&output, target, layout, None).unwrap()
    };
    for i in 0..params.len() {
        let mut probe = params.clone();
        probe[i] = params[i] + h;
        model.set_params(&probe).unwrap();
        let up = train_loss(&mut model);
        probe[i] = params[i] - h;
        model.set_params(&probe).unwrap();
        let down = train_loss(&mut model);
        let numeric = (up - down) / (2.0 * h);
        let error = (analytic[i] - numeric).abs() / 1f64.max(numeric.abs());
        worst = worst.max(error);
        assert!(
            error <= tolerance,
            "{}: parameter {i}: analytic {} vs numeric {numeric} (error {error:e})",
            M::SPEC.name,
            analytic[i]
        );
    }
    model.set_params(&params).unwrap();
    println!("{}: worst relative error {worst:e}", M::SPEC.name);
    check_input_gradient(
        &mut model,
        x,
        target,
        loss,
        &grad_output,
        &analytic,
        tolerance,
    );

    // A training step reads the batch where it is instead of the workspace's copy;
    // with plain SGD at rate 1 it must subtract the gradients checked above, exactly
    // but for the last bits of a layer of one unit, whose update inside the backward
    // pass faer forms as a matrix-vector product added straight into the weight (its
    // sum rounds in another order than the stored gradient's). Another batch in the
    // workspace first, so reading the copy would show.
    let other: Vec<f64> = x.as_slice().iter().map(|v| 0.5 - v).collect();
    model.forward_train(TensorRef::<f64, M::Input>::new(&other).unwrap());
    model
        .train_step(x, target, loss, &mut Sgd::new(1.0))
        .unwrap();
    for (i, ((&after, &before), &g)) in model
        .params()
        .as_slice()
        .iter()
        .zip(&params)
        .zip(&analytic)
        .enumerate()
    {
        let expected = before - g;
        // In ulps of the operands: the subtraction may cancel most of them.
        let scale = before.abs().max(g.abs()).max(1e-300);
        let ulps = (after - expected).abs() / (f64::EPSILON * scale);
        assert!(
            ulps <= 4.0,
            "{}: parameter {i}: {after} after the step, {expected} expected",
            M::SPEC.name
        );
    }
    // Backward reads the input forward_train copied; after a training step there is
    // none.
    let error = model.backward(&grad_output).unwrap_err();
    assert!(error.to_string().contains("forward_train"), "{error}");
}

/// Checks d(loss)/d(input) from `backward_to_input` against central differences on
/// the batch, and that the parameter gradients it leaves are `backward`'s.
fn check_input_gradient<M, L>(
    model: &mut M,
    x: TensorRef<'_, f64, M::Input>,
    target: &L::Target,
    loss: &L,
    grad_output: &[f64],
    param_grads: &[f64],
    tolerance: f64,
) where
    M: Model<f64>,
    L: Loss<f64>,
{
    model.forward_train(x);
    if M::SPEC.reads_tokens() {
        let error = model.backward_to_input(grad_output).unwrap_err();
        assert!(error.to_string().contains("token ids"), "{error}");
        return;
    }
    let analytic = model.backward_to_input(grad_output).unwrap().to_vec();
    assert_eq!(analytic.len(), x.as_slice().len());
    assert_eq!(
        model.grads().unwrap().as_slice(),
        param_grads,
        "{}",
        M::SPEC.name
    );
    let layout = kiln::loss::OutputLayout {
        batch: x.batch(),
        width: *M::SPEC.output.last().unwrap(),
    };
    let h = 1e-6;
    let mut probe = x.as_slice().to_vec();
    let mut worst: f64 = 0.0;
    for i in 0..probe.len() {
        let mut loss_at = |value: f64| {
            probe[i] = value;
            let output = model
                .forward_train(TensorRef::<f64, M::Input>::new(&probe).unwrap())
                .to_vec();
            loss.evaluate(&output, target, layout, None).unwrap()
        };
        let centre = x.as_slice()[i];
        let numeric = (loss_at(centre + h) - loss_at(centre - h)) / (2.0 * h);
        probe[i] = centre;
        let error = (analytic[i] - numeric).abs() / 1f64.max(numeric.abs());
        worst = worst.max(error);
        assert!(
            error <= tolerance,
            "{}: input {i}: analytic {} vs numeric {numeric} (error {error:e})",
            M::SPEC.name,
            analytic[i]
        );
    }
    println!(
        "{}: input gradient worst relative error {worst:e}",
        M::SPEC.name
    );
}

kiln::model! {
    struct ReluMlp { input: [5], fc1: Dense(7), Relu, fc2: Dense(4), Tanh, fc3: Dense(3) }
}
kiln::model! {
    struct SmoothMlp {
        input: [6],
        Dense(8), Sigmoid,
        Dense(8), Gelu,
        Dense(8), LeakyRelu(0.1),
        Dense(8), LeakyRelu(-0.2),
        Dense(3, bias = false),
    }
}
kiln::model! {
    struct Unfused { input: [4], Relu, Dense(5), Dropout(0.0), Tanh, Dense(5), Sigmoid, Softmax, Dense(2) }
}
kiln::model! {
    struct SequenceDense { input: [3, 4], Dense(6), Tanh, Dense(2), Flatten, Dense(3) }
}
kiln::model! {
    struct Residuals {
        input: [6],
        fc_in: Dense(6), Tanh,
        block: Residual {
            Dense(6), Gelu,
            inner: Residual { Dense(6), Tanh },
            Dense(6),
        },
        LogSoftmax,
        out: Dense(3),
    }
}
kiln::model! {
    struct ResidualFirst { input: [4], Residual { Dense(4), Tanh }, Dense(2) }
}

#[test]
fn dense_relu_tanh_with_cross_entropy() {
    let x: Vec<f64> = values(3 * 5, 1).iter().map(|v| v * 2.0).collect();
    check_model(
        ReluMlp::<f64>::new(1),
        &x,
        &[0, 2, 1][..],
        &CrossEntropy::default(),
        1e-6,
    );
}

#[test]
fn smooth_activations_with_mse() {
    let x = values(4 * 6, 2);
    let y = values(4 * 3, 3);
    check_model(SmoothMlp::<f64>::new(2), &x, &y[..], &Mse::default(), 1e-6);
}

#[test]
fn unfused_activations_and_softmax_inside() {
    let x = values(3 * 4, 4);
    let y: Vec<f64> = values(3 * 2, 5).iter().map(|v| (v + 1.0) / 2.0).collect();
    check_model(
        Unfused::<f64>::new(3),
        &x,
        &y[..],
        &BceWithLogits::default(),
        1e-6,
    );
}

#[test]
fn dense_applies_per_step_on_sequences() {
    let x = values(2 * 12, 6);
    check_model(
        SequenceDense::<f64>::new(4),
        &x,
        &[2, 0][..],
        &CrossEntropy {
            reduction: Reduction::Sum,
        },
        1e-6,
    );
}

#[test]
fn nested_residual_blocks_sum_their_gradients() {
    let x = values(3 * 6, 7);
    check_model(
        Residuals::<f64>::new(5),
        &x,
        &[0, 1, 2][..],
        &CrossEntropy::default(),
        1e-6,
    );
    let x = values(2 * 4, 8);
    check_model(
        ResidualFirst::<f64>::new(6),
        &x,
        &[1, 0][..],
        &CrossEntropy::default(),
        1e-6,
    );
}

#[test]
fn probabilities_with_binary_cross_entropy() {
    kiln::model! { struct Prob { input: [3], Dense(4), Tanh, Dense(2), Sigmoid } }
    let x = values(3 * 3, 9);
    let y = [1.0, 0.0, 0.0, 1.0, 0.5, 0.25];
    check_model(
        Prob::<f64>::new(7),
        &x,
        &y[..],
        &BinaryCrossEntropy::default(),
        1e-6,
    );
}

kiln::model! {
    struct StridedCnn {
        input: [2, 7, 6],
        conv: Conv2d(3, kernel = (3, 2), stride = (2, 1), padding = 1), Relu,
        MaxPool2d(2, floor = true),
        Flatten,
        out: Dense(4),
    }
}
kiln::model! {
    struct NormalisedCnn {
        input: [1, 8, 8],
        conv1: Conv2d(4, kernel = 3, dilation = 2, padding = 2, bias = false),
        bn1: BatchNorm2d, Tanh,
        AvgPool2d(2),
        block: Residual { Conv2d(4, kernel = 3, padding = 1), Sigmoid }, Tanh,
        conv2: Conv2d(2, kernel = 1),
        GlobalAvgPool,
        bn2: BatchNorm1d, Sigmoid,
        out: Dense(3),
    }
}
kiln::model! {
    struct PaddedPools {
        input: [2, 6, 6],
        MaxPool2d(3, stride = 1, padding = 1),
        conv: Conv2d(2, kernel = 2, stride = 2), Gelu,
        AvgPool2d(3, stride = 2, padding = 1, floor = true),
        Flatten,
        Dense(2),
    }
}

#[test]
fn convolutions_with_stride_padding_and_non_square_kernels() {
    let x: Vec<f64> = values(3 * 2 * 7 * 6, 11).iter().map(|v| v * 2.0).collect();
    check_model(
        StridedCnn::<f64>::new(8),
        &x,
        &[0, 3, 1][..],
        &CrossEntropy::default(),
        1e-6,
    );
}

#[test]
fn batch_norm_dilation_residual_convolutions_and_global_pooling() {
    let x = values(3 * 64, 12);
    check_model(
        NormalisedCnn::<f64>::new(9),
        &x,
        &[2, 0, 1][..],
        &CrossEntropy::default(),
        1e-6,
    );
}

#[test]
fn padded_max_and_average_pools() {
    let x: Vec<f64> = values(2 * 72, 13)
        .iter()
        .enumerate()
        .map(|(i, v)| v + 1e-3 * i as f64)
        .collect();
    let y = values(2 * 2, 14);
    check_model(
        PaddedPools::<f64>::new(10),
        &x,
        &y[..],
        &Mse::default(),
        1e-6,
    );
}

kiln::model! {
    struct Recurrent {
        input: [5, 3],
        lstm: Lstm(4),
        gru: Gru(3),
        rnn: Rnn(4), Tanh,
        LastStep,
        out: Dense(2),
    }
}
kiln::model! {
    struct RecurrentSequenceOutput { input: [4, 2], lstm: Lstm(3), head: Dense(2) }
}

#[test]
fn stacked_recurrent_layers_and_last_step() {
    let x = values(3 * 15, 15);
    check_model(
        Recurrent::<f64>::new(11),
        &x,
        &[1, 0, 1][..],
        &CrossEntropy::default(),
        1e-6,
    );
    // One label per step: the sequence output feeds a per-step dense layer.
    let x = values(2 * 8, 16);
    let labels = [0, 1, 1, 0, 1, 0, 0, 1];
    check_model(
        RecurrentSequenceOutput::<f64>::new(12),
        &x,
        &labels[..],
        &CrossEntropy::default(),
        1e-6,
    );
}

kiln::model! {
    struct Bidirectional {
        input: [5, 3],
        lstm: Lstm(4, bidirectional = true),
        gru: Gru(3, bidirectional = true),
        rnn: Rnn(2, bidirectional = true),
        LastStep,
        out: Dense(2),
    }
}
kiln::model! {
    /// A sequence read by 1-d convolutions over its steps: `Transpose` turns
    /// `[steps, features]` into `[channels, length]` and back.
    struct Convolutions1d {
        input: [9, 3],
        Transpose,
        conv1: Conv1d(4, kernel = 3, padding = 1), Relu,
        conv2: Conv1d(5, kernel = 2, stride = 2, padding = 1, dilation = 2, bias = false), Tanh,
        Transpose,
        gru: Gru(3, bidirectional = true),
        Flatten,
        out: Dense(2),
    }
}

#[test]
fn bidirectional_recurrent_layers() {
    let x = values(3 * 15, 17);
    check_model(
        Bidirectional::<f64>::new(13),
        &x,
        &[1, 0, 1][..],
        &CrossEntropy::default(),
        1e-6,
    );
}

#[test]
fn one_dimensional_convolutions_over_a_transposed_sequence() {
    let x = values(3 * 27, 18);
    check_model(
        Convolutions1d::<f64>::new(15),
        &x,
        &[1, 0, 0][..],
        &CrossEntropy::default(),
        1e-6,
    );
}

kiln::model! {
    /// Two inputs, a convolutional branch merged with the second input, two heads.
    struct TwoHeads {
        inputs: { image: [2, 6, 6], meta: [3] },
        trunk: image >> { Conv2d(3, kernel = 3), Relu, Flatten },
        joined: Concat(trunk, meta) >> { Dense(8), Tanh },
        outputs: { digit: joined >> Dense(4), value: joined >> Dense(2) },
    }
}
kiln::model! {
    /// A graph whose nodes are read several times: an input read by two nodes, sums
    /// and products of nodes, a skip over two nodes, and an output another output
    /// reads.
    struct Diamond {
        inputs: { a: [4], b: [5, 3] },
        left: a >> { Dense(6), Tanh },
        right: a >> Dense(6),
        gate: b >> { Lstm(3), LastStep, Dense(6), Sigmoid },
        mixed: Mul(left, gate),
        both: Add(mixed, right, left) >> Gelu,
        outputs: { first: both >> Dense(3), second: Concat(first, right) >> Dense(2), mixed },
    }
}

kiln::model! {
    /// Two towers of embeddings matched element-wise, with context.
    struct Towers {
        inputs: { user: [1], item: [2], context: [3] },
        u: user >> { Embedding(5, 4), Flatten, Dense(4) },
        i: item >> { Embedding(6, 2), Flatten, Dense(4) },
        matched: Mul(u, i),
        joined: Concat(matched, context) >> { Dense(5), Tanh },
        outputs: { click: joined >> Dense(1), rating: joined >> Dense(1) },
    }
}

kiln::model! {
    /// Sums of nodes followed by activations, which the sums apply as they add: the
    /// first layer of a node's sequence, and a node's one layer.
    struct FusedSums {
        inputs: { a: [4], b: [6] },
        left: a >> { Dense(6), Tanh },
        right: b >> Dense(6),
        both: Add(left, right, b) >> { Sigmoid, Dense(5) },
        skip: a >> Dense(5),
        top: Add(both, skip) >> LeakyRelu(0.2),
        outputs: { y: top >> Dense(3), both },
    }
}
kiln::model! {
    /// `FusedSums` with each of those activations in a node of its own, after a sum
    /// node of its own: nothing is fused.
    struct UnfusedSums {
        inputs: { a: [4], b: [6] },
        left: a >> { Dense(6), Tanh },
        right: b >> Dense(6),
        summed: Add(left, right, b),
        both: summed >> { Sigmoid, Dense(5) },
        skip: a >> Dense(5),
        added: Add(both, skip),
        top: added >> LeakyRelu(0.2),
        outputs: { y: top >> Dense(3), both },
    }
}

#[test]
fn graph_sums_fuse_the_activation_after_them() {
    let loss = FusedSumsOutputs {
        y: Mse::default(),
        both: Mse::default().weight(0.5),
    };
    let x = values(3 * 10, 22);
    let targets = values(3 * 8, 23);
    check_model(FusedSums::<f64>::new(24), &x, &targets[..], &loss, 1e-6);

    // The fused sums keep no tensor for the activations' inputs: the sigmoid's six
    // values and the leaky ReLU's five per sample (`nodes` ends with the total).
    let values_per_sample = |nodes: &[usize]| *nodes.last().unwrap();
    assert_eq!(
        values_per_sample(FusedSums::<f64>::SPEC.nodes) + 11,
        values_per_sample(UnfusedSums::<f64>::SPEC.nodes)
    );
    // And they compute the nodes in turn, bit for bit: outputs, parameter gradients
    // and the input gradient.
    let mut fused = FusedSums::<f64>::new(25);
    let mut unfused = UnfusedSums::<f64>::new(26);
    unfused.set_params(fused.params().as_slice()).unwrap();
    let x = TensorRef::<f64, <FusedSums<f64> as Model<f64>>::Input>::new(&x).unwrap();
    let output = fused.forward_train(x).to_vec();
    assert_eq!(output, unfused.forward_train(x).to_vec());
    let grad_output = values(output.len(), 27);
    let grad_input = fused.backward_to_input(&grad_output).unwrap().to_vec();
    assert_eq!(
        grad_input,
        unfused.backward_to_input(&grad_output).unwrap().to_vec()
    );
    assert_eq!(
        fused.grads().unwrap().as_slice(),
        unfused.grads().unwrap().as_slice()
    );
}

#[test]
fn graph_models_with_several_inputs_and_outputs() {
    let (digit, value) = (CrossEntropy::default(), CrossEntropy::default().weight(0.3));
    let loss = TwoHeadsOutputs { digit, value };
    // Three samples of [72 image values, 3 meta values]; targets [digit, value] each.
    let x = values(3 * 75, 19);
    check_model(
        TwoHeads::<f64>::new(17),
        &x,
        &[3, 1, 0, 0, 2, 1][..],
        &loss,
        1e-6,
    );
    let loss = DiamondOutputs {
        first: Mse::default(),
        second: Mse::default().weight(2.0),
        mixed: Mse::default().weight(0.5),
    };
    let x = values(2 * 19, 20);
    let targets = values(2 * 11, 21);
    check_model(Diamond::<f64>::new(18), &x, &targets[..], &loss, 1e-6);
    // Token inputs: ids for the embeddings, floats for the context.
    let x = [
        3.0, 5.0, 0.0, 0.2, -0.4, 0.9, //
        0.0, 1.0, 5.0, -0.7, 0.1, 0.3, //
        4.0, 2.0, 2.0, 0.5, 0.5, -0.5,
    ];
    let targets = [1.0, 0.5, 0.0, -1.0, 1.0, 2.0];
    let loss = TowersOutputs {
        click: BceWithLogits::default(),
        rating: Mse::default().weight(0.5),
    };
    check_model(Towers::<f64>::new(19), &x, &targets[..], &loss, 1e-6);
}

kiln::model! {
    /// An encoder–decoder: padded self-attention over the source, then causal
    /// self-attention over the target and cross-attention from it to the source.
    struct EncoderDecoder {
        inputs: { source: [5, 4], padding: [5], target: [3, 4] },
        memory: source >> { Dense(4), MultiHeadAttention(heads = 2, key_padding = padding) },
        decoded: target >> {
            MultiHeadAttention(heads = 2, causal = true),
            MultiHeadAttention(heads = 2, memory = memory, key_padding = padding),
            Flatten,
        },
        outputs: { y: decoded >> Dense(3) },
    }
}

kiln::model! {
    /// PyTorch's transformer layers with the options the reference test leaves out:
    /// a post-norm ReLU encoder, a pre-norm GELU decoder with padded targets too.
    struct TransformerLayers {
        inputs: { source: [4, 4], padding: [4], target: [3, 4], target_padding: [3] },
        encoded: source >> TransformerEncoderLayer(heads = 2, ff = 6, dropout = 0.0),
        decoded: target >> {
            TransformerDecoderLayer(
                heads = 1, ff = 5, memory = encoded, dropout = 0.0, activation = gelu,
                norm_first = true, key_padding = target_padding, memory_padding = padding,
            ),
            Flatten,
        },
        outputs: { y: decoded >> Dense(2) },
    }
}

#[test]
fn transformer_encoder_and_decoder_layers() {
    // Two samples of [source 16, padding 4, target 12, target padding 3].
    let mut x = values(2 * 35, 24);
    x[16..20].copy_from_slice(&[0.0, 0.0, 1.0, 0.0]);
    x[32..35].copy_from_slice(&[0.0, 0.0, 1.0]);
    x[35 + 16..35 + 20].fill(0.0);
    x[35 + 32..35 + 35].fill(0.0);
    check_model(
        TransformerLayers::<f64>::new(22),
        &x,
        &[1, 0][..],
        &CrossEntropy::default(),
        1e-6,
    );
}

#[test]
fn cross_attention_with_and_without_key_padding() {
    // Two samples of [source 20, padding 5, target 12]: the first with its last two
    // source steps padded, the second with none.
    let mut x = values(2 * 37, 23);
    x[20..25].copy_from_slice(&[0.0, 0.0, 0.0, 1.0, 1.0]);
    x[37 + 20..37 + 25].fill(0.0);
    check_model(
        EncoderDecoder::<f64>::new(21),
        &x,
        &[2, 0][..],
        &CrossEntropy::default(),
        1e-6,
    );
    // What the padded source steps hold reaches no output.
    let model = EncoderDecoder::<f64>::new(21);
    let before = model.forward(TensorRef::new(&x).unwrap()).into_vec();
    x[12..20].iter_mut().for_each(|v| *v += 5.0);
    let after = model.forward(TensorRef::new(&x).unwrap()).into_vec();
    assert_eq!(before, after);
    x[8] += 1.0;
    assert_ne!(
        model.forward(TensorRef::new(&x).unwrap()).into_vec(),
        before
    );
}

kiln::model! {
    /// A one-block causal transformer language model.
    struct TinyTransformer {
        input: [6],
        tok: Embedding(vocab = 7, dim = 8),
        pos: PositionalEmbedding,
        attn_block: Residual { ln1: LayerNorm, attn: MultiHeadAttention(heads = 2, causal = true) },
        mlp_block: Residual { ln2: LayerNorm, ff1: Dense(16), Gelu, ff2: Dense(8) },
        ln_f: LayerNorm,
        head: Dense(7),
    }
}
kiln::model! {
    struct BidirectionalAttention { input: [5, 4], attn: MultiHeadAttention(heads = 4), LastStep, Dense(3) }
}

#[test]
fn transformer_block_with_embeddings_layer_norm_and_attention() {
    let ids = [0.0, 3.0, 6.0, 1.0, 1.0, 2.0, 5.0, 4.0, 0.0, 2.0, 6.0, 3.0];
    let next = [3, 6, 1, 1, 2, 0, 4, 0, 2, 6, 3, 5];
    check_model(
        TinyTransformer::<f64>::new(13),
        &ids,
        &next[..],
        &CrossEntropy::default(),
        1e-6,
    );
    let x = values(2 * 20, 17);
    check_model(
        BidirectionalAttention::<f64>::new(14),
        &x,
        &[2, 0][..],
        &CrossEntropy::default(),
        1e-6,
    );
}

/// Plain SGD behind a wrapper that does not report its linear step, so a training step
/// stores every gradient and then calls `step`.
struct StoredGradients(Sgd<f64>);

impl Optimizer<f64> for StoredGradients {
    fn step(&mut self, params: &mut [f64], grads: &[f64]) -> kiln::Result<()> {
        self.0.step(params, grads)
    }
    fn learning_rate(&self) -> f64 {
        Optimizer::<f64>::learning_rate(&self.0)
    }
    fn set_learning_rate(&mut self, lr: f64) {
        Optimizer::<f64>::set_learning_rate(&mut self.0, lr);
    }
}

/// Three SGD steps with the update made inside the backward pass (the non-finite guard
/// off), and three with the guard on (the dense weights' products deferred after the
/// pass and added straight into the weights, or, for a chain of dense layers, inside
/// it), give the parameters (and losses) of three steps through stored gradients. Each
/// must also have left the gradients unstored, which shows that it took its own path.
fn update_in_backward_matches_stored_gradients<M, L>(
    seed: u64,
    x: &[f64],
    target: &L::Target,
    loss: &L,
) where
    M: Model<f64>,
    L: Loss<f64>,
{
    for guard in [false, true] {
        let x = TensorRef::<f64, M::Input>::new(x).unwrap();
        let (mut fused, mut stored) = (M::with_seed(seed), M::with_seed(seed));
        fused.set_nonfinite_guard(guard);
        let (mut sgd, mut wrapped) = (Sgd::new(0.05), StoredGradients(Sgd::new(0.05)));
        for step in 0..3 {
            let a = fused.train_step(x, target, loss, &mut sgd).unwrap();
            let b = stored.train_step(x, target, loss, &mut wrapped).unwrap();
            assert!(
                (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
                "guard {guard}, step {step}: loss {a} vs {b}"
            );
        }
        for ((info, a), (_, b)) in fused.params().iter().zip(stored.params().iter()) {
            for (i, (a, b)) in a.iter().zip(b).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
                    "guard {guard}, {}[{i}]: {a} vs {b}",
                    info.name
                );
            }
        }
        // Each took its own path: the dense weights' gradients were never stored.
        assert_eq!(
            fused.grads().err(),
            Some(Error::GradientsNotStored { step: Some(2) }),
            "guard {guard}: every gradient was stored: the update was not made in or after the pass"
        );
        assert!(stored.grads().is_ok());
    }
}

#[test]
fn sgd_inside_the_backward_pass_equals_sgd_on_stored_gradients() {
    let x: Vec<f64> = values(3 * 5, 1);
    update_in_backward_matches_stored_gradients::<ReluMlp<f64>, _>(
        1,
        &x,
        &[0, 2, 1][..],
        &CrossEntropy::default(),
    );
    let x = values(4 * 6, 3);
    let y = values(4 * 3, 4);
    update_in_backward_matches_stored_gradients::<SmoothMlp<f64>, _>(
        2,
        &x,
        &y[..],
        &Mse::default(),
    );
    let x = values(2 * 12, 5);
    update_in_backward_matches_stored_gradients::<SequenceDense<f64>, _>(
        3,
        &x,
        &[1, 2][..],
        &CrossEntropy::default(),
    );
    let x = values(3 * 6, 7);
    update_in_backward_matches_stored_gradients::<Residuals<f64>, _>(
        4,
        &x,
        &[0, 1, 2][..],
        &CrossEntropy::default(),
    );
    let x = values(3 * 64, 12);
    update_in_backward_matches_stored_gradients::<NormalisedCnn<f64>, _>(
        9,
        &x,
        &[2, 0, 1][..],
        &CrossEntropy::default(),
    );
    let x = values(3 * 15, 15);
    update_in_backward_matches_stored_gradients::<Recurrent<f64>, _>(
        11,
        &x,
        &[1, 0, 1][..],
        &CrossEntropy::default(),
    );
    let ids = [0.0, 3.0, 6.0, 1.0, 1.0, 2.0, 5.0, 4.0, 0.0, 2.0, 6.0, 3.0];
    let next = [3, 6, 1, 1, 2, 0, 4, 0, 2, 6, 3, 5];
    update_in_backward_matches_stored_gradients::<TinyTransformer<f64>, _>(
        13,
        &ids,
        &next[..],
        &CrossEntropy::default(),
    );
    let x = values(2 * 20, 17);
    update_in_backward_matches_stored_gradients::<BidirectionalAttention<f64>, _>(
        14,
        &x,
        &[2, 0][..],
        &CrossEntropy::default(),
    );
    let x = values(2 * 75, 21);
    update_in_backward_matches_stored_gradients::<Inception<f64>, _>(
        15,
        &x,
        &[2, 0][..],
        &CrossEntropy::default(),
    );
    let x = values(3 * 6, 23);
    update_in_backward_matches_stored_gradients::<Nested<f64>, _>(
        16,
        &x,
        &[0, 2, 1][..],
        &CrossEntropy::default(),
    );
}

#[test]
fn an_invalid_learning_rate_still_fails_before_any_update() {
    let x = TensorRef::<f64, Shape1<5>>::new(&[0.1, 0.2, 0.3, 0.4, 0.5]).unwrap();
    let mut model = ReluMlp::<f64>::new(1);
    let before = model.params().as_slice().to_vec();
    for lr in [-0.1, f64::NAN, f64::INFINITY] {
        let error = model
            .train_step(x, &[1][..], &CrossEntropy::default(), &mut Sgd::new(lr))
            .unwrap_err();
        assert!(
            matches!(error, kiln::Error::InvalidHyperParameter { .. }),
            "{error}"
        );
        assert_eq!(model.params().as_slice(), &before[..]);
    }
}

kiln::model! {
    /// An Inception-style block: four branches over one input, one of them the identity.
    struct Inception {
        input: [3, 5, 5],
        mixed: Concat {
            b1: { Conv2d(2, kernel = 1), Relu },
            b3: { Conv2d(2, kernel = 1), Relu, Conv2d(3, kernel = 3, padding = 1), Tanh },
            pool: { MaxPool2d(3, stride = 1, padding = 1), Conv2d(2, kernel = 1) },
            skip: {},
        },
        GlobalAvgPool,
        out: Dense(3),
    }
}
kiln::model! {
    /// A ResNet basic block whose shortcut projects, as the shape changes.
    struct ResNetBlock {
        input: [2, 6, 6],
        down: Add {
            main: {
                Conv2d(4, kernel = 3, stride = 2, padding = 1), BatchNorm2d, Relu,
                Conv2d(4, kernel = 3, padding = 1), BatchNorm2d,
            },
            shortcut: { Conv2d(4, kernel = 1, stride = 2), BatchNorm2d },
        },
        Relu,
        GlobalAvgPool,
        fc: Dense(3),
    }
}
kiln::model! {
    /// Blocks nested three deep (Add > Concat > Mul), the first reading the input twice.
    struct Nested {
        input: [6],
        outer: Add {
            skip: {},
            deep: {
                cat: Concat {
                    p: Dense(3),
                    q: Mul { r: Dense(3), s: { Dense(3), Sigmoid } },
                },
                Tanh,
            },
        },
        head: Dense(3),
    }
}
kiln::model! {
    /// Concatenation of [steps, features] along features, and two identity branches.
    struct SequenceBranches {
        input: [3, 4],
        Concat { a: Dense(2), b: { Dense(3), Tanh }, c: {} },
        twice: Add { x: {}, y: {} },
        Flatten,
        Dense(2),
    }
}

kiln::model! {
    /// A stage of two identical residual blocks (torchvision's `layer1`), the first
    /// repetition changing the shape of a dense stage before it.
    struct Stages {
        input: [1, 6, 6],
        stem: Conv2d(3, kernel = 3, padding = 1), Relu,
        layer1: Repeat(2) {
            block: Add {
                main: { Conv2d(3, kernel = 3, padding = 1), BatchNorm2d, Relu, Conv2d(3, kernel = 3, padding = 1) },
                skip: {},
            },
            Relu,
        },
        GlobalAvgPool,
        widen: Repeat(2) { fc: Dense(5), Tanh },
        head: Dense(3),
    }
}

#[test]
fn repeated_blocks_have_parameters_of_their_own() {
    let x = values(3 * 36, 25);
    check_model(
        Stages::<f64>::new(12),
        &x,
        &[0, 2, 1][..],
        &CrossEntropy::default(),
        1e-6,
    );
    let names: Vec<&str> = Stages::<f32>::SPEC.params.iter().map(|p| p.name).collect();
    assert_eq!(
        names,
        [
            "stem.weight",
            "stem.bias",
            "layer1.0.block.main.0.weight",
            "layer1.0.block.main.0.bias",
            "layer1.0.block.main.1.weight",
            "layer1.0.block.main.1.bias",
            "layer1.0.block.main.3.weight",
            "layer1.0.block.main.3.bias",
            "layer1.1.block.main.0.weight",
            "layer1.1.block.main.0.bias",
            "layer1.1.block.main.1.weight",
            "layer1.1.block.main.1.bias",
            "layer1.1.block.main.3.weight",
            "layer1.1.block.main.3.bias",
            "widen.0.fc.weight",
            "widen.0.fc.bias",
            "widen.1.fc.weight",
            "widen.1.fc.bias",
            "head.weight",
            "head.bias",
        ]
    );
    // The first repetition maps 3 features to 5, the second 5 to 5.
    let shapes: Vec<&[usize]> = Stages::<f32>::SPEC.params.iter().map(|p| p.shape).collect();
    assert_eq!(shapes[14], &[5, 3]);
    assert_eq!(shapes[16], &[5, 5]);
}

#[test]
fn branches_concatenate_add_and_gate() {
    let x = values(2 * 75, 21);
    check_model(
        Inception::<f64>::new(8),
        &x,
        &[2, 0][..],
        &CrossEntropy::default(),
        1e-6,
    );
    let x = values(3 * 72, 22);
    check_model(
        ResNetBlock::<f64>::new(9),
        &x,
        &[1, 2, 0][..],
        &CrossEntropy::default(),
        1e-6,
    );
    let x = values(3 * 6, 23);
    check_model(
        Nested::<f64>::new(10),
        &x,
        &[0, 2, 1][..],
        &CrossEntropy::default(),
        1e-6,
    );
    let x = values(2 * 12, 24);
    check_model(
        SequenceBranches::<f64>::new(11),
        &x,
        &[1, 0][..],
        &CrossEntropy::default(),
        1e-6,
    );
}

#[test]
fn names_nest_as_pytorch_modules() {
    let names = |spec: &kiln::ModelSpec| spec.params.iter().map(|p| p.name).collect::<Vec<_>>();
    assert_eq!(
        names(Inception::<f32>::SPEC),
        [
            "mixed.b1.0.weight",
            "mixed.b1.0.bias",
            "mixed.b3.0.weight",
            "mixed.b3.0.bias",
            "mixed.b3.2.weight",
            "mixed.b3.2.bias",
            "mixed.pool.1.weight",
            "mixed.pool.1.bias",
            "out.weight",
            "out.bias",
        ]
    );
    assert_eq!(
        names(ResNetBlock::<f32>::SPEC),
        [
            "down.main.0.weight",
            "down.main.0.bias",
            "down.main.1.weight",
            "down.main.1.bias",
            "down.main.3.weight",
            "down.main.3.bias",
            "down.main.4.weight",
            "down.main.4.bias",
            "down.shortcut.0.weight",
            "down.shortcut.0.bias",
            "down.shortcut.1.weight",
            "down.shortcut.1.bias",
            "fc.weight",
            "fc.bias",
        ]
    );
    assert_eq!(
        names(Nested::<f32>::SPEC),
        [
            "outer.deep.cat.p.weight",
            "outer.deep.cat.p.bias",
            "outer.deep.cat.q.r.weight",
            "outer.deep.cat.q.r.bias",
            "outer.deep.cat.q.s.0.weight",
            "outer.deep.cat.q.s.0.bias",
            "head.weight",
            "head.bias",
        ]
    );
    assert_eq!(Inception::<f32>::SPEC.output, [3]);
}

kiln::model! {
    /// A two-scale U-Net level: down by a strided convolution, up again by a transposed
    /// convolution (stride 2, padding, output_padding) and by bilinear upsampling, the
    /// skip concatenated with both; then a nearest upsampling and a transposed
    /// convolution that keeps the size.
    struct UNetLevel {
        input: [2, 6, 6],
        enc: Conv2d(3, kernel = 3, padding = 1), Tanh,
        level: Concat {
            skip: {},
            down: {
                Conv2d(4, kernel = 3, stride = 2, padding = 1), Tanh,
                up: Concat {
                    learnt: ConvTranspose2d(2, kernel = 3, stride = 2, padding = 1, output_padding = 1),
                    smooth: { Upsample(2, mode = bilinear), Conv2d(2, kernel = 1) },
                },
            },
        },
        dec: ConvTranspose2d(2, kernel = (3, 2), padding = 1, dilation = (1, 2), bias = false),
        Tanh,
        MaxPool2d(2),
        Upsample((1, 2)),
        GlobalAvgPool,
        head: Dense(3),
    }
}

#[test]
fn u_net_level_with_transposed_convolutions_and_upsampling() {
    assert_eq!(UNetLevel::<f64>::SPEC.output, &[3]);
    let x = values(2 * 72, 26);
    check_model(
        UNetLevel::<f64>::new(13),
        &x,
        &[2, 0][..],
        &CrossEntropy::default(),
        1e-6,
    );
    let shapes: Vec<(&str, &[usize])> = UNetLevel::<f32>::SPEC
        .params
        .iter()
        .map(|p| (p.name, p.shape))
        .collect();
    // PyTorch's [in, out, kh, kw].
    assert!(shapes.contains(&("level.down.up.learnt.weight", &[4, 2, 3, 3][..])));
    assert!(shapes.contains(&("dec.weight", &[7, 2, 3, 2][..])));
}

kiln::model! {
    /// Blocks defined once and used with different parameters, one inside another's
    /// definition, and a defined block of residual form (torchvision's `BasicBlock`).
    block Unit(width) { fc: Dense(width), Tanh }
    block Pair(width) { first: Unit(width), second: Unit(width) }
    block Basic(channels) {
        Residual {
            conv1: Conv2d(channels, kernel = 3, padding = 1, bias = false), bn1: BatchNorm2d, Relu,
            conv2: Conv2d(channels, kernel = 3, padding = 1, bias = false), bn2: BatchNorm2d,
        },
        Relu,
    }
    struct Reused {
        input: [2, 4, 4],
        layer1: { Basic(2), Basic(2) },
        GlobalAvgPool,
        a: Unit(5),
        stage: { Pair(3), Unit(width = 2) },
        head: Dense(2),
    }
}

#[test]
fn defined_blocks_are_reused_with_parameters_of_their_own() {
    let x = values(3 * 32, 27);
    check_model(
        Reused::<f64>::new(14),
        &x,
        &[1, 0, 1][..],
        &CrossEntropy::default(),
        1e-6,
    );
    let names: Vec<&str> = Reused::<f32>::SPEC.params.iter().map(|p| p.name).collect();
    assert_eq!(
        names,
        [
            "layer1.0.conv1.weight",
            "layer1.0.bn1.weight",
            "layer1.0.bn1.bias",
            "layer1.0.conv2.weight",
            "layer1.0.bn2.weight",
            "layer1.0.bn2.bias",
            "layer1.1.conv1.weight",
            "layer1.1.bn1.weight",
            "layer1.1.bn1.bias",
            "layer1.1.conv2.weight",
            "layer1.1.bn2.weight",
            "layer1.1.bn2.bias",
            "a.fc.weight",
            "a.fc.bias",
            "stage.0.first.fc.weight",
            "stage.0.first.fc.bias",
            "stage.0.second.fc.weight",
            "stage.0.second.fc.bias",
            "stage.1.fc.weight",
            "stage.1.fc.bias",
            "head.weight",
            "head.bias",
        ]
    );
    let summary = Reused::<f32>::summary().to_string();
    assert!(summary.contains("Basic(2)"), "{summary}");
    assert!(summary.contains("Unit(width = 2)"), "{summary}");
}

kiln::model! {
    /// A named residual block is a module (its layers nest under its name); an unnamed
    /// one is a connection (its layers take the enclosing sequence's next positions).
    struct ResidualNames {
        input: [4],
        b: { Dense(4), Residual { Dense(4), Tanh, Dense(4) }, Dense(4) },
        res: Residual { fc: Dense(4), Tanh, Dense(4) },
        Residual { top: Dense(4) },
        head: Dense(2),
    }
}

#[test]
fn residual_names_nest_when_named_and_number_on_when_not() {
    let names: Vec<&str> = ResidualNames::<f32>::SPEC
        .params
        .iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(
        names,
        [
            "b.0.weight",
            "b.0.bias",
            "b.1.weight",
            "b.1.bias",
            "b.3.weight",
            "b.3.bias",
            "b.4.weight",
            "b.4.bias",
            "res.fc.weight",
            "res.fc.bias",
            "res.2.weight",
            "res.2.bias",
            "top.weight",
            "top.bias",
            "head.weight",
            "head.bias",
        ]
    );
    let x = values(2 * 4, 28);
    check_model(
        ResidualNames::<f64>::new(15),
        &x,
        &[1, 0][..],
        &CrossEntropy::default(),
        1e-6,
    );
}

kiln::model! {
    /// Dropout that draws a new mask on every pass: no finite difference can agree.
    struct Noisy { input: [4], fc: Dense(6), Dropout(0.5), out: Dense(2) }
}

#[test]
fn the_public_gradient_checker_reports_each_tensor_and_the_input() {
    use kiln::gradcheck::{check_gradients, GradCheck};
    let model = Inception::<f64>::new(8);
    let before = model.params().as_slice().to_vec();
    let x = values(2 * 75, 21);
    let report = check_gradients(
        &model,
        &x,
        &[2, 0][..],
        &CrossEntropy::default(),
        GradCheck::default(),
    )
    .unwrap();
    println!("{report}");
    let names: Vec<&str> = report.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names.len(), Inception::<f64>::SPEC.params.len() + 1);
    assert_eq!(names[0], "mixed.b1.0.weight");
    assert_eq!(*names.last().unwrap(), "input");
    assert_eq!(report.tensors.last().unwrap().probed, x.len());
    assert!(report.worst() < 1e-6, "{report}");
    // The model checked is a copy.
    assert_eq!(model.params().as_slice(), &before[..]);
    assert_eq!(model.steps(), 0);

    // Probing a sample of each tensor.
    let options = GradCheck {
        per_tensor: Some(3),
        ..GradCheck::default()
    };
    let sampled =
        check_gradients(&model, &x, &[2, 0][..], &CrossEntropy::default(), options).unwrap();
    assert!(sampled.tensors.iter().all(|t| t.probed <= 3));

    // A backward pass that does not match its forward pass is caught.
    let noisy = Noisy::<f64>::new(3);
    let x = values(8 * 4, 29);
    let report = check_gradients(
        &noisy,
        &x,
        &[0, 1, 1, 0, 1, 0, 0, 1][..],
        &CrossEntropy::default(),
        GradCheck::default(),
    )
    .unwrap();
    assert!(report.worst() > 1e-2, "{report}");
    let bad = GradCheck {
        step: 0.0,
        ..GradCheck::default()
    };
    assert!(check_gradients(&noisy, &x, &[0; 8][..], &CrossEntropy::default(), bad).is_err());
}
