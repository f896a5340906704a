//! Seeded random numbers. Every random draw in bertlab (head initialisation, dropout masks,
//! shuffling, splits) comes from here, never from candle's generator, which cannot be seeded on
//! CPU. A generator is ChaCha8 keyed by the run's seed, on a *stream* that names what it is for;
//! dropout uses one stream per optimizer step, so a resumed run draws exactly the masks an
//! uninterrupted run would have drawn.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

/// Streams: independent sequences under one seed.
pub mod stream {
    /// Initialisation of weights the checkpoint lacks (classifier head, a missing pooler).
    pub const INITIALIZATION: u64 = 1;
    /// Shuffling of training batches: epoch `e` uses stream `SHUFFLE + e`.
    pub const SHUFFLE: u64 = 1 << 40;
    /// The train/validation/test split.
    pub const SPLIT: u64 = 3;
    /// Initialisation of a pooler the checkpoint lacks.
    pub const POOLER_INITIALIZATION: u64 = 4;
    /// The sample of the training split (`data.max_train_examples`).
    pub const TRAIN_SAMPLE: u64 = 5;
    /// Dropout masks of step `s` use stream `DROPOUT + s`.
    pub const DROPOUT: u64 = 1 << 32;
    /// A search's proposal of trial `k` uses stream `SEARCH_TRIAL + k` under the search's seed.
    pub const SEARCH_TRIAL: u64 = 1 << 48;
}

/// A seeded generator of uniform and normal numbers.
#[derive(Clone, Debug)]
pub struct SeededRandom {
    generator: ChaCha8Rng,
    spare_normal: Option<f64>,
}

impl SeededRandom {
    pub fn new(seed: u64, stream: u64) -> SeededRandom {
        let mut generator = ChaCha8Rng::seed_from_u64(seed);
        generator.set_stream(stream);
        SeededRandom {
            generator,
            spare_normal: None,
        }
    }

    /// The generator of dropout masks for one optimizer step.
    pub fn for_dropout(seed: u64, step: u64) -> SeededRandom {
        SeededRandom::new(seed, stream::DROPOUT.wrapping_add(step))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.generator.next_u64()
    }

    /// Uniform in [0, 1), 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.generator.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, 1) as f32, 24 random bits.
    pub fn uniform_f32(&mut self) -> f32 {
        (self.generator.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Standard normal (Box-Muller; the second value of each pair is kept for the next call).
    pub fn normal(&mut self) -> f64 {
        if let Some(value) = self.spare_normal.take() {
            return value;
        }
        let u1 = 1.0 - self.uniform(); // in (0, 1]: the logarithm is finite
        let u2 = self.uniform();
        let radius = (-2.0 * u1.ln()).sqrt();
        let angle = 2.0 * std::f64::consts::PI * u2;
        self.spare_normal = Some(radius * angle.sin());
        radius * angle.cos()
    }

    /// A uniformly random index in `0..bound` (`bound > 0`), without modulo bias.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "below(0)");
        let zone = u64::MAX - (u64::MAX % bound);
        loop {
            let value = self.generator.next_u64();
            if value < zone {
                return value % bound;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_and_stream_give_the_same_numbers() {
        let mut a = SeededRandom::new(7, stream::SHUFFLE);
        let mut b = SeededRandom::new(7, stream::SHUFFLE);
        assert_ne!(
            SeededRandom::new(7, stream::SHUFFLE).next_u64(),
            SeededRandom::new(7, stream::SHUFFLE + 1).next_u64()
        );
        let mut c = SeededRandom::new(7, stream::SPLIT);
        let first: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        assert_eq!(first, (0..4).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(first, (0..4).map(|_| c.next_u64()).collect::<Vec<_>>());
        assert_ne!(
            SeededRandom::for_dropout(7, 10).next_u64(),
            SeededRandom::for_dropout(7, 11).next_u64()
        );
    }

    #[test]
    fn normal_has_mean_zero_and_unit_variance() {
        let mut random = SeededRandom::new(1, stream::INITIALIZATION);
        let samples: Vec<f64> = (0..100_000).map(|_| random.normal()).collect();
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        let variance =
            samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / samples.len() as f64;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((variance - 1.0).abs() < 0.02, "{variance}");
    }

    #[test]
    fn uniform_stays_in_range() {
        let mut random = SeededRandom::new(3, 0);
        for _ in 0..10_000 {
            let value = random.uniform();
            assert!((0.0..1.0).contains(&value));
            let value = random.uniform_f32();
            assert!((0.0..1.0).contains(&value));
            assert!(random.below(3) < 3);
        }
    }
}
