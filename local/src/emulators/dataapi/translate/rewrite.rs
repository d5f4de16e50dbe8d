//! Rewriting one Redshift statement for PostgreSQL: DDL loses Redshift-only physical attributes
//! (encodings, distribution and sort keys), key constraints become informational, identity
//! columns become generated, a few functions and types are renamed.

use std::collections::HashMap;

use super::lex::{Kind, Token};
use super::significant;

const ENCODINGS: &[&str] = &[
    "RAW",
    "AZ64",
    "BYTEDICT",
    "DELTA",
    "DELTA32K",
    "LZO",
    "MOSTLY8",
    "MOSTLY16",
    "MOSTLY32",
    "RUNLENGTH",
    "TEXT255",
    "TEXT32K",
    "ZSTD",
    "AUTO",
];
const DISTSTYLES: &[&str] = &["AUTO", "EVEN", "KEY", "ALL"];

/// The sig range `(from, to)` of a key constraint starting at sig position `k` (`PRIMARY KEY`,
/// `UNIQUE`, `FOREIGN KEY … REFERENCES …`, a column's `REFERENCES …`), with its `CONSTRAINT
/// name` and the comma that separates a table constraint from its neighbours.
///
/// Redshift accepts these and never enforces them (they inform the planner); PostgreSQL would
/// enforce them, so a duplicate key that Redshift stores would fail here and hide the bug.
fn key_constraint(
    tokens: &[Token],
    sig: &[usize],
    k: usize,
    matching: impl Fn(usize) -> Option<usize>,
) -> Option<(usize, usize)> {
    let at = |j: usize| sig.get(j).map(|&i| &tokens[i]);
    let is = |j: usize, kind: Kind| at(j).is_some_and(|t| t.kind == kind);
    // Past an optional parenthesised column list that starts at sig position `j`.
    let past_parens = |j: usize| {
        if is(j, Kind::LParen) {
            matching(j)
        } else {
            j.checked_sub(1)
        }
    };
    // Past `REFERENCES name[.name] [(cols)]` whose keyword is at `j`.
    let past_references = |j: usize| {
        let mut e = j + 1;
        if !at(e).is_some_and(|t| matches!(t.kind, Kind::Word | Kind::QuotedIdent)) {
            return None;
        }
        while is(e + 1, Kind::Dot) && at(e + 2).is_some() {
            e += 2;
        }
        past_parens(e + 1)
    };
    let t = at(k)?;
    let end = if t.is_kw("PRIMARY") && at(k + 1).is_some_and(|n| n.is_kw("KEY")) {
        past_parens(k + 2)?
    } else if t.is_kw("UNIQUE") {
        past_parens(k + 1)?
    } else if t.is_kw("FOREIGN") && at(k + 1).is_some_and(|n| n.is_kw("KEY")) {
        let cols = past_parens(k + 2)?;
        if at(cols + 1).is_some_and(|n| n.is_kw("REFERENCES")) {
            past_references(cols + 1)?
        } else {
            cols
        }
    } else if t.is_kw("REFERENCES") {
        past_references(k)?
    } else {
        return None;
    };
    let mut from = k;
    if k >= 2 && at(k - 2).is_some_and(|c| c.is_kw("CONSTRAINT")) {
        from = k - 2;
    }
    let mut to = end;
    // A table constraint is an element of the column list: take one separating comma with it.
    if from > 0 && is(from - 1, Kind::Comma) {
        from -= 1;
    } else if from > 0 && is(from - 1, Kind::LParen) && is(to + 1, Kind::Comma) {
        to += 1;
    }
    Some((from, to))
}

/// Token-level rewrite of DDL attributes, types and functions.
// Long on purpose: one pass over the tokens with shared look-ahead; each rule is a short arm.
pub(super) fn rewrite(tokens: Vec<Token>, is_create: bool) -> Vec<Token> {
    let sig = significant(&tokens);
    // Position in `sig` of each token index, to look ahead over trivia.
    let mut drop = vec![false; tokens.len()];
    let mut replace: HashMap<usize, String> = HashMap::new();
    let mut append: HashMap<usize, String> = HashMap::new();
    let text_at = |k: usize| sig.get(k).map(|&i| &tokens[i]);
    // Index (in sig) of the `)` matching the `(` at sig position k.
    let matching = |k: usize| -> Option<usize> {
        let mut depth = 0i32;
        for (j, &i) in sig.iter().enumerate().skip(k) {
            match tokens[i].kind {
                Kind::LParen => depth += 1,
                Kind::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(j);
                    }
                }
                _ => {}
            }
        }
        None
    };
    let mut k = 0;
    while k < sig.len() {
        let t = &tokens[sig[k]];
        let next = text_at(k + 1);
        let prev_is_dot = k > 0 && tokens[sig[k - 1]].kind == Kind::Dot;
        let next_is_paren = next.is_some_and(|n| n.kind == Kind::LParen);
        // Drops the tokens from sig position `from` to `to`, with the trivia between them.
        let mut drop_range = |from: usize, to: usize| {
            for d in &mut drop[sig[from]..=sig[to]] {
                *d = true;
            }
        };
        if t.kind != Kind::Word || prev_is_dot {
            k += 1;
            continue;
        }
        if is_create && let Some((from, to)) = key_constraint(&tokens, &sig, k, matching) {
            drop_range(from, to);
            k = to + 1;
            continue;
        }
        if is_create {
            if t.is_kw("DISTSTYLE") && next.is_some_and(|n| DISTSTYLES.iter().any(|s| n.is_kw(s))) {
                drop_range(k, k + 1);
                k += 2;
                continue;
            }
            if t.is_kw("ENCODE") && next.is_some_and(|n| ENCODINGS.iter().any(|s| n.is_kw(s))) {
                drop_range(k, k + 1);
                k += 2;
                continue;
            }
            if t.is_kw("BACKUP") && next.is_some_and(|n| n.is_kw("YES") || n.is_kw("NO")) {
                drop_range(k, k + 1);
                k += 2;
                continue;
            }
            if t.is_kw("DISTKEY") || t.is_kw("SORTKEY") {
                let from = if k > 0
                    && (tokens[sig[k - 1]].is_kw("COMPOUND")
                        || tokens[sig[k - 1]].is_kw("INTERLEAVED"))
                {
                    k - 1
                } else {
                    k
                };
                let to = if next_is_paren {
                    matching(k + 1).unwrap_or(k)
                } else if t.is_kw("SORTKEY") && next.is_some_and(|n| n.is_kw("AUTO")) {
                    k + 1
                } else {
                    k
                };
                drop_range(from, to);
                k = to + 1;
                continue;
            }
            if t.is_kw("IDENTITY")
                && next_is_paren
                && let Some(close) = matching(k + 1)
            {
                // IDENTITY(seed, step) → GENERATED BY DEFAULT AS IDENTITY (START WITH seed
                // INCREMENT BY step); Redshift lets COPY and INSERT supply explicit values.
                let inner: Vec<&Token> = sig[k + 2..close].iter().map(|&i| &tokens[i]).collect();
                let parts: Vec<String> = inner
                    .split(|t| t.kind == Kind::Comma)
                    .map(|p| p.iter().map(|t| t.text.as_str()).collect::<String>())
                    .collect();
                if let [seed, step] = parts.as_slice() {
                    drop_range(k, close);
                    replace.insert(
                        sig[k],
                        format!(
                            "GENERATED BY DEFAULT AS IDENTITY (START WITH {seed} INCREMENT BY {step})"
                        ),
                    );
                    drop[sig[k]] = false;
                    k = close + 1;
                    continue;
                }
            }
        }
        if t.is_kw("SUPER") && !next_is_paren {
            replace.insert(sig[k], "jsonb".into());
        } else if (t.is_kw("VARCHAR") || t.is_kw("NVARCHAR") || t.is_kw("VARYING"))
            && next_is_paren
            && text_at(k + 2).is_some_and(|m| m.is_kw("MAX"))
            && text_at(k + 3).is_some_and(|c| c.kind == Kind::RParen)
        {
            // VARCHAR(MAX) → text; CHARACTER VARYING(MAX) → CHARACTER VARYING (unbounded).
            let word = if t.is_kw("VARYING") {
                "VARYING"
            } else {
                "text"
            };
            replace.insert(sig[k], word.into());
            drop_range(k + 1, k + 3);
            k += 4;
            continue;
        } else if t.is_kw("GETDATE")
            && next_is_paren
            && text_at(k + 2).is_some_and(|c| c.kind == Kind::RParen)
        {
            replace.insert(sig[k], "now()".into());
            drop_range(k + 1, k + 2);
            k += 3;
            continue;
        } else if t.is_kw("SYSDATE") && !next_is_paren {
            replace.insert(sig[k], "now()".into());
        } else if t.is_kw("NVL") && next_is_paren {
            replace.insert(sig[k], "coalesce".into());
        } else if (t.is_kw("JSON_PARSE") || t.is_kw("JSON_SERIALIZE"))
            && next_is_paren
            && let Some(close) = matching(k + 1)
        {
            let cast = if t.is_kw("JSON_PARSE") {
                "::jsonb"
            } else {
                "::text"
            };
            replace.insert(sig[k], String::new());
            append.insert(sig[close], cast.into());
        }
        k += 1;
    }
    tokens
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !drop[*i])
        .map(|(i, mut t)| {
            if let Some(r) = replace.remove(&i) {
                t.text = r;
            }
            if let Some(a) = append.remove(&i) {
                t.text.push_str(&a);
            }
            t
        })
        .collect()
}
