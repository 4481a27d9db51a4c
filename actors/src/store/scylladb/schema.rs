//! The keyspace and its schema version: `otg-gateway migrate` creates and upgrades
//! them; a gateway refuses to start on an older version.

use super::errors::cql_error;
use crate::store::StoreError;
use otg_schema::cql::{added_column, latest_version, MIGRATIONS};
use scylla::client::session::Session;
use scylla::statement::SerialConsistency;

/// How the keyspace is replicated, as the operator configured it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// `SimpleStrategy` with one replication factor: one data centre.
    Simple(u32),
    /// `NetworkTopologyStrategy`: a factor per data centre.
    PerDataCentre(Vec<(String, u32)>),
}

impl Replication {
    /// The replication a keyspace has, from its `replication` map in the cluster's
    /// schema tables; `None` for a strategy otg never creates (it is then not checked).
    fn of_keyspace(map: &std::collections::HashMap<String, String>) -> Option<Replication> {
        let factor = |text: &String| text.parse::<u32>().ok();
        let class = map.get("class")?;
        if class.ends_with("SimpleStrategy") {
            return Some(Replication::Simple(factor(map.get("replication_factor")?)?));
        }
        if !class.ends_with("NetworkTopologyStrategy") {
            return None;
        }
        let mut centres: Vec<(String, u32)> = map
            .iter()
            .filter(|(name, _)| name.as_str() != "class")
            .map(|(name, text)| Some((name.clone(), factor(text)?)))
            .collect::<Option<_>>()?;
        centres.sort();
        Some(Replication::PerDataCentre(centres))
    }

    /// The setting's own spelling (`scylla_replication`) of this replication.
    fn setting(&self) -> String {
        match self {
            Replication::Simple(factor) => format!("simple:{factor}"),
            Replication::PerDataCentre(centres) => {
                centres.iter().map(|(dc, factor)| format!("{dc}:{factor}")).collect::<Vec<_>>().join(",")
            }
        }
    }

    /// Refuses a replication the cluster cannot serve, or one whose conditional writes
    /// would not pick one winner, naming what would work instead. `nodes` is each
    /// known node's data centre (down nodes count: they come back).
    pub(super) fn check(
        &self,
        keyspace: &str,
        nodes: &[Option<String>],
        serial: SerialConsistency,
    ) -> Result<(), StoreError> {
        let refuse = |why: String| Err(StoreError::Failed(format!("keyspace {keyspace}: {why}")));
        match self {
            Replication::Simple(factor) if *factor as usize > nodes.len() => refuse(format!(
                "replication factor {factor} (scylla_replication = \"{}\") but the cluster has {} node(s), so a \
                 quorum of replicas can never answer; set scylla_replication = \"simple:{}\" (or add nodes; for a \
                 keyspace that exists, ALTER KEYSPACE it)",
                self.setting(),
                nodes.len(),
                nodes.len().max(1),
            )),
            Replication::Simple(_) => Ok(()),
            Replication::PerDataCentre(centres) => {
                for (centre, factor) in centres {
                    let there = nodes.iter().filter(|dc| dc.as_deref() == Some(centre.as_str())).count();
                    if *factor as usize > there {
                        return refuse(format!(
                            "replication factor {factor} in data centre {centre} (scylla_replication = \"{}\") but \
                             the cluster has {there} node(s) there; lower it to {there} or add nodes",
                            self.setting()
                        ));
                    }
                }
                let replicated = centres.iter().filter(|(_, factor)| *factor > 0).count();
                if replicated > 1 && serial == SerialConsistency::LocalSerial {
                    return refuse(format!(
                        "replicated to {replicated} data centres (scylla_replication = \"{}\"), and with \
                         scylla_consistency = \"local_quorum\" conditional writes run at LOCAL_SERIAL: each data \
                         centre would run its own Paxos round, and gateways in two of them could both claim one \
                         device; set scylla_consistency = \"quorum\" or \"each_quorum\" (conditional writes then \
                         run at SERIAL, across data centres)",
                        self.setting()
                    ));
                }
                Ok(())
            }
        }
    }

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
pub async fn migrate(
    session: &Session,
    keyspace: &str,
    replication: &Replication,
    serial: SerialConsistency,
) -> Result<Vec<i32>, StoreError> {
    check_keyspace(keyspace)?;
    // An existing keyspace keeps its own replication: that is what must work.
    let effective = keyspace_replication(session, keyspace).await?.unwrap_or_else(|| replication.clone());
    effective.check(keyspace, &node_centres(session), serial)?;
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
        if migration.version == WAITING_DEVICES_VERSION {
            fill_waiting_devices(session, keyspace).await?;
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

/// The version that adds `waiting_devices`, filled from `device_state` once.
const WAITING_DEVICES_VERSION: i32 = 5;

/// Lists every device whose progress says records wait behind a gap in
/// `waiting_devices`: the one full scan of `device_state`, by `migrate`, so that no
/// gateway ever scans it again. Run again (a migration cut short), it writes the same rows.
async fn fill_waiting_devices(session: &Session, keyspace: &str) -> Result<(), StoreError> {
    use futures_util::TryStreamExt;
    let scan = format!("SELECT device_id, waiting FROM {keyspace}.device_state");
    // Any failure here is worth running `migrate` again for: it writes the same rows.
    let failed = |error: &dyn std::fmt::Display| StoreError::Unavailable(format!("{scan}: {error}"));
    let pager = session.query_iter(scan.as_str(), ()).await.map_err(|error| failed(&error))?;
    let mut rows =
        pager.rows_stream::<(String, Option<bool>)>().map_err(|error| StoreError::Corrupt(error.to_string()))?;
    let insert = format!("INSERT INTO {keyspace}.waiting_devices (bucket, device_id) VALUES (?, ?)");
    while let Some((device_id, waiting)) = rows.try_next().await.map_err(|error| failed(&error))? {
        if waiting == Some(true) {
            let bucket = i32::from(crate::store::waiting_bucket(&device_id));
            session
                .query_unpaged(insert.as_str(), (bucket, device_id))
                .await
                .map_err(|error| cql_error(&error, &insert))?;
        }
    }
    Ok(())
}

/// Refuses a keyspace that the cluster cannot serve with `serial` (see
/// `Replication::check`); one of a strategy otg does not make is left to its operator.
pub async fn check_replication(session: &Session, keyspace: &str, serial: SerialConsistency) -> Result<(), StoreError> {
    match keyspace_replication(session, keyspace).await? {
        Some(replication) => replication.check(keyspace, &node_centres(session), serial),
        None => Ok(()),
    }
}

/// The data centre of every node the driver knows, up or down.
fn node_centres(session: &Session) -> Vec<Option<String>> {
    session.get_cluster_state().get_nodes_info().iter().map(|node| node.datacenter.clone()).collect()
}

/// The keyspace's replication, `None` if it does not exist (or uses a strategy otg
/// never makes).
async fn keyspace_replication(session: &Session, keyspace: &str) -> Result<Option<Replication>, StoreError> {
    let result = session
        .query_unpaged(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = ?",
            (keyspace.to_lowercase(),),
        )
        .await
        .map_err(|error| cql_error(&error, "read the keyspace's replication"))?;
    let rows = result.into_rows_result().map_err(|error| StoreError::Corrupt(error.to_string()))?;
    let Some((map,)) = rows
        .maybe_first_row::<(std::collections::HashMap<String, String>,)>()
        .map_err(|error| StoreError::Corrupt(error.to_string()))?
    else {
        return Ok(None);
    };
    Ok(Replication::of_keyspace(&map))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(replication: Replication, nodes: &[Option<&str>], serial: SerialConsistency) -> String {
        let nodes: Vec<Option<String>> = nodes.iter().map(|dc| dc.map(str::to_string)).collect();
        match replication.check("otg", &nodes, serial) {
            Err(StoreError::Failed(message)) => message,
            outcome => panic!("refused, not {outcome:?}"),
        }
    }

    #[test]
    fn a_replication_factor_above_the_nodes_names_the_one_that_works() {
        let one_node = [Some("dc1")];
        let message = refusal(Replication::Simple(3), &one_node, SerialConsistency::LocalSerial);
        assert!(message.contains("scylla_replication = \"simple:3\"") && message.contains("\"simple:1\""), "{message}");
        Replication::Simple(1).check("otg", &[Some("dc1".into())], SerialConsistency::LocalSerial).unwrap();
        let per_centre = Replication::PerDataCentre(vec![("dc1".into(), 3)]);
        let message = refusal(per_centre, &[Some("dc1"), Some("dc2"), Some("dc2")], SerialConsistency::Serial);
        assert!(message.contains("data centre dc1") && message.contains("lower it to 1"), "{message}");
    }

    #[test]
    fn local_serial_is_refused_where_several_data_centres_replicate() {
        let two = Replication::PerDataCentre(vec![("dc1".into(), 1), ("dc2".into(), 1)]);
        let nodes = [Some("dc1"), Some("dc2")];
        let message = refusal(two.clone(), &nodes, SerialConsistency::LocalSerial);
        assert!(message.contains("LOCAL_SERIAL") && message.contains("\"quorum\""), "{message}");
        let owned: Vec<Option<String>> = nodes.iter().map(|dc| dc.map(str::to_string)).collect();
        two.check("otg", &owned, SerialConsistency::Serial).unwrap();
        let one = Replication::PerDataCentre(vec![("dc1".into(), 1), ("dc2".into(), 0)]);
        one.check("otg", &owned, SerialConsistency::LocalSerial).unwrap();
    }

    #[test]
    fn a_keyspace_replication_reads_back_from_the_schema_tables() {
        let map = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let simple = map(&[("class", "org.apache.cassandra.locator.SimpleStrategy"), ("replication_factor", "3")]);
        assert_eq!(Replication::of_keyspace(&simple), Some(Replication::Simple(3)));
        let nts = map(&[("class", "org.apache.cassandra.locator.NetworkTopologyStrategy"), ("dc2", "1"), ("dc1", "3")]);
        let expected = Replication::PerDataCentre(vec![("dc1".into(), 3), ("dc2".into(), 1)]);
        assert_eq!(Replication::of_keyspace(&nts), Some(expected));
        assert_eq!(Replication::of_keyspace(&map(&[("class", "LocalStrategy")])), None);
    }
}
