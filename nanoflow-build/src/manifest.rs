//! The list of images a build made, written beside the service's binary
//! (`target/<profile>/<bin>.images.json`), so that `serve --isolation container` uses them
//! instead of packaging its own binary at start.
//!
//! The build script writes it before cargo links the binary; the runtime trusts it only when the
//! binary is at least as new as the list. A binary linked after the list was written was built
//! from the same sources as the images (cargo reruns the build script whenever those change); an
//! older one (a failed build, a build with `NANOFLOW_IMAGES=0`, which removes the list) is not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The images of one service binary.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// The service (package) name in the image names.
    pub service: String,
    /// The runner image, `nanoflow/<service>:<hash>`.
    pub runner: String,
    /// Node name to node image, `nanoflow/<service>-<node>:<hash>`.
    pub nodes: BTreeMap<String, String>,
}

/// Where the manifest of `binary` lives.
pub fn path_for(binary: &Path) -> PathBuf {
    let mut name = binary.file_name().unwrap_or_default().to_os_string();
    name.push(".images.json");
    binary.with_file_name(name)
}

impl Manifest {
    /// The manifest of `binary`, when there is one and `binary` was linked after it was written.
    pub fn for_binary(binary: &Path) -> Option<Self> {
        let path = path_for(binary);
        let written = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
        let linked = std::fs::metadata(binary).and_then(|m| m.modified()).ok()?;
        if linked < written {
            return None;
        }
        Self::parse(&std::fs::read(&path).ok()?)
    }

    /// Reads a manifest's JSON.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        let nodes = v["nodes"]
            .as_object()?
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect();
        Some(Self {
            service: v["service"].as_str()?.to_owned(),
            runner: v["runner"].as_str()?.to_owned(),
            nodes,
        })
    }

    /// The manifest's JSON.
    pub fn to_json(&self) -> String {
        let v = serde_json::json!({
            "service": self.service,
            "runner": self.runner,
            "nodes": self.nodes,
        });
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips() {
        let m = Manifest {
            service: "shop".into(),
            runner: "nanoflow/shop:00ff".into(),
            nodes: [("price".to_owned(), "nanoflow/shop-price:0a0b".to_owned())].into(),
        };
        assert_eq!(Manifest::parse(m.to_json().as_bytes()), Some(m));
        assert_eq!(Manifest::parse(b"{\"service\":\"shop\"}"), None);
    }

    #[test]
    fn sits_beside_the_binary() {
        assert_eq!(
            path_for(Path::new("/t/debug/shop")),
            Path::new("/t/debug/shop.images.json")
        );
    }

    #[test]
    fn a_binary_older_than_its_manifest_is_not_trusted() {
        let dir = std::env::temp_dir().join(format!("nanoflow-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let binary = dir.join("shop");
        std::fs::write(&binary, b"old binary").unwrap();
        let m = Manifest {
            service: "shop".into(),
            runner: "nanoflow/shop:1".into(),
            nodes: BTreeMap::new(),
        };
        std::fs::write(path_for(&binary), m.to_json()).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&binary)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(Manifest::for_binary(&binary), None);
        std::fs::File::options()
            .write(true)
            .open(&binary)
            .unwrap()
            .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(1))
            .unwrap();
        assert_eq!(Manifest::for_binary(&binary), Some(m));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
