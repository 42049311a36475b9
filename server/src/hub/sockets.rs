//! The sockets of this process, as the driver sees them: where deliveries go and what it asks of them. The
//! WebSocket edge implements it; the driver never sees a socket.

use crate::presence::{Delivery, SocketOrder};

pub trait Sockets: Send + Sync + 'static {
    /// Hands frames to their connections' send queues (those held here). Each connection receives its frames
    /// in the order given.
    fn publish(&self, deliveries: Vec<Delivery>);
    /// Closes or forgets connections, as operations asked (those not held here are ignored).
    fn carry_out(&self, orders: Vec<SocketOrder>);
    /// Asks every connection held here to close with `code`.
    fn close_all(&self, code: u16);
    /// Frames handed to connection queues so far.
    fn frames_sent(&self) -> u64;
}
