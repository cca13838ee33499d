//! The openraft state machine store: [`MetaState`] in memory, snapshots on
//! disk.
//!
//! # Durability
//!
//! The state itself is not persisted on `apply` (it is small and rebuilt
//! fast): on restart openraft installs the last persisted snapshot and
//! re-applies the log up to the committed id that [`crate::log_store`]
//! saves. A snapshot is persisted before it is reported — written to
//! `snapshot.tmp`, fsynced, renamed over `snapshot`, directory fsynced — so
//! [`RaftStateMachine::get_current_snapshot`] only ever returns a durable one.
//!
//! Snapshot file: `crc32c(rest): u32 LE | meta_len: u32 LE | meta JSON |
//! data`, where data is the JSON of [`MetaState`] (also the bytes shipped
//! to followers).
//!
//! # Observers
//!
//! After every applied batch and installed snapshot the new state is
//! published on a `tokio::sync::watch` channel ([`StateMachineStore::subscribe`]);
//! watchers see states in apply order, possibly skipping intermediate ones.
//! A proposal's response is sent only after the state including it is
//! published, so the proposer reads its own write.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::raft::{LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::types::{Applied, MetaState};

const SNAPSHOT_FILE: &str = "snapshot";
const SNAPSHOT_TMP: &str = "snapshot.tmp";

struct SmInner {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    state: MetaState,
    current: Option<(SnapshotMeta, Arc<Vec<u8>>)>,
}

/// The state machine store. Clones share state; openraft owns one.
#[derive(Clone)]
pub struct StateMachineStore {
    dir: PathBuf,
    inner: Arc<Mutex<SmInner>>,
    tx: Arc<watch::Sender<Arc<MetaState>>>,
}

impl StateMachineStore {
    /// Opens the store in `dir`, loading the last persisted snapshot (the
    /// state itself starts empty; openraft installs the snapshot and
    /// re-applies the log).
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let current = load_snapshot(&dir.join(SNAPSHOT_FILE))?;
        let (tx, _) = watch::channel(Arc::new(MetaState::default()));
        Ok(Self {
            dir: dir.to_path_buf(),
            inner: Arc::new(Mutex::new(SmInner {
                last_applied: None,
                last_membership: StoredMembership::default(),
                state: MetaState::default(),
                current: current.map(|(m, d)| (m, Arc::new(d))),
            })),
            tx: Arc::new(tx),
        })
    }

    /// A receiver of every newly applied state.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetaState>> {
        self.tx.subscribe()
    }

    /// The latest applied state (what this node has seen, not necessarily
    /// the cluster's latest).
    pub fn state(&self) -> Arc<MetaState> {
        self.tx.borrow().clone()
    }

    fn publish(&self, state: MetaState) {
        self.tx.send_replace(Arc::new(state));
    }

    async fn persist(&self, meta: &SnapshotMeta, data: Arc<Vec<u8>>) -> io::Result<()> {
        let meta_json = serde_json::to_vec(meta).map_err(io::Error::other)?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let mut body = Vec::with_capacity(4 + meta_json.len() + data.len());
            let meta_len = u32::try_from(meta_json.len()).map_err(io::Error::other)?;
            body.extend_from_slice(&meta_len.to_le_bytes());
            body.extend_from_slice(&meta_json);
            body.extend_from_slice(&data);
            let tmp = dir.join(SNAPSHOT_TMP);
            let path = dir.join(SNAPSHOT_FILE);
            let with_path = |e: io::Error, p: &Path| {
                io::Error::new(e.kind(), format!("snapshot {}: {e}", p.display()))
            };
            let mut f = File::create(&tmp).map_err(|e| with_path(e, &tmp))?;
            f.write_all(&crc32c::crc32c(&body).to_le_bytes())
                .and_then(|_| f.write_all(&body))
                .and_then(|_| f.sync_all())
                .map_err(|e| with_path(e, &tmp))?;
            std::fs::rename(&tmp, &path).map_err(|e| with_path(e, &path))?;
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| with_path(e, &dir))
        })
        .await
        .map_err(io::Error::other)?
    }
}

fn load_snapshot(path: &Path) -> io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
    let buf = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    let corrupt = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("snapshot {}: {what}", path.display()),
        )
    };
    let crc = buf.get(0..4).ok_or_else(|| corrupt("short header"))?;
    let body = &buf[4..];
    if crc32c::crc32c(body).to_le_bytes() != crc {
        return Err(corrupt("CRC mismatch"));
    }
    let meta_len = body
        .get(0..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| corrupt("short body"))?;
    let meta_json = body
        .get(4..4 + meta_len)
        .ok_or_else(|| corrupt("meta past end"))?;
    let meta: SnapshotMeta =
        serde_json::from_slice(meta_json).map_err(|e| corrupt(&e.to_string()))?;
    Ok(Some((meta, body[4 + meta_len..].to_vec())))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let (meta, data) = {
            let inner = self.inner.lock();
            let data = serde_json::to_vec(&inner.state).map_err(io::Error::other)?;
            let meta = SnapshotMeta {
                last_log_id: inner.last_applied,
                last_membership: inner.last_membership.clone(),
            };
            (meta, Arc::new(data))
        };
        self.persist(&meta, data.clone()).await?;
        self.inner.lock().current = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: data.to_vec(),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let inner = self.inner.lock();
        Ok((inner.last_applied, inner.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        // Responses wait until the batch's state is published, so a
        // proposer reads its own write from `state()` as soon as it returns.
        let mut replies = Vec::new();
        let mut changed = None;
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let response = {
                let mut inner = self.inner.lock();
                inner.last_applied = Some(entry.log_id);
                let r = match &entry.payload {
                    EntryPayload::Blank => Applied::Ok { epoch: None },
                    EntryPayload::Normal(cmd) => inner.state.apply(cmd),
                    EntryPayload::Membership(m) => {
                        inner.last_membership =
                            StoredMembership::new(Some(entry.log_id), m.clone());
                        Applied::Ok { epoch: None }
                    }
                };
                if matches!(entry.payload, EntryPayload::Normal(_)) {
                    changed = Some(inner.state.clone());
                }
                r
            };
            if let Some(responder) = responder {
                replies.push((responder, response));
            }
        }
        if let Some(state) = changed {
            self.publish(state);
        }
        for (responder, response) in replies {
            responder.send(response);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Vec<u8>) -> io::Result<()> {
        let state: MetaState = serde_json::from_slice(&snapshot).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot at {:?}: {e}", meta.last_log_id),
            )
        })?;
        let data = Arc::new(snapshot);
        self.persist(meta, data.clone()).await?;
        {
            let mut inner = self.inner.lock();
            inner.last_applied = meta.last_log_id;
            inner.last_membership = meta.last_membership.clone();
            inner.state = state.clone();
            inner.current = Some((meta.clone(), data));
        }
        self.publish(state);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        let inner = self.inner.lock();
        Ok(inner.current.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: data.to_vec(),
        }))
    }
}
