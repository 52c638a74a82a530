//! ONNX export checked against ONNX Runtime, without Python in the test run.
//!
//! The models here are every example's models (the examples train them; here they keep
//! their seeded initial weights, which exercise the export as well) and four that
//! cover the layers the examples leave out. For each, the test
//! exports the model, hashes the bytes (FNV-1a, 64 bits) and compares kiln's inference
//! output on a fixed batch with ONNX Runtime's output for the same file, both from
//! `tests/fixtures/onnx_runtime.json`. That file is written by
//! `scripts/onnx/check.py`, which runs ONNX Runtime on what this test writes when
//! `KILN_ONNX_WRITE=<dir>` is set:
//!
//! ```text
//! KILN_ONNX_WRITE=target/onnx cargo test --release --test onnx
//! python3 scripts/onnx/check.py target/onnx
//! ```
//!
//! A changed exporter changes the hash: the test then fails until the fixture is
//! written again, so the outputs compared are always those of the bytes exported now.
use kiln::prelude::*;
use std::collections::BTreeMap;

kiln::model! {
    /// mnist_mlp.
    pub struct MnistMlp {
        input: [784],
        fc1: Dense(128), Relu,
        Dropout(0.2),
        fc2: Dense(10),
    }
}
kiln::model! {
    /// xor.
    pub struct Xor { input: [2], hidden: Dense(8), Tanh, out: Dense(1) }
}
kiln::model! {
    /// resnet_mnist.
    block Basic(channels) {
        Residual {
            conv1: Conv2d(channels, kernel = 3, padding = 1, bias = false), bn1: BatchNorm2d, Relu,
            conv2: Conv2d(channels, kernel = 3, padding = 1, bias = false), bn2: BatchNorm2d,
        },
        Relu,
    }
    block Down(channels) {
        Add {
            main: {
                Conv2d(channels, kernel = 3, stride = 2, padding = 1, bias = false), BatchNorm2d, Relu,
                Conv2d(channels, kernel = 3, padding = 1, bias = false), BatchNorm2d,
            },
            shortcut: { Conv2d(channels, kernel = 1, stride = 2, bias = false), BatchNorm2d },
        },
        Relu,
    }
    pub struct ResNet {
        input: [1, 28, 28],
        stem: Conv2d(16, kernel = 3, padding = 1, bias = false), bn: BatchNorm2d, Relu,
        MaxPool2d(2),
        layer1: { Basic(16), Basic(16) },
        layer2: { Down(32), Basic(32) },
        GlobalAvgPool,
        fc: Dense(10),
    }
}
kiln::model! {
    /// unet_denoise.
    pub struct UNet {
        input: [1, 28, 28],
        enc: { Conv2d(16, kernel = 3, padding = 1), Relu, Conv2d(16, kernel = 3, padding = 1), Relu },
        level1: Concat {
            skip: {},
            down: {
                MaxPool2d(2),
                Conv2d(32, kernel = 3, padding = 1), Relu, Conv2d(32, kernel = 3, padding = 1), Relu,
                level2: Concat {
                    skip: {},
                    down: {
                        MaxPool2d(2),
                        Conv2d(64, kernel = 3, padding = 1), Relu,
                        up: ConvTranspose2d(32, kernel = 2, stride = 2), Relu,
                    },
                },
                Conv2d(32, kernel = 3, padding = 1), Relu,
                up: ConvTranspose2d(16, kernel = 2, stride = 2), Relu,
            },
        },
        dec: Conv2d(16, kernel = 3, padding = 1), Relu,
        out: Conv2d(1, kernel = 1), Sigmoid,
    }
}
kiln::model! {
    /// gan_mnist's generator.
    pub struct Generator {
        input: [32, 1, 1],
        project: ConvTranspose2d(64, kernel = 7), bn0: BatchNorm2d, Relu,
        up1: ConvTranspose2d(32, kernel = 4, stride = 2, padding = 1), bn1: BatchNorm2d, Relu,
        up2: ConvTranspose2d(1, kernel = 4, stride = 2, padding = 1), Sigmoid,
    }
}
kiln::model! {
    /// mnist_cnn.
    pub struct MnistCnn {
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
    /// lenet5.
    pub struct LeNet {
        input: [1, 28, 28],
        conv1: Conv2d(6, kernel = 5, padding = 2), Relu,
        MaxPool2d(2),
        conv2: Conv2d(16, kernel = 5), Relu,
        MaxPool2d(2),
        Flatten,
        fc1: Dense(120), Relu,
        Dropout(0.1),
        fc2: Dense(84), Relu,
        fc3: Dense(10),
    }
}
kiln::model! {
    /// cifar_shaped.
    pub struct CifarNet {
        input: [3, 32, 32],
        conv1: Conv2d(32, kernel = 3, padding = 1, bias = false), bn1: BatchNorm2d, Relu,
        conv2: Conv2d(32, kernel = 3, padding = 1), Relu,
        MaxPool2d(2),
        conv3: Conv2d(64, kernel = 3, padding = 1, bias = false), bn2: BatchNorm2d, Relu,
        MaxPool2d(2),
        conv4: Conv2d(64, kernel = 3, padding = 1), Relu,
        GlobalAvgPool,
        Dropout(0.2),
        fc: Dense(10),
    }
}
kiln::model! {
    /// gan_mnist's discriminator.
    pub struct Discriminator {
        input: [1, 28, 28],
        conv1: Conv2d(32, kernel = 4, stride = 2, padding = 1), LeakyRelu(0.2),
        conv2: Conv2d(64, kernel = 4, stride = 2, padding = 1), LeakyRelu(0.2),
        Flatten,
        fc: Dense(1),
    }
}
kiln::model! {
    /// inception_fashion.
    pub struct InceptionNet {
        input: [1, 28, 28],
        stem: Conv2d(32, kernel = 3, padding = 1), bn0: BatchNorm2d, Relu,
        MaxPool2d(2),
        mixed: Concat {
            b1: { Conv2d(16, kernel = 1), Relu },
            b3: { Conv2d(16, kernel = 1), Relu, Conv2d(32, kernel = 3, padding = 1), Relu },
            b5: { Conv2d(8, kernel = 1), Relu, Conv2d(16, kernel = 5, padding = 2), Relu },
            pool: { MaxPool2d(3, stride = 1, padding = 1), Conv2d(16, kernel = 1), Relu },
        },
        bn1: BatchNorm2d,
        MaxPool2d(2),
        Flatten,
        Dropout(0.3),
        fc1: Dense(128), Relu,
        Dropout(0.3),
        fc2: Dense(10),
    }
}
kiln::model! {
    /// Layers the examples above leave out: GELU, sigmoid, tanh, average pooling,
    /// batch norm over features, a residual block, a sum and a product of branches,
    /// log-softmax.
    pub struct Mixed {
        input: [2, 12, 12],
        conv: Conv2d(4, kernel = 3, stride = 2, padding = 1, dilation = 1), Tanh,
        AvgPool2d(2, padding = 1),
        Flatten,
        fc1: Dense(24), Gelu,
        bn: BatchNorm1d,
        block: Residual { a: Dense(24), Sigmoid, b: Dense(24) },
        both: Add { s1: { Dense(16), Relu }, s2: { Dense(16), Tanh } },
        prod: Mul { p1: { Dense(8) }, p2: { Dense(8), Sigmoid } },
        out: Dense(5),
        LogSoftmax,
    }
}
kiln::model! {
    /// Upsampling both ways, a transposed convolution with output padding and
    /// dilation, and softmax over a sample's rows.
    pub struct Resampling {
        input: [2, 5, 5],
        near: Upsample(2),
        conv: Conv2d(3, kernel = 3, dilation = 2),
        lin: Upsample((2, 3), mode = bilinear),
        Relu,
        up: ConvTranspose2d(2, kernel = 3, stride = 2, padding = 1, output_padding = 1, dilation = 2),
        Flatten,
        Softmax,
    }
}
kiln::model! {
    /// linear_regression.
    pub struct Line { input: [1], fit: Dense(1) }
}
kiln::model! {
    /// logistic_regression.
    pub struct Logistic { input: [2], out: Dense(1) }
}
kiln::model! {
    /// transfer_fashion's digit classifier.
    pub struct DigitNet {
        input: [1, 28, 28],
        conv1: Conv2d(16, kernel = 3, padding = 1), Relu, MaxPool2d(2),
        conv2: Conv2d(32, kernel = 3, padding = 1), Relu, MaxPool2d(2),
        Flatten,
        fc: Dense(10),
    }
}
kiln::model! {
    /// transfer_fashion's clothes classifier.
    pub struct ClothesNet {
        input: [1, 28, 28],
        conv1: Conv2d(16, kernel = 3, padding = 1), Relu, MaxPool2d(2),
        conv2: Conv2d(32, kernel = 3, padding = 1), Relu, MaxPool2d(2),
        Flatten,
        Dropout(0.3),
        head: Dense(10),
    }
}
kiln::model! {
    /// gan_mnist's judge.
    pub struct Classifier {
        input: [1, 28, 28],
        conv1: Conv2d(16, kernel = 5, padding = 2), Relu, MaxPool2d(2),
        conv2: Conv2d(32, kernel = 5, padding = 2), Relu, MaxPool2d(2),
        Flatten,
        fc1: Dense(128), Relu,
        fc2: Dense(10),
    }
}
kiln::model! {
    /// mnist_mlp's 8x8 twin.
    pub struct DigitsMlp {
        input: [64],
        fc1: Dense(128), Relu,
        Dropout(0.2),
        fc2: Dense(10),
    }
}
kiln::model! {
    /// mnist_cnn's 8x8 twin.
    pub struct DigitsCnn {
        input: [1, 8, 8],
        conv1: Conv2d(32, kernel = 3, padding = 1), Relu,
        MaxPool2d(2),
        conv2: Conv2d(64, kernel = 3, padding = 1), Relu,
        MaxPool2d(2),
        Flatten,
        fc1: Dense(128), Relu,
        fc2: Dense(10),
    }
}
kiln::model! {
    /// lenet5's 8x8 twin.
    pub struct LeNetDigits {
        input: [1, 8, 8],
        conv1: Conv2d(6, kernel = 3, padding = 1), Relu,
        MaxPool2d(2),
        conv2: Conv2d(16, kernel = 3, padding = 1), Relu,
        MaxPool2d(2),
        Flatten,
        fc1: Dense(120), Relu,
        Dropout(0.1),
        fc2: Dense(84), Relu,
        fc3: Dense(10),
    }
}
kiln::model! {
    /// sequence_sum.
    pub struct BitCounter {
        input: [20, 1],
        lstm: Lstm(32),
        LastStep,
        out: Dense(21),
    }
}
kiln::model! {
    /// char_lm's LSTM.
    pub struct CharLstm {
        input: [32],
        tok: Embedding(vocab = 96, dim = 32),
        lstm: Lstm(128),
        head: Dense(96),
    }
}
kiln::model! {
    /// The other cells, layer norm and learned positions over token ids.
    pub struct Cells {
        input: [7],
        tok: Embedding(vocab = 11, dim = 6),
        pos: PositionalEmbedding,
        ln: LayerNorm,
        gru: Gru(5),
        rnn: Rnn(4),
        per_step: Dense(3), Tanh,
        LastStep,
        out: Dense(2),
    }
}
kiln::model! {
    /// char_lm's transformer.
    pub struct CharTransformer {
        input: [32],
        tok: Embedding(vocab = 96, dim = 64),
        pos: PositionalEmbedding,
        attention: Residual { ln1: LayerNorm, attn: MultiHeadAttention(heads = 4, causal = true) },
        feed_forward: Residual { ln2: LayerNorm, ff1: Dense(256), Gelu, ff2: Dense(64) },
        ln_f: LayerNorm,
        head: Dense(96),
    }
}
kiln::model! {
    /// Attention over every step, on float sequences.
    pub struct Attending {
        input: [8, 4],
        attn: MultiHeadAttention(heads = 2),
        LastStep,
        out: Dense(2),
    }
}
kiln::model! {
    /// 1-d convolutions over a sequence's steps, between transposes, and every cell
    /// bidirectional.
    pub struct Bidirectional {
        input: [12, 3],
        Transpose,
        conv1: Conv1d(6, kernel = 3, padding = 1), Relu,
        conv2: Conv1d(5, kernel = 3, stride = 2, padding = 2, dilation = 2, bias = false),
        Transpose,
        lstm: Lstm(4, bidirectional = true),
        gru: Gru(3, bidirectional = true),
        rnn: Rnn(2, bidirectional = true),
        LastStep,
        out: Dense(2),
    }
}
kiln::model! {
    /// The two-headed network for 28x28 MNIST digits.
    pub struct MnistTasks {
        inputs: { image: [784] },
        trunk: image >> { Dense(256), Relu, Dropout(0.2), Dense(128), Relu },
        outputs: { digit: trunk >> Dense(10), big: trunk >> Dense(2) },
    }
}
kiln::model! {
    /// Two inputs taken out of the packed one, merged three ways (a ReLU fused into the
    /// sum), two outputs.
    pub struct Graph {
        inputs: { image: [2, 6, 6], meta: [3] },
        trunk: image >> { Conv2d(3, kernel = 3), Relu, GlobalAvgPool },
        joined: Concat(trunk, meta) >> { Dense(8), Tanh },
        gate: meta >> { Dense(8), Sigmoid },
        mixed: Mul(joined, gate),
        both: Add(mixed, joined) >> Relu,
        outputs: { first: both >> Dense(4), second: Concat(first, meta) >> Dense(2) },
    }
}
kiln::model! {
    /// seq2seq_dates, smaller: transformer encoder and decoder layers, cross-attention
    /// and key padding.
    pub struct Translator {
        inputs: { source: [6], padding: [6], target: [4] },
        encoded: source >> {
            Embedding(vocab = 9, dim = 8), PositionalEmbedding,
            TransformerEncoderLayer(heads = 2, ff = 16, key_padding = padding),
        },
        decoded: target >> {
            Embedding(vocab = 9, dim = 8), PositionalEmbedding,
            TransformerDecoderLayer(heads = 2, ff = 16, memory = encoded, memory_padding = padding),
        },
        outputs: { next: decoded >> Dense(9) },
    }
}
kiln::model! {
    /// Something the exporter does not cover: a model used as a layer.
    pub struct Nested {
        input: [8, 4],
        inner: use Attending -> [2],
        out: Dense(2),
    }
}

/// FNV-1a, 64 bits.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

const BATCH: usize = 3;

/// A fixed batch in [-1, 1], or of token ids below `vocab`.
fn batch(sample: usize, vocab: Option<usize>) -> Vec<f32> {
    (0..BATCH * sample)
        .map(|i| match vocab {
            Some(vocab) => ((i * 7919 + 13) % vocab) as f32,
            None => ((i * 7919 + 13) % 2001) as f32 / 1000.0 - 1.0,
        })
        .collect()
}

/// A model's export: its name, the ONNX bytes, the input batch and kiln's output.
struct Export {
    name: String,
    bytes: Vec<u8>,
    input: Vec<f32>,
    output: Vec<f32>,
}

/// Exports `M` (seed 7; with `statistics`, batch norm's running statistics set off
/// their defaults).
fn export<M: Model<f32>>(statistics: bool) -> Export {
    let sample: usize = M::SPEC.input.iter().product();
    export_batch::<M>(statistics, batch(sample, M::SPEC.token_vocab))
}

/// [`export`] on the batch `x`.
fn export_batch<M: Model<f32>>(statistics: bool, x: Vec<f32>) -> Export {
    let mut model = M::with_seed(7);
    let input = TensorRef::<f32, M::Input>::new(&x).unwrap();
    // Batch norm running statistics that are not 0 and 1, from a formula rather than
    // from training steps, whose last bits depend on the processor's kernels: the
    // exported bytes are the same on every machine.
    if statistics {
        let mut buffers = model.buffers().as_slice().to_vec();
        for info in M::SPEC.buffers {
            let name = info.full_name();
            for (i, v) in buffers[info.range()].iter_mut().enumerate() {
                let t = i as f32;
                if name.ends_with("running_var") {
                    *v = 1.0 + 0.5 * (0.7 * t).sin();
                } else if name.ends_with("running_mean") {
                    *v = 0.2 * (1.3 * t).cos();
                }
            }
        }
        model.set_buffers(&buffers).unwrap();
    }
    let output = model.forward(input).as_slice().to_vec();
    Export {
        name: M::SPEC.name.to_string(),
        bytes: model.to_onnx().unwrap(),
        input: x,
        output,
    }
}

fn exports() -> Vec<Export> {
    vec![
        export::<MnistMlp>(false),
        export::<Xor>(false),
        export::<ResNet>(true),
        export::<UNet>(false),
        export::<Generator>(true),
        export::<Resampling>(false),
        export::<BitCounter>(false),
        export::<CharLstm>(false),
        export::<Cells>(true),
        export::<CharTransformer>(false),
        export::<Attending>(false),
        export::<Bidirectional>(false),
        export::<MnistTasks>(false),
        export::<Graph>(false),
        // Source ids, key padding (the first sample's last two steps, the second's
        // last one), target ids.
        export_batch::<Translator>(
            false,
            [
                [
                    3., 1., 4., 1., 5., 2., 0., 0., 0., 0., 1., 1., 2., 6., 5., 3.,
                ],
                [
                    5., 8., 0., 7., 6., 3., 0., 0., 0., 0., 0., 1., 2., 3., 8., 4.,
                ],
                [
                    6., 2., 6., 4., 3., 3., 0., 0., 0., 0., 0., 0., 8., 3., 2., 7.,
                ],
            ]
            .concat(),
        ),
        export::<Line>(false),
        export::<Logistic>(false),
        export::<DigitNet>(false),
        export::<ClothesNet>(false),
        export::<Classifier>(false),
        export::<DigitsMlp>(false),
        export::<DigitsCnn>(false),
        export::<LeNetDigits>(false),
        export::<MnistCnn>(false),
        export::<LeNet>(false),
        export::<CifarNet>(true),
        export::<Discriminator>(false),
        export::<InceptionNet>(true),
        export::<Mixed>(true),
    ]
}

#[test]
fn exported_models_give_onnx_runtimes_outputs() {
    let exports = exports();
    if let Some(dir) = std::env::var_os("KILN_ONNX_WRITE") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut index = BTreeMap::new();
        for Export {
            name,
            bytes,
            input,
            output,
        } in &exports
        {
            std::fs::write(dir.join(format!("{name}.onnx")), bytes).unwrap();
            index.insert(
                name.clone(),
                serde_json::json!({ "batch": BATCH, "input": input, "kiln": output }),
            );
        }
        let index = serde_json::to_string(&index).unwrap();
        std::fs::write(dir.join("kiln.json"), index).unwrap();
    }
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/onnx_runtime.json")).expect("valid JSON");
    for Export {
        name,
        bytes,
        output,
        ..
    } in &exports
    {
        let entry = &fixture["models"][name.as_str()];
        assert_eq!(
            entry["fnv"].as_str(),
            Some(format!("{:016x}", fnv(bytes)).as_str()),
            "{name}: the exported bytes changed since ONNX Runtime ran them; write the \
             fixture again (see this file's header)"
        );
        let expected: Vec<f32> = entry["output"]
            .as_array()
            .expect("outputs")
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(expected.len(), output.len(), "{name}");
        let worst = output
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst <= 1e-5,
            "{name}: kiln and ONNX Runtime differ by {worst}"
        );
    }
}

/// The text of `struct name { … }` or `block name(…) { … }` in `source`, whitespace
/// collapsed.
fn definition(source: &str, name: &str) -> Option<String> {
    let start = [format!("struct {name} {{"), format!("block {name}(")]
        .iter()
        .find_map(|head| source.find(head.as_str()))?;
    let open = start + source[start..].find('{')?;
    let mut depth = 0;
    for (i, c) in source[open..].char_indices() {
        depth += match c {
            '{' => 1,
            '}' => -1,
            _ => 0,
        };
        if depth == 0 {
            let text = &source[start..=open + i];
            return Some(text.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    None
}

/// The models above are copies of the examples' (an example is a program, not a
/// library to import from): each must read as its example declares it.
#[test]
fn the_models_here_are_the_examples_models() {
    let here = include_str!("onnx.rs");
    let examples = [
        ("mnist_mlp", vec!["MnistMlp", "DigitsMlp"]),
        ("mnist_data_parallel", vec!["MnistMlp", "DigitsMlp"]),
        ("xor", vec!["Xor"]),
        ("linear_regression", vec!["Line"]),
        ("logistic_regression", vec!["Logistic"]),
        ("transfer_fashion", vec!["DigitNet", "ClothesNet"]),
        ("resnet_mnist", vec!["Basic", "Down", "ResNet"]),
        ("unet_denoise", vec!["UNet"]),
        (
            "gan_mnist",
            vec!["Generator", "Discriminator", "Classifier"],
        ),
        ("mnist_cnn", vec!["MnistCnn", "DigitsCnn"]),
        ("lenet5", vec!["LeNet", "LeNetDigits"]),
        ("cifar_shaped", vec!["CifarNet"]),
        ("inception_fashion", vec!["InceptionNet"]),
        ("sequence_sum", vec!["BitCounter"]),
        ("char_lm", vec!["CharLstm", "CharTransformer"]),
        ("multitask_mnist", vec!["MnistTasks"]),
    ];
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    for (example, models) in examples {
        let source = std::fs::read_to_string(format!("{dir}/{example}.rs")).unwrap();
        for model in models {
            let theirs = definition(&source, model);
            assert!(theirs.is_some(), "{example}: no {model}");
            assert_eq!(definition(here, model), theirs, "{example}: {model}");
        }
    }
}

#[test]
fn an_f64_model_exports_in_either_precision() {
    let wide = LeNet::<f64>::new(5);
    let narrow = LeNet::<f32>::new(5);
    // Same seed, same draws: the f32 export of the f64 model is the f32 model's.
    assert_eq!(wide.to_onnx_f32().unwrap(), narrow.to_onnx().unwrap());
    let doubles = wide.to_onnx().unwrap();
    let weight = wide.params().get("fc3.weight").unwrap();
    let raw: Vec<u8> = weight.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert!(doubles.windows(raw.len()).any(|w| w == raw.as_slice()));
}

#[test]
fn a_layer_without_an_export_is_an_error_and_nothing_is_written() {
    let model = Nested::<f32>::new(0);
    let err = model.to_onnx().unwrap_err();
    assert!(
        matches!(err, Error::OnnxUnsupported { model: "Nested", layer } if layer.contains("Attending")),
        "{err}"
    );
    let path = std::env::temp_dir().join(format!("kiln-onnx-{}.onnx", std::process::id()));
    assert!(model.save_onnx(&path).is_err());
    assert!(!path.exists());
}

#[test]
fn the_export_is_deterministic_and_carries_the_weights_by_name() {
    let model = MnistMlp::<f32>::new(3);
    let bytes = model.to_onnx().unwrap();
    assert_eq!(bytes, MnistMlp::<f32>::new(3).to_onnx().unwrap());
    assert_ne!(bytes, MnistMlp::<f32>::new(4).to_onnx().unwrap());
    // The weights are stored raw, little-endian, under their safetensors names.
    let weight = model.params().get("fc2.weight").unwrap();
    let raw: Vec<u8> = weight.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert!(bytes.windows(raw.len()).any(|w| w == raw.as_slice()));
    for name in ["fc1.weight", "fc1.bias", "fc2.bias", "input", "output"] {
        assert!(
            bytes.windows(name.len()).any(|w| w == name.as_bytes()),
            "{name}"
        );
    }
}
