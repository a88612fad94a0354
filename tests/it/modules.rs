//! The README's module graph ("How it works") is read from the code, and stays so: each line
//! `module -> imports` lists exactly the top-level modules whose `crate::` paths that module's
//! non-test code names, and the graph has no circle (issue 16). A new import, or an import
//! removed, fails here until the README says it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable folder").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules `text` names as `crate::<module>`, comments and the trailing
/// `#[cfg(test)] mod tests` left out.
fn named_modules(text: &str, out: &mut BTreeSet<String>) {
    let code = text
        .find("#[cfg(test)]\nmod tests")
        .map_or(text, |i| &text[..i]);
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or("");
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
}

/// The graph of the code: every `pub mod` of `src/lib.rs` and what it imports.
fn code_graph() -> Graph {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("src/lib.rs");
    let modules: Vec<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
        .map(str::to_owned)
        .collect();
    let mut graph = Graph::new();
    for module in &modules {
        let file = src().join(format!("{module}.rs"));
        let mut files = Vec::new();
        if file.exists() {
            files.push(file);
        } else {
            rust_files(&src().join(module), &mut files);
        }
        let mut imports = BTreeSet::new();
        for f in files {
            // Test-only files of a module.
            if matches!(
                f.file_name().and_then(|n| n.to_str()),
                Some("tests.rs" | "test_support.rs")
            ) {
                continue;
            }
            named_modules(
                &std::fs::read_to_string(&f).expect("readable"),
                &mut imports,
            );
        }
        imports.remove(module);
        graph.insert(module.clone(), imports);
    }
    graph
}

/// The graph the README draws, under "What each module imports".
fn readme_graph() -> Graph {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("What each module imports")
        .expect("the README's module graph");
    let block = &readme[start..];
    let block = &block[block.find("```text").expect("a text block") + "```text".len()..];
    let block = &block[..block.find("```").expect("the block ends")];
    let mut graph = Graph::new();
    let list = |s: &str| -> BTreeSet<String> {
        s.split(',')
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
            .collect()
    };
    for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
        // `name -> a (why), b   (a comment)` or `leaves: a, b`: comments in parentheses.
        let mut bare = String::new();
        let mut depth = 0usize;
        for c in line.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                _ if depth == 0 => bare.push(c),
                _ => {}
            }
        }
        let line = bare.as_str();
        if let Some(leaves) = line.strip_prefix("leaves:") {
            for leaf in list(leaves) {
                graph.insert(leaf, BTreeSet::new());
            }
        } else {
            let (name, imports) = line
                .split_once("->")
                .unwrap_or_else(|| panic!("not `module -> imports`: {line}"));
            graph.insert(name.trim().to_owned(), list(imports));
        }
    }
    graph
}

#[test]
fn the_readme_module_graph_is_the_code_and_has_no_circle() {
    let code = code_graph();
    assert_eq!(
        readme_graph(),
        code,
        "README \"How it works\" differs from the code's imports"
    );
    // No circle: repeatedly remove modules that import nothing left.
    let mut left = code.clone();
    while !left.is_empty() {
        let done: Vec<String> = left
            .iter()
            .filter(|(_, imports)| imports.iter().all(|i| !left.contains_key(i)))
            .map(|(m, _)| m.clone())
            .collect();
        assert!(!done.is_empty(), "an import circle among {:?}", left.keys());
        for m in done {
            left.remove(&m);
        }
    }
}
