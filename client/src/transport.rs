//! How the client reaches the gateway: one signed request, one whole response.

use async_trait::async_trait;

pub struct Request {
    pub method: &'static str,
    /// The path signed and requested, e.g. `/v1/sync/batches`.
    pub path: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

pub struct Response {
    pub status: u16,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The `Server-Timing` header, if any: where the gateway spent the request's time.
    pub server_timing: Option<String>,
    pub body: Vec<u8>,
}

/// The request did not get a response (no route, refused, reset, timed out).
#[derive(Debug, thiserror::Error)]
#[error("transport: {0}")]
pub struct TransportError(pub String);

#[async_trait]
pub trait Transport: Send + Sync {
    async fn send(&self, request: Request) -> Result<Response, TransportError>;
}

/// Plain HTTP to a gateway at `base_url` (e.g. `http://10.0.0.5:8080`), connections
/// kept alive and shared by every client holding a clone.
#[cfg(feature = "http")]
#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    base_url: String,
}

#[cfg(feature = "http")]
impl HttpTransport {
    pub fn new(base_url: &str, timeout: std::time::Duration) -> Result<Self, TransportError> {
        let client =
            reqwest::Client::builder().timeout(timeout).build().map_err(|error| TransportError(error.to_string()))?;
        Ok(HttpTransport { client, base_url: base_url.trim_end_matches('/').to_owned() })
    }
}

#[cfg(feature = "http")]
#[async_trait]
impl Transport for HttpTransport {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|error| TransportError(error.to_string()))?;
        let mut builder = self.client.request(method, format!("{}{}", self.base_url, request.path)).body(request.body);
        for (name, value) in request.headers {
            builder = builder.header(name, value);
        }
        let response = builder.send().await.map_err(|error| TransportError(error.to_string()))?;
        let status = response.status().as_u16();
        let header = |name: &str| response.headers().get(name).and_then(|value| value.to_str().ok()).map(str::to_owned);
        let (retry_after, server_timing) = (header("retry-after"), header("server-timing"));
        let body = response.bytes().await.map_err(|error| TransportError(error.to_string()))?.to_vec();
        Ok(Response { status, retry_after, server_timing, body })
    }
}
