//! The IDX format of MNIST and Fashion-MNIST.
//!
//! A big-endian header — two zero bytes, a type byte (0x08 for unsigned bytes), the
//! number of dimensions, then each dimension as a u32 — followed by the values.

use std::path::{Path, PathBuf};

use super::{Dataset, MaybeGz};
use crate::{Error, Float, Result, Shape};

/// An IDX file of unsigned bytes.
///
/// ```
/// use kiln_runtime::data::read_idx_bytes;
/// // Two 2x2 images: the header (type 0x08, three dimensions, 2, 2, 2), then the pixels.
/// let images = [0u8, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2, 0, 255, 255, 0, 51, 51, 51, 51];
/// let array = read_idx_bytes(&images)?;
/// assert_eq!((array.dims, &array.data[..4]), (vec![2, 2, 2], &[0, 255, 255, 0][..]));
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions, outermost (the sample count) first.
    pub dims: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<u8>,
}

/// Reads an IDX file of unsigned bytes (gzip or raw).
///
/// The header bounds the read: the data the dimensions declare and one byte more are
/// read (and, for gzip, inflated), so a file holding more is an error without
/// inflating the rest.
///
/// ```
/// use kiln_runtime::data::read_idx;
/// let path = std::env::temp_dir().join("kiln-doc-labels-idx1-ubyte");
/// std::fs::write(&path, [0u8, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]).unwrap(); // three labels
/// assert_eq!(read_idx(&path)?.data, [7, 2, 1]);
/// std::fs::write(&path, [0u8, 0, 8, 1, 0, 0, 0, 3, 7, 2]).unwrap(); // one label short
/// assert!(read_idx(&path).is_err());
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    read_idx_from(MaybeGz::open(path)?, path)
}

/// [`read_idx`] of a file's bytes already in memory (gzip or raw): `include_bytes!`,
/// a download.
///
/// ```
/// use kiln_runtime::data::read_idx_bytes;
/// assert_eq!(read_idx_bytes(&[0u8, 0, 8, 1, 0, 0, 0, 1, 9])?.dims, [1]);
/// assert!(read_idx_bytes(b"not an idx file").is_err());
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
pub fn read_idx_bytes(bytes: &[u8]) -> Result<IdxArray> {
    let name = Path::new(super::IN_MEMORY);
    read_idx_from(MaybeGz::new(name, bytes)?, name)
}

fn read_idx_from(mut file: MaybeGz<'_>, path: &Path) -> Result<IdxArray> {
    let head = file.read_up_to(4)?;
    if head.len() < 4 {
        return Err(Error::format(
            path,
            format!("{} bytes is too short for an IDX header", head.len()),
        ));
    }
    if head[0] != 0 || head[1] != 0 {
        return Err(Error::format(
            path,
            format!(
                "bad magic number {:02x}{:02x}{:02x}{:02x}: not an IDX file",
                head[0], head[1], head[2], head[3]
            ),
        ));
    }
    if head[2] != 0x08 {
        return Err(Error::format(
            path,
            format!(
                "element type 0x{:02x} is not supported; expected 0x08 (unsigned byte)",
                head[2]
            ),
        ));
    }
    let rank = head[3] as usize;
    if rank == 0 {
        return Err(Error::format(path, "the header declares zero dimensions"));
    }
    let header = 4 + 4 * rank;
    let dim_bytes = file.read_up_to(4 * rank as u64)?;
    if dim_bytes.len() < 4 * rank {
        return Err(Error::format(
            path,
            format!(
                "truncated header: {rank} dimensions need {header} bytes, the file has {}",
                4 + dim_bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = dim_bytes
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let Some(expected) = expected else {
        return Err(Error::format(path, format!("dimensions {dims:?} overflow")));
    };
    // One byte past the declared data tells trailing data from an exact fit.
    let data = file.read_up_to((expected as u64).saturating_add(1))?;
    let actual = data.len();
    if actual != expected {
        let (what, actual) = if actual < expected {
            ("truncated", format!("the file has {actual}"))
        } else {
            ("trailing data", "the file has more".to_string())
        };
        return Err(Error::format(
            path,
            format!("{what}: dimensions {dims:?} need {expected} bytes of data, {actual}"),
        ));
    }
    Ok(IdxArray { dims, data })
}

/// Reads an IDX image file and its label file into a dataset, scaling pixels by
/// `scale` (`1.0 / 255.0` maps them to `[0, 1]`).
///
/// Fails if either file is malformed, if the counts disagree, if a sample does not
/// have the `S::SIZE` values the model expects, or if a label is not below `classes`.
///
/// ```
/// use kiln_runtime::data::read_idx_dataset;
/// use kiln_runtime::Shape2;
/// let dir = std::env::temp_dir();
/// let (image_path, label_path) = (dir.join("kiln-doc-images"), dir.join("kiln-doc-labels"));
/// // Two 2x2 images (header: type 0x08, three dimensions, 2, 2, 2) and their labels.
/// let images = [0u8, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2, 0, 255, 255, 0, 51, 51, 51, 51];
/// std::fs::write(&image_path, images).unwrap();
/// std::fs::write(&label_path, [0u8, 0, 8, 1, 0, 0, 0, 2, 1, 0]).unwrap();
/// let ds = read_idx_dataset::<f32, Shape2<2, 2>>(&image_path, &label_path, 1.0 / 255.0, 2)?;
/// assert_eq!((ds.targets(), ds.features().as_slice()[1]), (&[1, 0][..], 1.0));
/// assert!((ds.features().as_slice()[4] - 0.2).abs() < 1e-7);
/// // A label of 1 is not below one class.
/// assert!(read_idx_dataset::<f32, Shape2<2, 2>>(&image_path, &label_path, 1.0 / 255.0, 1).is_err());
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
pub fn read_idx_dataset<T: Float, S: Shape>(
    images: &Path,
    labels: &Path,
    scale: f64,
    classes: usize,
) -> Result<Dataset<T, S, usize>> {
    // Every byte times the scale must be finite in the element type, as the data set
    // accepts nothing else.
    if !(T::from_f64(255.0) * T::from_f64(scale)).is_finite() {
        return Err(Error::InvalidHyperParameter {
            name: "scale",
            value: scale,
            reason: "must keep 255 * scale finite in the element type",
        });
    }
    let x = read_idx(images)?;
    let y = read_idx(labels)?;
    if y.dims.len() != 1 {
        return Err(Error::format(
            labels,
            format!("a label file has one dimension, this one has {:?}", y.dims),
        ));
    }
    if x.dims[0] != y.dims[0] {
        return Err(Error::Mismatch(format!(
            "{} holds {} images but {} holds {} labels",
            images.display(),
            x.dims[0],
            labels.display(),
            y.dims[0]
        )));
    }
    let per_sample: usize = x.dims[1..].iter().product();
    if per_sample != S::SIZE {
        return Err(Error::Mismatch(format!(
            "{}: samples of shape {:?} have {per_sample} values, the model's input {:?} needs {}",
            images.display(),
            &x.dims[1..],
            S::DIMS,
            S::SIZE
        )));
    }
    if let Some(index) = y.data.iter().position(|&l| l as usize >= classes) {
        return Err(Error::format(
            labels,
            format!(
                "label {} at index {index} is not below {classes}",
                y.data[index]
            ),
        ));
    }
    let scale = T::from_f64(scale);
    let features = x
        .data
        .iter()
        .map(|&p| T::from_f64(f64::from(p)) * scale)
        .collect();
    let targets = y.data.iter().map(|&l| l as usize).collect();
    Dataset::new(features, targets, Some(classes))
}

/// A training set and a test set.
///
/// ```
/// use kiln_runtime::data::{read_mnist, TrainTest};
/// use kiln_runtime::Shape3;
/// fn load(dir: &std::path::Path) -> kiln_runtime::Result<TrainTest<f32, Shape3<1, 28, 28>>> {
///     read_mnist(dir)
/// }
/// assert!(load(std::path::Path::new("/no/such/dir")).is_err());
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
pub type TrainTest<T, S> = (Dataset<T, S, usize>, Dataset<T, S, usize>);

/// MNIST (or Fashion-MNIST) from a directory holding the four standard files, each
/// gzip or raw: `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`,
/// `t10k-images-idx3-ubyte[.gz]`, `t10k-labels-idx1-ubyte[.gz]`. Pixels are scaled
/// to `[0, 1]`. Returns `(train, test)`.
///
/// ```
/// use kiln_runtime::data::read_mnist;
/// use kiln_runtime::{Error, Shape3};
/// // KILN_MNIST_DIR names a directory with the four files; without it, the error names
/// // the file that is missing.
/// match std::env::var_os("KILN_MNIST_DIR") {
///     Some(dir) => {
///         let (train, test) = read_mnist::<f32, Shape3<1, 28, 28>>(dir.as_ref())?;
///         assert_eq!((train.len(), test.len()), (60_000, 10_000));
///     }
///     None => {
///         let err = read_mnist::<f32, Shape3<1, 28, 28>>("/no/such/dir".as_ref()).unwrap_err();
///         assert!(matches!(err, Error::Io { path, .. } if path.contains("train-images-idx3-ubyte")));
///     }
/// }
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
pub fn read_mnist<T: Float, S: Shape>(dir: &Path) -> Result<TrainTest<T, S>> {
    let find = |stem: &str| -> Result<PathBuf> {
        for name in [format!("{stem}.gz"), stem.to_string()] {
            let path = dir.join(name);
            if path.is_file() {
                return Ok(path);
            }
        }
        Err(Error::Io {
            path: dir.join(stem).display().to_string(),
            message: "not found (looked for the file with and without .gz)".to_string(),
        })
    };
    let train = read_idx_dataset(
        &find("train-images-idx3-ubyte")?,
        &find("train-labels-idx1-ubyte")?,
        1.0 / 255.0,
        10,
    )?;
    let test = read_idx_dataset(
        &find("t10k-images-idx3-ubyte")?,
        &find("t10k-labels-idx1-ubyte")?,
        1.0 / 255.0,
        10,
    )?;
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::Shape1;

    fn idx(magic_type: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, magic_type, dims.len() as u8];
        for d in dims {
            out.extend(d.to_be_bytes());
        }
        out.extend(data);
        out
    }

    fn write(dir: &Path, name: &str, bytes: &[u8], gzip: bool) -> PathBuf {
        let path = dir.join(name);
        let mut file = std::fs::File::create(&path).unwrap();
        if gzip {
            let mut enc = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
            enc.write_all(bytes).unwrap();
            enc.finish().unwrap();
        } else {
            file.write_all(bytes).unwrap();
        }
        path
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-idx-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reads_raw_and_gzip() {
        let dir = tempdir("ok");
        let images = idx(8, &[3, 2, 2], &[0, 255, 0, 0, 1, 2, 3, 4, 9, 9, 9, 9]);
        let labels = idx(8, &[3], &[7, 0, 9]);
        for gzip in [false, true] {
            let xi = write(&dir, "x", &images, gzip);
            let yi = write(&dir, "y", &labels, gzip);
            let read = read_idx_dataset::<f32, Shape1<4>>(&xi, &yi, 1.0 / 255.0, 10);
            if gzip && !cfg!(feature = "gzip") {
                let err = read.unwrap_err().to_string();
                assert!(err.contains("without its `gzip` feature"), "{err}");
                continue;
            }
            let ds = read.unwrap();
            assert_eq!(ds.len(), 3);
            assert_eq!(ds.targets(), &[7, 0, 9]);
            assert_eq!(&ds.features().as_slice()[..2], &[0.0, 1.0]);
        }
        // A scale that makes a byte infinite as an f32 is refused before reading.
        let xi = write(&dir, "x", &images, false);
        let yi = write(&dir, "y", &labels, false);
        let err = read_idx_dataset::<f32, Shape1<4>>(&xi, &yi, 1e37, 10).unwrap_err();
        assert!(err.to_string().contains("scale"), "{err}");
        assert!(read_idx_dataset::<f64, Shape1<4>>(&xi, &yi, 1e37, 10).is_ok());
        // The same bytes from memory.
        let array = read_idx_bytes(&images).unwrap();
        assert_eq!((array.dims, array.data.len()), (vec![3, 2, 2], 12));
    }

    #[cfg(feature = "gzip")]
    #[test]
    fn reads_gzip_of_several_members() {
        // `cat a.gz b.gz`, as some tools write large files: one stream of both.
        let dir = tempdir("members");
        let bytes = idx(8, &[4], &[1, 2, 3, 4]);
        let mut joined = Vec::new();
        for part in [&bytes[..6], &bytes[6..]] {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(part).unwrap();
            joined.extend(enc.finish().unwrap());
        }
        let path = write(&dir, "joined", &joined, false);
        let array = read_idx(&path).unwrap();
        assert_eq!(array.data, [1, 2, 3, 4]);
    }

    #[cfg(feature = "gzip")]
    #[test]
    fn a_gzip_holding_more_than_its_header_declares_stops_at_the_header_size() {
        // 16 declared bytes followed by 64 MiB of zeros, well under 1 MiB of gzip, its
        // end cut off: a reader that inflated it all would fail there ("corrupt gzip
        // data"); one bounded by the header sees the trailing data first.
        let dir = tempdir("bomb");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&idx(8, &[16], &[1; 16])).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            enc.write_all(&zeros).unwrap();
        }
        let compressed = enc.finish().unwrap();
        assert!(compressed.len() < 1 << 20);
        let path = write(&dir, "bomb.gz", &compressed[..compressed.len() - 64], false);
        let err = read_idx(&path).unwrap_err().to_string();
        assert!(err.contains("trailing data"), "{err}");
    }

    #[test]
    fn malformed_files_are_typed_errors() {
        let dir = tempdir("bad");
        let labels = write(&dir, "labels", &idx(8, &[2], &[1, 2]), false);
        let cases: [(&str, Vec<u8>, &str); 5] = [
            ("magic", vec![1, 2, 3, 4, 5, 6, 7, 8], "bad magic number"),
            ("type", idx(0x0d, &[2, 2], &[0; 8]), "element type 0x0d"),
            ("truncated", idx(8, &[2, 2], &[0; 3]), "truncated"),
            ("trailing", idx(8, &[2, 2], &[0; 5]), "trailing data"),
            ("header", vec![0, 0, 8, 3, 0, 0], "truncated header"),
        ];
        for (name, bytes, expected) in cases {
            let path = write(&dir, name, &bytes, false);
            let err = read_idx_dataset::<f32, Shape1<2>>(&path, &labels, 1.0, 10).unwrap_err();
            assert!(matches!(err, Error::Format { .. }), "{name}: {err}");
            assert!(err.to_string().contains(expected), "{name}: {err}");
            assert!(
                err.to_string().contains(name),
                "the message names the file: {err}"
            );
        }
        let images = write(&dir, "three", &idx(8, &[3, 2], &[0; 6]), false);
        let err = read_idx_dataset::<f32, Shape1<2>>(&images, &labels, 1.0, 10).unwrap_err();
        assert!(err.to_string().contains("3 images but"), "{err}");
        let images = write(&dir, "two", &idx(8, &[2, 2], &[0; 4]), false);
        let err = read_idx_dataset::<f32, Shape1<3>>(&images, &labels, 1.0, 10).unwrap_err();
        assert!(err.to_string().contains("needs 3"), "{err}");
        let err = read_idx_dataset::<f32, Shape1<2>>(&images, &labels, 1.0, 2).unwrap_err();
        assert!(err.to_string().contains("label 2 at index 1"), "{err}");
        let err = read_idx(&dir.join("missing")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }));
        let corrupt = write(&dir, "corrupt", &[0x1f, 0x8b, 8, 0, 1, 2, 3], false);
        let expected = if cfg!(feature = "gzip") {
            "corrupt gzip"
        } else {
            "without its `gzip` feature"
        };
        assert!(read_idx(&corrupt)
            .unwrap_err()
            .to_string()
            .contains(expected));
    }
}
