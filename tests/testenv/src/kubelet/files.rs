//! What a Pod's process finds on disk: its volumes materialised on the host,
//! the token of its ServiceAccount, and its `/etc/hosts` and `/etc/hostname`.
//! For build-tree processes (no rootfs) container paths in arguments are
//! rewritten to host paths and the token comes in a kubeconfig.

use super::KubeletOptions;
use anyhow::Context as _;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::api::{Api, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Where the in-cluster credentials are, in every container.
pub(super) const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A volume of the container, on the host.
#[derive(Debug, Clone)]
pub(super) struct HostVolume {
    pub(super) mount_path: String,
    pub(super) host: PathBuf,
    pub(super) read_only: bool,
}

/// Replaces a container path prefix with a host path in a string (for
/// build-tree processes, which see the host's filesystem).
pub(super) fn rewrite(value: &str, mounts: &[HostVolume]) -> String {
    for HostVolume { mount_path, host, .. } in mounts {
        let mount = mount_path.trim_end_matches('/');
        if let Some(rest) = value.strip_prefix(mount)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return format!("{}{rest}", host.display());
        }
        // Inside `--flag=/path/...`.
        if let Some((flag, path)) = value.split_once('=')
            && let Some(rest) = path.strip_prefix(mount)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return format!("{flag}={}{rest}", host.display());
        }
    }
    value.to_owned()
}

/// Materialises the container's volumes on the host: hostPath as is,
/// emptyDir (mode 0777, as kubelet makes it), configMap and secret (files
/// `defaultMode`, else 0644; with the Pod's `fsGroup`, group-owned by it
/// and group-readable, as kubelet's volume ownership does) under the work
/// directory.
pub(super) async fn volumes(
    client: &kube::Client,
    options: &KubeletOptions,
    pod: &Pod,
    container: &Container,
    namespace: &str,
) -> anyhow::Result<Vec<HostVolume>> {
    let spec = pod.spec.as_ref().context("pod spec")?;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let Some(volume) = spec.volumes.iter().flatten().find(|v| v.name == mount.name) else {
            continue;
        };
        let local = options.workdir.join("pods").join(&uid).join(&volume.name);
        let host = if let Some(host_path) = &volume.host_path {
            PathBuf::from(&host_path.path)
        } else if volume.config_map.is_some() || volume.secret.is_some() {
            let files = projected(client, volume, namespace).await?.unwrap_or_default();
            write_files(&local, &files, file_mode(volume, fs_group(pod)))?;
            local
        } else {
            std::fs::create_dir_all(&local)?;
            std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o777))?;
            local
        };
        let target = match &mount.sub_path {
            Some(sub) if !sub.is_empty() => host.join(sub),
            _ => host,
        };
        let read_only = mount.read_only.unwrap_or(false);
        mounts.push(HostVolume { mount_path: mount.mount_path.clone(), host: target, read_only });
    }
    // Longest mount paths first so nested mounts win when rewriting.
    mounts.sort_by_key(|m| std::cmp::Reverse(m.mount_path.len()));
    Ok(mounts)
}

/// The files a configMap or secret volume holds: `None` when the object is
/// gone (a real kubelet then keeps what it last wrote), or the volume is of
/// another kind.
async fn projected(
    client: &kube::Client,
    volume: &k8s_openapi::api::core::v1::Volume,
    namespace: &str,
) -> anyhow::Result<Option<BTreeMap<String, Vec<u8>>>> {
    if let Some(cm) = &volume.config_map {
        let map: Option<ConfigMap> =
            Api::namespaced(client.clone(), namespace).get_opt(&cm.name).await?;
        return Ok(map.map(|m| {
            m.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect()
        }));
    }
    if let Some(secret) = &volume.secret {
        let name = secret.secret_name.clone().unwrap_or_default();
        let s: Option<Secret> = Api::namespaced(client.clone(), namespace).get_opt(&name).await?;
        return Ok(
            s.map(|s| s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect())
        );
    }
    Ok(None)
}

/// Writes a volume's files, each replaced atomically (written aside, then
/// renamed), and removes files whose keys are gone, as a real kubelet's
/// atomic writer does. Unchanged files are not touched.
fn write_files(
    dir: &Path,
    files: &BTreeMap<String, Vec<u8>>,
    (mode, group): (u32, Option<u32>),
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    for (key, value) in files {
        if key.contains('/') || key.starts_with('.') {
            continue;
        }
        let path = dir.join(key);
        let same_mode = std::fs::metadata(&path).is_ok_and(|m| {
            m.permissions().mode() & 0o7777 == mode && group.is_none_or(|g| m.gid() == g)
        });
        if same_mode && std::fs::read(&path).ok().as_deref() == Some(value.as_slice()) {
            continue;
        }
        let aside = dir.join(format!(".{key}.tmp"));
        std::fs::write(&aside, value)?;
        std::fs::set_permissions(&aside, std::fs::Permissions::from_mode(mode))?;
        if let Some(gid) = group {
            std::os::unix::fs::lchown(&aside, None, Some(gid))?;
        }
        std::fs::rename(&aside, &path)?;
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && !files.contains_key(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Brings a running Pod's configMap and secret volumes up to date with
/// their objects, in place: what a real kubelet does on its sync period
/// (here on every refresh the caller asks for). An object that is gone
/// leaves its files as they were.
pub(super) async fn refresh_volumes(
    client: &kube::Client,
    options: &KubeletOptions,
    pod: &Pod,
    namespace: &str,
) -> anyhow::Result<()> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if let Some(files) = projected(client, volume, namespace).await? {
            let local = options.workdir.join("pods").join(&uid).join(&volume.name);
            write_files(&local, &files, file_mode(volume, fs_group(pod)))?;
        }
    }
    Ok(())
}

/// A configMap or secret volume's `defaultMode`, else 0644.
/// With an `fsGroup`, the files are the group's and readable by it (these
/// volumes are read-only: kubelet ORs in 0440).
fn file_mode(
    volume: &k8s_openapi::api::core::v1::Volume,
    fs_group: Option<u32>,
) -> (u32, Option<u32>) {
    let mode = volume.config_map.as_ref().and_then(|c| c.default_mode);
    let mode = mode.or_else(|| volume.secret.as_ref().and_then(|s| s.default_mode));
    let mode = mode.and_then(|m| u32::try_from(m).ok()).unwrap_or(0o644) & 0o7777;
    match fs_group {
        Some(gid) => (mode | 0o440, Some(gid)),
        None => (mode, None),
    }
}

fn fs_group(pod: &Pod) -> Option<u32> {
    let sc = pod.spec.as_ref()?.security_context.as_ref()?;
    sc.fs_group.and_then(|g| u32::try_from(g).ok())
}

/// Whether the Pod gets its ServiceAccount's token: its own
/// `automountServiceAccountToken`, else the ServiceAccount's, else yes.
/// A Pod that names no ServiceAccount gets none: the test API server runs
/// without the `ServiceAccount` admission plugin, which on a real cluster
/// would have set `default` and added the token volume.
pub(super) async fn automount_token(
    client: &kube::Client,
    pod: &Pod,
    namespace: &str,
) -> anyhow::Result<bool> {
    let spec = pod.spec.as_ref().context("pod spec")?;
    let Some(account) = spec.service_account_name.clone() else { return Ok(false) };
    if let Some(automount) = spec.automount_service_account_token {
        return Ok(automount);
    }
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), namespace);
    let found = accounts.get_opt(&account).await?;
    Ok(found.and_then(|a| a.automount_service_account_token).unwrap_or(true))
}

/// A fresh token of the Pod's ServiceAccount (one hour, bound to the Pod)
/// from the TokenRequest API, as kubelet's projected token volume holds.
async fn service_account_token(
    client: &kube::Client,
    pod: &Pod,
    namespace: &str,
) -> anyhow::Result<(String, String)> {
    let spec = pod.spec.as_ref().context("pod spec")?;
    let account = spec.service_account_name.clone().unwrap_or_else(|| "default".into());
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {
            "audiences": [],
            "expirationSeconds": 3600,
            "boundObjectRef": {
                "apiVersion": "v1", "kind": "Pod",
                "name": pod.metadata.name, "uid": pod.metadata.uid,
            },
        },
    });
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), namespace);
    let response: serde_json::Value = accounts
        .create_subresource("token", &account, &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest for service account {namespace}/{account}"))?;
    let token = response["status"]["token"].as_str().context("TokenRequest gave no token")?;
    Ok((account, token.to_owned()))
}

/// What both forms of credentials need: the API server, the Pod's
/// ServiceAccount with a fresh token, and the Pod's work directory.
async fn credentials<'a>(
    client: &kube::Client,
    options: &'a KubeletOptions,
    pod: &Pod,
    namespace: &str,
) -> anyhow::Result<(&'a super::ApiAccess, String, String, PathBuf)> {
    let api =
        options.api.as_ref().context("service-account credentials need KubeletOptions::api")?;
    let (account, token) = service_account_token(client, pod, namespace).await?;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    Ok((api, account, token, options.workdir.join("pods").join(uid)))
}

/// The in-cluster credentials directory (`token`, `ca.crt`, `namespace`)
/// that is mounted at [`SERVICE_ACCOUNT_DIR`].
pub(super) async fn service_account_dir(
    client: &kube::Client,
    options: &KubeletOptions,
    pod: &Pod,
    namespace: &str,
) -> anyhow::Result<PathBuf> {
    let (api, _, token, pod_dir) = credentials(client, options, pod, namespace).await?;
    let dir = pod_dir.join(".serviceaccount");
    let files: BTreeMap<String, Vec<u8>> = [
        ("token".to_owned(), token.into_bytes()),
        ("ca.crt".to_owned(), api.ca_pem.clone()),
        ("namespace".to_owned(), namespace.as_bytes().to_vec()),
    ]
    .into();
    write_files(&dir, &files, (0o644, None))?;
    Ok(dir)
}

/// A kubeconfig holding a fresh token of the Pod's ServiceAccount, for a
/// build-tree process (no rootfs to mount the credentials into).
pub(super) async fn service_account_kubeconfig(
    client: &kube::Client,
    options: &KubeletOptions,
    pod: &Pod,
    namespace: &str,
) -> anyhow::Result<PathBuf> {
    let (api, account, token, dir) = credentials(client, options, pod, namespace).await?;
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("service-account.kubeconfig");
    let ca = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &api.ca_pem);
    let kubeconfig = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "in-cluster", "cluster": {"server": api.server, "certificate-authority-data": ca}}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "in-cluster", "context": {"cluster": "in-cluster", "user": account, "namespace": namespace}}],
        "current-context": "in-cluster",
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&kubeconfig)?)?;
    Ok(path)
}

/// The Pod's `/etc/hosts` and `/etc/hostname`, as a runtime writes them
/// (kubelet's managed hosts file); returns both host paths.
pub(super) fn etc_files(
    options: &KubeletOptions,
    pod: &Pod,
    hostname: &str,
    ip: Ipv4Addr,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let dir = options.workdir.join("pods").join(uid);
    std::fs::create_dir_all(&dir)?;
    let hosts = dir.join(".etc-hosts");
    std::fs::write(
        &hosts,
        format!(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{hostname}\n"
        ),
    )?;
    let name = dir.join(".etc-hostname");
    std::fs::write(&name, format!("{hostname}\n"))?;
    Ok((hosts, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths_map_to_host_paths() {
        let mounts = vec![HostVolume {
            mount_path: "/models".to_owned(),
            host: PathBuf::from("/tmp/x/models"),
            read_only: true,
        }];
        assert_eq!(
            rewrite("--model_base_path=/models/fraud", &mounts),
            "--model_base_path=/tmp/x/models/fraud"
        );
        assert_eq!(rewrite("/models", &mounts), "/tmp/x/models");
        assert_eq!(rewrite("/models2/a", &mounts), "/models2/a");
        assert_eq!(rewrite("--port=8500", &mounts), "--port=8500");
    }

    #[test]
    fn volume_files_are_replaced_and_removed_in_place() {
        let dir = tempfile::tempdir().expect("dir");
        let files = |pairs: &[(&str, &str)]| -> BTreeMap<String, Vec<u8>> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec())).collect()
        };
        write_files(dir.path(), &files(&[("token", "a"), ("other", "x")]), (0o600, None))
            .expect("write");
        write_files(dir.path(), &files(&[("token", "b")]), (0o644, None)).expect("update");
        let mode = std::fs::metadata(dir.path().join("token")).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "readable by any container user");
        assert_eq!(std::fs::read_to_string(dir.path().join("token")).expect("token"), "b");
        assert!(!dir.path().join("other").exists(), "a removed key's file goes");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1, "nothing left aside");
    }

    #[test]
    fn an_fs_group_owns_secret_files_and_may_read_them() {
        let volume: k8s_openapi::api::core::v1::Volume = serde_json::from_value(serde_json::json!(
            {"name": "token", "secret": {"secretName": "s", "defaultMode": 0o400}}
        ))
        .expect("volume");
        assert_eq!(file_mode(&volume, None), (0o400, None), "root's alone without fsGroup");
        assert_eq!(file_mode(&volume, Some(65532)), (0o440, Some(65532)));
        let dir = tempfile::tempdir().expect("dir");
        let files = [("token".to_owned(), b"t".to_vec())].into();
        write_files(dir.path(), &files, (0o440, Some(65532))).expect("write");
        let meta = std::fs::metadata(dir.path().join("token")).expect("meta");
        assert_eq!((meta.permissions().mode() & 0o777, meta.gid()), (0o440, 65532));
    }
}
