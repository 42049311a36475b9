//! The cluster's ceiling: every node applies every entry of the cluster log, so one node's apply rate (one
//! thread: the hub's) and what Redis appends and serves bound the whole cluster, however many nodes it has.
//!
//! ```sh
//! cargo run --release -p presence-server --example ceiling -- apply [--users 100000] [--active 20000]
//!     [--connected 10000] [--channels 10000] [--members 5] [--follows 30] [--kind-entries 2000]
//!     [--mix-entries 30000] [--runs 5] [--seed 1]
//! cargo run --release -p presence-server --example ceiling -- log --redis-url redis://127.0.0.1:PORT
//!     [--secs 3] [--runs 3] [--in-flight 64] [--nodes 3] [--fan-out-rate 2500] [--fan-out-readers 3,6,12,24]
//! ```
//!
//! `apply` builds a population through log entries, then applies sequences of each kind of entry and the steady
//! mix on the server's driver; `log` appends and reads entries of the mix on a Redis the caller started (its
//! stream `presence:log` is deleted between phases: use a private one). Each prints one JSON object on stdout
//! (bench/ceiling.mjs reads it) and its progress on stderr.

mod apply;
mod log_rate;
mod workload;

use std::collections::BTreeMap;
use std::time::Instant;

use presence_server::ceiling::{distinct_channel_key, Config, Engine};
use presence_server::Settings;
use serde_json::{json, Value};

use apply::{median_runs, refusals, stream_entries, Node, Run, Storage};
use workload::{events_per_user_hour, Logged, Shape, World};

/// The log's time of the first entry (2026-01-01T00:00:00Z).
const START_MS: u64 = 1_767_225_600_000;

/// The entry kinds measured one at a time.
const KINDS: [&str; 6] = [
    "connect",
    "disconnect",
    "follow",
    "watch",
    "status",
    "invisible",
];

struct Args(Vec<String>);

impl Args {
    fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        let flag = format!("--{name}");
        match self.0.iter().position(|a| *a == flag) {
            Some(at) => self
                .0
                .get(at + 1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{flag} needs a value")),
            None => default,
        }
    }
}

/// The engine's settings as the server's defaults make them.
fn config() -> Config {
    let s = Settings::default();
    Config {
        offline_grace: s.offline_grace,
        watch_implies_presence: s.watch_implies_presence,
        max_connections_per_user: s.max_connections_per_user,
        max_channels_per_user: s.max_channels_per_user,
        last_active_refresh: s.last_active_refresh,
        max_follows_per_connection: s.max_follows_per_connection,
        distinct_channel_key: distinct_channel_key("ceiling"),
        webhook_url: s.webhook_url,
        webhook_events: s.webhook_events,
    }
}

fn shape(args: &Args) -> Shape {
    Shape {
        users: args.get("users", 100_000),
        active: args.get("active", 20_000),
        connected: args.get("connected", 10_000),
        channels: args.get("channels", 10_000),
        members: args.get("members", 5),
        follows: args.get("follows", 30),
        grace_ms: Settings::default().offline_grace.as_millis() as u64,
    }
}

fn mean_bytes(entries: &[Logged]) -> f64 {
    entries.iter().map(|e| e.json.len()).sum::<usize>() as f64 / entries.len().max(1) as f64
}

fn run_json(run: &Run, rates: &[f64]) -> Value {
    let per = |x: f64| x / run.entries.max(1) as f64;
    json!({
        "entries": run.entries,
        "rate": run.rate(),
        "runs": rates,
        "decode_us": per(run.decode_secs * 1e6),
        "settle_us": per(run.settle_secs * 1e6),
        "deliveries_per_entry": per(run.deliveries as f64),
        "recipients_per_entry": per(run.recipients as f64),
        "writes_per_entry": per(run.writes as f64),
    })
}

fn apply_command(args: &Args) -> Value {
    let shape = shape(args);
    let runs: usize = args.get("runs", 5);
    let (world, setup) = World::build(&shape, args.get("seed", 1));
    let setup = stream_entries(&setup, START_MS);
    let empty = Engine::new(config(), Vec::new(), Vec::new());
    let refused = refusals(&empty, &setup);
    assert_eq!(refused, 0, "the engine refused entries of the population");
    let started = Instant::now();
    let mut sqlite = Node::new(empty, Storage::Sqlite);
    let built = sqlite.apply(&setup);
    let base = sqlite.engine().clone();
    let view = base.view();
    eprintln!(
        "population: {} entries in {:.1} s; {} connections, {} online, {} follows",
        setup.len(),
        started.elapsed().as_secs_f64(),
        view.open_connections(),
        view.online_users(),
        view.follows(),
    );
    let after_setup = START_MS + setup.len() as u64 + 60_000;
    let mut shared = Node::new(base.clone(), Storage::Shared);
    let mut kinds = Vec::new();
    for kind in KINDS {
        let entries = world.clone().kind(kind, args.get("kind-entries", 2000));
        let bytes = mean_bytes(&entries);
        let entries = stream_entries(&entries, after_setup);
        assert_eq!(refusals(&base, &entries), 0, "refused {kind} entries");
        let (run, rates) = median_runs(&mut shared, &base, &entries, runs);
        eprintln!(
            "{kind}: {:.0} entries/s ({:.1} µs decode + {:.1} µs apply), {:.1} recipients each",
            run.rate(),
            run.decode_secs * 1e6 / run.entries as f64,
            run.settle_secs * 1e6 / run.entries as f64,
            run.recipients as f64 / run.entries as f64,
        );
        let mut row = run_json(&run, &rates);
        row["kind"] = json!(kind);
        row["bytes"] = json!(bytes);
        kinds.push(row);
    }
    let (entries, events) = world.clone().mix(args.get("mix-entries", 30_000));
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for entry in &entries {
        *counts.entry(entry.kind).or_default() += 1;
    }
    let bytes = mean_bytes(&entries);
    let per_user_hour = events_per_user_hour() * entries.len() as f64 / events as f64;
    let entries = stream_entries(&entries, after_setup);
    assert_eq!(refusals(&base, &entries), 0, "refused entries of the mix");
    let (engine_run, engine_rates) = median_runs(&mut shared, &base, &entries, runs);
    let (sqlite_run, sqlite_rates) = median_runs(&mut sqlite, &base, &entries, runs);
    eprintln!(
        "mix: {:.0} entries/s (shared database), {:.0} entries/s (SQLite per node); {:.1} entries per connected user-hour",
        engine_run.rate(),
        sqlite_run.rate(),
        per_user_hour,
    );
    json!({
        "shape": {
            "users": shape.users, "active": shape.active, "connected": shape.connected,
            "channels": shape.channels, "members": shape.members, "follows": shape.follows,
            "grace_ms": shape.grace_ms,
        },
        "population": {
            "entries": setup.len(),
            "rate_sqlite": built.rate(),
            "open_connections": view.open_connections(),
            "online_users": view.online_users(),
            "follows": view.follows(),
        },
        "kinds": kinds,
        "mix": {
            "entries": entries.len(),
            "counts": counts,
            "bytes": bytes,
            "events_per_user_hour": events_per_user_hour(),
            "entries_per_user_hour": per_user_hour,
            "sessions_per_hour": workload::SESSIONS_PER_HOUR,
            "status_per_hour": workload::STATUS_PER_HOUR,
            "invisible_per_hour": workload::INVISIBLE_PER_HOUR,
            "abnormal_share": workload::ABNORMAL_SHARE,
            "shared": run_json(&engine_run, &engine_rates),
            "sqlite": run_json(&sqlite_run, &sqlite_rates),
        },
    })
}

fn log_command(args: &Args) -> Value {
    let url: String = args.get("redis-url", String::new());
    assert!(!url.is_empty(), "--redis-url redis://127.0.0.1:PORT");
    let (world, _) = World::build(&shape(args), args.get("seed", 1));
    let (entries, _) = world.clone().mix(10_000);
    let entries: Vec<String> = entries.into_iter().map(|e| e.json).collect();
    let mean = entries.iter().map(String::len).sum::<usize>() / entries.len();
    let sample = entries
        .iter()
        .min_by_key(|e| e.len().abs_diff(mean))
        .cloned();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let readers: String = args.get("fan-out-readers", "3,6,12,24".to_string());
    let plan = log_rate::Plan {
        secs: args.get("secs", 3.0),
        runs: args.get("runs", 3),
        in_flight: args.get("in-flight", 64),
        nodes: args.get("nodes", 3),
        fan_out_rate: args.get("fan-out-rate", 2500.0),
        fan_out_readers: readers
            .split(',')
            .map(|n| n.parse().expect("--fan-out-readers N,N,..."))
            .collect(),
    };
    let mut result = runtime.block_on(log_rate::measure(&url, entries, &plan));
    // An entry of about the mean size, for a cross-check with redis-benchmark.
    result["sample_entry"] = json!(sample);
    result
}

fn main() {
    let args = Args(std::env::args().skip(1).collect());
    let result = match args.0.first().map(String::as_str) {
        Some("apply") => apply_command(&args),
        Some("log") => log_command(&args),
        _ => {
            eprintln!(
                "usage: ceiling apply [--users N ...] | ceiling log --redis-url URL [--secs S ...]"
            );
            std::process::exit(2);
        }
    };
    println!("{result}");
}
