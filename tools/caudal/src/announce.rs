//! `caudal replay` and `caudal reprocess`: raw objects announced to the loader again, as
//! operator commands on its queue ([`caudal_core::command`]).
//!
//! * replay — objects the ledger does not hold (a lost notification, a new environment, a
//!   backfill) get a `load` command; loaded ones are skipped here, and the loader skips them
//!   too if they were loaded in the meantime.
//! * reprocess — objects the ledger holds (with `--rejected-only`: those with rejects) get a
//!   `reprocess` command; the loader re-applies its current rules and replaces each object's
//!   rows, rejects and ledger row in one transaction, and skips objects already at its rule
//!   version (so a repeated or resumed reprocess does nothing twice). Objects not loaded yet are
//!   left to their own notification.
//!
//! Objects are taken in key order; after each batch of ten the last key is saved in the
//! checkpoint, so the same command after Ctrl-C (or a crash) resumes after it.

use std::collections::BTreeMap;

use caudal_core::command::{Action, CommandMessage};

use crate::archive::{self, Selection};
use crate::queue;
use crate::run::{Checkpoint, Interrupt, progress};
use crate::{Ctx, OpError};

/// What to announce.
#[derive(Debug, Clone)]
pub struct Request {
    /// `load` (replay) or `reprocess`.
    pub action: Action,
    /// Which raw objects.
    pub selection: Selection,
    /// Reprocess only objects with rejects.
    pub rejected_only: bool,
    /// Print what would be sent; send nothing.
    pub dry_run: bool,
}

/// What was found and sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Raw objects selected.
    pub listed: u64,
    /// Skipped: done by an earlier run of this command (checkpoint).
    pub resumed_past: u64,
    /// Skipped: already loaded (replay) / not loaded yet or without rejects (reprocess).
    pub skipped: u64,
    /// Announced (or, in a dry run, to announce).
    pub announced: u64,
    /// Objects to announce by their ledger rule version (reprocess).
    pub by_rule_version: BTreeMap<String, u64>,
    /// Stopped by Ctrl-C.
    pub interrupted: bool,
    /// A dry run.
    pub dry_run: bool,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.dry_run {
            "would announce"
        } else {
            "announced"
        };
        writeln!(f, "raw objects selected: {}", self.listed)?;
        if self.resumed_past > 0 {
            writeln!(
                f,
                "done by an earlier run (checkpoint): {}",
                self.resumed_past
            )?;
        }
        writeln!(f, "skipped: {}", self.skipped)?;
        for (v, n) in &self.by_rule_version {
            writeln!(
                f,
                "  loaded with rule version {}…: {n}",
                &v[..v.len().min(12)]
            )?;
        }
        write!(f, "{verb}: {}", self.announced)?;
        if self.interrupted {
            write!(f, " (interrupted: run the same command again to resume)")?;
        }
        Ok(())
    }
}

/// Runs `req`; `checkpoint` records progress (not touched in a dry run).
pub async fn run(
    ctx: &Ctx,
    req: &Request,
    checkpoint: &Checkpoint,
    interrupt: &Interrupt,
) -> Result<Report, OpError> {
    let r = &ctx.resources;
    let listed = archive::list(
        &ctx.clients.s3,
        &r.raw_bucket,
        &req.selection.prefixes(caudal_core::keys::RAW_PREFIX),
    )
    .await?;
    let mut report = Report {
        listed: listed.len() as u64,
        dry_run: req.dry_run,
        ..Report::default()
    };
    let after = if req.dry_run {
        None
    } else {
        checkpoint.after.as_deref()
    };
    let keys: Vec<String> = listed
        .into_iter()
        .map(|o| o.key)
        .filter(|k| after.is_none_or(|a| k.as_str() > a))
        .collect();
    report.resumed_past = report.listed - keys.len() as u64;
    let (lo, hi) = req.selection.key_range(caudal_core::keys::RAW_PREFIX);
    let ledger = ctx.warehouse.ledger_range(&lo, &hi).await?;
    let todo: Vec<&String> = keys
        .iter()
        .filter(|k| {
            let row = ledger.get(*k);
            match req.action {
                Action::Load => row.is_none(),
                Action::Reprocess => row.is_some_and(|l| !req.rejected_only || l.rejected > 0),
            }
        })
        .collect();
    report.skipped = keys.len() as u64 - todo.len() as u64;
    if req.action == Action::Reprocess {
        for k in &todo {
            if let Some(l) = ledger.get(*k) {
                *report
                    .by_rule_version
                    .entry(l.rule_version.clone())
                    .or_default() += 1;
            }
        }
    }
    if req.dry_run {
        report.announced = todo.len() as u64;
        return Ok(report);
    }
    let bar = progress(todo.len() as u64, "announcing");
    for batch in todo.chunks(queue::BATCH) {
        if interrupt.stopped() {
            report.interrupted = true;
            break;
        }
        let bodies: Vec<String> = batch
            .iter()
            .map(|k| CommandMessage::new(req.action, &r.raw_bucket, k).to_body())
            .collect();
        queue::send_batch(&ctx.clients.sqs, &r.loader_queue, &bodies).await?;
        if let Some(last) = batch.last() {
            checkpoint
                .save(last)
                .map_err(|e| OpError::Checkpoint(checkpoint.path().display().to_string(), e))?;
        }
        report.announced += batch.len() as u64;
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    if !report.interrupted {
        checkpoint.clear();
    }
    Ok(report)
}

/// Waits until the loader's queue is empty (three looks in a row: the counts are approximate)
/// or `timeout` passed; the messages left.
pub async fn wait_for_loader(ctx: &Ctx, timeout: std::time::Duration) -> Result<u64, OpError> {
    let until = tokio::time::Instant::now() + timeout;
    let bar = indicatif::ProgressBar::new_spinner();
    let mut empty = 0;
    loop {
        let left = queue::depth(&ctx.clients.sqs, &ctx.resources.loader_queue)
            .await?
            .total();
        bar.set_message(format!("loader queue: {left} message(s)"));
        bar.tick();
        empty = if left == 0 { empty + 1 } else { 0 };
        if empty >= 3 || tokio::time::Instant::now() >= until {
            bar.finish_and_clear();
            return Ok(left);
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
