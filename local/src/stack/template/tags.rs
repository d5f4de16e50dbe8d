//! YAML with CloudFormation short tags (`!Ref`, `!Sub`, `!GetAtt`…) → JSON with the long-form
//! intrinsics (`{"Fn::Sub": …}`), so the resolver sees one shape only.

use serde_json::{Map, Value};

use super::{Result, TemplateError};

pub(super) fn yaml_to_json(v: serde_yaml_ng::Value, at: &str) -> Result<Value> {
    use serde_yaml_ng::Value as Y;
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| {
                        TemplateError::Syntax(format!("{at}: number {n} is not finite"))
                    })?
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(
            items
                .into_iter()
                .map(|i| yaml_to_json(i, at))
                .collect::<Result<_>>()?,
        ),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    other => {
                        return Err(TemplateError::Syntax(format!(
                            "{at}: mapping key {other:?} is not a string"
                        )));
                    }
                };
                let child = format!("{at}.{key}");
                out.insert(key, yaml_to_json(v, &child)?);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => {
            let tag = t.tag.to_string();
            let name = tag.trim_start_matches('!');
            let inner = yaml_to_json(t.value, at)?;
            let long = match name {
                "Ref" => "Ref".to_owned(),
                "Condition" => "Condition".to_owned(),
                "GetAtt" => {
                    // `!GetAtt A.B` is a string; the long form is a list.
                    let inner = match inner {
                        Value::String(s) => match s.split_once('.') {
                            Some((res, attr)) => Value::Array(vec![res.into(), attr.into()]),
                            None => {
                                return Err(TemplateError::Syntax(format!(
                                    "{at}: !GetAtt {s} needs Resource.Attribute"
                                )));
                            }
                        },
                        other => other,
                    };
                    let mut m = Map::new();
                    m.insert("Fn::GetAtt".into(), inner);
                    return Ok(Value::Object(m));
                }
                other => format!("Fn::{other}"),
            };
            let mut m = Map::new();
            m.insert(long, inner);
            Value::Object(m)
        }
    })
}

/// A one-key object whose key is an intrinsic function name.
pub(super) fn intrinsic(v: &Value) -> Option<(&str, &Value)> {
    let obj = v.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    let (k, arg) = obj.iter().next()?;
    if k == "Ref" || k.starts_with("Fn::") || (k == "Condition" && arg.is_string()) {
        Some((k.as_str(), arg))
    } else {
        None
    }
}
