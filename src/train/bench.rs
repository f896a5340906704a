//! `bertlab bench`: how fast this build trains and predicts on an experiment's own model and
//! data, measured so that `scripts/bench_pytorch.py` can measure PyTorch on exactly the same
//! work (`scripts/bench.sh` runs both and prints them side by side).
//!
//! The work is fixed by the experiment's first run and the options, never by timing:
//! - training: optimizer steps as `bertlab run` takes them ([`step::optimizer_step`](crate::train::step::optimizer_step): dropout,
//!   cross-entropy, backward, clipping, AdamW on the run's schedule; one batch per step and no
//!   class weights, whatever the experiment says, so that PyTorch can do the same), on batches of
//!   `batch_size` consecutive training examples in file order (what a DataLoader without
//!   shuffling yields), each padded to its longest row; `warmup_steps` untimed steps first,
//!   then `steps` timed ones; the training split starts over when it runs out;
//! - inference: the first `inference_examples` validation examples (all by default) in
//!   batches of `inference_batch_size` consecutive examples, evaluation mode, after one untimed
//!   batch;
//! - peak memory: the process's peak resident set size after training (`VmHWM`), again after
//!   inference.
//!
//! - `sequence_length`: every example (training and inference) becomes exactly that many tokens,
//!   its own ids repeated (no padding): fixed-shape work such as "batch 32 x 128 tokens", the
//!   usual GPU benchmark shape; it may exceed the run's `max_length` (the ids repeated are the
//!   tokenized ones), up to what the model's position embeddings reach.
//! - `batch_size`: training examples per step instead of the run's `batch_size`.
//!
//! The report names the work (steps, examples, real and padded tokens), so two reports can be
//! checked to describe the same work before their speeds are compared.

use std::time::Instant;

use anyhow::{Context, bail};
use candle_core::Tensor;
use serde::Serialize;

use crate::model::encoder::Mode;
use crate::plan::PlannedRun;
use crate::plan::spec::Precision;
use crate::support::random::SeededRandom;
use crate::tokenize::preprocess;
use crate::tokenize::tokenizer;
use crate::train::step::{self, StepInputs};
use crate::train::{self, schedule};

/// What to measure, besides the run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub warmup_steps: usize,
    pub steps: usize,
    pub inference_batch_size: usize,
    /// `None`: the whole validation split.
    pub inference_examples: Option<usize>,
    /// Every example made exactly this many tokens long (its ids repeated); `None`: as tokenized.
    pub sequence_length: Option<usize>,
    /// Training examples per step; `None`: the run's `batch_size`.
    pub batch_size: Option<usize>,
}

/// `ids` repeated until `length` tokens (an empty row stays empty).
pub fn repeated_to(ids: &[u32], length: usize) -> Vec<u32> {
    ids.iter().copied().cycle().take(length).collect()
}

/// One benchmark's figures; the same fields as `scripts/bench_pytorch.py` prints.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub tool: String,
    pub threads: usize,
    pub model: String,
    pub classes: Vec<String>,
    pub max_length: usize,
    /// Every example this many tokens long (`--sequence-length`), if set.
    pub sequence_length: Option<usize>,
    pub batch_size: usize,
    pub inference_batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub warmup_ratio: f64,
    pub max_grad_norm: f64,
    /// The matrix products' arithmetic (`train.precision`).
    pub precision: Precision,
    /// The unit of bf16 products on the CPU: `amx` or `avx512-bf16` (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bf16_products: Option<String>,
    pub hidden_dropout: f64,
    pub attention_dropout: f64,
    pub classifier_dropout: f64,
    pub train: Throughput,
    pub inference: Throughput,
    /// Peak resident set size of the process after training, in MiB.
    pub peak_rss_train_mib: Option<f64>,
    /// The same after inference too.
    pub peak_rss_mib: Option<f64>,
    /// On a GPU: its memory in use after training, in MiB (every process's; the peak comes
    /// from sampling `nvidia-smi`, as `scripts/gpu-check.sh` does).
    pub gpu_memory_after_training_mib: Option<f64>,
}

/// Timed work and its speed.
#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    /// Untimed warm-up steps (training) or batches (inference) before the timed ones.
    pub warmup_batches: usize,
    pub batches: usize,
    pub examples: usize,
    /// Token ids fed to the model that are not padding.
    pub tokens: usize,
    /// Token positions including padding (rows x longest row, summed over batches).
    pub padded_tokens: usize,
    pub seconds: f64,
    pub samples_per_second: f64,
    pub tokens_per_second: f64,
}

impl Throughput {
    fn new(warmup_batches: usize, batches: &[Vec<usize>], ids: &[Vec<u32>], seconds: f64) -> Self {
        let examples = batches.iter().map(Vec::len).sum::<usize>();
        let tokens = batches
            .iter()
            .flatten()
            .map(|&index| ids[index].len())
            .sum::<usize>();
        let padded_tokens = batches
            .iter()
            .map(|batch| {
                batch.len()
                    * batch
                        .iter()
                        .map(|&index| ids[index].len())
                        .max()
                        .unwrap_or(0)
            })
            .sum::<usize>();
        Throughput {
            warmup_batches,
            batches: batches.len(),
            examples,
            tokens,
            padded_tokens,
            seconds,
            samples_per_second: examples as f64 / seconds.max(1e-12),
            tokens_per_second: tokens as f64 / seconds.max(1e-12),
        }
    }
}

/// Batches of `batch_size` consecutive indices of `0..examples`, starting over at 0 when the
/// examples run out, `count` batches in all: batch `i` starts at `(i * batch_size) % examples`
/// and wraps within itself too.
pub fn consecutive_batches(examples: usize, batch_size: usize, count: usize) -> Vec<Vec<usize>> {
    if examples == 0 || batch_size == 0 {
        return Vec::new();
    }
    (0..count)
        .map(|batch| {
            (0..batch_size)
                .map(|offset| (batch * batch_size + offset) % examples)
                .collect()
        })
        .collect()
}

/// The peak resident set size of this process so far, in MiB (Linux's `VmHWM`; `None`
/// elsewhere).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Measures `run` (see the module documentation). Progress goes to stderr.
pub fn bench_run(run: &PlannedRun, options: &BenchOptions) -> anyhow::Result<BenchReport> {
    let settings = &run.settings;
    let train_settings = &run.spec.train;
    if options.steps == 0 {
        bail!("--steps must be at least 1");
    }
    if options.batch_size == Some(0) {
        bail!("--batch-size must be at least 1");
    }
    if options.inference_batch_size == 0 {
        bail!("--inference-batch-size must be at least 1");
    }
    let resolved = crate::train::device::resolve(settings.device)?;
    eprintln!("bench: on {}", resolved.label);
    let device = resolved.device;
    let (mut data, _) = preprocess::preprocess_cached(run, None)?;
    if let Some(length) = options.sequence_length {
        if length == 0 {
            bail!("--sequence-length must be at least 1");
        }
        for ids in data
            .train
            .ids
            .iter_mut()
            .chain(data.validation.ids.iter_mut())
            .chain(data.train.type_ids.iter_mut())
            .chain(data.validation.type_ids.iter_mut())
        {
            *ids = repeated_to(ids, length);
        }
    }
    if data.train.ids.is_empty() || data.validation.ids.is_empty() {
        bail!(
            "bench needs training and validation examples; this data setup has {} and {}",
            data.train.ids.len(),
            data.validation.ids.len()
        );
    }
    let (model, _) = train::load_training_model(run, data.classes.len(), &device)?;
    if let Some(length) = options.sequence_length {
        let longest = model.config().max_sequence_length();
        if length > longest {
            bail!(
                "--sequence-length {length} is longer than the model's position embeddings reach ({longest} tokens)"
            );
        }
    }
    let batch_size = options.batch_size.unwrap_or(train_settings.batch_size);
    let dropout = model.dropout;
    let pad_id = tokenizer::load(&settings.model_path)?.pad_id;

    // Training.
    let total_steps = (options.warmup_steps + options.steps) as u64;
    let batches = consecutive_batches(
        data.train.ids.len(),
        batch_size,
        options.warmup_steps + options.steps,
    );
    let schedule = schedule::Schedule::for_run(train_settings, total_steps);
    let mut adamw = train::run_optimizer(run, &model);
    let mut timed_start = Instant::now();
    for (step, batch) in batches.iter().enumerate() {
        if step == options.warmup_steps {
            timed_start = Instant::now();
        }
        let mut random = SeededRandom::for_dropout(train_settings.seed, step as u64);
        let inputs = StepInputs {
            model: &model,
            split: &data.train,
            pad_id,
            class_weights: None,
            learning_rate: schedule.learning_rate_at(step as u64),
            max_grad_norm: train_settings.max_grad_norm,
            label_smoothing: train_settings.label_smoothing,
        };
        let outcome = step::optimizer_step(
            &inputs,
            &mut adamw,
            std::slice::from_ref(batch),
            &mut random,
        )?;
        if let Some(problem) = outcome.divergence {
            bail!("training diverged at bench step {}: {problem}", step + 1);
        }
        if (step + 1) % 20 == 0 {
            eprintln!("bench: training step {}/{}", step + 1, batches.len());
        }
    }
    device.synchronize()?;
    let train_seconds = timed_start.elapsed().as_secs_f64();
    let train = Throughput::new(
        options.warmup_steps,
        &batches[options.warmup_steps..],
        &data.train.ids,
        train_seconds,
    );
    let peak_rss_train_mib = peak_rss_mib();
    let gpu_memory_after_training_mib = crate::train::device::gpu_memory_in_use_mib(&device);

    // Inference.
    let examples = options
        .inference_examples
        .unwrap_or(data.validation.ids.len())
        .min(data.validation.ids.len());
    let batch_count = examples.div_ceil(options.inference_batch_size);
    let inference_batches: Vec<Vec<usize>> = (0..batch_count)
        .map(|batch| {
            let start = batch * options.inference_batch_size;
            (start..examples.min(start + options.inference_batch_size)).collect()
        })
        .collect();
    let forward = |indices: &[usize]| -> anyhow::Result<()> {
        let batch = crate::train::step::batch_of(&data.validation, indices, pad_id, &device)?;
        let logits: Tensor = model.forward(&batch, &mut Mode::Eval)?;
        logits.to_vec2::<f32>()?;
        Ok(())
    };
    forward(&inference_batches[0]).context("the warm-up inference batch")?;
    let start = Instant::now();
    for batch in &inference_batches {
        forward(batch)?;
    }
    let inference = Throughput::new(
        1,
        &inference_batches,
        &data.validation.ids,
        start.elapsed().as_secs_f64(),
    );

    Ok(BenchReport {
        tool: format!(
            "bertlab {} (candle 0.11, {})",
            env!("CARGO_PKG_VERSION"),
            resolved.label
        ),
        threads: candle_core::utils::get_num_threads(),
        model: settings.model_path.display().to_string(),
        classes: data.classes.clone(),
        max_length: train_settings.max_length,
        sequence_length: options.sequence_length,
        batch_size,
        inference_batch_size: options.inference_batch_size,
        learning_rate: train_settings.learning_rate,
        weight_decay: train_settings.weight_decay,
        warmup_ratio: train_settings.warmup_ratio,
        max_grad_norm: train_settings.max_grad_norm,
        precision: train_settings.precision,
        bf16_products: (train_settings.precision == Precision::Bf16
            && device.is_cpu()
            && crate::model::bf16::available())
        .then(|| crate::model::bf16::Unit::current().name().to_string()),
        hidden_dropout: dropout.hidden,
        attention_dropout: dropout.attention,
        classifier_dropout: dropout.classifier,
        train,
        inference,
        peak_rss_train_mib,
        peak_rss_mib: peak_rss_mib(),
        gpu_memory_after_training_mib,
    })
}

/// The report as an aligned text table (for people; `--format json` for scripts).
pub fn report_text(report: &BenchReport) -> String {
    let mut text = String::new();
    text.push_str(&format!(
        "{} · {} threads · {} · batch {} · max_length {}{} · {}\n",
        report.tool,
        report.threads,
        report.model,
        report.batch_size,
        report.max_length,
        report
            .sequence_length
            .map_or(String::new(), |length| format!(
                " · every example {length} tokens"
            )),
        match &report.bf16_products {
            Some(unit) => format!("{} ({unit})", report.precision),
            None => report.precision.to_string(),
        }
    ));
    for (name, figures) in [
        ("training", &report.train),
        ("inference", &report.inference),
    ] {
        text.push_str(&format!(
            "{name:<10} {:>8.1} samples/s {:>9.0} tokens/s   ({} batches, {} examples, {} tokens, {} padded, {:.1} s)\n",
            figures.samples_per_second,
            figures.tokens_per_second,
            figures.batches,
            figures.examples,
            figures.tokens,
            figures.padded_tokens,
            figures.seconds
        ));
    }
    let mib = |value: Option<f64>| value.map_or("unknown".to_string(), |v| format!("{v:.0} MiB"));
    text.push_str(&format!(
        "peak RSS   {} after training, {} after inference\n",
        mib(report.peak_rss_train_mib),
        mib(report.peak_rss_mib)
    ));
    if let Some(memory) = report.gpu_memory_after_training_mib {
        text.push_str(&format!(
            "GPU memory {memory:.0} MiB in use after training\n"
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_repeated_to_the_fixed_length() {
        assert_eq!(
            repeated_to(&[101, 7, 102], 7),
            vec![101, 7, 102, 101, 7, 102, 101]
        );
        assert_eq!(repeated_to(&[101, 7, 102], 2), vec![101, 7]);
    }

    #[test]
    fn consecutive_batches_follow_file_order_and_wrap() {
        assert_eq!(
            consecutive_batches(5, 2, 4),
            vec![vec![0, 1], vec![2, 3], vec![4, 0], vec![1, 2]]
        );
        assert_eq!(consecutive_batches(2, 3, 1), vec![vec![0, 1, 0]]);
        assert!(consecutive_batches(0, 3, 2).is_empty());
    }

    #[test]
    fn throughput_counts_real_and_padded_tokens() {
        let ids = vec![vec![1, 2, 3], vec![1, 2], vec![1, 2, 3, 4, 5]];
        let figures = Throughput::new(0, &[vec![0, 1], vec![2]], &ids, 2.0);
        assert_eq!(figures.examples, 3);
        assert_eq!(figures.tokens, 10);
        assert_eq!(figures.padded_tokens, 2 * 3 + 5);
        assert!((figures.samples_per_second - 1.5).abs() < 1e-12);
        assert!((figures.tokens_per_second - 5.0).abs() < 1e-12);
    }

    #[test]
    fn peak_rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let mib = peak_rss_mib().expect("VmHWM in /proc/self/status");
            assert!(mib > 1.0, "{mib}");
        }
    }
}
