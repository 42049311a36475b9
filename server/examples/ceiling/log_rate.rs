//! What Redis takes and serves of the cluster log: entries of the steady mix appended with the server's own
//! `append` (`XADD … MAXLEN ~ 1000000`) by one or more connections, each with requests in flight as a node's
//! concurrent callers have them (its connection multiplexes them in a pipeline), and read back by the server's
//! own `read` (`XREAD COUNT 1024 BLOCK`, decoded), tailing as every node does and from the start as a joining node
//! does. Redis's own CPU per entry comes from `INFO cpu` around each phase. Then what many nodes reading cost
//! Redis: appends paced at a given rate, and more and more readers tailing the log.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use presence_server::ceiling::{append, read, LOG_KEY};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::{json, Value};

/// How long a caught-up reader may take past the last append before the phase gives up on it.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(30);

/// A connection for the phase's own calls, once the log is emptied for it.
async fn emptied_log(client: &redis::Client) -> ConnectionManager {
    let mut admin = manager(client, Duration::from_secs(10)).await;
    let _: () = redis::cmd("DEL")
        .arg(LOG_KEY)
        .query_async(&mut admin)
        .await
        .expect("DEL");
    admin
}

async fn manager(client: &redis::Client, timeout: Duration) -> ConnectionManager {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(timeout));
    ConnectionManager::new_with_config(client.clone(), config)
        .await
        .expect("Redis answers")
}

/// Seconds of CPU Redis has used (user + system), from `INFO cpu`.
async fn redis_cpu(redis: &mut ConnectionManager) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(redis)
        .await
        .expect("INFO cpu");
    info.lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(key, _)| *key == "used_cpu_sys" || *key == "used_cpu_user")
        .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
        .sum()
}

/// A reader tailing the log from its start with the server's `read`, counting the entries it decoded.
struct Reader {
    read: Arc<AtomicU64>,
    undecoded: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Reader {
    async fn start(client: &redis::Client) -> Reader {
        let redis = manager(client, Duration::from_secs(7)).await;
        let (read_count, undecoded) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (counter, failed) = (Arc::clone(&read_count), Arc::clone(&undecoded));
        let flag = || Arc::new(std::sync::atomic::AtomicBool::new(true));
        let task = tokio::spawn(read(redis, flag(), flag(), move |_, entry| {
            if entry.is_none() {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            counter.fetch_add(1, Ordering::Relaxed);
        }));
        Reader {
            read: read_count,
            undecoded,
            task,
        }
    }

    fn count(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Waits until it has read `total` entries (or the limit passed); the time it took from `since`.
    async fn caught_up(&self, total: u64, since: Instant) -> Option<Duration> {
        let limit = Instant::now() + CATCH_UP_LIMIT;
        while self.count() < total {
            if Instant::now() >= limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Some(since.elapsed())
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One phase: `appenders` connections with `in_flight` appends each for `secs`, `readers` nodes tailing.
struct Phase {
    appenders: usize,
    in_flight: usize,
    readers: usize,
}

async fn run_phase(
    client: &redis::Client,
    entries: &Arc<Vec<String>>,
    phase: &Phase,
    secs: f64,
) -> Value {
    let mut admin = emptied_log(client).await;
    let mut readers = Vec::new();
    for _ in 0..phase.readers {
        readers.push(Reader::start(client).await);
    }
    let mut connections = Vec::new();
    for _ in 0..phase.appenders {
        connections.push(manager(client, Duration::from_secs(2)).await);
    }
    let cpu_before = redis_cpu(&mut admin).await;
    let next = Arc::new(AtomicUsize::new(0));
    let appended = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for (node, redis) in connections.iter().enumerate() {
        for _ in 0..phase.in_flight {
            let (mut redis, entries) = (redis.clone(), Arc::clone(entries));
            let (next, appended) = (Arc::clone(&next), Arc::clone(&appended));
            let node = format!("node{node}");
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let json = &entries[i % entries.len()];
                    append(&mut redis, &node, i as u64, json)
                        .await
                        .expect("XADD");
                    appended.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("an appender");
    }
    let append_secs = started.elapsed().as_secs_f64();
    let total = appended.load(Ordering::Relaxed);
    let mut reader_secs = Vec::new();
    for reader in &readers {
        let took = reader.caught_up(total, started).await;
        reader_secs.push(took.map(|d| d.as_secs_f64()));
        assert_eq!(
            reader.undecoded.load(Ordering::Relaxed),
            0,
            "undecoded entries"
        );
    }
    let cpu = redis_cpu(&mut admin).await - cpu_before;
    drop(readers);
    json!({
        "appended": total,
        "append_secs": append_secs,
        "append_rate": total as f64 / append_secs,
        "readers_caught_up_secs": reader_secs,
        "redis_cpu_secs": cpu,
        "redis_cpu_us_per_entry": cpu * 1e6 / total as f64,
    })
}

/// `XREAD` calls Redis has served, from `INFO commandstats`.
async fn xread_calls(redis: &mut ConnectionManager) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(redis)
        .await
        .expect("INFO commandstats");
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_xread:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

/// A reader that asks what a node's reader asks (`XREAD COUNT 1024 BLOCK 2000` from the last id it got) and
/// parses the reply, without decoding the commands: it comes back for more sooner than a node does, so the
/// `XREAD` calls it costs Redis are at least a node's.
fn bare_reader(redis: ConnectionManager, count: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut redis = redis;
        let mut last = "0-0".to_string();
        loop {
            let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1024)
                .arg("BLOCK")
                .arg(2000)
                .arg("STREAMS")
                .arg(LOG_KEY)
                .arg(&last)
                .query_async(&mut redis)
                .await
                .expect("XREAD");
            for id in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                count.fetch_add(1, Ordering::Relaxed);
                last = id.id;
            }
        }
    })
}

/// `nodes` connections appending `rate` entries a second between them (each one request at a time, as a node
/// whose callers are few) for `secs`, with `readers` readers tailing the log: Redis's CPU share and its `XREAD`
/// calls.
async fn fan_out(
    client: &redis::Client,
    entries: &Arc<Vec<String>>,
    rate: f64,
    nodes: usize,
    readers: usize,
    secs: f64,
) -> Value {
    let mut admin = emptied_log(client).await;
    let mut counts = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..readers {
        let count = Arc::new(AtomicU64::new(0));
        tasks.push(bare_reader(
            manager(client, Duration::from_secs(7)).await,
            Arc::clone(&count),
        ));
        counts.push(count);
    }
    let (cpu_before, calls_before) = (redis_cpu(&mut admin).await, xread_calls(&mut admin).await);
    let started = Instant::now();
    let period = Duration::from_secs_f64(nodes as f64 / rate);
    let each = (rate * secs / nodes as f64) as u64;
    let mut appenders = Vec::new();
    for node in 0..nodes {
        let mut redis = manager(client, Duration::from_secs(2)).await;
        let entries = Arc::clone(entries);
        let offset = period.mul_f64(node as f64 / nodes as f64);
        appenders.push(tokio::spawn(async move {
            let name = format!("node{node}");
            for k in 0..each {
                let at = started + offset + period.mul_f64(k as f64);
                tokio::time::sleep_until(at.into()).await;
                let i = (k as usize * nodes + node) % entries.len();
                append(&mut redis, &name, k, &entries[i])
                    .await
                    .expect("XADD");
            }
        }));
    }
    for task in appenders {
        task.await.expect("an appender");
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = redis_cpu(&mut admin).await - cpu_before;
    let calls = xread_calls(&mut admin).await - calls_before;
    let total = each * nodes as u64;
    let behind: u64 = counts
        .iter()
        .map(|c| total.saturating_sub(c.load(Ordering::Relaxed)))
        .max()
        .unwrap_or(0);
    for task in tasks {
        task.abort();
    }
    json!({
        "rate": rate,
        "achieved_rate": total as f64 / wall,
        "readers": readers,
        "redis_cpu_share": cpu / wall,
        "xread_calls_per_sec": calls as f64 / wall,
        "entries_per_xread": (total * readers as u64) as f64 / calls.max(1) as f64,
        "readers_behind_at_end": behind,
    })
}

/// A node joining: one reader from the start of a log of `total` entries (left by the last phase).
async fn catch_up(client: &redis::Client) -> Value {
    let mut admin = manager(client, Duration::from_secs(10)).await;
    let total: u64 = redis::cmd("XLEN")
        .arg(LOG_KEY)
        .query_async(&mut admin)
        .await
        .expect("XLEN");
    let cpu_before = redis_cpu(&mut admin).await;
    let started = Instant::now();
    let reader = Reader::start(client).await;
    let took = reader
        .caught_up(total, started)
        .await
        .map(|d| d.as_secs_f64());
    let cpu = redis_cpu(&mut admin).await - cpu_before;
    json!({
        "entries": total,
        "secs": took,
        "rate": took.map(|secs| total as f64 / secs),
        "redis_cpu_us_per_entry": cpu * 1e6 / total as f64,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Every phase `runs` times (the phases alternating), then a joining node's read.
pub struct Plan {
    pub secs: f64,
    pub runs: usize,
    pub in_flight: usize,
    pub nodes: usize,
    /// The paced rate of the fan-out phases, and their numbers of readers.
    pub fan_out_rate: f64,
    pub fan_out_readers: Vec<usize>,
}

pub async fn measure(url: &str, entries: Vec<String>, plan: &Plan) -> Value {
    let Plan {
        secs,
        runs,
        in_flight,
        nodes,
        ..
    } = *plan;
    let client = redis::Client::open(url).expect("a Redis URL");
    let entries = Arc::new(entries);
    let phases = [
        ("1 appender, 1 request in flight", 1, 1, 0),
        ("1 appender (one node's connection)", 1, in_flight, 0),
        ("appenders of every node", nodes, in_flight, 0),
        (
            "appenders of every node, every node reading",
            nodes,
            in_flight,
            nodes,
        ),
    ];
    let mut results: Vec<Vec<Value>> = vec![Vec::new(); phases.len()];
    for run in 0..runs {
        for (i, &(name, appenders, in_flight, readers)) in phases.iter().enumerate() {
            let phase = Phase {
                appenders,
                in_flight,
                readers,
            };
            let result = run_phase(&client, &entries, &phase, secs).await;
            eprintln!(
                "  run {}: {name}: {:.0} appends/s, Redis {:.2} µs CPU per entry",
                run + 1,
                result["append_rate"].as_f64().unwrap_or(0.0),
                result["redis_cpu_us_per_entry"].as_f64().unwrap_or(0.0),
            );
            results[i].push(result);
        }
    }
    let summary: Vec<Value> = phases
        .iter()
        .zip(results)
        .map(|(&(name, appenders, in_flight, readers), runs)| {
            let pick = |key: &str| median(runs.iter().filter_map(|r| r[key].as_f64()).collect());
            json!({
                "name": name,
                "appenders": appenders,
                "in_flight": in_flight,
                "readers": readers,
                "append_rate": pick("append_rate"),
                "redis_cpu_us_per_entry": pick("redis_cpu_us_per_entry"),
                "runs": runs,
            })
        })
        .collect();
    let joining = catch_up(&client).await;
    eprintln!(
        "  a joining node read {} entries at {:.0} entries/s",
        joining["entries"],
        joining["rate"].as_f64().unwrap_or(0.0)
    );
    let mut fan_outs = Vec::new();
    for &readers in &plan.fan_out_readers {
        let result = fan_out(&client, &entries, plan.fan_out_rate, nodes, readers, secs).await;
        eprintln!(
            "  {} appends/s with {readers} readers: Redis {:.0} % of a core, {:.0} XREAD/s",
            plan.fan_out_rate,
            100.0 * result["redis_cpu_share"].as_f64().unwrap_or(0.0),
            result["xread_calls_per_sec"].as_f64().unwrap_or(0.0),
        );
        fan_outs.push(result);
    }
    json!({
        "fan_out": fan_outs,
        "entry_bytes": entries.iter().map(String::len).sum::<usize>() as f64 / entries.len() as f64,
        "secs": secs,
        "phases": summary,
        "joining": joining,
    })
}
