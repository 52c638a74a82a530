"""Data-parallel scaling of T1 and T2 on this machine: one process against MPI ranks.

    python3 scripts/bench/data_parallel.py [--rounds N] [--ranks P]

Builds benches/data_parallel.rs (the `mpi` feature, cargo's default release profile
and no RUSTFLAGS, as a user's crate builds kiln), then runs, round after round:

- "single": one process with P threads (RAYON_NUM_THREADS=P);
- "shm": P ranks of one thread each under mpirun, over shared memory;
- "tcp": the same over TCP (`--mca btl tcp,self`), as between machines.

Each run prints the median epoch's samples per second of `fit` at a global batch of
128 and, for the ranks, the median all-reduce of the gradient buffer. The script
reports, per workload, the efficiency ranks/single (data-parallel samples per second
over one process's: 1 means the ranks lose nothing to communication) as the median
of the per-round ratios with their range, and the all-reduce times. Needs Open MPI's
mpirun (as root it passes --allow-run-as-root).
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]


def build():
    env = dict(os.environ, RUSTFLAGS="")
    env.pop("CARGO_ENCODED_RUSTFLAGS", None)
    out = subprocess.run(
        ["cargo", "bench", "--features", "mpi", "--bench", "data_parallel", "--no-run",
         "--message-format=json"],
        cwd=ROOT, env=env, check=True, stdout=subprocess.PIPE, text=True,
    ).stdout
    for line in out.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message.get("executable") \
                and message["target"]["name"] == "data_parallel":
            return message["executable"]
    raise SystemExit("no data_parallel bench binary was built")


def run(binary, mode, ranks):
    env = dict(os.environ)
    if mode == "single":
        env.update(KILN_DP_BENCH="single", RAYON_NUM_THREADS=str(ranks))
        command = [binary]
    else:
        env.update(KILN_DP_BENCH="ranks", RAYON_NUM_THREADS="1")
        command = ["mpirun", "-np", str(ranks), "--oversubscribe",
                   "-x", "KILN_DP_BENCH", "-x", "RAYON_NUM_THREADS"]
        if os.geteuid() == 0:
            command.append("--allow-run-as-root")
        if mode == "tcp":
            command += ["--mca", "btl", "tcp,self"]
        command.append(binary)
    out = subprocess.run(command, env=env, check=True, stdout=subprocess.PIPE,
                         text=True).stdout
    return {r["workload"]: r for r in map(json.loads, filter(None, out.splitlines()))}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ranks", type=int, default=2)
    args = parser.parse_args()
    binary = build()
    print(f"{binary}\n{os.cpu_count()} CPUs; {args.rounds} rounds of single, shm, tcp\n")
    rounds = []
    for i in range(args.rounds):
        results = {mode: run(binary, mode, args.ranks) for mode in ("single", "shm", "tcp")}
        rounds.append(results)
        line = "  ".join(
            f"{w}: single {results['single'][w]['samples_per_s']:.0f}/s "
            f"shm {results['shm'][w]['samples_per_s']:.0f}/s "
            f"tcp {results['tcp'][w]['samples_per_s']:.0f}/s"
            for w in results["single"])
        print(f"round {i + 1}: {line}", flush=True)
    print()
    print("| workload | gradient | one process, samples/s | efficiency shm (range) "
          "| efficiency tcp (range) | all-reduce shm | all-reduce tcp |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for w in rounds[0]["single"]:
        single = [r["single"][w]["samples_per_s"] for r in rounds]
        cells = []
        for mode in ("shm", "tcp"):
            ratios = [r[mode][w]["samples_per_s"] / r["single"][w]["samples_per_s"]
                      for r in rounds]
            cells.append(f"{statistics.median(ratios):.3f} "
                         f"({min(ratios):.3f}–{max(ratios):.3f})")
        times = [f"{statistics.median(r[mode][w]['allreduce_ms'] for r in rounds):.3f} ms"
                 for mode in ("shm", "tcp")]
        megabytes = rounds[0]["shm"][w]["params"] * 4 / 1e6
        print(f"| {w} | {megabytes:.2f} MB | {statistics.median(single):.0f} | "
              f"{cells[0]} | {cells[1]} | {times[0]} | {times[1]} |")


if __name__ == "__main__":
    main()
