//! Black-box tests of the client library: the REST client against a fake HTTP server on 127.0.0.1 that checks
//! every signature, and the admin client against a fake `--admin-stdio` coordinator (a shell script) and an
//! in-test admin socket.

// The package's library is `dffmpeg_client`; the rest of the workspace imports it as `client`.
extern crate dffmpeg_client as client;

mod admin;
mod fake_http;
mod rest;
