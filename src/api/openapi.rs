//! The API's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` attributes
//! and the request and response types' `ToSchema` derives, served at
//! `/api/v1/openapi.json`.

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Tag};
use utoipa::{Modify, OpenApi};

use crate::ca::{IssuerId, Serial};
use crate::store::DeviceId;

/// Identifiers that travel as strings.
macro_rules! string_schema {
    ($ty:ty, $description:literal, $pattern:expr) => {
        impl utoipa::PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some($description))
                    .pattern($pattern)
                    .into()
            }
        }
        impl utoipa::ToSchema for $ty {}
    };
}

string_schema!(
    Serial,
    "Certificate serial number, lowercase hex",
    Some("^[0-9a-f]+$")
);
string_schema!(
    IssuerId,
    "Issuing CA id: 16 hex digits of its key's SHA-256",
    Some("^[0-9a-f]{16}$")
);
string_schema!(
    DeviceId,
    "The device, as the MDM names it (1-128 bytes)",
    None::<String>
);

/// Every bearer-authenticated operation requires the `bearer` scheme.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        doc.tags = Some(
            [
                "certificates",
                "devices",
                "events",
                "issuers",
                "enrolment",
                "tokens",
            ]
            .into_iter()
            .map(Tag::new)
            .collect(),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "enrollca API",
        description = "What the MDM server and operators use: certificates, devices, \
                       validation, the event feed, enrolment administration and CA rotation. \
                       Bearer tokens carry scopes (read, revoke, enroll-admin); the admin \
                       token may do everything."
    ),
    modifiers(&Bearer),
    security(("bearer" = [])),
    paths(
        super::certificates::issue_certificate,
        super::certificates::list_certificates,
        super::certificates::get_certificate,
        super::certificates::revoke_certificate,
        super::devices::validate,
        super::devices::validate_batch,
        super::devices::get_device,
        super::devices::revoke_device,
        super::credentials::device_credential,
        super::inventory::register_device,
        super::inventory::unregister_device,
        super::inventory::import_devices,
        super::issuers::list_issuers,
        super::issuers::list_events,
        super::challenges::create_challenge,
        super::pending::list_pending,
        super::pending::approve_pending,
        super::pending::reject_pending,
        super::eab::create_eab_key,
        super::eab::create_client_identifier,
        super::tokens::create_token,
        super::tokens::list_tokens,
        super::tokens::delete_token,
        super::rotation::prepare,
        super::rotation::activate,
        super::rotation::rotate_root,
        super::rotation::retire,
        document,
    )
)]
pub(crate) struct ApiDoc;

/// `GET /api/v1/openapi.json`: this document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "issuers", security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
pub(crate) async fn document() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
