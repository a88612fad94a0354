//! Structure-aware inputs for the `fhir_shapes` target (issue 13).
//!
//! Byte-level fuzzing of JSON rarely produces a *valid* request with one element of one
//! resource in a shape FHIR forbids: an empty array, an array where a primitive belongs, a
//! number for a string, `null`, a required element gone. Those shapes made fhirbolt panic and
//! 559 of 12,000 mutated requests answer 500, while four byte-level targets found none of it.
//! So here the fuzzer's bytes are not the request: they are *choices*. The first picks one of
//! the acceptance cases (`tests/cases/*.json`, every one a valid request); each following group
//! picks a node of that request (anywhere: envelope, context, draft orders, prefetch resources)
//! and a structural mutation to apply to it. libFuzzer's coverage guidance then steers the
//! choices, and every input it tries is a well-formed JSON request of the right overall shape.
//!
//! The same bytes always give the same request ([`mutate`]), so a crash input replays exactly.

use std::path::Path;
use std::sync::LazyLock;

use serde_json::{Value, json};

/// The requests of the acceptance cases, read once per process. They are read from the
/// repository at run time (the path is fixed at compile time), so a new case is a new seed
/// without a rebuild. This file is compiled in the fuzz crate and, for the replay in
/// `tests/regressions`, in the service's own tests: the cases are found from either.
pub static SEEDS: LazyLock<Vec<Value>> = LazyLock::new(|| {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = [here.join("tests/cases"), here.join("../tests/cases")]
        .into_iter()
        .find(|d| d.is_dir())
        .unwrap_or_else(|| here.join("tests/cases"));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{} is readable ({e})", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let seeds: Vec<Value> = files
        .iter()
        .filter_map(|p| {
            let doc: Value = serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
            doc.get("request").cloned()
        })
        .collect();
    assert!(!seeds.is_empty(), "no cases in {}", dir.display());
    seeds
});

/// The fuzzer's bytes read as a sequence of choices; past the end every choice is 0.
pub struct Choices<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Choices<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// A number below `n` (`n` > 0), from two bytes.
    pub fn below(&mut self, n: usize) -> usize {
        let v = usize::from(u16::from_le_bytes([self.byte(), self.byte()]));
        v % n.max(1)
    }

    pub fn exhausted(&self) -> bool {
        self.pos >= self.data.len()
    }
}

/// The mutations, each a shape that real (buggy) systems send or FHIR forbids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    /// `[]`: FHIR forbids empty arrays.
    EmptyArray,
    /// `{}`
    EmptyObject,
    /// `[node]`: an array where a primitive (or a single complex element) belongs.
    Wrap,
    /// A number where the node was (a code, a string, an object ...).
    Number,
    /// `null`
    Null,
    /// The element dropped from its object or array (required elements too).
    Remove,
    /// A string where the node was.
    Text,
    /// `true`
    Bool,
    /// Another node of the same request put here (type confusion between structures).
    Transplant,
    /// A primitive's extension sibling (`_code`) added in a wrong or odd shape.
    Underscore,
    /// `[node, null]` / `[null]`: nulls in arrays.
    NullInArray,
    /// An unknown element (`modifierExtension`-like names, a misspelling) with an odd value.
    Unknown,
}

const MUTATIONS: [Mutation; 12] = [
    Mutation::EmptyArray,
    Mutation::EmptyObject,
    Mutation::Wrap,
    Mutation::Number,
    Mutation::Null,
    Mutation::Remove,
    Mutation::Text,
    Mutation::Bool,
    Mutation::Transplant,
    Mutation::Underscore,
    Mutation::NullInArray,
    Mutation::Unknown,
];

/// Odd numbers: integers, decimals, signs, exponents, one past f64 and one past u64.
const NUMBERS: [&str; 8] = [
    "0",
    "-1",
    "77425",
    "1.5",
    "1e308",
    "-0.0",
    "18446744073709551616",
    "1e400",
];

const TEXTS: [&str; 6] = ["", " ", "x", "2024-13-45", "Patient/", "urn:uuid:"];

const UNKNOWN_KEYS: [&str; 6] = [
    "modifierExtension",
    "extension",
    "id",
    "resourceType",
    "fhir_comments",
    "note2",
];

/// The JSON pointers of every node of `v` (the root too), depth first.
fn pointers(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(v, String::new())];
    while let Some((v, p)) = stack.pop() {
        match v {
            Value::Object(o) => {
                for (k, x) in o {
                    let k = k.replace('~', "~0").replace('/', "~1");
                    stack.push((x, format!("{p}/{k}")));
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    stack.push((x, format!("{p}/{i}")));
                }
            }
            _ => {}
        }
        out.push(p);
    }
    out
}

fn number(c: &mut Choices<'_>) -> Value {
    let text = NUMBERS[c.below(NUMBERS.len())];
    // Out of f64 range parses to an error without arbitrary precision: then a large float.
    serde_json::from_str(text).unwrap_or_else(|_| json!(f64::MAX))
}

/// Apply one mutation at `pointer` (a node of `doc`).
fn apply(doc: &mut Value, pointer: &str, m: Mutation, c: &mut Choices<'_>) {
    if m == Mutation::Remove {
        let Some((parent, last)) = pointer.rsplit_once('/') else {
            return; // the root stays
        };
        let last = last.replace("~1", "/").replace("~0", "~");
        match doc.pointer_mut(parent) {
            Some(Value::Object(o)) => {
                o.remove(&last);
            }
            Some(Value::Array(a)) => {
                if let Ok(i) = last.parse::<usize>()
                    && i < a.len()
                {
                    a.remove(i);
                }
            }
            _ => {}
        }
        return;
    }
    if m == Mutation::Underscore || m == Mutation::Unknown {
        let Some((parent, last)) = pointer.rsplit_once('/') else {
            return;
        };
        let last = last.replace("~1", "/").replace("~0", "~");
        let value = match c.below(5) {
            0 => json!([]),
            1 => json!({}),
            2 => json!([null]),
            3 => json!({"extension": []}),
            _ => json!([{"id": 1}]),
        };
        if let Some(Value::Object(o)) = doc.pointer_mut(parent) {
            let key = if m == Mutation::Underscore {
                format!("_{last}")
            } else {
                UNKNOWN_KEYS[c.below(UNKNOWN_KEYS.len())].to_owned()
            };
            o.insert(key, value);
        }
        return;
    }
    let donor = if m == Mutation::Transplant {
        let all = pointers(doc);
        let from = &all[c.below(all.len())];
        doc.pointer(from).cloned()
    } else {
        None
    };
    let Some(node) = doc.pointer_mut(pointer) else {
        return;
    };
    let old = node.take();
    *node = match m {
        Mutation::EmptyArray => json!([]),
        Mutation::EmptyObject => json!({}),
        Mutation::Wrap => json!([old]),
        Mutation::Number => number(c),
        Mutation::Null => Value::Null,
        Mutation::Text => json!(TEXTS[c.below(TEXTS.len())]),
        Mutation::Bool => json!(true),
        Mutation::Transplant => donor.unwrap_or(old),
        Mutation::NullInArray => {
            if c.byte() & 1 == 0 {
                json!([null])
            } else {
                json!([old, null])
            }
        }
        Mutation::Remove | Mutation::Underscore | Mutation::Unknown => unreachable!(),
    };
}

/// The request the bytes choose: a case, then up to 8 mutations, each a node (from two bytes)
/// and a mutation (one byte). Nodes under `prefetch` and `draftOrders` are where the FHIR
/// parser runs, so half the choices (odd mutation bytes) look only there.
pub fn mutate(data: &[u8]) -> Value {
    let mut c = Choices::new(data);
    let seeds = &*SEEDS;
    let mut doc = seeds[usize::from(c.byte()) % seeds.len()].clone();
    let rounds = 1 + usize::from(c.byte() % 8);
    for _ in 0..rounds {
        if c.exhausted() {
            break;
        }
        let kind = c.byte();
        let mut all = pointers(&doc);
        if kind & 0x80 != 0 {
            all.retain(|p| p.starts_with("/prefetch/") || p.starts_with("/context/draftOrders/"));
        }
        if all.is_empty() {
            continue;
        }
        let at = all[c.below(all.len())].clone();
        let m = MUTATIONS[usize::from(kind & 0x7f) % MUTATIONS.len()];
        apply(&mut doc, &at, m, &mut c);
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_bytes_give_the_same_request() {
        for data in [
            &b""[..],
            b"\x01\x07\x00\x05\x00",
            b"\x02\x03\x80\x10\x00\x88\x20\x01",
        ] {
            assert_eq!(mutate(data), mutate(data));
        }
    }

    #[test]
    fn no_choices_give_the_first_case_unchanged() {
        assert_eq!(mutate(b""), SEEDS[0]);
    }

    #[test]
    fn an_empty_array_can_be_put_anywhere() {
        let doc = &SEEDS[0];
        let target = "/prefetch/conditions/entry/0/resource/category";
        let all = pointers(doc);
        let i = all
            .iter()
            .position(|p| p == target)
            .expect("the seed has a category");
        let mut d = doc.clone();
        apply(&mut d, target, Mutation::EmptyArray, &mut Choices::new(&[]));
        assert_eq!(d.pointer(target), Some(&json!([])));
        assert!(i < all.len());
    }
}
