//! Declarative device management: a device's credential document (`com.apple.credential.acme`
//! or `.scep`), with the one-time value minted for it, and the asset declaration that points
//! the device at where the MDM serves that document.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::ApiError;
use super::auth::{Can, EnrollAdmin};
use super::extract::{Path, Query};
use crate::acme::AcmeService;
use crate::acme::client_identifiers::MintRefusal;
use crate::csr::Attr;
use crate::csr::Names;
use crate::payload::{self, Credential};
use crate::scep::ScepService;
use crate::store::DeviceId;

/// A declaration is usually fetched within minutes; a week covers a device that is off.
const DEFAULT_TTL: Duration = Duration::from_secs(7 * 86_400);

/// Which credential: enrolment over ACME (a one-time ClientIdentifier) or SCEP (a one-time
/// challenge).
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum CredentialKind {
    Acme,
    Scep,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CredentialParams {
    /// Where the MDM serves the document to the device (`https://`); the declaration's
    /// `Reference.DataURL`.
    data_url: String,
    /// ACME only: the profile (default `device`); it must take ClientIdentifiers.
    profile: Option<String>,
    /// How long the one-time value stays usable (default 7 days, at most 30 days).
    #[serde(default, with = "humantime_serde")]
    ttl: Option<Duration>,
}

#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
pub(crate) struct CredentialView {
    pub device: DeviceId,
    /// `com.apple.credential.acme` or `com.apple.credential.scep`.
    pub credential_type: String,
    /// The credential document, exactly the bytes to serve at `data_url` (as
    /// `application/json`): the declaration states their SHA-256 and size. It holds a
    /// one-time secret; serve it to that device only.
    pub document: String,
    /// The asset declaration (`com.apple.asset.credential.acme` or `.scep`) to send the
    /// device; a configuration (`com.apple.configuration.*`) names it by `Identifier`.
    #[schema(value_type = Object)]
    pub declaration: serde_json::Value,
    /// When the one-time value in the document stops working.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

#[utoipa::path(get, path = "/api/v1/devices/{id}/credentials/{kind}", tag = "enrolment",
    description = "Mints a one-time ClientIdentifier (acme) or SCEP challenge (scep) for the device and returns the declarative credential document holding it, with the asset declaration that makes the device fetch it from `data_url` (scope enroll-admin). Every call mints anew.",
    params(("id" = String, Path, description = "The device"),
        ("kind" = CredentialKind, Path, description = "acme or scep"),
        ("data_url" = String, Query, description = "Where the MDM serves the document (https://)"),
        ("profile" = Option<String>, Query, description = "ACME profile (default device)"),
        ("ttl" = Option<String>, Query, description = "How long the one-time value lasts (default 7days, at most 30days)")),
    responses((status = 200, body = CredentialView),
        (status = 400, description = "Bad data_url or ttl, or the profile does not take ClientIdentifiers"),
        (status = 404, description = "No such profile"),
        (status = 409, description = "ACME: the device is not registered with a serial number or UDID")))]
pub(crate) async fn device_credential(
    _: Can<EnrollAdmin>,
    State(acme): State<Arc<AcmeService>>,
    State(scep): State<Arc<ScepService>>,
    Path((device, kind)): Path<(DeviceId, CredentialKind)>,
    Query(p): Query<CredentialParams>,
) -> Result<Response, ApiError> {
    check_data_url(&p.data_url)?;
    let ttl = p.ttl.unwrap_or(DEFAULT_TTL);
    let subject = vec![("CN".to_owned(), device.as_str().to_owned())];
    let (credential, identifier, expires_at) = match kind {
        CredentialKind::Acme => {
            if p.profile.as_deref() == Some("") {
                return Err(ApiError::BadRequest("profile: empty".into()));
            }
            let profile = p.profile.unwrap_or_else(|| "device".to_owned());
            let (value, minted) = acme
                .mint_client_identifier(&profile, &device, ttl)
                .await
                .map_err(|e| match e {
                    MintRefusal::NoProfile => {
                        ApiError::NotFound(format!("no ACME profile `{profile}`"))
                    }
                    MintRefusal::Store(e) => ApiError::from(e),
                    refusal @ MintRefusal::Unregistered(_) => {
                        ApiError::Conflict(refusal.to_string())
                    }
                    refusal => ApiError::BadRequest(refusal.to_string()),
                })?;
            let directory_url = acme.url(&profile, "directory");
            let credential = payload::Acme {
                directory_url: &directory_url,
                client_identifier: &value,
                key_size: 384,
                subject: &subject,
            }
            .credential();
            (
                credential,
                format!("com.enrollca.credential.acme.{profile}"),
                minted.expires_at,
            )
        }
        CredentialKind::Scep => {
            if p.profile.is_some() {
                return Err(ApiError::BadRequest("profile: SCEP has no profiles".into()));
            }
            super::challenges::check_ttl(ttl)?;
            let ca_fingerprint = scep.ca_fingerprint().map_err(ApiError::internal)?;
            // The challenge states the subject the document asks for: nothing else is issued.
            let names = Names {
                subject: Some(vec![(Attr::CommonName, device.as_str().to_owned())]),
                sans: None,
            };
            let (challenge, record) = scep
                .mint_challenge(Some(device.clone()), names, ttl)
                .await?;
            let credential = payload::Scep {
                url: scep.url(),
                challenge: Some(&challenge),
                key_size: 2048,
                subject: &subject,
                ca_fingerprint: ca_fingerprint.to_vec(),
            }
            .credential();
            (
                credential,
                "com.enrollca.credential.scep".to_owned(),
                record.expires_at,
            )
        }
    };
    let view = view(device, credential, &identifier, &p.data_url, expires_at);
    let mut response = axum::Json(view).into_response();
    // It holds a one-time secret.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn view(
    device: DeviceId,
    credential: Credential,
    identifier: &str,
    data_url: &str,
    expires_at: OffsetDateTime,
) -> CredentialView {
    CredentialView {
        device,
        credential_type: credential.credential_type.to_owned(),
        declaration: credential.declaration(identifier, data_url),
        document: credential.document,
        expires_at,
    }
}

/// Apple requires an `https://` DataURL.
fn check_data_url(url: &str) -> Result<(), ApiError> {
    let bad = || ApiError::BadRequest(format!("data_url `{url}`: an https:// URL is required"));
    let uri: Uri = url.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("https") || uri.authority().is_none() {
        return Err(bad());
    }
    Ok(())
}
