//! Pictures of training: loss and accuracy curves, and a confusion-matrix heatmap,
//! each written as PNG and SVG with `plotters`; and grids of grayscale images (a
//! generator's samples, a denoiser's inputs and outputs) as PNG.
//!
//! Text is drawn with DejaVu Sans, embedded in the binary, so PNGs render the same on a
//! machine without fonts.
//!
//! ```
//! use kiln::metrics::ConfusionMatrix;
//! let cm = ConfusionMatrix::new(&[0, 1, 1], &[0, 1, 0], 2)?;
//! let files = kiln::plot::confusion_heatmap(&cm, None, std::env::temp_dir().join("kiln-doc-heatmap"))?;
//! assert!(files.iter().all(|f| f.exists()));
//! # Ok::<(), kiln::Error>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::metrics::ConfusionMatrix;
use crate::train::History;
use crate::Float;
use crate::{Error, Result};

fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded font is valid; if registration failed, text would be missing from
        // PNGs, which the caller sees in the picture, not as a crash.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// `stem.png` and `stem.svg`.
fn outputs(stem: &Path) -> (PathBuf, PathBuf) {
    (stem.with_extension("png"), stem.with_extension("svg"))
}

fn plot_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.display().to_string(),
        message: format!("could not draw: {e}"),
    }
}

type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Lets `draw` paint a `size` RGB picture and writes it to `path` as an 8-bit PNG, whole
/// or not at all ([`crate::io::write_atomically`]). plotters draws into the buffer; the
/// `png` crate encodes it.
fn write_png(
    path: &Path,
    size: (u32, u32),
    draw: impl for<'a> FnOnce(DrawingArea<BitMapBackend<'a>, Shift>) -> DrawResult<BitMapBackend<'a>>,
) -> Result<()> {
    let (width, height) = size;
    let mut pixels = vec![0u8; 3 * width as usize * height as usize];
    draw(BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area())
        .map_err(|e| plot_error(path, e))?;
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .and_then(|mut writer| writer.write_image_data(&pixels))
        .map_err(|e| plot_error(path, e))?;
    crate::io::write_atomically(path, &bytes)
}

/// Draws `history` to `stem.png` and `stem.svg`: training and validation loss on the
/// left, accuracy on the right (when there is accuracy). Returns the two paths.
///
/// ```
/// # use kiln::prelude::*;
/// kiln::model! { struct Net { input: [4], fc: Dense(8), Relu, out: Dense(3) } }
/// let features: Vec<f32> = (0..4 * 60).map(|i| (i % 7) as f32 / 7.0).collect();
/// let labels: Vec<usize> = (0..60).map(|i| i % 3).collect();
/// let data = Dataset::<f32, Shape1<4>>::new(features, labels, Some(3))?;
/// let config = FitConfig::new(3, 16).progress(Progress::Silent).validation_split(0.2);
/// let history = Net::<f32>::new(0).fit(&data, None, &CrossEntropy::default(), &mut Adam::new(1e-2), &config)?;
/// let stem = std::env::temp_dir().join("kiln-doc-curves");
/// let written = kiln::plot::training_curves(&history, &stem)?;
/// assert_eq!(written, [stem.with_extension("png"), stem.with_extension("svg")]);
/// # Ok::<(), kiln::Error>(())
/// ```
pub fn training_curves(history: &History, stem: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
    register_fonts();
    let (png, svg) = outputs(stem.as_ref());
    if let Some(dir) = png.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, &e))?;
    }
    let size = (1200, 480);
    write_png(&png, size, |root| draw_curves(root, history))?;
    draw_curves(SVGBackend::new(&svg, size).into_drawing_area(), history)
        .map_err(|e| plot_error(&svg, e))?;
    Ok(vec![png, svg])
}

fn draw_curves<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    history: &History,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let has_accuracy = history.epochs.iter().any(|e| e.accuracy.is_some());
    let panels = if has_accuracy {
        root.split_evenly((1, 2))
    } else {
        vec![root.clone()]
    };
    let epochs: Vec<f64> = history
        .epochs
        .iter()
        .map(|e| (e.epoch + 1) as f64)
        .collect();
    type Get = fn(&crate::train::EpochLog) -> Option<f64>;
    let charts: [(&str, Get, Get); 2] = [
        ("loss", |e| Some(e.loss), |e| e.val_loss),
        ("accuracy", |e| e.accuracy, |e| e.val_accuracy),
    ];
    for (panel, (name, train, valid)) in panels.iter().zip(charts) {
        let train: Vec<(f64, f64)> = history
            .epochs
            .iter()
            .zip(&epochs)
            .filter_map(|(e, &x)| train(e).map(|y| (x, y)))
            .collect();
        let valid: Vec<(f64, f64)> = history
            .epochs
            .iter()
            .zip(&epochs)
            .filter_map(|(e, &x)| valid(e).map(|y| (x, y)))
            .collect();
        let ys = train.iter().chain(&valid).map(|p| p.1);
        let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
            (lo.min(y), hi.max(y))
        });
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        let pad = ((hi - lo) * 0.08).max(1e-3);
        let last = epochs.last().copied().unwrap_or(1.0).max(2.0);
        let mut chart = ChartBuilder::on(panel)
            .caption(name, ("sans-serif", 26))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(1.0..last, (lo - pad)..(hi + pad))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(name)
            .label_style(("sans-serif", 16))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .draw()?;
        let blue = RGBColor(31, 119, 180);
        let orange = RGBColor(255, 127, 14);
        chart
            .draw_series(LineSeries::new(train.clone(), blue.stroke_width(2)))?
            .label(format!("training {name}"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2))
            });
        chart.draw_series(train.iter().map(|&p| Circle::new(p, 3, blue.filled())))?;
        if !valid.is_empty() {
            chart
                .draw_series(LineSeries::new(valid.clone(), orange.stroke_width(2)))?
                .label(format!("validation {name}"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], orange.stroke_width(2))
                });
            chart.draw_series(valid.iter().map(|&p| Circle::new(p, 3, orange.filled())))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 16))
            .position(if name == "loss" {
                SeriesLabelPosition::UpperRight
            } else {
                SeriesLabelPosition::LowerRight
            })
            .draw()?;
    }
    root.present()
}

/// Draws the confusion matrix as a heatmap with counts to `stem.png` and `stem.svg`:
/// rows are true classes, columns predictions, colour the fraction of the row.
///
/// ```
/// use kiln_runtime::metrics::ConfusionMatrix;
/// use kiln_runtime::plot::confusion_heatmap;
/// let cm = ConfusionMatrix::new(&[0, 1, 1, 0], &[0, 1, 0, 0], 2).unwrap();
/// let stem = std::env::temp_dir().join("kiln-doc-confusion");
/// let written = confusion_heatmap(&cm, Some(&["cat", "dog"]), &stem).unwrap();
/// assert_eq!(written, [stem.with_extension("png"), stem.with_extension("svg")]);
/// ```
pub fn confusion_heatmap(
    matrix: &ConfusionMatrix,
    names: Option<&[&str]>,
    stem: impl AsRef<Path>,
) -> Result<Vec<PathBuf>> {
    register_fonts();
    let (png, svg) = outputs(stem.as_ref());
    if let Some(dir) = png.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, &e))?;
    }
    let size = (760, 700);
    write_png(&png, size, |root| draw_heatmap(root, matrix, names))?;
    draw_heatmap(
        SVGBackend::new(&svg, size).into_drawing_area(),
        matrix,
        names,
    )
    .map_err(|e| plot_error(&svg, e))?;
    Ok(vec![png, svg])
}

/// Writes grayscale images as one PNG grid, `columns` images wide, each pixel drawn as a
/// `scale` x `scale` square, images two pixels apart on a mid-grey background.
/// `pixels` holds the images one after another, each `size = (height, width)` values
/// row by row, 0 black and 1 white (values outside are clamped; NaN is drawn red, so
/// it shows). Returns the path written.
///
/// # Errors
/// [`Error::Mismatch`] if `pixels` is empty or not whole images, or `columns` or
/// `scale` is 0; [`Error::Io`] if the file cannot be written.
///
/// ```
/// use kiln_runtime::plot::image_grid;
/// // Two 2x2 images, side by side, each pixel a 4x4 square.
/// let pixels = [0.0_f32, 1.0, 1.0, 0.0, 0.5, 0.5, 0.5, 0.5];
/// let path = std::env::temp_dir().join("kiln-doc-grid.png");
/// image_grid(&pixels, (2, 2), 2, 4, &path).unwrap();
/// assert!(image_grid(&pixels[..3], (2, 2), 2, 4, &path).is_err()); // not whole images
/// ```
pub fn image_grid<T: Float>(
    pixels: &[T],
    size: (usize, usize),
    columns: usize,
    scale: u32,
    path: impl AsRef<Path>,
) -> Result<PathBuf> {
    let path = path.as_ref().to_path_buf();
    let (height, width) = size;
    let area = height * width;
    if area == 0
        || pixels.is_empty()
        || !pixels.len().is_multiple_of(area)
        || columns == 0
        || scale == 0
    {
        return Err(Error::Mismatch(format!(
            "image grid: {} values are not whole {height}x{width} images, or columns ({columns}) or scale ({scale}) is 0",
            pixels.len()
        )));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, &e))?;
    }
    let count = pixels.len() / area;
    let columns = columns.min(count);
    let rows = count.div_ceil(columns);
    let gap = 2;
    let cell = |n: usize, pixels: usize| (n * (pixels * scale as usize + gap) + gap) as u32;
    let (total_w, total_h) = (cell(columns, width), cell(rows, height));
    write_png(&path, (total_w, total_h), |root| {
        root.fill(&RGBColor(128, 128, 128))?;
        for (n, image) in pixels.chunks_exact(area).enumerate() {
            let (left, top) = (cell(n % columns, width), cell(n / columns, height));
            for (i, &value) in image.iter().enumerate() {
                let value = value.to_f64();
                let colour = if value.is_nan() {
                    RGBColor(255, 0, 0)
                } else {
                    let v = (value.clamp(0.0, 1.0) * 255.0).round() as u8;
                    RGBColor(v, v, v)
                };
                let x = (left + (i % width) as u32 * scale) as i32;
                let y = (top + (i / width) as u32 * scale) as i32;
                let side = scale as i32;
                // The far corner is exclusive.
                let corners = [(x, y), (x + side, y + side)];
                root.draw(&Rectangle::new(corners, colour.filled()))?;
            }
        }
        root.present()
    })?;
    Ok(path)
}

fn draw_heatmap<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    matrix: &ConfusionMatrix,
    names: Option<&[&str]>,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let k = matrix.classes();
    let label = |i: usize| {
        names
            .and_then(|n| n.get(i))
            .map_or_else(|| i.to_string(), |s| s.to_string())
    };
    let last = k.saturating_sub(1).max(1);
    // Segmented axes put each class's label at the centre of its cell. Rows are drawn
    // top to bottom, so row `t` sits at y = k - 1 - t.
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "confusion matrix (accuracy {:.2} %)",
                100.0 * matrix.accuracy()
            ),
            ("sans-serif", 24),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(if names.is_some() { 110 } else { 48 })
        // A segmented range a..b has a segment for each of a..=b: k classes need 0..k-1.
        .build_cartesian_2d((0..last).into_segmented(), (0..last).into_segmented())?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("predicted")
        .y_desc("true")
        .x_labels(k)
        .y_labels(k)
        .label_style(("sans-serif", 14))
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) if *i < k => label(*i),
            _ => String::new(),
        })
        .y_label_formatter(&|y| match y {
            SegmentValue::CenterOf(i) if *i < k => label(k - 1 - *i),
            _ => String::new(),
        })
        .draw()?;
    let row_totals: Vec<u64> = (0..k)
        .map(|t| (0..k).map(|p| matrix.count(t, p)).sum())
        .collect();
    let cells = || (0..k).flat_map(|t| (0..k).map(move |p| (t, p)));
    chart.draw_series(cells().map(|(t, p)| {
        let fraction = matrix.count(t, p) as f64 / row_totals[t].max(1) as f64;
        let shade = (255.0 * (1.0 - fraction)) as u8;
        let colour = RGBColor(
            shade,
            shade.saturating_add(((255 - shade) as f64 * 0.35) as u8),
            255,
        );
        let row = k - 1 - t;
        Rectangle::new(
            [
                (SegmentValue::Exact(p), SegmentValue::Exact(row)),
                (SegmentValue::Exact(p + 1), SegmentValue::Exact(row + 1)),
            ],
            colour.filled(),
        )
    }))?;
    let centred = plotters::style::text_anchor::Pos::new(
        plotters::style::text_anchor::HPos::Center,
        plotters::style::text_anchor::VPos::Center,
    );
    chart.draw_series(cells().map(|(t, p)| {
        let count = matrix.count(t, p);
        let fraction = count as f64 / row_totals[t].max(1) as f64;
        let colour: &'static RGBColor = if fraction > 0.5 { &WHITE } else { &BLACK };
        let style = TextStyle::from(("sans-serif", 13).into_font())
            .color(colour)
            .pos(centred);
        Text::new(
            count.to_string(),
            (SegmentValue::CenterOf(p), SegmentValue::CenterOf(k - 1 - t)),
            style,
        )
    }))?;
    root.present()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Width and height from a PNG's header.
    fn png_size(path: &Path) -> (u32, u32) {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        (word(16), word(20))
    }

    #[test]
    fn image_grids_lay_images_out_in_rows() {
        let dir = std::env::temp_dir().join(format!("kiln-grid-{}", std::process::id()));
        // Five 3x2 images, three to a row: two rows; each pixel 4x4, gaps of 2.
        let pixels: Vec<f32> = (0..30).map(|i| i as f32 / 29.0).collect();
        let path = image_grid(&pixels, (3, 2), 3, 4, dir.join("grid.png")).unwrap();
        assert_eq!(png_size(&path), (3 * (2 * 4 + 2) + 2, 2 * (3 * 4 + 2) + 2));
        // Fewer images than columns: one row, as wide as the images.
        let path = image_grid(&pixels[..6], (3, 2), 8, 1, dir.join("one.png")).unwrap();
        assert_eq!(png_size(&path), (2 + 2 + 2, 3 + 2 + 2));
        for (len, columns, scale) in [(7, 3, 1), (0, 3, 1), (6, 0, 1), (6, 3, 0)] {
            let err = image_grid(&pixels[..len], (3, 2), columns, scale, dir.join("x.png"));
            assert!(
                matches!(err, Err(Error::Mismatch(_))),
                "{len} {columns} {scale}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
