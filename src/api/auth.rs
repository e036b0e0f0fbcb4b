//! Bearer-token authentication with scopes. Tokens are held only as their SHA-256 and
//! compared in constant time (the bootstrap admin token) or looked up by hash (scoped tokens
//! minted through the API). A handler states the scope it needs in its signature:
//! `_: Can<Revoke>`.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use super::ApiError;
use crate::store::{Collection, DocKind, Store};

#[derive(Clone)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        Self(crate::encoding::sha256(token.trim().as_bytes()))
    }

    fn matches(&self, presented: &str) -> bool {
        Self::of(presented).0.ct_eq(&self.0).into()
    }

    /// The store key of a scoped token: the hex of its hash.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// What a token may do.
#[derive(
    utoipa::ToSchema,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Certificates, devices, issuers, the event feed, validation.
    Read,
    /// Revoke certificates and devices.
    Revoke,
    /// Mint SCEP challenges and EAB keys, decide pending enrolments, issue as an operator.
    EnrollAdmin,
    /// Mint and list tokens: the bootstrap admin token only.
    Manage,
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| format!("unknown scope `{s}` (read, revoke, enroll-admin)"))
    }
}

/// Scoped tokens, by the hex SHA-256 of the token.
pub(super) const TOKENS: Collection<TokenRecord> = Collection::new(DocKind::ApiToken);

/// A scoped token as stored (keyed by the hex SHA-256 of the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TokenRecord {
    pub name: String,
    pub scopes: Vec<Scope>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A scope a handler requires, as a type.
pub(crate) trait Required {
    const SCOPE: Scope;
}

pub(crate) struct Read;
pub(crate) struct Revoke;
pub(crate) struct EnrollAdmin;
pub(crate) struct Manage;

impl Required for Read {
    const SCOPE: Scope = Scope::Read;
}
impl Required for Revoke {
    const SCOPE: Scope = Scope::Revoke;
}
impl Required for EnrollAdmin {
    const SCOPE: Scope = Scope::EnrollAdmin;
}
impl Required for Manage {
    const SCOPE: Scope = Scope::Manage;
}

/// Proof that the request carried a token with scope `S`: 401 without a known token, 403
/// with one that lacks the scope.
pub(crate) struct Can<S: Required>(PhantomData<S>);

/// What checking a bearer token needs: the admin token's hash, and the store that holds the
/// scoped tokens.
#[derive(Clone)]
pub(crate) struct Tokens {
    pub admin: TokenHash,
    pub store: Arc<dyn Store>,
}

impl<S, T> FromRequestParts<T> for Can<S>
where
    S: Required,
    T: Send + Sync,
    Tokens: FromRef<T>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &T) -> Result<Self, ApiError> {
        let tokens = Tokens::from_ref(state);
        let presented = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized)?;
        if tokens.admin.matches(presented) {
            return Ok(Self(PhantomData));
        }
        let record = TOKENS
            .get(tokens.store.as_ref(), &TokenHash::of(presented).hex())
            .await?
            .ok_or(ApiError::Unauthorized)?
            .value;
        if record.scopes.contains(&S::SCOPE) {
            Ok(Self(PhantomData))
        } else {
            Err(ApiError::Forbidden(format!(
                "token `{}` lacks the `{}` scope",
                record.name,
                serde_json::to_value(S::SCOPE)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            )))
        }
    }
}
