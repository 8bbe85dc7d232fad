//! The listener: TCP accept, TLS handshake (rustls), HTTP/1.1 and HTTP/2 (hyper), graceful drain.

use super::{dispatch, App, Peer};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Arc<App>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let router = axum::Router::new().fallback(dispatch).with_state(app);
    let acceptor = TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = shutdown;
    loop {
        let (tcp, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => { tracing::warn!(error = %e, "accept failed"); tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
            _ = shutdown.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %addr, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let svc = router.map_request(move |mut r: http::Request<hyper::body::Incoming>| {
                r.extensions_mut().insert(Peer(addr));
                r.map(axum::body::Body::new)
            });
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            let builder = Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(peer = %addr, error = %e, "connection ended with an error");
            }
        });
    }
    // Stop accepting, let requests in flight finish (bounded).
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still busy after 10 s and were closed");
    }
}
