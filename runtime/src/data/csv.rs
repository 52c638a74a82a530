//! Numeric CSV files with a label column, such as the UCI optical digits.

use std::path::Path;

use super::{read_maybe_gz, Dataset};
use crate::{Error, Float, Result, Shape};

/// Where the class label is in each row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelColumn {
    /// The first column.
    First,
    /// The last column.
    Last,
}

/// Reads a CSV of numbers (gzip or raw) whose rows are `S::SIZE` features and one
/// integer label in `0..classes`, scaling features by `scale`. A first line that does
/// not parse as numbers is taken as a header and skipped; blank lines are ignored.
///
/// Every malformed row is an error naming the file, the line and the problem.
pub fn read_csv<T: Float, S: Shape>(
    path: &Path,
    label: LabelColumn,
    scale: f64,
    classes: usize,
) -> Result<Dataset<T, S, usize>> {
    let bytes = read_maybe_gz(path)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| Error::format(path, format!("not UTF-8 text: {e}")))?;
    // A byte-order mark (as spreadsheet programs write) would make the first row's
    // first cell unreadable, and the row would be taken for a header.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let scale = T::from_f64(scale);
    let mut features = Vec::new();
    let mut targets = Vec::new();
    let columns = S::SIZE + 1;
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if index == 0 && cells.iter().any(|c| c.parse::<f64>().is_err()) {
            continue; // a header
        }
        if cells.len() != columns {
            return Err(Error::format(
                path,
                format!(
                    "line {line_no}: {} columns, expected {columns} ({} features and a label)",
                    cells.len(),
                    S::SIZE
                ),
            ));
        }
        let (label_cell, feature_cells) = match label {
            LabelColumn::First => (cells[0], &cells[1..]),
            LabelColumn::Last => (cells[columns - 1], &cells[..columns - 1]),
        };
        let class: usize = label_cell.parse().map_err(|_| {
            Error::format(
                path,
                format!("line {line_no}: label {label_cell:?} is not a class index"),
            )
        })?;
        if class >= classes {
            return Err(Error::format(
                path,
                format!("line {line_no}: label {class} is not below {classes}"),
            ));
        }
        for cell in feature_cells {
            let v: f64 = cell.parse().map_err(|_| {
                Error::format(path, format!("line {line_no}: {cell:?} is not a number"))
            })?;
            features.push(T::from_f64(v) * scale);
        }
        targets.push(class);
    }
    if targets.is_empty() {
        return Err(Error::format(path, "no data rows"));
    }
    Dataset::new(features, targets, Some(classes))
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
    fn malformed_rows_name_the_line() {
        for (name, text, expected) in [
            ("columns", "1,2,0\n1,2\n", "line 2: 2 columns"),
            ("label", "1,2,0\n1,2,x\n", "line 2: label \"x\""),
            ("range", "1,2,7\n", "label 7 is not below 2"),
            ("number", "1,2,0\n1,y,0\n", "line 2: \"y\" is not a number"),
            ("empty", "\n", "no data rows"),
        ] {
            let path = file(name, text);
            let err = read_csv::<f32, Shape1<2>>(&path, LabelColumn::Last, 1.0, 2).unwrap_err();
            assert!(err.to_string().contains(expected), "{name}: {err}");
        }
    }
}
