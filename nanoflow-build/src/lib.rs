//! `cargo build` leaves a nanoflow service's images in the local Docker Engine.
//!
//! ```toml
//! [build-dependencies]
//! nanoflow-build = "0.1"
//! ```
//! ```no_run
//! // build.rs
//! fn main() {
//!     nanoflow_build::images();
//! }
//! ```
//!
//! With this, `cargo build` (any profile) builds, next to the service binary:
//! - the **runner image** `nanoflow/<package>:<hash>`: the service binary serving its triggers,
//!   listening on `0.0.0.0:8080` (`NANOFLOW_ADDR`), its journal on the volume `/data`;
//! - one **node image** per node, `nanoflow/<package>-<node>:<hash>`, holding only the node
//!   entrypoint: the node functions and the container protocol server, compiled with
//!   `--cfg nanoflow_node`, under which no HTTP server, trigger, journal, admin surface or Docker
//!   client is linked in.
//!
//! Every image is `FROM scratch` (nothing is pulled) and tagged with a hash of its content: an
//! unchanged image is not rebuilt. `serve --isolation container` uses the node images of its own
//! build (see [`manifest`]). Each image built is reported as a cargo warning with its size.
//!
//! The build never fails because of images: without a Docker Engine, or when the engine refuses
//! (no socket, permissions, a full disk), one cargo warning names the reason and the build of
//! the service goes on. `NANOFLOW_IMAGES=0` skips images altogether. `docs/images.md` in the
//! repository explains how the build script gets a binary of its own package (a nested build).
// The example's `fn main` is the point: it is the whole build script.
#![allow(clippy::needless_doctest_main)]

mod cargo;
mod engine;
mod image;
pub mod manifest;
mod tar;

use std::path::Path;

/// What the runtime's `images build` shares with this crate: one tar writer, one library finder.
/// Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::image::shared_libraries;
    pub use crate::tar::Tar;
}

use cargo::Package;
use engine::Engine;
use image::{Context, Node, Payload, NODE_BINARY, RUNNER_BINARY};
use manifest::Manifest;

/// Builds the runner image and one image per node of the package whose build script calls it;
/// see the [crate documentation](crate). Never panics and never fails the build: problems are
/// reported as one cargo warning.
pub fn images() {
    // The nested builds run this build script again: there it has nothing to do.
    if std::env::var_os(cargo::NESTED).is_some() {
        return;
    }
    println!("cargo:rerun-if-env-changed=NANOFLOW_IMAGES");
    println!("cargo:rerun-if-env-changed=DOCKER_HOST");
    let package = Package::from_env();
    if let Ok(package) = &package {
        for path in &package.watched {
            println!("cargo:rerun-if-changed={}", path.display());
        }
        // A list from an earlier build must not outlive images this build does not make.
        let _ = std::fs::remove_file(manifest::path_for(&package.binary_path()));
    }
    if std::env::var("NANOFLOW_IMAGES").is_ok_and(|v| v == "0") {
        return;
    }
    match package.and_then(|package| {
        let made = build(&package)?;
        let list = manifest::path_for(&package.binary_path());
        std::fs::write(&list, made.to_json())
            .map_err(|e| format!("writing {}: {e}", list.display()))
    }) {
        Ok(()) => {}
        Err(reason) => println!(
            "cargo:warning=nanoflow: no images built: {reason}; build again once that is fixed \
             (`<service> images build` also makes node images), or set NANOFLOW_IMAGES=0 to \
             skip images"
        ),
    }
}

fn build(package: &Package) -> Result<Manifest, String> {
    let engine = Engine::from_env()?;
    engine.ping()?;
    let runner_binary = package.nested_build("runner", false)?;
    let node_binary = package.nested_build("node", true)?;
    let nodes = list_nodes(&node_binary)?;

    let runner = image::runner(
        &package.name,
        &Payload::read(&runner_binary, RUNNER_BINARY)?,
    );
    let mut made = Manifest {
        service: package.name.clone(),
        runner: ensure(&engine, runner, "runner")?,
        nodes: Default::default(),
    };
    let payload = Payload::read(&node_binary, NODE_BINARY)?;
    for node in &nodes {
        let context = image::node(&package.name, node, &payload);
        let tag = ensure(&engine, context, &format!("node `{}`", node.name))?;
        made.nodes.insert(node.name.clone(), tag);
    }
    Ok(made)
}

/// The nodes the node entrypoint can serve, as it lists them itself.
fn list_nodes(node_binary: &Path) -> Result<Vec<Node>, String> {
    let out = std::process::Command::new(node_binary)
        .arg("nodes")
        .env_remove("NANOFLOW_NODE_SERVE")
        .output()
        .map_err(|e| format!("running {} to list its nodes: {e}", node_binary.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} cannot list its nodes (node images need nanoflow's `container` feature, on by \
             default, and a `main` that ends in `Runner::serve()`): {}",
            node_binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Node::parse_list(&String::from_utf8_lossy(&out.stdout))
}

/// Builds `context` unless the engine has its tag; reports a built image as a cargo warning.
fn ensure(engine: &Engine, context: Context, what: &str) -> Result<String, String> {
    let started = std::time::Instant::now();
    if let Some(size) = build_if_missing(engine, &context)? {
        println!(
            "cargo:warning=nanoflow: built the {what} image {} ({:.1} MB) in {:.1} s",
            context.tag,
            size as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(context.tag)
}

/// Builds `context` unless the engine has an image with its tag (its content): the size of the
/// image built, or `None` when it was there.
fn build_if_missing(engine: &Engine, context: &Context) -> Result<Option<u64>, String> {
    if engine.image_size(&context.tag)?.is_some() {
        return Ok(None);
    }
    engine.build(&context.tag, &context.tar)?;
    Ok(Some(engine.image_size(&context.tag)?.unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the real engine (`.ci/services-docker`): an image is built once, then found.
    #[test]
    fn an_unchanged_image_is_not_built_again() {
        let engine = Engine::from_env().unwrap();
        if let Err(reason) = engine.ping() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must provide a Docker Engine: {reason}"
            );
            eprintln!("\n*** SKIPPED: {reason} ***\n");
            return;
        }
        let nonce = format!("{:?}", std::time::SystemTime::now());
        let mut tar = tar::Tar::default();
        tar.file("Dockerfile", b"FROM scratch\nCOPY nonce /nonce\n", 0o644);
        tar.file("nonce", nonce.as_bytes(), 0o644);
        let context = Context {
            tag: format!("nanoflow/build-test:{}", std::process::id()),
            tar: tar.finish(),
        };
        let first = build_if_missing(&engine, &context).unwrap();
        assert!(
            first.is_some_and(|size| size == nonce.len() as u64),
            "{first:?}"
        );
        assert_eq!(build_if_missing(&engine, &context).unwrap(), None);
        let removed = std::process::Command::new("docker")
            .args(["rmi", &context.tag])
            .output()
            .unwrap();
        assert!(removed.status.success());

        // A build the engine refuses is an error that says why.
        let mut bad = tar::Tar::default();
        bad.file(
            "Dockerfile",
            b"FROM scratch\nCOPY missing /missing\n",
            0o644,
        );
        let refused = Context {
            tag: format!("nanoflow/build-test-bad:{}", std::process::id()),
            tar: bad.finish(),
        };
        let error = build_if_missing(&engine, &refused).unwrap_err();
        assert!(
            error.contains("building image `nanoflow/build-test-bad"),
            "{error}"
        );
        assert!(error.contains("missing"), "{error}");
    }
}
