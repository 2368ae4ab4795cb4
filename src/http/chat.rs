//! `/chat`: a page that runs Converse.js against this server's WebSocket,
//! as Prosody's mod_conversejs does, so that a browser is all a new user
//! needs. Converse.js is not shipped here: its `dist` directory is served
//! from `[http] conversejs_dir` (the README says how to install it); until
//! it is there, the page says so.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use super::Web;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/chat", web::get().to(page))
        .route("/chat/", web::get().to(page))
        // Converse.js's own files. Looked up per request: the directory
        // may be filled in after the server started.
        .route("/chat/dist/{path:.*}", web::get().to(file));
}

async fn file(
    req: actix_web::HttpRequest,
    path: web::Path<String>,
    web: web::Data<Web>,
) -> actix_web::Result<HttpResponse> {
    let rel = std::path::Path::new(path.as_str());
    // Only plain names below the directory.
    if rel.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        return Ok(HttpResponse::NotFound().finish());
    }
    let full = web.config.conversejs_dir.join(rel);
    match actix_files::NamedFile::open_async(&full).await {
        Ok(f) => Ok(f.into_response(&req)),
        Err(_) => Ok(HttpResponse::NotFound().finish()),
    }
}

async fn page(web: web::Data<Web>) -> HttpResponse {
    let installed = web.config.conversejs_dir.join("converse.min.js").is_file();
    let body = if installed {
        chat_page(&web.domain, web.c2s.router.hosts().iter().any(|h| h.registration))
    } else {
        format!(
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Chat</title></head><body>\
             <p>Converse.js is not installed in <code>{}</code> ([http] conversejs_dir).</p>\
             <p>Run <code>make conversejs</code> in Shoal's directory (see the README's Web clients section), \
             then reload this page.</p></body></html>",
            quick_xml::escape::escape(web.config.conversejs_dir.display().to_string())
        )
    };
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

/// The page: Converse.js full screen, logging in over this listener's
/// WebSocket, accounts at `domain` by default. Converse 14 is an ES
/// module: both scripts are modules (the inline one runs once the library
/// has set `window.converse`).
fn chat_page(domain: &str, registration: bool) -> String {
    // Domains are letters, digits, dots and hyphens: nothing to escape in
    // a JavaScript string, but a configured one is checked all the same.
    let domain: String = domain
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Chat at {domain}</title>
<link rel="stylesheet" href="/chat/dist/converse.min.css">
<script type="module" src="/chat/dist/converse.min.js"></script>
</head>
<body class="converse-fullscreen">
<noscript>This chat needs JavaScript.</noscript>
<script type="module">
converse.initialize({{
  assets_path: '/chat/dist',
  websocket_url: (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/xmpp-websocket',
  discover_connection_methods: false,
  view_mode: 'fullscreen',
  default_domain: '{domain}',
  domain_placeholder: '{domain}',
  registration_domain: '{domain}',
  allow_registration: {registration},
  auto_reconnect: true,
  loglevel: 'info'
}});
</script>
</body>
</html>
"#
    )
}
