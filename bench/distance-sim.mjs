// A simulation of the change feed across a worldwide fleet (docs/distance.md): LOCATIONS
// locations × ISOLATES isolates, each isolate receiving Poisson traffic (location and isolate
// shares Zipf-distributed, so most isolates are quiet and a few are busy), each location a
// round trip of 50–250 ms from the one control plane. Compares the design before issue 28 (every
// isolate reads the control plane once per SYNC_INTERVAL_MS; a new isolate or one whose last
// read is older than two intervals reads before answering) with the new one (the feed's pages
// shared within a location through the Cache API and used while under 3/4 of an interval old;
// busy isolates refresh in the background (a view half an interval old, at most every quarter
// interval), leaving the control-plane read
// to another isolate of the location that claimed it; FRESHNESS strict or bounded).
// Prints, per design: control-plane reads per second, requests that waited for a feed read (how
// many, how long), and the time from a change (a revocation) to the last request answered
// without it, anywhere. `node bench/distance-sim.mjs` (deterministic: a fixed seed). Environment:
// SIM_LOCATIONS, SIM_ISOLATES, SIM_RATE (requests/s over the fleet), SIM_SECONDS, SIM_SEED.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const LOCATIONS = Number(process.env.SIM_LOCATIONS ?? 300);
const ISOLATES = Number(process.env.SIM_ISOLATES ?? 20);
const RATE = Number(process.env.SIM_RATE ?? 5000);
const SECONDS = Number(process.env.SIM_SECONDS ?? 60);
const SEED = Number(process.env.SIM_SEED ?? 28);
const INTERVAL = 1000;
const MAX_STALENESS = 10_000;
// A read of the location's cache (Cache API): local.
const CACHE_READ_MS = 1;
// Revocations at these instants (ms from the start).
const CHANGES = Array.from({ length: Math.floor(SECONDS / 5) - 1 }, (_, i) => (i + 1) * 5000 + 1234);

function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function zipf(n, s = 1) {
  const w = Array.from({ length: n }, (_, i) => 1 / (i + 1) ** s);
  const sum = w.reduce((a, b) => a + b, 0);
  return w.map((x) => x / sum);
}

/** The requests, in time order: [t, location, isolate]; and each location's round trip. */
function traffic() {
  const random = rng(SEED);
  const locWeights = zipf(LOCATIONS, 0.8);
  const isoWeights = zipf(ISOLATES, 1.2);
  const rtt = Array.from({ length: LOCATIONS }, () => 50 + random() * 200);
  const events = [];
  const rates = [];
  for (let l = 0; l < LOCATIONS; l++) {
    for (let i = 0; i < ISOLATES; i++) {
      const rate = (RATE * locWeights[l] * isoWeights[i]) / 1000;
      rates[l * ISOLATES + i] = rate * 1000;
      let t = 0;
      for (;;) {
        t += -Math.log(1 - random()) / rate;
        if (t >= SECONDS * 1000) break;
        events.push([t, l, i]);
      }
    }
  }
  events.sort((a, b) => a[0] - b[0]);
  return { events, rtt, rates };
}

/**
 * One design over the traffic. `mode`: 'old', 'strict' or 'bounded'.
 * An isolate's view: `truth`, the control plane's time the view reflects (a change at c is in it
 * when truth >= c); `asOf`, what the isolate knows of it (the time the read was sent, or the
 * location copy's as-of).
 */
function simulate({ events, rtt, rates }, mode) {
  const shared = mode !== 'old';
  // As src/edge/store.rs: refresh at most every quarter interval; strict trusts a view for the interval
  // plus the round trip (the old design: two intervals), bounded for MAX_STALENESS_MS.
  const refresh = shared ? INTERVAL / 4 : INTERVAL;
  const trust = (l) => (mode === 'bounded' ? MAX_STALENESS : mode === 'old' ? 2 * INTERVAL : INTERVAL + rtt[l]);
  const isolates = Array.from({ length: LOCATIONS * ISOLATES }, () => ({ asOf: null, truth: -Infinity, lastAttempt: -Infinity, pending: null }));
  // Per location: the copy in its cache ({asOf, truth, at}: usable from `at`), newest first.
  const copies = Array.from({ length: LOCATIONS }, () => []);
  // Per location: until when an isolate's read of the control plane is in flight (its claim).
  const claims = new Float64Array(LOCATIONS);
  let controlReads = 0;
  const waits = [];
  // Requests of busy isolates (>= 10 req/s) that waited more than 5 ms.
  let busyRequests = 0;
  let busyWaits = 0;
  const staleAfter = CHANGES.map(() => 0);

  const settle = (iso, now) => {
    if (iso.pending && iso.pending.done <= now) {
      iso.asOf = Math.max(iso.asOf ?? -Infinity, iso.pending.asOf);
      iso.truth = Math.max(iso.truth, iso.pending.truth);
      iso.pending = null;
    }
  };
  /** Starts a read at `now`; returns when it completes. */
  const read = (iso, l, now, inline) => {
    iso.lastAttempt = now;
    if (shared) {
      const copy = copies[l].find((c) => c.at <= now);
      // A waiting request takes a copy under one interval old; a background refresh one recent
      // enough to keep the view trusted until the next refresh.
      const usable = inline ? INTERVAL : INTERVAL - refresh - rtt[l];
      if (copy && now - copy.asOf <= usable) {
        iso.pending = { done: now + CACHE_READ_MS, asOf: copy.asOf, truth: copy.truth };
        return iso.pending.done;
      }
    }
    if (shared && !inline && now < claims[l]) {
      // Another isolate here is reading the control plane: keep the view, look again later.
      return null;
    }
    controlReads++;
    const done = now + rtt[l];
    claims[l] = done;
    // The control plane answers half a round trip after the read was sent.
    iso.pending = { done, asOf: now, truth: now + rtt[l] / 2 };
    if (shared) {
      copies[l].unshift({ at: done, asOf: now, truth: now + rtt[l] / 2 });
      if (copies[l].length > 4) copies[l].length = 4;
    }
    return done;
  };

  for (const [t, l, i] of events) {
    const iso = isolates[l * ISOLATES + i];
    settle(iso, t);
    if (rates[l * ISOLATES + i] >= 10) busyRequests++;
    let now = t;
    // As src/edge/store.rs: a refresh is due a quarter interval after the last attempt, and in
    // the new design only once the view is half an interval old (a younger one needs none).
    const due = !iso.pending && t - iso.lastAttempt >= refresh && (!shared || process.env.SIM_EAGER || iso.asOf === null || t - iso.asOf >= INTERVAL / 2);
    if (due) {
      const ok = iso.asOf !== null && t - iso.asOf <= trust(l);
      const done = read(iso, l, t, !ok);
      if (!ok && done !== null) {
        // Inline: the request waits for the read.
        waits.push(done - t);
        if (rates[l * ISOLATES + i] >= 10 && done - t > 5) busyWaits++;
        now = done;
        settle(iso, now);
      }
    }
    // Not due (a read in flight, or one less than `refresh` ago): answered from the view held,
    // as the Worker does.
    // The request is answered at `now` with the view `iso.truth`.
    for (let c = 0; c < CHANGES.length; c++) {
      if (now >= CHANGES[c] && iso.truth < CHANGES[c]) staleAfter[c] = Math.max(staleAfter[c], now - CHANGES[c]);
    }
  }
  const sorted = [...waits].sort((a, b) => a - b);
  const q = (p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] : 0);
  const honour = [...staleAfter].sort((a, b) => a - b);
  return {
    design: mode,
    control_reads_per_s: controlReads / SECONDS,
    requests: events.length,
    waited: waits.length,
    waited_pct: (100 * waits.length) / events.length,
    waited_round_trip: waits.filter((w) => w > 5).length,
    wait_p50_ms: q(0.5),
    wait_p99_ms: q(0.99),
    busy_requests: busyRequests,
    busy_waited_over_5ms: busyWaits,
    revocation_last_stale_p50_ms: honour[Math.floor(honour.length / 2)],
    revocation_last_stale_max_ms: honour[honour.length - 1],
  };
}

const world = traffic();
const rows = ['old', 'strict', 'bounded'].map((mode) => simulate(world, mode));
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
mkdirSync(path.join(root, 'bench-output'), { recursive: true });
writeFileSync(path.join(root, 'bench-output', 'distance-sim.json'), JSON.stringify({ locations: LOCATIONS, isolates: ISOLATES, rate: RATE, seconds: SECONDS, seed: SEED, rows }, null, 2));
console.log(`simulation: ${LOCATIONS} locations x ${ISOLATES} isolates, ${RATE} req/s Poisson (Zipf shares), round trips 50-250 ms, SYNC_INTERVAL_MS=${INTERVAL}, ${SECONDS} s, ${world.events.length} requests`);
console.log('design    control reads/s  waited (%)          of which > 5 ms  wait p50  wait p99  busy isolates: waited > 5 ms  revocation: last stale answer p50 / max (ms)');
for (const r of rows) {
  console.log(
    `${r.design.padEnd(9)} ${r.control_reads_per_s.toFixed(0).padStart(15)}  ${`${r.waited} (${r.waited_pct.toFixed(2)}%)`.padEnd(18)} ${`${r.waited_round_trip} (${((100 * r.waited_round_trip) / r.requests).toFixed(2)}%)`.padEnd(16)} ${r.wait_p50_ms.toFixed(0).padStart(8)} ${r.wait_p99_ms.toFixed(0).padStart(9)}  ${`${r.busy_waited_over_5ms} of ${r.busy_requests}`.padEnd(28)}  ${r.revocation_last_stale_p50_ms.toFixed(0)} / ${r.revocation_last_stale_max_ms.toFixed(0)}`,
  );
}
