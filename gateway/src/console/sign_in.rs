//! Signing in with the admin token and signing out. The token arrives only in a POST
//! body and is compared in constant time; it is never put in a URL, a cookie or a log.

use super::layout::{bare_page, html_response};
use super::session::{token_matches, SessionKeys, COOKIE_NAME, SESSION_SECONDS};
use super::{over_tls, see_other, Admin, ConsoleError};
use crate::clock::now_ms;
use crate::state::AppState;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde::Deserialize;

pub async fn form() -> HttpResponse {
    html_response(StatusCode::OK, sign_in_page(None))
}

fn sign_in_page(error: Option<&str>) -> Markup {
    bare_page(
        "Sign in",
        html! {
            form.sign-in method="post" action="/admin/sign-in" {
                label for="token" { "Admin token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                @if let Some(error) = error { p.field-error { (error) } }
                button type="submit" { "Sign in" }
            }
        },
    )
}

#[derive(Deserialize)]
pub struct SignInForm {
    token: String,
}

pub async fn sign_in(
    request: HttpRequest,
    form: web::Form<SignInForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    if !super::same_origin(&request) {
        return Err(ConsoleError::Forbidden("this sign-in came from another site"));
    }
    if !token_matches(&form.token, &state.admin_token) {
        return Ok(html_response(
            StatusCode::UNAUTHORIZED,
            sign_in_page(Some("That is not this gateway's admin token.")),
        ));
    }
    let (_, cookie) = SessionKeys::derive(&state.admin_token).new_session(now_ms() / 1000);
    let mut response = see_other("/admin/");
    let cookie = session_cookie(&cookie, SESSION_SECONDS, over_tls(&request));
    response.headers_mut().insert(header::SET_COOKIE, header::HeaderValue::from_str(&cookie).expect("cookie is ASCII"));
    Ok(response)
}

/// Ends the session in this browser. Sessions are not kept on the server: a copied
/// cookie stays valid until it expires, unless the admin token changes.
pub async fn sign_out(
    request: HttpRequest,
    admin: Admin,
    form: web::Form<super::CsrfForm>,
) -> Result<HttpResponse, ConsoleError> {
    admin.check_csrf(&form.csrf)?;
    let mut response = see_other("/admin/sign-in");
    let cookie = session_cookie("", 0, over_tls(&request));
    response.headers_mut().insert(header::SET_COOKIE, header::HeaderValue::from_str(&cookie).expect("cookie is ASCII"));
    Ok(response)
}

/// The `Set-Cookie` value: script cannot read it, no other site's request carries it,
/// and over TLS it never travels in the clear.
fn session_cookie(value: &str, max_age_s: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE_NAME}={value}; Path=/admin; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_over_tls() {
        let plain = session_cookie("v", 60, false);
        assert_eq!(plain, "otg_console=v; Path=/admin; Max-Age=60; HttpOnly; SameSite=Strict");
        assert!(session_cookie("v", 60, true).ends_with("; Secure"));
    }
}
