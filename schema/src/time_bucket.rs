//! UTC day buckets: the partition unit of an employee's timeline in both stores.
//!
//! A bucket is a storage detail: shifts and conflicts look across buckets freely.

use chrono::{DateTime, NaiveDate};
use serde::{Deserialize, Serialize};
use std::fmt;

const MS_PER_DAY: i64 = 86_400_000;

/// A UTC calendar day, counted in days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UtcDay(pub i32);

impl UtcDay {
    /// The day that contains the instant `unix_ms`.
    pub fn of_unix_ms(unix_ms: i64) -> Self {
        UtcDay(unix_ms.div_euclid(MS_PER_DAY) as i32)
    }

    /// The first millisecond of the day.
    pub fn start_unix_ms(self) -> i64 {
        i64::from(self.0) * MS_PER_DAY
    }

    pub fn next(self) -> Self {
        UtcDay(self.0 + 1)
    }

    /// Each day from this one to `last`, both included; none if `last` is before it.
    pub fn through(self, last: UtcDay) -> impl Iterator<Item = UtcDay> {
        (self.0..=last.0).map(UtcDay)
    }

    /// Reads `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Option<Self> {
        let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
        Some(Self::from_date(date))
    }

    pub fn from_date(date: NaiveDate) -> Self {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("the epoch is a date");
        UtcDay((date - epoch).num_days() as i32)
    }

    pub fn date(self) -> NaiveDate {
        DateTime::from_timestamp_millis(self.start_unix_ms())
            .expect("every i32 day is a representable date")
            .date_naive()
    }
}

impl fmt::Display for UtcDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.date().format("%Y-%m-%d"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_fall_into_their_utc_day() {
        let day = UtcDay::parse("2025-11-25").unwrap();
        assert_eq!(UtcDay::of_unix_ms(day.start_unix_ms()), day);
        assert_eq!(UtcDay::of_unix_ms(day.start_unix_ms() - 1), UtcDay(day.0 - 1));
        assert_eq!(UtcDay::of_unix_ms(day.next().start_unix_ms() - 1), day);
        assert_eq!(day.to_string(), "2025-11-25");
    }

    #[test]
    fn days_before_the_epoch_round_down() {
        assert_eq!(UtcDay::of_unix_ms(-1), UtcDay(-1));
        assert_eq!(UtcDay(-1).to_string(), "1969-12-31");
    }

    #[test]
    fn a_span_of_days_includes_both_ends() {
        let days: Vec<i32> = UtcDay(3).through(UtcDay(5)).map(|day| day.0).collect();
        assert_eq!(days, vec![3, 4, 5]);
        assert_eq!(UtcDay(3).through(UtcDay(3)).count(), 1);
        assert_eq!(UtcDay(3).through(UtcDay(2)).count(), 0);
    }

    #[test]
    fn malformed_dates_do_not_parse() {
        assert_eq!(UtcDay::parse("2025-02-30"), None);
        assert_eq!(UtcDay::parse("25-11-2025"), None);
    }
}
