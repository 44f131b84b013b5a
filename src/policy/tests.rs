//! One test per rule of `evaluate`.

use std::collections::BTreeSet;

use time::macros::date;

use super::*;
use crate::auth::Principal;

const MANIFEST: &str = r#"
id = "adm"
title = "Admissions"
description = "d"
sector = "health"
publisher = "P"
license = "L"
tier = "controlled"
version = 1
access_request = "ask the DAC"
[[columns]]
name = "patient_id"
description = "id"
classification = "direct-identifier"
[[columns]]
name = "region"
description = "r"
[[columns]]
name = "admission_date"
description = "d"
classification = "quasi-identifier"
mask = "month"
[[columns]]
name = "stay"
description = "s"
"#;

const POLICY: &str = r#"
[[grant]]
id = "alice"
subjects = ["alice"]
dataset = "adm"
purpose = "study"
columns = ["region", "stay"]
row_filter = "region = 'north'"
max_rows = 10
expires = 2027-01-01

[[grant]]
id = "analysts"
groups = ["analysts"]
dataset = "adm"
purpose = "planning"
unmask = ["admission_date"]

[[grant]]
id = "old"
subjects = ["carol"]
dataset = "adm"
purpose = "closed study"
expires = "2025-01-01"
"#;

const TODAY: Date = date!(2026 - 06 - 01);

fn manifest(tier: &str) -> Manifest {
    Manifest::parse(&MANIFEST.replace("\"controlled\"", &format!("\"{tier}\""))).unwrap()
}

fn policy() -> Policy {
    Policy::parse(POLICY, "test").unwrap()
}

fn who(sub: &str, roles: &[Role], groups: &[&str]) -> Caller {
    Caller::Principal(Principal {
        sub: sub.into(),
        roles: roles.iter().copied().collect(),
        groups: groups
            .iter()
            .map(|g| g.to_string())
            .collect::<BTreeSet<_>>(),
        organisation: None,
        visas: Vec::new(),
        expires: None,
        scope: None,
    })
}

fn allowed(d: Decision) -> AccessPlan {
    match d {
        Decision::Allow(plan) => plan,
        Decision::Deny(denial) => panic!("denied: {denial:?}"),
    }
}

fn denied(d: Decision) -> Denial {
    match d {
        Decision::Allow(plan) => panic!("allowed: {plan:?}"),
        Decision::Deny(denial) => denial,
    }
}

fn names(plan: &AccessPlan) -> Vec<&str> {
    plan.columns.iter().map(|c| c.name.as_str()).collect()
}

#[test]
fn open_datasets_are_readable_by_anyone_without_identifiers() {
    let plan = allowed(evaluate(
        &policy(),
        &Caller::Anonymous,
        &manifest("open"),
        None,
        TODAY,
    ));
    assert_eq!(plan.basis, Basis::Open);
    assert_eq!(names(&plan), ["region", "admission_date", "stay"]);
    assert_eq!(
        plan.column("admission_date").unwrap().mask,
        Some(Mask::Month)
    );
}

#[test]
fn registered_datasets_need_a_token_with_the_researcher_role() {
    let m = manifest("registered");
    assert_eq!(
        denied(evaluate(&policy(), &Caller::Anonymous, &m, None, TODAY)),
        Denial::TokenRequired {
            tier: Tier::Registered
        }
    );
    assert_eq!(
        denied(evaluate(
            &policy(),
            &who("s", &[Role::Steward], &[]),
            &m,
            None,
            TODAY
        )),
        Denial::RoleRequired {
            role: Role::Researcher
        }
    );
    let plan = allowed(evaluate(
        &policy(),
        &who("r", &[Role::Researcher], &[]),
        &m,
        None,
        TODAY,
    ));
    assert_eq!(plan.basis, Basis::Registered);
    assert!(!names(&plan).contains(&"patient_id"));
}

#[test]
fn controlled_datasets_need_a_grant() {
    let m = manifest("controlled");
    assert_eq!(
        denied(evaluate(&policy(), &Caller::Anonymous, &m, None, TODAY)),
        Denial::TokenRequired {
            tier: Tier::Controlled
        }
    );
    assert_eq!(
        denied(evaluate(
            &policy(),
            &who("mallory", &[Role::Researcher], &[]),
            &m,
            None,
            TODAY
        )),
        Denial::GrantRequired {
            how_to_request: Some("ask the DAC".into()),
            your_grants: None,
        }
    );
}

#[test]
fn a_grant_by_subject_fixes_columns_filter_and_cap() {
    let plan = allowed(evaluate(
        &policy(),
        &who("alice", &[], &[]),
        &manifest("controlled"),
        None,
        TODAY,
    ));
    assert_eq!(names(&plan), ["region", "stay"]);
    assert_eq!(plan.row_filter.as_deref(), Some("region = 'north'"));
    assert_eq!(plan.max_rows, Some(10));
    assert!(matches!(plan.basis, Basis::Grant { ref id, .. } if id == "alice"));
}

#[test]
fn a_grant_by_group_can_lift_a_mask_but_never_shows_direct_identifiers() {
    let plan = allowed(evaluate(
        &policy(),
        &who("dave", &[], &["analysts"]),
        &manifest("controlled"),
        None,
        TODAY,
    ));
    assert_eq!(names(&plan), ["region", "admission_date", "stay"]);
    assert_eq!(plan.column("admission_date").unwrap().mask, None);
}

#[test]
fn an_expired_grant_is_refused_as_expired() {
    assert_eq!(
        denied(evaluate(
            &policy(),
            &who("carol", &[], &[]),
            &manifest("controlled"),
            None,
            TODAY
        )),
        Denial::GrantExpired {
            grant: "old".into(),
            expired: date!(2025 - 01 - 01)
        }
    );
    // The expiry day itself is still valid.
    let on_the_day = date!(2027 - 01 - 01);
    assert!(matches!(
        evaluate(
            &policy(),
            &who("alice", &[], &[]),
            &manifest("controlled"),
            None,
            on_the_day
        ),
        Decision::Allow(_)
    ));
    assert!(matches!(
        evaluate(
            &policy(),
            &who("alice", &[], &[]),
            &manifest("controlled"),
            None,
            on_the_day.next_day().unwrap()
        ),
        Decision::Deny(Denial::GrantExpired { .. })
    ));
}

#[test]
fn several_matching_grants_must_be_chosen_between() {
    let alice_analyst = who("alice", &[], &["analysts"]);
    let m = manifest("controlled");
    assert_eq!(
        denied(evaluate(&policy(), &alice_analyst, &m, None, TODAY)),
        Denial::GrantAmbiguous {
            grants: vec!["alice".into(), "analysts".into()]
        }
    );
    let plan = allowed(evaluate(
        &policy(),
        &alice_analyst,
        &m,
        Some("analysts"),
        TODAY,
    ));
    assert!(matches!(plan.basis, Basis::Grant { ref id, .. } if id == "analysts"));
}

#[test]
fn choosing_a_grant_that_is_not_yours_is_refused() {
    let m = manifest("controlled");
    // The answer lists the caller's own grants for the dataset (none
    // here), the same whether the named grant exists or not.
    for named in ["alice", "no-such-grant"] {
        assert!(matches!(
            denied(evaluate(
                &policy(),
                &who("mallory", &[], &[]),
                &m,
                Some(named),
                TODAY
            )),
            Denial::GrantRequired { your_grants: Some(ref yours), .. } if yours.is_empty()
        ));
    }
    // Also on open data: a chosen grant must be the caller's.
    assert!(matches!(
        denied(evaluate(
            &policy(),
            &Caller::Anonymous,
            &manifest("open"),
            Some("alice"),
            TODAY
        )),
        Denial::GrantRequired { .. }
    ));
}

#[test]
fn policy_files_are_strict() {
    let unknown = POLICY.replace("purpose = \"study\"", "purpose = \"study\"\npurpse = 1");
    assert!(
        Policy::parse(&unknown, "p.toml")
            .unwrap_err()
            .to_string()
            .contains("purpse")
    );
    let bad_date = POLICY.replace("2027-01-01", "\"next year\"");
    assert!(
        Policy::parse(&bad_date, "p.toml")
            .unwrap_err()
            .to_string()
            .contains("next year")
    );
}

#[test]
fn a_dataset_can_make_tier_access_aggregate_only() {
    let text = MANIFEST
        .replace("\"controlled\"", "\"open\"")
        .replace("version = 1", "version = 1\nmode = \"aggregate\"");
    let m = Manifest::parse(&text).unwrap();
    let plan = allowed(evaluate(&policy(), &Caller::Anonymous, &m, None, TODAY));
    assert_eq!(plan.mode, Mode::Aggregate);
    // A rows grant still gives rows.
    let plan = allowed(evaluate(
        &policy(),
        &who("alice", &[], &[]),
        &m,
        Some("alice"),
        TODAY,
    ));
    assert_eq!(plan.mode, Mode::Rows);
}
