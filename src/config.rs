//! Configuration through figment: built-in defaults < `--config FILE` (TOML,
//! the `cluster.toml` format) < `TROUPE_*` environment (nested with `__`) <
//! command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use troupe_actors::limits::Limits;
use troupe_actors::rate_limits::RateLimits;
use troupe_actors::room::RoomTuning;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP and WebSocket listener.
    pub listen: SocketAddr,
    /// Where the embedded default keeps its SQLite file.
    pub data_dir: PathBuf,
    pub node: NodeSection,
    pub database: DatabaseSection,
    pub log: LogSection,
    pub kafka: KafkaSection,
    pub redis: RedisSection,
    pub auth: AuthSection,
    pub admin: AdminSection,
    pub limits: Limits,
    pub rate_limits: RateLimits,
    pub rooms: RoomsSection,
    pub session: SessionSection,
    pub cluster: ClusterSection,
    pub http: HttpSection,
    /// `TROUPE_*` variables that name no section or key of troupe's (such as
    /// the `TROUPE_SERVICE_HOST` Kubernetes injects for a Service named
    /// `troupe`): ignored, and logged once at start.
    #[serde(skip)]
    pub ignored_env: Vec<String>,
    /// Where each key's value came from (`default`, `file PATH`, `env
    /// TROUPE_...`, `flag`), for `troupe config show`.
    #[serde(skip)]
    pub sources: std::collections::BTreeMap<String, String>,
    pub attachments: AttachmentsSection,
    pub notifications: NotificationsSection,
}

/// The cluster: unset `listen` = a node on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// The ractor_cluster listener, `ip:port`; peers connect to exactly this
    /// address, so it must be one they can reach (not 0.0.0.0).
    pub listen: Option<SocketAddr>,
    /// Nodes to join through, `host:port`; a TOML array or `a:4700,b:4700`.
    #[serde(deserialize_with = "list_or_commas")]
    pub seeds: Vec<String>,
    /// The shared secret of the cluster (a secret: environment or `cookie_file`).
    pub cookie: Option<String>,
    /// A file holding the cookie (its first line).
    pub cookie_file: Option<PathBuf>,
    /// How often each peer is pinged.
    #[serde(deserialize_with = "millis")]
    pub heartbeat_ms: u64,
    /// A peer silent for this long is out of the view (its rooms move).
    #[serde(deserialize_with = "millis")]
    pub deadline_ms: u64,
    /// A peer gone for this long no longer counts towards the majority.
    #[serde(deserialize_with = "seconds")]
    pub forget_after_s: u64,
    /// With no seed answering for this long, the node serves alone.
    #[serde(deserialize_with = "millis")]
    pub join_timeout_ms: u64,
}

impl Default for ClusterSection {
    fn default() -> Self {
        Self {
            listen: None,
            seeds: Vec::new(),
            cookie: None,
            cookie_file: None,
            heartbeat_ms: 500,
            deadline_ms: 2_000,
            forget_after_s: 30,
            join_timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSection {
    /// `sqlite://...` or `postgres://...`; default: a SQLite file in `data_dir`.
    pub url: Option<String>,
    /// SQLite only: `full` (fsync per commit, an ack survives power loss) or
    /// `normal` (an ack survives a killed process, not a machine crash).
    pub sqlite_synchronous: crate::db::SqliteDurability,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogKind {
    /// The message log lives in the database (the embedded default).
    #[default]
    Database,
    /// The message log is a Kafka topic (`[kafka]`).
    Kafka,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    pub kind: LogKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSection {
    /// Bootstrap brokers, `host:port`; a TOML array or, from the environment,
    /// a comma-separated list.
    #[serde(deserialize_with = "list_or_commas")]
    pub brokers: Vec<String>,
    pub topic: String,
    /// Domain events for other services (docs/events.md), keyed by room or user.
    pub events_topic: String,
    /// Fixed at the topic's creation: partition = hash(room) % partitions.
    pub partitions: i32,
    /// Replicas of each partition when troupe creates the topic; with one
    /// broker 1, in production 3 (an ack then survives the loss of a broker).
    pub replication_factor: i16,
    /// How long a produce waits for more rooms' records to batch with.
    #[serde(deserialize_with = "millis")]
    pub linger_ms: u64,
    pub max_batch_bytes: usize,
    /// Every broker call gives up after this long (the room answers `unavailable`).
    #[serde(deserialize_with = "millis")]
    pub timeout_ms: u64,
}

impl Default for KafkaSection {
    fn default() -> Self {
        Self {
            brokers: Vec::new(),
            topic: "troupe-messages".into(),
            events_topic: "troupe-events".into(),
            partitions: 16,
            replication_factor: 1,
            linger_ms: 1,
            max_batch_bytes: 512 * 1024,
            timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSection {
    /// `redis://host:port/db`; unset = presence, tokens and rate limits in memory.
    pub url: Option<String>,
    /// Prefix of every key troupe writes.
    pub prefix: String,
    #[serde(deserialize_with = "millis")]
    pub timeout_ms: u64,
}

impl Default for RedisSection {
    fn default() -> Self {
        Self {
            url: None,
            prefix: "troupe:".into(),
            timeout_ms: 2_000,
        }
    }
}

/// A duration in milliseconds: an integer (`300`, in the key's unit) or a
/// human string (`"300ms"`, `"2s"`, `"1h 30m"`).
fn millis<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    duration(d, Duration::from_millis(1))
}

/// A duration in seconds: an integer, or a human string (`"24h"`); a string
/// must be a whole number of seconds.
fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    duration(d, Duration::from_secs(1))
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D, unit: Duration) -> Result<u64, D::Error> {
    use serde::de::Error;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum IntOrHuman {
        Int(u64),
        Human(String),
    }
    match IntOrHuman::deserialize(d)? {
        IntOrHuman::Int(n) => Ok(n),
        IntOrHuman::Human(text) => {
            let d = humantime::parse_duration(text.trim()).map_err(|e| {
                D::Error::custom(format!(
                    "{text:?} is not a duration ({e}): use e.g. \"300ms\", \"10s\", \"24h\""
                ))
            })?;
            if d.as_nanos() % unit.as_nanos() != 0 {
                return Err(D::Error::custom(format!(
                    "{text:?} is not a whole number of {}",
                    if unit.as_secs() == 1 {
                        "seconds"
                    } else {
                        "milliseconds"
                    }
                )));
            }
            u64::try_from(d.as_nanos() / unit.as_nanos())
                .map_err(|_| D::Error::custom(format!("{text:?} is too long")))
        }
    }
}

/// A list from TOML (an array) or from the environment (`a:1,b:2`).
fn list_or_commas<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        One(String),
    }
    Ok(match ListOrString::deserialize(d)? {
        ListOrString::List(list) => list,
        ListOrString::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Lifetime of login tokens and resume tokens.
    #[serde(deserialize_with = "seconds")]
    pub token_ttl_secs: u64,
    /// scrypt cost: N = 2^log_n (r = 8, p = 1). 15 = 32 MiB and ~0.1 s a hash.
    pub scrypt_log_n: u8,
    /// Password hashes computed at once; more wait their turn.
    pub max_concurrent_hashes: usize,
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            token_ttl_secs: 24 * 3600,
            scrypt_log_n: 15,
            max_concurrent_hashes: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSection {
    /// Bearer token of the admin endpoints (a secret: set it from the environment).
    pub token: Option<String>,
    /// Users with admin rights in chat (e.g. `broadcast` when limited to admins).
    pub users: Vec<String>,
    /// How long `/admin/actors` waits for each other node's answer.
    #[serde(deserialize_with = "millis")]
    pub deadline_ms: u64,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            token: None,
            users: Vec::new(),
            deadline_ms: 2000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsSection {
    pub checkpoint_every: u64,
    #[serde(deserialize_with = "millis")]
    pub checkpoint_interval_ms: u64,
    pub recent: usize,
    pub max_batch: usize,
    #[serde(deserialize_with = "seconds")]
    pub idle_stop_secs: u64,
    pub restore_concurrency: usize,
}

impl Default for RoomsSection {
    fn default() -> Self {
        let t = RoomTuning::default();
        Self {
            checkpoint_every: t.checkpoint_every,
            checkpoint_interval_ms: t.checkpoint_interval.as_millis() as u64,
            recent: t.recent,
            max_batch: t.max_batch,
            idle_stop_secs: t.idle_stop.as_secs(),
            restore_concurrency: t.restore_concurrency,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSection {
    /// Deprecated and ignored: a session waits for the connection's first
    /// frame (or `?live=1`), not for a timer. Still accepted so that older
    /// configuration files load; a value set here is warned about at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_grace_ms: Option<u64>,
}

/// The HTTP layer: timeouts and caps that a normal client never reaches,
/// and which browser pages may open a WebSocket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// A connection must send a request's whole header within this time,
    /// counted from its opening or from the end of its previous response:
    /// it also bounds silent connections and idle keep-alive ones.
    #[serde(deserialize_with = "millis")]
    pub header_timeout_ms: u64,
    /// A request's whole body must arrive within this time (answer 408).
    #[serde(deserialize_with = "millis")]
    pub body_timeout_ms: u64,
    /// A REST answer must be ready within this time once its body is in
    /// (answer 503): a store that hangs never holds a request forever.
    #[serde(deserialize_with = "millis")]
    pub request_timeout_ms: u64,
    /// Open TCP connections (HTTP and WebSocket) on this node; 0 = no cap.
    pub max_connections: usize,
    /// Open TCP connections from one IP address; 0 = no cap.
    pub max_connections_per_address: usize,
    /// WebSocket sessions of one user on this node; 0 = no cap.
    pub max_sessions_per_user: usize,
    /// A WebSocket that has no session after this long is closed (1008).
    #[serde(deserialize_with = "millis")]
    pub ws_auth_timeout_ms: u64,
    /// Origins allowed to open `/ws` (`https://chat.example.com`, or `*`);
    /// empty = all. A request without `Origin` is always allowed.
    #[serde(deserialize_with = "list_or_commas")]
    pub allowed_origins: Vec<String>,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            request_timeout_ms: 30_000,
            max_connections: 100_000,
            max_connections_per_address: 1_000,
            max_sessions_per_user: 32,
            ws_auth_timeout_ms: 60_000,
            allowed_origins: Vec::new(),
        }
    }
}

impl HttpSection {
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }

    pub fn ws_auth_timeout(&self) -> Duration {
        Duration::from_millis(self.ws_auth_timeout_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad =
            |key: &str, why: &str| Err(ConfigError(format!("invalid config key {key}: {why}")));
        for (key, ms) in [
            ("http.header_timeout_ms", self.header_timeout_ms),
            ("http.body_timeout_ms", self.body_timeout_ms),
            ("http.request_timeout_ms", self.request_timeout_ms),
            ("http.ws_auth_timeout_ms", self.ws_auth_timeout_ms),
        ] {
            if !(100..=3_600_000).contains(&ms) {
                return bad(key, "must be between 100 and 3600000 (ms)");
            }
        }
        if let Some(origin) = self
            .allowed_origins
            .iter()
            .find(|o| !crate::gateway::origin::is_valid_entry(o))
        {
            return Err(ConfigError(format!(
                "invalid config key http.allowed_origins: {origin:?} is not an origin \
                 (scheme://host[:port], no path) or *"
            )));
        }
        Ok(())
    }
}

/// Where uploaded files go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachmentStoreKind {
    /// Files under `attachments.dir` (default `data_dir/attachments`): one node only.
    #[default]
    Local,
    /// An S3-compatible object store (`[attachments.s3]`): what a cluster needs.
    S3,
}

/// Offline notifications by webhook (docs/notifications.md): unset
/// `webhook_url` = none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsSection {
    /// Where each notification is POSTed (`https://...`).
    pub webhook_url: Option<String>,
    /// Key of the HMAC-SHA256 of each body, sent as
    /// `X-Troupe-Signature: sha256=<hex>` (a secret: set it from the
    /// environment); required with `webhook_url`.
    pub secret: Option<String>,
    /// One POST must be answered within this time.
    #[serde(deserialize_with = "millis")]
    pub timeout_ms: u64,
    /// Attempts at most per notification, then it is given up.
    pub max_attempts: u32,
    /// Wait before the first retry; doubles per attempt up to `max_backoff_ms`.
    #[serde(deserialize_with = "millis")]
    pub backoff_ms: u64,
    #[serde(deserialize_with = "millis")]
    pub max_backoff_ms: u64,
    /// How often a node looks for due notifications (it also looks at once
    /// when it adds one).
    #[serde(deserialize_with = "millis")]
    pub poll_ms: u64,
}

impl Default for NotificationsSection {
    fn default() -> Self {
        Self {
            webhook_url: None,
            secret: None,
            timeout_ms: 5_000,
            max_attempts: 10,
            backoff_ms: 1_000,
            max_backoff_ms: 300_000,
            poll_ms: 1_000,
        }
    }
}

impl NotificationsSection {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad =
            |key: &str, why: &str| Err(ConfigError(format!("invalid config key {key}: {why}")));
        let Some(url) = &self.webhook_url else {
            return Ok(());
        };
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || reqwest::Url::parse(url).is_err()
        {
            return bad(
                "notifications.webhook_url",
                "must be an http:// or https:// URL",
            );
        }
        if self.secret.as_deref().unwrap_or("").is_empty() {
            return bad(
                "notifications.secret",
                "required when notifications.webhook_url is set (it signs each POST)",
            );
        }
        if !(100..=600_000).contains(&self.timeout_ms) {
            return bad(
                "notifications.timeout_ms",
                "must be between 100 and 600000 (ms)",
            );
        }
        if self.max_attempts == 0 {
            return bad("notifications.max_attempts", "must be at least 1");
        }
        if self.backoff_ms == 0 || self.max_backoff_ms < self.backoff_ms {
            return bad(
                "notifications.backoff_ms",
                "must be at least 1 and at most notifications.max_backoff_ms",
            );
        }
        if !(10..=60_000).contains(&self.poll_ms) {
            return bad("notifications.poll_ms", "must be between 10 and 60000 (ms)");
        }
        Ok(())
    }
}

/// File uploads (`POST /api/v1/rooms/{room}/attachments`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttachmentsSection {
    pub store: AttachmentStoreKind,
    /// The local store's directory; unset = `data_dir/attachments`.
    pub dir: Option<PathBuf>,
    /// The largest file accepted (413 above).
    pub max_bytes: u64,
    /// Content types accepted (415 otherwise): `type/subtype` or `type/*`;
    /// a TOML array or, from the environment, a comma-separated list.
    #[serde(deserialize_with = "list_or_commas")]
    pub allowed_types: Vec<String>,
    /// An upload's whole body must arrive within this time (408 otherwise).
    #[serde(deserialize_with = "millis")]
    pub upload_timeout_ms: u64,
    pub s3: S3Section,
}

impl Default for AttachmentsSection {
    fn default() -> Self {
        Self {
            store: AttachmentStoreKind::Local,
            dir: None,
            max_bytes: 25 * 1024 * 1024,
            allowed_types: [
                "image/png",
                "image/jpeg",
                "image/gif",
                "image/webp",
                "image/avif",
                "application/pdf",
                "text/plain",
                "application/zip",
                "audio/mpeg",
                "audio/ogg",
                "audio/wav",
                "audio/webm",
                "audio/mp4",
                "video/mp4",
                "video/webm",
                "video/ogg",
                "video/quicktime",
            ]
            .map(String::from)
            .to_vec(),
            upload_timeout_ms: 300_000,
            s3: S3Section::default(),
        }
    }
}

/// An S3-compatible object store (AWS S3, MinIO, Ceph, R2, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Section {
    /// `https://host:port`; unset = AWS S3 of `region`.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    /// Credentials (secrets: set them from the environment).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Allow an `http://` endpoint (tests, a store on the same host).
    pub allow_http: bool,
    /// Prefix of every object key troupe writes.
    pub prefix: String,
}

impl Default for S3Section {
    fn default() -> Self {
        Self {
            endpoint: None,
            bucket: String::new(),
            region: "us-east-1".into(),
            access_key_id: None,
            secret_access_key: None,
            allow_http: false,
            prefix: "attachments/".into(),
        }
    }
}

impl AttachmentsSection {
    pub fn upload_timeout(&self) -> Duration {
        Duration::from_millis(self.upload_timeout_ms)
    }

    /// The local store's directory.
    pub fn local_dir(&self, data_dir: &Path) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| data_dir.join("attachments"))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad =
            |key: &str, why: &str| Err(ConfigError(format!("invalid config key {key}: {why}")));
        if self.max_bytes == 0 {
            return bad("attachments.max_bytes", "must be at least 1");
        }
        if !(1_000..=86_400_000).contains(&self.upload_timeout_ms) {
            return bad(
                "attachments.upload_timeout_ms",
                "must be between 1000 and 86400000 (ms)",
            );
        }
        if let Some(t) = self
            .allowed_types
            .iter()
            .find(|t| !crate::attachments::is_valid_type_pattern(t))
        {
            return Err(ConfigError(format!(
                "invalid config key attachments.allowed_types: {t:?} is not type/subtype or type/*"
            )));
        }
        if self.store == AttachmentStoreKind::S3 {
            let s3 = &self.s3;
            if s3.bucket.is_empty() {
                return bad(
                    "attachments.s3.bucket",
                    "attachments.store = \"s3\" needs a bucket",
                );
            }
            if s3.access_key_id.is_some() != s3.secret_access_key.is_some() {
                return bad(
                    "attachments.s3.secret_access_key",
                    "set both access_key_id and secret_access_key, or neither",
                );
            }
            if let Some(endpoint) = &s3.endpoint {
                if endpoint.starts_with("http://") && !s3.allow_http {
                    return bad(
                        "attachments.s3.endpoint",
                        "an http:// endpoint needs attachments.s3.allow_http = true",
                    );
                }
                if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                    return bad(
                        "attachments.s3.endpoint",
                        "must start with https:// (or http://)",
                    );
                }
            }
        }
        Ok(())
    }
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            name: "troupe-1".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("a valid default address"),
            data_dir: PathBuf::from("./troupe-data"),
            node: NodeSection::default(),
            database: DatabaseSection::default(),
            log: LogSection::default(),
            kafka: KafkaSection::default(),
            redis: RedisSection::default(),
            auth: AuthSection::default(),
            admin: AdminSection::default(),
            limits: Limits::default(),
            rate_limits: RateLimits::default(),
            rooms: RoomsSection::default(),
            session: SessionSection::default(),
            cluster: ClusterSection::default(),
            http: HttpSection::default(),
            ignored_env: Vec::new(),
            sources: Default::default(),
            attachments: AttachmentsSection::default(),
            notifications: NotificationsSection::default(),
        }
    }
}

/// Command-line values that override everything else.
#[derive(Debug, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub node_name: Option<String>,
    pub cluster_listen: Option<String>,
    /// `troupe join --seed`: replaces `cluster.seeds`.
    pub seeds: Option<Vec<String>>,
}

/// A configuration problem, in one line naming the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl Config {
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        // Only variables under a top-level key of troupe's are read (and
        // validated: a typo inside a known section still stops the node);
        // the others belong to someone else, e.g. Kubernetes' service links.
        let known = top_level_keys();
        let ignored: Vec<String> = Env::prefixed("TROUPE_")
            .iter()
            .map(|(key, _)| key.as_str().to_string())
            .filter(|key| !known.contains(&env_section(key)))
            .map(|key| format!("TROUPE_{}", key.to_ascii_uppercase()))
            .collect();
        let env = Env::prefixed("TROUPE_")
            .filter(move |key| known.contains(&env_section(key.as_str())))
            .split("__");
        // Each source alone too, to tell `troupe config show` where a value came from.
        let env_only = Figment::from(env.clone());
        let file_only = file.map(|f| (f.to_path_buf(), Figment::from(Toml::file(f))));
        figment = figment.merge(env);
        let mut flags = Figment::new();
        if let Some(listen) = overrides.listen {
            flags = flags.merge(("listen", listen));
        }
        if let Some(dir) = overrides.data_dir {
            flags = flags.merge(("data_dir", dir));
        }
        if let Some(name) = overrides.node_name {
            flags = flags.merge(("node.name", name));
        }
        if let Some(listen) = overrides.cluster_listen {
            flags = flags.merge(("cluster.listen", listen));
        }
        if let Some(seeds) = overrides.seeds {
            flags = flags.merge(("cluster.seeds", seeds));
        }
        let flags_only = flags.clone();
        figment = figment.merge(flags);
        let config: Config = figment.extract().map_err(|e| {
            let e = e.into_iter().next().map(one_line).unwrap_or_default();
            ConfigError(e)
        })?;
        let mut config = config;
        config.ignored_env = ignored;
        config.sources = leaf_keys(&config)
            .into_iter()
            .map(|key| {
                let source = if flags_only.find_value(&key).is_ok() {
                    "flag".to_string()
                } else if env_only.find_value(&key).is_ok() {
                    format!("env TROUPE_{}", key.replace('.', "__").to_ascii_uppercase())
                } else if let Some((path, _)) = file_only
                    .as_ref()
                    .filter(|(_, f)| f.find_value(&key).is_ok())
                {
                    format!("file {}", path.display())
                } else {
                    "default".to_string()
                };
                (key, source)
            })
            .collect();
        if let Some(file) = &config.cluster.cookie_file {
            let text = std::fs::read_to_string(file).map_err(|e| {
                ConfigError(format!(
                    "invalid config key cluster.cookie_file: cannot read {}: {e}",
                    file.display()
                ))
            })?;
            config.cluster.cookie = text.lines().next().map(|l| l.trim().to_string());
        }
        // `TROUPE_ADMIN__TOKEN=` (empty, as a compose file passes an unset
        // variable) means no token: the admin endpoints are off.
        if config.admin.token.as_deref() == Some("") {
            config.admin.token = None;
        }
        config.validate()?;
        Ok(config)
    }

    /// The configuration as TOML with every secret replaced by `<redacted>`
    /// (`troupe config show`).
    /// One `key = value  # source` line per key, sorted; secrets redacted.
    pub fn show(&self) -> Result<String, ConfigError> {
        let mut value = toml::Value::try_from(self)
            .map_err(|e| ConfigError(format!("cannot render the configuration: {e}")))?;
        redact_secrets(&mut value);
        let mut leaves = Vec::new();
        flatten("", &value, &mut leaves);
        let mut out = String::new();
        for (key, value) in leaves {
            let source = self.sources.get(&key).map_or("default", String::as_str);
            out.push_str(&format!("{key} = {value}  # {source}\n"));
        }
        Ok(out)
    }

    /// Part of a cluster?
    pub fn clustered(&self) -> bool {
        self.cluster.listen.is_some()
    }

    /// The mesh settings of a clustered node.
    pub fn mesh(&self) -> Option<troupe_actors::cluster::mesh::MeshConfig> {
        let c = &self.cluster;
        Some(troupe_actors::cluster::mesh::MeshConfig {
            node: self.node.name.clone(),
            listen: c.listen?,
            seeds: c.seeds.clone(),
            cookie: c.cookie.clone().unwrap_or_default(),
            heartbeat: Duration::from_millis(c.heartbeat_ms),
            deadline: Duration::from_millis(c.deadline_ms),
            forget_after: Duration::from_secs(c.forget_after_s),
            join_timeout: Duration::from_millis(c.join_timeout_ms),
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad =
            |key: &str, why: &str| Err(ConfigError(format!("invalid config key {key}: {why}")));
        if troupe_actors::limits::check_username(&self.node.name).is_err() {
            return bad("node.name", "must be 3-32 characters of a-z A-Z 0-9 _ . -");
        }
        let l = &self.limits;
        if l.max_frame_bytes < 1024 {
            return bad("limits.max_frame_bytes", "must be at least 1024");
        }
        if l.max_body_chars == 0 || l.max_body_chars * 4 + 512 > l.max_frame_bytes {
            return bad(
                "limits.max_body_chars",
                "must be at least 1 and fit a frame (4 bytes a character + 512)",
            );
        }
        if l.outbound_queue == 0 {
            return bad("limits.outbound_queue", "must be at least 1");
        }
        if l.outbound_queue_bytes < 64 * 1024 {
            return bad("limits.outbound_queue_bytes", "must be at least 65536");
        }
        if l.messages_per_second.is_nan() || l.messages_per_second <= 0.0 || l.message_burst == 0 {
            return bad(
                "limits.messages_per_second",
                "rate and burst must be positive",
            );
        }
        if l.logins_per_minute == 0 {
            return bad("limits.logins_per_minute", "must be at least 1");
        }
        if let Err((key, why)) = self.rate_limits.validate() {
            return bad(&key, why);
        }
        if !(10..=20).contains(&self.auth.scrypt_log_n) {
            return bad("auth.scrypt_log_n", "must be between 10 and 20");
        }
        if self.auth.token_ttl_secs == 0 {
            return bad("auth.token_ttl_secs", "must be at least 1");
        }
        if self.auth.max_concurrent_hashes == 0 {
            return bad("auth.max_concurrent_hashes", "must be at least 1");
        }
        if self.rooms.checkpoint_every == 0 || self.rooms.max_batch == 0 {
            return bad("rooms", "checkpoint_every and max_batch must be at least 1");
        }
        if self.rooms.restore_concurrency == 0 || self.rooms.restore_concurrency > 1024 {
            return bad("rooms.restore_concurrency", "must be between 1 and 1024");
        }
        if let Some(url) = &self.database.url {
            if !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
            {
                return bad("database.url", "must start with sqlite: or postgres://");
            }
        }
        if self.log.kind == LogKind::Kafka {
            if self.kafka.brokers.is_empty() {
                return bad(
                    "kafka.brokers",
                    "log.kind = \"kafka\" needs at least one broker",
                );
            }
            if !(1..=1024).contains(&self.kafka.partitions) {
                return bad("kafka.partitions", "must be between 1 and 1024");
            }
            if self.kafka.replication_factor < 1 {
                return bad("kafka.replication_factor", "must be at least 1");
            }
            if self.kafka.topic.is_empty() {
                return bad("kafka.topic", "must not be empty");
            }
        }
        if let Some(url) = &self.redis.url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return bad("redis.url", "must start with redis:// or rediss://");
            }
        }
        if self.admin.token.as_deref().is_some_and(|t| t.len() < 16) {
            return bad("admin.token", "must be at least 16 characters");
        }
        if !(100..=60_000).contains(&self.admin.deadline_ms) {
            return bad("admin.deadline_ms", "must be between 100 and 60000");
        }
        // Out of range is an error, never quietly raised to a minimum.
        for (key, ms, min) in [
            ("kafka.timeout_ms", self.kafka.timeout_ms, 100),
            ("redis.timeout_ms", self.redis.timeout_ms, 100),
            (
                "rooms.checkpoint_interval_ms",
                self.rooms.checkpoint_interval_ms,
                10,
            ),
        ] {
            if !(min..=3_600_000).contains(&ms) {
                return bad(key, &format!("must be between {min} and 3600000 (ms)"));
            }
        }
        self.http.validate()?;
        self.attachments.validate()?;
        self.notifications.validate()?;
        self.validate_cluster()
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let bad =
            |key: &str, why: &str| Err(ConfigError(format!("invalid config key {key}: {why}")));
        let c = &self.cluster;
        let Some(listen) = c.listen else {
            if !c.seeds.is_empty() {
                return bad(
                    "cluster.listen",
                    "seeds are set: a clustered node needs its own cluster listener",
                );
            }
            return Ok(());
        };
        if listen.ip().is_unspecified() {
            return bad(
                "cluster.listen",
                "peers connect to this address: give a reachable IP, not 0.0.0.0",
            );
        }
        if c.cookie.as_deref().is_none_or(|k| k.len() < 8) {
            return bad("cluster.cookie", "a clustered node needs a cookie of at least 8 characters (TROUPE_CLUSTER__COOKIE or cluster.cookie_file)");
        }
        let shared_db = self
            .database
            .url
            .as_deref()
            .is_some_and(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"));
        if !shared_db {
            return bad(
                "database.url",
                "a cluster shares one Postgres database: set a postgres:// URL",
            );
        }
        if self.log.kind != LogKind::Kafka {
            return bad(
                "log.kind",
                "a cluster shares one Kafka log: set log.kind = \"kafka\"",
            );
        }
        if self.redis.url.is_none() {
            return bad(
                "redis.url",
                "a cluster shares presence and tokens in Redis: set redis.url",
            );
        }
        if c.heartbeat_ms == 0 || c.deadline_ms < 2 * c.heartbeat_ms {
            return bad(
                "cluster.deadline_ms",
                "must be at least twice cluster.heartbeat_ms (and both positive)",
            );
        }
        if c.seeds
            .iter()
            .any(|s| s.parse::<SocketAddr>().is_err() && !s.contains(':'))
        {
            return bad("cluster.seeds", "each seed is host:port");
        }
        Ok(())
    }

    /// The database URL: configured, or the SQLite file in `data_dir`.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("troupe.db").display()
            ),
        }
    }

    pub fn kafka_settings(&self) -> crate::stores::kafka::KafkaSettings {
        crate::stores::kafka::KafkaSettings {
            brokers: self.kafka.brokers.clone(),
            topic: self.kafka.topic.clone(),
            partitions: self.kafka.partitions,
            replication_factor: self.kafka.replication_factor,
            linger: Duration::from_millis(self.kafka.linger_ms),
            max_batch_bytes: self.kafka.max_batch_bytes,
            timeout: Duration::from_millis(self.kafka.timeout_ms),
        }
    }

    pub fn token_ttl(&self) -> Duration {
        Duration::from_secs(self.auth.token_ttl_secs)
    }

    pub fn room_tuning(&self) -> RoomTuning {
        RoomTuning {
            checkpoint_every: self.rooms.checkpoint_every,
            checkpoint_interval: Duration::from_millis(self.rooms.checkpoint_interval_ms),
            recent: self.rooms.recent,
            max_batch: self.rooms.max_batch,
            idle_stop: Duration::from_secs(self.rooms.idle_stop_secs),
            restore_concurrency: self.rooms.restore_concurrency,
        }
    }
}

/// figment's error as one line that names the key and the source.
/// Every leaf of a rendered config as (dotted key, TOML value); arrays are leaves.
fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
    match value {
        toml::Value::Table(table) => {
            for (k, v) in table {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        leaf => out.push((prefix.to_string(), leaf.to_string())),
    }
}

/// The dotted keys of every value of `config`.
fn leaf_keys(config: &Config) -> Vec<String> {
    let mut leaves = Vec::new();
    if let Ok(value) = toml::Value::try_from(config) {
        flatten("", &value, &mut leaves);
    }
    leaves.into_iter().map(|(k, _)| k).collect()
}

/// Replaces secrets (passwords in URLs, cookie, tokens) in a rendered config.
fn redact_secrets(value: &mut toml::Value) {
    const SECRET_KEYS: [&str; 3] = ["cookie", "token", "secret"];
    if let toml::Value::Table(table) = value {
        for (key, v) in table.iter_mut() {
            match v {
                toml::Value::String(s) if SECRET_KEYS.iter().any(|k| key.contains(k)) => {
                    *s = "<redacted>".to_string();
                }
                toml::Value::String(s) if key == "url" || key.ends_with("_url") => {
                    *s = crate::db::redact(s)
                }
                _ => redact_secrets(v),
            }
        }
    }
}

/// The top-level keys of the configuration (`listen`, `database`, ...).
fn top_level_keys() -> Vec<String> {
    match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The top-level key a `TROUPE_` variable (prefix stripped) would set:
/// `database__url` -> `database`, `listen` -> `listen`.
fn env_section(key: &str) -> String {
    key.split("__").next().unwrap_or(key).to_ascii_lowercase()
}

fn one_line(e: figment::Error) -> String {
    let key = if e.path.is_empty() {
        String::new()
    } else {
        format!(" key {}", e.path.join("."))
    };
    let source = e
        .metadata
        .as_ref()
        .map(|m| format!(" (from {})", m.name))
        .unwrap_or_default();
    format!("invalid config{key}{source}: {}", e.kind)
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;

    #[test]
    fn flags_beat_environment_beat_file_beat_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("t.toml", "listen = \"127.0.0.1:9001\"\n[node]\nname = \"from-file\"\n[limits]\nmax_body_chars = 100\n")?;
            jail.set_env("TROUPE_NODE__NAME", "from-env");
            jail.set_env("TROUPE_ADMIN__TOKEN", "0123456789abcdef");
            let c = Config::load(Some(Path::new("t.toml")), Overrides::default()).unwrap();
            assert_eq!(c.listen.port(), 9001);
            assert_eq!(c.node.name, "from-env");
            assert_eq!(c.limits.max_body_chars, 100);
            assert_eq!(c.admin.token.as_deref(), Some("0123456789abcdef"));
            jail.set_env("TROUPE_KAFKA__BROKERS", "k1:9092, k2:9092");
            let c = Config::load(Some(Path::new("t.toml")), Overrides::default()).unwrap();
            assert_eq!(c.kafka.brokers, ["k1:9092", "k2:9092"]);

            let c = Config::load(
                Some(Path::new("t.toml")),
                Overrides {
                    node_name: Some("from-flag".into()),
                    ..Default::default()
                },
            )
            .unwrap();
            assert_eq!(c.node.name, "from-flag");
            Ok(())
        });
    }

    #[test]
    fn the_deprecated_resume_grace_still_loads() {
        figment::Jail::expect_with(|jail| {
            let c = Config::load(None, Overrides::default()).unwrap();
            assert_eq!(c.session.resume_grace_ms, None);
            jail.create_file("old.toml", "[session]\nresume_grace_ms = 300\n")?;
            let c = Config::load(Some(Path::new("old.toml")), Overrides::default()).unwrap();
            assert_eq!(c.session.resume_grace_ms, Some(300));
            jail.set_env("TROUPE_SESSION__RESUME_GRACE_MS", "0");
            let c = Config::load(None, Overrides::default()).unwrap();
            assert_eq!(c.session.resume_grace_ms, Some(0));
            Ok(())
        });
    }

    #[test]
    fn an_empty_admin_token_turns_the_admin_endpoints_off() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TROUPE_ADMIN__TOKEN", "");
            let c = Config::load(None, Overrides::default()).unwrap();
            assert_eq!(c.admin.token, None);
            jail.set_env("TROUPE_ADMIN__TOKEN", "short");
            let e = Config::load(None, Overrides::default()).unwrap_err();
            assert!(e.to_string().contains("admin.token"), "{e}");
            jail.set_env("TROUPE_ADMIN__TOKEN", "0123456789abcdef");
            jail.set_env("TROUPE_ADMIN__DEADLINE_MS", "5");
            let e = Config::load(None, Overrides::default()).unwrap_err();
            assert!(e.to_string().contains("admin.deadline_ms"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn rate_limits_come_from_toml_tables_and_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "r.toml",
                "[rate_limits]\nhistory = { per_second = 2.5, burst = 4 }\n",
            )?;
            jail.set_env("TROUPE_RATE_LIMITS__TYPING__BURST", "7");
            let c = Config::load(Some(Path::new("r.toml")), Overrides::default()).unwrap();
            assert_eq!(c.rate_limits.history.per_second, 2.5);
            assert_eq!(c.rate_limits.history.burst, 4);
            assert_eq!(c.rate_limits.typing.burst, 7);
            assert_eq!(c.rate_limits.who, RateLimits::default().who);
            jail.set_env("TROUPE_RATE_LIMITS__JOIN__PER_SECOND", "0");
            let e = Config::load(None, Overrides::default()).unwrap_err();
            assert!(e.to_string().contains("rate_limits.join"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn the_annotated_cluster_toml_holds_the_defaults_of_its_limits() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/cluster.toml");
        let file: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(path))
            .extract()
            .expect("cluster.toml parses");
        assert_eq!(file.rate_limits, RateLimits::default());
        assert_eq!(file.limits, Limits::default());
    }

    #[test]
    fn lists_come_from_toml_arrays() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "k.toml",
                "[log]\nkind = \"kafka\"\n[kafka]\nbrokers = [\"a:1\", \"b:2\"]\n",
            )?;
            let c = Config::load(Some(Path::new("k.toml")), Overrides::default()).unwrap();
            assert_eq!(c.kafka.brokers, ["a:1", "b:2"]);
            assert_eq!(c.log.kind, LogKind::Kafka);
            Ok(())
        });
    }

    #[test]
    fn kubernetes_service_variables_are_ignored_but_typos_in_a_section_are_not() {
        figment::Jail::expect_with(|jail| {
            // What Kubernetes injects for a Service named `troupe`.
            jail.set_env("TROUPE_SERVICE_HOST", "10.0.0.7");
            jail.set_env("TROUPE_SERVICE_PORT", "8080");
            jail.set_env("TROUPE_PORT", "tcp://10.0.0.7:8080");
            jail.set_env("TROUPE_PORT_8080_TCP_PROTO", "tcp");
            jail.set_env("TROUPE_NODE__NAME", "pod-0");
            let c = Config::load(None, Overrides::default()).expect("loads");
            assert_eq!(c.node.name, "pod-0");
            let mut ignored = c.ignored_env.clone();
            ignored.sort();
            assert_eq!(
                ignored,
                [
                    "TROUPE_PORT",
                    "TROUPE_PORT_8080_TCP_PROTO",
                    "TROUPE_SERVICE_HOST",
                    "TROUPE_SERVICE_PORT"
                ]
            );
            jail.set_env("TROUPE_NODE__NAEM", "typo");
            let e = Config::load(None, Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("naem"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn durations_are_integers_in_the_keys_unit_or_human_strings() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "d.toml",
                "[auth]\ntoken_ttl_secs = \"24h\"\n[http]\nheader_timeout_ms = \"2s\"\n\
                 [cluster]\nheartbeat_ms = 250\n",
            )?;
            jail.set_env("TROUPE_REDIS__TIMEOUT_MS", "1s 500ms");
            let c = Config::load(Some(Path::new("d.toml")), Overrides::default()).expect("loads");
            assert_eq!(c.auth.token_ttl_secs, 86_400);
            assert_eq!(c.http.header_timeout_ms, 2_000);
            assert_eq!(c.cluster.heartbeat_ms, 250);
            assert_eq!(c.redis.timeout_ms, 1_500);
            jail.set_env("TROUPE_REDIS__TIMEOUT_MS", "soon");
            let e = Config::load(None, Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("redis.timeout_ms") && e.contains("not a duration"),
                "{e}"
            );
            jail.set_env("TROUPE_REDIS__TIMEOUT_MS", "1500");
            jail.set_env("TROUPE_AUTH__TOKEN_TTL_SECS", "1500ms");
            let e = Config::load(None, Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("auth.token_ttl_secs") && e.contains("whole number"),
                "{e}"
            );
            Ok(())
        });
    }

    #[test]
    fn out_of_range_timeouts_are_errors_not_clamped() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TROUPE_REDIS__TIMEOUT_MS", "5");
            let e = Config::load(None, Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("redis.timeout_ms") && e.contains("between 100"),
                "{e}"
            );
            jail.set_env("TROUPE_REDIS__TIMEOUT_MS", "100");
            jail.set_env("TROUPE_ROOMS__CHECKPOINT_INTERVAL_MS", "0");
            let e = Config::load(None, Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("rooms.checkpoint_interval_ms"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn notifications_need_a_secret_with_a_webhook_and_show_hides_it() {
        figment::Jail::expect_with(|jail| {
            let c = Config::load(None, Overrides::default()).expect("loads");
            assert_eq!(c.notifications.webhook_url, None);
            jail.set_env(
                "TROUPE_NOTIFICATIONS__WEBHOOK_URL",
                "https://push.example/hook",
            );
            let e = Config::load(None, Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("notifications.secret"), "{e}");
            jail.set_env("TROUPE_NOTIFICATIONS__SECRET", "s3cr3t-webhook-key");
            jail.set_env("TROUPE_NOTIFICATIONS__TIMEOUT_MS", "2s");
            let c = Config::load(None, Overrides::default()).expect("loads");
            assert_eq!(c.notifications.timeout_ms, 2_000);
            let shown = c.show().expect("renders");
            assert!(
                !shown.contains("s3cr3t-webhook-key") && !shown.contains("hunter2"),
                "{shown}"
            );
            assert!(
                shown.contains("notifications.secret = \"<redacted>\""),
                "{shown}"
            );
            jail.set_env(
                "TROUPE_NOTIFICATIONS__WEBHOOK_URL",
                "ftp://push.example/hook",
            );
            let e = Config::load(None, Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("notifications.webhook_url"), "{e}");
            jail.set_env(
                "TROUPE_NOTIFICATIONS__WEBHOOK_URL",
                "https://push.example/hook",
            );
            jail.set_env("TROUPE_NOTIFICATIONS__MAX_ATTEMPTS", "0");
            let e = Config::load(None, Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("notifications.max_attempts"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn show_names_each_values_source_and_hides_secrets() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[limits]\nmax_body_chars = 1000\n")?;
            jail.set_env("TROUPE_REDIS__URL", "redis://:hunter2@127.0.0.1:6379");
            jail.set_env("TROUPE_ADMIN__TOKEN", "0123456789abcdef-secret");
            let c = Config::load(
                Some(Path::new("c.toml")),
                Overrides {
                    node_name: Some("from-flag".into()),
                    ..Overrides::default()
                },
            )
            .expect("loads");
            let shown = c.show().expect("renders");
            let line = |key: &str| {
                shown
                    .lines()
                    .find(|l| l.starts_with(&format!("{key} = ")))
                    .unwrap_or_else(|| panic!("{key} missing:\n{shown}"))
                    .to_string()
            };
            assert_eq!(
                line("limits.max_body_chars"),
                "limits.max_body_chars = 1000  # file c.toml"
            );
            assert_eq!(line("node.name"), "node.name = \"from-flag\"  # flag");
            assert!(
                line("redis.url").ends_with("# env TROUPE_REDIS__URL"),
                "{shown}"
            );
            assert!(line("listen").ends_with("# default"), "{shown}");
            assert!(
                !shown.contains("hunter2") && !shown.contains("-secret"),
                "{shown}"
            );
            Ok(())
        });
    }

    #[test]
    fn kafka_without_brokers_is_refused() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TROUPE_LOG__KIND", "kafka");
            let e = Config::load(None, Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("kafka.brokers"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_names_its_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TROUPE_LIMITS__MAX_BODY_CHARS", "lots");
            let e = Config::load(None, Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("limits.max_body_chars"), "{e}");
            assert!(!e.contains('\n'));
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("TROUPE_LISTEN", "nowhere");
            let e = Config::load(None, Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("listen"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn attachment_keys_are_checked() {
        figment::Jail::expect_with(|jail| {
            let c = Config::load(None, Overrides::default()).unwrap();
            assert_eq!(c.attachments.store, AttachmentStoreKind::Local);
            assert_eq!(c.attachments.max_bytes, 25 * 1024 * 1024);
            assert_eq!(
                c.attachments.local_dir(Path::new("/d")),
                Path::new("/d/attachments")
            );
            jail.set_env(
                "TROUPE_ATTACHMENTS__ALLOWED_TYPES",
                "image/*, application/pdf",
            );
            let c = Config::load(None, Overrides::default()).unwrap();
            assert_eq!(c.attachments.allowed_types, ["image/*", "application/pdf"]);
            jail.set_env("TROUPE_ATTACHMENTS__ALLOWED_TYPES", "image");
            let e = Config::load(None, Overrides::default()).unwrap_err();
            assert!(e.to_string().contains("attachments.allowed_types"), "{e}");
            jail.set_env("TROUPE_ATTACHMENTS__ALLOWED_TYPES", "text/plain");

            jail.set_env("TROUPE_ATTACHMENTS__STORE", "s3");
            let e = Config::load(None, Overrides::default()).unwrap_err();
            assert!(e.to_string().contains("attachments.s3.bucket"), "{e}");
            jail.set_env("TROUPE_ATTACHMENTS__S3__BUCKET", "files");
            jail.set_env("TROUPE_ATTACHMENTS__S3__ENDPOINT", "http://127.0.0.1:9000");
            let e = Config::load(None, Overrides::default()).unwrap_err();
            assert!(e.to_string().contains("allow_http"), "{e}");
            jail.set_env("TROUPE_ATTACHMENTS__S3__ALLOW_HTTP", "true");
            jail.set_env("TROUPE_ATTACHMENTS__S3__ACCESS_KEY_ID", "key");
            let e = Config::load(None, Overrides::default()).unwrap_err();
            assert!(e.to_string().contains("secret_access_key"), "{e}");
            jail.set_env("TROUPE_ATTACHMENTS__S3__SECRET_ACCESS_KEY", "secret");
            let c = Config::load(None, Overrides::default()).unwrap();
            assert_eq!(c.attachments.store, AttachmentStoreKind::S3);
            assert_eq!(c.attachments.s3.bucket, "files");
            Ok(())
        });
    }

    #[test]
    fn http_keys_are_checked() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "h.toml",
                "[http]\nallowed_origins = [\"https://chat.example.com\", \"*\"]\nmax_connections = 0\n",
            )?;
            let c = Config::load(Some(Path::new("h.toml")), Overrides::default()).unwrap();
            assert_eq!(c.http.allowed_origins, ["https://chat.example.com", "*"]);
            assert_eq!(c.http.max_connections, 0);
            assert_eq!(c.http.ws_auth_timeout(), Duration::from_secs(60));
            jail.set_env(
                "TROUPE_HTTP__ALLOWED_ORIGINS",
                "https://a.example, https://chat.example.com/",
            );
            let e = Config::load(None, Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("http.allowed_origins"), "{e}");
            assert!(e.contains("chat.example.com/"), "{e}");
            jail.set_env("TROUPE_HTTP__ALLOWED_ORIGINS", "");
            jail.set_env("TROUPE_HTTP__HEADER_TIMEOUT_MS", "0");
            let e = Config::load(None, Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("http.header_timeout_ms"), "{e}");
            Ok(())
        });
    }
}
