//! The issuers in force: per key family one active issuer, optionally a staged next one, and
//! the retiring ones that still answer for what they issued. Rotation swaps a whole new set in
//! (see `Ca::issuers`), so a request sees one consistent set from start to end.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::Arc;

use super::{CaError, Issuer, IssuerId};
use crate::model::KeyFamily;
use crate::store::IssuerState;

/// The issuer allowed to mint. Only [`IssuerSet`] constructs it, so code holding an issuer that
/// is staged, retiring or retired cannot reach `ca::issue` with it.
#[derive(Debug, Clone)]
pub struct ActiveIssuer(Arc<Issuer>);

impl Deref for ActiveIssuer {
    type Target = Issuer;
    fn deref(&self) -> &Issuer {
        &self.0
    }
}

#[derive(Debug)]
struct Line {
    active: ActiveIssuer,
    next: Option<Arc<Issuer>>,
}

#[derive(Debug)]
pub struct IssuerSet {
    lines: BTreeMap<KeyFamily, Line>,
    by_id: BTreeMap<IssuerId, Arc<Issuer>>,
}

impl IssuerSet {
    /// Checks the invariants: exactly one active issuer per family present, at most one next.
    pub fn new(issuers: Vec<Issuer>) -> Result<Self, CaError> {
        let mut by_id = BTreeMap::new();
        let mut active: BTreeMap<KeyFamily, ActiveIssuer> = BTreeMap::new();
        let mut next: BTreeMap<KeyFamily, Arc<Issuer>> = BTreeMap::new();
        for issuer in issuers {
            let issuer = Arc::new(issuer);
            let family = issuer.family();
            let clash = match issuer.state() {
                IssuerState::Active => active
                    .insert(family, ActiveIssuer(issuer.clone()))
                    .is_some(),
                IssuerState::Next => next.insert(family, issuer.clone()).is_some(),
                IssuerState::Retiring | IssuerState::Retired => false,
            };
            if clash {
                return Err(CaError::IssuerSet(format!(
                    "two {:?} {family} issuers",
                    issuer.state()
                )));
            }
            by_id.insert(issuer.id().clone(), issuer);
        }
        if let Some(family) = next.keys().find(|f| !active.contains_key(f)) {
            return Err(CaError::IssuerSet(format!(
                "a next {family} issuer is staged but none is active"
            )));
        }
        let lines = active
            .into_iter()
            .map(|(family, active)| {
                let next = next.remove(&family);
                (family, Line { active, next })
            })
            .collect();
        Ok(Self { lines, by_id })
    }

    pub fn active(&self, family: KeyFamily) -> Option<&ActiveIssuer> {
        self.lines.get(&family).map(|l| &l.active)
    }

    pub fn next(&self, family: KeyFamily) -> Option<&Arc<Issuer>> {
        self.lines.get(&family).and_then(|l| l.next.as_ref())
    }

    /// Any issuer, whatever its state (CRL, OCSP and status checks need the retiring ones).
    pub fn get(&self, id: &IssuerId) -> Option<&Arc<Issuer>> {
        self.by_id.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Issuer>> {
        self.by_id.values()
    }
}
