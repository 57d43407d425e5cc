//! The OpenFeature Remote Evaluation Protocol (OFREP 0.3.0) for apps that
//! cannot read the flags header: `POST /ofrep/v1/evaluate/flags/{key}` and
//! the bulk `POST /ofrep/v1/evaluate/flags` (ETag / 304). Flags are
//! evaluated by the same core code the filter runs, with the context's
//! `targetingKey` as the identity, so an app and the proxy agree.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dimmer_core::config::IdentitySource;
use dimmer_core::flags::CompiledFlag;
use dimmer_core::{Evaluation, FlagContext, FlagReason};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::borrow::Cow;

use super::state::{read_body, ApiError, App};
use crate::auth::Role;
use crate::service::FlagTable;

/// Largest evaluation request body.
pub const MAX_BODY: usize = 64 * 1024;

/// An evaluation context as a flag context: the targeting key is the
/// identity whatever the flag's identity chain, overrides on header `h`
/// compare context field `h`, and a flag's match is the proxy's business
/// (an app that asks for a flag by key gets it).
pub struct OfrepContext {
    key: Option<Vec<u8>>,
    fields: Map<String, Value>,
}

impl OfrepContext {
    pub fn new(mut fields: Map<String, Value>) -> Result<Self, &'static str> {
        let key = match fields.remove("targetingKey") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.into_bytes()),
            Some(_) => return Err("targetingKey must be a string"),
        };
        Ok(OfrepContext { key, fields })
    }
}

impl FlagContext for OfrepContext {
    fn identity(&self, _chain: usize, _sources: &[IdentitySource]) -> Option<&[u8]> {
        self.key.as_deref()
    }

    fn attribute(&self, _attribute: usize, header: &str) -> Option<Cow<'_, [u8]>> {
        match self.fields.get(header)? {
            Value::String(s) => Some(Cow::Borrowed(s.as_bytes())),
            Value::Bool(b) => Some(Cow::Owned(b.to_string().into_bytes())),
            Value::Number(n) => Some(Cow::Owned(n.to_string().into_bytes())),
            _ => None,
        }
    }

    fn matches(&self, _flag: &CompiledFlag) -> bool {
        true
    }
}

fn reason(r: FlagReason) -> &'static str {
    match r {
        FlagReason::Disabled => "DISABLED",
        FlagReason::TargetingMatch => "TARGETING_MATCH",
        FlagReason::Split | FlagReason::AnonymousRandom => "SPLIT",
        FlagReason::Prerequisite | FlagReason::Excluded | FlagReason::AnonymousDefault => "DEFAULT",
    }
}

/// One flag's answer, or its failure, in OFREP's shape.
fn answer(table: &FlagTable, i: usize, e: Option<Evaluation>, has_key: bool) -> (bool, Value) {
    let Some(f) = table.compiled.flags.get(i) else {
        return (false, json!({"errorCode": "GENERAL"}));
    };
    let Some(e) = e else {
        return (
            false,
            json!({"key": f.key, "errorCode": "GENERAL", "errorDetails": "not evaluated"}),
        );
    };
    // The answer needed an identity the context did not give.
    if !has_key && matches!(e.reason, FlagReason::AnonymousDefault) {
        return (
            false,
            json!({"key": f.key, "errorCode": "TARGETING_KEY_MISSING",
                   "errorDetails": "this flag splits by identity: give a targetingKey"}),
        );
    }
    let variant = f.variants.get(e.variant).cloned().unwrap_or_default();
    let value = table
        .values
        .get(i)
        .and_then(|v| v.get(e.variant))
        .cloned()
        .unwrap_or_else(|| Value::String(variant.clone()));
    (
        true,
        json!({
            "key": f.key, "value": value, "variant": variant, "reason": reason(e.reason),
            "metadata": {"revision": table.revision},
        }),
    )
}

fn failure(status: StatusCode, key: Option<&str>, code: &str, details: &str) -> Response {
    let mut body = json!({"errorCode": code, "errorDetails": details});
    if let Some(k) = key {
        body["key"] = json!(k);
    }
    (status, Json(body)).into_response()
}

/// The request's context, or the OFREP failure to send back.
async fn context_of(
    headers: &HeaderMap,
    body: Body,
    key: Option<&str>,
) -> Result<(OfrepContext, Vec<u8>), Response> {
    let bytes = read_body(headers, body, MAX_BODY)
        .await
        .map_err(IntoResponse::into_response)?;
    let request: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| failure(StatusCode::BAD_REQUEST, key, "PARSE_ERROR", &e.to_string()))?
    };
    let context = match request.get("context") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            return Err(failure(
                StatusCode::BAD_REQUEST,
                key,
                "INVALID_CONTEXT",
                "context must be an object",
            ))
        }
    };
    // The context's bytes, canonical (serde_json sorts object keys), for the ETag.
    let canonical = serde_json::to_vec(&context).unwrap_or_default();
    let ctx = OfrepContext::new(context)
        .map_err(|why| failure(StatusCode::BAD_REQUEST, key, "INVALID_CONTEXT", why))?;
    Ok((ctx, canonical))
}

fn random() -> u64 {
    rand::random()
}

pub async fn evaluate_one(
    State(app): State<App>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    app.require(&headers, Role::Proxy).await?;
    let (ctx, _) = match context_of(&headers, body, Some(&key)).await {
        Ok(c) => c,
        Err(resp) => return Ok(resp),
    };
    let table = app.service.flag_table();
    let Some(i) = table.compiled.index(&key) else {
        return Ok(failure(
            StatusCode::NOT_FOUND,
            Some(&key),
            "FLAG_NOT_FOUND",
            "no flag with this key",
        ));
    };
    let results = table.compiled.evaluate(&ctx, &mut random);
    let has_key = ctx.key.is_some();
    let (ok, mut body) = answer(&table, i, results.get(i).copied().flatten(), has_key);
    if !ok {
        return Ok((StatusCode::BAD_REQUEST, Json(body)).into_response());
    }
    body["cacheable"] = json!(false);
    Ok(Json(body).into_response())
}

pub async fn evaluate_all(
    State(app): State<App>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    app.require(&headers, Role::Proxy).await?;
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (ctx, canonical) = match context_of(&headers, body, None).await {
        Ok(c) => c,
        Err(resp) => return Ok(resp),
    };
    let table = app.service.flag_table();
    // The answer depends on the flags (their revision) and the context
    // alone, except for anonymous random splits, which are per request anyway.
    let mut h = Sha256::new();
    h.update(table.revision.to_be_bytes());
    h.update(&canonical);
    let digest = h.finalize();
    let etag = format!(
        "\"r{}-{}\"",
        table.revision,
        digest[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    if if_none_match.as_deref() == Some(etag.as_str()) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let results = table.compiled.evaluate(&ctx, &mut random);
    let has_key = ctx.key.is_some();
    let flags: Vec<Value> = (0..table.compiled.flags.len())
        .map(|i| answer(&table, i, results.get(i).copied().flatten(), has_key).1)
        .collect();
    Ok(([(header::ETAG, etag)], Json(json!({ "flags": flags }))).into_response())
}
