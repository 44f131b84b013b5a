//! Who may see what: the policy file's model and the pure decision
//! `Caller × Dataset → AccessPlan | Denial`.
//!
//! Rules, in order:
//! 1. `direct-identifier` columns are never visible to anyone.
//! 2. `open` datasets: anyone. `registered`: a valid token with the
//!    `researcher` role. `controlled`: an unexpired grant naming the caller's
//!    `sub` or one of their groups.
//! 3. A grant fixes the visible columns (default: every column that is not a
//!    direct identifier), a mandatory row filter, a row cap and which masks it
//!    lifts (`unmask`). On open and registered datasets a caller may still
//!    choose a grant with the `grant` parameter (to use its unmasking).
//! 4. When several grants match and the caller chose none, the request is
//!    refused as ambiguous and lists them: the admin wrote separate grants,
//!    so Sluice never silently unions them.
//! 5. Quasi-identifiers are served through their manifest mask unless the
//!    grant in use lifts it.
//! 6. A verified GA4GH `ControlledAccessGrants` visa of the caller whose
//!    value is exactly the URL the policy's `visa_grant` gives the dataset
//!    counts as a grant shaped by that entry (several such visas make one);
//!    a dataset without one cannot be opened by visas.
//! 7. A grant's `mode` says whether rows may be served, only
//!    disclosure-controlled aggregates, or only differentially private
//!    statistics paid from the grant's budget (`mode = "dp"`).
//!
//! Evaluation does no I/O and takes "today" as an argument, so every rule is
//! unit-tested here. Loading and checking the file is in [`file`].

pub mod apply;
mod check;
mod diff;
mod explain;
pub mod file;
pub mod live;
pub mod seal;
pub mod steward;
mod visa;

use serde::Serialize;
use time::Date;

use crate::auth::{Caller, Role};
use crate::catalog::Manifest;
pub use crate::domain::Mode;
use crate::domain::{Classification, ColumnName, Mask, Tier};
pub use check::PolicyWarning;
pub use explain::describe;
pub use file::{Disclosure, Grant, Policy, PolicyError, VisaGrant};
pub use live::LivePolicy;

/// A column the caller may see, and how it is served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VisibleColumn {
    pub name: ColumnName,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask: Option<Mask>,
}

/// Why the caller may read the dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Basis {
    /// The dataset is open.
    Open,
    /// The caller holds the researcher role and the dataset is registered.
    Registered,
    /// A grant from the policy file.
    Grant {
        id: String,
        purpose: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        expires: Option<Date>,
    },
}

/// Exactly what one caller may read of one dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccessPlan {
    pub basis: Basis,
    /// In the dataset's column order.
    pub columns: Vec<VisibleColumn>,
    /// SQL applied to the raw rows before anything the caller asks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row_filter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u64>,
    pub mode: Mode,
    /// Scope of `hash` pseudonyms: equal within a project, unlinkable across.
    #[serde(skip)]
    pub project: String,
    /// The visa a visa grant rests on, for the audit trail (boxed: most
    /// plans have none).
    #[serde(skip)]
    pub visa: Option<Box<crate::auth::Visa>>,
    /// `mode = "dp"`: the budget answers are paid from.
    #[serde(rename = "privacy_budget", skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
}

/// A DP grant's privacy budget, as the policy sets it. What has been spent
/// is in the ledger, not here.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Budget {
    /// Whose budget: one per grant and project, whoever of the grant's
    /// callers asks.
    #[serde(skip)]
    pub account: String,
    pub epsilon: f64,
    pub epsilon_per_query: f64,
}

impl AccessPlan {
    pub fn column(&self, name: &str) -> Option<&VisibleColumn> {
        self.columns.iter().find(|c| c.name.as_str() == name)
    }
}

/// Why the caller may not read the dataset. Nothing here reveals data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Denial {
    /// The dataset needs a token and none was sent.
    TokenRequired { tier: Tier },
    /// The token lacks the role this tier needs.
    RoleRequired { role: Role },
    /// No grant of the caller's covers this dataset (or the one named).
    GrantRequired {
        #[serde(skip_serializing_if = "Option::is_none")]
        how_to_request: Option<String>,
        /// When the caller named a grant (`grant=`) they do not hold for
        /// this dataset: the ones they do hold for it (never whether the
        /// named one exists).
        #[serde(skip_serializing_if = "Option::is_none")]
        your_grants: Option<Vec<String>>,
    },
    /// The caller's grant has expired.
    GrantExpired { grant: String, expired: Date },
    /// Several grants match; the caller must choose one with `grant=`.
    GrantAmbiguous { grants: Vec<String> },
    /// The caller's grant no longer applies as written (its row filter names
    /// a column the dataset no longer has): it serves nothing until an admin
    /// fixes it, rather than serving more rows than it was written for.
    GrantSuspended { grant: String },
    /// The caller's personal token is for another dataset or grant.
    TokenScope {
        #[serde(skip_serializing_if = "Option::is_none")]
        dataset: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        grant: Option<String>,
    },
}

/// The outcome of a policy evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow(AccessPlan),
    Deny(Denial),
}

/// A decision as JSON: `{"allowed": true, …plan}` or `{"allowed": false,
/// "reason": …}`. The `access` field of dataset metadata and `sluice policy
/// explain` both show this.
pub fn decision_json(decision: &Decision) -> serde_json::Value {
    let (allowed, details) = match decision {
        Decision::Allow(plan) => (true, serde_json::to_value(plan)),
        Decision::Deny(denial) => (false, serde_json::to_value(denial)),
    };
    let mut view = serde_json::json!({ "allowed": allowed });
    if let (serde_json::Value::Object(map), Ok(serde_json::Value::Object(details))) =
        (&mut view, details)
    {
        map.extend(details);
    }
    view
}

/// Decides what `caller` may read of the dataset described by `manifest`.
/// `chosen` is the caller's `grant` parameter, if any.
pub fn evaluate(
    policy: &Policy,
    caller: &Caller,
    manifest: &Manifest,
    chosen: Option<&str>,
    today: Date,
) -> Decision {
    let principal = caller.principal();
    // A personal token narrowed to a dataset or grant reads nothing else,
    // and through nothing else.
    let mut chosen = chosen;
    if let Some(scope) = principal.and_then(|p| p.scope.as_ref()) {
        let outside = || {
            Decision::Deny(Denial::TokenScope {
                dataset: scope.dataset.clone(),
                grant: scope.grant.clone(),
            })
        };
        if scope
            .dataset
            .as_deref()
            .is_some_and(|d| d != manifest.id.as_str())
        {
            return outside();
        }
        if let Some(grant) = scope.grant.as_deref() {
            if chosen.is_some_and(|c| c != grant) {
                return outside();
            }
            chosen = Some(grant);
        }
    }
    let matching: Vec<Grant> = match principal {
        None => Vec::new(),
        Some(p) => policy
            .grants
            .iter()
            .filter(|g| g.dataset == manifest.id && g.applies_to(p))
            .cloned()
            .chain(visa::visa_grant(policy, p, manifest))
            .collect(),
    };
    let grant_denial = || Denial::GrantRequired {
        how_to_request: manifest.access_request.clone(),
        your_grants: None,
    };

    if let Some(id) = chosen {
        let Some(grant) = matching.iter().find(|g| g.id == id) else {
            return Decision::Deny(Denial::GrantRequired {
                how_to_request: manifest.access_request.clone(),
                your_grants: Some(matching.iter().map(|g| g.id.clone()).collect()),
            });
        };
        return match grant.expires.filter(|e| *e < today) {
            Some(expired) => Decision::Deny(Denial::GrantExpired {
                grant: grant.id.clone(),
                expired,
            }),
            None => grant_decision(manifest, grant),
        };
    }

    match manifest.tier {
        Tier::Open => return Decision::Allow(tier_plan(manifest, Basis::Open)),
        Tier::Registered => {
            return match principal {
                None => Decision::Deny(Denial::TokenRequired {
                    tier: Tier::Registered,
                }),
                Some(p) if !p.has_role(Role::Researcher) => Decision::Deny(Denial::RoleRequired {
                    role: Role::Researcher,
                }),
                Some(_) => Decision::Allow(tier_plan(manifest, Basis::Registered)),
            };
        }
        Tier::Controlled => {}
    }

    if principal.is_none() {
        return Decision::Deny(Denial::TokenRequired {
            tier: Tier::Controlled,
        });
    }
    let (active, expired): (Vec<&Grant>, Vec<&Grant>) = matching
        .iter()
        .partition(|g| g.expires.is_none_or(|e| e >= today));
    match active.as_slice() {
        [grant] => grant_decision(manifest, grant),
        [] => match expired.iter().max_by_key(|g| g.expires) {
            Some(grant) => Decision::Deny(Denial::GrantExpired {
                grant: grant.id.clone(),
                // Partitioned on `expires` being set and past.
                expired: grant.expires.unwrap_or(today),
            }),
            None => Decision::Deny(grant_denial()),
        },
        many => Decision::Deny(Denial::GrantAmbiguous {
            grants: many.iter().map(|g| g.id.clone()).collect(),
        }),
    }
}

/// What the dataset's tier (`view` = `tier`), or its grant `view`, would
/// see of `manifest`, whoever asks: for its stewards and admins, who preview
/// what they publish. The tier's view of a controlled dataset is what it
/// would see if opened. `None`: the dataset has no such grant.
pub fn view_as(policy: &Policy, manifest: &Manifest, view: &str) -> Option<Decision> {
    if view == "tier" {
        let basis = match manifest.tier {
            Tier::Open => Basis::Open,
            _ => Basis::Registered,
        };
        return Some(Decision::Allow(tier_plan(manifest, basis)));
    }
    let grant = policy
        .grants
        .iter()
        .find(|g| g.dataset == manifest.id && g.id == view)?;
    Some(grant_decision(manifest, grant))
}

/// Every column but direct identifiers, quasi-identifiers masked.
fn tier_plan(manifest: &Manifest, basis: Basis) -> AccessPlan {
    AccessPlan {
        basis,
        columns: manifest
            .columns
            .iter()
            .filter(|c| c.classification != Classification::DirectIdentifier)
            .map(|c| VisibleColumn {
                name: c.name.clone(),
                mask: c.default_mask(),
            })
            .collect(),
        row_filter: None,
        max_rows: None,
        // Tier access gets what the dataset's manifest allows everyone.
        mode: manifest.mode,
        // One pseudonym key per dataset for tier access: with one shared
        // key, a steward could publish known values hashed beside their
        // clear text in a dataset of their own and reverse another
        // publisher's open pseudonyms by joining. (A NUL cannot appear in
        // a grant's project, so no grant shares these keys.)
        project: format!("tier\u{0}{}", manifest.id),
        visa: None,
        budget: None,
    }
}

/// Allows what `grant` opens, unless its row filter no longer resolves
/// against the dataset (a column it names was removed after the policy was
/// loaded): then the grant fails closed. The policy check warns about the
/// same case; this is the guard that holds between reloads.
fn grant_decision(manifest: &Manifest, grant: &Grant) -> Decision {
    if let Some(text) = &grant.row_filter
        && crate::filter::parse(text, usize::MAX, &check::all_columns(manifest)).is_err()
    {
        tracing::warn!(
            grant = %grant.id,
            dataset = %manifest.id,
            "a grant's row filter does not resolve against its dataset: the grant serves nothing"
        );
        return Decision::Deny(Denial::GrantSuspended {
            grant: grant.id.clone(),
        });
    }
    Decision::Allow(plan_for_grant(manifest, grant))
}

fn plan_for_grant(manifest: &Manifest, grant: &Grant) -> AccessPlan {
    let columns = manifest
        .columns
        .iter()
        .filter(|c| c.classification != Classification::DirectIdentifier)
        .filter(|c| {
            grant
                .columns
                .as_ref()
                .is_none_or(|list| list.contains(&c.name))
        })
        .map(|c| VisibleColumn {
            name: c.name.clone(),
            // Aggregate-only access never sees an exact quasi-identifier:
            // grouping on one would label cells with single people's values.
            mask: c
                .default_mask()
                .filter(|_| !grant.mode.serves_rows() || !grant.unmask.contains(&c.name)),
        })
        .collect();
    let project = grant.project.clone().unwrap_or_else(|| grant.id.clone());
    AccessPlan {
        basis: Basis::Grant {
            id: grant.id.clone(),
            purpose: grant.purpose.clone(),
            expires: grant.expires,
        },
        columns,
        row_filter: grant.row_filter.clone(),
        max_rows: grant.max_rows,
        mode: grant.mode,
        project: project.clone(),
        visa: grant.visa.clone().map(Box::new),
        budget: match (grant.mode, grant.epsilon, grant.epsilon_per_query) {
            (Mode::Dp, Some(epsilon), Some(epsilon_per_query)) => Some(Budget {
                account: format!("{}/{project}", grant.id),
                epsilon,
                epsilon_per_query,
            }),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests;
