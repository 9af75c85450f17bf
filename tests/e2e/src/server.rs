//! The `versa-server` process under test.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The built `versa-server` binary: `$VERSA_SERVER_BIN`, or next to this
/// test's own executable in the cargo target directory.
pub fn server_binary() -> PathBuf {
    if let Ok(path) = std::env::var("VERSA_SERVER_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/versa-server
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target dir");
    let bin = profile_dir.join("versa-server");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build --workspace --bins` first (make test does)",
        bin.display()
    );
    bin
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running server; killed on drop.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    pub grpc_port: u16,
    pub rest_port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

/// How a start attempt ended.
#[derive(Debug)]
pub enum Started {
    Serving(ServerProcess),
    /// The process exited before serving: its code and log.
    Exited {
        code: Option<i32>,
        log: Vec<String>,
    },
}

impl ServerProcess {
    /// Starts the server with `args` plus loopback ports and waits until both
    /// ports serve. Panics if it exits first.
    pub fn start(args: &[String]) -> Self {
        match Self::try_start(args) {
            Started::Serving(s) => s,
            Started::Exited { code, log } => {
                panic!("versa-server exited with {code:?}:\n{}", log.join("\n"))
            }
        }
    }

    /// Like [`start`](Self::start), but an early exit is a result.
    pub fn try_start(args: &[String]) -> Started {
        let (grpc_port, rest_port) = (free_port(), free_port());
        let mut all = vec![format!("--port={grpc_port}"), format!("--rest_api_port={rest_port}")];
        all.extend_from_slice(args);
        Self::spawn(
            &all,
            grpc_port,
            rest_port,
            &["Running gRPC ModelServer at", "Exporting HTTP/REST API at"],
        )
    }

    /// Starts the server with exactly `args` (ports included) and waits
    /// until it has logged every one of `ready_when`.
    pub fn start_with_ports(
        args: &[String],
        grpc_port: u16,
        rest_port: u16,
        ready_when: &[&str],
    ) -> Self {
        match Self::spawn(args, grpc_port, rest_port, ready_when) {
            Started::Serving(s) => s,
            Started::Exited { code, log } => {
                panic!("versa-server exited with {code:?}:\n{}", log.join("\n"))
            }
        }
    }

    fn spawn(args: &[String], grpc_port: u16, rest_port: u16, ready_when: &[&str]) -> Started {
        let markers: Vec<String> = ready_when.iter().map(|m| (*m).to_owned()).collect();
        let mut child = Command::new(server_binary())
            .arg("--bind_address=127.0.0.1")
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn versa-server");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut seen = vec![false; markers.len()];
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    for (marker, seen) in markers.iter().zip(seen.iter_mut()) {
                        *seen |= line.contains(marker.as_str());
                    }
                    if std::env::var_os("VERSA_E2E_ECHO").is_some() {
                        eprintln!("[versa-server] {line}");
                    }
                    log.lock().expect("log lock").push(line);
                    if seen.iter().all(|s| *s) {
                        let _ = ready_tx.send(true);
                    }
                }
                let _ = ready_tx.send(false); // stderr closed: the process ended
            });
        }
        match ready_rx.recv_timeout(crate::PATIENCE) {
            Ok(true) => Started::Serving(ServerProcess { child, grpc_port, rest_port, log }),
            Ok(false) | Err(_) => {
                let code = match child.try_wait() {
                    Ok(Some(status)) => status.code(),
                    _ => {
                        let _ = child.kill();
                        child.wait().ok().and_then(|s| s.code())
                    }
                };
                let log = log.lock().expect("log lock").clone();
                Started::Exited { code, log }
            }
        }
    }

    pub fn rest_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.rest_port)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    pub async fn prediction_client(&self) -> crate::PredictionClient {
        crate::PredictionClient::connect(self.grpc_url()).await.expect("gRPC connect")
    }

    pub async fn model_client(&self) -> crate::ModelClient {
        crate::ModelClient::connect(self.grpc_url()).await.expect("gRPC connect")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A field of `/proc/<pid>/status` in KiB (`VmHWM`: peak resident
    /// memory, `VmRSS`: resident now).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the server's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// CPU time the server has used so far (user + system), in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("stat");
        // Fields after the command name (which may hold spaces) start at ')'.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 =
            fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
        ticks as f64 / 100.0
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    /// Sends SIGTERM and waits (bounded) for the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = std::time::Instant::now() + crate::PATIENCE;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
