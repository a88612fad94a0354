//! The `[store]` settings: where the audit store lives and how records reach it. Owned by
//! `store` (as `gather` owns `[fhir]`), so the store needs nothing else of the configuration.

use serde::Deserialize;

/// The file the store uses when `store.url` is not set: in the working directory, so the
/// README's first command (`cargo run`) works on a fresh machine with no set-up. Its full path
/// is printed at start-up.
pub const DEFAULT_SQLITE_FILE: &str = "iort-cds.db";

/// `[store]` in the file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// Record hook calls, determinations and feedback. Off: nothing is kept (and, with
    /// PostgreSQL not in use, the replay memory is this instance's own).
    pub enabled: bool,
    /// `sqlite:///path/file.db`, `sqlite://relative.db` or `postgres://user@host/db`.
    /// Unset: `sqlite://iort-cds.db` in the working directory.
    /// Also `IORT_CDS_STORE_URL` and `--store-url`.
    pub url: Option<String>,
    /// Keep each call's request body too. Off by default: it holds the patient's record (PHI).
    pub keep_requests: bool,
    /// Records older than this many days are deleted (checked at start-up and hourly).
    /// 0 keeps them forever. Default 2190 (six years).
    pub retention_days: u32,
    /// Records waiting to be written. A full queue refuses new records (counted, logged and
    /// shown by `/readyz`); the hook call is answered all the same.
    pub queue_capacity: usize,
    /// Most records written in one transaction.
    pub batch_size: usize,
    /// Database connections per instance.
    pub max_connections: u32,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            url: None,
            keep_requests: false,
            retention_days: 2190,
            queue_capacity: 10_000,
            batch_size: 500,
            max_connections: 4,
        }
    }
}

impl StoreSettings {
    /// The database URL in use (the default file when `url` is unset).
    pub fn url(&self) -> String {
        self.url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{DEFAULT_SQLITE_FILE}"))
    }

    /// Checks that cannot be expressed in types: the setting and what is wrong with it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let url = self.url();
        if super::Backend::of(&url).is_none() {
            return Err((
                "store.url",
                "must start with sqlite:// or postgres:// (or postgresql://)".to_owned(),
            ));
        }
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Err((
                "store.url",
                "an in-memory SQLite database would lose every record at exit; name a file"
                    .to_owned(),
            ));
        }
        if !(1..=1_000_000).contains(&self.queue_capacity) {
            return Err((
                "store.queue_capacity",
                "must be between 1 and 1000000".to_owned(),
            ));
        }
        if !(1..=10_000).contains(&self.batch_size) {
            return Err(("store.batch_size", "must be between 1 and 10000".to_owned()));
        }
        if !(1..=100).contains(&self.max_connections) {
            return Err((
                "store.max_connections",
                "must be between 1 and 100".to_owned(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_a_sqlite_file_in_the_working_directory() {
        let s = StoreSettings::default();
        assert_eq!(s.url(), "sqlite://iort-cds.db");
        assert!(s.enabled && !s.keep_requests);
        assert_eq!(s.validate(), Ok(()));
        let described = super::super::describe(&s);
        assert!(described.starts_with("SQLite file /"), "{described}");
        assert!(described.ends_with("/iort-cds.db"), "{described}");
    }

    #[test]
    fn bad_values_are_named_and_a_password_is_never_shown() {
        let bad = |s: StoreSettings| s.validate().unwrap_err().0;
        let base = StoreSettings::default();
        assert_eq!(
            bad(StoreSettings {
                url: Some("mysql://x".into()),
                ..base.clone()
            }),
            "store.url"
        );
        assert_eq!(
            bad(StoreSettings {
                url: Some("sqlite::memory:".into()),
                ..base.clone()
            }),
            "store.url"
        );
        assert_eq!(
            bad(StoreSettings {
                queue_capacity: 0,
                ..base.clone()
            }),
            "store.queue_capacity"
        );
        assert_eq!(
            bad(StoreSettings {
                batch_size: 0,
                ..base.clone()
            }),
            "store.batch_size"
        );
        let pg = StoreSettings {
            url: Some("postgres://iort:s3cret@db.internal:5432/iort?sslmode=require".into()),
            ..base
        };
        assert_eq!(pg.validate(), Ok(()));
        let described = super::super::describe(&pg);
        assert_eq!(
            described,
            "PostgreSQL postgres://iort@db.internal:5432/iort"
        );
    }
}
