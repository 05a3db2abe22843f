//! The runtime's layers import one way (docs/architecture.md): a file may use what lives in its
//! own layer or below, never above; the three surface rooms (triggers, isolation, admin) never
//! use each other. This test reads every file of `nanoflow-runtime/src` and fails on an import
//! that runs back up, unless it is one of the few named exceptions below, each with its reason.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers, bottom first, and the top-level modules in each.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "core",
        &[
            "error",
            "fingerprint",
            "graph",
            "id",
            "json",
            "node",
            "trigger",
            "runs",
            "rules",
            "stats",
            "schema",
        ],
    ),
    ("store", &["store", "journal"]),
    ("observe", &["observability"]),
    (
        "engine",
        &["run", "map", "state", "workflow", "replay", "wait"],
    ),
    ("ingress", &["ingress", "config"]),
    ("surface", &["triggers", "isolation", "admin"]),
    ("runner", &["runner", "testing"]),
    ("facade", &["lib", "__private"]),
];

/// Imports allowed to run back up, each for a reason written in docs/architecture.md.
const EXCEPTIONS: &[(&str, &str)] = &[
    // The node contract's fast path hands its call to the run context: the one place the
    // contract names the engine.
    ("node", "run"),
    // The configuration holds the container settings, which live with the containers.
    ("config", "isolation"),
    // The shared state of a runner holds the trigger connections and the admin sessions.
    ("ingress", "triggers"),
    ("ingress", "admin"),
];

fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    LAYERS
        .iter()
        .enumerate()
        .find(|(_, (_, mods))| mods.contains(&module))
        .map(|(i, (name, _))| (i, *name))
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module of a file: `triggers/http.rs` -> `triggers`, `run.rs` -> `run`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// The top-level modules a file names as `crate::<module>`, outside comments.
fn imports(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
            rest = after;
        }
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn runtime_imports_run_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../nanoflow-runtime/src");
    let mut all = Vec::new();
    files(&src, &mut all);
    all.sort();
    assert!(
        all.len() > 30,
        "found only {} files under {}",
        all.len(),
        src.display()
    );
    let mut unknown = Vec::new();
    let mut violations = Vec::new();
    let mut used_exceptions: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for file in &all {
        let from = module_of(&src, file);
        let Some((from_layer, from_name)) = layer_of(&from) else {
            unknown.push(format!("{} (module `{from}`)", file.display()));
            continue;
        };
        if from_name == "facade" {
            // The top: it may name anything, through module paths or the root's re-exports.
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for to in imports(&text) {
            if to == from {
                continue;
            }
            let Some((to_layer, to_name)) = layer_of(&to) else {
                unknown.push(format!("`crate::{to}` in {}", file.display()));
                continue;
            };
            let upward = to_layer > from_layer;
            let sideways = to_layer == from_layer && from_name == "surface";
            if !(upward || sideways) {
                continue;
            }
            let rel = file.strip_prefix(&src).unwrap().display().to_string();
            if EXCEPTIONS.contains(&(from.as_str(), to.as_str())) {
                used_exceptions
                    .entry((from.clone(), to.clone()))
                    .or_default()
                    .push(rel);
                continue;
            }
            violations.push(format!(
                "{rel} ({from_name}) imports `crate::{to}` ({to_name}): {}",
                if upward {
                    "back up a layer"
                } else {
                    "a sibling surface"
                }
            ));
        }
    }
    assert!(
        unknown.is_empty(),
        "modules without a layer (add them to LAYERS and docs/architecture.md):\n{}",
        unknown.join("\n")
    );
    assert!(
        violations.is_empty(),
        "imports against the layers:\n{}",
        violations.join("\n")
    );
    assert!(EXCEPTIONS.len() <= 6, "at most 6 named exceptions");
    for (pair, _) in EXCEPTIONS
        .iter()
        .map(|(a, b)| ((a.to_string(), b.to_string()), ()))
    {
        assert!(
            used_exceptions.contains_key(&pair),
            "the exception {pair:?} is no longer used: remove it"
        );
    }
}

#[test]
fn the_import_reader_sees_paths_and_skips_comments() {
    let text = "use crate::run::RunCtx;\n// crate::admin is not imported\nlet x = crate::ingress::reply::json(1); // crate::runner\n";
    assert_eq!(imports(text), ["ingress", "run"]);
}
