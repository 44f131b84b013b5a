//! Who may change the catalogue: the steward rules, pure. Stewards act on
//! their organisation's datasets (the dataset's `publisher` equals the
//! token's `organisation`), admins on all; nobody else on any. The HTTP
//! layer turns a [`StewardRefusal`] into its problem+json answer.

use crate::auth::{Caller, Role};
use crate::catalog::StewardScope;

/// Why a caller may not make a catalogue change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StewardRefusal {
    /// No token at all.
    TokenRequired,
    /// Neither the steward nor the admin role.
    StewardRequired,
    /// A steward whose token names no organisation stewards nothing.
    NoOrganisation,
    /// A steward of another publisher.
    NotPublisher { publisher: String, org: String },
}

/// Whose datasets the caller may change (and see as drafts or retired).
pub fn steward_scope(caller: &Caller) -> StewardScope {
    let Some(principal) = caller.principal() else {
        return StewardScope::None;
    };
    if principal.has_role(Role::Admin) {
        StewardScope::All
    } else if principal.has_role(Role::Steward) {
        match &principal.organisation {
            Some(org) => StewardScope::Publisher(org.clone()),
            None => StewardScope::None,
        }
    } else {
        StewardScope::None
    }
}

/// The caller's scope, or why they may not change the catalogue at all.
pub fn require_steward(caller: &Caller) -> Result<StewardScope, StewardRefusal> {
    let Some(principal) = caller.principal() else {
        return Err(StewardRefusal::TokenRequired);
    };
    match steward_scope(caller) {
        StewardScope::None if principal.has_role(Role::Steward) => {
            Err(StewardRefusal::NoOrganisation)
        }
        StewardScope::None => Err(StewardRefusal::StewardRequired),
        scope => Ok(scope),
    }
}

/// Whether a caller in `scope` may change a dataset of `publisher`.
pub fn require_publisher(scope: &StewardScope, publisher: &str) -> Result<(), StewardRefusal> {
    match scope {
        StewardScope::All => Ok(()),
        StewardScope::Publisher(org) if org == publisher => Ok(()),
        StewardScope::Publisher(org) => Err(StewardRefusal::NotPublisher {
            publisher: publisher.to_owned(),
            org: org.clone(),
        }),
        StewardScope::None => Err(StewardRefusal::StewardRequired),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;

    fn caller(roles: &[Role], org: Option<&str>) -> Caller {
        Caller::Principal(Principal {
            sub: "s".into(),
            roles: roles.iter().copied().collect(),
            groups: Default::default(),
            organisation: org.map(str::to_owned),
            visas: Vec::new(),
            expires: None,
            scope: None,
        })
    }

    #[test]
    fn admins_steward_everything() {
        let admin = caller(&[Role::Admin], None);
        assert_eq!(require_steward(&admin), Ok(StewardScope::All));
        assert_eq!(require_publisher(&StewardScope::All, "anyone"), Ok(()));
    }

    #[test]
    fn stewards_steward_their_organisations_datasets_only() {
        let sam = caller(&[Role::Steward], Some("Observatory"));
        let scope = require_steward(&sam).unwrap();
        assert_eq!(scope, StewardScope::Publisher("Observatory".into()));
        assert_eq!(require_publisher(&scope, "Observatory"), Ok(()));
        assert_eq!(
            require_publisher(&scope, "Elsewhere"),
            Err(StewardRefusal::NotPublisher {
                publisher: "Elsewhere".into(),
                org: "Observatory".into()
            })
        );
    }

    #[test]
    fn a_steward_without_an_organisation_stewards_nothing() {
        let lost = caller(&[Role::Steward], None);
        assert_eq!(steward_scope(&lost), StewardScope::None);
        assert_eq!(require_steward(&lost), Err(StewardRefusal::NoOrganisation));
    }

    #[test]
    fn researchers_and_anonymous_callers_change_nothing() {
        let rita = caller(&[Role::Researcher], Some("Observatory"));
        assert_eq!(require_steward(&rita), Err(StewardRefusal::StewardRequired));
        assert_eq!(
            require_steward(&Caller::Anonymous),
            Err(StewardRefusal::TokenRequired)
        );
        assert_eq!(
            require_publisher(&StewardScope::None, "Observatory"),
            Err(StewardRefusal::StewardRequired)
        );
    }
}
