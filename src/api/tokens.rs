//! Scoped API tokens, minted by the holder of the admin token for MDM servers and scripts
//! that should read, or revoke, and nothing more. A token is shown once; only its hash is
//! stored.

use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::ApiError;
use super::auth::{Can, Manage, Scope, TOKENS, TokenHash, TokenRecord};
use super::extract::{Json, Path};
use crate::store::Backing;

#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    pub name: String,
    pub scopes: Vec<Scope>,
}

#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
pub struct TokenView {
    /// The first 16 hex digits of the token's SHA-256: names it without revealing it.
    pub id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Only in the answer that mints it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl TokenView {
    fn new(hash_hex: &str, record: TokenRecord, token: Option<String>) -> Self {
        Self {
            id: hash_hex[..16].to_owned(),
            name: record.name,
            scopes: record.scopes,
            created_at: record.created_at,
            token,
        }
    }
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens",
    description = "Mints a scoped token, shown once (admin token).",
    request_body = TokenBody,
    responses((status = 201, body = TokenView), (status = 400, description = "Bad name or scope"), (status = 403, description = "Not the admin token")))]
pub(crate) async fn create_token(
    _: Can<Manage>,
    State(backing): State<Backing>,
    Json(body): Json<TokenBody>,
) -> Result<(StatusCode, axum::Json<TokenView>), ApiError> {
    if body.name.trim().is_empty() || body.name.len() > 64 {
        return Err(ApiError::BadRequest(
            "name must be 1 to 64 characters".into(),
        ));
    }
    if body.scopes.is_empty() || body.scopes.contains(&Scope::Manage) {
        return Err(ApiError::BadRequest(
            "scopes: one or more of read, revoke, enroll-admin (manage stays with the admin token)"
                .into(),
        ));
    }
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let hash = TokenHash::of(&token).hex();
    let mut scopes = body.scopes;
    scopes.sort();
    scopes.dedup();
    let record = TokenRecord {
        name: body.name.trim().to_owned(),
        scopes,
        created_at: backing.clock.now_seconds(),
    };
    backing
        .store
        .write_docs(vec![TOKENS.create(&hash, &record)])
        .await?;
    tracing::info!(name = %record.name, scopes = ?record.scopes, "API token minted");
    Ok((
        StatusCode::CREATED,
        axum::Json(TokenView::new(&hash, record, Some(token))),
    ))
}

#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
pub struct TokenList {
    pub items: Vec<TokenView>,
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, body = TokenList)))]
pub(crate) async fn list_tokens(
    _: Can<Manage>,
    State(backing): State<Backing>,
) -> Result<axum::Json<TokenList>, ApiError> {
    let mut items = Vec::new();
    for (hash, record) in TOKENS.all(backing.store.as_ref(), "").await? {
        items.push(TokenView::new(&hash, record.value, None));
    }
    Ok(axum::Json(TokenList { items }))
}

/// Withdraws a token at once; `id` is the 16-digit id `list_tokens` shows.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 204, description = "Withdrawn"), (status = 404, description = "No such token")))]
pub(crate) async fn delete_token(
    _: Can<Manage>,
    State(backing): State<Backing>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let not_found = || ApiError::NotFound(format!("no token {id}"));
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    let store = &backing.store;
    let found = TOKENS.page(store.as_ref(), &id, None, 2).await?;
    let [(hash, record)] = found.as_slice() else {
        return Err(not_found());
    };
    let delete = TOKENS.delete(hash, record.version);
    store.write_docs(vec![delete]).await?;
    tracing::info!(token = %id, "API token withdrawn");
    Ok(StatusCode::NO_CONTENT)
}
