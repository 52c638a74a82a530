//! Samples and targets in memory, splits, normalisation and minibatches.

use core::marker::PhantomData;

use rand_core::{Rng as _, SeedableRng};

use crate::{Error, Float, Result, Rng, Shape, TensorRef};

/// What a dataset's targets can be: class labels (`usize`) or values (`f32`, `f64`).
///
/// ```
/// use kiln_runtime::data::Target;
/// // Labels score accuracy (the row-wise argmax against the label); values do not.
/// assert_eq!(usize::correct(&[0.1_f32, 0.9, 0.8, 0.2], &[1, 1], 2), Some((1, 2)));
/// assert_eq!(f32::correct(&[0.1_f32, 0.9], &[0.5, 0.5], 2), None);
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
pub trait Target: Copy + Send + Sync + core::fmt::Debug + 'static {
    /// `(correct, total)` for a batch of outputs, if accuracy means something for this
    /// kind of target: for class labels, the row-wise argmax of the outputs (rows of
    /// `width`) against the labels.
    fn correct<T: Float>(outputs: &[T], targets: &[Self], width: usize) -> Option<(usize, usize)>;

    /// The targets as class labels, if they are.
    fn labels(_targets: &[Self]) -> Option<&[usize]> {
        None
    }

    /// A hash of the targets, which data-parallel training compares across ranks (the
    /// default hashes only their number).
    fn fingerprint(targets: &[Self]) -> u64 {
        targets.len() as u64
    }
}

impl Target for usize {
    fn correct<T: Float>(outputs: &[T], targets: &[usize], width: usize) -> Option<(usize, usize)> {
        let correct = outputs
            .chunks_exact(width)
            .zip(targets)
            .filter(|(row, &label)| argmax(row) == label)
            .count();
        Some((correct, targets.len()))
    }

    fn labels(targets: &[usize]) -> Option<&[usize]> {
        Some(targets)
    }

    fn fingerprint(targets: &[usize]) -> u64 {
        crate::distributed::hash_words(targets.iter().map(|&t| t as u64))
    }
}

impl Target for f32 {
    fn correct<T: Float>(_: &[T], _: &[f32], _: usize) -> Option<(usize, usize)> {
        None
    }

    fn fingerprint(targets: &[f32]) -> u64 {
        crate::distributed::hash_values(targets)
    }
}

impl Target for f64 {
    fn correct<T: Float>(_: &[T], _: &[f64], _: usize) -> Option<(usize, usize)> {
        None
    }

    fn fingerprint(targets: &[f64]) -> u64 {
        crate::distributed::hash_values(targets)
    }
}

/// Index of the largest value (the first, on ties).
pub(crate) fn argmax<T: Float>(row: &[T]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// `n` samples of shape `S` and their targets, each in one buffer.
///
/// ```
/// use kiln_runtime::{data::Dataset, Shape1};
/// let ds = Dataset::<f32, Shape1<2>, usize>::new(vec![0.0, 1.0, 2.0, 3.0], vec![1, 0], Some(2)).unwrap();
/// assert_eq!(ds.len(), 2);
/// let (train, valid) = ds.split(0.5, 7);
/// assert_eq!((train.len(), valid.len()), (1, 1));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset<T, S: Shape, Y = usize> {
    features: Vec<T>,
    targets: Vec<Y>,
    targets_per_sample: usize,
    classes: Option<usize>,
    shape: PhantomData<S>,
}

impl<T: Float, S: Shape, Y: Target> Dataset<T, S, Y> {
    /// A dataset from its features (`n * S::SIZE` values) and targets (a whole number
    /// per sample: one label, or one value per output). `classes`, for class labels,
    /// is the number of classes; every label must be below it.
    ///
    /// ```
    /// use kiln_runtime::{data::Dataset, Shape1};
    /// let ds = Dataset::<f32, Shape1<2>>::new(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0], vec![1, 0, 1], Some(2))?;
    /// assert!(Dataset::<f32, Shape1<2>>::new(vec![0.0; 5], vec![0, 1], Some(2)).is_err());
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn new(features: Vec<T>, targets: Vec<Y>, classes: Option<usize>) -> Result<Self> {
        let n = crate::tensor::batch_of::<S>(features.len())?;
        if targets.is_empty() || !targets.len().is_multiple_of(n) {
            return Err(Error::Mismatch(format!(
                "{n} samples but {} targets: expected a whole number of targets per sample",
                targets.len()
            )));
        }
        Ok(Self {
            targets_per_sample: targets.len() / n,
            features,
            targets,
            classes,
            shape: PhantomData,
        })
    }

    /// Number of samples.
    ///
    /// ```
    /// use kiln_runtime::{data::Dataset, Shape1};
    /// let ds = Dataset::<f32, Shape1<2>>::new(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0], vec![1, 0, 1], Some(2))?;
    /// assert_eq!(ds.len(), 3);
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.features.len() / S::SIZE
    }

    /// Whether there are no samples (never true for a constructed dataset).
    ///
    /// ```
    /// use kiln_runtime::{data::Dataset, Shape1};
    /// let ds = Dataset::<f32, Shape1<2>>::new(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0], vec![1, 0, 1], Some(2))?;
    /// assert!(!ds.is_empty());
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    /// Every sample's features, as one batch.
    ///
    /// ```
    /// use kiln_runtime::{data::Dataset, Shape1};
    /// let ds = Dataset::<f32, Shape1<2>>::new(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0], vec![1, 0, 1], Some(2))?;
    /// assert_eq!(ds.features().batch(), 3);
    /// assert_eq!(ds.features().as_slice()[2..4], [2.0, 3.0]);
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn features(&self) -> TensorRef<'_, T, S> {
        TensorRef::new(&self.features).expect("a dataset is never empty")
    }

    /// Every target.
    ///
    /// ```
    /// use kiln_runtime::{data::Dataset, Shape1};
    /// let ds = Dataset::<f32, Shape1<2>>::new(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0], vec![1, 0, 1], Some(2))?;
    /// assert_eq!(ds.targets(), [1, 0, 1]);
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn targets(&self) -> &[Y] {
        &self.targets
    }

    /// Targets per sample.
    ///
    /// ```
    /// use kiln_runtime::{data::Dataset, Shape1};
    /// let ds = Dataset::<f32, Shape1<2>>::new(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0], vec![1, 0, 1], Some(2))?;
    /// assert_eq!(ds.targets_per_sample(), 1);
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn targets_per_sample(&self) -> usize {
        self.targets_per_sample
    }

    /// Number of classes, for class labels.
    ///
    /// ```
    /// use kiln_runtime::{data::Dataset, Shape1};
    /// let ds = Dataset::<f32, Shape1<2>>::new(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0], vec![1, 0, 1], Some(2))?;
    /// assert_eq!(ds.classes(), Some(2));
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn classes(&self) -> Option<usize> {
        self.classes
    }

    /// The samples at `indices`, in that order (a copy).
    ///
    /// ```
    /// use kiln_runtime::{data::Dataset, Shape1};
    /// let ds = Dataset::<f32, Shape1<2>>::new(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0], vec![1, 0, 1], Some(2))?;
    /// let last_first = ds.subset(&[2, 0]);
    /// assert_eq!(last_first.features().as_slice(), [4.0, 5.0, 0.0, 1.0]);
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn subset(&self, indices: &[usize]) -> Self {
        let tps = self.targets_per_sample;
        let mut features = Vec::with_capacity(indices.len() * S::SIZE);
        let mut targets = Vec::with_capacity(indices.len() * tps);
        for &i in indices {
            features.extend_from_slice(&self.features[i * S::SIZE..(i + 1) * S::SIZE]);
            targets.extend_from_slice(&self.targets[i * tps..(i + 1) * tps]);
        }
        Self {
            features,
            targets,
            targets_per_sample: tps,
            classes: self.classes,
            shape: PhantomData,
        }
    }

    /// A seeded shuffle of the samples split into `(1 - fraction, fraction)`: training
    /// and validation. Each part keeps at least one sample.
    ///
    /// ```
    /// use kiln_runtime::{data::Dataset, Shape1};
    /// let ds = Dataset::<f32, Shape1<2>>::new(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0], vec![1, 0, 1], Some(2))?;
    /// let (train, valid) = ds.split(0.3, 7);
    /// assert_eq!((train.len(), valid.len()), (2, 1));
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn split(&self, fraction: f64, seed: u64) -> (Self, Self) {
        let n = self.len();
        let mut order: Vec<usize> = (0..n).collect();
        shuffle(&mut order, &mut Rng::seed_from_u64(seed));
        let held_out =
            ((n as f64 * fraction).round() as usize).clamp(1, n.saturating_sub(1).max(1));
        let (rest, held) = order.split_at(n - held_out);
        (self.subset(rest), self.subset(held))
    }

    /// Applies `f` to every feature value (for example a fixed scale).
    ///
    /// ```
    /// use kiln_runtime::{data::Dataset, Shape1};
    /// let ds = Dataset::<f32, Shape1<2>>::new(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0], vec![1, 0, 1], Some(2))?;
    /// let mut ds = ds;
    /// ds.map_features(|v| v / 5.0);
    /// assert_eq!(ds.features().as_slice()[5], 1.0);
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn map_features(&mut self, f: impl Fn(T) -> T) {
        for v in &mut self.features {
            *v = f(*v);
        }
    }

    /// Per-feature mean and standard deviation of this dataset, to standardise it and
    /// any other dataset (validation, test) the same way.
    ///
    /// ```
    /// use kiln_runtime::{data::Dataset, Shape1};
    /// let ds = Dataset::<f32, Shape1<2>>::new(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0], vec![1, 0, 1], Some(2))?;
    /// let (mut train, mut valid) = ds.split(0.3, 7);
    /// let standardizer = train.standardizer();
    /// train.standardize(&standardizer);
    /// valid.standardize(&standardizer); // with the training set's statistics
    /// let centred = train.standardizer();
    /// assert!(centred.mean.iter().all(|m| m.abs() < 1e-6));
    /// assert!(centred.std.iter().all(|s| (s - 1.0).abs() < 1e-6));
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn standardizer(&self) -> Standardizer<T> {
        let n = T::from_f64(self.len() as f64);
        let mut mean = vec![T::ZERO; S::SIZE];
        for sample in self.features.chunks_exact(S::SIZE) {
            for (m, &v) in mean.iter_mut().zip(sample) {
                *m += v;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut std = vec![T::ZERO; S::SIZE];
        for sample in self.features.chunks_exact(S::SIZE) {
            for ((s, &m), &v) in std.iter_mut().zip(&mean).zip(sample) {
                *s += (v - m) * (v - m);
            }
        }
        std.iter_mut().for_each(|s| *s = (*s / n).sqrt());
        Standardizer { mean, std }
    }

    /// Standardises every feature with `standardizer`: `(x - mean) / std`, leaving
    /// constant features (std 0) centred but unscaled.
    ///
    /// ```
    /// use kiln_runtime::{data::Dataset, Shape1};
    /// let ds = Dataset::<f32, Shape1<2>>::new(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0], vec![1, 0, 1], Some(2))?;
    /// let mut ds = ds;
    /// ds.standardize(&ds.standardizer());
    /// let first = ds.features().as_slice()[0];
    /// assert!((first + 1.2247449).abs() < 1e-6); // (0 − 2) / √(8/3)
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn standardize(&mut self, standardizer: &Standardizer<T>) {
        for sample in self.features.chunks_exact_mut(S::SIZE) {
            for ((v, &m), &s) in sample
                .iter_mut()
                .zip(&standardizer.mean)
                .zip(&standardizer.std)
            {
                *v = if s > T::ZERO { (*v - m) / s } else { *v - m };
            }
        }
    }

    /// Minibatches of `batch_size` samples (the last may be smaller), in an order
    /// shuffled per epoch from `seed`, or in order if `seed` is `None`.
    ///
    /// ```
    /// use kiln_runtime::{data::Dataset, Shape1};
    /// let ds = Dataset::<f32, Shape1<2>>::new(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0], vec![1, 0, 1], Some(2))?;
    /// let mut batches = ds.batches(2, None);
    /// let (x, y) = batches.next_batch().unwrap();
    /// assert_eq!((x.batch(), y), (2, &[1, 0][..]));
    /// assert_eq!(batches.next_batch().unwrap().0.batch(), 1); // the rest
    /// assert!(batches.next_batch().is_none());
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn batches(&self, batch_size: usize, seed: Option<u64>) -> Batches<'_, T, S, Y> {
        let mut batches = Batches {
            dataset: self,
            order: (0..self.len()).collect(),
            seed,
            batch_size: batch_size.max(1),
            position: 0,
            rank: 0,
            ranks: 1,
            // No batch holds more than the data set, whatever size is asked for.
            features: Vec::with_capacity(batch_size.clamp(1, self.len().max(1)) * S::SIZE),
            targets: Vec::with_capacity(
                batch_size.clamp(1, self.len().max(1)) * self.targets_per_sample,
            ),
        };
        batches.start_epoch(0);
        batches
    }
}

/// Per-feature statistics for standardisation (see [`Dataset::standardizer`]).
///
/// ```
/// use kiln_runtime::{data::Dataset, Shape1};
/// let features: Vec<f32> = (0..10).map(|i| i as f32).collect();
/// let ds = Dataset::<f32, Shape1<1>>::new(features, vec![0, 1, 0, 1, 0, 1, 0, 1, 0, 1], Some(2))?;
/// let stats = ds.standardizer();
/// assert_eq!((stats.mean[0], stats.std[0]), (4.5, 8.25f32.sqrt()));
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Standardizer<T> {
    /// Mean of each feature.
    pub mean: Vec<T>,
    /// Standard deviation of each feature.
    pub std: Vec<T>,
}

fn shuffle(order: &mut [usize], rng: &mut Rng) {
    for i in (1..order.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
}

/// Shuffled minibatches over a dataset, gathered into buffers that are reused: after
/// construction, walking an epoch allocates nothing.
///
/// ```
/// use kiln_runtime::{data::Dataset, Shape1};
/// let features: Vec<f32> = (0..10).map(|i| i as f32).collect();
/// let ds = Dataset::<f32, Shape1<1>>::new(features, vec![0, 1, 0, 1, 0, 1, 0, 1, 0, 1], Some(2))?;
/// let mut batches = ds.batches(4, Some(7)); // shuffled, a new order each epoch
/// let mut seen = Vec::new();
/// while let Some((x, _labels)) = batches.next_batch() {
///     seen.extend_from_slice(x.as_slice());
/// }
/// seen.sort_by(f32::total_cmp);
/// assert_eq!(seen, ds.features().as_slice()); // every sample once
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
#[derive(Debug)]
pub struct Batches<'a, T, S: Shape, Y> {
    dataset: &'a Dataset<T, S, Y>,
    order: Vec<usize>,
    seed: Option<u64>,
    batch_size: usize,
    position: usize,
    rank: usize,
    ranks: usize,
    features: Vec<T>,
    targets: Vec<Y>,
}

/// Where the rows of a [sharded](Batches::sharded) batch sit in their global batch.
///
/// ```
/// use kiln_runtime::{data::Dataset, Shape1};
/// let features: Vec<f32> = (0..10).map(|i| i as f32).collect();
/// let ds = Dataset::<f32, Shape1<1>>::new(features, vec![0, 1, 0, 1, 0, 1, 0, 1, 0, 1], Some(2))?;
/// // Rank 1 of 2, batches of 2 a rank: global batches of 4, of which rows 2..4 are ours.
/// let mut batches = ds.batches(2, None).sharded(1, 2);
/// let (_, _, part) = batches.next_batch_part().unwrap();
/// assert_eq!((part.first, part.rows, part.total), (2, 2, 4));
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchPart {
    /// The global batch's row this rank's part starts at.
    pub first: usize,
    /// Rows of the global batch that are this rank's (0 when a short last batch has
    /// fewer samples than there are ranks: the batch handed out is then the global
    /// batch's last sample, to be given weight zero).
    pub rows: usize,
    /// Samples in the global batch.
    pub total: usize,
}

impl<T: Float, S: Shape, Y: Target> Batches<'_, T, S, Y> {
    /// Rewinds to the start of `epoch`, reshuffling from the seed and the epoch number
    /// (so every epoch has its own order and a run is reproducible).
    ///
    /// ```
    /// use kiln_runtime::{data::Dataset, Shape1};
    /// let features: Vec<f32> = (0..10).map(|i| i as f32).collect();
    /// let ds = Dataset::<f32, Shape1<1>>::new(features, vec![0, 1, 0, 1, 0, 1, 0, 1, 0, 1], Some(2))?;
    /// let order = |epoch| {
    ///     let mut batches = ds.batches(10, Some(3));
    ///     batches.start_epoch(epoch);
    ///     batches.next_batch().unwrap().0.as_slice().to_vec()
    /// };
    /// assert_eq!(order(1), order(1));
    /// assert_ne!(order(1), order(2));
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn start_epoch(&mut self, epoch: usize) {
        if let Some(seed) = self.seed {
            for (i, o) in self.order.iter_mut().enumerate() {
                *o = i;
            }
            let mut rng = Rng::seed_from_u64(seed);
            rng.set_stream(epoch as u64);
            shuffle(&mut self.order, &mut rng);
        }
        self.position = 0;
    }

    /// The batches of rank `rank` of `ranks` in data-parallel training: each batch
    /// becomes a *global* batch of `batch_size × ranks` samples from the same shuffle
    /// (the same on every rank for the same seed), of which this rank gets the
    /// contiguous part `[rank·n/ranks, (rank+1)·n/ranks)` (`n` the global batch's
    /// size). Every rank sees the same number of batches; together they cover each
    /// sample of an epoch once. [`next_batch_part`](Self::next_batch_part) tells where
    /// each batch sits.
    ///
    /// # Panics
    /// If `rank >= ranks`.
    ///
    /// ```
    /// use kiln_runtime::{data::Dataset, Shape1};
    /// let features: Vec<f32> = (0..10).map(|i| i as f32).collect();
    /// let ds = Dataset::<f32, Shape1<1>>::new(features, vec![0, 1, 0, 1, 0, 1, 0, 1, 0, 1], Some(2))?;
    /// let take = |rank| {
    ///     let mut batches = ds.batches(2, Some(5)).sharded(rank, 2);
    ///     let mut rows = Vec::new();
    ///     while let Some((x, _)) = batches.next_batch() {
    ///         rows.extend_from_slice(x.as_slice());
    ///     }
    ///     rows
    /// };
    /// let mut both = [take(0), take(1)].concat();
    /// both.sort_by(f32::total_cmp);
    /// assert_eq!(both, ds.features().as_slice()); // together, each sample once
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn sharded(mut self, rank: usize, ranks: usize) -> Self {
        assert!(rank < ranks, "rank {rank} of {ranks}");
        self.rank = rank;
        self.ranks = ranks;
        // A part is at most `batch_size` rows: the buffers need no more room.
        self
    }

    /// Walks only the samples in `range`, in order (a rank's part of an evaluation).
    pub(crate) fn restrict(&mut self, range: std::ops::Range<usize>) {
        self.order.clear();
        self.order.extend(range);
        self.seed = None;
        self.position = 0;
    }

    /// Samples per step across all ranks.
    fn global_batch(&self) -> usize {
        self.batch_size.saturating_mul(self.ranks)
    }

    /// Moves past the next `batches` batches of this epoch without copying them (to
    /// resume an epoch where it stopped).
    ///
    /// ```
    /// use kiln_runtime::{data::Dataset, Shape1};
    /// let features: Vec<f32> = (0..10).map(|i| i as f32).collect();
    /// let ds = Dataset::<f32, Shape1<1>>::new(features, vec![0, 1, 0, 1, 0, 1, 0, 1, 0, 1], Some(2))?;
    /// let mut batches = ds.batches(4, None);
    /// batches.skip_batches(2);
    /// assert_eq!(batches.next_batch().unwrap().0.as_slice(), [8.0, 9.0]); // the third batch
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn skip_batches(&mut self, batches: usize) {
        self.position = batches
            .saturating_mul(self.global_batch())
            .saturating_add(self.position)
            .min(self.order.len());
    }

    /// Number of batches in an epoch.
    ///
    /// ```
    /// use kiln_runtime::{data::Dataset, Shape1};
    /// let features: Vec<f32> = (0..10).map(|i| i as f32).collect();
    /// let ds = Dataset::<f32, Shape1<1>>::new(features, vec![0, 1, 0, 1, 0, 1, 0, 1, 0, 1], Some(2))?;
    /// assert_eq!(ds.batches(4, None).len(), 3); // 4, 4 and 2
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.order.len().div_ceil(self.global_batch())
    }

    /// Whether an epoch has no batches (never, for a constructed dataset).
    ///
    /// ```
    /// use kiln_runtime::{data::Dataset, Shape1};
    /// let features: Vec<f32> = (0..10).map(|i| i as f32).collect();
    /// let ds = Dataset::<f32, Shape1<1>>::new(features, vec![0, 1, 0, 1, 0, 1, 0, 1, 0, 1], Some(2))?;
    /// assert!(!ds.batches(4, None).is_empty());
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The next minibatch of this epoch, or `None` at its end.
    ///
    /// ```
    /// use kiln_runtime::{data::Dataset, Shape1};
    /// let features: Vec<f32> = (0..10).map(|i| i as f32).collect();
    /// let ds = Dataset::<f32, Shape1<1>>::new(features, vec![0, 1, 0, 1, 0, 1, 0, 1, 0, 1], Some(2))?;
    /// let mut batches = ds.batches(8, None);
    /// let (x, y) = batches.next_batch().unwrap();
    /// assert_eq!((x.batch(), y.len()), (8, 8));
    /// assert_eq!(batches.next_batch().unwrap().0.batch(), 2);
    /// assert!(batches.next_batch().is_none());
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn next_batch(&mut self) -> Option<(TensorRef<'_, T, S>, &[Y])> {
        self.next_batch_part().map(|(x, y, _)| (x, y))
    }

    /// [`next_batch`](Self::next_batch), with where its rows sit in their global batch
    /// (unsharded: all of it).
    ///
    /// ```
    /// use kiln_runtime::{data::Dataset, Shape1};
    /// let features: Vec<f32> = (0..10).map(|i| i as f32).collect();
    /// let ds = Dataset::<f32, Shape1<1>>::new(features, vec![0, 1, 0, 1, 0, 1, 0, 1, 0, 1], Some(2))?;
    /// let mut batches = ds.batches(8, None);
    /// let (_, _, part) = batches.next_batch_part().unwrap();
    /// assert_eq!((part.first, part.rows, part.total), (0, 8, 8));
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn next_batch_part(&mut self) -> Option<(TensorRef<'_, T, S>, &[Y], BatchPart)> {
        if self.position >= self.order.len() {
            return None;
        }
        let end = (self.position + self.global_batch()).min(self.order.len());
        let total = end - self.position;
        let first = self.rank * total / self.ranks;
        let last = (self.rank + 1) * total / self.ranks;
        // An empty part runs the global batch's last sample, weighted zero.
        let (part, rows) = if first == last {
            let part = BatchPart {
                first: total - 1,
                rows: 0,
                total,
            };
            (part, end - 1..end)
        } else {
            let part = BatchPart {
                first,
                rows: last - first,
                total,
            };
            (part, self.position + first..self.position + last)
        };
        let tps = self.dataset.targets_per_sample;
        self.features.clear();
        self.targets.clear();
        for &i in &self.order[rows] {
            self.features
                .extend_from_slice(&self.dataset.features[i * S::SIZE..(i + 1) * S::SIZE]);
            self.targets
                .extend_from_slice(&self.dataset.targets[i * tps..(i + 1) * tps]);
        }
        self.position = end;
        let x = TensorRef::new(&self.features).expect("a batch holds at least one sample");
        Some((x, &self.targets, part))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Shape1;

    fn toy(n: usize) -> Dataset<f64, Shape1<2>, usize> {
        let features = (0..2 * n).map(|v| v as f64).collect();
        Dataset::new(features, (0..n).map(|i| i % 3).collect(), Some(3)).unwrap()
    }

    #[test]
    fn batches_cover_every_sample_once_per_epoch_in_a_new_order() {
        let ds = toy(10);
        let mut batches = ds.batches(4, Some(1));
        assert_eq!(batches.len(), 3);
        let mut epochs = Vec::new();
        for epoch in 0..2 {
            batches.start_epoch(epoch);
            let mut seen = Vec::new();
            let mut sizes = Vec::new();
            while let Some((x, y)) = batches.next_batch() {
                sizes.push(x.batch());
                for (sample, &label) in x.as_slice().chunks(2).zip(y) {
                    let index = sample[0] as usize / 2;
                    assert_eq!(label, index % 3, "features and targets stay paired");
                    seen.push(index);
                }
            }
            assert_eq!(sizes, [4, 4, 2]);
            let mut sorted = seen.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..10).collect::<Vec<_>>());
            epochs.push(seen);
        }
        assert_ne!(epochs[0], epochs[1]);
    }

    #[test]
    fn sharded_batches_split_the_global_batches_and_cover_every_sample_once() {
        // 10 samples, 3 ranks of batch 2: global batches of 6 and 4; the 4 split 1/1/2.
        let ds = toy(10);
        let whole: Vec<Vec<usize>> = {
            let mut batches = ds.batches(6, Some(4));
            let mut all = Vec::new();
            while let Some((x, _)) = batches.next_batch() {
                all.push(x.as_slice().chunks(2).map(|s| s[0] as usize / 2).collect());
            }
            all
        };
        let mut parts = vec![Vec::new(); whole.len()];
        for rank in 0..3 {
            let mut batches = ds.batches(2, Some(4)).sharded(rank, 3);
            assert_eq!(batches.len(), 2);
            let mut step = 0;
            while let Some((x, _, part)) = batches.next_batch_part() {
                let rows: Vec<usize> = x.as_slice().chunks(2).map(|s| s[0] as usize / 2).collect();
                assert_eq!(part.total, whole[step].len());
                assert_eq!(rows, whole[step][part.first..part.first + part.rows]);
                parts[step].push((part.first, rows));
                step += 1;
            }
        }
        for (step, mut got) in parts.into_iter().enumerate() {
            got.sort();
            let joined: Vec<usize> = got.into_iter().flat_map(|(_, rows)| rows).collect();
            assert_eq!(
                joined, whole[step],
                "step {step}: each sample once, in order"
            );
        }
        // 7 samples on 4 ranks of batch 1: the last global batch has 3, so rank 0's part
        // is empty and it runs the batch's last sample with no rows of its own.
        let ds = toy(7);
        let mut batches = ds.batches(1, Some(4)).sharded(0, 4);
        batches.next_batch();
        let (x, _, part) = batches.next_batch_part().unwrap();
        assert_eq!((part.first, part.rows, part.total, x.batch()), (2, 0, 3, 1));
    }

    #[test]
    fn split_partitions_and_standardize_centres() {
        let ds = toy(10);
        let (a, b) = ds.split(0.3, 5);
        assert_eq!((a.len(), b.len()), (7, 3));
        let mut all: Vec<f64> = a
            .features()
            .as_slice()
            .iter()
            .chain(b.features().as_slice())
            .copied()
            .collect();
        all.sort_by(f64::total_cmp);
        assert_eq!(all, ds.features().as_slice());
        let mut c = ds.clone();
        let st = c.standardizer();
        c.standardize(&st);
        let mean: f64 = c.features().as_slice().iter().step_by(2).sum::<f64>() / 10.0;
        assert!(mean.abs() < 1e-12);
    }

    #[test]
    fn mismatched_lengths_are_errors() {
        assert!(Dataset::<f32, Shape1<2>, usize>::new(vec![0.0; 4], vec![1, 2, 3], None).is_err());
        assert!(Dataset::<f32, Shape1<2>, usize>::new(vec![0.0; 3], vec![1], None).is_err());
        assert!(Dataset::<f32, Shape1<2>, usize>::new(vec![], vec![], None).is_err());
    }
}
