//! A character-level language model: a one-block causal transformer (or an LSTM)
//! learns to continue text one character at a time, then writes some.
//!
//! ```text
//! cargo run --release --example char_lm                      # transformer on README.md
//! cargo run --release --example char_lm -- --model lstm
//! cargo run --release --example char_lm -- --text FILE --epochs 20
//! ```
//!
//! The text defaults to this project's own documentation (README.md and docs/*.md),
//! which ships with it. Characters map to 96 tokens (printable ASCII and newline;
//! anything else becomes `?`); each sample is a window of 32 characters whose targets
//! are the same window shifted by one. The last tenth of the text is held out for
//! validation, so no validation window overlaps a training one.

use std::path::PathBuf;
use std::time::Instant;

use kiln::data::Dataset;
use kiln::prelude::*;
use kiln::Rng;
use rand_core::{Rng as _, SeedableRng};

const CONTEXT: usize = 32;
const VOCAB: usize = 96;

kiln::model! {
    /// One pre-norm transformer block over 32 characters.
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
    /// An LSTM over 32 characters.
    pub struct CharLstm {
        input: [32],
        tok: Embedding(vocab = 96, dim = 32),
        lstm: Lstm(128),
        head: Dense(96),
    }
}

fn token(c: char) -> usize {
    match c {
        '\n' => 0,
        ' '..='~' => c as usize - 31,
        _ => '?' as usize - 31,
    }
}

fn character(token: usize) -> char {
    if token == 0 {
        '\n'
    } else {
        char::from(u8::try_from(token + 31).unwrap_or(b'?'))
    }
}

/// Every window of `CONTEXT + 1` characters, `stride` apart: inputs and next characters.
fn windows(tokens: &[usize], stride: usize) -> Result<Dataset<f32, Shape1<CONTEXT>>, Error> {
    let mut x = Vec::new();
    let mut y = Vec::new();
    for start in (0..tokens.len().saturating_sub(CONTEXT)).step_by(stride) {
        x.extend(tokens[start..start + CONTEXT].iter().map(|&t| t as f32));
        y.extend_from_slice(&tokens[start + 1..start + CONTEXT + 1]);
    }
    Dataset::new(x, y, Some(VOCAB))
}

/// Continues `prompt` by `length` characters, sampling at `temperature`.
fn sample<M: Model<f32, Input = Shape1<CONTEXT>>>(
    model: &mut M,
    prompt: &[usize],
    length: usize,
    temperature: f32,
) -> String {
    let mut rng = Rng::seed_from_u64(7);
    let mut context: Vec<f32> = prompt.iter().map(|&t| t as f32).collect();
    let mut text = String::new();
    for _ in 0..length {
        let window = &context[context.len() - CONTEXT..];
        let logits = model.infer(TensorRef::new(window).expect("one window"));
        let last = &logits[(CONTEXT - 1) * VOCAB..];
        let max = last.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f32> = last
            .iter()
            .map(|&l| ((l - max) / temperature).exp())
            .collect();
        let total: f32 = weights.iter().sum();
        let mut pick = (rng.next_u32() as f32 / u32::MAX as f32) * total;
        let mut next = VOCAB - 1;
        for (t, &w) in weights.iter().enumerate() {
            if pick < w {
                next = t;
                break;
            }
            pick -= w;
        }
        text.push(character(next));
        context.push(next as f32);
    }
    text
}

fn train<M: Model<f32, Input = Shape1<CONTEXT>> + Send>(
    mut model: M,
    tokens: &[usize],
    epochs: usize,
) -> Result<(), Error> {
    println!("{}\n", M::summary());
    let split = tokens.len() * 9 / 10;
    let data = windows(&tokens[..split], 3)?;
    let validation = windows(&tokens[split..], CONTEXT)?;
    println!(
        "{} training and {} validation windows of {CONTEXT} characters",
        data.len(),
        validation.len()
    );
    let config = FitConfig::new(epochs, 32).schedule(CosineAnnealing {
        t_max: epochs,
        eta_min: 0.0,
    });
    let started = Instant::now();
    let history = model.fit(
        &data,
        Some(&validation),
        &CrossEntropy::default(),
        &mut Adam::new(3e-3),
        &config,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let last = history.epochs.last().expect("at least one epoch");
    println!(
        "\n{} epochs in {seconds:.1} s ({:.0} windows/s); validation loss {:.3} nats/char, next-character accuracy {:.1} %",
        history.epochs.len(),
        data.len() as f64 * history.epochs.len() as f64 / seconds,
        last.val_loss.unwrap_or(f64::NAN),
        100.0 * last.val_accuracy.unwrap_or(0.0)
    );
    let prompt = &tokens[..CONTEXT];
    let prompt_text: String = prompt.iter().map(|&t| character(t)).collect();
    println!(
        "\nsample, continuing {prompt_text:?}:\n{prompt_text}{}",
        sample(&mut model, prompt, 300, 0.7)
    );
    Ok(())
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut text_paths: Vec<PathBuf> = [
        "README.md",
        "docs/dsl.md",
        "docs/design.md",
        "docs/training.md",
        "docs/testing.md",
    ]
    .iter()
    .map(|p| root.join(p))
    .collect();
    let mut lstm = false;
    let mut epochs = 12;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--text", Some(path)) => text_paths = vec![PathBuf::from(path)],
            ("--model", Some(kind)) => lstm = kind == "lstm",
            ("--epochs", Some(n)) => epochs = n.parse().unwrap_or(epochs),
            _ => {
                eprintln!("usage: char_lm [--text FILE] [--model transformer|lstm] [--epochs N]");
                std::process::exit(2);
            }
        }
    }
    let mut text = String::new();
    for path in &text_paths {
        match std::fs::read_to_string(path) {
            Ok(part) => text.push_str(&part),
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                std::process::exit(1);
            }
        }
    }
    let tokens: Vec<usize> = text.chars().map(token).collect();
    println!(
        "{} characters from {} file(s)",
        tokens.len(),
        text_paths.len()
    );
    let result = if lstm {
        train(CharLstm::<f32>::new(0), &tokens, epochs)
    } else {
        train(CharTransformer::<f32>::new(0), &tokens, epochs)
    };
    if let Err(error) = result {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}
