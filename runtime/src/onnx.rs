//! ONNX export without tracing: the `model!` macro knows the whole graph, so it writes
//! each step's ONNX operators into the model's [`ModelSpec::onnx`] at compile time, and
//! [`Model::to_onnx`](crate::Model::to_onnx) puts them together with the weights into
//! an ONNX model (IR version 8, opset 18, the default domain) that ONNX Runtime and
//! other engines run for inference.
//!
//! The graph has one input, `input` (`[batch, …]`, the batch dimension named `batch`),
//! and one output, `output`, of the model's shapes; a model with named inputs and
//! outputs (`inputs: { .. }`) has those instead, each under its name in its own shape
//! (token ids as floats, as kiln takes them), and the values inside are prefixed
//! `kiln/` so that no name the model chose collides with them. Every parameter and buffer is an
//! initializer under its safetensors name (`fc1.weight`, `bn.running_mean`), in the
//! element type the model holds (f32 or f64; ONNX Runtime's CPU kernels have no f64
//! convolution, so [`Model::to_onnx_f32`](crate::Model::to_onnx_f32) narrows an f64
//! model's weights for it). It is the inference graph: dropout is an
//! identity, batch norm uses its running statistics (its `num_batches_tracked` count,
//! which only training reads, is left out).
//!
//! | kiln | ONNX |
//! | --- | --- |
//! | `Dense` | `Flatten` (axis 1) then `Gemm` (`transB = 1`), or `MatMul` + `Add` on rows of a sequence |
//! | `Conv2d`, `Conv1d` | `Conv` (`pads`, `strides`, `dilations`; one axis for `Conv1d`) |
//! | `ConvTranspose2d` | `ConvTranspose` (`pads`, `strides`, `dilations`, `output_padding`) |
//! | `Upsample` | `Resize`: nearest (`asymmetric`, `floor`) or linear (`half_pixel`), as PyTorch |
//! | `Residual`, `Add`, `Mul`, `Concat` | `Add`, `Sum`, `Mul`, `Concat` (last axis of each sample's rows) |
//! | `MaxPool2d`, `AvgPool2d` | `MaxPool`, `AveragePool` (`count_include_pad = 1`) |
//! | `GlobalAvgPool` | `GlobalAveragePool` then `Flatten` |
//! | `BatchNorm1d`, `BatchNorm2d` | `BatchNormalization` |
//! | `Relu`, `LeakyRelu`, `Sigmoid`, `Tanh` | the operator of that name |
//! | `Gelu` | `0.5·x·(1 + erf(x/√2))` in `Div`, `Erf`, `Add`, `Mul` |
//! | `Softmax` | `Softmax` (last axis) |
//! | `Dropout` | `Identity` |
//! | `Flatten` | nothing (the next `Gemm` flattens); a final `Reshape` gives the output its shape |
//! | `Rnn`, `Lstm`, `Gru` | `RNN`, `LSTM`, `GRU` (sequence-major, between `Transpose`s; PyTorch's gate blocks reordered by `Slice` and `Concat`; GRU with `linear_before_reset = 1`); bidirectional: `direction = "bidirectional"`, both directions' weights stacked |
//! | `LastStep` | `Slice` of the last step |
//! | `Transpose` | `Transpose` (`perm = [0, 2, 1]`) |
//! | a graph's inputs and outputs | graph inputs and outputs of their names; inside, each input `Reshape`d to a row and `Concat`enated into the packed input, then `Slice`d out of it as the model does, each output `Reshape`d to its shape |
//! | `Embedding` | `Cast` of the ids to int64, then `Gather` |
//! | `PositionalEmbedding` | `Add` of the table |
//! | `LayerNorm` | `LayerNormalization` (last axis) |
//! | `MultiHeadAttention` | the packed projection (`MatMul`, `Add`), `Slice`s into heads, scaled `MatMul` scores (plus `Trilu`'s −1e9 above the diagonal when causal), `Softmax`, `MatMul`, the output projection |
//!
//! A model used as a layer of another (`use Encoder -> [4]`) or a user layer makes
//! `to_onnx` return
//! [`Error::OnnxUnsupported`] naming it; nothing is written.
//!
//! ```
//! use kiln::prelude::*;
//! kiln::model! { struct Net { input: [1, 8, 8], c: Conv2d(4, kernel = 3), Relu, Flatten, out: Dense(10) } }
//! let path = std::env::temp_dir().join("kiln-doc-net.onnx");
//! Net::<f32>::new(0).save_onnx(&path)?; // input "input" [N, 1, 8, 8], output "output" [N, 10]
//! assert!(std::fs::metadata(&path).unwrap().len() > 4 * Net::<f32>::PARAM_COUNT as u64);
//! # Ok::<(), kiln::Error>(())
//! ```

use crate::error::{Error, Result};
use crate::float::Float;
use crate::model::ModelSpec;

/// The ONNX operators of a model, or the first layer that has none.
///
/// ```
/// # use kiln::prelude::*;
/// use kiln::onnx::{OnnxAttr, OnnxPlan, OnnxValue};
/// kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
/// let OnnxPlan::Graph(nodes) = Net::<f32>::SPEC.onnx else { panic!("every layer here exports") };
/// let ops: Vec<&str> = nodes.iter().map(|n| n.op).collect();
/// assert_eq!(ops, ["Reshape", "Gemm", "Relu", "Reshape", "Gemm"]); // a dense step takes rows
/// kiln::model! { struct Outer { input: [3], inner: use Net -> [2], head: Dense(1) } }
/// assert!(matches!(Outer::<f32>::SPEC.onnx, OnnxPlan::Unsupported { .. }));
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OnnxPlan {
    /// The nodes, in the order of the forward pass.
    Graph(&'static [OnnxNode]),
    /// A layer the exporter does not cover.
    Unsupported {
        /// What it is, as written in the model (`Lstm(64)`).
        kind: &'static str,
    },
}

/// One ONNX operator of a step.
///
/// ```
/// # use kiln::prelude::*;
/// use kiln::onnx::{OnnxAttr, OnnxPlan, OnnxValue};
/// kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
/// let OnnxPlan::Graph(nodes) = Net::<f32>::SPEC.onnx else { panic!("every layer here exports") };
/// let ops: Vec<&str> = nodes.iter().map(|n| n.op).collect();
/// assert_eq!(ops, ["Reshape", "Gemm", "Relu", "Reshape", "Gemm"]); // a dense step takes rows
/// let gemm = &nodes[1];
/// assert!(gemm.attrs.contains(&("transB", OnnxAttr::Int(1)))); // PyTorch's [out, in] weight
/// assert!(matches!(gemm.inputs[1], OnnxValue::Param(0))); // fc.weight, at offset 0
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OnnxNode {
    /// The operator (`Gemm`).
    pub op: &'static str,
    /// Its inputs, in the operator's order.
    pub inputs: &'static [OnnxValue],
    /// What it writes.
    pub output: OnnxValue,
    /// Its attributes.
    pub attrs: &'static [(&'static str, OnnxAttr)],
}

/// A value an [`OnnxNode`] reads or writes.
///
/// ```
/// # use kiln::prelude::*;
/// use kiln::onnx::{OnnxAttr, OnnxPlan, OnnxValue};
/// kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
/// let OnnxPlan::Graph(nodes) = Net::<f32>::SPEC.onnx else { panic!("every layer here exports") };
/// let ops: Vec<&str> = nodes.iter().map(|n| n.op).collect();
/// assert_eq!(ops, ["Reshape", "Gemm", "Relu", "Reshape", "Gemm"]); // a dense step takes rows
/// assert_eq!(nodes[0].inputs[0], OnnxValue::Node(0)); // the model's input
/// assert!(matches!(nodes[0].inputs[1], OnnxValue::Ints(&[-1, 3]))); // the shape to reshape to
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OnnxValue {
    /// A workspace node (0 is the model's input).
    Node(usize),
    /// A value inside one step's operators: the step's output node and a number.
    Temp(usize, u8),
    /// The parameter that starts at this offset of the parameter buffer.
    Param(usize),
    /// The buffer that starts at this offset of the buffer list.
    Buffer(usize),
    /// A scalar constant of the model's element type.
    Scalar(f64),
    /// A constant int64 tensor of one axis (a shape, a permutation).
    Ints(&'static [i64]),
    /// A constant float32 tensor of one axis (`Resize`'s scales).
    Floats(&'static [f32]),
    /// An optional input left out (the empty name).
    Absent,
}

/// An attribute's value.
///
/// ```
/// # use kiln::prelude::*;
/// use kiln::onnx::{OnnxAttr, OnnxPlan, OnnxValue};
/// kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
/// let OnnxPlan::Graph(nodes) = Net::<f32>::SPEC.onnx else { panic!("every layer here exports") };
/// let ops: Vec<&str> = nodes.iter().map(|n| n.op).collect();
/// assert_eq!(ops, ["Reshape", "Gemm", "Relu", "Reshape", "Gemm"]); // a dense step takes rows
/// assert_eq!(nodes[1].attrs.iter().find(|(name, _)| *name == "transB").map(|a| a.1), Some(OnnxAttr::Int(1)));
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OnnxAttr {
    /// `INT`.
    Int(i64),
    /// `INTS`.
    Ints(&'static [i64]),
    /// `FLOAT`.
    Float(f32),
    /// `STRING`.
    Str(&'static str),
}

/// The IR version and opset the exporter writes.
///
/// ```
/// assert_eq!((kiln_runtime::onnx::IR_VERSION, kiln_runtime::onnx::OPSET), (8, 18));
/// ```
pub const IR_VERSION: i64 = 8;
/// The default domain's opset the exporter writes.
///
/// ```
/// assert!(kiln_runtime::onnx::OPSET >= 17); // LayerNormalization is in the default domain
/// ```
pub const OPSET: i64 = 18;

/// ONNX's element types (`TensorProto.DataType`).
const FLOAT: u64 = 1;
const INT64: u64 = 7;
const DOUBLE: u64 = 11;

/// The ONNX model of `spec` with these weights, as bytes.
///
/// ```
/// # use kiln::prelude::*;
/// kiln::model! { struct Net { input: [3], fc: Dense(4), Relu, out: Dense(2) } }
/// let net = Net::<f32>::new(0);
/// let bytes = kiln::onnx::to_onnx(Net::<f32>::SPEC, net.params().as_slice(), &[])?;
/// assert_eq!(bytes, net.to_onnx()?);
/// assert!(kiln::onnx::to_onnx(Net::<f32>::SPEC, &net.params().as_slice()[1..], &[]).is_err());
/// # Ok::<(), kiln::Error>(())
/// ```
///
/// # Errors
/// [`Error::OnnxUnsupported`] naming the first layer the exporter does not cover;
/// [`Error::ParameterLength`] if `params` or `buffers` is not as long as `spec` says.
pub fn to_onnx<T: Float>(spec: &ModelSpec, params: &[T], buffers: &[T]) -> Result<Vec<u8>> {
    crate::io::check_buffer_lengths(spec, params.len(), buffers.len())?;
    let nodes = match spec.onnx {
        OnnxPlan::Graph(nodes) => nodes,
        OnnxPlan::Unsupported { kind } => {
            return Err(Error::OnnxUnsupported {
                model: spec.name,
                layer: kind,
            })
        }
    };
    let elem = if T::DTYPE == "F32" { FLOAT } else { DOUBLE };
    // Constant tensors (scalars, shapes, scales), written as initializers after the
    // weights.
    let mut constants: Vec<Vec<u8>> = Vec::new();
    let mut constant = |dims: &[usize], data_type: u64, raw: &[u8]| {
        let name = format!("const{}", constants.len());
        constants.push(tensor_proto(&name, dims, data_type, raw));
        name
    };
    let ints =
        |values: &[i64]| -> Vec<u8> { values.iter().flat_map(|v| v.to_le_bytes()).collect() };
    let tensor_name = |table: &[crate::model::ParamInfo], offset: usize| {
        table
            .iter()
            .find(|p| p.offset == offset)
            .map(|p| p.full_name().into_owned())
            .ok_or_else(|| Error::Mismatch(format!("no tensor at offset {offset}")))
    };
    // A model with named inputs and outputs is fed and read by those names; the packed
    // input and every value inside get a prefix no Rust name has, so none collides
    // with a name the model chose.
    let named = !spec.input_ports.is_empty();
    let inner = if named { "kiln/" } else { "" };
    let node_name = |n: usize| match n {
        0 => format!("{inner}input"),
        n => format!("{inner}node{n}"),
    };
    let mut graph = Vec::new();
    // Named inputs, flattened per sample and concatenated into the packed input.
    if named {
        let mut parts = Vec::new();
        for (k, port) in spec.input_ports.iter().enumerate() {
            let shape = constant(&[2], INT64, &ints(&[-1, port.size as i64]));
            let flat = format!("{inner}in{k}");
            let reshape = node_proto(
                &[port.name.to_string(), shape],
                &flat,
                &format!("Reshape_in{k}"),
                "Reshape",
                &[],
            );
            field_bytes(&mut graph, 1, &reshape);
            parts.push(flat);
        }
        let concat = node_proto(
            &parts,
            &format!("{inner}input"),
            "Concat_inputs",
            "Concat",
            &[("axis", OnnxAttr::Int(1))],
        );
        field_bytes(&mut graph, 1, &concat);
    }
    let mut name_of = |value: &OnnxValue| -> Result<String> {
        Ok(match *value {
            OnnxValue::Node(n) => node_name(n),
            OnnxValue::Temp(n, k) => format!("{inner}node{n}_{k}"),
            OnnxValue::Param(offset) => tensor_name(spec.params, offset)?,
            OnnxValue::Buffer(offset) => tensor_name(spec.buffers, offset)?,
            OnnxValue::Absent => String::new(),
            OnnxValue::Scalar(v) => constant(&[], elem, &crate::io::to_bytes(&[T::from_f64(v)])),
            OnnxValue::Floats(values) => {
                let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                constant(&[values.len()], FLOAT, &raw)
            }
            OnnxValue::Ints(values) => constant(&[values.len()], INT64, &ints(values)),
        })
    };
    for (index, node) in nodes.iter().enumerate() {
        let inputs = node
            .inputs
            .iter()
            .map(&mut name_of)
            .collect::<Result<Vec<_>>>()?;
        let output = name_of(&node.output)?;
        let name = format!("{}_{index}", node.op);
        field_bytes(
            &mut graph,
            1,
            &node_proto(&inputs, &output, &name, node.op, node.attrs),
        );
    }
    // The output in the model's shape, whatever rank the last operator left; or each
    // named output in its own.
    let unnamed = [crate::outputs::Port {
        name: "output",
        size: 0,
        width: 0,
        shape: spec.output,
        node: spec.output_node,
    }];
    let outputs = if named {
        spec.output_ports
    } else {
        &unnamed[..]
    };
    for port in outputs {
        let shape: Vec<i64> = std::iter::once(-1)
            .chain(port.shape.iter().map(|&d| d as i64))
            .collect();
        let last = node_name(port.node);
        let shape = constant(&[shape.len()], INT64, &ints(&shape));
        let reshape = node_proto(
            &[last, shape],
            port.name,
            &format!("Reshape_{}", port.name),
            "Reshape",
            &[],
        );
        field_bytes(&mut graph, 1, &reshape);
    }
    field_bytes(&mut graph, 2, spec.name.as_bytes());
    for (tensors, data) in [(spec.params, params), (spec.buffers, buffers)] {
        // Counts (batch norm's `num_batches_tracked`) only matter to training.
        for p in tensors
            .iter()
            .filter(|p| p.kind == crate::model::TensorKind::Float)
        {
            let raw = crate::io::to_bytes(&data[p.range()]);
            field_bytes(
                &mut graph,
                5,
                &tensor_proto(&p.full_name(), p.shape, elem, &raw),
            );
        }
    }
    for t in &constants {
        field_bytes(&mut graph, 5, t);
    }
    if named {
        for port in spec.input_ports {
            field_bytes(&mut graph, 11, &value_info(port.name, elem, port.shape));
        }
    } else {
        field_bytes(&mut graph, 11, &value_info("input", elem, spec.input));
    }
    for port in outputs {
        field_bytes(&mut graph, 12, &value_info(port.name, elem, port.shape));
    }

    let mut model = Vec::new();
    field_varint(&mut model, 1, IR_VERSION as u64);
    field_bytes(&mut model, 2, b"kiln");
    field_bytes(&mut model, 3, env!("CARGO_PKG_VERSION").as_bytes());
    field_bytes(&mut model, 7, &graph);
    let mut opset = Vec::new();
    field_bytes(&mut opset, 1, b"");
    field_varint(&mut opset, 2, OPSET as u64);
    field_bytes(&mut model, 8, &opset);
    Ok(model)
}

/// `TensorProto` with its values as raw little-endian bytes.
fn tensor_proto(name: &str, dims: &[usize], data_type: u64, raw: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    for &d in dims {
        field_varint(&mut t, 1, d as u64);
    }
    field_varint(&mut t, 2, data_type);
    field_bytes(&mut t, 8, name.as_bytes());
    field_bytes(&mut t, 9, raw);
    t
}

/// `NodeProto`.
fn node_proto(
    inputs: &[String],
    output: &str,
    name: &str,
    op: &str,
    attrs: &[(&str, OnnxAttr)],
) -> Vec<u8> {
    let mut n = Vec::new();
    for input in inputs {
        field_bytes(&mut n, 1, input.as_bytes());
    }
    field_bytes(&mut n, 2, output.as_bytes());
    field_bytes(&mut n, 3, name.as_bytes());
    field_bytes(&mut n, 4, op.as_bytes());
    for (name, attr) in attrs {
        field_bytes(&mut n, 5, &attribute(name, attr));
    }
    n
}

/// `ValueInfoProto` of a tensor `[batch, dims…]`.
fn value_info(name: &str, elem: u64, dims: &[usize]) -> Vec<u8> {
    let mut shape = Vec::new();
    let mut batch = Vec::new();
    field_bytes(&mut batch, 2, b"batch");
    field_bytes(&mut shape, 1, &batch);
    for &d in dims {
        let mut dim = Vec::new();
        field_varint(&mut dim, 1, d as u64);
        field_bytes(&mut shape, 1, &dim);
    }
    let mut tensor = Vec::new();
    field_varint(&mut tensor, 1, elem);
    field_bytes(&mut tensor, 2, &shape);
    let mut ty = Vec::new();
    field_bytes(&mut ty, 1, &tensor);
    let mut info = Vec::new();
    field_bytes(&mut info, 1, name.as_bytes());
    field_bytes(&mut info, 2, &ty);
    info
}

/// `AttributeProto`.
fn attribute(name: &str, attr: &OnnxAttr) -> Vec<u8> {
    let mut a = Vec::new();
    field_bytes(&mut a, 1, name.as_bytes());
    match *attr {
        OnnxAttr::Float(f) => {
            key(&mut a, 2, 5);
            a.extend_from_slice(&f.to_le_bytes());
            field_varint(&mut a, 20, 1);
        }
        OnnxAttr::Int(i) => {
            field_varint(&mut a, 3, i as u64);
            field_varint(&mut a, 20, 2);
        }
        OnnxAttr::Str(text) => {
            field_bytes(&mut a, 4, text.as_bytes());
            field_varint(&mut a, 20, 3);
        }
        OnnxAttr::Ints(values) => {
            for &i in values {
                field_varint(&mut a, 8, i as u64);
            }
            field_varint(&mut a, 20, 7);
        }
    }
    a
}

// Protocol buffers' wire format, as much of it as the ONNX schema above needs: varints
// (wire type 0), length-delimited bytes and messages (2) and 32-bit floats (5).

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u32) {
    varint(out, u64::from(field << 3 | wire));
}

fn field_varint(out: &mut Vec<u8>, field: u32, v: u64) {
    key(out, field, 0);
    varint(out, v);
}

fn field_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    key(out, field, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_little_endian_groups_of_seven_bits() {
        let mut out = Vec::new();
        for v in [0, 1, 127, 128, 300, u64::MAX] {
            varint(&mut out, v);
        }
        assert_eq!(
            out,
            [
                0, 1, 127, 0x80, 1, 0xac, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                1
            ]
        );
        // A negative int64 is its two's complement, ten bytes.
        let mut out = Vec::new();
        field_varint(&mut out, 3, -1i64 as u64);
        assert_eq!(out.len(), 11);
    }
}
