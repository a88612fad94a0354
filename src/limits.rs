//! Bounds on what one request (or one FHIR server answer) may make the service do.
//!
//! The body size is bounded by `max_body_bytes` and the pages fetched per query by
//! `fhir.max_pages`; this module bounds the *shape* of the JSON inside those bytes, because
//! size alone does not bound cost:
//!
//! - **Nesting depth** ([`Limits::max_json_depth`]). serde_json stops at 128 levels, but the
//!   code that walks the parsed value (the JSON Schema validator, fhirbolt's deserialisers)
//!   recurses too, with much larger stack frames: a 118-level request overflowed a 2 MiB
//!   worker stack in a debug build and aborted the whole process. So depth is checked on the
//!   raw bytes, before anything recurses, with a default of 64 (real FHIR rarely passes 20).
//! - **Resource nesting** ([`MAX_RESOURCE_NESTING`]). Each level of a resource inside a
//!   resource (`contained`, a Bundle inside a Bundle) costs fhirbolt far more stack than a
//!   plain JSON level (about 30 nested resources overflowed a debug worker). FHIR itself allows
//!   two (a contained resource may not contain resources, dom-2), plus the Bundle around them.
//! - **String length** ([`Limits::max_string_bytes`]): text is copied into cards, logs and
//!   error messages; no field the service reads is legitimately larger.
//! - **Draft orders** ([`Limits::max_draft_orders`]): each is parsed and, when IORT, assessed
//!   against the whole record, so their cost multiplies with the record's.
//! - **Bundle entries** ([`Limits::max_bundle_entries`]) and **resources in a record**
//!   ([`Limits::max_record_resources`]): the facts relate resources to each other (margins to
//!   procedures, staging to conditions), so their cost grows faster than the count. Only the
//!   resources the record keeps count against the record bound (see its doc comment); the
//!   per-Bundle bound is set well above real search pages, because a Bundle is already in
//!   memory (within the byte limits) when its entries are counted.
//!
//! - **Request bodies in flight** ([`Limits::max_inflight_body_bytes`]): the bytes of all the
//!   request bodies being read or answered at once, over all connections. Without it, memory
//!   grows with the number of clients rather than with the work (BENCHMARKS.md), though only
//!   one call per core runs at a time. A request waits for room before its body is read (its
//!   bytes stay in the client's socket meanwhile), and is answered 503 with `Retry-After` if
//!   no room comes within 10 s.
//!
//! - **JSON values** ([`Limits::max_json_values`]): parsed, every number, string, key and
//!   container is a heap value of 30-80 bytes whatever it takes in the text, so 8 MiB of `1,`
//!   cost ~480 MB. Counted on the bytes, with depth and strings.
//! - **How a body arrives** ([`Limits::body_timeout_ms`], [`Limits::min_body_bytes_per_sec`]):
//!   the body budget is taken as bytes arrive, not on a declared `Content-Length`, and a client
//!   that sends slower than the minimum rate after a short grace is cut off (408), so a client
//!   holding a connection open holds only what it has sent, and not for long.
//!
//! - **Connections** ([`Limits::max_connections`], [`Limits::idle_timeout_ms`]): how many
//!   may be open at once and how long an idle one is kept.
//!
//! Depth, string length and the value count are checked by one pass over the bytes ([`check_json`]) without
//! allocating; a request that fails answers 400 naming the setting, a FHIR server answer that
//! fails makes the outcome `indeterminate`. Too many draft orders answer 400; too many
//! entries in a record Bundle, or resources in the patient's record, make the outcome
//! `indeterminate` (the service will not decide on part of a record).

use serde::Deserialize;
use serde_json::Value;

/// The most resources nested inside one another on any path through a JSON document: a
/// Bundle, a resource in it, and one contained resource, plus one level of slack.
pub const MAX_RESOURCE_NESTING: usize = 4;

/// The hard ceiling for [`Limits::max_json_depth`]: deeper values have overflowed a 2 MiB
/// worker stack in debug builds (at 118 levels), so no setting may go near that.
pub const JSON_DEPTH_CEILING: usize = 100;

/// The `[limits]` section of the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Deepest JSON nesting accepted in a request body or a FHIR server answer (objects and
    /// arrays each count one level). At most [`JSON_DEPTH_CEILING`].
    pub max_json_depth: usize,
    /// Longest JSON string accepted, in bytes as written (escapes included).
    pub max_string_bytes: usize,
    /// Most entries in `context.draftOrders` (more: 400).
    pub max_draft_orders: usize,
    /// Most entries in one record Bundle, a prefetch value or one page from the FHIR server
    /// (more: `indeterminate`). Search `outcome` entries (OperationOutcomes) are not counted.
    ///
    /// Default 10,000. Real pages must pass: Epic pages at 1,000 entries (plus an outcome
    /// entry), and a server that does not page, or ignores the Observation query's `code`
    /// filter, can send a few thousand vital signs and labs in one Bundle. What this bound
    /// does not need to do is bound memory: the Bundle is parsed before its entries can be
    /// counted, so its size is already bounded by `fhir.max_response_bytes` (a page) or
    /// `max_body_bytes` (the prefetch). What is left to bound is the work per entry, which is
    /// linear and small (a patient check, and for Observations a code look-up before anything
    /// is parsed; the expensive parsing and assessing is bounded by `max_record_resources`).
    /// At about 1 KB per real entry (fullUrl, search, and a resource with codes, subject and
    /// dates), 8 MiB holds some 8,000, so a page passes 10,000 only when padded with
    /// near-empty entries.
    pub max_bundle_entries: usize,
    /// Most resources kept in one patient record, over all prefetch keys and pages (more:
    /// `indeterminate`). Counted are only the resources the facts read, after filtering: the
    /// four kinds read (Condition, Procedure, Observation, Coverage), about this patient, not
    /// seen before, and for Observations only those whose codes the facts can use (others
    /// are dropped unparsed and never count; see `gather::prefetch`). These are parsed and
    /// related to one another, so this bounds the costly part of a call. 5,000 is far above
    /// the cancer-related record of one patient.
    pub max_record_resources: usize,
    /// Most bytes of request bodies being read or answered at once (all connections
    /// together). At least `max_body_bytes`, so that one largest request can always run. One
    /// request per call thread may read past it to break a deadlock of partly read bodies
    /// (`http::body`), so the bound is this plus `max_body_bytes` per call thread.
    pub max_inflight_body_bytes: usize,
    /// Most JSON values (scalars, arrays, objects and object keys) in one request body or one
    /// FHIR server answer. Parsed, each value costs tens of bytes whatever its size in the
    /// text, so without it a body of small numbers costs many times its size (BENCHMARKS.md).
    pub max_json_values: usize,
    /// Longest a client may take to send a request body, in milliseconds.
    pub body_timeout_ms: u64,
    /// Slowest a client may send a request body, in bytes per second, after a grace of
    /// [`BODY_RATE_GRACE`]: a client that trickles its body is cut off instead of holding a
    /// connection and its share of the body budget for the whole `body_timeout_ms`.
    pub min_body_bytes_per_sec: usize,
    /// Most client connections open at once, over all HTTP workers; more wait in the listen
    /// backlog. Each open connection costs buffers, so their number is bounded, not left to
    /// the peers (15,000 idle connections added ~150 MB).
    pub max_connections: usize,
    /// How long an idle keep-alive connection is kept open, in milliseconds.
    pub idle_timeout_ms: u64,
}

/// How long a body may take before [`Limits::min_body_bytes_per_sec`] applies (a new
/// connection's TCP window is still opening, and small bodies arrive in one go anyway).
pub const BODY_RATE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_json_depth: 64,
            max_string_bytes: 256 * 1024,
            max_draft_orders: 1000,
            max_bundle_entries: 10_000,
            max_record_resources: 5000,
            // One call per core runs at once and each holds several times its body in parsed
            // form; the figures behind this value are in BENCHMARKS.md. Equal to the default
            // `max_body_bytes`.
            max_inflight_body_bytes: 8 * 1024 * 1024,
            // This bound, not the body's size, sets what a body of many small values costs;
            // real records stay well below it, even at `max_record_resources` (the
            // measurements are in BENCHMARKS.md, "Issue 13").
            max_json_values: 500_000,
            body_timeout_ms: 30_000,
            // A 8 MiB body at 64 KiB/s takes 2 minutes: far slower than any EHR on a network
            // that can reach this service, far faster than a trickle attack.
            min_body_bytes_per_sec: 64 * 1024,
            // An EHR keeps a handful of connections per node; a thousand is generous and costs
            // at most a few tens of MB of buffers.
            max_connections: 1024,
            idle_timeout_ms: 5_000,
        }
    }
}

/// A limit that was passed. `setting` names it as in the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} (limit: {setting} = {limit})")]
pub struct LimitExceeded {
    /// `limits.max_json_depth`, ...
    pub setting: &'static str,
    pub limit: usize,
    /// What was found, worded to follow "the request body ..." or "the answer ..." loosely,
    /// e.g. "JSON nested more than 64 levels deep". Never holds content.
    pub what: String,
}

impl Limits {
    /// Checks that cannot be expressed in types; the error names the setting.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(8..=JSON_DEPTH_CEILING).contains(&self.max_json_depth) {
            return Err((
                "limits.max_json_depth",
                format!("must be between 8 and {JSON_DEPTH_CEILING}"),
            ));
        }
        if self.max_string_bytes < 1024 {
            return Err((
                "limits.max_string_bytes",
                "must be at least 1024".to_owned(),
            ));
        }
        if self.max_draft_orders == 0 {
            return Err(("limits.max_draft_orders", "must be at least 1".to_owned()));
        }
        if self.max_bundle_entries == 0 {
            return Err(("limits.max_bundle_entries", "must be at least 1".to_owned()));
        }
        if self.max_record_resources == 0 {
            return Err((
                "limits.max_record_resources",
                "must be at least 1".to_owned(),
            ));
        }
        if self.max_json_values < 1000 {
            return Err(("limits.max_json_values", "must be at least 1000".to_owned()));
        }
        if !(1_000..=600_000).contains(&self.body_timeout_ms) {
            return Err((
                "limits.body_timeout_ms",
                "must be between 1000 and 600000".to_owned(),
            ));
        }
        if self.max_connections == 0 {
            return Err(("limits.max_connections", "must be at least 1".to_owned()));
        }
        if self.idle_timeout_ms > 600_000 {
            return Err((
                "limits.idle_timeout_ms",
                "must be at most 600000".to_owned(),
            ));
        }
        if self.min_body_bytes_per_sec == 0 {
            return Err((
                "limits.min_body_bytes_per_sec",
                "must be at least 1".to_owned(),
            ));
        }
        Ok(())
    }

    /// The error for `n` draft orders, if that is too many.
    pub fn check_draft_orders(&self, n: usize) -> Result<(), LimitExceeded> {
        if n > self.max_draft_orders {
            return Err(LimitExceeded {
                setting: "limits.max_draft_orders",
                limit: self.max_draft_orders,
                what: format!("{n} draft orders"),
            });
        }
        Ok(())
    }

    /// The error for a record Bundle with `n` entries (not counting search outcome entries),
    /// if that is too many.
    pub fn check_entries(&self, n: usize) -> Result<(), LimitExceeded> {
        if n > self.max_bundle_entries {
            return Err(LimitExceeded {
                setting: "limits.max_bundle_entries",
                limit: self.max_bundle_entries,
                what: format!("a Bundle with {n} entries"),
            });
        }
        Ok(())
    }
}

/// One pass over JSON text: nesting depth, string lengths and the number of values within
/// `limits`; returns that number (an upper bound: object keys and containers count).
///
/// Runs before the text is parsed, so it must not trust it: it skips strings (a backslash
/// escapes the next byte), counts `[`/`{` minus `]`/`}` outside strings, and measures each
/// string. Malformed JSON is left for the parser to report.
pub fn check_json(bytes: &[u8], limits: &Limits) -> Result<usize, LimitExceeded> {
    let mut depth = 0usize;
    // Every value but the first follows a `,` (array element, object member) or a `:` (member
    // value), or opens a container: their count bounds the values (object keys included).
    let mut values = 1usize;
    let too_many = |limits: &Limits| LimitExceeded {
        setting: "limits.max_json_values",
        limit: limits.max_json_values,
        what: format!("more than {} JSON values", limits.max_json_values),
    };
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => {
                // Most of a FHIR document's bytes are inside strings: jump from one quote or
                // backslash to the next with memchr instead of looking at every byte (see
                // BENCHMARKS.md for what the byte-by-byte pass cost).
                let start = i + 1;
                match string_end(bytes, i) {
                    Some(close) => {
                        if close - start > limits.max_string_bytes {
                            return Err(string_too_long(limits));
                        }
                        i = close + 1;
                    }
                    // An unterminated string is a syntax error for the parser, unless it is
                    // already too long.
                    None if bytes.len() - start > limits.max_string_bytes => {
                        return Err(string_too_long(limits));
                    }
                    None => return Ok(values),
                }
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                values += 1;
                if values > limits.max_json_values {
                    return Err(too_many(limits));
                }
                if depth > limits.max_json_depth {
                    return Err(LimitExceeded {
                        setting: "limits.max_json_depth",
                        limit: limits.max_json_depth,
                        what: format!(
                            "JSON nested more than {} levels deep",
                            limits.max_json_depth
                        ),
                    });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' | b':' => {
                values += 1;
                if values > limits.max_json_values {
                    return Err(too_many(limits));
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(values)
}

fn string_too_long(limits: &Limits) -> LimitExceeded {
    LimitExceeded {
        setting: "limits.max_string_bytes",
        limit: limits.max_string_bytes,
        what: format!(
            "a JSON string longer than {} bytes",
            limits.max_string_bytes
        ),
    }
}

/// The most resources (objects with a `resourceType`) nested inside one another on any path
/// of `value`. Iterative, so it is safe on any depth.
pub fn resource_nesting(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    // Runs on every resource of every record: scalars are never pushed, and the key is found
    // by comparing keys rather than hashing (a map lookup hashes with SipHash; the objects are
    // small).
    let nested = |v: &Value| matches!(v, Value::Object(_) | Value::Array(_));
    while let Some((v, above)) = stack.pop() {
        match v {
            Value::Object(o) => {
                let here = above + usize::from(o.keys().any(|k| k == "resourceType"));
                deepest = deepest.max(here);
                stack.extend(o.values().filter(|c| nested(c)).map(|c| (c, here)));
            }
            Value::Array(a) => stack.extend(a.iter().filter(|c| nested(c)).map(|c| (c, above))),
            _ => {}
        }
    }
    deepest
}

/// The end (index of the closing quote) of the JSON string whose opening quote is at `open`,
/// jumping from quote to backslash with memchr. `None` if it never ends.
fn string_end(bytes: &[u8], open: usize) -> Option<usize> {
    let mut at = open + 1;
    loop {
        let rest = bytes.get(at..)?;
        match memchr::memchr2(b'"', b'\\', rest) {
            Some(k) if rest[k] == b'\\' => at += k + 2,
            Some(k) => return Some(at + k),
            None => return None,
        }
    }
}

/// [`resource_nesting`] read from JSON text rather than from a parsed value, for the prefetch,
/// which is never parsed as a whole (`hook::call`): how many objects with a `resourceType`
/// member lie on the deepest path. Computed bottom-up, so a `resourceType` written after the
/// resources an object contains counts as well. The text must be valid JSON (checked by the
/// caller's parse); a key written with escapes is decoded before it is compared.
pub fn resource_nesting_in_text(bytes: &[u8]) -> usize {
    scan_resource_text(bytes).nesting
}

/// What one pass over a resource's JSON text finds: [`resource_nesting_in_text`], and whether
/// the text is an object whose own `resourceType` is one non-empty string (what the CDS Hooks
/// request schema asks of a prefetch value that is not `null`). The text must be valid JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceText {
    pub nesting: usize,
    /// An object with exactly one `resourceType` member of its own, a non-empty string.
    pub typed: bool,
}

/// One pass over JSON text for [`ResourceText`]: the prefetch's values are checked with it
/// instead of being read once for their `resourceType` and once more for their nesting.
pub fn scan_resource_text(bytes: &[u8]) -> ResourceText {
    // One frame per open container: (is an object, is a resource, deepest below it).
    let mut stack: Vec<(bool, bool, usize)> = Vec::new();
    let mut deepest = 0;
    // The top-level object's own `resourceType` members: how many, and how many non-empty
    // strings.
    let (mut own_types, mut own_named) = (0usize, 0usize);
    let top_is_object = bytes
        .iter()
        .find(|c| !c.is_ascii_whitespace())
        .is_some_and(|&c| c == b'{');
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => {
                let Some(close) = string_end(bytes, i) else {
                    break;
                };
                let in_object = stack.last().is_some_and(|f| f.0);
                let after = close
                    + 1
                    + bytes[close + 1..]
                        .iter()
                        .position(|c| !c.is_ascii_whitespace())
                        .unwrap_or(bytes.len() - close - 1);
                if in_object && bytes.get(after) == Some(&b':') {
                    let key = &bytes[i + 1..close];
                    let is_type = key == b"resourceType"
                        || (key.contains(&b'\\')
                            && serde_json::from_slice::<String>(&bytes[i..=close])
                                .is_ok_and(|k| k == "resourceType"));
                    if is_type && let Some(frame) = stack.last_mut() {
                        frame.1 = true;
                        if stack.len() == 1 {
                            own_types += 1;
                            // The member's value: a string of at least one character?
                            let value = bytes[after + 1..]
                                .iter()
                                .position(|c| !c.is_ascii_whitespace())
                                .map(|k| after + 1 + k);
                            if let Some(v) = value
                                && bytes[v] == b'"'
                                && string_end(bytes, v).is_some_and(|end| end > v + 1)
                            {
                                own_named += 1;
                            }
                        }
                    }
                }
                i = close + 1;
                continue;
            }
            b'{' => stack.push((true, false, 0)),
            b'[' => stack.push((false, false, 0)),
            b'}' | b']' => {
                if let Some((_, resource, below)) = stack.pop() {
                    let here = below + usize::from(resource);
                    match stack.last_mut() {
                        Some(parent) => parent.2 = parent.2.max(here),
                        None => deepest = deepest.max(here),
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    ResourceText {
        nesting: deepest,
        typed: top_is_object && own_types == 1 && own_named == 1,
    }
}

/// Whether JSON text holds an empty array (`[` and `]` with only whitespace between, outside
/// strings): FHIR forbids them and fhirbolt 0.4 can panic on them (`crate::fhir_json`).
pub fn has_empty_array_in_text(bytes: &[u8]) -> bool {
    // Most texts have none: look for a `]` right after a `[` (whitespace aside) anywhere, in
    // strings or not, and read the text properly only when there is one.
    let candidate = memchr::memchr_iter(b']', bytes).any(|close| {
        bytes[..close]
            .iter()
            .rev()
            .find(|c| !c.is_ascii_whitespace())
            == Some(&b'[')
    });
    if !candidate {
        return false;
    }
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => match string_end(bytes, i) {
                Some(close) => i = close,
                None => return false,
            },
            b'[' => {
                let next = bytes[i + 1..].iter().find(|c| !c.is_ascii_whitespace());
                if next == Some(&b']') {
                    return true;
                }
            }
            _ => {}
        }
        i += 1;
    }
    false
}

/// [`check_resource_nesting`] on JSON text.
pub fn check_resource_nesting_in_text(bytes: &[u8]) -> Result<(), LimitExceeded> {
    // A text naming `resourceType` no more often than the bound cannot nest deeper than it,
    // unless a key hides behind escapes: read properly only then.
    let named = memchr::memmem::find_iter(bytes, b"resourceType").count();
    if named <= MAX_RESOURCE_NESTING && memchr::memchr(b'\\', bytes).is_none() {
        return Ok(());
    }
    nesting_within(resource_nesting_in_text(bytes))
}

/// The error when `value` nests resources more than [`MAX_RESOURCE_NESTING`] deep.
pub fn check_resource_nesting(value: &Value) -> Result<(), LimitExceeded> {
    nesting_within(resource_nesting(value))
}

/// The error for resources nested `n` deep, if that is more than [`MAX_RESOURCE_NESTING`].
pub fn nesting_within(n: usize) -> Result<(), LimitExceeded> {
    if n > MAX_RESOURCE_NESTING {
        return Err(LimitExceeded {
            setting: "resource nesting (fixed)",
            limit: MAX_RESOURCE_NESTING,
            what: format!("resources nested {n} deep (contained or Bundle inside Bundle)"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn depth_is_counted_outside_strings_only() {
        let l = Limits {
            max_json_depth: 8,
            ..Limits::default()
        };
        assert!(check_json(nested(8).as_bytes(), &l).is_ok());
        let e = check_json(nested(9).as_bytes(), &l).unwrap_err();
        assert_eq!(e.setting, "limits.max_json_depth");
        // brackets inside strings, and escaped quotes, do not count
        let s = format!(
            r#"{{"a": "{}\"{}", "b": [[1]]}}"#,
            "[".repeat(50),
            "{".repeat(50)
        );
        assert!(check_json(s.as_bytes(), &l).is_ok());
        // siblings do not add up
        let wide = format!("[{}]", vec![nested(7); 100].join(","));
        assert!(check_json(wide.as_bytes(), &l).is_ok());
    }

    /// The byte-at-a-time scan `check_json` replaced: the reference it must agree with.
    fn reference(bytes: &[u8], limits: &Limits) -> Result<(), &'static str> {
        let (mut depth, mut in_string, mut escaped, mut start) = (0usize, false, false, 0);
        let mut values = 1usize;
        for (i, &b) in bytes.iter().enumerate() {
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                    if i - start > limits.max_string_bytes {
                        return Err("limits.max_string_bytes");
                    }
                }
                continue;
            }
            match b {
                b'"' => (in_string, start) = (true, i + 1),
                b'[' | b'{' => {
                    depth += 1;
                    values += 1;
                    if values > limits.max_json_values {
                        return Err("limits.max_json_values");
                    }
                    if depth > limits.max_json_depth {
                        return Err("limits.max_json_depth");
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                b',' | b':' => {
                    values += 1;
                    if values > limits.max_json_values {
                        return Err("limits.max_json_values");
                    }
                }
                _ => {}
            }
        }
        if in_string && bytes.len() - start > limits.max_string_bytes {
            return Err("limits.max_string_bytes");
        }
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// The memchr scan finds exactly what the plain scan finds, on text made mostly of the
        /// bytes that matter (quotes, backslashes, brackets) around short and long runs.
        #[test]
        fn fast_scan_agrees_with_the_plain_scan(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("\"".to_owned()),
                    proptest::strategy::Just("\\".to_owned()),
                    proptest::strategy::Just("\\\"".to_owned()),
                    proptest::strategy::Just("[".to_owned()),
                    proptest::strategy::Just("{".to_owned()),
                    proptest::strategy::Just("]".to_owned()),
                    proptest::strategy::Just("}".to_owned()),
                    proptest::strategy::Just(",".to_owned()),
                    proptest::strategy::Just(":".to_owned()),
                    proptest::strategy::Strategy::prop_map(0usize..60, |n| "x".repeat(n)),
                ],
                0..200,
            ),
            depth in 8usize..12,
            values in 5usize..80,
        ) {
            let text = parts.concat();
            let l = Limits {
                max_json_depth: depth,
                max_string_bytes: 40,
                max_json_values: values,
                ..Limits::default()
            };
            let fast = check_json(text.as_bytes(), &l).map(|_| ()).map_err(|e| e.setting);
            proptest::prop_assert_eq!(fast, reference(text.as_bytes(), &l));
        }
    }

    /// Any JSON: objects with and without `resourceType`, empty and full arrays, strings with
    /// quotes and brackets.
    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            prop_oneof![
                Just("x"),
                Just(""),
                Just("[]"),
                Just("\"{"),
                Just("resourceType")
            ]
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(6, 64, 4, |inner| {
            let key = prop_oneof![
                Just("resourceType"),
                Just("contained"),
                Just("a"),
                Just("b\"[")
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec((key, inner), 0..4).prop_map(|members| {
                    Value::Object(
                        members
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v))
                            .collect(),
                    )
                }),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]
        /// Read from the text, compact or pretty, resource nesting and empty arrays are what
        /// they are on the parsed value.
        #[test]
        fn text_scans_agree_with_the_parsed_value(value in any_json()) {
            for text in [value.to_string(), serde_json::to_string_pretty(&value).unwrap()] {
                proptest::prop_assert_eq!(
                    resource_nesting_in_text(text.as_bytes()),
                    resource_nesting(&value)
                );
                proptest::prop_assert_eq!(
                    check_resource_nesting_in_text(text.as_bytes()).is_ok(),
                    resource_nesting(&value) <= MAX_RESOURCE_NESTING
                );
                proptest::prop_assert_eq!(
                    scan_resource_text(text.as_bytes()).typed,
                    value
                        .get("resourceType")
                        .and_then(Value::as_str)
                        .is_some_and(|t| !t.is_empty())
                );
                proptest::prop_assert_eq!(
                    has_empty_array_in_text(text.as_bytes()),
                    crate::fhir_json::first_empty_array(&value).is_some()
                );
            }
        }
    }

    /// What the request schema asks of a prefetch value, read from its text: its own
    /// `resourceType`, once, a non-empty string.
    #[test]
    fn a_resource_text_names_its_own_type_once() {
        for (text, typed, nesting) in [
            (r#"{"resourceType": "Patient"}"#, true, 1),
            (r#" { "resource\u0054ype" : "\u0000" } "#, true, 1),
            (
                r#"{"entry": [{"resource": {"resourceType": "A"}}], "resourceType": "Bundle"}"#,
                true,
                2,
            ),
            (r#"{"resourceType": ""}"#, false, 1),
            (r#"{"resourceType": "A", "resourceType": "B"}"#, false, 1),
            (r#"{"resourceType": 5}"#, false, 1),
            (r#"{"resourceType": null}"#, false, 1),
            (r#"{"resourceType": ["A"]}"#, false, 1),
            (r#"{"a": {"resourceType": "A"}}"#, false, 1),
            (r#"["Patient"]"#, false, 0),
            (r#""Patient""#, false, 0),
            ("{}", false, 0),
        ] {
            let scan = scan_resource_text(text.as_bytes());
            assert_eq!((scan.typed, scan.nesting), (typed, nesting), "{text}");
        }
    }

    #[test]
    fn an_escaped_resource_type_key_counts_in_text() {
        let text = r#"{"resource\u0054ype": "Bundle", "entry": [{"resource": {"resourceType": "A",
            "contained": [{"resourceType": "B"}]}}]}"#;
        assert_eq!(resource_nesting_in_text(text.as_bytes()), 3);
        let later = r#"{"contained": [{"resourceType": "B"}], "resourceType": "A"}"#;
        assert_eq!(resource_nesting_in_text(later.as_bytes()), 2);
        assert!(check_resource_nesting_in_text(later.as_bytes()).is_ok());
    }

    #[test]
    fn values_are_counted_outside_strings() {
        let l = Limits {
            max_json_values: 1000,
            ..Limits::default()
        };
        // 1 array + 999 numbers = 1000 values.
        let ok = format!("[{}]", vec!["1"; 999].join(","));
        assert!(check_json(ok.as_bytes(), &l).is_ok());
        let over = format!("[{}]", vec!["1"; 1000].join(","));
        assert_eq!(
            check_json(over.as_bytes(), &l).unwrap_err().setting,
            "limits.max_json_values"
        );
        // Commas and colons inside strings are text, not values.
        let text = format!(r#"{{"k": "{}"}}"#, ",:".repeat(5000));
        assert!(check_json(text.as_bytes(), &l).is_ok());
        // object, key, value
        let obj = format!("[{}]", vec![r#"{"a":1}"#; 333].join(","));
        assert!(check_json(obj.as_bytes(), &l).is_ok());
        let obj = format!("[{}]", vec![r#"{"a":1}"#; 334].join(","));
        assert!(check_json(obj.as_bytes(), &l).is_err());
    }

    #[test]
    fn long_strings_are_refused_including_unterminated_ones() {
        let l = Limits {
            max_string_bytes: 1024,
            ..Limits::default()
        };
        let ok = format!(r#"{{"k": "{}"}}"#, "x".repeat(1024));
        assert!(check_json(ok.as_bytes(), &l).is_ok());
        let long = format!(r#"{{"k": "{}"}}"#, "x".repeat(1025));
        assert_eq!(
            check_json(long.as_bytes(), &l).unwrap_err().setting,
            "limits.max_string_bytes"
        );
        let open = format!(r#"{{"k": "{}"#, "x".repeat(2000));
        assert!(check_json(open.as_bytes(), &l).is_err());
        // a long key counts as a string too
        let key = format!(r#"{{"{}": 1}}"#, "k".repeat(1025));
        assert!(check_json(key.as_bytes(), &l).is_err());
    }

    #[test]
    fn messages_name_the_setting_not_the_content() {
        let l = Limits {
            max_string_bytes: 1024,
            ..Limits::default()
        };
        let body = format!(r#"{{"k": "SECRET{}"}}"#, "x".repeat(2000));
        let e = check_json(body.as_bytes(), &l).unwrap_err().to_string();
        assert!(e.contains("limits.max_string_bytes = 1024"), "{e}");
        assert!(!e.contains("SECRET"), "{e}");
    }

    #[test]
    fn resources_nested_in_resources_are_counted() {
        let bundle = json!({"resourceType": "Bundle", "entry": [{"resource":
            {"resourceType": "Condition", "contained": [{"resourceType": "Observation"}]}}]});
        assert_eq!(resource_nesting(&bundle), 3);
        assert!(check_resource_nesting(&bundle).is_ok());
        let mut deep = json!({"resourceType": "Condition"});
        for _ in 0..10 {
            deep = json!({"resourceType": "Condition", "contained": [deep]});
        }
        assert_eq!(resource_nesting(&deep), 11);
        assert!(check_resource_nesting(&deep).is_err());
        assert_eq!(resource_nesting(&json!({"a": [1, {"b": null}]})), 0);
    }

    #[test]
    fn settings_are_validated() {
        assert!(Limits::default().validate().is_ok());
        for (l, setting) in [
            (
                Limits {
                    max_json_depth: 101,
                    ..Limits::default()
                },
                "limits.max_json_depth",
            ),
            (
                Limits {
                    max_string_bytes: 10,
                    ..Limits::default()
                },
                "limits.max_string_bytes",
            ),
            (
                Limits {
                    max_bundle_entries: 0,
                    ..Limits::default()
                },
                "limits.max_bundle_entries",
            ),
            (
                Limits {
                    max_draft_orders: 0,
                    ..Limits::default()
                },
                "limits.max_draft_orders",
            ),
            (
                Limits {
                    max_record_resources: 0,
                    ..Limits::default()
                },
                "limits.max_record_resources",
            ),
        ] {
            assert_eq!(l.validate().unwrap_err().0, setting);
        }
        assert!(Limits::default().check_entries(10_000).is_ok());
        assert!(Limits::default().check_entries(10_001).is_err());
        assert!(Limits::default().check_draft_orders(1000).is_ok());
        assert!(Limits::default().check_draft_orders(1001).is_err());
    }
}
