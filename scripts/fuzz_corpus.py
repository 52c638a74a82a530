#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets into fuzz/corpus/<target>/.

IDX and CSV seeds are small valid files (raw and gzip) and a few near misses; the
safetensors seeds are a valid file for the fuzz model (`Fuzzed` in fuzz/src/targets.rs)
in F32 and F64, strict and renamed; the DSL seeds are the bodies of every `model!` in
tests/ and examples/. The first byte of a CSV or safetensors seed picks the target's
options. Run from the repository root: python3 scripts/fuzz_corpus.py
"""
import gzip
import json
import pathlib
import re
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "corpus"


def write(target, name, data):
    path = OUT / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def gz(data):
    return gzip.compress(data, mtime=0)


def idx(dims, data):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + bytes(data)


def safetensors(tensors, prefix=""):
    header, blobs, offset = {}, [], 0
    for name, (dtype, shape, values) in tensors.items():
        fmt = {"F32": "<f", "F64": "<d", "I64": "<q"}[dtype]
        blob = b"".join(struct.pack(fmt, v) for v in values)
        header[prefix + name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def fuzzed_model(dtype):
    def t(shape, fill):
        n = 1
        for d in shape:
            n *= d
        return (dtype, shape, [fill(i) for i in range(n)])

    return {
        "conv.weight": t([2, 1, 3, 3], lambda i: 0.1 * (i % 5) - 0.2),
        "conv.bias": t([2], lambda i: 0.01 * i),
        "bn.weight": t([2], lambda i: 1.0),
        "bn.bias": t([2], lambda i: 0.0),
        "bn.running_mean": t([2], lambda i: 0.5),
        "bn.running_var": t([2], lambda i: 1.5),
        "bn.num_batches_tracked": ("I64", [], [7]),
        "out.weight": t([3, 32], lambda i: 0.01 * (i % 7)),
        "out.bias": t([3], lambda i: -0.1),
    }


def main():
    # IDX: images and labels, raw and gzip, and a truncated one.
    images = idx([3, 2, 2], range(12))
    labels = idx([3], [0, 1, 2])
    for name, data in {"images": images, "labels": labels, "truncated": images[:-3]}.items():
        write("idx", name, data)
        write("idx", name + ".gz", gz(data))
    # CSV: first byte = options (header rule, label column, non-finite allowed).
    rows = b"a,b,c,label\n0.5,1,2,3\n1e-3, 2 ,\"3\",0\n\n4,5,6,4\n"
    for choice, body in {
        0: rows,
        1: rows,
        2: rows.split(b"\n", 1)[1],
        4: b"1,0.5,1,2\n0,1,1,1\n",
        8: b"nan,1,2,1\ninf,-inf,0,2\n",
        0x10: b"\xef\xbb\xbfx,y,z,l\n1,2,3,1\n",
    }.items():
        write("csv", f"seed{choice:02x}", bytes([choice]) + body)
        write("csv", f"seed{choice:02x}.gz", bytes([choice]) + gz(body))
    # Safetensors: first byte = options (bit 0: not strict, bit 1: rename "net." -> "").
    write("safetensors", "f32", b"\x00" + safetensors(fuzzed_model("F32")))
    write("safetensors", "f64", b"\x00" + safetensors(fuzzed_model("F64")))
    write("safetensors", "renamed", b"\x02" + safetensors(fuzzed_model("F32"), "net."))
    partial = {k: v for k, v in fuzzed_model("F32").items() if not k.startswith("out.")}
    write("safetensors", "partial", b"\x01" + safetensors(partial))
    # DSL: every model! body of the tests and examples, with the blocks before it.
    seen = set()
    for path in sorted(list(ROOT.glob("tests/**/*.rs")) + list(ROOT.glob("examples/*.rs"))):
        text = path.read_text()
        for match in re.finditer(r"model!\s*\{", text):
            depth, start = 1, match.end()
            i = start
            while i < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                i += 1
            body = text[start : i - 1].strip()
            if body and body not in seen:
                seen.add(body)
                write("dsl", f"{path.stem}-{len(seen):03}", body.encode())


if __name__ == "__main__":
    main()
