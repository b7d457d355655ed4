//! Store adapters behind the traits of `troupe_actors::store`, and the
//! choice of them from the configuration.

pub mod sql;

use std::sync::Arc;

use anyhow::Context;
use troupe_actors::store::memory::MemoryEphemeral;
use troupe_actors::store::Stores;

use crate::config::{Config, LogKind};
use crate::db;

/// The stores a node runs on, and what `/ready` probes.
pub struct NodeStores {
    pub stores: Stores,
    pub sql: sql::SqlStore,
}

/// Connects and migrates; a store that cannot be reached is an error naming it.
pub async fn open(config: &Config) -> anyhow::Result<NodeStores> {
    let url = config.database_url();
    if config.database.url.is_none() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    }
    let conn = db::connect(&url).await?;
    db::migrate(&conn, &url).await?;
    let sql = sql::SqlStore::new(conn);
    let sql_arc = Arc::new(sql.clone());
    let log = match config.log.kind {
        LogKind::Database => sql_arc.clone(),
    };
    let stores = Stores {
        log,
        checkpoints: sql_arc.clone(),
        directory: sql_arc.clone(),
        history: sql_arc,
        ephemeral: Arc::new(MemoryEphemeral::default()),
    };
    Ok(NodeStores { stores, sql })
}
