//! A two-tower recommender: a user tower and an item tower of embeddings, matched by
//! an element-wise product (a learned dot product) and joined with dense context
//! features, with two heads: whether the user clicks an item, and whether they like it
//! (a rating of 4 or more).
//!
//! ```text
//! cargo run --release --example two_tower
//! cargo run --release --example two_tower -- --epochs 8
//! ```
//!
//! The interactions are generated from a fixed seed with a known structure: each user
//! and item has a hidden taste vector, a click is likelier when they agree, for popular
//! items and in some contexts, and popular items are shown more often. The model learns
//! from clicks, each set against 3 items drawn at random (as implicit-feedback
//! recommenders are trained). Item popularity alone already ranks well, so the model
//! has to find the tastes to beat it. Held-out clicks are scored two ways, against
//! that popularity baseline and the world's own odds (the ceiling): the area under the
//! ROC curve of the click predictions (each held-out click against its 3 random items),
//! and hit-rate@10: each held-out click's item is ranked among itself and 99 items
//! drawn at random, and a hit is a rank in the top 10. The example fails if the model
//! does not beat popularity on both.

use std::time::Instant;

use kiln::metrics::roc_auc;
use kiln::prelude::*;

const USERS: usize = 600;
const ITEMS: usize = 400;
const CONTEXT: usize = 4;
const TASTE: usize = 8;

kiln::model! {
    /// User and item embeddings, their element-wise product (a learned dot product)
    /// and the embeddings themselves joined with the context, as NeuMF joins matrix
    /// factorisation with a network; a click logit and a like logit.
    pub struct TwoTower {
        inputs: { user: [1], item: [1], context: [4] },
        u: user >> { Embedding(600, 16), Flatten },
        i: item >> { Embedding(400, 16), Flatten },
        matched: Mul(u, i),
        joined: Concat(matched, u, i, context) >> { Dense(64), Relu },
        outputs: { click: joined >> Dense(1), like: joined >> Dense(1) },
    }
}

/// A xorshift generator with uniform and normal draws.
struct Draws(u64);

impl Draws {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// Interactions: user, item, context, click, rating.
struct Interactions {
    users: Vec<f32>,
    items: Vec<f32>,
    context: Vec<f32>,
    clicks: Vec<f32>,
    ratings: Vec<f32>,
}

impl Interactions {
    fn with_capacity(n: usize) -> Self {
        Interactions {
            users: Vec::with_capacity(n),
            items: Vec::with_capacity(n),
            context: Vec::with_capacity(n * CONTEXT),
            clicks: Vec::with_capacity(n),
            ratings: Vec::with_capacity(n),
        }
    }

    fn len(&self) -> usize {
        self.users.len()
    }

    fn context(&self, s: usize) -> &[f32] {
        &self.context[s * CONTEXT..(s + 1) * CONTEXT]
    }

    fn push(&mut self, user: f32, item: f32, context: &[f32], click: f32, rating: f32) {
        self.users.push(user);
        self.items.push(item);
        self.context.extend_from_slice(context);
        self.clicks.push(click);
        self.ratings.push(rating);
    }

    /// The interactions `samples`, in that order.
    fn select(&self, samples: impl Iterator<Item = usize>) -> Self {
        let mut out = Interactions::with_capacity(0);
        for s in samples {
            let (user, item) = (self.users[s], self.items[s]);
            out.push(user, item, self.context(s), self.clicks[s], self.ratings[s]);
        }
        out
    }
}

/// The hidden world: tastes, item popularity, how context sways a click.
struct World {
    user_taste: Vec<f64>,
    item_taste: Vec<f64>,
    popularity: Vec<f64>,
    context_weight: [f64; CONTEXT],
}

impl World {
    fn new(draws: &mut Draws) -> Self {
        let mut normals = |n: usize| (0..n).map(|_| draws.normal()).collect::<Vec<_>>();
        Self {
            user_taste: normals(USERS * TASTE),
            item_taste: normals(ITEMS * TASTE),
            popularity: normals(ITEMS),
            context_weight: [0.8, -0.6, 0.4, 0.0],
        }
    }

    /// How much user `u` and item `i` agree: about N(0, 1).
    fn affinity(&self, u: usize, i: usize) -> f64 {
        let (a, b) = (&self.user_taste[u * TASTE..], &self.item_taste[i * TASTE..]);
        (0..TASTE).map(|k| a[k] * b[k]).sum::<f64>() / (TASTE as f64).sqrt()
    }

    /// The log-odds that user `u` clicks item `i` in `context`.
    fn click_logit(&self, u: usize, i: usize, context: &[f32]) -> f64 {
        let sway: f64 = context
            .iter()
            .zip(self.context_weight)
            .map(|(&c, w)| f64::from(c) * w)
            .sum();
        1.5 * self.affinity(u, i) + 0.8 * self.popularity[i] + sway - 1.0
    }

    /// `n` interactions: popular items shown more often, a click with probability
    /// σ(1.5 · affinity + 0.8 · popularity + context − 1), a rating around
    /// 3 + affinity.
    fn interactions(&self, n: usize, draws: &mut Draws) -> Interactions {
        let weights: Vec<f64> = self.popularity.iter().map(|p| (0.6 * p).exp()).collect();
        let total: f64 = weights.iter().sum();
        let mut out = Interactions::with_capacity(n);
        for _ in 0..n {
            let u = ((draws.uniform() * USERS as f64) as usize).min(USERS - 1);
            let mut pick = draws.uniform() * total;
            let i = weights
                .iter()
                .position(|&w| {
                    pick -= w;
                    pick <= 0.0
                })
                .unwrap_or(ITEMS - 1);
            let context: Vec<f32> = (0..CONTEXT)
                .map(|_| (draws.uniform() * 2.0 - 1.0) as f32)
                .collect();
            let affinity = self.affinity(u, i);
            let logit = self.click_logit(u, i, &context);
            let click = draws.uniform() < 1.0 / (1.0 + (-logit).exp());
            let rating = (3.0 + affinity + 0.3 * draws.normal()).clamp(1.0, 5.0);
            let clicked = f32::from(u8::from(click));
            out.push(u as f32, i as f32, &context, clicked, rating as f32);
        }
        out
    }
}

fn main() {
    let epochs = match parse_epochs() {
        Ok(epochs) => epochs,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    if let Err(error) = run(epochs) {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

/// `--epochs N`, 20 by default (early stopping usually ends sooner).
fn parse_epochs() -> Result<usize, String> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (None, _) => Ok(20),
        (Some("--epochs"), Some(n)) => n.parse().map_err(|e| format!("--epochs: {e}")),
        _ => Err("usage: two_tower [--epochs N]".into()),
    }
}

/// Training samples from clicks, as implicit-feedback recommenders are trained: each
/// click a positive (`like` if its rating is 4 or more), and `negatives` items drawn at
/// random for the same user and context as negatives (no click, no like).
fn samples(clicks: &Interactions, negatives: usize, draws: &mut Draws) -> Interactions {
    let mut out = Interactions::with_capacity(clicks.len() * (1 + negatives));
    for s in 0..clicks.len() {
        // The like head's target: a rating of 4 or more on a click.
        let like = f32::from(u8::from(clicks.ratings[s] >= 4.0));
        let (user, context) = (clicks.users[s], clicks.context(s));
        out.push(user, clicks.items[s], context, 1.0, like);
        for _ in 0..negatives {
            let item = random_item_except(clicks.items[s], draws);
            out.push(user, item, context, 0.0, 0.0);
        }
    }
    out
}

/// An item drawn uniformly at random, other than `item`.
fn random_item_except(item: f32, draws: &mut Draws) -> f32 {
    loop {
        let other = ((draws.uniform() * ITEMS as f64) as usize).min(ITEMS - 1) as f32;
        if other != item {
            return other;
        }
    }
}

fn run(epochs: usize) -> Result<(), Error> {
    // 1. The world and what users did, from a fixed seed: 300 000 items shown, of
    //    which a fifth are held out; the clicks are what a recommender learns from.
    let mut draws = Draws(0x5EED_2026_1205);
    let world = World::new(&mut draws);
    let shown = world.interactions(300_000, &mut draws);
    let clicks = shown.select((0..shown.len()).filter(|&s| shown.clicks[s] > 0.5));
    let cut = clicks.len() * 4 / 5;
    let (train_clicks, test_clicks) = (clicks.select(0..cut), clicks.select(cut..clicks.len()));
    let train = samples(&train_clicks, 3, &mut draws);
    let test = samples(&test_clicks, 3, &mut draws);
    println!(
        "{USERS} users, {ITEMS} items; {} of {} items shown were clicked; {} training and {} held-out samples (each click and 3 random items)",
        train_clicks.len() + test_clicks.len(),
        shown.len(),
        train.len(),
        test.len()
    );

    // 2. The datasets: one buffer per input, one of targets per output.
    let dataset = |d: &Interactions| {
        TwoTower::<f32>::dataset(
            TwoTowerInputs {
                user: &d.users,
                item: &d.items,
                context: &d.context,
            },
            TwoTowerOutputs {
                click: &d.clicks,
                like: &d.ratings,
            },
        )
    };
    let (train_data, test_data) = (dataset(&train)?, dataset(&test)?);
    println!("\n{}\n", TwoTower::<f32>::summary());

    // 3. Fit both heads: whether the user clicks the item, and (weighted by one half)
    //    whether they like it.
    let loss = TwoTowerOutputs {
        click: BceWithLogits::default(),
        like: BceWithLogits::default().weight(0.5),
    };
    let mut model = TwoTower::<f32>::new(1);
    let config = FitConfig::new(epochs, 256)
        .seed(2)
        .validation_split(0.1)
        .early_stopping(EarlyStopping::new(Monitor::OutputValLoss("click"), 2))
        .progress(Progress::Lines);
    let started = Instant::now();
    let history = model.fit(&train_data, None, &loss, &mut AdamW::new(1e-2), &config)?;
    let seconds = started.elapsed().as_secs_f64();
    let scores = model.evaluate_outputs(&test_data, &loss, 4096)?;
    println!(
        "\n{} epochs in {seconds:.1} s; held out: click loss {:.4}, like loss {:.4} (weighted)",
        history.epochs.len(),
        scores.click.loss,
        scores.like.loss
    );

    // 4. The popularity baseline: each item's clicks in the training data.
    let mut popularity = vec![0.0f32; ITEMS];
    for &i in &train_clicks.items {
        popularity[i as usize] += 1.0;
    }

    // 5. AUC of the click predictions on the held-out samples.
    let predicted = model
        .infer_outputs(TwoTowerInputs {
            user: &test.users,
            item: &test.items,
            context: &test.context,
        })?
        .click
        .to_vec();
    let positive: Vec<bool> = test.clicks.iter().map(|&c| c > 0.5).collect();
    let baseline: Vec<f32> = test.items.iter().map(|&i| popularity[i as usize]).collect();
    let (auc, auc_baseline) = (
        roc_auc(&predicted, &positive)?,
        roc_auc(&baseline, &positive)?,
    );
    // The ceiling: the world's own odds that a sample is a click rather than a random
    // item (exposure times the click's probability), which no model can beat.
    let oracle: Vec<f64> = (0..test.len())
        .map(|s| {
            let (u, i) = (test.users[s] as usize, test.items[s] as usize);
            let logit = world.click_logit(u, i, test.context(s));
            0.6 * world.popularity[i] - (-logit).exp().ln_1p()
        })
        .collect();
    let auc_oracle = roc_auc(&oracle, &positive)?;

    // 6. Hit-rate@10: each held-out click's item among 99 random others, ranked for its
    //    user and context; a tie with the clicked item counts against it.
    let mut rank_draws = Draws(0xC0FFEE);
    let (mut hits, mut hits_baseline) = (0, 0);
    let mut candidates = vec![0.0f32; 100];
    for s in 0..test_clicks.len() {
        candidates[0] = test_clicks.items[s];
        for c in candidates.iter_mut().skip(1) {
            *c = random_item_except(test_clicks.items[s], &mut rank_draws);
        }
        let users = [test_clicks.users[s]; 100];
        let context: Vec<f32> = test_clicks.context(s).repeat(100);
        let scores = model.infer_outputs(TwoTowerInputs {
            user: &users,
            item: &candidates,
            context: &context,
        })?;
        let beats = |score: &[f32]| score[1..].iter().filter(|&&v| v >= score[0]).count();
        hits += usize::from(beats(scores.click) < 10);
        let by_popularity: Vec<f32> = candidates.iter().map(|&i| popularity[i as usize]).collect();
        hits_baseline += usize::from(beats(&by_popularity) < 10);
    }
    let rate = |h: usize| 100.0 * h as f64 / test_clicks.len() as f64;
    println!(
        "\non {} held-out samples ({} clicks):",
        test.len(),
        test_clicks.len()
    );
    println!("                   two towers   popularity   the world's own odds");
    println!("AUC                    {auc:.4}       {auc_baseline:.4}       {auc_oracle:.4}");
    println!(
        "hit-rate@10          {:>6.2} %     {:>6.2} %",
        rate(hits),
        rate(hits_baseline)
    );
    if auc <= auc_baseline || hits <= hits_baseline {
        return Err(Error::Mismatch(
            "the two towers did not beat item popularity".into(),
        ));
    }
    Ok(())
}
