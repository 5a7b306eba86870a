//! The random forest classifier, its own CART. smartcore's took 3.1× scikit-learn's time on
//! 10,000 × 20 with 4 features per split, and as long with 1 feature as with 4: every node of
//! its trees scans all the training rows (its bootstrap is a count per row, zero for the rows
//! out of the node), so a tree costs nodes × rows whatever the split search does. Here a node
//! holds only its own rows, sorted per candidate feature at the node (as scikit-learn does), so
//! a tree costs about rows × log rows × depth × features tried.
//!
//! Each tree fits a bootstrap sample, kept as a weight per distinct row drawn; a split tries
//! `max_features` features drawn afresh at each node. Prediction is a majority vote of the
//! trees (as smartcore's was).

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::{Encoded, LearnError};

/// How a split's children are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Criterion {
    Gini,
    Entropy,
    ClassificationError,
}

impl Criterion {
    pub(crate) fn parse(name: &str) -> Self {
        match name {
            "entropy" => Criterion::Entropy,
            "classification_error" => Criterion::ClassificationError,
            _ => Criterion::Gini,
        }
    }

    /// The impurity of a node with these class weights, summing to `total` > 0.
    fn impurity(self, counts: &[f64], total: f64) -> f64 {
        match self {
            Criterion::Gini => 1.0 - counts.iter().map(|c| (c / total).powi(2)).sum::<f64>(),
            Criterion::Entropy => -counts
                .iter()
                .filter(|&&c| c > 0.0)
                .map(|c| (c / total) * (c / total).log2())
                .sum::<f64>(),
            Criterion::ClassificationError => {
                1.0 - counts.iter().copied().fold(0.0, f64::max) / total
            }
        }
    }
}

/// The forest's settings (see `Algorithm::RandomForest`).
#[derive(Debug, Clone)]
pub(crate) struct ForestSettings {
    pub(crate) n_trees: usize,
    pub(crate) max_features: usize,
    pub(crate) criterion: Criterion,
    pub(crate) max_depth: Option<usize>,
    pub(crate) min_samples_leaf: usize,
    pub(crate) min_samples_split: usize,
    pub(crate) seed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Node {
    /// A class index (into the forest's classes).
    Leaf(u32),
    /// Rows with `feature` ≤ `threshold` go to `left`, the others to `right` (node indices).
    Split {
        feature: u32,
        threshold: f64,
        left: u32,
        right: u32,
    },
}

/// A fitted forest: the trees, their nodes in one vector each, the root first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Forest {
    classes: usize,
    trees: Vec<Vec<Node>>,
}

/// One node's candidate split.
struct Best {
    gain: f64,
    feature: usize,
    threshold: f64,
}

/// The state one tree is grown with.
struct Grower<'a> {
    x: &'a Encoded,
    y: &'a [u32],
    classes: usize,
    settings: &'a ForestSettings,
    /// Each drawn row's bootstrap count.
    weight: Vec<f64>,
    rng: StdRng,
    nodes: Vec<Node>,
    /// Scratch: (value, row) of a node's rows on one feature.
    sorted: Vec<(f64, usize)>,
}

impl Grower<'_> {
    fn counts(&self, rows: &[usize]) -> Vec<f64> {
        let mut counts = vec![0.0; self.classes];
        for &r in rows {
            counts[self.y[r] as usize] += self.weight[r];
        }
        counts
    }

    /// The majority class of these weights (the first on a tie).
    fn majority(counts: &[f64]) -> u32 {
        let mut best = 0;
        for (k, &c) in counts.iter().enumerate() {
            if c > counts[best] {
                best = k;
            }
        }
        best as u32
    }

    /// Grows the tree of `rows` (reordered in place: each node's rows end up contiguous). A
    /// stack of pending nodes rather than recursion, as a fully grown tree on awkward data can
    /// be thousands of levels deep.
    fn grow(&mut self, rows: &mut [usize]) {
        // (node, its rows' range, depth); the node is already pushed, as a leaf.
        let mut pending = vec![(0, 0, rows.len(), 0)];
        self.nodes.push(Node::Leaf(0));
        while let Some((index, start, end, depth)) = pending.pop() {
            let here = &mut rows[start..end];
            let counts = self.counts(here);
            let total: f64 = counts.iter().sum();
            self.nodes[index] = Node::Leaf(Self::majority(&counts));
            let pure = counts.iter().filter(|&&c| c > 0.0).count() <= 1;
            let deep = self.settings.max_depth.is_some_and(|m| depth >= m);
            if pure || deep || total < self.settings.min_samples_split as f64 {
                continue;
            }
            let Some(best) = self.best_split(here, &counts, total) else {
                continue;
            };
            // Left rows first, then right; the order within each half does not matter.
            let mut cut = 0;
            for i in 0..here.len() {
                if self.x.row(here[i])[best.feature] <= best.threshold {
                    here.swap(i, cut);
                    cut += 1;
                }
            }
            // A threshold that separates nothing (arithmetic at the ends of f64's range) leaves
            // the node a leaf: growth always ends.
            if cut == 0 || cut == here.len() {
                continue;
            }
            let (left, right) = (self.nodes.len(), self.nodes.len() + 1);
            self.nodes.push(Node::Leaf(0));
            self.nodes.push(Node::Leaf(0));
            self.nodes[index] = Node::Split {
                feature: best.feature as u32,
                threshold: best.threshold,
                left: left as u32,
                right: right as u32,
            };
            pending.push((left, start, start + cut, depth + 1));
            pending.push((right, start + cut, end, depth + 1));
        }
    }

    /// The best split over `max_features` features drawn at random, by impurity decrease;
    /// none when no feature separates the rows with `min_samples_leaf` on each side. As in
    /// scikit-learn, a feature constant in the node does not count towards `max_features`: deep
    /// in a tree over one-hot columns most are, and counting them would stop impure nodes.
    fn best_split(&mut self, rows: &[usize], counts: &[f64], total: f64) -> Option<Best> {
        let criterion = self.settings.criterion;
        let parent = criterion.impurity(counts, total);
        let leaf = self.settings.min_samples_leaf as f64;
        let mut features: Vec<usize> = (0..self.x.width()).collect();
        features.shuffle(&mut self.rng);
        let mut best: Option<Best> = None;
        let mut left = vec![0.0; self.classes];
        let mut right = vec![0.0; self.classes];
        let mut tried = 0;
        for &feature in &features {
            if tried == self.settings.max_features {
                break;
            }
            self.sorted.clear();
            self.sorted
                .extend(rows.iter().map(|&r| (self.x.row(r)[feature], r)));
            self.sorted.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
            let varies = self
                .sorted
                .first()
                .zip(self.sorted.last())
                .is_some_and(|(low, high)| low.0 < high.0);
            if !varies {
                continue;
            }
            tried += 1;
            left.fill(0.0);
            right.copy_from_slice(counts);
            let mut weight_left = 0.0;
            for i in 1..self.sorted.len() {
                let (value, r) = self.sorted[i - 1];
                let (class, w) = (self.y[r] as usize, self.weight[r]);
                left[class] += w;
                right[class] -= w;
                weight_left += w;
                let next = self.sorted[i].0;
                // Only between distinct values can a threshold fall.
                if next <= value || weight_left < leaf || total - weight_left < leaf {
                    continue;
                }
                let weight_right = total - weight_left;
                let gain = parent
                    - weight_left / total * criterion.impurity(&left, weight_left)
                    - weight_right / total * criterion.impurity(&right, weight_right);
                if best.as_ref().is_none_or(|b| gain > b.gain) {
                    // The midpoint of two adjacent floats can round up to the larger, which
                    // would send every row left, forever.
                    let middle = (value + next) / 2.0;
                    best = Some(Best {
                        gain,
                        feature,
                        threshold: if middle < next { middle } else { value },
                    });
                }
            }
        }
        best
    }
}

impl Forest {
    /// Fits `settings.n_trees` trees on `y`, class indices below `classes`.
    pub(crate) fn fit(
        x: &Encoded,
        y: &[u32],
        classes: usize,
        settings: &ForestSettings,
    ) -> Result<Self, LearnError> {
        let n = x.rows();
        if n == 0 || x.width() == 0 || y.len() != n {
            return Err(LearnError::Fit(
                "random_forest needs rows, features and a class per row".into(),
            ));
        }
        if let Some(bad) = y.iter().find(|&&c| c as usize >= classes) {
            return Err(LearnError::Fit(format!("class index {bad} out of range")));
        }
        let mut rng = StdRng::seed_from_u64(settings.seed);
        let mut trees = Vec::with_capacity(settings.n_trees);
        for _ in 0..settings.n_trees {
            let mut weight = vec![0.0; n];
            for _ in 0..n {
                weight[rng.random_range(0..n)] += 1.0;
            }
            let mut rows: Vec<usize> = (0..n).filter(|&r| weight[r] > 0.0).collect();
            let mut grower = Grower {
                x,
                y,
                classes,
                settings,
                weight,
                rng: StdRng::seed_from_u64(rng.random()),
                nodes: Vec::new(),
                sorted: Vec::with_capacity(rows.len()),
            };
            grower.grow(&mut rows);
            trees.push(grower.nodes);
        }
        Ok(Forest { classes, trees })
    }

    /// Each row's majority vote over the trees, as a class index.
    pub(crate) fn predict(&self, x: &Encoded) -> Result<Vec<u32>, LearnError> {
        let mut votes = vec![0.0; self.classes];
        x.row_iter()
            .map(|row| {
                votes.fill(0.0);
                for tree in &self.trees {
                    let mut node = 0;
                    let class = loop {
                        match tree.get(node) {
                            Some(Node::Leaf(c)) => break *c as usize,
                            Some(Node::Split {
                                feature,
                                threshold,
                                left,
                                right,
                            }) => {
                                let value = row.get(*feature as usize).ok_or_else(|| {
                                    LearnError::Predict("a row is narrower than the model".into())
                                })?;
                                let child = if *value <= *threshold { *left } else { *right };
                                // Children come after their parent: a stored tree that loops
                                // back is corrupt, and would never reach a leaf.
                                if child as usize <= node {
                                    return Err(LearnError::Predict("a corrupt tree".into()));
                                }
                                node = child as usize;
                            }
                            None => return Err(LearnError::Predict("a corrupt tree".into())),
                        }
                    };
                    if let Some(v) = votes.get_mut(class) {
                        *v += 1.0;
                    }
                }
                Ok(Grower::majority(&votes))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(n_trees: usize, max_features: usize) -> ForestSettings {
        ForestSettings {
            n_trees,
            max_features,
            criterion: Criterion::Gini,
            max_depth: None,
            min_samples_leaf: 1,
            min_samples_split: 2,
            seed: 0,
        }
    }

    /// 300 rows of two informative features and one of noise; three classes by quadrant.
    fn data() -> (Encoded, Vec<u32>) {
        let (mut values, mut y) = (Vec::new(), Vec::new());
        for i in 0..300 {
            let t = i as f64;
            let (a, b, c) = ((t * 0.37).sin(), (t * 0.91).cos(), (t * 1.7).sin());
            values.extend([a, b, c]);
            y.push(if a > 0.0 && b > 0.0 {
                2
            } else {
                u32::from(a > 0.0)
            });
        }
        (Encoded::new(300, 3, values), y)
    }

    #[test]
    fn a_forest_learns_its_training_rows_and_is_reproducible() {
        let (x, y) = data();
        for criterion in [
            Criterion::Gini,
            Criterion::Entropy,
            Criterion::ClassificationError,
        ] {
            let s = ForestSettings {
                criterion,
                ..settings(20, 2)
            };
            let forest = Forest::fit(&x, &y, 3, &s).unwrap();
            let p = forest.predict(&x).unwrap();
            let right = p.iter().zip(&y).filter(|(a, b)| a == b).count();
            assert!(right >= 295, "{criterion:?}: {right} of 300");
            assert_eq!(Forest::fit(&x, &y, 3, &s).unwrap().predict(&x).unwrap(), p);
        }
    }

    #[test]
    fn depth_and_leaf_limits_hold() {
        let (x, y) = data();
        let stump = ForestSettings {
            max_depth: Some(1),
            ..settings(3, 3)
        };
        let forest = Forest::fit(&x, &y, 3, &stump).unwrap();
        assert!(forest.trees.iter().all(|t| t.len() <= 3));
        let big_leaves = ForestSettings {
            min_samples_leaf: 400,
            ..settings(3, 3)
        };
        let forest = Forest::fit(&x, &y, 3, &big_leaves).unwrap();
        assert!(forest.trees.iter().all(|t| t.len() == 1));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let (x, y) = data();
        assert!(Forest::fit(&x, &y, 2, &settings(1, 1)).is_err());
        assert!(Forest::fit(&x, &y[..10], 3, &settings(1, 1)).is_err());
        let forest = Forest::fit(&x, &y, 3, &settings(2, 1)).unwrap();
        // Too narrow a row: an error if a split needs a missing feature, never a panic.
        let _ = forest.predict(&Encoded::new(1, 1, vec![0.0]));
    }
}
