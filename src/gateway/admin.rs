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
use serde::Deserialize;
use serde_json::{json, Value};
use troupe_actors::ask;
use troupe_actors::cluster::mesh::{MeshMsg, MeshStatus};
use troupe_actors::frames::{ChatError, ErrorCode};
use troupe_actors::inspect::{inspect_peer, InspectQuery, NodeSnapshot, KINDS};
use troupe_actors::rate_limits::Kind;

use super::rest::{bearer_token, ApiError};
use crate::app::App;

type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorsParams {
    node: Option<String>,
    kind: Option<String>,
    name: Option<String>,
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
pub async fn page(State(app): State<App>) -> Response {
    if app.config.admin.token.is_none() {
        return ApiError(ChatError::not_found("no such endpoint")).into_response();
    }
    super::admin_page::page().await
}

/// `GET /admin/actors`: the actor tree of every node.
pub async fn actors(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<ActorsParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    authorize(&app, peer, &headers).await?;
    let p = params(query)?;
    let inspect = InspectQuery {
        kind: p.kind,
        name: p.name,
        summary: false,
    };
    let (nodes, _) = snapshots(&app, p.node.as_deref(), &inspect).await?;
    Ok(Json(
        json!({ "answered_by": app.node_name(), "nodes": nodes }),
    ))
}

#[derive(Deserialize)]
pub struct EventsParams {
    #[serde(default)]
    after: i64,
    limit: Option<u64>,
}

/// Most events one `GET /api/v1/events` answers.
const EVENTS_PAGE: u64 = 1_000;

/// `GET /api/v1/events?after=&limit=` (admin token): the domain events of
/// the events table after `after`, oldest first, each with its `position`
/// (pass the last one as the next `after`). Only where events go to the
/// table (the database log); with Kafka they are on `kafka.events_topic`.
pub async fn events(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<EventsParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
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
    let events: Vec<Value> = events
        .into_iter()
        .map(|(position, mut event)| {
            event["position"] = json!(position);
            event
        })
        .collect();
    Ok(Json(json!({ "events": events })))
}

/// `GET /admin/nodes`: the members and the rooms each one owns.
pub async fn nodes(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    authorize(&app, peer, &headers).await?;
    let summary = InspectQuery {
        summary: true,
        ..InspectQuery::default()
    };
    let (nodes, status) = snapshots(&app, None, &summary).await?;
    let nodes: Vec<Value> = nodes.iter().map(node_summary).collect();
    let view = status.map(|s| {
        json!({
            "live": s.membership.live,
            "quorum": s.membership.quorum,
            "majority": s.membership.majority,
            "ready": s.ready,
        })
    });
    Ok(Json(
        json!({ "answered_by": app.node_name(), "view": view, "nodes": nodes }),
    ))
}

/// One line of `/admin/nodes` from a node's snapshot.
fn node_summary(snap: &NodeSnapshot) -> Value {
    let of = |name: &str| snap.actors.iter().find(|a| a.name == name);
    let count = |name: &str, key: &str| of(name).and_then(|a| a.state.get(key)).cloned();
    let mut rooms: Vec<&str> = snap
        .actors
        .iter()
        .filter(|a| a.kind == "room")
        .filter_map(|a| a.name.strip_prefix("room:"))
        .collect();
    rooms.sort();
    let mut entry = json!({
        "node": snap.node,
        "addr": snap.addr,
        "cluster_addr": snap.cluster_addr,
        "uptime_s": snap.uptime_s,
        "rooms": rooms,
        "proxies": count("rooms", "proxies"),
        "sessions": count("sessions", "children"),
        "online_users": count("presence", "online"),
    });
    if let Some(error) = &snap.error {
        entry["error"] = json!(error);
    }
    entry
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
