use sea_orm_migration::prelude::*;

/// Friends and blocks. A friendship is one row per pair of users, stored
/// with the lower name first (`user_low < user_high`), so that a request
/// and its acceptance meet in the same row; `accepted_at` is null while it
/// is a request from `requested_by`. A block is one row per (blocker,
/// blocked) and also looked up from the blocked side.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Friendships {
    Table,
    UserLow,
    UserHigh,
    RequestedBy,
    CreatedAt,
    AcceptedAt,
}

#[derive(DeriveIden)]
enum Blocks {
    Table,
    Blocker,
    Blocked,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Friendships::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Friendships::UserLow).string().not_null())
                    .col(ColumnDef::new(Friendships::UserHigh).string().not_null())
                    .col(ColumnDef::new(Friendships::RequestedBy).string().not_null())
                    .col(
                        ColumnDef::new(Friendships::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Friendships::AcceptedAt).big_integer().null())
                    .primary_key(
                        Index::create()
                            .col(Friendships::UserLow)
                            .col(Friendships::UserHigh),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("friendships_user_high")
                    .table(Friendships::Table)
                    .col(Friendships::UserHigh)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Blocks::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Blocks::Blocker).string().not_null())
                    .col(ColumnDef::new(Blocks::Blocked).string().not_null())
                    .col(ColumnDef::new(Blocks::CreatedAt).big_integer().not_null())
                    .primary_key(Index::create().col(Blocks::Blocker).col(Blocks::Blocked))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("blocks_blocked")
                    .table(Blocks::Table)
                    .col(Blocks::Blocked)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Blocks::Table).if_exists().to_owned())
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(Friendships::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
