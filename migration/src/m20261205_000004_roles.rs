use sea_orm_migration::prelude::*;

/// Rooms that people run: each membership carries a role (`owner`, `admin`,
/// `member`; existing members become `member`, each room's creator its
/// `owner`), and a room has an optional topic.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Memberships {
    Table,
    Role,
}

#[derive(DeriveIden)]
enum Rooms {
    Table,
    Topic,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if !manager.has_column("memberships", "role").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(Memberships::Table)
                        .add_column(
                            ColumnDef::new(Memberships::Role)
                                .string()
                                .not_null()
                                .default("member"),
                        )
                        .to_owned(),
                )
                .await?;
        }
        if !manager.has_column("rooms", "topic").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(Rooms::Table)
                        .add_column(ColumnDef::new(Rooms::Topic).text().null())
                        .to_owned(),
                )
                .await?;
        }
        // Each room's creator owns it (DMs have no owner: both stay members).
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE memberships SET role = 'owner' WHERE EXISTS (SELECT 1 FROM rooms \
                 WHERE rooms.name = memberships.room AND rooms.created_by = memberships.username \
                 AND rooms.name NOT LIKE 'dm:%')",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Memberships::Table)
                    .drop_column(Memberships::Role)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Rooms::Table)
                    .drop_column(Rooms::Topic)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
