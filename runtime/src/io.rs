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

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::{Error, Float, ModelSpec, Result};

fn dtype<T: Float>() -> Dtype {
    if T::DTYPE == "F32" {
        Dtype::F32
    } else {
        Dtype::F64
    }
}

/// Little-endian bytes of `values`.
fn to_bytes<T: Float>(values: &[T]) -> Vec<u8> {
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

/// Writes `params` (laid out as `spec` says) to `path` atomically.
pub fn save<T: Float>(spec: &ModelSpec, params: &[T], path: &Path) -> Result<()> {
    let bytes: Vec<Vec<u8>> = spec
        .params
        .iter()
        .map(|p| to_bytes(&params[p.range()]))
        .collect();
    let views = spec
        .params
        .iter()
        .zip(&bytes)
        .map(|(p, data)| {
            let view = TensorView::new(dtype::<T>(), p.shape.to_vec(), data)
                .map_err(|e| Error::format(path, format!("tensor {}: {e}", p.name)))?;
            Ok((p.name, view))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("model".to_string(), spec.name.to_string()),
    ]);
    let serialized = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::format(path, e.to_string()))?;
    write_atomically(path, &serialized)
}

/// Writes `bytes` to a temporary file in `path`'s directory, syncs it and renames it
/// over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        Error::io(path, &e)
    })
}

/// Reads the parameters `spec` describes from a safetensors file into `params`.
///
/// On any mismatch, returns [`Error::StateDict`] listing every problem and leaves
/// `params` unchanged.
pub fn load<T: Float>(spec: &ModelSpec, params: &mut [T], path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, &e))?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::format(path, format!("not a safetensors file: {e}")))?;
    let mut problems = Vec::new();
    let mut loaded = params.to_vec();
    for p in spec.params {
        let tensor = match file.tensor(p.name) {
            Ok(tensor) => tensor,
            Err(_) => {
                problems.push(format!(
                    "missing tensor `{}` of shape {:?}",
                    p.name, p.shape
                ));
                continue;
            }
        };
        if tensor.shape() != p.shape {
            problems.push(format!(
                "tensor `{}` has shape {:?}, the model needs {:?}",
                p.name,
                tensor.shape(),
                p.shape
            ));
            continue;
        }
        let data = tensor.data();
        let target = &mut loaded[p.range()];
        match tensor.dtype() {
            Dtype::F32 => {
                for (dst, chunk) in target.iter_mut().zip(data.chunks_exact(4)) {
                    let v = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                    *dst = T::from_f64(f64::from(v));
                }
            }
            Dtype::F64 => {
                for (dst, chunk) in target.iter_mut().zip(data.chunks_exact(8)) {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(chunk);
                    *dst = T::from_f64(f64::from_le_bytes(b));
                }
            }
            other => problems.push(format!(
                "tensor `{}` is {other:?}; only F32 and F64 load",
                p.name
            )),
        }
    }
    let mut extra: Vec<String> = file
        .names()
        .into_iter()
        .filter(|name| spec.param(name).is_none())
        .map(|name| format!("unexpected tensor `{name}` (the model has no such parameter)"))
        .collect();
    extra.sort();
    problems.extend(extra);
    if !problems.is_empty() {
        return Err(Error::StateDict {
            path: path.display().to_string(),
            problems,
        });
    }
    params.copy_from_slice(&loaded);
    Ok(())
}
