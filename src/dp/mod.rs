//! Differential privacy: what a `mode = "dp"` grant's answers are made of.
//!
//! - [`noise`]: OpenDP's discrete Laplace mechanism, what one answer costs
//!   (OpenDP's own privacy map, not our arithmetic) and the 95 % interval
//!   of the noise it adds.
//! - [`ledger`]: the budget each grant's project spends from, written
//!   durably before an answer leaves.
//!
//! The unit of privacy is one row: adding or removing any one row changes
//! the distribution of any answer by at most a factor `e^epsilon`. Where one
//! person has several rows (admissions, visits), their protection is the
//! sum over their rows. The slice module computes the exact statistics over
//! a public group domain and hands them here.

pub mod ledger;
pub mod noise;

/// The least epsilon one answer may spend: below it the noise is so wide
/// that the answer says nothing, and its scale would leave the floats.
pub const MIN_EPSILON: f64 = 1e-6;

pub use ledger::{Ledger, LedgerError, Spend};
pub use noise::{Noised, Statistic};
