//! The hub's thread: the [`Driver`] with its IO around it — the channel inputs arrive on, the real store and
//! clock, the sockets, the log. It sleeps until an input arrives or the driver's next deadline, takes what is
//! queued as one batch, has the driver settle it, then makes the batch visible: a new read view, the deliveries
//! handed to the sockets in order, the socket orders carried out, each caller answered.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::thread;

use chrono::Utc;
use presence_protocol::codes::close_code;

use super::driver::{Clock, Driver, Input, Settled, WallClock};
use super::log::Log;
use super::sockets::Sockets;
use crate::presence::command::Command;
use crate::presence::View;
use crate::store::Store;

/// Most inputs applied (and committed) together.
const MAX_BATCH: usize = 1024;

/// What readers see: the view published after the last settled batch.
pub type ViewSlot = Arc<RwLock<Arc<View>>>;

pub struct HubThread {
    pub driver: Driver,
    pub store: Box<dyn Store>,
    pub sockets: Arc<dyn Sockets>,
    pub log: Arc<dyn Log>,
    pub view: ViewSlot,
}

impl HubThread {
    /// Starts the thread; it ends once every sender of `inputs` is gone.
    pub fn spawn(self, inputs: Receiver<Input>) -> std::io::Result<()> {
        thread::Builder::new()
            .name("presence-hub".into())
            .spawn(move || self.run(inputs))
            .map(|_| ())
    }

    fn run(mut self, inputs: Receiver<Input>) {
        let mut clock = WallClock;
        loop {
            let first = match self.driver.next_deadline(self.log.is_primary()) {
                Some(at) => {
                    let wait = (at - Utc::now()).to_std().unwrap_or_default();
                    match inputs.recv_timeout(wait) {
                        Ok(input) => Some(input),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                None => match inputs.recv() {
                    Ok(input) => Some(input),
                    Err(_) => return,
                },
            };
            if self.driver.ask_timeout(clock.now(), self.log.is_primary()) {
                self.log.append_fact(Command::Timeout);
            }
            if let Some(first) = first {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match inputs.try_recv() {
                        Ok(input) => batch.push(input),
                        Err(_) => break,
                    }
                }
                let settled = self.driver.settle(batch, &mut *self.store, &mut clock);
                self.publish(settled);
            }
            if let Some(settled) = self
                .driver
                .look_at_failing_store(&mut *self.store, &mut clock)
            {
                self.publish(settled);
            }
        }
    }

    fn publish(&self, settled: Settled) {
        let view = Arc::new(self.driver.engine().view());
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = view;
        if !settled.deliveries.is_empty() {
            self.sockets.publish(settled.deliveries);
        }
        if !settled.orders.is_empty() {
            self.sockets.carry_out(settled.orders);
        }
        if let Some(pos) = settled.applied {
            self.log.set_applied(pos);
        }
        for (pending, failure, undone) in settled.answers {
            if let Some(again) = pending.answer(failure.as_ref(), undone) {
                self.log.append_fact(again);
            }
        }
        for flushed in settled.flushed {
            let _ = flushed.send(());
        }
        if settled.shutdown {
            self.sockets.close_all(close_code::GOING_AWAY);
        }
    }
}
