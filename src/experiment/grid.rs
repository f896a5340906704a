//! Grid expansion, a pure function: the points of the cartesian product of the `[grid]` axes.
//!
//! Order (documented in docs/experiment-file.md, pinned by tests): axes in the order they appear
//! in `[grid]`, the last one varying fastest, like nested loops written top to bottom, or like
//! counting with the last axis as the lowest digit. A file without `[grid]` has exactly one point.

/// The number of points of a grid with these axis lengths, or `None` if it overflows `usize`.
pub fn size(axis_lengths: &[usize]) -> Option<usize> {
    axis_lengths
        .iter()
        .try_fold(1usize, |product, &length| product.checked_mul(length))
}

/// Every point as one value index per axis, in grid order.
///
/// `points(&[2, 3])` yields `[0,0] [0,1] [0,2] [1,0] [1,1] [1,2]`.
pub fn points(axis_lengths: &[usize]) -> impl Iterator<Item = Vec<usize>> + '_ {
    let total = size(axis_lengths).unwrap_or(0);
    (0..total).map(move |mut ordinal| {
        let mut point = vec![0; axis_lengths.len()];
        for (axis, &length) in axis_lengths.iter().enumerate().rev() {
            point[axis] = ordinal % length;
            ordinal /= length;
        }
        point
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_axis_varies_fastest() {
        let all: Vec<Vec<usize>> = points(&[2, 3]).collect();
        assert_eq!(all, [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]);
    }

    #[test]
    fn three_by_two_by_three_has_eighteen_points_in_order() {
        let all: Vec<Vec<usize>> = points(&[3, 2, 3]).collect();
        assert_eq!(all.len(), 18);
        assert_eq!(all[0], [0, 0, 0]);
        assert_eq!(all[1], [0, 0, 1]);
        assert_eq!(all[3], [0, 1, 0]);
        assert_eq!(all[6], [1, 0, 0]);
        assert_eq!(all[17], [2, 1, 2]);
    }

    #[test]
    fn no_axes_is_one_point_and_sizes_do_not_overflow() {
        assert_eq!(points(&[]).collect::<Vec<_>>(), [Vec::<usize>::new()]);
        assert_eq!(size(&[]), Some(1));
        assert_eq!(size(&[usize::MAX, 2]), None);
        assert_eq!(size(&[10, 10, 10]), Some(1000));
    }
}
