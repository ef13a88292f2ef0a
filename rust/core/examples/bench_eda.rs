//! Times the core's EDA on captions with no Python in the way, for `benchmarks/bench_text.py`
//! (its "core" row): the edit the data pipeline's workers make per sample.
//!
//! Usage: `bench_eda FILE REPEATS [OP]` where FILE holds one caption per line. Every caption
//! gets the DeCLIP-mode edit of its own sample stream (seed 0, epoch 0, index = line), or the
//! operation OP (sr, ri, rs, rd) when given, on one thread.
//! Prints one line: the best wall seconds per pass.

use std::time::Instant;

use lightclip_core::text::{Eda, EdaConfig, EdaOp};

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
    let mut best = f64::INFINITY;
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        for (i, caption) in captions.iter().enumerate() {
            std::hint::black_box(eda.edit_sample(op, caption, 0, 0, i as u64));
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!("{best}");
}
