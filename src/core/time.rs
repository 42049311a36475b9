//! The core's notion of time: milliseconds the caller passes in, never read from a clock here.

/// Milliseconds on the caller's monotonic clock.
pub type Millis = u64;
