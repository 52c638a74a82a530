//! An encoder–decoder transformer that translates dates written as people write them
//! ("29 November 2026", "11/29/26", "Sunday, Nov 29 2026") into ISO form
//! ("2026-11-29"), decoding greedily one character at a time.
//!
//! ```text
//! cargo run --release --example seq2seq_dates
//! cargo run --release --example seq2seq_dates -- --epochs 4 --train 20000
//! ```
//!
//! The data is generated from a fixed seed: dates from 1950 to 2049, each written in
//! one of fourteen formats chosen at random. The held-out dates are whole days the
//! training set never shows, in any format (every eleventh day), so the model has to
//! compose day, month and year rather than recall a date. The source is padded to 32
//! characters and the padding is masked in every attention that reads it; the decoder
//! reads the target shifted right (teacher forcing) in training and its own output in
//! greedy decoding. Fails (exit 1) if exact-match accuracy on held-out dates is below
//! 99 %.

use std::time::Instant;

use kiln::prelude::*;
use kiln::Rng;
use rand_core::{Rng as _, SeedableRng};

/// Source characters (padded), target characters (`yyyy-mm-dd`).
const SOURCE: usize = 32;
const TARGET: usize = 10;
/// Padding, start of target, then printable ASCII.
const PAD: usize = 0;
const START: usize = 1;
const VOCAB: usize = 97;

kiln::model! {
    /// Two encoder layers over the source, two decoder layers over the target.
    pub struct DateTranslator {
        inputs: { source: [32], padding: [32], target: [10] },
        encoded: source >> {
            Embedding(vocab = 97, dim = 64),
            PositionalEmbedding,
            TransformerEncoderLayer(heads = 4, ff = 128, dropout = 0.0, key_padding = padding),
            TransformerEncoderLayer(heads = 4, ff = 128, dropout = 0.0, key_padding = padding),
        },
        decoded: target >> {
            Embedding(vocab = 97, dim = 64),
            PositionalEmbedding,
            TransformerDecoderLayer(
                heads = 4, ff = 128, memory = encoded, dropout = 0.0, memory_padding = padding,
            ),
            TransformerDecoderLayer(
                heads = 4, ff = 128, memory = encoded, dropout = 0.0, memory_padding = padding,
            ),
        },
        outputs: { iso: decoded >> Dense(97) },
    }
}

fn token(c: char) -> usize {
    match c {
        ' '..='~' => c as usize - 30,
        _ => '?' as usize - 30,
    }
}

fn character(token: usize) -> char {
    match token {
        PAD | START => '_',
        t => char::from(u8::try_from(t + 30).unwrap_or(b'?')),
    }
}

/// The first day and the number of days of the range (1950-01-01 to 2049-12-31), as
/// days since 1970-01-01.
const FIRST_DAY: i64 = -7305;
const DAYS: i64 = 36525;

/// `(year, month, day)` of a day counted from 1970-01-01 (the proleptic Gregorian
/// calendar, by eras of 400 years).
fn civil(days: i64) -> (i64, usize, usize) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as usize;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as usize;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
];

fn ordinal(day: usize) -> String {
    let suffix = match (day % 10, day % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{day}{suffix}")
}

const FORMATS: usize = 14;

/// Day `days` written in format `format`.
fn written(days: i64, format: usize) -> String {
    let (y, m, d) = civil(days);
    let month = MONTHS[m - 1];
    let mon = &month[..3];
    let weekday = WEEKDAYS[days.rem_euclid(7) as usize];
    let yy = y % 100;
    match format {
        0 => format!("{d} {month} {y}"),
        1 => format!("{m}/{d}/{yy:02}"),
        2 => format!("{weekday}, {mon} {d} {y}"),
        3 => format!("{month} {d}, {y}"),
        4 => format!("{d:02}.{m:02}.{y}"),
        5 => format!("{mon} {}, {y}", ordinal(d)),
        6 => format!("{d:02}-{mon}-{y}"),
        7 => format!(
            "{} {d} {} {y}",
            weekday.to_lowercase(),
            month.to_lowercase()
        ),
        8 => format!("{m:02}/{d:02}/{y}"),
        9 => format!("{} {d} {y}", mon.to_uppercase()),
        10 => format!("{d} {} {yy:02}", mon.to_lowercase()),
        11 => format!("{} {d} {mon} {y}", &weekday[..3]),
        12 => format!("the {} of {month} {y}", ordinal(d)),
        _ => format!("{y}/{m:02}/{d:02}"),
    }
}

fn iso(days: i64) -> String {
    let (y, m, d) = civil(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Whether a day is held out: never shown in training, in any format.
fn held_out(days: i64) -> bool {
    (days - FIRST_DAY) % 11 == 0
}

/// Samples as the model's inputs and targets, one buffer each.
#[derive(Default)]
struct Pairs {
    text: Vec<String>,
    source: Vec<f32>,
    padding: Vec<f32>,
    target_in: Vec<f32>,
    target_out: Vec<usize>,
}

impl Pairs {
    fn push(&mut self, days: i64, format: usize) {
        let text = written(days, format);
        let chars: Vec<usize> = text.chars().map(token).collect();
        assert!(chars.len() <= SOURCE, "{text:?} is longer than {SOURCE}");
        for i in 0..SOURCE {
            self.source.push(chars.get(i).map_or(PAD, |&t| t) as f32);
            self.padding.push(if i < chars.len() { 0.0 } else { 1.0 });
        }
        let out: Vec<usize> = iso(days).chars().map(token).collect();
        self.target_in.push(START as f32);
        self.target_in
            .extend(out[..TARGET - 1].iter().map(|&t| t as f32));
        self.target_out.extend_from_slice(&out);
        self.text.push(text);
    }

    fn len(&self) -> usize {
        self.text.len()
    }
}

/// `n` samples of random days (held out or not) in random formats.
fn generate(rng: &mut Rng, n: usize, held: bool) -> Pairs {
    let mut pairs = Pairs::default();
    while pairs.len() < n {
        let days = FIRST_DAY + (rng.next_u64() % DAYS as u64) as i64;
        if held_out(days) == held {
            pairs.push(days, (rng.next_u32() as usize) % FORMATS);
        }
    }
    pairs
}

/// Greedy decoding: starts each target with the start token and feeds the model's
/// most likely character back, one position at a time (the causal decoder never
/// reads a position after the one it predicts, so what follows is left as padding).
fn translate(model: &mut DateTranslator<f32>, pairs: &Pairs) -> Result<Vec<String>, Error> {
    let n = pairs.len();
    let mut target = vec![PAD as f32; n * TARGET];
    let mut decoded = vec![PAD; n * TARGET];
    for row in target.chunks_exact_mut(TARGET) {
        row[0] = START as f32;
    }
    for step in 0..TARGET {
        let logits = model
            .infer_outputs(DateTranslatorInputs {
                source: &pairs.source,
                padding: &pairs.padding,
                target: &target,
            })?
            .iso;
        for (i, sample) in logits.chunks_exact(TARGET * VOCAB).enumerate() {
            let row = &sample[step * VOCAB..][..VOCAB];
            let best = (0..VOCAB)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap_or(PAD);
            decoded[i * TARGET + step] = best;
            if step + 1 < TARGET {
                target[i * TARGET + step + 1] = best as f32;
            }
        }
    }
    Ok(decoded
        .chunks_exact(TARGET)
        .map(|t| t.iter().map(|&c| character(c)).collect())
        .collect())
}

fn main() -> Result<(), Error> {
    let mut epochs = 6;
    let mut train_size = 24_000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--epochs", Some(n)) if n > 0 => epochs = n,
            ("--train", Some(n)) if n > 0 => train_size = n,
            _ => {
                eprintln!("usage: seq2seq_dates [--epochs N] [--train SAMPLES] (both at least 1)");
                std::process::exit(2);
            }
        }
    }
    let mut rng = Rng::seed_from_u64(2026);
    let train = generate(&mut rng, train_size, false);
    let test = generate(&mut rng, 2_000, true);
    println!(
        "{} training pairs, {} held-out pairs on days training never shows; for example:",
        train.len(),
        test.len()
    );
    for format in 0..FORMATS {
        let days = FIRST_DAY + 28_091 + format as i64;
        println!("  {:<32} -> {}", written(days, format), iso(days));
    }
    let dataset = |p: &Pairs| {
        DateTranslator::<f32>::dataset(
            DateTranslatorInputs {
                source: &p.source,
                padding: &p.padding,
                target: &p.target_in,
            },
            DateTranslatorOutputs { iso: &p.target_out },
        )
    };
    let (train_data, test_data) = (dataset(&train)?, dataset(&test)?);
    println!("\n{}\n", DateTranslator::<f32>::summary());

    let mut model = DateTranslator::<f32>::new(3);
    let loss = DateTranslatorOutputs {
        iso: CrossEntropy::default(),
    };
    let config = FitConfig::new(epochs, 64)
        .seed(4)
        .schedule(CosineAnnealing {
            t_max: epochs,
            eta_min: 0.0,
        })
        .progress(Progress::Lines);
    let started = Instant::now();
    let history = model.fit(
        &train_data,
        Some(&test_data),
        &loss,
        &mut Adam::new(2e-3),
        &config,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let last = history.epochs.last().expect("at least one epoch");
    println!(
        "\n{} epochs in {seconds:.1} s; held out, teacher-forced: loss {:.4}, character accuracy {:.2} %",
        history.epochs.len(),
        last.val_loss.unwrap_or(f64::NAN),
        100.0 * last.val_accuracy.unwrap_or(0.0)
    );

    let started = Instant::now();
    let translations = translate(&mut model, &test)?;
    let decoding = started.elapsed().as_secs_f64();
    let mut right = 0;
    let mut wrong = Vec::new();
    for (i, got) in translations.iter().enumerate() {
        let expected: String = test.target_out[i * TARGET..][..TARGET]
            .iter()
            .map(|&t| character(t))
            .collect();
        if *got == expected {
            right += 1;
        } else {
            wrong.push((i, expected));
        }
    }
    let accuracy = right as f64 / test.len() as f64;
    println!(
        "greedy decoding of {} held-out dates in {decoding:.2} s: exact match {:.2} %",
        test.len(),
        100.0 * accuracy
    );
    println!("\nsome translations:");
    for (text, translation) in test.text.iter().zip(&translations).take(8) {
        println!("  {text:<32} -> {translation}");
    }
    if !wrong.is_empty() {
        println!("\nmistakes ({} in all, the first few):", wrong.len());
        for (i, expected) in wrong.iter().take(5) {
            println!(
                "  {:<32} -> {} (expected {expected})",
                test.text[*i], translations[*i]
            );
        }
    }
    if accuracy < 0.99 {
        eprintln!("error: exact match below 99 %");
        std::process::exit(1);
    }
    Ok(())
}
