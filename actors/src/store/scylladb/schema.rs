//! The keyspace and its schema version: `otg-gateway migrate` creates and upgrades
//! them; a gateway refuses to start on an older version.

use super::errors::cql_error;
use crate::store::StoreError;
use otg_schema::cql::{added_column, latest_version, MIGRATIONS};
use scylla::client::session::Session;

/// How the keyspace is replicated, as the operator configured it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// `SimpleStrategy` with one replication factor: one data centre.
    Simple(u32),
    /// `NetworkTopologyStrategy`: a factor per data centre.
    PerDataCentre(Vec<(String, u32)>),
}

impl Replication {
    fn cql(&self) -> String {
        match self {
            Replication::Simple(factor) => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {factor}}}")
            }
            Replication::PerDataCentre(centres) => {
                let factors: Vec<String> = centres.iter().map(|(dc, factor)| format!("'{dc}': {factor}")).collect();
                format!("{{'class': 'NetworkTopologyStrategy', {}}}", factors.join(", "))
            }
        }
    }
}

/// Whether `name` can be a keyspace (unquoted): a letter, then at most 47 letters,
/// digits and underscores.
pub fn valid_keyspace(name: &str) -> bool {
    name.len() <= 48
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Creates the keyspace if absent and applies every schema version not yet applied, in
/// order; returns the versions it applied. Safe to run again (every statement is
/// `IF NOT EXISTS`, or adds a column only if absent); run it from one place at a time: on Cassandra before 5.1, two
/// `CREATE TABLE` of one table at once can leave the nodes disagreeing on its id.
pub async fn migrate(session: &Session, keyspace: &str, replication: &Replication) -> Result<Vec<i32>, StoreError> {
    check_keyspace(keyspace)?;
    let create = format!("CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {}", replication.cql());
    session.query_unpaged(create.as_str(), ()).await.map_err(|error| cql_error(&error, "create keyspace"))?;
    session.use_keyspace(keyspace, false).await.map_err(|error| StoreError::Unavailable(error.to_string()))?;
    // The table that records versions comes first, whatever version a keyspace is at.
    let bookkeeping =
        MIGRATIONS[0].statements().into_iter().find(|statement| statement.contains(" schema_migrations "));
    let bookkeeping = bookkeeping.expect("version 1 creates schema_migrations");
    session.query_unpaged(bookkeeping.as_str(), ()).await.map_err(|error| cql_error(&error, "schema_migrations"))?;
    let applied = applied_version(session, keyspace).await?;
    let mut done = Vec::new();
    for migration in MIGRATIONS.iter().filter(|migration| migration.version > applied) {
        for statement in migration.statements() {
            if let Some((table, column)) = added_column(&statement) {
                if column_exists(session, keyspace, table, column).await? {
                    continue;
                }
            }
            session.query_unpaged(statement.as_str(), ()).await.map_err(|error| cql_error(&error, &statement))?;
        }
        session
            .query_unpaged(
                format!(
                    "INSERT INTO {keyspace}.schema_migrations (version, name, applied_at) \
                     VALUES (?, ?, toTimestamp(now()))"
                ),
                (migration.version, migration.name),
            )
            .await
            .map_err(|error| cql_error(&error, "record the schema version"))?;
        done.push(migration.version);
    }
    session.await_schema_agreement().await.map_err(|error| StoreError::Unavailable(error.to_string()))?;
    Ok(done)
}

/// Refuses a keyspace whose schema is older than this build needs, naming the fix.
pub async fn check_version(session: &Session, keyspace: &str) -> Result<(), StoreError> {
    let applied = applied_version(session, keyspace).await.map_err(|error| match error {
        StoreError::Failed(_) => outdated(keyspace, 0),
        other => other,
    })?;
    if applied < latest_version() {
        return Err(outdated(keyspace, applied));
    }
    Ok(())
}

fn outdated(keyspace: &str, applied: i32) -> StoreError {
    StoreError::Failed(format!(
        "keyspace {keyspace} has schema version {applied}, this gateway needs {}: run `otg-gateway migrate` \
         (with the same store settings) first",
        latest_version()
    ))
}

pub(super) fn check_keyspace(keyspace: &str) -> Result<(), StoreError> {
    if valid_keyspace(keyspace) {
        Ok(())
    } else {
        Err(StoreError::Failed(format!(
            "keyspace {keyspace:?}: a letter, then at most 47 letters, digits and underscores"
        )))
    }
}

/// Whether `table` of `keyspace` has `column`, from the cluster's schema tables (which
/// name them as CQL does unquoted names: in lower case).
async fn column_exists(session: &Session, keyspace: &str, table: &str, column: &str) -> Result<bool, StoreError> {
    let (keyspace, table, column) = (keyspace.to_lowercase(), table.to_lowercase(), column.to_lowercase());
    let result = session
        .query_unpaged(
            "SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ? \
             AND column_name = ?",
            (keyspace, table, column),
        )
        .await
        .map_err(|error| cql_error(&error, "read the table's columns"))?;
    let rows = result.into_rows_result().map_err(|error| StoreError::Corrupt(error.to_string()))?;
    Ok(rows.rows_num() > 0)
}

/// The newest version applied to `keyspace`; 0 if none. A keyspace or table that does
/// not exist is an error that no retry cures (`Failed`).
async fn applied_version(session: &Session, keyspace: &str) -> Result<i32, StoreError> {
    let result = session
        .query_unpaged(format!("SELECT version FROM {keyspace}.schema_migrations"), ())
        .await
        .map_err(|error| cql_error(&error, "read the schema version"))?;
    let rows = result.into_rows_result().map_err(|error| StoreError::Corrupt(error.to_string()))?;
    let mut newest = 0;
    for row in rows.rows::<(i32,)>().map_err(|error| StoreError::Corrupt(error.to_string()))? {
        newest = newest.max(row.map_err(|error| StoreError::Corrupt(error.to_string()))?.0);
    }
    Ok(newest)
}
