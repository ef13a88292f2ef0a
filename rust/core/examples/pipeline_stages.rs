//! Times each stage of the pipeline on one shard (a development aid, not a benchmark of record):
//! `cargo run --release --example pipeline_stages -- SHARD VOCAB`.
use std::time::Instant;

use lightclip_core::augment::{eval_transform, train_transform, write_normalized, AugmentConfig};
use lightclip_core::pipeline::decode::{decode_rgb, JpegDecoding};
use lightclip_core::rng::{sample_rng, streams};
use lightclip_core::text::Tokenizer;
use std::io::Read;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut archive = tar::Archive::new(std::fs::File::open(&args[1]).unwrap());
    let mut jpegs = Vec::new();
    let mut caps = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        let mut b = Vec::new();
        e.read_to_end(&mut b).unwrap();
        if p.ends_with(".jpg") {
            jpegs.push(b)
        } else if p.ends_with(".txt") {
            caps.push(String::from_utf8(b).unwrap())
        }
    }
    // CPU time of this thread, not wall time: the numbers stay meaningful on a busy machine.
    let cpu = || -> f64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        ticks / 100.0
    };
    let n = jpegs.len();
    let _ = Instant::now();
    // Evaluation decodes as Pillow does (libjpeg-turbo); training with zune-jpeg.
    let t = Timer::new(&cpu);
    for b in jpegs.iter().cycle().take(n * 4) {
        std::hint::black_box(decode_rgb(b, 1 << 30, JpegDecoding::AsPillow).unwrap());
    }
    println!(
        "decode as Pillow {:8.1} us/sample",
        t.elapsed(&cpu) * 1e6 / (4 * n) as f64
    );
    let t = Timer::new(&cpu);
    let imgs: Vec<_> = jpegs
        .iter()
        .cycle()
        .take(n * 4)
        .map(|b| decode_rgb(b, 1 << 30, JpegDecoding::Fast).unwrap())
        .collect();
    println!(
        "decode fast      {:8.1} us/sample",
        t.elapsed(&cpu) * 1e6 / (4 * n) as f64
    );
    let n = imgs.len();
    for size in [112usize, 224] {
        let t = Timer::new(&cpu);
        let mut out = vec![0f32; 3 * size * size];
        for im in &imgs {
            let p = eval_transform(&im.pixels, im.width, im.height, size);
            write_normalized(&p, false, &mut out);
        }
        println!(
            "eval {size}   {:8.1} us/sample",
            t.elapsed(&cpu) * 1e6 / n as f64
        );
        let cfg = AugmentConfig::default();
        let t = Timer::new(&cpu);
        for (i, im) in imgs.iter().enumerate() {
            let (p, f) = train_transform(
                &im.pixels,
                im.width,
                im.height,
                size,
                &cfg,
                &mut sample_rng(0, 0, i as u64, streams::IMAGE),
            );
            write_normalized(&p, f, &mut out);
        }
        println!(
            "train {size}  {:8.1} us/sample",
            t.elapsed(&cpu) * 1e6 / n as f64
        );
    }
    if let Some(v) = args.get(2) {
        let tok = Tokenizer::from_file(std::path::Path::new(v)).unwrap();
        let t = Timer::new(&cpu);
        for c in &caps {
            std::hint::black_box(tok.tokenize(c, 77));
        }
        println!(
            "tokenize   {:8.1} us/sample",
            t.elapsed(&cpu) * 1e6 / n as f64
        );
    }
}

struct Timer(f64);
impl Timer {
    fn new(cpu: &dyn Fn() -> f64) -> Timer {
        Timer(cpu())
    }
    fn elapsed(&self, cpu: &dyn Fn() -> f64) -> f64 {
        cpu() - self.0
    }
}
