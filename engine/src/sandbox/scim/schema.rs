//! SCIM schemas (RFC 7643 §4, §7, §8.7): the User, Enterprise User and Group definitions that
//! `/Schemas` serves, and the typed [`Attr`] view of them that validation, PATCH paths and
//! filters use.
//!
//! The JSON served by `/Schemas` is the single source of truth: the typed view is parsed from it
//! once, so what the discovery endpoints advertise is exactly what the server accepts.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use super::ScimError;

pub(crate) const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub(crate) const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub(crate) const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// The attribute type (RFC 7643 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    String,
    Boolean,
    Decimal,
    Integer,
    DateTime,
    Binary,
    Reference,
    Complex,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
    WriteOnly,
}

/// One attribute definition.
#[derive(Debug, Clone)]
pub(crate) struct Attr {
    pub(crate) name: String,
    pub(crate) ty: Ty,
    pub(crate) multi: bool,
    pub(crate) required: bool,
    pub(crate) mutability: Mutability,
    pub(crate) never_returned: bool,
    pub(crate) sub: Vec<Attr>,
}

impl Attr {
    /// The sub-attribute called `name` (case-insensitive).
    pub(crate) fn sub_attr(&self, name: &str) -> Option<&Attr> {
        find(&self.sub, name)
    }
}

/// The attribute called `name` in `attrs` (case-insensitive).
pub(crate) fn find<'a>(attrs: &'a [Attr], name: &str) -> Option<&'a Attr> {
    attrs.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

/// The resource types the server has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    User,
    Group,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Group => "Group",
        }
    }

    pub(crate) fn endpoint(self) -> &'static str {
        match self {
            Kind::User => "Users",
            Kind::Group => "Groups",
        }
    }

    pub(crate) fn core(self) -> &'static str {
        match self {
            Kind::User => USER,
            Kind::Group => GROUP,
        }
    }

    pub(crate) fn extensions(self) -> &'static [&'static str] {
        match self {
            Kind::User => &[ENTERPRISE],
            Kind::Group => &[],
        }
    }

    pub(crate) fn attrs(self) -> &'static [Attr] {
        let s = schemas();
        match self {
            Kind::User => &s.user,
            Kind::Group => &s.group,
        }
    }

    /// The attributes of the schema `urn` (core or extension), when it belongs to this kind.
    pub(crate) fn schema_attrs(self, urn: &str) -> Option<&'static [Attr]> {
        if urn.eq_ignore_ascii_case(self.core()) {
            Some(self.attrs())
        } else if self
            .extensions()
            .iter()
            .any(|e| e.eq_ignore_ascii_case(urn))
        {
            Some(&schemas().enterprise)
        } else {
            None
        }
    }

    /// The canonical spelling of extension `urn`, when it belongs to this kind.
    pub(crate) fn extension(self, urn: &str) -> Option<&'static str> {
        self.extensions()
            .iter()
            .copied()
            .find(|e| e.eq_ignore_ascii_case(urn))
    }
}

struct Schemas {
    json: Vec<Value>,
    user: Vec<Attr>,
    enterprise: Vec<Attr>,
    group: Vec<Attr>,
}

fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let json = vec![user_schema(), enterprise_schema(), group_schema()];
        let parse = |v: &Value| parse_attrs(&v["attributes"]);
        Schemas {
            user: parse(&json[0]),
            enterprise: parse(&json[1]),
            group: parse(&json[2]),
            json,
        }
    })
}

/// The three schema resources, without `meta` (the caller adds locations).
pub(crate) fn schema_resources() -> &'static [Value] {
    &schemas().json
}

fn parse_attrs(v: &Value) -> Vec<Attr> {
    v.as_array()
        .map(|attrs| attrs.iter().map(parse_attr).collect())
        .unwrap_or_default()
}

fn parse_attr(v: &Value) -> Attr {
    let ty = match v["type"].as_str().unwrap_or("string") {
        "boolean" => Ty::Boolean,
        "decimal" => Ty::Decimal,
        "integer" => Ty::Integer,
        "dateTime" => Ty::DateTime,
        "binary" => Ty::Binary,
        "reference" => Ty::Reference,
        "complex" => Ty::Complex,
        _ => Ty::String,
    };
    let mutability = match v["mutability"].as_str().unwrap_or("readWrite") {
        "readOnly" => Mutability::ReadOnly,
        "immutable" => Mutability::Immutable,
        "writeOnly" => Mutability::WriteOnly,
        _ => Mutability::ReadWrite,
    };
    Attr {
        name: v["name"].as_str().unwrap_or_default().to_owned(),
        ty,
        multi: v["multiValued"].as_bool().unwrap_or(false),
        required: v["required"].as_bool().unwrap_or(false),
        mutability,
        never_returned: v["returned"] == "never",
        sub: parse_attrs(&v["subAttributes"]),
    }
}

// ---------------------------------------------------------------------------------------------
// The served definitions (RFC 7643 §8.7.1), built with a small builder.

struct A(Map<String, Value>);

fn a(name: &str, ty: &str, description: &str) -> A {
    let mut m = Map::new();
    m.insert("name".into(), json!(name));
    m.insert("type".into(), json!(ty));
    m.insert("multiValued".into(), json!(false));
    m.insert("description".into(), json!(description));
    m.insert("required".into(), json!(false));
    m.insert("caseExact".into(), json!(false));
    m.insert("mutability".into(), json!("readWrite"));
    m.insert("returned".into(), json!("default"));
    m.insert("uniqueness".into(), json!("none"));
    A(m)
}

impl A {
    fn set(mut self, k: &str, v: Value) -> A {
        self.0.insert(k.into(), v);
        self
    }
    fn multi(self) -> A {
        self.set("multiValued", json!(true))
    }
    fn required(self) -> A {
        self.set("required", json!(true))
    }
    fn read_only(self) -> A {
        self.set("mutability", json!("readOnly"))
    }
    fn immutable(self) -> A {
        self.set("mutability", json!("immutable"))
    }
    fn canon(self, values: &[&str]) -> A {
        self.set("canonicalValues", json!(values))
    }
    fn refs(self, types: &[&str]) -> A {
        self.set("referenceTypes", json!(types))
    }
    fn sub(mut self, subs: Vec<A>) -> A {
        self.0.remove("caseExact");
        self.0.remove("uniqueness");
        self.set(
            "subAttributes",
            Value::Array(subs.into_iter().map(A::done).collect()),
        )
    }
    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

/// `value`, `display`, `type`, `primary`: the usual multi-valued sub-attributes.
fn multi_valued(name: &str, description: &str, value_type: &str, types: &[&str]) -> A {
    let mut value = a("value", value_type, &format!("The value of the {name}."));
    if value_type == "reference" {
        value = value.refs(&["external"]);
    }
    a(name, "complex", description).multi().sub(vec![
        value,
        a(
            "display",
            "string",
            "A human-readable name, primarily used for display purposes.",
        ),
        a(
            "type",
            "string",
            "A label indicating the attribute's function.",
        )
        .canon(types),
        a(
            "primary",
            "boolean",
            "Indicates the 'primary' or preferred attribute value.",
        ),
    ])
}

fn schema(id: &str, name: &str, description: &str, attrs: Vec<A>) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": id,
        "name": name,
        "description": description,
        "attributes": attrs.into_iter().map(A::done).collect::<Vec<_>>(),
    })
}

fn user_schema() -> Value {
    schema(
        USER,
        "User",
        "User Account",
        vec![
            a(
                "userName",
                "string",
                "Unique identifier for the User, typically used to sign in.",
            )
            .required()
            .set("uniqueness", json!("server")),
            a("name", "complex", "The components of the user's real name.").sub(vec![
                a(
                    "formatted",
                    "string",
                    "The full name, formatted for display.",
                ),
                a("familyName", "string", "The family name of the User."),
                a("givenName", "string", "The given name of the User."),
                a("middleName", "string", "The middle name(s) of the User."),
                a(
                    "honorificPrefix",
                    "string",
                    "The honorific prefix(es) of the User.",
                ),
                a(
                    "honorificSuffix",
                    "string",
                    "The honorific suffix(es) of the User.",
                ),
            ]),
            a(
                "displayName",
                "string",
                "The name of the User, suitable for display.",
            ),
            a("nickName", "string", "The casual way to address the user."),
            a(
                "profileUrl",
                "reference",
                "A fully qualified URL pointing to the User's profile.",
            )
            .refs(&["external"]),
            a(
                "title",
                "string",
                "The user's title, such as \"Vice President\".",
            ),
            a(
                "userType",
                "string",
                "The relationship between the organization and the user.",
            ),
            a(
                "preferredLanguage",
                "string",
                "The User's preferred written or spoken language.",
            ),
            a("locale", "string", "The User's default location."),
            a("timezone", "string", "The User's time zone in IANA format."),
            a("active", "boolean", "The User's administrative status."),
            a("password", "string", "The User's cleartext password.")
                .set("mutability", json!("writeOnly"))
                .set("returned", json!("never")),
            multi_valued(
                "emails",
                "Email addresses for the user.",
                "string",
                &["work", "home", "other"],
            ),
            multi_valued(
                "phoneNumbers",
                "Phone numbers for the User.",
                "string",
                &["work", "home", "mobile", "fax", "pager", "other"],
            ),
            multi_valued(
                "ims",
                "Instant messaging addresses for the User.",
                "string",
                &["aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"],
            ),
            multi_valued(
                "photos",
                "URLs of photos of the User.",
                "reference",
                &["photo", "thumbnail"],
            ),
            a(
                "addresses",
                "complex",
                "A physical mailing address for this User.",
            )
            .multi()
            .sub(vec![
                a("formatted", "string", "The full mailing address."),
                a(
                    "streetAddress",
                    "string",
                    "The full street address component.",
                ),
                a("locality", "string", "The city or locality component."),
                a("region", "string", "The state or region component."),
                a(
                    "postalCode",
                    "string",
                    "The zip code or postal code component.",
                ),
                a("country", "string", "The country name component."),
                a(
                    "type",
                    "string",
                    "A label indicating the attribute's function.",
                )
                .canon(&["work", "home", "other"]),
                a(
                    "primary",
                    "boolean",
                    "Indicates the 'primary' or preferred address.",
                ),
            ]),
            a(
                "groups",
                "complex",
                "A list of groups to which the user belongs.",
            )
            .multi()
            .read_only()
            .sub(vec![
                a("value", "string", "The identifier of the User's group.").read_only(),
                a(
                    "$ref",
                    "reference",
                    "The URI of the corresponding 'Group' resource.",
                )
                .refs(&["User", "Group"])
                .read_only(),
                a("display", "string", "A human-readable name.").read_only(),
                a("type", "string", "How the group membership was derived.")
                    .canon(&["direct", "indirect"])
                    .read_only(),
            ]),
            multi_valued(
                "entitlements",
                "A list of entitlements for the User.",
                "string",
                &[],
            ),
            multi_valued("roles", "A list of roles for the User.", "string", &[]),
            multi_valued(
                "x509Certificates",
                "A list of certificates issued to the User.",
                "binary",
                &[],
            ),
        ],
    )
}

fn enterprise_schema() -> Value {
    schema(
        ENTERPRISE,
        "EnterpriseUser",
        "Enterprise User",
        vec![
            a(
                "employeeNumber",
                "string",
                "A string identifier, typically numeric or alphanumeric.",
            ),
            a(
                "costCenter",
                "string",
                "Identifies the name of a cost center.",
            ),
            a(
                "organization",
                "string",
                "Identifies the name of an organization.",
            ),
            a("division", "string", "Identifies the name of a division."),
            a(
                "department",
                "string",
                "Identifies the name of a department.",
            ),
            a("manager", "complex", "The User's manager.").sub(vec![
                a(
                    "value",
                    "string",
                    "The id of the SCIM resource representing the manager.",
                ),
                a(
                    "$ref",
                    "reference",
                    "The URI of the SCIM resource representing the manager.",
                )
                .refs(&["User"]),
                a(
                    "displayName",
                    "string",
                    "The displayName of the User's manager.",
                )
                .read_only(),
            ]),
        ],
    )
}

fn group_schema() -> Value {
    schema(
        GROUP,
        "Group",
        "Group",
        vec![
            a(
                "displayName",
                "string",
                "A human-readable name for the Group.",
            )
            .required(),
            a("members", "complex", "A list of members of the Group.")
                .multi()
                .sub(vec![
                    a("value", "string", "Identifier of the member of this Group.").immutable(),
                    a(
                        "$ref",
                        "reference",
                        "The URI corresponding to a SCIM resource that is a member of this Group.",
                    )
                    .refs(&["User", "Group"])
                    .immutable(),
                    a("display", "string", "A human-readable name for the member."),
                    a("type", "string", "A label indicating the type of resource.")
                        .canon(&["User", "Group"])
                        .immutable(),
                ]),
        ],
    )
}

// ---------------------------------------------------------------------------------------------
// Validation.

/// Checks and normalizes one value against its definition (`"False"` becomes `false`, a single
/// value of a multi-valued attribute becomes an array). `None` means "no value".
pub(crate) fn normalize(attr: &Attr, value: &Value) -> Result<Option<Value>, ScimError> {
    if value.is_null() {
        return Ok(None);
    }
    if attr.multi {
        let items: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Some(v) = normalize_single(attr, item)? {
                out.push(v);
            }
        }
        return Ok((!out.is_empty()).then_some(Value::Array(out)));
    }
    normalize_single(attr, value)
}

fn normalize_single(attr: &Attr, value: &Value) -> Result<Option<Value>, ScimError> {
    let bad = || {
        ScimError::invalid_value(format!(
            "`{}` must be a {}",
            attr.name,
            match attr.ty {
                Ty::Boolean => "boolean",
                Ty::Integer => "integer",
                Ty::Decimal => "number",
                Ty::Complex => "JSON object",
                _ => "string",
            }
        ))
    };
    Ok(Some(match (attr.ty, value) {
        (_, Value::Null) => return Ok(None),
        (Ty::Boolean, Value::Bool(b)) => Value::Bool(*b),
        (Ty::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("true") => Value::Bool(true),
        (Ty::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("false") => Value::Bool(false),
        (Ty::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => value.clone(),
        (Ty::Decimal, Value::Number(_)) => value.clone(),
        (Ty::String | Ty::DateTime | Ty::Binary | Ty::Reference, Value::String(_)) => value.clone(),
        (Ty::Complex, Value::Object(fields)) => {
            let mut out = Map::new();
            for (k, v) in fields {
                let Some(sub) = attr.sub_attr(k) else {
                    return Err(ScimError::invalid_syntax(format!(
                        "unknown sub-attribute `{}.{k}`",
                        attr.name
                    )));
                };
                if let Some(v) = normalize(sub, v)? {
                    out.insert(sub.name.clone(), v);
                }
            }
            if out.is_empty() {
                return Ok(None);
            }
            Value::Object(out)
        }
        _ => return Err(bad()),
    }))
}

/// Validates a whole resource body for POST or PUT (and the result of a PATCH), returning the
/// stored attributes: canonical names, read-only attributes dropped, `schemas` rebuilt.
pub(crate) fn validate(
    kind: Kind,
    body: &Map<String, Value>,
) -> Result<Map<String, Value>, ScimError> {
    let schemas = body
        .get("schemas")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ScimError::invalid_syntax("`schemas` is required and must be an array of URNs")
        })?;
    let declared: Vec<&str> = schemas.iter().filter_map(Value::as_str).collect();
    if !declared.iter().any(|s| s.eq_ignore_ascii_case(kind.core())) {
        return Err(ScimError::invalid_syntax(format!(
            "`schemas` must contain `{}`",
            kind.core()
        )));
    }
    let mut out = Map::new();
    let mut used_schemas = vec![Value::String(kind.core().to_owned())];
    for (key, value) in body {
        if ["schemas", "id", "meta"]
            .iter()
            .any(|k| k.eq_ignore_ascii_case(key))
        {
            continue;
        }
        if key.eq_ignore_ascii_case("externalId") {
            match value {
                Value::Null => {}
                Value::String(_) => {
                    out.insert("externalId".into(), value.clone());
                }
                _ => return Err(ScimError::invalid_value("`externalId` must be a string")),
            }
            continue;
        }
        if let Some(urn) = kind.extension(key) {
            let Value::Object(fields) = value else {
                return Err(ScimError::invalid_syntax(format!(
                    "`{urn}` must be a JSON object"
                )));
            };
            let ext = validate_attrs(kind.schema_attrs(urn).unwrap_or_default(), fields)?;
            if !ext.is_empty() {
                out.insert(urn.to_owned(), Value::Object(ext));
                used_schemas.push(Value::String(urn.to_owned()));
            }
            continue;
        }
        let name = strip_core(kind, key);
        let Some(attr) = find(kind.attrs(), name) else {
            return Err(ScimError::invalid_syntax(format!(
                "unknown attribute `{key}`"
            )));
        };
        if attr.mutability == Mutability::ReadOnly {
            continue;
        }
        if let Some(v) = normalize(attr, value)? {
            out.insert(attr.name.clone(), v);
        }
    }
    for attr in kind.attrs().iter().filter(|a| a.required) {
        let present = match out.get(&attr.name) {
            Some(Value::String(s)) => !s.trim().is_empty(),
            Some(_) => true,
            None => false,
        };
        if !present {
            return Err(ScimError::invalid_value(format!(
                "`{}` is required",
                attr.name
            )));
        }
    }
    out.insert("schemas".into(), Value::Array(used_schemas));
    Ok(out)
}

fn validate_attrs(
    attrs: &[Attr],
    fields: &Map<String, Value>,
) -> Result<Map<String, Value>, ScimError> {
    let mut out = Map::new();
    for (key, value) in fields {
        if key.eq_ignore_ascii_case("schemas") {
            continue;
        }
        let Some(attr) = find(attrs, key) else {
            return Err(ScimError::invalid_syntax(format!(
                "unknown attribute `{key}`"
            )));
        };
        if attr.mutability == Mutability::ReadOnly {
            continue;
        }
        if let Some(v) = normalize(attr, value)? {
            out.insert(attr.name.clone(), v);
        }
    }
    Ok(out)
}

/// `urn:…:core:2.0:User:userName` → `userName`; other names unchanged.
pub(crate) fn strip_core(kind: Kind, name: &str) -> &str {
    let core = kind.core();
    if name.len() > core.len() + 1
        && name[..core.len()].eq_ignore_ascii_case(core)
        && name.as_bytes()[core.len()] == b':'
    {
        &name[core.len() + 1..]
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_normalizes_names_booleans_and_extensions() {
        let body = json!({
            "schemas": [USER, ENTERPRISE],
            "USERNAME": "a@example.com",
            "active": "False",
            "emails": {"value": "a@example.com", "type": "work"},
            "id": "ignored",
            "groups": [{"value": "ignored too"}],
            ENTERPRISE: {"department": "R&D"},
        });
        let got = validate(Kind::User, body.as_object().unwrap()).unwrap();
        assert_eq!(got["userName"], "a@example.com");
        assert_eq!(got["active"], false);
        assert_eq!(
            got["emails"],
            json!([{"value": "a@example.com", "type": "work"}])
        );
        assert_eq!(got[ENTERPRISE], json!({"department": "R&D"}));
        assert!(!got.contains_key("id") && !got.contains_key("groups"));
        assert_eq!(got["schemas"], json!([USER, ENTERPRISE]));
    }

    #[test]
    fn validation_errors_carry_the_scim_type() {
        let check = |body: Value| {
            validate(Kind::User, body.as_object().unwrap())
                .unwrap_err()
                .scim_type
        };
        assert_eq!(check(json!({"schemas": [USER]})), Some("invalidValue"));
        assert_eq!(
            check(json!({"schemas": [USER], "userName": "x", "bogus": 1})),
            Some("invalidSyntax")
        );
        assert_eq!(
            check(json!({"schemas": [USER], "userName": "x", "active": "maybe"})),
            Some("invalidValue")
        );
        assert_eq!(check(json!({"userName": "x"})), Some("invalidSyntax"));
    }
}
