//! Statistical disclosure control for aggregate tables, as trusted research
//! environments and statistical agencies release them:
//!
//! 1. **Primary suppression**: a group with fewer than `min_count` rows is
//!    not released at all (no row, no label: a label shared by fewer people
//!    is itself microdata).
//! 2. **Secondary suppression**: along every grouping dimension, the cells
//!    that share all other group values form a margin. If a margin holds
//!    exactly one suppressed cell, or suppressed cells adding up to fewer than
//!    `min_count`, its smallest released cell is suppressed too, until neither
//!    holds: a total from a coarser query can then no longer be differenced
//!    down to one small group. With one grouping column the margin is the
//!    whole table (the grand total).
//! 3. **Rounding**: released counts and sums are rounded to the nearest
//!    multiple of `round_to` (halves up, in the column's own units for sums
//!    of decimals too), deterministically, so repeating a query gives the
//!    same answer and reveals nothing new. Means are derived from the
//!    released sum and count, never from exact figures.
//! 4. **Dominance**: a sum or mean is withheld when one row contributes more
//!    than `dominance_pct` % of the cell's total magnitude.
//!
//! Pure functions over plain numbers, no engine types: the slice module
//! feeds them and applies the result.

use std::collections::BTreeMap;

/// One group of an aggregate, as the rules need it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// The group's values, one per grouping column, as text.
    pub keys: Vec<String>,
    /// Rows in the group.
    pub count: u64,
}

/// Which cells must be withheld: primary then secondary suppression.
pub fn suppressed(cells: &[Cell], min_count: u64) -> Vec<bool> {
    let mut out: Vec<bool> = cells.iter().map(|c| c.count < min_count).collect();
    let dims = cells.first().map_or(0, |c| c.keys.len());
    if dims == 0 {
        return out;
    }
    // Each pass suppresses at least one more cell or stops, so this ends
    // after at most `cells.len()` passes.
    loop {
        let mut changed = false;
        for dim in 0..dims {
            for members in margins(cells, dim).values() {
                let hidden: Vec<usize> = members.iter().copied().filter(|&i| out[i]).collect();
                if hidden.is_empty() {
                    continue;
                }
                let hidden_total: u64 = hidden.iter().map(|&i| cells[i].count).sum();
                if hidden.len() == 1 || hidden_total < min_count {
                    let smallest = members
                        .iter()
                        .copied()
                        .filter(|&i| !out[i])
                        // Ties go by label, not by position, so the cells
                        // withheld do not depend on the order they came in.
                        .min_by(|&a, &b| {
                            (cells[a].count, &cells[a].keys).cmp(&(cells[b].count, &cells[b].keys))
                        });
                    if let Some(i) = smallest {
                        out[i] = true;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            return out;
        }
    }
}

/// The margins along grouping column `dim`: cell indexes grouped by the
/// values of every other grouping column, in a fixed order (the greedy
/// loop above must withhold the same cells every time it is asked).
fn margins(cells: &[Cell], dim: usize) -> BTreeMap<Vec<&str>, Vec<usize>> {
    let mut margins: BTreeMap<Vec<&str>, Vec<usize>> = BTreeMap::new();
    for (i, cell) in cells.iter().enumerate() {
        let key: Vec<&str> = cell
            .keys
            .iter()
            .enumerate()
            .filter(|(d, _)| *d != dim)
            .map(|(_, k)| k.as_str())
            .collect();
        margins.entry(key).or_default().push(i);
    }
    margins
}

/// A count rounded to the nearest multiple of `base` (halves up).
pub fn round_count(count: u64, base: u64) -> u64 {
    if base <= 1 {
        return count;
    }
    (count + base / 2) / base * base
}

/// A sum rounded to the nearest multiple of `base` (halves away from
/// zero). Integer sums stay whole numbers.
pub fn round_value(value: f64, base: u64) -> f64 {
    if base <= 1 {
        return value;
    }
    let base = base as f64;
    (value / base).round() * base
}

/// Whether the largest contribution dominates the cell's total magnitude.
pub fn dominated(largest_abs: f64, total_abs: f64, dominance_pct: u64) -> bool {
    total_abs > 0.0 && largest_abs * 100.0 > total_abs * dominance_pct as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(keys: &[&str], count: u64) -> Cell {
        Cell {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            count,
        }
    }

    /// Per margin along `dim`: suppressed cells, their total count, cells.
    fn margin_stats(cells: &[Cell], hidden: &[bool], dim: usize) -> Vec<(usize, u64, usize)> {
        margins(cells, dim)
            .values()
            .map(|members| {
                let suppressed: Vec<usize> =
                    members.iter().copied().filter(|&i| hidden[i]).collect();
                let total = suppressed.iter().map(|&i| cells[i].count).sum();
                (suppressed.len(), total, members.len())
            })
            .collect()
    }

    #[test]
    fn small_groups_are_suppressed_and_a_lone_one_takes_a_neighbour_with_it() {
        let cells = vec![
            cell(&["north"], 3),
            cell(&["south"], 40),
            cell(&["east"], 25),
        ];
        // north alone would be recoverable from the grand total minus the
        // others, so the next smallest (east) goes too.
        assert_eq!(suppressed(&cells, 10), [true, false, true]);
    }

    #[test]
    fn two_small_groups_that_together_reach_the_threshold_are_enough() {
        let cells = vec![cell(&["a"], 6), cell(&["b"], 7), cell(&["c"], 50)];
        assert_eq!(suppressed(&cells, 10), [true, true, false]);
        let tiny = vec![
            cell(&["a"], 2),
            cell(&["b"], 3),
            cell(&["c"], 50),
            cell(&["d"], 60),
        ];
        // 2 + 3 < 10: the next smallest (c) must go as well.
        assert_eq!(suppressed(&tiny, 10), [true, true, true, false]);
    }

    #[test]
    fn secondary_suppression_runs_along_every_dimension() {
        // region × year; (north, 2020) is small.
        let cells = vec![
            cell(&["north", "2020"], 4),
            cell(&["north", "2021"], 30),
            cell(&["south", "2020"], 20),
            cell(&["south", "2021"], 35),
        ];
        let s = suppressed(&cells, 10);
        assert!(s[0]);
        // In north's row and in 2020's column one more must go; the
        // complement cell of the 2×2 table then goes as well.
        assert_eq!(s.iter().filter(|&&x| x).count(), 4);
        for dim in 0..2 {
            for (n, total, _) in margin_stats(&cells, &s, dim) {
                assert!(
                    n == 0 || (n >= 2 && total >= 10),
                    "a margin reveals a suppressed cell"
                );
            }
        }
    }

    #[test]
    fn the_cells_withheld_do_not_depend_on_the_order_they_come_in() {
        // Two equally small candidates for secondary suppression.
        let cells = vec![
            cell(&["a"], 3),
            cell(&["b"], 20),
            cell(&["c"], 20),
            cell(&["d"], 40),
        ];
        let hidden = |cells: &[Cell]| -> Vec<String> {
            let s = suppressed(cells, 10);
            let mut out: Vec<String> = cells
                .iter()
                .zip(s)
                .filter(|(_, h)| *h)
                .map(|(c, _)| c.keys[0].clone())
                .collect();
            out.sort();
            out
        };
        let mut reversed = cells.clone();
        reversed.reverse();
        assert_eq!(hidden(&cells), ["a", "b"]);
        assert_eq!(hidden(&reversed), ["a", "b"]);
    }

    #[test]
    fn large_tables_release_everything() {
        let cells = vec![cell(&["a"], 12), cell(&["b"], 10)];
        assert_eq!(suppressed(&cells, 10), [false, false]);
        assert_eq!(suppressed(&[cell(&[], 9)], 10), [true]);
    }

    #[test]
    fn rounding_is_deterministic_to_the_nearest_base() {
        assert_eq!(round_count(12, 5), 10);
        assert_eq!(round_count(13, 5), 15);
        assert_eq!(round_count(15, 5), 15);
        assert_eq!(round_count(17, 1), 17);
    }

    #[test]
    fn sums_round_to_the_base_in_their_own_units() {
        assert_eq!(round_value(362.0, 5), 360.0);
        assert_eq!(round_value(12.5, 5), 15.0);
        assert_eq!(round_value(-12.5, 5), -15.0);
        assert_eq!(round_value(1234.567, 5), 1235.0);
        assert_eq!(round_value(3.25, 1), 3.25);
    }

    #[test]
    fn one_dominant_contributor_withholds_the_sum() {
        assert!(dominated(60.0, 100.0, 50));
        assert!(!dominated(50.0, 100.0, 50));
        assert!(!dominated(0.0, 0.0, 50));
    }

    proptest::proptest! {
        #[test]
        fn no_margin_ever_reveals_a_single_suppressed_cell(
            counts in proptest::collection::vec(0u64..40, 1..30)
        ) {
            let cells: Vec<Cell> = counts.iter().enumerate()
                .map(|(i, &c)| cell(&[&(i % 5).to_string(), &(i / 5).to_string()], c))
                .collect();
            let s = suppressed(&cells, 10);
            for (c, &hidden) in cells.iter().zip(&s) {
                proptest::prop_assert!(c.count >= 10 || hidden);
            }
            for dim in 0..2 {
                for (n, total, size) in margin_stats(&cells, &s, dim) {
                    // Either nothing hidden, everything hidden, or at least
                    // two hidden cells adding up to the threshold.
                    proptest::prop_assert!(n == 0 || n == size || (n >= 2 && total >= 10));
                }
            }
        }
    }
}
