//! Advanced mode: a block's `request:` rendered into the [`RequestPatch`] the client applies over
//! the preset's request, so the request sent, shown by a dry run, recorded in history and
//! compared by an offline replay is the one the workflow wrote.
//!
//! The templates see the block's context plus the preset's resolved inputs as `inputs`. Each part
//! renders the way the preset's own would: the path with every expression encoded as one
//! segment, a query value as text (one that renders empty is left out, as a preset's is), the
//! body leaf by leaf (an object member whose single expression is `null` is left out; a body that
//! renders `null` sends none).

use handlebars::Context;
use serde_json::Value;

use crate::compile::RequestOverride;
use crate::http::request::render_body;
use crate::http::RequestPatch;
use crate::template::TemplateEngine;

/// Renders `request` over `hb` (the block's context with `inputs`). The error names the part.
pub(crate) fn render(
    templates: &TemplateEngine,
    request: &RequestOverride,
    hb: &Context,
) -> Result<RequestPatch, String> {
    fn failed(part: &'static str) -> impl Fn(crate::template::RenderFailure) -> String {
        move |err| format!("cannot render `request.{part}`: {err}")
    }
    let path = match &request.path {
        Some(t) => Some(templates.render_path(t, hb).map_err(failed("path"))?),
        None => None,
    };
    let mut query = Vec::with_capacity(request.query.len());
    for (name, template) in &request.query {
        let value = match template {
            None => None,
            Some(t) => {
                let value = templates
                    .render_json(t, hb)
                    .map_err(|err| format!("cannot render `request.query.{name}`: {err}"))?;
                let text = match value {
                    Value::String(s) => s,
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (!text.is_empty()).then_some(text)
            }
        };
        query.push((name.clone(), value));
    }
    let mut headers = Vec::with_capacity(request.headers.len());
    for (name, template) in &request.headers {
        let value = match template {
            None => None,
            Some(t) => Some(
                templates
                    .render(t, hb)
                    .map_err(|err| format!("cannot render `request.headers.{name}`: {err}"))?,
            ),
        };
        headers.push((name.clone(), value));
    }
    let body = match &request.body {
        Some(t) => {
            let body = render_body(templates, t, hb).map_err(failed("body"))?;
            Some((!body.is_null()).then_some(body))
        }
        None => None,
    };
    Ok(RequestPatch {
        method: request.method,
        path,
        query,
        headers,
        body,
    })
}
