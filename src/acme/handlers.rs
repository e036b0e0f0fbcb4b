//! HTTP face of the ACME server: request envelopes in, RFC 8555 resource objects out.
//! Every response carries a fresh `Replay-Nonce` and the directory link (`headers`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, FromRef, FromRequest, Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::error::AcmeError;
use super::jws::Jws;
use super::model::{
    Account, Authorization, AuthzStatus, ChallengeStatus, ChallengeType, Identifier, OrderState,
};
use super::orders::OrderView;
use super::problem::AcmeProblem;
use super::service::{AcmeService, Signed};
use crate::rate::{ClientAddr, Costly};

/// How long clients are asked to wait before polling a resource that is still changing.
const RETRY_AFTER_SECS: &str = "1";

/// Adds `Replay-Nonce`, `Cache-Control: no-store` and the directory `Link` to every ACME
/// response, errors included (clients retry `badNonce` with the nonce it carries).
pub async fn headers(State(acme): State<Arc<AcmeService>>, req: Request, next: Next) -> Response {
    let profile = profile_in(req.uri().path()).to_owned();
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&acme.nonce()) {
        h.insert("replay-nonce", v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if acme.profile(&profile).is_ok() {
        let link = format!("<{}>;rel=\"index\"", acme.url(&profile, "directory"));
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.append(header::LINK, v);
        }
    }
    response
}

/// The profile an `/acme/<profile>/…` path names (empty for any other path).
fn profile_in(path: &str) -> &str {
    path.strip_prefix("/acme/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Directory {
    new_nonce: String,
    new_account: String,
    new_order: String,
    revoke_cert: String,
    key_change: String,
    meta: Meta,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    #[serde(skip_serializing_if = "Option::is_none")]
    terms_of_service: Option<String>,
    external_account_required: bool,
}

pub async fn directory(
    State(acme): State<Arc<AcmeService>>,
    Path(profile): Path<String>,
) -> Result<Response, AcmeError> {
    let p = acme.profile(&profile)?;
    let url = |path: &str| acme.url(&profile, path);
    Ok(axum::Json(Directory {
        new_nonce: url("new-nonce"),
        new_account: url("new-account"),
        new_order: url("new-order"),
        revoke_cert: url("revoke-cert"),
        key_change: url("key-change"),
        meta: Meta {
            terms_of_service: p.config.terms_of_service.clone(),
            external_account_required: p.config.external_account_required,
        },
    })
    .into_response())
}

/// HEAD answers 200 and GET 204 (RFC 8555 §7.2); the nonce itself is added by `headers`.
pub async fn new_nonce(
    State(acme): State<Arc<AcmeService>>,
    Path(profile): Path<String>,
    method: Method,
) -> Result<StatusCode, AcmeError> {
    acme.profile(&profile)?;
    Ok(if method == Method::HEAD {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    })
}

/// Every POST to an ACME resource: its profile (from the path), the JWS (only
/// `application/jose+json`) and the URL it must have been signed for.
impl<S> FromRequest<S> for Signed
where
    S: Send + Sync,
    Arc<AcmeService>: FromRef<S>,
{
    type Rejection = AcmeError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AcmeError> {
        let acme = Arc::<AcmeService>::from_ref(state);
        let profile = acme.profile(profile_in(req.uri().path()))?.clone();
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if content_type.split(';').next().map(str::trim) != Some("application/jose+json") {
            return Err(AcmeError {
                status: Some(415),
                ..AcmeError::malformed("requests must be application/jose+json")
            });
        }
        let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let url = format!("{}{path_and_query}", acme.base);
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| AcmeError::malformed(e.body_text()))?;
        Ok(Self {
            profile,
            jws: Jws::parse(&body)?,
            url,
        })
    }
}

fn location(url: &str) -> [(header::HeaderName, String); 1] {
    [(header::LOCATION, url.to_owned())]
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AccountJson {
    status: super::model::AccountStatus,
    contact: Vec<String>,
    orders: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_account_binding: Option<String>,
}

fn account_json(acme: &AcmeService, account: &Account) -> AccountJson {
    AccountJson {
        status: account.status,
        contact: account.contact.clone(),
        orders: acme.url(&account.profile, &format!("account/{}/orders", account.id)),
        created_at: account.created_at,
        external_account_binding: account.eab_kid.clone(),
    }
}

pub async fn new_account(
    State(acme): State<Arc<AcmeService>>,
    State(costly): State<Costly>,
    client: Option<Extension<ClientAddr>>,
    Path(profile): Path<String>,
    req: Signed,
) -> Result<Response, AcmeError> {
    // A new account is a durable write for anyone who asks: `limits.client_rate` a second
    // per client address.
    if let Some(Extension(ClientAddr(ip))) = client {
        costly
            .rate
            .check(ip)
            .map_err(|wait| AcmeError::rate_limited("new accounts from this address", wait))?;
    }
    let (account, created) = acme.new_account(&req).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let url = acme.url(&profile, &format!("account/{}", account.id));
    Ok((
        status,
        location(&url),
        axum::Json(account_json(&acme, &account)),
    )
        .into_response())
}

pub async fn account(
    State(acme): State<Arc<AcmeService>>,
    Path((_, id)): Path<(String, String)>,
    req: Signed,
) -> Result<Response, AcmeError> {
    let account = acme.update_account(&req, &id).await?;
    Ok(axum::Json(account_json(&acme, &account)).into_response())
}

pub async fn key_change(
    State(acme): State<Arc<AcmeService>>,
    req: Signed,
) -> Result<Response, AcmeError> {
    let account = acme.key_change(&req).await?;
    Ok(axum::Json(account_json(&acme, &account)).into_response())
}

#[derive(serde::Deserialize)]
pub struct OrdersCursor {
    cursor: Option<String>,
}

pub async fn account_orders(
    State(acme): State<Arc<AcmeService>>,
    Path((profile, id)): Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<OrdersCursor>,
    req: Signed,
) -> Result<Response, AcmeError> {
    let (ids, next) = acme.account_orders(&req, &id, q.cursor.as_deref()).await?;
    let orders: Vec<String> = ids
        .iter()
        .map(|o| acme.url(&profile, &format!("order/{o}")))
        .collect();
    let mut response = axum::Json(serde_json::json!({ "orders": orders })).into_response();
    if let Some(next) = next {
        let link = format!(
            "<{}?cursor={next}>;rel=\"next\"",
            acme.url(&profile, &format!("account/{id}/orders"))
        );
        if let Ok(v) = HeaderValue::from_str(&link) {
            response.headers_mut().append(header::LINK, v);
        }
    }
    Ok(response)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OrderJson {
    status: super::model::OrderStatus,
    #[serde(with = "time::serde::rfc3339")]
    expires: OffsetDateTime,
    identifiers: Vec<Identifier>,
    authorizations: Vec<String>,
    finalize: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<AcmeProblem>,
}

fn order_response(
    acme: &AcmeService,
    profile: &str,
    view: OrderView,
    status: StatusCode,
) -> Response {
    let o = &view.order;
    let (certificate, error) = match &o.state {
        OrderState::Valid { certificate } => (
            Some(acme.url(profile, &format!("cert/{certificate}"))),
            None,
        ),
        OrderState::Invalid { error } => (None, Some(AcmeProblem::from(error))),
        _ => (None, None),
    };
    let body = OrderJson {
        status: view.status,
        expires: o.expires,
        identifiers: o.identifiers.clone(),
        authorizations: o
            .authorizations
            .iter()
            .map(|a| acme.url(profile, &format!("authz/{a}")))
            .collect(),
        finalize: acme.url(profile, &format!("order/{}/finalize", o.id)),
        certificate,
        error,
    };
    let url = acme.url(profile, &format!("order/{}", o.id));
    let mut response = (status, location(&url), axum::Json(body)).into_response();
    if view.status == super::model::OrderStatus::Processing {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECS),
        );
    }
    response
}

pub async fn new_order(
    State(acme): State<Arc<AcmeService>>,
    Path(profile): Path<String>,
    req: Signed,
) -> Result<Response, AcmeError> {
    let view = acme.new_order(&req).await?;
    Ok(order_response(&acme, &profile, view, StatusCode::CREATED))
}

pub async fn order(
    State(acme): State<Arc<AcmeService>>,
    Path((profile, id)): Path<(String, String)>,
    req: Signed,
) -> Result<Response, AcmeError> {
    let view = acme.order(&req, &id).await?;
    Ok(order_response(&acme, &profile, view, StatusCode::OK))
}

pub async fn finalize(
    State(acme): State<Arc<AcmeService>>,
    Path((profile, id)): Path<(String, String)>,
    req: Signed,
) -> Result<Response, AcmeError> {
    let view = acme.finalize(&req, &id).await?;
    Ok(order_response(&acme, &profile, view, StatusCode::OK))
}

#[derive(Serialize)]
struct ChallengeJson {
    #[serde(rename = "type")]
    kind: &'static str,
    url: String,
    status: &'static str,
    token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    validated: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<AcmeProblem>,
}

fn challenge_json(
    acme: &AcmeService,
    profile: &str,
    authz: &Authorization,
    kind: ChallengeType,
) -> Option<ChallengeJson> {
    let c = authz.challenge(kind)?;
    let status = match c.status {
        ChallengeStatus::Pending if acme.is_validating(&authz.id) => "processing",
        ChallengeStatus::Pending => "pending",
        ChallengeStatus::Valid => "valid",
        ChallengeStatus::Invalid => "invalid",
    };
    Some(ChallengeJson {
        kind: c.kind.name(),
        url: acme.url(profile, &format!("chall/{}/{}", authz.id, c.kind.name())),
        status,
        token: c.token.clone(),
        validated: c.validated.and_then(|t| t.format(&Rfc3339).ok()),
        error: c.error.as_ref().map(AcmeProblem::from),
    })
}

#[derive(Serialize)]
struct AuthzJson {
    identifier: Identifier,
    /// Present, and true, only for the authorization of an ordered wildcard (RFC 8555 §7.1.4).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    wildcard: bool,
    status: AuthzStatus,
    #[serde(with = "time::serde::rfc3339")]
    expires: OffsetDateTime,
    challenges: Vec<ChallengeJson>,
}

pub async fn authorization(
    State(acme): State<Arc<AcmeService>>,
    Path((profile, id)): Path<(String, String)>,
    req: Signed,
) -> Result<Response, AcmeError> {
    let authz = acme.authorization(&req, &id).await?;
    let status = authz.status_at(acme.now());
    let body = AuthzJson {
        identifier: authz.identifier.clone(),
        wildcard: authz.wildcard,
        status,
        expires: authz.expires,
        challenges: authz
            .challenges
            .iter()
            .filter_map(|c| challenge_json(&acme, &profile, &authz, c.kind))
            .collect(),
    };
    let mut response = axum::Json(body).into_response();
    if status == AuthzStatus::Pending && acme.is_validating(&authz.id) {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECS),
        );
    }
    Ok(response)
}

pub async fn challenge(
    State(acme): State<Arc<AcmeService>>,
    Path((profile, authz_id, kind)): Path<(String, String, String)>,
    req: Signed,
) -> Result<Response, AcmeError> {
    let (authz, kind) = acme.challenge(&req, &authz_id, &kind).await?;
    let body = challenge_json(&acme, &profile, &authz, kind)
        .ok_or_else(|| AcmeError::not_found("challenge"))?;
    let up = format!(
        "<{}>;rel=\"up\"",
        acme.url(&profile, &format!("authz/{authz_id}"))
    );
    Ok(([(header::LINK, up)], axum::Json(body)).into_response())
}

pub async fn certificate(
    State(acme): State<Arc<AcmeService>>,
    Path((profile, serial)): Path<(String, String)>,
    req: Signed,
) -> Result<Response, AcmeError> {
    let (pem, alternate) = acme.certificate(&req, &serial, false).await?;
    let mut response = (
        [(header::CONTENT_TYPE, "application/pem-certificate-chain")],
        pem,
    )
        .into_response();
    // RFC 8555 §7.4.2: the chain through the cross certificate, for clients that trust
    // only the other root.
    if alternate {
        let link = format!(
            "<{}>;rel=\"alternate\"",
            acme.url(&profile, &format!("cert/{serial}/alt"))
        );
        if let Ok(v) = HeaderValue::from_str(&link) {
            response.headers_mut().append(header::LINK, v);
        }
    }
    Ok(response)
}

pub async fn alternate_certificate(
    State(acme): State<Arc<AcmeService>>,
    Path((_, serial)): Path<(String, String)>,
    req: Signed,
) -> Result<Response, AcmeError> {
    let (pem, _) = acme.certificate(&req, &serial, true).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/pem-certificate-chain")],
        pem,
    )
        .into_response())
}

pub async fn revoke(
    State(acme): State<Arc<AcmeService>>,
    req: Signed,
) -> Result<Response, AcmeError> {
    acme.revoke(&req).await?;
    Ok(StatusCode::OK.into_response())
}
