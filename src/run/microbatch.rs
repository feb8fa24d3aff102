//! The window of time a `microbatch` model builds in one run, as dbt 1.9
//! cuts it into batches (UTC throughout).
//!
//! The window ends at the end of the batch that holds the current time (or
//! `--event-time-end`, moved up to a batch's end). It starts `lookback`
//! batches before the current batch on an incremental run, at `begin` on a
//! first run or a full refresh, or at `--event-time-start`; either moved
//! back to a batch's start.
//!
//! ferry runs the window's batches as one query: the model's rows whose
//! `event_time` is in the window replace the rows of the window in its
//! stage and, in one transaction, in its table.

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, Timelike};
use serde::Serialize;

use crate::manifest::config::{BatchSize, Microbatch};
use crate::values::EventTimes;

/// The batches a run builds: from `start` up to (not including) `end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Window {
    pub start: NaiveDateTime,
    pub end: NaiveDateTime,
    pub batches: u64,
    pub batch_size: &'static str,
}

impl Window {
    /// Builds the window of a run; `incremental` is whether the model has
    /// current data to build on. `Err` says why there is none.
    pub fn of_run(
        settings: &Microbatch,
        incremental: bool,
        event_time: EventTimes,
        now: NaiveDateTime,
    ) -> Result<Window, String> {
        let size = settings.batch_size;
        let end = ceiling(event_time.end.unwrap_or(now), size);
        let start = match (event_time.start, incremental, settings.begin) {
            (Some(start), _, _) => truncate(start, size),
            (None, true, _) => offset(end, size, -(i64::from(settings.lookback) + 1)),
            (None, false, Some(begin)) => truncate(begin, size),
            (None, false, None) => {
                return Err("its first run (or a full refresh) starts at its `begin`, which it does not set; \
                     set `begin: '2024-01-01'`, or give `--event-time-start`"
                    .into());
            }
        };
        if start >= end {
            return Err(format!("its window from {start} to {end} holds no batch"));
        }
        let mut batches = 0;
        let mut at = start;
        while at < end {
            at = offset(at, size, 1);
            batches += 1;
        }
        Ok(Window { start, end, batches, batch_size: size.name() })
    }

    /// How a log line says it: `3 day batches from 2024-01-01 00:00:00 to 2024-01-04 00:00:00`.
    pub fn describe(&self) -> String {
        let plural = if self.batches == 1 { "" } else { "es" };
        format!("{} {} batch{plural} from {} to {}", self.batches, self.batch_size, self.start, self.end)
    }
}

/// The start of the batch that holds `t`.
pub fn truncate(t: NaiveDateTime, size: BatchSize) -> NaiveDateTime {
    let date = t.date();
    let (y, m, d, h) = match size {
        BatchSize::Hour => (date.year(), date.month(), date.day(), t.hour()),
        BatchSize::Day => (date.year(), date.month(), date.day(), 0),
        BatchSize::Month => (date.year(), date.month(), 1, 0),
        BatchSize::Year => (date.year(), 1, 1, 0),
    };
    NaiveDate::from_ymd_opt(y, m, d).and_then(|d| d.and_hms_opt(h, 0, 0)).unwrap_or(t)
}

/// `t` itself when a batch starts there, else the start of the next batch.
fn ceiling(t: NaiveDateTime, size: BatchSize) -> NaiveDateTime {
    let start = truncate(t, size);
    if start == t { t } else { offset(start, size, 1) }
}

/// The start of the batch `n` batches after (before, when negative) the
/// one that holds `t`.
fn offset(t: NaiveDateTime, size: BatchSize, n: i64) -> NaiveDateTime {
    let start = truncate(t, size);
    match size {
        BatchSize::Hour => start + Duration::hours(n),
        BatchSize::Day => start + Duration::days(n),
        BatchSize::Month | BatchSize::Year => {
            let months = if size == BatchSize::Month { n } else { n * 12 };
            let index = i64::from(start.year()) * 12 + i64::from(start.month0()) + months;
            let (year, month0) = (index.div_euclid(12), index.rem_euclid(12));
            i32::try_from(year)
                .ok()
                .and_then(|y| NaiveDate::from_ymd_opt(y, month0 as u32 + 1, 1))
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .unwrap_or(start)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::parse_utc;

    fn at(text: &str) -> NaiveDateTime {
        parse_utc(text).unwrap()
    }

    fn settings(size: BatchSize, lookback: u32, begin: Option<&str>) -> Microbatch {
        Microbatch { event_time: "at".into(), begin: begin.map(at), batch_size: size, lookback }
    }

    #[test]
    fn batches_truncate_and_offset_as_dbt_cuts_them() {
        let t = at("2024-09-17 16:06:00");
        assert_eq!(truncate(t, BatchSize::Hour), at("2024-09-17 16:00"));
        assert_eq!(truncate(t, BatchSize::Month), at("2024-09-01"));
        assert_eq!(offset(t, BatchSize::Day, -1), at("2024-09-16"));
        assert_eq!(offset(t, BatchSize::Month, 4), at("2025-01-01"));
        assert_eq!(offset(t, BatchSize::Month, -9), at("2023-12-01"));
        assert_eq!(offset(t, BatchSize::Year, -1), at("2023-01-01"));
        assert_eq!(ceiling(t, BatchSize::Day), at("2024-09-18"));
        assert_eq!(ceiling(at("2024-09-17"), BatchSize::Day), at("2024-09-17"));
    }

    #[test]
    fn an_incremental_run_builds_the_lookback_batches_and_the_current_one() {
        let now = at("2024-09-17 16:06:00");
        let none = EventTimes::default();
        let w = Window::of_run(&settings(BatchSize::Day, 1, Some("2024-01-01")), true, none, now).unwrap();
        assert_eq!((w.start, w.end, w.batches), (at("2024-09-16"), at("2024-09-18"), 2));
        assert_eq!(w.describe(), "2 day batches from 2024-09-16 00:00:00 to 2024-09-18 00:00:00");
        let w = Window::of_run(&settings(BatchSize::Hour, 3, None), true, none, now).unwrap();
        assert_eq!((w.start, w.end, w.batches), (at("2024-09-17 13:00"), at("2024-09-17 17:00"), 4));
        // A first run starts at `begin`, moved back to its batch's start.
        let w = Window::of_run(&settings(BatchSize::Month, 1, Some("2024-03-15")), false, none, now).unwrap();
        assert_eq!((w.start, w.end, w.batches), (at("2024-03-01"), at("2024-10-01"), 7));
        let e = Window::of_run(&settings(BatchSize::Day, 1, None), false, none, now).unwrap_err();
        assert!(e.contains("`begin`"), "{e}");
    }

    #[test]
    fn event_time_flags_set_the_window_of_a_backfill() {
        let now = at("2024-09-17 16:06:00");
        let flags = EventTimes { start: Some(at("2024-02-03 10:00")), end: Some(at("2024-02-05 01:00")) };
        let w = Window::of_run(&settings(BatchSize::Day, 1, None), true, flags, now).unwrap();
        assert_eq!((w.start, w.end, w.batches), (at("2024-02-03"), at("2024-02-06"), 3));
        let flags = EventTimes { start: Some(at("2024-09-10")), end: None };
        let w = Window::of_run(&settings(BatchSize::Day, 1, None), false, flags, now).unwrap();
        assert_eq!((w.start, w.end, w.batches), (at("2024-09-10"), at("2024-09-18"), 8));
    }
}
