//! Usernames are unique regardless of case: `alice` and `ALICE` cannot both
//! exist. A unique index on `lower(username)` enforces it (an expression index:
//! SQLite and Postgres both have them, and both fold ASCII the same way, which
//! is all a username may hold).
//!
//! A database that already holds names differing only in case cannot take
//! the index; the migration then refuses with the names, and changes nothing:
//! which account to rename is the operator's decision, not ours.

use std::collections::BTreeMap;

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, Statement};

use crate::USERNAME_CASE_CONFLICT;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Groups listed in the refusal; the rest are counted.
const LISTED_GROUPS: usize = 20;

const INDEX: &str = "idx_users_username_lower";

/// The names that differ only in case, grouped, in a stable order.
async fn conflicts<C: ConnectionTrait>(db: &C) -> Result<Vec<Vec<String>>, DbErr> {
    let sql = "SELECT username FROM users WHERE lower(username) IN \
               (SELECT lower(username) FROM users GROUP BY lower(username) HAVING COUNT(*) > 1)";
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?;
    // Grouped and sorted here: an ORDER BY would follow the database's collation.
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in rows {
        let name: String = row.try_get("", "username")?;
        groups
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(name);
    }
    Ok(groups
        .into_values()
        .map(|mut group| {
            group.sort();
            group
        })
        .collect())
}

/// The one-line refusal: which names, and what to do.
fn refusal(groups: &[Vec<String>]) -> DbErr {
    let mut listed: Vec<String> = groups
        .iter()
        .take(LISTED_GROUPS)
        .map(|g| g.join(", "))
        .collect();
    if groups.len() > LISTED_GROUPS {
        listed.push(format!("and {} more", groups.len() - LISTED_GROUPS));
    }
    DbErr::Migration(format!(
        "{USERNAME_CASE_CONFLICT}: {}; rename all but one of each before upgrading \
         (usernames are now unique regardless of case)",
        listed.join("; ")
    ))
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let groups = conflicts(db).await?;
        if !groups.is_empty() {
            return Err(refusal(&groups));
        }
        // Raw SQL: sea-query's index builder takes columns, not expressions.
        db.execute_unprepared(&format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {INDEX} ON users (lower(username))"
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(&format!("DROP INDEX IF EXISTS {INDEX}"))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_names_every_group_up_to_a_limit() {
        let groups = vec![
            vec!["ALICE".to_string(), "alice".to_string()],
            vec!["Bob".to_string(), "bob".to_string(), "BOB".to_string()],
        ];
        let DbErr::Migration(message) = refusal(&groups) else {
            panic!("not a migration error")
        };
        assert!(
            message.starts_with("usernames differ only in case: ALICE, alice; Bob, bob, BOB; "),
            "{message}"
        );
        let many: Vec<Vec<String>> = (0..25)
            .map(|i| vec![format!("u{i}"), format!("U{i}")])
            .collect();
        let DbErr::Migration(message) = refusal(&many) else {
            panic!("not a migration error")
        };
        assert!(message.contains("u19, U19; and 5 more;"), "{message}");
        assert!(!message.contains("u20"), "{message}");
    }
}
