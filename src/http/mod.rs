//! The HTTP listener (`[http]`), shared by every HTTP feature: WebSocket
//! clients ([`websocket`], RFC 7395), their discovery ([`host_meta`],
//! XEP-0156), and the Converse.js page ([`chat`]). Each feature adds its
//! routes; actix-web serves them on the listeners configured, plain and
//! TLS (with the hosted domains' certificates).

pub mod chat;
pub mod host_meta;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::{web, App, HttpServer};
use shoal_actors::c2s::io::TlsSettings;
use shoal_actors::c2s::C2sContext;

use crate::config::HttpConfig;

/// What the HTTP features share: the clients' context (WebSocket streams
/// are client streams) and the `[http]` settings.
pub struct Web {
    pub c2s: Arc<C2sContext>,
    pub config: HttpConfig,
    /// The default domain, for the chat page.
    pub domain: String,
    /// Streams on these listeners are over TLS.
    pub secure: Vec<SocketAddr>,
    /// XEP-0363's PUT and GET, when `[upload] enabled`.
    pub upload: Option<Arc<crate::upload::Upload>>,
    /// `/metrics`, when `[http] metrics`.
    pub metrics: Option<crate::metrics::MetricsEndpoint>,
}

/// The running HTTP server.
pub struct HttpHandle {
    pub addrs: Vec<SocketAddr>,
    pub tls_addrs: Vec<SocketAddr>,
    server: actix_web::dev::ServerHandle,
}

impl HttpHandle {
    /// Stops accepting; open WebSocket streams close with the c2s
    /// shutdown.
    pub async fn stop(&self) {
        self.server.stop(true).await;
    }
}

/// Binds every `[http]` listener and serves them on `workers` threads.
/// `tls`: the certificates of `tls_listen`.
pub fn start(
    web: Web,
    plain: Vec<(std::net::TcpListener, SocketAddr)>,
    tls: Vec<(std::net::TcpListener, SocketAddr)>,
    certs: Option<&TlsSettings>,
    workers: usize,
) -> std::io::Result<HttpHandle> {
    let mut web = web;
    web.secure = tls.iter().map(|(_, a)| *a).collect();
    let upload = web.upload.clone().map(web::Data::new);
    let metrics = web.metrics.take().map(web::Data::new);
    let web = web::Data::new(web);
    let server = HttpServer::new(move || {
        let upload = upload.clone();
        let metrics = metrics.clone();
        App::new()
            .app_data(web.clone())
            .configure(websocket::routes)
            .configure(host_meta::routes)
            .configure(chat::routes)
            .configure(move |cfg| {
                if let Some(upload) = upload {
                    cfg.app_data(upload);
                    crate::upload::http::routes(cfg);
                }
                if let Some(metrics) = metrics {
                    cfg.app_data(metrics);
                    crate::metrics::routes(cfg);
                }
            })
    })
    .workers(workers)
    // As on the c2s listeners: a WebSocket stream writes stanzas as they
    // come, and Nagle's algorithm held the second of two back-to-back
    // frames until the peer's delayed ACK (40 ms on Linux).
    .tcp_nodelay(true)
    // The server's own shutdown stops this one; signals are main's.
    .disable_signals()
    .shutdown_timeout(2);
    let mut server = server;
    let mut addrs = Vec::new();
    for (listener, addr) in plain {
        log::info!("listening for HTTP on {addr} (WebSocket at /xmpp-websocket, chat at /chat)");
        server = server.listen(listener)?;
        addrs.push(addr);
    }
    let mut tls_addrs = Vec::new();
    if let Some(certs) = certs {
        let mut config = (*certs.acceptor(None).config()).as_ref().clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        for (listener, addr) in tls {
            log::info!("listening for HTTPS on {addr}");
            server = server.listen_rustls_0_23(listener, config.clone())?;
            tls_addrs.push(addr);
        }
    }
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(HttpHandle {
        addrs,
        tls_addrs,
        server: handle,
    })
}
