//! A real Kubernetes control plane for Versa's tests, and a process kubelet.
//!
//! [`TestCluster`] starts etcd, kube-apiserver and kube-controller-manager
//! (built by `tests/testenv/install.sh` from Debian's source package) on free
//! loopback ports with their own certificates, token and data directory, and
//! tears everything down on drop — also when a test panics.
//!
//! [`ProcessKubelet`] stands in for kubelet + container runtime: it binds
//! Pods to its Node, pulls their images from a local OCI image layout
//! (`make images`), runs each container's process inside its image's rootfs
//! (mount namespace, overlay, bind-mounted volumes and service-account
//! token, chroot, the image's or the Pod's user) on a loopback address of
//! the Pod's own (127.a.b.2, 127.a.b.3, … in a /24 per kubelet), reports the
//! Pod's status (Running, podIP, readiness from the readiness probe,
//! restarts, ErrImagePull/ImagePullBackOff, CreateContainerConfigError),
//! restarts crashed processes, keeps configMap and secret volumes of running
//! Pods up to date in place, and stops processes gracefully when Pods go.
//! Nothing here ever dials a Service ClusterIP or a non-loopback address.

mod certs;
mod cluster;
pub mod helm;
pub mod kubelet;
pub mod load;
mod process;
pub mod serving;
pub mod versa;

pub use cluster::{ClusterOptions, TestCluster, k8s_bin_dir};
pub use kubelet::{ApiAccess, KubeletOptions, LoopbackBindArgs, ProcessKubelet};
pub use process::ChildProcess;

/// Kubernetes version of the test control plane.
pub const K8S_VERSION: &str = "1.20.2";

/// A binary built in this workspace's target directory (next to the running
/// test executable's `deps/`), e.g. `versa-server`.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    find_workspace_binary(name).unwrap_or_else(|| {
        panic!("{name} not built: run `cargo build --workspace --bins` first (make test does)")
    })
}

/// [`workspace_binary`], or `None` when it is not built.
pub fn find_workspace_binary(name: &str) -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    // Tests run from `<profile>/deps/`, binaries from `<profile>/`.
    let profile_dir = if dir.ends_with("deps") { dir.parent()? } else { dir };
    let bin = profile_dir.join(name);
    bin.exists().then_some(bin)
}
