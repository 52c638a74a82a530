//! Backups that let an interrupted [`fit`](super::fit) carry on where it stopped, as
//! Keras's `BackupAndRestore` does, but bit for bit.
//!
//! A backup is one safetensors file, written atomically (see
//! [`write_atomically`](crate::io::write_atomically)): the model's tensors under their
//! usual names (so the file also loads as a checkpoint, non-strictly), and under
//! `resume/…` everything else training changes — the optimiser's moments and step
//! count, the dropout generator's position, the epoch and batch reached, the running
//! sums of the epoch so far, the history, and the state of every callback (the
//! schedule's base rate, early stopping's best value and weights, the checkpoint's best
//! value). Numbers are kept as the bits of an f64, so nothing is rounded on the way
//! through.
//!
//! What the program sets up before `fit` — the model's architecture, its frozen
//! tensors, clipping and regularisation, the optimiser's hyper-parameters, the data —
//! is configuration, not state: a resumed run must set it up the same way, and `fit`
//! refuses a backup written for other data sizes or another batch size, seed, number
//! of epochs or accumulation.
//!
//! ```
//! use kiln::prelude::*;
//! kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, Dropout(0.2), out: Dense(2) } }
//! let features: Vec<f32> = (0..4 * 64).map(|i| (i % 5) as f32 / 5.0).collect();
//! let labels: Vec<usize> = (0..64).map(|i| i % 2).collect();
//! let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(2))?;
//! let path = std::env::temp_dir().join("kiln-doc-resume.backup");
//! let config = || FitConfig::new(4, 16).seed(3).progress(Progress::Silent).backup(&path);
//!
//! // A run stopped after two epochs by a callback error keeps its backup...
//! struct StopAt(usize);
//! impl Callback<f32, Net<f32>> for StopAt {
//!     fn on_epoch_begin(&mut self, epoch: usize, _: &mut FitState<'_, f32, Net<f32>>) -> kiln::Result<()> {
//!         if epoch == self.0 { Err(Error::Unsupported("interrupted")) } else { Ok(()) }
//!     }
//! }
//! let mut interrupted = Net::<f32>::new(0);
//! let loss = CrossEntropy::default();
//! assert!(interrupted.fit_with_callbacks(&data, None, &loss, &mut Adam::new(1e-2), &config(), &mut [&mut StopAt(2)]).is_err());
//! assert!(path.exists());
//! // ...and a new process, set up the same way (callbacks included), carries on from
//! // it, to the bits of a run never stopped.
//! let mut resumed = Net::<f32>::new(0);
//! resumed.fit_with_callbacks(&data, None, &loss, &mut Adam::new(1e-2), &config(), &mut [&mut StopAt(usize::MAX)])?;
//! assert!(!path.exists()); // removed once fit returns Ok
//! let mut straight = Net::<f32>::new(0);
//! let straight_config = FitConfig::new(4, 16).seed(3).progress(Progress::Silent);
//! straight.fit(&data, None, &loss, &mut Adam::new(1e-2), &straight_config)?;
//! assert_eq!(resumed.params().as_slice(), straight.params().as_slice());
//! # Ok::<(), kiln::Error>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors};

use crate::io::LoadOptions;
use crate::{Error, Float, ModelSpec, Result};

/// How often [`fit`](super::fit) backs up its whole state (see
/// [`FitConfig::backup`](super::FitConfig::backup)).
///
/// ```
/// use kiln_runtime::train::{Backup, FitConfig};
/// let config = FitConfig::new(10, 32).backup_every("run.backup", 500);
/// assert_eq!(config.backup, Some(Backup { path: "run.backup".into(), every_steps: Some(500) }));
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// The backup file, replaced atomically at each backup and removed when `fit`
    /// ends without an error.
    pub path: PathBuf,
    /// Back up after every this many optimiser steps as well as at each epoch's end;
    /// `None` for epoch ends only.
    pub every_steps: Option<usize>,
}

const PREFIX: &str = "resume/";
const VERSION: &str = "1";

/// Named numbers, tensors and counts that make up what training has done besides the
/// model's own tensors: what an [`Optimizer`](crate::Optimizer) or a
/// [`Callback`](super::Callback) writes into a backup and reads back on resumption.
///
/// Keys are scoped: each optimiser and callback sees its own names (`fit` adds a prefix
/// per owner), so two callbacks may both use `best`.
///
/// ```
/// use kiln_runtime::train::ResumeState;
/// let mut state = ResumeState::<f32>::new();
/// state.put_number("best", 0.25);
/// state.put_count("waited", 3);
/// state.put_tensor("velocity", &[0.5, -0.5]);
/// assert_eq!(state.number("best")?, 0.25);
/// assert_eq!(state.count("waited")?, 3);
/// assert_eq!(state.tensor("velocity", 2)?, [0.5, -0.5]);
/// assert!(state.number("worst").is_err()); // the error names the key
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ResumeState<T> {
    scope: String,
    numbers: BTreeMap<String, f64>,
    tensors: BTreeMap<String, Vec<T>>,
    counts: BTreeMap<String, Vec<u64>>,
    source: Option<PathBuf>,
}

impl<T: Float> ResumeState<T> {
    /// An empty state.
    ///
    /// ```
    /// use kiln_runtime::train::ResumeState;
    /// let mut state = ResumeState::<f32>::new();
    /// assert!(state.is_empty());
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn new() -> Self {
        Self {
            scope: String::new(),
            numbers: BTreeMap::new(),
            tensors: BTreeMap::new(),
            counts: BTreeMap::new(),
            source: None,
        }
    }

    pub(crate) fn set_scope(&mut self, scope: &str) {
        self.scope.clear();
        self.scope.push_str(scope);
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.scope)
    }

    fn missing(&self, key: &str) -> Error {
        let path = self.source.as_deref().unwrap_or(Path::new("backup"));
        Error::format(path, format!("the backup lacks `{}`", self.key(key)))
    }

    /// Keeps `value` exactly (its bits).
    ///
    /// ```
    /// use kiln_runtime::train::ResumeState;
    /// let mut state = ResumeState::<f32>::new();
    /// state.put_number("lr", 0.1 + 0.2);
    /// assert_eq!(state.number("lr")?.to_bits(), (0.1_f64 + 0.2).to_bits());
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn put_number(&mut self, key: &str, value: f64) {
        self.numbers.insert(self.key(key), value);
    }

    /// Keeps `value` if it is `Some`; [`optional_number`](Self::optional_number) reads
    /// it back.
    ///
    /// ```
    /// use kiln_runtime::train::ResumeState;
    /// let mut state = ResumeState::<f32>::new();
    /// state.put_optional("best", None);
    /// state.put_optional("seen", Some(2.0));
    /// assert_eq!((state.optional_number("best"), state.optional_number("seen")), (None, Some(2.0)));
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn put_optional(&mut self, key: &str, value: Option<f64>) {
        if let Some(value) = value {
            self.put_number(key, value);
        }
    }

    /// The number kept under `key`; an error naming it if there is none.
    ///
    /// ```
    /// use kiln_runtime::train::ResumeState;
    /// let mut state = ResumeState::<f32>::new();
    /// state.put_number("lr", 0.01);
    /// assert_eq!(state.number("lr")?, 0.01);
    /// assert!(state.number("momentum").unwrap_err().to_string().contains("momentum"));
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn number(&self, key: &str) -> Result<f64> {
        self.optional_number(key).ok_or_else(|| self.missing(key))
    }

    /// The number kept under `key`, if any.
    ///
    /// ```
    /// use kiln_runtime::train::ResumeState;
    /// let mut state = ResumeState::<f32>::new();
    /// assert_eq!(state.optional_number("best"), None);
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn optional_number(&self, key: &str) -> Option<f64> {
        self.numbers.get(&self.key(key)).copied()
    }

    /// Keeps an integer exactly.
    ///
    /// ```
    /// use kiln_runtime::train::ResumeState;
    /// let mut state = ResumeState::<f32>::new();
    /// state.put_count("step", u64::MAX);
    /// assert_eq!(state.count("step")?, u64::MAX); // not rounded through a float
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn put_count(&mut self, key: &str, value: u64) {
        self.put_counts(key, &[value]);
    }

    /// The integer kept under `key`.
    ///
    /// ```
    /// use kiln_runtime::train::ResumeState;
    /// let mut state = ResumeState::<f32>::new();
    /// state.put_count("epoch", 4);
    /// assert_eq!(state.count("epoch")?, 4);
    /// assert!(state.count("batch").is_err());
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn count(&self, key: &str) -> Result<u64> {
        match self.counts(key)? {
            [value] => Ok(*value),
            _ => Err(self.missing(key)),
        }
    }

    /// [`count`](Self::count) as a `usize`.
    ///
    /// ```
    /// use kiln_runtime::train::ResumeState;
    /// let mut state = ResumeState::<f32>::new();
    /// state.put_count("patience_left", 2);
    /// let left: usize = state.size("patience_left")?;
    /// assert_eq!(left, 2);
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn size(&self, key: &str) -> Result<usize> {
        usize::try_from(self.count(key)?).map_err(|_| self.missing(key))
    }

    /// Keeps integers exactly.
    ///
    /// ```
    /// use kiln_runtime::train::ResumeState;
    /// let mut state = ResumeState::<f32>::new();
    /// state.put_counts("confusion", &[5, 1, 0, 7]);
    /// assert_eq!(state.counts("confusion")?, [5, 1, 0, 7]);
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn put_counts(&mut self, key: &str, values: &[u64]) {
        self.counts.insert(self.key(key), values.to_vec());
    }

    /// The integers kept under `key`.
    ///
    /// ```
    /// use kiln_runtime::train::ResumeState;
    /// let mut state = ResumeState::<f32>::new();
    /// state.put_counts("hits", &[1, 2]);
    /// assert_eq!(state.counts("hits")?.len(), 2);
    /// assert!(state.counts("misses").is_err());
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn counts(&self, key: &str) -> Result<&[u64]> {
        self.counts
            .get(&self.key(key))
            .map(Vec::as_slice)
            .ok_or_else(|| self.missing(key))
    }

    /// Keeps a tensor of the model's element type.
    ///
    /// ```
    /// use kiln_runtime::train::ResumeState;
    /// let mut state = ResumeState::<f32>::new();
    /// state.put_tensor("exp_avg", &[0.1, 0.2, 0.3]);
    /// assert_eq!(state.optional_tensor("exp_avg"), Some(&[0.1, 0.2, 0.3][..]));
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn put_tensor(&mut self, key: &str, values: &[T]) {
        self.tensors.insert(self.key(key), values.to_vec());
    }

    /// The tensor kept under `key`, if any.
    ///
    /// ```
    /// use kiln_runtime::train::ResumeState;
    /// let mut state = ResumeState::<f32>::new();
    /// assert_eq!(state.optional_tensor("velocity"), None); // no step taken yet
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn optional_tensor(&self, key: &str) -> Option<&[T]> {
        self.tensors.get(&self.key(key)).map(Vec::as_slice)
    }

    /// The tensor kept under `key`, which must have `len` values.
    ///
    /// ```
    /// use kiln_runtime::train::ResumeState;
    /// let mut state = ResumeState::<f32>::new();
    /// state.put_tensor("exp_avg", &[0.0; 4]);
    /// assert!(state.tensor("exp_avg", 4).is_ok());
    /// assert!(state.tensor("exp_avg", 5).is_err()); // a backup of another model
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn tensor(&self, key: &str, len: usize) -> Result<&[T]> {
        let values = self.optional_tensor(key).ok_or_else(|| self.missing(key))?;
        if values.len() != len {
            let path = self.source.as_deref().unwrap_or(Path::new("backup"));
            return Err(Error::format(
                path,
                format!(
                    "`{}` holds {} values where {len} are needed",
                    self.key(key),
                    values.len()
                ),
            ));
        }
        Ok(values)
    }

    /// Whether nothing is kept.
    ///
    /// ```
    /// use kiln_runtime::train::ResumeState;
    /// let mut state = ResumeState::<f32>::new();
    /// state.put_count("steps", 1);
    /// assert!(!state.is_empty());
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.numbers.is_empty() && self.tensors.is_empty() && self.counts.is_empty()
    }
}

/// Writes the model's tensors and `state` to `path` atomically.
pub(crate) fn write<T: Float>(
    spec: &ModelSpec,
    params: &[T],
    buffers: &[T],
    state: &ResumeState<T>,
    path: &Path,
) -> Result<()> {
    let mut owned = crate::io::encoded(spec, params, buffers);
    for (key, values) in &state.tensors {
        owned.push((
            format!("{PREFIX}{key}"),
            crate::io::dtype::<T>(),
            vec![values.len()],
            crate::io::to_bytes(values),
        ));
    }
    for (key, values) in &state.counts {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        owned.push((
            format!("{PREFIX}{key}"),
            Dtype::U64,
            vec![values.len()],
            bytes,
        ));
    }
    let views = crate::io::views(&owned, path)?;
    let mut metadata = HashMap::from([
        ("kiln_resume".to_string(), VERSION.to_string()),
        ("model".to_string(), spec.name.to_string()),
        ("dtype".to_string(), T::DTYPE.to_string()),
    ]);
    for (key, value) in &state.numbers {
        metadata.insert(
            format!("{PREFIX}{key}"),
            format!("{:016x}", value.to_bits()),
        );
    }
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::format(path, e.to_string()))?;
    crate::io::write_atomically(path, &bytes)
}

/// Reads a backup of a model described by `spec`: its tensors into `params` and
/// `buffers` (only if everything checks) and the rest as a [`ResumeState`].
pub(crate) fn read<T: Float>(
    spec: &ModelSpec,
    params: &mut [T],
    buffers: &mut [T],
    path: &Path,
) -> Result<ResumeState<T>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, &e))?;
    read_bytes(spec, params, buffers, &bytes, path)
}

/// [`read`] from the file's bytes, read already (`path` names it in errors).
pub(crate) fn read_bytes<T: Float>(
    spec: &ModelSpec,
    params: &mut [T],
    buffers: &mut [T],
    bytes: &[u8],
    path: &Path,
) -> Result<ResumeState<T>> {
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::format(path, format!("not a backup: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::format(path, format!("not a backup: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let get = |key: &str| metadata.get(key).map(String::as_str);
    if get("kiln_resume") != Some(VERSION) {
        return Err(Error::format(
            path,
            "not a training backup of this version (a model checkpoint? pass it to `load`)",
        ));
    }
    if get("model") != Some(spec.name) || get("dtype") != Some(T::DTYPE) {
        return Err(Error::Mismatch(format!(
            "{} backs up a model `{}` of {}; this run trains `{}` of {}",
            path.display(),
            get("model").unwrap_or("?"),
            get("dtype").unwrap_or("?"),
            spec.name,
            T::DTYPE
        )));
    }
    let mut state = ResumeState::new();
    state.source = Some(path.to_path_buf());
    for (key, value) in &metadata {
        let Some(key) = key.strip_prefix(PREFIX) else {
            continue;
        };
        let bits = u64::from_str_radix(value, 16)
            .map_err(|_| Error::format(path, format!("`{key}` is not a number: {value}")))?;
        state.numbers.insert(key.to_string(), f64::from_bits(bits));
    }
    for (name, view) in file.tensors() {
        let Some(key) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let data = view.data();
        match view.dtype() {
            Dtype::U64 => {
                let values = data
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect();
                state.counts.insert(key.to_string(), values);
            }
            Dtype::F32 if T::DTYPE == "F32" => {
                let values = data
                    .chunks_exact(4)
                    .map(|c| T::from_f64(f64::from(f32::from_le_bytes(c.try_into().expect("4")))))
                    .collect();
                state.tensors.insert(key.to_string(), values);
            }
            Dtype::F64 if T::DTYPE == "F64" => {
                let values = data
                    .chunks_exact(8)
                    .map(|c| T::from_f64(f64::from_le_bytes(c.try_into().expect("8"))))
                    .collect();
                state.tensors.insert(key.to_string(), values);
            }
            other => {
                return Err(Error::format(
                    path,
                    format!("`{name}` is {other:?}, not a backup's type"),
                ))
            }
        }
    }
    // The model's tensors, checked as `load` checks them, written only if all are good.
    let options = LoadOptions::new().strict(false);
    let report = crate::io::load_from(spec, params, buffers, &file, path, &options)?;
    if !report.missing.is_empty() {
        return Err(Error::StateDict {
            path: path.display().to_string(),
            problems: report
                .missing
                .iter()
                .map(|name| format!("missing tensor `{name}`"))
                .collect(),
        });
    }
    Ok(state)
}
