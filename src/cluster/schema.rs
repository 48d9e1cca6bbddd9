//! The tables of the cluster module, created at connect (idempotent, under
//! an advisory lock so replicas starting at once on an empty database do not
//! race on `CREATE TABLE`).

use postgres::Client;

use super::{LOCK_CLASS, LOCK_SCHEMA};

const TABLES: &str = "
CREATE TABLE IF NOT EXISTS regate_cluster_gate (
    id int PRIMARY KEY CHECK (id = 1),
    generation bigint NOT NULL,
    state text NOT NULL CHECK (state IN ('open', 'closed')),
    reason text,
    holder_kind text CHECK (holder_kind IN ('gc', 'maintenance')),
    holder_replica text,
    run_id bigint,
    changed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO regate_cluster_gate (id, generation, state) VALUES (1, 0, 'open')
    ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS regate_cluster_replicas (
    replica text PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    drained_generation bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS regate_cluster_gc (
    id int PRIMARY KEY CHECK (id = 1),
    replica text NOT NULL,
    run_id bigint NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS regate_cluster_tag_locks (
    id bigserial PRIMARY KEY,
    repository text NOT NULL,
    tag text NOT NULL,
    replica text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS regate_cluster_tag_acks (
    lock_id bigint NOT NULL REFERENCES regate_cluster_tag_locks (id) ON DELETE CASCADE,
    replica text NOT NULL,
    PRIMARY KEY (lock_id, replica)
);
CREATE TABLE IF NOT EXISTS regate_cluster_gc_ticks (
    tick_ms bigint PRIMARY KEY,
    replica text NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now()
);
DELETE FROM regate_cluster_replicas WHERE heartbeat_at < now() - interval '1 day';
";

pub fn create(client: &mut Client) -> Result<(), postgres::Error> {
    client.execute(
        "SELECT pg_advisory_lock($1, $2)",
        &[&LOCK_CLASS, &LOCK_SCHEMA],
    )?;
    let result = client.batch_execute(TABLES);
    client.execute(
        "SELECT pg_advisory_unlock($1, $2)",
        &[&LOCK_CLASS, &LOCK_SCHEMA],
    )?;
    result
}
