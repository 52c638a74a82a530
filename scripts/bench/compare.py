"""Runs kiln's criterion benches and the peer frameworks back to back on this machine
and prints one table: medians, the best peer, and kiln's ratio to it.

    python3 scripts/bench/compare.py [--python PEER_PYTHON]

PEER_PYTHON is the interpreter that has the peers installed (scripts/bench/setup.sh
makes one at ../bench-env/bin/python); peers it lacks are reported as missing. Training
and batch-1024 inference are in samples/s (higher is better), batch-1 inference in µs
(lower is better). GFLOP/s counts forward FLOPs × 3 for a training step (forward plus a
backward of twice the forward's work), forward FLOPs for inference.
"""

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]

# (workload, criterion id, batch, forward FLOPs per sample, unit)
WORKLOADS = [
    ("mlp_small", "train/mlp_small/128", 128, 2 * 784 * 128 + 2 * 128 * 10, "samples/s"),
    ("mlp_wide", "train/mlp_wide/128", 128, 2 * (784 * 1024 + 1024 * 1024 + 1024 * 10), "samples/s"),
    ("cnn", "train/cnn/64", 64, 2 * (26 * 26 * 32 * 9 + 11 * 11 * 64 * 32 * 9 + 1600 * 128 + 128 * 10), "samples/s"),
    ("lstm", "train/lstm/32", 32, 32 * 2 * 512 * (64 + 128) + 2 * 128 * 10, "samples/s"),
    ("infer_1_us", "infer/mlp_small/1", 1, 2 * 784 * 128 + 2 * 128 * 10, "µs"),
    ("infer_1024", "infer/mlp_small/1024", 1024, 2 * 784 * 128 + 2 * 128 * 10, "samples/s"),
]


def kiln_results():
    subprocess.run(["cargo", "bench", "--bench", "training"], cwd=ROOT, check=True)
    out = {}
    for name, ident, batch, _, unit in WORKLOADS:
        estimates = ROOT / "target" / "criterion" / ident / "new" / "estimates.json"
        seconds = json.loads(estimates.read_text())["median"]["point_estimate"] * 1e-9
        out[name] = seconds * 1e6 if unit == "µs" else batch / seconds
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--python", default=os.environ.get("KILN_BENCH_PYTHON", sys.executable))
    args = parser.parse_args()
    kiln = kiln_results()
    peers_run = subprocess.run([args.python, str(ROOT / "scripts/bench/peers.py")], capture_output=True, text=True)
    if peers_run.returncode != 0:
        print(peers_run.stderr, file=sys.stderr)
        sys.exit("peers.py failed")
    peers = json.loads(peers_run.stdout)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores\n")
    names = list(peers)
    header = ["workload", "kiln"] + names + ["best peer", "kiln / best", "kiln GFLOP/s"]
    rows = []
    for name, _, _, flops, unit in WORKLOADS:
        lower_better = unit == "µs"
        values = {p: peers[p].get(name) for p in names if "missing" not in peers[p]}
        best = None
        for p, v in values.items():
            if v is not None and (best is None or (v < best[1] if lower_better else v > best[1])):
                best = (p, v)
        k = kiln[name]
        ratio = (best[1] / k if lower_better else k / best[1]) if best else float("nan")
        samples_per_s = 1e6 / k if lower_better else k
        gflops = samples_per_s * flops * (1 if name.startswith("infer") else 3) / 1e9
        cells = [f"{name} ({unit})", f"{k:,.1f}"]
        cells += [f"{peers[p][name]:,.1f}" if p in values and values[p] is not None else "missing" for p in names]
        cells += [best[0] if best else "-", f"{ratio:.2f}x", f"{gflops:.1f}"]
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    for p in names:
        if "missing" in peers[p]:
            print(f"{p}: missing — {peers[p]['missing']}")
        else:
            print(f"{p}: {peers[p].get('version', '?')}")


if __name__ == "__main__":
    main()
