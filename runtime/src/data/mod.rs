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

use std::path::Path;

use crate::{Error, Result};

/// Reads a whole file, decompressing it if it is gzip (with the `gzip` feature; without
/// it, a gzip file is an error that says so).
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, &e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        gunzip(path, &raw)
    } else {
        Ok(raw)
    }
}

#[cfg(feature = "gzip")]
fn gunzip(path: &Path, raw: &[u8]) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(raw)
        .read_to_end(&mut out)
        .map_err(|e| Error::format(path, format!("corrupt gzip data: {e}")))?;
    Ok(out)
}

#[cfg(not(feature = "gzip"))]
fn gunzip(path: &Path, _: &[u8]) -> Result<Vec<u8>> {
    Err(Error::format(
        path,
        "gzip-compressed, and kiln was built without its `gzip` feature: enable it or \
         decompress the file",
    ))
}
