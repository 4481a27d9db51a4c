//! Running prepared statements and reading their rows: one page, every page, and the
//! answer of a conditional write.

use super::errors::{cql_error, outcome_unknown};
use super::ScyllaStore;
use crate::store::StoreError;
use scylla::deserialize::row::DeserializeRow;
use scylla::errors::ExecutionError;
use scylla::response::query_result::QueryResult;
use scylla::response::{PagingState, PagingStateResponse};
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;

/// Rows a full read asks for per page.
const PAGE_ROWS: i32 = 1000;

/// What became of a conditional write.
pub(super) enum Conditional {
    Applied,
    NotApplied,
    /// Timed out or cut off: it may or may not have applied; read it back.
    Unknown(Box<ExecutionError>),
}

impl ScyllaStore {
    pub(super) async fn execute(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<QueryResult, StoreError> {
        self.check_open()?;
        self.session
            .execute_unpaged(statement, values)
            .await
            .map_err(|error| cql_error(&error, statement.get_statement()))
    }

    /// The rows of a one-page query (the statement's own `LIMIT` bounds it).
    pub(super) async fn rows<T>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Vec<T>, StoreError>
    where
        T: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata>,
    {
        rows_of(self.execute(statement, values).await?, statement)
    }

    /// Every row of a query, page by page.
    pub(super) async fn all_rows<T>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow + Clone,
    ) -> Result<Vec<T>, StoreError>
    where
        T: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata>,
    {
        self.check_open()?;
        let mut paged = statement.clone();
        paged.set_page_size(PAGE_ROWS);
        let (mut rows, mut paging) = (Vec::new(), PagingState::start());
        loop {
            let (result, next) = self
                .session
                .execute_single_page(&paged, values.clone(), paging)
                .await
                .map_err(|error| cql_error(&error, statement.get_statement()))?;
            rows.extend(rows_of::<T>(result, statement)?);
            match next {
                PagingStateResponse::HasMorePages { state } => paging = state,
                PagingStateResponse::NoMorePages => return Ok(rows),
            }
        }
    }

    /// A conditional write: whether it applied, or that nobody knows yet.
    pub(super) async fn conditional(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Conditional, StoreError> {
        self.check_open()?;
        crate::store::write_point()?;
        match self.session.execute_unpaged(statement, values).await {
            Ok(result) => Ok(if applied(result)? { Conditional::Applied } else { Conditional::NotApplied }),
            Err(error) if outcome_unknown(&error) => Ok(Conditional::Unknown(Box::new(error))),
            Err(error) => Err(cql_error(&error, statement.get_statement())),
        }
    }
}

/// Typed rows. A row that does not have the statement's types is a schema that does
/// not match this build: no retry helps.
fn rows_of<T>(result: QueryResult, statement: &PreparedStatement) -> Result<Vec<T>, StoreError>
where
    T: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata>,
{
    let mismatch = |error: &dyn std::fmt::Display| {
        StoreError::Failed(format!("{}: the rows do not match this build's schema: {error}", statement.get_statement()))
    };
    let rows = result.into_rows_result().map_err(|error| mismatch(&error))?;
    let typed = rows.rows::<T>().map_err(|error| mismatch(&error))?;
    typed.map(|row| row.map_err(|error| StoreError::Corrupt(error.to_string()))).collect()
}

/// The `[applied]` column of a conditional write's answer.
fn applied(result: QueryResult) -> Result<bool, StoreError> {
    let rows = result.into_rows_result().map_err(|error| StoreError::Corrupt(error.to_string()))?;
    let row: scylla::value::Row = rows.first_row().map_err(|error| StoreError::Corrupt(error.to_string()))?;
    Ok(matches!(row.columns.first(), Some(Some(scylla::value::CqlValue::Boolean(true)))))
}
