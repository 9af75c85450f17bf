//! Standard light load generators, run as child processes: `h2load`
//! (nghttp2) for gRPC over HTTP/2 and `wrk` for REST over HTTP/1.1. Each run
//! is bounded in time (the generator's own duration, and a watchdog), and
//! reports its own CPU time: the delta of this process's reaped-children
//! time (`cutime` + `cstime` of `/proc/self/stat`, i.e. `RUSAGE_CHILDREN`)
//! around waiting for it — nothing else is reaped meanwhile.

use crate::stats::Stats;
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const INSTALL: &str = "apt-get install nghttp2-client wrk";

/// `name` on `PATH`, or an error saying how to install it.
pub(crate) fn tool(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("`{name}` not found on PATH: {INSTALL}"))
}

/// Ticks of CPU time (user + system) of this process's waited-for children.
fn children_cpu() -> anyhow::Result<Duration> {
    let stat = crate::procstat::Stat::read("/proc/self/stat")?;
    Ok(crate::procstat::ticks(stat.children_ticks))
}

/// Runs `command` to its end (killed after `limit`); its output and CPU time.
fn run(mut command: Command, limit: Duration) -> anyhow::Result<(Output, Duration)> {
    let before = children_cpu()?;
    let mut child: Child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    // Drain both pipes on threads so the generator never blocks on them.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("{command:?} still running after {limit:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let cpu = children_cpu()?.saturating_sub(before);
    let output = Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    anyhow::ensure!(
        output.status.success(),
        "{command:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output, cpu))
}

/// What one generator run saw.
#[derive(Debug)]
pub(crate) struct Run {
    /// Generator threads.
    pub(crate) threads: usize,
    /// Requests sent (h2load: started; wrk: as done, it does not say).
    pub(crate) started: usize,
    /// Responses received, whatever their status.
    pub(crate) done: usize,
    /// Responses with a non-2xx status, stream or socket errors, timeouts.
    pub(crate) failed: usize,
    /// Response body bytes (h2load: DATA frame payloads; wrk: all bytes read).
    pub(crate) data_bytes: u64,
    /// How long the run took, by the generator's clock.
    pub(crate) elapsed: Duration,
    /// Latency of the successful responses.
    pub(crate) latency: Percentiles,
    /// CPU time of the generator (user + system, all its threads).
    pub(crate) cpu: Duration,
}

impl Run {
    /// Successful responses per second.
    pub(crate) fn rps(&self) -> f64 {
        self.done.saturating_sub(self.failed) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Latency quantiles of a run.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Percentiles {
    pub(crate) p50: Duration,
    pub(crate) p90: Duration,
    pub(crate) p99: Duration,
}

/// `h2load` POSTing `body` (a gRPC-framed message) to `path`: `clients`
/// connections, one stream each, for `duration` (or `requests` requests when
/// set). Latencies come from `--log-file` (per request), rate from the run.
pub(crate) fn h2load(
    port: u16,
    path: &str,
    body: &Path,
    clients: usize,
    duration: Duration,
    requests: Option<usize>,
) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("requests.tsv");
    let mut command = Command::new(tool("h2load")?);
    command.args(["-c", &clients.to_string(), "-m", "1", "-t", "1"]);
    match requests {
        Some(n) => command.args(["-n", &n.to_string()]),
        None => command.args(["-D", &duration.as_secs().max(1).to_string()]),
    };
    command
        .arg("-d")
        .arg(body)
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg(format!("--log-file={}", log.display()))
        .arg(format!("http://127.0.0.1:{port}{path}"));
    let (output, cpu) = run(command, duration + Duration::from_secs(30))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let summary = H2loadSummary::parse(&text)?;
    let rows = std::fs::read_to_string(&log).context("reading h2load's --log-file")?;
    let (mut latencies, mut bad) = (Vec::new(), 0);
    for line in rows.lines().filter(|l| !l.is_empty()) {
        let mut cols = line.split('\t');
        let (_, status, micros) = (cols.next(), cols.next(), cols.next());
        match (status.and_then(|s| s.parse::<i32>().ok()), micros.and_then(|m| m.parse().ok())) {
            (Some(200..=299), Some(us)) => latencies.push(Duration::from_micros(us)),
            _ => bad += 1,
        }
    }
    let failed = (summary.failed + summary.errored + summary.timeout).max(bad);
    anyhow::ensure!(
        latencies.len() + bad == summary.done,
        "h2load logged {} requests but reports {} done",
        latencies.len() + bad,
        summary.done
    );
    Ok(Run {
        threads: 1,
        started: summary.started,
        done: summary.done,
        failed,
        data_bytes: summary.data_bytes,
        elapsed: summary.elapsed,
        latency: {
            let s = Stats::new(latencies, failed, summary.elapsed);
            Percentiles { p50: s.pct(0.5), p90: s.pct(0.9), p99: s.pct(0.99) }
        },
        cpu,
    })
}

/// The lines of h2load's report that matter.
#[derive(Debug, PartialEq)]
struct H2loadSummary {
    elapsed: Duration,
    started: usize,
    done: usize,
    failed: usize,
    errored: usize,
    timeout: usize,
    data_bytes: u64,
}

/// A duration as h2load prints it: `917us`, `120.5ms` or `3.00s`.
fn h2load_duration(text: &str) -> anyhow::Result<Duration> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else {
        (text.strip_suffix('s').context("no time unit")?, 1.0)
    };
    Ok(Duration::from_secs_f64(number.parse::<f64>()? * scale))
}

impl H2loadSummary {
    fn parse(text: &str) -> anyhow::Result<Self> {
        let line = |prefix: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(prefix))
                .with_context(|| format!("no `{prefix}` line in h2load's output:\n{text}"))
        };
        // "finished in 3.00s, 5084.33 req/s, 1.11MB/s" (or "120.5ms", "917us")
        let finished = line("finished in ")?.split(',').next().unwrap_or_default().trim();
        let elapsed =
            h2load_duration(finished).with_context(|| format!("h2load's run time `{finished}`"))?;
        // "requests: 15253 total, 15254 started, 15253 done, 15253 succeeded, 0 failed, 0 errored, 0 timeout"
        let requests = line("requests: ")?;
        let count = |what: &str| -> anyhow::Result<usize> {
            requests
                .split(',')
                .find_map(|part| part.trim().strip_suffix(what))
                .with_context(|| format!("no `{what}` in h2load's requests line: {requests}"))?
                .trim()
                .parse::<usize>()
                .map_err(anyhow::Error::from)
        };
        // "traffic: 3.33MB (3493037) total, 168.17KB (172209) headers (space savings 95.46%), 2.94MB (3081106) data"
        let traffic = line("traffic: ")?;
        let data = traffic.rsplit_once(',').map(|(_, d)| d).unwrap_or(traffic);
        let data_bytes = data
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .context("no data bytes in h2load's traffic line")?
            .0
            .parse::<u64>()?;
        Ok(Self {
            elapsed,
            started: count(" started")?,
            done: count(" done")?,
            failed: count(" failed")?,
            errored: count(" errored")?,
            timeout: count(" timeout")?,
            data_bytes,
        })
    }
}

/// The Lua script `wrk` runs: POST `body_file` as JSON; at the end, one line
/// of figures for [`wrk`] to parse (latencies in µs).
fn wrk_script(body_file: &Path) -> String {
    format!(
        r#"local f = assert(io.open("{}", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("VERSA-BENCH requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d p50=%d p90=%d p99=%d max=%d\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"#,
        body_file.display()
    )
}

/// `wrk` POSTing the JSON in `body_file` to `path` over `connections`
/// connections for `duration`: one thread for one connection, two otherwise.
pub(crate) fn wrk(
    port: u16,
    path: &str,
    body_file: &Path,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("post.lua");
    std::fs::write(&script, wrk_script(body_file))?;
    let threads = if connections > 1 { 2 } else { 1 };
    let mut command = Command::new(tool("wrk")?);
    command
        .args(["-t", &threads.to_string(), "-c", &connections.to_string()])
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .args(["--timeout", "10s", "--latency", "-s"])
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}{path}"));
    let (output, cpu) = run(command, duration + Duration::from_secs(30))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let figures = WrkFigures::parse(&text)?;
    let failed = figures.get("connect")?
        + figures.get("read")?
        + figures.get("write")?
        + figures.get("status")?
        + figures.get("timeout")?;
    let done = figures.get("requests")? as usize;
    let at = |p: &str| figures.get(p).map(Duration::from_micros);
    Ok(Run {
        threads,
        started: done,
        done,
        failed: failed as usize,
        data_bytes: figures.get("bytes")?,
        elapsed: at("duration_us")?,
        latency: Percentiles { p50: at("p50")?, p90: at("p90")?, p99: at("p99")? },
        cpu,
    })
}

/// The `VERSA-BENCH key=value …` line the script prints.
#[derive(Debug)]
struct WrkFigures(Vec<(String, u64)>);

impl WrkFigures {
    fn parse(text: &str) -> anyhow::Result<Self> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("VERSA-BENCH "))
            .with_context(|| format!("no figures from wrk's script in its output:\n{text}"))?;
        let pairs = line
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| Ok((k.to_owned(), v.parse::<u64>()?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self(pairs))
    }

    fn get(&self, key: &str) -> anyhow::Result<u64> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v).with_context(|| format!("no {key}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2load_durations_in_every_unit_it_prints() -> anyhow::Result<()> {
        assert_eq!(h2load_duration("917us")?, Duration::from_micros(917));
        assert_eq!(h2load_duration("120.5ms")?, Duration::from_micros(120_500));
        assert_eq!(h2load_duration("3.00s")?, Duration::from_secs(3));
        assert!(h2load_duration("3 min").is_err());
        Ok(())
    }

    #[test]
    fn parses_h2load_report() -> anyhow::Result<()> {
        let text = "starting benchmark...\n\nfinished in 3.00s, 5084.33 req/s, 1.11MB/s\n\
            requests: 15253 total, 15254 started, 15253 done, 15250 succeeded, 3 failed, 0 errored, 0 timeout\n\
            status codes: 15250 2xx, 0 3xx, 3 4xx, 0 5xx\n\
            traffic: 3.33MB (3493037) total, 168.17KB (172209) headers (space savings 95.46%), 2.94MB (3081106) data\n";
        let summary = H2loadSummary::parse(text)?;
        assert_eq!(
            summary,
            H2loadSummary {
                elapsed: Duration::from_secs(3),
                started: 15254,
                done: 15253,
                failed: 3,
                errored: 0,
                timeout: 0,
                data_bytes: 3081106,
            }
        );
        let short = text.replace("3.00s,", "120.50ms,");
        assert_eq!(H2loadSummary::parse(&short)?.elapsed, Duration::from_micros(120_500));
        assert!(H2loadSummary::parse("finished in 1s").is_err());
        Ok(())
    }

    #[test]
    fn parses_the_wrk_script_line() -> anyhow::Result<()> {
        let figures = WrkFigures::parse(
            "Running 3s test\nVERSA-BENCH requests=12 duration_us=3000000 status=2 p50=150\n",
        )?;
        assert_eq!(figures.get("requests")?, 12);
        assert_eq!(figures.get("p50")?, 150);
        assert!(figures.get("p99").is_err());
        assert!(wrk_script(Path::new("/tmp/b.json")).contains("io.open(\"/tmp/b.json\""));
        Ok(())
    }
}
