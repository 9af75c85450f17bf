//! Reading a REST request body: within `--rest_api_max_body_bytes`, within
//! `--request_read_timeout_seconds`, and with the buffer reserved from the
//! in-flight budget as it grows with the bytes that arrive, so neither one
//! large body, nor many slow ones, nor a declared length nobody sends can
//! take memory the server does not have.

use crate::admission::Ticket;
use crate::error::ServingError;
use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use http_body_util::BodyExt as _;
use std::time::Duration;

/// Why a body could not be read; each answers with its own HTTP status.
#[derive(Debug)]
pub(super) enum BodyError {
    /// 413: larger than the limit.
    TooLarge { limit: usize },
    /// 408: did not arrive in time.
    TooSlow { timeout: Duration },
    /// The server cannot hold it now (429), or the stream broke (400).
    Refused(ServingError),
}

impl BodyError {
    pub(super) fn status(&self) -> u16 {
        match self {
            BodyError::TooLarge { .. } => 413,
            BodyError::TooSlow { .. } => 408,
            BodyError::Refused(e) => e.http_status(),
        }
    }

    pub(super) fn message(&self) -> String {
        match self {
            BodyError::TooLarge { limit } => {
                format!("request body larger than {limit} bytes (--rest_api_max_body_bytes)")
            }
            BodyError::TooSlow { timeout } => format!(
                "the request body did not arrive within {} s (--request_read_timeout_seconds)",
                timeout.as_secs()
            ),
            BodyError::Refused(e) => e.message.clone(),
        }
    }
}

fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers.get(axum::http::header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Reads the whole body.
pub(super) async fn read(
    body: Body,
    headers: &HeaderMap,
    max: usize,
    ticket: &Ticket,
    timeout: Option<Duration>,
) -> Result<Bytes, BodyError> {
    let reading = read_unbounded_in_time(body, headers, max, ticket);
    match timeout {
        Some(t) => {
            tokio::time::timeout(t, reading).await.map_err(|_| BodyError::TooSlow { timeout: t })?
        }
        None => reading.await,
    }
}

async fn read_unbounded_in_time(
    mut body: Body,
    headers: &HeaderMap,
    max: usize,
    ticket: &Ticket,
) -> Result<Bytes, BodyError> {
    let declared = declared_length(headers);
    if declared.is_some_and(|n| n > max) {
        return Err(BodyError::TooLarge { limit: max });
    }
    // One buffer, grown as bytes arrive and reserved as it grows (a declared
    // length is believed only as far as it has arrived): neither a length
    // nobody sends nor a flood of tiny chunks holds more than it reserved.
    let mut buffer = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            BodyError::Refused(ServingError::invalid_argument(format!(
                "cannot read the request body: {e}"
            )))
        })?;
        let Ok(data) = frame.into_data() else { continue };
        let needed = buffer.len().saturating_add(data.len());
        if needed > max {
            return Err(BodyError::TooLarge { limit: max });
        }
        if needed > buffer.capacity() {
            let old = buffer.capacity();
            let grown = needed
                .max(old.saturating_mul(2))
                .max(INITIAL)
                .min(declared.unwrap_or(max).max(needed))
                .min(max);
            // Both buffers are held while the bytes move over.
            ticket.reserve(grown).map_err(BodyError::Refused)?;
            buffer.reserve_exact(grown - buffer.len());
            ticket.release(old);
        }
        buffer.extend_from_slice(&data);
    }
    Ok(Bytes::from(buffer))
}

/// The first allocation of a body buffer.
const INITIAL: usize = 16 << 10;
