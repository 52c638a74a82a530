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
//!
//! ```
//! use kiln::data::{read_csv_bytes, CsvOptions, LabelColumn};
//! use kiln::Shape1;
//! let csv = b"pixel_a,pixel_b,digit\n0,16,1\n16,0,0\n8,8,1\n4,12,0\n";
//! let digits = read_csv_bytes::<f32, Shape1<2>>(csv, &CsvOptions::new(LabelColumn::Last, 2).scale(1.0 / 16.0))?;
//! let (train, test) = digits.split(0.25, 1);
//! assert_eq!((train.len(), test.len()), (3, 1));
//! let mut batches = train.batches(2, Some(0));
//! while let Some((x, labels)) = batches.next_batch() {
//!     assert_eq!(x.batch(), labels.len());
//! }
//! # Ok::<(), kiln::Error>(())
//! ```

mod csv;
mod dataset;
mod idx;

pub use self::csv::{read_csv, read_csv_bytes, read_csv_with, CsvOptions, Header, LabelColumn};
pub(crate) use dataset::argmax;
pub use dataset::{BatchPart, Batches, Dataset, Standardizer, Target};
pub use idx::{read_idx, read_idx_bytes, read_idx_dataset, read_mnist, IdxArray, TrainTest};

use std::path::Path;

use crate::{Error, Result};

/// Reads a whole file, decompressing it if it is gzip (with the `gzip` feature; without
/// it, a gzip file is an error that says so). At most `limit` bytes are inflated: a
/// file that decompresses to more is an error as soon as the limit is passed, before
/// the rest is inflated (a small file can expand a thousandfold).
///
/// ```
/// use kiln_runtime::data::read_maybe_gz;
/// let path = std::env::temp_dir().join("kiln-doc-maybe-gz.txt");
/// std::fs::write(&path, "0123456789").unwrap();
/// assert_eq!(read_maybe_gz(&path, 1 << 20)?, b"0123456789");
/// assert!(read_maybe_gz(&path, 4).is_err()); // more than the limit
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
pub fn read_maybe_gz(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, &e))?;
    MaybeGz::new(path, std::io::BufReader::new(file))?.read_all(limit)
}

/// A file's bytes, inflated on the way if the file is gzip; `path` names it in errors.
pub(crate) struct MaybeGz<'p> {
    path: &'p Path,
    reader: Box<dyn std::io::Read + 'p>,
    gzip: bool,
}

impl<'p> MaybeGz<'p> {
    /// Opens `path`, detecting gzip by its magic bytes.
    pub(crate) fn open(path: &'p Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, &e))?;
        Self::new(path, std::io::BufReader::new(file))
    }

    /// Reads `source` (bytes in memory, a file), detecting gzip by its magic bytes;
    /// errors name `path`.
    pub(crate) fn new(path: &'p Path, mut source: impl std::io::BufRead + 'p) -> Result<Self> {
        let head = source.fill_buf().map_err(|e| Error::io(path, &e))?;
        let gzip = head.starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn std::io::Read + 'p> = if gzip {
            gunzip(path, source)?
        } else {
            Box::new(source)
        };
        Ok(Self { path, reader, gzip })
    }

    /// Everything, up to `limit` bytes; more is an error as soon as the limit is passed.
    pub(crate) fn read_all(&mut self, limit: u64) -> Result<Vec<u8>> {
        let bytes = self.read_up_to(limit.saturating_add(1))?;
        if bytes.len() as u64 > limit {
            return Err(Error::format(
                self.path,
                format!("holds more than {limit} bytes (decompressed), the limit of this read"),
            ));
        }
        Ok(bytes)
    }

    /// The next bytes, up to `n` (fewer only at the end of the data); grows its buffer
    /// with the data read, never to `n` up front.
    pub(crate) fn read_up_to(&mut self, n: u64) -> Result<Vec<u8>> {
        use std::io::Read;
        let mut out = Vec::new();
        (&mut self.reader)
            .take(n)
            .read_to_end(&mut out)
            .map_err(|e| {
                if self.gzip {
                    Error::format(self.path, format!("corrupt gzip data: {e}"))
                } else {
                    Error::io(self.path, &e)
                }
            })?;
        Ok(out)
    }
}

/// The name errors give to data read from memory.
pub(crate) const IN_MEMORY: &str = "<bytes in memory>";

#[cfg(feature = "gzip")]
fn gunzip<'a>(_: &Path, file: impl std::io::BufRead + 'a) -> Result<Box<dyn std::io::Read + 'a>> {
    Ok(Box::new(flate2::bufread::MultiGzDecoder::new(file)))
}

#[cfg(not(feature = "gzip"))]
fn gunzip<'a>(path: &Path, _: impl std::io::BufRead + 'a) -> Result<Box<dyn std::io::Read + 'a>> {
    Err(Error::format(
        path,
        "gzip-compressed, and kiln was built without its `gzip` feature: enable it or \
         decompress the file",
    ))
}
