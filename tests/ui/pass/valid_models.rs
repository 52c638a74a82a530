// Every layer of the DSL in valid models, with attributes and visibility passed through.
#![deny(warnings)]

use kiln::prelude::*;

kiln::model! {
    /// Documentation passes through.
    #[derive(Debug)]
    pub(crate) struct Everything {
        input: [4, 6],
        Dense(8), Relu,
        Dense(8, bias = false), LeakyRelu,
        Dense(8), LeakyRelu(negative_slope = -0.1),
        Dense(8), Sigmoid,
        Dense(8), Tanh,
        Dense(8), Gelu,
        Dropout(p = 0.1),
        res: Residual { Dense(8), Relu, inner: Residual { Dense(8) } },
        LogSoftmax,
        Flatten,
        Dense(units = 5),
        Softmax,
    }
}

kiln::model! { struct Tiny { input: [1], Dense(1) } }

// Stride 2 with padding 1 on an even size leaves only a padding row over: allowed
// without `floor`, 28 -> 14 and 14 -> 7, as in PyTorch.
kiln::model! {
    struct Downsample {
        input: [1, 28, 28],
        Conv2d(4, kernel = 3, stride = 2, padding = 1), Relu,
        Conv2d(4, kernel = 3, stride = 2, padding = 1),
        MaxPool2d(3, stride = 2, padding = 1),
        Flatten,
        Dense(2),
    }
}
kiln::model! { struct NoParams { input: [3], Relu, Softmax } }

// Blocks defined once: parameters with defaults, by keyword, in a pair, and a block
// used unnamed (named after the block).
kiln::model! {
    block Stage(channels, kernel = (3, 3), pad = 1) {
        conv: Conv2d(channels, kernel = kernel, padding = pad), Relu,
    }
    /// Documentation of a block is allowed.
    block Empty {}
    struct WithBlocks {
        input: [1, 8, 8],
        s1: Stage(4),
        s2: Stage(channels = 6, kernel = (1, 3), pad = (0, 1)),
        Stage(2),
        Empty,
        GlobalAvgPool,
    }
}

// The decoder layers, their arguments written every way: positionally, by keyword,
// as pairs, and the interpolation mode bare or quoted as in PyTorch.
kiln::model! {
    struct Decoder {
        input: [8, 7, 7],
        ConvTranspose2d(4, 2, 2),
        ConvTranspose2d(out_channels = 4, kernel = (3, 2), stride = (2, 1), padding = 1, output_padding = (1, 0), dilation = 1, bias = false),
        Upsample(2),
        Upsample((1, 2), mode = bilinear),
        Upsample(scale = 1, mode = "nearest"),
        GlobalAvgPool,
    }
}

// Branches: the same layer name in two branches (names nest), an identity branch, a
// single-layer branch, gating, and blocks inside blocks.
kiln::model! {
    struct Branches {
        input: [2, 8, 8],
        stem: Conv2d(4, kernel = 3, padding = 1), Relu,
        mixed: Concat {
            a: { conv: Conv2d(2, kernel = 1), Relu },
            b: { conv: Conv2d(2, kernel = 3, padding = 1) },
            skip: {},
        },
        down: Add {
            main: { Conv2d(8, kernel = 3, stride = 2, padding = 1), BatchNorm2d },
            shortcut: Conv2d(8, kernel = 1, stride = 2),
        },
        GlobalAvgPool,
        Mul { value: Dense(4), gate: { Dense(4), Sigmoid } },
        Sequential { Dense(2) },
    }
}

kiln::model! {
    /// Audio-like input: strided, dilated and floored 1-d convolutions, then a
    /// bidirectional GRU over the convolution's steps.
    pub struct Audio {
        input: [1, 400],
        conv1: Conv1d(8, kernel = 10, stride = 5, bias = false), Relu,
        conv2: Conv1d(8, 3, 2, 1, 2, true, true), Gelu,
        Transpose,
        gru: Gru(6, bidirectional = true),
        LastStep, out: Dense(2),
    }
}

kiln::model! {
    /// A graph whose input and output are named with raw keywords.
    pub struct Keywords {
        inputs: { r#type: [3], r#match: [2] },
        joined: Concat(r#type, r#match) >> { Dense(4), Relu },
        outputs: { r#loop: joined >> Dense(2), plain: joined >> Dense(1) },
    }
}

fn main() {
    let net = Everything::<f64>::new(0);
    let out = net.forward(TensorRef::new(&[0.5; 24]).unwrap());
    assert_eq!(out.batch(), 1);
    let _ = format!("{net:?}");
    let _ = Tiny::<f32>::new(1);
    let branches = Branches::<f32>::new(3);
    assert!(branches.params().get("mixed.a.conv.weight").is_some());
    assert!(branches.params().get("mixed.b.conv.weight").is_some());
    assert!(branches.params().get("down.shortcut.weight").is_some());
    assert_eq!(Branches::<f32>::SPEC.output, &[2]);
    assert_eq!(Downsample::<f32>::summary().0.layers[2].output, &[4, 7, 7]);
    assert_eq!(Downsample::<f32>::summary().0.layers[3].output, &[4, 4, 4]);
    let blocks = WithBlocks::<f32>::SPEC;
    assert_eq!(blocks.params[2].name, "s2.conv.weight");
    assert_eq!(blocks.params[2].shape, &[6, 4, 1, 3]);
    assert_eq!(blocks.params[4].name, "stage_0.conv.weight");
    assert_eq!(blocks.output, &[2]);
    let decoder = Decoder::<f32>::summary().0;
    assert_eq!(decoder.layers[1].output, &[4, 28, 13]);
    assert_eq!(decoder.layers[3].output, &[4, 56, 52]);
    assert_eq!(Decoder::<f32>::SPEC.params[0].shape, &[8, 4, 2, 2]);
    let mut plain = NoParams::<f32>::new(2);
    let y = plain.forward_train(TensorRef::new(&[1.0, 2.0, 3.0]).unwrap()).to_vec();
    assert!((y.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    plain.backward(&[1.0, 0.0, 0.0]).unwrap();
    let audio = Audio::<f32>::summary().0;
    assert_eq!(audio.layers[0].output, &[8, 79]);
    assert_eq!(audio.layers[2].output, &[8, 39]);
    assert_eq!(audio.layers[4].output, &[39, 8]);
    assert_eq!(audio.layers[5].output, &[39, 12]);
    assert_eq!(Audio::<f32>::SPEC.params[0].shape, &[8, 1, 10]);
    assert_eq!(Audio::<f32>::SPEC.params[7].name, "gru.weight_ih_l0_reverse");
    let keywords = Keywords::<f32>::new(0);
    drop(keywords);
    let _ = KeywordsInputs { r#type: 1, r#match: 2 };
    assert_eq!(Keywords::<f32>::OUTPUTS[0].name, "loop");
}
