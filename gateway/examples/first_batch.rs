//! Enrols a device and uploads its first signed batch, printing every step: the
//! README's walk-through, and a template for a device client.
//!
//! `cargo run -p otg-gateway --example first_batch -- http://127.0.0.1:8080 <admin token>`

use otg_schema::signing::{DEVICE_ID_HEADER, REQUEST_TIME_HEADER, SIGNATURE_HEADER};
use otg_schema::wire::{self, Batch, BatchResponse, Geo, Record};
use otg_schema::DeviceSecret;

fn main() -> anyhow::Result<()> {
    let mut arguments = std::env::args().skip(1);
    let (Some(base_url), Some(admin_token)) = (arguments.next(), arguments.next()) else {
        anyhow::bail!("usage: first_batch <gateway url> <admin token>");
    };
    let now = chrono::Utc::now().timestamp_millis();
    let device_id = format!("demo-{now}");

    // 1. An administrator enrols the device; the secret is shown this once.
    let enrolled: serde_json::Value = ureq::post(&format!("{base_url}/v1/admin/devices"))
        .set("Authorization", &format!("Bearer {admin_token}"))
        .send_json(serde_json::json!({"device_id": device_id, "org_id": "acme", "employee_id": "emp-9"}))?
        .into_json()?;
    println!("enrolled: {enrolled}");
    let secret = DeviceSecret::from_base64(enrolled["secret"].as_str().unwrap_or_default())
        .ok_or_else(|| anyhow::anyhow!("the gateway returned no secret"))?;

    // 2. The device uploads a batch: MessagePack, signed over method, path, time and body.
    let check_in = Record {
        offline: Some(true),
        geo: Some(Geo { lat: 52.52, lon: 13.405, accuracy_m: 8.5 }),
        ..Record::new(1, uuid::Uuid::new_v4().to_string(), "check_in", "emp-9", now - 60_000)
    };
    let batch = Batch { pending: Some(0), ..Batch::new(device_id.clone(), "b-0001", now, vec![check_in]) };
    let body = wire::encode(&batch);
    let request_time = now.to_string();
    let signature = secret.sign("POST", "/v1/sync/batches", &request_time, &body);
    let response = ureq::post(&format!("{base_url}/v1/sync/batches"))
        .set("Content-Type", "application/msgpack")
        .set(DEVICE_ID_HEADER, &device_id)
        .set(REQUEST_TIME_HEADER, &request_time)
        .set(SIGNATURE_HEADER, &signature)
        .send_bytes(&body)?;
    let mut reply = Vec::new();
    std::io::Read::read_to_end(&mut response.into_reader(), &mut reply)?;
    let acked: BatchResponse = wire::decode(&reply)?;
    println!("acked: {acked:?}");
    Ok(())
}
