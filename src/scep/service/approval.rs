//! Manual approval (RFC 8894 §3.3.3 PENDING): an accepted enrolment is held for an operator,
//! answered PENDING, and completed by CertPoll once it is approved (the certificate) or
//! rejected (FAILURE).

use super::{Refusal, ScepError, ScepService};
use crate::ca::{IssueError, IssueRequest};
use crate::csr::Csr;
use crate::policy::{PolicyError, Vouched};
use crate::scep::pending::{Decision, PendingRequest, Requested};
use crate::scep::wire::{Payload, SignedMessage};
use crate::store::{CertRecord, ChallengeHash, Collection, DocKind, StoreError, Stored, UseUp};

/// SCEP transaction id → the enrolment held under it.
const PENDING: Collection<PendingRequest> = Collection::new(DocKind::ScepPending);

/// Why an operator's decision could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    #[error("no pending enrolment with this transaction id")]
    NotFound,
    #[error("the enrolment has already been decided")]
    AlreadyDecided,
    #[error(transparent)]
    Policy(PolicyError),
    #[error(transparent)]
    Ours(#[from] ScepError),
}

impl ScepService {
    /// CertPoll: the state of an enrolment held for approval, asked by the key that sent it.
    pub(super) async fn poll(&self, req: &SignedMessage) -> Result<Option<Payload>, Refusal> {
        let held = self
            .pending(&req.transaction_id)
            .await?
            .ok_or(Refusal::UnknownCert)?;
        if req.signer_der != held.value.signer {
            return Err(Refusal::SignerKey);
        }
        self.answer_for(&held.value).await
    }

    async fn answer_for(&self, held: &PendingRequest) -> Result<Option<Payload>, Refusal> {
        match &held.decision {
            Decision::Waiting => Ok(None),
            Decision::Rejected => Err(Refusal::Rejected),
            Decision::Approved { serial } => {
                let record = self
                    .backing
                    .store
                    .certificate(serial)
                    .await?
                    .ok_or_else(|| ScepError::internal(format!("approved {serial} is missing")))?;
                let certs = self.with_chain(record.der, &record.issuer)?;
                Ok(Some(Payload::Certs(certs)))
            }
        }
    }

    async fn pending(
        &self,
        transaction_id: &str,
    ) -> Result<Option<Stored<PendingRequest>>, Refusal> {
        PENDING
            .get(self.backing.store.as_ref(), transaction_id)
            .await
            .map_err(Refusal::from)
    }

    /// Holds an accepted enrolment for an operator; its one-time challenge is spent now. A
    /// client that sends the same PKCSReq again is answered as if it polled. The request is
    /// held as its key and names, never as itself: it carries the challenge password.
    pub(super) async fn hold(
        &self,
        req: &SignedMessage,
        csr: &Csr,
        vouched: Vouched,
        consume: Option<ChallengeHash>,
    ) -> Result<Option<Payload>, Refusal> {
        use rcgen::PublicKeyData;
        if let Some(held) = self.pending(&req.transaction_id).await? {
            if held.value.signer != req.signer_der {
                return Err(Refusal::SignerKey);
            }
            return self.answer_for(&held.value).await;
        }
        // Refuse now what approval would refuse: the operator decides on an issuable request.
        self.template
            .apply(csr, None, vouched.device.as_ref(), &vouched.names)?;
        let pending = PendingRequest {
            transaction_id: req.transaction_id.clone(),
            public_key: csr.spki.subject_public_key_info(),
            requested: Requested {
                subject: csr.subject.clone(),
                sans: csr.sans.clone(),
            },
            stated: vouched.names,
            signer: req.signer_der.clone(),
            device: vouched.device,
            received_at: self.backing.clock.now(),
            decision: Decision::Waiting,
        };
        let write = PENDING.create(&req.transaction_id, &pending);
        let consume = consume.map(|challenge| UseUp {
            challenge,
            at: pending.received_at,
        });
        match self.backing.store.commit_docs(vec![write], consume).await {
            Ok(()) => {
                tracing::info!(transaction = %req.transaction_id, "SCEP enrolment held for approval");
                Ok(None)
            }
            Err(StoreError::ChallengeUnavailable) => Err(Refusal::Challenge),
            Err(e) => Err(e.into()),
        }
    }

    /// Enrolments held for approval, oldest transaction ids first; `waiting_only` leaves out
    /// those already decided.
    pub async fn pending_requests(
        &self,
        waiting_only: bool,
    ) -> Result<Vec<PendingRequest>, ScepError> {
        let all = PENDING.all(self.backing.store.as_ref(), "").await?;
        Ok(all
            .into_iter()
            .map(|(_, pending)| pending.value)
            .filter(|p| !waiting_only || p.decision == Decision::Waiting)
            .collect())
    }

    /// An operator's decision on a pending enrolment. Approval issues the certificate and
    /// records the decision in the same write; the client collects it with CertPoll.
    pub async fn decide(
        &self,
        transaction_id: &str,
        approve: bool,
    ) -> Result<PendingRequest, DecisionError> {
        let held = PENDING
            .get(self.backing.store.as_ref(), transaction_id)
            .await
            .map_err(ScepError::from)?
            .ok_or(DecisionError::NotFound)?;
        if held.value.decision != Decision::Waiting {
            return Err(DecisionError::AlreadyDecided);
        }
        let version = held.version;
        let mut decided = held.value;
        if !approve {
            decided.decision = Decision::Rejected;
            let write = PENDING.replace(transaction_id, version, &decided);
            return match self.backing.store.write_docs(vec![write]).await {
                Ok(()) => Ok(decided),
                Err(StoreError::Conflict { .. }) => Err(DecisionError::AlreadyDecided),
                Err(e) => Err(ScepError::from(e).into()),
            };
        }
        let csr = decided.csr().map_err(ScepError::internal)?;
        let vouched = Vouched {
            device: decided.device.clone(),
            names: decided.stated.clone(),
        };
        let (id, record) = (transaction_id.to_owned(), decided.clone());
        let issued = self
            .ca
            .issue(IssueRequest {
                completes: Some(Box::new(move |cert: &CertRecord| {
                    let mut approved = record.clone();
                    approved.decision = Decision::Approved {
                        serial: cert.serial.clone(),
                    };
                    vec![PENDING.replace(&id, version, &approved)]
                })),
                ..self.request(csr, vouched, None)
            })
            .await
            .map_err(|e| match e {
                IssueError::Store(StoreError::Conflict { .. }) => DecisionError::AlreadyDecided,
                IssueError::Policy(p) => DecisionError::Policy(p),
                other => ScepError::Issue(other).into(),
            })?;
        decided.decision = Decision::Approved {
            serial: issued.record.serial,
        };
        tracing::info!(transaction = %transaction_id, "pending SCEP enrolment approved");
        Ok(decided)
    }
}
