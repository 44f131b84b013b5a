//! A decision in words, for `sluice policy explain` and for people reading
//! logs: the same facts `GET /v1/datasets/{id}` gives in its `access` field.

use std::fmt::Write;

use super::{AccessPlan, Basis, Decision, Denial, Mode};
use crate::catalog::Manifest;

/// Describes what a caller gets of a dataset, one fact per line.
pub fn describe(manifest: &Manifest, decision: &Decision) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "dataset: {} ({} tier)",
        manifest.id,
        manifest.tier.as_str()
    );
    match decision {
        Decision::Allow(plan) => describe_plan(&mut out, plan),
        Decision::Deny(denial) => {
            let why = match denial {
                Denial::TokenRequired { .. } => "a token is needed".to_string(),
                Denial::RoleRequired { role } => format!("the token lacks the {role:?} role"),
                Denial::GrantRequired { how_to_request, .. } => match how_to_request {
                    Some(how) => format!("no grant covers this caller; to ask: {how}"),
                    None => "no grant covers this caller".into(),
                },
                Denial::GrantExpired { grant, expired } => {
                    format!("grant '{grant}' expired on {expired}")
                }
                Denial::GrantAmbiguous { grants } => format!(
                    "several grants match ({}); the caller must choose one with grant=",
                    grants.join(", ")
                ),
                Denial::GrantSuspended { grant } => format!(
                    "grant '{grant}' no longer applies as written (its row filter names a column the dataset lacks); it serves nothing until an admin fixes it"
                ),
                Denial::TokenScope { .. } => {
                    "the caller's personal token is for another dataset or grant".into()
                }
            };
            let _ = writeln!(out, "decision: denied: {why}");
        }
    }
    out
}

fn describe_plan(out: &mut String, plan: &AccessPlan) {
    let basis = match &plan.basis {
        Basis::Open => "the dataset is open".to_string(),
        Basis::Registered => "registered researcher".to_string(),
        Basis::Grant {
            id,
            purpose,
            expires,
        } => {
            let until = expires.map_or(String::new(), |e| format!(", valid until {e}"));
            format!("grant '{id}' (purpose: {purpose}{until})")
        }
    };
    let _ = writeln!(out, "decision: allowed, by {basis}");
    let mode = match (plan.mode, &plan.budget) {
        (Mode::Rows, _) => "rows".to_owned(),
        (Mode::Aggregate, _) => "aggregate only (disclosure-controlled)".to_owned(),
        (Mode::Dp, Some(b)) => format!(
            "differentially private statistics only: budget epsilon {} for project '{}', at most {} per answer",
            b.epsilon, plan.project, b.epsilon_per_query
        ),
        (Mode::Dp, None) => {
            "differentially private statistics only (no budget: nothing)".to_owned()
        }
    };
    let _ = writeln!(out, "mode: {mode}");
    let columns: Vec<String> = plan
        .columns
        .iter()
        .map(|c| match c.mask {
            Some(mask) => format!("{} (masked: {mask})", c.name),
            None => c.name.to_string(),
        })
        .collect();
    let _ = writeln!(out, "columns: {}", columns.join(", "));
    let _ = writeln!(
        out,
        "row filter: {}",
        plan.row_filter.as_deref().unwrap_or("none")
    );
    let _ = writeln!(
        out,
        "row cap: {}",
        plan.max_rows.map_or("none".to_string(), |m| m.to_string())
    );
}
