//! Building the [`PatientRecord`] from prefetched (or fetched) FHIR JSON.
//!
//! The same code reads what the EHR prefetched and what the service fetched itself, so both
//! paths give the same record. The prefetch comes as text ([`RecordBuilder::add_text`]): a
//! Bundle's entries are read from it one by one and each kept resource is typed by fhirbolt
//! straight from its text, with no tree of the prefetch built; a FHIR server's pages come
//! parsed ([`RecordBuilder::add_value`]). Either way each resource is parsed on its own
//! (strict R4), so a resource that does not parse is skipped and noted, and the rest of the
//! record is kept. Resources about another patient are left out: they must never influence
//! this patient's answer.
//!
//! Real EHR search Bundles carry more than the record, and the builder sorts that out before
//! anything costly happens:
//!
//! - **Search outcome entries** (`search.mode` `outcome`, or an OperationOutcome resource):
//!   the server's notes about the search (Epic adds one to many pages). They are not record
//!   resources: logged (the source and the issues' `severity`/`code` values only, never the
//!   diagnostics text) and never counted against a limit, so a full 1,000-entry page plus its
//!   outcome entry is read like any other.
//! - **Resources the facts cannot use** ([`super::triage`]): many servers ignore the
//!   Observation query's `code` filter and send every vital sign and lab, and a long history
//!   holds comorbidities and unrelated operations. Such Observations are dropped, counted in
//!   [`PatientRecord::observations_dropped`]; such Conditions and Procedures are kept by id
//!   only ([`PatientRecord::condition_ids_only`], [`PatientRecord::procedure_ids_only`]).
//!   Neither is typed, and neither counts against `limits.max_record_resources`: noise must
//!   not make a record "too large to assess".

use crate::resource_ref::ResourceRef;
use std::collections::HashSet;

use fhirbolt::model::r4::Resource;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::triage::{Head, Verdict, reason_condition_ids};
pub use super::triage::{OBSERVATION_VALUE_SETS, observation_is_relevant};
use super::{PatientRecord, RecordIssue};
use crate::limits::{LimitExceeded, Limits};
use crate::terminology::Terminology;

/// Outcome entries logged one by one per record; the rest are only counted (an answer within
/// the byte limits could hold a hundred thousand of them).
const OUTCOME_ENTRIES_LOGGED: usize = 8;

/// Whether a Bundle entry is a search outcome entry, not a record resource: `search.mode` is
/// `outcome`, or its resource is an OperationOutcome.
pub fn is_outcome_entry(entry: &Value) -> bool {
    // `get` twice, not `pointer`: a pointer is parsed (and each of its parts copied) on every
    // call, and this runs on every entry of every Bundle.
    let member = |outer: &str, inner: &str| {
        entry
            .get(outer)
            .and_then(|v| v.get(inner))
            .and_then(Value::as_str)
    };
    member("search", "mode") == Some("outcome")
        || member("resource", "resourceType") == Some("OperationOutcome")
}

/// The entries of a Bundle that count against `limits.max_bundle_entries` (all but the search
/// outcome entries).
pub fn counted_entries(entries: &[Value]) -> usize {
    entries.iter().filter(|e| !is_outcome_entry(e)).count()
}

/// The `severity` and `code` values of an OperationOutcome's issues, for a log line: each value
/// only when it is a code of the FHIR value set (IssueSeverity, IssueType), else `other`, so a
/// server putting text in them cannot get it into the logs. At most 8 issues are named.
fn outcome_codes(outcome: Option<&Value>) -> (String, String) {
    const SEVERITIES: [&str; 4] = ["fatal", "error", "warning", "information"];
    const TYPES: [&str; 31] = [
        "invalid",
        "structure",
        "required",
        "value",
        "invariant",
        "security",
        "login",
        "unknown",
        "expired",
        "forbidden",
        "suppressed",
        "processing",
        "not-supported",
        "duplicate",
        "multiple-matches",
        "not-found",
        "deleted",
        "too-long",
        "code-invalid",
        "extension",
        "too-costly",
        "business-rule",
        "conflict",
        "transient",
        "lock-error",
        "no-store",
        "exception",
        "timeout",
        "incomplete",
        "throttled",
        "informational",
    ];
    let known = |issue: &Value, key: &str, list: &[&'static str]| -> &'static str {
        let value = issue.get(key).and_then(Value::as_str).unwrap_or_default();
        list.iter()
            .copied()
            .find(|k| *k == value)
            .unwrap_or("other")
    };
    let issues = outcome
        .and_then(|o| o.get("issue"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut severity = Vec::new();
    let mut code = Vec::new();
    for issue in issues.iter().take(8) {
        severity.push(known(issue, "severity", &SEVERITIES));
        code.push(known(issue, "code", &TYPES));
    }
    if issues.len() > 8 {
        severity.push("...");
        code.push("...");
    }
    (severity.join(","), code.join(","))
}

/// A resource as the builder gets it: its JSON text (the prefetch) or parsed (a FHIR server's
/// page, a reason read by id).
enum Body<'a> {
    Text(&'a RawValue),
    Tree(Value),
}

impl Body<'_> {
    /// The resource parsed (for the rare paths that need a value: an OperationOutcome).
    fn to_value(&self) -> Option<Value> {
        match self {
            Body::Text(text) => serde_json::from_str(text.get()).ok(),
            Body::Tree(value) => Some(value.clone()),
        }
    }
}

/// A Bundle entry as read from the Bundle's text, its resource still text.
#[derive(Deserialize)]
struct EntryText<'a> {
    #[serde(borrow)]
    resource: Option<&'a RawValue>,
    #[serde(borrow)]
    search: Option<Search<'a>>,
}

#[derive(Deserialize)]
struct Search<'a> {
    #[serde(borrow)]
    mode: Option<std::borrow::Cow<'a, str>>,
}

/// What a Bundle entry read from text holds: a resource, a search outcome entry, or nothing.
enum Entry<'a> {
    Resource(&'a RawValue),
    Outcome(&'a RawValue),
    NoResource,
}

impl<'a> Entry<'a> {
    fn of(entry: EntryText<'a>) -> Self {
        #[derive(Deserialize)]
        struct TypeOnly<'a> {
            #[serde(rename = "resourceType", borrow)]
            resource_type: Option<std::borrow::Cow<'a, str>>,
        }
        let Some(resource) = entry.resource else {
            return Entry::NoResource;
        };
        // Read the type only when the text could name an OperationOutcome at all.
        let may_be = |t: &str| t.contains("OperationOutcome") || t.contains('\\');
        let outcome = entry.search.and_then(|s| s.mode).as_deref() == Some("outcome")
            || (may_be(resource.get())
                && serde_json::from_str::<TypeOnly<'_>>(resource.get())
                    .is_ok_and(|t| t.resource_type.as_deref() == Some("OperationOutcome")));
        if outcome {
            Entry::Outcome(resource)
        } else {
            Entry::Resource(resource)
        }
    }
}

/// Accumulates resources into a record, parsing, filtering and de-duplicating them.
#[derive(Debug)]
pub struct RecordBuilder<'t> {
    record: PatientRecord,
    /// What the Observation filter looks codes up in (loaded once at start-up).
    terminology: &'t Terminology,
    seen: HashSet<(String, String)>,
    limits: Limits,
    /// Resources kept so far (bounded by `limits.max_record_resources`).
    kept: usize,
    /// Set once the record passed a limit: nothing more is read.
    over_limit: bool,
    /// Conditions read whole whatever they hold: the orders' reasons.
    whole_conditions: HashSet<String>,
}

impl<'t> RecordBuilder<'t> {
    /// A builder with the default [`Limits`].
    pub fn new(patient_id: &str, terminology: &'t Terminology) -> Self {
        Self::with_limits(patient_id, terminology, Limits::default())
    }

    /// A builder that stops reading, and marks the record unavailable (so the outcome is
    /// `indeterminate`), once a Bundle has more than `limits.max_bundle_entries` entries
    /// (outcome entries aside) or the record more than `limits.max_record_resources` kept
    /// resources.
    pub fn with_limits(patient_id: &str, terminology: &'t Terminology, limits: Limits) -> Self {
        Self {
            record: PatientRecord {
                patient_id: patient_id.to_owned(),
                ..PatientRecord::default()
            },
            terminology,
            seen: HashSet::new(),
            limits,
            kept: 0,
            over_limit: false,
            whole_conditions: HashSet::new(),
        }
    }

    /// Read whole the Conditions that `references` (the assessed orders'
    /// `reasonReference.reference` values) name, whatever they hold: an order's own reason
    /// decides its indication even when it is not a cancer. Call before adding resources.
    pub fn read_whole_conditions(&mut self, references: &[String]) {
        self.whole_conditions
            .extend(reason_condition_ids(references));
    }

    /// An empty builder for one source of the same record (same patient, terminology and
    /// limits), to be merged back with [`RecordBuilder::absorb`]: concurrent queries read into
    /// parts of their own as their pages arrive.
    pub fn part(&self) -> RecordBuilder<'t> {
        let mut part = Self::with_limits(&self.record.patient_id, self.terminology, self.limits);
        part.whole_conditions.clone_from(&self.whole_conditions);
        part
    }

    /// Merge a part read from `source` into this record, as if its resources had been added
    /// here in the order they were read: a resource already here (same type and id) is not
    /// added again, the record's limits apply to the sum, and nothing is added once the record
    /// is over a limit.
    pub fn absorb(&mut self, source: &str, part: RecordBuilder<'t>) {
        if self.over_limit {
            return;
        }
        let RecordBuilder {
            record: r,
            seen,
            over_limit,
            ..
        } = part;
        self.record.outcome_entries += r.outcome_entries;
        self.record.observations_dropped += r.observations_dropped;
        self.record.issues.extend(r.issues);
        if let Some(what) = r.unavailable {
            self.unavailable(what);
        }
        self.over_limit |= over_limit;
        let id = |id: Option<&fhirbolt::model::r4::types::Id>| id.and_then(|i| i.value.clone());
        let keep = |this: &mut Self, rtype: &str, id: Option<String>| -> bool {
            if let Some(id) = id
                && !this.seen.insert((rtype.to_owned(), id))
            {
                return false; // the same resource from another key, read first
            }
            if this.over_limit {
                return false;
            }
            if this.kept >= this.limits.max_record_resources {
                let limit = LimitExceeded {
                    setting: "limits.max_record_resources",
                    limit: this.limits.max_record_resources,
                    what: format!("more than {} resources", this.limits.max_record_resources),
                };
                this.too_large(source, limit);
                return false;
            }
            this.kept += 1;
            true
        };
        for c in r.conditions {
            if keep(self, "Condition", id(c.id.as_ref())) {
                self.record.conditions.push(c);
            }
        }
        for p in r.procedures {
            if keep(self, "Procedure", id(p.id.as_ref())) {
                self.record.procedures.push(p);
            }
        }
        for o in r.observations {
            if keep(self, "Observation", id(o.id.as_ref())) {
                self.record.observations.push(o);
            }
        }
        for c in r.coverages {
            if keep(self, "Coverage", id(c.id.as_ref())) {
                self.record.coverages.push(c);
            }
        }
        // Kept by id only: not counted, only not repeated.
        for (rtype, ids) in [
            ("Condition", r.condition_ids_only),
            ("Procedure", r.procedure_ids_only),
        ] {
            for id in ids {
                if !self.over_limit && self.seen.insert((rtype.to_owned(), id.clone())) {
                    self.record.ids_only(rtype).push(id);
                }
            }
        }
        // Resources the part read and skipped (unparsable) count as read here too.
        self.seen.extend(seen);
    }

    /// Whether the record already holds (or has read and skipped as unparsable) the resource
    /// `rtype/id`: fetching it again would add nothing.
    pub fn has(&self, rtype: &str, id: &str) -> bool {
        self.seen.contains(&(rtype.to_owned(), id.to_owned()))
    }

    /// Whether the record has been marked unavailable (its answer will be `indeterminate`).
    pub fn is_unavailable(&self) -> bool {
        self.record.unavailable.is_some()
    }

    /// Give up on the record: it is too large to assess within the limits.
    fn too_large(&mut self, source: &str, limit: LimitExceeded) {
        if !self.over_limit {
            self.over_limit = true;
            tracing::warn!(
                source,
                setting = limit.setting,
                "patient record over a limit; not assessed"
            );
            self.unavailable(format!(
                "{source}: the record is too large to assess: {limit}"
            ));
        }
    }

    /// Add a prefetch value from its JSON text (see [`crate::hook::Prefetch`]): a Bundle's
    /// entries are read from the text one by one, and each resource is typed from its text
    /// only if the triage keeps it; nothing else is built. Anything but a Bundle (a single
    /// resource, `null`, an OperationOutcome) is parsed and added as [`Self::add_value`] adds
    /// it, and so is a Bundle whose entries are not all shaped as FHIR says (an entry that is
    /// not an object, a `search` that is not one).
    pub fn add_text(&mut self, source: &str, text: &RawValue) {
        if self.over_limit {
            return;
        }
        #[derive(Deserialize)]
        struct BundleText<'a> {
            #[serde(rename = "resourceType", borrow)]
            resource_type: Option<std::borrow::Cow<'a, str>>,
            #[serde(borrow)]
            entry: Option<Vec<EntryText<'a>>>,
        }
        let bundle = serde_json::from_str::<BundleText<'_>>(text.get())
            .ok()
            .filter(|b| b.resource_type.as_deref() == Some("Bundle"));
        let Some(bundle) = bundle else {
            if let Ok(value) = serde_json::from_str::<Value>(text.get()) {
                self.add_value(source, value);
            }
            return;
        };
        let entries: Vec<Entry<'_>> = bundle
            .entry
            .unwrap_or_default()
            .into_iter()
            .map(Entry::of)
            .collect();
        let counted = entries
            .iter()
            .filter(|e| !matches!(e, Entry::Outcome(_)))
            .count();
        if let Err(limit) = self.limits.check_entries(counted) {
            self.too_large(source, limit);
            return;
        }
        for (i, entry) in entries.into_iter().enumerate() {
            match entry {
                Entry::Resource(text) => self.add_resource(source, Body::Text(text)),
                Entry::Outcome(text) => {
                    let outcome = serde_json::from_str::<Value>(text.get()).ok();
                    self.outcome(source, outcome.as_ref());
                }
                Entry::NoResource => {
                    self.issue(source, None, format!("Bundle entry {i} has no resource"))
                }
            }
        }
    }

    /// One Bundle entry, parsed: a search outcome entry, a resource, or an issue.
    fn add_entry(&mut self, source: &str, i: usize, entry: Value) {
        if is_outcome_entry(&entry) {
            return self.outcome(source, entry.get("resource"));
        }
        match entry {
            Value::Object(mut e) => match e.remove("resource") {
                Some(r) => self.add_resource(source, Body::Tree(r)),
                None => self.issue(source, None, format!("Bundle entry {i} has no resource")),
            },
            _ => self.issue(source, None, format!("Bundle entry {i} is not an object")),
        }
    }

    /// Add a prefetch value or a FHIR response body: a single resource, a Bundle (its entries
    /// are added one by one), or `null` (nothing).
    pub fn add_value(&mut self, source: &str, value: Value) {
        if self.over_limit {
            return;
        }
        match value {
            Value::Null => {}
            Value::Object(mut obj) => {
                if obj.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
                    let entries = match obj.remove("entry") {
                        Some(Value::Array(a)) => a,
                        _ => Vec::new(),
                    };
                    if let Err(limit) = self.limits.check_entries(counted_entries(&entries)) {
                        self.too_large(source, limit);
                        return;
                    }
                    for (i, entry) in entries.into_iter().enumerate() {
                        self.add_entry(source, i, entry);
                    }
                } else if obj.get("resourceType").and_then(Value::as_str)
                    == Some("OperationOutcome")
                {
                    self.source_failed(source, &Value::Object(obj));
                } else {
                    self.add_resource(source, Body::Tree(Value::Object(obj)));
                }
            }
            _ => self.issue(source, None, "is not a FHIR resource or Bundle".to_owned()),
        }
    }

    /// A search outcome entry: counted and logged (codes only), nothing else.
    fn outcome(&mut self, source: &str, outcome: Option<&Value>) {
        self.record.outcome_entries += 1;
        if self.record.outcome_entries > OUTCOME_ENTRIES_LOGGED {
            return;
        }
        let (severity, code) = outcome_codes(outcome);
        if severity.split(',').any(|s| s == "fatal" || s == "error") {
            tracing::warn!(
                source,
                severity,
                code,
                "search outcome entry in a Bundle (not a record resource)"
            );
        } else {
            tracing::info!(
                source,
                severity,
                code,
                "search outcome entry in a Bundle (not a record resource)"
            );
        }
    }

    /// A source whose whole value is an OperationOutcome: CDS Hooks 2.0 lets a client send one
    /// for a prefetch key it failed to fetch, instead of the data. With an issue of severity
    /// `error` or `fatal` the data exists but could not be read, so the record is unavailable
    /// (the answer `indeterminate`, never "not documented" for what the chart may well hold);
    /// with warnings or information only, it is a note about an empty answer.
    fn source_failed(&mut self, source: &str, outcome: &Value) {
        let (severity, code) = outcome_codes(Some(outcome));
        if severity.split(',').any(|s| s == "fatal" || s == "error") {
            tracing::warn!(
                source,
                severity,
                code,
                "the client sent an OperationOutcome for a prefetch key: the data could not be read"
            );
            self.unavailable(format!(
                "{source}: the EHR could not provide it (an OperationOutcome, {})",
                if code.is_empty() { "error" } else { &code }
            ));
        } else {
            self.outcome(source, Some(outcome));
        }
    }

    /// Note a problem with a whole source (e.g. it could not be fetched).
    pub fn issue(&mut self, source: &str, resource: Option<String>, problem: String) {
        self.record.issues.push(RecordIssue {
            source: source.to_owned(),
            resource,
            problem,
        });
    }

    /// Mark the record as not fully available (the decision will not guess).
    pub fn unavailable(&mut self, what: String) {
        match &mut self.record.unavailable {
            Some(existing) => {
                existing.push_str("; ");
                existing.push_str(&what);
            }
            None => self.record.unavailable = Some(what),
        }
    }

    /// Add one resource, read from its text or already parsed: filtered by type and patient,
    /// judged by the triage ([`super::triage`]), and typed only if the facts can use it.
    fn add_resource(&mut self, source: &str, body: Body<'_>) {
        // What the triage said, owned, so that the parsed value can be moved to the parser.
        let (rtype, id, about, verdict) = {
            let head = match &body {
                Body::Text(text) => match Head::of_text(text.get()) {
                    Some(head) => head,
                    // Not shaped as FHIR says: parsed, and read from the value.
                    None => match serde_json::from_str::<Value>(text.get()) {
                        Ok(value) => return self.add_resource(source, Body::Tree(value)),
                        Err(_) => return, // cannot happen: the text was read as JSON
                    },
                },
                Body::Tree(value) => Head::of_value(value),
            };
            let rtype = head.resource_type();
            // Only the four kinds the facts read; the rest (Patient, Encounter ...) is not
            // needed and not parsed. A lone OperationOutcome (not in a Bundle) is a search
            // note too.
            if rtype == "OperationOutcome" {
                return self.outcome(source, body.to_value().as_ref());
            }
            if !matches!(
                rtype,
                "Condition" | "Procedure" | "Observation" | "Coverage"
            ) {
                return;
            }
            (
                rtype.to_owned(),
                head.id().map(str::to_owned),
                head.about().map(str::to_owned),
                head.verdict(self.terminology, &self.whole_conditions),
            )
        };
        // A resource with no subject (beneficiary) is kept: the query that returned it was
        // already scoped to the patient.
        if about.is_some_and(|r| !references_patient(&r, &self.record.patient_id)) {
            return;
        }
        match verdict {
            // Before anything is kept or counted: an Observation the facts cannot use.
            Verdict::Noise => {
                self.record.observations_dropped += 1;
                return;
            }
            // A Condition or Procedure the facts read nothing of but its id: never typed.
            Verdict::IdOnly => {
                if let Some(id) = id
                    && self.seen.insert((rtype.clone(), id.clone()))
                {
                    self.record.ids_only(&rtype).push(id);
                }
                return;
            }
            Verdict::Type => {}
        }
        let reference = ResourceRef::new(&rtype, id.as_deref()).to_string();
        if let Some(id) = &id
            && !self.seen.insert((rtype.clone(), id.clone()))
        {
            return; // the same resource from two keys or pages
        }
        if self.over_limit {
            return;
        }
        if self.kept >= self.limits.max_record_resources {
            let limit = LimitExceeded {
                setting: "limits.max_record_resources",
                limit: self.limits.max_record_resources,
                what: format!("more than {} resources", self.limits.max_record_resources),
            };
            self.too_large(source, limit);
            return;
        }
        self.kept += 1;
        // fhirbolt recurses once per nested resource with large frames: a resource nesting
        // resources deeper than FHIR allows is skipped before it is parsed.
        let nesting = match &body {
            Body::Text(text) => {
                crate::limits::check_resource_nesting_in_text(text.get().as_bytes())
            }
            Body::Tree(value) => crate::limits::check_resource_nesting(value),
        };
        if let Err(e) = nesting {
            self.issue(source, Some(reference), e.to_string());
            return;
        }
        // From text: straight into the concrete type, the enum's way when that fails (see
        // `read_text_as`). A parsed value (a FHIR server's page) goes through the enum:
        // with serde_json's `arbitrary_precision` (which fhirbolt switches on), fhirbolt 0.4
        // rejects every JSON decimal when asked for a concrete resource type.
        let parsed = match body {
            Body::Text(text) => crate::fhir_json::read_text_as(&rtype, text.get()),
            Body::Tree(value) => crate::fhir_json::read::<Resource>(value),
        };
        let parsed = parsed.map(|r| match r {
            Resource::Condition(c) => self.record.conditions.push(*c),
            Resource::Procedure(p) => self.record.procedures.push(*p),
            Resource::Observation(o) => self.record.observations.push(*o),
            Resource::Coverage(c) => self.record.coverages.push(*c),
            _ => {} // unreachable: the resourceType was checked above
        });
        if let Err(e) = parsed {
            tracing::warn!(source, resource = %reference, "skipped a resource that does not parse as FHIR R4");
            self.issue(
                source,
                Some(reference),
                format!(
                    "does not parse as FHIR R4 {rtype}: {}",
                    redact(&e.to_string())
                ),
            );
        }
    }

    pub fn finish(self) -> PatientRecord {
        self.record
    }
}

/// `Patient/p1`, `https://ehr/fhir/Patient/p1` or `Patient/p1/_history/3` refer to patient `p1`.
pub fn references_patient(reference: &str, patient_id: &str) -> bool {
    let without_history = match reference.find("/_history/") {
        Some(i) => &reference[..i],
        None => reference,
    };
    without_history
        .strip_suffix(patient_id)
        .is_some_and(|head| head == "Patient/" || head.ends_with("/Patient/"))
}

/// fhirbolt errors may quote a value; keep only the part before any quoted text so no clinical
/// content reaches logs or cards.
fn redact(message: &str) -> String {
    let cut = message.find(['"', '\'']).unwrap_or(message.len());
    let m = message[..cut].trim_end_matches([' ', ':', ',']);
    if m.is_empty() {
        "invalid content".to_owned()
    } else {
        m.to_owned()
    }
}

/// Build the record from the request's prefetch alone.
pub fn record_from_prefetch(
    patient_id: &str,
    prefetch: &Map<String, Value>,
    terminology: &Terminology,
) -> PatientRecord {
    let mut b = RecordBuilder::new(patient_id, terminology);
    for (key, value) in prefetch {
        b.add_value(key, value.clone());
    }
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets::Assets;
    use serde_json::json;

    fn terminology() -> &'static Terminology {
        static T: std::sync::LazyLock<Terminology> = std::sync::LazyLock::new(|| {
            Terminology::load(&Assets::embedded()).expect("terminology")
        });
        &T
    }

    fn searchset(resources: Vec<Value>) -> Value {
        let entries: Vec<Value> = resources
            .into_iter()
            .map(|r| {
                let url = format!(
                    "https://ehr.example.org/fhir/{}/{}",
                    r["resourceType"].as_str().unwrap(),
                    r["id"].as_str().unwrap()
                );
                json!({"fullUrl": url, "resource": r, "search": {"mode": "match"}})
            })
            .collect();
        json!({"resourceType": "Bundle", "type": "searchset", "total": entries.len(), "entry": entries})
    }

    /// SNOMED CT 395536008 (surgical margin finding), of the margin-finding value set.
    fn margin_code() -> Value {
        json!({"coding": [{"system": "http://snomed.info/sct", "code": "395536008"}]})
    }

    fn observation(id: &str, code: Value) -> Value {
        json!({"resourceType": "Observation", "id": id, "status": "final",
            "subject": {"reference": "Patient/p1"}, "code": code})
    }

    /// A vital sign: LOINC 8867-4 heart rate, in none of the value sets the facts read.
    fn vital(id: &str) -> Value {
        let mut o = observation(
            id,
            json!({"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}),
        );
        o["valueQuantity"] = json!({"value": 72, "unit": "/min"});
        o
    }

    fn outcome_entry(mode: Option<&str>) -> Value {
        let mut e = json!({"resource": {"resourceType": "OperationOutcome", "issue": [
            {"severity": "warning", "code": "processing",
             "diagnostics": "SECRET-DIAGNOSTICS Mr Example has more results"},
            {"severity": "SECRET-SEVERITY", "code": "informational"}]}});
        if let Some(m) = mode {
            e["search"] = json!({"mode": m});
        }
        e
    }

    fn condition(id: &str, patient: &str) -> Value {
        json!({"resourceType": "Condition", "id": id, "subject": {"reference": format!("Patient/{patient}")},
               "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C20"}]}})
    }

    #[test]
    fn search_after_resource_parses_and_bad_entries_are_skipped() {
        let mut prefetch = Map::new();
        let bad = json!({"resourceType": "Observation", "id": "o-bad", "status": "final",
            "code": margin_code(), "subject": {"reference": "Patient/p1"}, "notAField": "SECRET"});
        let good = json!({"resourceType": "Observation", "id": "o1", "status": "final",
            "code": margin_code(), "subject": {"reference": "Patient/p1"}});
        prefetch.insert("observations".into(), searchset(vec![bad, good]));
        prefetch.insert("conditions".into(), searchset(vec![condition("c1", "p1")]));
        prefetch.insert("patient".into(), Value::Null);
        let r = record_from_prefetch("p1", &prefetch, terminology());
        assert_eq!(r.observations.len(), 1);
        assert_eq!(r.conditions.len(), 1);
        assert_eq!(r.issues.len(), 1);
        assert_eq!(r.issues[0].resource.as_deref(), Some("Observation/o-bad"));
        assert!(
            !r.issues[0].problem.contains("SECRET"),
            "{}",
            r.issues[0].problem
        );
    }

    #[test]
    fn decimals_survive_parsing() {
        let mut prefetch = Map::new();
        let obs: Value = serde_json::from_str(
            r#"{"resourceType": "Observation", "id": "d1", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "33737-8"}]},
                "subject": {"reference": "Patient/p1"},
                "valueQuantity": {"value": 1.0, "unit": "mm", "system": "http://unitsofmeasure.org", "code": "mm"}}"#,
        )
        .unwrap();
        prefetch.insert("observations".into(), searchset(vec![obs]));
        let r = record_from_prefetch("p1", &prefetch, terminology());
        assert!(r.issues.is_empty(), "{:?}", r.issues);
        assert_eq!(r.observations.len(), 1);
    }

    #[test]
    fn other_patients_and_duplicates_are_left_out() {
        let mut prefetch = Map::new();
        prefetch.insert(
            "conditions".into(),
            searchset(vec![
                condition("c1", "p1"),
                condition("c2", "p2"),
                condition("c1", "p1"),
            ]),
        );
        let r = record_from_prefetch("p1", &prefetch, terminology());
        assert_eq!(r.conditions.len(), 1);
    }

    #[test]
    fn patient_references() {
        assert!(references_patient("Patient/p1", "p1"));
        assert!(references_patient("https://x/fhir/Patient/p1", "p1"));
        assert!(references_patient("Patient/p1/_history/2", "p1"));
        assert!(!references_patient("Patient/xp1", "p1"));
        assert!(!references_patient("Group/p1", "p1"));
    }

    #[test]
    fn limits_make_the_record_unavailable_instead_of_partial() {
        let limits = Limits {
            max_bundle_entries: 2,
            max_record_resources: 3,
            ..Limits::default()
        };
        let conditions = |ids: &[&str]| searchset(ids.iter().map(|i| condition(i, "p1")).collect());
        // a Bundle over the entry limit is not read at all
        let mut b = RecordBuilder::with_limits("p1", terminology(), limits);
        b.add_value("conditions", conditions(&["a", "b", "c"]));
        let r = b.finish();
        assert!(r.conditions.is_empty());
        let why = r.unavailable.unwrap();
        assert!(
            why.starts_with("conditions: the record is too large"),
            "{why}"
        );
        assert!(why.contains("limits.max_bundle_entries = 2"), "{why}");
        // resources over the record limit, over several Bundles: said once
        let mut b = RecordBuilder::with_limits("p1", terminology(), limits);
        b.add_value("conditions", conditions(&["a", "b"]));
        b.add_value("more", conditions(&["c", "d"]));
        b.add_value("again", conditions(&["e"]));
        let r = b.finish();
        assert_eq!(r.conditions.len(), 3);
        let why = r.unavailable.unwrap();
        assert!(
            why.contains("limits.max_record_resources = 3") && !why.contains(";"),
            "{why}"
        );
        // duplicates do not count
        let mut b = RecordBuilder::with_limits("p1", terminology(), limits);
        b.add_value("conditions", conditions(&["a", "b"]));
        b.add_value("again", conditions(&["a", "b"]));
        assert!(b.finish().unavailable.is_none());
    }

    #[test]
    fn resources_nesting_resources_are_skipped_before_parsing() {
        let mut nested = condition("inner", "p1");
        for i in 0..6 {
            // A cancer code, so that it is read (one the facts cannot use is never parsed).
            nested = json!({"resourceType": "Condition", "id": format!("n{i}"),
                "subject": {"reference": "Patient/p1"}, "contained": [nested],
                "code": condition("x", "p1")["code"]});
        }
        let mut prefetch = Map::new();
        prefetch.insert(
            "conditions".into(),
            searchset(vec![nested, condition("ok", "p1")]),
        );
        let r = record_from_prefetch("p1", &prefetch, terminology());
        assert_eq!(r.conditions.len(), 1);
        assert_eq!(r.issues[0].resource.as_deref(), Some("Condition/n5"));
        assert!(
            r.issues[0].problem.contains("nested"),
            "{}",
            r.issues[0].problem
        );
    }

    #[test]
    fn a_full_page_with_outcome_entries_is_read_and_outcomes_are_not_counted() {
        let limits = Limits {
            max_bundle_entries: 3,
            max_record_resources: 3,
            ..Limits::default()
        };
        // A full page (3 = the limit) plus a search outcome entry, plus an OperationOutcome
        // some servers mark `match`, plus one with no search element at all.
        let mut page = searchset(vec![
            condition("a", "p1"),
            condition("b", "p1"),
            condition("c", "p1"),
        ]);
        let entries = page["entry"].as_array_mut().unwrap();
        entries.push(outcome_entry(Some("outcome")));
        entries.insert(0, outcome_entry(Some("match")));
        entries.push(outcome_entry(None));
        // An outcome-mode entry is not a record resource whatever it holds.
        entries.push(json!({"search": {"mode": "outcome"}, "resource": condition("z", "p1")}));
        assert_eq!(counted_entries(entries), 3);
        let mut b = RecordBuilder::with_limits("p1", terminology(), limits);
        b.add_value("conditions", page.clone());
        let r = b.finish();
        assert!(r.unavailable.is_none(), "{:?}", r.unavailable);
        assert_eq!(r.conditions.len(), 3);
        assert_eq!(r.outcome_entries, 4);
        assert!(r.issues.is_empty(), "{:?}", r.issues);
        // A lone OperationOutcome (a prefetch value) is not a record resource either.
        let mut b = RecordBuilder::with_limits("p1", terminology(), limits);
        b.add_value("observations", outcome_entry(None)["resource"].take());
        let r = b.finish();
        assert_eq!((r.outcome_entries, r.issues.len()), (1, 0));
        // One more real entry is over the limit, as before.
        page["entry"]
            .as_array_mut()
            .unwrap()
            .push(json!({"resource": condition("d", "p1")}));
        let mut b = RecordBuilder::with_limits("p1", terminology(), limits);
        b.add_value("conditions", page);
        let why = b.finish().unavailable.unwrap();
        assert!(why.contains("limits.max_bundle_entries = 3"), "{why}");
    }

    #[test]
    fn outcome_logs_name_the_source_and_codes_only() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let mut b = RecordBuilder::new("p1", terminology());
            let mut page = searchset(vec![condition("a", "p1")]);
            page["entry"]
                .as_array_mut()
                .unwrap()
                .push(outcome_entry(Some("outcome")));
            b.add_value("conditions", page);
            assert_eq!(b.finish().outcome_entries, 1);
        });
        let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(log.contains("search outcome entry"), "{log}");
        assert!(log.contains("source=\"conditions\""), "{log}");
        assert!(log.contains("severity=\"warning,other\""), "{log}");
        assert!(log.contains("code=\"processing,informational\""), "{log}");
        assert!(!log.contains("SECRET"), "{log}");
        // At most 8 issues are named.
        let many = json!({"issue": vec![json!({"severity": "error", "code": "too-costly"}); 20]});
        let (severity, code) = outcome_codes(Some(&many));
        assert_eq!(severity.split(',').count(), 9);
        assert!(code.ends_with("too-costly,..."), "{code}");
        assert_eq!(outcome_codes(None), (String::new(), String::new()));
    }

    #[test]
    fn observations_the_facts_cannot_use_are_dropped_unparsed_and_uncounted() {
        let t = terminology();
        let snomed = |code: &str| json!({"system": "http://snomed.info/sct", "code": code});
        let loinc = |code: &str| json!({"system": "http://loinc.org", "code": code});
        // each kept for one reason
        let t_category = observation("t", json!({"coding": [loinc("21905-5")]}));
        let distance = observation("dist", json!({"coding": [loinc("33737-8")]}));
        let margin = observation("margin", margin_code());
        let stage_group = observation("sg", json!({"coding": [loinc("21908-9")]}));
        let mut in_component = vital("comp");
        in_component["component"] = json!([{"code": {"coding": [loinc("8480-6")]}},
            {"code": {"coding": [snomed("395536008")]}}]);
        let mut t4_value = observation("t4v", json!({"text": "staging"}));
        t4_value["valueCodeableConcept"] = json!({"coding": [snomed("1229865000")]});
        let mut panel = observation("panel", json!({"text": "TNM panel"}));
        panel["hasMember"] = json!([{"reference": "Observation/t"}]);
        let kept = [
            &t_category,
            &distance,
            &margin,
            &stage_group,
            &in_component,
            &t4_value,
            &panel,
        ];
        for o in kept {
            assert!(observation_is_relevant(o, t), "{o}");
        }
        // dropped: vitals, a code only as text, the right code under another system, a
        // coding without a system, an empty hasMember
        let mut wrong_system = observation(
            "ws",
            json!({"coding": [{"system": "http://example.org", "code": "33737-8"}]}),
        );
        wrong_system["hasMember"] = json!([]);
        let dropped = [
            vital("hr"),
            observation("txt", json!({"text": "margin"})),
            wrong_system,
            observation("nosys", json!({"coding": [{"code": "395536008"}]})),
        ];
        for o in &dropped {
            assert!(!observation_is_relevant(o, t), "{o}");
        }

        // Thousands of vitals beside the relevant ones: read, within a record limit that
        // counts only what is kept.
        let limits = Limits {
            max_record_resources: 8,
            ..Limits::default()
        };
        let mut resources: Vec<Value> = (0..3000).map(|i| vital(&format!("v{i}"))).collect();
        resources.extend(kept.iter().map(|o| (*o).clone()));
        resources.extend(dropped.iter().cloned());
        let mut b = RecordBuilder::with_limits("p1", t, limits);
        b.add_value("observations", searchset(resources));
        b.add_value("conditions", searchset(vec![condition("c1", "p1")]));
        let r = b.finish();
        assert!(r.unavailable.is_none(), "{:?}", r.unavailable);
        assert_eq!(r.observations.len(), kept.len());
        assert_eq!(r.observations_dropped, 3000 + dropped.len());
        assert!(r.issues.is_empty(), "{:?}", r.issues);
        // Kept ones still count: one more relevant resource passes the record limit.
        let mut b = RecordBuilder::with_limits("p1", t, limits);
        let mut relevant: Vec<Value> = kept.iter().map(|o| (*o).clone()).collect();
        relevant.push(condition("c1", "p1"));
        relevant.push(condition("c2", "p1"));
        b.add_value("mixed", searchset(relevant));
        let why = b.finish().unavailable.unwrap();
        assert!(why.contains("limits.max_record_resources = 8"), "{why}");
    }

    /// Conditions and Procedures the facts cannot use (`record::triage`): in the record's id
    /// lists, once, never counted or parsed; from a prefetch's text as from parsed values.
    #[test]
    fn resources_kept_by_id_only_are_listed_once_and_never_parsed() {
        let t = terminology();
        let base = json!({"resourceType": "Condition", "id": "c1", "code": {"coding": [
            {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I10"}]}});
        let p = json!({"resourceType": "Procedure", "id": "p1", "status": "completed",
            "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "66984"}]}});
        // Kept by id only: in the record's id lists, once, and never counted or parsed.
        let mut prefetch = Map::new();
        let mut bad = base.clone();
        bad["id"] = json!("c2");
        bad["notAField"] = json!(1); // would not parse: never parsed, so no issue
        prefetch.insert("conditions".into(), searchset(vec![base.clone(), bad]));
        prefetch.insert("procedures".into(), searchset(vec![p.clone(), p]));
        let from_values = record_from_prefetch("p1", &prefetch, t);
        let mut b = RecordBuilder::new("p1", t);
        for (key, value) in &prefetch {
            b.add_text(key, &serde_json::value::to_raw_value(value).unwrap());
        }
        for r in [from_values, b.finish()] {
            assert!(r.conditions.is_empty() && r.procedures.is_empty());
            assert_eq!(r.condition_ids_only, ["c1", "c2"]);
            assert_eq!(r.procedure_ids_only, ["p1"]);
            assert!(r.issues.is_empty(), "{:?}", r.issues);
        }
    }

    /// Every decision case's request (those that parse), with its file name.
    fn cases() -> Vec<(String, crate::hook::HookRequest)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        assert!(files.len() >= 25, "{} cases", files.len());
        files
            .into_iter()
            .filter_map(|file| {
                let case: Value =
                    serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
                let request = crate::hook::HookRequest::from_json(case["request"].clone()).ok()?;
                Some((file.display().to_string(), request))
            })
            .collect()
    }

    /// Each IORT order's decision (outcome, criteria with their evidence, what is missing).
    fn decide_all(request: &crate::hook::HookRequest, record: &PatientRecord) -> Vec<String> {
        use crate::facts::{self, MarginThresholds};
        let t = terminology();
        facts::find_iort_orders(&request.context.draft_orders, t)
            .into_iter()
            .map(|o| {
                let d = crate::decision::decide(facts::extract(
                    o,
                    record,
                    t,
                    &MarginThresholds::default(),
                ));
                format!("{:?} {:?} {:?}", d.covered, d.criteria, d.missing)
            })
            .collect()
    }

    /// Every resource of `rtype` in the prefetch about `patient` that parses, in document
    /// order, each id once: what the record held before anything was filtered.
    fn every<T>(
        prefetch: &Map<String, Value>,
        rtype: &str,
        patient: &str,
        pick: impl Fn(Resource) -> Option<T>,
    ) -> Vec<T> {
        let mut ids = HashSet::new();
        prefetch
            .values()
            .flat_map(|v| match v.get("entry").and_then(Value::as_array) {
                Some(entries) => entries.iter().filter_map(|e| e.get("resource")).collect(),
                None => vec![v],
            })
            .filter(|r| r["resourceType"] == rtype)
            .filter(|r| {
                r.pointer("/subject/reference")
                    .and_then(Value::as_str)
                    .is_none_or(|s| references_patient(s, patient))
            })
            .filter(|r| r["id"].as_str().is_none_or(|id| ids.insert(id.to_owned())))
            .filter_map(|r| fhirbolt::json::from_json_value::<Resource>(r.clone(), None).ok())
            .filter_map(pick)
            .collect()
    }

    /// The record as the service builds it from a prefetch: from each key's text, the
    /// Conditions the orders name as their `reasons` read whole.
    fn from_text(
        patient: &str,
        prefetch: &Map<String, Value>,
        reasons: &[String],
    ) -> PatientRecord {
        let mut b = RecordBuilder::new(patient, terminology());
        b.read_whole_conditions(reasons);
        for (key, value) in prefetch {
            b.add_text(key, &serde_json::value::to_raw_value(value).unwrap());
        }
        b.finish()
    }

    /// Put `noise` beside the record: into the Bundle of `key` if there is one, else as a key
    /// of its own.
    fn add_noise(prefetch: &mut Map<String, Value>, key: &str, noise: Vec<Value>) {
        let noise = searchset(noise);
        match prefetch.get_mut(key).and_then(|o| o.get_mut("entry")) {
            Some(Value::Array(entries)) => {
                entries.extend(noise["entry"].as_array().unwrap().clone())
            }
            _ => {
                prefetch.insert(format!("noise-{key}"), noise);
            }
        }
    }

    /// The Observation filter must not change any answer: every decision case decides the same
    /// (criteria, evidence, outcome) from the filtered record as from one holding every
    /// Observation of the prefetch.
    #[test]
    fn the_observation_filter_changes_no_case() {
        let (mut compared, mut dropped) = (0, 0);
        for (file, request) in cases() {
            let patient = &request.context.patient_id;
            // A vital sign beside the case's record, so the filter has something to drop.
            let mut prefetch = request.prefetch.to_map();
            let mut vital = vital("noise-vital");
            vital["subject"] = json!({"reference": format!("Patient/{patient}")});
            add_noise(&mut prefetch, "observations", vec![vital]);
            let filtered = from_text(patient, &prefetch, &[]);
            dropped += filtered.observations_dropped;
            // The same record with every Observation about the patient that parses.
            let mut everything = filtered.clone();
            everything.observations = every(&prefetch, "Observation", patient, |r| match r {
                Resource::Observation(o) => Some(*o),
                _ => None,
            });
            assert_eq!(
                decide_all(&request, &filtered),
                decide_all(&request, &everything),
                "{file}"
            );
            compared += 1;
        }
        assert!(compared >= 25, "{compared} cases compared");
        assert!(dropped >= compared, "the noise was not dropped");
    }

    /// Keeping Conditions and Procedures the facts cannot use by id only must not change any
    /// answer: every decision case, with an unrelated problem and operation beside its record,
    /// decides the same as from a record holding every Condition and Procedure typed.
    #[test]
    fn reading_unusable_conditions_and_procedures_by_id_changes_no_case() {
        let (mut compared, mut by_id) = (0, 0);
        for (file, request) in cases() {
            let patient = &request.context.patient_id;
            let subject = json!({"reference": format!("Patient/{patient}")});
            let mut prefetch = request.prefetch.to_map();
            add_noise(
                &mut prefetch,
                "conditions",
                vec![
                    json!({"resourceType": "Condition", "id": "noise-hypertension",
                    "subject": subject, "code": {"coding": [{"system":
                    "http://hl7.org/fhir/sid/icd-10-cm", "code": "I10"}]}}),
                ],
            );
            add_noise(
                &mut prefetch,
                "procedures",
                vec![json!({"resourceType": "Procedure", "id": "noise-cataract",
                    "status": "completed", "subject": subject, "code": {"coding": [{"system":
                    "http://www.ama-assn.org/go/cpt", "code": "66984"}]}})],
            );
            // The orders' reasons, read whole as the gatherer reads them.
            let reasons: Vec<String> = request
                .context
                .draft_orders
                .iter()
                .flat_map(|o| {
                    o.raw["reasonReference"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|r| r["reference"].as_str().map(str::to_owned))
                })
                .collect();
            let triaged = from_text(patient, &prefetch, &reasons);
            by_id += triaged.condition_ids_only.len() + triaged.procedure_ids_only.len();
            let mut everything = triaged.clone();
            everything.conditions = every(&prefetch, "Condition", patient, |r| match r {
                Resource::Condition(c) => Some(*c),
                _ => None,
            });
            everything.procedures = every(&prefetch, "Procedure", patient, |r| match r {
                Resource::Procedure(p) => Some(*p),
                _ => None,
            });
            everything.condition_ids_only.clear();
            everything.procedure_ids_only.clear();
            assert_eq!(
                decide_all(&request, &triaged),
                decide_all(&request, &everything),
                "{file}"
            );
            compared += 1;
        }
        assert!(compared >= 25, "{compared} cases compared");
        assert!(by_id >= 2 * compared, "the noise was not kept by id only");
    }
}
