-- Retention purges per run (SPEC retention.purge_deactivated_after_days).
ALTER TABLE sync_runs ADD COLUMN purged INTEGER NOT NULL DEFAULT 0;
