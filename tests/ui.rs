//! Compile-time behaviour of `model!`: every mistake the macro reports, one per file
//! with its expected message in the `.stderr` beside it, and valid models that must
//! compile without warnings.
//!
//! The `.stderr` files were blessed with rustc 1.95.0. Compiler output drifts between
//! versions: re-bless with `TRYBUILD=overwrite cargo test --release --test ui` and
//! review the diff before committing it.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    for category in [
        "args",
        "attention",
        "blocks",
        "custom",
        "graph",
        "input",
        "layers",
        "model",
        "names",
        "sealed",
        "shape",
        "syntax",
        "types",
    ] {
        t.compile_fail(format!("tests/ui/{category}/*.rs"));
    }
    t.pass("tests/ui/pass/*.rs");
}

/// Every message the macro's source can print appears in a blessed `.stderr`: a
/// string literal in `dsl/src` given to an error (`push`, `error`, `Error::new`,
/// directly or through `format!`) must have its fixed parts, between `{..}`
/// placeholders, in some UI test's output. A new error without a UI test fails here.
#[test]
fn every_message_has_a_ui_test() {
    fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut blessed = String::new();
    let mut stderr_files = Vec::new();
    for category in std::fs::read_dir(root.join("tests/ui")).unwrap() {
        for file in std::fs::read_dir(category.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "stderr") {
                stderr_files.push(path);
            }
        }
    }
    for path in &stderr_files {
        blessed += &std::fs::read_to_string(path).unwrap();
    }
    let mut sources = Vec::new();
    rust_files(&root.join("dsl/src"), &mut sources);
    let mut missing = Vec::new();
    let mut checked = 0;
    for path in sources {
        let text = std::fs::read_to_string(&path).unwrap();
        // Unit tests' inputs are not messages.
        let text = text.split("#[cfg(test)]").next().unwrap();
        let bytes = text.as_bytes();
        let mut at = 0;
        while let Some(start) = text[at..].find('"').map(|i| at + i) {
            // The literal's end: the next quote not escaped.
            let mut end = start + 1;
            while end < bytes.len() && bytes[end] != b'"' {
                end += if bytes[end] == b'\\' { 2 } else { 1 };
            }
            let literal = &text[start + 1..end.min(text.len())];
            at = end + 1;
            if literal.len() < 25 || !literal.contains(' ') {
                continue;
            }
            // The statement so far, before the literal.
            let before = &text[start.saturating_sub(300)..start];
            let statement = before.rsplit([';', '}']).next().unwrap_or(before);
            let is_error = ["push(", ".error(", "Error::new("]
                .iter()
                .any(|call| statement.contains(call))
                && !statement.contains("expect(")
                && !statement.contains("///");
            if !is_error {
                continue;
            }
            checked += 1;
            let unescaped = literal.replace("\\\"", "\"");
            let mut fixed = Vec::new();
            let mut rest = unescaped.as_str();
            while let Some(open) = rest.find('{') {
                fixed.push(&rest[..open]);
                rest = rest[open..]
                    .find('}')
                    .map_or("", |close| &rest[open + close + 1..]);
            }
            fixed.push(rest);
            if fixed
                .iter()
                .filter(|part| part.trim().len() >= 8)
                .any(|part| !blessed.contains(*part))
            {
                let line = text[..start].lines().count();
                missing.push(format!("{}:{line}: {literal}", path.display()));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} messages found: the scan is broken"
    );
    assert!(
        missing.is_empty(),
        "messages with no UI test:\n{}",
        missing.join("\n")
    );
}
