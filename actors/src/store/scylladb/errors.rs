//! What a driver error means for the caller: worth a retry (a node down, a timeout:
//! `Unavailable`, answered 503 with `Retry-After`) or not (a query the cluster refuses:
//! a bug or a schema mismatch, `Failed`).

use crate::store::StoreError;
use scylla::errors::{DbError, ExecutionError, PrepareError, RequestAttemptError};

/// The store's error for a driver error, with the statement or step it came from.
pub(super) fn cql_error(error: &(impl std::fmt::Display + Retryable), context: &str) -> StoreError {
    let message = format!("{context}: {error}");
    if error.retryable() {
        StoreError::Unavailable(message)
    } else {
        StoreError::Failed(message)
    }
}

/// Whether an error may go away by itself.
pub(super) trait Retryable {
    fn retryable(&self) -> bool;
}

impl Retryable for ExecutionError {
    fn retryable(&self) -> bool {
        match self {
            ExecutionError::RequestTimeout(_) | ExecutionError::ConnectionPoolError(_) | ExecutionError::EmptyPlan => {
                true
            }
            ExecutionError::LastAttemptError(attempt) => attempt.retryable(),
            ExecutionError::PrepareError(error) => error.retryable(),
            ExecutionError::SchemaAgreementError(_) => true,
            _ => false,
        }
    }
}

impl Retryable for PrepareError {
    fn retryable(&self) -> bool {
        match self {
            PrepareError::AllAttemptsFailed { first_attempt } => first_attempt.retryable(),
            PrepareError::ConnectionPoolError(_) => true,
            _ => false,
        }
    }
}

impl Retryable for RequestAttemptError {
    fn retryable(&self) -> bool {
        match self {
            RequestAttemptError::BrokenConnectionError(_) | RequestAttemptError::UnableToAllocStreamId => true,
            RequestAttemptError::DbError(error, _) => matches!(
                error,
                DbError::Unavailable { .. }
                    | DbError::ReadTimeout { .. }
                    | DbError::WriteTimeout { .. }
                    | DbError::ReadFailure { .. }
                    | DbError::WriteFailure { .. }
                    | DbError::Overloaded
                    | DbError::IsBootstrapping
                    | DbError::ServerError
                    | DbError::RateLimitReached { .. }
            ),
            _ => false,
        }
    }
}

/// Whether a conditional write's outcome is unknown (it timed out, or the connection
/// broke after sending it): it must be read back before anyone is told.
pub(super) fn outcome_unknown(error: &ExecutionError) -> bool {
    matches!(
        error,
        ExecutionError::RequestTimeout(_)
            | ExecutionError::LastAttemptError(
                RequestAttemptError::DbError(DbError::WriteTimeout { .. }, _)
                    | RequestAttemptError::BrokenConnectionError(_)
            )
    )
}
