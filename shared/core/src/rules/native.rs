//! A native evaluator for the common part of CEL, run before the interpreter.
//!
//! The interpreter (the `cel` crate) needs every variable converted to its own value tree — the
//! whole event, on every line — and resolves each function by name at run time; on the shipped
//! rules file that was 40 % of the loader's time per event. [`Native`] is compiled once from the
//! interpreter's own parse tree and evaluated directly over the line's JSON and envelope,
//! borrowing strings instead of copying them.
//!
//! It is exact by construction rather than by re-implementing all of CEL: it covers the
//! **successful** evaluation of a subset (literals, the three variables, field selection and
//! `has()`, indexing, `!`, `-`, `&&`, `||`, `?:`, `==`/`!=` (heterogeneous, as CEL defines it),
//! ordering within one type, integer and floating-point arithmetic, string `+`, `in`, list
//! literals, comprehensions such as `exists`/`all`, and `size`, `double`, `int`, `string`,
//! `contains`, `startsWith`, `endsWith`, `lowerAscii`, `upperAscii`, `split`). An expression
//! outside the subset is not compiled ([`Native::compile`] gives `None`); and wherever an
//! evaluation would fail, or meets a case whose CEL answer is subtle (a missing key, a type
//! mismatch, an overflow, mixed int/double ordering, list or map equality), [`Native::eval`]
//! gives `None` and the caller asks the interpreter, which then produces the answer — value or
//! error message — for that line. A differential test holds the two to the same values.

use std::borrow::Cow;

use cel::IdedExpr;
use cel::common::ast::{CallExpr, ComprehensionExpr, Expr, LiteralValue};
use serde_json::{Map, Number, Value};

use super::expr::{Num, number};
use crate::envelope::Envelope;

/// The variables of one line, as the evaluator reads them.
pub(crate) struct Vars<'v> {
    /// The client event.
    pub event: &'v Value,
    /// The envelope (its JSON view has the members of [`ENVELOPE_MEMBERS`]).
    pub envelope: &'v Envelope<'v>,
    /// The Kinesis coordinates as JSON, built on first use.
    pub kinesis: &'v dyn Fn() -> &'v Value,
}

/// The members of the envelope's JSON view (`expr::scope`'s `envelope`), all always present.
pub(crate) const ENVELOPE_MEMBERS: [&str; 12] = [
    "v",
    "id",
    "id_generated",
    "type",
    "received_at",
    "request_id",
    "source_ip",
    "user_agent",
    "principal",
    "stage",
    "protocol",
    "event_time",
];

/// A compiled expression of the supported subset.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Native {
    /// A literal.
    Lit(Lit),
    /// One of the line's variables, where no comprehension binds its name (resolved when
    /// compiling rather than by name on every evaluation).
    Var(LineVar),
    /// A variable bound by a comprehension, or an unknown name (which defers).
    Ident(String),
    /// `operand.field`, or `has(operand.field)` when `test`.
    Select {
        operand: Box<Native>,
        field: String,
        test: bool,
    },
    /// A list literal.
    List(Vec<Native>),
    /// An operator or function.
    Call(Func, Vec<Native>),
    /// A comprehension (what `exists`, `all`, … expand to).
    Loop(Box<Loop>),
}

/// The variables of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineVar {
    Event,
    Envelope,
    Kinesis,
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(String),
}

/// A comprehension's parts (see the CEL specification's macro expansion).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Loop {
    range: Native,
    iter_var: String,
    accu_var: String,
    init: Native,
    cond: Native,
    step: Native,
    result: Native,
}

/// The operators and functions of the subset. Methods take their target as the first argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    And,
    Or,
    Not,
    NotStrictlyFalse,
    Cond,
    Neg,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Index,
    In,
    Size,
    Double,
    Int,
    String,
    Contains,
    StartsWith,
    EndsWith,
    LowerAscii,
    UpperAscii,
    Split,
}

impl Func {
    /// The function named `name` called with `arity` arguments (target included), if supported.
    fn of(name: &str, method: bool, arity: usize) -> Option<Func> {
        use Func::*;
        let f = match (name, method) {
            ("_&&_", false) => And,
            ("_||_", false) => Or,
            ("!_", false) => Not,
            ("@not_strictly_false", false) => NotStrictlyFalse,
            ("_?_:_", false) => Cond,
            ("-_", false) => Neg,
            ("_==_", false) => Eq,
            ("_!=_", false) => Ne,
            ("_<_", false) => Lt,
            ("_<=_", false) => Le,
            ("_>_", false) => Gt,
            ("_>=_", false) => Ge,
            ("_+_", false) => Add,
            ("_-_", false) => Sub,
            ("_*_", false) => Mul,
            ("_/_", false) => Div,
            ("_%_", false) => Rem,
            ("_[_]", false) => Index,
            ("@in", false) => In,
            ("size", _) => Size,
            ("double", false) => Double,
            ("int", false) => Int,
            ("string", false) => String,
            ("contains", true) => Contains,
            ("startsWith", true) => StartsWith,
            ("endsWith", true) => EndsWith,
            ("lowerAscii", true) => LowerAscii,
            ("upperAscii", true) => UpperAscii,
            ("split", true) => Split,
            _ => return None,
        };
        let want = match f {
            Cond => 3,
            Not | NotStrictlyFalse | Neg | Size | Double | Int | String | LowerAscii
            | UpperAscii => 1,
            _ => 2,
        };
        (arity == want).then_some(f)
    }
}

/// A value during evaluation, borrowing from the line where it can.
#[derive(Debug, Clone)]
enum V<'v> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(Cow<'v, str>),
    /// A JSON array of the line.
    Array(&'v [Value]),
    /// A JSON object of the line.
    Object(&'v Map<String, Value>),
    /// A list built by the expression.
    List(Vec<V<'v>>),
    /// The envelope (its members are read one at a time).
    Envelope,
}

/// "Ask the interpreter": the evaluation left the subset or would fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bail;

type R<'v> = Result<V<'v>, Bail>;

/// The variables bound by the comprehensions being evaluated, innermost last.
type Scope<'v> = Vec<(&'v str, V<'v>)>;

impl Native {
    /// Compile the interpreter's parse tree; `None` when it uses anything outside the subset.
    pub fn compile(e: &IdedExpr) -> Option<Native> {
        Self::compile_in(e, &mut Vec::new())
    }

    /// Compile `e` where the comprehensions around it bind `bound` (innermost last).
    fn compile_in(e: &IdedExpr, bound: &mut Vec<String>) -> Option<Native> {
        Some(match &e.expr {
            Expr::Literal(l) => Native::Lit(match l {
                LiteralValue::Null => Lit::Null,
                LiteralValue::Boolean(b) => Lit::Bool(*b.inner()),
                LiteralValue::Int(i) => Lit::Int(*i.inner()),
                LiteralValue::UInt(u) => Lit::UInt(*u.inner()),
                LiteralValue::Double(d) => Lit::Double(*d.inner()),
                LiteralValue::String(s) => Lit::Str(s.inner().to_owned()),
                LiteralValue::Bytes(_) => return None,
            }),
            Expr::Ident(name) if bound.contains(name) => Native::Ident(name.clone()),
            Expr::Ident(name) => match name.as_str() {
                "event" => Native::Var(LineVar::Event),
                "envelope" => Native::Var(LineVar::Envelope),
                "kinesis" => Native::Var(LineVar::Kinesis),
                _ => Native::Ident(name.clone()),
            },
            Expr::Select(s) => Native::Select {
                operand: Box::new(Native::compile_in(&s.operand, bound)?),
                field: s.field.clone(),
                test: s.test,
            },
            Expr::List(l) if l.optional_indices.is_empty() => Native::List(
                l.elements
                    .iter()
                    .map(|e| Native::compile_in(e, bound))
                    .collect::<Option<_>>()?,
            ),
            Expr::Call(c) => Self::compile_call(c, bound)?,
            Expr::Comprehension(c) => Self::compile_loop(c, bound)?,
            _ => return None,
        })
    }

    fn compile_call(c: &CallExpr, bound: &mut Vec<String>) -> Option<Native> {
        let mut args = Vec::with_capacity(c.args.len() + 1);
        if let Some(t) = &c.target {
            args.push(Native::compile_in(t, bound)?);
        }
        for a in &c.args {
            args.push(Native::compile_in(a, bound)?);
        }
        let f = Func::of(&c.func_name, c.target.is_some(), args.len())?;
        Some(Native::Call(f, args))
    }

    /// A comprehension: its range and initial value see the names bound around it; its
    /// condition and result also the accumulator; its step the accumulator and the iteration
    /// variable (as [`Native::run`] binds them).
    fn compile_loop(c: &ComprehensionExpr, bound: &mut Vec<String>) -> Option<Native> {
        if c.iter_var2.is_some() {
            return None;
        }
        let range = Native::compile_in(&c.iter_range, bound)?;
        let init = Native::compile_in(&c.accu_init, bound)?;
        let base = bound.len();
        bound.push(c.accu_var.clone());
        let cond = Native::compile_in(&c.loop_cond, bound);
        let result = Native::compile_in(&c.result, bound);
        bound.push(c.iter_var.clone());
        let step = Native::compile_in(&c.loop_step, bound);
        bound.truncate(base);
        Some(Native::Loop(Box::new(Loop {
            range,
            iter_var: c.iter_var.clone(),
            accu_var: c.accu_var.clone(),
            init,
            cond: cond?,
            step: step?,
            result: result?,
        })))
    }

    /// The expression's value on one line, exactly as the interpreter would give it; `None`
    /// when the interpreter must be asked (see the module documentation).
    pub fn eval<'v>(&'v self, vars: &Vars<'v>) -> Option<Value> {
        let mut scope = Vec::new();
        let v = self.run(vars, &mut scope).ok()?;
        to_json(&v, vars.envelope)
    }

    fn run<'v>(&'v self, vars: &Vars<'v>, scope: &mut Scope<'v>) -> R<'v> {
        match self {
            Native::Lit(l) => Ok(match l {
                Lit::Null => V::Null,
                Lit::Bool(b) => V::Bool(*b),
                Lit::Int(i) => V::Int(*i),
                Lit::UInt(u) => V::UInt(*u),
                Lit::Double(d) => V::Double(*d),
                Lit::Str(s) => V::Str(Cow::Borrowed(s)),
            }),
            Native::Var(LineVar::Event) => Ok(of_json(vars.event)),
            Native::Var(LineVar::Envelope) => Ok(V::Envelope),
            Native::Var(LineVar::Kinesis) => Ok(of_json((vars.kinesis)())),
            Native::Ident(name) => scope
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .ok_or(Bail),
            Native::Select {
                operand,
                field,
                test,
            } => {
                let v = operand.run(vars, scope)?;
                select(v, field, *test, vars.envelope)
            }
            Native::List(items) => Ok(V::List(
                items
                    .iter()
                    .map(|i| i.run(vars, scope))
                    .collect::<Result<_, _>>()?,
            )),
            Native::Call(f, args) => call(*f, args, vars, scope),
            Native::Loop(l) => {
                let range = l.range.run(vars, scope)?;
                let items: Vec<V<'v>> = match range {
                    V::Array(a) => a.iter().map(of_json).collect(),
                    V::List(l) => l,
                    _ => return Err(Bail),
                };
                let mut accu = l.init.run(vars, scope)?;
                let base = scope.len();
                for item in items {
                    scope.truncate(base);
                    scope.push((l.accu_var.as_str(), accu.clone()));
                    if !truth(l.cond.run(vars, scope)?)? {
                        break;
                    }
                    scope.push((l.iter_var.as_str(), item));
                    accu = l.step.run(vars, scope)?;
                }
                scope.truncate(base);
                scope.push((l.accu_var.as_str(), accu));
                let out = l.result.run(vars, scope);
                scope.truncate(base);
                out
            }
        }
    }
}

/// JSON → value, as `expr::to_val` converts it (numbers by the same [`number`]).
fn of_json(v: &Value) -> V<'_> {
    match v {
        Value::Null => V::Null,
        Value::Bool(b) => V::Bool(*b),
        Value::Number(n) => match number(n) {
            Num::Int(i) => V::Int(i),
            Num::UInt(u) => V::UInt(u),
            Num::Double(d) => V::Double(d),
        },
        Value::String(s) => V::Str(Cow::Borrowed(s)),
        Value::Array(a) => V::Array(a),
        Value::Object(o) => V::Object(o),
    }
}

fn opt_str<'v>(s: &'v Option<Cow<'v, str>>) -> V<'v> {
    s.as_deref().map_or(V::Null, |s| V::Str(Cow::Borrowed(s)))
}

/// A member of the envelope's JSON view.
fn envelope_member<'v>(e: &'v Envelope<'v>, field: &str) -> Option<V<'v>> {
    Some(match field {
        "v" => V::Int(i64::from(e.v)),
        "id" => V::Str(Cow::Borrowed(&e.id)),
        "id_generated" => V::Bool(e.id_generated),
        "type" => V::Str(Cow::Borrowed(&e.event_type)),
        "received_at" => opt_str(&e.received_at),
        "request_id" => opt_str(&e.request_id),
        "source_ip" => opt_str(&e.source_ip),
        "user_agent" => opt_str(&e.user_agent),
        "principal" => opt_str(&e.principal),
        "stage" => opt_str(&e.stage),
        "protocol" => opt_str(&e.protocol),
        "event_time" => opt_str(&e.event_time),
        _ => return None,
    })
}

fn select<'v>(v: V<'v>, field: &str, test: bool, env: &'v Envelope<'v>) -> R<'v> {
    match (v, test) {
        (V::Object(o), false) => o.get(field).map(of_json).ok_or(Bail),
        (V::Object(o), true) => Ok(V::Bool(o.contains_key(field))),
        (V::Envelope, false) => envelope_member(env, field).ok_or(Bail),
        (V::Envelope, true) => Ok(V::Bool(ENVELOPE_MEMBERS.contains(&field))),
        _ => Err(Bail),
    }
}

fn truth(v: V<'_>) -> Result<bool, Bail> {
    match v {
        V::Bool(b) => Ok(b),
        _ => Err(Bail),
    }
}

fn string(v: V<'_>) -> Result<Cow<'_, str>, Bail> {
    match v {
        V::Str(s) => Ok(s),
        _ => Err(Bail),
    }
}

/// The kinds heterogeneous equality tells apart (numbers are one kind).
#[derive(PartialEq, Eq)]
enum Kind {
    Null,
    Bool,
    Number,
    Str,
    List,
    Map,
}

fn kind(v: &V<'_>) -> Kind {
    match v {
        V::Null => Kind::Null,
        V::Bool(_) => Kind::Bool,
        V::Int(_) | V::UInt(_) | V::Double(_) => Kind::Number,
        V::Str(_) => Kind::Str,
        V::Array(_) | V::List(_) => Kind::List,
        V::Object(_) | V::Envelope => Kind::Map,
    }
}

/// `a == b`: values of different kinds are unequal; lists, maps and an `int`/`uint` against a
/// `double` are left to the interpreter.
fn equal(a: &V<'_>, b: &V<'_>) -> Result<bool, Bail> {
    if kind(a) != kind(b) {
        return Ok(false);
    }
    match (a, b) {
        (V::Null, V::Null) => Ok(true),
        (V::Bool(x), V::Bool(y)) => Ok(x == y),
        (V::Str(x), V::Str(y)) => Ok(x == y),
        (V::Int(x), V::Int(y)) => Ok(x == y),
        (V::UInt(x), V::UInt(y)) => Ok(x == y),
        (V::Int(i), V::UInt(u)) | (V::UInt(u), V::Int(i)) => {
            Ok(u64::try_from(*i).is_ok_and(|i| i == *u))
        }
        #[allow(clippy::float_cmp, reason = "CEL's == on doubles is IEEE equality")]
        (V::Double(x), V::Double(y)) => Ok(x == y),
        _ => Err(Bail),
    }
}

/// `a` ordered against `b`, within one type.
fn order(a: &V<'_>, b: &V<'_>) -> Result<std::cmp::Ordering, Bail> {
    match (a, b) {
        (V::Int(x), V::Int(y)) => Ok(x.cmp(y)),
        (V::UInt(x), V::UInt(y)) => Ok(x.cmp(y)),
        (V::Str(x), V::Str(y)) => Ok(x.cmp(y)),
        // NaN is unordered: leave it to the interpreter.
        (V::Double(x), V::Double(y)) => x.partial_cmp(y).ok_or(Bail),
        _ => Err(Bail),
    }
}

fn arith<'v>(f: Func, a: V<'v>, b: V<'v>) -> R<'v> {
    let int = |x: i64, y: i64| match f {
        Func::Add => x.checked_add(y),
        Func::Sub => x.checked_sub(y),
        Func::Mul => x.checked_mul(y),
        Func::Div => x.checked_div(y),
        _ => x.checked_rem(y),
    };
    let uint = |x: u64, y: u64| match f {
        Func::Add => x.checked_add(y),
        Func::Sub => x.checked_sub(y),
        Func::Mul => x.checked_mul(y),
        Func::Div => x.checked_div(y),
        _ => x.checked_rem(y),
    };
    match (a, b) {
        (V::Int(x), V::Int(y)) => int(x, y).map(V::Int).ok_or(Bail),
        (V::UInt(x), V::UInt(y)) => uint(x, y).map(V::UInt).ok_or(Bail),
        (V::Double(x), V::Double(y)) => match f {
            Func::Add => Ok(V::Double(x + y)),
            Func::Sub => Ok(V::Double(x - y)),
            Func::Mul => Ok(V::Double(x * y)),
            Func::Div => Ok(V::Double(x / y)),
            _ => Err(Bail),
        },
        (V::Str(x), V::Str(y)) if f == Func::Add => Ok(V::Str(Cow::Owned(x.into_owned() + &y))),
        _ => Err(Bail),
    }
}

fn call<'v>(f: Func, args: &'v [Native], vars: &Vars<'v>, scope: &mut Scope<'v>) -> R<'v> {
    let mut arg = |i: usize| args.get(i).ok_or(Bail)?.run(vars, scope);
    match f {
        Func::And | Func::Or => {
            // `false && x` is false and `true || x` true whatever `x` is (even an error).
            let decided = f == Func::Or;
            if truth(arg(0)?)? == decided {
                return Ok(V::Bool(decided));
            }
            Ok(V::Bool(truth(arg(1)?)?))
        }
        Func::Cond => {
            let pick = if truth(arg(0)?)? { 1 } else { 2 };
            arg(pick)
        }
        Func::Not => Ok(V::Bool(!truth(arg(0)?)?)),
        Func::NotStrictlyFalse => Ok(V::Bool(truth(arg(0)?)?)),
        Func::Neg => match arg(0)? {
            V::Int(i) => i.checked_neg().map(V::Int).ok_or(Bail),
            V::Double(d) => Ok(V::Double(-d)),
            _ => Err(Bail),
        },
        Func::Eq | Func::Ne => {
            let (a, b) = (arg(0)?, arg(1)?);
            Ok(V::Bool(equal(&a, &b)? == (f == Func::Eq)))
        }
        Func::Lt | Func::Le | Func::Gt | Func::Ge => {
            use std::cmp::Ordering::{Greater, Less};
            let (a, b) = (arg(0)?, arg(1)?);
            let o = order(&a, &b)?;
            Ok(V::Bool(match f {
                Func::Lt => o == Less,
                Func::Le => o != Greater,
                Func::Gt => o == Greater,
                _ => o != Less,
            }))
        }
        Func::Add | Func::Sub | Func::Mul | Func::Div | Func::Rem => {
            let (a, b) = (arg(0)?, arg(1)?);
            arith(f, a, b)
        }
        Func::Index => match (arg(0)?, arg(1)?) {
            (V::Array(a), V::Int(i)) => {
                let at = usize::try_from(i).map_err(|_| Bail)?;
                a.get(at).map(of_json).ok_or(Bail)
            }
            (V::List(mut l), V::Int(i)) => {
                let at = usize::try_from(i).map_err(|_| Bail)?;
                if at < l.len() {
                    Ok(l.swap_remove(at))
                } else {
                    Err(Bail)
                }
            }
            (V::Object(o), V::Str(k)) => o.get(k.as_ref()).map(of_json).ok_or(Bail),
            _ => Err(Bail),
        },
        Func::In => {
            let (x, within) = (arg(0)?, arg(1)?);
            let found = match within {
                V::Array(a) => {
                    let mut found = false;
                    for item in a {
                        found = found || equal(&x, &of_json(item))?;
                    }
                    found
                }
                V::List(l) => {
                    let mut found = false;
                    for item in &l {
                        found = found || equal(&x, item)?;
                    }
                    found
                }
                V::Object(o) => o.contains_key(string(x)?.as_ref()),
                _ => return Err(Bail),
            };
            Ok(V::Bool(found))
        }
        Func::Size => {
            let n = match arg(0)? {
                V::Str(s) => s.chars().count(),
                V::Array(a) => a.len(),
                V::List(l) => l.len(),
                V::Object(o) => o.len(),
                _ => return Err(Bail),
            };
            i64::try_from(n).map(V::Int).map_err(|_| Bail)
        }
        Func::Double => match arg(0)? {
            #[allow(
                clippy::cast_precision_loss,
                reason = "CEL's double() rounds as a cast does"
            )]
            V::Int(i) => Ok(V::Double(i as f64)),
            #[allow(
                clippy::cast_precision_loss,
                reason = "CEL's double() rounds as a cast does"
            )]
            V::UInt(u) => Ok(V::Double(u as f64)),
            V::Double(d) => Ok(V::Double(d)),
            _ => Err(Bail),
        },
        Func::Int => match arg(0)? {
            V::Int(i) => Ok(V::Int(i)),
            _ => Err(Bail),
        },
        Func::String => match arg(0)? {
            V::Str(s) => Ok(V::Str(s)),
            _ => Err(Bail),
        },
        // `s.lowerAscii().contains(p)` (a bot filter's shape, often inside a loop over words):
        // compared in place instead of lower-casing a copy of `s` on every call.
        Func::Contains | Func::StartsWith | Func::EndsWith
            if let [Native::Call(Func::LowerAscii, inner), needle] = args
                && let [inner] = &inner[..] =>
        {
            let s = string(inner.run(vars, scope)?)?;
            let p = string(needle.run(vars, scope)?)?;
            Ok(V::Bool(lowered_matches(f, &s, &p)))
        }
        Func::Contains | Func::StartsWith | Func::EndsWith => {
            let (s, p) = (string(arg(0)?)?, string(arg(1)?)?);
            Ok(V::Bool(match f {
                Func::Contains => s.contains(p.as_ref()),
                Func::StartsWith => s.starts_with(p.as_ref()),
                _ => s.ends_with(p.as_ref()),
            }))
        }
        Func::LowerAscii => Ok(V::Str(Cow::Owned(string(arg(0)?)?.to_ascii_lowercase()))),
        Func::UpperAscii => Ok(V::Str(Cow::Owned(string(arg(0)?)?.to_ascii_uppercase()))),
        Func::Split => {
            let (s, sep) = (string(arg(0)?)?, string(arg(1)?)?);
            if sep.is_empty() {
                return Err(Bail);
            }
            Ok(V::List(match s {
                // Parts of a string of the line borrow from it.
                Cow::Borrowed(s) => s
                    .split(sep.as_ref())
                    .map(|p| V::Str(Cow::Borrowed(p)))
                    .collect(),
                Cow::Owned(s) => s
                    .split(sep.as_ref())
                    .map(|p| V::Str(Cow::Owned(p.to_owned())))
                    .collect(),
            }))
        }
    }
}

/// `s.lowerAscii()` against `p` by `f` (`contains`, `startsWith` or `endsWith`), without the
/// lower-cased copy. `lowerAscii` changes ASCII letters only, byte for byte, so the copy's
/// slice at any offset is that slice of `s` lower-cased: it equals `p` exactly when `p` has no
/// ASCII capital and the slice equals `p` ignoring ASCII case.
fn lowered_matches(f: Func, s: &str, p: &str) -> bool {
    let (s, p) = (s.as_bytes(), p.as_bytes());
    if p.iter().any(u8::is_ascii_uppercase) || p.len() > s.len() {
        return false;
    }
    let at = |i: usize| s[i..i + p.len()].eq_ignore_ascii_case(p);
    match f {
        Func::StartsWith => at(0),
        Func::EndsWith => at(s.len() - p.len()),
        _ => (0..=s.len() - p.len()).any(at),
    }
}

/// The envelope's JSON view, as CEL and `/envelope/…` pointers see it: the members of
/// [`ENVELOPE_MEMBERS`], absent values as `null`.
pub(crate) fn envelope_json(e: &Envelope<'_>) -> Value {
    to_json(&V::Envelope, e).unwrap_or(Value::Null)
}

/// What the JSON pointer `pointer` finds in the envelope's JSON view, when it names one member
/// (`/source_ip`): read from the envelope, without building the view. `None` otherwise (ask the
/// view).
pub(crate) fn envelope_pointer(e: &Envelope<'_>, pointer: &str) -> Option<Value> {
    let member = pointer.strip_prefix('/')?;
    if member.contains(['/', '~']) {
        return None;
    }
    to_json(&envelope_member(e, member)?, e)
}

/// The result as the interpreter's result converts to JSON (`expr::to_json`); `None` for a
/// non-finite number (which the interpreter's caller refuses with its own message).
fn to_json(v: &V<'_>, env: &Envelope<'_>) -> Option<Value> {
    Some(match v {
        V::Null => Value::Null,
        V::Bool(b) => Value::Bool(*b),
        V::Int(i) => Value::from(*i),
        V::UInt(u) => Value::from(*u),
        V::Double(d) => Value::Number(Number::from_f64(*d)?),
        V::Str(s) => Value::String(s.clone().into_owned()),
        V::Array(a) => Value::Array(a.to_vec()),
        V::Object(o) => Value::Object((*o).clone()),
        V::List(l) => Value::Array(l.iter().map(|i| to_json(i, env)).collect::<Option<_>>()?),
        V::Envelope => {
            let mut out = Map::new();
            for m in ENVELOPE_MEMBERS {
                out.insert(m.to_owned(), to_json(&envelope_member(env, m)?, env)?);
            }
            Value::Object(out)
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::envelope::{EventRef, RequestMeta};
    use crate::rules::expr::{self, Expr};

    /// An envelope as the loader reads one, with a user agent or none.
    fn envelope_bytes(user_agent: Option<&str>) -> Vec<u8> {
        let meta = RequestMeta {
            request_id: "req-1".into(),
            received_at: Some("2026-11-25T19:55:17.123Z".into()),
            source_ip: Some("203.0.113.9".into()),
            user_agent: user_agent.map(str::to_owned),
            principal: None,
            stage: Some("$default".into()),
            protocol: None,
        };
        let ev = EventRef {
            id: "e-1",
            id_generated: false,
            event_type: "page_view",
            raw: b"{}",
            event_time: None,
        };
        crate::envelope::encode(&ev, &meta)
    }

    fn kinesis() -> Value {
        json!({"shard_id": "shardId-000000000001", "sequence_number": "4961", "partition_key": "u-1"})
    }

    /// Both evaluators on one expression and line: (native, interpreter).
    fn both(
        src: &str,
        event: &Value,
        user_agent: Option<&str>,
    ) -> (Option<Value>, Result<Value, String>) {
        let (cel, compiled, native) = compiled(src);
        let bytes = envelope_bytes(user_agent);
        let env = Envelope::parse(&bytes).unwrap();
        let kin = kinesis();
        let native = native.as_ref().and_then(|n| {
            let k = || &kin;
            n.eval(&Vars {
                event,
                envelope: &env,
                kinesis: &k,
            })
        });
        let env_json = envelope_json(&env);
        let (ev, en, ki) = (|| event, || &env_json, || &kin);
        let scope = expr::scope(cel, compiled.uses, [&ev, &en, &ki]);
        (native, compiled.eval(&scope))
    }

    /// The CEL environment, and `src` compiled for the interpreter and natively (once each).
    fn compiled(
        src: &str,
    ) -> (
        &'static Arc<cel::Env>,
        &'static Expr,
        &'static Option<Native>,
    ) {
        type Compiled = (Expr, Option<Native>);
        static CEL: OnceLock<Arc<cel::Env>> = OnceLock::new();
        static CACHE: OnceLock<Mutex<HashMap<String, &'static Compiled>>> = OnceLock::new();
        let cel = CEL.get_or_init(|| expr::environment().unwrap());
        let mut cache = CACHE.get_or_init(Mutex::default).lock().unwrap();
        let entry = cache.entry(src.to_owned()).or_insert_with(|| {
            let program = cel.compile(src).unwrap();
            let native = Native::compile(program.expression());
            Box::leak(Box::new((Expr::compile(cel, src).unwrap(), native)))
        });
        (cel, &entry.0, &entry.1)
    }

    /// The native value, after checking the interpreter gives the same.
    fn agreed(src: &str, event: &Value, user_agent: Option<&str>) -> Option<Value> {
        let (native, interpreted) = both(src, event, user_agent);
        if let Some(v) = &native {
            assert_eq!(
                interpreted.as_ref(),
                Ok(v),
                "{src} on {event} (user agent {user_agent:?})"
            );
        }
        native
    }

    /// The expressions of the shipped rules file, then one or more per construct and function
    /// of the subset, then some outside it.
    const EXPRESSIONS: &[&str] = &[
        "envelope.user_agent != null && ['bot', 'crawler', 'spider', 'headlesschrome', 'uptime'].exists(w, envelope.user_agent.lowerAscii().contains(w))",
        "has(event.test) && event.test == true",
        "event.page.url.contains('/healthz')",
        "has(event.page.path) ? event.page.path : event.page.url.split('?')[0].split('#')[0]",
        "has(event.device) && has(event.device.mobile) ? event.device.mobile : (envelope.user_agent != null && envelope.user_agent.contains('Mobile'))",
        "has(event.items) ? size(event.items) : 0",
        "double(event.amount) >= 500.0",
        "event.email.split('@')[1]",
        "has(event.result_count) ? event.result_count > 0 : null",
        "event.a",
        "event.a == 1",
        "event.a != 1",
        "event.a == 1.5",
        "event.a == 'x'",
        "event.a == null",
        "event.a == event.b",
        "event.a != event.b",
        "event.a < event.b",
        "event.a <= event.b",
        "event.a > event.b",
        "event.a >= event.b",
        "event.a + event.b",
        "event.a - event.b",
        "event.a * event.b",
        "event.a / event.b",
        "event.a % event.b",
        "-event.a",
        "!event.a",
        "event.a && event.b",
        "event.a || event.b",
        "event.a ? event.b : 'no'",
        "has(event.a)",
        "has(event.o.a)",
        "event.o.a",
        "event.o['a']",
        "event.l[0]",
        "event.l[1]",
        "event.l[-1]",
        "size(event.a)",
        "event.s.size()",
        "size(event.l)",
        "size(event.o)",
        "double(event.a)",
        "int(event.a)",
        "string(event.a)",
        "event.s.contains('b')",
        "event.s.startsWith('a')",
        "event.s.endsWith('c')",
        "event.s.lowerAscii()",
        "event.s.upperAscii()",
        "event.s.lowerAscii().contains(event.a)",
        "event.s.lowerAscii().startsWith(event.a)",
        "event.s.lowerAscii().endsWith(event.a)",
        "event.s.lowerAscii().contains('b')",
        "event.s.split('b')",
        "event.s.split('')",
        "event.s + event.s",
        "event.a in event.l",
        "'a' in event.o",
        "event.a in [1, 'x', null, 2.5]",
        "event.l.exists(x, x == event.a)",
        "event.l.exists(event, event == 1)",
        "[1, 2].exists(kinesis, kinesis == 2) && kinesis.shard_id != null",
        "event.l.map(x, event.l.exists(y, y == x && x != event.a))",
        "event.l.all(envelope, envelope != null) || envelope.id == 'x'",
        "event.l.all(x, x != null)",
        "event.l.exists_one(x, x == 1)",
        "event.l.map(x, x)",
        "event.l.filter(x, x != null)",
        "[event.a, event.s, 1u, -2, 0.5, true, null]",
        "event",
        "event.o",
        "event.l",
        "envelope",
        "envelope.id",
        "envelope.v",
        "envelope.id_generated",
        "envelope.type",
        "envelope.principal",
        "envelope.missing",
        "has(envelope.user_agent)",
        "has(envelope.missing)",
        "kinesis.shard_id",
        "kinesis.missing",
        "1.0 / 0.0",
        "9223372036854775807 + event.a",
        "event.a == {'a': 1}",
        "event.o == {'a': 1}",
        "event.s.replace('a', 'b')",
        "b'x' == b'x'",
        "event.s.matches('^a')",
    ];

    #[test]
    fn the_shipped_rules_and_the_subset_compile() {
        let cel = expr::environment().unwrap();
        let outside = [
            "event.s.replace('a', 'b')",
            "b'x' == b'x'",
            "event.s.matches('^a')",
            "event.a == {'a': 1}",
            "event.o == {'a': 1}",
        ];
        for src in EXPRESSIONS {
            let program = cel.compile(src).unwrap();
            let native = Native::compile(program.expression());
            assert_eq!(native.is_none(), outside.contains(src), "{src}");
        }
        // A list with an optional element (`?x` adds x only when it has a value) is outside.
        let optional = cel.compile("[?event.a]").unwrap();
        assert_eq!(Native::compile(optional.expression()), None);
    }

    /// The answers the native evaluator gives itself (so it cannot pass by always deferring).
    #[test]
    fn native_answers_on_the_happy_path() {
        let page = json!({"type": "page_view", "page": {"url": "https://x.example/p?q=1#top"}, "device": {"mobile": true}, "test": false});
        let cases: &[(&str, &Value, Option<&str>, Value)] = &[
            (
                EXPRESSIONS[0],
                &page,
                Some("Mozilla/5.0 (compatible; Googlebot/2.1)"),
                json!(true),
            ),
            (
                EXPRESSIONS[0],
                &page,
                Some("Mozilla/5.0 (iPhone) Mobile"),
                json!(false),
            ),
            (EXPRESSIONS[0], &page, None, json!(false)),
            // A comprehension's variable hides the line's variable of the same name.
            (
                "[1, 2].exists(event, event == 2) && event.test == false",
                &page,
                None,
                json!(true),
            ),
            (
                "[envelope.id + '!'].exists(envelope, envelope == 'e-1!')",
                &page,
                None,
                json!(true),
            ),
            (
                "event.device.mobile && [1].all(x, [2].exists(x, x == 2) && x == 1)",
                &page,
                None,
                json!(true),
            ),
            (EXPRESSIONS[0], &page, Some("UptimeRobot/2.0"), json!(true)),
            (EXPRESSIONS[0], &page, Some("HeadlessChrom"), json!(false)),
            (EXPRESSIONS[1], &page, None, json!(false)),
            (EXPRESSIONS[1], &json!({"test": true}), None, json!(true)),
            (EXPRESSIONS[1], &json!({}), None, json!(false)),
            (EXPRESSIONS[2], &page, None, json!(false)),
            (EXPRESSIONS[3], &page, None, json!("https://x.example/p")),
            (
                EXPRESSIONS[3],
                &json!({"page": {"path": "/p", "url": "u"}}),
                None,
                json!("/p"),
            ),
            (EXPRESSIONS[4], &page, None, json!(true)),
            (EXPRESSIONS[4], &json!({}), Some("x Mobile y"), json!(true)),
            (EXPRESSIONS[4], &json!({"device": {}}), None, json!(false)),
            (EXPRESSIONS[5], &json!({"items": [1, 2, 3]}), None, json!(3)),
            (EXPRESSIONS[5], &json!({}), None, json!(0)),
            (EXPRESSIONS[6], &json!({"amount": 500}), None, json!(true)),
            (
                EXPRESSIONS[6],
                &json!({"amount": 499.99}),
                None,
                json!(false),
            ),
            (
                EXPRESSIONS[7],
                &json!({"email": "a@b.example"}),
                None,
                json!("b.example"),
            ),
            (
                EXPRESSIONS[8],
                &json!({"result_count": 0}),
                None,
                json!(false),
            ),
            (EXPRESSIONS[8], &json!({}), None, Value::Null),
            (
                "event.a / event.b",
                &json!({"a": -7, "b": 2}),
                None,
                json!(-3),
            ),
            (
                "event.a % event.b",
                &json!({"a": -7, "b": 2}),
                None,
                json!(-1),
            ),
            (
                "event.a == event.b",
                &json!({"a": 1, "b": 18446744073709551615u64}),
                None,
                json!(false),
            ),
            (
                "event.a == event.b",
                &json!({"a": "1", "b": 1}),
                None,
                json!(false),
            ),
            ("event.a == null", &json!({"a": null}), None, json!(true)),
            (
                "event.a in [1, 'x', null, 2.5]",
                &json!({"a": "x"}),
                None,
                json!(true),
            ),
            (
                "event.l.exists(x, x == event.a)",
                &json!({"a": 2, "l": [1, 2]}),
                None,
                json!(true),
            ),
            (
                "event.l.all(x, x != null)",
                &json!({"l": [1, null]}),
                None,
                json!(false),
            ),
            (
                "event.s.split('b')",
                &json!({"s": "abcbd"}),
                None,
                json!(["a", "c", "d"]),
            ),
            ("size(event.a)", &json!({"a": "héllo"}), None, json!(5)),
            (
                "event.s.lowerAscii()",
                &json!({"s": "HÉllo"}),
                None,
                json!("hÉllo"),
            ),
            (
                "envelope",
                &page,
                None,
                json!({"v": 1, "id": "e-1", "id_generated": false, "type": "page_view", "received_at": "2026-11-25T19:55:17.123Z", "request_id": "req-1", "source_ip": "203.0.113.9", "user_agent": null, "principal": null, "stage": "$default", "protocol": null, "event_time": null}),
            ),
            ("has(envelope.missing)", &page, None, json!(false)),
            (
                "kinesis.shard_id",
                &page,
                None,
                json!("shardId-000000000001"),
            ),
            ("event.o['a']", &json!({"o": {"a": [1]}}), None, json!([1])),
            ("-event.a", &json!({"a": 2.5}), None, json!(-2.5)),
            (
                "event.a || event.b",
                &json!({"a": true, "b": "not a bool"}),
                None,
                json!(true),
            ),
            (
                "event.a && event.b",
                &json!({"a": false}),
                None,
                json!(false),
            ),
        ];
        for (src, event, ua, want) in cases {
            assert_eq!(
                agreed(src, event, *ua).as_ref(),
                Some(want),
                "{src} on {event}"
            );
        }
    }

    #[test]
    fn envelope_pointers_read_the_member_or_defer() {
        let bytes = envelope_bytes(Some("curl/8"));
        let env = Envelope::parse(&bytes).unwrap();
        let view = envelope_json(&env);
        for member in ENVELOPE_MEMBERS {
            let pointer = format!("/{member}");
            assert_eq!(
                envelope_pointer(&env, &pointer).as_ref(),
                view.pointer(&pointer)
            );
        }
        assert_eq!(envelope_pointer(&env, "/user_agent"), Some(json!("curl/8")));
        assert_eq!(envelope_pointer(&env, "/principal"), Some(Value::Null));
        for deferred in ["", "/", "/missing", "/user_agent/0", "/a~1b", "user_agent"] {
            assert_eq!(envelope_pointer(&env, deferred), None, "{deferred}");
        }
    }

    /// Every operator and function answers natively with the right value (the random
    /// differential test rarely draws two numbers of one type, and a deferral passes it).
    #[test]
    fn operators_and_functions_answer_natively() {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let pairs = [
            (json!(1), json!(2), Less),
            (json!(2), json!(1), Greater),
            (json!(2), json!(2), Equal),
            (json!(-1.5), json!(2.5), Less),
            (json!(2.5), json!(2.5), Equal),
            (json!("a"), json!("b"), Less),
            (json!("b"), json!("a"), Greater),
            (
                json!(18446744073709551615u64),
                json!(18446744073709551614u64),
                Greater,
            ),
        ];
        for (a, b, ord) in pairs {
            let event = json!({"a": a, "b": b});
            let want = [
                ("event.a < event.b", ord.is_lt()),
                ("event.a <= event.b", ord.is_le()),
                ("event.a > event.b", ord.is_gt()),
                ("event.a >= event.b", ord.is_ge()),
                ("event.a == event.b", ord.is_eq()),
                ("event.a != event.b", ord.is_ne()),
            ];
            for (src, want) in want {
                assert_eq!(
                    agreed(src, &event, None),
                    Some(json!(want)),
                    "{src} on {event}"
                );
            }
        }
        let event = json!({"a": 3, "d": 2.5, "u": 18446744073709551615u64, "l": [5, 6], "o": {"a": 1}, "s": "héllo"});
        for (src, want) in [
            ("event.l[0]", json!(5)),
            ("event.l[1]", json!(6)),
            ("[4, event.a][1]", json!(3)),
            ("event.o['a']", json!(1)),
            ("6 in event.l", json!(true)),
            ("5 in event.l", json!(true)),
            ("7 in event.l", json!(false)),
            ("3 in [1, event.a]", json!(true)),
            ("'a' in event.o", json!(true)),
            ("'b' in event.o", json!(false)),
            ("size(event.l)", json!(2)),
            ("size(event.o)", json!(1)),
            ("size([1, 2, 3])", json!(3)),
            ("size(event.s)", json!(5)),
            ("double(event.a)", json!(3.0)),
            ("double(event.u)", json!(18446744073709551615u64 as f64)),
            ("double(event.d)", json!(2.5)),
            ("int(event.a)", json!(3)),
            ("string(event.s)", json!("héllo")),
            ("-event.a", json!(-3)),
            ("-event.d", json!(-2.5)),
            ("event.a + 2", json!(5)),
            ("event.a - 5", json!(-2)),
            ("event.a * 4", json!(12)),
            ("event.a / 2", json!(1)),
            ("event.a % 2", json!(1)),
            ("event.d * 2.0", json!(5.0)),
            ("event.d / 2.0", json!(1.25)),
            ("event.d - 0.5", json!(2.0)),
            ("event.d + 0.5", json!(3.0)),
            ("event.u - 1u", json!(18446744073709551614u64)),
            ("event.u * 1u", json!(18446744073709551615u64)),
            ("event.u / 5u", json!(3689348814741910323u64)),
            ("event.u % 10u", json!(5)),
            ("event.u - event.u + 2u", json!(2)),
            ("event.s + '!'", json!("héllo!")),
            ("event.s.startsWith('hé')", json!(true)),
            ("event.s.startsWith('lo')", json!(false)),
            ("event.s.endsWith('lo')", json!(true)),
            ("event.s.endsWith('hé')", json!(false)),
            ("event.s.contains('ll')", json!(true)),
            ("event.s.contains('L')", json!(false)),
            ("event.s.upperAscii()", json!("HéLLO")),
            ("(event.s + 'X').lowerAscii()", json!("héllox")),
            ("event.s.split('l')", json!(["hé", "", "o"])),
            ("(event.s + 'l').split('l')", json!(["hé", "", "o", ""])),
        ] {
            assert_eq!(agreed(src, &event, None), Some(want), "{src}");
        }
    }

    /// `s.lowerAscii()` compared in place: capitals in the needle never match, only ASCII
    /// letters fold, and the needle may sit at either end or be empty or too long.
    #[test]
    fn lower_ascii_comparisons_fold_only_ascii_letters() {
        let cases: &[(&str, &str, [bool; 3])] = &[
            ("Mozilla Googlebot", "bot", [true, false, true]),
            ("Mozilla Googlebot", "mozilla", [true, true, false]),
            ("Mozilla Googlebot", "Bot", [false, false, false]),
            ("Mozilla Googlebot", "", [true, true, true]),
            ("ÉCOLE bot", "école", [false, false, false]),
            ("ÉCOLE bot", "École", [true, true, false]),
            ("ÉCOLE bot", "Écol", [true, true, false]),
            ("éCOLE bot", "écol", [true, true, false]),
            ("ab", "abc", [false, false, false]),
            ("", "", [true, true, true]),
            ("aXa", "xa", [true, false, true]),
        ];
        let exprs = [
            "event.s.lowerAscii().contains(event.a)",
            "event.s.lowerAscii().startsWith(event.a)",
            "event.s.lowerAscii().endsWith(event.a)",
        ];
        for (hay, needle, want) in cases {
            let event = json!({"s": hay, "a": needle});
            for (src, want) in exprs.iter().zip(want) {
                assert_eq!(
                    agreed(src, &event, None),
                    Some(json!(want)),
                    "{src} on {event}"
                );
            }
        }
    }

    /// Where CEL fails or is subtle, the native evaluator defers (the interpreter answers).
    #[test]
    fn native_defers_errors_and_subtle_cases() {
        let cases: &[(&str, Value)] = &[
            ("event.a", json!({})),
            ("event.a == 1.5", json!({"a": 1})),
            ("event.a < event.b", json!({"a": 1, "b": 2.5})),
            ("event.a < event.b", json!({"a": "a", "b": 1})),
            (
                "event.a + event.b",
                json!({"a": 9223372036854775807i64, "b": 1}),
            ),
            ("event.a / event.b", json!({"a": 1, "b": 0})),
            ("event.a % event.b", json!({"a": 1.5, "b": 1.0})),
            ("event.a - event.b", json!({"a": "x", "b": "y"})),
            ("event.a * event.b", json!({"a": "x", "b": "y"})),
            ("event.a == event.b", json!({"a": [1], "b": [1]})),
            ("event.l[1]", json!({"l": [1]})),
            ("event.l[-1]", json!({"l": [1]})),
            ("has(event.o.a)", json!({"o": "string"})),
            ("event.s.split('')", json!({"s": "abc"})),
            ("!event.a", json!({"a": 1})),
            ("event.a ? event.b : 'no'", json!({"a": null, "b": 1})),
            ("double(event.a)", json!({"a": "1.5"})),
            ("int(event.a)", json!({"a": 1.5})),
            ("envelope.missing", json!({})),
            ("kinesis.missing", json!({})),
            ("1.0 / 0.0", json!({})),
            ("event.a && event.b", json!({"a": true, "b": 1})),
        ];
        for (src, event) in cases {
            let (native, _) = both(src, event, None);
            assert_eq!(native, None, "{src} on {event}");
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-3i64..4).prop_map(Value::from),
            Just(json!(9223372036854775807i64)),
            Just(json!(18446744073709551615u64)),
            prop_oneof![Just(0.0), Just(-1.5), Just(2.5), Just(500.0), Just(1e300)]
                .prop_map(|f| json!(f)),
            prop::sample::select(vec![
                "",
                "a",
                "abc",
                "b",
                "x",
                "A@b.example",
                "Mobile bot",
                "héllo",
                "a?b#c",
                "ÉCOLE bot",
                "aXa"
            ])
            .prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(2, 12, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop::sample::select(vec!["a", "b", "path", "url", "mobile"]),
                    inner,
                    0..3
                )
                .prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }

    fn event() -> impl Strategy<Value = Value> {
        let keys = vec![
            "a",
            "b",
            "s",
            "l",
            "o",
            "test",
            "page",
            "device",
            "items",
            "amount",
            "email",
            "result_count",
        ];
        prop::collection::btree_map(prop::sample::select(keys), json_value(), 0..8)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        /// On any event, whatever the native evaluator answers is what the interpreter answers.
        #[test]
        fn native_agrees_with_the_interpreter(
            event in event(),
            ua in prop::option::of(prop::sample::select(vec!["Mozilla Mobile", "Googlebot", "x"])),
        ) {
            for src in EXPRESSIONS {
                agreed(src, &event, ua);
            }
        }
    }
}
