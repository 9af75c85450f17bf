//! etcd + kube-apiserver (+ kube-controller-manager) on loopback.

use crate::certs::{self, Certs};
use crate::process::ChildProcess;
use anyhow::{Context as _, bail};
use base64::Engine as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Where `install.sh` caches the Kubernetes binaries (`$VERSA_K8S_BIN` overrides).
pub fn k8s_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VERSA_K8S_BIN") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("VERSA_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/versa")
    });
    cache.join(format!("k8s-{}", crate::K8S_VERSION)).join("bin")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// What to run besides etcd and the API server.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Run kube-controller-manager (Deployments → ReplicaSets → Pods, garbage
    /// collection, service-account tokens).
    pub controller_manager: bool,
    /// Keep the working directory after drop (for `make dev-cluster`).
    pub keep_dir: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            controller_manager: true,
            keep_dir: std::env::var_os("VERSA_KEEP_TEST_CLUSTER").is_some(),
        }
    }
}

/// A running control plane. Dropping it stops every process and removes its
/// directory (certificates, etcd data, logs).
#[derive(Debug)]
pub struct TestCluster {
    // Field order is drop order: controllers first, etcd last, files after.
    controller_manager: Option<ChildProcess>,
    apiserver: ChildProcess,
    /// How the API server was started, to start it again the same way.
    apiserver_argv: Vec<std::ffi::OsString>,
    etcd: ChildProcess,
    // Held for its Drop: removes the working directory.
    _dir: Option<tempfile::TempDir>,
    root: PathBuf,
    kubeconfig: PathBuf,
    server: String,
    token: String,
    ca_pem: Vec<u8>,
}

const TOKEN_BYTES: usize = 24;

fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    while out.len() < TOKEN_BYTES * 2 {
        let v = std::collections::hash_map::RandomState::new().build_hasher().finish();
        out.push_str(&format!("{v:016x}"));
    }
    out.truncate(TOKEN_BYTES * 2);
    out
}

impl TestCluster {
    /// Starts a fresh, isolated control plane and waits until `/readyz` says ok.
    pub async fn start(options: ClusterOptions) -> anyhow::Result<Self> {
        let bin = k8s_bin_dir();
        let apiserver_bin = bin.join("kube-apiserver");
        if !apiserver_bin.exists() {
            bail!(
                "{} not found: run `make testenv` (tests/testenv/install.sh) first",
                apiserver_bin.display()
            );
        }
        let dir = tempfile::Builder::new().prefix("versa-cluster-").tempdir()?;
        let root = dir.path().to_owned();
        let dir = if options.keep_dir {
            let _ = dir.keep();
            None
        } else {
            Some(dir)
        };
        let logs = root.join("logs");
        std::fs::create_dir_all(&logs)?;
        let certs = certs::generate(&root)?;
        let token = random_token();
        std::fs::write(
            root.join("tokens.csv"),
            format!("{token},admin,admin-uid,\"system:masters\"\n"),
        )?;

        let (etcd_client, etcd_peer, api_port) = (free_port()?, free_port()?, free_port()?);
        let mut etcd = Command::new("etcd");
        etcd.args([
            "--name=default".to_owned(),
            format!("--data-dir={}", root.join("etcd").display()),
            format!("--listen-client-urls=http://127.0.0.1:{etcd_client}"),
            format!("--advertise-client-urls=http://127.0.0.1:{etcd_client}"),
            format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
            format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer}"),
        ]);
        let etcd = ChildProcess::spawn("etcd", etcd, &logs.join("etcd.log"))
            .context("starting etcd (apt-get install etcd-server)")?;

        let command = apiserver_command(&apiserver_bin, &root, &certs, etcd_client, api_port);
        let apiserver_argv: Vec<std::ffi::OsString> = std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(ToOwned::to_owned)
            .collect();
        let apiserver =
            ChildProcess::spawn("kube-apiserver", command, &logs.join("kube-apiserver.log"))?;
        let server = format!("https://127.0.0.1:{api_port}");
        let ca_pem = std::fs::read(&certs.ca_cert)?;
        let kubeconfig = root.join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(&server, &ca_pem, &token))?;

        let mut cluster = Self {
            controller_manager: None,
            apiserver,
            apiserver_argv,
            etcd,
            _dir: dir,
            root: root.clone(),
            kubeconfig: kubeconfig.clone(),
            server,
            token,
            ca_pem,
        };
        cluster.wait_ready().await?;
        if options.controller_manager {
            let cm_port = free_port()?;
            let mut cm = Command::new(bin.join("kube-controller-manager"));
            cm.args([
                format!("--kubeconfig={}", kubeconfig.display()),
                "--bind-address=127.0.0.1".to_owned(),
                format!("--secure-port={cm_port}"),
                "--port=0".to_owned(),
                "--leader-elect=false".to_owned(),
                format!("--service-account-private-key-file={}", certs.sa_key.display()),
                format!("--root-ca-file={}", certs.ca_cert.display()),
                "--use-service-account-credentials=false".to_owned(),
                "--authentication-skip-lookup=true".to_owned(),
                "--controllers=*,-nodeipam,-nodelifecycle,-attachdetach,-persistentvolume-binder,-route,-service,-cloud-node-lifecycle".to_owned(),
            ]);
            cluster.controller_manager = Some(ChildProcess::spawn(
                "kube-controller-manager",
                cm,
                &logs.join("kube-controller-manager.log"),
            )?);
        }
        cluster.wait_for_default_namespace().await?;
        Ok(cluster)
    }

    /// Kills the API server (SIGKILL: a crash, not a shutdown), keeps it
    /// down for `down`, starts it again on the same port with the same
    /// certificates and data, and waits until it is ready.
    pub async fn crash_apiserver(&mut self, down: Duration) -> anyhow::Result<()> {
        self.apiserver.signal("KILL");
        self.apiserver.stop(Duration::from_secs(5));
        tokio::time::sleep(down).await;
        let (program, args) = self.apiserver_argv.split_first().context("API server command")?;
        let mut command = Command::new(program);
        command.args(args);
        self.apiserver = ChildProcess::spawn(
            "kube-apiserver",
            command,
            &self.root.join("logs/kube-apiserver.log"),
        )?;
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let client = self.client().await?;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let request = http::Request::get("/readyz").body(Vec::new())?;
            if let Ok(text) = client.request_text(request).await
                && text.trim() == "ok"
            {
                return Ok(());
            }
            if let Some(status) = self.apiserver.exited() {
                bail!(
                    "kube-apiserver exited ({status}); see {}",
                    self.root.join("logs/kube-apiserver.log").display()
                );
            }
            if let Some(status) = self.etcd.exited() {
                bail!("etcd exited ({status}); see {}", self.root.join("logs/etcd.log").display());
            }
            if Instant::now() > deadline {
                bail!(
                    "kube-apiserver not ready after 90 s; see {}",
                    self.root.join("logs").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_for_default_namespace(&self) -> anyhow::Result<()> {
        use k8s_openapi::api::core::v1::Namespace;
        let namespaces: kube::Api<Namespace> = kube::Api::all(self.client().await?);
        let deadline = Instant::now() + Duration::from_secs(30);
        while namespaces.get_opt("default").await?.is_none() {
            if Instant::now() > deadline {
                bail!("namespace default never appeared");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// A client with cluster-admin rights. No call waits more than 30 s
    /// for an answer (an API server restarting can hold a request).
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let mut config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        config.read_timeout = Some(Duration::from_secs(30));
        Ok(kube::Client::try_from(config)?)
    }

    /// A client authenticating with `token` (e.g. a service account's).
    pub fn client_with_token(&self, token: &str) -> anyhow::Result<kube::Client> {
        let mut config = kube::Config::new(self.server.parse()?);
        config.root_cert = Some(vec![rustls_pem_to_der(&self.ca_pem)?]);
        config.auth_info.token = Some(token.to_owned().into());
        Ok(kube::Client::try_from(config)?)
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn ca_pem(&self) -> &[u8] {
        &self.ca_pem
    }

    pub fn admin_token(&self) -> &str {
        &self.token
    }

    /// The working directory (certificates, etcd data, `logs/`).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Waits until the CRD `name` is Established. `kubectl wait` fails at
    /// once, rather than waiting, while a just-created CRD has no
    /// `status.conditions` yet, so it is retried until `limit`.
    pub async fn wait_crd_established(&self, name: &str, limit: Duration) -> anyhow::Result<()> {
        let crd = format!("crd/{name}");
        let timeout = format!("--timeout={}s", limit.as_secs().max(1));
        let deadline = Instant::now() + limit;
        loop {
            let out = self.kubectl(&["wait", "--for=condition=Established", &timeout, &crd])?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{crd} not Established after {limit:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs `kubectl` against this cluster.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        Ok(Command::new("kubectl")
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            // Bounded like every other call here (kubectl waits forever by default).
            .arg("--request-timeout=60s")
            .args(args)
            .output()?)
    }
}

fn rustls_pem_to_der(pem: &[u8]) -> anyhow::Result<Vec<u8>> {
    let text = std::str::from_utf8(pem)?;
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    Ok(base64::engine::general_purpose::STANDARD.decode(body)?)
}

fn apiserver_command(
    bin: &Path,
    root: &Path,
    certs: &Certs,
    etcd_port: u16,
    api_port: u16,
) -> Command {
    let mut c = Command::new(bin);
    c.args([
        format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
        "--bind-address=127.0.0.1".to_owned(),
        "--advertise-address=127.0.0.1".to_owned(),
        format!("--secure-port={api_port}"),
        "--insecure-port=0".to_owned(),
        format!("--tls-cert-file={}", certs.serving_cert.display()),
        format!("--tls-private-key-file={}", certs.serving_key.display()),
        format!("--client-ca-file={}", certs.ca_cert.display()),
        format!("--token-auth-file={}", root.join("tokens.csv").display()),
        "--authorization-mode=RBAC".to_owned(),
        "--service-account-issuer=https://kubernetes.default.svc".to_owned(),
        format!("--service-account-key-file={}", certs.sa_pub.display()),
        format!("--service-account-signing-key-file={}", certs.sa_key.display()),
        "--service-cluster-ip-range=10.96.0.0/24".to_owned(),
        "--enable-admission-plugins=NamespaceLifecycle".to_owned(),
        "--disable-admission-plugins=ServiceAccount,StorageObjectInUseProtection,DefaultStorageClass,PersistentVolumeClaimResize".to_owned(),
        "--endpoint-reconciler-type=none".to_owned(),
    ]);
    c
}

fn kubeconfig_yaml(server: &str, ca_pem: &[u8], token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: versa-test
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: admin
  user:
    token: {token}
contexts:
- name: versa-test
  context:
    cluster: versa-test
    user: admin
    namespace: default
current-context: versa-test
"
    )
}
