//! Differentially private answers on the HTTP side: choose the epsilon,
//! price the release, pay for it in the ledger (durably, before a single
//! row is read), then run it and draw the noise; and tell the caller what
//! was spent and what is left.

use datafusion::prelude::DataFrame;
use serde_json::{Value, json};

use super::AppState;
use super::problem::ApiError;
use crate::audit::PrivacySpend;
use crate::dp::{LedgerError, MIN_EPSILON};
use crate::policy::{AccessPlan, Basis, Budget};
use crate::slice::PrivateQuery;
use crate::util::internal::OrInternal;

/// What a DP answer spent, for its headers and its audit record.
pub(super) struct Paid {
    pub spend: PrivacySpend,
    /// Each released statistic's Laplace noise scale.
    pub scales: Vec<(String, f64)>,
}

/// The epsilon this answer spends: what the caller asked for, or the
/// grant's per-answer maximum.
pub(super) fn epsilon_for(asked: Option<f64>, budget: &Budget) -> Result<f64, ApiError> {
    let Some(asked) = asked else {
        return Ok(budget.epsilon_per_query);
    };
    if !(asked.is_finite() && asked >= MIN_EPSILON) {
        return Err(ApiError::InvalidParameter(format!(
            "epsilon must be a number of at least {MIN_EPSILON}"
        )));
    }
    if asked > budget.epsilon_per_query {
        return Err(ApiError::InvalidParameter(format!(
            "epsilon {asked} is more than one answer may spend under this grant ({})",
            budget.epsilon_per_query
        )));
    }
    Ok(asked)
}

fn grant_id(plan: &AccessPlan) -> String {
    match &plan.basis {
        Basis::Grant { id, .. } => id.clone(),
        _ => String::new(),
    }
}

/// Prices `query` at `epsilon`, pays from the plan's budget (durably),
/// and only then reads the rows and releases the noisy answer as a frame.
pub(super) async fn pay_and_release(
    state: &AppState,
    plan: &AccessPlan,
    budget: &Budget,
    query: PrivateQuery,
    epsilon: f64,
    request_id: &str,
) -> Result<(DataFrame, Paid), ApiError> {
    let cost = query.cost(epsilon)?;
    let scales = query.noise_scales(epsilon);
    let (ledger, account, total, request) = (
        state.ledger.clone(),
        budget.account.clone(),
        budget.epsilon,
        request_id.to_owned(),
    );
    // A trail known to be failing would refuse the answer after it is
    // paid for: refuse it before.
    if !state.audit.healthy() {
        return Err(ApiError::AuditUnavailable);
    }
    let spent = tokio::task::spawn_blocking(move || ledger.spend(&account, total, cost, &request))
        .await
        .or_internal("recording the privacy spend")?;
    let spend = match spent {
        Ok(spend) => spend,
        Err(LedgerError::Exhausted { remaining, cost }) => {
            return Err(ApiError::PrivacyBudgetExhausted {
                grant: grant_id(plan),
                remaining: tidy(remaining),
                cost: tidy(cost),
            });
        }
        Err(e @ LedgerError::Io { .. }) => {
            tracing::error!(error = %e, "privacy ledger write failed: no answer is released");
            return Err(ApiError::StorageUnavailable);
        }
    };
    let planned = state.engine.run_private(query, epsilon).await?;
    let frame = state.engine.frame_of(planned.release()?)?;
    Ok((
        frame,
        Paid {
            spend: PrivacySpend {
                account: budget.account.clone(),
                epsilon: spend.epsilon,
                remaining: spend.remaining,
            },
            scales,
        },
    ))
}

/// A budget figure as shown: sums of floats carry noise in the last
/// digits (0.1 + 0.2), which says nothing to a reader.
fn tidy(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

/// `Sluice-Privacy-Epsilon` (spent by this answer),
/// `Sluice-Privacy-Budget-Remaining` and `Sluice-Privacy-Noise` (each
/// statistic's Laplace scale).
pub(super) fn headers(paid: &Paid) -> Vec<(&'static str, String)> {
    let noise = paid
        .scales
        .iter()
        .map(|(name, scale)| format!("{name}={scale}"))
        .collect::<Vec<_>>()
        .join("; ");
    vec![
        (
            "sluice-privacy-epsilon",
            format!("{}", tidy(paid.spend.epsilon)),
        ),
        (
            "sluice-privacy-budget-remaining",
            format!("{}", tidy(paid.spend.remaining)),
        ),
        ("sluice-privacy-noise", noise),
    ]
}

/// The budget as `GET /v1/datasets/{id}` shows it in `access`.
pub(super) fn budget_json(state: &AppState, budget: &Budget) -> Value {
    let spent = state.ledger.spent(&budget.account);
    json!({
        "epsilon": budget.epsilon,
        "epsilon_per_query": budget.epsilon_per_query,
        "spent": tidy(spent),
        "remaining": tidy((budget.epsilon - spent).max(0.0)),
    })
}
