//! The OpenAPI 3.1 document of the device API and the admin JSON API, served at
//! `GET /v1/openapi.json`.
//!
//! It is kept by hand next to the routes, and kept honest by tests: the unit test
//! below reads every `.route(...)` the route modules register and fails when one is
//! missing from the document or the document names one that is not registered;
//! `tests/openapi.rs` calls every documented operation on a running gateway and runs
//! schemathesis against it, which checks each answer against the schemas here.

use actix_web::HttpResponse;
use serde_json::{json, Value};
use std::sync::OnceLock;

pub async fn serve() -> HttpResponse {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    HttpResponse::Ok().content_type("application/json").body(DOCUMENT.get_or_init(|| document().to_string()).clone())
}

/// A `$ref` to a schema of `components`.
fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn nullable(kind: &str) -> Value {
    json!({"type": [kind, "null"]})
}

/// A JSON answer with this schema.
fn json_answer(description: &str, body: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": body}}})
}

/// An error answer (`{"error", "message"}`).
fn error_answer(description: &str) -> Value {
    json_answer(description, schema("Error"))
}

/// The answers every admin operation may give besides its own.
fn admin_answers(own: Value) -> Value {
    let mut answers = own.as_object().cloned().unwrap_or_default();
    for (status, description) in [
        ("400", "a query, path or body out of range"),
        ("401", "missing or wrong admin token"),
        ("404", "unknown endpoint or item"),
        ("500", "the store returned a corrupt value"),
        ("503", "the store is unavailable"),
    ] {
        answers.entry(status).or_insert_with(|| error_answer(description));
    }
    Value::Object(answers)
}

fn query(name: &str, required: bool, body: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": required, "schema": body, "description": description})
}

fn path_parameter(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
}

fn paging() -> [Value; 2] {
    [
        query("limit", false, json!({"type": "integer"}), "1 to 500, default 50"),
        query("cursor", false, json!({"type": "string"}), "the next_cursor of the previous page"),
    ]
}

fn json_body(body: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": body}}})
}

fn msgpack_answer(description: &str, body: Value) -> Value {
    json!({"description": description, "content": {"application/msgpack": {"schema": body}}})
}

/// The answers of a signed device request that is refused before it is read.
fn device_answers(own: Value) -> Value {
    let mut answers = own.as_object().cloned().unwrap_or_default();
    for (status, description) in [
        ("401", "a signature header missing, unknown device or wrong signature"),
        ("403", "the device is revoked"),
        ("500", "the store returned a corrupt value"),
        ("503", "the store is unavailable or the gateway is shedding load"),
    ] {
        answers.entry(status).or_insert_with(|| error_answer(description));
    }
    Value::Object(answers)
}

fn signed_headers() -> [Value; 3] {
    ["X-Device-Id", "X-Request-Time", "X-Signature"]
        .map(|name| json!({"name": name, "in": "header", "required": true, "schema": {"type": "string"}}))
}

/// An answer that says where the batch's time went (docs/PROTOCOL.md, "Acks").
fn with_server_timing(mut answer: Value) -> Value {
    answer["headers"] = json!({"Server-Timing": {
        "description": "the batch's time by stage, ms: admission, queue, placement, commit, answer, total",
        "schema": {"type": "string"},
    }});
    answer
}

/// The whole document.
pub fn document() -> Value {
    let admin = json!([{"adminToken": []}]);
    let [limit, cursor] = paging();
    let [device_header, time_header, signature_header] = signed_headers();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "otg — the Offline Tracking Gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Device API (MessagePack, HMAC-signed: see docs/PROTOCOL.md) and admin API (JSON, bearer admin token)."
        },
        "components": {
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        },
        "paths": {
            "/v1/sync/batches": {"post": {
                "summary": "Upload a batch of records (MessagePack, signed)",
                "parameters": [device_header, time_header, signature_header,
                    {"name": "X-OTG-Priority", "in": "header", "required": false, "schema": {"type": "string", "enum": ["live", "backlog"]}}],
                "requestBody": {"required": true, "content": {"application/msgpack": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": device_answers(json!({
                    "200": with_server_timing(msgpack_answer("the acks, once durable", json!({"type": "object"}))),
                    "400": error_answer("malformed body or invalid batch"),
                    "408": error_answer("the body arrived too slowly"),
                    "413": error_answer("body over the limit"),
                    "415": error_answer("not application/msgpack"),
                    "429": error_answer("device busy or over its rate"),
                })),
            }},
            "/v1/sync/config": {"get": {
                "summary": "The device's org settings (MessagePack, signed)",
                "parameters": signed_headers(),
                "responses": device_answers(json!({"200": msgpack_answer("the org's device settings", json!({"type": "object"}))})),
            }},
            "/v1/sync/status": {"get": {
                "summary": "The device's sync status (MessagePack, signed)",
                "parameters": signed_headers(),
                "responses": device_answers(json!({"200": msgpack_answer("next_seq, last sync, open conflicts", json!({"type": "object"}))})),
            }},
            "/v1/admin/devices": {"post": {
                "summary": "Enrol a device; its secret is answered this once",
                "security": admin,
                "requestBody": json_body(schema("EnrolRequest")),
                "responses": admin_answers(json!({
                    "201": json_answer("enrolled", schema("Enrolled")),
                    "409": error_answer("the device id was enrolled before"),
                    "413": error_answer("body over 64 KiB"),
                    "415": error_answer("not application/json"),
                })),
            }},
            "/v1/admin/devices/{device_id}": {
                "parameters": [path_parameter("device_id")],
                "get": {
                    "summary": "A device (never its secret), with its sync status and health",
                    "security": admin,
                    "responses": admin_answers(json!({"200": json_answer("the device", schema("Device"))})),
                },
                "delete": {
                    "summary": "Revoke a device (the first revocation time stands)",
                    "security": admin,
                    "responses": admin_answers(json!({"200": json_answer("the revoked device", schema("Device"))})),
                },
            },
            "/v1/admin/orgs/{org_id}/settings": {
                "parameters": [path_parameter("org_id")],
                "get": {
                    "summary": "An org's settings",
                    "security": admin,
                    "responses": admin_answers(json!({"200": json_answer("the settings", schema("OrgSettings"))})),
                },
                "put": {
                    "summary": "Replace an org's settings (keys left out take their defaults)",
                    "security": admin,
                    "requestBody": json_body(schema("OrgSettings")),
                    "responses": admin_answers(json!({
                        "200": json_answer("the settings now", schema("OrgSettings")),
                        "413": error_answer("body over 64 KiB"),
                        "415": error_answer("not application/json"),
                    })),
                },
            },
            "/v1/admin/conflicts": {"get": {
                "summary": "An org's conflicts in detection order, paged",
                "security": admin,
                "parameters": [query("org_id", true, json!({"type": "string"}), "the org"),
                    query("status", false, json!({"type": "string", "enum": ["open", "resolved"]}), "only open or only resolved ones"),
                    limit.clone(), cursor.clone()],
                "responses": admin_answers(json!({"200": json_answer("a page of conflicts", json!({
                    "type": "object", "required": ["conflicts", "next_cursor"],
                    "properties": {"conflicts": {"type": "array", "items": schema("Conflict")}, "next_cursor": nullable("string")},
                }))})),
            }},
            "/v1/admin/conflicts/{conflict_id}/resolve": {"post": {
                "summary": "Resolve a conflict",
                "security": admin,
                "parameters": [path_parameter("conflict_id")],
                "requestBody": json_body(schema("ResolveRequest")),
                "responses": admin_answers(json!({
                    "200": json_answer("the resolved conflict", schema("Conflict")),
                    "409": error_answer("another decision resolved it first"),
                    "413": error_answer("body over 64 KiB"),
                    "415": error_answer("not application/json"),
                })),
            }},
            "/v1/admin/employees/{employee_id}/attendance": {"get": {
                "summary": "One UTC day of an employee's records and effective shifts",
                "security": admin,
                "parameters": [path_parameter("employee_id"),
                    query("org_id", true, json!({"type": "string"}), "the org"),
                    query("day", true, json!({"type": "string"}), "YYYY-MM-DD")],
                "responses": admin_answers(json!({"200": json_answer("the day", schema("AttendanceDay"))})),
            }},
            "/v1/admin/sync-status": {"get": {
                "summary": "An org's devices with their sync status and health, in device id order, paged",
                "security": admin,
                "parameters": [query("org_id", true, json!({"type": "string"}), "the org"), limit.clone(), cursor.clone()],
                "responses": admin_answers(json!({"200": json_answer("a page of devices", json!({
                    "type": "object", "required": ["org_id", "devices", "next_cursor"],
                    "properties": {"org_id": {"type": "string"}, "devices": {"type": "array", "items": schema("DeviceSyncStatus")},
                        "next_cursor": nullable("string")},
                }))})),
            }},
            "/v1/admin/sync-stats": {"get": {
                "summary": "An org's batches and records over 1h, 24h or 7d (whole UTC hours)",
                "security": admin,
                "parameters": [query("org_id", true, json!({"type": "string"}), "the org"),
                    query("window", false, json!({"type": "string", "enum": ["1h", "24h", "7d"]}), "default 24h")],
                "responses": admin_answers(json!({"200": json_answer("the statistics", schema("SyncStats"))})),
            }},
            "/v1/admin/audit": {"get": {
                "summary": "A device's (or an org's) audit trail between two times, oldest first, paged",
                "security": admin,
                "parameters": [query("device_id", false, json!({"type": "string"}), "the device (or org_id)"),
                    query("org_id", false, json!({"type": "string"}), "the org (or device_id)"),
                    query("since", false, json!({"type": "integer"}), "unix ms, inclusive"),
                    query("until", false, json!({"type": "integer"}), "unix ms, inclusive"),
                    limit, cursor],
                "responses": admin_answers(json!({"200": json_answer("a page of events", json!({
                    "type": "object", "required": ["events", "next_cursor"],
                    "properties": {"events": {"type": "array", "items": schema("AuditEvent")}, "next_cursor": nullable("string")},
                }))})),
            }},
            "/v1/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": json_answer("the OpenAPI document", json!({"type": "object"}))},
            }},
            "/healthz": {"get": {
                "summary": "Alive",
                "responses": {"200": json_answer("alive", json!({"type": "object", "required": ["status"], "properties": {"status": {"const": "alive"}}}))},
            }},
            "/readyz": {"get": {
                "summary": "Ready: the store answers and the gateway is not draining",
                "responses": {
                    "200": json_answer("ready", json!({"type": "object", "required": ["status"], "properties": {"status": {"const": "ready"}}})),
                    "500": error_answer("the store returned a corrupt value"),
                    "503": error_answer("draining or the store is unavailable"),
                },
            }},
            "/metrics": {"get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "the text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}},
            }},
        },
    })
}

fn schemas() -> Value {
    let record_ref = json!({"type": "object", "required": ["record_id", "device_id", "seq", "recorded_at", "kind"],
        "properties": {"record_id": {"type": "string"}, "device_id": {"type": "string"}, "seq": {"type": "integer"},
            "recorded_at": {"type": "integer"}, "kind": {"type": "string"}}});
    json!({
        "Error": {"type": "object", "required": ["error", "message"],
            "properties": {"error": {"type": "string"}, "message": {"type": "string"}, "retry_after_ms": {"type": "integer"}}},
        "EnrolRequest": {"type": "object", "required": ["device_id", "org_id"], "additionalProperties": false,
            "properties": {"device_id": {"type": "string"}, "org_id": {"type": "string"}, "employee_id": nullable("string")}},
        "Enrolled": {"type": "object", "required": ["device_id", "secret"],
            "properties": {"device_id": {"type": "string"}, "secret": {"type": "string"}}},
        "Device": {"type": "object", "required": ["device_id", "org_id", "employee_id", "enrolled_at", "revoked_at", "status"],
            "properties": {"device_id": {"type": "string"}, "org_id": {"type": "string"}, "employee_id": nullable("string"),
                "enrolled_at": {"type": "integer"}, "revoked_at": nullable("integer"),
                "status": {"enum": ["active", "revoked"]}, "sync": schema("DeviceSyncStatus")}},
        "Health": {"type": "object",
            "required": ["queue_bytes", "storage_limit_bytes", "storage_used_percent", "app_version", "oldest_pending_at",
                "reported_at", "max_offline_days", "silent_too_long", "pending_too_old"],
            "properties": {"queue_bytes": nullable("integer"), "storage_limit_bytes": {"type": "integer"},
                "storage_used_percent": nullable("number"), "app_version": nullable("string"),
                "oldest_pending_at": nullable("integer"), "reported_at": nullable("integer"),
                "max_offline_days": {"type": "integer"}, "silent_too_long": {"type": "boolean"},
                "pending_too_old": {"type": "boolean"}}},
        "DeviceSyncStatus": {"type": "object",
            "required": ["device_id", "employee_id", "status", "last_sync_at", "next_seq", "pending", "batches_succeeded",
                "failures", "open_conflicts", "health"],
            "properties": {"device_id": {"type": "string"}, "employee_id": nullable("string"),
                "status": {"enum": ["active", "revoked"]}, "last_sync_at": nullable("integer"), "next_seq": {"type": "integer"},
                "pending": nullable("integer"), "batches_succeeded": {"type": "integer"}, "failures": {"type": "integer"},
                "open_conflicts": {"type": "integer"}, "health": schema("Health")}},
        "SyncStats": {"type": "object",
            "required": ["org_id", "window", "batches_succeeded", "batches_failed", "records", "success_rate"],
            "properties": {"org_id": {"type": "string"}, "window": {"enum": ["1h", "24h", "7d"]},
                "batches_succeeded": {"type": "integer"}, "batches_failed": {"type": "integer"},
                "records": {"type": "object", "required": ["accepted", "duplicate", "conflict", "rejected"],
                    "properties": {"accepted": {"type": "integer"}, "duplicate": {"type": "integer"},
                        "conflict": {"type": "integer"}, "rejected": {"type": "integer"}}},
                "success_rate": nullable("number")}},
        "RecordRef": record_ref,
        "Conflict": {"type": "object",
            "required": ["conflict_id", "org_id", "employee_id", "kind", "status", "device_record", "server_record", "policy",
                "outcome", "detected_at", "resolution"],
            "properties": {"conflict_id": {"type": "string"}, "org_id": {"type": "string"}, "employee_id": {"type": "string"},
                "kind": {"type": "string"}, "status": {"enum": ["open", "resolved"]}, "device_record": schema("RecordRef"),
                "server_record": {"oneOf": [schema("RecordRef"), {"type": "null"}]},
                "policy": {"enum": ["server_wins", "device_wins", "manual"]},
                "outcome": {"enum": ["newcomer_superseded", "server_superseded", "both_stand"]},
                "detected_at": {"type": "integer"},
                "resolution": {"oneOf": [{"type": "null"}, {"type": "object", "required": ["resolution", "note", "resolved_at"],
                    "properties": {"resolution": {"type": "string"}, "note": {"type": "string"}, "resolved_at": {"type": "integer"}}}]}}},
        "ResolveRequest": {"type": "object", "required": ["resolution"], "additionalProperties": false,
            "properties": {"resolution": {"enum": ["keep_server", "keep_device", "keep_both", "discard_both"]},
                "note": {"type": "string"}}},
        "OrgSettings": {"type": "object", "additionalProperties": false,
            "properties": {"max_offline_days": {"type": "integer"}, "storage_limit_bytes": {"type": "integer"},
                "sync_on_wifi_only": {"type": "boolean"}, "auto_retry": {"type": "boolean"},
                "retry_base_ms": {"type": "integer"}, "retry_max_ms": {"type": "integer"},
                "conflict_resolution": {"enum": ["server_wins", "device_wins", "manual"]},
                "max_batch_records": {"type": "integer"},
                "sync_priorities": {"type": "array", "items": {"enum": ["check_in", "check_out", "break_start", "break_end", "leave_request"]}},
                "max_clock_skew_s": {"type": "integer"}, "duplicate_window_s": {"type": "integer"},
                "max_shift_hours": {"type": "integer"}, "gap_timeout_s": {"type": "integer"}}},
        "AttendanceDay": {"type": "object", "required": ["org_id", "employee_id", "day", "records", "shifts"],
            "properties": {"org_id": {"type": "string"}, "employee_id": {"type": "string"}, "day": {"type": "string"},
                "records": {"type": "array", "items": {"type": "object"}},
                "shifts": {"type": "array", "items": {"type": "object", "required": ["check_in", "from", "check_out", "to"],
                    "properties": {"check_in": {"type": "string"}, "from": {"type": "integer"},
                        "check_out": nullable("string"), "to": nullable("integer")}}}}},
        "AuditEvent": {"type": "object", "required": ["at", "org_id", "device_id", "event"],
            "properties": {"at": {"type": "integer"}, "org_id": {"type": "string"}, "device_id": {"type": "string"},
                "event": {"type": "object", "required": ["type"], "properties": {"type": {"enum":
                    ["batch_received", "device_enrolled", "device_revoked", "conflict_resolved"]}}}}},
    })
}

/// Every `(METHOD, path)` the route modules register: each `.route("path",
/// web::method()...)` in their source.
#[cfg(test)]
fn registered_routes() -> std::collections::BTreeSet<(String, String)> {
    let sources = [
        include_str!("routes/mod.rs"),
        include_str!("routes/sync.rs"),
        include_str!("routes/admin.rs"),
        include_str!("routes/orgs.rs"),
        include_str!("routes/conflicts.rs"),
        include_str!("routes/attendance.rs"),
        include_str!("routes/reports.rs"),
        include_str!("routes/ops.rs"),
    ];
    let mut routes = std::collections::BTreeSet::new();
    for source in sources {
        for registration in source.split(".route(\"").skip(1) {
            let (path, rest) = registration.split_once('"').expect("a route's path is a string literal");
            let method = rest.split_once("web::").and_then(|(_, call)| call.split_once("()")).expect("web::method()").0;
            routes.insert((method.to_uppercase(), path.to_owned()));
        }
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documented_routes() -> std::collections::BTreeSet<(String, String)> {
        let document = document();
        let mut routes = std::collections::BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys().filter(|key| *key != "parameters") {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
        routes
    }

    #[test]
    fn every_route_is_documented_and_every_documented_route_exists() {
        let (registered, documented) = (registered_routes(), documented_routes());
        assert!(registered.len() >= 17, "the route sources were read: {registered:?}");
        let undocumented: Vec<_> = registered.difference(&documented).collect();
        let unregistered: Vec<_> = documented.difference(&registered).collect();
        assert!(undocumented.is_empty(), "routes missing from the OpenAPI document: {undocumented:?}");
        assert!(unregistered.is_empty(), "documented routes the gateway does not register: {unregistered:?}");
    }

    #[test]
    fn every_reference_resolves() {
        let document = document();
        let text = document.to_string();
        for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = reference.split('"').next().unwrap();
            assert!(document["components"]["schemas"].get(name).is_some(), "no schema {name}");
        }
        assert_eq!(document["openapi"], "3.1.0");
    }
}
