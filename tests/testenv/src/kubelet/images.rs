//! The image store: an OCI image layout directory (`index.json`,
//! `blobs/sha256/…`, `oci-layout`) that stands in for a registry. A Pod's
//! image reference is normalised as a container runtime does, looked up in
//! the layout, and every blob read is checked against its digest.
//!
//! `imagePullPolicy` does not matter here: `Always` resolves in the store too,
//! because the store *is* the registry.

use anyhow::{Context as _, bail};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::io::Read as _;
use std::path::{Path, PathBuf};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const MANIFEST_TYPES: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Where `make images` leaves the store: `$VERSA_IMAGE_STORE`, else
/// `<cargo target dir>/images/store`, the target directory being the nearest
/// ancestor of the running executable that holds `CACHEDIR.TAG` — or its
/// parent when that holds one too (`<target>/<triple>/` has its own, with
/// `--target`).
pub fn default_store() -> PathBuf {
    if let Some(dir) = std::env::var_os("VERSA_IMAGE_STORE") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    target_dir(&exe).unwrap_or(Path::new("target")).join("images").join("store")
}

fn target_dir(exe: &Path) -> Option<&Path> {
    let tagged = |d: &&Path| d.join("CACHEDIR.TAG").is_file();
    let nearest = exe.ancestors().find(tagged)?;
    // A target directory made before cargo first ran (`mkdir -p`, as CI
    // does) has no tag of its own: a parent holding the store is it.
    let parent_with_store = nearest.parent().filter(|d| d.join("images/store").is_dir());
    Some(nearest.parent().filter(tagged).or(parent_with_store).unwrap_or(nearest))
}

/// An image reference, normalised: `name` → `docker.io/library/name:latest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reference {
    /// `registry/path`, e.g. `ghcr.io/versa-dev/versa-server`.
    pub(crate) repository: String,
    pub(crate) tag: Option<String>,
    /// `sha256:<hex>`; when present it decides, the tag is not consulted.
    pub(crate) digest: Option<String>,
}

impl Reference {
    pub(crate) fn parse(image: &str) -> anyhow::Result<Self> {
        let (name, digest) = match image.split_once('@') {
            Some((name, digest)) => {
                let hex = digest.strip_prefix("sha256:").context("only sha256 digests")?;
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    bail!("invalid digest {digest:?}");
                }
                (name, Some(digest.to_ascii_lowercase()))
            }
            None => (image, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let slash = name.rfind('/').map_or(0, |i| i + 1);
        let (path, tag) = match name[slash..].rfind(':') {
            Some(i) => (&name[..slash + i], Some(name[slash + i + 1..].to_owned())),
            None => (name, None),
        };
        if path.is_empty() || tag.as_deref() == Some("") {
            bail!("invalid image reference {image:?}");
        }
        let first = path.split('/').next().unwrap_or_default();
        let has_registry = path.contains('/')
            && (first.contains('.') || first.contains(':') || first == "localhost");
        let repository = if has_registry {
            path.to_owned()
        } else if path.contains('/') {
            format!("docker.io/{path}")
        } else {
            format!("docker.io/library/{path}")
        };
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_owned()),
            (tag, _) => tag,
        };
        Ok(Self { repository, tag, digest })
    }

    /// `repository:tag` (or `repository@digest`), the name an image has.
    pub(crate) fn full(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => format!("{}@{d}", self.repository),
            (None, Some(t)) => format!("{}:{t}", self.repository),
            (None, None) => self.repository.clone(),
        }
    }
}

/// An image found in the store, with the blobs a runtime needs.
#[derive(Debug, Clone)]
pub(crate) struct Image {
    /// `repository@sha256:…` of what the reference named (an index or a
    /// manifest): what containerStatuses report as `imageID`.
    pub(crate) image_id: String,
    /// Digest of the platform's manifest: the unpacked rootfs is cached by it.
    pub(crate) manifest_digest: String,
    /// The image config's `config` (Entrypoint, Cmd, Env, WorkingDir, User).
    pub(crate) config: Value,
    /// Layers bottom to top: (media type, blob path, digest, size).
    pub(crate) layers: Vec<Layer>,
}

#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub(crate) media_type: String,
    pub(crate) path: PathBuf,
    pub(crate) digest: String,
    pub(crate) size: u64,
}

/// Finds `image` in the store at `root` and reads its manifest and config.
pub(crate) fn resolve(root: &Path, image: &str) -> anyhow::Result<Image> {
    let reference = Reference::parse(image)?;
    let index: Value = serde_json::from_slice(
        &std::fs::read(root.join("index.json"))
            .with_context(|| format!("image store {} is unreadable", root.display()))?,
    )
    .context("index.json is not JSON")?;
    // As a registry answers: only what was pushed to the reference's
    // repository (a digest of another repository's image is unknown here).
    let manifests: Vec<Value> = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| named(m).is_some_and(|r| r.repository == reference.repository))
        .cloned()
        .collect();
    let found = manifests.iter().find(|m| match &reference.digest {
        Some(d) => m["digest"].as_str() == Some(d.as_str()),
        None => named(m).is_some_and(|r| r.tag == reference.tag),
    });
    let descriptor = match (found, &reference.digest) {
        (Some(d), _) => d.clone(),
        // A digest may name a platform manifest inside an index of the store.
        (None, Some(digest)) => nested(root, &manifests, digest)?
            .with_context(|| format!("{} is not in the store", reference.full()))?,
        (None, None) => bail!("{} is not in the store", reference.full()),
    };
    let top = descriptor["digest"].as_str().context("descriptor without digest")?.to_owned();
    let image_id = format!("{}@{top}", reference.repository);
    let manifest = platform_manifest(root, &descriptor)?;
    let manifest_digest = manifest.0;
    let manifest = manifest.1;
    let config_descriptor = &manifest["config"];
    let config: Value = serde_json::from_slice(&read_blob(root, config_descriptor)?)
        .context("image config is not JSON")?;
    let mut layers = Vec::new();
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        let digest = layer["digest"].as_str().context("layer without digest")?.to_owned();
        layers.push(Layer {
            media_type: layer["mediaType"].as_str().unwrap_or_default().to_owned(),
            path: blob_path(root, &digest)?,
            size: layer["size"].as_u64().context("layer without size")?,
            digest,
        });
    }
    Ok(Image { image_id, manifest_digest, config: config["config"].clone(), layers })
}

/// The reference a top-level descriptor of the store is named by.
fn named(descriptor: &Value) -> Option<Reference> {
    descriptor["annotations"][REF_NAME].as_str().and_then(|name| Reference::parse(name).ok())
}

/// A descriptor with digest `digest` in any index the store's top level lists.
fn nested(root: &Path, manifests: &[Value], digest: &str) -> anyhow::Result<Option<Value>> {
    for m in manifests {
        if INDEX_TYPES.contains(&m["mediaType"].as_str().unwrap_or_default()) {
            let index: Value = serde_json::from_slice(&read_blob(root, m)?)?;
            let inner = index["manifests"].as_array().into_iter().flatten();
            if let Some(d) = inner.into_iter().find(|d| d["digest"].as_str() == Some(digest)) {
                return Ok(Some(d.clone()));
            }
        }
    }
    Ok(None)
}

/// The manifest a descriptor leads to on this platform: itself, or the
/// linux/<host arch> entry of an index. Returns its digest and body.
fn platform_manifest(root: &Path, descriptor: &Value) -> anyhow::Result<(String, Value)> {
    let mut descriptor = descriptor.clone();
    for _ in 0..4 {
        let body: Value = serde_json::from_slice(&read_blob(root, &descriptor)?)
            .context("manifest is not JSON")?;
        let media_type = descriptor["mediaType"].as_str().or(body["mediaType"].as_str());
        let media_type = media_type.unwrap_or_default().to_owned();
        let is_index = INDEX_TYPES.contains(&media_type.as_str())
            || (media_type.is_empty() && body["manifests"].is_array());
        if !is_index {
            if !media_type.is_empty() && !MANIFEST_TYPES.contains(&media_type.as_str()) {
                bail!("unsupported manifest media type {media_type}");
            }
            let digest = descriptor["digest"].as_str().unwrap_or_default().to_owned();
            return Ok((digest, body));
        }
        let arch = host_arch();
        let entries = body["manifests"].as_array().cloned().unwrap_or_default();
        descriptor = entries
            .iter()
            .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch)
            // An index's only entry, when it names no platform at all.
            .or_else(|| {
                (entries.len() == 1 && entries[0]["platform"].is_null()).then(|| &entries[0])
            })
            .with_context(|| format!("no linux/{arch} manifest in the image index"))?
            .clone();
    }
    bail!("image indexes nested too deep")
}

/// The OCI name of this machine's architecture.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

fn blob_path(root: &Path, digest: &str) -> anyhow::Result<PathBuf> {
    let hex = digest.strip_prefix("sha256:").with_context(|| format!("digest {digest:?}"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("invalid digest {digest:?}");
    }
    Ok(root.join("blobs").join("sha256").join(hex))
}

/// A small blob (manifest, index, config) read whole and verified.
fn read_blob(root: &Path, descriptor: &Value) -> anyhow::Result<Vec<u8>> {
    let digest = descriptor["digest"].as_str().context("descriptor without digest")?;
    let path = blob_path(root, digest)?;
    let bytes = std::fs::read(&path).with_context(|| format!("blob {digest} is missing"))?;
    if let Some(size) = descriptor["size"].as_u64()
        && size != bytes.len() as u64
    {
        bail!("blob {digest} has {} bytes, its descriptor says {size}", bytes.len());
    }
    let actual = format!("sha256:{}", hex(&Sha256::digest(&bytes)));
    if actual != digest {
        bail!("blob {digest} does not match its digest (it hashes to {actual})");
    }
    Ok(bytes)
}

/// Checks a layer blob's size and sha256 (streamed).
pub(crate) fn verify_layer(layer: &Layer) -> anyhow::Result<()> {
    let mut file = std::fs::File::open(&layer.path)
        .with_context(|| format!("layer {} is missing", layer.digest))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    let actual = format!("sha256:{}", hex(&hasher.finalize()));
    if total != layer.size {
        bail!("layer {} has {total} bytes, its descriptor says {}", layer.digest, layer.size);
    }
    if actual != layer.digest {
        bail!("layer {} does not match its digest (it hashes to {actual})", layer.digest);
    }
    Ok(())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A tiny OCI layout: blobs written by digest, `index.json` listing
    /// `manifests` as given.
    pub(crate) struct Layout {
        pub(crate) dir: tempfile::TempDir,
    }

    impl Layout {
        pub(crate) fn new() -> Self {
            let dir = tempfile::tempdir().expect("dir");
            std::fs::create_dir_all(dir.path().join("blobs/sha256")).expect("blobs");
            std::fs::write(dir.path().join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
                .expect("layout");
            Self { dir }
        }

        pub(crate) fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
            let hex = hex(&Sha256::digest(bytes));
            std::fs::write(self.dir.path().join("blobs/sha256").join(&hex), bytes).expect("blob");
            json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
        }

        /// An image of `layers` (tar bytes, media type) with `config`;
        /// returns the manifest's descriptor.
        pub(crate) fn image(&self, config: Value, layers: &[(&str, Vec<u8>)]) -> Value {
            let config = self.blob(
                "application/vnd.oci.image.config.v1+json",
                &serde_json::to_vec(
                    &json!({"architecture": "amd64", "os": "linux", "config": config}),
                )
                .expect("json"),
            );
            let layers: Vec<Value> = layers.iter().map(|(t, b)| self.blob(t, b)).collect();
            let manifest = json!({"schemaVersion": 2, "mediaType": MANIFEST_TYPES[0], "config": config, "layers": layers});
            self.blob(MANIFEST_TYPES[0], &serde_json::to_vec(&manifest).expect("json"))
        }

        pub(crate) fn index(&self, manifests: &[(Value, Option<&str>)]) {
            let manifests: Vec<Value> = manifests
                .iter()
                .map(|(d, name)| {
                    let mut d = d.clone();
                    if let Some(name) = name {
                        d["annotations"] = json!({ REF_NAME: name });
                    }
                    d
                })
                .collect();
            let index = json!({"schemaVersion": 2, "manifests": manifests});
            std::fs::write(self.dir.path().join("index.json"), index.to_string()).expect("index");
        }
    }

    fn parse(s: &str) -> (String, Option<String>, Option<String>) {
        let r = Reference::parse(s).expect("reference");
        (r.repository, r.tag, r.digest)
    }

    #[test]
    fn references_are_normalised_like_a_runtime() {
        let d = format!("sha256:{}", "a".repeat(64));
        let s = |x: &str| Some(x.to_owned());
        assert_eq!(parse("busybox"), ("docker.io/library/busybox".into(), s("latest"), None));
        assert_eq!(parse("acme/app:1"), ("docker.io/acme/app".into(), s("1"), None));
        assert_eq!(
            parse("ghcr.io/versa-dev/versa-server:0.1.0"),
            ("ghcr.io/versa-dev/versa-server".into(), s("0.1.0"), None)
        );
        assert_eq!(parse("localhost:5000/app"), ("localhost:5000/app".into(), s("latest"), None));
        assert_eq!(parse(&format!("app@{d}")), ("docker.io/library/app".into(), None, s(&d)));
        assert_eq!(parse(&format!("app:1@{d}")).2, s(&d));
        assert!(Reference::parse("app@sha256:12").is_err());
        assert!(Reference::parse("app:").is_err());
    }

    #[test]
    fn the_store_is_in_the_target_dir_also_when_building_for_a_target_triple() {
        let root = tempfile::tempdir().expect("tempdir");
        let target = root.path().join("target");
        let triple = target.join("x86_64-unknown-linux-gnu");
        std::fs::create_dir_all(triple.join("debug/deps")).expect("dirs");
        std::fs::write(target.join("CACHEDIR.TAG"), "").expect("tag");
        let exe = triple.join("debug/deps/t-0123");
        assert_eq!(target_dir(&exe), Some(target.as_path()), "no tag under the triple");
        std::fs::write(triple.join("CACHEDIR.TAG"), "").expect("tag");
        assert_eq!(target_dir(&exe), Some(target.as_path()), "the triple's own tag");
        assert_eq!(target_dir(&target.join("debug/deps/t-0123")), Some(target.as_path()));
    }

    #[test]
    fn images_are_found_by_name_and_by_digest_and_blobs_are_verified() {
        let layout = Layout::new();
        let a = layout.image(json!({"Cmd": ["a"]}), &[]);
        let b = layout.image(json!({"Cmd": ["b"]}), &[]);
        layout.index(&[(a.clone(), Some("ghcr.io/x/app:1")), (b.clone(), Some("busybox:latest"))]);
        let root = layout.dir.path();
        let cmd = |image: &str| resolve(root, image).map(|i| i.config["Cmd"][0].clone());
        assert_eq!(cmd("ghcr.io/x/app:1").expect("by name"), "a");
        assert_eq!(cmd("docker.io/library/busybox").expect("normalised both sides"), "b");
        let (digest_a, digest_b) =
            (a["digest"].as_str().expect("a"), b["digest"].as_str().expect("b"));
        assert_eq!(cmd(&format!("ghcr.io/x/app:2@{digest_a}")).expect("digest wins"), "a");
        let elsewhere = resolve(root, &format!("ghcr.io/x/app:1@{digest_b}"));
        assert!(elsewhere.is_err(), "a digest of another repository's image");
        let image = resolve(root, "ghcr.io/x/app:1").expect("image");
        assert_eq!(image.image_id, format!("ghcr.io/x/app@{}", a["digest"].as_str().expect("d")));
        let missing = resolve(root, "ghcr.io/x/app:2").expect_err("missing tag");
        assert!(missing.to_string().contains("ghcr.io/x/app:2 is not in the store"), "{missing}");
        let absent = format!("app@sha256:{}", "0".repeat(64));
        assert!(resolve(root, &absent).is_err(), "a digest must exist");

        // A manifest whose bytes changed no longer matches its digest.
        let hex = a["digest"].as_str().expect("d").trim_start_matches("sha256:").to_owned();
        let path = root.join("blobs/sha256").join(hex);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[0] = b' ';
        std::fs::write(&path, bytes).expect("write");
        let err = resolve(root, "ghcr.io/x/app:1").expect_err("tampered");
        assert!(err.to_string().contains("does not match its digest"), "{err}");
    }

    #[test]
    fn an_index_gives_the_host_platform_manifest() {
        let layout = Layout::new();
        let other = layout.image(json!({"Cmd": ["arm"]}), &[]);
        let host = layout.image(json!({"Cmd": ["host"]}), &[]);
        let entry = |d: &Value, arch: &str| {
            let mut d = d.clone();
            d["platform"] = json!({"os": "linux", "architecture": arch});
            d
        };
        let index = json!({"schemaVersion": 2, "mediaType": INDEX_TYPES[0],
            "manifests": [entry(&other, "s390x"), entry(&host, host_arch())]});
        let index = layout.blob(INDEX_TYPES[0], &serde_json::to_vec(&index).expect("json"));
        layout.index(&[(index.clone(), Some("app:1"))]);
        let image = resolve(layout.dir.path(), "app:1").expect("image");
        assert_eq!(image.config["Cmd"][0], "host");
        assert_eq!(image.manifest_digest, host["digest"].as_str().expect("d"));
        assert!(
            image.image_id.ends_with(index["digest"].as_str().expect("d")),
            "the index's digest"
        );
        let by_platform_digest = format!("app@{}", host["digest"].as_str().expect("d"));
        assert_eq!(
            resolve(layout.dir.path(), &by_platform_digest).expect("nested").config["Cmd"][0],
            "host"
        );
    }
}
