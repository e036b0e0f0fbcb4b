//! Issuers and the event feed.

use std::sync::Arc;

use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::extract::Query;
use super::views::IssuerView;
use super::{Admin, ApiError};
use crate::app::AppState;
use crate::store::{Event, Seq};

pub async fn list_issuers(
    _: Admin,
    State(state): State<Arc<AppState>>,
) -> Result<axum::Json<Vec<IssuerView>>, ApiError> {
    let set = state.ca.issuers();
    let views = set
        .iter()
        .map(|i| IssuerView::from_issuer(i))
        .collect::<Result<_, _>>()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(axum::Json(views))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    #[serde(default)]
    after: Seq,
    limit: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EventPage {
    pub events: Vec<Event>,
}

pub async fn list_events(
    _: Admin,
    State(state): State<Arc<AppState>>,
    Query(p): Query<EventParams>,
) -> Result<axum::Json<EventPage>, ApiError> {
    let events = state
        .ca
        .store()
        .events(p.after, p.limit.unwrap_or(100))
        .await?;
    Ok(axum::Json(EventPage { events }))
}
