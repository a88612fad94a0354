//! The case table, `tests/cases/*.json` (see `cases.rs` for its shape): one reader for every
//! test that replays it.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// `tests/cases`.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases")
}

/// Every case file, sorted by name: `(file name, path)`. Panics when there are none.
pub fn files() -> Vec<(String, PathBuf)> {
    let dir = dir();
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, p)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no case files in {}", dir.display());
    files
}

/// A case file's whole document (request and expectations).
pub fn read(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The case whose file name starts with `prefix` (say `"001-"`): `(file name, document)`.
pub fn named(prefix: &str) -> (String, Value) {
    let (name, path) = files()
        .into_iter()
        .find(|(name, _)| name.starts_with(prefix))
        .unwrap_or_else(|| panic!("no case {prefix}*"));
    let doc = read(&path);
    (name, doc)
}

/// The request of the case whose file name starts with `prefix`.
pub fn request(prefix: &str) -> Value {
    named(prefix).1["request"].clone()
}
