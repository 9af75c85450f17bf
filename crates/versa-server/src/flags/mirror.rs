//! The flags of shadow traffic (a model's `mirror` in the model config):
//! the threads that run copies, and how many copies (and bytes of them)
//! the server holds.

use clap::Args;

/// Shadow traffic (Versa extensions).
#[derive(Debug, Clone, Args)]
pub struct MirrorFlags {
    /// Threads that run mirrored copies of requests (0: one per core). They
    /// run at the lowest priority (nice 19), so copies only take CPU time
    /// that requests leave idle.
    #[arg(long = "mirror_threads", default_value_t = 0)]
    pub mirror_threads: usize,
    /// Copies waiting or running at once, all models together; a copy over
    /// it (or over its model's max_in_flight) is shed, never queued. Each
    /// holds its request's inputs and the answer it is compared with.
    #[arg(long = "max_mirror_in_flight", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_mirror_in_flight: u32,
    /// Bytes of tensors the copies waiting or running may hold at once, all
    /// models together (default 64 MiB): each holds its request's inputs and
    /// every output of the client's answer. A copy that would take them over
    /// it is shed, never queued.
    #[arg(long = "max_mirror_bytes", default_value_t = 64 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_mirror_bytes: u64,
}
