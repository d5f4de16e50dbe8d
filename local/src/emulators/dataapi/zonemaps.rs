//! Redshift's zone maps, modelled in PostgreSQL as BRIN indexes.
//!
//! Redshift has no indexes. It keeps, for every 1 MB block of every column, the column's
//! minimum and maximum (a zone map) and skips blocks a range predicate cannot match; how well
//! that works depends on how the rows are ordered (sort key, or append order for the unsorted
//! region). PostgreSQL's nearest analogue is a BRIN minmax index — block-range summaries, no
//! per-row entries — never a B-tree, which would make look-ups by any column cheap where
//! Redshift would scan. So that a query is never cheaper here than on Redshift, the endpoint
//! installs an event trigger that gives every permanent table one BRIN index over all its
//! columns of a type with a minmax operator class (numbers, text, dates and timestamps: the
//! types whose zone maps Redshift uses for range restriction), rebuilt when a column is added.
//! Temporary tables (the loader's stages) get none. Ranges appended after the last
//! summarisation are scanned in full until autovacuum summarises them (`autosummarize`), much
//! as Redshift scans its unsorted region.

use tokio_postgres::{Client, NoTls};

/// The trigger function and the event trigger (idempotent; serialized by an advisory lock so
/// several endpoints on one database can start together).
pub const INSTALL_SQL: &str = r#"
BEGIN;
SELECT pg_advisory_xact_lock(4242001);
CREATE OR REPLACE FUNCTION caudal_local_zone_maps() RETURNS event_trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  obj record;
  cols text;
  rel record;
BEGIN
  FOR obj IN SELECT DISTINCT objid FROM pg_event_trigger_ddl_commands()
             WHERE object_type = 'table'
  LOOP
    SELECT c.relname, n.nspname, c.relpersistence, c.relkind INTO rel
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = obj.objid;
    CONTINUE WHEN rel IS NULL OR rel.relpersistence = 't' OR rel.relkind <> 'r';
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
      FROM pg_attribute a
     WHERE a.attrelid = obj.objid AND a.attnum > 0 AND NOT a.attisdropped
       AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype,
                          'numeric'::regtype, 'float4'::regtype, 'float8'::regtype,
                          'varchar'::regtype, 'text'::regtype, 'bpchar'::regtype,
                          'date'::regtype, 'timestamp'::regtype, 'timestamptz'::regtype);
    EXECUTE format('DROP INDEX IF EXISTS %I.%I', rel.nspname, left(rel.relname, 50) || '_zone_maps');
    IF cols IS NOT NULL THEN
      EXECUTE format('CREATE INDEX %I ON %I.%I USING brin (%s) WITH (autosummarize = on)',
                     left(rel.relname, 50) || '_zone_maps', rel.nspname, rel.relname, cols);
    END IF;
  END LOOP;
END
$fn$;
DROP EVENT TRIGGER IF EXISTS caudal_local_zone_maps;
CREATE EVENT TRIGGER caudal_local_zone_maps ON ddl_command_end
  WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'ALTER TABLE')
  EXECUTE FUNCTION caudal_local_zone_maps();
COMMIT;
"#;

/// Installs the zone-map trigger in the database `config` names.
pub async fn install(config: &tokio_postgres::Config) -> Result<(), tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    let conn = tokio::spawn(connection);
    let result = run(&client).await;
    drop(client);
    let _ = conn.await;
    result
}

async fn run(client: &Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(INSTALL_SQL).await
}
