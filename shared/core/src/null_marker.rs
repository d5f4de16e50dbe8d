//! The NULL marker: the text that stands for SQL NULL in the staged CSV. The rules engine's CSV
//! writer writes it for a NULL cell; its typed conversion refuses a text value equal to it, and
//! so does ingest for an event id ([`crate::event::is_valid_id`]). A crate-level leaf so that
//! `event` and `rules` (and, inside `rules`, `csv` and `types`) all depend on it one way.

/// The NULL marker written for SQL NULL (see the `COPY` options in
/// [`crate::rules::COPY_FORMAT_OPTIONS`]). Contains no quote, comma, backslash or line break, so
/// it needs no escaping in SQL or CSV.
pub const NULL_MARKER: &str = "~caudal~null~";
