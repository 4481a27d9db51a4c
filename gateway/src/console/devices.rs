//! The devices page: enrol a device (its secret shown this once, as text and as a QR
//! code the app scans), look one up with its sync status and health, and revoke it
//! after a confirmation. Enrolment and revocation are the admin API's own code
//! (`crate::views`).

use super::layout::{self, bytes, html_response, optional_time, query_escape, PageMeta};
use super::{see_other, Admin, ConsoleError};
use crate::clock::now_ms;
use crate::state::AppState;
use crate::views::{self, Enrolled};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup, PreEscaped};
use otg_actors::store::DeviceEnrolment;
use qrcode::render::svg;
use qrcode::QrCode;
use serde::Deserialize;

#[derive(Deserialize)]
pub struct DevicesQuery {
    org_id: Option<String>,
}

pub async fn page(admin: Admin, query: web::Query<DevicesQuery>) -> HttpResponse {
    let org_id = query.org_id.as_deref().filter(|org| !org.is_empty());
    let body = devices_forms(&admin, org_id, None);
    html_response(StatusCode::OK, layout::page(&admin, PageMeta { title: "Devices", org_id, refresh_s: None }, body))
}

fn devices_forms(admin: &Admin, org_id: Option<&str>, error: Option<&str>) -> Markup {
    html! {
        section.card {
            h2 { "Show a device" }
            form.inline method="get" action="/admin/device-lookup" {
                label { "Device id " input type="text" name="device_id" required; }
                button type="submit" { "Show" }
            }
        }
        section.card {
            h2 { "Enrol a device" }
            form #enrol method="post" action="/admin/devices" {
                input type="hidden" name="csrf" value=(admin.csrf);
                div.field { label for="device_id" { "Device id" } input #device_id type="text" name="device_id" required; }
                div.field { label for="org_id" { "Org" } input #org_id type="text" name="org_id" value=[org_id] required; }
                div.field {
                    label for="employee_id" { "Employee (empty for a shared kiosk)" }
                    input #employee_id type="text" name="employee_id";
                }
                @if let Some(error) = error { p.field-error { (error) } }
                button #enrol-submit type="submit" { "Enrol" }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct EnrolForm {
    csrf: String,
    device_id: String,
    org_id: String,
    #[serde(default)]
    employee_id: String,
}

/// Enrols the device and shows its secret: this answer is the only place it appears
/// (the page is not cached, and nothing keeps it).
pub async fn enrol(
    request: HttpRequest,
    admin: Admin,
    form: web::Form<EnrolForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    admin.check_csrf(&form.csrf)?;
    let EnrolForm { device_id, org_id, employee_id, .. } = form.into_inner();
    let employee_id = Some(employee_id.trim().to_owned()).filter(|id| !id.is_empty());
    let enrolled = match views::enrol_device(&state, device_id, org_id.clone(), employee_id).await {
        Ok(enrolled) => enrolled,
        Err(error @ (crate::error::ApiError::BadRequest(_) | crate::error::ApiError::AlreadyExists(_))) => {
            let body = devices_forms(&admin, Some(&org_id), Some(&error.to_string()));
            let meta = PageMeta { title: "Devices", org_id: Some(&org_id), refresh_s: None };
            return Ok(html_response(StatusCode::BAD_REQUEST, layout::page(&admin, meta, body)));
        }
        Err(error) => return Err(error.into()),
    };
    let connection = request.connection_info();
    let gateway = format!("{}://{}", connection.scheme(), connection.host());
    let body = enrolled_card(&enrolled, &gateway);
    let meta = PageMeta { title: "Devices", org_id: Some(&org_id), refresh_s: None };
    Ok(html_response(StatusCode::CREATED, layout::page(&admin, meta, body)))
}

fn enrolled_card(enrolled: &Enrolled, gateway: &str) -> Markup {
    let secret = enrolled.secret.to_base64();
    let payload = serde_json::json!({"gateway": gateway, "device_id": enrolled.device_id, "secret": secret});
    html! {
        section.card #enrolled {
            h2 { "Enrolled " (enrolled.device_id) }
            p { "The device's secret, shown this once: copy it into the app, or scan the code with it." }
            p.secret #secret { (secret) }
            div.qr { (qr_svg(&payload.to_string())) }
            p.muted { "The code holds {\"gateway\", \"device_id\", \"secret\"} as JSON." }
            p { a href={ "/admin/devices/" (query_escape(&enrolled.device_id)) } { "Show the device" } }
        }
    }
}

/// A QR code as inline SVG (drawn as shapes: nothing of the payload is markup).
fn qr_svg(payload: &str) -> Markup {
    let Ok(code) = QrCode::new(payload.as_bytes()) else {
        return html! { p.error { "The payload is too long for a QR code." } };
    };
    let image = code
        .render::<svg::Color>()
        .min_dimensions(220, 220)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build();
    // The renderer starts with an XML declaration, which has no place inside HTML.
    let start = image.find("<svg").unwrap_or(0);
    PreEscaped(image[start..].to_owned())
}

#[derive(Deserialize)]
pub struct LookupQuery {
    device_id: String,
}

/// The lookup form's target: the device's own page.
pub async fn lookup(_admin: Admin, query: web::Query<LookupQuery>) -> HttpResponse {
    see_other(&format!("/admin/devices/{}", path_escape(&query.device_id)))
}

/// A value for one segment of a URL's path.
fn path_escape(value: &str) -> String {
    query_escape(value).replace('+', "%20")
}

pub async fn show(
    admin: Admin,
    device_id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let device = views::show_device(&state, &device_id).await?;
    let settings = state.store.org_settings(&device.org_id).await?;
    let status = views::device_sync_status(&state, &device, &settings, now_ms()).await?;
    let body = html! {
        (device_facts(&device))
        section.card #sync {
            h2 { "Sync" }
            dl {
                dt { "last sync" } dd { (optional_time(status.last_sync_at)) }
                dt { "next_seq" } dd { (status.next_seq) }
                dt { "pending (reported)" } dd { (status.pending.map(|p| p.to_string()).unwrap_or_else(|| "—".into())) }
                dt { "batches succeeded" } dd { (status.batches_succeeded) }
                dt { "failures" } dd { (status.failures) }
                dt { "open conflicts" } dd { (status.open_conflicts) }
            }
        }
        section.card #health {
            h2 { "Health (as the device reported it)" }
            dl {
                dt { "storage" } dd {
                    @match status.health.queue_bytes {
                        Some(used) => { (bytes(used)) " of the org's " (bytes(status.health.storage_limit_bytes)) }
                        None => span.muted { "not reported" },
                    }
                }
                dt { "app version" } dd { (status.health.app_version.as_deref().unwrap_or("not reported")) }
                dt { "oldest pending record" } dd { (optional_time(status.health.oldest_pending_at)) }
                dt { "max offline days" } dd {
                    (status.health.max_offline_days)
                    @if status.health.silent_too_long { " " span.badge.bad { "silent for longer" } }
                }
                dt { "reported at" } dd { (optional_time(status.health.reported_at)) }
            }
        }
        @if device.revoked_at.is_none() {
            p { a href={ "/admin/devices/" (path_escape(&device.device_id)) "/revoke" } { "Revoke this device…" } }
        }
        p { a href={ "/admin/audit?device_id=" (query_escape(&device.device_id)) } { "Its audit trail" } }
    };
    let meta = PageMeta { title: "Devices", org_id: Some(&device.org_id), refresh_s: None };
    Ok(html_response(StatusCode::OK, layout::page(&admin, meta, body)))
}

fn device_facts(device: &DeviceEnrolment) -> Markup {
    html! {
        section.card #device data-status=(views::device_status(device)) {
            h2 { (device.device_id) }
            dl {
                dt { "status" } dd #device-status { (views::device_status(device)) }
                dt { "org" } dd { (device.org_id) }
                dt { "employee" } dd { (device.employee_id.as_deref().unwrap_or("shared kiosk")) }
                dt { "enrolled" } dd { (layout::time(device.enrolled_at)) }
                dt { "revoked" } dd { (optional_time(device.revoked_at)) }
            }
        }
    }
}

pub async fn confirm_revoke(
    admin: Admin,
    device_id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let device = views::show_device(&state, &device_id).await?;
    let body = html! {
        (device_facts(&device))
        form.card method="post" action={ "/admin/devices/" (path_escape(&device.device_id)) "/revoke" } {
            p { "Revoke " strong { (device.device_id) } "? It can never sync again; its records stay." }
            input type="hidden" name="csrf" value=(admin.csrf);
            button.danger #confirm type="submit" { "Revoke" }
            " "
            a href={ "/admin/devices/" (path_escape(&device.device_id)) } { "Cancel" }
        }
    };
    let meta = PageMeta { title: "Devices", org_id: Some(&device.org_id), refresh_s: None };
    Ok(html_response(StatusCode::OK, layout::page(&admin, meta, body)))
}

pub async fn revoke(
    admin: Admin,
    device_id: web::Path<String>,
    form: web::Form<super::CsrfForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    admin.check_csrf(&form.csrf)?;
    let device = views::revoke_device(&state, &device_id).await?;
    Ok(see_other(&format!("/admin/devices/{}", path_escape(&device.device_id))))
}
