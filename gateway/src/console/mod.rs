//! The administrator's console at `/admin/`: server-rendered HTML pages over the same
//! views the admin JSON API serves (`crate::views`), no script, no outside asset.
//!
//! Its invariants: every page but sign-in needs a signed session cookie (`Admin`), and
//! every state change is a POST that carries the session's CSRF token and, when the
//! browser says where it came from, comes from this origin. Every response forbids
//! framing and inline script (`SECURITY_HEADERS`).

mod assets;
mod attendance;
mod audit;
mod conflicts;
mod devices;
mod layout;
mod rates;
mod session;
mod settings;
mod sign_in;
mod status;

use crate::clock::now_ms;
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use maud::html;
use session::{Session, SessionKeys, COOKIE_NAME};
use std::future::{ready, Ready};

/// What every console response carries: no framing, no inline or outside script, no
/// caching of pages that show secrets or an org's data, no referrer leaving the site
/// (`same-origin`, not `no-referrer`: under that Chromium sends `Origin: null` on the
/// console's own forms, which `same_origin` would refuse).
const SECURITY_HEADERS: [(&str, &str); 5] = [
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
];

pub fn configure(config: &mut web::ServiceConfig) {
    let headers = SECURITY_HEADERS.iter().fold(DefaultHeaders::new(), |headers, pair| headers.add(*pair));
    config.route("/admin", web::get().to(|| async { see_other("/admin/") })).service(
        web::scope("/admin")
            .wrap(headers)
            .app_data(web::FormConfig::default().limit(16 * 1024))
            .route("/", web::get().to(status::page))
            .route("/assets/console.css", web::get().to(assets::stylesheet))
            .route("/sign-in", web::get().to(sign_in::form))
            .route("/sign-in", web::post().to(sign_in::sign_in))
            .route("/sign-out", web::post().to(sign_in::sign_out))
            .route("/rates", web::get().to(rates::page))
            .route("/conflicts", web::get().to(conflicts::page))
            .route("/conflicts/{conflict_id}/resolve", web::get().to(conflicts::confirm))
            .route("/conflicts/{conflict_id}/resolve", web::post().to(conflicts::resolve))
            .route("/audit", web::get().to(audit::page))
            .route("/attendance", web::get().to(attendance::page))
            .route("/settings", web::get().to(settings::page))
            .route("/settings", web::post().to(settings::save))
            .route("/devices", web::get().to(devices::page))
            .route("/devices", web::post().to(devices::enrol))
            .route("/device-lookup", web::get().to(devices::lookup))
            .route("/devices/{device_id}", web::get().to(devices::show))
            .route("/devices/{device_id}/revoke", web::get().to(devices::confirm_revoke))
            .route("/devices/{device_id}/revoke", web::post().to(devices::revoke))
            .default_service(web::to(|| async { Err::<HttpResponse, _>(ConsoleError::NotFound) })),
    );
}

/// A form that changes nothing but must prove it came from a console page.
#[derive(serde::Deserialize)]
pub struct CsrfForm {
    pub csrf: String,
}

/// A signed-in administrator: the session its cookie proves and that session's CSRF
/// token, for the forms of the page.
pub struct Admin {
    keys: SessionKeys,
    session: Session,
    pub csrf: String,
}

impl Admin {
    /// Refuses a state change whose form does not carry this session's CSRF token.
    pub fn check_csrf(&self, presented: &str) -> Result<(), ConsoleError> {
        if self.keys.csrf_matches(&self.session, presented) {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden("the form is stale or came from elsewhere: reload the page and try again"))
        }
    }
}

impl FromRequest for Admin {
    type Error = ConsoleError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(signed_in(request))
    }
}

fn signed_in(request: &HttpRequest) -> Result<Admin, ConsoleError> {
    let state = request.app_data::<web::Data<AppState>>().expect("the app has its state");
    let keys = SessionKeys::derive(&state.admin_token);
    let session = cookie(request, COOKIE_NAME)
        .and_then(|value| keys.session(value, now_ms() / 1000))
        .ok_or(ConsoleError::SignIn)?;
    if request.method() == actix_web::http::Method::POST && !same_origin(request) {
        return Err(ConsoleError::Forbidden("this change came from another site"));
    }
    let csrf = keys.csrf_token(&session);
    Ok(Admin { keys, session, csrf })
}

/// A POST from a page of this gateway: its `Origin`, when the browser sends one, is
/// this host (behind a proxy, the host and scheme it forwards).
fn same_origin(request: &HttpRequest) -> bool {
    let Some(origin) = request.headers().get(header::ORIGIN).and_then(|value| value.to_str().ok()) else {
        return true;
    };
    let connection = request.connection_info();
    origin == format!("{}://{}", connection.scheme(), connection.host())
}

/// The value of one cookie of the request.
fn cookie<'a>(request: &'a HttpRequest, name: &str) -> Option<&'a str> {
    request
        .headers()
        .get_all(header::COOKIE)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Whether the browser reached the gateway over TLS (directly, or as its proxy says).
fn over_tls(request: &HttpRequest) -> bool {
    request.connection_info().scheme() == "https"
}

pub(crate) fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, location)).finish()
}

/// How a console request fails: to the sign-in page, or with an HTML page that says why.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("sign in first")]
    SignIn,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("no such page")]
    NotFound,
    #[error("{0}")]
    Api(#[from] ApiError),
}

impl From<otg_actors::store::StoreError> for ConsoleError {
    fn from(error: otg_actors::store::StoreError) -> Self {
        ConsoleError::Api(error.into())
    }
}

impl ResponseError for ConsoleError {
    fn status_code(&self) -> StatusCode {
        match self {
            ConsoleError::SignIn => StatusCode::SEE_OTHER,
            ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConsoleError::NotFound => StatusCode::NOT_FOUND,
            ConsoleError::Api(error) => error.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ConsoleError::SignIn = self {
            return see_other("/admin/sign-in");
        }
        let markup = layout::bare_page(
            "Something went wrong",
            html! {
                p.error { (self.to_string()) }
                p { a href="/admin/" { "Back to the console" } }
            },
        );
        // The scope's `DefaultHeaders` add the security headers to this answer too.
        layout::html_response(self.status_code(), markup)
    }
}
