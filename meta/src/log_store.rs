//! The durable Raft log: one append-only file of CRC-checked records in the
//! node's meta directory.
//!
//! # Format
//!
//! `raft.log` is a sequence of records, each
//! `len: u32 LE | crc32c(payload): u32 LE | payload` where the payload is
//! the JSON of a `Record`: a log entry, a vote, the committed log id, a
//! truncation (`TruncateAfter`) or a purge. Replaying the records in order
//! rebuilds the in-memory view; a record cut short or failing its CRC can
//! only be the tail of a write that a crash interrupted (every write is
//! fsynced before it is reported), so replay stops there and the file is cut
//! back to the last good record. When purges leave most of the file dead,
//! it is rewritten (`raft.log.tmp`, fsync, rename, fsync of the directory).
//!
//! # Durability and ordering
//!
//! - Every mutation (append, vote, committed, truncate, purge) is written
//!   and `fsync`ed before the call returns; appends report completion to
//!   openraft's callback only after the fsync. Mutations take `&mut self`,
//!   so they are serialized in call order: a vote saved before an append is
//!   durable before that append.
//! - The in-memory view is updated before the write, so entries are
//!   readable by the [`LogReader`] as soon as `append` returns (openraft's
//!   rule); if the write fails, the store reports the I/O error and openraft
//!   stops the node.
//! - fsync and file writes run on `spawn_blocking`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::raft::{Entry, LogId, TypeConfig, Vote};

const LOG_FILE: &str = "raft.log";
const TMP_FILE: &str = "raft.log.tmp";
const HEADER: usize = 8;
/// Rewrite the file when it exceeds this size and is mostly dead records.
const REWRITE_MIN_BYTES: u64 = 4 << 20;

#[derive(Debug, Serialize, Deserialize)]
enum Record {
    Entry(Entry),
    Vote(Vote),
    Committed(Option<LogId>),
    TruncateAfter(Option<LogId>),
    Purge(LogId),
}

#[derive(Debug, Default)]
struct LogInner {
    entries: BTreeMap<u64, Entry>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
    /// Bytes in the file, live or dead.
    file_bytes: u64,
    /// Bytes of records still needed (entries, latest vote/committed/purge).
    live_bytes: u64,
}

impl LogInner {
    fn replay(&mut self, rec: Record) {
        match rec {
            Record::Entry(e) => {
                self.entries.insert(e.log_id.index, e);
            }
            Record::Vote(v) => self.vote = Some(v),
            Record::Committed(c) => self.committed = c,
            Record::TruncateAfter(after) => {
                let from = after.map_or(0, |l| l.index + 1);
                self.entries.split_off(&from);
            }
            Record::Purge(upto) => {
                self.entries = self.entries.split_off(&(upto.index + 1));
                self.last_purged = Some(upto);
            }
        }
    }

    fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(self.last_purged)
    }
}

/// The durable log store. Cloning shares the same file and view; openraft
/// owns one clone, and the caller may keep another for inspection.
#[derive(Clone)]
pub struct LogStore {
    dir: PathBuf,
    inner: Arc<Mutex<LogInner>>,
    file: Arc<Mutex<File>>,
}

/// A reader of the log shared with the store (openraft's replication tasks
/// hold one each).
#[derive(Clone)]
pub struct LogReader {
    inner: Arc<Mutex<LogInner>>,
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, replaying it and cutting off a
    /// torn tail.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| ctx(e, dir, "create dir"))?;
        let path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| ctx(e, &path, "open"))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)
            .map_err(|e| ctx(e, &path, "read"))?;
        let mut inner = LogInner::default();
        let mut off = 0usize;
        while let Some((rec, len)) = decode(&buf[off..]) {
            inner.replay(rec);
            off += len;
        }
        if off < buf.len() {
            tracing::warn!(
                path = %path.display(),
                offset = off,
                dropped = buf.len() - off,
                "raft log: cutting a torn or corrupt tail"
            );
            file.set_len(off as u64)
                .and_then(|_| file.sync_all())
                .map_err(|e| ctx(e, &path, "truncate torn tail"))?;
        }
        inner.file_bytes = off as u64;
        inner.live_bytes = off as u64;
        Ok(Self {
            dir: dir.to_path_buf(),
            inner: Arc::new(Mutex::new(inner)),
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// Writes `records` and fsyncs, off the async runtime.
    async fn write(&self, records: Vec<Record>) -> io::Result<()> {
        let mut buf = Vec::new();
        for r in &records {
            encode(r, &mut buf)?;
        }
        let n = buf.len() as u64;
        let file = self.file.clone();
        let path = self.dir.join(LOG_FILE);
        tokio::task::spawn_blocking(move || {
            let mut f = file.lock();
            f.write_all(&buf)
                .and_then(|_| f.sync_data())
                .map_err(|e| ctx(e, &path, "append"))
        })
        .await
        .map_err(io::Error::other)??;
        let mut inner = self.inner.lock();
        inner.file_bytes += n;
        inner.live_bytes += n;
        Ok(())
    }

    /// Rewrites the file with only the live records when most of it is dead.
    async fn maybe_rewrite(&self) -> io::Result<()> {
        let records = {
            let inner = self.inner.lock();
            if inner.file_bytes < REWRITE_MIN_BYTES || inner.live_bytes * 2 > inner.file_bytes {
                return Ok(());
            }
            let mut out = Vec::new();
            if let Some(v) = &inner.vote {
                out.push(encode_vec(&Record::Vote(*v))?);
            }
            out.push(encode_vec(&Record::Committed(inner.committed))?);
            if let Some(p) = inner.last_purged {
                out.push(encode_vec(&Record::Purge(p))?);
            }
            for e in inner.entries.values() {
                out.push(encode_vec(&Record::Entry(e.clone()))?);
            }
            out.concat()
        };
        let dir = self.dir.clone();
        let file = self.file.clone();
        let n = records.len() as u64;
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let tmp = dir.join(TMP_FILE);
            let path = dir.join(LOG_FILE);
            let mut f = File::create(&tmp).map_err(|e| ctx(e, &tmp, "create"))?;
            f.write_all(&records)
                .and_then(|_| f.sync_all())
                .map_err(|e| ctx(e, &tmp, "write"))?;
            // Hold the handle lock across the swap so no append lands in the
            // old file after the rename.
            let mut guard = file.lock();
            std::fs::rename(&tmp, &path).map_err(|e| ctx(e, &path, "rename"))?;
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| ctx(e, &dir, "fsync dir"))?;
            *guard = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| ctx(e, &path, "reopen"))?;
            Ok(())
        })
        .await
        .map_err(io::Error::other)??;
        let mut inner = self.inner.lock();
        inner.file_bytes = n;
        inner.live_bytes = n;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        Ok(self
            .inner
            .lock()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        Ok(self.inner.lock().vote)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        LogReader {
            inner: self.inner.clone(),
        }
        .try_get_log_entries(range)
        .await
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        Ok(self.inner.lock().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let inner = self.inner.lock();
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: inner.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            inner: self.inner.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        self.write(vec![Record::Vote(*vote)]).await?;
        self.inner.lock().vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        self.write(vec![Record::Committed(committed)]).await?;
        self.inner.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        Ok(self.inner.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        {
            let mut inner = self.inner.lock();
            for e in &entries {
                inner.entries.insert(e.log_id.index, e.clone());
            }
        }
        let res = self
            .write(entries.into_iter().map(Record::Entry).collect())
            .await;
        match res {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        self.write(vec![Record::TruncateAfter(last_log_id)]).await?;
        let mut inner = self.inner.lock();
        inner.replay(Record::TruncateAfter(last_log_id));
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        self.write(vec![Record::Purge(log_id)]).await?;
        {
            let mut inner = self.inner.lock();
            let before = inner.entries.len();
            inner.replay(Record::Purge(log_id));
            // Purged entries' bytes are dead; estimate them by the average.
            let removed = (before - inner.entries.len()) as u64;
            if before > 0 {
                let per = inner.live_bytes / before as u64;
                inner.live_bytes = inner.live_bytes.saturating_sub(per * removed);
            }
        }
        self.maybe_rewrite().await
    }
}

fn encode(rec: &Record, out: &mut Vec<u8>) -> io::Result<()> {
    let payload = serde_json::to_vec(rec).map_err(io::Error::other)?;
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::other(format!("raft log record of {} bytes", payload.len())))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

fn encode_vec(rec: &Record) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    encode(rec, &mut v)?;
    Ok(v)
}

/// Decodes one record from the front of `buf`: `None` if it is incomplete,
/// fails its CRC or does not parse (a torn tail).
fn decode(buf: &[u8]) -> Option<(Record, usize)> {
    let len = u32::from_le_bytes(buf.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(buf.get(4..8)?.try_into().ok()?);
    let payload = buf.get(HEADER..HEADER.checked_add(len)?)?;
    if crc32c::crc32c(payload) != crc {
        return None;
    }
    let rec = serde_json::from_slice(payload).ok()?;
    Some((rec, HEADER + len))
}

fn ctx(e: io::Error, path: &Path, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::entry::RaftEntry;
    use openraft::vote::RaftLeaderIdExt;
    use openraft::RaftTypeConfig;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(
            <TypeConfig as RaftTypeConfig>::LeaderId::new_committed(term, 1),
            index,
        )
    }

    fn blank(term: u64, index: u64) -> Entry {
        Entry::new_blank(log_id(term, index))
    }

    async fn append(s: &mut LogStore, entries: Vec<Entry>) {
        s.append(entries, IOFlushed::noop()).await.unwrap();
    }

    #[tokio::test]
    async fn reopen_replays_entries_vote_truncate_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open(dir.path()).unwrap();
            append(&mut s, (1..=10).map(|i| blank(1, i)).collect()).await;
            s.save_vote(&Vote::new(2, 3)).await.unwrap();
            s.truncate_after(Some(log_id(1, 7))).await.unwrap();
            append(&mut s, vec![blank(2, 8)]).await;
            s.purge(log_id(1, 3)).await.unwrap();
            s.save_committed(Some(log_id(1, 6))).await.unwrap();
        }
        let mut s = LogStore::open(dir.path()).unwrap();
        let st = s.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(log_id(1, 3)));
        assert_eq!(st.last_log_id, Some(log_id(2, 8)));
        let ids: Vec<u64> = s
            .try_get_log_entries(0..100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id().index)
            .collect();
        assert_eq!(ids, vec![4, 5, 6, 7, 8]);
        assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(2, 3)));
        assert_eq!(s.read_committed().await.unwrap(), Some(log_id(1, 6)));
    }

    #[tokio::test]
    async fn torn_tail_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open(dir.path()).unwrap();
            append(&mut s, (1..=3).map(|i| blank(1, i)).collect()).await;
        }
        let path = dir.path().join(LOG_FILE);
        let good = std::fs::metadata(&path).unwrap().len();
        // A crash mid-write: half a record, then a record with a bad CRC.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        let rec = encode_vec(&Record::Entry(blank(1, 4))).unwrap();
        f.write_all(&rec[..rec.len() / 2]).unwrap();
        drop(f);
        let mut s = LogStore::open(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
        append(&mut s, vec![blank(1, 4)]).await;
        drop(s);
        let mut bad = std::fs::read(&path).unwrap();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        std::fs::write(&path, &bad).unwrap();
        let mut s = LogStore::open(dir.path()).unwrap();
        let st = s.get_log_state().await.unwrap();
        assert_eq!(st.last_log_id, Some(log_id(1, 3)));
    }

    #[tokio::test]
    async fn rewrite_after_purge_keeps_live_records() {
        let dir = tempfile::tempdir().unwrap();
        let big = "x".repeat(8 << 10);
        let mut s = LogStore::open(dir.path()).unwrap();
        s.save_vote(&Vote::new(1, 1)).await.unwrap();
        let entries: Vec<Entry> = (1..=800)
            .map(|i| Entry::new_normal(log_id(1, i), crate::types::Command::RemoveNode { id: i }))
            .collect();
        for chunk in entries.chunks(100) {
            append(&mut s, chunk.to_vec()).await;
        }
        // Pad the file past the rewrite threshold with rule-group entries.
        let pad: Vec<Entry> = (801..=1300)
            .map(|i| {
                Entry::new_normal(
                    log_id(1, i),
                    crate::types::Command::PutRuleGroups {
                        namespace: big.clone(),
                        groups: vec![],
                    },
                )
            })
            .collect();
        append(&mut s, pad).await;
        let before = std::fs::metadata(dir.path().join(LOG_FILE)).unwrap().len();
        assert!(before > REWRITE_MIN_BYTES);
        s.purge(log_id(1, 1290)).await.unwrap();
        let after = std::fs::metadata(dir.path().join(LOG_FILE)).unwrap().len();
        assert!(after * 10 < before, "{before} → {after}");
        append(&mut s, vec![blank(1, 1301)]).await;
        drop(s);
        let mut s = LogStore::open(dir.path()).unwrap();
        let ids: Vec<u64> = s
            .try_get_log_entries(0..u64::MAX)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id().index)
            .collect();
        assert_eq!(ids, (1291..=1301).collect::<Vec<_>>());
        assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(1, 1)));
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Append(u8),
            TruncateBack(u8),
            PurgeFront(u8),
            Vote(u8),
            Reopen,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (1u8..5).prop_map(Op::Append),
                1 => (0u8..4).prop_map(Op::TruncateBack),
                1 => (0u8..4).prop_map(Op::PurgeFront),
                1 => any::<u8>().prop_map(Op::Vote),
                1 => Just(Op::Reopen),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(24))]

            /// Any legal sequence of log operations, with reopens in
            /// between, reads back like an in-memory model.
            #[test]
            fn matches_model_across_reopens(ops in proptest::collection::vec(op(), 1..16)) {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    let dir = tempfile::tempdir().unwrap();
                    let mut s = LogStore::open(dir.path()).unwrap();
                    let mut model: BTreeMap<u64, u64> = BTreeMap::new();
                    let mut purged: Option<(u64, u64)> = None;
                    let mut vote: Option<Vote> = None;
                    let mut term = 1;
                    for op in ops {
                        let last = model.keys().next_back().copied().or(purged.map(|p| p.0));
                        match op {
                            Op::Append(n) => {
                                term += 1;
                                let start = last.map_or(1, |l| l + 1);
                                let es: Vec<Entry> = (start..start + u64::from(n)).map(|i| blank(term, i)).collect();
                                for e in &es { model.insert(e.log_id.index, term); }
                                append(&mut s, es).await;
                            }
                            Op::TruncateBack(k) => {
                                // Truncation never reaches below the purged point.
                                let Some(l) = model.keys().next_back().copied() else { continue };
                                let floor = purged.map_or(0, |(i, _)| i);
                                let after = l.saturating_sub(u64::from(k)).max(floor);
                                let id = match (model.get(&after), purged) {
                                    (Some(t), _) => Some(log_id(*t, after)),
                                    (None, Some((i, t))) if i == after => Some(log_id(t, i)),
                                    _ => None,
                                };
                                model.split_off(&(after + 1));
                                s.truncate_after(id).await.unwrap();
                            }
                            Op::PurgeFront(k) => {
                                let Some(f) = model.keys().next().copied() else { continue };
                                let upto = f + u64::from(k);
                                let Some(t) = model.get(&upto).copied() else { continue };
                                model = model.split_off(&(upto + 1));
                                purged = Some((upto, t));
                                s.purge(log_id(t, upto)).await.unwrap();
                            }
                            Op::Vote(t) => {
                                let v = Vote::new(u64::from(t), 1);
                                vote = Some(v);
                                s.save_vote(&v).await.unwrap();
                            }
                            Op::Reopen => {
                                drop(s);
                                s = LogStore::open(dir.path()).unwrap();
                            }
                        }
                        let got: Vec<(u64, u64)> = s
                            .try_get_log_entries(0..u64::MAX)
                            .await
                            .unwrap()
                            .iter()
                            .map(|e| (e.log_id.index, e.log_id.leader_id.term))
                            .collect();
                        let want: Vec<(u64, u64)> = model.iter().map(|(i, t)| (*i, *t)).collect();
                        assert_eq!(got, want);
                        assert_eq!(s.read_vote().await.unwrap(), vote);
                        let st = s.get_log_state().await.unwrap();
                        assert_eq!(st.last_purged_log_id, purged.map(|(i, t)| log_id(t, i)));
                    }
                });
            }

            #[test]
            fn record_codec_rejects_damage(term in 0u64..1000, index in 0u64..1000, cut in any::<proptest::sample::Index>(), flip in any::<proptest::sample::Index>()) {
                let bytes = encode_vec(&Record::Entry(blank(term, index))).unwrap();
                let (rec, len) = decode(&bytes).unwrap();
                prop_assert_eq!(len, bytes.len());
                let Record::Entry(e) = rec else { panic!("wrong record") };
                prop_assert_eq!(e.log_id, log_id(term, index));
                prop_assert!(decode(&bytes[..cut.index(bytes.len())]).is_none());
                let mut bad = bytes.clone();
                let i = flip.index(bad.len());
                bad[i] ^= 0x01;
                // A flipped length byte may still describe a shorter, valid
                // prefix only if the CRC matches, which it cannot by chance
                // for this small input; everything else must be refused.
                prop_assert!(decode(&bad).is_none());
            }
        }
    }
}
