//! One training step (forward, backward, SGD update) and inference of the example model
//! (all-MiniLM-L6-v2) at batch 16 x 40 tokens on the CPU, for comparison with
//! `scripts/bench_model_pytorch.py` (same shapes, same threads).
//!
//!     scripts/fetch-assets.sh
//!     cargo bench --bench model                      # all cores
//!     RAYON_NUM_THREADS=2 cargo bench --bench model   # as many threads as PyTorch gets
//!
//! Prints the median of the timed iterations and samples per second.

use std::path::Path;
use std::time::Instant;

use bertlab::model::checkpoint::load_classifier;
use bertlab::model::layers::cross_entropy;
use bertlab::model::{Batch, Mode};
use bertlab::support::random::SeededRandom;
use candle_core::{DType, Device, Tensor};

const BATCH: usize = 16;
const LENGTH: usize = 40;
const WARMUP: usize = 3;
const ITERATIONS: usize = 20;

fn median(mut seconds: Vec<f64>) -> f64 {
    seconds.sort_by(f64::total_cmp);
    seconds[seconds.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/all-MiniLM-L6-v2");
    if !directory.is_dir() {
        anyhow::bail!(
            "{} is missing: run scripts/fetch-assets.sh",
            directory.display()
        );
    }
    let device = Device::Cpu;
    let (model, _) = load_classifier(&directory, Some(3), 0, DType::F32, &device)?;
    let mut random = SeededRandom::new(0, 77);
    let vocabulary = model.config().vocab_size as u64;
    let rows: Vec<Vec<u32>> = (0..BATCH)
        .map(|_| {
            let mut row = vec![101u32];
            row.extend((0..LENGTH - 2).map(|_| 1000 + random.below(vocabulary - 1000) as u32));
            row.push(102);
            row
        })
        .collect();
    let batch = Batch::from_rows(&rows, 0, &device)?;
    let labels = Tensor::from_vec(
        (0..BATCH as u32).map(|i| i % 3).collect::<Vec<_>>(),
        BATCH,
        &device,
    )?;
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    println!(
        "bertlab (candle 0.11), all-MiniLM-L6-v2, batch {BATCH} x {LENGTH} tokens, threads {threads}"
    );

    let mut inference = Vec::new();
    for iteration in 0..WARMUP + ITERATIONS {
        let start = Instant::now();
        let logits = model.forward(&batch, &mut Mode::Eval)?;
        logits.to_vec2::<f32>()?;
        if iteration >= WARMUP {
            inference.push(start.elapsed().as_secs_f64());
        }
    }
    let seconds = median(inference);
    println!(
        "inference      {:8.1} ms/batch  {:7.1} samples/s",
        seconds * 1e3,
        BATCH as f64 / seconds
    );

    let mut training = Vec::new();
    for iteration in 0..WARMUP + ITERATIONS {
        let start = Instant::now();
        let mut dropout = SeededRandom::for_dropout(0, iteration as u64);
        let logits = model.forward(&batch, &mut Mode::Train(&mut dropout))?;
        let loss = cross_entropy(&logits, &labels, None)?;
        let gradients = loss.backward()?;
        for (_, var) in model.parameters() {
            let gradient = gradients
                .get(var.as_tensor())
                .expect("every tensor has a gradient");
            var.set(&(var.as_tensor() - (gradient * 1e-5)?)?)?;
        }
        if iteration >= WARMUP {
            training.push(start.elapsed().as_secs_f64());
        }
    }
    let seconds = median(training);
    println!(
        "training step  {:8.1} ms/batch  {:7.1} samples/s",
        seconds * 1e3,
        BATCH as f64 / seconds
    );

    // The step as `train` does it, part by part: forward + backward, gradients to host vectors,
    // clipping, AdamW.
    let mut optimizer = bertlab::train::optimizer::AdamW::new(model.parameters(), 0.01);
    let mut parts: [Vec<f64>; 4] = Default::default();
    for iteration in 0..WARMUP + ITERATIONS {
        let start = Instant::now();
        let mut dropout = SeededRandom::for_dropout(0, iteration as u64);
        let logits = model.forward(&batch, &mut Mode::Train(&mut dropout))?;
        let loss = cross_entropy(&logits, &labels, None)?;
        let grads = loss.backward()?;
        let backward_done = Instant::now();
        let mut gradients: Vec<Vec<f32>> = Vec::new();
        for (_, var) in model.parameters() {
            gradients.push(
                grads
                    .get(var)
                    .expect("a gradient")
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            );
        }
        let copied = Instant::now();
        bertlab::train::optimizer::clip_global_norm(&mut gradients, 1.0);
        let clipped = Instant::now();
        optimizer.step(model.parameters(), &gradients, 1e-5)?;
        let stepped = Instant::now();
        if iteration >= WARMUP {
            parts[0].push((backward_done - start).as_secs_f64());
            parts[1].push((copied - backward_done).as_secs_f64());
            parts[2].push((clipped - copied).as_secs_f64());
            parts[3].push((stepped - clipped).as_secs_f64());
        }
    }
    // The same in place: clipping folded into AdamW, no copies.
    let mut in_place = Vec::new();
    for iteration in 0..WARMUP + ITERATIONS {
        let mut dropout = SeededRandom::for_dropout(0, iteration as u64);
        let logits = model.forward(&batch, &mut Mode::Train(&mut dropout))?;
        let loss = cross_entropy(&logits, &labels, None)?;
        let grads = loss.backward()?;
        let start = Instant::now();
        let gradients: Vec<Tensor> = model
            .parameters()
            .iter()
            .map(|(_, var)| grads.get(var).expect("a gradient").clone())
            .collect();
        optimizer
            .step_tensors(model.parameters(), &gradients, 1.0, 1e-5)?
            .expect("CPU tensors");
        if iteration >= WARMUP {
            in_place.push(start.elapsed().as_secs_f64());
        }
    }
    println!(
        "  clipping + AdamW in place: {:8.1} ms",
        median(in_place) * 1e3
    );
    let names = [
        "forward+backward",
        "gradients to host",
        "clipping",
        "AdamW step",
    ];
    let mut total = 0.0;
    for (name, seconds) in names.iter().zip(parts) {
        let seconds = median(seconds);
        total += seconds;
        println!("  {name:<18} {:8.1} ms", seconds * 1e3);
    }
    println!(
        "training step (AdamW, as in train)  {:8.1} ms/batch  {:7.1} samples/s",
        total * 1e3,
        BATCH as f64 / total
    );
    Ok(())
}
