//! XEP-0156: where a web client finds the WebSocket endpoint, given only
//! the domain: `/.well-known/host-meta` (XRD) and `host-meta.json` (JRD),
//! with the URL of the listener the client asked, so that it is right
//! behind whatever name and port the client used.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::websocket::PATH;

const REL: &str = "urn:xmpp:alt-connections:websocket";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/.well-known/host-meta", web::get().to(xrd))
        .route("/.well-known/host-meta.json", web::get().to(jrd));
}

/// `ws://host/xmpp-websocket`, or `wss://` when the client came by TLS.
fn websocket_url(req: &HttpRequest) -> String {
    let info = req.connection_info();
    let scheme = if info.scheme() == "https" { "wss" } else { "ws" };
    format!("{scheme}://{}{PATH}", info.host())
}

async fn xrd(req: HttpRequest) -> HttpResponse {
    let href = quick_xml::escape::escape(websocket_url(&req)).into_owned();
    let body = format!(
        "<?xml version='1.0' encoding='utf-8'?>\n\
         <XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n  \
         <Link rel='{REL}' href='{href}'/>\n</XRD>\n"
    );
    HttpResponse::Ok()
        .content_type("application/xrd+xml")
        // Read by pages of other origins: that is what it is for.
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .body(body)
}

async fn jrd(req: HttpRequest) -> HttpResponse {
    let href = websocket_url(&req).replace('\\', "\\\\").replace('"', "\\\"");
    let body = format!("{{\"links\":[{{\"rel\":\"{REL}\",\"href\":\"{href}\"}}]}}\n");
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .body(body)
}
