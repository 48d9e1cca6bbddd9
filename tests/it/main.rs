//! The end-to-end suite as one test crate (one binary to link instead of one
//! per file): each former `tests/<name>.rs` is a module here, the fixture is
//! `common`. `cargo test --test it tag_delete::` runs one module's tests.
//! The soak test stays its own binary (tests/soak.rs; `scripts/soak` runs it
//! by name). Tests of every module share one process and run in parallel
//! threads: a test must not set environment variables or other process-wide
//! state, and uses ephemeral ports and temporary folders of its own.

mod common;

mod admin_auth;
mod auth_basic;
mod auth_token;
mod cli;
mod connection_limit;
mod containerd;
mod docker;
mod fast_reads;
mod first_run;
mod fsck;
mod gc_gate;
mod gc_managed;
mod gc_restart;
mod gc_schedule;
mod gc_untagged;
mod hostile_input;
mod idle_connections;
mod large_blobs;
mod managed_secrets;
mod oci_1_1;
mod own_answers;
mod podman;
mod protect;
mod proxy_core;
mod replicas;
mod replicas_gate_faults;
mod replicas_recovery;
mod replicas_retention;
mod replicas_schema;
mod replicas_state;
mod retention;
mod shutdown;
mod state_engines;
mod state_tls;
mod tag_delete;
mod tag_delete_batch;
mod tag_delete_races;
mod tag_delete_staged;
mod tags_cli;
mod trusted_proxies;
