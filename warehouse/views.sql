-- Dashboard (QuickSight) and reconciliation views.
--
-- Placeholders: {schema} = quoted schema name; {events_union} = one
-- `SELECT event_type, received_at, raw_key FROM <table>` per rules table joined with UNION ALL
-- (generated from the rules file, so re-run these after adding a table).
-- Portable SQL only (date_trunc, COUNT, COALESCE, joins): runs on Redshift and PostgreSQL 15.

-- Events per type per hour of ingest (received_at, UTC).
CREATE OR REPLACE VIEW {schema}.caudal_events_hourly AS
SELECT e.event_type,
       date_trunc('hour', e.received_at) AS event_hour,
       COUNT(*) AS events
FROM ({events_union}) AS e
GROUP BY e.event_type, date_trunc('hour', e.received_at);

-- Rejects per reason (code + rule) per hour of load.
CREATE OR REPLACE VIEW {schema}.caudal_rejects_by_reason AS
SELECT r.code,
       r.rule,
       date_trunc('hour', r.loaded_at) AS load_hour,
       COUNT(*) AS rejects
FROM {schema}.caudal_rejects AS r
GROUP BY r.code, r.rule, date_trunc('hour', r.loaded_at);

-- Reconciliation per raw object: the lines of the object against what is really in the
-- warehouse (rows in the event tables + rejects) plus what was dropped on purpose (filtered)
-- or as a duplicate. `difference` must be 0 for every row: anything else is a bug.
-- `ledger_difference` checks the ledger's own arithmetic.
CREATE OR REPLACE VIEW {schema}.caudal_reconciliation AS
SELECT l.raw_key,
       l.records,
       l.valid,
       l.filtered_total,
       l.rejected,
       COALESCE(l.duplicates, 0) AS duplicates,
       COALESCE(t.rows_in_tables, 0) AS rows_in_tables,
       COALESCE(r.rows_in_rejects, 0) AS rows_in_rejects,
       l.records - (COALESCE(t.rows_in_tables, 0) + COALESCE(l.duplicates, 0)
                    + l.filtered_total + COALESCE(r.rows_in_rejects, 0)) AS difference,
       l.records - (l.valid + l.filtered_total + l.rejected) AS ledger_difference,
       l.rule_version,
       l.loaded_at
FROM {schema}.caudal_ledger AS l
LEFT JOIN (SELECT u.raw_key, COUNT(*) AS rows_in_tables
           FROM ({events_union}) AS u
           GROUP BY u.raw_key) AS t ON t.raw_key = l.raw_key
LEFT JOIN (SELECT j.raw_key, COUNT(*) AS rows_in_rejects
           FROM {schema}.caudal_rejects AS j
           GROUP BY j.raw_key) AS r ON r.raw_key = l.raw_key;

-- Ingest → queryable latency per event: from received_at (the API made it durable) to the
-- loaded_at of the load that made it queryable (its transaction's time), in seconds. The
-- dashboard (`caudal status --html`, `caudal-local up`) reads its percentiles.
CREATE OR REPLACE VIEW {schema}.caudal_load_latency AS
SELECT e.event_type,
       e.raw_key,
       e.received_at,
       l.loaded_at,
       EXTRACT(EPOCH FROM l.loaded_at) - EXTRACT(EPOCH FROM e.received_at) AS seconds
FROM ({events_union}) AS e
JOIN {schema}.caudal_ledger AS l ON l.raw_key = e.raw_key;
