//! Which of an IORT order's `reasonReference`s may be read by id from the EHR's FHIR server.
//!
//! The order's reason decides the indication (rules 1a), but the Condition it names is not
//! always in the record: a `Condition?patient=` search or a prefetch may leave out encounter
//! diagnoses, resolved problems or another category. So the gather stage reads it by id. A
//! reference is data from the caller, and reading it means sending the bearer token, so only
//! what surely lies on the request's own `fhirServer` is read:
//!
//! - relative `Condition/x` or `Condition/x/_history/n`: read as `{fhirServer}/Condition/x`;
//! - absolute `https://…/Condition/x[/_history/n]`: read only when it is exactly
//!   `{fhirServer}/Condition/x…` (same origin and base path). Anywhere else is never
//!   contacted; a [`RecordIssue`](super::RecordIssue) says it was not read;
//! - contained `#x` (in the order itself), references to other types, and ids that are not
//!   FHIR ids (`[A-Za-z0-9.-]{1,64}`, not `.` or `..`) are never read.
//!
//! A version is not asked for: the current Condition is what the clinician's order refers to
//! now. Only the IORT orders' reasons come here (the pipeline finds those before gathering),
//! at most `fhir.max_reason_fetches` per call.

use crate::resource_ref::ResourceRef;
use serde_json::Value;

use super::allow_list::BaseUrl;
use super::prefetch::RecordBuilder;

/// The `source` of the record issues and log events about reasons read by id.
pub const SOURCE: &str = "reasonReference";

/// The `reasonReference.reference` values of an order (as received).
pub fn of_order(order: &Value) -> impl Iterator<Item = String> + '_ {
    order
        .get("reasonReference")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("reference").and_then(Value::as_str))
        .map(str::to_owned)
}

/// What to do with one reference.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// Read `Condition/{id}` from the request's server.
    Read(String),
    /// A Condition elsewhere: never contacted, noted.
    Elsewhere(String),
    /// Nothing to read (contained, another type, not a usable id, no server to compare with).
    Nothing,
}

/// The Condition ids to read, in order and without repeats; references to Conditions that
/// lie off the request's server (`base`) and are not in the record are noted as not read. With no usable
/// `base`, absolute references are left alone (there is nowhere to read them from).
pub fn to_fetch(
    references: &[String],
    base: Option<&BaseUrl>,
    b: &mut RecordBuilder<'_>,
) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for reference in references {
        match target(reference, base) {
            Target::Read(id) if !ids.contains(&id) => ids.push(id),
            Target::Read(_) | Target::Nothing => {}
            // Already in the record (the facts match reasons by id): nothing to read or note.
            Target::Elsewhere(id) if b.has("Condition", &id) => {}
            Target::Elsewhere(id) => {
                tracing::warn!(condition = %id, "an order's reason lies outside the request's fhirServer; not read");
                not_fetched(b, &id, "it lies outside the request's FHIR server");
            }
        }
    }
    ids
}

/// Note that the reason Condition `id` was not read, and why (no clinical content).
pub fn not_fetched(b: &mut RecordBuilder<'_>, id: &str, why: &str) {
    b.issue(
        SOURCE,
        Some(ResourceRef::new("Condition", Some(id)).to_string()),
        format!("the order's reason could not be read: {why}"),
    );
}

/// [`not_fetched`] for every id, for the same reason.
pub fn none_fetched(b: &mut RecordBuilder<'_>, ids: &[String], why: &str) {
    for id in ids {
        not_fetched(b, id, why);
    }
}

fn target(reference: &str, base: Option<&BaseUrl>) -> Target {
    let reference = reference.trim();
    if reference.starts_with('#') {
        return Target::Nothing;
    }
    if !reference.contains("://") {
        return match condition_path(reference) {
            Some((id, _)) => Target::Read(id.to_owned()),
            None => Target::Nothing,
        };
    }
    let Ok(url) = reqwest::Url::parse(reference) else {
        return Target::Nothing;
    };
    // The trailing `Condition/x[/_history/n]` of the path: what the reference names.
    let path = url.path();
    let segments: Vec<&str> = path.split('/').collect();
    let tail_len = if segments.len() >= 4 && segments[segments.len() - 2] == "_history" {
        4
    } else {
        2
    };
    let Some(tail) = segments
        .len()
        .checked_sub(tail_len)
        .map(|start| segments[start..].join("/"))
    else {
        return Target::Nothing;
    };
    let Some((id, _)) = condition_path(&tail) else {
        return Target::Nothing;
    };
    let Some(base) = base else {
        return Target::Nothing;
    };
    let on_server = url.query().is_none()
        && url.fragment().is_none()
        && base.relative_path(&url) == Some(tail.as_str());
    if on_server {
        Target::Read(id.to_owned())
    } else {
        Target::Elsewhere(id.to_owned())
    }
}

/// `Condition/x` or `Condition/x/_history/n` exactly: the id and the version, if any.
fn condition_path(path: &str) -> Option<(&str, Option<&str>)> {
    let mut parts = path.split('/');
    if parts.next() != Some("Condition") {
        return None;
    }
    let id = parts.next().filter(|id| is_fhir_id(id))?;
    match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) => Some((id, None)),
        (Some("_history"), Some(v), None) if is_fhir_id(v) => Some((id, Some(v))),
        _ => None,
    }
}

/// A FHIR id (`[A-Za-z0-9\-\.]{1,64}`), and not `.` or `..` (a URL would read those as path
/// steps).
fn is_fhir_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && id != "."
        && id != ".."
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::terminology::Terminology;
    use serde_json::json;

    fn base() -> BaseUrl {
        BaseUrl::parse("https://ehr.example.org/fhir/R4").unwrap()
    }

    #[test]
    fn references_are_read_only_on_the_request_server() {
        let b = base();
        let read = |id: &str| Target::Read(id.to_owned());
        let cases = [
            ("Condition/c1", read("c1")),
            (" Condition/c1 ", read("c1")),
            ("Condition/c1/_history/2", read("c1")),
            ("https://ehr.example.org/fhir/R4/Condition/c2", read("c2")),
            (
                "https://EHR.example.org:443/fhir/R4/Condition/c2/_history/7",
                read("c2"),
            ),
            // off the server: never contacted
            (
                "https://evil.example/fhir/R4/Condition/c3",
                Target::Elsewhere("c3".into()),
            ),
            (
                "http://ehr.example.org/fhir/R4/Condition/c3",
                Target::Elsewhere("c3".into()),
            ),
            (
                "https://ehr.example.org/fhir/R5/Condition/c3",
                Target::Elsewhere("c3".into()),
            ),
            (
                "https://ehr.example.org/fhir/R4/x/Condition/c3",
                Target::Elsewhere("c3".into()),
            ),
            (
                "https://ehr.example.org/fhir/R4/Condition/c3?x=1",
                Target::Elsewhere("c3".into()),
            ),
            (
                "https://u:p@ehr.example.org/fhir/R4/Condition/c3",
                Target::Elsewhere("c3".into()),
            ),
            // nothing to read
            ("#c4", Target::Nothing),
            ("Observation/o1", Target::Nothing),
            ("Condition/..", Target::Nothing),
            ("Condition/a%2Fb", Target::Nothing),
            ("Condition/x?patient=p2", Target::Nothing),
            ("Condition/x/y", Target::Nothing),
            ("Condition/", Target::Nothing),
            ("Condition", Target::Nothing),
            ("urn:uuid:0f4b6f0e-1", Target::Nothing),
            (
                "https://ehr.example.org/fhir/R4/Observation/o1",
                Target::Nothing,
            ),
        ];
        for (reference, expected) in cases {
            assert_eq!(target(reference, Some(&b)), expected, "{reference}");
        }
        // No server to compare with: an absolute reference is not read, and not noted here.
        assert_eq!(
            target("https://ehr.example.org/fhir/R4/Condition/c2", None),
            Target::Nothing
        );
        assert_eq!(target("Condition/c1", None), read("c1"));
        let long = format!("Condition/{}", "a".repeat(65));
        assert_eq!(target(&long, Some(&b)), Target::Nothing);
    }

    #[test]
    fn ids_are_deduplicated_and_off_server_references_noted() {
        let t = Terminology::default();
        let mut b = RecordBuilder::new("p1", &t);
        let refs: Vec<String> = [
            "Condition/c1",
            "https://ehr.example.org/fhir/R4/Condition/c1/_history/3",
            "#c9",
            "https://other.example/fhir/Condition/c5",
            "Condition/c2",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(to_fetch(&refs, Some(&base()), &mut b), ["c1", "c2"]);
        let r = b.finish();
        assert_eq!(r.issues.len(), 1);
        assert_eq!(r.issues[0].source, SOURCE);
        assert_eq!(r.issues[0].resource.as_deref(), Some("Condition/c5"));
        assert!(
            r.issues[0]
                .problem
                .contains("outside the request's FHIR server")
        );
        assert!(
            !r.issues[0].problem.contains("other.example"),
            "no URL in the problem"
        );
        assert!(r.unavailable.is_none());

        // An off-server reference to a Condition the record holds is not noted.
        let t = Terminology::load(&crate::assets::Assets::embedded()).unwrap();
        let mut b = RecordBuilder::new("p1", &t);
        b.add_value(
            "conditions",
            json!({"resourceType": "Condition", "id": "c5", "subject": {"reference": "Patient/p1"}}),
        );
        let refs = vec!["https://other.example/fhir/Condition/c5".to_owned()];
        assert!(to_fetch(&refs, Some(&base()), &mut b).is_empty());
        assert!(b.finish().issues.is_empty());
    }

    #[test]
    fn an_orders_reason_references_are_listed() {
        let order = json!({"reasonReference": [{"reference": "Condition/a"}, {"display": "x"},
            {"reference": "#b"}]});
        assert_eq!(of_order(&order).collect::<Vec<_>>(), ["Condition/a", "#b"]);
        assert_eq!(of_order(&json!({})).count(), 0);
    }
}
