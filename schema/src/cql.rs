//! The CQL schema of the ScyllaDB store, versioned: the files of `schema/cql/`, built
//! into the binary so that `otg-gateway migrate` needs nothing beside it.

/// One version of the schema.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub cql: &'static str,
}

/// Every version, in order. A released file is never edited: a change is a new one.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "initial", cql: include_str!("../cql/V001__initial.cql") },
    Migration { version: 2, name: "ownership", cql: include_str!("../cql/V002__ownership.cql") },
    Migration { version: 3, name: "commit_tail", cql: include_str!("../cql/V003__commit_tail.cql") },
    Migration { version: 4, name: "commit_identity", cql: include_str!("../cql/V004__commit_identity.cql") },
    Migration { version: 5, name: "waiting_devices", cql: include_str!("../cql/V005__waiting_devices.cql") },
];

/// The version a gateway of this build needs.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |migration| migration.version)
}

impl Migration {
    /// The file's statements: comments dropped, each statement ending at a line that
    /// ends in `;`.
    pub fn statements(&self) -> Vec<String> {
        let mut statements = Vec::new();
        let mut current = String::new();
        for line in self.cql.lines() {
            let line = line.split("--").next().unwrap_or("").trim_end();
            if line.trim().is_empty() {
                continue;
            }
            current.push_str(line);
            current.push('\n');
            if let Some(statement) = current.trim().strip_suffix(';') {
                statements.push(statement.trim().to_string());
                current.clear();
            }
        }
        statements
    }
}

/// The table and column of an `ALTER TABLE <table> ADD <column> <type>` statement.
/// CQL has no `ADD IF NOT EXISTS` that both ScyllaDB and Cassandra take, so the
/// migration runs such a statement only if the column is not there yet: run again after
/// a failure part-way, it changes nothing.
pub fn added_column(statement: &str) -> Option<(&str, &str)> {
    let words: Vec<&str> = statement.split_whitespace().collect();
    match words.as_slice() {
        [alter, table_word, table, add, column, _type] => {
            let keywords = [(alter, "ALTER"), (table_word, "TABLE"), (add, "ADD")];
            keywords.iter().all(|(word, keyword)| word.eq_ignore_ascii_case(keyword)).then_some((*table, *column))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_splits_into_statements_safe_to_run_again() {
        assert!(MIGRATIONS[0].statements().len() >= 15, "version 1 creates the model's tables");
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, index as i32 + 1, "versions are numbered one after another");
            let statements = migration.statements();
            assert!(!statements.is_empty(), "version {} has statements", migration.version);
            for statement in &statements {
                let safe = statement.starts_with("CREATE TABLE IF NOT EXISTS") || added_column(statement).is_some();
                assert!(safe, "{statement}");
                assert!(!statement.contains(';') && !statement.contains("--"), "{statement}");
            }
        }
        assert_eq!(latest_version(), MIGRATIONS.len() as i32);
    }

    #[test]
    fn an_added_column_is_named() {
        assert_eq!(added_column("ALTER TABLE device_state ADD unfinished blob"), Some(("device_state", "unfinished")));
        assert_eq!(added_column("ALTER TABLE device_state DROP unfinished"), None);
        assert_eq!(added_column("CREATE TABLE IF NOT EXISTS t (a int PRIMARY KEY)"), None);
    }
}
