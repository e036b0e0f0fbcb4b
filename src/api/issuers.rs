//! Issuers and the event feed.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::auth::{Can, Read};
use super::extract::Query;
use super::views::IssuerView;
use crate::ca::Ca;
use crate::store::{Backing, Event, Seq};

#[utoipa::path(get, path = "/api/v1/issuers", tag = "issuers",
    responses((status = 200, body = Vec<IssuerView>)))]
pub(crate) async fn list_issuers(
    _: Can<Read>,
    State(ca): State<Arc<Ca>>,
) -> Result<axum::Json<Vec<IssuerView>>, ApiError> {
    let set = ca.issuers();
    let views = set
        .iter()
        .map(|i| IssuerView::from_issuer(i))
        .collect::<Result<_, _>>()
        .map_err(ApiError::internal)?;
    Ok(axum::Json(views))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventParams {
    #[serde(default)]
    after: Seq,
    limit: Option<usize>,
    /// Long poll: with nothing after `after`, wait up to this long (at most 60s) for events.
    #[serde(default, with = "humantime_serde")]
    wait: Option<Duration>,
}

/// Longest a feed request may wait for news.
const MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
pub(crate) struct EventPage {
    pub events: Vec<Event>,
}

#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    description = "The ordered change feed; with `wait`, a long poll (scope read).",
    params(("after" = Option<u64>, Query, description = "Events after this sequence number"),
        ("limit" = Option<usize>, Query, description = "At most this many (default 100)"),
        ("wait" = Option<String>, Query, description = "With nothing new, wait up to this long (e.g. 30s, at most 60s)")),
    responses((status = 200, body = EventPage), (status = 400, description = "Bad parameter")))]
pub(crate) async fn list_events(
    _: Can<Read>,
    State(backing): State<Backing>,
    Query(p): Query<EventParams>,
) -> Result<axum::Json<EventPage>, ApiError> {
    let store = &backing.store;
    let limit = p.limit.unwrap_or(100);
    let wait = p.wait.unwrap_or_default();
    if wait > MAX_WAIT {
        return Err(ApiError::BadRequest("wait must be at most 60s".into()));
    }
    // Subscribed before reading, so an event written in between still wakes us.
    let mut newest = store.newest_event();
    let events = store.events(p.after, limit).await?;
    if !events.is_empty() || wait.is_zero() {
        return Ok(axum::Json(EventPage { events }));
    }
    let news = newest.wait_for(|seq| *seq > p.after);
    // Time out, or the store closing, both answer with what there is: nothing new.
    let _ = tokio::time::timeout(wait, news).await;
    let events = store.events(p.after, limit).await?;
    Ok(axum::Json(EventPage { events }))
}
