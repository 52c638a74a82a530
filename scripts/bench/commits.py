"""Measures what each commit bought: kiln's bare loop built at every commit given, run
in alternation, and each commit's ratio to the one before it.

    python3 scripts/bench/commits.py COMMIT COMMIT ... [--rounds N] [--only WORKLOAD ...]

Every commit is checked out in a worktree under target/commits/ and its bare benchmark
loop (scripts/bench/rust-peers without its peers) built as a user's crate builds kiln
(no RUSTFLAGS, cargo's default release profile: flags.py's "user" build), all into one
target directory so that the dependencies build once. A round runs each workload with
every commit's binary, each in a process of its own, in an order that rotates every
round and reverses every other one, so that no commit always runs after the same other.
For each commit after the first the table gives the median of the per-round ratios to
the commit before it, with the lowest and highest ("above 1: faster", batch-1 latency
included): a slow phase of the host moves a round's figures together and cancels in
its ratio. Commits must contain scripts/bench/rust-peers with the workloads asked for.
"""

import argparse
import os
import pathlib
import shutil
import statistics
import subprocess

import flags

ROOT = flags.ROOT
WORK = ROOT / "target" / "commits"


def build(commit):
    """The bare loop at `commit`, built as flags.py's user build, copied out of the shared
    target directory."""
    sha = subprocess.run(["git", "rev-parse", "--short", commit], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    tree = WORK / f"tree-{sha}"
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--quiet", "--detach", str(tree), sha],
                       cwd=ROOT, check=True)
    env = dict(os.environ)
    env.update(
        RUSTFLAGS="",
        CARGO_TARGET_DIR=str(WORK / "target"),
        CARGO_PROFILE_RELEASE_LTO="false",
        CARGO_PROFILE_RELEASE_CODEGEN_UNITS="16",
    )
    env.pop("CARGO_ENCODED_RUSTFLAGS", None)
    subprocess.run(["cargo", "build", "--release", "--no-default-features", "--quiet"],
                   cwd=tree / "scripts" / "bench" / "rust-peers", env=env, check=True)
    binary = WORK / f"kiln-{sha}"
    shutil.copy(WORK / "target" / "release" / "kiln-bench-peers", binary)
    return sha, binary


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", nargs="*", choices=flags.WORKLOADS)
    parser.add_argument("commits", nargs="+")
    args = parser.parse_args()
    if len(args.commits) < 2:
        parser.error("give at least two commits, oldest first")
    WORK.mkdir(parents=True, exist_ok=True)
    binaries = [build(c) for c in args.commits]
    workloads = args.only or flags.WORKLOADS
    values = {(sha, w): [] for sha, _ in binaries for w in workloads}
    for r in range(args.rounds):
        for w in workloads:
            shift = r % len(binaries)
            order = binaries[shift:] + binaries[:shift]
            for sha, binary in order[::-1] if r % 2 else order:
                values[(sha, w)].append(flags.run(binary, w))
    print("| workload | " + " | ".join(sha for sha, _ in binaries) + " |")
    print("| --- |" + " --- |" * len(binaries))
    for w in workloads:
        latency = w == "infer_1_us"
        cells = []
        for i, (sha, _) in enumerate(binaries):
            median = statistics.median(values[(sha, w)])
            cell = f"{median:,.1f}"
            if i > 0:
                before = values[(binaries[i - 1][0], w)]
                ratios = [b / a if latency else a / b for a, b in zip(values[(sha, w)], before)]
                cell += f": {statistics.median(ratios):.3f} ({min(ratios):.3f}–{max(ratios):.3f})"
            cells.append(cell)
        print(f"| {w} ({'µs' if latency else 'samples/s'}) | " + " | ".join(cells) + " |")
    print("\nworktrees are in target/commits/; `git worktree prune` after removing it")


if __name__ == "__main__":
    main()
