//! When a finding happened, as the chart means it, and how two such times compare.
//!
//! "Most recent wins" decides which margin assessment counts and which Condition is "the"
//! cancer, so the comparison must read FHIR times the way the chart wrote them:
//! - a `date` (`2025-05-07`, or partial `2025-05`, `2025`) has no time and no zone: it is a whole
//!   day (month, year) of the chart's own calendar, not an instant at UTC midnight;
//! - a `dateTime` / `instant` with an offset is an instant, and it belongs to the local date its
//!   own offset gives (`2025-05-06T17:30:00-07:00` is 6 May in Arizona, although it is 7 May in
//!   UTC).
//!
//! So two date-times compare as instants; a date-time and a date compare by the date-time's own
//! local date, and are not ordered when it falls within the date's period; two periods are
//! ordered only when they do not overlap. Converting everything to UTC instead would sort a
//! frozen section read at 17:30 in Phoenix after the next day's final pathology report.
//! [`compare`] therefore returns `None` where the precision of the two values cannot order
//! them: the callers then apply the chart's own semantics (report status, `issued`) before any
//! tie rule.
//!
//! A date-time without a zone is not valid FHIR, but some systems send it: its wall-clock time
//! is read as local and compared with other such values and with dates; against an instant it
//! is compared by wall clock (the best available reading, the same local clock).

use std::cmp::Ordering;

use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveDateTime};

/// A FHIR `date`, `dateTime` or `instant`, as the chart means it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClinicalTime {
    /// A date-time: the wall-clock time as written and, when it has an offset, the instant.
    Moment {
        local: NaiveDateTime,
        /// The instant in UTC, when the value has an offset.
        utc: Option<NaiveDateTime>,
        /// The offset in seconds east of UTC, when written.
        offset: Option<i32>,
    },
    /// A day, month or year of the chart's calendar, as `[start, end)`.
    Period { start: NaiveDate, end: NaiveDate },
}

impl ClinicalTime {
    /// Parse a FHIR date, dateTime or instant (`YYYY`, `YYYY-MM`, `YYYY-MM-DD`, or a date-time
    /// with seconds, and a zone or not). Anything else gives `None` (an undated finding).
    pub fn parse(value: &str) -> Option<Self> {
        let v = value.trim();
        if v.contains('T') {
            if let Ok(dt) = DateTime::parse_from_rfc3339(v) {
                return Some(Self::Moment {
                    local: dt.naive_local(),
                    utc: Some(dt.naive_utc()),
                    offset: Some(dt.offset().local_minus_utc()),
                });
            }
            for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
                if let Ok(local) = NaiveDateTime::parse_from_str(v, format) {
                    return Some(Self::Moment {
                        local,
                        utc: None,
                        offset: None,
                    });
                }
            }
            return None;
        }
        let parts: Vec<&str> = v.split('-').collect();
        let number = |s: &str, len: usize| -> Option<u32> {
            (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        let year = i32::try_from(number(parts.first()?, 4)?).ok()?;
        let (start, months, days) = match parts.len() {
            1 => (NaiveDate::from_ymd_opt(year, 1, 1)?, 12, 0),
            2 => (
                NaiveDate::from_ymd_opt(year, number(parts[1], 2)?, 1)?,
                1,
                0,
            ),
            3 => (
                NaiveDate::from_ymd_opt(year, number(parts[1], 2)?, number(parts[2], 2)?)?,
                0,
                1,
            ),
            _ => return None,
        };
        let end = start
            .checked_add_months(Months::new(months))?
            .checked_add_days(chrono::Days::new(days))?;
        Some(Self::Period { start, end })
    }

    /// The local calendar date (or partial date) as the chart has it: `2025-05-06` for
    /// `2025-05-06T17:30:00-07:00`, `2025-05` for a month.
    pub fn local_date(&self) -> String {
        match *self {
            Self::Moment { local, .. } => local.date().format("%Y-%m-%d").to_string(),
            Self::Period { start, end } => {
                let days = (end - start).num_days();
                if days <= 1 {
                    start.format("%Y-%m-%d").to_string()
                } else if start.month() == 1 && days >= 365 {
                    start.format("%Y").to_string()
                } else {
                    start.format("%Y-%m").to_string()
                }
            }
        }
    }

    /// The local date with the time of day and its offset, for an evidence line where the
    /// time decided: `2025-05-06 17:30 (UTC-07:00)`. A date is shown as [`Self::local_date`].
    pub fn local_date_time(&self) -> String {
        match *self {
            Self::Moment { local, offset, .. } => {
                let clock = local.format("%Y-%m-%d %H:%M").to_string();
                match offset {
                    Some(secs) => {
                        let sign = if secs < 0 { '-' } else { '+' };
                        let m = secs.unsigned_abs() / 60;
                        format!("{clock} (UTC{sign}{:02}:{:02})", m / 60, m % 60)
                    }
                    None => clock,
                }
            }
            Self::Period { .. } => self.local_date(),
        }
    }

    /// Whether both values fall on the same local calendar day.
    pub fn same_local_day(&self, other: &Self) -> bool {
        let day = |t: &Self| match *t {
            Self::Moment { local, .. } => Some(local.date()),
            Self::Period { start, end } if (end - start).num_days() == 1 => Some(start),
            Self::Period { .. } => None,
        };
        matches!((day(self), day(other)), (Some(a), Some(b)) if a == b)
    }
}

/// Where a date-time's local date falls against a period.
fn moment_vs_period(local: NaiveDateTime, start: NaiveDate, end: NaiveDate) -> Option<Ordering> {
    let d = local.date();
    if d < start {
        Some(Ordering::Less)
    } else if d >= end {
        Some(Ordering::Greater)
    } else {
        None
    }
}

/// Compare two times where their precision allows it; `None` when it does not (a date and a
/// date-time on that day, overlapping periods, two undated values).
pub fn compare(a: &ClinicalTime, b: &ClinicalTime) -> Option<Ordering> {
    use ClinicalTime::{Moment, Period};
    match (*a, *b) {
        (Moment { utc: Some(x), .. }, Moment { utc: Some(y), .. }) => Some(x.cmp(&y)),
        (Moment { local: x, .. }, Moment { local: y, .. }) => Some(x.cmp(&y)),
        (Moment { local, .. }, Period { start, end }) => moment_vs_period(local, start, end),
        (Period { start, end }, Moment { local, .. }) => {
            moment_vs_period(local, start, end).map(Ordering::reverse)
        }
        (Period { start: s1, end: e1 }, Period { start: s2, end: e2 }) => {
            if e1 <= s2 {
                Some(Ordering::Less)
            } else if e2 <= s1 {
                Some(Ordering::Greater)
            } else if s1 == s2 && e1 == e2 {
                Some(Ordering::Equal)
            } else {
                None
            }
        }
    }
}

/// [`compare`] for optional values: an undated finding is older than any dated one; two
/// undated ones are not ordered.
pub fn compare_optional(a: Option<&ClinicalTime>, b: Option<&ClinicalTime>) -> Option<Ordering> {
    match (a, b) {
        (Some(a), Some(b)) => compare(a, b),
        (None, Some(_)) => Some(Ordering::Less),
        (Some(_), None) => Some(Ordering::Greater),
        (None, None) => None,
    }
}

/// Whether `a` is known to be later than `b`.
pub fn is_later(a: Option<&ClinicalTime>, b: Option<&ClinicalTime>) -> bool {
    compare_optional(a, b) == Some(Ordering::Greater)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> ClinicalTime {
        ClinicalTime::parse(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    /// The table of time pairs: (a, b, how a compares with b).
    #[test]
    fn pairs_are_ordered_only_where_their_precision_allows() {
        use Ordering::{Equal, Greater, Less};
        let table: &[(&str, &str, Option<Ordering>)] = &[
            // Arizona (UTC-7): 17:30 on 6 May is 00:30Z on 7 May, but 6 May in the chart.
            ("2025-05-06T17:30:00-07:00", "2025-05-07", Some(Less)),
            ("2025-05-07", "2025-05-06T17:30:00-07:00", Some(Greater)),
            ("2025-05-07T08:00:00-07:00", "2025-05-06", Some(Greater)),
            // A date-time and a date on the same local day: not ordered by time.
            ("2025-05-06T17:30:00-07:00", "2025-05-06", None),
            ("2025-05-06T00:00:00Z", "2025-05-06", None),
            // Two date-times: instants, whatever their zones.
            (
                "2025-05-06T17:30:00-07:00",
                "2025-05-07T00:10:00Z",
                Some(Greater),
            ),
            (
                "2025-05-06T10:00:00+02:00",
                "2025-05-06T08:00:00Z",
                Some(Equal),
            ),
            (
                "2025-05-06T08:00:00.123Z",
                "2025-05-06T08:00:00Z",
                Some(Greater),
            ),
            // Dates: whole days; the same day is equal, not later.
            ("2025-05-06", "2025-05-07", Some(Less)),
            ("2025-05-06", "2025-05-06", Some(Equal)),
            // Partial dates are periods: ordered only when they do not overlap.
            ("2025-05", "2025-05-20", None),
            ("2025-04", "2025-05-01", Some(Less)),
            ("2025-06", "2025-05-31T23:00:00-07:00", Some(Greater)),
            ("2025", "2025-05", None),
            ("2024", "2025-01-01", Some(Less)),
            ("2025-05", "2025-05", Some(Equal)),
            ("2025-05-31T23:59:00-07:00", "2025-05", None),
            // Without a zone (not valid FHIR, sent anyway): the wall clock, as local.
            ("2025-05-06T17:30:00", "2025-05-07", Some(Less)),
            ("2025-05-06T17:30:00", "2025-05-06T09:00:00", Some(Greater)),
        ];
        for (a, b, expected) in table {
            assert_eq!(compare(&t(a), &t(b)), *expected, "{a} vs {b}");
        }
    }

    #[test]
    fn undated_is_older_than_dated() {
        assert_eq!(
            compare_optional(None, Some(&t("1900"))),
            Some(Ordering::Less)
        );
        assert_eq!(compare_optional(None, None), None);
        assert!(is_later(Some(&t("2025-05-07")), None));
        assert!(!is_later(Some(&t("2025-05")), Some(&t("2025-05-07"))));
    }

    #[test]
    fn local_dates_are_shown_as_the_chart_has_them() {
        assert_eq!(t("2025-05-06T17:30:00-07:00").local_date(), "2025-05-06");
        assert_eq!(
            t("2025-05-06T17:30:00-07:00").local_date_time(),
            "2025-05-06 17:30 (UTC-07:00)"
        );
        assert_eq!(
            t("2025-05-06T05:30:00+05:30").local_date_time(),
            "2025-05-06 05:30 (UTC+05:30)"
        );
        assert_eq!(t("2025-05").local_date(), "2025-05");
        assert_eq!(t("2025").local_date(), "2025");
        assert_eq!(t("2024-02").local_date(), "2024-02");
        assert_eq!(t("2025-05-07").local_date(), "2025-05-07");
        assert!(t("2025-05-06T17:30:00-07:00").same_local_day(&t("2025-05-06")));
        assert!(!t("2025-05-06T17:30:00-07:00").same_local_day(&t("2025-05-07")));
    }

    #[test]
    fn garbage_gives_no_time() {
        for bad in [
            "",
            "24",
            "2025-3",
            "2025-13",
            "2025-02-30",
            "yesterday",
            "2025-01-01-01",
            "2025-05-06T25:00:00Z",
        ] {
            assert!(ClinicalTime::parse(bad).is_none(), "{bad}");
        }
    }
}
