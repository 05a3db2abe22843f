//! What the build script learns from cargo, and the nested builds of its own package.
//!
//! A build script runs before its package is compiled, so it cannot package that package's
//! binary. It runs cargo again instead, on the same package, with the same profile and features,
//! in a target directory of its own (`target/nanoflow-images/{runner,node}`; the outer build
//! holds the lock on its own directory), with `NANOFLOW_BUILD_NESTED=1` so the nested run of
//! this build script returns at once. The node build adds `--cfg nanoflow_node`, under which the
//! runtime's `Runner` serves one node and nothing else. Both nested builds share the outer
//! build's jobserver (`CARGO_MAKEFLAGS` is inherited), so they never run more jobs than `-j`.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Set for the nested builds: the build script does nothing under it.
pub(crate) const NESTED: &str = "NANOFLOW_BUILD_NESTED";

/// The package being built, from the build script's environment and `cargo metadata`.
#[derive(Debug)]
pub(crate) struct Package {
    /// The package's name: the service name in image names.
    pub(crate) name: String,
    manifest: PathBuf,
    /// The binary to package.
    pub(crate) bin: String,
    /// `target` (or `build-dir`) of the outer build.
    target_dir: PathBuf,
    /// The profile's directory name: `debug`, `release`, or a custom profile's name.
    profile_dir: String,
    features: Vec<String>,
    /// Files and directories whose change must rerun the build script.
    pub(crate) watched: BTreeSet<PathBuf>,
}

fn env(key: &str) -> Result<String, String> {
    std::env::var(key).map_err(|_| {
        format!("`{key}` is not set: call `nanoflow_build::images()` from a build script")
    })
}

impl Package {
    /// Reads the build script's environment and the package's metadata.
    pub(crate) fn from_env() -> Result<Self, String> {
        let out_dir = PathBuf::from(env("OUT_DIR")?);
        let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR")?).join("Cargo.toml");
        let name = env("CARGO_PKG_NAME")?;
        if env("TARGET")? != env("HOST")? {
            return Err(
                "cross-compiling: images are built only when the target is the host".into(),
            );
        }
        // OUT_DIR is <target>/<profile>/build/<package>-<hash>/out.
        let profile = out_dir
            .ancestors()
            .nth(3)
            .ok_or("OUT_DIR is not inside a target directory")?;
        let profile_dir = profile
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or("OUT_DIR is not inside a target directory")?;
        let target_dir = profile
            .parent()
            .ok_or("OUT_DIR is not inside a target directory")?
            .to_owned();
        let meta = metadata(&manifest)?;
        let root = meta["packages"]
            .as_array()
            .and_then(|ps| {
                ps.iter()
                    .find(|p| p["manifest_path"].as_str().map(Path::new) == Some(&manifest))
            })
            .ok_or("`cargo metadata` does not list this package")?;
        let bins: Vec<&str> = root["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| kinds(t).contains(&"bin"))
            .filter_map(|t| t["name"].as_str())
            .collect();
        let bin = match bins.as_slice() {
            [one] => (*one).to_owned(),
            [] => return Err(format!("package `{name}` has no binary to put in an image")),
            many => match many.iter().find(|b| **b == name) {
                Some(b) => (*b).to_owned(),
                None => {
                    return Err(format!(
                        "package `{name}` has several binaries ({}) and none is named `{name}`",
                        many.join(", ")
                    ))
                }
            },
        };
        let features = root["features"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(f, _)| f.clone())
            .filter(|f| {
                let var = format!("CARGO_FEATURE_{}", f.to_uppercase().replace('-', "_"));
                std::env::var_os(var).is_some()
            })
            .collect();
        let watched = watched(&meta, root);
        Ok(Self {
            name,
            manifest,
            bin,
            target_dir,
            profile_dir,
            features,
            watched,
        })
    }

    /// Where the manifest of the images goes: beside the binary cargo is about to link.
    pub(crate) fn binary_path(&self) -> PathBuf {
        self.target_dir.join(&self.profile_dir).join(&self.bin)
    }

    /// Builds the package's binary in `target/nanoflow-images/<kind>`; `node` adds
    /// `--cfg nanoflow_node`. Returns the binary's path.
    pub(crate) fn nested_build(&self, kind: &str, node: bool) -> Result<PathBuf, String> {
        let dir = self.target_dir.join("nanoflow-images").join(kind);
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.arg("build")
            .arg("--manifest-path")
            .arg(&self.manifest)
            .arg("--target-dir")
            .arg(&dir)
            .arg("--bin")
            .arg(&self.bin)
            .arg("--profile")
            .arg(match self.profile_dir.as_str() {
                "debug" => "dev",
                other => other,
            })
            .arg("--no-default-features");
        if !self.features.is_empty() {
            cmd.arg("--features").arg(self.features.join(","));
        }
        // The outer build's variables for this build script are not the nested build's.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let ours = [
                "OUT_DIR",
                "TARGET",
                "HOST",
                "NUM_JOBS",
                "OPT_LEVEL",
                "DEBUG",
                "PROFILE",
            ];
            if ours.contains(&key.as_ref())
                || [
                    "CARGO_FEATURE_",
                    "CARGO_CFG_",
                    "CARGO_PKG_",
                    "CARGO_MANIFEST_",
                ]
                .iter()
                .any(|p| key.starts_with(p))
                || key == "CARGO_PRIMARY_PACKAGE"
                || key == "RUSTC_WORKSPACE_WRAPPER"
            {
                cmd.env_remove(key.as_ref());
            }
        }
        let mut flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
        let profile = match self.profile_dir.as_str() {
            "debug" => "DEV".to_owned(),
            other => other.to_uppercase().replace('-', "_"),
        };
        if node {
            if !flags.is_empty() {
                flags.push('\x1f');
            }
            flags.push_str("--cfg\x1fnanoflow_node");
            // Smallest image: no symbols, no debug information.
            cmd.env(format!("CARGO_PROFILE_{profile}_STRIP"), "symbols");
        } else {
            // The runner keeps symbol names for its backtraces.
            cmd.env(format!("CARGO_PROFILE_{profile}_STRIP"), "debuginfo");
        }
        cmd.env("CARGO_ENCODED_RUSTFLAGS", flags)
            .env_remove("RUSTFLAGS")
            .env(NESTED, "1");
        let out = cmd
            .output()
            .map_err(|e| format!("running cargo for the {kind} image: {e}"))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!(
                "the nested build of the {kind} binary failed: {}",
                tail.join(" | ")
            ));
        }
        // With `build.target` configured, cargo puts even a host build under the triple.
        let plain = dir.join(&self.profile_dir).join(&self.bin);
        let under_triple = dir
            .join(std::env::var("TARGET").unwrap_or_default())
            .join(&self.profile_dir)
            .join(&self.bin);
        Ok(if plain.exists() || !under_triple.exists() {
            plain
        } else {
            under_triple
        })
    }
}

fn kinds(target: &serde_json::Value) -> Vec<&str> {
    target["kind"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_str())
        .collect()
}

fn metadata(manifest: &Path) -> Result<serde_json::Value, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(manifest)
        .env(NESTED, "1")
        .output()
        .map_err(|e| format!("running `cargo metadata`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`cargo metadata` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("`cargo metadata` is not JSON: {e}"))
}

/// What the service's binary is made of, on disk: the package's sources and those of every
/// local (path) package it depends on, their manifests, and the lock file. Registry packages
/// only change through the lock file.
fn watched(meta: &serde_json::Value, root: &serde_json::Value) -> BTreeSet<PathBuf> {
    let packages: Vec<&serde_json::Value> =
        meta["packages"].as_array().into_iter().flatten().collect();
    let nodes: Vec<&serde_json::Value> = meta["resolve"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let root_id = root["id"].as_str().unwrap_or_default();
    // Normal and build dependencies, transitively; dev-dependencies are not in the binary.
    let mut reached: HashSet<&str> = HashSet::from([root_id]);
    let mut queue = vec![root_id];
    while let Some(id) = queue.pop() {
        let Some(node) = nodes.iter().find(|n| n["id"].as_str() == Some(id)) else {
            continue;
        };
        for dep in node["deps"].as_array().into_iter().flatten() {
            let in_binary = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].as_str() != Some("dev"));
            if let Some(pkg) = dep["pkg"].as_str().filter(|_| in_binary) {
                if reached.insert(pkg) {
                    queue.push(pkg);
                }
            }
        }
    }
    let mut watched = BTreeSet::new();
    if let Some(ws) = meta["workspace_root"].as_str() {
        watched.insert(Path::new(ws).join("Cargo.lock"));
    }
    for p in packages {
        let local = p["source"].is_null();
        if !local || !reached.contains(p["id"].as_str().unwrap_or_default()) {
            continue;
        }
        let Some(manifest) = p["manifest_path"].as_str().map(Path::new) else {
            continue;
        };
        watched.insert(manifest.to_owned());
        let dir = manifest.parent().unwrap_or(Path::new("."));
        let is_root = p["id"] == root["id"];
        for t in p["targets"].as_array().into_iter().flatten() {
            let k = kinds(t);
            let compiled = k.iter().any(|k| {
                matches!(*k, "lib" | "rlib" | "proc-macro" | "custom-build")
                    || (is_root && *k == "bin")
            });
            let Some(src) = t["src_path"].as_str().map(Path::new).filter(|_| compiled) else {
                continue;
            };
            // A target's directory, unless that is the package's own (it may hold `target/`).
            match src.parent() {
                Some(parent) if parent != dir => watched.insert(parent.to_owned()),
                _ => watched.insert(src.to_owned()),
            };
        }
    }
    watched
}
