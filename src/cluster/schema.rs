//! The tables of the cluster module, as steps of the state's numbered
//! migrations (`state::pg` applies them at start, once, under its migration
//! lock; the state is opened before the cluster starts), so the database
//! has one versioned schema. [`TABLES`] is written with `IF NOT EXISTS`: a
//! database whose cluster tables an older regate created at connect
//! upgrades through it unchanged. Never edit a released step, add one.

use postgres::Client;

/// Step 3: the tables as regate created them at connect before they were
/// migration steps.
pub const TABLES: &str = "
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
";

/// Step 4: the claims of scheduled times by kind of work (GC, retention),
/// and who runs the one retention run of the cluster. A replica of an older
/// regate finds no `regate_cluster_gc_ticks` to claim in and skips its
/// scheduled GC (the GC lease keeps runs apart all the same).
pub const TICKS_BY_KIND: &str = "
ALTER TABLE regate_cluster_gc_ticks RENAME TO regate_cluster_ticks;
ALTER TABLE regate_cluster_ticks ADD COLUMN kind text NOT NULL DEFAULT 'gc';
ALTER TABLE regate_cluster_ticks DROP CONSTRAINT regate_cluster_gc_ticks_pkey;
ALTER TABLE regate_cluster_ticks ADD PRIMARY KEY (kind, tick_ms);
ALTER TABLE regate_cluster_ticks ALTER COLUMN kind DROP DEFAULT;
CREATE TABLE regate_cluster_runs (
    kind text PRIMARY KEY,
    replica text NOT NULL,
    account text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now()
);
";

/// Housekeeping at connect: forgets replicas silent for a day.
pub fn tidy(client: &mut Client) -> Result<(), postgres::Error> {
    client.batch_execute(
        "DELETE FROM regate_cluster_replicas WHERE heartbeat_at < now() - interval '1 day'",
    )
}
