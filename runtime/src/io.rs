//! Saving and loading parameters as safetensors, with PyTorch's names and layouts.
//!
//! A file saved here loads in PyTorch with `safetensors.torch.load_file` and
//! `module.load_state_dict`, and a state dict PyTorch saved with
//! `safetensors.torch.save_file` loads here when the layer names match.
//!
//! Saving writes a temporary file beside the target, flushes it to disk and renames it
//! over the target, so a crash leaves either the old file or the new one, never half
//! of one. Loading checks every tensor first — missing, unexpected, wrongly shaped or
//! of a type that is not a float — and reports all problems at once; the model is
//! changed only if there are none. F32 and F64 files load into models of either type.
//!
//! ```
//! use kiln::prelude::*;
//! kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
//! let path = std::env::temp_dir().join("kiln-doc-io-module.safetensors");
//! Net::<f32>::new(1).save(&path)?; // loads in PyTorch with safetensors.torch.load_file
//! let mut net = Net::<f32>::new(2);
//! net.load(&path)?;
//! assert_eq!(net.params().as_slice(), Net::<f32>::new(1).params().as_slice());
//! # Ok::<(), kiln::Error>(())
//! ```

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::{Error, Float, ModelSpec, ParamInfo, Result, TensorKind};

pub(crate) fn dtype<T: Float>() -> Dtype {
    if T::DTYPE == "F32" {
        Dtype::F32
    } else {
        Dtype::F64
    }
}

/// Little-endian bytes of `values`.
pub(crate) fn to_bytes<T: Float>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(core::mem::size_of_val(values));
    for &v in values {
        if T::DTYPE == "F32" {
            out.extend((v.to_f64() as f32).to_le_bytes());
        } else {
            out.extend(v.to_f64().to_le_bytes());
        }
    }
    out
}

/// Every tensor of a model: its parameters, then its buffers, each with its values.
fn tensors<'a, T>(
    spec: &ModelSpec,
    params: &'a [T],
    buffers: &'a [T],
) -> Vec<(&'static ParamInfo, &'a [T])> {
    let params = spec.params.iter().map(|p| (p, &params[p.range()]));
    let buffers = spec.buffers.iter().map(|b| (b, &buffers[b.range()]));
    params.chain(buffers).collect()
}

/// Writes the parameters and buffers (laid out as `spec` says) to `path` atomically.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [3], fc: Dense(4), Tanh, out: Dense(2) } }
/// # let dir = std::env::temp_dir();
/// let net = Net::<f32>::new(0);
/// let path = dir.join("kiln-doc-io-save.safetensors");
/// kiln::io::save(Net::<f32>::SPEC, net.params().as_slice(), net.buffers().as_slice(), &path)?;
/// let mut params = vec![0.0_f32; Net::<f32>::SPEC.param_count];
/// kiln::io::load(Net::<f32>::SPEC, &mut params, &mut [], &path)?;
/// assert_eq!(params, net.params().as_slice());
/// assert!(kiln::io::save(Net::<f32>::SPEC, &params[1..], &[], &path).is_err()); // one short
/// # Ok::<(), kiln::Error>(())
/// ```
///
/// # Errors
/// [`Error::ParameterLength`] if `params` or `buffers` is not as long as `spec` says (nothing
/// is written); [`Error::Io`] if the file cannot be written.
pub fn save<T: Float>(spec: &ModelSpec, params: &[T], buffers: &[T], path: &Path) -> Result<()> {
    check_buffer_lengths(spec, params.len(), buffers.len())?;
    let owned = encoded(spec, params, buffers);
    let views = views(&owned, path)?;
    let metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("model".to_string(), spec.name.to_string()),
    ]);
    let serialized = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::format(path, e.to_string()))?;
    write_atomically(path, &serialized)
}

/// A tensor ready to write: name, type, shape, little-endian bytes.
pub(crate) type Encoded = (String, Dtype, Vec<usize>, Vec<u8>);

/// The model's tensors as [`save`] writes them: floats in the element type with
/// PyTorch's shapes, counts as one I64.
pub(crate) fn encoded<T: Float>(spec: &ModelSpec, params: &[T], buffers: &[T]) -> Vec<Encoded> {
    tensors(spec, params, buffers)
        .into_iter()
        .map(|(info, values)| match info.kind {
            TensorKind::Float => (
                info.full_name().into_owned(),
                dtype::<T>(),
                info.shape.to_vec(),
                to_bytes(values),
            ),
            TensorKind::Count => (
                info.full_name().into_owned(),
                Dtype::I64,
                Vec::new(),
                (values[0].to_f64().round() as i64).to_le_bytes().to_vec(),
            ),
        })
        .collect()
}

/// Views of encoded tensors for `safetensors::serialize`.
pub(crate) fn views<'a>(
    owned: &'a [Encoded],
    path: &Path,
) -> Result<Vec<(String, TensorView<'a>)>> {
    owned
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|e| Error::format(path, format!("tensor {name}: {e}")))
        })
        .collect()
}

/// Writes `bytes` to a temporary file in `path`'s directory, syncs it, renames it over
/// `path` and syncs the directory, so that after a crash `path` holds the old file or
/// the new one, whole, and the rename itself is on disk.
///
/// A read-only `path` is refused (an error, the file untouched), as `open(path, "w")`
/// would. Temporary files that saves to `path` left behind when their process died
/// (killed during a save) are removed. The temporary name stays within the file
/// system's 255 bytes whatever the length of `path`'s name.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [3], fc: Dense(4), Tanh, out: Dense(2) } }
/// # let dir = std::env::temp_dir();
/// let path = dir.join("kiln-doc-atomic.txt");
/// kiln::io::write_atomically(&path, b"first")?;
/// kiln::io::write_atomically(&path, b"second")?; // the old file or the new, never half
/// assert_eq!(std::fs::read(&path).unwrap(), b"second");
/// # Ok::<(), kiln::Error>(())
/// ```
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().readonly() {
            let error = std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "the file is read-only; it is not replaced",
            );
            return Err(Error::io(path, &error));
        }
    }
    let prefix = temp_prefix(path);
    remove_stale_temps(dir, &prefix);
    // The process id and a per-process counter: two threads saving to one path write
    // two temporary files, and the last rename wins whole.
    static SAVES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let serial = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temp = dir.join(format!("{prefix}{}-{serial}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        sync_dir(dir)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        Error::io(path, &e)
    })
}

/// The start of the temporary names of saves to `path`: `.`, the file name (cut to
/// fit), a hash of the whole name (so that cut names of two files differ), then
/// `.kiln-tmp-`; the process id and a counter follow.
fn temp_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
    // FNV-1a: the same in every build, so a later version still finds old temps.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    // 255 bytes, less the dot, hash, marker and the longest pid and counter.
    let mut cut = name.len().min(160);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(".{}.{hash:016x}.kiln-tmp-", &name[..cut])
}

/// Removes the temporary files of saves to the same path whose process is gone.
fn remove_stale_temps(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !process_alive(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether process `pid` runs; where that cannot be told, it is taken to run (its
/// temporary file is then left alone).
fn process_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.is_dir() || proc.join(pid.to_string()).exists()
}

/// Makes a rename in `dir` durable (on Unix; elsewhere a directory cannot be opened to
/// sync it, and the rename is as durable as the platform makes it).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// How [`load_with`] matches a file's tensors to a model's: PyTorch's
/// `load_state_dict(strict=...)`, plus prefix renames for a state dict saved from a
/// module that sits elsewhere in this model (or the other way round).
///
/// ```
/// use kiln_runtime::io::LoadOptions;
/// // A backbone's own state dict, loaded into the model's `backbone`, the rest kept.
/// let options = LoadOptions::new().strict(false).rename("", "backbone.");
/// assert_ne!(options, LoadOptions::default());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    strict: bool,
    renames: Vec<(String, String)>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl LoadOptions {
    /// Strict, no renames: every tensor of the model must be in the file and every
    /// tensor of the file in the model ([`crate::Model::load`]).
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Tanh, out: Dense(2) } }
    /// # let dir = std::env::temp_dir();
    /// // Strict: a file with a tensor this model lacks is refused, and nothing changes.
    /// kiln::model! { struct Bigger { input: [3], fc: Dense(4), Tanh, out: Dense(2), extra: Dense(1) } }
    /// let path = dir.join("kiln-doc-strict-new.safetensors");
    /// Bigger::<f32>::new(0).save(&path)?;
    /// let mut net = Net::<f32>::new(1);
    /// let err = net.load_with(&path, &kiln::io::LoadOptions::new()).unwrap_err();
    /// assert!(err.to_string().contains("extra.weight"));
    /// assert_eq!(net.params().as_slice(), Net::<f32>::new(1).params().as_slice());
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn new() -> Self {
        Self {
            strict: true,
            renames: Vec::new(),
        }
    }

    /// With `false`, tensors the model has and the file lacks keep their values and
    /// tensors the file has and the model lacks are left out; both are reported in
    /// the [`LoadReport`]. A tensor of the wrong shape or type is an error either way.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Tanh, out: Dense(2) } }
    /// # let dir = std::env::temp_dir();
    /// use kiln::io::LoadOptions;
    /// kiln::model! { struct Bigger { input: [3], fc: Dense(4), Tanh, out: Dense(2), extra: Dense(1) } }
    /// let path = dir.join("kiln-doc-strict.safetensors");
    /// Net::<f32>::new(3).save(&path)?;
    /// let mut bigger = Bigger::<f32>::new(0);
    /// assert!(bigger.load_with(&path, &LoadOptions::new()).is_err()); // extra.* missing
    /// let report = bigger.load_with(&path, &LoadOptions::new().strict(false))?;
    /// assert_eq!(report.missing, ["extra.bias", "extra.weight"]);
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Reads a file tensor whose name starts with `from` as the model's tensor named
    /// `to` followed by the rest: `rename("", "backbone.")` loads a backbone's own
    /// state dict into the model's `backbone`, `rename("features.", "")` the other way.
    /// The first rule that matches a name applies.
    ///
    /// ```
    /// # use kiln::prelude::*;
    /// # kiln::model! { struct Net { input: [3], fc: Dense(4), Tanh, out: Dense(2) } }
    /// # let dir = std::env::temp_dir();
    /// use kiln::io::LoadOptions;
    /// kiln::model! { struct Wrapped { input: [3], backbone: use Net -> [2], head: Dense(1) } }
    /// let path = dir.join("kiln-doc-rename.safetensors");
    /// Net::<f32>::new(3).save(&path)?; // fc.weight, ...: the backbone's own names
    /// let mut wrapped = Wrapped::<f32>::new(0);
    /// let report = wrapped.load_with(&path, &LoadOptions::new().strict(false).rename("", "backbone."))?;
    /// assert_eq!(report.loaded.len(), 4);
    /// assert_eq!(wrapped.params().get("backbone.fc.weight"), Net::<f32>::new(3).params().get("fc.weight"));
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn rename(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.renames.push((from.into(), to.into()));
        self
    }

    /// The model's name for the file's tensor `name`.
    fn model_name(&self, name: &str) -> String {
        for (from, to) in &self.renames {
            if let Some(rest) = name.strip_prefix(from.as_str()) {
                return format!("{to}{rest}");
            }
        }
        name.to_string()
    }
}

/// What [`load_with`] did, by the model's tensor names, each list sorted.
///
/// ```
/// use kiln_runtime::io::LoadReport;
/// let report = LoadReport { loaded: vec!["fc.weight".into()], ..LoadReport::default() };
/// assert!(report.missing.is_empty() && report.unexpected.is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Tensors read from the file.
    pub loaded: Vec<String>,
    /// The model's tensors the file lacks (they kept their values).
    pub missing: Vec<String>,
    /// The file's tensors the model lacks (left out), by their names in the file.
    pub unexpected: Vec<String>,
}

/// Reads the parameters and buffers `spec` describes from a safetensors file.
///
/// On any mismatch, returns [`Error::StateDict`] listing every problem and leaves
/// `params` and `buffers` unchanged.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [3], fc: Dense(4), Tanh, out: Dense(2) } }
/// # let dir = std::env::temp_dir();
/// let path = dir.join("kiln-doc-io-load.safetensors");
/// Net::<f32>::new(3).save(&path)?;
/// let mut params = vec![0.0_f32; Net::<f32>::SPEC.param_count];
/// kiln::io::load(Net::<f32>::SPEC, &mut params, &mut [], &path)?;
/// assert_eq!(params, Net::<f32>::new(3).params().as_slice());
/// let short = kiln::io::load(Net::<f32>::SPEC, &mut params[1..], &mut [], &path);
/// assert!(matches!(short, Err(kiln::Error::ParameterLength { expected: 26, actual: 25 })));
/// # Ok::<(), kiln::Error>(())
/// ```
pub fn load<T: Float>(
    spec: &ModelSpec,
    params: &mut [T],
    buffers: &mut [T],
    path: &Path,
) -> Result<()> {
    load_with(spec, params, buffers, path, &LoadOptions::new()).map(drop)
}

/// [`load`] as `options` say: strict or not, with renames. Returns what was loaded,
/// missing and unexpected; on any problem (in strict mode, a missing or unexpected
/// tensor too) returns [`Error::StateDict`] listing all of them, leaving `params` and
/// `buffers` unchanged.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [3], fc: Dense(4), Tanh, out: Dense(2) } }
/// # let dir = std::env::temp_dir();
/// use kiln::io::{load_with, LoadOptions};
/// let path = dir.join("kiln-doc-io-load-with.safetensors");
/// Net::<f32>::new(3).save(&path)?;
/// let mut params = vec![0.0_f32; Net::<f32>::SPEC.param_count];
/// let report = load_with(Net::<f32>::SPEC, &mut params, &mut [], &path, &LoadOptions::new())?;
/// assert!(report.missing.is_empty() && report.unexpected.is_empty());
/// # Ok::<(), kiln::Error>(())
/// ```
pub fn load_with<T: Float>(
    spec: &ModelSpec,
    params: &mut [T],
    buffers: &mut [T],
    path: &Path,
    options: &LoadOptions,
) -> Result<LoadReport> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, &e))?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::format(path, format!("not a safetensors file: {e}")))?;
    load_from(spec, params, buffers, &file, path, options)
}

/// [`load_with`] of a file's bytes already in memory; errors name it `<bytes in memory>`.
///
/// ```
/// # use kiln::prelude::*;
/// # kiln::model! { struct Net { input: [3], fc: Dense(4), Tanh, out: Dense(2) } }
/// # let dir = std::env::temp_dir();
/// use kiln::io::{load_bytes, LoadOptions};
/// let mut params = vec![0.0_f32; Net::<f32>::SPEC.param_count];
/// let err = load_bytes(Net::<f32>::SPEC, &mut params, &mut [], b"not safetensors", &LoadOptions::new());
/// assert!(err.unwrap_err().to_string().contains("<bytes in memory>"));
/// # Ok::<(), kiln::Error>(())
/// ```
pub fn load_bytes<T: Float>(
    spec: &ModelSpec,
    params: &mut [T],
    buffers: &mut [T],
    bytes: &[u8],
    options: &LoadOptions,
) -> Result<LoadReport> {
    let path = Path::new("<bytes in memory>");
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::format(path, format!("not a safetensors file: {e}")))?;
    load_from(spec, params, buffers, &file, path, options)
}

/// [`load_with`] from a file already parsed.
/// Refuses parameter and buffer slices of other lengths than `spec`'s (the public
/// entry points take them from the caller, and a tensor's range would fall outside)
/// with the error `set_params` gives.
pub(crate) fn check_buffer_lengths(spec: &ModelSpec, params: usize, buffers: usize) -> Result<()> {
    crate::optim::check_lengths(spec.param_count, params)?;
    crate::optim::check_lengths(spec.buffer_count, buffers)
}

pub(crate) fn load_from<T: Float>(
    spec: &ModelSpec,
    params: &mut [T],
    buffers: &mut [T],
    file: &SafeTensors<'_>,
    path: &Path,
    options: &LoadOptions,
) -> Result<LoadReport> {
    check_buffer_lengths(spec, params.len(), buffers.len())?;
    let mut problems = Vec::new();
    let mut report = LoadReport::default();
    // The file's tensors by the model's names for them.
    let mut by_model_name: HashMap<String, String> = HashMap::new();
    let mut file_names = file.names();
    file_names.sort();
    for name in file_names {
        let model_name = options.model_name(name);
        if let Some(other) = by_model_name.insert(model_name.clone(), name.to_string()) {
            problems.push(format!(
                "tensors `{other}` and `{name}` of the file both rename to `{model_name}`"
            ));
        }
    }
    let mut new_params = params.to_vec();
    let mut new_buffers = buffers.to_vec();
    let tables = [
        (spec.params, &mut new_params),
        (spec.buffers, &mut new_buffers),
    ];
    for (table, values) in tables {
        for info in table {
            let name = info.full_name();
            let found = by_model_name
                .remove(name.as_ref())
                .and_then(|file_name| file.tensor(&file_name).ok());
            let Some(tensor) = found else {
                if options.strict {
                    problems.push(format!("missing tensor `{name}` of shape {:?}", info.shape));
                }
                report.missing.push(name.into_owned());
                continue;
            };
            match read_tensor(info, &tensor, &mut values[info.range()]) {
                Ok(()) => report.loaded.push(name.into_owned()),
                Err(problem) => problems.push(problem),
            }
        }
    }
    let mut extra: Vec<String> = by_model_name.into_values().collect();
    extra.sort();
    if options.strict {
        problems.extend(
            extra.iter().map(|name| {
                format!("unexpected tensor `{name}` (the model has no such parameter)")
            }),
        );
    }
    report.unexpected = extra;
    if !problems.is_empty() {
        return Err(Error::StateDict {
            path: path.display().to_string(),
            problems,
        });
    }
    params.copy_from_slice(&new_params);
    buffers.copy_from_slice(&new_buffers);
    report.loaded.sort();
    report.missing.sort();
    Ok(report)
}

/// Decodes one tensor into `target`, or says why it does not fit.
fn read_tensor<T: Float>(
    info: &ParamInfo,
    tensor: &TensorView<'_>,
    target: &mut [T],
) -> std::result::Result<(), String> {
    let data = tensor.data();
    if info.kind == TensorKind::Count {
        let value = match (tensor.dtype(), data.len()) {
            (Dtype::I64, 8) => i64::from_le_bytes(data.try_into().expect("8 bytes")) as f64,
            (Dtype::F32, 4) => f64::from(f32::from_le_bytes(data.try_into().expect("4 bytes"))),
            (Dtype::F64, 8) => f64::from_le_bytes(data.try_into().expect("8 bytes")),
            (dtype, _) => {
                return Err(format!(
                    "tensor `{}` should be one count, found {dtype:?} {:?}",
                    info.full_name(),
                    tensor.shape()
                ))
            }
        };
        target[0] = T::from_f64(value);
        return Ok(());
    }
    if tensor.shape() != info.shape {
        return Err(format!(
            "tensor `{}` has shape {:?}, the model needs {:?}",
            info.full_name(),
            tensor.shape(),
            info.shape
        ));
    }
    match tensor.dtype() {
        Dtype::F32 => {
            for (dst, chunk) in target.iter_mut().zip(data.chunks_exact(4)) {
                let v = f32::from_le_bytes(chunk.try_into().expect("4 bytes"));
                *dst = T::from_f64(f64::from(v));
            }
        }
        Dtype::F64 => {
            for (dst, chunk) in target.iter_mut().zip(data.chunks_exact(8)) {
                *dst = T::from_f64(f64::from_le_bytes(chunk.try_into().expect("8 bytes")));
            }
        }
        other => {
            return Err(format!(
                "tensor `{}` is {other:?}; only F32 and F64 load",
                info.full_name()
            ))
        }
    }
    if let Some(index) = target.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "tensor `{}` holds {} at index {index}; a model loads only finite values",
            info.full_name(),
            target[index].to_f64()
        ));
    }
    // Batch norm divides by the square root of its running variance.
    if info.full_name().ends_with("running_var") {
        if let Some(index) = target.iter().position(|&v| v < T::ZERO) {
            return Err(format!(
                "tensor `{}` holds {} at index {index}; a variance is never negative",
                info.full_name(),
                target[index].to_f64()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-io-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_read_only_file_is_refused_and_kept() {
        let dir = dir("readonly");
        let path = dir.join("model.safetensors");
        std::fs::write(&path, b"old").unwrap();
        let mut permissions = std::fs::metadata(&path).unwrap().permissions();
        permissions.set_readonly(true);
        std::fs::set_permissions(&path, permissions.clone()).unwrap();
        let err = write_atomically(&path, b"new").unwrap_err();
        assert!(err.to_string().contains("read-only"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        #[allow(clippy::permissions_set_readonly_false)]
        permissions.set_readonly(false);
        std::fs::set_permissions(&path, permissions).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_name_of_250_bytes_saves_and_its_temporary_name_fits() {
        let dir = dir("long");
        let path = dir.join(format!("{}.safetensors", "m".repeat(238)));
        assert_eq!(path.file_name().unwrap().len(), 250);
        write_atomically(&path, b"data").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
        assert!(temp_prefix(&path).len() + 21 <= 255);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn temporary_files_of_dead_saves_are_removed_and_live_ones_kept() {
        let dir = dir("stale");
        let path = dir.join("model.safetensors");
        let prefix = temp_prefix(&path);
        // No process has this id (above Linux's limit); process 1 always runs.
        let dead = dir.join(format!("{prefix}4000000000-0"));
        let live = dir.join(format!("{prefix}1-0"));
        let other = dir.join(format!("{}4000000000-0", temp_prefix(&dir.join("other"))));
        for file in [&dead, &live, &other] {
            std::fs::write(file, b"partial").unwrap();
        }
        write_atomically(&path, b"data").unwrap();
        if Path::new("/proc").is_dir() {
            assert!(!dead.exists(), "the dead save's temporary file is removed");
        }
        assert!(live.exists(), "a running process's temporary file is kept");
        assert!(other.exists(), "another path's temporary file is kept");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
