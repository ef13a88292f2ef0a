//! Times the core's EDA on captions with no Python in the way, for `benchmarks/bench_text.py`
//! (its "core" row): the edit the data pipeline's workers make per sample, written into one
//! reused buffer as `eda_augment` writes it (the pipeline also allocates each result; that is
//! not timed here).
//!
//! Usage: `bench_eda FILE REPEATS [OP]` where FILE holds one caption per line. Every caption
//! gets the DeCLIP-mode edit of its own sample stream (seed 0, epoch 0, index = line), or the
//! operation OP (sr, ri, rs, rd) when given, on one thread, written into one reused buffer.
//! Prints one line: the best wall seconds per pass.

use std::time::Instant;

use lightclip_core::text::{Eda, EdaConfig, EdaOp, EpochStreams};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !(3..=4).contains(&args.len()) {
        eprintln!("usage: {} FILE REPEATS [OP]", args[0]);
        std::process::exit(2);
    }
    let text = std::fs::read_to_string(&args[1]).unwrap_or_else(|e| {
        eprintln!("cannot read {}: {e}", args[1]);
        std::process::exit(2)
    });
    let repeats: usize = args[2].parse().unwrap_or(5);
    let op = args.get(3).map(|name| {
        EdaOp::parse(name).unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(2)
        })
    });
    let captions: Vec<&str> = text.lines().collect();
    let eda = Eda::new(EdaConfig::default()).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let mut out = String::with_capacity(text.len() * 2);
    let streams = EpochStreams::new(0, 0);
    let mut best = f64::INFINITY;
    for _ in 0..repeats.max(1) {
        out.clear();
        let start = Instant::now();
        for (i, caption) in captions.iter().enumerate() {
            eda.edit_sample_into(op, caption, streams, i as u64, &mut out);
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!("{best}");
}
