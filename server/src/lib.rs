//! The dffmpeg coordinator as a library, so the binary and the black-box tests share one `Application`.
//! Reading order: `config` → `settings` → `app`/`state` → `error`/`auth` → `http` → `scheduler` → `janitor` →
//! `store` (ARCHITECTURE.md has the code map).

pub mod admin;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod http;
pub mod hub;
pub mod identity;
pub mod janitor;
pub mod scheduler;
pub mod settings;
pub mod state;
pub mod store;
pub mod views;
pub mod ws;
