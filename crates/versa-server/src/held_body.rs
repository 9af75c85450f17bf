//! A response body that keeps its request's [`Ticket`] until it has been
//! sent (or dropped), holding the bytes of every frame it hands on: a
//! client that never reads its answers holds the server's byte budget
//! (later requests are shed), not memory nobody counts.

use crate::admission::Ticket;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

pub(crate) struct HeldBody<B> {
    inner: B,
    ticket: Option<Arc<Ticket>>,
}

impl<B> HeldBody<B> {
    pub(crate) fn new(inner: B, ticket: Arc<Ticket>) -> Self {
        Self { inner, ticket: Some(ticket) }
    }
}

impl<B> std::fmt::Debug for HeldBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldBody").finish_non_exhaustive()
    }
}

impl<B: Body + Unpin> Body for HeldBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(ticket)) = (frame.data_ref(), &self.ticket) {
                    ticket.hold(bytes::Buf::remaining(data));
                }
            }
            // Sent: the request is over.
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.ticket = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
