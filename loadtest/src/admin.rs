//! The admin API calls the load tester needs: enrol, settings, sync status and stats,
//! and one metric.

use anyhow::{bail, Context};
use otg_schema::DeviceSecret;
use serde_json::{json, Value};

#[derive(Clone)]
pub struct Admin {
    http: reqwest::Client,
    base_url: String,
    token: String,
}

impl Admin {
    pub fn new(base_url: &str, token: &str) -> Self {
        Admin {
            http: reqwest::Client::new(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.base_url)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("admin call {path}"))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("admin call {path}: {status}: {body}");
        }
        Ok(body)
    }

    pub async fn put_settings(&self, org_id: &str, settings: Value) -> anyhow::Result<()> {
        self.call(reqwest::Method::PUT, &format!("/v1/admin/orgs/{org_id}/settings"), Some(settings)).await.map(drop)
    }

    pub async fn enrol(&self, device_id: &str, org_id: &str) -> anyhow::Result<DeviceSecret> {
        let reply = self
            .call(reqwest::Method::POST, "/v1/admin/devices", Some(json!({"device_id": device_id, "org_id": org_id})))
            .await?;
        let secret = reply["secret"].as_str().context("enrolment answer without a secret")?;
        DeviceSecret::from_base64(secret).context("enrolment secret is not base64 of 32 bytes")
    }

    /// Every device of the org with its `next_seq`, through all pages.
    pub async fn next_seqs(&self, org_id: &str) -> anyhow::Result<Vec<(String, u64)>> {
        let mut found = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/admin/sync-status?org_id={org_id}&limit=500");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let page = self.call(reqwest::Method::GET, &path, None).await?;
            for device in page["devices"].as_array().context("sync-status without devices")? {
                found.push((
                    device["device_id"].as_str().unwrap_or_default().to_owned(),
                    device["next_seq"].as_u64().unwrap_or(0),
                ));
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(found),
            }
        }
    }

    /// The org's records by ack status over the last 7 days.
    pub async fn records_by_status(&self, org_id: &str) -> anyhow::Result<Value> {
        Ok(self.call(reqwest::Method::GET, &format!("/v1/admin/sync-stats?org_id={org_id}&window=7d"), None).await?
            ["records"]
            .clone())
    }

    /// One series from `/metrics`: a name, with its labels as the gateway prints them
    /// (`otg_x_total{kind="a"}`) if it has any.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self.http.get(format!("{}/metrics", self.base_url)).send().await.ok()?.text().await.ok()?;
        text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}
