//! Numeric CSV files with a label column, such as the UCI optical digits, read with
//! the `csv` crate (quoting, a byte-order mark, `\r\n` line ends).

use std::path::Path;

use super::{read_maybe_gz, Dataset};
use crate::{Error, Float, Result, Shape};

/// Where the class label is in each row.
///
/// ```
/// use kiln_runtime::data::{read_csv_bytes, CsvOptions, Header, LabelColumn};
/// use kiln_runtime::Shape1;
/// let first = CsvOptions::new(LabelColumn::First, 3);
/// let ds = read_csv_bytes::<f32, Shape1<2>>(b"2,0.5,1.5\n0,1,2\n", &first)?;
/// assert_eq!((ds.targets(), ds.features().as_slice()), (&[2, 0][..], &[0.5, 1.5, 1.0, 2.0][..]));
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelColumn {
    /// The first column.
    First,
    /// The last column.
    Last,
}

/// Whether a CSV's first row names its columns.
///
/// ```
/// use kiln_runtime::data::{read_csv_bytes, CsvOptions, Header, LabelColumn};
/// use kiln_runtime::Shape1;
/// let options = CsvOptions::new(LabelColumn::Last, 2);
/// // Detected: a row of names is a header, a row of numbers is data.
/// assert_eq!(read_csv_bytes::<f32, Shape1<1>>(b"x,label\n3,1\n", &options)?.len(), 1);
/// assert_eq!(read_csv_bytes::<f32, Shape1<1>>(b"4,0\n3,1\n", &options)?.len(), 2);
/// // Present: the first row is skipped, whatever it holds.
/// let present = options.header(Header::Present);
/// assert_eq!(read_csv_bytes::<f32, Shape1<1>>(b"4,0\n3,1\n", &present)?.len(), 1);
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The first row is a header, skipped whatever it holds.
    Present,
    /// Every row is data: a first row that does not parse is an error.
    Absent,
    /// The first row is a header if none of its cells is a number, data if all are;
    /// a mix (a data row with a malformed cell) is an error, as on any other row.
    Detect,
}

/// How [`read_csv_with`] reads a file.
///
/// ```
/// use kiln_runtime::data::{read_csv_bytes, CsvOptions, Header, LabelColumn};
/// use kiln_runtime::Shape1;
/// // The UCI digits: 64 pixels in 0..=16, then the digit.
/// let options = CsvOptions::new(LabelColumn::Last, 10)
///     .scale(1.0 / 16.0)
///     .header(Header::Absent)
///     .allow_non_finite(false)
///     .max_bytes(1 << 20);
/// let row = [vec!["16"; 64], vec!["7"]].concat().join(",");
/// let ds = read_csv_bytes::<f32, Shape1<64>>(row.as_bytes(), &options)?;
/// assert_eq!((ds.features().as_slice()[0], ds.targets()[0]), (1.0, 7));
/// assert!(read_csv_bytes::<f32, Shape1<64>>(row.as_bytes(), &options.max_bytes(10)).is_err());
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CsvOptions {
    /// Where the label is.
    pub label: LabelColumn,
    /// Classes: every label must be below this.
    pub classes: usize,
    /// Each feature is multiplied by this (`1.0 / 16.0` maps the UCI digits' 0..=16
    /// to `[0, 1]`).
    pub scale: f64,
    /// Whether the first row is a header.
    pub header: Header,
    /// Whether NaN and infinite features are accepted (they are refused by default:
    /// one would poison training).
    pub allow_non_finite: bool,
    /// The most bytes the file may hold, decompressed: a larger file (or a gzip that
    /// inflates past it) is an error before the rest is read. 1 GiB by default.
    pub max_bytes: u64,
}

impl CsvOptions {
    /// Labels in `label`, below `classes`; features unscaled, the header detected,
    /// non-finite features refused, at most 1 GiB.
    ///
    /// ```
    /// use kiln_runtime::data::{read_csv_bytes, CsvOptions, Header, LabelColumn};
    /// use kiln_runtime::Shape1;
    /// let options = CsvOptions::new(LabelColumn::First, 10);
    /// assert_eq!((options.scale, options.header, options.max_bytes), (1.0, Header::Detect, 1 << 30));
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn new(label: LabelColumn, classes: usize) -> Self {
        Self {
            label,
            classes,
            scale: 1.0,
            header: Header::Detect,
            allow_non_finite: false,
            max_bytes: 1 << 30,
        }
    }

    /// Features multiplied by `scale`.
    ///
    /// ```
    /// use kiln_runtime::data::{read_csv_bytes, CsvOptions, Header, LabelColumn};
    /// use kiln_runtime::Shape1;
    /// let ds = read_csv_bytes::<f32, Shape1<2>>(b"8,16,1\n", &CsvOptions::new(LabelColumn::Last, 2).scale(1.0 / 16.0))?;
    /// assert_eq!(ds.features().as_slice(), [0.5, 1.0]);
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn scale(self, scale: f64) -> Self {
        Self { scale, ..self }
    }

    /// Whether the first row is a header.
    ///
    /// ```
    /// use kiln_runtime::data::{read_csv_bytes, CsvOptions, Header, LabelColumn};
    /// use kiln_runtime::Shape1;
    /// // A first row of numbers is data unless the file says it is a header.
    /// let options = CsvOptions::new(LabelColumn::Last, 2).header(Header::Present);
    /// assert_eq!(read_csv_bytes::<f32, Shape1<1>>(b"1,0\n2,1\n", &options)?.len(), 1);
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn header(self, header: Header) -> Self {
        Self { header, ..self }
    }

    /// Accept NaN and infinite features.
    ///
    /// ```
    /// use kiln_runtime::data::{read_csv_bytes, CsvOptions, Header, LabelColumn};
    /// use kiln_runtime::Shape1;
    /// let options = CsvOptions::new(LabelColumn::Last, 2).header(Header::Absent);
    /// assert!(read_csv_bytes::<f64, Shape1<1>>(b"NaN,1\n", &options).is_err());
    /// let ds = read_csv_bytes::<f64, Shape1<1>>(b"NaN,1\n", &options.allow_non_finite(true))?;
    /// assert!(ds.features().as_slice()[0].is_nan());
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn allow_non_finite(self, allow: bool) -> Self {
        Self {
            allow_non_finite: allow,
            ..self
        }
    }

    /// At most `bytes` of (decompressed) file.
    ///
    /// ```
    /// use kiln_runtime::data::{read_csv_bytes, CsvOptions, Header, LabelColumn};
    /// use kiln_runtime::Shape1;
    /// let options = CsvOptions::new(LabelColumn::Last, 2).max_bytes(8);
    /// assert!(read_csv_bytes::<f32, Shape1<1>>(b"1,0\n2,1\n3,0\n", &options).is_err()); // 12 bytes
    /// # Ok::<(), kiln_runtime::Error>(())
    /// ```
    pub fn max_bytes(self, bytes: u64) -> Self {
        Self {
            max_bytes: bytes,
            ..self
        }
    }
}

/// Reads a CSV of numbers (gzip or raw) whose rows are `S::SIZE` features and one
/// integer label in `0..classes`, scaling features by `scale`: [`read_csv_with`] and
/// [`CsvOptions::new`], the header detected.
///
/// ```
/// use kiln_runtime::data::{read_csv, LabelColumn};
/// use kiln_runtime::Shape1;
/// let path = std::env::temp_dir().join("kiln-doc-read-csv.csv");
/// std::fs::write(&path, "a,b,label\n1,2,0\n3,4,1\n").unwrap();
/// let ds = read_csv::<f32, Shape1<2>>(&path, LabelColumn::Last, 0.5, 2)?;
/// assert_eq!(ds.features().as_slice(), [0.5, 1.0, 1.5, 2.0]);
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
pub fn read_csv<T: Float, S: Shape>(
    path: &Path,
    label: LabelColumn,
    scale: f64,
    classes: usize,
) -> Result<Dataset<T, S, usize>> {
    read_csv_with(path, &CsvOptions::new(label, classes).scale(scale))
}

/// Reads a CSV of numbers (gzip or raw) whose rows are `S::SIZE` features and one
/// integer label, as `options` say. Blank lines are ignored; cells may be quoted and
/// padded with spaces.
///
/// Every malformed row is an error naming the file, the line and the problem: a wrong
/// number of columns, a cell that is not a number, a label that is not a class index
/// below `classes`, a NaN or infinite feature (unless allowed), a file larger than
/// `max_bytes`, or no data rows at all.
///
/// ```
/// use kiln_runtime::data::{read_csv_with, CsvOptions, LabelColumn};
/// use kiln_runtime::{Error, Shape1};
/// let path = std::env::temp_dir().join("kiln-doc-read-csv-with.csv");
/// std::fs::write(&path, "1,2,0\n3,x,1\n").unwrap();
/// let err = read_csv_with::<f32, Shape1<2>>(&path, &CsvOptions::new(LabelColumn::Last, 2));
/// assert!(matches!(err, Err(Error::Format { .. }))); // names line 2 and the cell "x"
/// ```
pub fn read_csv_with<T: Float, S: Shape>(
    path: &Path,
    options: &CsvOptions,
) -> Result<Dataset<T, S, usize>> {
    let bytes = read_maybe_gz(path, options.max_bytes)?;
    parse::<T, S>(&bytes, path, options)
}

/// [`read_csv_with`] of a file's bytes already in memory (gzip or raw).
///
/// ```
/// use kiln_runtime::data::{read_csv_bytes, CsvOptions, Header, LabelColumn};
/// use kiln_runtime::Shape1;
/// let ds = read_csv_bytes::<f32, Shape1<2>>(b"1,2,1\n", &CsvOptions::new(LabelColumn::Last, 2))?;
/// assert_eq!(ds.classes(), Some(2));
/// # Ok::<(), kiln_runtime::Error>(())
/// ```
pub fn read_csv_bytes<T: Float, S: Shape>(
    bytes: &[u8],
    options: &CsvOptions,
) -> Result<Dataset<T, S, usize>> {
    let path = Path::new(super::IN_MEMORY);
    let bytes = super::MaybeGz::new(path, bytes)?.read_all(options.max_bytes)?;
    parse::<T, S>(&bytes, path, options)
}

fn parse<T: Float, S: Shape>(
    bytes: &[u8],
    path: &Path,
    options: &CsvOptions,
) -> Result<Dataset<T, S, usize>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let scale = T::from_f64(options.scale);
    let columns = S::SIZE + 1;
    let (mut features, mut targets) = (Vec::new(), Vec::new());
    let mut record = csv::StringRecord::new();
    let mut first = true;
    loop {
        let more = reader.read_record(&mut record).map_err(|e| {
            let line = e
                .position()
                .map_or(String::new(), |p| format!("line {}: ", p.line()));
            Error::format(path, format!("{line}{e}"))
        })?;
        if !more {
            break;
        }
        let line_no = record.position().map_or(0, |p| p.line());
        if record.iter().all(str::is_empty) {
            continue; // a blank line
        }
        if std::mem::take(&mut first) && is_header(&record, options.header) {
            continue;
        }
        if record.len() != columns {
            return Err(Error::format(
                path,
                format!(
                    "line {line_no}: {} columns, expected {columns} ({} features and a label)",
                    record.len(),
                    S::SIZE
                ),
            ));
        }
        let (label_cell, feature_cells) = match options.label {
            LabelColumn::First => (&record[0], 1..columns),
            LabelColumn::Last => (&record[columns - 1], 0..columns - 1),
        };
        let class: usize = label_cell.parse().map_err(|_| {
            Error::format(
                path,
                format!("line {line_no}: label {label_cell:?} is not a class index"),
            )
        })?;
        if class >= options.classes {
            return Err(Error::format(
                path,
                format!(
                    "line {line_no}: label {class} is not below {}",
                    options.classes
                ),
            ));
        }
        for cell in feature_cells.map(|i| &record[i]) {
            let v: f64 = cell.parse().map_err(|_| {
                Error::format(path, format!("line {line_no}: {cell:?} is not a number"))
            })?;
            // Finite in the element type after scaling: 1e39 is a finite f64 but an
            // infinite f32.
            let value = T::from_f64(v) * scale;
            if !value.is_finite() && !options.allow_non_finite {
                return Err(Error::format(
                    path,
                    format!(
                        "line {line_no}: feature {cell:?} is not finite as {} after scaling \
                         (allow it with `CsvOptions::allow_non_finite`)",
                        T::DTYPE
                    ),
                ));
            }
            features.push(value);
        }
        targets.push(class);
    }
    if targets.is_empty() {
        return Err(Error::format(path, "no data rows"));
    }
    Dataset::new(features, targets, Some(options.classes))
}

/// Whether a first row is a header under `rule`.
fn is_header(record: &csv::StringRecord, rule: Header) -> bool {
    match rule {
        Header::Present => true,
        Header::Absent => false,
        Header::Detect => record.iter().all(|cell| cell.parse::<f64>().is_err()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Shape1;

    fn file(name: &str, text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("kiln-csv-{name}-{}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn reads_rows_with_header_and_label_positions() {
        let path = file("ok", "a,b,label\n1,2,0\n\n3,4,1\n");
        let ds = read_csv::<f64, Shape1<2>>(&path, LabelColumn::Last, 0.5, 2).unwrap();
        assert_eq!(ds.features().as_slice(), &[0.5, 1.0, 1.5, 2.0]);
        assert_eq!(ds.targets(), &[0, 1]);
        let path = file("first", "1,2,3\n0,4,5\n");
        let ds = read_csv::<f64, Shape1<2>>(&path, LabelColumn::First, 1.0, 2).unwrap();
        assert_eq!(ds.targets(), &[1, 0]);
    }

    #[test]
    fn a_byte_order_mark_does_not_hide_the_first_row() {
        let path = file("bom", "\u{feff}1,2,0\n3,4,1\n");
        let ds = read_csv::<f64, Shape1<2>>(&path, LabelColumn::Last, 1.0, 2).unwrap();
        assert_eq!(ds.targets(), &[0, 1]);
        let path = file("bom_header", "\u{feff}a,b,label\n3,4,1\n");
        let ds = read_csv::<f64, Shape1<2>>(&path, LabelColumn::Last, 1.0, 2).unwrap();
        assert_eq!(ds.targets(), &[1]);
    }

    #[test]
    fn quoted_cells_crlf_and_explicit_headers() {
        let path = file(
            "quoted",
            "\"a\",\"b\",\"label\"\r\n\" 1\", 2 ,0\r\n3,4,\"1\"\r\n",
        );
        let ds = read_csv::<f64, Shape1<2>>(&path, LabelColumn::Last, 1.0, 2).unwrap();
        assert_eq!(ds.features().as_slice(), &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(ds.targets(), &[0, 1]);
        // A numeric header row (column numbers) is only skipped when said so.
        let path = file("numeric_header", "0,1,2\n5,6,1\n");
        let options = CsvOptions::new(LabelColumn::Last, 2);
        let ds: Dataset<f64, Shape1<2>, usize> =
            read_csv_with(&path, &options.header(Header::Present)).unwrap();
        assert_eq!(ds.targets(), &[1]);
        let err =
            read_csv_with::<f64, Shape1<2>>(&path, &options.header(Header::Absent)).unwrap_err();
        assert!(err.to_string().contains("label 2 is not below 2"), "{err}");
        let path = file("word_header", "a,b,label\n5,6,1\n");
        let err =
            read_csv_with::<f64, Shape1<2>>(&path, &options.header(Header::Absent)).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        // Non-finite features when allowed.
        let path = file("nan_allowed", "NaN,2,0\n");
        let ds: Dataset<f64, Shape1<2>, usize> =
            read_csv_with(&path, &options.allow_non_finite(true)).unwrap();
        assert!(ds.features().as_slice()[0].is_nan());
    }

    #[cfg(feature = "gzip")]
    #[test]
    fn a_file_over_the_limit_is_refused_before_it_is_inflated() {
        use std::io::Write;
        // 64 MiB of rows compress to well under 1 MiB. The stream's end is cut off: a
        // reader that inflated it all would fail there ("corrupt gzip data"); one that
        // stops at the limit never reaches it.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let row = b"1,2,0\n";
        for _ in 0..(64 << 20) / row.len() {
            gz.write_all(row).unwrap();
        }
        let compressed = gz.finish().unwrap();
        assert!(compressed.len() < 1 << 20);
        let path = std::env::temp_dir().join(format!("kiln-csv-bomb-{}.gz", std::process::id()));
        std::fs::write(&path, &compressed[..compressed.len() - 64]).unwrap();
        let options = CsvOptions::new(LabelColumn::Last, 2).max_bytes(1 << 20);
        let err = read_csv_with::<f32, Shape1<2>>(&path, &options).unwrap_err();
        assert!(err.to_string().contains("more than 1048576 bytes"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn malformed_rows_name_the_line() {
        for (name, text, expected) in [
            ("columns", "1,2,0\n1,2\n", "line 2: 2 columns"),
            ("label", "1,2,0\n1,2,x\n", "line 2: label \"x\""),
            ("range", "1,2,7\n", "label 7 is not below 2"),
            ("number", "1,2,0\n1,y,0\n", "line 2: \"y\" is not a number"),
            ("empty", "\n", "no data rows"),
            // One malformed cell in the first row is an error, as on row 2, not a
            // header that silently drops the row.
            (
                "first_row",
                "1,y,0\n1,2,0\n",
                "line 1: \"y\" is not a number",
            ),
            (
                "nan",
                "1,2,0\nNaN,2,1\n",
                "line 2: feature \"NaN\" is not finite",
            ),
            ("inf", "inf,2,0\n", "line 1: feature \"inf\" is not finite"),
            // Finite as an f64, infinite as the f32 the data set holds (found by the
            // CSV fuzz target).
            (
                "f32_overflow",
                "1e39,2,0\n",
                "line 1: feature \"1e39\" is not finite as F32",
            ),
        ] {
            let path = file(name, text);
            let err = read_csv::<f32, Shape1<2>>(&path, LabelColumn::Last, 1.0, 2).unwrap_err();
            assert!(err.to_string().contains(expected), "{name}: {err}");
        }
    }
}
