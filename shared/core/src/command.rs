//! Operator commands for the loader: a message an operator (the `caudal` CLI) puts on the
//! loader's queue beside S3's notifications, naming one raw object and what to do with it.
//!
//! ```json
//! {"caudal": {"action": "reprocess", "bucket": "my-raw-bucket", "key": "raw/dt=…/….ndjson.gz"}}
//! ```
//!
//! * `load` — load the object unless the ledger holds it (what an S3 notification does; used
//!   by `caudal replay` and `caudal redrive`);
//! * `reprocess` — load the object with the loader's **current** rules: when the ledger holds
//!   it under another rule version, its rows, rejects and ledger row are replaced in the load's
//!   one transaction; when the ledger holds it under the current version, nothing happens (so a
//!   reprocess can be repeated or resumed).
//!
//! The body is told apart from an S3 notification by its top-level `caudal` member.

use serde::{Deserialize, Serialize};

/// The top-level member that marks a command message.
pub const COMMAND_MEMBER: &str = "caudal";

/// What to do with the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Load unless already loaded.
    Load,
    /// Re-apply the current rules, replacing an earlier rule version's result.
    Reprocess,
}

/// One raw object and what to do with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// What to do.
    pub action: Action,
    /// The raw bucket.
    pub bucket: String,
    /// The raw key (not URL-encoded).
    pub key: String,
}

/// The message body: `{"caudal": <command>}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandMessage {
    /// The command.
    pub caudal: Command,
}

impl CommandMessage {
    /// The message for `action` on `bucket`/`key`.
    pub fn new(action: Action, bucket: &str, key: &str) -> CommandMessage {
        CommandMessage {
            caudal: Command {
                action,
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            },
        }
    }

    /// The message body.
    pub fn to_body(&self) -> String {
        // A struct of strings and a unit enum always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_round_trips_through_its_body() {
        let m = CommandMessage::new(
            Action::Reprocess,
            "raw-b",
            "raw/dt=2026-12-03/hr=07/x.ndjson.gz",
        );
        let body = m.to_body();
        assert_eq!(
            body,
            r#"{"caudal":{"action":"reprocess","bucket":"raw-b","key":"raw/dt=2026-12-03/hr=07/x.ndjson.gz"}}"#
        );
        assert_eq!(serde_json::from_str::<CommandMessage>(&body).unwrap(), m);
        let load = CommandMessage::new(Action::Load, "b", "k").to_body();
        assert!(load.contains(r#""action":"load""#));
    }

    #[test]
    fn unknown_actions_and_members_are_refused() {
        for body in [
            r#"{"caudal":{"action":"delete","bucket":"b","key":"k"}}"#,
            r#"{"caudal":{"action":"load","bucket":"b","key":"k","force":true}}"#,
            r#"{"caudal":{"action":"load","bucket":"b"}}"#,
        ] {
            assert!(
                serde_json::from_str::<CommandMessage>(body).is_err(),
                "{body}"
            );
        }
    }
}
