//! One image per node, `FROM scratch`: the service's own binary, the exact shared libraries it
//! loads (from `ldd`), and an entrypoint that serves only that node. No base image is pulled, so
//! offline and air-gapped hosts work. Tags are content-addressed: an image whose content did not
//! change is not rebuilt.
//!
//! A service whose build script calls `nanoflow_build::images()` gets smaller node images from
//! `cargo build` itself (the node entrypoint only, see `docs/images.md`); those are used when
//! they belong to this binary ([`prebuilt`]), and this packaging is the fallback.

use std::collections::BTreeMap;
use std::hash::Hasher as _;
use std::path::Path;

use axum::body::Bytes;
use bollard::query_parameters::BuildImageOptions;
use bollard::Docker;
use futures_util::StreamExt as _;

use nanoflow_build::__private::{shared_libraries, Tar};

use crate::error::Error;
use crate::graph::Step;

/// Where the binary lives inside the image.
const BINARY: &str = "nanoflow/node";

/// A file to put in the image: its path inside the image and its content.
#[derive(Debug)]
pub(crate) struct Payload {
    files: Vec<(String, Vec<u8>, u32)>,
    /// A hash of every file's path and content.
    pub(crate) digest: u64,
    pub(crate) size: u64,
}

/// The images `cargo build` made for `binary`, from the manifest nanoflow-build wrote beside it;
/// `None` when there is none or `binary` is older than it (built without images, or a failed
/// build after the images were made).
pub(crate) fn prebuilt(binary: &Path) -> Option<nanoflow_build::manifest::Manifest> {
    let manifest = nanoflow_build::manifest::Manifest::for_binary(binary);
    if let Some(m) = &manifest {
        tracing::debug!(runner = %m.runner, nodes = m.nodes.len(), "images from `cargo build`");
    }
    manifest
}

/// The tag and size of `node`'s image in `manifest`, when the engine still has it.
pub(crate) async fn find_prebuilt(
    docker: &Docker,
    manifest: Option<&nanoflow_build::manifest::Manifest>,
    node: &str,
) -> Option<(String, u64)> {
    let tag = manifest?.nodes.get(node)?;
    let image = docker.inspect_image(tag).await.ok()?;
    Some((tag.clone(), image.size.unwrap_or(0).max(0) as u64))
}

/// The binary (stripped when `strip` is available, to keep images small) and its libraries.
pub(crate) fn payload(binary: &Path) -> Result<Payload, Error> {
    let mut files = Vec::new();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let original =
        std::fs::read(binary).map_err(|e| Error::io(format!("reading {}", binary.display()), e))?;
    hasher.write(&original);
    let stripped = strip(binary).unwrap_or(original);
    files.push((BINARY.to_owned(), stripped, 0o755));
    for lib in shared_libraries(binary).map_err(Error::Container)? {
        let content =
            std::fs::read(&lib).map_err(|e| Error::io(format!("reading {}", lib.display()), e))?;
        let inside = lib.to_string_lossy().trim_start_matches('/').to_owned();
        hasher.write(inside.as_bytes());
        hasher.write(&content);
        files.push((inside, content, 0o755));
    }
    let size = files.iter().map(|f| f.1.len() as u64).sum();
    Ok(Payload {
        files,
        digest: hasher.finish(),
        size,
    })
}

fn strip(binary: &Path) -> Option<Vec<u8>> {
    let out = std::env::temp_dir().join(format!("nanoflow-strip-{}", crate::run::RunId::new()));
    let ok = std::process::Command::new("strip")
        .arg("--strip-all")
        .arg("-o")
        .arg(&out)
        .arg(binary)
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?
        .success();
    let bytes = if ok { std::fs::read(&out).ok() } else { None };
    let _ = std::fs::remove_file(&out);
    bytes
}

/// The image name of a node: `nanoflow/<service>-<node>:<content hash>`.
pub(crate) fn tag(service: &str, node: &str, digest: u64) -> String {
    let clean = |s: &str| {
        s.to_ascii_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect::<String>()
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write_u64(digest);
    h.write(node.as_bytes());
    format!(
        "nanoflow/{}-{}:{:016x}",
        clean(service),
        clean(node),
        h.finish()
    )
}

/// Builds the image of `step`'s node unless an image with its tag exists. Returns whether it
/// was built (false: already there).
pub(crate) async fn ensure(
    docker: &Docker,
    payload: &Payload,
    tag: &str,
    step: &Step,
    service: &str,
    entry_args: &[String],
) -> Result<bool, Error> {
    if docker.inspect_image(tag).await.is_ok() {
        return Ok(false);
    }
    let mut entrypoint = vec![format!("/{BINARY}")];
    entrypoint.extend(entry_args.iter().cloned());
    let labels: BTreeMap<&str, String> = [
        ("nanoflow.node", step.node.to_owned()),
        ("nanoflow.service", service.to_owned()),
        ("nanoflow.input_type", step.input_type.to_owned()),
        ("nanoflow.output_type", step.output_type.to_owned()),
        ("nanoflow.version", env!("CARGO_PKG_VERSION").to_owned()),
    ]
    .into_iter()
    .collect();
    let mut dockerfile = String::from("FROM scratch\nCOPY rootfs/ /\n");
    for (k, v) in &labels {
        dockerfile.push_str(&format!(
            "LABEL {k}={}\n",
            serde_json::to_string(v).unwrap_or_default()
        ));
    }
    dockerfile.push_str(&format!(
        "ENV NANOFLOW_NODE_SERVE={} NANOFLOW_NODE_SOCKET=/run/nanoflow/node.sock\nUSER 65534:65534\nENTRYPOINT {}\n",
        step.node,
        serde_json::to_string(&entrypoint).unwrap_or_default()
    ));
    let mut tar = Tar::default();
    tar.file("Dockerfile", dockerfile.as_bytes(), 0o644);
    tar.dir("rootfs/run/nanoflow/", 0o755);
    for (path, content, mode) in &payload.files {
        tar.file(&format!("rootfs/{path}"), content, *mode);
    }
    let body = tar.finish();
    let options = BuildImageOptions {
        dockerfile: "Dockerfile".into(),
        t: Some(tag.to_owned()),
        rm: true,
        forcerm: true,
        ..Default::default()
    };
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(Bytes::from(body))));
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| Error::Container(format!("building image `{tag}`: {e}")))?;
        if let Some(detail) = info.error_detail {
            return Err(Error::Container(format!(
                "building image `{tag}`: {}",
                detail.message.unwrap_or_default()
            )));
        }
        if let Some(line) = info
            .stream
            .as_deref()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            tracing::info!(image = tag, "{line}");
        }
    }
    Ok(true)
}
