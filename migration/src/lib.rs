//! troupe's schema migrations; the same code builds SQLite and Postgres.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_init;
mod m20261123_000001_room_leases;
mod m20261124_000001_username_nocase;
mod m20261204_000002_search;
mod m20261204_000003_attachments;
mod m20261205_000001_message_life;
mod m20261205_000002_friends;
mod m20261205_000003_events;
mod m20261205_000004_roles;
mod m20261205_000005_notifications;

/// How the refusal of a database whose usernames differ only in case starts.
pub const USERNAME_CASE_CONFLICT: &str = "usernames differ only in case";

/// Whether a migration refused to run on the data it found (the operator
/// must act; retrying cannot help), as opposed to failing on the way.
/// The message is that of a `DbErr::Migration`.
pub fn is_refusal_message(message: &str) -> bool {
    message.starts_with(USERNAME_CASE_CONFLICT)
}

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_init::Migration),
            Box::new(m20261123_000001_room_leases::Migration),
            Box::new(m20261124_000001_username_nocase::Migration),
            Box::new(m20261204_000002_search::Migration),
            Box::new(m20261204_000003_attachments::Migration),
            Box::new(m20261205_000001_message_life::Migration),
            Box::new(m20261205_000002_friends::Migration),
            Box::new(m20261205_000003_events::Migration),
            Box::new(m20261205_000004_roles::Migration),
            Box::new(m20261205_000005_notifications::Migration),
        ]
    }
}
