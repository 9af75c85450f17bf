//! What a container runs, decided from the image config and the Pod spec as
//! kubelet and the CRI runtime decide it: the command line (Entrypoint/Cmd
//! vs command/args), `$(VAR)` expansion, the environment, the working
//! directory and the user. Pure functions, no I/O but the rootfs's
//! `/etc/passwd` and `/etc/group`.

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Why a container cannot be created from its spec: kubelet's
/// `CreateContainerConfigError`, with its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ConfigError(pub(crate) String);

fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned)).collect()
}

/// The process's argv: `command` replaces the Entrypoint and drops the
/// Cmd; `args` replaces the Cmd.
pub(crate) fn command_line(config: &Value, container: &Container) -> Vec<String> {
    let command = container.command.clone().unwrap_or_default();
    let args = container.args.clone().unwrap_or_default();
    let mut argv = if command.is_empty() { strings(&config["Entrypoint"]) } else { command };
    if !args.is_empty() {
        argv.extend(args);
    } else if container.command.as_ref().is_none_or(Vec::is_empty) {
        argv.extend(strings(&config["Cmd"]));
    }
    argv
}

/// Kubernetes' `$(VAR)` expansion: a defined variable is replaced, an
/// undefined one stays as written, `$$` is a literal `$`.
pub(crate) fn expand(input: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('(')
            && let Some(end) = tail.find(')')
        {
            let name = &tail[..end];
            match vars.get(name) {
                Some(value) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Values of the Pod's `env`, as kubelet resolves them (literal values
/// expanded against the variables before them; `fieldRef`s this kubelet
/// knows). `services` are the variables kubelet defines before the Pod's
/// own (`KUBERNETES_SERVICE_HOST`, …).
pub(crate) fn pod_env(
    container: &Container,
    services: &[(String, String)],
    field: impl Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    let mut known: BTreeMap<String, String> = services.iter().cloned().collect();
    let mut out: Vec<(String, String)> = services.to_vec();
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => expand(v, &known),
            (None, Some(from)) => {
                match from.field_ref.as_ref().and_then(|f| field(&f.field_path)) {
                    Some(v) => v,
                    None => continue,
                }
            }
            (None, None) => String::new(),
        };
        known.insert(var.name.clone(), value.clone());
        out.push((var.name.clone(), value));
    }
    out
}

/// The process environment: the runtime's `HOSTNAME`, the image's `Env`,
/// then kubelet's variables; a later definition of a name wins.
pub(crate) fn environment(
    hostname: &str,
    config: &Value,
    kubelet: &[(String, String)],
) -> Vec<(String, String)> {
    let mut order: Vec<String> = Vec::new();
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    let mut set = |k: &str, v: &str| {
        if values.insert(k.to_owned(), v.to_owned()).is_none() {
            order.push(k.to_owned());
        }
    };
    set("HOSTNAME", hostname);
    for entry in strings(&config["Env"]) {
        let (k, v) = entry.split_once('=').unwrap_or((&entry, ""));
        set(k, v);
    }
    for (k, v) in kubelet {
        set(k, v);
    }
    order.into_iter().map(|k| (values[&k].clone(), k)).map(|(v, k)| (k, v)).collect()
}

/// The identity the process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) groups: Vec<u32>,
}

/// `runAsUser`/`runAsGroup` of the container, else of the Pod, else the
/// image's `User` (`uid[:gid]` or names looked up in the rootfs); the
/// supplemental groups and `fsGroup`; `runAsNonRoot` checked as kubelet does.
pub(crate) fn credentials(
    pod: &Pod,
    container: &Container,
    config: &Value,
    rootfs: &Path,
) -> Result<Credentials, ConfigError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let pod_sc = spec.security_context.clone().unwrap_or_default();
    let sc = container.security_context.clone().unwrap_or_default();
    let run_as_user = sc.run_as_user.or(pod_sc.run_as_user);
    let run_as_group = sc.run_as_group.or(pod_sc.run_as_group);
    let non_root = sc.run_as_non_root.or(pod_sc.run_as_non_root).unwrap_or(false);
    let described = format!(
        "pod: \"{}_{}({})\", container: {}",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.uid.as_deref().unwrap_or_default(),
        container.name
    );
    let image_user = config["User"].as_str().unwrap_or_default();
    let (user, group) = image_user.split_once(':').unwrap_or((image_user, ""));
    if non_root {
        match run_as_user {
            Some(0) => {
                return Err(ConfigError(format!(
                    "container's runAsUser breaks non-root policy ({described})"
                )));
            }
            Some(_) => {}
            None if user.is_empty() || user == "0" => {
                return Err(ConfigError(format!(
                    "container has runAsNonRoot and image will run as root ({described})"
                )));
            }
            None if user.parse::<u32>().is_err() => {
                return Err(ConfigError(format!(
                    "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root ({described})"
                )));
            }
            None => {}
        }
    }
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let by_name = |name: &str| {
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[0] == name)
    };
    let gid_of_uid = |uid: u32| {
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[2].parse() == Ok(uid))
            .and_then(|f| f[3].parse::<u32>().ok())
    };
    let id = |v: i64, what: &str| {
        u32::try_from(v).map_err(|_| ConfigError(format!("{what} {v} is out of range")))
    };
    let (uid, mut gid) = match run_as_user {
        Some(uid) => {
            let uid = id(uid, "runAsUser")?;
            (uid, gid_of_uid(uid).unwrap_or(0))
        }
        None if user.is_empty() => (0, 0),
        None => match user.parse::<u32>() {
            Ok(uid) => (uid, gid_of_uid(uid).unwrap_or(0)),
            Err(_) => {
                let fields = by_name(user).ok_or_else(|| {
                    ConfigError(format!(
                        "unable to find user {user}: no matching entries in passwd file"
                    ))
                })?;
                (fields[2].parse().unwrap_or(0), fields[3].parse().unwrap_or(0))
            }
        },
    };
    if run_as_user.is_none() && !group.is_empty() {
        gid = match group.parse::<u32>() {
            Ok(g) => g,
            Err(_) => {
                let groups = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
                groups
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.len() > 2 && f[0] == group)
                    .and_then(|f| f[2].parse().ok())
                    .ok_or_else(|| {
                        ConfigError(format!(
                            "unable to find group {group}: no matching entries in group file"
                        ))
                    })?
            }
        };
    }
    if let Some(g) = run_as_group {
        gid = id(g, "runAsGroup")?;
    }
    let mut groups = vec![gid];
    for g in pod_sc.supplemental_groups.iter().flatten().chain(pod_sc.fs_group.iter()) {
        let g = id(*g, "supplemental group")?;
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    Ok(Credentials { uid, gid, groups })
}

/// The working directory: the container's `workingDir`, else the image's,
/// else `/`.
pub(crate) fn working_dir(config: &Value, container: &Container) -> String {
    container
        .working_dir
        .clone()
        .filter(|d| !d.is_empty())
        .or_else(|| config["WorkingDir"].as_str().filter(|d| !d.is_empty()).map(str::to_owned))
        .unwrap_or_else(|| "/".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(spec: Value) -> Container {
        let mut spec = spec;
        spec["name"] = "c".into();
        serde_json::from_value(spec).expect("container")
    }

    #[test]
    fn command_and_args_combine_with_entrypoint_and_cmd_as_kubernetes_defines() {
        let config = json!({"Entrypoint": ["/ep", "-x"], "Cmd": ["cmd"]});
        let run = |c: Value| command_line(&config, &container(c));
        assert_eq!(run(json!({})), ["/ep", "-x", "cmd"]);
        assert_eq!(run(json!({"args": ["a"]})), ["/ep", "-x", "a"]);
        assert_eq!(run(json!({"command": ["/bin/c"]})), ["/bin/c"], "command drops Cmd");
        assert_eq!(run(json!({"command": ["/bin/c"], "args": ["a"]})), ["/bin/c", "a"]);
        assert_eq!(run(json!({"command": [], "args": []})), ["/ep", "-x", "cmd"], "empty is unset");
    }

    #[test]
    fn variables_expand_like_kubelet() {
        let vars: BTreeMap<String, String> =
            [("A".to_owned(), "1".to_owned()), ("B".to_owned(), "$(A)".to_owned())].into();
        assert_eq!(expand("--a=$(A)", &vars), "--a=1");
        assert_eq!(expand("$(B)", &vars), "$(A)", "no second round");
        assert_eq!(expand("$(C)", &vars), "$(C)", "undefined stays");
        assert_eq!(expand("$$(A) $$ $", &vars), "$(A) $ $");
        assert_eq!(expand("$(A", &vars), "$(A");
        assert_eq!(expand("x$yz", &vars), "x$yz");
    }

    #[test]
    fn pod_env_overrides_the_image_and_refers_to_earlier_variables() {
        let c = container(json!({"env": [
            {"name": "MODEL_NAME", "value": "fraud"},
            {"name": "URL", "value": "https://$(KUBERNETES_SERVICE_HOST):$(PORT)"},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "UNKNOWN", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        ]}));
        let services = vec![("KUBERNETES_SERVICE_HOST".to_owned(), "127.0.0.1".to_owned())];
        let kubelet =
            pod_env(&c, &services, |f| (f == "status.podIP").then(|| "127.1.2.3".to_owned()));
        let config = json!({"Env": ["PATH=/usr/local/bin", "MODEL_NAME=model"]});
        let env: BTreeMap<String, String> =
            environment("pod-0", &config, &kubelet).into_iter().collect();
        assert_eq!(env["HOSTNAME"], "pod-0");
        assert_eq!(env["PATH"], "/usr/local/bin");
        assert_eq!(env["MODEL_NAME"], "fraud");
        assert_eq!(env["URL"], "https://127.0.0.1:$(PORT)");
        assert_eq!(env["IP"], "127.1.2.3");
        assert!(!env.contains_key("UNKNOWN"));
    }

    fn pod(spec: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"containers": [{"name": "c"}], "securityContext": spec}}))
        .expect("pod")
    }

    #[test]
    fn users_come_from_the_security_context_else_the_image() {
        let rootfs = tempfile::tempdir().expect("rootfs");
        std::fs::create_dir(rootfs.path().join("etc")).expect("etc");
        std::fs::write(rootfs.path().join("etc/passwd"), "app:x:1000:1001::/:/bin/false\n")
            .expect("passwd");
        let c = container(json!({}));
        let creds = |sc: Value, user: &str| {
            credentials(&pod(sc), &c, &json!({"User": user}), rootfs.path())
        };
        let ok = |uid, gid, groups: &[u32]| Ok(Credentials { uid, gid, groups: groups.to_vec() });
        assert_eq!(creds(json!({}), "65532:65532"), ok(65532, 65532, &[65532]));
        assert_eq!(creds(json!({}), ""), ok(0, 0, &[0]));
        assert_eq!(creds(json!({}), "app"), ok(1000, 1001, &[1001]));
        assert_eq!(creds(json!({}), "1000"), ok(1000, 1001, &[1001]), "group from passwd");
        assert_eq!(
            creds(
                json!({"runAsUser": 7, "runAsGroup": 8, "fsGroup": 9, "supplementalGroups": [10]}),
                "65532:65532"
            ),
            ok(7, 8, &[8, 10, 9])
        );
        let err = creds(json!({}), "nobody").expect_err("unknown name");
        assert!(err.0.contains("unable to find user nobody"), "{err}");
        let err = creds(json!({"runAsNonRoot": true}), "").expect_err("root image");
        assert_eq!(
            err.0,
            "container has runAsNonRoot and image will run as root (pod: \"p_ns(u)\", container: c)"
        );
        let err = creds(json!({"runAsNonRoot": true, "runAsUser": 0}), "65532").expect_err("uid 0");
        assert!(err.0.starts_with("container's runAsUser breaks non-root policy"), "{err}");
        let err = creds(json!({"runAsNonRoot": true}), "app").expect_err("name");
        assert!(err.0.contains("non-numeric user (app)"), "{err}");
        assert_eq!(creds(json!({"runAsNonRoot": true}), "65532"), ok(65532, 0, &[0]));
    }
}
