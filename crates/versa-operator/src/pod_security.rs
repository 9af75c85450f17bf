//! The serving Pods' security settings: Kubernetes' `restricted` Pod
//! Security Standard, as the versa-server image expects to run (UID/GID
//! 65532, nothing written to its root filesystem).
//!
//! `fsGroup` makes the reload-token Secret and the model ConfigMap readable
//! by that user: kubelet gives their files to the group and adds group read.

use k8s_openapi::api::core::v1::{
    Capabilities, PodSecurityContext, SeccompProfile, SecurityContext,
};

/// The user and group of the versa-server image (`USER 65532:65532`).
pub const SERVER_UID: i64 = 65532;

/// Pod-level: non-root as the image's user, volumes group-owned by it, the
/// runtime's default seccomp profile.
pub fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(SERVER_UID),
        run_as_group: Some(SERVER_UID),
        fs_group: Some(SERVER_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// Container-level: no privilege escalation, no capabilities, a read-only
/// root filesystem.
pub fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        ..SecurityContext::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_pods_meet_the_restricted_pod_security_standard() {
        let pod = pod_security_context();
        let container = container_security_context();
        assert_eq!(pod.run_as_non_root, Some(true));
        assert_ne!(pod.run_as_user, Some(0));
        assert_eq!(pod.seccomp_profile.map(|s| s.type_).as_deref(), Some("RuntimeDefault"));
        assert_eq!(container.allow_privilege_escalation, Some(false));
        assert_eq!(container.capabilities.and_then(|c| c.drop), Some(vec!["ALL".to_owned()]));
        assert!(container.privileged.is_none());
    }
}
