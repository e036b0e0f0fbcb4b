//! The crate's floor plan, enforced: top-level modules sit in layers, and a module may use
//! (`crate::…`) only modules of lower layers, so the module graph has no cycle. A new edge
//! that goes sideways or up fails here; move the shared item down (usually into `model`,
//! `encoding` or `secret`) or pass it in from above.
//!
//! `cargo test --test architecture -- --nocapture` prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Lowest first. Within a layer, modules do not use each other.
const LAYERS: &[&[&str]] = &[
    // Vocabulary and primitives: nothing of the crate below them.
    &[
        "clock", "durable", "encoding", "error", "model", "rate", "secret",
    ],
    &["csr"],
    &["datadir", "metrics", "store"],
    &["notify", "policy"],
    &["payload", "validator"],
    &["ca", "inventory"],
    &["attest", "init", "revocation"],
    // The protocols.
    &["acme", "scep"],
    // Their faces: the JSON API, and the listeners.
    &["api", "http"],
    // What the operator configures, composed from each module's own settings.
    &["config"],
    &["logging"],
    // The wiring: the only module that knows every service.
    &["app"],
    // The operator's CLI.
    &["admin"],
];

/// The `crate::x` modules `text` (one file, tests and comments left out) uses.
fn uses(text: &str) -> BTreeSet<String> {
    let code: String = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::B, c}`: the first name of each top-level item.
            let (mut depth, mut item_start) = (0usize, 0usize);
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.insert(ident(&group[item_start..j]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(&group[item_start..j]));
                        item_start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.remove("");
    out
}

/// Every top-level module of the library and the modules it uses.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        // The binaries and the crate root sit above everything.
        if matches!(top.as_str(), "main" | "lib" | "bin") {
            continue;
        }
        let used = uses(&std::fs::read_to_string(&file).unwrap());
        let entry = graph.entry(top.clone()).or_default();
        entry.extend(used.into_iter().filter(|m| *m != top));
    }
    graph
}

#[test]
fn modules_use_only_lower_layers() {
    let layer_of: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, layer)| layer.iter().map(move |m| (*m, i)))
        .collect();
    let graph = graph();
    for (module, used) in &graph {
        println!(
            "{module:>10} -> {}",
            Vec::from_iter(used.iter().map(String::as_str)).join(" ")
        );
    }
    let mut wrong = Vec::new();
    for (module, used) in &graph {
        let Some(&layer) = layer_of.get(module.as_str()) else {
            wrong.push(format!(
                "module `{module}` is in no layer: add it to LAYERS"
            ));
            continue;
        };
        for target in used {
            match layer_of.get(target.as_str()) {
                None => wrong.push(format!("`{module}` uses `{target}`, which is in no layer")),
                Some(&t) if t >= layer => wrong.push(format!(
                    "`{module}` (layer {layer}) uses `{target}` (layer {t}): only lower layers"
                )),
                Some(_) => {}
            }
        }
    }
    for listed in layer_of.keys() {
        if !graph.contains_key(*listed) {
            wrong.push(format!("LAYERS lists `{listed}`, which is not a module"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The scanner finds what it must, or the rule above proves nothing.
#[test]
fn the_scanner_reads_paths_groups_and_skips_comments_and_tests() {
    let text = "use crate::{a::B, c, d::{E, F}};\nfn f() { crate::g::h(); }\n\
                // crate::comment\n#[cfg(test)]\nmod tests { use crate::t; }\n";
    let found: Vec<String> = uses(text).into_iter().collect();
    assert_eq!(found, ["a", "c", "d", "g"]);
}
