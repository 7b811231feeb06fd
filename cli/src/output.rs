//! What commands print: JSON with `--json`, otherwise aligned tables and `name: value` lines.

use std::io::Write;

use serde_json::Value;

/// Whether answers are printed as JSON (for scripts) or for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
}

const MAX_CELL_CHARS: usize = 48;
/// The last column has no neighbour to push away.
const MAX_LAST_CELL_CHARS: usize = 200;

/// Prints `value` as one line of JSON.
pub fn json(value: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
}

/// Text for one cell: strings as they are, lists joined, null as `-`, long text cut short.
pub fn cell(value: Option<&Value>) -> String {
    cell_within(value, MAX_CELL_CHARS)
}

/// [`cell`] with another length limit (the last column of a table may run longer).
pub fn cell_within(value: Option<&Value>, max: usize) -> String {
    let text = match value {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) if items.is_empty() => "-".to_string(),
        Some(Value::Array(items)) => items.iter().map(|i| cell(Some(i))).collect::<Vec<_>>().join(","),
        Some(other) => other.to_string(),
    };
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if clean.chars().count() > max {
        let mut cut: String = clean.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    } else {
        clean
    }
}

/// An aligned table: a header row, then one row per item, columns picked by name.
pub fn table(rows: &[Value], columns: &[&str]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .enumerate()
                .map(|(i, c)| cell_within(row.get(*c), if i + 1 == columns.len() { MAX_LAST_CELL_CHARS } else { MAX_CELL_CHARS }))
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for row in &cells {
        for (width, text) in widths.iter_mut().zip(row) {
            *width = (*width).max(text.chars().count());
        }
    }
    let line = |texts: &[String]| -> String {
        let mut out = String::new();
        for (i, (text, width)) in texts.iter().zip(&widths).enumerate() {
            if i + 1 == texts.len() {
                out.push_str(text);
            } else {
                out.push_str(&format!("{text:<width$}  "));
            }
        }
        out.trim_end().to_string()
    };
    let header: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
    let mut out = line(&header);
    out.push('\n');
    for row in &cells {
        out.push_str(&line(row));
        out.push('\n');
    }
    out
}

/// One record as `attribute: value` lines, in the record's own order.
pub fn fields(record: &Value) -> String {
    let mut out = String::new();
    if let Some(map) = record.as_object() {
        let width = map.keys().map(|k| k.chars().count() + 1).max().unwrap_or(0);
        for (key, value) in map {
            let text = match value {
                Value::Object(_) => value.to_string(),
                other => cell(Some(other)),
            };
            out.push_str(&format!("{:<width$}  {text}\n", format!("{key}:")));
        }
    }
    out
}

pub const KEY_COLUMNS: &[&str] = &["id", "name", "status", "type", "key_preview", "permissions", "expires_at", "last_used_at"];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_aligns_columns_and_shows_lists() {
        let rows = [
            json!({"id": "key_1", "name": "ci", "permissions": ["users:read", "x:*"]}),
            json!({"id": "key_22", "name": null, "permissions": []}),
        ];
        let text = table(&rows, &["id", "name", "permissions"]);
        assert_eq!(text, "ID      NAME  PERMISSIONS\nkey_1   ci    users:read,x:*\nkey_22  -     -\n");
    }

    #[test]
    fn long_and_odd_cells_are_made_safe() {
        let long = cell(Some(&json!("x".repeat(100))));
        assert_eq!(long.chars().count(), MAX_CELL_CHARS);
        assert_eq!(cell(Some(&json!("a\nb"))), "a b");
        assert_eq!(cell(Some(&json!(3))), "3");
    }
}
