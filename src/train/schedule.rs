//! The learning-rate schedule, pure functions of the step: transformers' warmup length
//! (`ceil(warmup_ratio * total_steps)`) and the linear warmup then linear decay of
//! `get_linear_schedule_with_warmup`.

/// The warmup length of transformers' `TrainingArguments.get_warmup_steps`: `ceil(ratio * total)`.
pub fn warmup_steps(total_steps: u64, warmup_ratio: f64) -> u64 {
    (warmup_ratio * total_steps as f64).ceil() as u64
}

/// The learning rate of optimizer step `step` (0-based): linear warmup from 0 over
/// `warmup_steps`, then linear decay to 0 at `total_steps` (transformers'
/// `get_linear_schedule_with_warmup`).
pub fn learning_rate_at(step: u64, total_steps: u64, warmup_steps: u64, peak: f64) -> f64 {
    let factor = if step < warmup_steps {
        step as f64 / warmup_steps.max(1) as f64
    } else {
        (total_steps.saturating_sub(step)) as f64
            / total_steps.saturating_sub(warmup_steps).max(1) as f64
    };
    peak * factor.max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_warms_up_then_decays_to_zero() {
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
}
