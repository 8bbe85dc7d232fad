//! The policy-rule language: parsing (every check a definition must pass before it is stored)
//! and evaluation against a resource.
//!
//! Supported: `if`/`then`; `allOf`, `anyOf`, `not`; leaves on `field` or `value` with `equals`,
//! `notEquals`, `like`, `notLike`, `match`, `notMatch`, `matchInsensitively`,
//! `notMatchInsensitively`, `contains`, `notContains`, `in`, `notIn`, `containsKey`,
//! `notContainsKey`, `exists`, `less`, `lessOrEquals`, `greater`, `greaterOrEquals`; template
//! expressions `[parameters('p')]`, `[field('f')]`, `[concat(...)]`, `[toLower(x)]`,
//! `[toUpper(x)]`; effects `deny`, `audit`, `modify` (tags) and `disabled`.

use super::aliases::{self, Field, FieldValue};
use serde_json::{Map, Value};

/// Why a definition is refused; `code` is the Azure error code the client sees.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleError {
    pub code: &'static str,
    pub message: String,
}

fn bad(message: impl Into<String>) -> RuleError {
    RuleError {
        code: "InvalidPolicyRule",
        message: message.into(),
    }
}

/// A value in a rule: a literal, or a template expression evaluated against the parameters and
/// the resource.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Lit(Value),
    Call(String, Vec<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Equals,
    NotEquals,
    Like,
    NotLike,
    Match,
    NotMatch,
    MatchI,
    NotMatchI,
    Contains,
    NotContains,
    In,
    NotIn,
    ContainsKey,
    NotContainsKey,
    Exists,
    Less,
    LessOrEquals,
    Greater,
    GreaterOrEquals,
}

const OPS: &[(&str, Op)] = &[
    ("equals", Op::Equals),
    ("notEquals", Op::NotEquals),
    ("like", Op::Like),
    ("notLike", Op::NotLike),
    ("match", Op::Match),
    ("notMatch", Op::NotMatch),
    ("matchInsensitively", Op::MatchI),
    ("notMatchInsensitively", Op::NotMatchI),
    ("contains", Op::Contains),
    ("notContains", Op::NotContains),
    ("in", Op::In),
    ("notIn", Op::NotIn),
    ("containsKey", Op::ContainsKey),
    ("notContainsKey", Op::NotContainsKey),
    ("exists", Op::Exists),
    ("less", Op::Less),
    ("lessOrEquals", Op::LessOrEquals),
    ("greater", Op::Greater),
    ("greaterOrEquals", Op::GreaterOrEquals),
];

#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    /// A field known when the rule is parsed.
    Field(Field),
    /// A field named by an expression (`[concat('tags[', parameters('t'), ']')]`), resolved
    /// when evaluated.
    FieldExpr(Expr),
    Value(Expr),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    Leaf { subject: Subject, op: Op, rhs: Expr },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Deny,
    Audit,
    Modify,
    Disabled,
}

impl Effect {
    pub fn parse(s: &str) -> Option<Effect> {
        match s.to_ascii_lowercase().as_str() {
            "deny" => Some(Effect::Deny),
            "audit" => Some(Effect::Audit),
            "modify" => Some(Effect::Modify),
            "disabled" => Some(Effect::Disabled),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Deny => "deny",
            Effect::Audit => "audit",
            Effect::Modify => "modify",
            Effect::Disabled => "disabled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagOp {
    AddOrReplace,
    Add,
    Remove,
}

/// One `modify` operation on a tag.
#[derive(Debug, Clone, PartialEq)]
pub struct ModifyOp {
    pub op: TagOp,
    /// The tag name, or an expression giving `tags['x']`.
    pub field: Subject,
    pub value: Option<Expr>,
}

/// A parsed `policyRule`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub cond: Cond,
    pub effect: Expr,
    pub modify: Vec<ModifyOp>,
}

/// Parameters as declared by a definition: lower-cased name → declaration.
pub type Declared = Map<String, Value>;

// ---------------------------------------------------------------- parsing

/// Parses a template expression string: `[f(...)]` is an expression, `[[...` an escaped literal.
pub fn parse_expr(s: &str, declared: &Declared) -> Result<Expr, RuleError> {
    let t = s.trim();
    if let Some(rest) = t.strip_prefix("[[") {
        return Ok(Expr::Lit(Value::String(format!("[{rest}"))));
    }
    if t.starts_with('[') && t.ends_with(']') && t.len() >= 2 {
        let mut p = ExprParser {
            s: &t[1..t.len() - 1],
            i: 0,
            declared,
            whole: s,
        };
        let e = p.expr()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(bad(format!(
                "The template expression '{}' could not be parsed.",
                clip(s)
            )));
        }
        return Ok(e);
    }
    Ok(Expr::Lit(Value::String(s.to_string())))
}

fn parse_value(v: &Value, declared: &Declared) -> Result<Expr, RuleError> {
    match v {
        Value::String(s) => parse_expr(s, declared),
        other => Ok(Expr::Lit(other.clone())),
    }
}

struct ExprParser<'a> {
    s: &'a str,
    i: usize,
    declared: &'a Declared,
    whole: &'a str,
}

const FUNCTIONS: &[&str] = &["parameters", "field", "concat", "tolower", "toupper"];

impl ExprParser<'_> {
    fn ws(&mut self) {
        while self.s[self.i..].starts_with(' ') {
            self.i += 1;
        }
    }
    fn err(&self) -> RuleError {
        bad(format!(
            "The template expression '{}' could not be parsed.",
            clip(self.whole)
        ))
    }
    fn expr(&mut self) -> Result<Expr, RuleError> {
        self.ws();
        let rest = &self.s[self.i..];
        if let Some(r) = rest.strip_prefix('\'') {
            // A string literal; '' is a quote.
            let mut out = String::new();
            let mut chars = r.char_indices().peekable();
            while let Some((k, c)) = chars.next() {
                if c == '\'' {
                    if matches!(chars.peek(), Some((_, '\''))) {
                        chars.next();
                        out.push('\'');
                        continue;
                    }
                    self.i += 1 + k + 1;
                    return Ok(Expr::Lit(Value::String(out)));
                }
                out.push(c);
            }
            return Err(self.err());
        }
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '-'))
            .unwrap_or(rest.len());
        if num_len > 0 {
            let n: i64 = rest[..num_len].parse().map_err(|_| self.err())?;
            self.i += num_len;
            return Ok(Expr::Lit(Value::from(n)));
        }
        let name_len = rest
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(rest.len());
        if name_len == 0 {
            return Err(self.err());
        }
        let name = rest[..name_len].to_ascii_lowercase();
        match name.as_str() {
            "true" if !rest[name_len..].trim_start().starts_with('(') => {
                self.i += name_len;
                return Ok(Expr::Lit(Value::Bool(true)));
            }
            "false" if !rest[name_len..].trim_start().starts_with('(') => {
                self.i += name_len;
                return Ok(Expr::Lit(Value::Bool(false)));
            }
            _ => {}
        }
        if !FUNCTIONS.contains(&name.as_str()) {
            return Err(bad(format!(
                "The template function '{}' in '{}' is not supported by this cloud's policy engine (supported: parameters, field, concat, toLower, toUpper).",
                clip(&rest[..name_len]),
                clip(self.whole)
            )));
        }
        self.i += name_len;
        self.ws();
        if !self.s[self.i..].starts_with('(') {
            return Err(self.err());
        }
        self.i += 1;
        let mut args = Vec::new();
        loop {
            self.ws();
            if self.s[self.i..].starts_with(')') {
                self.i += 1;
                break;
            }
            if !args.is_empty() {
                if !self.s[self.i..].starts_with(',') {
                    return Err(self.err());
                }
                self.i += 1;
            }
            args.push(self.expr()?);
            if args.len() > 64 {
                return Err(self.err());
            }
        }
        let arity_ok = match name.as_str() {
            "parameters" | "field" | "tolower" | "toupper" => args.len() == 1,
            _ => !args.is_empty(),
        };
        if !arity_ok {
            return Err(bad(format!(
                "The template function '{name}' in '{}' has the wrong number of arguments.",
                clip(self.whole)
            )));
        }
        if name == "parameters" {
            if let Expr::Lit(Value::String(p)) = &args[0] {
                if !self.declared.contains_key(&p.to_ascii_lowercase()) {
                    return Err(RuleError {
                        code: "UndefinedPolicyParameter",
                        message: format!(
                            "The policy rule references the parameter '{}', which is not defined in the policy definition's parameters.",
                            clip(p)
                        ),
                    });
                }
            }
        }
        if name == "field" {
            if let Expr::Lit(Value::String(f)) = &args[0] {
                aliases::resolve(f).ok_or_else(|| unknown_alias(f))?;
            }
        }
        Ok(Expr::Call(name, args))
    }
}

pub fn unknown_alias(f: &str) -> RuleError {
    RuleError {
        code: "InvalidPolicyAlias",
        message: format!(
            "The policy definition rule is invalid. The field '{}' is not a known alias. See docs/policy.md for the aliases this cloud understands.",
            clip(f)
        ),
    }
}

fn clip(s: &str) -> String {
    crate::clip(s)
}

fn parse_subject(obj: &Map<String, Value>, declared: &Declared) -> Result<Subject, RuleError> {
    let field = get_ci(obj, "field");
    let value = get_ci(obj, "value");
    match (field, value) {
        (Some(Value::String(f)), None) => {
            if f.trim_start().starts_with('[') && !f.trim_start().starts_with("[[") {
                Ok(Subject::FieldExpr(parse_expr(f, declared)?))
            } else {
                aliases::resolve(f)
                    .map(Subject::Field)
                    .ok_or_else(|| unknown_alias(f))
            }
        }
        (Some(_), None) => Err(bad("The 'field' of a condition must be a string.")),
        (None, Some(v)) => Ok(Subject::Value(parse_value(v, declared)?)),
        (Some(_), Some(_)) => Err(bad(
            "A condition has both 'field' and 'value'; it must have exactly one.",
        )),
        (None, None) => Err(bad(
            "A condition must have 'field' or 'value', or be 'allOf', 'anyOf' or 'not'.",
        )),
    }
}

fn get_ci<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    m.iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(k))
        .map(|(_, v)| v)
}

pub fn parse_cond(v: &Value, declared: &Declared, depth: usize) -> Result<Cond, RuleError> {
    if depth > 32 {
        return Err(bad(
            "The policy rule is nested too deeply (more than 32 levels).",
        ));
    }
    let obj = v
        .as_object()
        .ok_or_else(|| bad("Every condition of a policy rule must be a JSON object."))?;
    for (group, is_all) in [("allOf", true), ("anyOf", false)] {
        if let Some(list) = get_ci(obj, group) {
            if obj.len() != 1 {
                return Err(bad(format!(
                    "A '{group}' condition must not have other properties."
                )));
            }
            let items = list.as_array().filter(|a| !a.is_empty()).ok_or_else(|| {
                bad(format!(
                    "'{group}' must be a non-empty array of conditions."
                ))
            })?;
            let parsed = items
                .iter()
                .map(|c| parse_cond(c, declared, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(if is_all {
                Cond::All(parsed)
            } else {
                Cond::Any(parsed)
            });
        }
    }
    if let Some(inner) = get_ci(obj, "not") {
        if obj.len() != 1 {
            return Err(bad("A 'not' condition must not have other properties."));
        }
        return Ok(Cond::Not(Box::new(parse_cond(inner, declared, depth + 1)?)));
    }
    if get_ci(obj, "count").is_some() {
        return Err(RuleError {
            code: "FeatureNotSupported",
            message: "'count' expressions are not supported by this cloud's policy engine; use a field with [*] instead.".into(),
        });
    }
    let subject = parse_subject(obj, declared)?;
    let mut found = None;
    for (k, val) in obj {
        if k.eq_ignore_ascii_case("field") || k.eq_ignore_ascii_case("value") {
            continue;
        }
        let op = OPS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, o)| *o)
            .ok_or_else(|| {
                bad(format!(
                    "The condition operator '{}' is not valid.",
                    clip(k)
                ))
            })?;
        if found.is_some() {
            return Err(bad("A condition must have exactly one operator."));
        }
        found = Some((op, val));
    }
    let (op, val) =
        found.ok_or_else(|| bad("A condition has no operator (equals, in, like...)."))?;
    let rhs = parse_value(val, declared)?;
    if let Expr::Lit(l) = &rhs {
        match op {
            Op::In | Op::NotIn if !l.is_array() => {
                return Err(bad("The operand of 'in' and 'notIn' must be an array."))
            }
            Op::Exists if as_bool(l).is_none() => {
                return Err(bad("The operand of 'exists' must be true or false."))
            }
            _ => {}
        }
    }
    Ok(Cond::Leaf { subject, op, rhs })
}

/// Parses a `policyRule` against the definition's declared parameters.
pub fn parse_rule(rule: &Value, declared: &Declared) -> Result<Rule, RuleError> {
    let obj = rule
        .as_object()
        .ok_or_else(|| bad("The policy rule must be a JSON object with 'if' and 'then'."))?;
    let cond = parse_cond(
        get_ci(obj, "if").ok_or_else(|| bad("The policy rule has no 'if'."))?,
        declared,
        0,
    )?;
    let then = get_ci(obj, "then")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("The policy rule has no 'then' object."))?;
    let effect_v = get_ci(then, "effect").ok_or_else(|| bad("The policy rule has no effect."))?;
    let effect = parse_value(effect_v, declared)?;
    if let Expr::Lit(v) = &effect {
        check_effect(v)?;
    }
    let mut modify = Vec::new();
    if let Some(details) = get_ci(then, "details") {
        if let Some(ops) = details.get("operations") {
            let ops = ops
                .as_array()
                .ok_or_else(|| bad("'details.operations' must be an array."))?;
            for o in ops {
                modify.push(parse_modify(o, declared)?);
            }
        }
    }
    let static_modify =
        matches!(&effect, Expr::Lit(Value::String(s)) if s.eq_ignore_ascii_case("modify"));
    if static_modify && modify.is_empty() {
        return Err(bad(
            "A 'modify' effect needs 'details.operations' (addOrReplace, add or remove on tags).",
        ));
    }
    Ok(Rule {
        cond,
        effect,
        modify,
    })
}

/// An effect value: one of those the engine applies, else a clear refusal.
pub fn check_effect(v: &Value) -> Result<Effect, RuleError> {
    let s = v
        .as_str()
        .ok_or_else(|| bad("The policy effect must be a string."))?;
    Effect::parse(s).ok_or_else(|| match s.to_ascii_lowercase().as_str() {
        "append" | "auditifnotexists" | "deployifnotexists" | "denyaction" | "manual" => {
            RuleError {
                code: "FeatureNotSupported",
                message: format!(
                    "The policy effect '{}' is not supported by this cloud (supported: deny, audit, modify, disabled).",
                    clip(s)
                ),
            }
        }
        _ => bad(format!("The policy effect '{}' is not valid.", clip(s))),
    })
}

fn parse_modify(o: &Value, declared: &Declared) -> Result<ModifyOp, RuleError> {
    let obj = o
        .as_object()
        .ok_or_else(|| bad("Each modify operation must be an object."))?;
    let op = match get_ci(obj, "operation")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
    {
        Some(s) if s == "addorreplace" => TagOp::AddOrReplace,
        Some(s) if s == "add" => TagOp::Add,
        Some(s) if s == "remove" => TagOp::Remove,
        _ => {
            return Err(bad(
                "A modify operation's 'operation' must be addOrReplace, add or remove.",
            ))
        }
    };
    let field = parse_subject(
        &Map::from_iter(get_ci(obj, "field").map(|f| ("field".to_string(), f.clone()))),
        declared,
    )?;
    if let Subject::Field(f) = &field {
        if !matches!(f, Field::Tag(_)) {
            return Err(RuleError {
                code: "FeatureNotSupported",
                message: "This cloud's 'modify' effect changes tags only (field tags['name'])."
                    .into(),
            });
        }
    }
    let value = match get_ci(obj, "value") {
        Some(v) => Some(parse_value(v, declared)?),
        None if op != TagOp::Remove => {
            return Err(bad("A modify operation other than remove needs a 'value'."))
        }
        None => None,
    };
    Ok(ModifyOp { op, field, value })
}

// ---------------------------------------------------------------- evaluation

/// What an evaluation reads: the parameters' values (lower-cased names) and the resource.
pub struct Env<'a> {
    pub params: &'a Map<String, Value>,
    pub resource: &'a Value,
}

impl Env<'_> {
    pub fn eval(&self, e: &Expr) -> Value {
        match e {
            Expr::Lit(v) => v.clone(),
            Expr::Call(name, args) => {
                let a: Vec<Value> = args.iter().map(|x| self.eval(x)).collect();
                let s = |v: &Value| scalar(v).unwrap_or_default();
                match name.as_str() {
                    "parameters" => self
                        .params
                        .get(&s(&a[0]).to_ascii_lowercase())
                        .cloned()
                        .unwrap_or(Value::Null),
                    "field" => match aliases::resolve(&s(&a[0])) {
                        Some(f) => match aliases::read(&f, self.resource) {
                            FieldValue::One(v) => v.unwrap_or(Value::Null),
                            FieldValue::Each(v) => Value::Array(v),
                        },
                        None => Value::Null,
                    },
                    "concat" => {
                        if a.iter().all(Value::is_array) {
                            Value::Array(
                                a.iter()
                                    .flat_map(|x| x.as_array().cloned().unwrap_or_default())
                                    .collect(),
                            )
                        } else {
                            Value::String(a.iter().map(s).collect())
                        }
                    }
                    "tolower" => Value::String(s(&a[0]).to_lowercase()),
                    "toupper" => Value::String(s(&a[0]).to_uppercase()),
                    _ => Value::Null,
                }
            }
        }
    }

    /// The field a subject names; an expression naming an unknown field reads as absent.
    pub fn subject_field(&self, s: &Subject) -> Option<Field> {
        match s {
            Subject::Field(f) => Some(f.clone()),
            Subject::FieldExpr(e) => scalar(&self.eval(e)).and_then(|n| aliases::resolve(&n)),
            Subject::Value(_) => None,
        }
    }

    pub fn test(&self, c: &Cond) -> bool {
        match c {
            Cond::All(v) => v.iter().all(|c| self.test(c)),
            Cond::Any(v) => v.iter().any(|c| self.test(c)),
            Cond::Not(c) => !self.test(c),
            Cond::Leaf { subject, op, rhs } => {
                let r = self.eval(rhs);
                let lhs = match subject {
                    Subject::Value(e) => {
                        let v = self.eval(e);
                        FieldValue::One((!v.is_null()).then_some(v))
                    }
                    other => match self.subject_field(other) {
                        Some(f) => aliases::read(&f, self.resource),
                        None => FieldValue::One(None),
                    },
                };
                match lhs {
                    FieldValue::One(v) => leaf(v.as_ref(), *op, &r),
                    // A condition on `[*]` holds when every member satisfies it.
                    FieldValue::Each(vs) => vs.iter().all(|v| leaf(Some(v), *op, &r)),
                }
            }
        }
    }
}

/// A scalar as a string (strings as-is, booleans and numbers as JSON writes them).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// Equality as Azure applies it: strings without case, scalars by their text (`true` equals
/// `"True"`), arrays and objects structurally.
fn same(a: &Value, b: &Value) -> bool {
    match (scalar(a), scalar(b)) {
        (Some(x), Some(y)) => x.eq_ignore_ascii_case(&y),
        _ => a == b,
    }
}

fn leaf(v: Option<&Value>, op: Op, r: &Value) -> bool {
    use Op::*;
    match op {
        Exists => v.is_some() == as_bool(r).unwrap_or(true),
        NotEquals | NotLike | NotMatch | NotMatchI | NotContains | NotIn | NotContainsKey => {
            let positive = match op {
                NotEquals => Equals,
                NotLike => Like,
                NotMatch => Match,
                NotMatchI => MatchI,
                NotContains => Contains,
                NotIn => In,
                _ => ContainsKey,
            };
            !leaf(v, positive, r)
        }
        _ => {
            let Some(v) = v else { return false };
            match op {
                Equals => same(v, r),
                Like => match (scalar(v), scalar(r)) {
                    (Some(s), Some(p)) => like(&s.to_lowercase(), &p.to_lowercase()),
                    _ => false,
                },
                Match => both(v, r, |s, p| matches_pattern(s, p, false)),
                MatchI => both(v, r, |s, p| matches_pattern(s, p, true)),
                Contains => match v {
                    Value::Array(a) => a.iter().any(|x| same(x, r)),
                    _ => both(v, r, |s, p| s.to_lowercase().contains(&p.to_lowercase())),
                },
                In => r.as_array().is_some_and(|a| a.iter().any(|x| same(v, x))),
                ContainsKey => {
                    let k = scalar(r).unwrap_or_default();
                    v.as_object()
                        .is_some_and(|m| m.keys().any(|x| x.eq_ignore_ascii_case(&k)))
                }
                Less | LessOrEquals | Greater | GreaterOrEquals => {
                    let ord = match (v.as_f64(), r.as_f64()) {
                        (Some(a), Some(b)) => a.partial_cmp(&b),
                        _ => match (scalar(v), scalar(r)) {
                            (Some(a), Some(b)) => Some(a.to_lowercase().cmp(&b.to_lowercase())),
                            _ => None,
                        },
                    };
                    let Some(o) = ord else { return false };
                    match op {
                        Less => o.is_lt(),
                        LessOrEquals => o.is_le(),
                        Greater => o.is_gt(),
                        _ => o.is_ge(),
                    }
                }
                _ => false,
            }
        }
    }
}

fn both(v: &Value, r: &Value, f: impl Fn(&str, &str) -> bool) -> bool {
    match (scalar(v), scalar(r)) {
        (Some(a), Some(b)) => f(&a, &b),
        _ => false,
    }
}

/// `like`: `*` matches any run of characters (callers lower-case both sides).
pub fn like(s: &str, p: &str) -> bool {
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return s == p;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// `match`: `#` a digit, `?` a letter, `.` any character, anything else itself.
fn matches_pattern(s: &str, p: &str, insensitive: bool) -> bool {
    let (s, p): (Vec<char>, Vec<char>) = if insensitive {
        (
            s.to_lowercase().chars().collect(),
            p.to_lowercase().chars().collect(),
        )
    } else {
        (s.chars().collect(), p.chars().collect())
    };
    s.len() == p.len()
        && s.iter().zip(p.iter()).all(|(c, q)| match q {
            '#' => c.is_ascii_digit(),
            '?' => c.is_alphabetic(),
            '.' => true,
            other => c == other,
        })
}

/// Applies `modify` operations to the resource's tags; true when anything changed.
pub fn apply_modify(env: &Env<'_>, ops: &[ModifyOp], resource: &mut Value) -> bool {
    let mut changed = false;
    for o in ops {
        let Some(Field::Tag(name)) = env.subject_field(&o.field) else {
            continue;
        };
        let value = o.value.as_ref().map(|e| env.eval(e));
        let Some(obj) = resource.as_object_mut() else {
            return changed;
        };
        let tags = obj
            .entry("tags")
            .or_insert_with(|| Value::Object(Map::new()));
        if tags.is_null() {
            *tags = Value::Object(Map::new());
        }
        let Some(tags) = tags.as_object_mut() else {
            continue;
        };
        let existing = tags.keys().find(|k| k.eq_ignore_ascii_case(&name)).cloned();
        match o.op {
            TagOp::Remove => {
                if let Some(k) = existing {
                    tags.remove(&k);
                    changed = true;
                }
            }
            TagOp::Add if existing.is_some() => {}
            TagOp::Add | TagOp::AddOrReplace => {
                let v = Value::String(value.as_ref().and_then(scalar).unwrap_or_default());
                let k = existing.unwrap_or(name);
                if tags.get(&k) != Some(&v) {
                    tags.insert(k, v);
                    changed = true;
                }
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn declared(names: &[&str]) -> Declared {
        names
            .iter()
            .map(|n| (n.to_ascii_lowercase(), json!({"type": "String"})))
            .collect()
    }

    fn holds(cond: Value, params: Value, resource: Value) -> bool {
        let d: Declared = params
            .as_object()
            .map(|m| {
                m.keys()
                    .map(|k| (k.to_ascii_lowercase(), json!({})))
                    .collect()
            })
            .unwrap_or_default();
        let c = parse_cond(&cond, &d, 0).expect("parses");
        let p: Map<String, Value> = params
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Env {
            params: &p,
            resource: &resource,
        }
        .test(&c)
    }

    fn sa(props: Value) -> Value {
        json!({"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct",
               "name": "acct", "type": "Microsoft.Storage/storageAccounts", "location": "francecentral",
               "tags": {"Env": "Prod"}, "kind": "StorageV2", "properties": props})
    }

    #[test]
    fn equals_ignores_case_and_compares_booleans_by_text() {
        let r = sa(json!({"allowBlobPublicAccess": true}));
        assert!(holds(
            json!({"field": "TYPE", "equals": "microsoft.storage/STORAGEACCOUNTS"}),
            json!({}),
            r.clone()
        ));
        assert!(holds(
            json!({"field": "Microsoft.Storage/storageAccounts/allowBlobPublicAccess", "equals": "True"}),
            json!({}),
            r.clone()
        ));
        assert!(!holds(
            json!({"field": "Microsoft.Storage/storageAccounts/allowBlobPublicAccess", "equals": false}),
            json!({}),
            r
        ));
    }

    #[test]
    fn groups_and_negation() {
        let r = sa(json!({}));
        let c = json!({"allOf": [
            {"field": "type", "equals": "Microsoft.Storage/storageAccounts"},
            {"anyOf": [{"field": "kind", "equals": "BlobStorage"}, {"not": {"field": "location", "in": ["westeurope"]}}]}
        ]});
        assert!(holds(c, json!({}), r));
    }

    #[test]
    fn like_patterns() {
        assert!(like("prod-web-01", "prod-*"));
        assert!(like("prod-web-01", "*-web-*"));
        assert!(like("abc", "a*b*c"));
        assert!(!like("abc", "a*d"));
        assert!(!like("ab", "a*b*b"));
        assert!(like("anything", "*"));
        assert!(!like("abc", "abcd"));
        assert!(holds(
            json!({"field": "name", "like": "ACC*"}),
            json!({}),
            sa(json!({}))
        ));
        assert!(holds(
            json!({"field": "name", "notLike": "x*"}),
            json!({}),
            sa(json!({}))
        ));
    }

    #[test]
    fn match_patterns() {
        assert!(matches_pattern("ab12", "??##", false));
        assert!(!matches_pattern("ab1x", "??##", false));
        assert!(!matches_pattern("AB12", "ab##", false));
        assert!(matches_pattern("AB12", "ab##", true));
    }

    #[test]
    fn exists_in_contains_and_tags() {
        let r = sa(json!({}));
        assert!(holds(
            json!({"field": "tags['env']", "exists": "true"}),
            json!({}),
            r.clone()
        ));
        assert!(holds(
            json!({"field": "tags.owner", "exists": false}),
            json!({}),
            r.clone()
        ));
        assert!(holds(
            json!({"field": "tags", "containsKey": "ENV"}),
            json!({}),
            r.clone()
        ));
        assert!(holds(
            json!({"field": "tags[env]", "in": ["dev", "prod"]}),
            json!({}),
            r.clone()
        ));
        assert!(holds(
            json!({"field": "id", "contains": "/RESOURCEGROUPS/rg/"}),
            json!({}),
            r.clone()
        ));
        assert!(holds(
            json!({"field": "tags[missing]", "notIn": ["a"]}),
            json!({}),
            r.clone()
        ));
        assert!(!holds(
            json!({"field": "tags[missing]", "equals": "a"}),
            json!({}),
            r
        ));
    }

    #[test]
    fn parameters_and_concat() {
        let r = sa(json!({}));
        let c = json!({"field": "[concat('tags[', parameters('tagName'), ']')]", "equals": "[parameters('tagValue')]"});
        assert!(holds(
            c.clone(),
            json!({"tagName": "env", "tagValue": "prod"}),
            r.clone()
        ));
        assert!(!holds(
            c,
            json!({"tagName": "env", "tagValue": "dev"}),
            r.clone()
        ));
        assert!(holds(
            json!({"field": "location", "in": "[parameters('allowed')]"}),
            json!({"allowed": ["FranceCentral"]}),
            r.clone()
        ));
        assert!(holds(
            json!({"value": "[toLower(field('name'))]", "equals": "acct"}),
            json!({}),
            r
        ));
    }

    #[test]
    fn star_fields_hold_for_every_member() {
        let mk = |ips: Value| json!({"type": "Microsoft.Storage/storageAccounts", "properties": {"networkAcls": {"ipRules": ips}}});
        let c = json!({"field": "Microsoft.Storage/storageAccounts/networkAcls.ipRules[*].value", "like": "10.*"});
        assert!(holds(
            c.clone(),
            json!({}),
            mk(json!([{"value": "10.0.0.1"}, {"value": "10.1.1.1"}]))
        ));
        assert!(!holds(
            c.clone(),
            json!({}),
            mk(json!([{"value": "10.0.0.1"}, {"value": "8.8.8.8"}]))
        ));
        assert!(holds(c, json!({}), mk(json!([]))));
    }

    #[test]
    fn refusals_name_the_problem() {
        let d = declared(&["known"]);
        let e = parse_cond(
            &json!({"field": "Microsoft.Storage/storageAccounts/bogus", "equals": "x"}),
            &d,
            0,
        )
        .unwrap_err();
        assert_eq!(e.code, "InvalidPolicyAlias");
        assert!(e.message.contains("bogus"));
        let e = parse_cond(&json!({"field": "name", "sameAs": "x"}), &d, 0).unwrap_err();
        assert_eq!(e.code, "InvalidPolicyRule");
        assert!(e.message.contains("sameAs"));
        let e = parse_cond(&json!({"field": "name", "in": "x"}), &d, 0).unwrap_err();
        assert_eq!(e.code, "InvalidPolicyRule");
        let e = parse_cond(
            &json!({"field": "name", "equals": "[parameters('unknown')]"}),
            &d,
            0,
        )
        .unwrap_err();
        assert_eq!(e.code, "UndefinedPolicyParameter");
        let e = parse_cond(&json!({"allOf": []}), &d, 0).unwrap_err();
        assert_eq!(e.code, "InvalidPolicyRule");
        let e = parse_rule(&json!({"if": {"field": "name", "equals": "x"}, "then": {"effect": "deployIfNotExists"}}), &d).unwrap_err();
        assert_eq!(e.code, "FeatureNotSupported");
        let e = parse_rule(
            &json!({"if": {"field": "name", "equals": "x"}, "then": {"effect": "explode"}}),
            &d,
        )
        .unwrap_err();
        assert_eq!(e.code, "InvalidPolicyRule");
        let e = parse_rule(&json!({"if": {"field": "name", "equals": "[resourceGroup().location]"}, "then": {"effect": "deny"}}), &d).unwrap_err();
        assert!(e.message.contains("resourceGroup"));
    }

    #[test]
    fn modify_tags() {
        let d = declared(&[]);
        let rule = parse_rule(&json!({"if": {"field": "tags['cost']", "exists": false}, "then": {"effect": "modify", "details": {"operations": [
            {"operation": "addOrReplace", "field": "tags['cost']", "value": "shared"},
            {"operation": "add", "field": "tags.env", "value": "ignored"},
            {"operation": "remove", "field": "tags['temp']"}
        ]}}}), &d).unwrap();
        let mut r = json!({"tags": {"env": "prod", "temp": "1"}});
        let p = Map::new();
        let snapshot = r.clone();
        let env = Env {
            params: &p,
            resource: &snapshot,
        };
        assert!(apply_modify(&env, &rule.modify, &mut r));
        assert_eq!(r["tags"], json!({"env": "prod", "cost": "shared"}));
        let e = parse_rule(&json!({"if": {"field": "name", "equals": "x"}, "then": {"effect": "modify", "details": {"operations": [
            {"operation": "addOrReplace", "field": "location", "value": "x"}]}}}), &d).unwrap_err();
        assert_eq!(e.code, "FeatureNotSupported");
    }
}
