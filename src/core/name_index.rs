//! The key list's name search (`GET /api_keys?name_contains=`): every listed key's id and
//! lower-cased name, sorted by id, held in the control plane's memory so that a substring search
//! reads no table. A substring cannot use a B-tree index, and scanning one twice (the count, then
//! the page) cost 40-70 ms at 100 000 keys; here it is one pass over short strings.
//!
//! The index follows the change log: it knows the log position it reflects, and the ledger hands
//! it each changed key's current row (or its absence) to catch up. Pure: no I/O, no clock.

use std::collections::HashSet;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    id: Box<str>,
    name: Box<str>,
    digest: u128,
}

/// Listed keys by id with their names: about 110 bytes a key (11 MB at 100 000 keys).
#[derive(Debug, Clone, Default)]
pub struct NameIndex {
    /// The change-log position this index reflects.
    seq: i64,
    /// Sorted by id, ids unique.
    entries: Vec<Entry>,
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

/// A digest (64 hex digits, as records carry it) by its first 128 bits: for SHA-256 digests as
/// unlikely to collide as the digests themselves. Anything else (never stored: records are
/// validated) is folded by FNV-1a, so it still has a stable key.
fn digest_key(digest: &str) -> u128 {
    match digest.get(..32).map(|head| u128::from_str_radix(head, 16)) {
        Some(Ok(key)) if digest.len() == 64 => key,
        _ => digest.bytes().fold(0x6c62_272e_07bb_0142_62b8_2175_6295_c58d_u128, |h, b| {
            (h ^ u128::from(b)).wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b)
        }),
    }
}

/// Whether `needle` occurs in `hay`: a scan for the needle's first byte, then a comparison.
/// Names are short, so this beats building a substring searcher for each of them.
fn holds(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else { return true };
    let mut from = 0;
    while let Some(offset) = hay.get(from..).and_then(|h| h.iter().position(|&b| b == first)) {
        let at = from + offset + 1;
        match hay.get(at..at + rest.len()) {
            Some(candidate) if candidate == rest => return true,
            Some(_) => from = at,
            None => return false,
        }
    }
    false
}

/// Rows packed as the ledger reads them: `digest US id US name` records separated by RS (ASCII
/// 31 and 30; names hold no control characters). A record without three fields is skipped.
pub fn unpack(packed: &str) -> Vec<Row> {
    packed
        .split('\u{1e}')
        .filter_map(|record| {
            let mut fields = record.split('\u{1f}');
            let row = Row { digest: fields.next()?.to_string(), id: fields.next()?.to_string(), name_lower: fields.next()?.to_string() };
            fields.next().is_none().then_some(row)
        })
        .collect()
}

impl NameIndex {
    /// The index of every listed key, as of change-log position `seq`, from rows in id order
    /// (the ledger's query sorts them; an out-of-order or repeated id is dropped, never searched
    /// wrongly).
    pub fn build(seq: i64, rows: Vec<Row>) -> NameIndex {
        let mut index = NameIndex { seq, entries: Vec::with_capacity(rows.len()) };
        index.extend(rows);
        index
    }

    /// Appends rows that sort after every id already held (the next chunk of a build).
    pub fn extend(&mut self, rows: impl IntoIterator<Item = Row>) {
        for row in rows {
            if self.entries.last().is_some_and(|last| *last.id >= *row.id) {
                continue;
            }
            self.entries.push(Entry { digest: digest_key(&row.digest), id: row.id.into(), name: row.name_lower.into() });
        }
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

    /// Keys changed: `changed` are their digests, `rows` what is listed for them now (a changed
    /// digest without a row is no longer listed). One pass over the index, then one insertion
    /// per listed row.
    pub fn apply(&mut self, changed: &[String], rows: &[Row]) {
        let gone: HashSet<u128> = changed.iter().chain(rows.iter().map(|r| &r.digest)).map(|d| digest_key(d)).collect();
        let ids: HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        // An id belongs to one digest: an entry with a listed row's id goes too, whatever its digest.
        self.entries.retain(|e| !gone.contains(&e.digest) && !ids.contains(&*e.id));
        for row in rows {
            let at = self.entries.partition_point(|e| *e.id < *row.id);
            if self.entries.get(at).is_some_and(|e| *e.id == *row.id) {
                continue;
            }
            self.entries.insert(at, Entry { digest: digest_key(&row.digest), id: row.id.as_str().into(), name: row.name_lower.as_str().into() });
        }
    }

    /// The index now reflects the change log up to `seq`.
    pub fn advance(&mut self, seq: i64) {
        self.seq = self.seq.max(seq);
    }

    fn matching<'a>(&'a self, contains: &'a str, name: Option<&'a str>) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries
            .iter()
            .filter(move |e| holds(e.name.as_bytes(), contains.as_bytes()) && name.is_none_or(|n| *e.name == *n))
    }

    /// Keys whose name contains `contains` (and equals `name`, when given), by id: how many in
    /// all, and the page of ids after `after` (exclusive), skipping `offset`, at most `limit`.
    pub fn search(&self, contains: &str, name: Option<&str>, after: Option<&str>, offset: usize, limit: usize) -> Matches {
        let mut total = 0;
        let mut skipped = 0;
        let mut page = Vec::new();
        for entry in self.matching(contains, name) {
            total += 1;
            if after.is_some_and(|a| &*entry.id <= a) {
                continue;
            }
            if skipped < offset {
                skipped += 1;
            } else if page.len() < limit {
                page.push(entry.id.to_string());
            }
        }
        Matches { total, page }
    }

    /// How many matching keys sort at or before `id`.
    pub fn position(&self, contains: &str, name: Option<&str>, id: &str) -> usize {
        self.matching(contains, name).take_while(|e| &*e.id <= id).count()
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
    fn digests_are_keyed_by_their_first_128_bits() {
        let a = "0123456789abcdef0123456789abcdef00000000000000000000000000000000";
        let b = "0123456789abcdef0123456789abcdee00000000000000000000000000000000";
        assert_eq!(digest_key(a), 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_ne!(digest_key(a), digest_key(b));
        assert_ne!(digest_key("not hex"), digest_key("not hex either"));
        assert_eq!(digest_key("not hex"), digest_key("not hex"));
    }

    #[test]
    fn packed_rows_unpack_and_malformed_records_are_skipped() {
        let rows = unpack("d1\u{1f}k1\u{1f}alpha\u{1e}d2\u{1f}k2\u{1f}be ta\u{1e}broken\u{1e}a\u{1f}b\u{1f}c\u{1f}d");
        assert_eq!(rows, vec![row("d1", "k1", "alpha"), row("d2", "k2", "be ta")]);
        assert_eq!(unpack(""), vec![]);
    }

    proptest! {
        #[test]
        fn holds_agrees_with_str_contains(hay in "[ab ]{0,12}", needle in "[ab]{0,4}") {
            prop_assert_eq!(holds(hay.as_bytes(), needle.as_bytes()), hay.contains(needle.as_str()));
        }
    }

    #[test]
    fn rows_out_of_id_order_are_dropped_not_misfiled() {
        let index = NameIndex::build(1, vec![row("d2", "k2", "b"), row("d1", "k1", "a"), row("d3", "k2", "c"), row("d4", "k4", "d")]);
        assert_eq!(index.search("", None, None, 0, 10).page, vec!["k2".to_string(), "k4".to_string()]);
    }

    #[test]
    fn a_change_replaces_or_removes_the_digests_entry() {
        let mut index = NameIndex::build(1, vec![row("d1", "k1", "alpha"), row("d2", "k2", "beta")]);
        index.apply(&["d1".into()], &[row("d1", "k1", "gamma")]);
        assert_eq!(index.search("alpha", None, None, 0, 10).total, 0);
        assert_eq!(index.search("gamma", None, None, 0, 10).page, vec!["k1".to_string()]);
        index.apply(&["d2".into()], &[]);
        assert_eq!(index.len(), 1);
        index.apply(&["d9".into()], &[]);
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
        fn agrees_with_a_scan_of_the_table(batches in prop::collection::vec(prop::collection::vec(op(), 1..8), 0..12), offset in 0usize..5, limit in 0usize..6) {
            let names = ["needle one", "hay", "needle two", "other"];
            let mut table: BTreeMap<String, (String, String)> = BTreeMap::new();
            let mut index = NameIndex::build(0, vec![]);
            // Each batch of changes is applied to the model table, then handed to the index as the
            // ledger does: the changed digests and what the table lists for them now.
            for batch in batches {
                let mut changed = Vec::new();
                for op in batch {
                    match op {
                        Op::Set(d, i, n) => {
                            let (digest, id, name) = (format!("d{d}"), format!("k{i:02}"), names[usize::from(n)].to_string());
                            // The table's ids are unique: another digest holding this id is displaced.
                            let displaced: Vec<String> = table.iter().filter(|(dg, (other, _))| *other == id && **dg != digest).map(|(dg, _)| dg.clone()).collect();
                            for dg in displaced {
                                table.remove(&dg);
                                changed.push(dg);
                            }
                            table.insert(digest.clone(), (id, name));
                            changed.push(digest);
                        }
                        Op::Remove(d) => {
                            let digest = format!("d{d}");
                            table.remove(&digest);
                            changed.push(digest);
                        }
                    }
                }
                changed.sort();
                changed.dedup();
                let rows: Vec<Row> = changed.iter().filter_map(|d| table.get(d).map(|(i, n)| row(d, i, n))).collect();
                index.apply(&changed, &rows);
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
