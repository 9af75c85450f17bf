//! `--grpc_channel_arguments`: TensorFlow Serving passes `k=v,k=v` to the
//! gRPC server builder. The arguments that have a counterpart in our gRPC
//! server are honoured; any other is accepted with a warning.

use std::time::Duration;

/// The gRPC server's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcSettings {
    /// `grpc.max_receive_message_length`.
    pub max_receive_message_length: usize,
    /// `grpc.max_send_message_length`.
    pub max_send_message_length: usize,
    /// `grpc.max_concurrent_streams` (per connection).
    pub max_concurrent_streams: Option<u32>,
    /// `grpc.keepalive_time_ms`: HTTP/2 pings this often.
    pub keepalive_time: Option<Duration>,
    /// `grpc.keepalive_timeout_ms`: a ping unanswered this long closes the connection.
    pub keepalive_timeout: Option<Duration>,
    /// `grpc.max_connection_age_ms`.
    pub max_connection_age: Option<Duration>,
    /// `grpc.max_connection_age_grace_ms`.
    pub max_connection_age_grace: Option<Duration>,
    /// `grpc.max_metadata_size`: bytes of headers per request.
    pub max_metadata_size: Option<u32>,
}

impl GrpcSettings {
    /// Defaults: a received message may be as large as a request's tensors
    /// may be, plus 1 MiB for the rest of it (TensorFlow Serving: 2 GiB);
    /// sent messages up to 2 GiB as upstream; at most four streams per
    /// connection per call it may run at once (`--grpc_max_threads`), so
    /// streams waiting their turn stay bounded; no server pings.
    pub fn defaults(max_request_tensor_bytes: usize, grpc_max_threads: usize) -> Self {
        let streams = grpc_max_threads.max(1).saturating_mul(4);
        Self {
            max_receive_message_length: max_request_tensor_bytes
                .saturating_add(1 << 20)
                .min(i32::MAX as usize),
            max_send_message_length: i32::MAX as usize,
            max_concurrent_streams: Some(u32::try_from(streams).unwrap_or(u32::MAX)),
            keepalive_time: None,
            keepalive_timeout: None,
            max_connection_age: None,
            max_connection_age_grace: None,
            max_metadata_size: None,
        }
    }
}

/// Parses `args` over `defaults`: the settings, and one warning per
/// argument that has no counterpart here.
pub fn parse(args: &str, defaults: GrpcSettings) -> Result<(GrpcSettings, Vec<String>), String> {
    let mut settings = defaults;
    let mut warnings = Vec::new();
    for pair in args.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("--grpc_channel_arguments: '{pair}' is not key=value"))?;
        let (key, value) = (key.trim(), value.trim());
        let int = || -> Result<i64, String> {
            value.parse::<i64>().map_err(|_| {
                format!("--grpc_channel_arguments: {key} takes an integer, got '{value}'")
            })
        };
        // gRPC's convention: -1 means no limit.
        let size = || -> Result<usize, String> {
            match int()? {
                -1 => Ok(i32::MAX as usize),
                v if v >= 0 => Ok(usize::try_from(v).unwrap_or(usize::MAX).min(i32::MAX as usize)),
                v => Err(format!("--grpc_channel_arguments: {key}={v} must be -1 or >= 0")),
            }
        };
        let millis = || -> Result<Option<Duration>, String> {
            match int()? {
                v if v < 0 || v == i64::from(i32::MAX) => Ok(None),
                v => Ok(Some(Duration::from_millis(v.unsigned_abs()))),
            }
        };
        let count = || -> Result<Option<u32>, String> {
            let v = int()?;
            u32::try_from(v)
                .map(Some)
                .map_err(|_| format!("--grpc_channel_arguments: {key}={v} is out of range"))
        };
        match key {
            "grpc.max_receive_message_length" => settings.max_receive_message_length = size()?,
            "grpc.max_send_message_length" => settings.max_send_message_length = size()?,
            "grpc.max_concurrent_streams" => settings.max_concurrent_streams = count()?,
            "grpc.keepalive_time_ms" => settings.keepalive_time = millis()?,
            "grpc.keepalive_timeout_ms" => settings.keepalive_timeout = millis()?,
            "grpc.max_connection_age_ms" => settings.max_connection_age = millis()?,
            "grpc.max_connection_age_grace_ms" => settings.max_connection_age_grace = millis()?,
            "grpc.max_metadata_size" => settings.max_metadata_size = count()?,
            other => warnings.push(format!(
                "--grpc_channel_arguments: {other} has no counterpart in versa-server; ignored"
            )),
        }
    }
    Ok((settings, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_arguments_are_honoured_and_others_warned_about() {
        let (s, warnings) = parse(
            "grpc.max_receive_message_length=1048576, grpc.max_send_message_length=-1,grpc.keepalive_time_ms=10000,grpc.so_reuseport=0",
            GrpcSettings::defaults(64 << 20, 8),
        )
        .expect("parses");
        assert_eq!(s.max_receive_message_length, 1 << 20);
        assert_eq!(s.max_send_message_length, i32::MAX as usize);
        assert_eq!(s.keepalive_time, Some(Duration::from_secs(10)));
        assert_eq!(
            warnings,
            vec![
                "--grpc_channel_arguments: grpc.so_reuseport has no counterpart in versa-server; ignored"
            ]
        );
        assert_eq!(GrpcSettings::defaults(64 << 20, 8).max_receive_message_length, 65 << 20);
    }

    #[test]
    fn malformed_arguments_are_refused_with_the_reason() {
        let d = || GrpcSettings::defaults(1, 1);
        assert!(
            parse("grpc.max_receive_message_length", d()).expect_err("no =").contains("key=value")
        );
        assert!(
            parse("grpc.max_receive_message_length=big", d())
                .expect_err("not an int")
                .contains("takes an integer")
        );
        assert!(
            parse("grpc.max_concurrent_streams=-5", d())
                .expect_err("negative")
                .contains("out of range")
        );
        assert_eq!(parse("", d()).expect("empty").0, d());
    }
}
