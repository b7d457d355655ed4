use sea_orm_migration::prelude::*;

/// The outbox of offline notifications (docs/notifications.md): one row per
/// (user, room, seq), so a message written to history twice (a retried
/// write, a replay after a restore) is notified once. The delivery workers
/// of every node claim due rows with a conditional update of
/// `claimed_by`/`claimed_until`, POST them and set `delivered_at`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Notifications {
    Table,
    User,
    Room,
    Seq,
    Body,
    CreatedAt,
    Attempts,
    NextAttemptAt,
    ClaimedBy,
    ClaimedUntil,
    DeliveredAt,
    GaveUpAt,
    LastError,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Notifications::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Notifications::User).string().not_null())
                    .col(ColumnDef::new(Notifications::Room).string().not_null())
                    .col(ColumnDef::new(Notifications::Seq).big_integer().not_null())
                    .col(ColumnDef::new(Notifications::Body).text().not_null())
                    .col(
                        ColumnDef::new(Notifications::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Notifications::Attempts)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(Notifications::NextAttemptAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Notifications::ClaimedBy).string().null())
                    .col(
                        ColumnDef::new(Notifications::ClaimedUntil)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(Notifications::DeliveredAt)
                            .big_integer()
                            .null(),
                    )
                    .col(ColumnDef::new(Notifications::GaveUpAt).big_integer().null())
                    .col(ColumnDef::new(Notifications::LastError).text().null())
                    .primary_key(
                        Index::create()
                            .col(Notifications::User)
                            .col(Notifications::Room)
                            .col(Notifications::Seq),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("notifications_due")
                    .table(Notifications::Table)
                    .col(Notifications::DeliveredAt)
                    .col(Notifications::NextAttemptAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(Notifications::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
