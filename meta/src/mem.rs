//! [`MemMetaClient`]: the in-memory [`MetaClient`] for tests of the crates
//! above (a single-process cluster of one, no Raft, no disk). It applies
//! commands with the same [`MetaState::apply`] as the replicated store, so a
//! rejection here is the rejection Raft would return.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::client::{BoxFuture, MetaClient};
use crate::error::MetaError;
use crate::types::{Applied, Command, MetaState, NodeId};

/// An in-memory, always-leader metadata store.
pub struct MemMetaClient {
    state: Mutex<MetaState>,
    tx: watch::Sender<Arc<MetaState>>,
}

impl Default for MemMetaClient {
    fn default() -> Self {
        Self::new(MetaState::default())
    }
}

impl MemMetaClient {
    pub fn new(initial: MetaState) -> Self {
        let (tx, _) = watch::channel(Arc::new(initial.clone()));
        Self {
            state: Mutex::new(initial),
            tx,
        }
    }

    fn apply(&self, cmd: &Command) -> Result<Option<u64>, MetaError> {
        // Hold the lock across publish so watchers see states in order.
        let mut state = self.state.lock();
        match state.apply(cmd) {
            Applied::Ok { epoch } => {
                self.tx.send_replace(Arc::new(state.clone()));
                Ok(epoch)
            }
            Applied::Rejected(r) => Err(MetaError::Rejected(r)),
        }
    }
}

impl MetaClient for MemMetaClient {
    fn add_node(&self, id: NodeId, addr: String) -> BoxFuture<'_, Result<(), MetaError>> {
        Box::pin(async move { self.apply(&Command::AddNode { id, addr }).map(|_| ()) })
    }

    fn propose(&self, cmd: Command) -> BoxFuture<'_, Result<Option<u64>, MetaError>> {
        Box::pin(async move { self.apply(&cmd) })
    }

    fn is_leader_confirmed(&self) -> BoxFuture<'_, Result<bool, MetaError>> {
        Box::pin(async { Ok(true) })
    }

    fn state(&self) -> Arc<MetaState> {
        self.tx.borrow().clone()
    }

    fn watch(&self) -> watch::Receiver<Arc<MetaState>> {
        self.tx.subscribe()
    }
}
