//! The key list's name search (`GET /api_keys?name_contains=`): every listed key's id and
//! lower-cased name, sorted by id, held in the control plane's memory so that a substring search
//! reads no table. A substring cannot use a B-tree index, and scanning one twice (the count, then
//! the page) cost 40-70 ms at 100 000 keys; here it is one pass over short strings.
//!
//! The index follows the change log: it knows the log position it reflects, and the ledger hands
//! it each changed key's current row (or its absence) to catch up. Pure: no I/O, no clock.

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    id: String,
    name: String,
    digest: String,
}

/// Listed keys by id with their names, and which id each digest has.
#[derive(Debug, Clone, Default)]
pub struct NameIndex {
    /// The change-log position this index reflects.
    seq: i64,
    /// Sorted by id, ids unique.
    entries: Vec<Entry>,
    id_of: HashMap<String, String>,
}

/// One listed key as the ledger reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub digest: String,
    pub id: String,
    pub name_lower: String,
}

/// A page of matching ids and how many match in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matches {
    pub total: usize,
    pub page: Vec<String>,
}

impl NameIndex {
    /// The index of every listed key, as of change-log position `seq`, from rows in id order
    /// (the ledger's query sorts them; an out-of-order or repeated id is dropped, never searched
    /// wrongly).
    pub fn build(seq: i64, rows: Vec<Row>) -> NameIndex {
        let mut index = NameIndex { seq, entries: Vec::with_capacity(rows.len()), id_of: HashMap::with_capacity(rows.len()) };
        for row in rows {
            if index.entries.last().is_some_and(|last| last.id >= row.id) {
                continue;
            }
            index.id_of.insert(row.digest.clone(), row.id.clone());
            index.entries.push(Entry { id: row.id, name: row.name_lower, digest: row.digest });
        }
        index
    }

    pub fn seq(&self) -> i64 {
        self.seq
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A key changed: `row` is what is listed for `digest` now (None: nothing is).
    pub fn apply(&mut self, digest: &str, row: Option<&Row>) {
        if let Some(old) = self.id_of.remove(digest) {
            self.remove_id(&old);
        }
        if let Some(row) = row {
            // An id belongs to one digest; a stale entry for it under another digest goes.
            if let Some(stale) = self.remove_id(&row.id) {
                self.id_of.remove(&stale.digest);
            }
            let at = self.entries.partition_point(|e| e.id < row.id);
            self.entries.insert(at, Entry { id: row.id.clone(), name: row.name_lower.clone(), digest: digest.to_string() });
            self.id_of.insert(digest.to_string(), row.id.clone());
        }
    }

    /// The index now reflects the change log up to `seq`.
    pub fn advance(&mut self, seq: i64) {
        self.seq = self.seq.max(seq);
    }

    fn remove_id(&mut self, id: &str) -> Option<Entry> {
        let at = self.entries.binary_search_by(|e| e.id.as_str().cmp(id)).ok()?;
        Some(self.entries.remove(at))
    }

    fn matching<'a>(&'a self, contains: &'a str, name: Option<&'a str>) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries
            .iter()
            .filter(move |e| e.name.contains(contains) && name.is_none_or(|n| e.name == n))
    }

    /// Keys whose name contains `contains` (and equals `name`, when given), by id: how many in
    /// all, and the page of ids after `after` (exclusive), skipping `offset`, at most `limit`.
    pub fn search(&self, contains: &str, name: Option<&str>, after: Option<&str>, offset: usize, limit: usize) -> Matches {
        let mut total = 0;
        let mut skipped = 0;
        let mut page = Vec::new();
        for entry in self.matching(contains, name) {
            total += 1;
            if after.is_some_and(|a| entry.id.as_str() <= a) {
                continue;
            }
            if skipped < offset {
                skipped += 1;
            } else if page.len() < limit {
                page.push(entry.id.clone());
            }
        }
        Matches { total, page }
    }

    /// How many matching keys sort at or before `id`.
    pub fn position(&self, contains: &str, name: Option<&str>, id: &str) -> usize {
        self.matching(contains, name).take_while(|e| e.id.as_str() <= id).count()
    }
}

#[cfg(test)]
#[expect(clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn row(digest: &str, id: &str, name: &str) -> Row {
        Row { digest: digest.into(), id: id.into(), name_lower: name.into() }
    }

    #[test]
    fn search_counts_every_match_and_pages_by_id() {
        let index = NameIndex::build(
            7,
            vec![row("d1", "k1", "needle a"), row("d2", "k2", "hay"), row("d3", "k3", "needle c"), row("d4", "k4", "needle d")],
        );
        assert_eq!(index.seq(), 7);
        let all = index.search("needle", None, None, 0, 10);
        assert_eq!(all, Matches { total: 3, page: vec!["k1".into(), "k3".into(), "k4".into()] });
        assert_eq!(index.search("needle", None, None, 1, 1), Matches { total: 3, page: vec!["k3".into()] });
        assert_eq!(index.search("needle", None, Some("k1"), 0, 1), Matches { total: 3, page: vec!["k3".into()] });
        assert_eq!(index.search("needle", Some("needle d"), None, 0, 10), Matches { total: 1, page: vec!["k4".into()] });
        assert_eq!(index.search("", None, None, 0, 10).total, 4);
        assert_eq!(index.position("needle", None, "k3"), 2);
        assert_eq!(index.position("needle", None, "k0"), 0);
    }

    #[test]
    fn rows_out_of_id_order_are_dropped_not_misfiled() {
        let index = NameIndex::build(1, vec![row("d2", "k2", "b"), row("d1", "k1", "a"), row("d3", "k2", "c"), row("d4", "k4", "d")]);
        assert_eq!(index.search("", None, None, 0, 10).page, vec!["k2".to_string(), "k4".to_string()]);
    }

    #[test]
    fn a_change_replaces_or_removes_the_digests_entry() {
        let mut index = NameIndex::build(1, vec![row("d1", "k1", "alpha"), row("d2", "k2", "beta")]);
        index.apply("d1", Some(&row("d1", "k1", "gamma")));
        assert_eq!(index.search("alpha", None, None, 0, 10).total, 0);
        assert_eq!(index.search("gamma", None, None, 0, 10).page, vec!["k1".to_string()]);
        index.apply("d2", None);
        assert_eq!(index.len(), 1);
        index.apply("d9", None);
        assert_eq!(index.len(), 1);
        index.advance(5);
        index.advance(3);
        assert_eq!(index.seq(), 5);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Set(u8, u8, u8),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..12, 0u8..12, 0u8..4).prop_map(|(d, i, n)| Op::Set(d, i, n)),
            (0u8..12).prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// After any sequence of changes, the index answers as a plain scan of a model table
        /// (digest → id and name, ids unique as the keys table has them) does.
        #[test]
        fn agrees_with_a_scan_of_the_table(ops in prop::collection::vec(op(), 0..60), offset in 0usize..5, limit in 0usize..6) {
            let names = ["needle one", "hay", "needle two", "other"];
            let mut table: BTreeMap<String, (String, String)> = BTreeMap::new();
            let mut index = NameIndex::build(0, vec![]);
            for op in ops {
                match op {
                    Op::Set(d, i, n) => {
                        let (digest, id, name) = (format!("d{d}"), format!("k{i:02}"), names[usize::from(n)].to_string());
                        table.retain(|dg, (other, _)| *other != id || *dg == digest);
                        table.insert(digest.clone(), (id.clone(), name.clone()));
                        index.apply(&digest, Some(&row(&digest, &id, &name)));
                    }
                    Op::Remove(d) => {
                        let digest = format!("d{d}");
                        table.remove(&digest);
                        index.apply(&digest, None);
                    }
                }
            }
            let mut ids: Vec<(String, String)> = table.values().cloned().collect();
            ids.sort();
            prop_assert_eq!(index.len(), ids.len());
            for needle in ["needle", "", "hay", "zzz"] {
                let matching: Vec<String> = ids.iter().filter(|(_, n)| n.contains(needle)).map(|(i, _)| i.clone()).collect();
                let got = index.search(needle, None, None, offset, limit);
                prop_assert_eq!(got.total, matching.len());
                let want: Vec<String> = matching.iter().skip(offset).take(limit).cloned().collect();
                prop_assert_eq!(got.page, want);
                if let Some(first) = matching.first() {
                    let after = index.search(needle, None, Some(first), 0, 100).page;
                    prop_assert_eq!(after, matching[1..].to_vec());
                    prop_assert_eq!(index.position(needle, None, first), 1);
                }
            }
            let mut rows: Vec<Row> = table.iter().map(|(d, (i, n))| row(d, i, n)).collect();
            rows.sort_by(|a, b| a.id.cmp(&b.id));
            let rebuilt = NameIndex::build(0, rows);
            prop_assert_eq!(rebuilt.search("", None, None, 0, 1000), index.search("", None, None, 0, 1000));
        }
    }
}
