-- caudal_rejects: every raw line the rules refused, with a machine-readable reason.
--
--   code          parse | unknown_type | schema | filter | mapping
--   rule          event type (schema), filter name (filter), `type.column` (mapping)
--   path          JSON pointer of the failing value (schema; mappings read from a pointer)
--   message       human-readable reason
--   raw_text      the raw-archive line (UTF-8; cut at 65535 bytes, see raw_truncated)
--   raw_truncated true when raw_text is not the exact line (cut, invalid UTF-8 or NUL replaced)
--   principal     the authenticated principal that sent the event (NULL: none, or unreadable);
--                 a re-sent invalid event is rejected once per (event_id, principal)
-- Column order = shared::rules::REJECT_COLUMNS = RuleSet::reject_cells.
-- Placeholders: {schema} = quoted schema name.
CREATE TABLE IF NOT EXISTS {schema}.caudal_rejects (
  event_id VARCHAR(256),
  event_type VARCHAR(256),
  raw_key VARCHAR(1024) NOT NULL,
  raw_line BIGINT NOT NULL,
  code VARCHAR(32) NOT NULL,
  rule VARCHAR(512),
  path VARCHAR(1024),
  message VARCHAR(4096) NOT NULL,
  rule_version VARCHAR(64) NOT NULL,
  loaded_at TIMESTAMPTZ NOT NULL,
  raw_text VARCHAR(65535) NOT NULL,
  raw_truncated BOOLEAN NOT NULL,
  principal VARCHAR(2048)
) SORTKEY (loaded_at);
