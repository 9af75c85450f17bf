//! The objects a ModelDeployment owns, built as pure functions of it: the
//! serving Deployment, its Service, the ConfigMap new Pods boot from, and
//! the Secret holding the reload token.
//!
//! The Deployment's Pod template depends on `spec.server` and `spec.replicas`
//! only: versions, labels and weights reach the Pods by config reloads and
//! through the ConfigMap's *content*, never through the template, so they
//! never restart a Pod.

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, HTTPGetAction, PodSpec,
    PodTemplateSpec, Probe, Secret, SecretVolumeSource, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource as _;
use std::collections::BTreeMap;
use versa_crd::ModelDeployment;

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "versa-operator";
/// Pod label naming the ModelDeployment a Pod serves.
pub const DEPLOYMENT_LABEL: &str = "versa.dev/model-deployment";
/// The sidecar's gRPC port (TF Serving's default).
pub const GRPC_PORT: u16 = 8500;
/// The sidecar's REST port (TF Serving's default).
pub const REST_PORT: u16 = 8501;
/// The sidecar's ModelService port (status, reloads): apart from serving
/// traffic, so a NetworkPolicy can open it to the operator alone.
pub const MODEL_SERVICE_PORT: u16 = 8502;
/// Key of the model config in the ConfigMap.
pub const CONFIG_KEY: &str = "models.config";
/// Key of the token in the Secret.
pub const TOKEN_KEY: &str = "token";
/// Name of the serving container.
pub const CONTAINER: &str = "versa-server";

const CONFIG_DIR: &str = "/etc/versa/config";
const TOKEN_DIR: &str = "/etc/versa/reload-token";

/// Names of the owned objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub deployment: String,
    pub service: String,
    pub config_map: String,
    pub secret: String,
}

impl Names {
    pub fn of(md: &str) -> Self {
        Self {
            deployment: md.to_owned(),
            service: md.to_owned(),
            config_map: format!("{md}-model-config"),
            secret: format!("{md}-reload-token"),
        }
    }
}

fn name_of(md: &ModelDeployment) -> String {
    md.metadata.name.clone().unwrap_or_default()
}

/// Labels on every owned object and on the Pods.
pub fn labels(md: &ModelDeployment) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name".to_owned(), "versa-server".to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), FIELD_MANAGER.to_owned()),
        (DEPLOYMENT_LABEL.to_owned(), name_of(md)),
    ]
    .into_iter()
    .collect()
}

/// The label selector of a ModelDeployment's Pods.
pub fn pod_selector(md_name: &str) -> String {
    format!("{DEPLOYMENT_LABEL}={md_name}")
}

fn meta(md: &ModelDeployment, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: md.metadata.namespace.clone(),
        labels: Some(labels(md)),
        owner_references: md.controller_owner_ref(&()).map(|r: OwnerReference| vec![r]),
        ..ObjectMeta::default()
    }
}

/// The serving Deployment.
pub fn deployment(md: &ModelDeployment) -> Deployment {
    let names = Names::of(&name_of(md));
    let server = &md.spec.server;
    let selector: BTreeMap<String, String> =
        [(DEPLOYMENT_LABEL.to_owned(), name_of(md))].into_iter().collect();
    let mut args = vec![
        format!("--port={GRPC_PORT}"),
        format!("--rest_api_port={REST_PORT}"),
        format!("--model_service_port={MODEL_SERVICE_PORT}"),
        format!("--model_config_file={CONFIG_DIR}/{CONFIG_KEY}"),
        format!("--model_service_token_file={TOKEN_DIR}/{TOKEN_KEY}"),
    ];
    args.extend(server.args.iter().cloned());
    let mut model_volume = server.model_volume.clone();
    model_volume.name = "models".into();
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Probe::default()
    };
    let container = Container {
        name: CONTAINER.into(),
        image: Some(server.image.clone()),
        image_pull_policy: server.image_pull_policy.clone(),
        args: Some(args),
        env: (!server.env.is_empty()).then(|| server.env.clone()),
        resources: server.resources.clone(),
        security_context: Some(crate::pod_security::container_security_context()),
        ports: Some(vec![
            ContainerPort {
                name: Some("grpc".into()),
                container_port: i32::from(GRPC_PORT),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("http".into()),
                container_port: i32::from(REST_PORT),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("admin".into()),
                container_port: i32::from(MODEL_SERVICE_PORT),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(probe("/ready", 1)),
        liveness_probe: Some(Probe { initial_delay_seconds: Some(10), ..probe("/live", 10) }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "models".into(),
                mount_path: server.model_mount_path.clone(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "model-config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "reload-token".into(),
                mount_path: TOKEN_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    Deployment {
        metadata: meta(md, names.deployment),
        spec: Some(DeploymentSpec {
            replicas: Some(md.spec.replicas),
            selector: LabelSelector { match_labels: Some(selector), ..LabelSelector::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(md)), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    // The sidecar never calls the API server: no token in it.
                    automount_service_account_token: Some(false),
                    security_context: Some(crate::pod_security::pod_security_context()),
                    termination_grace_period_seconds: Some(30),
                    volumes: Some(vec![
                        model_volume,
                        Volume {
                            name: "model-config".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: names.config_map,
                                ..ConfigMapVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                        Volume {
                            name: "reload-token".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(names.secret),
                                default_mode: Some(0o400),
                                ..SecretVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                    ]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The Service in front of the serving Pods (gRPC and REST).
pub fn service(md: &ModelDeployment) -> Service {
    let port = |name: &str, port: u16| ServicePort {
        name: Some(name.into()),
        port: i32::from(port),
        target_port: Some(IntOrString::String(name.into())),
        // Server-side apply keys ports by (port, protocol): it must be set.
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    };
    Service {
        metadata: meta(md, Names::of(&name_of(md)).service),
        spec: Some(ServiceSpec {
            selector: Some([(DEPLOYMENT_LABEL.to_owned(), name_of(md))].into_iter().collect()),
            ports: Some(vec![port("grpc", GRPC_PORT), port("http", REST_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// Name of a ModelDeployment's NetworkPolicy.
pub fn network_policy_name(md: &str) -> String {
    format!("{md}-sidecars")
}

/// Who may reach the sidecars' ModelService port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorPods {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

/// A NetworkPolicy for the serving Pods: serving ports open, the
/// ModelService port open only to the operator's Pods.
pub fn network_policy(md: &ModelDeployment, operator: &OperatorPods) -> NetworkPolicy {
    let port = |p: u16| NetworkPolicyPort {
        port: Some(IntOrString::Int(i32::from(p))),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    };
    let namespace_label: BTreeMap<String, String> =
        [("kubernetes.io/metadata.name".to_owned(), operator.namespace.clone())].into();
    NetworkPolicy {
        metadata: meta(md, network_policy_name(&name_of(md))),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some([(DEPLOYMENT_LABEL.to_owned(), name_of(md))].into()),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    ports: Some(vec![port(GRPC_PORT), port(REST_PORT)]),
                    from: None,
                },
                NetworkPolicyIngressRule {
                    ports: Some(vec![port(MODEL_SERVICE_PORT)]),
                    from: Some(vec![NetworkPolicyPeer {
                        namespace_selector: Some(LabelSelector {
                            match_labels: Some(namespace_label),
                            ..LabelSelector::default()
                        }),
                        pod_selector: Some(LabelSelector {
                            match_labels: Some(operator.labels.clone()),
                            ..LabelSelector::default()
                        }),
                        ..NetworkPolicyPeer::default()
                    }]),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// The ConfigMap new and restarted Pods boot from: the model config of the
/// current rollout phase, in protobuf text format.
pub fn config_map(md: &ModelDeployment, config_text: &str) -> ConfigMap {
    ConfigMap {
        metadata: meta(md, Names::of(&name_of(md)).config_map),
        data: Some([(CONFIG_KEY.to_owned(), config_text.to_owned())].into_iter().collect()),
        ..ConfigMap::default()
    }
}

/// The Secret holding the bearer token the sidecars require on ModelService.
pub fn secret(md: &ModelDeployment, token: &str) -> Secret {
    Secret {
        metadata: meta(md, Names::of(&name_of(md)).secret),
        data: Some(
            [(TOKEN_KEY.to_owned(), ByteString(token.as_bytes().to_vec()))].into_iter().collect(),
        ),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

/// A new random token: 32 bytes from the OS, hex-encoded.
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(yaml: &str) -> ModelDeployment {
        let mut md: ModelDeployment = serde_yaml::from_str(yaml).expect("parses");
        md.metadata.uid = Some("uid-1".into());
        md
    }

    const BASE: &str = r#"
apiVersion: serving.versa.dev/v1alpha1
kind: ModelDeployment
metadata: {name: fraud, namespace: ml}
spec:
  replicas: 3
  server:
    image: ghcr.io/versa-dev/versa-server:0.1.0
    args: ["--num_load_threads=2"]
    modelVolume: {name: ignored, persistentVolumeClaim: {claimName: models}}
  models:
  - name: fraud
    basePath: /models/fraud
    versionPolicy: {specific: {versions: [41]}}
    labels: {stable: 41}
"#;

    #[test]
    fn the_deployment_runs_the_sidecar_with_config_token_and_models() {
        let d = deployment(&md(BASE));
        assert_eq!(d.metadata.name.as_deref(), Some("fraud"));
        assert_eq!(d.metadata.namespace.as_deref(), Some("ml"));
        let owner = &d.metadata.owner_references.as_ref().expect("owned")[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("ModelDeployment", Some(true)));
        let spec = d.spec.expect("spec");
        assert_eq!(spec.replicas, Some(3));
        let pod = spec.template.spec.expect("pod");
        let c = &pod.containers[0];
        assert_eq!(
            c.args.as_deref().expect("args"),
            [
                "--port=8500",
                "--rest_api_port=8501",
                "--model_service_port=8502",
                "--model_config_file=/etc/versa/config/models.config",
                "--model_service_token_file=/etc/versa/reload-token/token",
                "--num_load_threads=2",
            ]
        );
        let ready = c.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref()).expect("probe");
        assert_eq!(ready.path.as_deref(), Some("/ready"));
        let volumes = pod.volumes.expect("volumes");
        assert_eq!(volumes[0].name, "models");
        assert!(volumes[0].persistent_volume_claim.is_some());
        assert_eq!(
            volumes[1].config_map.as_ref().map(|c| c.name.as_str()),
            Some("fraud-model-config")
        );
        assert_eq!(
            volumes[2].secret.as_ref().and_then(|s| s.secret_name.as_deref()),
            Some("fraud-reload-token")
        );
        let mounts = c.volume_mounts.as_ref().expect("mounts");
        assert_eq!((mounts[0].mount_path.as_str(), mounts[0].read_only), ("/models", Some(true)));
    }

    #[test]
    fn versions_labels_and_weights_never_touch_the_pod_template() {
        let before = md(BASE);
        let mut after = before.clone();
        after.spec.models[0].labels.insert("canary".into(), 42);
        after.spec.models[0].traffic = [("stable".into(), 90), ("canary".into(), 10)].into();
        after.spec.models[0].version_policy = serde_yaml::from_str("{all: {}}").expect("policy");
        after.spec.rollout.version_load_timeout_seconds = 5;
        assert_eq!(deployment(&before), deployment(&after));
        let mut rolled = before.clone();
        rolled.spec.server.image = "versa-server:0.2.0".into();
        assert_ne!(deployment(&before), deployment(&rolled));
    }

    #[test]
    fn service_config_map_and_secret() {
        let md = md(BASE);
        let svc = service(&md);
        let ports: Vec<i32> = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .expect("ports")
            .iter()
            .map(|p| p.port)
            .collect();
        assert_eq!(ports, [8500, 8501]);
        let cm = config_map(&md, "model_config_list {}");
        assert_eq!(cm.data.expect("data")[CONFIG_KEY], "model_config_list {}");
        let token = new_token().expect("token");
        assert_eq!(token.len(), 64);
        assert_ne!(token, new_token().expect("token"));
        let s = secret(&md, &token);
        assert_eq!(s.data.expect("data")[TOKEN_KEY].0, token.as_bytes());
        assert_eq!(pod_selector("fraud"), "versa.dev/model-deployment=fraud");
    }

    #[test]
    fn the_network_policy_opens_model_service_to_the_operator_only() {
        let operator = OperatorPods {
            namespace: "versa-system".into(),
            labels: [("app.kubernetes.io/name".to_owned(), "versa-operator".to_owned())].into(),
        };
        let policy = network_policy(&md(BASE), &operator);
        let rules = policy.spec.expect("spec").ingress.expect("rules");
        let ports = |r: &NetworkPolicyIngressRule| -> Vec<IntOrString> {
            r.ports.iter().flatten().filter_map(|p| p.port.clone()).collect()
        };
        assert_eq!(ports(&rules[0]), [IntOrString::Int(8500), IntOrString::Int(8501)]);
        assert!(rules[0].from.is_none(), "serving ports open to all");
        assert_eq!(ports(&rules[1]), [IntOrString::Int(8502)]);
        let peer = &rules[1].from.as_ref().expect("from")[0];
        assert_eq!(
            peer.pod_selector.as_ref().and_then(|s| s.match_labels.clone()),
            Some(operator.labels.clone())
        );
    }
}
