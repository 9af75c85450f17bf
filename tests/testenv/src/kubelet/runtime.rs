//! Starting a Pod's container: the image pulled from the store and unpacked,
//! the process's command line, environment and identity decided, its
//! volumes and credentials made, and the process started inside the rootfs.
//! Or, with `build_tree_binaries`, the build tree's binary on the host.

use super::container::{
    ConfigError, command_line, credentials, environment, expand, pod_env, working_dir,
};
use super::files::{
    HostVolume, SERVICE_ACCOUNT_DIR, automount_token, etc_files, rewrite, service_account_dir,
    service_account_kubeconfig, volumes,
};
use super::images::{Reference, resolve};
use super::sandbox::{Mount, Plan, describe_failure};
use super::status::Waiting;
use super::{KubeletOptions, unpack};
use crate::process::ChildProcess;
use k8s_openapi::api::core::v1::{Container, Pod};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why a start failed, as kubelet tells the cases apart.
#[derive(Debug)]
pub(super) enum StartError {
    /// The image cannot be had: `ErrImagePull`, then `ImagePullBackOff`.
    Pull(String),
    /// `CreateContainerConfigError`.
    Config(String),
    /// Volumes or credentials are not ready yet (`ContainerCreating`).
    Creating(anyhow::Error),
    /// The process could not be started (`RunContainerError`).
    Run(String),
}

impl StartError {
    pub(super) fn waiting(&self) -> Waiting {
        let (reason, message) = match self {
            Self::Pull(m) => ("ErrImagePull", m.clone()),
            Self::Config(m) => ("CreateContainerConfigError", m.clone()),
            Self::Creating(e) => ("ContainerCreating", format!("{e:#}")),
            Self::Run(m) => ("RunContainerError", m.clone()),
        };
        Waiting { reason, message }
    }
}

impl From<ConfigError> for StartError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e.0)
    }
}

/// A started container.
#[derive(Debug)]
pub(super) struct Started {
    pub(super) process: ChildProcess,
    pub(super) image_id: String,
}

/// Where the Pod is, for one start.
#[derive(Debug)]
pub(super) struct Target<'a> {
    pub(super) pod: &'a Pod,
    pub(super) container: &'a Container,
    pub(super) namespace: &'a str,
    pub(super) name: &'a str,
    pub(super) ip: Ipv4Addr,
    /// Counts the container's starts (each gets a fresh writable layer).
    pub(super) run: u32,
}

pub(super) async fn start(
    client: &kube::Client,
    options: &KubeletOptions,
    t: &Target<'_>,
) -> Result<Started, StartError> {
    if options.build_tree_binaries {
        return build_tree(client, options, t).await;
    }
    let image = t.container.image.clone().unwrap_or_default();
    let (store, cache) = (options.image_store.clone(), options.workdir.join("images"));
    let pull = {
        let image = image.clone();
        tokio::task::spawn_blocking(move || {
            let found = resolve(&store, &image)?;
            let rootfs = unpack::rootfs(&cache, &found)?;
            anyhow::Ok((found, rootfs))
        })
    };
    let store = options.image_store.display();
    let (found, rootfs) =
        pull.await.map_err(|e| StartError::Pull(e.to_string()))?.map_err(|e| {
            StartError::Pull(format!(
                "Failed to pull image \"{image}\" from the image store {store}: {e:#}"
            ))
        })?;
    let config = &found.config;
    let creds = credentials(t.pod, t.container, config, &rootfs)?;

    let host_volumes = volumes(client, options, t.pod, t.container, t.namespace)
        .await
        .map_err(StartError::Creating)?;
    let mut mounts: Vec<Mount> = host_volumes
        .iter()
        .map(|v| Mount {
            source: v.host.clone(),
            target: v.mount_path.clone(),
            read_only: v.read_only,
        })
        .collect();
    if automount_token(client, t.pod, t.namespace).await.map_err(StartError::Creating)? {
        let dir = service_account_dir(client, options, t.pod, t.namespace)
            .await
            .map_err(StartError::Creating)?;
        mounts.push(Mount { source: dir, target: SERVICE_ACCOUNT_DIR.into(), read_only: true });
    }
    let hostname = hostname(t.pod, t.name);
    let (hosts, hostname_file) =
        etc_files(options, t.pod, &hostname, t.ip).map_err(StartError::Creating)?;
    mounts.push(Mount { source: hosts, target: "/etc/hosts".into(), read_only: false });
    mounts.push(Mount { source: hostname_file, target: "/etc/hostname".into(), read_only: false });
    mounts.extend(runtime_mounts());

    let kubelet_env = kubelet_env(options, t);
    let vars: BTreeMap<String, String> = kubelet_env.iter().cloned().collect();
    let env = environment(&hostname, config, &kubelet_env);
    let mut argv: Vec<String> =
        command_line(config, t.container).iter().map(|a| expand(a, &vars)).collect();
    let bind = loopback_args(options, &image, &argv, t.ip).map_err(StartError::Run)?;
    argv.extend(bind);
    let Some(first) = argv.first() else {
        return Err(StartError::Config("no command specified".into()));
    };
    let path = env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str());
    let program = find_program(&rootfs, first, path).ok_or_else(|| {
        StartError::Run(format!("exec: \"{first}\": executable file not found in $PATH"))
    })?;

    let sc = t.container.security_context.clone().unwrap_or_default();
    let adds = sc.capabilities.as_ref().and_then(|c| c.add.as_ref()).is_some_and(|a| !a.is_empty());
    if sc.privileged == Some(true) || adds {
        return Err(StartError::Config(
            "privileged containers and added capabilities are not supported by the process kubelet"
                .into(),
        ));
    }
    let uid = t.pod.metadata.uid.clone().unwrap_or_default();
    let pod_dir = options.workdir.join("pods").join(&uid);
    let run_dir = pod_dir.join(format!(".run-{}-{}", t.container.name, t.run));
    if t.run > 0 {
        let previous = pod_dir.join(format!(".run-{}-{}", t.container.name, t.run - 1));
        let _ = std::fs::remove_dir_all(previous);
    }
    let plan = Plan {
        lower: rootfs.clone(),
        run_dir,
        mounts,
        read_only_root: sc.read_only_root_filesystem.unwrap_or(false),
        working_dir: working_dir(config, t.container),
        uid: creds.uid,
        gid: creds.gid,
        groups: creds.groups,
        no_new_privileges: sc.allow_privilege_escalation == Some(false),
    };
    let mut command = Command::new(&program);
    command.args(&argv[1..]).env_clear().envs(env.iter().map(|(k, v)| (k, v)));
    plan.apply(&mut command).map_err(StartError::Creating)?;
    let log = log_path(options, t);
    tracing::info!(pod = t.name, ip = %t.ip, ?argv, uid = plan.uid, "process kubelet: starting {image}");
    let process = ChildProcess::spawn(t.name, command, &log).map_err(|e| {
        StartError::Run(format!("starting the container process: {}", describe_failure(&e)))
    })?;
    Ok(Started { process, image_id: found.image_id })
}

/// What every container runtime gives a container besides its image:
/// the character devices of the OCI runtime spec's default `/dev`, `/proc`
/// and a resolver configuration. Stand-ins: the host's device nodes and
/// `/etc/resolv.conf` bind-mounted, and the host's `/proc` (no PID
/// namespace here, so the container sees the host's processes).
fn runtime_mounts() -> Vec<Mount> {
    let bind = |source: &str, target: &str| Mount {
        source: PathBuf::from(source),
        target: target.to_owned(),
        read_only: false,
    };
    let mut mounts: Vec<Mount> = ["null", "zero", "full", "random", "urandom", "tty"]
        .iter()
        .map(|d| format!("/dev/{d}"))
        .filter(|d| Path::new(d).exists())
        .map(|d| bind(&d, &d))
        .collect();
    mounts.push(bind("/proc", "/proc"));
    if Path::new("/etc/resolv.conf").is_file() {
        mounts.push(Mount { read_only: true, ..bind("/etc/resolv.conf", "/etc/resolv.conf") });
    }
    mounts
}

fn hostname(pod: &Pod, name: &str) -> String {
    pod.spec.as_ref().and_then(|s| s.hostname.clone()).unwrap_or_else(|| name.to_owned())
}

fn log_path(options: &KubeletOptions, t: &Target<'_>) -> PathBuf {
    options.workdir.join("logs").join(format!("{}_{}.log", t.namespace, t.name))
}

/// kubelet's own variables (the API server's Service), the kubelet's
/// `extra_env`, then the Pod's `env`.
fn kubelet_env(options: &KubeletOptions, t: &Target<'_>) -> Vec<(String, String)> {
    let mut services = Vec::new();
    if let Some(api) = &options.api
        && let Some((host, port)) = api.host_port()
    {
        services.push(("KUBERNETES_SERVICE_HOST".to_owned(), host));
        services.push(("KUBERNETES_SERVICE_PORT".to_owned(), port));
    }
    services.extend(options.extra_env.iter().cloned());
    let spec = t.pod.spec.clone().unwrap_or_default();
    pod_env(t.container, &services, |field| match field {
        "status.podIP" => Some(t.ip.to_string()),
        "status.hostIP" => Some("127.0.0.1".into()),
        "metadata.name" => Some(t.name.to_owned()),
        "metadata.namespace" => Some(t.namespace.to_owned()),
        "metadata.uid" => t.pod.metadata.uid.clone(),
        "spec.nodeName" => spec.node_name.clone(),
        "spec.serviceAccountName" => spec.service_account_name.clone(),
        _ => None,
    })
}

/// The stand-in for the Pod's network namespace: flags that make the
/// process bind its Pod IP where it would bind every address (see
/// [`super::LoopbackBindArgs`]).
fn loopback_args(
    options: &KubeletOptions,
    image: &str,
    argv: &[String],
    ip: Ipv4Addr,
) -> Result<Vec<String>, String> {
    let repository = Reference::parse(image).map(|r| r.repository).unwrap_or_default();
    let last = repository.rsplit('/').next().unwrap_or_default();
    options
        .loopback_bind_args
        .iter()
        .filter(|b| b.repository == last)
        .map(|b| {
            let value = flag_value(argv, &b.flag).unwrap_or(&b.default);
            let bound = on_pod_ip(value, ip).ok_or_else(|| {
                format!(
                    "{}={value} binds no wildcard address: other Pods and probes could not reach it \
                     (process kubelet: Pods share the host network, a wildcard becomes the Pod IP)",
                    b.flag
                )
            })?;
            Ok(format!("{}={bound}", b.flag))
        })
        .collect()
}

/// The last value of `--flag=v` or `--flag v` in `argv`.
fn flag_value<'a>(argv: &'a [String], flag: &str) -> Option<&'a str> {
    let mut found = None;
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        if let Some(value) = arg.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
            found = Some(value);
        } else if arg == flag {
            found = args.next().map(String::as_str);
        }
    }
    found
}

/// `value` (`host` or `host:port`) with a wildcard host replaced by `ip`;
/// `None` for any other host but `ip` itself.
fn on_pod_ip(value: &str, ip: Ipv4Addr) -> Option<String> {
    let (host, port) = match value.rsplit_once(':') {
        Some((host, port)) if host.starts_with('[') || !host.contains(':') => (host, Some(port)),
        _ => (value, None),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let wildcard = matches!(host, "" | "0.0.0.0" | "::");
    if !wildcard && host != ip.to_string() {
        return None;
    }
    Some(match port {
        Some(port) => format!("{ip}:{port}"),
        None => ip.to_string(),
    })
}

/// The program's path inside the rootfs: as given if it has a `/`, else the
/// first executable file of that name on `PATH` (looked up in the image).
fn find_program(rootfs: &Path, program: &str, path: Option<&str>) -> Option<String> {
    if program.contains('/') {
        return Some(program.to_owned());
    }
    let path = path.unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':').filter(|d| !d.is_empty()).find_map(|dir| {
        let inside = format!("{}/{program}", dir.trim_end_matches('/'));
        let host = rootfs.join(super::sandbox::resolve_in(rootfs, &inside)?);
        let executable = std::fs::metadata(host).is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt as _;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        });
        executable.then_some(inside)
    })
}

/// The quick local loop: the build tree's binary named like the image's
/// repository, run on the host with container paths in its arguments
/// rewritten to host paths, and the token (if mounted) in a kubeconfig.
async fn build_tree(
    client: &kube::Client,
    options: &KubeletOptions,
    t: &Target<'_>,
) -> Result<Started, StartError> {
    let image = t.container.image.clone().unwrap_or_default();
    let repository = Reference::parse(&image).map(|r| r.repository).unwrap_or_default();
    let last = repository.rsplit('/').next().unwrap_or_default();
    let binary = crate::find_workspace_binary(last).ok_or_else(|| {
        StartError::Pull(format!(
            "no build-tree binary {last} for image \"{image}\" (build_tree_binaries)"
        ))
    })?;
    let mounts: Vec<HostVolume> = volumes(client, options, t.pod, t.container, t.namespace)
        .await
        .map_err(StartError::Creating)?;
    let mut args: Vec<String> = t.container.command.iter().flatten().skip(1).cloned().collect();
    args.extend(t.container.args.iter().flatten().cloned());
    let mut args: Vec<String> = args.iter().map(|a| rewrite(a, &mounts)).collect();
    let argv: Vec<String> = std::iter::once(String::new()).chain(args.iter().cloned()).collect();
    args.extend(loopback_args(options, &image, &argv, t.ip).map_err(StartError::Run)?);
    let mut env: BTreeMap<String, String> = kubelet_env(options, t)
        .into_iter()
        .map(|(k, v)| {
            let v = rewrite(&v, &mounts);
            (k, v)
        })
        .collect();
    env.insert("NO_COLOR".into(), "1".into());
    if automount_token(client, t.pod, t.namespace).await.map_err(StartError::Creating)? {
        let kubeconfig = service_account_kubeconfig(client, options, t.pod, t.namespace)
            .await
            .map_err(StartError::Creating)?;
        env.insert("KUBECONFIG".into(), kubeconfig.display().to_string());
    }
    let mut command = Command::new(&binary);
    command.args(&args).envs(&env);
    tracing::info!(pod = t.name, ip = %t.ip, ?args, "process kubelet: starting {}", binary.display());
    let process = ChildProcess::spawn(t.name, command, &log_path(options, t))
        .map_err(|e| StartError::Run(e.to_string()))?;
    Ok(Started { process, image_id: format!("build-tree://{}", binary.display()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_binds_become_the_pod_ip_and_others_are_refused() {
        let ip = Ipv4Addr::new(127, 9, 9, 2);
        let argv =
            |args: &[&str]| -> Vec<String> { args.iter().map(|a| (*a).to_owned()).collect() };
        assert_eq!(on_pod_ip("0.0.0.0", ip).as_deref(), Some("127.9.9.2"));
        assert_eq!(on_pod_ip("0.0.0.0:9090", ip).as_deref(), Some("127.9.9.2:9090"));
        assert_eq!(on_pod_ip("[::]:8080", ip).as_deref(), Some("127.9.9.2:8080"));
        assert_eq!(on_pod_ip("::", ip).as_deref(), Some("127.9.9.2"));
        assert_eq!(on_pod_ip(":8080", ip).as_deref(), Some("127.9.9.2:8080"));
        assert_eq!(on_pod_ip("127.9.9.2:1", ip).as_deref(), Some("127.9.9.2:1"));
        assert_eq!(on_pod_ip("127.0.0.1:8080", ip), None, "loopback only: unreachable");
        assert_eq!(on_pod_ip("10.0.0.1", ip), None);

        let a = argv(&["/bin/op", "--metrics_address=0.0.0.0:1", "--metrics_address", "[::]:2"]);
        assert_eq!(flag_value(&a, "--metrics_address"), Some("[::]:2"), "the last one wins");
        assert_eq!(
            flag_value(&argv(&["/bin/op", "--metrics_address_x=1"]), "--metrics_address"),
            None
        );
        let options = KubeletOptions::new(PathBuf::from("/nonexistent"));
        let image = "ghcr.io/versa-dev/versa-operator:0.1.0";
        let chart = argv(&["/usr/local/bin/versa-operator", "--metrics_address=0.0.0.0:9090"]);
        assert_eq!(
            loopback_args(&options, image, &chart, ip),
            Ok(vec!["--metrics_address=127.9.9.2:9090".to_owned()]),
            "the chart's port is kept"
        );
        let bad = argv(&["/usr/local/bin/versa-operator", "--metrics_address=127.0.0.1:8080"]);
        let err = loopback_args(&options, image, &bad, ip).expect_err("loopback-only bind");
        assert!(err.starts_with("--metrics_address=127.0.0.1:8080 binds no wildcard"), "{err}");
        assert_eq!(loopback_args(&options, "busybox", &bad, ip), Ok(vec![]));
    }

    #[test]
    fn programs_are_found_on_the_image_path() {
        let root = tempfile::tempdir().expect("root");
        std::fs::create_dir_all(root.path().join("usr/local/bin")).expect("dirs");
        let tool = root.path().join("usr/local/bin/tool");
        std::fs::write(&tool, "").expect("tool");
        let find = |p: &str| find_program(root.path(), p, Some("/bin:/usr/local/bin"));
        assert_eq!(find("tool"), None, "not executable");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(find("tool").as_deref(), Some("/usr/local/bin/tool"));
        assert_eq!(find("/anything").as_deref(), Some("/anything"));
        assert_eq!(find("missing"), None);
    }
}
