//! Cutting an epoch into batches, as indices into the training examples: shuffled from the
//! run's seeded generator, optionally bucketed by length so that batches, padded to their longest
//! text, carry little padding.

use crate::support::random::{SeededRandom, stream};

/// Batches per bucket when bucketing by length: each group of this many batches' worth of
/// shuffled examples is sorted by length and cut into batches.
pub const BUCKET_BATCHES: usize = 50;

/// The batches of one epoch, as indices into the examples. The order is shuffled with the seeded
/// generator (stream `SHUFFLE + epoch`), so it is the same for the same seed and epoch, and
/// differs between epochs. With `bucketing`, the shuffled examples are taken in groups of
/// `BUCKET_BATCHES` batches, sorted by length within the group, cut into batches, and the batches
/// of the whole epoch are shuffled again: similar lengths share a batch, yet batch order and
/// membership stay random.
pub fn epoch_batches(
    lengths: &[usize],
    batch_size: usize,
    seed: u64,
    epoch: u64,
    bucketing: bool,
) -> Vec<Vec<usize>> {
    assert!(batch_size > 0, "batch_size must be positive");
    let mut random = SeededRandom::new(seed, stream::SHUFFLE + epoch);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    shuffle(&mut order, &mut random);
    if !bucketing {
        return order.chunks(batch_size).map(<[usize]>::to_vec).collect();
    }
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for group in order.chunks(batch_size * BUCKET_BATCHES) {
        let mut group = group.to_vec();
        group.sort_by_key(|&index| lengths[index]); // stable: ties keep their shuffled order
        batches.extend(group.chunks(batch_size).map(<[usize]>::to_vec));
    }
    shuffle(&mut batches, &mut random);
    batches
}

fn shuffle<T>(items: &mut [T], random: &mut SeededRandom) {
    for i in (1..items.len()).rev() {
        let j = random.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn padded_tokens(batches: &[Vec<usize>], lengths: &[usize]) -> usize {
        batches
            .iter()
            .map(|batch| batch.len() * batch.iter().map(|&i| lengths[i]).max().unwrap_or(0))
            .sum()
    }

    #[test]
    fn every_example_appears_once_per_epoch_in_a_seeded_order() {
        let lengths: Vec<usize> = (0..1000).map(|i| 3 + (i * 7919) % 120).collect();
        for bucketing in [false, true] {
            let batches = epoch_batches(&lengths, 16, 5, 0, bucketing);
            let mut all: Vec<usize> = batches.iter().flatten().copied().collect();
            all.sort_unstable();
            assert_eq!(all, (0..1000).collect::<Vec<_>>());
            assert!(
                batches
                    .iter()
                    .all(|batch| !batch.is_empty() && batch.len() <= 16)
            );
            assert_eq!(batches, epoch_batches(&lengths, 16, 5, 0, bucketing));
            assert_ne!(batches, epoch_batches(&lengths, 16, 5, 1, bucketing));
            assert_ne!(batches, epoch_batches(&lengths, 16, 6, 0, bucketing));
        }
    }

    #[test]
    fn bucketing_pads_less() {
        let lengths: Vec<usize> = (0..5000).map(|i| 3 + (i * 7919) % 120).collect();
        let real: usize = lengths.iter().sum();
        let plain = padded_tokens(&epoch_batches(&lengths, 32, 1, 0, false), &lengths);
        let bucketed = padded_tokens(&epoch_batches(&lengths, 32, 1, 0, true), &lengths);
        assert!(bucketed < plain, "{bucketed} vs {plain}");
        assert!(
            (bucketed as f64) < real as f64 * 1.1,
            "bucketed batches are nearly free of padding: {bucketed} vs {real}"
        );
    }
}
