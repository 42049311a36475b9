//! A caller waiting for its operation: applied (typed) when the driver reaches its entry, answered once the
//! batch holding it is settled.

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::error::Error;
use crate::presence::command::{Command, Operation};
use crate::presence::Engine;
use crate::store::StoreError;

/// An operation with its caller, as the driver holds it.
pub trait Pending: Send {
    /// Applies the operation to `engine` at `now`, keeping its result for the answer (again, when its batch is
    /// applied a second time one operation at a time).
    fn apply(&mut self, engine: &mut Engine, now: DateTime<Utc>);

    /// Answers the caller. `failure` is why the operation's writes are not durable, when they are not; `undone`
    /// says the operation was undone for it. Returns what to apply when the caller has gone meanwhile.
    fn answer(self: Box<Self>, failure: Option<&StoreError>, undone: bool) -> Option<Command>;
}

/// The answer to a request whose writes could not be stored.
fn store_failure(e: &StoreError) -> Error {
    Error::internal(format!("database write failed, nothing was changed: {e}"))
}

/// Where the answer to `O` arrives.
pub type Answer<O> = oneshot::Receiver<Result<<O as Operation>::Output, Error>>;

pub struct Waiting<O: Operation> {
    op: O,
    result: Option<Result<O::Output, Error>>,
    tx: oneshot::Sender<Result<O::Output, Error>>,
}

impl<O: Operation> Waiting<O> {
    pub fn new(op: O) -> (Box<Waiting<O>>, Answer<O>) {
        let (tx, rx) = oneshot::channel();
        (
            Box::new(Waiting {
                op,
                result: None,
                tx,
            }),
            rx,
        )
    }
}

impl<O: Operation> Pending for Waiting<O> {
    fn apply(&mut self, engine: &mut Engine, now: DateTime<Utc>) {
        self.result = Some(self.op.apply(engine, now));
    }

    fn answer(self: Box<Self>, failure: Option<&StoreError>, undone: bool) -> Option<Command> {
        let result = self
            .result
            .unwrap_or_else(|| Err(Error::internal("the operation was never applied")));
        // Whether the operation stays applied in the engine.
        let applied = result.is_ok() && !undone;
        let answer = match (result, failure) {
            (Err(e), _) => Err(e),
            // A shared entry stays applied everywhere: writes that wait for a database that is down are
            // stored once it is back, but a write the database refused is lost here.
            (Ok(_), Some(e)) if undone || e.is_refusal() => Err(store_failure(e)),
            (Ok(value), _) => Ok(value),
        };
        let refused = answer.is_err();
        if (self.tx.send(answer).is_err() || refused) && applied {
            // Applied, but the caller does not take it (gone, or told it failed): undo what can be undone.
            return self.op.abandoned();
        }
        None
    }
}
