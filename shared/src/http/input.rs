//! Request input into domain values: bodies, query parameters, ids, cursors, headers. Every
//! problem is a 400 naming the field, parameter or header (or a 413 for an oversized body).

use std::collections::HashMap;

use lambda_http::{Request, RequestExt};

use super::ApiError;
use crate::{
    domain::{ConversationId, Invalid, MessageId},
    store::{Cursor, IdempotencyKey, PageRequest, MAX_PAGE_SIZE},
};

/// Parses a request's JSON body into `T`, strictly. A body over `max_bytes` is a 413 before any
/// parsing; otherwise every problem is a 400 naming the field (or `body` when it is not JSON).
pub fn json_body<T: serde::de::DeserializeOwned>(
    req: &Request,
    max_bytes: usize,
) -> Result<T, ApiError> {
    let bytes: &[u8] = req.body().as_ref();
    if bytes.len() > max_bytes {
        return Err(ApiError::PayloadTooLarge { limit: max_bytes });
    }
    // Serde would also build a struct from an array; the API takes objects only.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request("body", "must be a JSON object"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if !inner.is_data() {
            return ApiError::bad_request("body", "is not valid JSON");
        }
        // serde_json appends the position; the field name says more.
        let message = inner.to_string();
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(text, _)| text)
            .to_owned();
        let field = if path == "." {
            // Unknown and missing fields are reported on the object; their name is in the text.
            message
                .split('`')
                .nth(1)
                .map_or_else(|| "body".to_owned(), str::to_owned)
        } else {
            path
        };
        ApiError::bad_request(field, message)
    })?;
    deserializer
        .end()
        .map_err(|_| ApiError::bad_request("body", "is not valid JSON"))?;
    Ok(value)
}

/// The query string parameters of a request, checked against the names its route accepts.
/// An unknown or repeated parameter is a 400 naming it.
pub fn query_params<'a>(
    req: &'a Request,
    accepted: &[&str],
) -> Result<HashMap<&'a str, &'a str>, ApiError> {
    let mut params = HashMap::new();
    let Some(query) = req.query_string_parameters_ref() else {
        return Ok(params);
    };
    for (name, value) in query.iter() {
        if !accepted.contains(&name) {
            return Err(ApiError::bad_request(
                name,
                format!("unknown query parameter; accepted: {}", accepted.join(", ")),
            ));
        }
        if params.insert(name, value).is_some() {
            return Err(ApiError::bad_request(name, "given more than once"));
        }
    }
    Ok(params)
}

/// The page a listing asks for, from its `limit` and `cursor` parameters.
pub fn page_request(params: &HashMap<&str, &str>) -> Result<PageRequest, ApiError> {
    let limit = match params.get("limit") {
        None => PageRequest::default().limit,
        Some(text) => text
            .parse::<u16>()
            .ok()
            .filter(|limit| (1..=MAX_PAGE_SIZE).contains(limit))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_PAGE_SIZE}"),
                )
            })?,
    };
    let cursor = params
        .get("cursor")
        .map(|text| Cursor::decode(text))
        .transpose()
        .map_err(|err| ApiError::bad_request("cursor", err.to_string()))?;
    Ok(PageRequest { limit, cursor })
}

/// A conversation id given as `field`.
pub fn conversation_id(raw: &str, field: &str) -> Result<ConversationId, ApiError> {
    ConversationId::parse(raw).ok_or_else(|| {
        ApiError::bad_request(
            field,
            "must be a conversation id (26 characters, as returned by the API)",
        )
    })
}

/// The conversation id in the request's path (`{id}`).
pub fn path_conversation_id(req: &Request) -> Result<ConversationId, ApiError> {
    let id = req
        .path_parameters_ref()
        .and_then(|params| params.first("id"));
    conversation_id(id.unwrap_or_default(), "id")
}

/// A message id given as `field`.
pub fn message_id(raw: &str, field: &str) -> Result<MessageId, ApiError> {
    MessageId::parse(raw)
        .ok_or_else(|| ApiError::bad_request(field, "must be a message id as returned by the API"))
}

/// A domain value's validation failure, as a 400 naming `field`.
pub fn invalid(field: &str) -> impl FnOnce(Invalid) -> ApiError + '_ {
    move |Invalid(detail)| ApiError::bad_request(field, detail)
}

/// The `Idempotency-Key` header, if given.
pub fn idempotency_key(req: &Request) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(IdempotencyKey::parse)
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                "Idempotency-Key",
                "must be 1 to 128 printable ASCII characters",
            )
        })
}
