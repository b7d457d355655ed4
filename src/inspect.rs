//! `troupe inspect`: the live actor tree of a running node or cluster, read
//! from `GET /admin/actors` and printed as an indented tree (or the raw JSON
//! with `--json`).

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::anyhow;
use serde_json::Value;

/// How long the node has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Without a filter, a supervisor shows at most this many children.
const MAX_CHILDREN: usize = 20;

#[derive(clap::Args)]
pub struct InspectArgs {
    /// The node's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The admin token (`admin.token`).
    #[arg(long, env = "TROUPE_ADMIN__TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Only this node.
    #[arg(long)]
    node: Option<String>,
    /// Only actors of this kind (room, session, supervisor, proxy, ...).
    #[arg(long)]
    kind: Option<String>,
    /// Only this actor, with its detail: `room:lobby`, `lobby`, a session or a user.
    #[arg(long)]
    name: Option<String>,
    /// Print the raw JSON answer (for scripts).
    #[arg(long)]
    json: bool,
}

pub async fn run(args: InspectArgs) -> anyhow::Result<()> {
    let token = args
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| anyhow!("no admin token: pass --token or set TROUPE_ADMIN__TOKEN"))?;
    let base = args.url.trim_end_matches('/');
    let mut url = reqwest::Url::parse(&format!("{base}/admin/actors"))
        .map_err(|e| anyhow!("--url {}: {e}", args.url))?;
    {
        let mut q = url.query_pairs_mut();
        for (key, value) in [
            ("node", &args.node),
            ("kind", &args.kind),
            ("name", &args.name),
        ] {
            if let Some(v) = value {
                q.append_pair(key, v);
            }
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| anyhow!("HTTP client: {e}"))?;
    let answer = client
        .get(url.clone())
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                anyhow!("no answer from {base} within {} s", TIMEOUT.as_secs())
            } else if e.is_connect() {
                anyhow!("cannot connect to {base} (is a troupe node listening there? see --url)")
            } else {
                anyhow!("request to {url} failed: {}", root_cause(&e))
            }
        })?;
    let status = answer.status();
    match status.as_u16() {
        401 => return Err(anyhow!("wrong admin token ({base})")),
        404 => {
            return Err(anyhow!(
                "admin endpoints are off on this node (set admin.token) ({base})"
            ))
        }
        _ => {}
    }
    let body = answer
        .text()
        .await
        .map_err(|e| anyhow!("reading the answer of {url}: {}", root_cause(&e)))?;
    if !status.is_success() {
        // The API's errors are `{"error":{"code","message"}}`: say the message.
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| body.trim().to_string());
        return Err(anyhow!("{base} answered {status}: {message}"));
    }
    let tree: Value = serde_json::from_str(&body)
        .map_err(|e| anyhow!("{url} answered something that is not JSON: {e}"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&tree)?);
    } else {
        let filtered = args.node.is_some() || args.kind.is_some() || args.name.is_some();
        let detail = args.name.is_some();
        print!(
            "{}",
            format_tree(&tree, (!filtered).then_some(MAX_CHILDREN), detail)
        );
    }
    Ok(())
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The answer of `/admin/actors` as an indented tree: a line per node (name,
/// addresses and uptime, or its error), then its actors under their
/// supervisors with a one-line summary of their state. `limit` caps the
/// children shown per supervisor; `detail` adds every state field of each
/// actor on lines of its own.
pub fn format_tree(answer: &Value, limit: Option<usize>, detail: bool) -> String {
    let mut out = String::new();
    let nodes = answer["nodes"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if nodes.is_empty() {
        out.push_str("no nodes answered\n");
    }
    for node in nodes {
        let name = node["node"].as_str().unwrap_or("?");
        let mut head = name.to_string();
        if let Some(addr) = node["addr"].as_str() {
            let _ = write!(head, "  http {addr}");
        }
        if let Some(addr) = node["cluster_addr"].as_str() {
            let _ = write!(head, "  cluster {addr}");
        }
        if let Some(up) = node["uptime_s"].as_f64() {
            let _ = write!(head, "  up {}", uptime(up));
        }
        if let Some(err) = node["error"].as_str() {
            let _ = write!(head, "  ERROR: {err}");
        }
        out.push_str(&head);
        out.push('\n');

        let actors = node["actors"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let names: Vec<&str> = actors
            .iter()
            .map(|a| a["name"].as_str().unwrap_or("?"))
            .collect();
        let parent = |a: &Value| -> Option<usize> {
            let sup = a["supervisor"].as_str()?;
            if Some(sup) == a["name"].as_str() {
                return None;
            }
            names.iter().position(|n| *n == sup)
        };
        let parents: Vec<Option<usize>> = actors.iter().map(parent).collect();
        let mut rows = Vec::new();
        let mut seen = vec![false; actors.len()];
        for root in (0..actors.len()).filter(|&i| parents[i].is_none()) {
            walk(root, 1, &parents, limit, &mut seen, &mut rows);
        }
        // Supervisors naming each other in a cycle (no root above them):
        // listed at the top level.
        let rooted = |mut i: usize| {
            for _ in 0..=actors.len() {
                match parents[i] {
                    Some(p) => i = p,
                    None => return true,
                }
            }
            false
        };
        for i in 0..actors.len() {
            if !rooted(i) {
                walk(i, 1, &parents, limit, &mut seen, &mut rows);
            }
        }
        if actors.is_empty() && node["error"].is_null() {
            out.push_str("  (no actors)\n");
        }
        let actor_rows = rows.iter().filter_map(|r| match *r {
            Row::Actor(i, d) => Some((i, d)),
            Row::More(..) => None,
        });
        let width = actor_rows
            .clone()
            .map(|(i, d)| 2 * d + names[i].chars().count())
            .max()
            .unwrap_or(0)
            .min(44);
        let kind_width = actor_rows
            .map(|(i, _)| actors[i]["kind"].as_str().unwrap_or("?").len())
            .max()
            .unwrap_or(0);
        for row in rows {
            match row {
                Row::Actor(i, depth) => {
                    let a = &actors[i];
                    let label = format!("{}{}", "  ".repeat(depth), names[i]);
                    let kind = a["kind"].as_str().unwrap_or("?");
                    let line = format!("{label:<width$}  {kind:<kind_width$}  {}", summary(a));
                    out.push_str(line.trim_end());
                    out.push('\n');
                    if let (true, Some(state)) = (detail, a["state"].as_object()) {
                        let pad = " ".repeat(2 * depth + 4);
                        for (k, v) in state {
                            let _ = writeln!(out, "{pad}{k}: {}", scalar(v));
                        }
                    }
                }
                Row::More(depth, hidden) => {
                    let _ = writeln!(
                        out,
                        "{}... {hidden} more (filter with --kind, --name or --node)",
                        "  ".repeat(depth)
                    );
                }
            }
        }
    }
    out
}

enum Row {
    /// An actor (its index) at a depth.
    Actor(usize, usize),
    /// How many children of a capped supervisor were left out, at their depth.
    More(usize, usize),
}

/// Actor `i` and its subtree, depth first, at most `limit` children each.
fn walk(
    i: usize,
    depth: usize,
    parents: &[Option<usize>],
    limit: Option<usize>,
    seen: &mut [bool],
    rows: &mut Vec<Row>,
) {
    if std::mem::replace(&mut seen[i], true) || depth > 64 {
        return;
    }
    rows.push(Row::Actor(i, depth));
    let kids: Vec<usize> = (0..parents.len())
        .filter(|&k| parents[k] == Some(i))
        .collect();
    let shown = limit.map_or(kids.len(), |l| kids.len().min(l));
    for &k in &kids[..shown] {
        walk(k, depth + 1, parents, limit, seen, rows);
    }
    if shown < kids.len() {
        rows.push(Row::More(depth + 1, kids.len() - shown));
    }
}

/// One line of the most telling fields of an actor's state.
pub fn summary(actor: &Value) -> String {
    let s = &actor["state"];
    let mut parts: Vec<String> = Vec::new();
    let field = |k: &str| -> Option<String> { s.get(k).filter(|v| !v.is_null()).map(scalar) };
    match actor["kind"].as_str().unwrap_or("") {
        "room" => {
            if let Some(o) = field("owner") {
                parts.push(format!("owner {o}"));
            }
            if let Some(m) = field("members") {
                parts.push(format!("members {m}"));
            }
            if let Some(q) = field("last_seq") {
                parts.push(format!("seq {q}"));
            }
            if let Some(e) = field("epoch") {
                parts.push(format!("epoch {e}"));
            }
            if let (Some(last), Some(cp)) = (s["last_seq"].as_i64(), s["checkpoint_seq"].as_i64()) {
                let mut lag = format!("checkpoint lag {}", last - cp);
                if let Some(age) = s["checkpoint_age_s"].as_f64() {
                    let _ = write!(lag, " ({age:.1} s ago)");
                }
                parts.push(lag);
            }
            if let Some(q) = s["queued_sends"].as_u64().filter(|q| *q > 0) {
                parts.push(format!("queued sends {q}"));
            }
        }
        "proxy" => {
            if let Some(o) = field("owner") {
                parts.push(format!("owner {o}"));
            }
        }
        "session" => {
            if let Some(u) = field("user") {
                parts.push(format!("user {u}"));
            }
            if let Some(rooms) = s["rooms"].as_array() {
                let rooms: Vec<String> = rooms.iter().map(scalar).collect();
                parts.push(format!(
                    "rooms {}",
                    if rooms.is_empty() {
                        "-".to_string()
                    } else {
                        rooms.join(",")
                    }
                ));
            }
            if let Some(q) = field("queued_frames") {
                parts.push(format!("queued {q}"));
            }
        }
        "supervisor" => {
            if let Some(c) = field("children") {
                parts.push(format!("children {c}"));
            }
        }
        "presence" => {
            if let Some(o) = field("online") {
                parts.push(format!("online {o}"));
            }
        }
        "mesh" => {
            if let Some(live) = s["live"].as_array() {
                let live: Vec<String> = live.iter().map(scalar).collect();
                parts.push(format!("live {}", live.join(",")));
            }
            match s["quorum"].as_bool() {
                Some(true) => parts.push("quorum".into()),
                Some(false) => parts.push("NO QUORUM".into()),
                None => {}
            }
        }
        kind => {
            // A node's addresses and name are on its header line already.
            let skip: &[&str] = if kind == "node" {
                &["addr", "cluster_addr", "node"]
            } else {
                &[]
            };
            if let Some(obj) = s.as_object() {
                let fields = obj.iter().filter(|(k, v)| {
                    !v.is_object() && !v.is_array() && !skip.contains(&k.as_str())
                });
                for (k, v) in fields {
                    if parts.len() == 4 {
                        break;
                    }
                    parts.push(format!("{k} {}", scalar(v)));
                }
            }
        }
    }
    if let Some(r) = actor["restarts"].as_u64().filter(|r| *r > 0) {
        parts.push(format!("restarts {r}"));
    }
    if !actor["mailbox"].is_null() && !actor["mailbox"].is_object() {
        if let Some(m) = actor.get("mailbox") {
            parts.push(format!("mailbox {}", scalar(m)));
        }
    }
    parts.join(", ")
}

/// A JSON value for a human: strings bare, the rest as compact JSON.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        // Fractions (seconds, mostly) to the millisecond.
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            let s = format!("{f:.3}");
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        }
        other => other.to_string(),
    }
}

fn uptime(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{} min", (s / 60.0).floor())
    } else if s < 172_800.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} d", s / 86400.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({"nodes": [
            {"node": "n1", "addr": "127.0.0.1:8080", "cluster_addr": "127.0.0.1:4700", "uptime_s": 12.5,
             "actors": [
                {"name": "node", "kind": "node", "supervisor": null, "node": "n1", "mailbox": null, "restarts": 0,
                 "state": {"addr": "127.0.0.1:8080", "cluster_addr": null, "node": "n1", "children": ["presence", "rooms"]}},
                {"name": "presence", "kind": "presence", "supervisor": "node", "state": {"online": 3}},
                {"name": "rooms", "kind": "supervisor", "supervisor": "node", "state": {"children": 2}},
                {"name": "sessions", "kind": "supervisor", "supervisor": "node", "state": {"children": 1}},
                {"name": "mesh", "kind": "mesh", "supervisor": "node", "state": {"live": ["n1", "n2"], "quorum": true}},
                {"name": "room:lobby", "kind": "room", "supervisor": "rooms", "node": "n1",
                 "state": {"room": "lobby", "owner": "n1", "members": 2, "subscribers": 2, "last_seq": 10,
                           "epoch": 3, "checkpoint_seq": 8, "checkpoint_age_s": 1.25, "queued_sends": 0,
                           "something_new": {"x": 1}},
                 "restarts": 1, "mailbox": 4},
                {"name": "proxy:general", "kind": "proxy", "supervisor": "rooms", "state": {"room": "general", "owner": "n2"}},
                {"name": "session:123456", "kind": "session", "supervisor": "sessions",
                 "state": {"user": "ann", "rooms": ["lobby", "general"], "queued_frames": 0, "connected_since": "2026-11-23T04:00:00Z"}}
             ]},
            {"node": "n3", "error": "no answer within 2000 ms", "actors": []}
        ]})
    }

    #[test]
    fn the_tree_nests_actors_under_their_supervisors_with_a_summary() {
        let out = format_tree(&sample(), Some(MAX_CHILDREN), false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "n1  http 127.0.0.1:8080  cluster 127.0.0.1:4700  up 12.5 s"
        );
        let indent = |needle: &str| {
            let l = lines
                .iter()
                .find(|l| l.trim_start().starts_with(needle))
                .unwrap_or_else(|| panic!("{needle} in\n{out}"));
            l.len() - l.trim_start().len()
        };
        assert_eq!(indent("node "), 2);
        assert_eq!(lines[1], "  node                node");
        assert_eq!(indent("rooms "), 4);
        assert_eq!(indent("room:lobby "), 6);
        assert_eq!(indent("session:123456 "), 6);
        // Order: each child right under its supervisor.
        let at = |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap();
        assert!(at("rooms ") < at("room:lobby") && at("room:lobby") < at("sessions "));
        assert!(at("sessions ") < at("session:123456"));
        let room = lines[at("room:lobby")];
        assert!(
            room.ends_with(
                "room:lobby      room        owner n1, members 2, seq 10, epoch 3, checkpoint lag 2 (1.2 s ago), restarts 1, mailbox 4"
            ),
            "{room:?}"
        );
        let session = lines[at("session:123456")];
        assert!(
            session.ends_with("user ann, rooms lobby,general, queued 0"),
            "{session:?}"
        );
        assert!(lines[at("mesh ")].ends_with("live n1,n2, quorum"));
        assert_eq!(lines[at("n3")], "n3  ERROR: no answer within 2000 ms");
        assert_eq!(lines.len(), 10, "{out}");
    }

    #[test]
    fn a_filtered_answer_without_supervisors_lists_the_actors_flat() {
        let answer = json!({"nodes": [{"node": "n1", "addr": "a:1", "uptime_s": 7200.0, "actors": [
            {"name": "room:a", "kind": "room", "supervisor": "rooms", "state": {"owner": "n1", "members": 1, "last_seq": 0, "epoch": 1}},
            {"name": "room:b", "kind": "room", "supervisor": "rooms", "state": {"owner": "n1"}}
        ]}]});
        let out = format_tree(&answer, None, false);
        assert_eq!(
            out,
            "n1  http a:1  up 2.0 h\n  room:a  room  owner n1, members 1, seq 0, epoch 1\n  room:b  room  owner n1\n"
        );
    }

    #[test]
    fn detail_lists_every_state_field() {
        let answer = json!({"nodes": [{"node": "n1", "actors": [
            {"name": "room:a", "kind": "room", "state": {"owner": "n1", "member_list": ["ann", "bob"], "checkpoint_age_s": 4.8868040839999995, "epoch": 3}}
        ]}]});
        let out = format_tree(&answer, None, true);
        assert!(out.contains("\n      owner: n1\n"), "{out}");
        assert!(
            out.contains("\n      member_list: [\"ann\",\"bob\"]\n"),
            "{out}"
        );
        assert!(out.contains("\n      checkpoint_age_s: 4.887\n"), "{out}");
        assert!(out.contains("\n      epoch: 3\n"), "{out}");
    }

    #[test]
    fn a_long_child_list_is_capped_with_a_count_of_the_rest() {
        let mut actors = vec![
            json!({"name": "sessions", "kind": "supervisor", "supervisor": null, "state": {"children": 5}}),
        ];
        for i in 0..5 {
            actors.push(json!({"name": format!("session:{i}"), "kind": "session", "supervisor": "sessions", "state": {"user": format!("u{i}")}}));
        }
        actors.push(
            json!({"name": "router", "kind": "router", "supervisor": null, "state": {"peers": 0}}),
        );
        let answer = json!({"nodes": [{"node": "n1", "actors": actors}]});
        let out = format_tree(&answer, Some(2), false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 6, "{out}");
        assert!(lines[2].trim_start().starts_with("session:0"), "{out}");
        assert!(lines[3].trim_start().starts_with("session:1"), "{out}");
        assert_eq!(
            lines[4],
            "    ... 3 more (filter with --kind, --name or --node)"
        );
        assert!(lines[5].trim_start().starts_with("router"), "{out}");
        assert!(lines[5].ends_with("peers 0"), "{out}");
        // Unlimited: every child.
        assert_eq!(format_tree(&answer, None, false).lines().count(), 8);
    }

    #[test]
    fn supervisors_in_a_cycle_are_still_listed() {
        let answer = json!({"nodes": [{"node": "n1", "actors": [
            {"name": "a", "kind": "supervisor", "supervisor": "b", "state": {}},
            {"name": "b", "kind": "supervisor", "supervisor": "a", "state": {}}
        ]}]});
        assert_eq!(
            format_tree(&answer, None, false),
            "n1\n  a    supervisor\n    b  supervisor\n"
        );
    }

    #[test]
    fn unknown_kinds_and_empty_answers_do_not_break_the_output() {
        assert_eq!(format_tree(&json!({}), None, false), "no nodes answered\n");
        let answer = json!({"nodes": [{"node": "n1", "actors": [
            {"name": "x", "kind": "gizmo", "state": null, "mailbox": null}
        ]}]});
        assert_eq!(format_tree(&answer, None, false), "n1\n  x  gizmo\n");
    }
}
