//! Comparable keys for FHIR `date`, `dateTime` and `instant` values.
//!
//! Recency decides which margin assessment wins and which Condition is "the" cancer, and FHIR
//! dates are partial (`2024`, `2024-03`) and carry time zones, so comparing the strings would be
//! wrong. A [`DateKey`] orders values by the instant their period starts (UTC), and on an equal
//! start puts the less precise value first: `2024-03` < `2024-03-01` < `2024-03-01T08:00:00Z`.
//! A date without a time is taken to start at midnight UTC (FHIR gives it no zone). Values that
//! do not parse give no key, and callers treat them like undated resources (older than any
//! dated one).

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime};

/// A sortable key for a (possibly partial) FHIR date / dateTime / instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DateKey {
    /// Start of the period the value names, in UTC.
    start: NaiveDateTime,
    /// 0 year, 1 month, 2 day, 3 time: the more precise value sorts later on an equal start.
    precision: u8,
}

impl DateKey {
    /// Parse a FHIR date, dateTime or instant (`YYYY`, `YYYY-MM`, `YYYY-MM-DD`, or a full
    /// date-time with seconds and a zone; a date-time without a zone is read as UTC).
    pub fn parse(value: &str) -> Option<Self> {
        let v = value.trim();
        if v.contains('T') {
            if let Ok(dt) = DateTime::parse_from_rfc3339(v) {
                return Some(Self::new(dt.naive_utc(), 3));
            }
            // Not valid FHIR (a time needs a zone), but some systems send it; read it as UTC.
            for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
                if let Ok(dt) = NaiveDateTime::parse_from_str(v, format) {
                    return Some(Self::new(dt, 3));
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
        let (month, day, precision) = match parts.len() {
            1 => (1, 1, 0),
            2 => (number(parts[1], 2)?, 1, 1),
            3 => (number(parts[1], 2)?, number(parts[2], 2)?, 2),
            _ => return None,
        };
        let date = NaiveDate::from_ymd_opt(year, month, day)?;
        Some(Self::new(date.and_time(NaiveTime::MIN), precision))
    }

    fn new(start: NaiveDateTime, precision: u8) -> Self {
        Self { start, precision }
    }
}

/// Order two optional keys, an absent key being older than any present one.
pub fn cmp_optional(a: Option<DateKey>, b: Option<DateKey>) -> std::cmp::Ordering {
    // `Option`'s own order already puts `None` first.
    a.cmp(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> DateKey {
        DateKey::parse(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn partial_dates_order_by_start_then_precision() {
        assert!(k("2023") < k("2024"));
        assert!(k("2024") < k("2024-01"));
        assert!(k("2024-01") < k("2024-01-01"));
        assert!(k("2024-02") > k("2024-01-31"));
        assert!(k("2024-03-01") < k("2024-03-01T00:00:00Z"));
        assert!(k("2024-03-02") > k("2024-03-01T23:59:59Z"));
        assert_eq!(k("2024-03-01"), k(" 2024-03-01 "));
    }

    #[test]
    fn time_zones_are_compared_in_utc() {
        // 10:00+02:00 is 08:00Z, earlier than 09:00Z.
        assert!(k("2024-03-01T10:00:00+02:00") < k("2024-03-01T09:00:00Z"));
        assert_eq!(k("2024-03-01T10:00:00+02:00"), k("2024-03-01T08:00:00Z"));
        assert!(k("2024-03-01T08:00:00.123Z") > k("2024-03-01T08:00:00Z"));
        // Lenient: no zone read as UTC.
        assert_eq!(k("2024-03-01T08:00:00"), k("2024-03-01T08:00:00Z"));
    }

    #[test]
    fn garbage_gives_no_key_and_sorts_first() {
        for bad in [
            "",
            "24",
            "2024-3",
            "2024-13",
            "2024-02-30",
            "yesterday",
            "2024-01-01-01",
        ] {
            assert!(DateKey::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(
            cmp_optional(None, Some(k("1900"))),
            std::cmp::Ordering::Less
        );
    }
}
