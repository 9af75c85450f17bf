//! A response body that keeps its request's [`Ticket`] until it has been
//! sent (or dropped). The bytes of the response are held on the ticket as
//! soon as the body sees them, and handed on in chunks: the transport asks
//! for the next chunk only once it has room for it (HTTP/2 flow control,
//! HTTP/1 write buffer), so a client that never reads its answer keeps the
//! ticket — and the server's byte budget — rather than memory nobody counts.

use crate::admission::Ticket;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// How much of a response is handed on at a time.
const CHUNK: usize = 64 << 10;

pub(crate) struct HeldBody<B> {
    inner: B,
    /// Bytes the inner body produced that are not handed on yet.
    pending: Bytes,
    ticket: Option<Arc<Ticket>>,
}

impl<B> HeldBody<B> {
    pub(crate) fn new(inner: B, ticket: Arc<Ticket>) -> Self {
        Self { inner, pending: Bytes::new(), ticket: Some(ticket) }
    }

    fn next_chunk(&mut self) -> Frame<Bytes> {
        let n = self.pending.len().min(CHUNK);
        Frame::data(self.pending.split_to(n))
    }
}

impl<B> std::fmt::Debug for HeldBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldBody").field("pending", &self.pending.len()).finish_non_exhaustive()
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for HeldBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if !self.pending.is_empty() {
            return Poll::Ready(Some(Ok(self.next_chunk())));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    if let Some(ticket) = &self.ticket {
                        ticket.hold(data.len());
                    }
                    self.pending = data;
                    Poll::Ready(Some(Ok(self.next_chunk())))
                }
                Err(other) => Poll::Ready(Some(Ok(other))),
            },
            Poll::Ready(end) => {
                // Sent (or failed): the request is over.
                self.ticket = None;
                Poll::Ready(end)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        let pending = self.pending.len() as u64;
        hint.set_lower(hint.lower().saturating_add(pending));
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper.saturating_add(pending));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::{Admission, AdmissionLimits};
    use http_body_util::BodyExt as _;

    #[tokio::test]
    async fn a_response_holds_its_bytes_until_its_last_chunk_is_taken() {
        let metrics = crate::metrics::Metrics::new();
        let admission = Admission::new(AdmissionLimits { max_requests: 1, max_bytes: 1 }, &metrics);
        let ticket = Arc::new(admission.admit("rest").expect("admitted"));
        let full = http_body_util::Full::new(Bytes::from(vec![7u8; 3 * CHUNK + 1]));
        let mut body = HeldBody::new(full, ticket);
        let first = body.frame().await.expect("frame").expect("data");
        assert_eq!(first.into_data().expect("data").len(), CHUNK);
        assert_eq!(admission.bytes_in_flight(), 3 * CHUNK + 1, "held past the bound");
        assert!(!body.is_end_stream());
        let mut rest = 0;
        while let Some(frame) = body.frame().await {
            rest += frame.expect("data").into_data().expect("data").len();
        }
        assert_eq!(rest, 2 * CHUNK + 1);
        assert_eq!((admission.bytes_in_flight(), admission.requests_in_flight()), (0, 0));
    }
}
