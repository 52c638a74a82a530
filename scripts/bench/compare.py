"""Runs kiln's criterion benches and every peer framework back to back on this machine
and prints two tables: throughput (medians, the best peer, kiln's ratio to it, GFLOP/s)
and peak resident memory.

    python3 scripts/bench/compare.py [--python PEER_PYTHON] [--only WORKLOAD ...]

PEER_PYTHON is the interpreter that has PyTorch, JAX and TensorFlow installed
(scripts/bench/setup.sh makes one at ../bench-env/bin/python); the candle and burn
versions are the Rust crate in scripts/bench/rust-peers, built here with cargo. A peer
that is not available is reported as missing, with the reason.

Every (framework, workload) pair runs in a process of its own, so its peak RSS is that
workload's alone: the process's own VmHWM, which each one reports (wait4's figure,
the fallback, includes this script's resident set at fork). Training and batch-1024
inference are in samples/s (higher is better), batch-1 inference in µs (lower is
better). GFLOP/s counts each model's FLOPS_PER_SAMPLE (its compile-time constant) × 3
for a training step (forward plus a backward of twice the forward's work), × 1 for
inference; "faer GEMM" is faer's own GFLOP/s on the workload's largest matrix product,
measured by the same bench binary. "kiln loop" is kiln in the rust-peers crate's bare
loop, timed like candle and burn: a second reading of its speed and its peak RSS
without criterion in the process. The last line is the count of heap allocations per
training step, from tests/allocations.rs.
"""

import argparse
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
PEERS_CRATE = ROOT / "scripts" / "bench" / "rust-peers"
# Where criterion and the bench write (cargo's target directory, as cargo resolves it).
CRITERION = ROOT / os.environ.get("CARGO_TARGET_DIR", "target") / "criterion"

# (workload, criterion id, batch, unit)
WORKLOADS = [
    ("mlp_small", "train/mlp_small/128", 128, "samples/s"),
    ("mlp_wide", "train/mlp_wide/128", 128, "samples/s"),
    ("cnn", "train/cnn/64", 64, "samples/s"),
    ("lstm", "train/lstm/32", 32, "samples/s"),
    ("infer_1_us", "infer/mlp_small/1", 1, "µs"),
    ("infer_1024", "infer/mlp_small/1024", 1024, "samples/s"),
]
PYTHON_PEERS = ["pytorch", "jax", "tensorflow"]
RUST_PEERS = ["candle", "burn"]
# kiln in the rust-peers crate's bare loop: the same timing as candle and burn, and a
# peak RSS without criterion's statistics in the process. Never a "best peer".
KILN_LOOP = "kiln loop"


def run_measured(cmd, cwd=ROOT):
    """Runs `cmd`, returning (stdout, stderr, exit code, peak RSS in MiB).

    The RSS from wait4 is never below this Python process's own resident set when it
    forked (about 14 MiB): Linux carries the parent's high-water mark into the child.
    Every benchmark process therefore also reports its own VmHWM, which the callers
    prefer."""
    env = dict(os.environ, RAYON_NUM_THREADS="2", OMP_NUM_THREADS="2")
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=err, env=env)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return out.decode(), err.read().decode(errors="replace"), proc.returncode, usage.ru_maxrss / 1024


def cargo_executable(args, cwd):
    """Builds with `cargo args` and returns the path of the executable it produced."""
    out = subprocess.run(["cargo", *args, "--message-format=json"], cwd=cwd, check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    exes = [json.loads(line).get("executable") for line in out.splitlines() if line.startswith("{")]
    return [e for e in exes if e][-1]


def kiln_results(workloads):
    bench = cargo_executable(["bench", "--bench", "training", "--no-run"], ROOT)
    results, gemm = {}, {}
    for name, ident, batch, unit in workloads:
        # Each workload alone in its process (for its RSS), with its faer reference GEMM.
        # Batch-1 latency also with its floor: one core reading the weight once.
        extra = f"|stream/{name}" if name == "infer_1_us" else ""
        out, err, code, rss = run_measured([bench, "--bench", f"^({re.escape(ident)}|gemm/{name}{extra})$"])
        if code != 0:
            sys.exit(f"kiln bench {ident} failed:\n{err}")
        seconds = json.loads((CRITERION / ident / "new" / "estimates.json").read_text())["median"]["point_estimate"] * 1e-9
        reported = re.search(r"^peak_rss_kib (\d+)$", err, re.M)
        rss = int(reported.group(1)) / 1024 if reported else rss
        results[name] = {"value": seconds * 1e6 if unit == "µs" else batch / seconds, "rss": rss}
        gemm_dir = CRITERION / "gemm" / name / "new"
        gemm_seconds = json.loads((gemm_dir / "estimates.json").read_text())["median"]["point_estimate"] * 1e-9
        gemm_flops = json.loads((gemm_dir / "benchmark.json").read_text())["throughput"]["Elements"]
        gemm[name] = gemm_flops / gemm_seconds / 1e9
        if extra:
            stream = json.loads((CRITERION / "stream" / name / "new" / "estimates.json").read_text())
            results[name]["stream_us"] = stream["median"]["point_estimate"] * 1e-3
        print(f"kiln {name}: done", file=sys.stderr)
    flops = json.loads((CRITERION / "flops_per_sample.json").read_text())
    return results, gemm, flops


def peer_results(python, workloads):
    rust = RUST_PEERS + [KILN_LOOP]
    results = {p: {} for p in PYTHON_PEERS + rust}
    try:
        exe = cargo_executable(["build", "--release"], PEERS_CRATE)
    except subprocess.CalledProcessError as e:
        exe = None
        for p in rust:
            results[p]["missing"] = f"scripts/bench/rust-peers did not build ({e})"
    for name in workloads:
        for peer in PYTHON_PEERS + rust:
            if "missing" in results[peer]:
                continue
            if peer in PYTHON_PEERS:
                cmd = [python, str(ROOT / "scripts/bench/peers.py"), peer, name]
            else:
                cmd = [exe, "kiln" if peer == KILN_LOOP else peer, name]
            out, err, code, rss = run_measured(cmd)
            if code != 0:
                results[peer][name] = {"failed": err.strip().splitlines()[-1:] or ["?"]}
                continue
            value = json.loads(out.strip().splitlines()[-1])
            if "missing" in value:
                results[peer]["missing"] = value["missing"]
                continue
            if value.get("peak_rss_kib") is not None:
                rss = value["peak_rss_kib"] / 1024
            results[peer][name] = {"value": value["value"], "rss": rss}
            results[peer]["version"] = value["version"]
            print(f"{peer} {name}: done", file=sys.stderr)
    return results


def allocations_per_step():
    out = subprocess.run(["cargo", "test", "--release", "--test", "allocations", "--", "--nocapture",
                          "--test-threads=1"], cwd=ROOT, capture_output=True, text=True)
    return [line.split(" ... ")[-1].strip() for line in out.stdout.splitlines() if "allocations in" in line]


def table(header, rows):
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in [header] + rows]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--python", default=os.environ.get("KILN_BENCH_PYTHON", sys.executable))
    parser.add_argument("--only", nargs="*", default=None, help="workloads to run (default: all)")
    args = parser.parse_args()
    workloads = [w for w in WORKLOADS if args.only is None or w[0] in args.only]
    kiln, gemm, flops = kiln_results(workloads)
    peers = peer_results(args.python, [w[0] for w in workloads])
    names = [p for p in peers if p != KILN_LOOP]
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores\n")
    rows, rss_rows = [], []
    for name, _, _, unit in workloads:
        lower_better = unit == "µs"
        best = None
        for p in names:
            v = peers[p].get(name, {}).get("value")
            if v is not None and (best is None or (v < best[1] if lower_better else v > best[1])):
                best = (p, v)
        k = kiln[name]["value"]
        ratio = (best[1] / k if lower_better else k / best[1]) if best else float("nan")
        samples_per_s = 1e6 / k if lower_better else k
        model_flops = flops["mlp_small" if name.startswith("infer") else name]
        gflops = samples_per_s * model_flops * (1 if name.startswith("infer") else 3) / 1e9

        def cell(p, key, fmt):
            if "missing" in peers[p]:
                return "missing"
            entry = peers[p].get(name, {})
            return fmt.format(entry[key]) if key in entry else "failed"

        rows.append([f"{name} ({unit})", f"{k:,.1f}", cell(KILN_LOOP, "value", "{:,.1f}")]
                    + [cell(p, "value", "{:,.1f}") for p in names]
                    + [best[0] if best else "-", f"{ratio:.2f}x", f"{gflops:.1f}", f"{gemm[name]:.1f}"])
        rss_rows.append([name, f"{kiln[name]['rss']:,.0f}", cell(KILN_LOOP, "rss", "{:,.0f}")]
                        + [cell(p, "rss", "{:,.0f}") for p in names])
    print(table(["workload", "kiln", KILN_LOOP] + names
                + ["best peer", "kiln / best", "kiln GFLOP/s", "faer GEMM GFLOP/s"], rows))
    if "stream_us" in kiln.get("infer_1_us", {}):
        floor = kiln["infer_1_us"]["stream_us"]
        print(f"\ninfer_1_us floor: one core reads the 401 KB first-layer weight from its L2 in "
              f"{floor:.2f} µs (criterion stream/infer_1_us); two cores reading half each, "
              f"{floor / 2:.2f} µs before any hand-over")
    print("\npeak RSS (MiB), each workload in its own process (kiln: the criterion bench):\n")
    print(table(["workload", "kiln", KILN_LOOP] + names, rss_rows))
    print()
    for p in names + [KILN_LOOP]:
        print(f"{p}: " + (f"missing — {peers[p]['missing']}" if "missing" in peers[p] else peers[p].get("version", "?")))
        for name, _, _, _ in workloads:
            if "failed" in peers[p].get(name, {}):
                print(f"  {name} failed: {peers[p][name]['failed'][0]}")
    print("\nheap allocations per training step (tests/allocations.rs):")
    for line in allocations_per_step():
        print("  " + line)



if __name__ == "__main__":
    main()
