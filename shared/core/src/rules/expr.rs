//! CEL expressions (the `cel` crate): compiled once from the rules file, evaluated per event
//! against three variables — `event` (the client event), `envelope` (server metadata: `id`,
//! `type`, `received_at`, `source_ip`, `user_agent`, …) and `kinesis` (`shard_id`,
//! `sequence_number`, `arrival`, `partition_key`).

use std::sync::Arc;

use serde_json::{Map, Number, Value};

use super::native::{Native, Vars};

/// The variables an expression may use.
pub const VARIABLES: [&str; 3] = ["event", "envelope", "kinesis"];

/// The shared CEL environment: the standard library plus the strings extension
/// (`lowerAscii`, `split`, `replace`, …).
pub(crate) fn environment() -> Result<Arc<cel::Env>, String> {
    let mut env = cel::Env::stdlib();
    env.add_extension(cel::extensions::strings)
        .map_err(|e| format!("cannot set up CEL: {e}"))?;
    Ok(Arc::new(env))
}

/// A compiled expression with the variables it reads.
#[derive(Debug)]
pub(crate) struct Expr {
    /// The source text, for messages.
    pub source: String,
    program: cel::Program,
    /// The same expression for the native evaluator, when it is within its subset.
    native: Option<Native>,
    /// Which of [`VARIABLES`] it reads.
    pub uses: [bool; 3],
}

impl Expr {
    /// Compile `source`; unknown variables are refused here rather than on the first event.
    pub fn compile(env: &cel::Env, source: &str) -> Result<Expr, String> {
        let program = env
            .compile(source)
            .map_err(|e| format!("CEL syntax error in {source:?}: {e}"))?;
        let refs = program.references();
        let bound = macro_variables(source);
        for var in refs.variables() {
            if !VARIABLES.contains(&var) && !bound.iter().any(|b| b == var) {
                return Err(format!(
                    "CEL expression {source:?} uses unknown variable `{var}` (available: event, envelope, kinesis)"
                ));
            }
        }
        let uses = VARIABLES.map(|v| refs.has_variable(v));
        Ok(Expr {
            source: source.to_owned(),
            native: Native::compile(program.expression()),
            program,
            uses,
        })
    }

    /// Whether the native evaluator covers this expression (when its evaluation succeeds).
    pub fn is_native(&self) -> bool {
        self.native.is_some()
    }

    /// Evaluate on one line: natively where that gives the value, otherwise with the
    /// interpreter against the scope `scope` builds (only then).
    pub fn eval_line<'c, 'v>(
        &'v self,
        vars: &Vars<'v>,
        scope: impl FnOnce() -> &'c cel::Context<'c, 'c>,
    ) -> Result<Value, String> {
        if let Some(v) = self.native.as_ref().and_then(|n| n.eval(vars)) {
            return Ok(v);
        }
        self.eval(scope())
    }

    /// Evaluate against a prepared scope.
    pub fn eval(&self, scope: &cel::Context<'_, '_>) -> Result<Value, String> {
        // The interpreter is third-party code run on client data: a panic in it must become a
        // reject of this one event, not the end of the whole batch.
        let run =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.program.execute(scope)))
                .map_err(|_| format!("CEL {:?} panicked while evaluating", self.source))?;
        let v = run.map_err(|e| format!("CEL {:?} failed: {e}", self.source))?;
        to_json(&v).map_err(|e| format!("CEL {:?} returned {e}", self.source))
    }
}

/// Names bound by comprehension macros (`list.exists(x, …)`, `all`, `exists_one`, `map`,
/// `filter`), which the reference list reports like free variables.
fn macro_variables(source: &str) -> Vec<String> {
    static RE: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(
            r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,",
        )
        .ok()
    })
    .as_ref()
    .map(|re| {
        re.captures_iter(source)
            .filter_map(|c| c.get(1))
            .map(|m| m.as_str().to_owned())
            .collect()
    })
    .unwrap_or_default()
}

/// Build a scope binding the requested variables, borrowing from the JSON values (strings are
/// not copied; the scope lives as long as the line being processed).
pub(crate) fn scope<'v>(
    env: &Arc<cel::Env>,
    needs: [bool; 3],
    values: [&dyn Fn() -> &'v Value; 3],
) -> cel::Context<'v, 'v> {
    let mut ctx = cel::Context::with_env(Arc::clone(env));
    for ((name, need), value) in VARIABLES.iter().zip(needs).zip(values) {
        if need {
            ctx.add_variable_as_val(*name, to_val(value()));
        }
    }
    ctx
}

/// JSON → CEL value, built directly (no intermediate `cel::Value`) and borrowing strings.
/// Integers become `int` whenever they fit (serde would make every positive integer a `uint`,
/// and CEL refuses `uint + int`, so `event.n + 1` would fail).
fn to_val<'v>(v: &'v Value) -> Box<dyn cel::common::value::Val + 'v> {
    use cel::common::types::{
        CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
    };
    match v {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Number(n) => match number(n) {
            Num::Int(i) => Box::new(CelInt::from(i)),
            Num::UInt(u) => Box::new(CelUInt::from(u)),
            Num::Double(d) => Box::new(CelDouble::from(d)),
        },
        Value::String(s) => Box::new(CelString::from(s.as_str())),
        Value::Array(a) => Box::new(CelList::from(a.iter().map(to_val).collect::<Vec<_>>())),
        Value::Object(o) => Box::new(CelMap::from(
            o.iter()
                .map(|(k, v)| (CelMapKey::String(CelString::from(k.as_str())), to_val(v)))
                .collect::<std::collections::HashMap<_, _>>(),
        )),
    }
}

/// A JSON number as CEL sees it.
pub(crate) enum Num {
    Int(i64),
    UInt(u64),
    Double(f64),
}

/// How JSON numbers become CEL numbers, for the interpreter and the native evaluator alike:
/// `int` whenever the value fits, then `uint`, else `double`.
pub(crate) fn number(n: &Number) -> Num {
    match (n.as_i64(), n.as_u64()) {
        (Some(i), _) => Num::Int(i),
        (None, Some(u)) => Num::UInt(u),
        _ => Num::Double(n.as_f64().unwrap_or(f64::NAN)),
    }
}

fn to_json(v: &cel::Value) -> Result<Value, String> {
    Ok(match v {
        cel::Value::Null => Value::Null,
        cel::Value::Bool(b) => Value::Bool(*b),
        cel::Value::Int(i) => Value::from(*i),
        cel::Value::UInt(u) => Value::from(*u),
        cel::Value::Float(f) => {
            Value::Number(Number::from_f64(*f).ok_or_else(|| format!("a non-finite number ({f})"))?)
        }
        cel::Value::String(s) => Value::String(s.as_str().to_owned()),
        cel::Value::List(items) => {
            Value::Array(items.iter().map(to_json).collect::<Result<Vec<_>, _>>()?)
        }
        cel::Value::Map(m) => {
            let mut out = Map::new();
            for (k, v) in m.map.iter() {
                let key = match k {
                    cel::objects::Key::String(s) => s.as_str().to_owned(),
                    cel::objects::Key::Int(i) => i.to_string(),
                    cel::objects::Key::Uint(u) => u.to_string(),
                    cel::objects::Key::Bool(b) => b.to_string(),
                };
                out.insert(key, to_json(v)?);
            }
            Value::Object(out)
        }
        cel::Value::Timestamp(t) => Value::String(t.to_rfc3339()),
        other => return Err(format!("a value with no JSON form ({other:?})")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(src: &str, event: Value) -> Result<Value, String> {
        let env = environment().unwrap();
        let e = Expr::compile(&env, src)?;
        let envl = json!({"user_agent": "Mozilla/5.0 (bot)"});
        let kin = json!({"shard_id": "s-1"});
        let (ev, en, ki) = (|| &event, || &envl, || &kin);
        let sc = scope(&env, e.uses, [&ev, &en, &ki]);
        e.eval(&sc)
    }

    #[test]
    fn evaluates_over_event_and_envelope() {
        assert_eq!(run("event.a + 1", json!({"a": 41})), Ok(json!(42)));
        assert_eq!(
            run(
                "envelope.user_agent.lowerAscii().contains('bot')",
                json!({})
            ),
            Ok(json!(true))
        );
        assert_eq!(
            run("has(event.x) ? event.x : 'none'", json!({})),
            Ok(json!("none"))
        );
        assert_eq!(run("kinesis.shard_id", json!({})), Ok(json!("s-1")));
        assert_eq!(
            run("{'k': [1, 2.5]}", json!({})),
            Ok(json!({"k": [1, 2.5]}))
        );
    }

    #[test]
    fn reports_syntax_unknown_variables_and_runtime_errors() {
        let env = environment().unwrap();
        let e = Expr::compile(&env, "event.a +").unwrap_err();
        assert!(e.contains("syntax error"), "{e}");
        let e = Expr::compile(&env, "user.a == 1").unwrap_err();
        assert!(e.contains("unknown variable `user`"), "{e}");
        let e = run("event.missing == 1", json!({})).unwrap_err();
        assert!(e.contains("failed"), "{e}");
        let e = run("1.0 / 0.0", json!({})).unwrap_err();
        assert!(e.contains("non-finite"), "{e}");
    }
}
