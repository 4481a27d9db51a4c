//! What the requests of one client address hold of the bytes budget while their bodies
//! are still arriving. Bounded per address, so a crowd of slow or stalled connections
//! from one place holds a share of the budget, never all of it, and every other device
//! is still served. Behind a proxy that buffers bodies (nginx does by default) bodies
//! arrive at once, so the proxy's single address is no bottleneck.

use dashmap::DashMap;
use std::net::IpAddr;

pub(super) struct UnreadBytes {
    by_address: DashMap<IpAddr, u64>,
    per_address: u64,
}

impl UnreadBytes {
    pub(super) fn new(per_address: u64) -> Self {
        UnreadBytes { by_address: DashMap::new(), per_address }
    }

    /// Takes `bytes` for `address` if it stays within its share; a first request always
    /// fits (the share is at least one body).
    pub(super) fn take(&self, address: IpAddr, bytes: u64) -> bool {
        let mut held = self.by_address.entry(address).or_insert(0);
        if *held > 0 && *held + bytes > self.per_address {
            return false;
        }
        *held += bytes;
        true
    }

    /// Gives back what `take` took; an address holding nothing leaves the map, so it
    /// stays as small as the addresses with bodies arriving.
    pub(super) fn give_back(&self, address: IpAddr, bytes: u64) {
        if let Some(mut held) = self.by_address.get_mut(&address) {
            *held = held.saturating_sub(bytes);
        }
        self.by_address.remove_if(&address, |_, held| *held == 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_its_share_and_others_go_on() {
        let unread = UnreadBytes::new(3);
        let (crowd, device) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        assert!(unread.take(crowd, 2));
        assert!(unread.take(crowd, 1));
        assert!(!unread.take(crowd, 1), "the crowd's share is full");
        assert!(unread.take(device, 3), "another address is not held back");
        unread.give_back(crowd, 2);
        assert!(unread.take(crowd, 2), "a body that arrived gives its share back");
        for (address, bytes) in [(crowd, 3), (device, 3)] {
            unread.give_back(address, bytes);
        }
        assert!(unread.by_address.is_empty(), "addresses holding nothing are forgotten");
    }

    #[test]
    fn one_body_larger_than_the_share_is_still_let_in_alone() {
        let unread = UnreadBytes::new(3);
        let address = IpAddr::from([10, 0, 0, 1]);
        assert!(unread.take(address, 10));
        assert!(!unread.take(address, 1));
    }
}
