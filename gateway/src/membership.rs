//! The gateways sharing one store, and which of them owns what: each gateway writes a
//! heartbeat into the store (`Store::heartbeat`, expiring after `membership_ttl_s`),
//! reads the live set back each beat, and decides owners by rendezvous hashing over it,
//! so every gateway computes the same owner from the same set with no other
//! coordination service.
//!
//! Ownership here is an optimisation, never what correctness rests on: a device is
//! held through its epoch (`Store::claim_device`) whoever routes to it, and an
//! employee's placements through its timeline version. Owners decide who wakes a
//! device whose records wait behind a gap, and how an org's record rate is shared.

use otg_actors::store::{GatewayMember, Store, WAITING_BUCKETS};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub struct Membership {
    me: GatewayMember,
    store: Arc<dyn Store>,
    /// The live gateways as last read, this one always among them.
    live: RwLock<Vec<GatewayMember>>,
    /// The waiting-device buckets this gateway owned when it last woke their devices.
    woken_buckets: Mutex<BTreeSet<u16>>,
    every: Duration,
    ttl: Duration,
}

/// How the live gateways changed between two beats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveSetChange {
    /// A gateway left or died: whatever it held in memory (wake-ups of waiting devices
    /// of any bucket) is the survivors' to do again.
    pub someone_left: bool,
}

impl Membership {
    /// Joins: writes the first heartbeat and reads who else is alive.
    pub async fn join(store: Arc<dyn Store>, every: Duration, ttl: Duration) -> anyhow::Result<Arc<Self>> {
        let me = GatewayMember {
            gateway_id: format!("{:032x}", rand::random::<u128>()),
            started_at: crate::clock::now_ms(),
        };
        let membership = Arc::new(Membership {
            me,
            store,
            live: RwLock::new(Vec::new()),
            woken_buckets: Mutex::new(BTreeSet::new()),
            every,
            ttl,
        });
        membership.beat().await?;
        tracing::info!(gateway_id = %membership.me.gateway_id, live = membership.live_count(), "joined the gateways");
        Ok(membership)
    }

    /// The waiting-device buckets (`otg_actors::store::waiting_bucket`) whose devices
    /// this gateway should wake now: at start-up and after a gateway left, every bucket
    /// it owns (a gateway that left held wake-ups of any bucket in memory); after one
    /// joined, only those it did not own before, which is none (a joiner takes buckets
    /// from the others, never gives any). So a change costs what it changed, never a
    /// scan of every device.
    pub fn buckets_to_wake(&self, change: LiveSetChange) -> Vec<u16> {
        let owned: BTreeSet<u16> = {
            let live = self.live.read().expect("membership lock");
            (0..WAITING_BUCKETS)
                .filter(|bucket| {
                    rendezvous_owner(&format!("waiting-{bucket}"), &live)
                        .is_none_or(|owner| owner.gateway_id == self.me.gateway_id)
                })
                .collect()
        };
        let mut woken = self.woken_buckets.lock().expect("membership lock");
        let to_wake = if change.someone_left { owned.clone() } else { owned.difference(&woken).copied().collect() };
        *woken = owned;
        to_wake.into_iter().collect()
    }

    /// Gateways alive now, this one included.
    pub fn live_count(&self) -> usize {
        self.live.read().expect("membership lock").len().max(1)
    }

    /// Beats every `every` until the process ends; `changed` runs after a beat that
    /// found the live set different (a gateway joined, left or died).
    pub fn keep_beating(self: Arc<Self>, changed: impl Fn(Arc<Membership>, LiveSetChange) + 'static) {
        actix_web::rt::spawn(async move {
            let mut ticks = tokio::time::interval(self.every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let before = self.live_ids();
                match self.beat().await {
                    Ok(()) if self.live_ids() != before => {
                        let after = self.live_ids();
                        let someone_left = before.iter().any(|gateway| !after.contains(gateway));
                        changed(self.clone(), LiveSetChange { someone_left });
                    }
                    Ok(()) => {}
                    Err(error) => tracing::warn!(%error, "membership heartbeat failed; trying again"),
                }
            }
        });
    }

    /// Leaves the live gateways at once (on SIGTERM, before draining), so the others
    /// take over what this one owned without waiting for its heartbeat to expire.
    pub async fn leave(&self) {
        if let Err(error) = self.store.leave(&self.me.gateway_id).await {
            tracing::warn!(%error, "leaving the gateways failed; the heartbeat expires by itself");
        }
    }

    async fn beat(&self) -> anyhow::Result<()> {
        self.store.heartbeat(&self.me, self.ttl).await?;
        let mut live = self.store.live_gateways().await?;
        if !live.iter().any(|member| member.gateway_id == self.me.gateway_id) {
            live.push(self.me.clone());
        }
        *self.live.write().expect("membership lock") = live;
        Ok(())
    }

    fn live_ids(&self) -> Vec<String> {
        self.live.read().expect("membership lock").iter().map(|member| member.gateway_id.clone()).collect()
    }
}

/// The gateway that owns `key`: the one whose hash with it is highest. A gateway that
/// leaves moves only its own keys, each to the next highest; the same on every gateway
/// and every build (SHA-256, not the process's hasher).
pub fn rendezvous_owner<'a>(key: &str, live: &'a [GatewayMember]) -> Option<&'a GatewayMember> {
    live.iter().max_by_key(|member| {
        let digest =
            Sha256::new().chain_update(member.gateway_id.as_bytes()).chain_update([0]).chain_update(key).finalize();
        (u64::from_be_bytes(digest[..8].try_into().expect("eight bytes")), member.gateway_id.clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(count: usize) -> Vec<GatewayMember> {
        (0..count).map(|n| GatewayMember { gateway_id: format!("gw-{n}"), started_at: 0 }).collect()
    }

    fn owners(keys: &[String], live: &[GatewayMember]) -> Vec<String> {
        keys.iter().map(|key| rendezvous_owner(key, live).unwrap().gateway_id.clone()).collect()
    }

    #[test]
    fn keys_spread_over_the_gateways_and_a_leaver_moves_only_its_own() {
        let keys: Vec<String> = (0..3_000).map(|n| format!("dev-{n}")).collect();
        let three = members(3);
        let before = owners(&keys, &three);
        for member in &three {
            let share = before.iter().filter(|owner| **owner == member.gateway_id).count();
            assert!((800..1_200).contains(&share), "{} owns {share} of 3000", member.gateway_id);
        }
        let mut reversed = three.clone();
        reversed.reverse();
        assert_eq!(owners(&keys, &reversed), before, "the order the set was read in does not matter");
        let two: Vec<_> = three.iter().filter(|member| member.gateway_id != "gw-1").cloned().collect();
        let after = owners(&keys, &two);
        for (before, after) in before.iter().zip(&after) {
            if before != "gw-1" {
                assert_eq!(before, after, "a key of a gateway that stayed keeps its owner");
            }
        }
        assert!(rendezvous_owner("dev-1", &[]).is_none());
    }

    /// A gateway that joins takes buckets from the others and gives none: they wake no
    /// device. One that leaves gives its buckets away: every survivor wakes all it owns,
    /// since the leaver held wake-ups of devices in any bucket.
    #[actix_web::test]
    async fn a_join_wakes_only_newly_owned_buckets_and_a_departure_all_owned() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = otg_actors::metrics::StoreMetrics::register(&prometheus::Registry::new()).unwrap();
        let options = otg_actors::store::EmbeddedStoreOptions::new(dir.path());
        let store: Arc<dyn Store> = Arc::new(otg_actors::store::EmbeddedStore::open(options, metrics).unwrap());
        let second = Duration::from_secs(1);
        let me = Membership::join(store.clone(), second, Duration::from_secs(60)).await.unwrap();
        let everything = me.buckets_to_wake(LiveSetChange { someone_left: true });
        assert_eq!(everything.len(), WAITING_BUCKETS as usize, "alone, it owns every bucket");
        let other = GatewayMember { gateway_id: "gw-other".into(), started_at: 0 };
        store.heartbeat(&other, Duration::from_secs(60)).await.unwrap();
        me.beat().await.unwrap();
        assert!(me.buckets_to_wake(LiveSetChange { someone_left: false }).is_empty(), "a join wakes nothing here");
        store.leave("gw-other").await.unwrap();
        me.beat().await.unwrap();
        assert_eq!(me.buckets_to_wake(LiveSetChange { someone_left: true }), everything, "a departure: all owned");
    }
}
