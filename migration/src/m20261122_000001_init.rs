use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Username,
    PasswordHash,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Rooms {
    Table,
    Name,
    Private,
    CreatedBy,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Memberships {
    Table,
    Room,
    Username,
    ReadSeq,
    JoinedAt,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    Room,
    Seq,
    Sender,
    ClientId,
    Body,
    Ts,
}

#[derive(DeriveIden)]
enum LogRecords {
    Table,
    Position,
    Room,
    Seq,
    Epoch,
    Sender,
    ClientId,
    Body,
    Ts,
}

#[derive(DeriveIden)]
enum Checkpoints {
    Table,
    Room,
    Epoch,
    LastSeq,
    LogPosition,
    HistorySeq,
    UpdatedAt,
}

fn text(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).string().not_null().to_owned()
}

fn int(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).big_integer().not_null().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Users::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(text(Users::Username).unique_key().to_owned())
                    .col(text(Users::PasswordHash))
                    .col(int(Users::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Rooms::Table)
                    .if_not_exists()
                    .col(text(Rooms::Name).primary_key().to_owned())
                    .col(ColumnDef::new(Rooms::Private).boolean().not_null())
                    .col(text(Rooms::CreatedBy))
                    .col(int(Rooms::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Memberships::Table)
                    .if_not_exists()
                    .col(text(Memberships::Room))
                    .col(text(Memberships::Username))
                    .col(int(Memberships::ReadSeq))
                    .col(int(Memberships::JoinedAt))
                    .primary_key(
                        Index::create()
                            .col(Memberships::Room)
                            .col(Memberships::Username),
                    )
                    .to_owned(),
            )
            .await?;
        // "rooms of a user" looks memberships up by username.
        manager
            .create_index(
                Index::create()
                    .name("memberships_by_user")
                    .table(Memberships::Table)
                    .col(Memberships::Username)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Messages::Table)
                    .if_not_exists()
                    .col(text(Messages::Room))
                    .col(int(Messages::Seq))
                    .col(text(Messages::Sender))
                    .col(text(Messages::ClientId))
                    .col(ColumnDef::new(Messages::Body).text().not_null())
                    .col(int(Messages::Ts))
                    .primary_key(Index::create().col(Messages::Room).col(Messages::Seq))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LogRecords::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(LogRecords::Position)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(text(LogRecords::Room))
                    .col(int(LogRecords::Seq))
                    .col(int(LogRecords::Epoch))
                    .col(text(LogRecords::Sender))
                    .col(text(LogRecords::ClientId))
                    .col(ColumnDef::new(LogRecords::Body).text().not_null())
                    .col(int(LogRecords::Ts))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("log_records_by_room")
                    .table(LogRecords::Table)
                    .col(LogRecords::Room)
                    .col(LogRecords::Position)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Checkpoints::Table)
                    .if_not_exists()
                    .col(text(Checkpoints::Room).primary_key().to_owned())
                    .col(int(Checkpoints::Epoch))
                    .col(int(Checkpoints::LastSeq))
                    .col(int(Checkpoints::LogPosition))
                    .col(int(Checkpoints::HistorySeq))
                    .col(int(Checkpoints::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Checkpoints::Table.into_iden(),
            LogRecords::Table.into_iden(),
            Messages::Table.into_iden(),
            Memberships::Table.into_iden(),
            Rooms::Table.into_iden(),
            Users::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
