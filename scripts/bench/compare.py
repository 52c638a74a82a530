"""Runs kiln and every peer framework on every benchmark workload, interleaved over
several rounds, and prints kiln's ratio to the best peer as the median of the rounds'
ratios, with their spread, beside GFLOP/s nominal and performed against the machine's
measured peak, and peak resident memory.

    python3 scripts/bench/compare.py [--python PEER_PYTHON] [--rounds N] [--only WORKLOAD ...]
                                     [--peers PEER ...]

PEER_PYTHON is the interpreter that has PyTorch, JAX and TensorFlow installed
(scripts/bench/setup.sh makes one at ../bench-env/bin/python); candle and burn are the
Rust crate in scripts/bench/rust-peers, built here with cargo. A peer that is not
installed is reported as missing, a workload a peer has not been written for as absent.

How it measures:

- kiln runs in the same crate's bare loop, built as a crate that depends on kiln builds
  it (scripts/bench/flags.py's "user" build: no RUSTFLAGS, cargo's default release
  profile), so no flag or profile of this repository helps it.
- A round runs every (framework, workload) pair once, each in a process of its own (so
  its peak RSS is that workload's alone: the process's own VmHWM). A workload's
  frameworks run one after another, in an order that rotates every round, so that no
  framework always runs first or last after another's heat.
- Each round gives kiln's ratio to the best peer *of that round*; the table prints the
  median over rounds, with the lowest and highest. A slow phase of a shared host then
  moves one round's figures together instead of deciding the ratio.
- Training and batch-1024 inference are in samples/s (higher is better), batch-1
  latency in µs (lower is better); ratios are always "above 1: kiln is faster".
- GFLOP/s: "nominal" is the model's forward FLOPs per sample (its FLOPS_PER_SAMPLE
  constant) × 3 for a training step, × 1 for inference; "performed" subtracts what
  kiln's step never computes (SKIPPED below). "peak" is the processor's f32 FMA peak on
  the same two threads, measured every round by the same binary (rust-peers' peak.rs);
  "% peak" is performed over the median peak.
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import flags  # noqa: E402  (the user build of kiln's loop)

ROOT = pathlib.Path(__file__).resolve().parents[2]
PEERS_CRATE = ROOT / "scripts" / "bench" / "rust-peers"

# (workload, issue's name, batch, unit)
WORKLOADS = [
    ("mlp_small", "T1", 128, "samples/s"),
    ("mlp_wide", "T2", 128, "samples/s"),
    ("cnn", "T3", 64, "samples/s"),
    ("lstm", "T5", 32, "samples/s"),
    ("infer_1_us", "T4", 1, "µs"),
    ("infer_1024", "T4", 1024, "samples/s"),
    ("transformer", "T6", 32, "samples/s"),
    ("resnet20", "T7", 64, "samples/s"),
]
PYTHON_PEERS = ["pytorch", "pytorch-compile", "jax", "tensorflow"]
RUST_PEERS = ["candle", "burn"]
KILN = "kiln"


def _conv(c_in, c_out, k, positions):
    """FLOPs of one product of a convolution: 2 · (c_in·k²) · c_out per output position."""
    return 2 * c_in * k * k * c_out * positions


def _causal_skipped(steps, dim, layers):
    """FLOPs per training sample that causal self-attention in blocks of queries
    (runtime/src/layers/attention.rs: a multiple of 16 rows, at most 16 blocks) never
    computes: the scores above each block's last key and their products, forward
    (`q kᵀ`, `p v`: 2 FLOPs a multiply-add, over all heads' `dim` values) and backward
    (four products), 3 × forward in all, for each of `layers` attention layers."""
    rows = -(-steps // 16)  # ceil(steps / 16): at most 16 blocks,
    block = max(16, -(-rows // 16) * 16)  # of a multiple of 16 rows, at least 16
    seen = sum(min(block, steps - first) * min(first + block, steps) for first in range(0, steps, block))
    return 3 * layers * 4 * dim * (steps * steps - seen)


# FLOPs per sample that the nominal count (3 × forward) includes but kiln's training step
# never performs. The first layer's input gradient is never computed (the input has no
# gradient). The benchmark CNN's second convolution takes the sparse backward on f32 with
# AVX-512F (runtime/src/layers/sparse.rs): after ReLU and 2x2 max pooling (floor) of its
# 11x11 output, at most 25 of 121 positions per channel get a gradient, so its two
# backward products do at most 25/121 of their dense work; the skipped share is counted
# from that bound, so "performed" never counts less than was done.
SKIPPED = {
    "mlp_small": 2 * 784 * 128,
    "mlp_wide": 2 * 784 * 1024,
    "cnn": _conv(1, 32, 3, 26 * 26),
    "lstm": 2 * 64 * 4 * 128 * 32,
    # The first layer is an embedding: no product on its input; two causal attention
    # layers skip the scores their mask hides.
    "transformer": _causal_skipped(64, 128, 2),
    "resnet20": _conv(3, 16, 3, 32 * 32),
}
SPARSE_CNN = 2 * _conv(32, 64, 3, 11 * 11) * (1 - 25 / 121)


def has_avx512f():
    try:
        return " avx512f " in " " + pathlib.Path("/proc/cpuinfo").read_text().replace("\n", " ") + " "
    except OSError:
        return False


def processor_name():
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_measured(cmd, cwd=ROOT):
    """Runs `cmd` on two threads, returning (stdout, stderr, exit code, peak RSS in MiB).

    The RSS from wait4 is never below this Python process's own resident set when it
    forked (about 14 MiB): Linux carries the parent's high-water mark into the child.
    Every benchmark process therefore also reports its own VmHWM, which is preferred."""
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


def commands(python, peers):
    """The command line of each framework (workload appended), and the reasons of those
    that cannot run at all."""
    cmds, missing = {KILN: [str(flags.build("user", ""))]}, {}
    if any(p in RUST_PEERS for p in peers):
        try:
            exe = cargo_executable(["build", "--release", "--quiet"], PEERS_CRATE)
            cmds.update({p: [exe, p] for p in RUST_PEERS if p in peers})
        except subprocess.CalledProcessError as e:
            missing.update({p: f"scripts/bench/rust-peers did not build ({e})" for p in RUST_PEERS})
    for p in PYTHON_PEERS:
        if p in peers:
            cmds[p] = [python, str(ROOT / "scripts/bench/peers.py"), p]
    cmds[KILN] = cmds[KILN] + [KILN]
    return cmds, missing


def run_once(cmd, workload):
    """One process: {"value", "rss", ...}, {"absent"/"missing": why} or {"failed": why}."""
    out, err, code, rss = run_measured(cmd + [workload])
    if code != 0:
        return {"failed": (err.strip().splitlines() or ["exit code %d" % code])[-1]}
    value = json.loads(out.strip().splitlines()[-1])
    if "missing" in value or "absent" in value:
        return value
    if value.get("peak_rss_kib") is not None:
        rss = value["peak_rss_kib"] / 1024
    return dict(value, rss=rss)


def measure(cmds, workloads, rounds):
    """results[framework][workload] = list of per-round entries; peaks = per-round GFLOP/s."""
    names = list(cmds)
    results = {p: {w[0]: [] for w in workloads} for p in names}
    peaks, peak_isa = [], None
    for r in range(rounds):
        out, _, code, _ = run_measured(cmds[KILN][:-1] + ["peak"])
        if code == 0 and "value" in json.loads(out):
            peak = json.loads(out)
            peaks.append(peak["value"])
            peak_isa = peak["version"]
        for name, *_ in workloads:
            order = names[r % len(names):] + names[:r % len(names)]
            for p in order:
                entry = run_once(cmds[p], name)
                results[p][name].append(entry)
                shown = f"{entry['value']:,.1f}" if "value" in entry else next(iter(entry.values()))
                print(f"round {r + 1}/{rounds} {name} {p}: {shown}", file=sys.stderr, flush=True)
    return results, peaks, peak_isa


def table(header, rows):
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in [header] + rows]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def values(entries):
    return [e["value"] for e in entries if "value" in e]


def cell(entries, key="value", fmt="{:,.1f}"):
    got = [e[key] for e in entries if key in e]
    if got:
        return fmt.format(statistics.median(got))
    for e in entries:
        for why in ("missing", "absent", "failed"):
            if why in e:
                return why
    return "-"


def report(results, peaks, peak_isa, workloads, missing, rounds):
    peers = [p for p in results if p != KILN]
    peak = statistics.median(peaks) if peaks else None
    print(f"\nmachine: {processor_name()}, {os.cpu_count()} logical CPUs; {rounds} rounds; "
          + (f"measured f32 FMA peak {peak:,.1f} GFLOP/s ({peak_isa}; rounds "
             f"{min(peaks):,.1f} to {max(peaks):,.1f})" if peak else "FMA peak not measured") + "\n")
    rows, rss_rows = [], []
    for name, tag, _, unit in workloads:
        lower_better = unit == "µs"
        kiln = results[KILN][name]
        ratios, best_counts = [], {}
        for r in range(rounds):
            k = kiln[r].get("value")
            round_best = None
            for p in peers:
                v = results[p][name][r].get("value")
                if v is not None and (round_best is None or (v < round_best[1] if lower_better else v > round_best[1])):
                    round_best = (p, v)
            if k is not None and round_best is not None:
                ratios.append(round_best[1] / k if lower_better else k / round_best[1])
                best_counts[round_best[0]] = best_counts.get(round_best[0], 0) + 1
        best = ", ".join(f"{p} ×{n}" for p, n in sorted(best_counts.items(), key=lambda i: -i[1])) or "-"
        ratio = (f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}–{max(ratios):.2f})"
                 if ratios else "-")
        k_values = values(kiln)
        nominal = performed = pct = "-"
        if k_values and "flops_per_sample" in kiln[0]:
            median = statistics.median(k_values)
            per_second = 1e6 / median if lower_better else median
            forward = kiln[0]["flops_per_sample"]
            if name.startswith("infer"):
                nominal_flops = performed_flops = forward
            else:
                nominal_flops = 3 * forward
                performed_flops = nominal_flops - SKIPPED[name]
                if name == "cnn" and has_avx512f():
                    performed_flops -= SPARSE_CNN
            nominal = f"{per_second * nominal_flops / 1e9:.1f}"
            performed = f"{per_second * performed_flops / 1e9:.1f}"
            if peak:
                pct = f"{100 * per_second * performed_flops / 1e9 / peak:.0f} %"
        rows.append([f"{tag} {name} ({unit})", cell(kiln)] + [cell(results[p][name]) for p in peers]
                    + [best, ratio, nominal, performed, pct])
        rss_rows.append([f"{tag} {name}", cell(kiln, "rss", "{:,.0f}")]
                        + [cell(results[p][name], "rss", "{:,.0f}") for p in peers])
    print(table(["workload", KILN] + peers + ["best peer (rounds)", "kiln / best: median (range)",
                                              "GFLOP/s nominal", "performed", "% peak"], rows))
    print("\npeak RSS (MiB, median over rounds), each workload in its own process:\n")
    print(table(["workload", KILN] + peers, rss_rows))
    print()
    for p in [KILN] + peers:
        entries = [e for w in results[p].values() for e in w]
        version = next((e["version"] for e in entries if "version" in e), None)
        why = missing.get(p) or next((e["missing"] for e in entries if "missing" in e), None)
        print(f"{p}: " + (version or f"missing — {why}"))
        for name, *_ in workloads:
            failed = [e["failed"] for e in results[p][name] if "failed" in e]
            if failed:
                print(f"  {name} failed in {len(failed)} of {rounds} rounds: {failed[0]}")


def allocations_per_step():
    out = subprocess.run(["cargo", "test", "--release", "--test", "allocations", "--", "--nocapture",
                          "--test-threads=1"], cwd=ROOT, capture_output=True, text=True)
    return [line.split(" ... ")[-1].strip() for line in out.stdout.splitlines() if "allocations in" in line]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=os.environ.get("KILN_BENCH_PYTHON", sys.executable))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", nargs="*", choices=[w[0] for w in WORKLOADS], help="workloads (default: all)")
    parser.add_argument("--peers", nargs="*", choices=PYTHON_PEERS + RUST_PEERS, default=PYTHON_PEERS + RUST_PEERS)
    parser.add_argument("--no-allocations", action="store_true", help="skip the allocation count")
    args = parser.parse_args()
    workloads = [w for w in WORKLOADS if args.only is None or w[0] in args.only]
    cmds, missing = commands(args.python, args.peers)
    results, peaks, peak_isa = measure(cmds, workloads, args.rounds)
    for p, why in missing.items():
        results[p] = {w[0]: [{"missing": why}] * args.rounds for w in workloads}
    report(results, peaks, peak_isa, workloads, missing, args.rounds)
    if not args.no_allocations:
        print("\nheap allocations per training step (tests/allocations.rs):")
        for line in allocations_per_step():
            print("  " + line)


if __name__ == "__main__":
    main()
