//! Why the server could not start, each reason with the message and the exit status it deserves: a setting the
//! operator must fix exits with 2 (as clap does for a bad flag), a part the server needs that is not there (the
//! database, Redis, the runtime) with 1.

use std::fmt;
use std::net::SocketAddr;

use crate::store::StoreError;

#[derive(Debug)]
pub enum StartupError {
    /// A flag or variable is missing, out of range, or at odds with another.
    Setting(String),
    /// An address given (or the public one) cannot be listened on.
    Listen {
        /// The flag that names it.
        flag: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// The database cannot be opened or read.
    Storage { db: String, error: StoreError },
    /// Redis cannot be reached, or this node cannot join the cluster.
    Cluster { what: &'static str, error: String },
    /// The async runtime cannot start.
    Runtime(std::io::Error),
}

impl StartupError {
    /// The process's exit status for this reason.
    pub fn exit_status(&self) -> u8 {
        match self {
            StartupError::Setting(_) | StartupError::Listen { .. } => 2,
            StartupError::Storage { .. }
            | StartupError::Cluster { .. }
            | StartupError::Runtime(_) => 1,
        }
    }
}

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartupError::Setting(message) => f.write_str(message),
            StartupError::Listen { flag, addr, error } => {
                write!(f, "{flag}: cannot listen on {addr}: {error}")
            }
            StartupError::Storage { db, error } => write!(f, "cannot open database {db}: {error}"),
            StartupError::Cluster { what, error } => write!(f, "{what}: {error}"),
            StartupError::Runtime(error) => write!(f, "cannot start the runtime: {error}"),
        }
    }
}

impl std::error::Error for StartupError {}
