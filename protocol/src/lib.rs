//! dffmpeg wire types: REST bodies, worker WebSocket messages, ids, error codes, request signing and the admin
//! protocol. Everything that crosses a process boundary is defined here and nowhere else. No I/O: callers bring the
//! sockets, files and clocks.

pub mod admin;
pub mod error;
pub mod ids;
pub mod rest;
pub mod signing;
pub mod timefmt;
pub mod ws;

pub use error::{ErrorBody, ErrorCode};
pub use ids::{EventId, JobId, SessionId, Ulid, UlidGenerator};
pub use ws::PROTOCOL_VERSION;

/// The version of every dffmpeg program built from this workspace.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
