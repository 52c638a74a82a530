"""Times kiln as a user's crate builds it against the same code built for this processor.

    python3 scripts/bench/flags.py [--rounds N] [--only WORKLOAD ...]

A crate that depends on kiln compiles it with cargo's defaults: the x86-64 baseline
(no `-C target-cpu`), a release profile of 16 codegen units and no LTO. This script
builds kiln's bare benchmark loop (scripts/bench/rust-peers without its peers) twice
with that profile, once with no RUSTFLAGS at all ("user") and once with
`-C target-cpu=native` ("native"), then runs every workload with the two binaries
alternately, `--rounds` times each, and prints the medians and user/native (for
batch-1 latency native/user, so that above 1 is always "the user's build is faster").
Kiln chooses its vector instructions at run time, so the ratio should be 1 within the
machine's noise; each run is a separate process, as a user's program is.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRATE = ROOT / "scripts" / "bench" / "rust-peers"
WORKLOADS = ["mlp_small", "mlp_wide", "cnn", "lstm", "infer_1_us", "infer_1024", "transformer", "resnet20"]
BUILDS = {"user": "", "native": "-C target-cpu=native"}


def build(name, flags):
    target = ROOT / "target" / f"flags-{name}"
    env = dict(os.environ)
    # An empty RUSTFLAGS also overrides any `build.rustflags` in a cargo config.
    env.update(
        RUSTFLAGS=flags,
        CARGO_TARGET_DIR=str(target),
        CARGO_PROFILE_RELEASE_LTO="false",
        CARGO_PROFILE_RELEASE_CODEGEN_UNITS="16",
    )
    env.pop("CARGO_ENCODED_RUSTFLAGS", None)
    subprocess.run(
        ["cargo", "build", "--release", "--no-default-features", "--quiet"],
        cwd=CRATE,
        env=env,
        check=True,
    )
    return target / "release" / "kiln-bench-peers"


def run(binary, workload):
    env = dict(os.environ)
    env.setdefault("RAYON_NUM_THREADS", str(os.cpu_count() or 1))
    out = subprocess.run(
        [str(binary), "kiln", workload],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])["value"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=WORKLOADS)
    args = parser.parse_args()
    binaries = {name: build(name, flags) for name, flags in BUILDS.items()}
    print("| workload | user build | native build | user / native |")
    print("| --- | ---: | ---: | ---: |")
    for workload in args.only or WORKLOADS:
        values = {name: [] for name in BUILDS}
        for _ in range(args.rounds):
            for name, binary in binaries.items():
                values[name].append(run(binary, workload))
        user, native = (statistics.median(values[n]) for n in ("user", "native"))
        latency = workload == "infer_1_us"
        ratio = native / user if latency else user / native
        unit = "µs" if latency else "samples/s"
        print(f"| {workload} | {user:,.1f} {unit} | {native:,.1f} {unit} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
