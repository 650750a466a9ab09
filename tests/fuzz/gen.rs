//! Generators of structured, near-valid input for each surface.

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Value};

use super::json_value;

// ---------------------------------------------------------------------------------------------
// Workflows: a valid workflow built from the spec's shape, then one mutation.

/// A workflow that compiles: begin (record trigger, rules, `when`) → find → delete → end.
pub fn base_workflow(retry: bool, approval: bool, schedule: bool) -> Value {
    let mut begin = json!({
        "type": "begin", "records": "people", "on": ["created", "updated"],
        "rules": [{"field": "email", "op": "not_empty"},
                  {"field": "status", "op": "in", "value": ["terminated", "inactive"]}],
        "when": "record.status == \"terminated\"",
        "next": "find",
    });
    if schedule {
        begin = json!({"type": "begin", "schedule": {"cron": "0 3 * * *", "timezone": "Europe/Berlin"},
                       "next": "find"});
    }
    let mut delete = json!({
        "type": "api", "preset": "scim.delete_user",
        "with": {"scim_user_id": "{{blocks.find.outputs.id}}"},
        "answers": ["not_found"],
        "save": {"scim_status": "deleted"},
        "next": "end",
        "on_failure": "end",
    });
    if retry {
        delete["retry"] = json!({"max_attempts": 3, "initial_delay": "1s", "max_delay": "10s", "max_elapsed": "1m", "give_up_after": "1h"});
    }
    if approval {
        delete["approval"] = json!("required");
    }
    json!({
        "name": "fuzzed",
        "description": "a generated workflow",
        "blocks": {
            "begin": begin,
            "find": {
                "type": "api", "preset": "scim.find_user",
                "with": {"user_name": "{{lower record.email}}"},
                "answers": ["not_found"],
                "outputs": {"id": "{{response.Resources.0.id}}"},
                "next": [{"to": "delete", "when": "blocks.find.outputs.found"},
                         {"to": "end", "when": "!blocks.find.outputs.found"}],
            },
            "delete": delete,
            "end": {"type": "end"},
        }
    })
}

/// Every path to a node of `value`, parents before children.
fn paths(value: &Value, at: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(at.clone());
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                at.push(Step::Key(key.clone()));
                paths(child, at, out);
                at.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                at.push(Step::Index(i));
                paths(child, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn node<'a>(value: &'a mut Value, path: &[Step]) -> &'a mut Value {
    path.iter().fold(value, |v, step| match step {
        Step::Key(k) => &mut v[k.as_str()],
        Step::Index(i) => &mut v[*i],
    })
}

/// One mutation of a node.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(Value),
    Remove,
    AddKey(String, Value),
    Wrap,
    RenameKey(String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let odd = prop_oneof![
        Just(json!("")),
        Just(json!("{{")),
        Just(json!("{{#each x}}")),
        Just(json!("no_such_block")),
        Just(json!("scim.no_such_preset")),
        Just(json!(-1)),
        Just(json!(1e300)),
        Just(json!(u64::MAX)),
        Just(json!("0s")),
        Just(json!("99999999999999h")),
        Just(json!("record.x ++ ")),
        Just(json!("end")),
        Just(json!("begin")),
        Just(json!(["end", "end"])),
        json_value(),
    ];
    prop_oneof![
        3 => odd.prop_map(Mutation::Replace),
        2 => Just(Mutation::Remove),
        1 => ("[a-z_]{1,10}", json_value()).prop_map(|(k, v)| Mutation::AddKey(k, v)),
        1 => Just(Mutation::Wrap),
        1 => "[a-z_]{1,10}".prop_map(Mutation::RenameKey),
    ]
}

fn mutate(mut workflow: Value, pick: usize, mutation: &Mutation) -> Value {
    let mut all = Vec::new();
    paths(&workflow, &mut Vec::new(), &mut all);
    let path = &all[pick % all.len()];
    match mutation {
        Mutation::Replace(v) => *node(&mut workflow, path) = v.clone(),
        Mutation::Wrap => {
            let target = node(&mut workflow, path);
            *target = json!([{"nested": target.clone()}]);
        }
        Mutation::AddKey(key, v) => {
            if let Value::Object(map) = node(&mut workflow, path) {
                map.insert(key.clone(), v.clone());
            }
        }
        Mutation::Remove | Mutation::RenameKey(_) => {
            let Some((last, parent)) = path.split_last() else {
                return Value::Null;
            };
            let parent = node(&mut workflow, parent);
            match (parent, last) {
                (Value::Object(map), Step::Key(k)) => {
                    let old = map.remove(k);
                    if let (Mutation::RenameKey(new), Some(old)) = (mutation, old) {
                        map.insert(new.clone(), old);
                    }
                }
                (Value::Array(items), Step::Index(i)) => {
                    items.remove(*i);
                }
                _ => {}
            }
        }
    }
    workflow
}

/// A text-level change to the YAML after the mutation, sometimes.
#[derive(Debug, Clone)]
enum Edit {
    None,
    Truncate(usize),
    Insert(usize, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        6 => Just(Edit::None),
        1 => any::<usize>().prop_map(Edit::Truncate),
        1 => (any::<usize>(), select(vec!["\t", ":", "- ", "&a ", "*a", "!!binary ", "{", "[", "'", "\"", "\n  x: 1\n", "<<: *a\n", "? "]))
            .prop_map(|(at, s)| Edit::Insert(at, s.to_owned())),
    ]
}

pub fn workflow() -> impl Strategy<Value = String> {
    (
        any::<(bool, bool, bool)>(),
        any::<usize>(),
        mutation(),
        edit(),
    )
        .prop_map(|((retry, approval, schedule), pick, m, edit)| {
            let value = mutate(base_workflow(retry, approval, schedule), pick, &m);
            let mut yaml = serde_yaml::to_string(&value).expect("JSON is YAML");
            match edit {
                Edit::None => {}
                Edit::Truncate(at) => yaml.truncate(at_char_boundary(&yaml, at)),
                Edit::Insert(at, s) => yaml.insert_str(at_char_boundary(&yaml, at), &s),
            }
            yaml
        })
}

// ---------------------------------------------------------------------------------------------
// Templates: text, paths, every helper, nested sub-expressions and blocks.

fn path_expr() -> impl Strategy<Value = String> {
    select(vec![
        "record.email",
        "record.name",
        "record.tags",
        "record.n",
        "record.active",
        "record.nested.deep.0.x",
        "record.missing",
        "vars.base",
        "this",
        "@index",
        "../record",
        "record.[weird key]",
        "record.tags.[1]",
    ])
    .prop_map(str::to_owned)
}

fn expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        path_expr(),
        Just("\"text\"".to_owned()),
        Just("42".to_owned()),
        Just("-7".to_owned()),
        Just("true".to_owned()),
        Just("null".to_owned()),
    ];
    leaf.prop_recursive(4, 16, 3, |inner| {
        (
            select(vec![
                "json",
                "lower",
                "upper",
                "default",
                "urlencode",
                "last_segment",
                "now",
                "days_ago",
                "resource_uri",
                "eq",
                "nohelper",
            ]),
            proptest::collection::vec(inner, 0..3),
        )
            .prop_map(|(helper, args)| format!("({helper} {})", args.join(" ")))
    })
}

pub fn template() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-zA-Z0-9 /:.@-]{0,10}",
        path_expr().prop_map(|p| format!("{{{{{p}}}}}")),
        expr().prop_map(|e| format!(
            "{{{{{}}}}}",
            e.trim_start_matches('(').trim_end_matches(')')
        )),
        path_expr().prop_map(|p| format!("<<{p}>>")),
        Just("{{".to_owned()),
        Just("}}".to_owned()),
        Just("{{{record.name}}}".to_owned()),
        Just("\\{{escaped}}".to_owned()),
        Just("{{! comment }}".to_owned()),
        Just("{{> partial}}".to_owned()),
    ];
    piece
        .prop_recursive(3, 24, 4, |inner| {
            (
                select(vec!["if", "unless", "each", "with", "nohelper"]),
                path_expr(),
                proptest::collection::vec(inner.clone(), 0..3),
                proptest::collection::vec(inner, 0..2),
            )
                .prop_map(|(block, arg, body, other)| {
                    format!(
                        "{{{{#{block} {arg}}}}}{}{{{{else}}}}{}{{{{/{block}}}}}",
                        body.concat(),
                        other.concat()
                    )
                })
        })
        .prop_map(|s| s)
}

// ---------------------------------------------------------------------------------------------
// Rules: rhai expressions over the record.

pub fn rule() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        select(vec![
            "record.email",
            "record.status",
            "record.n",
            "record.tags",
            "record.missing",
            "subject",
            "\"terminated\"",
            "3",
            "-1",
            "1.5",
            "true",
            "()",
            "[1, 2, 3]",
            "#{a: 1}",
            "9223372036854775807",
        ])
        .prop_map(str::to_owned),
        "[a-z]{1,6}",
    ];
    leaf.prop_recursive(5, 32, 3, |inner| {
        prop_oneof![
            (
                inner.clone(),
                select(vec![
                    "==", "!=", "<", ">", "&&", "||", "+", "-", "*", "/", "%", "**", "in", "<<",
                    ">>"
                ]),
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            inner.clone().prop_map(|a| format!("!{a}")),
            (
                select(vec![
                    "days_since",
                    "days_idle",
                    "len",
                    "contains",
                    "to_upper",
                    "sub_string",
                    "split",
                    "pad",
                    "repeat",
                    "range",
                    "parse_int",
                    "type_of",
                    "eval",
                ]),
                proptest::collection::vec(inner.clone(), 0..3)
            )
                .prop_map(|(f, args)| format!("{f}({})", args.join(", "))),
            (
                inner.clone(),
                "[a-z_]{1,8}",
                proptest::collection::vec(inner.clone(), 0..2)
            )
                .prop_map(|(a, m, args)| format!("{a}.{m}({})", args.join(", "))),
            (inner.clone(), inner.clone(), inner)
                .prop_map(|(c, a, b)| format!("if {c} {{ {a} }} else {{ {b} }}")),
        ]
    })
}

// ---------------------------------------------------------------------------------------------
// SCIM: filters with every operator, PATCH bodies.

fn attr_path() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "userName",
            "USERNAME",
            "id",
            "externalId",
            "active",
            "name.givenName",
            "emails",
            "emails.value",
            "members",
            "meta.lastModified",
            "urn:ietf:params:scim:schemas:core:2.0:User:userName",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
            "$ref",
            "a-b_c",
            "1bad",
            "a.b.c",
            "urn:",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z$][a-zA-Z0-9_$-]{0,8}",
    ]
}

fn literal() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>().prop_map(|s| Value::String(s).to_string()),
        "[a-z@.]{0,8}".prop_map(|s| format!("\"{s}\"")),
        any::<f64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        select(vec![
            "true",
            "False",
            "null",
            "NaN",
            "inf",
            "-0",
            "1e400",
            "\"\\u0000\"",
            "\"\\ud800\"",
            "\"unterminated"
        ])
        .prop_map(str::to_owned),
    ]
}

pub fn filter() -> impl Strategy<Value = String> {
    let op = select(vec![
        "eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "EQ", "Sw", "xx",
    ]);
    let leaf = prop_oneof![
        (attr_path(), op, literal()).prop_map(|(a, o, l)| format!("{a} {o} {l}")),
        attr_path().prop_map(|a| format!("{a} pr")),
    ];
    leaf.prop_recursive(5, 32, 2, |inner| {
        prop_oneof![
            (
                inner.clone(),
                select(vec!["and", "or", "AND", "Or"]),
                inner.clone()
            )
                .prop_map(|(a, w, b)| format!("{a} {w} {b}")),
            inner.clone().prop_map(|a| format!("({a})")),
            inner.clone().prop_map(|a| format!("not ({a})")),
            (attr_path(), inner.clone()).prop_map(|(p, a)| format!("{p}[{a}]")),
            (attr_path(), inner.clone(), "[a-z]{0,5}")
                .prop_map(|(p, a, s)| format!("{p}[{a}].{s}")),
            (inner, any::<usize>()).prop_map(|(a, cut)| {
                // A broken filter: cut somewhere.
                let at = at_char_boundary(&a, cut);
                a[..at].to_owned()
            }),
        ]
    })
}

pub fn patch() -> impl Strategy<Value = Value> {
    let op = (
        select(vec!["add", "replace", "remove", "Replace", "ADD", "move", ""]),
        proptest::option::of(prop_oneof![
            attr_path(),
            filter().prop_map(|f| format!("emails[{f}]")),
            filter().prop_map(|f| format!("emails[{f}].value")),
            Just("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User".to_owned()),
            Just(" ".to_owned()),
        ]),
        proptest::option::of(prop_oneof![
            json_value(),
            Just(json!({"active": false, "name.givenName": "B"})),
            Just(json!([{"value": "b@x.io", "type": "home"}])),
            Just(json!({"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "7"}})),
        ]),
    )
        .prop_map(|(op, path, value)| {
            let mut o = json!({"op": op});
            if let Some(path) = path {
                o["path"] = json!(path);
            }
            if let Some(value) = value {
                o["value"] = value;
            }
            o
        });
    (
        proptest::collection::vec(op, 0..4),
        any::<bool>(),
        prop_oneof![8 => Just(None), 1 => json_value().prop_map(Some)],
    )
        .prop_map(|(ops, schema, replace)| {
            replace.unwrap_or_else(|| {
                let schemas = if schema {
                    json!(["urn:ietf:params:scim:api:messages:2.0:PatchOp"])
                } else {
                    json!(["urn:other"])
                };
                json!({"schemas": schemas, "Operations": ops})
            })
        })
}

// ---------------------------------------------------------------------------------------------
// Cron expressions and time zones.

fn cron_field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_owned()),
        Just("?".to_owned()),
        (0u32..70).prop_map(|n| n.to_string()),
        (0u32..70, 0u32..70).prop_map(|(a, b)| format!("{a}-{b}")),
        (0u32..70).prop_map(|n| format!("*/{n}")),
        (0u32..70, 0u32..70).prop_map(|(a, b)| format!("{a}/{b}")),
        (0u32..70, 0u32..70, 0u32..70).prop_map(|(a, b, c)| format!("{a}-{b}/{c}")),
        proptest::collection::vec(0u32..70, 1..4).prop_map(|v| v
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")),
        select(vec![
            "MON",
            "sun",
            "MON-FRI",
            "JAN",
            "dec",
            "L",
            "5L",
            "LW",
            "15W",
            "1#2",
            "FRI#5",
            "7",
            "4294967296",
            "-1",
            ""
        ])
        .prop_map(str::to_owned),
    ]
}

pub fn cron() -> impl Strategy<Value = String> {
    let expr = prop_oneof![
        4 => proptest::collection::vec(cron_field(), 5..=6).prop_map(|f| f.join(" ")),
        1 => proptest::collection::vec(cron_field(), 0..8).prop_map(|f| f.join(" ")),
        1 => select(vec!["@yearly", "@monthly", "@weekly", "@daily", "@hourly", "@reboot", "@every 5m"]).prop_map(str::to_owned),
    ];
    let zone = proptest::option::of(prop_oneof![
        select(vec![
            "UTC",
            "Europe/Berlin",
            "America/New_York",
            "Australia/Lord_Howe",
            "Pacific/Chatham",
            "Asia/Kathmandu",
            "America/Sao_Paulo",
            "Europe/Dublin",
            "Antarctica/Troll",
            "Pacific/Apia",
            "Europe/Berln",
            "",
            "Etc/GMT+14",
        ])
        .prop_map(str::to_owned),
        "[A-Za-z/_+-]{0,16}",
    ]);
    (expr, zone).prop_map(|(expr, zone)| match zone {
        Some(zone) => format!("{expr}\n{zone}"),
        None => expr,
    })
}

// ---------------------------------------------------------------------------------------------
// Record imports.

fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-z]{1,6}@example\\.com".prop_map(Value::String),
        select(vec![
            "active",
            "terminated",
            "",
            " ",
            "=cmd|' /C calc'!A0",
            "\u{feff}x",
            "a\"b",
            "a,b",
            "a\nb"
        ])
        .prop_map(|s| json!(s)),
        json_value(),
    ]
}

fn rows() -> impl Strategy<Value = Vec<Vec<(String, Value)>>> {
    let key = prop_oneof![
        4 => select(vec!["email", "name", "status", "Email", "email ", ""]).prop_map(str::to_owned),
        1 => "[a-z_]{1,8}",
    ];
    proptest::collection::vec(proptest::collection::vec((key, field_value()), 0..5), 0..6)
}

fn csv_cell(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

pub fn import() -> impl Strategy<Value = Vec<u8>> {
    (0u8..3, any::<bool>(), rows(), any::<bool>()).prop_map(|(format, write, rows, broken)| {
        let file = match format {
            0 => {
                let header: Vec<String> = rows
                    .first()
                    .map(|r| r.iter().map(|(k, _)| k.clone()).collect())
                    .unwrap_or_else(|| vec!["email".to_owned()]);
                let mut text = header.join(",") + "\n";
                for row in &rows {
                    let cells: Vec<String> = row.iter().map(|(_, v)| csv_cell(v)).collect();
                    text += &(cells.join(",") + "\n");
                }
                text
            }
            1 => Value::Array(
                rows.iter()
                    .map(|r| Value::Object(r.iter().cloned().collect()))
                    .collect(),
            )
            .to_string(),
            _ => rows
                .iter()
                .map(|r| Value::Object(r.iter().cloned().collect()).to_string() + "\n")
                .collect(),
        };
        let mut file = file.into_bytes();
        if broken {
            file.truncate(file.len() * 2 / 3);
        }
        let mut data = vec![format | if write { 0x80 } else { 0 }];
        data.extend(file);
        data
    })
}

// ---------------------------------------------------------------------------------------------
// Vendor responses.

pub fn vendor() -> impl Strategy<Value = Vec<u8>> {
    let retry_after = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        select(vec![
            "18446744073709551616",
            "1e20",
            "inf",
            "-1",
            "NaN",
            " 5 ",
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Mon, 32 Nov 2026 25:61:61 GMT",
            "",
        ])
        .prop_map(str::to_owned),
    ]
    .prop_map(|s| [vec![0], s.into_bytes()].concat());
    let url = prop_oneof![
        Just("https://api.example.com/v1/people?cursor=2".to_owned()),
        Just("https://api.example.com/v1".to_owned()),
        Just("https://api.example.com/v10/x".to_owned()),
        Just("https://api.example.com:444/v1/x".to_owned()),
        Just("http://api.example.com/v1/x".to_owned()),
        Just("https://evil.example/v1/x?page_token=t".to_owned()),
        Just("/v1/relative".to_owned()),
        "[a-z:/.?=&]{0,20}",
    ];
    let link = (
        proptest::collection::vec(
            (
                url.clone(),
                select(vec![
                    "rel=\"next\"",
                    "rel=next",
                    "REL=\"prev next\"",
                    "rel=\"last\"",
                    "",
                    "rel",
                ]),
            ),
            0..3,
        ),
        any::<bool>(),
    )
        .prop_map(|(links, junk)| {
            let mut text = links
                .iter()
                .map(|(u, r)| format!("<{u}>; {r}"))
                .collect::<Vec<_>>()
                .join(", ");
            if junk {
                text.push_str(", <unclosed; rel=next");
            }
            text
        });
    let number = prop_oneof![
        any::<u64>().prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        Just(json!(u64::MAX)),
        Just(json!("18446744073709551615")),
        Just(json!(0)),
        Just(json!(1.5)),
        Just(json!(null)),
    ];
    let body = prop_oneof![
        (proptest::option::of(url), proptest::option::of("[a-zA-Z0-9]{0,8}")).prop_map(|(next, token)| {
            json!({"collection": [], "pagination": {"next_page": next, "next_page_token": token}})
        }),
        (number.clone(), number.clone(), number).prop_map(|(total, start, per)| {
            json!({"totalResults": total, "startIndex": start, "itemsPerPage": per, "Resources": []})
        }),
        json_value(),
    ];
    let page = (2u8..5, link.clone(), body).prop_map(|(style, link, body)| {
        [vec![style], format!("{link}\n{body}").into_bytes()].concat()
    });
    let error = json_value().prop_map(|body| [vec![5], body.to_string().into_bytes()].concat());
    prop_oneof![
        retry_after,
        link.prop_map(|l| [vec![1], l.into_bytes()].concat()),
        page,
        error,
    ]
}

pub(super) fn at_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at % (text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}
