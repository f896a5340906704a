//! The split step: train / validation / test, seeded (`data.split_seed`) and, by default,
//! stratified: each class is shuffled on its own and cut in the same proportions, so every split
//! keeps the class balance of the data.

use crate::random::{SeededRandom, stream};

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
}
