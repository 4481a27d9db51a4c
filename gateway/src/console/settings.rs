//! The settings page: an org's offline settings as a form. What the server finds wrong
//! is shown beside the field it names: a value that is not a number here, a rule of
//! `OrgSettings::validate` (the same check as `PUT /v1/admin/orgs/{org_id}/settings`).

use super::layout::{self, html_response, org_picker, PageMeta};
use super::{Admin, ConsoleError};
use crate::error::ApiError;
use crate::state::AppState;
use crate::views;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use maud::{html, Markup};
use otg_schema::{ConflictResolution, OrgSettings, RecordKind};
use serde::Deserialize;
use std::collections::HashMap;

/// The numeric fields: (name, label).
const NUMBERS: [(&str, &str); 9] = [
    ("max_offline_days", "Max offline days"),
    ("storage_limit_bytes", "Storage limit (bytes)"),
    ("retry_base_ms", "Retry base (ms)"),
    ("retry_max_ms", "Retry max (ms)"),
    ("max_batch_records", "Max records per batch"),
    ("max_clock_skew_s", "Max clock skew (s)"),
    ("duplicate_window_s", "Duplicate window (s)"),
    ("max_shift_hours", "Max shift (hours)"),
    ("gap_timeout_s", "Gap timeout (s)"),
];
const POLICIES: [(ConflictResolution, &str); 3] = [
    (ConflictResolution::ServerWins, "server_wins"),
    (ConflictResolution::DeviceWins, "device_wins"),
    (ConflictResolution::Manual, "manual"),
];

#[derive(Deserialize)]
pub struct SettingsQuery {
    org_id: Option<String>,
    saved: Option<String>,
}

pub async fn page(
    admin: Admin,
    query: web::Query<SettingsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let Some(org_id) = query.org_id.as_deref().filter(|org| !org.is_empty()) else {
        let meta = PageMeta { title: "Settings", org_id: None, refresh_s: None };
        return Ok(html_response(StatusCode::OK, layout::page(&admin, meta, org_picker("/admin/settings", None))));
    };
    let settings = state.store.org_settings(org_id).await?;
    let values = form_values(&settings);
    let notice = query.saved.is_some().then_some("Saved. Devices read the new settings on their next sync.");
    let body = settings_form(&admin, org_id, &values, None, notice);
    let meta = PageMeta { title: "Settings", org_id: Some(org_id), refresh_s: None };
    Ok(html_response(StatusCode::OK, layout::page(&admin, meta, body)))
}

pub async fn save(
    admin: Admin,
    form: web::Form<HashMap<String, String>>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ConsoleError> {
    let values = form.into_inner();
    admin.check_csrf(values.get("csrf").map(String::as_str).unwrap_or_default())?;
    let org_id = values.get("org_id").cloned().unwrap_or_default();
    let refused = match settings_of(&values) {
        Ok(settings) => match views::replace_settings(&state, &org_id, &settings).await {
            Ok(()) => {
                let location = format!("/admin/settings?org_id={}&saved=1", layout::query_escape(&org_id));
                return Ok(super::see_other(&location));
            }
            Err(ApiError::BadRequest(message)) => message,
            Err(error) => return Err(error.into()),
        },
        Err(message) => message,
    };
    let body = settings_form(&admin, &org_id, &values, Some(&refused), None);
    let meta = PageMeta { title: "Settings", org_id: Some(&org_id), refresh_s: None };
    Ok(html_response(StatusCode::BAD_REQUEST, layout::page(&admin, meta, body)))
}

/// The settings as the form shows them.
fn form_values(settings: &OrgSettings) -> HashMap<String, String> {
    let numbers = [
        u64::from(settings.max_offline_days),
        settings.storage_limit_bytes,
        settings.retry_base_ms,
        settings.retry_max_ms,
        u64::from(settings.max_batch_records),
        u64::from(settings.max_clock_skew_s),
        u64::from(settings.duplicate_window_s),
        u64::from(settings.max_shift_hours),
        u64::from(settings.gap_timeout_s),
    ];
    let mut values: HashMap<String, String> =
        NUMBERS.iter().zip(numbers).map(|((name, _), value)| (name.to_string(), value.to_string())).collect();
    let policy = POLICIES.iter().find(|(policy, _)| *policy == settings.conflict_resolution).map_or("", |(_, n)| n);
    values.insert("conflict_resolution".into(), policy.into());
    let priorities: Vec<&str> = settings.sync_priorities.iter().map(|kind| kind.as_str()).collect();
    values.insert("sync_priorities".into(), priorities.join(", "));
    for (name, on) in [("sync_on_wifi_only", settings.sync_on_wifi_only), ("auto_retry", settings.auto_retry)] {
        if on {
            values.insert(name.into(), "on".into());
        }
    }
    values
}

/// The settings a submitted form states, or `field: what is wrong` for the first field
/// that is not even of its type (ranges are `OrgSettings::validate`'s to judge).
fn settings_of(values: &HashMap<String, String>) -> Result<OrgSettings, String> {
    let number = |name: &str| -> Result<u64, String> {
        let text = values.get(name).map(|value| value.trim()).unwrap_or_default();
        text.parse().map_err(|_| format!("{name}: must be a whole number"))
    };
    let narrow = |name: &str| -> Result<u32, String> {
        u32::try_from(number(name)?).map_err(|_| format!("{name}: must be at most {}", u32::MAX))
    };
    let policy = values.get("conflict_resolution").map(String::as_str).unwrap_or_default();
    let conflict_resolution = POLICIES
        .iter()
        .find(|(_, name)| *name == policy)
        .map(|(policy, _)| *policy)
        .ok_or_else(|| "conflict_resolution: must be server_wins, device_wins or manual".to_owned())?;
    let sync_priorities = values
        .get("sync_priorities")
        .map(String::as_str)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|kind| !kind.is_empty())
        .map(|kind| RecordKind::parse(kind).ok_or_else(|| format!("sync_priorities: {kind:?} is not a record kind")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(OrgSettings {
        max_offline_days: narrow("max_offline_days")?,
        storage_limit_bytes: number("storage_limit_bytes")?,
        sync_on_wifi_only: values.contains_key("sync_on_wifi_only"),
        auto_retry: values.contains_key("auto_retry"),
        retry_base_ms: number("retry_base_ms")?,
        retry_max_ms: number("retry_max_ms")?,
        conflict_resolution,
        max_batch_records: narrow("max_batch_records")?,
        sync_priorities,
        max_clock_skew_s: narrow("max_clock_skew_s")?,
        duplicate_window_s: narrow("duplicate_window_s")?,
        max_shift_hours: narrow("max_shift_hours")?,
        gap_timeout_s: narrow("gap_timeout_s")?,
    })
}

/// The form; `refused` (`field: rule`) is shown beside its field.
fn settings_form(
    admin: &Admin,
    org_id: &str,
    values: &HashMap<String, String>,
    refused: Option<&str>,
    notice: Option<&str>,
) -> Markup {
    let (refused_field, refused_rule) = refused.and_then(|message| message.split_once(": ")).unzip();
    let error_of = |field: &str| (refused_field == Some(field)).then_some(refused_rule).flatten();
    let value = |field: &str| values.get(field).map(String::as_str).unwrap_or_default().to_owned();
    html! {
        (org_picker("/admin/settings", Some(org_id)))
        @if let Some(notice) = notice { p.notice { (notice) } }
        @if let (Some(message), None) = (refused, refused_field) { p.error { (message) } }
        form.card #settings method="post" action="/admin/settings" {
            input type="hidden" name="csrf" value=(admin.csrf);
            input type="hidden" name="org_id" value=(org_id);
            @for (name, label) in NUMBERS {
                div.field {
                    label for=(name) { (label) }
                    input id=(name) type="text" inputmode="numeric" name=(name) value=(value(name))
                        aria-invalid=[error_of(name).map(|_| "true")];
                    @if let Some(rule) = error_of(name) { p.field-error id={ (name) "-error" } { (rule) } }
                }
            }
            div.field {
                label for="conflict_resolution" { "Conflict resolution" }
                select #conflict_resolution name="conflict_resolution" {
                    @for (_, policy) in POLICIES {
                        option value=(policy) selected[value("conflict_resolution") == policy] { (policy) }
                    }
                }
                @if let Some(rule) = error_of("conflict_resolution") { p.field-error { (rule) } }
            }
            div.field {
                label for="sync_priorities" { "Sync priorities (record kinds, in upload order)" }
                input #sync_priorities type="text" name="sync_priorities" value=(value("sync_priorities"));
                @if let Some(rule) = error_of("sync_priorities") { p.field-error id="sync_priorities-error" { (rule) } }
            }
            div.field { label { input type="checkbox" name="sync_on_wifi_only" checked[values.contains_key("sync_on_wifi_only")]; " Sync on wifi only" } }
            div.field { label { input type="checkbox" name="auto_retry" checked[values.contains_key("auto_retry")]; " Retry automatically" } }
            button #save type="submit" { "Save" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_states_the_settings_it_shows() {
        let settings = OrgSettings { sync_on_wifi_only: true, max_offline_days: 14, ..OrgSettings::default() };
        assert_eq!(settings_of(&form_values(&settings)), Ok(settings));
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_field() {
        let mut values = form_values(&OrgSettings::default());
        values.insert("max_offline_days".into(), "a week".into());
        assert_eq!(settings_of(&values), Err("max_offline_days: must be a whole number".into()));
    }
}
