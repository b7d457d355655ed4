use sea_orm_migration::prelude::*;

/// Room ownership leases for the cluster: who may write a room, under which
/// fencing epoch.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RoomLeases {
    Table,
    Room,
    Owner,
    Epoch,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RoomLeases::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(RoomLeases::Room)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(RoomLeases::Owner).string().null())
                    .col(ColumnDef::new(RoomLeases::Epoch).big_integer().not_null())
                    .col(
                        ColumnDef::new(RoomLeases::UpdatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(RoomLeases::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
