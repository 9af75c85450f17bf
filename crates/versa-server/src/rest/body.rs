//! Reading a REST request body: within `--rest_api_max_body_bytes`, within
//! `--request_read_timeout_seconds`, and with every byte reserved from the
//! in-flight budget as it arrives (a declared `Content-Length` up front), so
//! neither one large body nor many slow ones can take memory the server
//! does not have.

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
    // A declared length is reserved (and the buffer sized) before reading.
    if let Some(n) = declared {
        ticket.reserve(n).map_err(BodyError::Refused)?;
    }
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            BodyError::Refused(ServingError::invalid_argument(format!(
                "cannot read the request body: {e}"
            )))
        })?;
        let Ok(data) = frame.into_data() else { continue };
        total = total.saturating_add(data.len());
        if total > max {
            return Err(BodyError::TooLarge { limit: max });
        }
        if declared.is_none_or(|n| total > n) {
            ticket.reserve(data.len()).map_err(BodyError::Refused)?;
        }
        chunks.push(data);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut whole = Vec::with_capacity(total);
            for chunk in chunks {
                whole.extend_from_slice(&chunk);
            }
            Bytes::from(whole)
        }
    })
}
