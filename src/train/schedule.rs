//! The learning-rate schedule, a pure function of the optimizer step: the warmup length
//! (`warmup_steps`, else transformers' `ceil(warmup_ratio * total_steps)`), a linear warmup from
//! 0, then the shape `learning_rate_schedule` names, with the formulas of transformers'
//! `get_linear_schedule_with_warmup`, `get_constant_schedule_with_warmup`,
//! `get_cosine_schedule_with_warmup`, `get_polynomial_decay_schedule_with_warmup` and
//! `get_inverse_sqrt_schedule` (tests/fixtures/recipes-torch.json holds what they compute).

use crate::plan::spec::{LearningRateSchedule, TrainSettings, recipe_defaults};

/// The warmup length of transformers' `TrainingArguments.get_warmup_steps` for a ratio:
/// `ceil(ratio * total)`.
pub fn warmup_steps(total_steps: u64, warmup_ratio: f64) -> u64 {
    (warmup_ratio * total_steps as f64).ceil() as u64
}

/// The shape after the warmup, with its parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Shape {
    /// Down to 0 at `total_steps`.
    Linear,
    Constant,
    /// `cycles` cosine waves over the steps after the warmup (0.5: from the peak down to 0).
    Cosine {
        cycles: f64,
    },
    /// From the peak down to `end` at `total_steps` as `remaining ^ power`; `end` after it.
    Polynomial {
        power: f64,
        end: f64,
    },
    /// `1 / sqrt((step + timescale - warmup) / timescale)`.
    InverseSqrt {
        timescale: u64,
    },
}

/// A run's learning rate at every step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub peak: f64,
    pub total_steps: u64,
    pub warmup_steps: u64,
    pub shape: Shape,
}

impl Schedule {
    /// The schedule of a run of `total_steps` optimizer steps.
    pub fn for_run(train: &TrainSettings, total_steps: u64) -> Schedule {
        let warmup = if train.warmup_steps > 0 {
            train.warmup_steps
        } else {
            warmup_steps(total_steps, train.warmup_ratio)
        };
        let shape = match train.learning_rate_schedule {
            LearningRateSchedule::Linear => Shape::Linear,
            LearningRateSchedule::Constant => Shape::Constant,
            LearningRateSchedule::Cosine => Shape::Cosine {
                cycles: train.cosine_cycles,
            },
            LearningRateSchedule::Polynomial => Shape::Polynomial {
                power: train.polynomial_power,
                end: train.polynomial_end_learning_rate,
            },
            LearningRateSchedule::InverseSqrt => Shape::InverseSqrt {
                timescale: train.inverse_sqrt_timescale.unwrap_or(if warmup > 0 {
                    warmup
                } else {
                    recipe_defaults::INVERSE_SQRT_TIMESCALE_WITHOUT_WARMUP
                }),
            },
        };
        Schedule {
            peak: train.learning_rate,
            total_steps,
            warmup_steps: warmup,
            shape,
        }
    }

    /// The multiplier of the peak at optimizer step `step` (0-based), as transformers'
    /// `lr_lambda` functions compute it.
    pub fn factor_at(&self, step: u64) -> f64 {
        let (total, warmup) = (self.total_steps, self.warmup_steps);
        if step < warmup {
            return step as f64 / warmup.max(1) as f64;
        }
        let after_warmup = || (step - warmup) as f64 / total.saturating_sub(warmup).max(1) as f64;
        match self.shape {
            Shape::Linear => (total.saturating_sub(step) as f64
                / total.saturating_sub(warmup).max(1) as f64)
                .max(0.0),
            Shape::Constant => 1.0,
            Shape::Cosine { cycles } => (0.5
                * (1.0 + (std::f64::consts::PI * cycles * 2.0 * after_warmup()).cos()))
            .max(0.0),
            Shape::Polynomial { power, end } => {
                let peak = self.peak;
                if step > total {
                    end / peak
                } else {
                    let remaining =
                        1.0 - (step - warmup) as f64 / total.saturating_sub(warmup).max(1) as f64;
                    ((peak - end) * remaining.powf(power) + end) / peak
                }
            }
            Shape::InverseSqrt { timescale } => {
                let shift = timescale as f64 - warmup as f64;
                1.0 / ((step as f64 + shift) / timescale as f64).sqrt()
            }
        }
    }

    /// The learning rate of optimizer step `step` (0-based).
    pub fn learning_rate_at(&self, step: u64) -> f64 {
        self.peak * self.factor_at(step)
    }
}

/// The learning rate of step `step` of the linear schedule (transformers'
/// `get_linear_schedule_with_warmup`): linear warmup from 0 over `warmup_steps`, then linear
/// decay to 0 at `total_steps`.
pub fn learning_rate_at(step: u64, total_steps: u64, warmup_steps: u64, peak: f64) -> f64 {
    Schedule {
        peak,
        total_steps,
        warmup_steps,
        shape: Shape::Linear,
    }
    .learning_rate_at(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_linear_schedule_warms_up_then_decays_to_zero() {
        let total = 100;
        let warmup = warmup_steps(total, 0.1);
        assert_eq!(warmup, 10);
        assert_eq!(warmup_steps(95, 0.1), 10, "rounded up");
        assert_eq!(learning_rate_at(0, total, warmup, 1.0), 0.0);
        assert!((learning_rate_at(5, total, warmup, 1.0) - 0.5).abs() < 1e-15);
        assert_eq!(learning_rate_at(10, total, warmup, 1.0), 1.0);
        assert!((learning_rate_at(55, total, warmup, 1.0) - 0.5).abs() < 1e-15);
        assert_eq!(learning_rate_at(100, total, warmup, 1.0), 0.0);
        assert_eq!(learning_rate_at(0, total, 0, 2.0), 2.0, "no warmup");
    }

    fn schedule(shape: Shape, warmup_steps: u64) -> Schedule {
        Schedule {
            peak: 2.0,
            total_steps: 100,
            warmup_steps,
            shape,
        }
    }

    #[test]
    fn every_shape_starts_with_the_warmup() {
        for shape in [
            Shape::Linear,
            Shape::Constant,
            Shape::Cosine { cycles: 0.5 },
            Shape::Polynomial {
                power: 2.0,
                end: 0.1,
            },
            Shape::InverseSqrt { timescale: 10 },
        ] {
            let schedule = schedule(shape, 10);
            assert_eq!(schedule.learning_rate_at(0), 0.0, "{shape:?}");
            assert_eq!(schedule.learning_rate_at(5), 1.0, "{shape:?}");
            assert_eq!(schedule.learning_rate_at(10), 2.0, "{shape:?}: the peak");
        }
    }

    #[test]
    fn the_shapes_after_the_warmup() {
        let constant = schedule(Shape::Constant, 0);
        assert!((0..200).all(|step| constant.learning_rate_at(step) == 2.0));
        let cosine = schedule(Shape::Cosine { cycles: 0.5 }, 0);
        assert!(
            (cosine.learning_rate_at(50) - 1.0).abs() < 1e-12,
            "half way"
        );
        assert!(cosine.learning_rate_at(100).abs() < 1e-12, "0 at the end");
        let restarts = schedule(Shape::Cosine { cycles: 1.0 }, 0);
        assert!(
            (restarts.learning_rate_at(100) - 2.0).abs() < 1e-12,
            "a full wave"
        );
        let polynomial = schedule(
            Shape::Polynomial {
                power: 2.0,
                end: 0.5,
            },
            0,
        );
        assert!((polynomial.learning_rate_at(50) - (1.5 * 0.25 + 0.5)).abs() < 1e-12);
        assert!((polynomial.learning_rate_at(100) - 0.5).abs() < 1e-12);
        assert!(
            (polynomial.learning_rate_at(150) - 0.5).abs() < 1e-12,
            "past the end"
        );
        let inverse = schedule(Shape::InverseSqrt { timescale: 10 }, 10);
        assert!(
            (inverse.learning_rate_at(40) - 2.0 / 2.0).abs() < 1e-12,
            "sqrt(40/10)"
        );
    }

    #[test]
    fn warmup_steps_win_and_the_timescale_follows_the_warmup() {
        // A spec written before the recipe keys: every one of them takes its default.
        let mut train: TrainSettings = serde_json::from_value(serde_json::json!({
            "max_length": 128, "batch_size": 16, "learning_rate": 2e-5, "epochs": 3,
            "weight_decay": 0.01, "warmup_ratio": 0.0, "max_grad_norm": 1.0,
            "gradient_accumulation": 1, "early_stopping_patience": 0,
            "selection_metric": "macro_f1", "class_weights": "none", "length_bucketing": false,
            "precision": "fp32", "seed": 0
        }))
        .unwrap();
        assert_eq!(train.learning_rate_schedule, LearningRateSchedule::Linear);
        assert_eq!(train.adam_beta2, 0.999);
        train.learning_rate_schedule = LearningRateSchedule::InverseSqrt;
        let unwarmed = Schedule::for_run(&train, 1000);
        assert_eq!(unwarmed.shape, Shape::InverseSqrt { timescale: 10_000 });
        train.warmup_steps = 40;
        let warmed = Schedule::for_run(&train, 1000);
        assert_eq!(warmed.warmup_steps, 40);
        assert_eq!(warmed.shape, Shape::InverseSqrt { timescale: 40 });
        train.warmup_steps = 0;
        train.warmup_ratio = 0.1;
        assert_eq!(Schedule::for_run(&train, 1000).warmup_steps, 100);
    }
}
