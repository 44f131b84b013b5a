//! The noise: OpenDP's discrete Laplace mechanism over a vector of exact
//! statistics (one per group), with exact samplers and randomness from
//! OpenSSL's private generator.
//!
//! A statistic is planned before it is noised: planning fixes the noise
//! scale from the sensitivity (how much one row can move the whole vector,
//! in L1) and the epsilon share it may use, and asks OpenDP's privacy map
//! what the measurement really costs. The caller charges that cost to the
//! budget, durably, and only then draws the noise.

use opendp::core::Measurement;
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::make_laplace;
use opendp::measures::MaxDivergence;
use opendp::metrics::L1Distance;

/// Exact values of one statistic, one per group.
#[derive(Debug, Clone, PartialEq)]
pub enum Exact {
    /// Counts and sums of whole-number columns: noise on the integers.
    Integers(Vec<i64>),
    /// Sums of decimal columns: noise on a fine lattice of floats.
    Decimals(Vec<f64>),
}

type IntMechanism =
    Measurement<VectorDomain<AtomDomain<i64>>, L1Distance<i64>, MaxDivergence, Vec<i64>>;
type FloatMechanism =
    Measurement<VectorDomain<AtomDomain<f64>>, L1Distance<f64>, MaxDivergence, Vec<f64>>;

enum Mechanism {
    Integers(IntMechanism, Vec<i64>),
    Decimals(FloatMechanism, Vec<f64>),
}

/// A statistic whose noise is fixed but not yet drawn.
pub struct Statistic {
    mechanism: Mechanism,
    /// The Laplace scale `b` (noise standard deviation is about `b·√2`).
    pub scale: f64,
    /// What releasing it costs, by OpenDP's privacy map.
    pub epsilon: f64,
}

/// A released statistic: noisy values and the 95 % interval's half-width.
#[derive(Debug, Clone, PartialEq)]
pub struct Noised {
    pub values: Exact,
    pub scale: f64,
    pub half_width: f64,
}

fn opendp_error(e: opendp::error::Error) -> String {
    format!("differential privacy: {}", e.message.unwrap_or_default())
}

impl Statistic {
    /// Plans noise for `exact`, a vector one row can move by at most
    /// `sensitivity` in L1, spending about `epsilon`.
    pub fn plan(exact: Exact, sensitivity: f64, epsilon: f64) -> Result<Self, String> {
        if !(epsilon.is_finite() && epsilon > 0.0) {
            return Err("epsilon must be a positive number".into());
        }
        if !(sensitivity.is_finite() && sensitivity >= 0.0) {
            return Err("sensitivity must be a finite number ≥ 0".into());
        }
        let scale = Self::scale_for(sensitivity, epsilon);
        match exact {
            Exact::Integers(values) => {
                let d_in = sensitivity.ceil() as i64;
                let m = make_laplace(
                    VectorDomain::new(AtomDomain::<i64>::default()),
                    L1Distance::<i64>::default(),
                    scale,
                    None,
                )
                .map_err(opendp_error)?;
                let cost = m.map(&d_in).map_err(opendp_error)?;
                Ok(Self {
                    mechanism: Mechanism::Integers(m, values),
                    scale,
                    epsilon: cost,
                })
            }
            Exact::Decimals(values) => {
                let m = make_laplace(
                    VectorDomain::new(AtomDomain::<f64>::new_non_nan()),
                    L1Distance::<f64>::default(),
                    scale,
                    None,
                )
                .map_err(opendp_error)?;
                let cost = m.map(&sensitivity).map_err(opendp_error)?;
                // NaN cannot enter the non-NaN domain; an empty group's sum
                // is 0 already.
                let values = values
                    .into_iter()
                    .map(|v| if v.is_nan() { 0.0 } else { v })
                    .collect();
                Ok(Self {
                    mechanism: Mechanism::Decimals(m, values),
                    scale,
                    epsilon: cost,
                })
            }
        }
    }

    /// The Laplace scale for `sensitivity` at `epsilon`. A statistic no row
    /// can move (a sum of a column bounded to [0, 0]) still gets noise of
    /// scale 1/epsilon's order: never a scale of 0.
    pub fn scale_for(sensitivity: f64, epsilon: f64) -> f64 {
        sensitivity.max(1.0) / epsilon
    }

    /// Draws the noise. Call only once the cost is paid.
    pub fn release(self) -> Result<Noised, String> {
        match self.mechanism {
            Mechanism::Integers(m, values) => Ok(Noised {
                values: Exact::Integers(m.invoke(&values).map_err(opendp_error)?),
                scale: self.scale,
                half_width: integer_half_width(self.scale),
            }),
            Mechanism::Decimals(m, values) => Ok(Noised {
                values: Exact::Decimals(m.invoke(&values).map_err(opendp_error)?),
                scale: self.scale,
                half_width: self.scale * 20f64.ln(),
            }),
        }
    }
}

/// The smallest whole `h` with P(|X| > h) ≤ 5 % for discrete Laplace noise
/// of scale `b` (P(X = x) ∝ e^(−|x|/b)), where
/// P(|X| ≥ t) = 2·e^(−t/b) / (1 + e^(−1/b)) for t ≥ 1.
pub fn integer_half_width(b: f64) -> f64 {
    let q = (-1.0 / b).exp();
    let t = b * (2.0 / (0.05 * (1.0 + q))).ln();
    (t.ceil() - 1.0).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(true_value: i64, epsilon: f64, n: usize) -> (Vec<i64>, Statistic) {
        let s = Statistic::plan(Exact::Integers(vec![true_value; n]), 1.0, epsilon).unwrap();
        let scale = s.scale;
        let again = Statistic::plan(Exact::Integers(vec![true_value; n]), 1.0, epsilon).unwrap();
        let Exact::Integers(values) = s.release().unwrap().values else {
            unreachable!()
        };
        assert_eq!(again.scale, scale);
        (values, again)
    }

    #[test]
    fn counts_get_noise_of_the_scale_epsilon_sets_centred_on_the_truth() {
        for epsilon in [0.1, 0.5, 1.0] {
            let n = 40_000;
            let (values, plan) = draws(100, epsilon, n);
            let b = 1.0 / epsilon;
            assert_eq!(plan.scale, b);
            // OpenDP's own map: a count costs exactly its epsilon.
            assert!((plan.epsilon - epsilon).abs() < 1e-9, "{}", plan.epsilon);
            let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let var = values
                .iter()
                .map(|&v| (v as f64 - mean).powi(2))
                .sum::<f64>()
                / n as f64;
            // Discrete Laplace: variance 2q/(1−q)² with q = e^(−1/b).
            let q = (-1.0 / b).exp();
            let expected = 2.0 * q / (1.0 - q).powi(2);
            // Standard error of the mean is √(var/n): well under 0.1·b.
            assert!(
                (mean - 100.0).abs() < 0.05 * b + 0.05,
                "ε={epsilon}: mean {mean}"
            );
            assert!(
                (var / expected - 1.0).abs() < 0.06,
                "ε={epsilon}: variance {var}, expected {expected}"
            );
            let half = integer_half_width(b);
            let inside = values
                .iter()
                .filter(|&&v| (v - 100).abs() as f64 <= half)
                .count() as f64
                / n as f64;
            // At least 95 % by construction; a discrete distribution cannot
            // always hit 95 % exactly (ε = 1: 97.3 %).
            assert!(
                (0.943..0.98).contains(&inside),
                "ε={epsilon}: {inside} of draws inside ±{half}"
            );
        }
    }

    #[test]
    fn sensitivity_scales_the_noise_and_the_cost_is_what_opendp_says() {
        let s = Statistic::plan(Exact::Integers(vec![0; 3]), 365.0, 0.5).unwrap();
        assert_eq!(s.scale, 730.0);
        assert!((s.epsilon - 0.5).abs() < 1e-9);
        let f = Statistic::plan(Exact::Decimals(vec![0.0, f64::NAN]), 2500.5, 0.25).unwrap();
        assert!((f.epsilon - 0.25).abs() < 1e-6, "{}", f.epsilon);
        let Noised { values, .. } = f.release().unwrap();
        let Exact::Decimals(v) = values else {
            unreachable!()
        };
        assert!(v.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn no_epsilon_no_release() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(Statistic::plan(Exact::Integers(vec![1]), 1.0, bad).is_err());
        }
    }

    #[test]
    fn the_integer_interval_is_the_tightest_holding_95_percent() {
        for b in [0.5f64, 1.0, 4.0, 10.0, 100.0] {
            let q = (-1.0 / b).exp();
            let tail = |t: f64| 2.0 * (-t / b).exp() / (1.0 + q);
            let h = integer_half_width(b);
            assert!(tail(h + 1.0) <= 0.05 + 1e-12, "b={b} h={h}");
            if h >= 1.0 {
                assert!(tail(h) > 0.05, "b={b}: {h} is not the smallest");
            }
        }
    }
}
