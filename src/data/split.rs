//! The split step: train / validation / test, seeded (`data.split_seed`) and, by default,
//! stratified: each class is shuffled on its own and cut in the same proportions, so every split
//! keeps the class balance of the data.

use crate::support::random::{SeededRandom, stream};

/// Indices into the examples, per split.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SplitIndices {
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
    pub test: Vec<usize>,
}

/// How many of `count` items a fraction takes: rounded, but at least one when the fraction is
/// above zero and there is more than one item to split.
fn share(count: usize, fraction: f64) -> usize {
    if fraction <= 0.0 || count == 0 {
        return 0;
    }
    let rounded = (count as f64 * fraction).round() as usize;
    rounded.max(usize::from(count > 1)).min(count)
}

/// A seeded sample of `size` of the examples with these labels, stratified (each class keeps its
/// share, largest remainders first), in file order. All of them when `size` is not smaller.
pub fn sample(labels: &[u32], classes: usize, size: usize, seed: u64) -> Vec<usize> {
    if size >= labels.len() {
        return (0..labels.len()).collect();
    }
    let mut random = SeededRandom::new(seed, stream::TRAIN_SAMPLE);
    let mut groups: Vec<Vec<usize>> = (0..classes as u32)
        .map(|class| {
            (0..labels.len())
                .filter(|&index| labels[index] == class)
                .collect()
        })
        .collect();
    let exact: Vec<f64> = groups
        .iter()
        .map(|group| group.len() as f64 * size as f64 / labels.len() as f64)
        .collect();
    let mut quotas: Vec<usize> = exact.iter().map(|share| share.floor() as usize).collect();
    let mut by_remainder: Vec<usize> = (0..classes).collect();
    by_remainder
        .sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    let mut missing = size - quotas.iter().sum::<usize>();
    for class in by_remainder {
        if missing == 0 {
            break;
        }
        if quotas[class] < groups[class].len() {
            quotas[class] += 1;
            missing -= 1;
        }
    }
    let mut picked = Vec::with_capacity(size);
    for (group, quota) in groups.iter_mut().zip(quotas) {
        for i in (1..group.len()).rev() {
            let j = random.below(i as u64 + 1) as usize;
            group.swap(i, j);
        }
        picked.extend_from_slice(&group[..quota]);
    }
    picked.sort_unstable();
    picked
}

/// Splits examples with these labels. Within each split, indices are in file order.
pub fn split(
    labels: &[u32],
    classes: usize,
    validation_fraction: f64,
    test_fraction: f64,
    seed: u64,
    stratify: bool,
) -> SplitIndices {
    let mut random = SeededRandom::new(seed, stream::SPLIT);
    let groups: Vec<Vec<usize>> = if stratify {
        (0..classes as u32)
            .map(|class| {
                (0..labels.len())
                    .filter(|&index| labels[index] == class)
                    .collect()
            })
            .collect()
    } else {
        vec![(0..labels.len()).collect()]
    };
    let mut result = SplitIndices::default();
    for mut group in groups {
        // Fisher-Yates with the seeded generator.
        for i in (1..group.len()).rev() {
            let j = random.below(i as u64 + 1) as usize;
            group.swap(i, j);
        }
        let validation = share(group.len(), validation_fraction);
        let test = share(group.len(), test_fraction).min(group.len() - validation);
        result.validation.extend_from_slice(&group[..validation]);
        result
            .test
            .extend_from_slice(&group[validation..validation + test]);
        result.train.extend_from_slice(&group[validation + test..]);
    }
    result.train.sort_unstable();
    result.validation.sort_unstable();
    result.test.sort_unstable();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_split_keeps_class_proportions_and_is_seeded() {
        let labels: Vec<u32> = (0..1000).map(|i| if i % 4 == 0 { 1 } else { 0 }).collect();
        let parts = split(&labels, 2, 0.1, 0.2, 7, true);
        assert_eq!(parts.validation.len(), 100);
        assert_eq!(parts.test.len(), 200);
        assert_eq!(parts.train.len(), 700);
        let ones = |indices: &[usize]| indices.iter().filter(|&&i| labels[i] == 1).count();
        assert_eq!(ones(&parts.validation), 25);
        assert_eq!(ones(&parts.test), 50);
        assert_eq!(parts, split(&labels, 2, 0.1, 0.2, 7, true));
        assert_ne!(parts, split(&labels, 2, 0.1, 0.2, 8, true));
        let mut all: Vec<usize> = parts
            .train
            .iter()
            .chain(&parts.validation)
            .chain(&parts.test)
            .copied()
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn small_classes_still_reach_validation() {
        let labels = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1];
        let parts = split(&labels, 2, 0.1, 0.0, 0, true);
        assert!(parts.validation.iter().any(|&i| labels[i] == 1));
        assert!(parts.train.iter().any(|&i| labels[i] == 1));
    }

    #[test]
    fn a_sample_is_stratified_exact_and_seeded() {
        let labels: Vec<u32> = (0..1000)
            .map(|i| {
                if i % 10 < 7 {
                    0
                } else if i % 10 < 9 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let picked = sample(&labels, 3, 101, 4);
        assert_eq!(picked.len(), 101);
        assert!(
            picked.windows(2).all(|pair| pair[0] < pair[1]),
            "file order, no repeats"
        );
        let count = |class| {
            picked
                .iter()
                .filter(|&&index| labels[index] == class)
                .count()
        };
        assert_eq!(
            (count(0), count(1), count(2)),
            (71, 20, 10),
            "70.7, 20.2, 10.1: the largest remainder gets the extra"
        );
        assert_eq!(picked, sample(&labels, 3, 101, 4));
        assert_ne!(picked, sample(&labels, 3, 101, 5));
        assert_eq!(
            sample(&labels, 3, 5000, 4).len(),
            1000,
            "no larger than the data"
        );
    }
}
