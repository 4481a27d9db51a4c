//! How the fleet's devices reach a fleet of gateways: each device always to the same
//! one, as an ingress hashing `X-Device-Id` would, or each request to any of them at
//! random (affinity broken, as after a rebalance or behind a plain round-robin).

use async_trait::async_trait;
use otg_client::{HttpTransport, Request, Response, Transport, TransportError};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Routing {
    /// Each device to one gateway, chosen by a hash of its id.
    Hash,
    /// Each request to a gateway chosen at random.
    Random,
}

/// The gateways, each with its own pool of kept-alive connections.
#[derive(Clone)]
pub struct Gateways {
    transports: Arc<Vec<HttpTransport>>,
    routing: Routing,
}

impl Gateways {
    pub fn new(urls: &[String], routing: Routing, timeout: Duration) -> anyhow::Result<Self> {
        anyhow::ensure!(!urls.is_empty(), "no gateway to load");
        let transports = urls
            .iter()
            .map(|url| HttpTransport::new(url, timeout).map_err(|error| anyhow::anyhow!("{url}: {error}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Gateways { transports: Arc::new(transports), routing })
    }

    /// The way to the gateways `device_id` takes.
    pub fn route(&self, device_id: &str) -> Route {
        match self.routing {
            Routing::Random if self.transports.len() > 1 => Route::Random(self.transports.clone()),
            _ => {
                // `DefaultHasher::new()` has fixed keys: the same gateway in every run.
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                device_id.hash(&mut hasher);
                Route::Fixed(self.transports[hasher.finish() as usize % self.transports.len()].clone())
            }
        }
    }
}

/// One device's way to the gateways.
#[derive(Clone)]
pub enum Route {
    Fixed(HttpTransport),
    Random(Arc<Vec<HttpTransport>>),
}

#[async_trait]
impl Transport for Route {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        match self {
            Route::Fixed(transport) => transport.send(request).await,
            Route::Random(transports) => transports[rand::random_range(0..transports.len())].send(request).await,
        }
    }
}
