//! Key records and the route policy in Workers KV, with an in-isolate cache in front.
//!
//! Layout: `key:<sha256>` holds a record, `id:<id>` holds the digest (with the key's name as list
//! metadata, so lists and name filters need no record reads), `policy` holds a stored policy.
//! Every write made through this isolate drops the cached entry, so the very next request here
//! sees it; other isolates see it within `CACHE_TTL_SECONDS` plus KV's own propagation.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use worker::{kv::KvStore, Env};

use crate::core::record::{CompiledKey, KeyRecord};
use crate::core::RoutePolicy;

const MAX_CACHED_KEYS: usize = 10_000;

/// KV could not be read or written, or holds something unreadable: the gate fails closed.
#[derive(Debug)]
pub struct StoreError(#[allow(dead_code)] pub String);

impl<E: std::fmt::Display> From<E> for StoreError {
    fn from(e: E) -> Self {
        StoreError(e.to_string())
    }
}

struct Cached<T> {
    value: T,
    fetched_ms: i64,
}

thread_local! {
    static KEYS: RefCell<HashMap<String, Cached<Option<Rc<CompiledKey>>>>> = RefCell::new(HashMap::new());
    static POLICY: RefCell<Option<Cached<Rc<RoutePolicy>>>> = const { RefCell::new(None) };
}

pub struct Store {
    kv: KvStore,
    ttl_ms: i64,
    /// Read only when the policy is not in memory: it is a few KiB copied out of JavaScript.
    env: Env,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexMeta {
    pub name: String,
}

/// One entry of the id index: enough to list and filter without reading records.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    pub id: String,
    pub name: String,
}

impl Store {
    pub fn open(env: &Env) -> Result<Store, StoreError> {
        let kv = env.kv("KEYS")?;
        let ttl_ms = env
            .var("CACHE_TTL_SECONDS")
            .ok()
            .and_then(|v| v.to_string().parse::<i64>().ok())
            .unwrap_or(30)
            .clamp(0, 3600)
            * 1000;
        Ok(Store { kv, ttl_ms, env: env.clone() })
    }

    /// The compiled key stored under `digest`, from the cache when fresh.
    pub async fn key(&self, digest: &str, now_ms: i64) -> Result<Option<Rc<CompiledKey>>, StoreError> {
        let hit = KEYS.with(|c| {
            c.borrow()
                .get(digest)
                .filter(|e| now_ms - e.fetched_ms < self.ttl_ms)
                .map(|e| e.value.clone())
        });
        if let Some(value) = hit {
            return Ok(value);
        }
        let value = match self.record(digest).await? {
            Some(record) => Some(Rc::new(
                CompiledKey::compile(record).map_err(|e| StoreError(format!("stored record is invalid: {e}")))?,
            )),
            None => None,
        };
        KEYS.with(|c| {
            let mut cache = c.borrow_mut();
            if cache.len() >= MAX_CACHED_KEYS {
                cache.clear();
            }
            cache.insert(digest.to_string(), Cached { value: value.clone(), fetched_ms: now_ms });
        });
        Ok(value)
    }

    pub async fn record(&self, digest: &str) -> Result<Option<KeyRecord>, StoreError> {
        match self.kv.get(&format!("key:{digest}")).text().await? {
            None => Ok(None),
            Some(text) => Ok(Some(serde_json::from_str(&text)?)),
        }
    }

    pub async fn digest_of(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self.kv.get(&format!("id:{id}")).text().await?)
    }

    pub async fn record_by_id(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        match self.digest_of(id).await? {
            None => Ok(None),
            Some(digest) => self.record(&digest).await,
        }
    }

    /// Writes the record, then its index entry; on a failed index write the record is removed
    /// again if it was new, so a failure leaves nothing half-written that a list would miss.
    pub async fn put(&self, record: &KeyRecord, is_new: bool) -> Result<(), StoreError> {
        let json = serde_json::to_string(record)?;
        forget_key(&record.digest);
        self.kv.put(&format!("key:{}", record.digest), json)?.execute().await?;
        let index = self
            .kv
            .put(&format!("id:{}", record.id), record.digest.clone())?
            .metadata(IndexMeta { name: record.name.clone() })?
            .execute()
            .await;
        forget_key(&record.digest);
        if let Err(e) = index {
            if is_new {
                let _ = self.kv.delete(&format!("key:{}", record.digest)).await;
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Removes a key from lists; with `tombstone` the digest keeps answering KEY_REVOKED so that
    /// nothing (a late push, say) can bring a revoked key back.
    pub async fn delete(&self, record: &KeyRecord, tombstone: Option<&KeyRecord>) -> Result<(), StoreError> {
        forget_key(&record.digest);
        self.kv.delete(&format!("id:{}", record.id)).await?;
        match tombstone {
            Some(t) => self.kv.put(&format!("key:{}", record.digest), serde_json::to_string(t)?)?.execute().await?,
            None => self.kv.delete(&format!("key:{}", record.digest)).await?,
        }
        forget_key(&record.digest);
        Ok(())
    }

    /// Every index entry, sorted by id (KV lists keys in byte order, and ids sort by time).
    pub async fn index(&self) -> Result<Vec<IndexEntry>, StoreError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut list = self.kv.list().prefix("id:".into()).limit(1000);
            if let Some(c) = cursor.take() {
                list = list.cursor(c);
            }
            let page = list.execute().await?;
            for key in page.keys {
                let id = key.name.strip_prefix("id:").unwrap_or(&key.name).to_string();
                let name = key
                    .metadata
                    .and_then(|m| serde_json::from_value::<IndexMeta>(m).ok())
                    .map(|m| m.name)
                    .unwrap_or_default();
                out.push(IndexEntry { id, name });
            }
            match page.cursor.filter(|c| !page.list_complete && !c.is_empty()) {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// The route policy: the stored one if any, else the default from wrangler.toml.
    pub async fn policy(&self, now_ms: i64) -> Result<Rc<RoutePolicy>, StoreError> {
        let hit = POLICY.with(|p| {
            p.borrow()
                .as_ref()
                .filter(|e| now_ms - e.fetched_ms < self.ttl_ms)
                .map(|e| e.value.clone())
        });
        if let Some(policy) = hit {
            return Ok(policy);
        }
        let (text, _) = self.policy_text().await?;
        let policy = Rc::new(
            RoutePolicy::parse(&text).map_err(|e| StoreError(format!("the route policy is invalid: {e}")))?,
        );
        POLICY.with(|p| *p.borrow_mut() = Some(Cached { value: policy.clone(), fetched_ms: now_ms }));
        Ok(policy)
    }

    /// The policy document and where it comes from (`stored` or `default`).
    pub async fn policy_text(&self) -> Result<(String, &'static str), StoreError> {
        match self.kv.get("policy").text().await? {
            Some(text) => Ok((text, "stored")),
            None => {
                let default = self.env.var("ROUTE_POLICY").map(|v| v.to_string());
                Ok((default.unwrap_or_else(|_| "{\"rules\":[]}".into()), "default"))
            }
        }
    }

    pub async fn put_policy(&self, json: &str) -> Result<(), StoreError> {
        POLICY.with(|p| *p.borrow_mut() = None);
        self.kv.put("policy", json.to_string())?.execute().await?;
        POLICY.with(|p| *p.borrow_mut() = None);
        Ok(())
    }
}

fn forget_key(digest: &str) {
    KEYS.with(|c| {
        c.borrow_mut().remove(digest);
    });
}
