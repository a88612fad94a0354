//! The request's prefetch: which keys are missing (to be fetched), and the record built from
//! what was sent. Building itself is [`crate::record::builder`], shared with fetching.

use std::collections::BTreeMap;

use crate::hook::Prefetch;

pub use crate::record::builder::{
    OBSERVATION_VALUE_SETS, RecordBuilder, counted_entries, is_outcome_entry,
    observation_is_relevant, record_from_prefetch, references_patient,
};

/// Declared prefetch keys the request did not send (a key sent as `null` counts as sent: the
/// client looked and found nothing).
pub fn missing_keys(declared: &BTreeMap<String, String>, prefetch: &Prefetch) -> Vec<String> {
    declared
        .keys()
        .filter(|k| !prefetch.contains_key(k.as_str()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_keys_ignore_null_values() {
        let mut declared = BTreeMap::new();
        declared.insert("a".to_owned(), "A".to_owned());
        declared.insert("b".to_owned(), "B".to_owned());
        let mut prefetch = serde_json::Map::new();
        prefetch.insert("a".into(), serde_json::Value::Null);
        let prefetch = Prefetch::from_map(prefetch);
        assert_eq!(missing_keys(&declared, &prefetch), vec!["b".to_owned()]);
    }
}
