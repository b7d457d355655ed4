//! troupe's schema migrations; the same code builds SQLite and Postgres.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_init;
mod m20261123_000001_room_leases;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_init::Migration),
            Box::new(m20261123_000001_room_leases::Migration),
        ]
    }
}
