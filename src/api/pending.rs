//! SCEP enrolments held for manual approval (`scep.approval = "manual"`): list, approve,
//! reject. The device collects the outcome with CertPoll.

use std::sync::Arc;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::ApiError;
use super::auth::{Can, EnrollAdmin, Read};
use super::extract::Path;
use crate::ca::{IssueError, Serial};
use crate::csr::San;
use crate::encoding::to_pem;
use crate::scep::ScepService;
use crate::scep::pending::{Decision, PendingRequest};
use crate::scep::service::DecisionError;
use crate::store::DeviceId;

#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
pub struct PendingView {
    pub transaction_id: String,
    pub subject: String,
    pub device: Option<DeviceId>,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// `waiting`, `approved` or `rejected`.
    pub state: String,
    /// The issued certificate, once approved.
    pub serial: Option<Serial>,
    /// The subjectAltNames the request asked for.
    #[schema(value_type = Vec<String>)]
    pub sans: Vec<San>,
    /// The requested key (SubjectPublicKeyInfo, PEM). The request itself is not kept: it
    /// carries the challenge password.
    pub public_key_pem: String,
}

impl From<PendingRequest> for PendingView {
    fn from(p: PendingRequest) -> Self {
        let subject = p.subject();
        let (state, serial) = match p.decision {
            Decision::Waiting => ("waiting", None),
            Decision::Approved { serial } => ("approved", Some(serial)),
            Decision::Rejected => ("rejected", None),
        };
        Self {
            subject,
            public_key_pem: to_pem("PUBLIC KEY", &p.public_key),
            transaction_id: p.transaction_id,
            sans: p.requested.sans,
            device: p.device,
            received_at: p.received_at,
            state: state.into(),
            serial,
        }
    }
}

#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
pub struct PendingList {
    pub items: Vec<PendingView>,
}

/// The enrolments still waiting for a decision.
#[utoipa::path(get, path = "/api/v1/scep/pending", tag = "enrolment",
    responses((status = 200, body = PendingList)))]
pub(crate) async fn list_pending(
    _: Can<Read>,
    State(scep): State<Arc<ScepService>>,
) -> Result<axum::Json<PendingList>, ApiError> {
    let held = scep.pending_requests(true).await?;
    Ok(axum::Json(PendingList {
        items: held.into_iter().map(PendingView::from).collect(),
    }))
}

#[utoipa::path(post, path = "/api/v1/scep/pending/{id}/approve", tag = "enrolment",
    params(("id" = String, Path, description = "SCEP transaction id")),
    responses((status = 200, body = PendingView), (status = 404, description = "Unknown transaction"), (status = 409, description = "Already decided")))]
pub(crate) async fn approve_pending(
    admin: Can<EnrollAdmin>,
    scep: State<Arc<ScepService>>,
    path: Path<String>,
) -> Result<axum::Json<PendingView>, ApiError> {
    decide(admin, scep, path, true).await
}

#[utoipa::path(post, path = "/api/v1/scep/pending/{id}/reject", tag = "enrolment",
    params(("id" = String, Path, description = "SCEP transaction id")),
    responses((status = 200, body = PendingView), (status = 404, description = "Unknown transaction"), (status = 409, description = "Already decided")))]
pub(crate) async fn reject_pending(
    admin: Can<EnrollAdmin>,
    scep: State<Arc<ScepService>>,
    path: Path<String>,
) -> Result<axum::Json<PendingView>, ApiError> {
    decide(admin, scep, path, false).await
}

async fn decide(
    _: Can<EnrollAdmin>,
    State(scep): State<Arc<ScepService>>,
    Path(id): Path<String>,
    approve: bool,
) -> Result<axum::Json<PendingView>, ApiError> {
    let decided = scep.decide(&id, approve).await.map_err(|e| match e {
        DecisionError::NotFound => ApiError::NotFound(format!("no pending enrolment {id}")),
        DecisionError::AlreadyDecided => ApiError::Conflict(e.to_string()),
        DecisionError::Policy(p) => ApiError::Issue(IssueError::Policy(p)),
        DecisionError::Ours(e) => e.into(),
    })?;
    Ok(axum::Json(decided.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csr::Attr;
    use crate::scep::pending::Requested;

    #[test]
    fn the_view_names_the_decision() {
        let serial = Serial::random();
        let held = PendingRequest {
            transaction_id: "t".into(),
            public_key: vec![1, 2, 3],
            requested: Requested {
                subject: vec![(Attr::CommonName, "x".into())],
                sans: vec![],
            },
            stated: Default::default(),
            signer: vec![],
            device: None,
            received_at: OffsetDateTime::UNIX_EPOCH,
            decision: Decision::Approved {
                serial: serial.clone(),
            },
        };
        let view = PendingView::from(held);
        assert_eq!(
            (view.state.as_str(), view.serial),
            ("approved", Some(serial))
        );
        assert_eq!(view.subject, "CN=x");
        assert!(
            view.public_key_pem
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
    }
}
