#!/usr/bin/env python3
"""Runs kiln's exported ONNX models in ONNX Runtime and writes the test fixture.

    KILN_ONNX_WRITE=target/onnx cargo test --release --test onnx
    python3 scripts/onnx/check.py target/onnx

Reads `<dir>/kiln.json` (per model: the batch, its input and kiln's output) and
`<dir>/<model>.onnx`; checks each file with `onnx.checker` (full check, shapes
inferred), runs it in ONNX Runtime on the CPU (a model with named inputs and outputs
fed and read by name), prints the largest difference from
kiln's output, and writes tests/fixtures/onnx_runtime.json: per model the FNV-1a hash
of the bytes and ONNX Runtime's output. Needs `pip install onnx onnxruntime numpy`.
Exits non-zero if any model differs from kiln by more than 1e-5.
"""
import json
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort

TOLERANCE = 1e-5


def fnv(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def main() -> int:
    src = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/onnx")
    kiln = json.loads((src / "kiln.json").read_text())
    models = {}
    worst_overall = 0.0
    for name, entry in sorted(kiln.items()):
        data = (src / f"{name}.onnx").read_bytes()
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model, full_check=True)
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        # kiln packs each sample's inputs one after the other and its outputs likewise;
        # a model with named inputs and outputs takes and gives them one by one.
        packed = np.asarray(entry["input"], dtype=np.float32).reshape(entry["batch"], -1)
        feed, at = {}, 0
        for value in model.graph.input:
            shape = [d.dim_value for d in value.type.tensor_type.shape.dim[1:]]
            size = int(np.prod(shape))
            feed[value.name] = packed[:, at:at + size].reshape([entry["batch"], *shape])
            at += size
        assert at == packed.shape[1], f"{name}: inputs take {at} of {packed.shape[1]} values"
        outputs = session.run([o.name for o in model.graph.output], feed)
        y = np.concatenate([o.reshape(entry["batch"], -1) for o in outputs], axis=1).reshape(-1)
        worst = float(np.max(np.abs(y - np.asarray(entry["kiln"], dtype=np.float32))))
        worst_overall = max(worst_overall, worst)
        print(f"{name}: {len(model.graph.node)} nodes, outputs {y.size}, max |kiln - ORT| = {worst:.3g}")
        models[name] = {"fnv": fnv(data), "output": [float(v) for v in y], "max_abs_diff": worst}
    out = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "onnx_runtime.json"
    fixture = {
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "tolerance": TOLERANCE,
        "models": models,
    }
    out.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {out}; worst difference {worst_overall:.3g}")
    return 0 if worst_overall <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
