//! The state every handler shares: settings the edge needs, the token verifier, the hub.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::TokenVerifier;
use crate::hub::Hub;

pub struct Config {
    pub api_key: String,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub send_queue: usize,
    pub static_dir: Option<PathBuf>,
}

pub struct App {
    pub config: Config,
    pub verifier: TokenVerifier,
    pub hub: Arc<Hub>,
}
