//! The source of truth: key records, tombstones, the route policy, the change log, the audit log
//! and the KV outbox, in the SQLite storage of the control-plane Durable Object.
//!
//! Every method is synchronous. A Durable Object runs one event at a time and commits the writes
//! made between two awaits together, so each management call's read-check-write runs alone and
//! lands whole: the record, its change-log row, its audit row and its outbox row, or none of them.

use std::cell::RefCell;

use serde::Deserialize;
use serde_json::{json, Map, Value};
use worker::{SqlStorage, SqlStorageValue};

use super::store::StoreError;
use crate::core::name_index::{self, NameIndex};
use crate::core::record::{KeyRecord, KeyStatus};

/// How long change-log rows are kept: far longer than KV's own propagation (about 60 s), so an
/// isolate that starts now learns of every change its KV replica may not have yet.
pub const CHANGE_RETENTION_MS: i64 = 10 * 60 * 1000;
/// What a newly started isolate reads of the change log.
pub const RECENT_WINDOW_MS: i64 = 120 * 1000;
/// Most change-log rows in one feed answer; the isolate asks again at once while there are more.
pub const FEED_PAGE: i64 = 2000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS keys (
  digest TEXT PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  name_lower TEXT NOT NULL,
  version INTEGER NOT NULL,
  record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS keys_by_name ON keys (name_lower, id);
-- The keys made by rolling another share its Limiter (record.limiter): found by this index when a
-- key is deleted, so that a Limiter still in use keeps its rows.
CREATE INDEX IF NOT EXISTS keys_by_limiter ON keys (json_extract(record, '$.limiter'))
  WHERE json_extract(record, '$.limiter') IS NOT NULL;
-- How many keys are listed, kept by triggers so that an unfiltered list never counts the table
-- (an upsert that updates fires no insert trigger, so the count stays exact).
CREATE TABLE IF NOT EXISTS key_count (
  one INTEGER PRIMARY KEY CHECK (one = 1),
  n INTEGER NOT NULL
);
INSERT OR IGNORE INTO key_count (one, n) VALUES (1, (SELECT COUNT(*) FROM keys));
CREATE TRIGGER IF NOT EXISTS keys_counted_in AFTER INSERT ON keys BEGIN UPDATE key_count SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS keys_counted_out AFTER DELETE ON keys BEGIN UPDATE key_count SET n = n - 1; END;
CREATE TABLE IF NOT EXISTS tombstones (
  digest TEXT PRIMARY KEY,
  id TEXT NOT NULL,
  version INTEGER NOT NULL,
  record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS policy (
  one INTEGER PRIMARY KEY CHECK (one = 1),
  doc TEXT NOT NULL,
  seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  at INTEGER NOT NULL,
  kind TEXT NOT NULL,
  digest TEXT NOT NULL,
  version INTEGER NOT NULL,
  present INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_by_time ON changes (at);
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  at INTEGER NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  key_id TEXT,
  changes TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_key ON audit (key_id, seq);
CREATE INDEX IF NOT EXISTS audit_by_action ON audit (action, seq);
CREATE TABLE IF NOT EXISTS outbox (
  target TEXT PRIMARY KEY,
  seq INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (
  name TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
-- Workspaces created through the API (docs/workspaces.md); a workspace named only by keys'
-- `workspace` exists implicitly, with the ceiling [\"*\"].
CREATE TABLE IF NOT EXISTS workspaces (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  ceiling TEXT NOT NULL,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
";

/// Columns added to `keys` and `audit` for workspaces and status lists, filled from the records
/// once (a deployment made before them), then kept by every write. Each list filter is answered
/// by one of the indexes below, never by reading records.
const WORKSPACE_COLUMNS: &str = "
ALTER TABLE keys ADD COLUMN workspace TEXT;
ALTER TABLE keys ADD COLUMN state INTEGER NOT NULL DEFAULT 0;
ALTER TABLE keys ADD COLUMN expires_ms INTEGER;
UPDATE keys SET workspace = json_extract(record, '$.workspace'),
  state = CASE WHEN json_extract(record, '$.revoked_at') IS NOT NULL THEN 2
               WHEN json_extract(record, '$.active') THEN 0 ELSE 1 END,
  expires_ms = CAST(ROUND((julianday(json_extract(record, '$.expires_at')) - 2440587.5) * 86400000.0) AS INTEGER);
";

const AUDIT_WORKSPACE_COLUMN: &str = "
ALTER TABLE audit ADD COLUMN workspace TEXT;
UPDATE audit SET workspace = (SELECT k.workspace FROM keys k WHERE k.id = audit.key_id) WHERE key_id IS NOT NULL;
";

const WORKSPACE_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS keys_by_workspace ON keys (workspace, id);
CREATE INDEX IF NOT EXISTS keys_by_state ON keys (state, id, expires_ms);
CREATE INDEX IF NOT EXISTS keys_by_workspace_state ON keys (workspace, state, id, expires_ms);
CREATE INDEX IF NOT EXISTS audit_by_workspace ON audit (workspace, seq);
";

/// `keys.state`: the stored lifecycle (expiry by time is read from `expires_ms` against now).
const STATE_ACTIVE: i64 = 0;
const STATE_INACTIVE: i64 = 1;
const STATE_REVOKED: i64 = 2;

fn state_of(record: &KeyRecord) -> i64 {
    if record.is_revoked() {
        STATE_REVOKED
    } else if record.active {
        STATE_ACTIVE
    } else {
        STATE_INACTIVE
    }
}

fn expires_ms_of(record: &KeyRecord) -> SqlStorageValue {
    record.expires_at.as_deref().and_then(crate::core::time::parse_rfc3339).map_or(SqlStorageValue::Null, int)
}

fn opt_text(value: Option<&str>) -> SqlStorageValue {
    value.map_or(SqlStorageValue::Null, text)
}

/// Who made a change, as the audit log names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Admin,
    Key(String),
    /// A customer's portal session (docs/portal.md): `portal:<user>`.
    Portal(String),
    /// The one-time import of a deployment whose records lived only in KV.
    Migration,
    /// A leak report, as `leak:<source>` (`leak:github` for GitHub's secret scanning).
    Leak(String),
}

impl Actor {
    pub fn name(&self) -> &str {
        match self {
            Actor::Admin => "admin",
            Actor::Key(id) | Actor::Portal(id) => id,
            Actor::Migration => "migration",
            Actor::Leak(name) => name,
        }
    }
}

/// The list filters of `GET /api_keys`, names already lower-cased.
#[derive(Debug, Default)]
pub struct ListFilter {
    pub name: Option<String>,
    pub name_contains: Option<String>,
    pub workspace: Option<String>,
    pub status: Option<KeyStatus>,
    /// The time `status` is judged at (a key past its `expires_at` is expired).
    pub now: i64,
}

impl ListFilter {
    /// Whether only the name search is asked for (answered from memory alone).
    fn names_only(&self) -> bool {
        self.workspace.is_none() && self.status.is_none()
    }
}

/// One answer of the change feed an isolate follows.
#[derive(Debug, serde::Serialize)]
pub struct Feed {
    /// The last change-log position included; the isolate asks from here next time.
    pub head: i64,
    /// The change-log position of the stored policy (0: none stored, the default applies).
    pub policy_seq: i64,
    /// The policy document, when it changed after the position the isolate knows.
    pub policy: Option<Value>,
    pub changes: Vec<FeedChange>,
    pub more: bool,
    /// The isolate's position was pruned from the log: it must drop what it holds and start over.
    pub reset: bool,
    /// The oldest change whose KV write is still owed (0: KV holds every change). Until KV holds a
    /// change, an isolate must not trust KV for that key.
    pub kv_pending_from: i64,
}

/// A key changed: its newest version, and whether a record (or tombstone) still exists.
#[derive(Debug, serde::Serialize, Deserialize)]
pub struct FeedChange {
    pub seq: i64,
    pub digest: String,
    pub version: i64,
    pub present: i64,
}

#[derive(Deserialize)]
struct RecordRow {
    record: String,
}

#[derive(Deserialize)]
struct CountRow {
    n: i64,
}

#[derive(Deserialize)]
struct PolicyRow {
    doc: String,
    seq: i64,
}

#[derive(Deserialize)]
struct AuditRow {
    seq: i64,
    at: i64,
    actor: String,
    action: String,
    key_id: Option<String>,
    changes: String,
    workspace: Option<String>,
}

#[derive(Deserialize)]
pub struct OutboxRow {
    pub target: String,
    pub seq: i64,
    pub attempts: i64,
}

#[derive(Deserialize)]
struct ValueRow {
    value: String,
}

pub struct Ledger {
    sql: SqlStorage,
    /// The name search, built on the first `name_contains` list and kept up to date from the
    /// change log (core::name_index).
    names: RefCell<Option<NameIndex>>,
}

/// Rows of the name search packed into one string (see core::name_index::unpack), with the
/// chunk's last position.
#[derive(Deserialize, Default)]
struct PackedRow {
    j: Option<String>,
    #[serde(default)]
    last_id: Option<String>,
    #[serde(default)]
    last_seq: Option<i64>,
    c: i64,
}

/// Packs a key's digest, id and lower-cased name (names hold no control characters) in id order.
const PACK: &str = "group_concat(digest || char(31) || id || char(31) || name_lower, char(30) ORDER BY id)";
/// Rows in one packed chunk: well under SQLite's string limit.
const NAME_CHUNK: i64 = 5000;

fn text(s: &str) -> SqlStorageValue {
    SqlStorageValue::String(s.to_string())
}

fn int(n: i64) -> SqlStorageValue {
    SqlStorageValue::Integer(n)
}

/// Above every change-log sequence number, and still exact as a JavaScript number
/// (`Number.MAX_SAFE_INTEGER`): a bound sent to SQLite crosses to JS, where `i64::MAX` is out of
/// the safe-integer range (wrangler logged "Converting 9223372036854775807 to JsValue").
const SEQ_ABOVE_ALL: i64 = 9_007_199_254_740_991;

fn version_of(record: &KeyRecord) -> i64 {
    i64::try_from(record.version).unwrap_or(i64::MAX)
}

impl Ledger {
    pub fn open(sql: SqlStorage) -> Result<Ledger, StoreError> {
        sql.exec(SCHEMA, None)?;
        // A probe that fails (the column is missing) writes nothing; the columns are then added.
        if sql.exec("SELECT workspace, state, expires_ms FROM keys LIMIT 0", None).is_err() {
            sql.exec(WORKSPACE_COLUMNS, None)?;
        }
        if sql.exec("SELECT workspace FROM audit LIMIT 0", None).is_err() {
            sql.exec(AUDIT_WORKSPACE_COLUMN, None)?;
        }
        sql.exec(WORKSPACE_INDEXES, None)?;
        Ok(Ledger { sql, names: RefCell::new(None) })
    }

    /// The object's SQLite storage, for the tables kept beside the ledger's (usage).
    pub fn sql(&self) -> &SqlStorage {
        &self.sql
    }

    fn rows<T: serde::de::DeserializeOwned>(&self, query: &str, bindings: Vec<SqlStorageValue>) -> Result<Vec<T>, StoreError> {
        Ok(self.sql.exec(query, bindings)?.to_array::<T>()?)
    }

    /// The one number a query answers as `n` (0 when it answers no row).
    fn number(&self, query: &str, bindings: Vec<SqlStorageValue>) -> Result<i64, StoreError> {
        Ok(self.rows::<CountRow>(query, bindings)?.into_iter().next().map_or(0, |r| r.n))
    }

    fn run(&self, query: &str, bindings: Vec<SqlStorageValue>) -> Result<(), StoreError> {
        self.sql.exec(query, bindings)?;
        Ok(())
    }

    fn parse(rows: Vec<RecordRow>) -> Result<Option<KeyRecord>, StoreError> {
        match rows.into_iter().next() {
            None => Ok(None),
            Some(row) => Ok(Some(serde_json::from_str(&row.record)?)),
        }
    }

    /// The record or tombstone stored for a digest.
    pub fn record(&self, digest: &str) -> Result<Option<KeyRecord>, StoreError> {
        let listed = Self::parse(self.rows("SELECT record FROM keys WHERE digest = ?", vec![text(digest)])?)?;
        if listed.is_some() {
            return Ok(listed);
        }
        Self::parse(self.rows("SELECT record FROM tombstones WHERE digest = ?", vec![text(digest)])?)
    }

    /// A listed key by id (tombstones are not listed and have no management view).
    pub fn record_by_id(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        Self::parse(self.rows("SELECT record FROM keys WHERE id = ?", vec![text(id)])?)
    }

    /// Writes a record (new or changed), with its change-log, audit and outbox rows.
    pub fn put(&self, record: &KeyRecord, old: Option<&KeyRecord>, actor: &Actor, action: &str, now: i64) -> Result<(), StoreError> {
        let json = serde_json::to_string(record)?;
        self.run("DELETE FROM tombstones WHERE digest = ?", vec![text(&record.digest)])?;
        self.run(
            "INSERT INTO keys (digest, id, name_lower, version, record, workspace, state, expires_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (digest) DO UPDATE SET id = excluded.id, name_lower = excluded.name_lower,
               version = excluded.version, record = excluded.record, workspace = excluded.workspace,
               state = excluded.state, expires_ms = excluded.expires_ms",
            Self::key_row(record, &json),
        )?;
        self.changed(&record.digest, version_of(record), true, now)?;
        let (before, after) = (old.map(|o| o.view(now)), record.view(now));
        // The webhook events of this change, in the same transaction (edge::webhooks).
        super::webhooks::enqueue(&self.sql, &record.id, before.as_ref(), Some(&after), now)?;
        let changes = diff(before, Some(after));
        self.audit_in(actor, action, Some(&record.id), record.workspace.as_deref(), &changes, now)
    }

    fn key_row(record: &KeyRecord, json: &str) -> Vec<SqlStorageValue> {
        vec![
            text(&record.digest),
            text(&record.id),
            text(&record.name.to_lowercase()),
            int(version_of(record)),
            text(json),
            opt_text(record.workspace.as_deref()),
            int(state_of(record)),
            expires_ms_of(record),
        ]
    }

    /// Whether a key other than the one at `digest` uses the Limiter named `limiter` (its own id,
    /// or the `limiter` of a key rolled from it).
    pub fn limiter_in_use(&self, limiter: &str, digest: &str) -> Result<bool, StoreError> {
        let query = "SELECT COUNT(*) AS n FROM keys WHERE (id = ?1 OR json_extract(record, '$.limiter') = ?1) AND digest != ?2";
        Ok(self.number(query, vec![text(limiter), text(digest)])? > 0)
    }

    /// Removes a key from lists; with a tombstone its digest keeps answering KEY_REVOKED.
    pub fn delete(&self, record: &KeyRecord, tombstone: Option<&KeyRecord>, actor: &Actor, now: i64) -> Result<(), StoreError> {
        self.run("DELETE FROM keys WHERE digest = ?", vec![text(&record.digest)])?;
        let version = version_of(record).saturating_add(1);
        if let Some(t) = tombstone {
            self.run(
                "INSERT OR REPLACE INTO tombstones (digest, id, version, record) VALUES (?, ?, ?, ?)",
                vec![text(&t.digest), text(&t.id), int(version_of(t)), text(&serde_json::to_string(t)?)],
            )?;
        }
        self.changed(&record.digest, version, tombstone.is_some(), now)?;
        super::webhooks::enqueue(&self.sql, &record.id, Some(&record.view(now)), None, now)?;
        self.audit_in(actor, "delete", Some(&record.id), record.workspace.as_deref(), &diff(Some(record.view(now)), None), now)
    }

    fn changed(&self, digest: &str, version: i64, present: bool, now: i64) -> Result<(), StoreError> {
        self.run(
            "INSERT INTO changes (at, kind, digest, version, present) VALUES (?, 'key', ?, ?, ?)",
            vec![int(now), text(digest), int(version), int(i64::from(present))],
        )?;
        let seq = self.last_seq()?;
        self.run(
            "INSERT INTO outbox (target, seq, attempts) VALUES (?, ?, 0)
             ON CONFLICT (target) DO UPDATE SET seq = excluded.seq",
            vec![text(&format!("key:{digest}")), int(seq)],
        )
    }

    fn last_seq(&self) -> Result<i64, StoreError> {
        self.number("SELECT COALESCE(MAX(seq), 0) AS n FROM changes", vec![])
    }

    /// The oldest change the log still holds (0: none).
    fn oldest_seq(&self) -> Result<i64, StoreError> {
        self.number("SELECT COALESCE(MIN(seq), 0) AS n FROM changes", vec![])
    }

    pub fn audit_entry(&self, actor: &Actor, action: &str, key_id: Option<&str>, changes: &Value, now: i64) -> Result<(), StoreError> {
        self.audit_in(actor, action, key_id, None, changes, now)
    }

    /// An audit entry belonging to a workspace (the key's, or the workspace changed).
    pub fn audit_in(&self, actor: &Actor, action: &str, key_id: Option<&str>, workspace: Option<&str>, changes: &Value, now: i64) -> Result<(), StoreError> {
        self.run(
            "INSERT INTO audit (at, actor, action, key_id, changes, workspace) VALUES (?, ?, ?, ?, ?, ?)",
            vec![int(now), text(actor.name()), text(action), opt_text(key_id), text(&changes.to_string()), opt_text(workspace)],
        )
    }

    /// One page of listed keys by id, and how many match in all. `name_contains` is answered from
    /// the in-memory name search; otherwise the matching ids come from an index alone and only the
    /// page's records are read, by id. (Joining the page to `keys` instead made SQLite scan the
    /// whole table: 60 ms at 100 000 keys.)
    pub fn list(&self, filter: &ListFilter, after: Option<&str>, offset: usize, limit: usize) -> Result<(Vec<KeyRecord>, usize), StoreError> {
        if let Some(part) = filter.name_contains.as_ref().filter(|_| filter.names_only()) {
            let matches = self.search_names(part, filter.name.as_deref(), after, offset, limit)?;
            return Ok((self.records_by_id(&matches.page)?, matches.total));
        }
        let (clause, mut bindings) = self.clause(filter)?;
        let total = if clause == "1 = 1" {
            self.listed_count()?
        } else {
            self.count(&clause, bindings.clone())?
        };
        let mut query = format!("SELECT id FROM keys WHERE {clause}");
        if let Some(after) = after {
            query.push_str(" AND id > ?");
            bindings.push(text(after));
        }
        query.push_str(" ORDER BY id LIMIT ? OFFSET ?");
        bindings.push(int(i64::try_from(limit).unwrap_or(i64::MAX)));
        bindings.push(int(i64::try_from(offset).unwrap_or(i64::MAX)));
        let rows: Vec<RecordRow> = self.rows(&format!("SELECT record FROM keys WHERE id IN ({query}) ORDER BY id"), bindings)?;
        let records = rows
            .into_iter()
            .map(|r| serde_json::from_str::<KeyRecord>(&r.record))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((records, total))
    }

    /// The name search (one compiled copy of [`Self::with_names`] for every caller).
    fn search_names(&self, part: &str, name: Option<&str>, after: Option<&str>, offset: usize, limit: usize) -> Result<name_index::Matches, StoreError> {
        self.with_names(|names| names.search(part, name, after, offset, limit))
    }

    /// How many keys are listed, from the trigger-kept counter.
    fn listed_count(&self) -> Result<usize, StoreError> {
        let n = self.number("SELECT n FROM key_count WHERE one = 1", vec![])?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Records by id, in id order.
    fn records_by_id(&self, ids: &[String]) -> Result<Vec<KeyRecord>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<RecordRow> = self.rows(
            "SELECT record FROM keys WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
            vec![text(&serde_json::to_string(ids)?)],
        )?;
        rows.into_iter()
            .map(|r| Ok(serde_json::from_str::<KeyRecord>(&r.record)?))
            .collect()
    }

    /// Runs `f` on the name search, first bringing it up to the change log's head: each key
    /// changed since the position it reflects is read again (a digest no longer listed is
    /// dropped); built from the whole table when it does not exist yet or the log no longer
    /// holds its position. Rows come packed in one string per chunk (core::name_index::unpack):
    /// one string crosses into wasm instead of thousands of row objects.
    fn with_names<T>(&self, f: impl FnOnce(&NameIndex) -> T) -> Result<T, StoreError> {
        let head = self.last_seq()?;
        let oldest = self.oldest_seq()?;
        let mut slot = self.names.borrow_mut();
        let usable = slot.take().filter(|names| names.seq().saturating_add(1) >= oldest);
        let names = match usable {
            Some(mut names) => {
                let mut from = names.seq();
                while from < head {
                    let changed = self.packed(
                        "SELECT group_concat(digest, ',') AS j, MAX(seq) AS last_seq, COUNT(*) AS c FROM
                           (SELECT seq, digest FROM changes WHERE kind = 'key' AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?)",
                        vec![int(from), int(head), int(NAME_CHUNK)],
                    )?;
                    let Some(last) = changed.last_seq.filter(|_| changed.c > 0) else { break };
                    let digests: Vec<String> = changed.j.unwrap_or_default().split(',').map(str::to_string).collect();
                    let listed = self.packed(
                        &format!("SELECT {PACK} AS j, COUNT(*) AS c FROM keys WHERE digest IN (SELECT value FROM json_each(?))"),
                        vec![text(&serde_json::to_string(&digests)?)],
                    )?;
                    names.apply(&digests, &name_index::unpack(listed.j.as_deref().unwrap_or_default()));
                    from = last;
                }
                names.advance(head);
                names
            }
            None => {
                let mut names = NameIndex::build(head, Vec::new());
                let mut after = String::new();
                loop {
                    let chunk = self.packed(
                        &format!("SELECT {PACK} AS j, MAX(id) AS last_id, COUNT(*) AS c FROM
                           (SELECT digest, id, name_lower FROM keys WHERE id > ? ORDER BY id LIMIT ?)"),
                        vec![text(&after), int(NAME_CHUNK)],
                    )?;
                    let Some(last) = chunk.last_id.filter(|_| chunk.c > 0) else { break };
                    names.extend(name_index::unpack(chunk.j.as_deref().unwrap_or_default()));
                    after = last;
                }
                names
            }
        };
        let answer = f(&names);
        *slot = Some(names);
        Ok(answer)
    }

    fn packed(&self, query: &str, bindings: Vec<SqlStorageValue>) -> Result<PackedRow, StoreError> {
        Ok(self.rows::<PackedRow>(query, bindings)?.into_iter().next().unwrap_or_default())
    }

    /// How many listed keys matching the filter sort at or before `id`.
    pub fn position(&self, filter: &ListFilter, id: &str) -> Result<usize, StoreError> {
        if let Some(part) = filter.name_contains.as_ref().filter(|_| filter.names_only()) {
            return self.with_names(|names| names.position(part, filter.name.as_deref(), id));
        }
        let (clause, mut bindings) = self.clause(filter)?;
        bindings.push(text(id));
        self.count(&format!("{clause} AND id <= ?"), bindings)
    }

    fn count(&self, clause: &str, bindings: Vec<SqlStorageValue>) -> Result<usize, StoreError> {
        let n = self.number(&format!("SELECT COUNT(*) AS n FROM keys WHERE {clause}"), bindings)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// The WHERE clause of a list, each filter on an indexed column: the exact name through
    /// `(name_lower, id)`, the workspace through `(workspace, id)`, the status through
    /// `(workspace, state, id, expires_ms)` or `(state, id, expires_ms)` (expiry by time is read
    /// from the index against now). `name_contains` with other filters: the name search's ids.
    fn clause(&self, filter: &ListFilter) -> Result<(String, Vec<SqlStorageValue>), StoreError> {
        let mut clause = String::from("1 = 1");
        let mut bindings = Vec::new();
        let mut add = |part: &str, value: Option<SqlStorageValue>| {
            clause.push_str(" AND ");
            clause.push_str(part);
            bindings.extend(value);
        };
        if let Some(name) = &filter.name {
            add("name_lower = ?", Some(text(name)));
        }
        if let Some(workspace) = &filter.workspace {
            add("workspace = ?", Some(text(workspace)));
        }
        match filter.status {
            None => {}
            Some(KeyStatus::Active) => add("state = 0 AND (expires_ms IS NULL OR expires_ms > ?)", Some(int(filter.now))),
            Some(KeyStatus::Expired) => add("state IN (0, 1) AND (state = 1 OR expires_ms <= ?)", Some(int(filter.now))),
            Some(KeyStatus::Revoked) => add("state = 2", None),
        }
        if let Some(part) = &filter.name_contains {
            let all = self.search_names(part, filter.name.as_deref(), None, 0, usize::MAX)?;
            add("id IN (SELECT value FROM json_each(?))", Some(text(&serde_json::to_string(&all.page)?)));
        }
        Ok((clause, bindings))
    }

    /// Workspaces as the API shows them, by id: those created (explicit) and those only keys
    /// name, with their key counts (one pass over the `(workspace, state, id, expires_ms)`
    /// index); `only`: that one (none when it exists in neither way). Built by SQLite as JSON.
    pub fn workspace_views(&self, only: Option<&str>, now: i64) -> Result<Vec<Value>, StoreError> {
        let (created, named) = if only.is_some() { ("id = ?2", "workspace = ?2") } else { ("?2 IS NULL", "workspace IS NOT NULL") };
        let query = format!(
            "WITH ids AS (SELECT id FROM workspaces WHERE {created} UNION SELECT workspace FROM keys WHERE {named}),
             counts AS (SELECT workspace, COUNT(*) AS n, SUM(state = 0 AND (expires_ms IS NULL OR expires_ms > ?1)) AS active
               FROM keys WHERE {named} GROUP BY workspace)
             SELECT COALESCE(json_group_array(json(v)), '[]') AS value FROM (
               SELECT json_object('id', i.id, 'name', COALESCE(w.name, i.id), 'permission_ceiling', json(COALESCE(w.ceiling, '[\"*\"]')),
                 'explicit', json(CASE WHEN w.id IS NULL THEN 'false' ELSE 'true' END),
                 'key_count', COALESCE(c.n, 0), 'active_key_count', COALESCE(c.active, 0),
                 'created_at', w.created_at, 'updated_at', w.updated_at) AS v
               FROM ids i LEFT JOIN workspaces w ON w.id = i.id LEFT JOIN counts c ON c.workspace = i.id ORDER BY i.id)"
        );
        let text = self.rows::<ValueRow>(&query, vec![int(now), opt_text(only)])?.into_iter().next().map(|r| r.value).unwrap_or_default();
        Ok(serde_json::from_str(&text)?)
    }

    /// A created workspace's ceiling, as stored (a JSON array); none for an implicit one.
    pub fn workspace_ceiling(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self.rows::<ValueRow>("SELECT ceiling AS value FROM workspaces WHERE id = ?", vec![text(id)])?.into_iter().next().map(|r| r.value))
    }

    /// Creates (`old` none) or changes a workspace (`created_at` is kept), with its audit entry.
    pub fn put_workspace(&self, id: &str, name: &str, ceiling: &str, old: Option<Value>, actor: &Actor, now: i64) -> Result<Value, StoreError> {
        let action = if old.is_none() { "workspace_create" } else { "workspace_update" };
        let at = crate::core::time::format_rfc3339(now);
        self.run(
            "INSERT INTO workspaces (id, name, ceiling, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, ceiling = excluded.ceiling, updated_at = excluded.updated_at",
            vec![text(id), text(name), text(ceiling), text(&at)],
        )?;
        let new = self.workspace_views(Some(id), now)?.into_iter().next().unwrap_or(Value::Null);
        self.audit_in(actor, action, None, Some(id), &diff(old, Some(new.clone())), now)?;
        Ok(new)
    }

    pub fn delete_workspace(&self, id: &str, old: Value, actor: &Actor, now: i64) -> Result<(), StoreError> {
        self.run("DELETE FROM workspaces WHERE id = ?", vec![text(id)])?;
        self.audit_in(actor, "workspace_delete", None, Some(id), &diff(Some(old), None), now)
    }

    /// The stored policy document and its change-log position, if one was ever stored.
    pub fn policy(&self) -> Result<Option<(String, i64)>, StoreError> {
        Ok(self
            .rows::<PolicyRow>("SELECT doc, seq FROM policy WHERE one = 1", vec![])?
            .into_iter()
            .next()
            .map(|r| (r.doc, r.seq)))
    }

    pub fn put_policy(&self, doc: &str, actor: &Actor, now: i64) -> Result<(), StoreError> {
        let old = self.policy()?.and_then(|(d, _)| serde_json::from_str::<Value>(&d).ok());
        self.run("INSERT INTO changes (at, kind, digest, version, present) VALUES (?, 'policy', '', 0, 1)", vec![int(now)])?;
        let seq = self.last_seq()?;
        self.run("INSERT OR REPLACE INTO policy (one, doc, seq) VALUES (1, ?, ?)", vec![text(doc), int(seq)])?;
        self.run(
            "INSERT INTO outbox (target, seq, attempts) VALUES ('policy', ?, 0)
             ON CONFLICT (target) DO UPDATE SET seq = excluded.seq",
            vec![int(seq)],
        )?;
        let new: Value = serde_json::from_str(doc)?;
        let changes = json!({"policy": {"old": old, "new": new}});
        self.audit_entry(actor, "policy_update", None, &changes, now)
    }

    /// The changes after `after` (or, for a new isolate, `after < 0`, those of the last
    /// [`RECENT_WINDOW_MS`]), newest version per key, with the policy if it moved past `policy_seq`.
    pub fn feed(&self, after: i64, policy_seq: i64, now: i64) -> Result<Feed, StoreError> {
        // The log's bounds, the oldest KV write owed and the policy's version in one query (every
        // isolate asks each second; the SQL is synchronous, so the queries here see one state).
        let FeedState { kv_pending_from, oldest, last, stored_seq } = self
            .rows::<FeedState>(
                "SELECT COALESCE((SELECT MIN(seq) FROM outbox), 0) AS kv_pending_from,
                        COALESCE((SELECT MIN(seq) FROM changes), 0) AS oldest,
                        COALESCE((SELECT MAX(seq) FROM changes), 0) AS last,
                        COALESCE((SELECT seq FROM policy WHERE one = 1), 0) AS stored_seq",
                vec![],
            )?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError("the change log's state could not be read".into()))?;
        let rows: Vec<FeedRow> = if after < 0 {
            // What KV may not show yet: the recent changes, and any whose KV write is still owed.
            let pending = if kv_pending_from > 0 { kv_pending_from } else { SEQ_ABOVE_ALL };
            self.rows(
                "SELECT seq, digest, version, present FROM changes WHERE kind = 'key' AND (at >= ? OR seq >= ?) ORDER BY seq LIMIT ?",
                vec![int(now.saturating_sub(RECENT_WINDOW_MS)), int(pending), int(FEED_PAGE + 1)],
            )?
        } else {
            self.rows(
                "SELECT seq, digest, version, present FROM changes WHERE kind = 'key' AND seq > ? ORDER BY seq LIMIT ?",
                vec![int(after), int(FEED_PAGE + 1)],
            )?
        };
        let reset = after >= 0 && oldest > after.saturating_add(1);
        let more = rows.len() > usize::try_from(FEED_PAGE).unwrap_or(usize::MAX);
        let page: Vec<FeedRow> = rows.into_iter().take(usize::try_from(FEED_PAGE).unwrap_or(usize::MAX)).collect();
        let head = if more { page.last().map_or(last, |r| r.seq) } else { last };
        // The document only when the isolate's is older.
        let policy = if stored_seq > policy_seq {
            self.policy()?.map(|(doc, _)| serde_json::from_str(&doc)).transpose()?
        } else {
            None
        };
        Ok(Feed {
            head,
            policy_seq: stored_seq,
            policy,
            changes: page.into_iter().map(|r| FeedChange { seq: r.seq, digest: r.digest, version: r.version, present: r.present }).collect(),
            more,
            reset,
            kv_pending_from,
        })
    }

    /// Drops change-log rows no isolate needs any more.
    pub fn prune_changes(&self, now: i64) -> Result<(), StoreError> {
        // Never a change whose KV write is still owed: a new isolate must learn of it.
        self.run(
            "DELETE FROM changes WHERE at < ? AND seq < (SELECT MAX(seq) FROM changes)
               AND seq < COALESCE((SELECT MIN(seq) FROM outbox), ?)",
            vec![int(now.saturating_sub(CHANGE_RETENTION_MS)), int(SEQ_ABOVE_ALL)],
        )
    }

    /// Audit entries newest first, before position `before` (exclusive) when given.
    pub fn audit(&self, key_id: Option<&str>, action: Option<&str>, workspace: Option<&str>, before: Option<i64>, limit: usize) -> Result<Vec<Value>, StoreError> {
        let mut query = String::from("SELECT seq, at, actor, action, key_id, changes, workspace FROM audit WHERE 1 = 1");
        let mut bindings = Vec::new();
        if let Some(w) = workspace {
            query.push_str(" AND workspace = ?");
            bindings.push(text(w));
        }
        if let Some(k) = key_id {
            query.push_str(" AND key_id = ?");
            bindings.push(text(k));
        }
        if let Some(a) = action {
            query.push_str(" AND action = ?");
            bindings.push(text(a));
        }
        if let Some(b) = before {
            query.push_str(" AND seq < ?");
            bindings.push(int(b));
        }
        query.push_str(" ORDER BY seq DESC LIMIT ?");
        bindings.push(int(i64::try_from(limit).unwrap_or(i64::MAX)));
        let rows: Vec<AuditRow> = self.rows(&query, bindings)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                json!({
                    "id": audit_id(r.seq),
                    "at": crate::core::time::format_rfc3339(r.at),
                    "actor": r.actor,
                    "action": r.action,
                    "key_id": r.key_id,
                    "workspace": r.workspace,
                    "changes": serde_json::from_str::<Value>(&r.changes).unwrap_or(Value::Null),
                })
            })
            .collect())
    }

    /// KV writes still owed, oldest first.
    pub fn outbox(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        self.rows("SELECT target, seq, attempts FROM outbox ORDER BY seq LIMIT ?", vec![int(i64::try_from(limit).unwrap_or(i64::MAX))])
    }

    pub fn outbox_len(&self) -> Result<usize, StoreError> {
        let n = self.number("SELECT COUNT(*) AS n FROM outbox", vec![])?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// The value KV should hold for an outbox target now (`None`: delete it).
    pub fn kv_value(&self, target: &str) -> Result<Option<String>, StoreError> {
        if target == "policy" {
            return Ok(self.policy()?.map(|(doc, _)| doc));
        }
        let digest = target.strip_prefix("key:").unwrap_or(target);
        Ok(self.record(digest)?.map(|r| serde_json::to_string(&r)).transpose()?)
    }

    /// The target was written as of `seq`: done, unless a newer change arrived meanwhile.
    pub fn outbox_done(&self, target: &str, seq: i64) -> Result<(), StoreError> {
        self.run("DELETE FROM outbox WHERE target = ? AND seq <= ?", vec![text(target), int(seq)])
    }

    pub fn outbox_failed(&self, target: &str) -> Result<(), StoreError> {
        self.run("UPDATE outbox SET attempts = attempts + 1 WHERE target = ?", vec![text(target)])
    }

    pub fn meta(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self.rows::<ValueRow>("SELECT value FROM meta WHERE name = ?", vec![text(name)])?.into_iter().next().map(|r| r.value))
    }

    pub fn set_meta(&self, name: &str, value: &str) -> Result<(), StoreError> {
        self.run("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", vec![text(name), text(value)])
    }

    /// A record imported from KV as it is (migration): no version bump, no KV write owed.
    pub fn import(&self, record: &KeyRecord, listed: bool, now: i64) -> Result<(), StoreError> {
        let json = serde_json::to_string(record)?;
        if listed {
            self.run(
                "INSERT OR IGNORE INTO keys (digest, id, name_lower, version, record, workspace, state, expires_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                Self::key_row(record, &json),
            )?;
        } else {
            self.run(
                "INSERT OR IGNORE INTO tombstones (digest, id, version, record) VALUES (?, ?, ?, ?)",
                vec![text(&record.digest), text(&record.id), int(version_of(record)), text(&json)],
            )?;
        }
        self.audit_entry(&Actor::Migration, "import", Some(&record.id), &json!({}), now)
    }

    pub fn import_policy(&self, doc: &str) -> Result<(), StoreError> {
        self.run("INSERT OR IGNORE INTO policy (one, doc, seq) VALUES (1, ?, 0)", vec![text(doc)])
    }
}

#[derive(Deserialize)]
struct FeedState {
    kv_pending_from: i64,
    oldest: i64,
    last: i64,
    stored_seq: i64,
}

#[derive(Deserialize)]
struct FeedRow {
    seq: i64,
    digest: String,
    version: i64,
    present: i64,
}

pub fn audit_id(seq: i64) -> String {
    format!("evt_{seq:012}")
}

pub fn parse_audit_id(id: &str) -> Option<i64> {
    let digits = id.strip_prefix("evt_")?;
    if digits.len() != 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Each attribute that differs between two views, as `{attribute: {"old", "new"}}`.
/// `updated_at` moves on every write and says nothing, so it is left out.
pub fn diff(old: Option<Value>, new: Option<Value>) -> Value {
    let empty = Map::new();
    let old_map = old.as_ref().and_then(Value::as_object).unwrap_or(&empty);
    let new_map = new.as_ref().and_then(Value::as_object).unwrap_or(&empty);
    let mut out = Map::new();
    let mut names: Vec<&String> = old_map.keys().chain(new_map.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        if name == "updated_at" {
            continue;
        }
        let before = old_map.get(name).cloned().unwrap_or(Value::Null);
        let after = new_map.get(name).cloned().unwrap_or(Value::Null);
        if before != after {
            out.insert(name.clone(), json!({"old": before, "new": after}));
        }
    }
    Value::Object(out)
}
