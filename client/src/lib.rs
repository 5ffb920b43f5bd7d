//! dffmpeg client library: the typed, signed REST client of the coordinator ([`Client`]), the NDJSON stream
//! decoders it uses ([`ndjson`]), and the admin protocol client over the admin socket or a one-shot
//! `dffmpeg-coordinator --admin-stdio` child ([`admin`]). It depends on `protocol` only among our crates; the user
//! CLI that will sit on top of it is not here yet.

pub mod admin;
pub mod error;
pub mod ndjson;
pub mod query;
pub mod rest;

pub use error::{DecodeError, Error};
pub use ndjson::StreamItem;
/// Re-exported so callers of [`Client::send_signed`] need no direct reqwest dependency.
pub use reqwest::{Method, Url, header};
pub use rest::{
    Client, EventStream, EventsQuery, JobsQuery, PollStream, RawResponse, SigningMode, Submitted,
    unix_now,
};
