//! Every CQL statement the ScyllaDB store runs, prepared once per session.
//!
//! Plain writes are keyed from their data, so they are marked idempotent and the
//! driver may retry them; the conditional writes (LWT) are not, and their outcome is
//! read back at serial consistency when one times out.

use super::errors::cql_error;
use crate::store::StoreError;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};

pub(super) struct Statements {
    pub insert_device: PreparedStatement,
    pub select_device: PreparedStatement,
    pub select_device_serial: PreparedStatement,
    pub revoke_device: PreparedStatement,
    pub insert_org_device: PreparedStatement,
    pub select_org_devices: PreparedStatement,
    pub write_progress: PreparedStatement,
    pub write_unclaimed_progress: PreparedStatement,
    pub select_progress: PreparedStatement,
    pub select_state_serial: PreparedStatement,
    pub claim_new_device: PreparedStatement,
    pub claim_device: PreparedStatement,
    pub insert_waiting_device: PreparedStatement,
    pub delete_waiting_device: PreparedStatement,
    pub select_waiting_devices: PreparedStatement,
    pub select_employee_version: PreparedStatement,
    pub insert_employee_version: PreparedStatement,
    pub advance_employee_version: PreparedStatement,
    pub insert_gateway: PreparedStatement,
    pub select_gateways: PreparedStatement,
    pub delete_gateway: PreparedStatement,
    pub insert_seq: PreparedStatement,
    pub select_seqs: PreparedStatement,
    pub insert_timeline: PreparedStatement,
    pub insert_timeline_at: PreparedStatement,
    pub select_timeline: PreparedStatement,
    pub insert_timeline_day: PreparedStatement,
    pub select_timeline_days: PreparedStatement,
    pub insert_conflict: PreparedStatement,
    pub select_conflict: PreparedStatement,
    pub select_conflict_serial: PreparedStatement,
    pub resolve_conflict: PreparedStatement,
    pub insert_conflict_of_org: PreparedStatement,
    pub select_conflicts_of_org: PreparedStatement,
    pub insert_conflict_month: PreparedStatement,
    pub select_conflict_months: PreparedStatement,
    pub insert_conflict_of_device: PreparedStatement,
    pub select_conflicts_of_device: PreparedStatement,
    pub insert_audit_of_device: PreparedStatement,
    pub insert_audit_of_org: PreparedStatement,
    pub insert_audit_day: PreparedStatement,
    pub select_audit_days: PreparedStatement,
    pub select_audit_of_device_from: PreparedStatement,
    pub select_audit_of_device_after: PreparedStatement,
    pub select_audit_of_org_from: PreparedStatement,
    pub select_audit_of_org_after: PreparedStatement,
    pub insert_sync_stats: PreparedStatement,
    pub select_sync_stats: PreparedStatement,
    pub insert_device_stats: PreparedStatement,
    pub select_device_stats: PreparedStatement,
    pub insert_org_settings: PreparedStatement,
    pub select_org_settings: PreparedStatement,
}

/// How a statement is run.
#[derive(Clone, Copy)]
enum Kind {
    /// Keyed from its data: running it again changes nothing, the driver may retry it.
    Idempotent,
    /// A conditional write: one winner; never retried blindly.
    Conditional,
    /// A read at serial consistency: sees the outcome of every conditional write.
    SerialRead,
}

impl Statements {
    /// Prepares every statement on `keyspace`'s tables, named in full (a session-wide
    /// `USE` with prepared statements is ambiguous, and Cassandra warns on each).
    pub async fn prepare(
        session: &Session,
        keyspace: &str,
        consistency: Consistency,
        serial: SerialConsistency,
    ) -> Result<Self, StoreError> {
        let prepare = |cql: &'static str, kind: Kind| async move {
            let cql = qualified(cql, keyspace);
            let mut statement = session.prepare(cql.as_str()).await.map_err(|error| cql_error(&error, &cql))?;
            statement.set_consistency(consistency);
            statement.set_serial_consistency(Some(serial));
            match kind {
                Kind::Idempotent => statement.set_is_idempotent(true),
                Kind::Conditional => statement.set_is_idempotent(false),
                Kind::SerialRead => {
                    statement.set_is_idempotent(true);
                    statement.set_consistency(match serial {
                        SerialConsistency::LocalSerial => Consistency::LocalSerial,
                        SerialConsistency::Serial => Consistency::Serial,
                    });
                }
            }
            Ok::<_, StoreError>(statement)
        };
        use Kind::*;
        Ok(Statements {
            insert_device: prepare(
                "INSERT INTO devices (device_id, org_id, employee_id, secret, enrolled_at) VALUES (?, ?, ?, ?, ?) \
                 IF NOT EXISTS",
                Conditional,
            )
            .await?,
            select_device: prepare(
                "SELECT org_id, employee_id, secret, enrolled_at, revoked_at FROM devices WHERE device_id = ?",
                Idempotent,
            )
            .await?,
            select_device_serial: prepare(
                "SELECT org_id, employee_id, secret, enrolled_at, revoked_at FROM devices WHERE device_id = ?",
                SerialRead,
            )
            .await?,
            revoke_device: prepare(
                "UPDATE devices SET revoked_at = ? WHERE device_id = ? IF revoked_at = null",
                Conditional,
            )
            .await?,
            insert_org_device: prepare("INSERT INTO devices_by_org (org_id, device_id) VALUES (?, ?)", Idempotent)
                .await?,
            select_org_devices: prepare(
                "SELECT device_id FROM devices_by_org WHERE org_id = ? AND device_id > ? LIMIT ?",
                Idempotent,
            )
            .await?,
            // The commit point, fenced: written only by the holder of the device's epoch,
            // over the progress of the commit it follows.
            write_progress: prepare(
                "UPDATE device_state SET progress = ?, waiting = ?, unfinished = ?, last_commit = ? \
                 WHERE device_id = ? IF epoch = ? AND last_commit = ?",
                Conditional,
            )
            .await?,
            // A device nobody claimed (epoch 0: the store's own tests) follows no chain.
            write_unclaimed_progress: prepare(
                "UPDATE device_state SET progress = ?, waiting = ?, unfinished = ?, last_commit = ? \
                 WHERE device_id = ? IF epoch = null",
                Conditional,
            )
            .await?,
            select_progress: prepare("SELECT progress FROM device_state WHERE device_id = ?", Idempotent).await?,
            select_state_serial: prepare(
                "SELECT progress, epoch, unfinished, last_commit FROM device_state WHERE device_id = ?",
                SerialRead,
            )
            .await?,
            claim_new_device: prepare(
                "INSERT INTO device_state (device_id, epoch) VALUES (?, ?) IF NOT EXISTS",
                Conditional,
            )
            .await?,
            claim_device: prepare("UPDATE device_state SET epoch = ? WHERE device_id = ? IF epoch = ?", Conditional)
                .await?,
            insert_waiting_device: prepare("INSERT INTO waiting_devices (bucket, device_id) VALUES (?, ?)", Idempotent)
                .await?,
            delete_waiting_device: prepare(
                "DELETE FROM waiting_devices WHERE bucket = ? AND device_id = ?",
                Idempotent,
            )
            .await?,
            select_waiting_devices: prepare("SELECT device_id FROM waiting_devices WHERE bucket = ?", Idempotent)
                .await?,
            select_employee_version: prepare(
                "SELECT version, commit FROM employee_versions WHERE org_id = ? AND employee_id = ?",
                SerialRead,
            )
            .await?,
            insert_employee_version: prepare(
                "INSERT INTO employee_versions (org_id, employee_id, version, commit) VALUES (?, ?, ?, ?) \
                 IF NOT EXISTS",
                Conditional,
            )
            .await?,
            advance_employee_version: prepare(
                "UPDATE employee_versions SET version = ?, commit = ? WHERE org_id = ? AND employee_id = ? \
                 IF version = ?",
                Conditional,
            )
            .await?,
            insert_gateway: prepare(
                "INSERT INTO gateways (gateway_id, started_at) VALUES (?, ?) USING TTL ?",
                Idempotent,
            )
            .await?,
            select_gateways: prepare("SELECT gateway_id, started_at FROM gateways", Idempotent).await?,
            delete_gateway: prepare("DELETE FROM gateways WHERE gateway_id = ?", Idempotent).await?,
            // Stamped with the writer's epoch: a newer owner's row always wins.
            insert_seq: prepare(
                "INSERT INTO seqs (device_id, seq_bucket, seq, entry) VALUES (?, ?, ?, ?) USING TIMESTAMP ?",
                Idempotent,
            )
            .await?,
            select_seqs: prepare(
                "SELECT seq, entry FROM seqs WHERE device_id = ? AND seq_bucket = ? AND seq IN ?",
                Idempotent,
            )
            .await?,
            insert_timeline: prepare(
                "INSERT INTO timeline (org_id, employee_id, day, recorded_at, device_id, seq, entry) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
                Idempotent,
            )
            .await?,
            // A decision's rows carry its employee version as their timestamp: the
            // decisions' order, never a gateway's clock, says which status stands.
            insert_timeline_at: prepare(
                "INSERT INTO timeline (org_id, employee_id, day, recorded_at, device_id, seq, entry) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
                Idempotent,
            )
            .await?,
            select_timeline: prepare(
                "SELECT entry FROM timeline WHERE org_id = ? AND employee_id = ? AND day = ?",
                Idempotent,
            )
            .await?,
            insert_timeline_day: prepare(
                "INSERT INTO timeline_days (org_id, employee_id, day) VALUES (?, ?, ?)",
                Idempotent,
            )
            .await?,
            select_timeline_days: prepare(
                "SELECT day FROM timeline_days WHERE org_id = ? AND employee_id = ? AND day >= ? AND day <= ?",
                Idempotent,
            )
            .await?,
            insert_conflict: prepare("INSERT INTO conflicts (conflict_id, conflict) VALUES (?, ?)", Idempotent).await?,
            select_conflict: prepare("SELECT conflict, resolution FROM conflicts WHERE conflict_id = ?", Idempotent)
                .await?,
            select_conflict_serial: prepare(
                "SELECT conflict, resolution FROM conflicts WHERE conflict_id = ?",
                SerialRead,
            )
            .await?,
            resolve_conflict: prepare(
                "UPDATE conflicts SET resolution = ? WHERE conflict_id = ? IF resolution = null",
                Conditional,
            )
            .await?,
            insert_conflict_of_org: prepare(
                "INSERT INTO conflicts_by_org (org_id, month, detected_at, conflict_id) VALUES (?, ?, ?, ?)",
                Idempotent,
            )
            .await?,
            select_conflicts_of_org: prepare(
                "SELECT detected_at, conflict_id FROM conflicts_by_org WHERE org_id = ? AND month = ? \
                 AND (detected_at, conflict_id) > (?, ?) LIMIT ?",
                Idempotent,
            )
            .await?,
            insert_conflict_month: prepare("INSERT INTO conflict_months (org_id, month) VALUES (?, ?)", Idempotent)
                .await?,
            select_conflict_months: prepare(
                "SELECT month FROM conflict_months WHERE org_id = ? AND month >= ?",
                Idempotent,
            )
            .await?,
            insert_conflict_of_device: prepare(
                "INSERT INTO conflicts_by_device (device_id, conflict_id) VALUES (?, ?)",
                Idempotent,
            )
            .await?,
            select_conflicts_of_device: prepare(
                "SELECT conflict_id FROM conflicts_by_device WHERE device_id = ?",
                Idempotent,
            )
            .await?,
            insert_audit_of_device: prepare(
                "INSERT INTO audit_by_device (device_id, day, at, event_key, event) VALUES (?, ?, ?, ?, ?)",
                Idempotent,
            )
            .await?,
            insert_audit_of_org: prepare(
                "INSERT INTO audit_by_org (org_id, day, at, device_id, event_key, event) VALUES (?, ?, ?, ?, ?, ?)",
                Idempotent,
            )
            .await?,
            insert_audit_day: prepare("INSERT INTO audit_days (scope, owner, day) VALUES (?, ?, ?)", Idempotent)
                .await?,
            select_audit_days: prepare(
                "SELECT day FROM audit_days WHERE scope = ? AND owner = ? AND day >= ? AND day <= ?",
                Idempotent,
            )
            .await?,
            select_audit_of_device_from: prepare(
                "SELECT at, event_key, event FROM audit_by_device WHERE device_id = ? AND day = ? AND at >= ? LIMIT ?",
                Idempotent,
            )
            .await?,
            select_audit_of_device_after: prepare(
                "SELECT at, event_key, event FROM audit_by_device WHERE device_id = ? AND day = ? \
                 AND (at, event_key) > (?, ?) LIMIT ?",
                Idempotent,
            )
            .await?,
            select_audit_of_org_from: prepare(
                "SELECT at, device_id, event_key, event FROM audit_by_org WHERE org_id = ? AND day = ? AND at >= ? \
                 LIMIT ?",
                Idempotent,
            )
            .await?,
            select_audit_of_org_after: prepare(
                "SELECT at, device_id, event_key, event FROM audit_by_org WHERE org_id = ? AND day = ? \
                 AND (at, device_id, event_key) > (?, ?, ?) LIMIT ?",
                Idempotent,
            )
            .await?,
            insert_sync_stats: prepare(
                "INSERT INTO sync_stats (org_id, day, hour, device_id, event_key, totals) VALUES (?, ?, ?, ?, ?, ?)",
                Idempotent,
            )
            .await?,
            select_sync_stats: prepare(
                "SELECT totals FROM sync_stats WHERE org_id = ? AND day = ? AND hour >= ?",
                Idempotent,
            )
            .await?,
            insert_device_stats: prepare(
                "INSERT INTO device_stats (device_id, year, at, event_key, totals) VALUES (?, ?, ?, ?, ?)",
                Idempotent,
            )
            .await?,
            select_device_stats: prepare(
                "SELECT totals FROM device_stats WHERE device_id = ? AND year = ?",
                Idempotent,
            )
            .await?,
            insert_org_settings: prepare("INSERT INTO org_settings (org_id, settings) VALUES (?, ?)", Idempotent)
                .await?,
            select_org_settings: prepare("SELECT settings FROM org_settings WHERE org_id = ?", Idempotent).await?,
        })
    }
}

/// `cql` with its table named in `keyspace`: every statement here names one table,
/// right after `INTO`, `FROM` or `UPDATE`.
fn qualified(cql: &str, keyspace: &str) -> String {
    let mut qualified = cql.to_string();
    for keyword in ["INSERT INTO ", "FROM ", "UPDATE "] {
        if let Some(at) = qualified.find(keyword) {
            qualified.insert_str(at + keyword.len(), &format!("{keyspace}."));
            break;
        }
    }
    qualified
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_statement_names_its_keyspace() {
        assert_eq!(super::qualified("SELECT a FROM t WHERE k = ?", "ks"), "SELECT a FROM ks.t WHERE k = ?");
        assert_eq!(super::qualified("INSERT INTO t (a) VALUES (?)", "ks"), "INSERT INTO ks.t (a) VALUES (?)");
        assert_eq!(super::qualified("UPDATE t SET a = ? WHERE k = ?", "ks"), "UPDATE ks.t SET a = ? WHERE k = ?");
    }
}
