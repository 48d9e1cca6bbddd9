//! regate: a gate in front of a Docker registry (distribution `registry:2`).
//!
//! It terminates TLS, proxies the whole `/v2/` API with streamed bodies, and
//! (as the modules land) enforces who may do what, deletes single tags, and
//! keeps garbage collection from corrupting pushes.
//!
//! The data path: [`server`] accepts and terminates TLS -> [`app`]'s tower
//! stack: access log -> head limits -> the [`route`] parsed once -> auth and
//! rules -> write gate -> tag delete and regate's other endpoints, or [`proxy`].

pub mod access_log;
pub mod admin;
pub mod admin_client;
pub mod app;
pub mod audit;
pub mod auth;
pub mod body;
pub mod certs;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod error;
pub mod fast_reads;
pub mod forwarded;
pub mod fsck;
pub mod gc;
pub mod guarded_body;
pub mod managed;
pub mod manifest_check;
pub mod metrics;
pub mod pages;
pub mod pg_connect;
pub mod protect;
pub mod proxy;
pub mod range_refusal;
pub mod referrers;
pub mod registry_api;
pub mod registry_params;
pub mod request_limits;
pub mod retention;
pub mod route;
pub mod route_kind;
pub mod rules;
pub mod server;
pub mod state;
pub mod stop_signal;
pub mod storage_layout;
pub mod tag_delete;
pub mod tag_list;
pub mod tag_locks;
pub mod tls;
pub mod unread_body;
pub mod upload_check;
pub mod write_gate;
