//! In-memory caches the authentication step reads on every request: identities with their decoded keys
//! (auth.md §6.4), and the replay cache of signatures already used inside their timestamp window (auth.md §4).
//! Both are loaded from the store at startup; admin changes update them before the command returns.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};

use ipnet::IpNet;
use tokio::sync::Notify;

use protocol::JobId;
use protocol::admin::Role;
use protocol::signing::HmacKey;

use crate::store::records::{Identity, KeyStorage};

/// An identity as authentication needs it.
#[derive(Debug, Clone)]
pub struct CachedIdentity {
    pub role: Role,
    pub key: HmacKey,
    pub cidrs: Vec<IpNet>,
}

impl CachedIdentity {
    /// Decodes a stored identity; `None` if its key or networks do not decode.
    pub fn from_stored(identity: &Identity) -> Option<CachedIdentity> {
        let key = match &identity.key {
            KeyStorage::Plain(bytes) => HmacKey::from_bytes(bytes.as_slice().try_into().ok()?),
        };
        let cidrs = identity
            .cidrs
            .iter()
            .map(|cidr| cidr.parse::<IpNet>())
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        Some(CachedIdentity {
            role: identity.role,
            key,
            cidrs,
        })
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        self.cidrs.iter().any(|net| net.contains(&ip))
    }
}

/// Identities by client id.
#[derive(Debug, Clone, Default)]
pub struct IdentityCache {
    inner: Arc<RwLock<HashMap<String, CachedIdentity>>>,
}

impl IdentityCache {
    pub fn get(&self, client_id: &str) -> Option<CachedIdentity> {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(client_id)
            .cloned()
    }

    pub fn insert(&self, client_id: &str, identity: CachedIdentity) {
        self.inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(client_id.to_owned(), identity);
    }

    pub fn remove(&self, client_id: &str) {
        self.inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(client_id);
    }

    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Live replay entries allowed per identity (auth.md §4).
pub const MAX_REPLAY_ENTRIES_PER_IDENTITY: usize = 1_000_000;

#[derive(Debug)]
enum Slot {
    /// The first request with this signature is still being handled; repeats wait for it.
    InFlight(Arc<Notify>),
    /// Handled; for a submit, the job it created.
    Done(Option<JobId>),
}

type ReplayKey = (String, [u8; 32]);

#[derive(Debug, Default)]
struct ReplayInner {
    slots: HashMap<ReplayKey, (i64, Slot)>,
    by_expiry: BTreeSet<(i64, String, [u8; 32])>,
    per_identity: HashMap<String, usize>,
}

/// Signatures of accepted mutating requests inside their window.
#[derive(Debug, Clone, Default)]
pub struct ReplayCache {
    inner: Arc<Mutex<ReplayInner>>,
}

/// The result of claiming a signature.
#[derive(Debug)]
pub enum Claim {
    /// First use: handle the request, then `finish` the guard.
    Fresh(ClaimGuard),
    /// Used before; for a submit, the job the first request created.
    Seen(Option<JobId>),
    /// The identity has too many live entries (`429 replay_cache_full`).
    Full,
}

/// Marks the claim done when finished or dropped, waking any duplicate that waits.
#[derive(Debug)]
pub struct ClaimGuard {
    cache: ReplayCache,
    key: Option<ReplayKey>,
}

impl ClaimGuard {
    /// Records the outcome (the job a submit created, if any).
    pub fn finish(mut self, job: Option<JobId>) {
        if let Some(key) = self.key.take() {
            self.cache.complete(&key, job);
        }
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.cache.complete(&key, None);
        }
    }
}

impl ReplayCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, ReplayInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Claims `(client_id, signature)` until `expires_at` (Unix seconds); waits while a duplicate is in flight.
    pub async fn claim(&self, client_id: &str, signature: [u8; 32], expires_at: i64) -> Claim {
        let key = (client_id.to_owned(), signature);
        loop {
            let notify = {
                let mut inner = self.lock();
                match inner.slots.get(&key) {
                    Some((_, Slot::Done(job))) => return Claim::Seen(*job),
                    Some((_, Slot::InFlight(notify))) => notify.clone(),
                    None => {
                        let count = inner.per_identity.get(client_id).copied().unwrap_or(0);
                        if count >= MAX_REPLAY_ENTRIES_PER_IDENTITY {
                            return Claim::Full;
                        }
                        inner.slots.insert(
                            key.clone(),
                            (expires_at, Slot::InFlight(Arc::new(Notify::new()))),
                        );
                        inner.by_expiry.insert((expires_at, key.0.clone(), key.1));
                        *inner.per_identity.entry(client_id.to_owned()).or_default() += 1;
                        return Claim::Fresh(ClaimGuard {
                            cache: self.clone(),
                            key: Some(key),
                        });
                    }
                }
            };
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Re-check: the first request may have finished between the lookup and `enable`.
            if matches!(self.lock().slots.get(&key), Some((_, Slot::InFlight(_)))) {
                notified.await;
            }
        }
    }

    fn complete(&self, key: &ReplayKey, job: Option<JobId>) {
        let mut inner = self.lock();
        if let Some((_, slot)) = inner.slots.get_mut(key)
            && let Slot::InFlight(notify) = std::mem::replace(slot, Slot::Done(job))
        {
            notify.notify_waiters();
        }
    }

    /// Loads an entry from the store at startup.
    pub fn load(&self, client_id: &str, signature: [u8; 32], expires_at: i64, job: Option<JobId>) {
        let mut inner = self.lock();
        let key = (client_id.to_owned(), signature);
        if inner
            .slots
            .insert(key, (expires_at, Slot::Done(job)))
            .is_none()
        {
            inner
                .by_expiry
                .insert((expires_at, client_id.to_owned(), signature));
            *inner.per_identity.entry(client_id.to_owned()).or_default() += 1;
        }
    }

    /// Drops entries that expired before `now_s` (R10); returns how many.
    pub fn expire(&self, now_s: i64) -> usize {
        let mut inner = self.lock();
        let mut dropped = 0;
        while let Some(first) = inner.by_expiry.first().cloned() {
            if first.0 >= now_s {
                break;
            }
            inner.by_expiry.pop_first();
            let key = (first.1, first.2);
            if matches!(inner.slots.get(&key), Some((expiry, Slot::Done(_))) if *expiry == first.0)
            {
                inner.slots.remove(&key);
                if let Some(count) = inner.per_identity.get_mut(&key.0) {
                    *count -= 1;
                    if *count == 0 {
                        inner.per_identity.remove(&key.0);
                    }
                }
                dropped += 1;
            } else if let Some((expiry, _)) = inner.slots.get(&key) {
                // Still in flight: keep it and look again at the next pass.
                let expiry = *expiry;
                inner.by_expiry.insert((expiry.max(now_s), key.0, key.1));
                break;
            }
        }
        dropped
    }

    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Ulid;
    use std::time::Duration;

    #[tokio::test]
    async fn a_duplicate_waits_for_the_first_and_sees_its_job() {
        let cache = ReplayCache::default();
        let Claim::Fresh(guard) = cache.claim("c", [1; 32], 100).await else {
            panic!("first claim is fresh")
        };
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.claim("c", [1; 32], 100).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiter.is_finished(),
            "the duplicate waits for the first request"
        );
        let job = JobId(Ulid::from_u128(9));
        guard.finish(Some(job));
        let claim = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(claim, Claim::Seen(Some(seen)) if seen == job));
    }

    #[tokio::test]
    async fn dropped_guards_count_as_done_without_a_job_and_entries_expire() {
        let cache = ReplayCache::default();
        match cache.claim("c", [2; 32], 50).await {
            Claim::Fresh(guard) => drop(guard),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            cache.claim("c", [2; 32], 50).await,
            Claim::Seen(None)
        ));
        cache.load("d", [3; 32], 200, None);
        assert_eq!(cache.expire(100), 1);
        assert_eq!(cache.len(), 1);
        assert!(matches!(
            cache.claim("c", [2; 32], 150).await,
            Claim::Fresh(_)
        ));
    }
}
