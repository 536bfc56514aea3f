//! The tree's parts depend one way only: each folder under `src/` imports
//! only the parts below it, and no file imports a file that imports it back.
//! Read from the source itself, so a new import that breaks the layering
//! fails here rather than in review.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Each part with its rank: a part may import parts of a lower rank only.
/// `proxy` and `reload` are peers and must not import each other, as are
/// `observe` and `policy`. `locks` is
/// documentation only and, at rank 0, may import nothing.
const PARTS: [(&str, u8); 12] = [
    ("locks", 0),
    ("pki", 0),
    ("routes", 1),
    ("candidate", 2),
    // Spans and their export import no other part, so both the access log
    // (which ends the server span) and the proxy (which starts spans) can.
    ("trace", 1),
    ("observe", 2),
    ("policy", 2),
    ("proxy", 3),
    ("reload", 3),
    ("tls", 4),
    ("admin", 5),
    ("run", 6),
];

fn rank(part: &str) -> Option<u8> {
    PARTS
        .iter()
        .find(|(name, _)| *name == part)
        .map(|(_, r)| *r)
}

/// `routes/table.rs` is module `routes::table`; `admin/mod.rs` is `admin`.
fn module_of(relative: &Path) -> String {
    let mut parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().map(String::as_str) == Some("mod") {
        parts.pop();
    }
    parts.join("::")
}

/// Every `crate::a::b` named in code (comments left out), as `a::b` or `a`.
fn imports(source: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in source.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let path: Vec<&str> = rest
                .split("::")
                .map(|seg| {
                    let end = seg
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(seg.len());
                    &seg[..end]
                })
                .take_while(|seg| !seg.is_empty() && seg.starts_with(|c: char| c.is_lowercase()))
                .take(2)
                .collect();
            if !path.is_empty() {
                found.insert(path.join("::"));
            }
        }
    }
    found
}

fn sources() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeMap::new();
    let mut pending = vec![src.clone()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(&src).expect("under src");
                let module = module_of(relative);
                if module == "lib" || module == "main" {
                    continue;
                }
                let text = fs::read_to_string(&path).expect("read source");
                modules.insert(module, imports(&text));
            }
        }
    }
    modules
}

#[test]
fn every_part_imports_only_the_parts_below_it() {
    let mut wrong = Vec::new();
    for (module, imported) in sources() {
        let part = module.split("::").next().unwrap_or_default().to_owned();
        let own = rank(&part).unwrap_or_else(|| panic!("{module} is in no known part"));
        for target in imported {
            let target_part = target.split("::").next().unwrap_or_default();
            if target_part == part {
                continue;
            }
            let theirs = rank(target_part)
                .unwrap_or_else(|| panic!("{module} imports {target}, in no known part"));
            if theirs >= own {
                wrong.push(format!("{module} imports {target}"));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layering: {wrong:#?}");
}

#[test]
fn no_file_imports_a_file_that_imports_it_back() {
    let modules = sources();
    let mut circles = Vec::new();
    for (module, imported) in &modules {
        for target in imported {
            let back = modules
                .get(target)
                .is_some_and(|theirs| theirs.contains(module));
            if back && module < target {
                circles.push(format!("{module} <-> {target}"));
            }
        }
    }
    assert!(circles.is_empty(), "import circles: {circles:#?}");
}
