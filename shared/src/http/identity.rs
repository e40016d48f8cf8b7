//! The caller's identity, as API Gateway's authorizer put it in the request context.
//!
//! Nothing else is trusted: not the body, not the query string, not a header. Locally, the
//! development API server fills the same request-context claims.

use lambda_http::{request::RequestContext, Request, RequestExt};

use super::ApiError;
use crate::domain::UserId;

/// The caller's user id, from `requestContext.authorizer.claims.sub` (REST API with a Cognito
/// or JWT authorizer) or `requestContext.authorizer.jwt.claims.sub` (HTTP API). Anything else,
/// including an empty `sub`, is `401`.
pub fn caller(req: &Request) -> Result<UserId, ApiError> {
    let authorizer = req
        .request_context_ref()
        .and_then(RequestContext::authorizer);
    let sub = authorizer.and_then(|authorizer| {
        let rest = authorizer
            .fields
            .get("claims")
            .and_then(|claims| claims.get("sub"))
            .and_then(|sub| sub.as_str());
        let http = authorizer
            .jwt
            .as_ref()
            .and_then(|jwt| jwt.claims.get("sub"))
            .map(String::as_str);
        rest.or(http)
    });
    sub.and_then(UserId::parse).ok_or(ApiError::Unauthorized)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn rest_event(authorizer: Option<Value>) -> Request {
        let mut context = json!({
            "accountId": "123456789012", "resourceId": "abc", "stage": "prod",
            "requestId": "r-1", "resourcePath": "/conversations", "httpMethod": "GET",
            "apiId": "api", "identity": {"sourceIp": "203.0.113.1"}
        });
        if let Some(authorizer) = authorizer {
            context["authorizer"] = authorizer;
        }
        let event = json!({
            "resource": "/conversations", "path": "/conversations", "httpMethod": "GET",
            "headers": {"x-dev-user": "mallory"}, "multiValueHeaders": {"x-dev-user": ["mallory"]},
            "queryStringParameters": {"user_id": "mallory"},
            "multiValueQueryStringParameters": {"user_id": ["mallory"]},
            "pathParameters": null, "stageVariables": null,
            "requestContext": context, "body": "{\"user_id\":\"mallory\"}", "isBase64Encoded": false
        });
        lambda_http::request::from_str(&event.to_string()).expect("a valid REST event")
    }

    fn http_api_event(claims: Value) -> Request {
        let event = json!({
            "version": "2.0", "routeKey": "GET /conversations", "rawPath": "/conversations",
            "rawQueryString": "", "headers": {},
            "requestContext": {
                "accountId": "123456789012", "apiId": "api", "domainName": "example.com",
                "domainPrefix": "example", "requestId": "r-2", "routeKey": "GET /conversations",
                "stage": "$default", "time": "27/Nov/2026:06:00:00 +0000", "timeEpoch": 0,
                "http": {"method": "GET", "path": "/conversations", "protocol": "HTTP/1.1",
                         "sourceIp": "203.0.113.1", "userAgent": "test"},
                "authorizer": {"jwt": {"claims": claims, "scopes": null}}
            },
            "isBase64Encoded": false
        });
        lambda_http::request::from_str(&event.to_string()).expect("a valid HTTP API event")
    }

    #[test]
    fn rest_api_cognito_claims_identify_the_caller() {
        let req = rest_event(Some(
            json!({"claims": {"sub": "user-a", "email": "a@example.com"}}),
        ));
        assert_eq!(caller(&req).unwrap().as_str(), "user-a");
    }

    #[test]
    fn http_api_jwt_claims_identify_the_caller() {
        let req = http_api_event(json!({"sub": "user-b", "iss": "https://issuer"}));
        assert_eq!(caller(&req).unwrap().as_str(), "user-b");
    }

    #[test]
    fn no_authorizer_is_unauthorized_whatever_the_body_query_or_headers_say() {
        let req = rest_event(None);
        assert!(matches!(caller(&req), Err(ApiError::Unauthorized)));
    }

    #[test]
    fn an_empty_or_missing_sub_is_unauthorized() {
        let empty = rest_event(Some(json!({"claims": {"sub": ""}})));
        assert!(matches!(caller(&empty), Err(ApiError::Unauthorized)));
        let missing = rest_event(Some(json!({"claims": {"email": "a@example.com"}})));
        assert!(matches!(caller(&missing), Err(ApiError::Unauthorized)));
        let empty_jwt = http_api_event(json!({"sub": ""}));
        assert!(matches!(caller(&empty_jwt), Err(ApiError::Unauthorized)));
    }

    #[test]
    fn a_sub_that_could_break_the_key_scheme_is_refused() {
        let req = rest_event(Some(json!({"claims": {"sub": "a#b"}})));
        assert!(matches!(caller(&req), Err(ApiError::Unauthorized)));
    }
}
