//! SCIM filters (RFC 7644 §3.4.2.2): a small hand-written tokenizer and recursive-descent parser
//! into [`Filter`], and its evaluation against a rendered resource.
//!
//! Attribute names and operators are case-insensitive; string comparisons are case-insensitive
//! except on the case-exact common attributes `id` and `externalId`. Unknown attributes simply
//! do not match. The same attribute-path syntax serves PATCH paths ([`parse_path`]).
//!
//! A filter arrives in a URL or a body, so its cost is bounded before it is walked: parentheses,
//! brackets and `not` nest at most [`MAX_NESTING`] levels (the parser recurses per level; 5,000
//! overflowed the stack) and a filter has at most [`MAX_OPERATORS`] `and`/`or` operators (each is a
//! level of the tree that evaluation walks recursively); past either it is `invalidFilter`.

use serde_json::{Map, Value};

use super::ScimError;

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Present(AttrPath),
    Compare(AttrPath, Op, Literal),
    /// `attr[filter]`: some element of multi-valued `attr` matches `filter`.
    Complex(AttrPath, Box<Filter>),
}

/// `[urn:]attr[.sub]`
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AttrPath {
    pub(crate) urn: Option<String>,
    pub(crate) attr: String,
    pub(crate) sub: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

/// A PATCH path: `attrPath`, `attrPath[filter]` or `attrPath[filter].sub`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PatchPath {
    pub(crate) path: AttrPath,
    pub(crate) filter: Option<Filter>,
    /// The sub-attribute after `]` (for `emails[type eq "work"].value`).
    pub(crate) sub: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Word(String),
    Str(String),
}

fn invalid(detail: impl Into<String>) -> ScimError {
    ScimError::invalid_filter(detail)
}

fn tokenize(input: &str) -> Result<Vec<Token>, ScimError> {
    let mut tokens = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | '[' | ']' => {
                chars.next();
                tokens.push(match c {
                    '(' => Token::LParen,
                    ')' => Token::RParen,
                    '[' => Token::LBracket,
                    _ => Token::RBracket,
                });
            }
            '"' => {
                // A JSON string: find the closing quote, honouring escapes.
                let mut end = None;
                let mut escaped = false;
                chars.next();
                for (j, d) in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if d == '\\' {
                        escaped = true;
                    } else if d == '"' {
                        end = Some(j);
                        break;
                    }
                }
                let end = end.ok_or_else(|| invalid("unterminated string in filter"))?;
                let s: String = serde_json::from_str(&input[i..=end])
                    .map_err(|_| invalid("invalid string in filter"))?;
                tokens.push(Token::Str(s));
            }
            _ => {
                let start = i;
                let mut end = input.len();
                while let Some(&(j, d)) = chars.peek() {
                    if d.is_whitespace() || "()[]\"".contains(d) {
                        end = j;
                        break;
                    }
                    chars.next();
                }
                tokens.push(Token::Word(input[start..end].to_owned()));
            }
        }
    }
    Ok(tokens)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
}

/// Parses `[urn:]attr[.sub]`.
pub(crate) fn parse_attr_path(word: &str) -> Option<AttrPath> {
    let urn_prefix = word
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("urn:"));
    let (urn, rest) = if word.len() > 4 && urn_prefix {
        let (urn, rest) = word.rsplit_once(':')?;
        (Some(urn.to_owned()), rest)
    } else {
        (None, word)
    };
    let (attr, sub) = match rest.split_once('.') {
        Some((a, s)) => (a, Some(s)),
        None => (rest, None),
    };
    if !valid_name(attr) || sub.is_some_and(|s| !valid_name(s)) {
        return None;
    }
    Some(AttrPath {
        urn,
        attr: attr.to_owned(),
        sub: sub.map(str::to_owned),
    })
}

/// Parses a whole filter expression.
pub(crate) fn parse(input: &str) -> Result<Filter, ScimError> {
    let tokens = tokenize(input)?;
    let mut parser = Parser {
        tokens,
        pos: 0,
        depth: 0,
        operators: 0,
    };
    let filter = parser.or()?;
    if parser.pos != parser.tokens.len() {
        return Err(invalid(format!("unexpected text in filter `{input}`")));
    }
    Ok(filter)
}

/// Parses a PATCH `path`; errors are `invalidPath`.
pub(crate) fn parse_path(input: &str) -> Result<PatchPath, ScimError> {
    let bad = || ScimError::invalid_path(format!("invalid path `{input}`"));
    match input.find('[') {
        None => Ok(PatchPath {
            path: parse_attr_path(input.trim()).ok_or_else(bad)?,
            filter: None,
            sub: None,
        }),
        Some(open) => {
            let close = input.rfind(']').filter(|c| *c > open).ok_or_else(bad)?;
            let path = parse_attr_path(input[..open].trim()).ok_or_else(bad)?;
            if path.sub.is_some() {
                return Err(bad());
            }
            let filter = parse(&input[open + 1..close]).map_err(|_| bad())?;
            let after = input[close + 1..].trim();
            let sub = match after.strip_prefix('.') {
                None if after.is_empty() => None,
                Some(s) if valid_name(s) => Some(s.to_owned()),
                _ => return Err(bad()),
            };
            Ok(PatchPath {
                path,
                filter: Some(filter),
                sub,
            })
        }
    }
}

/// The deepest parentheses, brackets and `not` may nest: the parser recurses once per level.
const MAX_NESTING: usize = 32;
/// The most `and` and `or` operators in one filter: each is a level of the parsed tree, which
/// evaluation (and dropping it) walks recursively.
const MAX_OPERATORS: usize = 1000;

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// Parentheses, brackets and `not` open around the current position.
    depth: usize,
    /// `and` and `or` operators read so far.
    operators: usize,
}

impl Parser {
    fn peek_word(&self, word: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expect(&mut self, token: Token) -> Result<(), ScimError> {
        match self.next() {
            Some(t) if t == token => Ok(()),
            _ => Err(invalid(format!(
                "expected `{}` in filter",
                match token {
                    Token::RParen => ")",
                    Token::LParen => "(",
                    Token::RBracket => "]",
                    _ => "token",
                }
            ))),
        }
    }

    /// `inner` one level deeper, refused past [`MAX_NESTING`].
    fn nested<T>(
        &mut self,
        inner: impl FnOnce(&mut Parser) -> Result<T, ScimError>,
    ) -> Result<T, ScimError> {
        if self.depth == MAX_NESTING {
            return Err(invalid(format!(
                "the filter nests parentheses, brackets and `not` more than {MAX_NESTING} levels deep; flatten it"
            )));
        }
        self.depth += 1;
        let result = inner(self);
        self.depth -= 1;
        result
    }

    /// Counts an `and` or `or`, refused past [`MAX_OPERATORS`].
    fn operator(&mut self) -> Result<(), ScimError> {
        self.operators += 1;
        if self.operators > MAX_OPERATORS {
            return Err(invalid(format!(
                "the filter has more than {MAX_OPERATORS} `and` and `or` operators; split it"
            )));
        }
        self.pos += 1;
        Ok(())
    }

    fn or(&mut self) -> Result<Filter, ScimError> {
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.operator()?;
            let right = self.and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, ScimError> {
        let mut left = self.unary()?;
        while self.peek_word("and") {
            self.operator()?;
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, ScimError> {
        if self.peek_word("not") {
            self.pos += 1;
            self.expect(Token::LParen)?;
            let inner = self.nested(Parser::or)?;
            self.expect(Token::RParen)?;
            return Ok(Filter::Not(Box::new(inner)));
        }
        match self.next() {
            Some(Token::LParen) => {
                let inner = self.nested(Parser::or)?;
                self.expect(Token::RParen)?;
                Ok(inner)
            }
            Some(Token::Word(word)) => {
                let path = parse_attr_path(&word)
                    .ok_or_else(|| invalid(format!("invalid attribute path `{word}`")))?;
                if matches!(self.tokens.get(self.pos), Some(Token::LBracket)) {
                    self.pos += 1;
                    let inner = self.nested(Parser::or)?;
                    self.expect(Token::RBracket)?;
                    return Ok(Filter::Complex(path, Box::new(inner)));
                }
                let op = match self.next() {
                    Some(Token::Word(op)) => op.to_ascii_lowercase(),
                    _ => return Err(invalid(format!("expected an operator after `{word}`"))),
                };
                let op = match op.as_str() {
                    "pr" => return Ok(Filter::Present(path)),
                    "eq" => Op::Eq,
                    "ne" => Op::Ne,
                    "co" => Op::Co,
                    "sw" => Op::Sw,
                    "ew" => Op::Ew,
                    "gt" => Op::Gt,
                    "ge" => Op::Ge,
                    "lt" => Op::Lt,
                    "le" => Op::Le,
                    other => return Err(invalid(format!("unknown operator `{other}`"))),
                };
                let literal = match self.next() {
                    Some(Token::Str(s)) => Literal::Str(s),
                    Some(Token::Word(w)) => match w.to_ascii_lowercase().as_str() {
                        "true" => Literal::Bool(true),
                        "false" => Literal::Bool(false),
                        "null" => Literal::Null,
                        _ => Literal::Num(
                            w.parse()
                                .map_err(|_| invalid(format!("invalid value `{w}` in filter")))?,
                        ),
                    },
                    _ => return Err(invalid(format!("expected a value after `{word} {op:?}`"))),
                };
                Ok(Filter::Compare(path, op, literal))
            }
            _ => Err(invalid("expected an attribute path, `(` or `not`")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation.

/// `map[key]`, with the key matched case-insensitively.
pub(crate) fn get_ci<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// The values `path` designates in `obj` (multi-valued attributes flattened; complex values
/// compared through their `value` sub-attribute).
fn resolve<'a>(path: &AttrPath, obj: &'a Map<String, Value>) -> Vec<&'a Value> {
    let container = match &path.urn {
        None => Some(obj),
        Some(urn) => match get_ci(obj, urn) {
            Some(Value::Object(ext)) => Some(ext),
            // A core-schema URN prefix designates the resource itself.
            _ if urn.to_ascii_lowercase().contains(":core:") => Some(obj),
            _ => None,
        },
    };
    let Some(value) = container.and_then(|c| get_ci(c, &path.attr)) else {
        return Vec::new();
    };
    let items: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let key = path.sub.as_deref();
    items
        .into_iter()
        .filter_map(|v| match (v, key) {
            (Value::Object(o), Some(sub)) => get_ci(o, sub),
            (Value::Object(o), None) => get_ci(o, "value").or(Some(v)),
            (other, None) => Some(other),
            (_, Some(_)) => None,
        })
        .collect()
}

fn case_exact(path: &AttrPath) -> bool {
    path.sub.is_none()
        && (path.attr.eq_ignore_ascii_case("id") || path.attr.eq_ignore_ascii_case("externalId"))
}

fn compare(value: &Value, op: Op, literal: &Literal, exact: bool) -> bool {
    match (value, literal) {
        (Value::String(v), Literal::Str(l)) => {
            let (v, l) = if exact {
                (v.clone(), l.clone())
            } else {
                (v.to_lowercase(), l.to_lowercase())
            };
            match op {
                Op::Eq => v == l,
                Op::Ne => v != l,
                Op::Co => v.contains(&l),
                Op::Sw => v.starts_with(&l),
                Op::Ew => v.ends_with(&l),
                Op::Gt => v > l,
                Op::Ge => v >= l,
                Op::Lt => v < l,
                Op::Le => v <= l,
            }
        }
        (Value::Number(v), Literal::Num(l)) => {
            let v = v.as_f64().unwrap_or(f64::NAN);
            match op {
                Op::Eq => v == *l,
                Op::Ne => v != *l,
                Op::Gt => v > *l,
                Op::Ge => v >= *l,
                Op::Lt => v < *l,
                Op::Le => v <= *l,
                Op::Co | Op::Sw | Op::Ew => false,
            }
        }
        (Value::Bool(v), Literal::Bool(l)) => match op {
            Op::Eq => v == l,
            Op::Ne => v != l,
            _ => false,
        },
        _ => matches!(op, Op::Ne),
    }
}

/// True when `obj` satisfies `filter`.
pub(crate) fn matches(filter: &Filter, obj: &Map<String, Value>) -> bool {
    match filter {
        Filter::And(a, b) => matches(a, obj) && matches(b, obj),
        Filter::Or(a, b) => matches(a, obj) || matches(b, obj),
        Filter::Not(f) => !matches(f, obj),
        Filter::Present(path) => resolve(path, obj).iter().any(|v| match v {
            Value::Null => false,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            _ => true,
        }),
        Filter::Compare(path, op, Literal::Null) => {
            let present = resolve(path, obj).iter().any(|v| !v.is_null());
            match op {
                Op::Eq => !present,
                Op::Ne => present,
                _ => false,
            }
        }
        Filter::Compare(path, Op::Ne, literal) => {
            let exact = case_exact(path);
            !resolve(path, obj)
                .iter()
                .any(|v| compare(v, Op::Eq, literal, exact))
        }
        Filter::Compare(path, op, literal) => {
            let exact = case_exact(path);
            resolve(path, obj)
                .iter()
                .any(|v| compare(v, *op, literal, exact))
        }
        Filter::Complex(path, inner) => {
            let container = match &path.urn {
                None => Some(obj),
                Some(urn) => match get_ci(obj, urn) {
                    Some(Value::Object(ext)) => Some(ext),
                    _ => None,
                },
            };
            match container.and_then(|c| get_ci(c, &path.attr)) {
                Some(Value::Array(items)) => items.iter().any(|item| match item {
                    Value::Object(o) => matches(inner, o),
                    _ => false,
                }),
                Some(Value::Object(o)) => matches(inner, o),
                _ => false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> Map<String, Value> {
        json!({
            "id": "abc-123",
            "userName": "Ada.Lovelace@Example.com",
            "active": true,
            "name": {"givenName": "Ada", "familyName": "Lovelace"},
            "emails": [{"value": "ada@work.example", "type": "work"}, {"value": "ada@home.example", "type": "home"}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Math"},
            "meta": {"lastModified": "2024-05-01T00:00:00.000Z"},
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn check(filter: &str) -> bool {
        matches(&parse(filter).unwrap(), &user())
    }

    #[test]
    fn operators_and_logic() {
        assert!(check(r#"userName eq "ada.lovelace@example.com""#));
        assert!(check(r#"USERNAME EQ "ADA.LOVELACE@EXAMPLE.COM""#));
        assert!(!check(r#"id eq "ABC-123""#), "id is case-exact");
        assert!(check(r#"userName ne "someone@else""#));
        assert!(check(r#"userName co "lovelace""#));
        assert!(check(r#"userName sw "ada""#));
        assert!(check(r#"userName ew "example.com""#));
        assert!(!check("title pr") && check("name pr"));
        assert!(check(r#"name.familyName eq "lovelace" and active eq true"#));
        assert!(check(r#"active eq false or name.givenName sw "A""#));
        assert!(check(r#"not (active eq false)"#));
        assert!(check(r#"emails[type eq "work" and value co "@work"]"#));
        assert!(!check(r#"emails[type eq "other"]"#));
        assert!(check(r#"emails co "home.example""#));
        assert!(check(r#"emails.type eq "home""#));
        assert!(check(r#"meta.lastModified gt "2024-01-01T00:00:00Z""#));
        assert!(check(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "math""#
        ));
        assert!(check(
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "ada""#
        ));
        assert!(check(
            r#"(userName eq "x" or userName sw "ada") and not (name.givenName eq "Bob")"#
        ));
        assert!(check("title eq null"));
    }

    #[test]
    fn malformed_filters_are_invalid_filter() {
        for bad in [
            "userName eq",
            "userName zz \"x\"",
            "(userName pr",
            "userName eq \"x",
            "and",
            "userName eq \"x\" extra",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.scim_type, Some("invalidFilter"), "{bad}");
        }
    }

    #[test]
    fn patch_paths() {
        let p = parse_path(r#"emails[type eq "work"].value"#).unwrap();
        assert_eq!(p.path.attr, "emails");
        assert_eq!(p.sub.as_deref(), Some("value"));
        assert!(p.filter.is_some());
        let p = parse_path("name.givenName").unwrap();
        assert_eq!(
            (p.path.attr.as_str(), p.path.sub.as_deref()),
            ("name", Some("givenName"))
        );
        let p = parse_path("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department")
            .unwrap();
        assert_eq!(
            p.path.urn.as_deref(),
            Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
        );
        assert_eq!(
            parse_path("emails[").unwrap_err().scim_type,
            Some("invalidPath")
        );
    }

    #[test]
    fn a_multibyte_character_in_the_first_four_bytes_is_an_invalid_path_not_a_panic() {
        assert_eq!(
            parse("abc\u{e9} pr"),
            Err(invalid("invalid attribute path `abc\u{e9}`"))
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}userName pr{}", "(".repeat(5000), ")".repeat(5000));
        assert_eq!(
            parse(&deep),
            Err(invalid(
                "the filter nests parentheses, brackets and `not` more than 32 levels deep; flatten it"
            ))
        );
        let deepest = format!("{}userName pr{}", "not (".repeat(32), ")".repeat(32));
        assert!(parse(&deepest).is_ok());
    }

    #[test]
    fn long_chains_are_bounded() {
        let chain = vec!["userName pr"; 5001].join(" and ");
        assert_eq!(
            parse(&chain),
            Err(invalid(
                "the filter has more than 1000 `and` and `or` operators; split it"
            ))
        );
        assert!(parse(&vec!["userName pr"; 1001].join(" or ")).is_ok());
    }
}
