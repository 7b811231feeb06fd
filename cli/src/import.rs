//! `import FILE`: records from JSONL or CSV, checked and hashed here with keyward's core, sent in
//! batches through `POST /keys/batch` with a few batches in flight. The batch endpoint is
//! idempotent, so running the same import again changes nothing.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use keyward::core::record::{FieldError, WriteMode};
use serde_json::{json, Map, Value};

use crate::attributes::{identity_of_digest, identity_of_key, validate, value_from_text, KeyIdentity};
use crate::client::{CallError, Client};
use crate::client::data;
use crate::failure::Failure;
use crate::output::Format;
use crate::Context;

/// The most records `POST /keys/batch` takes at once.
pub const MAX_BATCH: usize = 1000;
/// Batches stay well under the batch endpoint's 8 MiB body limit.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

#[derive(Args)]
pub struct ImportArgs {
    /// A .jsonl (one JSON object a line) or .csv file (a header row of attribute names); each
    /// record has `key` (hashed here, never sent) or `digest`, plus the record's attributes
    file: PathBuf,
    /// Records per batch (1 to 1000)
    #[arg(long, default_value_t = MAX_BATCH)]
    batch_size: usize,
    /// Batches in flight at once
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// The version given to records that have none
    #[arg(long, default_value_t = 1)]
    default_version: u64,
    /// Check every record here and send nothing
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Jsonl,
    Csv,
}

fn layout_of(path: &Path) -> Result<Layout, Failure> {
    let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("jsonl" | "ndjson") => Ok(Layout::Jsonl),
        Some("csv") => Ok(Layout::Csv),
        _ => Err(Failure::new(format!("{}: expected a .jsonl or .csv file", path.display()))),
    }
}

/// A record ready to send: its digest and the batch item (`digest`, attributes, `version`).
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub line: u64,
    pub digest: String,
    pub item: Map<String, Value>,
}

/// A record that was not imported, and why. `record` never holds a plaintext key.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub line: u64,
    pub code: String,
    pub message: String,
    pub record: Value,
}

impl Refusal {
    fn local(line: u64, error: &FieldError, record: Value) -> Refusal {
        Refusal { line, code: "BAD_REQUEST".into(), message: error.to_string(), record }
    }
}

/// Turns one record's fields into a batch item, checked with the core as a push would be.
pub fn prepare(line: u64, mut fields: Map<String, Value>, default_version: u64) -> Result<Prepared, Refusal> {
    let key = fields.remove("key");
    let digest = fields.remove("digest");
    let identity: Result<KeyIdentity, FieldError> = match (&key, &digest) {
        (Some(Value::String(k)), None) => identity_of_key("key", k),
        (None, Some(Value::String(d))) => identity_of_digest("digest", d),
        (Some(Value::String(k)), Some(Value::String(d))) => {
            identity_of_key("key", k).and_then(|id| if &id.digest == d { Ok(id) } else { Err(FieldError::new("digest", "is not the digest of key")) })
        }
        (None, None) => Err(FieldError::new("key", "give the key or its digest")),
        (Some(_), _) => Err(FieldError::new("key", "must be a string")),
        (_, Some(_)) => Err(FieldError::new("digest", "must be a string")),
    };
    let identity = identity.map_err(|e| Refusal::local(line, &e, shown(&fields, None)))?;
    if !fields.contains_key("version") {
        fields.insert("version".into(), Value::from(default_version));
    }
    if let Some(preview) = &identity.preview {
        fields.entry("key_preview").or_insert_with(|| Value::String(preview.clone()));
    }
    validate(&fields, WriteMode::Push).map_err(|e| Refusal::local(line, &e, shown(&fields, Some(&identity))))?;
    let mut item = Map::new();
    item.insert("digest".into(), Value::String(identity.digest.clone()));
    item.extend(fields);
    Ok(Prepared { line, digest: identity.digest, item })
}

/// What a failed line records: its attributes, with the digest in place of any plaintext key.
fn shown(fields: &Map<String, Value>, identity: Option<&KeyIdentity>) -> Value {
    let mut record = fields.clone();
    if let Some(id) = identity {
        record.insert("digest".into(), Value::String(id.digest.clone()));
        if let Some(p) = &id.preview {
            record.entry("key_preview").or_insert_with(|| Value::String(p.clone()));
        }
    }
    Value::Object(record)
}

/// Reads records one at a time, as (line number, fields) or a refusal for an unreadable line.
type Records = Box<dyn Iterator<Item = Result<(u64, Map<String, Value>), Refusal>> + Send>;

fn open(path: &Path) -> Result<File, Failure> {
    File::open(path).map_err(|e| Failure::new(format!("{}: {e}", path.display())))
}

fn read_jsonl(path: &Path) -> Result<Records, Failure> {
    let reader = BufReader::new(open(path)?);
    let records = reader.lines().enumerate().filter_map(|(i, line)| {
        let number = i as u64 + 1;
        let refuse = |message: String| Some(Err(Refusal { line: number, code: "BAD_REQUEST".into(), message, record: Value::Null }));
        match line {
            Err(e) => refuse(format!("line: could not be read: {e}")),
            Ok(text) if text.trim().is_empty() => None,
            Ok(text) => match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(map)) => Some(Ok((number, map))),
                Ok(_) => refuse("line: must be a JSON object".into()),
                Err(e) => refuse(format!("line: is not valid JSON: {e}")),
            },
        }
    });
    Ok(Box::new(records))
}

fn read_csv(path: &Path) -> Result<Records, Failure> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(open(path)?);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| Failure::new(format!("{}: the header row could not be read: {e}", path.display())))?
        .iter()
        .map(str::to_string)
        .collect();
    if !headers.iter().any(|h| h == "key" || h == "digest") {
        return Err(Failure::new(format!("{}: the header row needs a \"key\" or \"digest\" column", path.display())));
    }
    let records = reader.into_records().map(move |row| {
        let row = row.map_err(|e| {
            let line = e.position().map_or(0, csv::Position::line);
            Refusal { line, code: "BAD_REQUEST".into(), message: format!("row: {e}"), record: Value::Null }
        })?;
        let line = row.position().map_or(0, csv::Position::line);
        let mut map = Map::new();
        for (name, text) in headers.iter().zip(row.iter()) {
            let value = if name == "key" || name == "digest" {
                (!text.is_empty()).then(|| Value::String(text.to_string()))
            } else {
                value_from_text(name, text).map_err(|e| Refusal::local(line, &e, Value::Null))?
            };
            if let Some(value) = value {
                map.insert(name.clone(), value);
            }
        }
        Ok((line, map))
    });
    Ok(Box::new(records))
}

fn records_of(path: &Path, layout: Layout) -> Result<Records, Failure> {
    match layout {
        Layout::Jsonl => read_jsonl(path),
        Layout::Csv => read_csv(path),
    }
}

/// How many records the file holds, for the progress bar (a cheap first pass).
fn count_records(path: &Path, layout: Layout) -> Result<u64, Failure> {
    match layout {
        Layout::Jsonl => {
            let mut count = 0;
            for line in BufReader::new(open(path)?).lines() {
                if !line?.trim().is_empty() {
                    count += 1;
                }
            }
            Ok(count)
        }
        Layout::Csv => {
            let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(open(path)?);
            let mut record = csv::ByteRecord::new();
            let mut count = 0;
            while reader.read_byte_record(&mut record).unwrap_or(false) {
                count += 1;
            }
            Ok(count)
        }
    }
}

/// What the reader, the senders and the counters tell the main thread.
enum Event {
    /// A record settled without a call: refused here, or a repeat of an earlier line.
    Local(Result<(), Refusal>),
    /// A batch's answers, one per record.
    Sent { imported: u64, unchanged: u64, refused: Vec<Refusal> },
    /// The import cannot go on (the token is refused, keyward is unreachable).
    Fatal(Failure),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub imported: u64,
    pub unchanged: u64,
    pub failed: u64,
}

impl Tally {
    fn settled(&self) -> u64 {
        self.imported + self.unchanged + self.failed
    }
}

/// Groups prepared records into batches by count and by bytes; repeats of a digest are settled
/// here (the same record again is unchanged, another record for the same key is refused).
struct Batcher {
    size: usize,
    current: Vec<Prepared>,
    bytes: usize,
    seen: HashMap<String, (u64, u64)>,
}

impl Batcher {
    fn new(size: usize) -> Batcher {
        Batcher { size, current: Vec::new(), bytes: 0, seen: HashMap::new() }
    }

    /// Adds a record; returns a full batch when one is ready, or a local outcome for a repeat.
    fn add(&mut self, record: Prepared) -> (Option<Vec<Prepared>>, Option<Result<(), Refusal>>) {
        let text = Value::Object(record.item.clone()).to_string();
        let fingerprint = fingerprint(&text);
        if let Some((line, earlier)) = self.seen.get(&record.digest) {
            let outcome = if *earlier == fingerprint {
                Ok(())
            } else {
                Err(Refusal {
                    line: record.line,
                    code: "BAD_REQUEST".into(),
                    message: format!("digest: the same key is on line {line} with other attributes"),
                    record: Value::Object(record.item),
                })
            };
            return (None, Some(outcome));
        }
        self.seen.insert(record.digest.clone(), (record.line, fingerprint));
        // A batch leaves when the next record would not fit in it (or at the end, by `take`).
        let full = if !self.current.is_empty()
            && (self.current.len() >= self.size || self.bytes + text.len() > MAX_BATCH_BYTES)
        {
            self.take()
        } else {
            None
        };
        self.bytes += text.len() + 1;
        self.current.push(record);
        (full, None)
    }

    fn take(&mut self) -> Option<Vec<Prepared>> {
        self.bytes = 0;
        (!self.current.is_empty()).then(|| std::mem::take(&mut self.current))
    }
}

/// FNV-1a: enough to tell a repeated line from a different one for the same key.
fn fingerprint(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Sends one batch (retrying while keyward is briefly unavailable) and reads its answers.
fn send_batch(client: &Client, batch: &[Prepared]) -> Event {
    let records: Vec<Value> = batch.iter().map(|p| Value::Object(p.item.clone())).collect();
    let body = json!({"records": records});
    let mut delay = Duration::from_millis(500);
    let mut attempt = 0;
    let answer = loop {
        attempt += 1;
        match client.post("/keys/batch", &body) {
            Err(e) if e.is_transient() && attempt < 5 => {
                thread::sleep(delay);
                delay *= 2;
            }
            other => break other,
        }
    };
    match answer {
        Ok(answer) => read_results(batch, data(&answer).get("results").unwrap_or(&Value::Null)),
        Err(CallError::Refused(r)) if r.status == 401 || r.status == 403 || r.status == 404 || r.status == 405 => {
            let why = if r.status == 404 || r.status == 405 {
                format!("this keyward has no batch endpoint (POST /_keyward/v1/keys/batch answered {} {})", r.status, r.code)
            } else {
                Failure::from(CallError::Refused(r)).to_string()
            };
            Event::Fatal(Failure::new(why))
        }
        // The batch as a whole was refused: each of its records failed with that reason.
        Err(CallError::Refused(r)) if r.status < 500 => Event::Sent {
            imported: 0,
            unchanged: 0,
            refused: batch
                .iter()
                .map(|p| Refusal { line: p.line, code: r.code.clone(), message: r.message.clone(), record: Value::Object(p.item.clone()) })
                .collect(),
        },
        Err(e) => Event::Fatal(Failure::from(e)),
    }
}

fn read_results(batch: &[Prepared], results: &Value) -> Event {
    let Some(results) = results.as_array().filter(|r| r.len() == batch.len()) else {
        return Event::Fatal(Failure::new(format!(
            "keyward's batch answer does not have one result per record (sent {})",
            batch.len()
        )));
    };
    let (mut imported, mut unchanged, mut refused) = (0, 0, Vec::new());
    for (record, result) in batch.iter().zip(results) {
        let text = |f: &str| result.get(f).and_then(Value::as_str).unwrap_or("").to_string();
        match text("status").as_str() {
            "created" | "updated" => imported += 1,
            "unchanged" => unchanged += 1,
            other => refused.push(Refusal {
                line: record.line,
                code: if other == "refused" { text("error_code") } else { "UNEXPECTED_STATUS".into() },
                // The batch names the item (`records[3].version: ...`); the failed file names the line.
                message: if other == "refused" {
                    let message = text("error_message");
                    match message.strip_prefix("records[").and_then(|rest| rest.split_once("].")) {
                        Some((_, field_message)) => field_message.to_string(),
                        None => message,
                    }
                } else {
                    format!("status: {other:?} is not a batch status")
                },
                record: Value::Object(record.item.clone()),
            }),
        }
    }
    Event::Sent { imported, unchanged, refused }
}

/// Writes failed records beside the input, one JSON object a line, opened on the first failure.
struct FailedFile {
    path: PathBuf,
    file: Option<std::io::BufWriter<File>>,
}

impl FailedFile {
    fn write(&mut self, refusal: &Refusal) -> Result<(), Failure> {
        if self.file.is_none() {
            let file = File::create(&self.path).map_err(|e| Failure::new(format!("{}: {e}", self.path.display())))?;
            self.file = Some(std::io::BufWriter::new(file));
        }
        if let Some(file) = &mut self.file {
            let line = json!({"line": refusal.line, "error_code": refusal.code, "error_message": refusal.message, "record": refusal.record});
            writeln!(file, "{line}")?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<bool, Failure> {
        match self.file.take() {
            Some(mut file) => {
                file.flush()?;
                Ok(true)
            }
            None => {
                // A failed file left by an earlier run would describe failures that are gone.
                if self.path.exists() {
                    std::fs::remove_file(&self.path)?;
                }
                Ok(false)
            }
        }
    }
}

/// Progress on a terminal (a bar with rate and ETA), plain lines otherwise.
enum Progress {
    Bar(ProgressBar),
    Lines { total: u64, last: Instant, started: Instant },
}

impl Progress {
    fn new(total: u64) -> Progress {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} records  {rate}  ETA {eta}",
            );
            if let Ok(style) = style {
                bar.set_style(style.with_key("rate", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0}/s", state.per_sec());
                }));
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            Progress::Bar(bar)
        } else {
            let now = Instant::now();
            Progress::Lines { total, last: now, started: now }
        }
    }

    fn show(&mut self, done: u64) {
        match self {
            Progress::Bar(bar) => bar.set_position(done),
            Progress::Lines { total, last, started } => {
                if last.elapsed() >= Duration::from_secs(2) {
                    *last = Instant::now();
                    let rate = per_second(done, started.elapsed());
                    eprintln!("import: {done}/{total} records, {rate:.0}/s");
                }
            }
        }
    }

    fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

pub fn run(context: &Context, args: &ImportArgs) -> Result<ExitCode, Failure> {
    if !(1..=MAX_BATCH).contains(&args.batch_size) {
        return Err(Failure::new(format!("--batch-size: must be 1 to {MAX_BATCH}")));
    }
    if !(1..=16).contains(&args.in_flight) {
        return Err(Failure::new("--in-flight: must be 1 to 16"));
    }
    let layout = layout_of(&args.file)?;
    let client = if args.dry_run { None } else { Some(context.client()?) };
    let total = count_records(&args.file, layout)?;
    let records = records_of(&args.file, layout)?;
    let started = Instant::now();

    let stop = Arc::new(AtomicBool::new(false));
    let (events, inbox): (Sender<Event>, Receiver<Event>) = mpsc::channel();
    let (batches, queue): (SyncSender<Vec<Prepared>>, Receiver<Vec<Prepared>>) = mpsc::sync_channel(args.in_flight);
    let queue = Arc::new(Mutex::new(queue));

    let mut workers = Vec::new();
    if let Some(client) = &client {
        for _ in 0..args.in_flight {
            let (client, queue, events, stop) = (client.clone(), Arc::clone(&queue), events.clone(), Arc::clone(&stop));
            workers.push(thread::spawn(move || loop {
                let next = queue.lock().ok().and_then(|q| q.recv().ok());
                let Some(batch) = next else { break };
                if stop.load(Ordering::Relaxed) {
                    continue;
                }
                let event = send_batch(&client, &batch);
                if events.send(event).is_err() {
                    break;
                }
            }));
        }
    }
    let reader = {
        let (events, stop, dry_run, size, default_version) =
            (events.clone(), Arc::clone(&stop), args.dry_run, args.batch_size, args.default_version);
        thread::spawn(move || {
            let mut batcher = Batcher::new(size);
            let dispatch = |batch: Vec<Prepared>| {
                if dry_run {
                    let count = batch.len() as u64;
                    events.send(Event::Sent { imported: count, unchanged: 0, refused: Vec::new() }).is_ok()
                } else {
                    batches.send(batch).is_ok()
                }
            };
            for record in records {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let prepared = record.and_then(|(line, fields)| prepare(line, fields, default_version));
                match prepared {
                    Err(refusal) => {
                        let _ = events.send(Event::Local(Err(refusal)));
                    }
                    Ok(p) => {
                        let (full, local) = batcher.add(p);
                        if let Some(outcome) = local {
                            let _ = events.send(Event::Local(outcome));
                        }
                        if let Some(batch) = full {
                            if !dispatch(batch) {
                                return;
                            }
                        }
                    }
                }
            }
            if let Some(batch) = batcher.take() {
                dispatch(batch);
            }
        })
    };
    drop(events);

    let mut failed_file = FailedFile { path: failed_path(&args.file), file: None };
    let mut tally = Tally::default();
    let mut progress = Progress::new(total);
    let mut fatal: Option<Failure> = None;
    for event in inbox {
        match event {
            Event::Local(Ok(())) => tally.unchanged += 1,
            Event::Local(Err(refusal)) => {
                tally.failed += 1;
                failed_file.write(&refusal)?;
            }
            Event::Sent { imported, unchanged, refused } => {
                tally.imported += imported;
                tally.unchanged += unchanged;
                tally.failed += refused.len() as u64;
                for refusal in &refused {
                    failed_file.write(refusal)?;
                }
            }
            Event::Fatal(failure) => {
                stop.store(true, Ordering::Relaxed);
                fatal.get_or_insert(failure);
            }
        }
        progress.show(tally.settled());
    }
    let _ = reader.join();
    for worker in workers {
        let _ = worker.join();
    }
    progress.finish();
    let elapsed = started.elapsed();
    let wrote_failures = failed_file.finish()?;
    let rate = per_second(tally.settled(), elapsed);

    match context.format {
        Format::Json => crate::output::json(&json!({
            "imported": tally.imported, "unchanged": tally.unchanged, "failed": tally.failed,
            "failed_file": wrote_failures.then(|| failed_file.path.display().to_string()),
            "seconds": elapsed.as_secs_f64(), "records_per_second": rate, "dry_run": args.dry_run,
        })),
        Format::Human => {
            let verb = if args.dry_run { "would_import" } else { "imported" };
            println!("{verb}={} unchanged={} failed={}", tally.imported, tally.unchanged, tally.failed);
            eprintln!(
                "import: {} records in {:.1} s ({rate:.0} records/s){}",
                tally.settled(),
                elapsed.as_secs_f64(),
                if args.dry_run { ", dry run: nothing was sent" } else { "" }
            );
        }
    }
    if let Some(failure) = fatal {
        return Err(failure);
    }
    if tally.failed > 0 {
        return Err(Failure::new(format!(
            "{} record{} failed; see {}",
            tally.failed,
            if tally.failed == 1 { "" } else { "s" },
            failed_file.path.display()
        )));
    }
    Ok(ExitCode::SUCCESS)
}

/// `FILE.failed.jsonl`, beside the input.
pub fn failed_path(input: &Path) -> PathBuf {
    let mut name = input.as_os_str().to_owned();
    name.push(".failed.jsonl");
    PathBuf::from(name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;
    use keyward::core::digest::key_digest;

    fn fields(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn a_plaintext_key_becomes_its_digest_and_is_never_sent() {
        let key = crate::keys::new_key("kw_live").unwrap();
        let p = prepare(3, fields(json!({"key": key, "name": "a"})), 1).unwrap();
        assert_eq!(p.digest, key_digest(&key));
        assert_eq!(p.item["digest"], key_digest(&key));
        assert_eq!(p.item["version"], 1);
        assert!(!Value::Object(p.item.clone()).to_string().contains(&key));
        assert!(p.item["key_preview"].as_str().unwrap().starts_with("kw_live_..."));
    }

    #[test]
    fn bad_records_are_refused_here_with_the_field() {
        let key = crate::keys::new_key("kw_live").unwrap();
        let cases = [
            (json!({"name": "a"}), "key"),
            (json!({"key": "kw_live_typo", "name": "a"}), "key"),
            (json!({"digest": "ABC", "name": "a"}), "digest"),
            (json!({"key": key, "digest": key_digest("other"), "name": "a"}), "digest"),
            (json!({"key": key}), "name"),
            (json!({"key": key, "name": "a", "ip_allowlist": ["nope"]}), "ip_allowlist[0]"),
            (json!({"key": key, "name": "a", "colour": "red"}), "colour"),
        ];
        for (input, field) in cases {
            let refusal = prepare(1, fields(input.clone()), 1).unwrap_err();
            assert!(refusal.message.starts_with(&format!("{field}: ")), "{input}: {}", refusal.message);
            assert!(!refusal.record.to_string().contains(&key), "the failed record holds the key");
        }
    }

    #[test]
    fn batches_split_by_count_and_repeats_settle_locally() {
        let mut batcher = Batcher::new(2);
        let record = |line: u64, d: &str, name: &str| Prepared {
            line,
            digest: d.into(),
            item: fields(json!({"digest": d, "name": name, "version": 1})),
        };
        assert_eq!(batcher.add(record(1, "a", "x")), (None, None));
        let (full, local) = batcher.add(record(2, "a", "x"));
        assert_eq!((full, local), (None, Some(Ok(()))));
        let (full, local) = batcher.add(record(3, "a", "y"));
        assert!(full.is_none());
        assert!(local.unwrap().unwrap_err().message.contains("line 1"));
        assert_eq!(batcher.add(record(4, "b", "x")), (None, None));
        let (full, _) = batcher.add(record(5, "c", "x"));
        assert_eq!(full.unwrap().iter().map(|p| p.line).collect::<Vec<_>>(), [1, 4]);
        assert_eq!(batcher.take().unwrap().len(), 1);
        assert_eq!(batcher.take(), None);
    }

    #[test]
    fn results_are_counted_per_record() {
        let batch: Vec<Prepared> = (1..=3)
            .map(|i| Prepared { line: i, digest: format!("d{i}"), item: fields(json!({"name": "n"})) })
            .collect();
        let results = json!([
            {"digest": "d1", "status": "created"},
            {"digest": "d2", "status": "unchanged"},
            {"digest": "d3", "status": "refused", "error_code": "VERSION_CONFLICT", "error_message": "version: ..."},
        ]);
        match read_results(&batch, &results) {
            Event::Sent { imported, unchanged, refused } => {
                assert_eq!((imported, unchanged), (1, 1));
                assert_eq!(refused[0].line, 3);
                assert_eq!(refused[0].code, "VERSION_CONFLICT");
            }
            _ => unreachable!("a whole answer"),
        }
        assert!(matches!(read_results(&batch, &json!([])), Event::Fatal(_)));
    }

    #[test]
    fn csv_rows_become_typed_records_with_their_line_numbers() {
        let dir = std::env::temp_dir().join(format!("keyward-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.csv");
        std::fs::write(
            &path,
            "key,name,permissions,active,metadata\nk1,\"a, \"\"quoted\"\"\nname\",users:read x:*,false,\"{\"\"n\"\": 1}\"\nk2,b,,,\n",
        )
        .unwrap();
        let rows: Vec<_> = read_csv(&path).unwrap().collect();
        let (line, first) = rows[0].clone().unwrap();
        assert_eq!(line, 2);
        assert_eq!(
            Value::Object(first),
            json!({"key": "k1", "name": "a, \"quoted\"\nname", "permissions": ["users:read", "x:*"], "active": false, "metadata": {"n": 1}})
        );
        let (line, second) = rows[1].clone().unwrap();
        assert_eq!(line, 4, "a quoted line break moves the line count on");
        assert_eq!(Value::Object(second), json!({"key": "k2", "name": "b"}));
        assert_eq!(count_records(&path, Layout::Csv).unwrap(), 2);
        std::fs::write(&path, "name\nx\n").unwrap();
        assert!(read_csv(&path).is_err(), "a file without a key or digest column");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_are_read_by_extension() {
        assert_eq!(layout_of(Path::new("a.JSONL")).unwrap(), Layout::Jsonl);
        assert_eq!(layout_of(Path::new("a.csv")).unwrap(), Layout::Csv);
        assert!(layout_of(Path::new("a.txt")).is_err());
        assert_eq!(failed_path(Path::new("dir/keys.csv")), PathBuf::from("dir/keys.csv.failed.jsonl"));
    }
}
