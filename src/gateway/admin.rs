//! The admin endpoints: `/admin/actors` and `/admin/nodes`. Any node answers
//! for the whole cluster: it inspects its own actors and asks every other
//! node's router in parallel, each within `admin.deadline_ms`; a node that
//! does not answer is listed with an `error` instead of failing the answer.
//! Off (404) unless `admin.token` is set; a wrong token is 401.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use troupe_actors::ask;
use troupe_actors::cluster::mesh::{MeshMsg, MeshStatus};
use troupe_actors::frames::{ChatError, ErrorCode};
use troupe_actors::inspect::{inspect_peer, InspectQuery, NodeSnapshot, KINDS};
use troupe_actors::rate_limits::Kind;
use troupe_actors::store::events::DomainEvent;

use utoipa::{IntoParams, ToSchema};

use super::api::responses::{AdminOff, BadRequest, ErrorBody, RateLimited, Unavailable};
use super::rest::{bearer_token, ApiError};
use crate::app::App;

type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ActorsParams {
    /// Only this node's actors.
    node: Option<String>,
    /// Only actors of this kind: node, rooms, room, sessions, session,
    /// presence, router, mesh, outbox, ...
    kind: Option<String>,
    /// Only this actor (`room:general`, `user:alice`, ...) and its children.
    name: Option<String>,
}

/// The actor trees of the cluster's nodes.
#[derive(Serialize, ToSchema)]
pub struct ActorsAnswer {
    /// The node that asked the others.
    pub answered_by: String,
    /// By node name; a node that did not answer in time has an `error`.
    pub nodes: Vec<NodeSnapshot>,
}

/// The cluster's members and what each one holds.
#[derive(Serialize, ToSchema)]
pub struct NodesAnswer {
    pub answered_by: String,
    /// The cluster view of the answering node (null on a single node).
    pub view: Option<MeshView>,
    pub nodes: Vec<NodeSummary>,
}

/// A node's view of the cluster.
#[derive(Serialize, ToSchema)]
pub struct MeshView {
    pub live: Vec<String>,
    pub quorum: bool,
    pub majority: bool,
    pub ready: bool,
}

/// One node: its addresses, uptime, the rooms it owns and its counts.
#[derive(Serialize, ToSchema)]
pub struct NodeSummary {
    pub node: String,
    pub addr: Option<String>,
    pub cluster_addr: Option<String>,
    pub uptime_s: Option<f64>,
    /// The rooms whose actor runs on this node, by name.
    pub rooms: Vec<String>,
    /// Proxies to rooms owned by other nodes.
    pub proxies: Option<u64>,
    pub sessions: Option<u64>,
    pub online_users: Option<u64>,
    /// Why the node did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Lets the request through only with the configured admin token. Each
/// failure takes from the client address's `admin_auth` bucket; an address
/// whose bucket is empty is refused before its token is even compared, so
/// nobody can guess at speed.
async fn authorize(app: &App, peer: SocketAddr, headers: &HeaderMap) -> ApiResult<()> {
    let Some(expected) = app.config.admin.token.as_deref() else {
        // No token configured: the endpoints do not exist.
        return Err(ChatError::not_found("no such endpoint").into());
    };
    let limits = &app.config.rate_limits;
    let store = &*app.stores.ephemeral;
    let addr = format!("addr:{}", peer.ip());
    if let Err(e) = limits.peek(store, Kind::AdminAuth, &addr).await {
        tracing::warn!(peer = %peer.ip(), "admin request refused: too many failures from this address");
        return Err(e.into());
    }
    let given = bearer_token(headers);
    let refusal = match given {
        None => ChatError::new(
            ErrorCode::Unauthorized,
            "missing Authorization: Bearer <admin token>",
        ),
        Some(given) if !same(given.as_bytes(), expected.as_bytes()) => {
            ChatError::new(ErrorCode::Unauthorized, "wrong admin token")
        }
        Some(_) => return Ok(()),
    };
    tracing::warn!(peer = %peer.ip(), "admin request with a wrong or missing token");
    // This failure counts; the one that empties the bucket is still a 401.
    let _ = limits.check(store, Kind::AdminAuth, &addr).await;
    Err(refusal.into())
}

/// Compares without stopping at the first difference (no timing hint).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn params(query: Result<Query<ActorsParams>, QueryRejection>) -> ApiResult<ActorsParams> {
    let Query(p) = query.map_err(|e| ChatError::bad_request(format!("bad query: {e}")))?;
    if let Some(kind) = &p.kind {
        if !KINDS.contains(&kind.as_str()) {
            return Err(ChatError::bad_request(format!(
                "unknown kind {kind:?}: one of {}",
                KINDS.join(", ")
            ))
            .into());
        }
    }
    Ok(p)
}

/// The cluster as this node sees it: live members and members out of the view.
async fn view(app: &App) -> Option<MeshStatus> {
    let mesh = app.refs.mesh.as_ref()?;
    ask(mesh, |reply| MeshMsg::Status { reply }).await.ok()
}

/// Every node's snapshot (or only `only`'s), this node's included, by node name.
async fn snapshots(
    app: &App,
    only: Option<&str>,
    query: &InspectQuery,
) -> ApiResult<(Vec<NodeSnapshot>, Option<MeshStatus>)> {
    let me = app.node_name();
    let status = view(app).await;
    let mut peers = Vec::new();
    let mut absent = Vec::new();
    if let Some(status) = &status {
        peers.extend(
            status
                .membership
                .live
                .iter()
                .filter(|n| n.as_str() != me)
                .cloned(),
        );
        absent.extend(status.absent.iter().cloned());
    }
    let wanted = |node: &str| only.is_none_or(|o| o == node);
    let known =
        wanted(me) || peers.iter().any(|p| wanted(p)) || absent.iter().any(|a| wanted(&a.0));
    if !known {
        return Err(ChatError::not_found(format!(
            "no node named {:?} in this cluster",
            only.unwrap_or_default()
        ))
        .into());
    }
    let deadline = Duration::from_millis(app.config.admin.deadline_ms);
    let local = async {
        if wanted(me) {
            Some(app.refs.inspector.snapshot(query).await)
        } else {
            None
        }
    };
    let remote = join_all(
        peers
            .iter()
            .filter(|p| wanted(p))
            .map(|peer| inspect_peer(peer, query, deadline)),
    );
    let (local, remote) = tokio::join!(local, remote);
    let mut nodes: Vec<NodeSnapshot> = local.into_iter().chain(remote).collect();
    for (node, addr, ago) in absent.into_iter().filter(|a| wanted(&a.0)) {
        let why = match ago {
            Some(s) => {
                format!("not answering: out of the cluster view, last answered {s:.1} s ago")
            }
            None => "not answering: never reached".to_string(),
        };
        let mut entry = NodeSnapshot::failed(&node, why);
        entry.cluster_addr = Some(addr);
        nodes.push(entry);
    }
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    Ok((nodes, status))
}

/// `GET /admin`: the live admin page (it asks for the token itself and holds
/// no data); off like the endpoints when no admin token is configured.
#[utoipa::path(
    get,
    path = "/admin",
    operation_id = "admin_page",
    tag = "admin",
    responses(
        (status = 200, description = "The admin page (HTML; it asks for the token)",
            content_type = "text/html", body = String),
        (status = 404, response = AdminOff),
    )
)]
pub async fn page(State(app): State<App>) -> Response {
    if app.config.admin.token.is_none() {
        return ApiError(ChatError::not_found("no such endpoint")).into_response();
    }
    super::admin_page::page().await
}

/// The actor tree of every node (or the filtered part of it): every node is
/// asked in parallel, each within `admin.deadline_ms`.
#[utoipa::path(
    get,
    path = "/admin/actors",
    operation_id = "admin_actors",
    tag = "admin",
    security(("admin" = [])),
    params(ActorsParams),
    responses(
        (status = 200, description = "The actor trees", body = ActorsAnswer),
        (status = 400, response = BadRequest),
        (status = 401, description = "`unauthorized`: no or a wrong admin token", body = ErrorBody),
        (status = 404, description = "`not_found`: admin endpoints off (no `admin.token`), or no such `node`", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn actors(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<ActorsParams>, QueryRejection>,
) -> ApiResult<Json<ActorsAnswer>> {
    authorize(&app, peer, &headers).await?;
    let p = params(query)?;
    let inspect = InspectQuery {
        kind: p.kind,
        name: p.name,
        summary: false,
    };
    let (nodes, _) = snapshots(&app, p.node.as_deref(), &inspect).await?;
    Ok(Json(ActorsAnswer {
        answered_by: app.node_name().to_string(),
        nodes,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsParams {
    /// Only events after this position (0: from the first).
    #[serde(default)]
    #[param(minimum = 0)]
    after: i64,
    /// Page size: 1 to 1000, 100 when absent.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// One domain event of the events table, with its position.
#[derive(Serialize, ToSchema)]
pub struct StoredEvent {
    /// Pass the last one as the next `after`.
    pub position: i64,
    #[serde(flatten)]
    pub event: DomainEvent,
}

/// A page of domain events, oldest first.
#[derive(Serialize, ToSchema)]
pub struct EventsPage {
    pub events: Vec<StoredEvent>,
}

/// Most events one `GET /api/v1/events` answers.
const EVENTS_PAGE: u64 = 1_000;

/// The domain events of the events table after `after`, oldest first, each
/// with its `position` (pass the last one as the next `after`). Only where
/// events go to the table (the database log); with Kafka they are on
/// `kafka.events_topic`. The events' fields: docs/events.md.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    operation_id = "events",
    tag = "admin",
    security(("admin" = [])),
    params(EventsParams),
    responses(
        (status = 200, description = "A page of events", body = EventsPage),
        (status = 400, response = BadRequest),
        (status = 401, description = "`unauthorized`: no or a wrong admin token", body = ErrorBody),
        (status = 404, description = "`not_found`: admin endpoints off (no `admin.token`), or events go to Kafka (the message names the topic)", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn events(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<EventsParams>, QueryRejection>,
) -> ApiResult<Json<EventsPage>> {
    authorize(&app, peer, &headers).await?;
    let Query(p) = query.map_err(|e| ChatError::bad_request(format!("bad query: {e}")))?;
    if app.config.log.kind == crate::config::LogKind::Kafka {
        return Err(ChatError::not_found(format!(
            "events are published to the Kafka topic {}",
            app.config.kafka.events_topic
        ))
        .into());
    }
    let limit = p.limit.unwrap_or(100);
    if !(1..=EVENTS_PAGE).contains(&limit) || p.after < 0 {
        return Err(ChatError::bad_request(format!(
            "after must be >= 0 and limit between 1 and {EVENTS_PAGE}"
        ))
        .into());
    }
    let events = app
        .sql
        .events_after(p.after, limit)
        .await
        .map_err(|e| ChatError::unavailable(e.to_string()))?;
    let events = events
        .into_iter()
        .filter_map(|(position, body)| {
            match serde_json::from_value::<DomainEvent>(body) {
                Ok(event) => Some(StoredEvent { position, event }),
                Err(e) => {
                    // Rows are written by troupe itself; one that does not read back is skipped.
                    tracing::warn!(position, error = %e, "an unreadable row of the events table");
                    None
                }
            }
        })
        .collect();
    Ok(Json(EventsPage { events }))
}

/// The cluster's members and the rooms each one owns.
#[utoipa::path(
    get,
    path = "/admin/nodes",
    operation_id = "admin_nodes",
    tag = "admin",
    security(("admin" = [])),
    responses(
        (status = 200, description = "The members", body = NodesAnswer),
        (status = 401, description = "`unauthorized`: no or a wrong admin token", body = ErrorBody),
        (status = 404, response = AdminOff),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn nodes(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<Json<NodesAnswer>> {
    authorize(&app, peer, &headers).await?;
    let summary = InspectQuery {
        summary: true,
        ..InspectQuery::default()
    };
    let (nodes, status) = snapshots(&app, None, &summary).await?;
    let nodes = nodes.iter().map(node_summary).collect();
    let view = status.map(|s| MeshView {
        live: s.membership.live.iter().cloned().collect(),
        quorum: s.membership.quorum,
        majority: s.membership.majority,
        ready: s.ready,
    });
    Ok(Json(NodesAnswer {
        answered_by: app.node_name().to_string(),
        view,
        nodes,
    }))
}

/// One line of `/admin/nodes` from a node's snapshot.
fn node_summary(snap: &NodeSnapshot) -> NodeSummary {
    let of = |name: &str| snap.actors.iter().find(|a| a.name == name);
    let count = |name: &str, key: &str| {
        of(name)
            .and_then(|a| a.state.get(key))
            .and_then(serde_json::Value::as_u64)
    };
    let mut rooms: Vec<&str> = snap
        .actors
        .iter()
        .filter(|a| a.kind == "room")
        .filter_map(|a| a.name.strip_prefix("room:"))
        .collect();
    rooms.sort();
    NodeSummary {
        node: snap.node.clone(),
        addr: snap.addr.clone(),
        cluster_addr: snap.cluster_addr.clone(),
        uptime_s: snap.uptime_s,
        rooms: rooms.into_iter().map(str::to_string).collect(),
        proxies: count("rooms", "proxies"),
        sessions: count("sessions", "children"),
        online_users: count("presence", "online"),
        error: snap.error.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same(b"0123456789abcdef", b"0123456789abcdeX"));
        assert!(!same(b"0123456789abcdef", b"0123456789abcde"));
        assert!(!same(b"", b"x"));
    }
}
