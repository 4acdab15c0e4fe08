//! The part of CEL (Common Expression Language) that Telemetry resources
//! use with Istio: access-log filters (`response.code >= 400`) and metric
//! tag values (`request.host`, `request.headers['x-user']`). Parsed when
//! a resource is applied, so that an expression outside this part is an
//! error naming its field, not a filter that silently never matches.
//!
//! Supported: string, integer and boolean literals; the attributes of
//! [`Attr`]; `request.headers['name']`; `== != < <= > >=`, `&& || !`,
//! parentheses; `string(x)`, `int(x)`; `x.startsWith('..')`,
//! `x.endsWith('..')`, `x.contains('..')`.

use std::borrow::Cow;

/// An attribute of a request, as Istio's (Envoy's) CEL names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    /// `request.method`.
    Method,
    /// `request.path` (with the query).
    Path,
    /// `request.url_path` (without it).
    UrlPath,
    /// `request.host`.
    Host,
    /// `request.scheme`.
    Scheme,
    /// `request.protocol` (`HTTP/1.1`, `HTTP/2`).
    Protocol,
    /// `request.useragent`.
    UserAgent,
    /// `request.id` (`x-request-id`).
    Id,
    /// `request.headers['name']` (lowercase).
    Header(String),
    /// `response.code`.
    Code,
    /// `response.grpc_status`.
    GrpcStatus,
    /// `connection.mtls`.
    Mtls,
    /// `source.principal` (`connection.uri_san_peer_certificate`).
    SourcePrincipal,
}

impl Attr {
    fn named(name: &str) -> Option<Self> {
        Some(match name {
            "request.method" => Self::Method,
            "request.path" => Self::Path,
            "request.url_path" => Self::UrlPath,
            "request.host" => Self::Host,
            "request.scheme" => Self::Scheme,
            "request.protocol" => Self::Protocol,
            "request.useragent" => Self::UserAgent,
            "request.id" => Self::Id,
            "response.code" => Self::Code,
            "response.grpc_status" => Self::GrpcStatus,
            "connection.mtls" => Self::Mtls,
            "source.principal" | "connection.uri_san_peer_certificate" => Self::SourcePrincipal,
            _ => return None,
        })
    }

    /// Whether it is known before the response.
    pub fn of_request(&self) -> bool {
        !matches!(self, Self::Code | Self::GrpcStatus)
    }
}

/// A value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// A string.
    Str(Cow<'a, str>),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// An attribute with no value (a header not sent).
    Absent,
}

impl Value<'_> {
    /// As a metric label or log value (`unknown` when absent, as Istio).
    pub fn text(&self) -> String {
        match self {
            Self::Str(s) => s.to_string(),
            Self::Int(i) => i.to_string(),
            Self::Bool(b) => b.to_string(),
            Self::Absent => "unknown".into(),
        }
    }
}

/// Reads attributes.
pub trait Attributes {
    /// The value of `a`.
    fn get(&self, a: &Attr) -> Value<'_>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    StartsWith,
    EndsWith,
    Contains,
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A string literal.
    Str(String),
    /// An integer literal.
    Int(i64),
    /// A boolean literal.
    Bool(bool),
    /// An attribute.
    Attr(Attr),
    /// `!x`.
    Not(Box<Expr>),
    /// `a && b`.
    And(Box<Expr>, Box<Expr>),
    /// `a || b`.
    Or(Box<Expr>, Box<Expr>),
    /// A comparison.
    #[allow(private_interfaces)]
    Cmp(Cmp, Box<Expr>, Box<Expr>),
    /// `string(x)`.
    ToString(Box<Expr>),
    /// `int(x)`.
    ToInt(Box<Expr>),
    /// `x.startsWith(y)` and its kin.
    #[allow(private_interfaces)]
    Call(Method, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Op(&'static str),
}

fn tokens(src: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_.".contains(chars[i])) {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            out.push(Tok::Int(
                text.parse().map_err(|_| format!("{text} is too large"))?,
            ));
        } else if c == '\'' || c == '"' {
            let end = chars[i + 1..]
                .iter()
                .position(|&x| x == c)
                .ok_or("a string literal is not closed")?;
            out.push(Tok::Str(chars[i + 1..i + 1 + end].iter().collect()));
            i += end + 2;
        } else {
            let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let op = ["==", "!=", "<=", ">=", "&&", "||"]
                .into_iter()
                .find(|o| *o == two)
                .or_else(|| {
                    ["<", ">", "!", "(", ")", "[", "]", ","]
                        .into_iter()
                        .find(|o| o.starts_with(c))
                })
                .ok_or_else(|| format!("unexpected {c:?}"))?;
            i += op.len();
            out.push(Tok::Op(op));
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn eat(&mut self, op: &str) -> bool {
        let found = matches!(self.peek(), Some(Tok::Op(o)) if *o == op);
        if found {
            self.at += 1;
        }
        found
    }

    fn expect(&mut self, op: &str) -> Result<(), String> {
        if self.eat(op) {
            Ok(())
        } else {
            Err(format!("expected `{op}`"))
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.cmp()?;
        while self.eat("&&") {
            left = Expr::And(Box::new(left), Box::new(self.cmp()?));
        }
        Ok(left)
    }

    fn cmp(&mut self) -> Result<Expr, String> {
        let left = self.unary()?;
        let op = match self.peek() {
            Some(Tok::Op("==")) => Cmp::Eq,
            Some(Tok::Op("!=")) => Cmp::Ne,
            Some(Tok::Op("<")) => Cmp::Lt,
            Some(Tok::Op("<=")) => Cmp::Le,
            Some(Tok::Op(">")) => Cmp::Gt,
            Some(Tok::Op(">=")) => Cmp::Ge,
            _ => return Ok(left),
        };
        self.at += 1;
        Ok(Expr::Cmp(op, Box::new(left), Box::new(self.unary()?)))
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, String> {
        let tok = self.peek().cloned().ok_or("the expression ends early")?;
        self.at += 1;
        match tok {
            Tok::Str(s) => Ok(Expr::Str(s)),
            Tok::Int(i) => Ok(Expr::Int(i)),
            Tok::Op("(") => {
                let e = self.or()?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Ident(name) => self.ident(&name),
            Tok::Op(o) => Err(format!("unexpected `{o}`")),
        }
    }

    fn ident(&mut self, name: &str) -> Result<Expr, String> {
        match name {
            "true" => return Ok(Expr::Bool(true)),
            "false" => return Ok(Expr::Bool(false)),
            "string" | "int" => {
                self.expect("(")?;
                let e = Box::new(self.or()?);
                self.expect(")")?;
                return Ok(if name == "string" {
                    Expr::ToString(e)
                } else {
                    Expr::ToInt(e)
                });
            }
            _ => {}
        }
        if name == "request.headers" {
            self.expect("[")?;
            let Some(Tok::Str(h)) = self.peek().cloned() else {
                return Err(
                    "request.headers takes a quoted name: request.headers['x-user']".into(),
                );
            };
            self.at += 1;
            self.expect("]")?;
            return Ok(Expr::Attr(Attr::Header(h.to_ascii_lowercase())));
        }
        for (suffix, method) in [
            (".startsWith", Method::StartsWith),
            (".endsWith", Method::EndsWith),
            (".contains", Method::Contains),
        ] {
            if let Some(attr) = name.strip_suffix(suffix) {
                let target = self.ident(attr)?;
                self.expect("(")?;
                let arg = self.or()?;
                self.expect(")")?;
                return Ok(Expr::Call(method, Box::new(target), Box::new(arg)));
            }
        }
        Attr::named(name).map(Expr::Attr).ok_or_else(|| {
            format!(
                "{name:?} is not an attribute this mesh knows (request.method, request.path, request.url_path, request.host, request.scheme, request.protocol, request.useragent, request.id, request.headers['name'], response.code, response.grpc_status, connection.mtls, source.principal)"
            )
        })
    }
}

/// Parses `src`.
pub fn parse(src: &str) -> Result<Expr, String> {
    let mut p = Parser {
        toks: tokens(src)?,
        at: 0,
    };
    let e = p.or()?;
    match p.peek() {
        None => Ok(e),
        Some(t) => Err(format!("unexpected {t:?} after a complete expression")),
    }
}

fn int(v: &Value<'_>) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Str(s) => s.parse().ok(),
        _ => None,
    }
}

impl Expr {
    /// Its value for `a`.
    pub fn eval<'a>(&'a self, a: &'a dyn Attributes) -> Value<'a> {
        match self {
            Self::Str(s) => Value::Str(Cow::Borrowed(s)),
            Self::Int(i) => Value::Int(*i),
            Self::Bool(b) => Value::Bool(*b),
            Self::Attr(at) => a.get(at),
            Self::Not(e) => Value::Bool(!e.holds(a)),
            Self::And(l, r) => Value::Bool(l.holds(a) && r.holds(a)),
            Self::Or(l, r) => Value::Bool(l.holds(a) || r.holds(a)),
            Self::ToString(e) => match e.eval(a) {
                Value::Absent => Value::Absent,
                v => Value::Str(Cow::Owned(v.text())),
            },
            Self::ToInt(e) => int(&e.eval(a)).map_or(Value::Absent, Value::Int),
            Self::Call(m, target, arg) => {
                let (Value::Str(t), Value::Str(x)) = (target.eval(a), arg.eval(a)) else {
                    return Value::Bool(false);
                };
                Value::Bool(match m {
                    Method::StartsWith => t.starts_with(&*x),
                    Method::EndsWith => t.ends_with(&*x),
                    Method::Contains => t.contains(&*x),
                })
            }
            Self::Cmp(op, l, r) => {
                let (l, r) = (l.eval(a), r.eval(a));
                let ord = match (&l, &r) {
                    (Value::Int(_), _) | (_, Value::Int(_)) => match (int(&l), int(&r)) {
                        (Some(x), Some(y)) => x.cmp(&y),
                        _ => return Value::Bool(*op == Cmp::Ne),
                    },
                    (Value::Str(x), Value::Str(y)) => x.cmp(y),
                    (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
                    _ => return Value::Bool(*op == Cmp::Ne),
                };
                use std::cmp::Ordering::*;
                Value::Bool(match op {
                    Cmp::Eq => ord == Equal,
                    Cmp::Ne => ord != Equal,
                    Cmp::Lt => ord == Less,
                    Cmp::Le => ord != Greater,
                    Cmp::Gt => ord == Greater,
                    Cmp::Ge => ord != Less,
                })
            }
        }
    }

    /// Whether it is true for `a` (an error or a non-boolean is false, as
    /// Envoy's filter takes an evaluation error).
    pub fn holds(&self, a: &dyn Attributes) -> bool {
        matches!(self.eval(a), Value::Bool(true))
    }

    /// Whether it reads a request header.
    pub fn reads_headers(&self) -> bool {
        match self {
            Self::Attr(a) => matches!(a, Attr::Header(_)),
            Self::Not(e) | Self::ToString(e) | Self::ToInt(e) => e.reads_headers(),
            Self::And(l, r) | Self::Or(l, r) | Self::Cmp(_, l, r) | Self::Call(_, l, r) => {
                l.reads_headers() || r.reads_headers()
            }
            _ => false,
        }
    }

    /// Whether it reads the response.
    pub fn reads_response(&self) -> bool {
        match self {
            Self::Attr(a) => !a.of_request(),
            Self::Not(e) | Self::ToString(e) | Self::ToInt(e) => e.reads_response(),
            Self::And(l, r) | Self::Or(l, r) | Self::Cmp(_, l, r) | Self::Call(_, l, r) => {
                l.reads_response() || r.reads_response()
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Req {
        code: i64,
        path: &'static str,
        user: Option<&'static str>,
    }

    impl Attributes for Req {
        fn get(&self, a: &Attr) -> Value<'_> {
            match a {
                Attr::Code => Value::Int(self.code),
                Attr::Path | Attr::UrlPath => Value::Str(self.path.into()),
                Attr::Method => Value::Str("GET".into()),
                Attr::Header(h) if h == "x-user" => {
                    self.user.map_or(Value::Absent, |u| Value::Str(u.into()))
                }
                Attr::Mtls => Value::Bool(true),
                _ => Value::Absent,
            }
        }
    }

    fn holds(src: &str, r: &Req) -> bool {
        parse(src).unwrap_or_else(|e| panic!("{src}: {e}")).holds(r)
    }

    #[test]
    fn filters_as_istio_writes_them() {
        let ok = Req {
            code: 200,
            path: "/api/orders",
            user: Some("ann"),
        };
        let bad = Req {
            code: 503,
            path: "/health",
            user: None,
        };
        for (src, want_ok, want_bad) in [
            ("response.code >= 400", false, true),
            (
                "response.code >= 400 || request.url_path.startsWith('/api')",
                true,
                true,
            ),
            (
                "!(response.code < 500) && request.method == 'GET'",
                false,
                true,
            ),
            ("request.headers['X-User'] == \"ann\"", true, false),
            ("request.headers['x-user'] != 'ann'", false, true),
            ("string(response.code) == '503'", false, true),
            ("int('7') > 3 && connection.mtls", true, true),
            ("request.path.contains('ord')", true, false),
        ] {
            assert_eq!(holds(src, &ok), want_ok, "{src} on ok");
            assert_eq!(holds(src, &bad), want_bad, "{src} on bad");
        }
        let tag = parse("request.headers['x-user']").unwrap();
        assert_eq!(tag.eval(&ok).text(), "ann");
        assert_eq!(tag.eval(&bad).text(), "unknown");
        assert!(parse("response.code >= 400").unwrap().reads_response());
        assert!(!parse("request.host").unwrap().reads_response());
    }

    #[test]
    fn what_is_not_supported_is_an_error() {
        for bad in [
            "response.code >=",
            "request.size > 10",
            "response.code in [500, 503]",
            "'open",
            "request.headers[x]",
            "response.code >= 400 400",
            "a.b + 1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
