// A model that reads token ids cannot be used as a layer (nothing would check the ids).
kiln::model! {
    pub struct Embed {
        input: [5],
        tok: Embedding(100, 8),
        LastStep,
    }
}

kiln::model! {
    pub struct Net {
        input: [5],
        embed: use Embed -> [8],
        head: Dense(2),
    }
}

fn main() {}
