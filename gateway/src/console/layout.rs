//! The frame every console page shares (head, navigation, sign-out) and the small
//! formatters its pages use. Everything is rendered with `maud`, which escapes every
//! value it is given: a device-supplied string is only ever text, never markup.

use super::Admin;
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use maud::{html, Markup, DOCTYPE};

/// The pages in the navigation: (path, title).
const PAGES: [(&str, &str); 7] = [
    ("/admin/", "Sync status"),
    ("/admin/rates", "Sync rates"),
    ("/admin/conflicts", "Conflicts"),
    ("/admin/audit", "Audit trail"),
    ("/admin/attendance", "Attendance"),
    ("/admin/settings", "Settings"),
    ("/admin/devices", "Devices"),
];

/// What a page says about itself to the frame.
pub struct PageMeta<'a> {
    pub title: &'a str,
    /// The org the pages look at; carried in every navigation link.
    pub org_id: Option<&'a str>,
    /// Reload the page after this many seconds (the status page during a storm).
    pub refresh_s: Option<u32>,
}

/// A complete page for a signed-in administrator.
pub fn page(admin: &Admin, meta: PageMeta, body: Markup) -> Markup {
    let org_query = meta.org_id.map(|org| format!("?org_id={}", query_escape(org))).unwrap_or_default();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(seconds) = meta.refresh_s { meta http-equiv="refresh" content=(seconds); }
                title { (meta.title) " · otg console" }
                link rel="stylesheet" href="/admin/assets/console.css";
            }
            body {
                header {
                    span.brand { "otg" }
                    nav {
                        @for (path, title) in PAGES {
                            a href={ (path) (org_query) } class=[(title == meta.title).then_some("current")] { (title) }
                        }
                    }
                    form.sign-out method="post" action="/admin/sign-out" {
                        input type="hidden" name="csrf" value=(admin.csrf);
                        button type="submit" { "Sign out" }
                    }
                }
                main {
                    h1 { (meta.title) @if let Some(org) = meta.org_id { " — " span.org { (org) } } }
                    (body)
                }
            }
        }
    }
}

/// A bare page (sign-in, errors before sign-in): no navigation.
pub fn bare_page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · otg console" }
                link rel="stylesheet" href="/admin/assets/console.css";
            }
            body.bare { main { h1 { (title) } (body) } }
        }
    }
}

/// The org picker every org page starts with, when no org is chosen yet or to change it.
pub fn org_picker(action: &str, org_id: Option<&str>) -> Markup {
    html! {
        form.org-picker method="get" action=(action) {
            label { "Org " input type="text" name="org_id" value=[org_id] required; }
            button type="submit" { "Show" }
        }
    }
}

pub fn html_response(status: StatusCode, markup: Markup) -> HttpResponse {
    HttpResponse::build(status).content_type("text/html; charset=utf-8").body(markup.into_string())
}

/// Unix ms as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn time(unix_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(unix_ms)
        .map(|at| at.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| unix_ms.to_string())
}

pub fn optional_time(unix_ms: Option<i64>) -> String {
    unix_ms.map(time).unwrap_or_else(|| "never".into())
}

/// Bytes in binary units, one decimal.
pub fn bytes(count: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let (mut value, mut unit) = (count as f64, 0);
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{count} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A value for a URL's query string.
pub fn query_escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => escaped.push(byte as char),
            b' ' => escaped.push('+'),
            other => escaped.push_str(&format!("%{other:02X}")),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatters() {
        assert_eq!(time(1_764_072_000_123), "2025-11-25 12:00:00");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1_572_864), "1.5 MiB");
        assert_eq!(query_escape("a&b c/é"), "a%26b+c%2F%C3%A9");
    }
}
