//! One-time SCEP challenges, minted for the MDM to put into a device's enrolment profile.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use rand::RngCore;

use super::ApiError;
use super::auth::{Can, EnrollAdmin};
use super::extract::Json;
use super::views::{ChallengeBody, ChallengeView};
use crate::app::AppState;
use crate::ca::csr::parse_subject;
use crate::policy::{Names, subject_string};
use crate::store::{ChallengeHash, ChallengeRecord};

const DEFAULT_TTL: Duration = Duration::from_secs(3600);
const MAX_TTL: Duration = Duration::from_secs(30 * 86_400);

#[utoipa::path(post, path = "/api/v1/scep/challenges", tag = "enrolment",
    description = "Mints a one-time SCEP challenge (scope enroll-admin).",
    request_body = ChallengeBody,
    responses((status = 201, body = ChallengeView), (status = 400, description = "Bad ttl")))]
pub async fn create_challenge(
    _: Can<EnrollAdmin>,
    State(state): State<Arc<AppState>>,
    Json(body): Json<ChallengeBody>,
) -> Result<(StatusCode, axum::Json<ChallengeView>), ApiError> {
    let ttl = body.ttl.unwrap_or(DEFAULT_TTL);
    if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
        return Err(ApiError::BadRequest(
            "ttl must be between 1s and 30days".into(),
        ));
    }
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
    let mut secret = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let now = state
        .ca
        .clock()
        .now()
        .replace_nanosecond(0)
        .expect("0 is a valid nanosecond");
    let record = ChallengeRecord {
        device: body.device.clone(),
        names: names.clone(),
        created_at: now,
        expires_at: now + ttl,
    };
    let expires_at = record.expires_at;
    state
        .ca
        .store()
        .put_challenge(ChallengeHash::of(challenge.as_bytes()), record)
        .await?;
    tracing::info!(device = body.device.as_ref().map(|d| d.as_str()), %expires_at, "one-time SCEP challenge minted");
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
