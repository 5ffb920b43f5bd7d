//! The engine boundary: a few raw, ordered key-value operations over named trees, with atomic multi-tree writes and
//! an explicit flush. `SledEngine` is the only engine built; it is the only code in the workspace that imports sled.
//! Encoding, keys and meaning live in `store::Store`, so another engine only has to implement this trait.

use std::ops::Bound;
use std::path::{Path, PathBuf};

use sled::Transactional;

/// Key-value pairs as read from a range.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The trees of storage.md §4.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TreeName {
    Meta,
    Jobs,
    JobsByStatus,
    JobsByRequester,
    JobsByFinish,
    Events,
    Idempotency,
    Identities,
    Workers,
    Replay,
}

impl TreeName {
    pub const ALL: [TreeName; 10] = [
        TreeName::Meta,
        TreeName::Jobs,
        TreeName::JobsByStatus,
        TreeName::JobsByRequester,
        TreeName::JobsByFinish,
        TreeName::Events,
        TreeName::Idempotency,
        TreeName::Identities,
        TreeName::Workers,
        TreeName::Replay,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TreeName::Meta => "meta",
            TreeName::Jobs => "jobs",
            TreeName::JobsByStatus => "jobs_by_status",
            TreeName::JobsByRequester => "jobs_by_requester",
            TreeName::JobsByFinish => "jobs_by_finish",
            TreeName::Events => "events",
            TreeName::Idempotency => "idempotency",
            TreeName::Identities => "identities",
            TreeName::Workers => "workers",
            TreeName::Replay => "replay",
        }
    }

    fn index(self) -> usize {
        TreeName::ALL
            .iter()
            .position(|tree| *tree == self)
            .unwrap_or(0)
    }
}

/// One raw write: `None` deletes the key.
#[derive(Debug, Clone)]
pub struct RawWrite {
    pub tree: TreeName,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// An engine failure, without engine types.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "database {path} is in use by another process (a running coordinator or dffmpeg-admin)"
    )]
    Locked { path: PathBuf },
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the database is corrupt: {0}")]
    Corrupt(String),
    #[error("i/o error: {0}")]
    Io(String),
}

/// Ordered key-value storage with atomic multi-tree writes.
pub trait Engine: Send + Sync + std::fmt::Debug + 'static {
    /// Applies every write atomically (all or none, also across a crash once flushed).
    fn apply(&self, writes: &[RawWrite]) -> Result<(), EngineError>;
    fn get(&self, tree: TreeName, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;
    /// Entries in `[from, to)` order (or reverse), at most `limit`.
    fn range(
        &self,
        tree: TreeName,
        from: Bound<Vec<u8>>,
        to: Bound<Vec<u8>>,
        reverse: bool,
        limit: usize,
    ) -> Result<Entries, EngineError>;
    /// Makes every earlier write durable (fsync).
    fn flush(&self) -> Result<(), EngineError>;
    /// Whether the database existed before this open.
    fn existed(&self) -> bool;
}

/// The sled 0.34 engine.
#[derive(Debug)]
pub struct SledEngine {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    existed: bool,
}

fn io_error(err: sled::Error) -> EngineError {
    match err {
        sled::Error::Corruption { .. } => EngineError::Corrupt(err.to_string()),
        other => EngineError::Io(other.to_string()),
    }
}

impl SledEngine {
    /// Opens (or creates) the database in `dir/db`. `dir` is shown in errors.
    pub fn open(dir: &Path, cache_capacity_bytes: u64) -> Result<SledEngine, EngineError> {
        create_dir(dir)?;
        let db_path = dir.join("db");
        let existed = db_path.join("conf").exists() || db_path.join("db").exists();
        let db = sled::Config::new()
            .path(&db_path)
            .cache_capacity(cache_capacity_bytes)
            .flush_every_ms(Some(500))
            .open()
            .map_err(|err| match err {
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("lock") =>
                {
                    EngineError::Locked {
                        path: dir.to_path_buf(),
                    }
                }
                sled::Error::Io(io) => EngineError::Open {
                    path: dir.to_path_buf(),
                    source: io,
                },
                other => io_error(other),
            })?;
        let mut trees = Vec::with_capacity(TreeName::ALL.len());
        for tree in TreeName::ALL {
            trees.push(db.open_tree(tree.as_str()).map_err(io_error)?);
        }
        Ok(SledEngine { db, trees, existed })
    }

    fn tree(&self, name: TreeName) -> &sled::Tree {
        &self.trees[name.index()]
    }
}

impl Engine for SledEngine {
    fn apply(&self, writes: &[RawWrite]) -> Result<(), EngineError> {
        if writes.is_empty() {
            return Ok(());
        }
        // A write to one tree needs no transaction.
        let first = writes[0].tree;
        if writes.iter().all(|write| write.tree == first) {
            let mut batch = sled::Batch::default();
            for write in writes {
                match &write.value {
                    Some(value) => batch.insert(write.key.as_slice(), value.as_slice()),
                    None => batch.remove(write.key.as_slice()),
                }
            }
            return self.tree(first).apply_batch(batch).map_err(io_error);
        }
        let t = &self.trees;
        let result = (
            &t[0], &t[1], &t[2], &t[3], &t[4], &t[5], &t[6], &t[7], &t[8], &t[9],
        )
            .transaction(|(t0, t1, t2, t3, t4, t5, t6, t7, t8, t9)| {
                let trees = [t0, t1, t2, t3, t4, t5, t6, t7, t8, t9];
                for write in writes {
                    let tree = trees[write.tree.index()];
                    match &write.value {
                        Some(value) => {
                            tree.insert(write.key.as_slice(), value.as_slice())?;
                        }
                        None => {
                            tree.remove(write.key.as_slice())?;
                        }
                    }
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            });
        match result {
            Ok(()) => Ok(()),
            Err(sled::transaction::TransactionError::Storage(err)) => Err(io_error(err)),
            Err(sled::transaction::TransactionError::Abort(())) => {
                Err(EngineError::Io("transaction aborted".into()))
            }
        }
    }

    fn get(&self, tree: TreeName, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self
            .tree(tree)
            .get(key)
            .map_err(io_error)?
            .map(|value| value.to_vec()))
    }

    fn range(
        &self,
        tree: TreeName,
        from: Bound<Vec<u8>>,
        to: Bound<Vec<u8>>,
        reverse: bool,
        limit: usize,
    ) -> Result<Entries, EngineError> {
        let iter = self.tree(tree).range::<Vec<u8>, _>((from, to));
        let mut out = Vec::new();
        let mut push = |item: sled::Result<(sled::IVec, sled::IVec)>| -> Result<bool, EngineError> {
            let (key, value) = item.map_err(io_error)?;
            out.push((key.to_vec(), value.to_vec()));
            Ok(out.len() < limit)
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        if reverse {
            for item in iter.rev() {
                if !push(item)? {
                    break;
                }
            }
        } else {
            for item in iter {
                if !push(item)? {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn flush(&self) -> Result<(), EngineError> {
        self.db.flush().map(|_| ()).map_err(io_error)
    }

    fn existed(&self) -> bool {
        self.existed
    }
}

/// Creates the store directory with mode 0700 if it is missing.
fn create_dir(dir: &Path) -> Result<(), EngineError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| EngineError::Open {
            path: dir.to_path_buf(),
            source,
        })
}
