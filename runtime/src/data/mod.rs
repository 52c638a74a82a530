//! Datasets: typed samples in memory, readers for IDX (MNIST, Fashion-MNIST) and CSV
//! files, normalisation, splits and shuffled minibatches.
//!
//! A [`Dataset<T, S, Y>`] holds `n` samples of shape `S` in one buffer and their targets
//! (`Y = usize` class labels, or `Y = T` values) in another. [`Batches`] walks a seeded
//! permutation of the samples and gathers each minibatch into a buffer it reuses, so an
//! epoch copies each sample once into a batch and never the whole set.
//!
//! Readers detect gzip by its magic bytes, so `.gz` and raw files both work. A malformed
//! file is an [`Error::Format`] naming the file and what is wrong.

mod csv;
mod dataset;
mod idx;

pub use csv::{read_csv, LabelColumn};
pub(crate) use dataset::argmax;
pub use dataset::{Batches, Dataset, Standardizer, Target};
pub use idx::{read_idx, read_idx_dataset, read_mnist, IdxArray, TrainTest};

use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// Reads a whole file, decompressing it if it is gzip.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, &e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::format(path, format!("corrupt gzip data: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}
