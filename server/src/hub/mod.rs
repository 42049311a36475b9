//! The driver around the presence engine: one lock around it, one timer task for its deadlines, connection send
//! queues through the bus, and the storage writer. Each operation reads the clock once, runs on the engine
//! under the lock, and hands what the engine produced to the store and the bus before the lock is released, so
//! every connection receives events in the order the state changed (queueing never blocks: a full queue evicts
//! its connection).

mod timer;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use presence_protocol::codes::close_code;
use presence_protocol::{
    ChannelQueryRequest, ChannelStateResponse, JsonMap, PartialUserUpdate, QueryChannelsRequest,
    QueryUsersPayload, User,
};
use tokio::sync::Notify;

use crate::bus::{Bus, Outlet};
use crate::error::Error;
use crate::model::Caller;
use crate::presence::{self, ConnId, Ending, Engine};
use crate::store::{Snapshot, Store};

/// Counters exported at `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub open_connections: usize,
    pub online_users: usize,
    pub frames_sent: u64,
}

pub struct Hub {
    engine: Mutex<Engine>,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    /// Wakes the timer task when the engine's next deadline may have moved (or the hub is gone).
    timer: Arc<Notify>,
}

impl Hub {
    /// A hub over `snapshot`, with its timer task running. Must be called inside a tokio runtime.
    pub fn start(
        config: presence::Config,
        snapshot: Snapshot,
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
    ) -> Arc<Hub> {
        let hub = Arc::new(Hub {
            engine: Mutex::new(Engine::new(config, snapshot.users, snapshot.channels)),
            store,
            bus,
            timer: Arc::new(Notify::new()),
        });
        tokio::spawn(timer::run(Arc::downgrade(&hub), Arc::clone(&hub.timer)));
        hub
    }

    fn lock(&self) -> MutexGuard<'_, Engine> {
        // A panic while holding the lock would leave state half-changed; recovering the guard keeps the server
        // answering rather than failing every later request.
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `op` on the engine at the current time, then hands its writes to the store and its deliveries to
    /// the bus, still under the lock.
    fn run<R>(&self, op: impl FnOnce(&mut Engine, DateTime<Utc>) -> R) -> R {
        let now = Utc::now();
        let mut engine = self.lock();
        let deadline = engine.poll_timeout();
        let result = op(&mut engine, now);
        let writes = engine.poll_writes();
        if !writes.is_empty() {
            self.store.write(writes);
        }
        let deliveries = engine.poll_deliveries();
        if !deliveries.is_empty() {
            self.bus.publish(deliveries);
        }
        if engine.poll_timeout() != deadline {
            self.timer.notify_one();
        }
        result
    }

    /// Waits until every write queued so far is durable.
    pub async fn flush(&self) -> Result<(), Error> {
        self.store
            .flush()
            .await
            .map_err(|e| Error::internal(format!("database write failed: {e}")))
    }

    pub fn counts(&self) -> Counts {
        let engine = self.lock();
        Counts {
            open_connections: engine.open_connections(),
            online_users: engine.online_users(),
            frames_sent: self.bus.frames_sent(),
        }
    }

    // ----- connections -----

    /// Registers a new connection for `user_id` that receives its frames through `outlet`, applying `details`
    /// as on connect; its queue starts with the first `health.check`. At the per-user cap, the user's oldest
    /// connection that has missed a pong gives way and is closed with 4002; with none, the connection is
    /// refused (code 71).
    pub fn connect(
        &self,
        user_id: &str,
        details: &JsonMap,
        outlet: Arc<Outlet>,
    ) -> Result<ConnId, Error> {
        let id: ConnId = uuid::Uuid::new_v4().to_string().into();
        self.run(|engine, now| {
            let dead = self.bus.missed_pong(engine.connections_at_cap(user_id));
            self.bus.attach(Arc::clone(&id), outlet);
            match engine.connect(Arc::clone(&id), user_id, details, &dead, now) {
                Ok(replaced) => {
                    if let Some(old) = replaced {
                        self.bus.evict(&old, close_code::PONG_TIMEOUT);
                    }
                    Ok(())
                }
                Err(e) => {
                    self.bus.detach(&id);
                    Err(e)
                }
            }
        })?;
        Ok(id)
    }

    /// Forgets a connection (see [`Engine::disconnect`]).
    pub fn disconnect(&self, conn: &ConnId, ending: Ending) {
        self.run(|engine, now| {
            engine.disconnect(conn, ending, now);
            self.bus.detach(conn);
        });
    }

    /// A client `health.check`.
    pub fn health_check(&self, conn: &ConnId) {
        self.run(|engine, now| engine.health_check(conn, now));
    }

    /// Closes every connection for shutdown (1001), stamping `last_active` of everyone connected.
    pub fn shutdown(&self) {
        self.run(|engine, now| {
            engine.shutdown(now);
            self.bus.close_all(close_code::GOING_AWAY);
        });
    }

    // ----- REST operations: each answers once its writes are durable -----

    pub async fn upsert_users(
        &self,
        caller: &Caller,
        users: &BTreeMap<String, JsonMap>,
    ) -> Result<BTreeMap<String, User>, Error> {
        let result = self.run(|engine, now| engine.upsert_users(caller, users, now))?;
        self.flush()
            .await
            .map_err(|e| e.in_operation("UpdateUsers"))?;
        Ok(result)
    }

    pub async fn partial_update_users(
        &self,
        caller: &Caller,
        updates: &[PartialUserUpdate],
    ) -> Result<BTreeMap<String, User>, Error> {
        let result = self.run(|engine, now| engine.partial_update_users(caller, updates, now))?;
        self.flush()
            .await
            .map_err(|e| e.in_operation("UpdateUsersPartial"))?;
        Ok(result)
    }

    pub fn query_users(
        &self,
        caller: &Caller,
        conn_id: Option<&str>,
        payload: &QueryUsersPayload,
    ) -> Result<Vec<User>, Error> {
        self.run(|engine, _| engine.query_users(caller, conn_id, payload))
    }

    pub async fn query_channel(
        &self,
        caller: &Caller,
        conn_id: Option<&str>,
        channel_type: &str,
        channel_id: Option<&str>,
        req: &ChannelQueryRequest,
    ) -> Result<ChannelStateResponse, Error> {
        let result = self.run(|engine, now| {
            engine.query_channel(caller, conn_id, channel_type, channel_id, req, now)
        })?;
        self.flush()
            .await
            .map_err(|e| e.in_operation("GetOrCreateChannel"))?;
        Ok(result)
    }

    pub fn query_channels(
        &self,
        caller: &Caller,
        conn_id: Option<&str>,
        req: &QueryChannelsRequest,
    ) -> Result<Vec<ChannelStateResponse>, Error> {
        self.run(|engine, now| engine.query_channels(caller, conn_id, req, now))
    }

    pub fn stop_watching(
        &self,
        caller: &Caller,
        conn_id: Option<&str>,
        cid: &str,
    ) -> Result<(), Error> {
        self.run(|engine, now| engine.stop_watching(caller, conn_id, cid, now))
    }
}

impl timer::Deadlines for Hub {
    fn next_deadline(&self) -> Option<DateTime<Utc>> {
        self.lock().poll_timeout()
    }

    fn handle_timeout(&self) {
        self.run(|engine, now| engine.handle_timeout(now));
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        // Lets the timer task see that the hub is gone.
        self.timer.notify_one();
    }
}
