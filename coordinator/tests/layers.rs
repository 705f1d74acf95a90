//! The coordinator's modules form layers, and each imports only modules of lower layers (no
//! import circles): read off the sources, so a new upward import fails here, naming it. The
//! layers are drawn in ARCHITECTURE.md ("Coordinator layers"); keep the two in step.

use std::collections::BTreeMap;
use std::path::Path;

/// Bottom first. A module may use modules of strictly lower layers only.
const LAYERS: &[&[&str]] = &[
    &[
        "config",
        "error",
        "ids",
        "store",
        "resync",
        "rpc_metrics",
        "throttle",
    ],
    &["node_client"],
    &["remote", "labels", "registry"],
    &["durable", "service_error"],
    &["spares"],
    &["volumes"],
    &["rebuild", "scrub", "nbd"],
    &["metrics", "service"],
    &["lib"],
];

/// The `crate::` modules a source file refers to in code (comments and doc comments skipped).
fn uses(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in source.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
        // `use crate::{a, b::c}` groups.
        if let Some(i) = code.find("crate::{") {
            let group = &code[i + "crate::{".len()..];
            for item in group.split([',', '}']) {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push(name);
                }
            }
        }
    }
    found
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

#[test]
fn every_module_imports_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    let mut seen = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let module = path.file_stem().unwrap().to_string_lossy().into_owned();
        if module == "main" {
            continue; // the thin binary uses the library, not `crate::`
        }
        let mut source = std::fs::read_to_string(&path).unwrap();
        // A module's submodules (`name/`) belong to it.
        let dir = src.join(&module);
        if dir.is_dir() {
            for sub in std::fs::read_dir(&dir).unwrap() {
                let sub = sub.unwrap().path();
                if sub.extension().is_some_and(|e| e == "rs") {
                    source.push_str(&std::fs::read_to_string(sub).unwrap());
                }
            }
        }
        let Some(own) = layer_of(&module) else {
            violations.push(format!("module {module} is in no layer: add it to LAYERS"));
            continue;
        };
        for used in uses(&source) {
            if used == module {
                continue;
            }
            match layer_of(&used) {
                Some(l) if l < own => {}
                Some(_) => violations.push(format!(
                    "{module} (layer {own}) uses {used} (layer {}): not below it",
                    layer_of(&used).unwrap()
                )),
                None => violations.push(format!("{module} uses {used}, which is in no layer")),
            }
        }
        seen.insert(module, own);
    }
    for module in LAYERS.iter().flat_map(|l| l.iter()) {
        assert!(
            seen.contains_key(*module),
            "module {module} not found in src/"
        );
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_checker_finds_uses_in_code_and_groups_but_not_in_comments() {
    let source = "use crate::store::Store;\n//! see [`crate::volumes`]\nuse crate::{error, node_client::NodeClient};\nlet x = crate::labels::read();";
    assert_eq!(
        uses(source),
        vec!["store", "error", "node_client", "labels"]
    );
}
