//! The per-event receipt and the status code that goes with it (docs/API.md).
//!
//! Every item of the request appears once, in request order: `accepted` (durable in Kinesis, with
//! its id), `rejected` (refused with a stable code and a reason; never retry it unchanged) or
//! `retry` (could not be made durable in time; send it again, with the same id).

use serde::Serialize;

use crate::core::Slot;
use caudal_core::retry::EntryOutcome;
use caudal_core::stream::Written;

/// What happened to one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Durable in Kinesis.
    Accepted,
    /// Refused; do not send again unchanged.
    Rejected,
    /// Not stored; send again.
    Retry,
}

/// One line of the receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// Position in the request (array index, or NDJSON line number).
    pub index: usize,
    /// Outcome.
    pub status: Status,
    /// Event id (accepted and retry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Stable rejection code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    /// Human-readable rejection reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The response body of `POST /v1/events` when the body itself was acceptable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    /// API Gateway request id (also in every envelope).
    pub request_id: String,
    /// Number of accepted items.
    pub accepted: usize,
    /// Number of rejected items.
    pub rejected: usize,
    /// Number of items to retry.
    pub retry: usize,
    /// One entry per item, in request order.
    pub results: Vec<Item>,
}

impl Receipt {
    /// Combine the prepared slots with the PutRecords outcome (`outcomes[record]`). A record
    /// without an outcome is reported as `retry`: never claim durability we did not observe.
    pub fn build(request_id: &str, slots: &[Slot<'_>], outcomes: &[EntryOutcome<Written>]) -> Self {
        let mut r = Receipt {
            request_id: request_id.to_owned(),
            accepted: 0,
            rejected: 0,
            retry: 0,
            results: Vec::with_capacity(slots.len()),
        };
        for slot in slots {
            let item = match slot {
                Slot::Rejected(rej) => {
                    r.rejected += 1;
                    Item {
                        index: rej.index,
                        status: Status::Rejected,
                        id: None,
                        code: Some(rej.code.as_str()),
                        reason: Some(rej.reason.clone()),
                    }
                }
                Slot::Send { index, id, record } => {
                    let status = match outcomes.get(*record) {
                        Some(Ok(_)) => {
                            r.accepted += 1;
                            Status::Accepted
                        }
                        _ => {
                            r.retry += 1;
                            Status::Retry
                        }
                    };
                    Item {
                        index: *index,
                        status,
                        id: Some(id.to_string()),
                        code: None,
                        reason: None,
                    }
                }
            };
            r.results.push(item);
        }
        r
    }

    /// The reason of the first rejected item, if any (for messages that quote one).
    pub fn first_rejection(&self) -> Option<&str> {
        self.results.iter().find_map(|i| i.reason.as_deref())
    }

    /// 503 when anything must be retried, else 202 when something was accepted, else 422 (every
    /// item rejected).
    pub fn status(&self) -> u16 {
        if self.retry > 0 {
            503
        } else if self.accepted > 0 {
            202
        } else {
            422
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caudal_core::event::{RejectCode, Rejection};
    use caudal_core::retry::CallError;
    use std::borrow::Cow;

    fn send(index: usize, record: usize) -> Slot<'static> {
        Slot::Send {
            index,
            id: Cow::Owned(format!("e{index}")),
            record,
        }
    }

    fn rejected(index: usize) -> Slot<'static> {
        Slot::Rejected(Rejection {
            index,
            code: RejectCode::InvalidType,
            reason: "bad".into(),
        })
    }

    fn ok() -> EntryOutcome<Written> {
        Ok(Written {
            shard_id: "s".into(),
            sequence_number: "1".into(),
        })
    }

    fn failed() -> EntryOutcome<Written> {
        Err(CallError::deadline())
    }

    #[test]
    fn statuses() {
        let slots = [send(0, 0), rejected(1), send(2, 1)];
        let all_ok = Receipt::build("r", &slots, &[ok(), ok()]);
        assert_eq!((all_ok.accepted, all_ok.rejected, all_ok.retry), (2, 1, 0));
        assert_eq!(all_ok.status(), 202);
        let one_failed = Receipt::build("r", &slots, &[ok(), failed()]);
        assert_eq!(one_failed.status(), 503);
        assert_eq!(one_failed.results[2].status, Status::Retry);
        assert_eq!(one_failed.results[2].id.as_deref(), Some("e2"));
        let none = Receipt::build("r", &[rejected(0), rejected(1)], &[]);
        assert_eq!(none.status(), 422);
        // A missing outcome is never reported as accepted.
        assert_eq!(Receipt::build("r", &slots, &[ok()]).status(), 503);
    }

    #[test]
    fn json_shape_matches_the_contract() {
        let r = Receipt::build(
            "req",
            &[send(0, 0), rejected(1), send(2, 1)],
            &[ok(), failed()],
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "request_id": "req", "accepted": 1, "rejected": 1, "retry": 1,
                "results": [
                    {"index": 0, "status": "accepted", "id": "e0"},
                    {"index": 1, "status": "rejected", "code": "invalid_type", "reason": "bad"},
                    {"index": 2, "status": "retry", "id": "e2"}
                ]
            })
        );
    }
}
