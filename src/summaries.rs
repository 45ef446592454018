//! Where unread summaries change hands: the replica's cache of recently read summaries,
//! its watchers, and the other replicas, kept in step.
//!
//! When may the cache answer? Exactly while it can know of every change:
//! - A write on this replica invalidates the keys it changed after commit and before
//!   it answers (`Summaries::committed`): read-your-writes on one replica.
//! - Other replicas' writes arrive through the fan-out (`ChangeSink`), within
//!   milliseconds. While the fan-out is down nothing is served from the cache; when it
//!   comes back the whole cache is dropped, since notifications sent meanwhile are lost.
//! - A notification that never came (a replica killed between commit and publish) is
//!   repaired by `sweep`, which compares every cached version with the database in one
//!   query: an entry is stale for at most the sweep interval.
//!
//! A read that misses takes a fill token before it reads the database and inserts what it
//! read only if no invalidation of its key came meanwhile, so a slow read can never put
//! back a summary that a write has already replaced.

use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub mod etag;
pub mod flight;
pub mod hub;

pub use etag::{Etag, IfNoneMatch};
pub use hub::{StreamRefusal, Subscription, SummaryHub, WatchLimits};

use crate::fanout::{Change, Publisher};
use crate::metrics::{CacheCounters, cache_outcome};
use crate::model::SummaryKey;
use crate::model::ThreadUnread;
use crate::storage::UnreadPage;

/// How the cache is bounded and how often it is swept.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// Most memory its entries may take (estimated), in bytes; 0 turns the cache off.
    pub budget_bytes: u64,
    /// How often cached versions are compared with the database's.
    pub sweep: std::time::Duration,
}

/// The caller's unread summary: a page of its lines (newest first) and the totals. The
/// lines are shared, not copied, with the cached summary they come from.
#[derive(Debug, Clone)]
pub struct UnreadSummary {
    lines: Arc<[ThreadUnread]>,
    shown: usize,
    /// All unread messages of the caller's threads not muted, not only the page's.
    pub total: i64,
    /// All unread messages of the caller's muted threads.
    pub muted_total: i64,
    /// When it changes by itself (a mute ends; Unix ms).
    pub changes_at: Option<i64>,
}

impl UnreadSummary {
    /// The first `shown` of `lines` (all of them if fewer), with the caller's totals.
    pub fn new(
        lines: Arc<[ThreadUnread]>,
        shown: usize,
        total: i64,
        muted_total: i64,
        changes_at: Option<i64>,
    ) -> Self {
        let shown = shown.min(lines.len());
        Self {
            lines,
            shown,
            total,
            muted_total,
            changes_at,
        }
    }

    /// The page's lines, newest last message first.
    pub fn threads(&self) -> &[ThreadUnread] {
        &self.lines[..self.shown]
    }
}

impl PartialEq for UnreadSummary {
    fn eq(&self, other: &Self) -> bool {
        (self.total, self.muted_total) == (other.total, other.muted_total)
            && self.threads() == other.threads()
    }
}

impl Eq for UnreadSummary {}

impl std::hash::Hash for UnreadSummary {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.total.hash(state);
        self.muted_total.hash(state);
        self.threads().hash(state);
    }
}

/// A summary as read, deep enough for any page size, with the version it was read at.
#[derive(Debug)]
pub struct CachedSummary {
    pub version: i64,
    pub total: i64,
    pub muted_total: i64,
    /// When it changes by itself (a mute ends; Unix ms): past then it answers nothing.
    pub changes_at: Option<i64>,
    /// Newest first: every unread thread, or the first `MAX_PAGE_LIMIT` of them, which
    /// is all any request can ask for.
    pub threads: Arc<[ThreadUnread]>,
    /// Estimated bytes, computed once for the cache's weigher.
    weight: u64,
}

impl CachedSummary {
    pub fn new(version: i64, page: UnreadPage) -> Self {
        let UnreadPage {
            rows: threads,
            total,
            muted_total,
            changes_at,
            ..
        } = page;
        let threads: Arc<[ThreadUnread]> = threads.into();
        let weight = (std::mem::size_of::<Self>()
            + threads.len() * std::mem::size_of::<ThreadUnread>()
            + threads
                .iter()
                .map(|thread| thread.last_message_preview.capacity())
                .sum::<usize>()
            + 64) as u64;
        Self {
            version,
            total,
            muted_total,
            changes_at,
            threads,
            weight,
        }
    }

    /// Whether it is still the summary at `now_ms`: no mute of it has ended since.
    pub fn current_at(&self, now_ms: i64) -> bool {
        self.changes_at.is_none_or(|at| now_ms < at)
    }

    /// The first `limit` lines, as a summary to hand out (sharing the lines).
    pub fn page(&self, limit: i64) -> UnreadSummary {
        let shown = usize::try_from(limit).unwrap_or(0);
        UnreadSummary::new(
            self.threads.clone(),
            shown,
            self.total,
            self.muted_total,
            self.changes_at,
        )
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct ByWeight;

impl quick_cache::Weighter<SummaryKey, Arc<CachedSummary>> for ByWeight {
    fn weight(&self, _key: &SummaryKey, value: &Arc<CachedSummary>) -> u64 {
        value.weight
    }
}

/// Invalidation generations are kept per slot of the key's hash: enough slots that
/// unrelated keys rarely share one (sharing only costs a fill that is not inserted).
const SLOTS: usize = 4096;

/// What a miss holds while it reads the database, and shows to insert what it read: a
/// fill whose token an invalidation has overtaken is not inserted (`SummaryCache::fill`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillToken {
    slot: usize,
    generation: u64,
}

/// Counts the entries the cache evicts to stay within its budget: a steady rate of
/// them means the cache is smaller than the users it serves (README, "Sizing the
/// summary cache").
#[derive(Clone)]
struct CountEvictions(CacheCounters);

impl quick_cache::Lifecycle<SummaryKey, Arc<CachedSummary>> for CountEvictions {
    type RequestState = ();

    fn on_evict(&self, _: &mut (), _: SummaryKey, _: Arc<CachedSummary>) {
        self.0.count_eviction();
    }
}

type Entries = quick_cache::sync::Cache<
    SummaryKey,
    Arc<CachedSummary>,
    ByWeight,
    quick_cache::DefaultHashBuilder,
    CountEvictions,
>;

/// The bounded cache of recently read summaries.
struct SummaryCache {
    entries: Entries,
    /// False while the fan-out is down: the cache may have missed changes.
    trusted: AtomicBool,
    generations: Box<[AtomicU64]>,
    hasher: std::collections::hash_map::RandomState,
}

impl SummaryCache {
    fn new(budget_bytes: u64, trusted: bool, counters: CacheCounters) -> Self {
        let estimated_items = usize::try_from(budget_bytes / 2048)
            .unwrap_or(usize::MAX)
            .max(16);
        Self {
            entries: Entries::with(
                estimated_items,
                budget_bytes,
                ByWeight,
                quick_cache::DefaultHashBuilder::default(),
                CountEvictions(counters),
            ),
            trusted: AtomicBool::new(trusted),
            generations: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn slot(&self, key: &SummaryKey) -> usize {
        let mut hasher = self.hasher.build_hasher();
        key.hash(&mut hasher);
        (std::hash::Hasher::finish(&hasher) as usize) % SLOTS
    }

    fn get(&self, key: &SummaryKey) -> Option<Arc<CachedSummary>> {
        if !self.trusted.load(Ordering::SeqCst) {
            return None;
        }
        self.entries.get(key)
    }

    /// A token to fill `key` after reading it, or `None` while the cache is not trusted.
    fn fill_token(&self, key: &SummaryKey) -> Option<FillToken> {
        if !self.trusted.load(Ordering::SeqCst) {
            return None;
        }
        let slot = self.slot(key);
        Some(FillToken {
            slot,
            generation: self.generations[slot].load(Ordering::SeqCst),
        })
    }

    /// Inserts what a miss read, unless its key was invalidated since the token was
    /// taken (or the cache stopped being trusted). An invalidation racing the insert
    /// bumps the generation before it removes, so the second check catches it.
    fn fill(&self, key: SummaryKey, token: FillToken, summary: Arc<CachedSummary>) {
        let current = |cache: &Self| {
            cache.trusted.load(Ordering::SeqCst)
                && cache.generations[token.slot].load(Ordering::SeqCst) == token.generation
        };
        if !current(self) {
            return;
        }
        self.entries.insert(key, summary.clone());
        if !current(self) {
            self.entries
                .remove_if(&key, |cached| Arc::ptr_eq(cached, &summary));
        }
    }

    fn invalidate(&self, key: &SummaryKey) {
        let slot = self.slot(key);
        self.generations[slot].fetch_add(1, Ordering::SeqCst);
        self.entries.remove(key);
    }

    /// Forgets everything: every slot's generation moves, so no fill in flight lands.
    fn clear(&self) {
        for generation in self.generations.iter() {
            generation.fetch_add(1, Ordering::SeqCst);
        }
        self.entries.clear();
    }
}

/// When the cache may first answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheTrust {
    /// From the start: no other process can change the data (one SQLite process).
    FromStart,
    /// Once the fan-out has connected: until then, other replicas' changes go unheard.
    OnceFanoutConnects,
}

/// The meeting point of summary changes: this replica's committed writes, the other
/// replicas' (through the fan-out), the cache and the watchers. Cloning is shallow.
#[derive(Clone)]
pub struct Summaries {
    cache: Option<Arc<SummaryCache>>,
    hub: SummaryHub,
    publisher: Arc<dyn Publisher>,
    counters: CacheCounters,
}

impl Summaries {
    /// `trust` says whether the cache may answer from the start (see `CacheTrust`).
    pub fn new(
        cache: CacheConfig,
        limits: WatchLimits,
        publisher: Arc<dyn Publisher>,
        counters: CacheCounters,
        trust: CacheTrust,
    ) -> Self {
        let trusted = trust == CacheTrust::FromStart;
        let cache = (cache.budget_bytes > 0).then(|| {
            Arc::new(SummaryCache::new(
                cache.budget_bytes,
                trusted,
                counters.clone(),
            ))
        });
        Self {
            cache,
            hub: SummaryHub::new(limits),
            publisher,
            counters,
        }
    }

    pub fn hub(&self) -> &SummaryHub {
        &self.hub
    }

    /// A cached summary the cache may answer with now (counted as a hit).
    pub fn cached(&self, key: &SummaryKey) -> Option<Arc<CachedSummary>> {
        let hit = self.cache.as_ref()?.get(key);
        if hit.is_some() {
            self.counters.count(cache_outcome::HIT);
        }
        hit
    }

    /// The entry another caller's read has just filled, for a caller who waited on that
    /// read: not counted, as the caller's poll already counted as a miss.
    pub fn filled(&self, key: &SummaryKey) -> Option<Arc<CachedSummary>> {
        self.cache.as_ref()?.get(key)
    }

    /// A token to fill `key` after a database read (counted as a miss), or `None`
    /// when the cache is off or cannot be trusted now (counted as a bypass).
    pub fn fill_token(&self, key: &SummaryKey) -> Option<FillToken> {
        let token = self.cache.as_ref().and_then(|cache| cache.fill_token(key));
        self.counters.count(if token.is_some() {
            cache_outcome::MISS
        } else {
            cache_outcome::BYPASS
        });
        token
    }

    pub fn fill(&self, key: SummaryKey, token: FillToken, summary: Arc<CachedSummary>) {
        if let Some(cache) = &self.cache {
            cache.fill(key, token, summary);
        }
    }

    /// After this replica committed a write that changed `keys`: drops them from the
    /// cache before the write answers, wakes their watchers, and has the other
    /// replicas told.
    pub fn committed(&self, keys: &[SummaryKey]) {
        if keys.is_empty() {
            return;
        }
        self.forget(keys);
        let changes: Vec<Change> = keys.iter().copied().map(Change::Summary).collect();
        self.publisher.publish(&changes);
    }

    /// Drops keys from the cache, then wakes their watchers (who read them again).
    fn forget(&self, keys: &[SummaryKey]) {
        if let Some(cache) = &self.cache {
            for key in keys {
                cache.invalidate(key);
            }
        }
        for key in keys {
            self.hub.notify(*key);
        }
    }

    /// What the cache counts (hits, staleness, sweeps).
    pub fn counters(&self) -> &CacheCounters {
        &self.counters
    }

    /// How many summaries the cache holds, and their estimated bytes.
    pub fn cache_usage(&self) -> (usize, u64) {
        self.cache.as_ref().map_or((0, 0), |cache| {
            (cache.entries.len(), cache.entries.weight())
        })
    }

    /// The cached summaries, each with its key.
    pub fn cached_entries(&self) -> Vec<(SummaryKey, Arc<CachedSummary>)> {
        match &self.cache {
            Some(cache) if cache.trusted.load(Ordering::SeqCst) => cache.entries.iter().collect(),
            _ => Vec::new(),
        }
    }

    /// Of `cached`, the entries whose version is not the database's (`current`, read
    /// after `cached` was taken): either stale, or overtaken by a write whose
    /// notification is still on its way.
    pub fn suspects(
        cached: Vec<(SummaryKey, Arc<CachedSummary>)>,
        current: &[(SummaryKey, i64)],
    ) -> Vec<(SummaryKey, Arc<CachedSummary>)> {
        let current: std::collections::HashMap<SummaryKey, i64> = current.iter().copied().collect();
        cached
            .into_iter()
            .filter(|(key, summary)| current.get(key).copied().unwrap_or(0) != summary.version)
            .collect()
    }

    /// Repairs what a lost notification left behind: each suspect still cached as it
    /// was (no notification dropped it in the grace the sweep gave the fan-out) is
    /// stale; it is dropped, its watchers woken, and it is counted in
    /// `chatd_summary_cache_stale_total`. Returns how many were stale.
    pub fn repair(&self, suspects: &[(SummaryKey, Arc<CachedSummary>)]) -> usize {
        let Some(cache) = &self.cache else {
            return 0;
        };
        let stale: Vec<SummaryKey> = suspects
            .iter()
            .filter(|(key, suspect)| {
                cache
                    .get(key)
                    .is_some_and(|cached| Arc::ptr_eq(&cached, suspect))
            })
            .map(|(key, _)| *key)
            .collect();
        if !stale.is_empty() {
            tracing::warn!(
                stale = stale.len(),
                "summary cache sweep found entries no notification invalidated"
            );
            self.counters.count_stale(stale.len() as u64);
            self.forget(&stale);
        }
        stale.len()
    }
}

/// What the fan-out tells the summaries (`crate::fanout::ChangeSink`, through the
/// replica's sink).
impl Summaries {
    /// These summaries changed on another replica.
    pub fn changed(&self, keys: &[SummaryKey]) {
        self.forget(keys);
    }

    /// The fan-out is connected again (or for the first time).
    pub fn connected(&self) {
        if let Some(cache) = &self.cache {
            cache.clear();
            cache.trusted.store(true, Ordering::SeqCst);
        }
        // Watchers too may have missed changes: each reads its summary again.
        self.hub.notify_all();
    }

    /// The fan-out is down.
    pub fn disconnected(&self) {
        if let Some(cache) = &self.cache {
            cache.trusted.store(false, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests;
