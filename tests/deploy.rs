//! The deployment files, read the way their tools would read them: Docker
//! and Kubernetes cannot run here, so each value a service would refuse at
//! start is checked, and every troupe container's configuration (its file,
//! its environment, its flags) goes through `troupe config check`, which
//! refuses exactly what `troupe serve` would.
//!
//! The manifests' schemas are checked in CI by `scripts/check-deploy.sh`
//! (kubernetes-validate).

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use serde_yaml::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut value: Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // Compose's `<<: *anchor` merge keys (an anchor may merge another: one
    // pass resolves one level).
    for _ in 0..4 {
        value.apply_merge().expect("merge keys resolve");
    }
    value
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v:?}"))
}

/// `troupe config check` with this file, environment and flags: Ok(stdout)
/// or Err(stderr). Nothing of the test's own environment leaks in.
fn config_check(file: &Path, env: &[(String, String)], flags: &[String]) -> Result<String, String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_troupe"));
    cmd.env_clear()
        .arg("config")
        .arg("check")
        .arg("--config")
        .arg(file)
        .args(flags)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let out = cmd.output().expect("troupe runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(stderr)
    }
}

/// Compose's `${VAR:-default}`, with every variable unset.
fn compose_default(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closed ${") + start;
        let inner = &rest[start + 2..end];
        out.push_str(inner.split_once(":-").map(|(_, d)| d).unwrap_or(""));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn env_pairs(env: &Value) -> Vec<(String, String)> {
    env.as_mapping()
        .expect("environment as a mapping")
        .iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => compose_default(s),
                Value::Number(n) => n.to_string(),
                other => panic!("environment value {other:?}"),
            };
            (str_of(k, "key").to_string(), value)
        })
        .collect()
}

#[test]
fn compose_kafka_cluster_id_is_a_kraft_id() {
    let compose = yaml(&repo().join("docker-compose.yml"));
    let id = str_of(
        &compose["services"]["kafka"]["environment"]["CLUSTER_ID"],
        "CLUSTER_ID",
    );
    // Kafka's storage format refuses anything but a base64url UUID: 22
    // characters that decode to 16 bytes.
    assert_eq!(id.len(), 22, "CLUSTER_ID {id:?} must be 22 characters");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(id)
        .unwrap_or_else(|e| panic!("CLUSTER_ID {id:?} is not base64url: {e}"));
    assert_eq!(bytes.len(), 16, "CLUSTER_ID {id:?} must decode to 16 bytes");
}

#[test]
fn compose_nodes_start_with_their_configuration() {
    let compose = yaml(&repo().join("docker-compose.yml"));
    let services = compose["services"].as_mapping().expect("services");
    let subnet = str_of(
        &compose["networks"]["troupe"]["ipam"]["config"][0]["subnet"],
        "subnet",
    );
    let prefix = subnet.split('.').take(2).collect::<Vec<_>>().join(".") + ".";
    let mut listens = Vec::new();
    let mut seeds = None;
    let mut host_ports = Vec::new();
    let mut nodes = 0;
    for (name, service) in services {
        let name = str_of(name, "service name");
        if service["image"].as_str() != Some("troupe:local") {
            continue;
        }
        let command: Vec<String> = service["command"]
            .as_sequence()
            .expect("command")
            .iter()
            .map(|v| str_of(v, "command word").to_string())
            .collect();
        let env = env_pairs(&service["environment"]);
        // The image's config file is the repository's cluster.toml.
        let config_at = command
            .iter()
            .position(|w| w == "--config")
            .expect("--config");
        assert_eq!(command[config_at + 1], "/etc/troupe/cluster.toml", "{name}");
        let mut flags: Vec<String> = command[1..].to_vec();
        flags.drain(config_at - 1..config_at + 1);
        match command[0].as_str() {
            "migrate" => {
                check_ok(name, &env, &flags);
                continue;
            }
            "serve" => {}
            other => panic!("{name}: unexpected command {other}"),
        }
        nodes += 1;
        check_ok(name, &env, &flags);
        let get = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let listen = get("TROUPE_CLUSTER__LISTEN").expect("cluster listen");
        let ip = str_of(
            &service["networks"]["troupe"]["ipv4_address"],
            "ipv4_address",
        );
        assert_eq!(
            listen,
            format!("{ip}:4700"),
            "{name}: peers connect to its own address"
        );
        assert!(ip.starts_with(&prefix), "{name}: {ip} outside {subnet}");
        listens.push(listen);
        let node_seeds = get("TROUPE_CLUSTER__SEEDS").expect("seeds");
        assert_eq!(
            *seeds.get_or_insert(node_seeds.clone()),
            node_seeds,
            "same seeds everywhere"
        );
        for port in service["ports"].as_sequence().expect("ports") {
            host_ports.push(str_of(port, "port").split(':').next().unwrap().to_string());
        }
        // Docker's default stop timeout (10 s) is under the worst-case handoff.
        let grace = str_of(&service["stop_grace_period"], "stop_grace_period");
        let secs: u64 = grace.trim_end_matches('s').parse().expect("seconds");
        assert!(
            secs >= 30,
            "{name}: stop_grace_period {grace} under the 25 s worst case"
        );
    }
    assert_eq!(nodes, 3);
    let mut seeds: Vec<String> = seeds.unwrap().split(',').map(str::to_string).collect();
    seeds.sort();
    listens.sort();
    assert_eq!(seeds, listens, "the seeds are the nodes' cluster listeners");
    host_ports.sort();
    host_ports.dedup();
    assert_eq!(host_ports.len(), 3, "one host port per node");
}

fn check_ok(name: &str, env: &[(String, String)], flags: &[String]) {
    let file = repo().join("cluster.toml");
    if let Err(e) = config_check(&file, env, flags) {
        panic!("{name} would not start: {e}");
    }
}

/// The StatefulSet's pods: the ConfigMap's cluster.toml, the container's
/// environment with the Downward API and Secrets filled in, and the
/// variables Kubernetes itself injects for Services named like troupe's.
#[test]
fn kubernetes_pods_start_with_their_configuration() {
    let dir = repo().join("deploy/k8s");
    let configmap = yaml(&dir.join("configmap.yaml"));
    let toml = str_of(&configmap["data"]["cluster.toml"], "cluster.toml");
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("cluster.toml");
    std::fs::write(&file, toml).expect("write cluster.toml");

    let set = yaml(&dir.join("statefulset.yaml"));
    let container = &set["spec"]["template"]["spec"]["containers"][0];
    let replicas = set["spec"]["replicas"].as_u64().expect("replicas");
    for pod in 0..replicas {
        let pod_name = format!("troupe-{pod}");
        let pod_ip = format!("10.1.0.{}", 10 + pod);
        let mut env: Vec<(String, String)> = Vec::new();
        for var in container["env"].as_sequence().expect("env") {
            let key = str_of(&var["name"], "env name").to_string();
            let value = if let Some(v) = var["value"].as_str() {
                v.replace("$(POD_NAME)", &pod_name)
                    .replace("$(POD_IP)", &pod_ip)
            } else if let Some(field) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                match field {
                    "metadata.name" => pod_name.clone(),
                    "status.podIP" => pod_ip.clone(),
                    other => panic!("unexpected fieldRef {other}"),
                }
            } else {
                let secret = str_of(&var["valueFrom"]["secretKeyRef"]["key"], "secret key");
                match secret {
                    "database-url" => "postgres://troupe:pw@postgres:5432/troupe".to_string(),
                    "cluster-cookie" => "0123456789abcdef".to_string(),
                    "admin-token" => "fedcba9876543210".to_string(),
                    other => panic!("unexpected secret key {other}"),
                }
            };
            env.push((key, value));
        }
        // What the kubelet adds for the Services in this namespace.
        for (k, v) in [
            ("TROUPE_CHAT_SERVICE_HOST", "10.96.0.20"),
            ("TROUPE_CHAT_PORT", "tcp://10.96.0.20:80"),
            ("TROUPE_SERVICE_HOST", "10.96.0.21"),
            ("TROUPE_PORT_8080_TCP", "tcp://10.96.0.21:8080"),
        ] {
            env.push((k.to_string(), v.to_string()));
        }
        let out = config_check(&file, &env, &[])
            .unwrap_or_else(|e| panic!("{pod_name} would not start: {e}"));
        assert!(
            out.contains(&pod_name) && out.contains("clustered"),
            "{out}"
        );
    }

    // The seeds name every pod on the headless Service.
    let peers = yaml(&dir.join("service-peers.yaml"));
    let service = str_of(&peers["metadata"]["name"], "service name");
    assert_eq!(set["spec"]["serviceName"].as_str(), Some(service));
    for pod in 0..replicas {
        assert!(
            toml.contains(&format!("\"troupe-{pod}.{service}:4700\"")),
            "seed troupe-{pod}"
        );
    }
    // The stop window covers the worst-case handoff (~25 s) plus the preStop pause.
    let grace = set["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(grace >= 30, "terminationGracePeriodSeconds {grace}");
}

#[test]
fn config_check_refuses_what_serve_would_refuse() {
    let file = repo().join("cluster.toml");
    let env = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
    let e = config_check(&file, &env("TROUPE_LIMITS__MAX_BODY_CHARS", "lots"), &[]).unwrap_err();
    assert!(e.contains("limits.max_body_chars"), "{e}");
    let e = config_check(&file, &env("TROUPE_NODE__NAEM", "x"), &[]).unwrap_err();
    assert!(e.contains("naem"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
    let ok = config_check(&file, &env("TROUPE_SERVICE_HOST", "10.0.0.1"), &[]).expect("ignored");
    assert!(ok.starts_with("ok:"), "{ok}");
}

/// The Grafana dashboard queries only metrics that `/metrics` documents
/// (docs/metrics.md), so a renamed metric cannot leave a panel empty.
#[test]
fn the_grafana_dashboard_uses_documented_metrics() {
    let docs = std::fs::read_to_string(repo().join("docs/metrics.md")).expect("docs/metrics.md");
    let documented: Vec<String> = docs
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    let text = std::fs::read_to_string(repo().join("deploy/grafana/troupe-dashboard.json"))
        .expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "{} panels", panels.len());
    let mut used = 0;
    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            // Metric names in the query: identifiers starting troupe_ or process_.
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if !(word.starts_with("troupe_") || word.starts_with("process_")) {
                    continue;
                }
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| {
                        word.strip_suffix(s)
                            .filter(|f| documented.iter().any(|d| d == f))
                    })
                    .unwrap_or(word);
                assert!(
                    documented.iter().any(|d| d == family),
                    "panel {:?} queries {word}, which docs/metrics.md does not document",
                    panel["title"]
                );
                used += 1;
            }
        }
    }
    assert!(used >= 15, "{used} metric references");
}
