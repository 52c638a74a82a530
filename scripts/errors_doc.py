"""Regenerates docs/errors.md from the UI tests' sources and blessed .stderr files."""

import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

rows = []
for stderr in sorted(glob.glob(os.path.join(ROOT, "tests/ui/*/*.stderr"))):
    source = stderr[: -len(".stderr")] + ".rs"
    what = open(source).read().splitlines()[0].lstrip("/ ").rstrip(".")
    lines = open(stderr).read().splitlines()
    messages = [l[len("error: "):] for l in lines if l.startswith("error: ")]
    messages = messages or [l for l in lines if l.startswith("error[")]
    rows.append((os.path.relpath(source, ROOT), what, messages))

out = [
    "# Compile errors of `model!`",
    "",
    "Every mistake the macro reports, with the message it prints. Each has a UI test,",
    "`tests/ui/<category>/<mistake>.rs`, whose `.stderr` shows the full diagnostic with",
    "the span; this page is generated from them (`python3 scripts/errors_doc.py`).",
    "`tests/ui.rs::every_message_has_a_ui_test` fails when a message in the macro's",
    "source appears in no `.stderr`.",
    "",
    "Messages are spanned on the token at fault, errors are collected (a model with three",
    "mistakes reports three), and a model that fails still declares its struct, so code",
    'that names it does not add "cannot find type" errors.',
    "",
]
for rel, what, messages in rows:
    out += [f"## {what}", "", f"`{rel}`", "", "```text", *messages, "```", ""]
out += [
    "## Re-blessing",
    "",
    "The `.stderr` files were blessed with rustc 1.95.0. Compiler output can drift between",
    "Rust versions; to re-bless, run `TRYBUILD=overwrite cargo test --test ui`, review the",
    "diff of `tests/ui/**/*.stderr`, then regenerate this page.",
]
with open(os.path.join(ROOT, "docs/errors.md"), "w") as f:
    f.write("\n".join(out) + "\n")
