//! The conflicts page: an org's open or resolved conflicts, a page at a time, each with
//! its two records side by side (kind, time, device, employee, GPS, face and QR
//! results), and the resolution: chosen with a note, confirmed on a second page, then
//! carried out by the same code as `POST /v1/admin/conflicts/{id}/resolve`.

use super::layout::{self, html_response, org_picker, query_escape, PageMeta};
use super::{see_other, Admin, ConsoleError};
use crate::routes::paging::{next_cursor, PageQuery};
use crate::state::AppState;
use crate::views;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use maud::{html, Markup};
use otg_actors::store::{ConflictRecord, Page, RecordRef, Resolution, SeqEntry, StoredRecord};
use serde::Deserialize;

/// Conflicts on one page: each costs two record reads.
const PAGE_SIZE: usize = 20;

const RESOLUTIONS: [(Resolution, &str, &str); 4] = [
    (Resolution::KeepServer, "keep_server", "keep the stored record, supersede the newcomer"),
    (Resolution::KeepDevice, "keep_device", "keep the newcomer, supersede the stored record"),
    (Resolution::KeepBoth, "keep_both", "keep both"),
    (Resolution::DiscardBoth, "discard_both", "discard both"),
];

fn resolution_named(name: &str) -> Result<Resolution, ConsoleError> {
    RESOLUTIONS.iter().find(|(_, value, _)| *value == name).map(|(resolution, _, _)| *resolution).ok_or_else(|| {
        ConsoleError::Api(crate::error::ApiError::BadRequest(format!("resolution: {name:?} is not one")))
    })
}

fn resolution_text(resolution: Resolution) -> &'static str {
    RESOLUTIONS.iter().find(|(known, _, _)| *known == resolution).map_or("", |(_, _, text)| text)
}

#[derive(Deserialize)]
pub struct ConflictsQuery {
    org_id: Option<String>,
    status: Option<String>,
    /// The conflict just resolved, to say so.
    resolved: Option<String>,
}

pub async fn page(
    admin: Admin,
    query: web::Query<ConflictsQuery>,
    paging: web::Query<PageQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let Some(org_id) = query.org_id.as_deref().filter(|org| !org.is_empty()) else {
        let meta = PageMeta { title: "Conflicts", org_id: None, refresh_s: None };
        return Ok(html_response(StatusCode::OK, layout::page(&admin, meta, org_picker("/admin/conflicts", None))));
    };
    let status = query.status.as_deref().unwrap_or("open");
    let limit = paging.limit.map_or(Ok(PAGE_SIZE), |_| paging.limit())?;
    let after = paging.after()?;
    let found = views::conflicts_page(&state, org_id, Some(status), Page { after: after.as_deref(), limit }).await?;
    let next = next_cursor(found.last().map(|(_, cursor)| cursor.as_slice()), found.len(), limit);
    let mut cards = Vec::with_capacity(found.len());
    for (conflict, _) in &found {
        let device_record = stored(&state, &conflict.device_record).await?;
        let server_record = match &conflict.server_record {
            Some(reference) => stored(&state, reference).await?,
            None => None,
        };
        cards.push(conflict_card(conflict, device_record.as_ref(), server_record.as_ref(), true));
    }
    let base = format!("/admin/conflicts?org_id={}&status={status}", query_escape(org_id));
    let body = html! {
        (org_picker("/admin/conflicts", Some(org_id)))
        p {
            @for shown in ["open", "resolved"] {
                @if shown == status { strong { (shown) } } @else {
                    a href={ "/admin/conflicts?org_id=" (query_escape(org_id)) "&status=" (shown) } { (shown) }
                }
                " "
            }
        }
        @if let Some(resolved) = &query.resolved { p.notice { "Conflict " (resolved) " is resolved." } }
        @for card in cards { (card) }
        @if found.is_empty() { p.muted { "No " (status) " conflict." } }
        p.pager { @if let Some(next) = next { a href={ (base) "&cursor=" (next) } { "Next page →" } } }
    };
    let meta = PageMeta { title: "Conflicts", org_id: Some(org_id), refresh_s: None };
    Ok(html_response(StatusCode::OK, layout::page(&admin, meta, body)))
}

/// A conflict's record as stored (for its GPS, face and QR results).
async fn stored(state: &AppState, reference: &RecordRef) -> Result<Option<StoredRecord>, ConsoleError> {
    let entries = state.store.seq_entries(&reference.device_id, &[reference.seq]).await?;
    Ok(match entries.into_iter().next().flatten() {
        Some(SeqEntry::Stored(stored)) if stored.record.record_id == reference.record_id => Some(stored),
        _ => None,
    })
}

fn conflict_card(
    conflict: &ConflictRecord,
    device_record: Option<&StoredRecord>,
    server_record: Option<&StoredRecord>,
    with_form: bool,
) -> Markup {
    html! {
        section.card.conflict data-conflict=(conflict.id) {
            h2 { (conflict.kind.as_str()) " — employee " (conflict.employee_id) }
            p.muted {
                "detected " (layout::time(conflict.detected_at)) " · policy " (wire_name(conflict.policy))
                " · " (wire_name(conflict.outcome)) " · id " (conflict.id)
            }
            div.pair {
                (record_column("Newcomer (device record)", &conflict.device_record, device_record))
                @match &conflict.server_record {
                    Some(reference) => (record_column("Stored before (server record)", reference, server_record)),
                    None => div { h3 { "Stored before" } p.muted { "A conflict of one record." } },
                }
            }
            @match &conflict.resolution {
                Some(resolution) => p.notice {
                    "Resolved " (layout::time(resolution.resolved_at)) ": " (resolution_text(resolution.resolution))
                    @if !resolution.note.is_empty() { " — “" (resolution.note) "”" }
                },
                None => @if with_form {
                    form.inline method="get" action={ "/admin/conflicts/" (query_escape(&conflict.id)) "/resolve" } {
                        input type="hidden" name="org_id" value=(conflict.org_id);
                        label { "Resolution " select name="resolution" {
                            @for (_, value, text) in RESOLUTIONS { option value=(value) { (text) } }
                        } }
                        label { "Note " input type="text" name="note" maxlength="1000"; }
                        button type="submit" { "Resolve…" }
                    }
                },
            }
        }
    }
}

fn record_column(title: &str, reference: &RecordRef, stored: Option<&StoredRecord>) -> Markup {
    html! {
        div.record {
            h3 { (title) }
            dl {
                dt { "kind" } dd { (reference.kind.as_str()) }
                dt { "recorded at" } dd { (layout::time(reference.recorded_at)) }
                dt { "device" } dd { (reference.device_id) " · seq " (reference.seq) }
                dt { "record id" } dd { (reference.record_id) }
                @if let Some(stored) = stored {
                    dt { "employee" } dd { (stored.record.employee_id) }
                    dt { "received at" } dd { (layout::time(stored.received_at)) " · batch " (stored.batch_id) }
                    dt { "GPS" } dd { @match &stored.record.geo {
                        Some(geo) => { (format!("{:.5}, {:.5} (±{:.0} m)", geo.lat, geo.lon, geo.accuracy_m)) }
                        None => span.muted { "none" },
                    } }
                    dt { "face" } dd { @match &stored.record.face {
                        Some(face) => { (if face.matched { "matched" } else { "not matched" }) (format!(" (score {:.2})", face.score)) }
                        None => span.muted { "none" },
                    } }
                    dt { "QR" } dd { @match &stored.record.qr { Some(qr) => code { (qr) }, None => span.muted { "none" } } }
                    @if let Some(note) = &stored.record.note { dt { "note" } dd { (note) } }
                    dt { "offline" } dd { (stored.record.offline) }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct ResolveQuery {
    org_id: String,
    resolution: String,
    #[serde(default)]
    note: String,
}

/// The confirmation page: the conflict again, the decision, and one button that makes it.
pub async fn confirm(
    admin: Admin,
    conflict_id: web::Path<String>,
    query: web::Query<ResolveQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let resolution = resolution_named(&query.resolution)?;
    let conflict = state
        .store
        .conflict(&conflict_id)
        .await?
        .ok_or_else(|| ConsoleError::Api(crate::error::ApiError::NotFound(format!("no conflict {conflict_id}"))))?;
    let device_record = stored(&state, &conflict.device_record).await?;
    let server_record = match &conflict.server_record {
        Some(reference) => stored(&state, reference).await?,
        None => None,
    };
    let body = html! {
        (conflict_card(&conflict, device_record.as_ref(), server_record.as_ref(), false))
        form.card method="post" action={ "/admin/conflicts/" (query_escape(&conflict.id)) "/resolve" } {
            p { "Resolve this conflict: " strong { (resolution_text(resolution)) } "." }
            @if !query.note.is_empty() { p { "Note: “" (query.note) "”" } }
            input type="hidden" name="csrf" value=(admin.csrf);
            input type="hidden" name="org_id" value=(query.org_id);
            input type="hidden" name="resolution" value=(query.resolution);
            input type="hidden" name="note" value=(query.note);
            button #confirm type="submit" { "Confirm" }
            " "
            a href={ "/admin/conflicts?org_id=" (query_escape(&query.org_id)) } { "Cancel" }
        }
    };
    let meta = PageMeta { title: "Conflicts", org_id: Some(&query.org_id), refresh_s: None };
    Ok(html_response(StatusCode::OK, layout::page(&admin, meta, body)))
}

#[derive(Deserialize)]
pub struct ResolveForm {
    csrf: String,
    org_id: String,
    resolution: String,
    #[serde(default)]
    note: String,
}

pub async fn resolve(
    admin: Admin,
    conflict_id: web::Path<String>,
    form: web::Form<ResolveForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    admin.check_csrf(&form.csrf)?;
    let ResolveForm { org_id, resolution, note, .. } = form.into_inner();
    let resolved = views::resolve_conflict(&state, &conflict_id, resolution_named(&resolution)?, note).await?;
    Ok(see_other(&format!(
        "/admin/conflicts?org_id={}&status=resolved&resolved={}",
        query_escape(&org_id),
        query_escape(&resolved.id)
    )))
}

/// A value's name as the JSON API spells it (`server_wins`, `newcomer_superseded`), so
/// the page and the API use the same words.
fn wire_name(value: impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => String::new(),
    }
}
