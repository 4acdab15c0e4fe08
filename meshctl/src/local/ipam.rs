//! Address allocation inside a run's node: pods from 10.244.0.0/16 (the
//! bridge is .0.1), Service cluster IPs from 10.96.0.0/16. Both ranges
//! exist only inside the run's own network namespaces.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The bridge's address: the pods' gateway and the controller's address.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// Prefix length of the pod network.
pub const POD_PREFIX: u8 = 16;

/// A pool of addresses in a /16.
#[derive(Debug, Clone)]
pub struct Pool {
    base: u32,
    first: u32,
    used: BTreeSet<u32>,
    next: u32,
}

impl Pool {
    /// Pod addresses: 10.244.0.2 - 10.244.255.254.
    pub fn pods() -> Self {
        Self::new(Ipv4Addr::new(10, 244, 0, 0), 2)
    }

    /// Service addresses: 10.96.0.10 - 10.96.255.254.
    pub fn services() -> Self {
        Self::new(Ipv4Addr::new(10, 96, 0, 0), 10)
    }

    fn new(base: Ipv4Addr, first: u32) -> Self {
        Self {
            base: u32::from(base),
            first,
            used: BTreeSet::new(),
            next: first,
        }
    }

    /// The next free address, cycling so that a released address is not
    /// reused at once.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        const LAST: u32 = 0xfffe;
        for _ in self.first..=LAST {
            let off = self.next;
            self.next = if off >= LAST { self.first } else { off + 1 };
            if self.used.insert(off) {
                return Some(Ipv4Addr::from(self.base + off));
            }
        }
        None
    }

    /// Marks a specific address as used (state reloaded).
    pub fn reserve(&mut self, ip: Ipv4Addr) {
        self.used.insert(u32::from(ip).wrapping_sub(self.base));
    }

    /// Returns an address to the pool.
    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&u32::from(ip).wrapping_sub(self.base));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_in_order_and_skips_used() {
        let mut p = Pool::pods();
        assert_eq!(p.allocate(), Some(Ipv4Addr::new(10, 244, 0, 2)));
        p.reserve(Ipv4Addr::new(10, 244, 0, 3));
        assert_eq!(p.allocate(), Some(Ipv4Addr::new(10, 244, 0, 4)));
        p.release(Ipv4Addr::new(10, 244, 0, 2));
        assert_eq!(p.allocate(), Some(Ipv4Addr::new(10, 244, 0, 5)));
        let mut s = Pool::services();
        assert_eq!(s.allocate(), Some(Ipv4Addr::new(10, 96, 0, 10)));
    }
}
