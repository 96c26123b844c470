//! [`ConnTable`]: the connections the server holds, capped in total and per peer, and what
//! each is doing, so that at the cap the connections that cost a stranger nothing to hold are
//! let go to admit a new one, before anyone is refused.
//!
//! A peer is an IPv4 address, or an IPv6 /64 (one host is routinely given a whole /64, so its
//! addresses are one peer); an IPv4-mapped IPv6 address counts as its IPv4 address. A Unix
//! socket peer has no address and counts only against the total.
//!
//! At the total cap, a new connection evicts, oldest first, a connection that has not finished
//! its TLS handshake, and failing that one with no request in flight (a kept-alive connection
//! between requests, or one whose next request has not been read yet), longest idle first. It
//! is refused only when every connection is busy with a request, each of which must keep the
//! least rate. An evicted connection is told to end ([`ConnHandle::evicted`]): before its
//! handshake it is dropped; after, hyper shuts it down gracefully.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

/// Whom the per-peer cap counts together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PeerGroup {
    /// One IPv4 address.
    V4(Ipv4Addr),
    /// One IPv6 /64: the address's first 64 bits.
    V6(u64),
}

impl PeerGroup {
    /// The group `ip` belongs to.
    pub(crate) fn of(ip: IpAddr) -> PeerGroup {
        match ip {
            IpAddr::V4(a) => PeerGroup::V4(a),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => PeerGroup::V4(v4),
                None => PeerGroup::V6((u128::from(a) >> 64) as u64),
            },
        }
    }
}

/// What a connection is doing, shared between the table and the connection's task.
#[derive(Debug)]
struct ConnState {
    /// Its TLS handshake finished.
    handshaken: AtomicBool,
    /// Requests being answered (their answer not yet sent in full).
    in_flight: AtomicU32,
    /// When it was accepted or last finished a request, in ms since the table began.
    since_ms: AtomicU64,
    /// Told to end.
    evict: Notify,
}

#[derive(Debug)]
struct Entry {
    group: Option<PeerGroup>,
    state: Arc<ConnState>,
}

#[derive(Debug, Default)]
struct Table {
    next: u64,
    conns: HashMap<u64, Entry>,
    per_group: HashMap<PeerGroup, usize>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Every connection is busy with a request.
    Full,
    /// Its peer holds as many connections as one peer may.
    PeerFull,
}

/// The connections open now.
#[derive(Debug)]
pub(crate) struct ConnTable {
    max: usize,
    per_peer: usize,
    epoch: Instant,
    table: Mutex<Table>,
    evicted: AtomicU64,
}

/// One admitted connection, held by its task: counted until dropped.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    table: Arc<ConnTable>,
    id: u64,
    state: Arc<ConnState>,
}

/// What a connection's request handler holds to mark its requests in flight.
#[derive(Debug, Clone)]
pub(crate) struct Requests {
    table: Arc<ConnTable>,
    state: Arc<ConnState>,
}

/// A request in flight on a connection; the connection is idle again once every such guard
/// is dropped (the answer's body sent, or the request abandoned).
#[derive(Debug)]
pub(crate) struct InFlight {
    table: Arc<ConnTable>,
    state: Arc<ConnState>,
}

impl ConnTable {
    /// A table of at most `max` connections, `per_peer` from one peer.
    pub(crate) fn new(max: usize, per_peer: usize) -> Arc<Self> {
        Arc::new(ConnTable {
            max: max.max(1),
            per_peer: per_peer.max(1),
            epoch: Instant::now(),
            table: Mutex::default(),
            evicted: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections evicted to admit others since the table began.
    #[cfg(test)]
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Admit a connection from `peer` (`None`: a Unix socket), evicting one that costs nothing
    /// to hold if the table is full (the flag says whether one was).
    pub(crate) fn admit(self: &Arc<Self>, peer: Option<IpAddr>) -> Result<(ConnHandle, bool), Refused> {
        let group = peer.map(PeerGroup::of);
        let mut table = self.lock();
        if let Some(g) = group
            && table.per_group.get(&g).copied().unwrap_or(0) >= self.per_peer
        {
            return Err(Refused::PeerFull);
        }
        let mut evicted = false;
        if table.conns.len() >= self.max {
            let victim = table
                .conns
                .iter()
                .filter_map(|(id, e)| {
                    let since = e.state.since_ms.load(Ordering::Relaxed);
                    if !e.state.handshaken.load(Ordering::Acquire) {
                        Some(((0u8, since), *id))
                    } else if e.state.in_flight.load(Ordering::Acquire) == 0 {
                        Some(((1u8, since), *id))
                    } else {
                        None
                    }
                })
                .min()
                .map(|(_, id)| id);
            let Some(victim) = victim else { return Err(Refused::Full) };
            if let Some(entry) = remove(&mut table, victim) {
                entry.state.evict.notify_one();
                self.evicted.fetch_add(1, Ordering::Relaxed);
                evicted = true;
            }
        }
        let id = table.next;
        table.next += 1;
        let state = Arc::new(ConnState {
            handshaken: AtomicBool::new(false),
            in_flight: AtomicU32::new(0),
            since_ms: AtomicU64::new(self.now_ms()),
            evict: Notify::new(),
        });
        if let Some(g) = group {
            *table.per_group.entry(g).or_default() += 1;
        }
        table.conns.insert(id, Entry { group, state: state.clone() });
        Ok((ConnHandle { table: self.clone(), id, state }, evicted))
    }

    /// Connections counted now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().conns.len()
    }
}

/// Take `id` out of the table, releasing its peer's count.
fn remove(table: &mut Table, id: u64) -> Option<Entry> {
    let entry = table.conns.remove(&id)?;
    if let Some(g) = entry.group
        && let Some(n) = table.per_group.get_mut(&g)
    {
        *n -= 1;
        if *n == 0 {
            table.per_group.remove(&g);
        }
    }
    Some(entry)
}

impl ConnHandle {
    /// The TLS handshake finished: from now on the connection is evicted only while idle.
    pub(crate) fn handshaken(&self) {
        self.state.since_ms.store(self.table.now_ms(), Ordering::Relaxed);
        self.state.handshaken.store(true, Ordering::Release);
    }

    /// For the connection's request handler.
    pub(crate) fn requests(&self) -> Requests {
        Requests { table: self.table.clone(), state: self.state.clone() }
    }

    /// Resolves once the connection has been evicted to admit another.
    pub(crate) async fn evicted(&self) {
        self.state.evict.notified().await;
    }
}

impl Requests {
    /// A request begins; it is in flight until the guard is dropped.
    pub(crate) fn begin(&self) -> InFlight {
        self.state.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight { table: self.table.clone(), state: self.state.clone() }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.since_ms.store(self.table.now_ms(), Ordering::Relaxed);
        self.state.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for ConnHandle {
    fn drop(&mut self) {
        let mut table = self.table.lock();
        // Evicted, it was taken out already (and its id is never reused).
        if table.conns.get(&self.id).is_some_and(|e| Arc::ptr_eq(&e.state, &self.state)) {
            remove(&mut table, self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn v4(last: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)))
    }

    #[test]
    fn peers_are_ipv4_addresses_and_ipv6_slash_64s() {
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let c: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(PeerGroup::of(a.into()), PeerGroup::of(b.into()));
        assert_ne!(PeerGroup::of(a.into()), PeerGroup::of(c.into()));
        let mapped: Ipv6Addr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(PeerGroup::of(mapped.into()), PeerGroup::of(v4(1).unwrap()));
        // A /64 is one peer under the per-peer cap.
        let table = ConnTable::new(100, 2);
        let _one = table.admit(Some(a.into())).unwrap();
        let _two = table.admit(Some(b.into())).unwrap();
        assert_eq!(
            table.admit(Some("2001:db8:1:2::99".parse::<Ipv6Addr>().unwrap().into())).unwrap_err(),
            Refused::PeerFull
        );
        assert!(table.admit(Some(c.into())).is_ok());
    }

    #[test]
    fn at_the_cap_the_oldest_unhandshaken_goes_first_then_the_longest_idle_and_busy_ones_never() {
        let table = ConnTable::new(3, 10);
        let busy = table.admit(v4(1)).unwrap().0;
        busy.handshaken();
        let _request = busy.requests().begin();
        let idle = table.admit(v4(2)).unwrap().0;
        idle.handshaken();
        let silent = table.admit(v4(3)).unwrap().0;
        // Full: the one that never finished its handshake goes, though it is the newest.
        let newcomer = table.admit(v4(4)).unwrap().0;
        assert_eq!(table.len(), 3);
        assert_eq!(table.evicted(), 1);
        assert!(futures::FutureExt::now_or_never(silent.evicted()).is_some(), "told to end");
        assert!(futures::FutureExt::now_or_never(idle.evicted()).is_none());
        // Then the idle one (the newcomer is still in its handshake, and newer).
        newcomer.handshaken();
        let _again = table.admit(v4(5)).unwrap().0;
        assert!(futures::FutureExt::now_or_never(idle.evicted()).is_some());
        // The busy one is never let go: with every connection busy, a new one is refused.
        let _r = newcomer.requests().begin();
        _again.handshaken();
        let _again_request = _again.requests().begin();
        assert_eq!(table.admit(v4(6)).unwrap_err(), Refused::Full);
        assert!(futures::FutureExt::now_or_never(busy.evicted()).is_none());
        // An evicted handle's drop does not take a newer connection's place in the count.
        drop(silent);
        drop(idle);
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn a_connection_is_counted_until_its_handle_goes_and_idle_again_after_its_requests() {
        let table = ConnTable::new(1, 1);
        let conn = table.admit(v4(1)).unwrap().0;
        conn.handshaken();
        let requests = conn.requests();
        let request = requests.begin();
        assert_eq!(table.admit(v4(2)).unwrap_err(), Refused::Full, "busy");
        drop(request);
        drop(conn);
        assert_eq!(table.len(), 0, "the handle went; its handler's clone does not count");
        drop(requests);
        let again = table.admit(v4(1)).unwrap().0;
        again.handshaken();
        // Idle: a newcomer takes its place.
        assert!(table.admit(v4(2)).is_ok());
    }
}
