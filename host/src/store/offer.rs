//! A dispatcher's standing claim ([`Store::offer`](super::Store::offer)).
//!
//! At a trickle, a delivery used to cost three store transactions: the
//! ingest, the dispatcher's claim once the ingest woke it, and the outcome.
//! A loop whose last claim took everything ready instead leaves an
//! [`Offer`] open with the room it has (free slots): a store that takes
//! offers claims for it inside the transaction that makes a delivery ready
//! (SQLite: an ingest, an outcome that moves a lane on, a rescue, an
//! expiry, an operator's action; PostgreSQL: an ingest, which inserts them
//! in flight, and an outcome; the others wake the loop) and sends the
//! claimed deliveries to the loop once
//! that transaction has committed, and synced where it moved a lane on (the
//! store's sync rules are those of its own claims): SQLite's writer right
//! after it answered the transaction's callers, PostgreSQL's group workers
//! right before. The claim costs no
//! transaction, thread
//! hand-off or wake-up of its own, and the loop needs no wake for what the
//! store handed it ([`IngestCounts::offered`](super::IngestCounts),
//! [`Settled::readied`](super::Settled)).
//!
//! The rules that keep this exact:
//! - **Room.** The store claims at most the offer's room and takes it from
//!   the room as it claims; the claimed deliveries count as in transit until
//!   the loop receives them, so the loop never runs more than its
//!   concurrency ([`Offer::in_transit`]).
//! - **Exhausted.** A claim that fills the room may have left deliveries
//!   ready: the store closes the offer and says so with the batch; the loop
//!   then claims itself before it opens the offer again. An offer is only
//!   served by transactions that may have made its connector's deliveries
//!   ready, so one that was not exhausted has left nothing ready behind.
//! - **Closed.** The loop closes the offer before it claims itself (a wake,
//!   its timer, shutdown). Deliveries the store claimed before the close
//!   still arrive (on SQLite before the answer to the loop's own claim, as
//!   one writer sends both; on PostgreSQL maybe after it), and count as in
//!   transit until then.
//! - **Held.** An attempt whose outcome was not a delivery (the breaker may
//!   have moved; a retry's due time matters) holds the offer: it stays
//!   closed, and the loop cannot reopen it until it has looked at the
//!   breaker again ([`Offer::looked`]), so a decision made before the
//!   outcome never reopens it.
//! - **Fenced.** Where nodes share the store, what a loop sends is bound by
//!   its egress pass (`switchboard_sandbox::EgressGate`): the loop opens an offer
//!   with the pass it took before its last claim (as a number, the offer's
//!   `ticket`), every claim made for the offer carries it back, and the
//!   attempts it starts hold that pass, not one taken when the batch
//!   arrives. Were the gate to close after the offer opened (the other
//!   nodes may then take this node's leases over), what the store claimed
//!   for it is abandoned rather than sent, even once the gate has reopened.
//! - **A failed transaction** (or a failed sync) on SQLite closes each
//!   offer it had claimed for, no longer counting those deliveries in
//!   transit, and sends it an empty, exhausted batch, so the loop claims
//!   again. On PostgreSQL it gives the room it reserved back; if the loop
//!   closed its offer meanwhile, an empty batch tells it to look again.
//! - **Shares of the room.** PostgreSQL's ingest and outcome groups run
//!   beside each other: each reserves no more than it can make ready
//!   ([`Offer::reserve_at_most`]: an ingest, its events for the connector;
//!   an outcome group, the lanes it releases) and takes only deliveries it
//!   made ready, so that filling such a share leaves nothing behind; only a
//!   reservation of the whole room that fills it exhausts the offer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use super::Claimed;

/// Each connector's offer, shared by a store and whatever serves them.
#[derive(Debug, Default, Clone)]
pub(crate) struct Offers(Arc<Mutex<HashMap<String, Arc<Offer>>>>);

impl Offers {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Offer>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leaves `offer` with the store: one per connector, a new one replaces
    /// the last ([`Store::offer`](super::Store::offer)).
    pub(crate) fn leave(&self, offer: Arc<Offer>) {
        self.map().insert(offer.connector().to_string(), offer);
    }

    /// `connector`'s offer, if its loop is still there.
    pub(crate) fn live(&self, connector: &str) -> Option<Arc<Offer>> {
        self.map().get(connector).filter(|o| o.is_live()).cloned()
    }

    /// The offers open now, forgetting those whose loop is gone.
    pub(crate) fn open(&self) -> Vec<Arc<Offer>> {
        let mut offers = self.map();
        offers.retain(|_, o| o.is_live());
        offers.values().filter(|o| o.is_open()).cloned().collect()
    }
}

/// What a store claimed for an offer, sent once its transaction is durable.
#[derive(Debug)]
pub struct Served {
    pub claimed: Vec<Claimed>,
    /// The claim filled the room (or its transaction failed): the offer is
    /// closed, and the loop claims itself before it opens it again.
    pub exhausted: bool,
    /// The ticket the offer was open with when the store reserved its room
    /// ([`Offer::open`]).
    pub ticket: u64,
}

#[derive(Debug, Default)]
struct State {
    open: bool,
    /// Held by an attempt since the loop last looked ([`Offer::hold`]).
    held: bool,
    room: usize,
    in_transit: usize,
    lease_ms: i64,
    ticket: u64,
}

/// A dispatcher's standing claim for one connector; see the module notes.
#[derive(Debug)]
pub struct Offer {
    connector: String,
    state: Mutex<State>,
    served: mpsc::UnboundedSender<Served>,
}

/// Room reserved by a store for one claim ([`Offer::reserve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    pub limit: usize,
    pub lease_ms: i64,
    pub ticket: u64,
    /// The reservation took all the room there was: a claim that fills it
    /// may have left deliveries ready behind.
    pub whole: bool,
}

impl Offer {
    /// A closed offer for `connector`, and where what the store claims for
    /// it arrives.
    pub fn new(connector: &str) -> (Arc<Self>, mpsc::UnboundedReceiver<Served>) {
        let (served, rx) = mpsc::unbounded_channel();
        let offer = Self {
            connector: connector.to_string(),
            state: Mutex::new(State::default()),
            served,
        };
        (Arc::new(offer), rx)
    }

    pub fn connector(&self) -> &str {
        &self.connector
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change below is a few assignments that cannot panic half-way.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    // The loop's side.

    /// The loop is about to decide afresh whether it may open the offer
    /// (breaker, limits): a hold from before counts as seen.
    pub fn looked(&self) {
        self.state().held = false;
    }

    /// Lets the store claim up to `room` deliveries, leased for `lease_ms`,
    /// and hand them back with `ticket` (opaque to the store: the loop's
    /// egress pass, see the module notes); `false` (and it stays closed) if
    /// an attempt held it since the loop last looked.
    pub fn open(&self, room: usize, lease_ms: i64, ticket: u64) -> bool {
        let mut s = self.state();
        if s.held {
            return false;
        }
        s.open = room > 0;
        s.room = room;
        s.lease_ms = lease_ms;
        s.ticket = ticket;
        s.open
    }

    /// An attempt ended other than delivered: the store claims nothing more
    /// until the loop has looked again.
    pub fn hold(&self) {
        let mut s = self.state();
        s.held = true;
        s.open = false;
        s.room = 0;
    }

    /// The store claims nothing more for this offer.
    pub fn close(&self) {
        let mut s = self.state();
        s.open = false;
        s.room = 0;
    }

    pub fn is_open(&self) -> bool {
        self.state().open
    }

    /// A slot freed (an attempt ended): one more delivery fits, if the
    /// offer is still open.
    pub fn add_room(&self) {
        let mut s = self.state();
        if s.open {
            s.room += 1;
        }
    }

    /// Deliveries the store claimed for this offer that the loop has not
    /// received yet: they hold slots.
    pub fn in_transit(&self) -> usize {
        self.state().in_transit
    }

    /// The loop received `n` deliveries.
    pub fn received(&self, n: usize) {
        let mut s = self.state();
        s.in_transit = s.in_transit.saturating_sub(n);
    }

    // The store's side.

    /// Whether the loop is still there to receive what is claimed for it.
    pub fn is_live(&self) -> bool {
        !self.served.is_closed()
    }

    /// Takes the whole room for one claim (it counts as in transit until
    /// [`Offer::claimed`] gives back what the claim did not use). `None`
    /// when the offer is closed.
    pub fn reserve(&self) -> Option<Reserved> {
        self.reserve_at_most(usize::MAX)
    }

    /// [`Offer::reserve`] for a transaction that can make at most `most` of
    /// the connector's deliveries ready: it takes no more of the room than
    /// that, leaving the rest to transactions that run beside it (several
    /// writers), which would otherwise find no room and wake the loop.
    pub fn reserve_at_most(&self, most: usize) -> Option<Reserved> {
        let mut s = self.state();
        if !s.open || s.room == 0 || most == 0 {
            return None;
        }
        let limit = s.room.min(most);
        s.room -= limit;
        s.in_transit += limit;
        Some(Reserved {
            limit,
            lease_ms: s.lease_ms,
            ticket: s.ticket,
            whole: s.room == 0,
        })
    }

    /// A reserved claim took `got`: the rest of the room comes back, unless
    /// the claim filled a reservation of the whole room, which closes the
    /// offer (one of at most what its transaction could make ready took
    /// all there was). Returns whether it did.
    pub fn claimed(&self, reserved: Reserved, got: usize) -> bool {
        let mut s = self.state();
        let unused = reserved.limit.saturating_sub(got);
        s.in_transit = s.in_transit.saturating_sub(unused);
        let exhausted = reserved.whole && got >= reserved.limit;
        if exhausted {
            s.open = false;
            s.room = 0;
        } else if s.open {
            s.room += unused;
        }
        exhausted
    }

    /// The transaction that claimed `got` for this offer rolled back:
    /// nothing was claimed; the offer is closed so that the loop claims
    /// itself.
    pub fn rolled_back(&self, got: usize) {
        {
            let mut s = self.state();
            s.in_transit = s.in_transit.saturating_sub(got);
            s.open = false;
            s.room = 0;
        }
        self.nudge();
    }

    /// Tells the loop to claim again itself, whether or not it waits with
    /// the offer open: deliveries that it cannot have seen at its last
    /// claim are ready now, and nothing else would wake it for them (those
    /// a store claimed for a loop that had stopped, once handed back).
    /// Reserves nothing and carries nothing.
    pub fn nudge(&self) {
        let _ = self.send(Vec::new(), true, 0);
    }

    /// Sends what a committed transaction claimed under a reservation
    /// that carried `ticket`; gives the deliveries back when the loop is
    /// gone (the caller hands them back to the queue).
    pub fn send(
        &self,
        claimed: Vec<Claimed>,
        exhausted: bool,
        ticket: u64,
    ) -> Result<(), Vec<Claimed>> {
        let served = Served {
            claimed,
            exhausted,
            ticket,
        };
        self.served.send(served).map_err(|e| e.0.claimed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_takes_the_room_and_gives_back_what_it_did_not_use() {
        let (offer, _rx) = Offer::new("hss");
        assert_eq!(offer.reserve(), None, "closed until the loop opens it");
        assert!(offer.open(3, 60_000, 7));
        let r = offer.reserve().unwrap();
        assert_eq!(
            r,
            Reserved {
                limit: 3,
                lease_ms: 60_000,
                ticket: 7,
                whole: true
            }
        );
        assert_eq!(offer.reserve(), None, "the room is reserved");
        assert_eq!(offer.in_transit(), 3);
        // An attempt ends while the claim runs.
        offer.add_room();
        assert!(!offer.claimed(r, 1));
        assert_eq!(offer.in_transit(), 1);
        assert_eq!(
            offer.reserve().map(|r| r.limit),
            Some(3),
            "2 unused + 1 freed"
        );
    }

    #[test]
    fn transactions_side_by_side_share_the_room_each_taking_what_it_can_use() {
        let (offer, _rx) = Offer::new("hss");
        assert!(offer.open(5, 1, 0));
        let ingest = offer.reserve_at_most(2).unwrap();
        assert_eq!((ingest.limit, ingest.whole), (2, false));
        let outcome = offer.reserve_at_most(9).unwrap();
        assert_eq!((outcome.limit, outcome.whole), (3, true), "the rest");
        assert_eq!(offer.reserve_at_most(1), None, "no room left");
        // The first made both of its deliveries ready and took them: it
        // took all it could, which says nothing of the room.
        assert!(!offer.claimed(ingest, 2));
        assert!(offer.is_open());
        // The second filled the whole room: more may be ready.
        assert!(offer.claimed(outcome, 3));
        assert!(!offer.is_open());
        assert_eq!(offer.in_transit(), 5);
    }

    #[test]
    fn a_claim_that_fills_the_room_closes_the_offer() {
        let (offer, _rx) = Offer::new("hss");
        assert!(offer.open(2, 1, 0));
        let r = offer.reserve().unwrap();
        assert!(offer.claimed(r, 2));
        assert!(!offer.is_open());
        offer.add_room();
        assert_eq!(offer.reserve(), None, "a freed slot does not reopen it");
        offer.received(2);
        assert_eq!(offer.in_transit(), 0);
    }

    #[test]
    fn a_closed_offer_keeps_its_claims_in_transit_and_a_rollback_says_to_claim() {
        let (offer, mut rx) = Offer::new("hss");
        assert!(offer.open(4, 1, 0));
        let r = offer.reserve().unwrap();
        offer.close();
        assert!(!offer.claimed(r, 1));
        assert_eq!(offer.in_transit(), 1);
        assert_eq!(offer.reserve(), None);
        assert!(offer.open(2, 1, 0));
        let r = offer.reserve().unwrap();
        assert!(!offer.claimed(r, 1));
        offer.rolled_back(1);
        assert_eq!(
            offer.in_transit(),
            1,
            "the first claim's delivery is still owed"
        );
        assert!(!offer.is_open());
        let served = rx.try_recv().unwrap();
        assert!(served.claimed.is_empty() && served.exhausted);
        drop(rx);
        assert!(!offer.is_live());
    }

    #[test]
    fn an_attempts_hold_outlasts_a_decision_the_loop_made_before_it() {
        let (offer, _rx) = Offer::new("hss");
        offer.looked();
        // The loop decided it may open; an attempt fails meanwhile.
        offer.hold();
        assert!(!offer.open(4, 1, 0), "the hold came after the loop looked");
        assert_eq!(offer.reserve(), None);
        offer.looked();
        assert!(offer.open(4, 1, 0));
        assert!(!offer.open(0, 1, 0), "no room: nothing to open");
    }
}
