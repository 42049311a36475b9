//! What the session asks the embedding layer to do: the [`Effect`]s it queues, and the [`SocketId`] that names
//! each socket it asked for.

use crate::core::error::ClientError;
use crate::core::subscriptions::Subscription;

/// Names one WebSocket the session asked for; events of older sockets are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketId(pub(crate) u64);

/// What the embedding layer must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Open a WebSocket to `/connect` (fresh `client_request_id`); ask the token provider again first when
    /// `reload_token` is set. `reconnect` says a connection succeeded before: the handshake then carries the user
    /// as last known from the server (never the fields others may have changed meanwhile, see
    /// [`crate::core::own_user`]) instead of what the app passed to `connectUser`.
    OpenSocket {
        socket: SocketId,
        reload_token: bool,
        reconnect: bool,
    },
    /// Close that socket; `None` closes without a code (an abandoned socket).
    CloseSocket {
        socket: SocketId,
        code: Option<u16>,
        reason: &'static str,
    },
    /// Send the keep-alive frame on that socket: `[{"type":"health.check","client_id":…}]` with
    /// [`Session::client_id`](crate::core::Session::client_id) (serialized by the embedding layer, which has a JSON serializer at hand).
    Ping { socket: SocketId },
    /// Emit the local `connection.changed` event.
    ConnectionChanged { online: bool },
    /// The pending `connectUser` succeeds with the frame being handled.
    ConnectResolved,
    /// The pending `connectUser` fails.
    ConnectRejected(ClientError),
    /// The first socket of a `connectUser` failed before the server said anything: find out over REST whether a
    /// presence server answers at the base URL, and end the connect with [`Session::fail_connect`] when none does
    /// (there is no point in retrying for the rest of the budget).
    ///
    /// [`Session::fail_connect`]: crate::core::Session::fail_connect
    Diagnose,
    /// The connection is new: make every subscription again (one request per kind and chunk, see
    /// [`Subscriptions::recovery`](crate::core::Subscriptions::recovery)), then report each answer with
    /// [`Session::handle_users_answer`](crate::core::Session::handle_users_answer) and this generation.
    Resubscribe {
        generation: u64,
        requests: Vec<Subscription>,
    },
    /// The user at `at` of the answer just handled ([`Session::handle_users_answer`]) replaces the cached one
    /// (`state.users`); `own`: it is the connected user's own write, merged into `client.user` too.
    ///
    /// [`Session::handle_users_answer`]: crate::core::Session::handle_users_answer
    StoreUser {
        at: usize,
        user_id: String,
        own: bool,
    },
    /// A user of the answer just handled is older than what the client holds: the cache keeps its object, and
    /// what the answer put in channels gives way to it.
    KeepCachedUser { user_id: String },
    /// The user's visible presence changed while the socket was down: emit `user.presence.changed` for them.
    PresenceChanged { user_id: String },
    /// Emit the local `connection.recovered` event.
    ConnectionRecovered,
}
