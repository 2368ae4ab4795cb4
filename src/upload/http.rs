//! The HTTP side of upload, on the server's HTTP listener:
//! `PUT /upload/{slot}/{name}` stores a slot's file, streamed to disk with
//! its declared size as the cap; `GET` and `HEAD` serve it, and `OPTIONS`
//! answers browsers' CORS preflight for the PUT (web clients such as
//! Converse.js upload from the page).

use std::sync::Arc;

use actix_web::body::SizedStream;
use actix_web::http::header;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use bytes::Bytes;
use futures_util::StreamExt;
use percent_encoding::{percent_decode_str, utf8_percent_encode};
use tokio::io::AsyncWriteExt;

use super::{PutRefusal, SlotId, Stored, Upload, SEGMENT};

/// Mounts the upload routes. They need the service's state as
/// `web::Data<Arc<Upload>>` (what [`super::start`] returns).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/upload/{slot}/{name}")
            .route(web::put().to(put))
            .route(web::get().to(get))
            .route(web::head().to(get))
            .route(web::method(Method::OPTIONS).to(preflight)),
    );
}

/// Served files are never run as a page of this origin: no sniffing, no
/// scripts, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

impl PutRefusal {
    fn status(self) -> StatusCode {
        match self {
            PutRefusal::NotFound => StatusCode::NOT_FOUND,
            PutRefusal::Conflict => StatusCode::CONFLICT,
            PutRefusal::LengthRequired => StatusCode::LENGTH_REQUIRED,
            PutRefusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            PutRefusal::BadRequest(_) => StatusCode::BAD_REQUEST,
            PutRefusal::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            PutRefusal::NotFound => "no such upload slot (it may have timed out)",
            PutRefusal::Conflict => "this slot is filled already, or being filled",
            PutRefusal::LengthRequired => "Content-Length is required",
            PutRefusal::TooLarge => "the body is larger than the slot",
            PutRefusal::BadRequest(reason) => reason,
            PutRefusal::Internal => "the file could not be stored",
        }
    }
}

/// The slot and the file name a request's path ends with (`.../{slot}/{name}`),
/// the name percent-decoded. Read from the raw path, so that what the
/// router decodes or not does not matter.
fn slot_path(req: &HttpRequest) -> Option<(SlotId, String)> {
    let mut segments = req.uri().path().rsplitn(3, '/');
    let name = segments.next()?;
    let id = SlotId::parse(segments.next()?)?;
    let name = percent_decode_str(name).decode_utf8().ok()?;
    Some((id, name.into_owned()))
}

/// CORS for a PUT and its preflight: any origin when none are configured,
/// else only the configured ones.
fn allow_origin(response: &mut HttpResponseBuilder, req: &HttpRequest, allowed: &[String]) {
    if allowed.is_empty() {
        response.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"));
        return;
    }
    response.insert_header((header::VARY, "Origin"));
    let origin = req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok());
    if let Some(origin) = origin.filter(|o| allowed.iter().any(|a| a.as_str() == *o)) {
        response.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.to_owned()));
    }
}

async fn put(req: HttpRequest, mut body: web::Payload, upload: web::Data<Arc<Upload>>) -> HttpResponse {
    let upload = upload.get_ref();
    let outcome = receive(&req, &mut body, upload).await;
    let mut response = match outcome {
        Ok(()) => HttpResponse::Created(),
        Err(refusal) => HttpResponse::build(refusal.status()),
    };
    allow_origin(&mut response, &req, &upload.settings.allowed_origins);
    match outcome {
        Ok(()) => response.finish(),
        Err(refusal) => {
            // The path is the capability: not logged.
            log::debug!("upload PUT refused: {}", refusal.reason());
            response
                .content_type("text/plain; charset=utf-8")
                .body(refusal.reason())
        }
    }
}

/// Streams a PUT's body into the slot's partial file, never more than the
/// slot's size, then stores it. On any failure the claim is dropped, which
/// gives the slot back and removes the partial file.
async fn receive(req: &HttpRequest, body: &mut web::Payload, upload: &Arc<Upload>) -> Result<(), PutRefusal> {
    let (id, name) = slot_path(req).ok_or(PutRefusal::NotFound)?;
    let length = match req.headers().get(header::CONTENT_LENGTH) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(PutRefusal::BadRequest("Content-Length is not a number"))?,
        ),
    };
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|t| t.to_str().ok());
    let claim = upload.claim(id, &name, length, content_type)?;
    let mut file = tokio::fs::File::create(&claim.part).await.map_err(PutRefusal::io)?;
    let mut written: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|_| PutRefusal::BadRequest("the body was cut short"))?;
        written = written.saturating_add(chunk.len() as u64);
        if written > claim.size {
            return Err(PutRefusal::TooLarge);
        }
        file.write_all(&chunk).await.map_err(PutRefusal::io)?;
    }
    if written != claim.size {
        return Err(PutRefusal::BadRequest("the body is shorter than its Content-Length"));
    }
    file.sync_all().await.map_err(PutRefusal::io)?;
    drop(file);
    upload.commit(claim).await
}

/// Whether a type is shown in the browser rather than downloaded: media
/// and plain text, which run nothing (SVG can hold scripts).
fn inline(content_type: Option<&str>) -> bool {
    let Some(t) = content_type else { return false };
    let essence = t.split(';').next().unwrap_or(t).trim().to_ascii_lowercase();
    essence == "text/plain"
        || essence.starts_with("audio/")
        || essence.starts_with("video/")
        || (essence.starts_with("image/") && essence != "image/svg+xml")
}

/// `Content-Disposition`, with the file name in RFC 8187's form.
fn disposition(stored: &Stored) -> String {
    let kind = if inline(stored.content_type.as_deref()) {
        "inline"
    } else {
        "attachment"
    };
    format!(
        "{kind}; filename*=UTF-8''{}",
        utf8_percent_encode(&stored.filename, SEGMENT)
    )
}

/// GET and HEAD: the file, with its type; readable from any page.
async fn get(req: HttpRequest, upload: web::Data<Arc<Upload>>) -> HttpResponse {
    let found = slot_path(&req).and_then(|(id, name)| Some((id, upload.stored(id, &name)?)));
    let Some((id, stored)) = found else {
        return HttpResponse::NotFound()
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
            .content_type("text/plain; charset=utf-8")
            .body("no such file (it may have expired)");
    };
    let mut response = HttpResponse::Ok();
    response
        .insert_header((
            header::CONTENT_TYPE,
            stored.content_type.as_deref().unwrap_or("application/octet-stream"),
        ))
        .insert_header((header::CONTENT_DISPOSITION, disposition(&stored)))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"));
    // Sized, so that Content-Length is sent (HEAD's too: the HTTP layer
    // writes no body for HEAD).
    if req.method() == Method::HEAD {
        let nothing = futures_util::stream::empty::<Result<Bytes, std::io::Error>>();
        return response.body(SizedStream::new(stored.size, nothing));
    }
    match tokio::fs::File::open(upload.file_path(id, &stored.filename)).await {
        Ok(file) => response.body(SizedStream::new(stored.size, tokio_util::io::ReaderStream::new(file))),
        // Expired and deleted since it was looked up.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HttpResponse::NotFound().finish(),
        Err(e) => {
            log::error!("upload {id}: {e}");
            HttpResponse::InternalServerError().finish()
        }
    }
}

/// A browser's preflight before a cross-origin PUT.
async fn preflight(req: HttpRequest, upload: web::Data<Arc<Upload>>) -> HttpResponse {
    let mut response = HttpResponse::NoContent();
    allow_origin(&mut response, &req, &upload.settings.allowed_origins);
    response
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, HEAD, PUT, OPTIONS"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, "Content-Type"))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "86400"))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_media_and_plain_text_are_shown_inline() {
        for t in [
            "image/png",
            "IMAGE/JPEG",
            "video/mp4",
            "audio/ogg; codecs=opus",
            "text/plain; charset=utf-8",
        ] {
            assert!(inline(Some(t)), "{t}");
        }
        for t in [
            "image/svg+xml",
            "text/html",
            "application/pdf",
            "application/octet-stream",
        ] {
            assert!(!inline(Some(t)), "{t}");
        }
        assert!(!inline(None));
    }

    #[test]
    fn paths_name_a_slot_and_a_decoded_file_name() {
        let req = |path: &str| actix_web::test::TestRequest::with_uri(path).to_http_request();
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            slot_path(&req(&format!("/upload/{id}/tr%C3%A8s%20cool.jpg"))),
            Some((SlotId::parse(id).unwrap(), "très cool.jpg".to_owned()))
        );
        assert_eq!(
            slot_path(&req(&format!("/upload/{id}/a%2Fb"))).map(|(_, n)| n),
            Some("a/b".to_owned())
        );
        assert_eq!(slot_path(&req("/upload/nothex/a.jpg")), None);
        assert_eq!(slot_path(&req(&format!("/upload/{id}/%FF"))), None);
    }
}
