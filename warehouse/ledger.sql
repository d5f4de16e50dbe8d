-- caudal_ledger: one row per raw object loaded into the warehouse (the exactly-once ledger).
--
-- The loader inserts it in the same transaction as the object's rows, and checks it before
-- loading: a raw_key that is already here is never loaded twice. Redshift does not enforce
-- PRIMARY KEY (it is informational here), so the loader guards every insert with the ledger
-- and starts each load transaction with `LOCK caudal_ledger`: every writer of caudal's tables
-- takes this one lock first, which serializes loads at SNAPSHOT and SERIALIZABLE isolation.
--
--   raw_key         S3 key of the raw object (raw/dt=…/hr=…/[region=<r>/]<shard>/<first>-<last>.ndjson.gz)
--   etag            ETag of the object version that was read
--   records         lines in the object
--   valid           rows produced by the rules (sum of `loaded`)
--   filtered        JSON object: filter name -> lines it dropped
--   filtered_total  sum of `filtered`
--   rejected        lines refused (they are in caudal_rejects)
--   loaded          JSON object: table -> rows produced for it
--   duplicates      rows and rejects not inserted because their event_id was already there
--                   (inside the de-duplication window) or twice in the same load; NULL when
--                   the loader did not count them
--   rule_version    SHA-256 of the rules file that produced the rows
--   load_id         the load that wrote the row (names its descriptor
--                   staging/load-descriptors/<load_id>.json and its Data API ClientToken
--                   <load_id>-<generation>); written in the load's own transaction
--                   (a ledger created before load_id existed gets it added by the migration
--                   and keeps its old statement_id column, no longer written)
--   loaded_at       load time (UTC), same value as the rows' loaded_at
-- Invariant: records = valid + filtered_total + rejected (see caudal_reconciliation).
--
-- Placeholders: {schema} = quoted schema name.
CREATE TABLE IF NOT EXISTS {schema}.caudal_ledger (
  raw_key VARCHAR(1024) NOT NULL,
  etag VARCHAR(256),
  records BIGINT NOT NULL,
  valid BIGINT NOT NULL,
  filtered SUPER,
  filtered_total BIGINT NOT NULL,
  rejected BIGINT NOT NULL,
  loaded SUPER,
  duplicates BIGINT,
  rule_version VARCHAR(64) NOT NULL,
  load_id VARCHAR(128),
  loaded_at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (raw_key)
) SORTKEY (raw_key);
