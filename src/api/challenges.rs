//! One-time SCEP challenges, minted for the MDM to put into a device's enrolment profile.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;

use super::ApiError;
use super::auth::{Can, EnrollAdmin};
use super::extract::Json;
use super::views::{ChallengeBody, ChallengeView};
use crate::csr::Names;
use crate::csr::parse_subject;
use crate::policy::subject_string;
use crate::scep::ScepService;

const DEFAULT_TTL: Duration = Duration::from_secs(3600);
const MAX_TTL: Duration = Duration::from_secs(30 * 86_400);

#[utoipa::path(post, path = "/api/v1/scep/challenges", tag = "enrolment",
    description = "Mints a one-time SCEP challenge (scope enroll-admin).",
    request_body = ChallengeBody,
    responses((status = 201, body = ChallengeView), (status = 400, description = "Bad ttl")))]
pub(crate) async fn create_challenge(
    _: Can<EnrollAdmin>,
    State(scep): State<Arc<ScepService>>,
    Json(body): Json<ChallengeBody>,
) -> Result<(StatusCode, axum::Json<ChallengeView>), ApiError> {
    let ttl = body.ttl.unwrap_or(DEFAULT_TTL);
    check_ttl(ttl)?;
    let subject = body
        .subject
        .as_deref()
        .map(parse_subject)
        .transpose()
        .map_err(|e| ApiError::BadRequest(format!("subject: {e}")))?;
    let names = Names {
        subject,
        sans: body.sans.clone(),
    };
    let (challenge, record) = scep
        .mint_challenge(body.device.clone(), names.clone(), ttl)
        .await?;
    let expires_at = record.expires_at;
    Ok((
        StatusCode::CREATED,
        axum::Json(ChallengeView {
            challenge,
            device: body.device,
            subject: names.subject.as_deref().map(subject_string),
            sans: names.sans,
            expires_at,
        }),
    ))
}

pub(super) fn check_ttl(ttl: Duration) -> Result<(), ApiError> {
    if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
        return Err(ApiError::BadRequest(
            "ttl must be between 1s and 30days".into(),
        ));
    }
    Ok(())
}
