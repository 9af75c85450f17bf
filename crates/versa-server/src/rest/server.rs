//! Serving the REST router over HTTP/1.1 and HTTP/2 on a
//! [`LimitedListener`], with a bound on how long a client may take to send
//! its request headers (no connection is held open by a client that never
//! finishes them), and a graceful shutdown that lets requests in flight
//! finish.

use crate::listener::LimitedListener;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::time::Duration;

/// Serves `app` until `shutdown` resolves, then waits for open connections
/// to finish what they are doing.
pub async fn serve(
    mut listener: LimitedListener,
    app: axum::Router,
    header_timeout: Option<Duration>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            (stream, _peer) = listener.accept() => {
                let service = TowerToHyperService::new(app.clone());
                let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!("REST connection ended: {e}");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}
