//! The search samplers on objectives with known optima: how close random search and TPE get in
//! 20 and in 40 trials.
//!
//!     cargo bench --bench search
//!
//! Three objectives: a simulated validation loss over the learning rate (log float in
//! [1e-5, 1e-3]) and the warmup ratio ([0, 0.3], step 0.05), optimum 0.35 at lr = 10^-4.3,
//! warmup 0.1; the same with a batch size ({8, 16, 32, 64}, a penalty for each but 16) and the
//! epochs (1..=5, best 3), optimum 0.35 again; and Branin on [-5, 10] × [0, 15], minimum
//! 0.397887. The two losses are observed with seeded normal noise (sd 0.001), as a validation
//! loss is; what counts is the noise-free loss of the trial that looked best. Branin is exact.
//!
//! For each objective and each search seed 0..20, a search runs 40 trials sequentially, each
//! seeing every earlier trial; trial k draws from `SeededRandom::new(seed, stream::SEARCH_TRIAL +
//! k)`, as bertlab's searches do (so random search and TPE share their first 10 trials, TPE's
//! startup). A run's first 20 trials are exactly a 20-trial run, so one 40-trial run gives both
//! columns. The table gives, over the 20 seeds, the median and the 25th-75th percentiles (linear
//! interpolation) of the best loss found minus the optimum, after 20 and after 40 trials, and on
//! how many seeds TPE ended strictly closer than random search, tied, or farther.

use std::time::Instant;

use bertlab::search::sampler::{
    Observation, Parameter, Score, TpeSettings, Value, random_proposal, tpe_proposal,
};
use bertlab::support::random::{SeededRandom, stream};

const SEEDS: u64 = 20;
const TRIALS: usize = 40;
const CHECKPOINTS: [usize; 2] = [20, 40];
/// The noise of trial k under seed s comes from stream NOISE_STREAM + k (clear of bertlab's).
const NOISE_STREAM: u64 = 1 << 56;
const NOISE: f64 = 0.001;

struct Objective {
    name: &'static str,
    parameters: Vec<Parameter>,
    optimum: f64,
    noisy: bool,
    loss: fn(&[Value]) -> f64,
}

fn float(value: Value) -> f64 {
    match value {
        Value::Float(value) => value,
        other => panic!("not a float: {other:?}"),
    }
}

fn learning_rate_and_warmup() -> Vec<Parameter> {
    vec![
        Parameter::Float {
            low: 1e-5,
            high: 1e-3,
            log: true,
            step: None,
        },
        Parameter::Float {
            low: 0.0,
            high: 0.3,
            log: false,
            step: Some(0.05),
        },
    ]
}

fn validation_loss(values: &[Value]) -> f64 {
    let learning_rate = float(values[0]);
    let warmup = float(values[1]);
    0.35 + 0.08 * (learning_rate.log10() + 4.3).powi(2) + 0.5 * (warmup - 0.1).powi(2)
}

fn validation_loss_with_batch_and_epochs(values: &[Value]) -> f64 {
    let Value::Choice(batch_size) = values[2] else {
        panic!("not a choice: {:?}", values[2]);
    };
    let Value::Integer(epochs) = values[3] else {
        panic!("not an integer: {:?}", values[3]);
    };
    // Batch sizes 8, 16, 32, 64.
    let batch_penalty = [0.02, 0.0, 0.01, 0.04][batch_size];
    validation_loss(values) + batch_penalty + 0.015 * ((epochs - 3) as f64).powi(2)
}

fn branin(values: &[Value]) -> f64 {
    let (x, y) = (float(values[0]), float(values[1]));
    let pi = std::f64::consts::PI;
    let b = 5.1 / (4.0 * pi * pi);
    let c = 5.0 / pi;
    let t = 1.0 / (8.0 * pi);
    (y - b * x * x + c * x - 6.0).powi(2) + 10.0 * (1.0 - t) * x.cos() + 10.0
}

fn objectives() -> Vec<Objective> {
    let mut with_batch_and_epochs = learning_rate_and_warmup();
    with_batch_and_epochs.push(Parameter::Categorical { count: 4 });
    with_batch_and_epochs.push(Parameter::Integer {
        low: 1,
        high: 5,
        log: false,
        step: 1,
    });
    vec![
        Objective {
            name: "loss(lr, warmup)",
            parameters: learning_rate_and_warmup(),
            optimum: 0.35,
            noisy: true,
            loss: validation_loss,
        },
        Objective {
            name: "loss(lr, warmup, batch, epochs)",
            parameters: with_batch_and_epochs,
            optimum: 0.35,
            noisy: true,
            loss: validation_loss_with_batch_and_epochs,
        },
        Objective {
            name: "Branin",
            parameters: vec![
                Parameter::Float {
                    low: -5.0,
                    high: 10.0,
                    log: false,
                    step: None,
                },
                Parameter::Float {
                    low: 0.0,
                    high: 15.0,
                    log: false,
                    step: None,
                },
            ],
            optimum: 0.397_887,
            noisy: false,
            loss: branin,
        },
    ]
}

#[derive(Clone, Copy, PartialEq)]
enum Sampler {
    Random,
    Tpe,
}

/// One search of `TRIALS` trials: the noise-free loss of the trial that looked best, minus the
/// optimum, at each checkpoint.
fn search(objective: &Objective, sampler: Sampler, seed: u64) -> [f64; 2] {
    let settings = TpeSettings::default();
    let mut observations: Vec<Observation> = Vec::with_capacity(TRIALS);
    let mut best: Option<(f64, f64)> = None; // (observed, true)
    let mut regrets = [0.0; 2];
    for trial in 0..TRIALS {
        let mut random = SeededRandom::new(seed, stream::SEARCH_TRIAL + trial as u64);
        let values = match sampler {
            Sampler::Random => random_proposal(&objective.parameters, &mut random),
            Sampler::Tpe => {
                tpe_proposal(&objective.parameters, &observations, &settings, &mut random)
            }
        };
        let loss = (objective.loss)(&values);
        let observed = if objective.noisy {
            loss + NOISE * SeededRandom::new(seed, NOISE_STREAM + trial as u64).normal()
        } else {
            loss
        };
        if best.is_none_or(|(best_observed, _)| observed < best_observed) {
            best = Some((observed, loss));
        }
        observations.push(Observation {
            values,
            score: Score::Completed { value: observed },
        });
        for (checkpoint, regret) in CHECKPOINTS.iter().zip(&mut regrets) {
            if trial + 1 == *checkpoint {
                *regret = best.expect("a trial ran").1 - objective.optimum;
            }
        }
    }
    regrets
}

/// The `fraction` quantile of sorted values, interpolating linearly (numpy's default).
fn quantile(sorted: &[f64], fraction: f64) -> f64 {
    let position = fraction * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    let share = position - below as f64;
    sorted[below] + share * (sorted[above] - sorted[below])
}

fn summary(values: &[f64]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    format!(
        "{:.4} ({:.4}–{:.4})",
        quantile(&sorted, 0.5),
        quantile(&sorted, 0.25),
        quantile(&sorted, 0.75)
    )
}

fn main() {
    let start = Instant::now();
    println!(
        "Best loss found minus the optimum over {SEEDS} seeds: median (25th–75th percentile)."
    );
    println!();
    println!("| objective | trials | random search | TPE | TPE closer / tied / farther |");
    println!("| --- | ---: | --- | --- | --- |");
    for objective in objectives() {
        let runs = |sampler| -> Vec<[f64; 2]> {
            (0..SEEDS)
                .map(|seed| search(&objective, sampler, seed))
                .collect()
        };
        let random = runs(Sampler::Random);
        let tpe = runs(Sampler::Tpe);
        for (checkpoint_index, checkpoint) in CHECKPOINTS.iter().enumerate() {
            let random: Vec<f64> = random.iter().map(|run| run[checkpoint_index]).collect();
            let tpe: Vec<f64> = tpe.iter().map(|run| run[checkpoint_index]).collect();
            let closer = tpe.iter().zip(&random).filter(|(t, r)| t < r).count();
            let tied = tpe.iter().zip(&random).filter(|(t, r)| t == r).count();
            let farther = tpe.len() - closer - tied;
            println!(
                "| {} | {checkpoint} | {} | {} | {closer} / {tied} / {farther} |",
                objective.name,
                summary(&random),
                summary(&tpe),
            );
        }
    }
    println!();
    println!(
        "TPE: {} startup trials, {} candidates, prior weight {}. {:.2} s.",
        TpeSettings::default().startup_trials,
        TpeSettings::default().candidates,
        TpeSettings::default().prior_weight,
        start.elapsed().as_secs_f64()
    );
}
