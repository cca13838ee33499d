//! The rule leader: whether this node may evaluate rules and send alerts
//! right now ([`LeaderLease`], the cluster's
//! [`pharos_alerting::eval::LeaderCheck`]).
//!
//! Owns: a lease renewed by confirming Raft leadership with a quorum
//! ([`MetaClient::is_leader_confirmed`], a ReadIndex barrier) every
//! heartbeat. Must not: change any metadata.
//!
//! Invariant: a deposed leader stops before a new one can be elected. A
//! confirmation means a quorum acknowledged this node as leader after the
//! confirmation was requested; none of those voters starts an election
//! before its election timeout (at least 3 heartbeats) has run out since
//! then, and no leader can be elected without one of them. So the lease is
//! counted from when the confirmation was *requested*, and lasts 3
//! heartbeats minus a margin for timer and clock-rate error.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pharos_alerting::eval::LeaderCheck;
use pharos_meta::MetaClient;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Election timeouts are at least this many heartbeats (see
/// `pharos_meta::MetaNode::start`).
const ELECTION_TIMEOUT_MIN_HEARTBEATS: u32 = 3;

/// A leadership lease over the meta group.
pub struct LeaderLease {
    meta: Arc<dyn MetaClient>,
    heartbeat: Duration,
    valid_for: Duration,
    /// When the last successful confirmation was requested.
    confirmed_at: Mutex<Option<Instant>>,
}

impl LeaderLease {
    /// A lease that is not held until [`LeaderLease::spawn`]'s task
    /// confirms leadership.
    pub fn new(meta: Arc<dyn MetaClient>, heartbeat: Duration) -> Arc<LeaderLease> {
        let election_min = heartbeat * ELECTION_TIMEOUT_MIN_HEARTBEATS;
        // Half a heartbeat of margin: timers fire late, clocks run at
        // slightly different rates.
        let valid_for = election_min.saturating_sub(heartbeat / 2);
        Arc::new(LeaderLease {
            meta,
            heartbeat,
            valid_for,
            confirmed_at: Mutex::new(None),
        })
    }

    /// How long one confirmation keeps the lease.
    pub fn valid_for(&self) -> Duration {
        self.valid_for
    }

    /// Renews the lease every heartbeat until the task is aborted.
    pub fn spawn(self: &Arc<Self>) -> JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut was_leader = false;
            let mut tick = tokio::time::interval(me.heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let asked = Instant::now();
                let r = me.meta.is_leader_confirmed().await;
                let leader = matches!(r, Ok(true));
                me.observe(asked, leader);
                if leader != was_leader {
                    match &r {
                        Ok(true) => tracing::info!("rule leadership confirmed: evaluating rules"),
                        Ok(false) => tracing::info!("not the meta leader: rules paused"),
                        Err(e) => {
                            tracing::warn!(error = %e, "leadership not confirmed: rules paused")
                        }
                    }
                    was_leader = leader;
                }
            }
        })
    }

    /// Records the outcome of a confirmation requested at `asked`.
    fn observe(&self, asked: Instant, leader: bool) {
        let mut at = self.confirmed_at.lock();
        if leader {
            // Confirmations may finish out of order only in theory (one
            // task asks sequentially); never move the lease backwards.
            if at.is_none_or(|t| t < asked) {
                *at = Some(asked);
            }
        } else {
            *at = None;
        }
    }

    fn held_at(&self, now: Instant) -> bool {
        self.confirmed_at
            .lock()
            .is_some_and(|t| now.saturating_duration_since(t) < self.valid_for)
    }
}

impl LeaderCheck for LeaderLease {
    fn is_leader(&self) -> bool {
        self.held_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pharos_meta::client::BoxFuture;
    use pharos_meta::types::{Command, MetaState, NodeId};
    use pharos_meta::MetaError;
    use std::sync::atomic::{AtomicU8, Ordering};
    use tokio::sync::watch;

    /// Answers leadership confirmations as told: 0 leader, 1 follower,
    /// 2 no quorum (after a delay), 3 hangs.
    struct Scripted {
        mode: AtomicU8,
        state: watch::Sender<Arc<MetaState>>,
    }

    impl MetaClient for Scripted {
        fn add_node(&self, _: NodeId, _: String) -> BoxFuture<'_, Result<(), MetaError>> {
            Box::pin(async { Ok(()) })
        }
        fn propose(&self, _: Command) -> BoxFuture<'_, Result<Option<u64>, MetaError>> {
            Box::pin(async { Ok(None) })
        }
        fn is_leader_confirmed(&self) -> BoxFuture<'_, Result<bool, MetaError>> {
            Box::pin(async move {
                match self.mode.load(Ordering::SeqCst) {
                    0 => Ok(true),
                    1 => Ok(false),
                    2 => Err(MetaError::NoQuorum {
                        node: 1,
                        message: "test".into(),
                    }),
                    _ => std::future::pending().await,
                }
            })
        }
        fn state(&self) -> Arc<MetaState> {
            self.state.borrow().clone()
        }
        fn watch(&self) -> watch::Receiver<Arc<MetaState>> {
            self.state.subscribe()
        }
    }

    #[test]
    fn lease_is_shorter_than_the_election_timeout() {
        let (tx, _) = watch::channel(Arc::new(MetaState::default()));
        let meta = Arc::new(Scripted {
            mode: AtomicU8::new(0),
            state: tx,
        });
        let l = LeaderLease::new(meta, Duration::from_millis(100));
        assert!(l.valid_for() < Duration::from_millis(300));
        assert!(l.valid_for() >= Duration::from_millis(200));
        let t0 = Instant::now();
        assert!(!l.held_at(t0), "not held before a confirmation");
        l.observe(t0, true);
        assert!(l.held_at(t0 + Duration::from_millis(240)));
        assert!(!l.held_at(t0 + Duration::from_millis(260)));
        // A confirmation requested earlier does not move the lease back.
        l.observe(t0 - Duration::from_millis(100), true);
        assert!(l.held_at(t0 + Duration::from_millis(240)));
        // Another leader: the lease is dropped at once.
        l.observe(t0, false);
        assert!(!l.held_at(t0));
    }

    /// Polls `f` until it holds or `within` passes.
    async fn eventually(within: Duration, f: impl Fn() -> bool) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if f() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        f()
    }

    #[tokio::test]
    async fn renewal_follows_the_meta_group() {
        let (tx, _) = watch::channel(Arc::new(MetaState::default()));
        let meta = Arc::new(Scripted {
            mode: AtomicU8::new(0),
            state: tx,
        });
        let lease = LeaderLease::new(
            Arc::clone(&meta) as Arc<dyn MetaClient>,
            Duration::from_millis(50),
        );
        let task = lease.spawn();
        let s = Duration::from_secs(5);
        assert!(eventually(s, || lease.is_leader()).await);
        // Confirmations stop answering: the lease runs out by itself.
        meta.mode.store(3, Ordering::SeqCst);
        assert!(eventually(s, || !lease.is_leader()).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!lease.is_leader(), "a hanging confirmation kept the lease");
        task.abort();
        // No quorum: not leader; a quorum again: leader; another leader: not.
        meta.mode.store(2, Ordering::SeqCst);
        let task = lease.spawn();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!lease.is_leader());
        meta.mode.store(0, Ordering::SeqCst);
        assert!(eventually(s, || lease.is_leader()).await);
        meta.mode.store(1, Ordering::SeqCst);
        assert!(eventually(s, || !lease.is_leader()).await);
        task.abort();
    }
}
