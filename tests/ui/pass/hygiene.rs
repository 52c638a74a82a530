// Generated code names everything by absolute path: shadowing the prelude changes
// nothing, and it compiles without a warning.
#![deny(warnings)]
#![allow(dead_code, non_camel_case_types)] // the shadowing items below exist only to be in the way

struct Result;
struct Option;
struct Some;
struct None;
struct Vec;
struct Clone;
struct Box;
struct String;
type f32 = u8;
mod core {}
mod std {}

kiln::model! {
    pub struct Shadowed {
        input: [3],
        Dense(4), Relu,
        Dropout(0.5),
        Residual { Dense(4), Gelu },
        Dense(2),
    }
}

kiln::model! {
    pub struct ShadowedCnn {
        input: [2, 8, 8],
        conv: Conv2d(4, kernel = 3, padding = 1), Relu,
        bn: BatchNorm2d,
        MaxPool2d(2),
        AvgPool2d(2),
        GlobalAvgPool,
        BatchNorm1d,
        Dense(3),
    }
}

kiln::model! {
    pub struct ShadowedSequence {
        input: [6],
        tok: Embedding(vocab = 10, dim = 8),
        pos: PositionalEmbedding,
        Residual { LayerNorm, MultiHeadAttention(heads = 2, causal = true) },
        lstm: Lstm(8),
        gru: Gru(8),
        rnn: Rnn(4),
        LastStep,
        Dense(2),
    }
}

fn main() {}
