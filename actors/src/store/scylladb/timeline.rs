//! The timeline on the cluster as facts (schema version 6): each decision about a
//! record is written before its commit point, keyed by its commit, and read only once
//! that commit is known committed.
//!
//! A row's facts never overwrite one another (they are keyed by commit id), so a commit
//! that never happens leaves every earlier decision as it stood, and of a record's
//! facts readers take the committed one of the highest employee version. A commit is
//! known committed when its id is in its day partition's `commits` (its tail adds it
//! there, after its commit point), or when its device's progress names it as the last
//! commit: the only one of a device whose tail may still be missing, since each tail is
//! written before the device's next commit point.

use super::ScyllaStore;
use crate::store::codec::decode;
use crate::store::{CommitId, StoreError, TimelineEntry};
use otg_schema::UtcDay;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// One decision about a record: the entry as decided, the employee version it was made
/// at (0 where nothing was decided: conflict detection off), and the device whose
/// progress is its commit point (none for an administrator's resolution, whose rows
/// are written only once the decision stands).
#[derive(Serialize, Deserialize)]
pub(super) struct Fact<E> {
    pub version: i64,
    pub primary: Option<String>,
    pub entry: E,
}

/// A commit's partitions to mark once it is committed: (org, employee, day).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(super) struct Marks {
    pub commit: CommitId,
    pub partitions: Vec<(String, String, i32)>,
}

/// A row as `select_timeline` reads it: the entry written before facts (read as
/// committed), the facts by commit, and the partition's committed commits.
type Row = (Option<Vec<u8>>, Option<HashMap<Uuid, Vec<u8>>>, Option<HashSet<Uuid>>);

/// What one read of a day learned of commits: those marked, and each device's last.
struct Known<'a> {
    partition: (&'a str, &'a str, i32),
    marked: HashSet<Uuid>,
    last_of: HashMap<String, Option<Uuid>>,
    marked_again: bool,
}

impl ScyllaStore {
    /// One day of an employee's timeline as committed commits left it, in row order.
    pub(super) async fn committed_timeline(
        &self,
        org_id: &str,
        employee_id: &str,
        day: UtcDay,
    ) -> Result<Vec<TimelineEntry>, StoreError> {
        let partition = (org_id, employee_id, day.0);
        let rows: Vec<Row> = self.all_rows(&self.statements.select_timeline, partition).await?;
        let marked = rows.first().and_then(|row| row.2.clone()).unwrap_or_default();
        let mut known = Known { partition, marked, last_of: HashMap::new(), marked_again: false };
        let mut entries = Vec::with_capacity(rows.len());
        for (legacy, facts, _) in rows {
            let mut facts = facts
                .unwrap_or_default()
                .into_iter()
                .map(|(commit, fact)| Ok((commit, decode::<Fact<TimelineEntry>>(&fact)?)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            facts.sort_by_key(|(_, fact)| std::cmp::Reverse(fact.version));
            let mut seen = None;
            for (commit, fact) in facts {
                if self.committed(&mut known, commit, fact.primary.as_deref()).await? {
                    seen = Some(fact.entry);
                    break;
                }
            }
            match (seen, legacy) {
                (Some(entry), _) => entries.push(entry),
                (None, Some(legacy)) => entries.push(decode(&legacy)?),
                (None, None) => {}
            }
        }
        Ok(entries)
    }

    /// Whether `commit`, whose commit point is `primary`'s progress, is committed.
    async fn committed(&self, known: &mut Known<'_>, commit: Uuid, primary: Option<&str>) -> Result<bool, StoreError> {
        let Some(device_id) = primary else { return Ok(true) };
        if known.marked.contains(&commit) {
            return Ok(true);
        }
        let last = match known.last_of.get(device_id) {
            Some(last) => *last,
            None => {
                let rows: Vec<(Option<Uuid>,)> = self.rows(&self.statements.select_last_commit, (device_id,)).await?;
                let last = rows.into_iter().next().and_then(|(last,)| last);
                known.last_of.insert(device_id.to_string(), last);
                last
            }
        };
        if last == Some(commit) {
            return Ok(true);
        }
        // The device committed since the rows were read: if this commit was one of its,
        // its tail marked it before that later commit's point. Read the marks again.
        if !known.marked_again {
            let rows: Vec<(Option<HashSet<Uuid>>,)> =
                self.rows(&self.statements.select_timeline_marks, known.partition).await?;
            known.marked.extend(rows.into_iter().next().and_then(|(marks,)| marks).unwrap_or_default());
            known.marked_again = true;
        }
        Ok(known.marked.contains(&commit))
    }
}
