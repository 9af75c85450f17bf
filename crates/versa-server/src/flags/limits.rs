//! The flags that bound what requests may cost: per request, in flight, in
//! the inference queue, per listener. Defaults are sized to the machine
//! (cores, and the memory the process may use).

use clap::Args;

fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Bytes the process may use: the cgroup's limit if there is one, else the
/// machine's memory; `None` if neither can be read.
pub fn memory_available() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|text| cgroup_limit(&text));
    let total = read("/proc/meminfo").and_then(|text| mem_total(&text));
    match (cgroup, total) {
        (Some(c), Some(t)) => Some(c.min(t)),
        (c, t) => c.or(t),
    }
}

/// A cgroup memory limit file's value (`max` or an absurd v1 value: none).
pub fn cgroup_limit(text: &str) -> Option<u64> {
    let value: u64 = text.trim().parse().ok()?;
    (value < 1 << 60).then_some(value)
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn mem_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The default of `--max_inflight_request_bytes`: a quarter of the memory
/// the process may use, between 256 MiB and 4 GiB.
pub fn default_inflight_bytes(memory: Option<u64>) -> usize {
    const MIB: u64 = 1 << 20;
    let quarter = memory.map_or(1024 * MIB, |m| m / 4);
    usize::try_from(quarter.clamp(256 * MIB, 4096 * MIB)).unwrap_or(usize::MAX)
}

/// Request limits (Versa extensions; TensorFlow Serving has none of these).
#[derive(Debug, Clone, Args)]
pub struct LimitFlags {
    /// Bytes the input tensors of one request may take once decoded,
    /// broadcasts included (checked from shapes before anything is
    /// allocated); larger requests are refused with INVALID_ARGUMENT / 400.
    #[arg(long = "max_request_tensor_bytes", default_value_t = 64 << 20)]
    pub max_request_tensor_bytes: usize,
    /// Prediction requests (gRPC and REST) handled at once; more are shed
    /// at once with RESOURCE_EXHAUSTED / 429.
    #[arg(long = "max_concurrent_requests", default_value_t = 256 * cpus())]
    pub max_concurrent_requests: usize,
    /// Bytes that prediction requests in flight may hold together (bodies
    /// as they arrive, decoded inputs); requests that would pass it are shed
    /// with RESOURCE_EXHAUSTED / 429. Default: a quarter of the memory the
    /// process may use (cgroup limit or RAM), between 256 MiB and 4 GiB.
    #[arg(long = "max_inflight_request_bytes", default_value_t = default_inflight_bytes(memory_available()))]
    pub max_inflight_request_bytes: usize,
    /// Model runs that may wait for an inference thread; more are shed
    /// with RESOURCE_EXHAUSTED / 429 (batched requests queue as
    /// --batching_parameters_file says instead).
    #[arg(long = "max_queued_inferences", default_value_t = 64 * cpus())]
    pub max_queued_inferences: usize,
    /// Open connections per port (gRPC, REST, ModelService); more are
    /// closed as soon as they are accepted.
    #[arg(long = "max_connections", default_value_t = 4096)]
    pub max_connections: usize,
    /// How long a client may take to send a request: a new connection's
    /// first byte, REST headers, and the whole body of a REST or gRPC
    /// prediction. 0: no limit.
    #[arg(long = "request_read_timeout_seconds", default_value_t = 30)]
    pub request_read_timeout_seconds: u64,
    /// A connection that moves no byte either way this long is closed
    /// (a request still running with no traffic counts as silence). 0: never.
    #[arg(long = "connection_idle_timeout_seconds", default_value_t = 300)]
    pub connection_idle_timeout_seconds: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limits_are_read_from_cgroups_and_meminfo() {
        assert_eq!(cgroup_limit("max\n"), None);
        assert_eq!(cgroup_limit("9223372036854771712\n"), None, "cgroup v1 'unlimited'");
        assert_eq!(cgroup_limit("2147483648\n"), Some(2 << 30));
        let meminfo = "MemTotal:       24594108 kB\nMemFree:        1 kB\n";
        assert_eq!(mem_total(meminfo), Some(24_594_108 * 1024));
        assert_eq!(mem_total("nonsense"), None);
    }

    #[test]
    fn the_inflight_default_is_a_clamped_quarter_of_memory() {
        assert_eq!(default_inflight_bytes(Some(2 << 30)), 512 << 20);
        assert_eq!(default_inflight_bytes(Some(512 << 20)), 256 << 20, "at least 256 MiB");
        assert_eq!(default_inflight_bytes(Some(64 << 30)), 4 << 30, "at most 4 GiB");
        assert_eq!(default_inflight_bytes(None), 1 << 30);
    }
}
