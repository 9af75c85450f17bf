//! Layers unpacked into a root filesystem, the way a snapshotter does:
//! bottom layer first, whiteouts (`.wh.<name>`, `.wh..wh..opq`) applied,
//! and nothing written outside the rootfs (absolute paths, `..`, links
//! leading out and writes through symlinked directories are refused).
//!
//! A rootfs is unpacked once per manifest digest, into a temporary directory
//! renamed into place, so Pods of one image share it and never see half of it.

use super::images::{Image, Layer, verify_layer};
use anyhow::{Context as _, bail};
use std::collections::HashSet;
use std::io::Read;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

/// One unpack at a time per process: a second Pod of the same image waits
/// and then finds the rootfs in place.
static UNPACKING: Mutex<()> = Mutex::new(());

/// The image's rootfs under `cache` (`<cache>/<hex>/rootfs`), unpacked now if
/// it is not there yet. Blocking.
pub(crate) fn rootfs(cache: &Path, image: &Image) -> anyhow::Result<PathBuf> {
    let hex = image.manifest_digest.trim_start_matches("sha256:");
    let dir = cache.join(hex);
    let rootfs = dir.join("rootfs");
    if rootfs.is_dir() {
        return Ok(rootfs);
    }
    let _one = UNPACKING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if rootfs.is_dir() {
        return Ok(rootfs);
    }
    std::fs::create_dir_all(cache)?;
    let temp = tempfile::Builder::new().prefix(".unpack-").tempdir_in(cache)?;
    let staged = temp.path().join("rootfs");
    std::fs::create_dir(&staged)?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755))?;
    for layer in &image.layers {
        verify_layer(layer)?;
        apply(&staged, layer).with_context(|| format!("unpacking layer {}", layer.digest))?;
    }
    std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o755))?;
    let temp = temp.keep();
    match std::fs::rename(&temp, &dir) {
        Ok(()) => Ok(rootfs),
        // Another process of the same cache won the race.
        Err(_) if rootfs.is_dir() => {
            let _ = std::fs::remove_dir_all(&temp);
            Ok(rootfs)
        }
        Err(e) => Err(e).context("moving the unpacked rootfs into place"),
    }
}

fn apply(root: &Path, layer: &Layer) -> anyhow::Result<()> {
    let file = std::fs::File::open(&layer.path)?;
    let reader: Box<dyn Read> = match layer.media_type.as_str() {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Box::new(file),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
            Box::new(flate2::read::GzDecoder::new(file))
        }
        other => bail!("unsupported layer media type {other:?}"),
    };
    unpack_tar(root, reader)
}

/// Applies one layer's tar stream on top of `root`.
pub(crate) fn unpack_tar(root: &Path, reader: impl Read) -> anyhow::Result<()> {
    let mut archive = tar::Archive::new(reader);
    // Paths this layer wrote: an opaque whiteout hides only lower layers.
    let mut written: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.into_owned();
        let relative = contained(&raw)?;
        let Some(name) = relative.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue; // the root directory itself
        };
        let parent = relative.parent().unwrap_or(Path::new(""));
        let host_parent = directory(root, parent)?;
        if name == ".wh..wh..opq" {
            for child in std::fs::read_dir(&host_parent)? {
                let child = child?;
                if !written.contains(&parent.join(child.file_name())) {
                    remove(&child.path())?;
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            // `.wh.` alone, `.wh..` and `.wh...` would name the directory
            // itself or its parent.
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                bail!("whiteout {raw:?} names no entry of its directory");
            }
            remove(&host_parent.join(hidden))?;
            continue;
        }
        let target = host_parent.join(&name);
        let header = entry.header().clone();
        let kind = header.entry_type();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let existing = std::fs::symlink_metadata(&target).ok();
        // A directory over a directory keeps its contents; anything else replaces.
        if let Some(meta) = &existing
            && !(kind.is_dir() && meta.is_dir())
        {
            remove(&target)?;
        }
        if kind.is_dir() {
            std::fs::create_dir_all(&target)?;
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            let mut out = std::fs::File::create(&target)?;
            std::io::copy(&mut entry, &mut out)?;
        } else if kind.is_symlink() {
            let link = entry.link_name()?.context("symlink without a target")?.into_owned();
            if link.is_relative() {
                // Resolved from the link's directory, it must stay inside.
                contained(&parent.join(&link)).with_context(|| {
                    format!("symlink {} -> {} leads out", relative.display(), link.display())
                })?;
            }
            std::os::unix::fs::symlink(&link, &target)?;
        } else if kind.is_hard_link() {
            let link = entry.link_name()?.context("hard link without a target")?.into_owned();
            let source = contained(&link)?;
            let source_parent = directory(root, source.parent().unwrap_or(Path::new("")))?;
            let source = source_parent.join(source.file_name().context("hard link to the root")?);
            std::fs::hard_link(&source, &target).with_context(|| {
                format!("hard link {} -> {}", relative.display(), link.display())
            })?;
        } else {
            // Devices and fifos: a rootless snapshotter skips them too.
            continue;
        }
        written.insert(relative.clone());
        let uid = header.uid().ok().and_then(|u| u32::try_from(u).ok());
        let gid = header.gid().ok().and_then(|g| u32::try_from(g).ok());
        std::os::unix::fs::lchown(&target, uid, gid)?;
        if !kind.is_symlink() && !kind.is_hard_link() {
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

/// A tar path made relative to the rootfs; refused if absolute or if `..`
/// would climb out of it.
fn contained(path: &Path) -> anyhow::Result<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    bail!("path {} climbs out of the rootfs", path.display());
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                bail!("absolute path {} in a layer", path.display())
            }
        }
    }
    Ok(out)
}

/// The host directory for a rootfs-relative directory, created as needed;
/// refused if any part of it is a symlink (a write would follow it out).
fn directory(root: &Path, relative: &Path) -> anyhow::Result<PathBuf> {
    let mut host = root.to_path_buf();
    for part in relative.components() {
        host.push(part);
        match std::fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                bail!("{} is a symlink: a layer may not write through it", relative.display())
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => bail!("{} is not a directory", relative.display()),
            Err(_) => {
                std::fs::create_dir(&host)?;
                std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o755))?;
            }
        }
    }
    Ok(host)
}

fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::images::{resolve, tests::Layout};
    use serde_json::json;
    use std::os::unix::fs::MetadataExt as _;

    enum Item<'a> {
        File(&'a str, &'a str, u32),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
        HardLink(&'a str, &'a str),
    }

    fn tar(items: &[Item<'_>]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for item in items {
            let mut header = tar::Header::new_gnu();
            header.set_uid(65532);
            header.set_gid(65532);
            match item {
                Item::File(path, body, mode) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(body.len() as u64);
                    set_path(&mut header, path);
                    header.set_cksum();
                    builder.append(&header, body.as_bytes()).expect("file");
                }
                Item::Dir(path) => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(0o755);
                    header.set_size(0);
                    set_path(&mut header, path);
                    header.set_cksum();
                    builder.append(&header, std::io::empty()).expect("dir");
                }
                Item::Symlink(path, to) | Item::HardLink(path, to) => {
                    let kind = if matches!(item, Item::Symlink(..)) {
                        tar::EntryType::Symlink
                    } else {
                        tar::EntryType::Link
                    };
                    header.set_entry_type(kind);
                    header.set_size(0);
                    set_path(&mut header, path);
                    header.set_link_name_literal(to).expect("link");
                    header.set_cksum();
                    builder.append(&header, std::io::empty()).expect("link");
                }
            }
        }
        builder.into_inner().expect("tar")
    }

    /// Raw bytes into the name field: `set_path` itself refuses `..`.
    fn set_path(header: &mut tar::Header, path: &str) {
        let name = &mut header.as_old_mut().name;
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut out = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        out.write_all(bytes).expect("gzip");
        out.finish().expect("gzip")
    }

    #[test]
    fn layers_stack_with_whiteouts_and_the_rootfs_is_unpacked_once() {
        let lower = tar(&[
            Item::Dir("etc/"),
            Item::File("etc/keep", "k", 0o644),
            Item::File("etc/gone", "g", 0o644),
            Item::Dir("data/"),
            Item::File("data/old", "o", 0o644),
            Item::File("bin/tool", "v1", 0o755),
            Item::Symlink("bin/alias", "tool"),
        ]);
        let upper = tar(&[
            Item::File("etc/.wh.gone", "", 0o644),
            Item::Dir("data/"),
            Item::File("data/.wh..wh..opq", "", 0o644),
            Item::File("data/new", "n", 0o600),
            Item::File("bin/tool", "v2", 0o755),
            Item::HardLink("bin/same", "bin/tool"),
        ]);
        let layout = Layout::new();
        let manifest = layout.image(
            json!({}),
            &[
                ("application/vnd.oci.image.layer.v1.tar", lower),
                ("application/vnd.oci.image.layer.v1.tar+gzip", gzip(&upper)),
            ],
        );
        layout.index(&[(manifest, Some("app:1"))]);
        let image = resolve(layout.dir.path(), "app:1").expect("image");
        let cache = tempfile::tempdir().expect("cache");
        let root = rootfs(cache.path(), &image).expect("unpack");
        let read = |p: &str| std::fs::read_to_string(root.join(p)).ok();
        assert_eq!(read("etc/keep").as_deref(), Some("k"));
        assert_eq!(read("etc/gone"), None, "whiteout removes a lower file");
        assert_eq!(read("data/old"), None, "opaque directory hides lower contents");
        assert_eq!(read("data/new").as_deref(), Some("n"), "but keeps its own layer's");
        assert_eq!(read("bin/alias").as_deref(), Some("v2"));
        assert_eq!(read("bin/same").as_deref(), Some("v2"));
        let meta = std::fs::metadata(root.join("data/new")).expect("meta");
        assert_eq!((meta.uid(), meta.mode() & 0o777), (65532, 0o600));
        assert!(!root.join("etc/.wh.gone").exists());

        // A second call finds it in place; nothing is left aside.
        std::fs::write(root.join("marker"), "x").expect("marker");
        assert_eq!(rootfs(cache.path(), &image).expect("again"), root);
        assert!(root.join("marker").exists(), "not unpacked twice");
        assert_eq!(std::fs::read_dir(cache.path()).expect("cache").count(), 1);
    }

    #[test]
    fn nothing_is_written_outside_the_rootfs() {
        let outside = tempfile::tempdir().expect("outside");
        let out = outside.path().display().to_string();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("climbing", tar(&[Item::File("a/../../escape", "x", 0o644)])),
            ("absolute", tar(&[Item::File(&format!("{out}/escape"), "x", 0o644)])),
            ("relative link out", tar(&[Item::Symlink("a", "../../..")])),
            (
                "write through a symlink",
                tar(&[Item::Symlink("a", &out), Item::File("a/escape", "x", 0o644)]),
            ),
            ("hard link out", tar(&[Item::HardLink("a", "../etc/passwd")])),
        ];
        for (what, layer) in cases {
            let root = tempfile::tempdir().expect("root");
            assert!(unpack_tar(root.path(), layer.as_slice()).is_err(), "{what} refused");
            assert!(!outside.path().join("escape").exists(), "{what}");
        }
        // Whiteouts that would name the directory itself or the one above:
        // refused, and the rootfs's parent (with a file in it) untouched.
        for whiteout in [".wh...", ".wh..", ".wh.", "a/.wh...", "a/.wh.."] {
            let parent = tempfile::tempdir().expect("parent");
            std::fs::write(parent.path().join("kept"), "x").expect("sentinel");
            let root = parent.path().join("root");
            std::fs::create_dir_all(root.join("a")).expect("root");
            let layer = tar(&[Item::File(whiteout, "", 0o644)]);
            assert!(unpack_tar(&root, layer.as_slice()).is_err(), "{whiteout} refused");
            assert!(parent.path().join("kept").exists(), "{whiteout} removed outside");
            assert!(root.join("a").is_dir(), "{whiteout} removed a directory");
        }
        // An absolute symlink is fine: inside the container it means the rootfs.
        let root = tempfile::tempdir().expect("root");
        unpack_tar(root.path(), tar(&[Item::Symlink("sh", "/bin/busybox")]).as_slice())
            .expect("absolute link target");
    }

    #[test]
    fn a_layer_that_does_not_match_its_digest_is_not_unpacked() {
        let layout = Layout::new();
        let layer = tar(&[Item::File("a", "x", 0o644)]);
        let manifest =
            layout.image(json!({}), &[("application/vnd.oci.image.layer.v1.tar", layer)]);
        layout.index(&[(manifest, Some("app:1"))]);
        let image = resolve(layout.dir.path(), "app:1").expect("image");
        let mut bytes = std::fs::read(&image.layers[0].path).expect("layer");
        bytes[600] ^= 1;
        std::fs::write(&image.layers[0].path, bytes).expect("tamper");
        let cache = tempfile::tempdir().expect("cache");
        let err = rootfs(cache.path(), &image).expect_err("tampered layer");
        assert!(format!("{err:#}").contains("does not match its digest"), "{err:#}");
        assert_eq!(std::fs::read_dir(cache.path()).expect("cache").count(), 0, "no rootfs left");
    }
}
