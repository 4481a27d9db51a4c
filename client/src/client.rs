//! The sync loop: upload the queue in signed batches, delete what the acks allow, and
//! say when to try again.

use crate::backoff;
use crate::queue::{QueueError, RecordQueue};
use crate::transport::{Request, Response, Transport, TransportError};
use otg_schema::signing::{DEVICE_ID_HEADER, LIVE_WINDOW_MS, PRIORITY_HEADER, REQUEST_TIME_HEADER, SIGNATURE_HEADER};
pub use otg_schema::wire::Network;
use otg_schema::wire::{self, Ack, AckStatus, Batch, BatchResponse, Record};
use otg_schema::{DeviceConfig, DeviceSecret, OrgSettings};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BATCHES_PATH: &str = "/v1/sync/batches";
const CONFIG_PATH: &str = "/v1/sync/config";
const DAY_MS: i64 = 86_400_000;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("the gateway answered {status}: {body}")]
    Refused { status: u16, body: String },
}

/// How a `sync_now` ended.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncOutcome {
    /// Everything queued was acked.
    Drained,
    /// Stopped for now; sync again after this long (the gateway asked for a wait, or a
    /// failure is being backed off because the org's `auto_retry` is on).
    RetryIn(Duration),
    /// Did not try: offline, or not on wifi while the org syncs on wifi only.
    Skipped(&'static str),
    /// Stopped on something a retry does not mend (a 4xx other than 429, or any
    /// failure while `auto_retry` is off); the records stay queued.
    Failed(String),
}

/// One upload of a `sync_now`.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub records: usize,
    /// The HTTP status; 0 if no response came.
    pub status: u16,
    pub took: Duration,
    /// The newest `recorded_at` in the batch.
    pub newest_recorded_at: i64,
    /// The gateway's `Server-Timing` for it: where its time went there.
    pub server_timing: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyncReport {
    pub outcome: SyncOutcome,
    /// Every ack received; each acked record was deleted from the queue.
    pub acks: Vec<Ack>,
    /// Records deleted unsent for being older than the org's `max_offline_days`.
    pub expired: u64,
    pub uploads: Vec<Upload>,
    /// Records still queued.
    pub pending: u64,
}

impl SyncReport {
    /// Records acked, and so deleted from the queue.
    pub fn acked(&self) -> u64 {
        self.acks.len() as u64
    }

    /// Acks of records never stored (`rejected`) or stored and flagged (`conflict`): the
    /// ones the app shows.
    pub fn to_show(&self) -> impl Iterator<Item = &Ack> {
        self.acks.iter().filter(|ack| matches!(ack.status, AckStatus::Rejected | AckStatus::Conflict))
    }
}

/// A device's side of the protocol over a queue `Q` and a transport `T`.
pub struct Client<Q, T> {
    device_id: String,
    secret: DeviceSecret,
    queue: Q,
    transport: T,
    config: DeviceConfig,
    /// Failures in a row, for the backoff.
    failures: u32,
    not_before: Option<Instant>,
    /// Reported with every batch, for the administrators' device health view.
    app_version: Option<String>,
}

impl<Q: RecordQueue, T: Transport> Client<Q, T> {
    /// A client with the protocol's default org settings until `refresh_config`.
    pub fn new(device_id: impl Into<String>, secret: DeviceSecret, queue: Q, transport: T) -> Self {
        let config = OrgSettings::default().device_config();
        Client {
            device_id: device_id.into(),
            secret,
            queue,
            transport,
            config,
            failures: 0,
            not_before: None,
            app_version: None,
        }
    }

    /// The app's version (1 to 64 characters, no control characters), reported with
    /// every batch so that administrators see which devices run what.
    pub fn with_app_version(mut self, version: impl Into<String>) -> Self {
        self.app_version = Some(version.into());
        self
    }

    /// Queues a record (its `seq` is set here) within the org's storage limit, and
    /// returns its seq.
    pub fn record(&mut self, record: Record) -> Result<i64, ClientError> {
        Ok(self.queue.push(record, self.config.storage_limit_bytes)?)
    }

    /// Records waiting for their ack.
    pub fn pending(&self) -> Result<u64, ClientError> {
        Ok(self.queue.pending()?)
    }

    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// Reads the org's settings from the gateway.
    pub async fn refresh_config(&mut self) -> Result<(), ClientError> {
        let response = self.send("GET", CONFIG_PATH, Vec::new(), None).await?;
        if response.status != 200 {
            return Err(refused(&response));
        }
        self.config = wire::decode(&response.body)
            .map_err(|error| ClientError::Refused { status: 200, body: error.to_string() })?;
        Ok(())
    }

    /// Uploads the queue now, batch after batch, until it is empty or the gateway or
    /// the network says to stop. `network` is the connection the app is on (`None`:
    /// offline). A wait the gateway asked for is honoured: until it passes, this
    /// returns `RetryIn` without sending.
    pub async fn sync_now(&mut self, network: Option<Network>) -> Result<SyncReport, ClientError> {
        let mut report =
            SyncReport { outcome: SyncOutcome::Drained, acks: Vec::new(), expired: 0, uploads: Vec::new(), pending: 0 };
        report.outcome = self.sync(network, &mut report).await?;
        report.pending = self.queue.pending()?;
        Ok(report)
    }

    async fn sync(&mut self, network: Option<Network>, report: &mut SyncReport) -> Result<SyncOutcome, ClientError> {
        let Some(network) = network else { return Ok(SyncOutcome::Skipped("offline")) };
        if self.config.sync_on_wifi_only && network != Network::Wifi {
            return Ok(SyncOutcome::Skipped("the org syncs on wifi only"));
        }
        if let Some(wait) = self.not_before.and_then(|at| at.checked_duration_since(Instant::now())) {
            return Ok(SyncOutcome::RetryIn(wait));
        }
        report.expired = self.queue.remove_older_than(now_ms() - i64::from(self.config.max_offline_days) * DAY_MS)?;
        loop {
            let records =
                self.queue.next_batch(self.config.max_batch_records as usize, &self.config.sync_priorities)?;
            let Some(newest_recorded_at) = records.iter().map(|record| record.recorded_at).max() else {
                return Ok(SyncOutcome::Drained);
            };
            let count = records.len();
            let pending = self.queue.pending()?.saturating_sub(count as u64);
            // The device's health as it will be once this batch is acked, like `pending`.
            let sending: Vec<i64> = records.iter().map(|record| record.seq).collect();
            let sending_bytes: u64 = records.iter().map(|record| wire::encode(record).len() as u64).sum();
            let batch = Batch {
                pending: Some(pending),
                network: Some(network),
                queue_bytes: Some(self.queue.bytes()?.saturating_sub(sending_bytes)),
                app_version: self.app_version.clone(),
                oldest_pending_at: self.queue.oldest_recorded_at(&sending)?,
                ..Batch::new(self.device_id.clone(), uuid::Uuid::new_v4().to_string(), now_ms(), records)
            };
            let started = Instant::now();
            let priority = if now_ms() - newest_recorded_at <= LIVE_WINDOW_MS { "live" } else { "backlog" };
            let sent = self.send("POST", BATCHES_PATH, wire::encode(&batch), Some(priority)).await;
            let (status, server_timing) =
                sent.as_ref().map_or((0, None), |response| (response.status, response.server_timing.clone()));
            report.uploads.push(Upload {
                records: count,
                status,
                took: started.elapsed(),
                newest_recorded_at,
                server_timing,
            });
            let response = match sent {
                Ok(response) => response,
                Err(error) => return Ok(self.failed(error.to_string())),
            };
            match response.status {
                200 => self.take_acks(&response, report)?,
                429 | 503 => {
                    let wait = backoff::after_refusal(retry_after(&response), rand::random());
                    self.not_before = Some(Instant::now() + wait);
                    return Ok(SyncOutcome::RetryIn(wait));
                }
                500..=599 => return Ok(self.failed(refused(&response).to_string())),
                _ => return Ok(SyncOutcome::Failed(refused(&response).to_string())),
            }
        }
    }

    /// Deletes every acked record: each status means the device may delete it.
    fn take_acks(&mut self, response: &Response, report: &mut SyncReport) -> Result<(), ClientError> {
        let answer: BatchResponse = wire::decode(&response.body)
            .map_err(|error| ClientError::Refused { status: 200, body: error.to_string() })?;
        let seqs: Vec<i64> = answer.acks.iter().map(|ack| ack.seq).collect();
        self.queue.remove(&seqs)?;
        report.acks.extend(answer.acks);
        self.failures = 0;
        Ok(())
    }

    /// A failure a retry may mend: backed off if the org retries automatically.
    fn failed(&mut self, why: String) -> SyncOutcome {
        if !self.config.auto_retry {
            return SyncOutcome::Failed(why);
        }
        self.failures += 1;
        let (base, max) =
            (Duration::from_millis(self.config.retry_base_ms), Duration::from_millis(self.config.retry_max_ms));
        let wait = backoff::after_failure(self.failures, base, max, rand::random());
        self.not_before = Some(Instant::now() + wait);
        SyncOutcome::RetryIn(wait)
    }

    async fn send(
        &self,
        method: &'static str,
        path: &'static str,
        body: Vec<u8>,
        priority: Option<&'static str>,
    ) -> Result<Response, TransportError> {
        let request_time = now_ms().to_string();
        let signature = self.secret.sign(method, path, &request_time, &body);
        let mut headers = vec![
            ("Content-Type", "application/msgpack".to_owned()),
            (DEVICE_ID_HEADER, self.device_id.clone()),
            (REQUEST_TIME_HEADER, request_time),
            (SIGNATURE_HEADER, signature),
        ];
        if let Some(priority) = priority {
            headers.push((PRIORITY_HEADER, priority.to_owned()));
        }
        self.transport.send(Request { method, path, headers, body }).await
    }
}

/// The wait a 429/503 asked for: `retry_after_ms` of its body, else `Retry-After`, else 1 s.
fn retry_after(response: &Response) -> Duration {
    let from_body = serde_json::from_slice::<serde_json::Value>(&response.body)
        .ok()
        .and_then(|body| body["retry_after_ms"].as_u64())
        .map(Duration::from_millis);
    let from_header = || response.retry_after.as_deref()?.trim().parse().ok().map(Duration::from_secs);
    from_body.or_else(from_header).unwrap_or(Duration::from_secs(1))
}

fn refused(response: &Response) -> ClientError {
    ClientError::Refused { status: response.status, body: String::from_utf8_lossy(&response.body).into_owned() }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as i64)
}
