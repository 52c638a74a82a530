//! The fuzz targets: each takes arbitrary bytes and panics only if kiln does something
//! it must never do — panic, return a result that breaks the reader's own promises, or
//! change a model on a failed load. AFL++ runs them through `fuzz/src/bin/*.rs`, the
//! mutation harness of `tests/fuzz.rs` in CI; both compile this one file.

use kiln::data::{read_csv_bytes, read_idx_bytes, CsvOptions, Header, LabelColumn};
use kiln::io::LoadOptions;
use kiln::{Model, Shape1};

kiln::model! {
    /// A model with every kind of tensor a file can hold: weights, biases, batch norm's
    /// running statistics (a variance must stay non-negative) and its integer count.
    pub struct Fuzzed {
        input: [1, 4, 4],
        conv: Conv2d(2, kernel = 3, padding = 1), bn: BatchNorm2d, Relu,
        Flatten, out: Dense(3),
    }
}

/// The IDX reader: an error, or an array whose data is exactly what its dimensions
/// declare.
pub fn idx(data: &[u8]) {
    if let Ok(array) = read_idx_bytes(data) {
        let declared = array.dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        assert_eq!(
            declared,
            Some(array.data.len()),
            "data and dimensions disagree"
        );
    }
}

/// The CSV reader, with the options its first byte picks: an error, or a data set of
/// finite features (unless allowed) and labels below the class count, within the
/// byte limit.
pub fn csv(data: &[u8]) {
    let Some((&choice, body)) = data.split_first() else {
        return;
    };
    let header = [Header::Detect, Header::Present, Header::Absent][usize::from(choice % 3)];
    let label = if choice & 4 == 0 {
        LabelColumn::Last
    } else {
        LabelColumn::First
    };
    let allow = choice & 8 != 0;
    let options = CsvOptions::new(label, 5)
        .header(header)
        .allow_non_finite(allow)
        .max_bytes(1 << 16);
    if let Ok(set) = read_csv_bytes::<f32, Shape1<3>>(body, &options) {
        assert!(!set.is_empty());
        assert!(
            set.targets().iter().all(|&label| label < 5),
            "label out of range"
        );
        let features = set.features();
        assert_eq!(features.as_slice().len(), set.len() * 3);
        if !allow {
            assert!(
                features.as_slice().iter().all(|v| v.is_finite()),
                "a non-finite feature was accepted"
            );
        }
    }
}

/// Loading safetensors into a model, strict or not as the first byte says: an error
/// with the model unchanged, or finite values and non-negative variances.
pub fn safetensors(data: &[u8]) {
    let Some((&choice, body)) = data.split_first() else {
        return;
    };
    let mut model = Fuzzed::<f32>::new(0);
    let (params, buffers) = (
        model.params().as_slice().to_vec(),
        model.buffers().as_slice().to_vec(),
    );
    let mut options = LoadOptions::new().strict(choice & 1 == 0);
    if choice & 2 != 0 {
        options = options.rename("net.", "");
    }
    match model.load_bytes(body, &options) {
        Err(_) => {
            assert_eq!(
                model.params().as_slice(),
                params,
                "a failed load changed the model"
            );
            assert_eq!(
                model.buffers().as_slice(),
                buffers,
                "a failed load changed the model"
            );
        }
        Ok(_) => {
            let all = model
                .params()
                .as_slice()
                .iter()
                .chain(model.buffers().as_slice());
            assert!(
                all.into_iter().all(|v| v.is_finite()),
                "a non-finite value loaded"
            );
            let var = model
                .buffers()
                .get("bn.running_var")
                .expect("the model has it");
            assert!(var.iter().all(|&v| v >= 0.0), "a negative variance loaded");
        }
    }
}

/// The `model!` language, from parsing to code generation, on text: whatever the text,
/// the expansion is valid Rust (the model, or `compile_error!`s and the bare struct).
pub fn dsl(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(tokens) = text.parse::<proc_macro2::TokenStream>() else {
        return;
    };
    let expanded = kiln_dsl::expand(tokens);
    if let Err(error) = syn::parse2::<syn::File>(expanded.clone()) {
        panic!("the expansion is not Rust ({error}):\n{expanded}");
    }
}
