//! Cell-key perturbation for aggregate-only tables (the method of the
//! Australian Bureau of Statistics' TableBuilder): every record has a key,
//! a cell's key is the sum of its records' keys, and the cell's noise is
//! drawn from a keyed hash of that sum. So the same set of records always
//! gets the same noise — in any table, through any selection, in any
//! version that holds the same records — and asking again, or asking for
//! the same cell another way, tells nothing new. Noise that cannot be
//! averaged away is what keeps differencing two tables from isolating a
//! small cell (docs/security.md, "Aggregate-only access").
//!
//! Record keys are a fixed, public 64-bit hash of a record's visible values
//! in every column a table can touch; they never leave the server, and the
//! noise is an HMAC of their sum under a key derived from the server's
//! secret, so without the secret it cannot be predicted or removed.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Draws the fixed noise of cells.
#[derive(Clone)]
pub(super) struct CellNoise {
    key: [u8; 32],
}

impl std::fmt::Debug for CellNoise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CellNoise(..)")
    }
}

impl CellNoise {
    pub(super) fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// Two uniform numbers in (0, 1] for one statistic of one cell.
    fn uniforms(&self, statistic: &str, cell_key: u64, rows: u64) -> [f64; 2] {
        #[allow(clippy::expect_used, reason = "HMAC takes keys of any length")]
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(statistic.as_bytes());
        mac.update(&[0]);
        mac.update(&cell_key.to_le_bytes());
        mac.update(&rows.to_le_bytes());
        let bytes = mac.finalize().into_bytes();
        let uniform = |b: &[u8]| {
            let mut word = [0u8; 8];
            word.copy_from_slice(b);
            // 53 random bits, shifted into (0, 1].
            ((u64::from_le_bytes(word) >> 11) + 1) as f64 / (1u64 << 53) as f64
        };
        [uniform(&bytes[..8]), uniform(&bytes[8..16])]
    }

    /// The fixed noise of a cell's count: two-sided geometric (discrete
    /// Laplace) with `P(k) ∝ exp(-|k| / scale)`.
    pub(super) fn count(&self, cell_key: u64, rows: u64, scale: f64) -> i64 {
        if scale <= 0.0 {
            return 0;
        }
        let [u, v] = self.uniforms("count", cell_key, rows);
        // floor(-scale · ln u) is geometric: P(G >= k) = exp(-k / scale).
        let g = |u: f64| (-scale * u.ln()).floor() as i64;
        g(u) - g(v)
    }

    /// The fixed noise of a cell's sum of `column`: Laplace with `scale`.
    pub(super) fn sum(&self, column: &str, cell_key: u64, rows: u64, scale: f64) -> f64 {
        if scale <= 0.0 {
            return 0.0;
        }
        let [u, v] = self.uniforms(&format!("sum:{column}"), cell_key, rows);
        scale * (u.ln() - v.ln())
    }
}

/// Builds records' keys column by column: a fixed 64-bit mix of each value
/// (the same on every machine and in every release, so every replica
/// gives the same answers).
pub(super) struct RecordKeys;

impl RecordKeys {
    /// Folds a value's 64 bits into a record's key.
    pub(super) fn fold(key: u64, value: u64) -> u64 {
        mix(key ^ mix(value))
    }

    /// A 64-bit digest of bytes (FNV-1a, then mixed).
    pub(super) fn bytes(bytes: &[u8]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        mix(h ^ bytes.len() as u64)
    }
}

/// SplitMix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_records_get_the_same_noise_and_others_other_noise() {
        let noise = CellNoise::new([7; 32]);
        assert_eq!(noise.count(42, 12, 2.0), noise.count(42, 12, 2.0));
        let draws: std::collections::HashSet<i64> =
            (0..200u64).map(|k| noise.count(k, 12, 2.0)).collect();
        assert!(draws.len() > 5, "{draws:?}");
    }

    #[test]
    fn count_noise_has_the_discrete_laplace_spread() {
        let noise = CellNoise::new([9; 32]);
        let n = 20_000u64;
        let draws: Vec<f64> = (0..n).map(|k| noise.count(k, 1, 2.0) as f64).collect();
        let mean = draws.iter().sum::<f64>() / n as f64;
        let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n as f64;
        // Variance of the two-sided geometric: 2q / (1 - q)^2, q = e^(-1/2).
        let q = (-0.5f64).exp();
        let expected = 2.0 * q / (1.0 - q).powi(2);
        assert!(mean.abs() < 0.1, "mean {mean}");
        assert!(
            (var / expected - 1.0).abs() < 0.08,
            "variance {var} vs {expected}"
        );
    }
}
