// Generated code names everything by absolute path: shadowing the prelude changes
// nothing, and it compiles without a warning.
#![deny(warnings)]
#![allow(dead_code, non_camel_case_types)] // the shadowing items below exist only to be in the way

struct Result;
struct Option;
struct Some;
struct None;
struct Vec;
struct Clone;
struct Box;
struct String;
type f32 = u8;
mod core {}
mod std {}

kiln::model! {
    pub struct Shadowed {
        input: [3],
        Dense(4), Relu,
        Dropout(0.5),
        Residual { Dense(4), Gelu },
        Dense(2),
    }
}

fn main() {}
