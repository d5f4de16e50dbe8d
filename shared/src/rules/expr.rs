//! CEL expressions (the `cel` crate): compiled once from the rules file, evaluated per event
//! against three variables — `event` (the client event), `envelope` (server metadata: `id`,
//! `type`, `received_at`, `source_ip`, `user_agent`, …) and `kinesis` (`shard_id`,
//! `sequence_number`, `arrival`, `partition_key`).

use std::sync::Arc;

use serde_json::{Map, Number, Value};

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
        for var in refs.variables() {
            if !VARIABLES.contains(&var) {
                return Err(format!(
                    "CEL expression {source:?} uses unknown variable `{var}` (available: event, envelope, kinesis)"
                ));
            }
        }
        let uses = VARIABLES.map(|v| refs.has_variable(v));
        Ok(Expr {
            source: source.to_owned(),
            program,
            uses,
        })
    }

    /// Evaluate against a prepared scope.
    pub fn eval(&self, scope: &cel::Context<'_, '_>) -> Result<Value, String> {
        let v = self
            .program
            .execute(scope)
            .map_err(|e| format!("CEL {:?} failed: {e}", self.source))?;
        to_json(&v).map_err(|e| format!("CEL {:?} returned {e}", self.source))
    }
}

/// Build a scope binding the requested variables.
pub(crate) fn scope(
    env: &Arc<cel::Env>,
    needs: [bool; 3],
    values: [&dyn Fn() -> Value; 3],
) -> Result<cel::Context<'static, 'static>, String> {
    let mut ctx = cel::Context::with_env(Arc::clone(env));
    for ((name, need), value) in VARIABLES.iter().zip(needs).zip(values) {
        if need {
            ctx.add_variable_from_value(*name, from_json(&value()));
        }
    }
    Ok(ctx)
}

/// JSON → CEL. Integers become `int` whenever they fit (serde would make every positive
/// integer a `uint`, and CEL refuses `uint + int`, so `event.n + 1` would fail).
fn from_json(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(a) => cel::Value::List(Arc::new(a.iter().map(from_json).collect())),
        Value::Object(o) => {
            let map: std::collections::HashMap<cel::objects::Key, cel::Value> = o
                .iter()
                .map(|(k, v)| (cel::objects::Key::String(Arc::new(k.clone())), from_json(v)))
                .collect();
            cel::Value::Map(cel::objects::Map { map: Arc::new(map) })
        }
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
        let ev = move || event.clone();
        let envl = || json!({"user_agent": "Mozilla/5.0 (bot)"});
        let kin = || json!({"shard_id": "s-1"});
        let sc = scope(&env, e.uses, [&ev, &envl, &kin])?;
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
