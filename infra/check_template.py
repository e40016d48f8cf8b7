"""What SAM makes of template.yaml, for each setting of the parameters that change the API's shape.

Runs the SAM transform offline (the `samtranslator` the SAM CLI ships, in .venv-sam) and fails,
naming the problem, unless:
  - every route but /health* has the Cognito authorizer, /health* has none, preflights have none;
  - ApiKeys "" (the default): no method demands an API key;
  - ApiKeys "required": every method but the preflights demands one (x-api-key header), and the
    usage plan, key and plan key exist only under that condition, bound to the API's stage.

It also fails unless:
  - API Gateway's own answers are the API's problem+json: every gateway response type is configured
    (setting a fallback's status would otherwise change the status of every type left out) with the
    status it states in its body, a body {type, title, status, detail, request_id} whose type is one
    of the API's problem kinds, Content-Type application/problem+json, the CORS origin of the API's
    Cors setting, the exposed headers, and Retry-After on every 429;
  - every topic an alarm notifies is encrypted with a key of this template (not an AWS managed
    alias/aws/... key, whose policy cannot let CloudWatch in) whose key policy allows
    cloudwatch.amazonaws.com kms:Decrypt and kms:GenerateDataKey*, and a topic policy on it, if any,
    lets cloudwatch.amazonaws.com publish;
  - the user pool lets only administrators create users unless SelfSignUp is "true" (the condition
    is evaluated with the template's defaults and the given parameters);
  - the API allows one browser origin everywhere: the stack's web client (https://<its CloudFront
    domain>) when CorsAllowedOrigin is empty, else that parameter, in every preflight (which also
    allows every method its path routes and the Authorization, Content-Type and Idempotency-Key
    headers), every gateway response and every function's CORS_ALLOW_ORIGIN;
  - the web client's bucket is private (all public access blocked, encrypted, ACLs off, no website
    endpoint) and its policy denies every request without TLS and lets only CloudFront read objects,
    only for this stack's distribution (AWS:SourceArn); the distribution reads it through an origin
    access control that signs every request (sigv4, always), serves index.html at /, HTTPS only,
    HTTP/2 and 3, with the managed CachingOptimized policy and a response headers policy: HSTS of a
    year or more, nosniff, X-Frame-Options DENY, a strict Referrer-Policy, and a CSP whose
    script-src has no 'unsafe-inline', 'unsafe-eval', wildcard or scheme source, object-src,
    base-uri and frame-ancestors 'none', and a connect-src that reaches the API and the sign-in domain;
  - when the stack creates its user pool: the app client is public (no secret), signs in with the
    code flow alone (openid scope, Cognito users), returns only to the distribution (and
    http://localhost:3000/ only with LocalhostSignIn "true") after sign-in and sign-out, revokes
    tokens, and issues ID and access tokens of at most an hour; the pool has a domain; the outputs
    CognitoDomain, WebUrl and WebConfig (the client's config.json) agree with all of this.
  - POST /chat streams and nothing else does: its integration is a Lambda proxy integration with
    responseTransferMode STREAM and the response-streaming-invocations URI of ChatFunction (API
    Gateway then calls InvokeWithResponseStream), under the Cognito user-pool authorizer; its
    integration timeout is above the buffered 29 s, within the 15 minutes API Gateway allows, and
    not shorter than the function's own timeout; the function's streaming work budget
    (STREAM_WORK_BUDGET_MS) leaves its final write and answer room before the function times out;
    API Gateway may invoke the function on that route (lambda:InvokeFunction, which
    InvokeWithResponseStream requires); no other method streams (neither the STREAM mode nor a
    response-streaming-invocations URI) but GET /models and GET /usage, the chat function's others,
    which stream because that function always answers in the streaming format. docs/STREAMING.md has the
    sources.

SAM resolves `Auth.ApiKeyRequired` by substituting the parameter and testing the string for
truth, which no linter checks; this is the check. The rest is what a linter cannot know.
"""

import fnmatch
import json
import logging
import re
import sys

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

USAGE_PLAN = {"ApiUsagePlan", "ApiKey", "ApiUsagePlanKey"}

# Every gateway response type API Gateway has (its developer guide, "Gateway response types").
GATEWAY_RESPONSE_TYPES = {
    "ACCESS_DENIED", "API_CONFIGURATION_ERROR", "AUTHORIZER_CONFIGURATION_ERROR", "AUTHORIZER_FAILURE",
    "BAD_REQUEST_BODY", "BAD_REQUEST_PARAMETERS", "DEFAULT_4XX", "DEFAULT_5XX", "EXPIRED_TOKEN",
    "INTEGRATION_FAILURE", "INTEGRATION_TIMEOUT", "INVALID_API_KEY", "INVALID_SIGNATURE",
    "MISSING_AUTHENTICATION_TOKEN", "QUOTA_EXCEEDED", "REQUEST_TOO_LARGE", "RESOURCE_NOT_FOUND",
    "THROTTLED", "UNAUTHORIZED", "UNSUPPORTED_MEDIA_TYPE", "WAF_FILTERED",
}
PROBLEM_KINDS = {
    "unauthorized", "forbidden", "not-found", "rate-limited", "unavailable", "payload-too-large",
    "invalid-request", "internal",
}
PROBLEM_PREFIX = "urn:serverless-chat:problem:"
# What browsers may read of an answer besides the CORS-safelisted headers; the functions send the same.
EXPOSED_HEADERS = {"retry-after", "idempotent-replayed", "x-amzn-requestid"}
HEADER = "gatewayresponse.header."
CLOUDWATCH = "cloudwatch.amazonaws.com"

# The web client: one distribution and the sign-in domain of the stack's user pool.
WEB_DISTRIBUTION = "WebDistribution"
USER_POOL_DOMAIN = "UserPoolDomain"
CLOUDFRONT = "cloudfront.amazonaws.com"
CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"  # the managed cache policy's id
OAC_SETTINGS = {"OriginAccessControlOriginType": "s3", "SigningBehavior": "always", "SigningProtocol": "sigv4"}
STRICT_REFERRER_POLICIES = {"no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin"}
# Script sources that would let injected markup run script.
UNSAFE_SCRIPT_SOURCES = {"'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'", "data:", "blob:", "http:", "https:"}
# What the web client sends the API besides the CORS-safelisted headers.
REQUEST_HEADERS = {"authorization", "content-type", "idempotency-key"}

# The one streamed route and its function. API Gateway's Lambda proxy integration streams when its
# responseTransferMode is STREAM and it calls Lambda's InvokeWithResponseStream (API version
# 2021-11-15) instead of Invoke (2015-03-31).
STREAMED_ROUTE = ("/chat", "post")
# The chat function answers every route in Lambda's streaming format, so its other route streams
# too (a small JSON body, in one chunk).
OTHER_STREAMED_ROUTES = {("/models", "get"), ("/usage", "get")}
STREAMING_FUNCTION = "ChatFunction"
STREAM_URI = ("arn:{partition}:apigateway:${{AWS::Region}}:lambda:path/2021-11-15/functions/"
              "${{" + STREAMING_FUNCTION + ".Arn}}/response-streaming-invocations")
STREAM_URIS = {STREAM_URI.format(partition=p) for p in ("aws", "${AWS::Partition}")}
BUFFERED_TIMEOUT_MS = 29_000  # a buffered integration's limit without a quota increase
MAX_STREAM_TIMEOUT_MS = 900_000  # a streamed response lasts at most 15 minutes
STREAM_BUDGET = "STREAM_WORK_BUDGET_MS"
# What a streamed turn needs after its work budget: the final write (one AWS operation, at most
# AWS_OPERATION_TIMEOUT_MS) and the 0.5 s the functions keep back from the Lambda deadline.
ANSWER_MARGIN_MS = 500
DEFAULT_AWS_OPERATION_TIMEOUT_MS = 5_000


class NoManagedPolicies:
    """The template names no AWS managed policy, so none need looking up (and no network)."""

    def load(self):
        return {}


def rest_api_body(template):
    """The OpenAPI body SAM generated for the template's one REST API."""
    apis = [r for r in template["Resources"].values() if r["Type"] == "AWS::ApiGateway::RestApi"]
    if len(apis) != 1:
        raise AssertionError(f"expected one REST API, found {len(apis)}")
    return apis[0]["Properties"]["Body"]


def as_list(value):
    return value if isinstance(value, list) else [value]


def gateway_response_problems(sam, body):
    """API Gateway's own answers, as SAM wrote them into the API's OpenAPI body."""
    api = next(r for r in sam["Resources"].values() if r["Type"] == "AWS::Serverless::Api")
    origin = api["Properties"].get("Cors", {}).get("AllowOrigin")
    responses = body.get("x-amazon-apigateway-gateway-responses") or {}
    problems = [f"gateway response {name} is missing" for name in sorted(GATEWAY_RESPONSE_TYPES - set(responses))]
    for name, response in sorted(responses.items()):
        where = f"gateway response {name}"
        parameters = response.get("responseParameters") or {}
        headers = {key[len(HEADER):].lower(): value for key, value in parameters.items() if key.startswith(HEADER)}
        status = response.get("statusCode")
        if not (isinstance(status, str) and status.isdigit()):
            problems.append(f"{where}: no status code of its own ({status!r}), so its body cannot state it")
            continue
        content_type = headers.get("content-type")
        if content_type != "'application/problem+json'":
            problems.append(f"{where}: Content-Type is {content_type!r}, not 'application/problem+json'")
        allowed = headers.get("access-control-allow-origin")
        if origin is None or allowed != origin:
            problems.append(f"{where}: Access-Control-Allow-Origin is {allowed!r}, "
                            f"not the API's Cors AllowOrigin {origin!r}")
        exposed = headers.get("access-control-expose-headers")
        exposed = {h.strip().lower() for h in exposed.strip("'").split(",")} if isinstance(exposed, str) else set()
        if not EXPOSED_HEADERS <= exposed:
            problems.append(f"{where}: Access-Control-Expose-Headers lacks {sorted(EXPOSED_HEADERS - exposed)}")
        retry_after = headers.get("retry-after")
        quoted = isinstance(retry_after, str) and len(retry_after) > 2 and retry_after[0] == retry_after[-1] == "'"
        seconds = retry_after[1:-1] if quoted else ""
        if status == "429" and not (seconds.isdigit() and int(seconds) > 0):
            problems.append(f"{where}: a 429 without a Retry-After of some seconds (has {retry_after!r})")
        templates = response.get("responseTemplates") or {}
        if not templates:
            problems.append(f"{where}: no body template")
        for media_type, text in templates.items():
            try:
                problem = json.loads(text)
            except (TypeError, ValueError) as err:
                problems.append(f"{where}: the {media_type} template is not JSON ({err})")
                continue
            kind = str(problem.get("type", ""))
            if not kind.startswith(PROBLEM_PREFIX) or kind[len(PROBLEM_PREFIX):] not in PROBLEM_KINDS:
                problems.append(f"{where}: type {kind!r} is not one of the API's problem types")
            if problem.get("status") != int(status):
                problems.append(f"{where}: the body says status {problem.get('status')!r}, the answer is {status}")
            if not all(isinstance(problem.get(field), str) and problem[field] for field in ("title", "detail")):
                problems.append(f"{where}: the body needs a title and a detail")
            if problem.get("request_id") != "$context.requestId":
                problems.append(f"{where}: request_id is {problem.get('request_id')!r}, not $context.requestId")
    return problems


def key_behind(resources, reference):
    """The logical id of the AWS::KMS::Key a KmsMasterKeyId names (directly or through an alias), else None."""
    if isinstance(reference, dict) and "Fn::GetAtt" in reference:
        name = as_list(reference["Fn::GetAtt"])[0].split(".")[0]
    elif isinstance(reference, dict) and "Ref" in reference:
        name = reference["Ref"]
    else:
        return None
    resource = resources.get(name, {})
    if resource.get("Type") == "AWS::KMS::Alias":
        return key_behind(resources, resource["Properties"].get("TargetKeyId"))
    return name if resource.get("Type") == "AWS::KMS::Key" else None


def allows(statement, principal, actions):
    """Whether one policy statement allows the service principal every one of the actions."""
    if statement.get("Effect") != "Allow":
        return False
    granted = statement.get("Principal", {})
    services = as_list(granted.get("Service", [])) if isinstance(granted, dict) else []
    if principal not in services:
        return False
    patterns = [p.lower() for p in as_list(statement.get("Action", []))]
    return all(any(fnmatch.fnmatchcase(action.lower(), p) for p in patterns) for action in actions)


def alarm_topic_problems(resources):
    """Every topic an alarm notifies can be published to by CloudWatch, key included."""
    topics = set()
    for alarm in resources.values():
        if alarm["Type"] == "AWS::CloudWatch::Alarm":
            for prop in ("AlarmActions", "OKActions", "InsufficientDataActions"):
                for action in alarm["Properties"].get(prop, []):
                    if isinstance(action, dict) and "Ref" in action:
                        topics.add(action["Ref"])
    problems = [] if topics else ["no alarm notifies a topic"]
    for name in sorted(topics):
        topic = resources.get(name, {})
        if topic.get("Type") != "AWS::SNS::Topic":
            problems.append(f"alarm action {name} is not a topic of this template")
            continue
        key = topic["Properties"].get("KmsMasterKeyId")
        if key is None:
            problems.append(f"{name} is not encrypted")
            continue
        if isinstance(key, str) and ("alias/aws/" in key):
            problems.append(f"{name} is encrypted with the AWS managed key {key}, whose policy cannot let "
                            "CloudWatch publish: alarms would never notify anyone")
            continue
        key_name = key_behind(resources, key)
        if key_name is None:
            problems.append(f"{name} is encrypted with {key!r}, not a key of this template "
                            "(its policy cannot be checked)")
            continue
        statements = as_list(resources[key_name]["Properties"].get("KeyPolicy", {}).get("Statement", []))
        if not any(allows(s, CLOUDWATCH, ["kms:Decrypt", "kms:GenerateDataKey"]) for s in statements):
            problems.append(f"{name}'s key {key_name} has no key-policy statement allowing {CLOUDWATCH} "
                            "kms:Decrypt and kms:GenerateDataKey*: alarms would never notify anyone")
        for policy_name, policy in resources.items():
            if policy["Type"] != "AWS::SNS::TopicPolicy" or {"Ref": name} not in policy["Properties"]["Topics"]:
                continue
            statements = as_list(policy["Properties"]["PolicyDocument"].get("Statement", []))
            if not any(allows(s, CLOUDWATCH, ["sns:Publish"]) for s in statements):
                problems.append(f"{policy_name} replaces {name}'s policy without letting {CLOUDWATCH} publish")
    return problems


def evaluate(value, parameters, conditions):
    """A value with the parameters and conditions resolved (the few intrinsics conditions use)."""
    if isinstance(value, dict) and len(value) == 1:
        (function, argument), = value.items()
        if function == "Ref" and argument in parameters:
            return parameters[argument]
        if function == "Condition":
            return evaluate(conditions[argument], parameters, conditions)
        if function == "Fn::If":
            name, when_true, when_false = argument
            chosen = when_true if evaluate(conditions[name], parameters, conditions) else when_false
            return evaluate(chosen, parameters, conditions)
        if function == "Fn::Equals":
            left, right = (evaluate(v, parameters, conditions) for v in argument)
            return str(left) == str(right)
        if function == "Fn::Not":
            return not evaluate(argument[0], parameters, conditions)
        if function == "Fn::And":
            return all(evaluate(v, parameters, conditions) for v in argument)
        if function == "Fn::Or":
            return any(evaluate(v, parameters, conditions) for v in argument)
        if function in ("Fn::Join", "Fn::Split", "Fn::Select"):
            return resolve(value, parameters, conditions)
    return value


def self_sign_up_problems(template, parameters):
    values = {name: p.get("Default") for name, p in template.get("Parameters", {}).items()}
    values.update(parameters)
    if "SelfSignUp" not in values:
        return ["the template has no SelfSignUp parameter"]
    pool = template["Resources"].get("UserPool", {}).get("Properties", {})
    setting = pool.get("AdminCreateUserConfig", {}).get("AllowAdminCreateUserOnly")
    resolved = evaluate(setting, values, template.get("Conditions", {}))
    admin_only = resolved is True or str(resolved).lower() == "true"
    expected = str(values["SelfSignUp"]) != "true"
    if admin_only != expected:
        return [f"with SelfSignUp={str(values['SelfSignUp'])!r} the user pool's AllowAdminCreateUserOnly "
                f"resolves to {resolved!r}, expected {expected}"]
    return []


def sub_text(value):
    """The text of a URI: a plain string, or the string of an Fn::Sub; else its JSON."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        value = value["Fn::Sub"]
        value = value[0] if isinstance(value, list) else value
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def as_number(value):
    """An environment variable's or a property's whole number, or None when it is not a literal one."""
    try:
        return int(str(value))
    except ValueError:
        return None


def streaming_problems(template, body):
    """POST /chat streams from ChatFunction within sound timeouts, behind Cognito; nothing else streams."""
    problems = []
    resources = template["Resources"]
    path, method = STREAMED_ROUTE
    route = f"{method.upper()} {path}"
    operation = body["paths"].get(path, {}).get(method)
    if operation is None:
        return [f"{route} is missing from the API"]
    names = {name for requirement in operation.get("security") or [] for name in requirement}
    authorizers = body.get("securityDefinitions", {})
    if not any(authorizers.get(name, {}).get("x-amazon-apigateway-authtype") == "cognito_user_pools"
               for name in names):
        problems.append(f"{route}: no Cognito user-pool authorizer (has {sorted(names)})")
    integration = operation.get("x-amazon-apigateway-integration") or {}
    if integration.get("type") != "aws_proxy":
        problems.append(f"{route}: integration type {integration.get('type')!r}, not aws_proxy")
    if integration.get("responseTransferMode") != "STREAM":
        problems.append(f"{route}: responseTransferMode is {integration.get('responseTransferMode')!r}, "
                        "not STREAM (set ResponseTransferMode: RESPONSE_STREAM on the Api event)")
    uri = sub_text(integration.get("uri"))
    if uri not in STREAM_URIS:
        problems.append(f"{route}: integration URI {uri!r} is not {STREAM_URI.format(partition='aws')!r}")
    function = resources.get(STREAMING_FUNCTION, {}).get("Properties", {})
    seconds = as_number(function.get("Timeout", 3))  # Lambda's default timeout is 3 s
    if seconds is None:
        return problems + [f"{STREAMING_FUNCTION}: Timeout must be a literal number of seconds, "
                           f"has {function.get('Timeout')!r}"]
    function_ms = seconds * 1000
    timeout = integration.get("timeoutInMillis")
    if not (isinstance(timeout, int) and BUFFERED_TIMEOUT_MS < timeout <= MAX_STREAM_TIMEOUT_MS):
        problems.append(f"{route}: integration timeout {timeout!r} ms: a streamed answer needs more than "
                        f"the buffered {BUFFERED_TIMEOUT_MS} ms, at most {MAX_STREAM_TIMEOUT_MS} ms")
    elif timeout < function_ms:
        problems.append(f"{route}: integration timeout {timeout} ms is shorter than {STREAMING_FUNCTION}'s "
                        f"{function_ms} ms: API Gateway would cut streams the function is still writing")
    variables = function.get("Environment", {}).get("Variables", {})
    budget = as_number(variables.get(STREAM_BUDGET))
    operation_ms = as_number(variables.get("AWS_OPERATION_TIMEOUT_MS", DEFAULT_AWS_OPERATION_TIMEOUT_MS))
    for name, value in ((STREAM_BUDGET, budget), ("AWS_OPERATION_TIMEOUT_MS", operation_ms)):
        if value is None:
            problems.append(f"{STREAMING_FUNCTION}: {name} must be set to literal milliseconds, "
                            f"has {variables.get(name)!r}")
    if budget is not None and operation_ms is not None and budget + operation_ms + ANSWER_MARGIN_MS > function_ms:
        problems.append(f"{STREAMING_FUNCTION}: {STREAM_BUDGET} {budget} ms + a final write of {operation_ms} ms "
                        f"+ {ANSWER_MARGIN_MS} ms does not fit in its timeout of {function_ms} ms")
    allowed = [
        r["Properties"] for r in resources.values()
        if r["Type"] == "AWS::Lambda::Permission"
        and r["Properties"].get("FunctionName") == {"Ref": STREAMING_FUNCTION}
        and r["Properties"].get("Principal") == "apigateway.amazonaws.com"
        and r["Properties"].get("Action") == "lambda:InvokeFunction"
        and sub_text(r["Properties"].get("SourceArn")).endswith(f"/{method.upper()}{path}")
    ]
    if not allowed:
        problems.append(f"{route}: no permission lets API Gateway invoke {STREAMING_FUNCTION} "
                        "(lambda:InvokeFunction, which InvokeWithResponseStream requires)")
    for other_path, operations in body["paths"].items():
        for other_method, other in operations.items():
            if (other_path, other_method) == STREAMED_ROUTE:
                continue
            integration = other.get("x-amazon-apigateway-integration") or {}
            mode = integration.get("responseTransferMode", "BUFFERED")
            if (other_path, other_method) in OTHER_STREAMED_ROUTES:
                if mode != "STREAM" or sub_text(integration.get("uri")) not in STREAM_URIS:
                    problems.append(f"{other_method.upper()} {other_path}: {STREAMING_FUNCTION} answers in the "
                                    f"streaming format, so its integration must stream (has {mode!r})")
                continue
            if mode != "BUFFERED" or "/response-streaming-invocations" in sub_text(integration.get("uri")):
                problems.append(f"{other_method.upper()} {other_path}: streams (responseTransferMode {mode!r}, "
                                f"URI {sub_text(integration.get('uri'))!r}); only {route} may")
    return problems


def parameter_values(template, parameters):
    """Every parameter's value: the given one, else the template's default."""
    values = {name: p.get("Default") for name, p in template.get("Parameters", {}).items()}
    values.update(parameters)
    return values


def resolve(value, values, conditions):
    """A value as text with the parameters and conditions applied; what only exists once deployed
    stays a placeholder: ${Resource}, ${Resource.Attribute}, ${AWS::Region}."""
    if isinstance(value, list):
        return [resolve(v, values, conditions) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (function, argument), = value.items()
        if function == "Ref":
            return str(values[argument]) if argument in values else "${" + argument + "}"
        if function == "Fn::GetAtt":
            return "${" + (".".join(argument) if isinstance(argument, list) else argument) + "}"
        if function == "Fn::If":
            name, when_true, when_false = argument
            chosen = when_true if evaluate(conditions[name], values, conditions) else when_false
            return resolve(chosen, values, conditions)
        if function == "Fn::Sub":
            text, variables = (argument, {}) if isinstance(argument, str) else argument
            names = {**{k: str(v) for k, v in values.items()},
                     **{k: resolve(v, values, conditions) for k, v in variables.items()}}
            names = {k: v for k, v in names.items() if isinstance(v, str)}
            return re.sub(r"\$\{([^!}][^}]*)\}", lambda m: names.get(m.group(1), m.group(0)), text)
        if function == "Fn::Join":
            delimiter, parts = argument
            parts = resolve(parts, values, conditions)
            if isinstance(parts, list) and len(parts) == 1 and isinstance(parts[0], list):
                parts = parts[0]
            return delimiter.join(parts) if all(isinstance(p, str) for p in parts) else value
        if function == "Fn::Split":
            delimiter, text = argument
            text = resolve(text, values, conditions)
            return text.split(delimiter) if isinstance(text, str) else value
        if function == "Fn::Select":
            index, listed = argument
            if isinstance(listed, dict) and set(listed) == {"Fn::Split"}:
                # A part of a value known only once deployed (the stack's id) stays a placeholder.
                delimiter, text = listed["Fn::Split"]
                text = resolve(text, values, conditions)
                if isinstance(text, str) and "${" not in text:
                    return text.split(delimiter)[int(index)]
                inner = text[2:-1] if isinstance(text, str) and text.startswith("${") and text.endswith("}") else text
                return "${" + f"{inner}[{delimiter}{index}]" + "}"
            listed = resolve(listed, values, conditions)
            return listed[int(index)] if isinstance(listed, list) else value
    return {k: resolve(v, values, conditions) for k, v in value.items()}


def of_type(resources, kind):
    return {name: r for name, r in resources.items() if r["Type"] == kind}


def referenced(value, kind, resources, attribute=None):
    """The logical id a Ref (or a GetAtt of the attribute) names, if it is a resource of that type."""
    if attribute is None and isinstance(value, dict) and set(value) == {"Ref"}:
        name = value["Ref"]
    elif attribute and isinstance(value, dict) and set(value) == {"Fn::GetAtt"}:
        target = value["Fn::GetAtt"]
        target = target if isinstance(target, list) else target.split(".", 1)
        name = target[0] if target[1:] == [attribute] else None
    else:
        return None
    return name if resources.get(name, {}).get("Type") == kind else None


def web_origin(values):
    """The browser origin the API must allow: the stack's web client unless CorsAllowedOrigin names one."""
    return values.get("CorsAllowedOrigin") or "https://${" + WEB_DISTRIBUTION + ".DomainName}"


def cors_origin_problems(template, values, body):
    """The preflights, every gateway response and every function allow the same one origin."""
    conditions = template.get("Conditions", {})
    expected = web_origin(values)
    problems = []
    for path, operations in body["paths"].items():
        preflight = operations.get("options")
        if preflight is None:
            problems.append(f"{path}: no CORS preflight")
            continue
        answer = preflight.get("x-amazon-apigateway-integration", {}).get("responses", {}).get("default", {})
        headers = {k.rsplit(".", 1)[-1].lower(): resolve(v, values, conditions)
                   for k, v in answer.get("responseParameters", {}).items()}
        origin = headers.get("access-control-allow-origin")
        if origin != f"'{expected}'":
            problems.append(f"OPTIONS {path}: Access-Control-Allow-Origin resolves to {origin!r}, not '{expected}'")
        allowed = {m.strip().upper() for m in str(headers.get("access-control-allow-methods", "")).strip("'").split(",")}
        missing = {m.upper() for m in operations} - allowed
        if missing:
            problems.append(f"OPTIONS {path}: Access-Control-Allow-Methods lacks {sorted(missing)}")
        allowed = {h.strip().lower() for h in str(headers.get("access-control-allow-headers", "")).strip("'").split(",")}
        if not REQUEST_HEADERS <= allowed:
            problems.append(f"OPTIONS {path}: Access-Control-Allow-Headers lacks {sorted(REQUEST_HEADERS - allowed)}")
    for name, response in sorted((body.get("x-amazon-apigateway-gateway-responses") or {}).items()):
        origin = resolve((response.get("responseParameters") or {}).get(HEADER + "Access-Control-Allow-Origin"),
                         values, conditions)
        if origin != f"'{expected}'":
            problems.append(f"gateway response {name}: Access-Control-Allow-Origin resolves to {origin!r}, "
                            f"not '{expected}'")
    for name, function in sorted(of_type(template["Resources"], "AWS::Lambda::Function").items()):
        variables = function["Properties"].get("Environment", {}).get("Variables", {})
        origin = resolve(variables.get("CORS_ALLOW_ORIGIN"), values, conditions)
        if origin != expected:
            problems.append(f"{name}: CORS_ALLOW_ORIGIN resolves to {origin!r}, not {expected!r}")
    return problems


def csp_directives(text):
    """A Content-Security-Policy as {directive: [sources]}."""
    directives = {}
    for part in text.split(";"):
        words = part.split()
        if words:
            directives.setdefault(words[0].lower(), words[1:])
    return directives


def source_allows(source, origin):
    """Whether a CSP host source (https://host or https://*.suffix) covers an https origin."""
    if not (source.startswith("https://") and origin.startswith("https://")):
        return False
    host, wanted = source[len("https://"):], origin[len("https://"):]
    return wanted == host or (host.startswith("*.") and wanted.endswith(host[1:]))


def sign_in_origin(resources, values, conditions):
    """The managed login origin the client is configured with: the user pool domain's prefix."""
    domain = resources.get(USER_POOL_DOMAIN, {}).get("Properties", {}).get("Domain")
    prefix = resolve(domain, values, conditions)
    return f"https://{prefix}.auth.${{AWS::Region}}.amazoncognito.com" if isinstance(prefix, str) else None


def web_bucket_problems(resources, values, conditions, bucket, distribution):
    """The bucket is private, encrypted, owner-enforced; its policy lets only the distribution read, over TLS."""
    problems = []
    properties = resources[bucket]["Properties"]
    block = properties.get("PublicAccessBlockConfiguration", {})
    flags = ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")
    if not all(block.get(flag) is True for flag in flags):
        problems.append(f"{bucket}: PublicAccessBlockConfiguration must set all of {list(flags)} to true")
    rules = properties.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration", [])
    if not any(r.get("ServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for r in rules):
        problems.append(f"{bucket}: no default encryption")
    ownership = [r.get("ObjectOwnership") for r in properties.get("OwnershipControls", {}).get("Rules", [])]
    if ownership != ["BucketOwnerEnforced"]:
        problems.append(f"{bucket}: ObjectOwnership is {ownership}, not BucketOwnerEnforced (ACLs off)")
    for setting in ("WebsiteConfiguration", "AccessControl"):
        if setting in properties:
            problems.append(f"{bucket}: {setting} is set; the bucket is read only through CloudFront")
    policies = [p for p in of_type(resources, "AWS::S3::BucketPolicy").values()
                if referenced(p["Properties"].get("Bucket"), "AWS::S3::Bucket", resources) == bucket]
    if len(policies) != 1:
        return problems + [f"{bucket}: expected one bucket policy, found {len(policies)}"]
    statements = as_list(policies[0]["Properties"]["PolicyDocument"].get("Statement", []))
    arn = "${" + bucket + ".Arn}"
    tls_only = False
    for statement in statements:
        condition = {k.lower(): {c.lower(): v for c, v in cs.items()}
                     for k, cs in statement.get("Condition", {}).items()}
        resolved = {r for r in as_list(resolve(statement.get("Resource", []), values, conditions)) if isinstance(r, str)}
        if statement.get("Effect") == "Deny":
            tls_only |= (statement.get("Principal") in ("*", {"AWS": "*"})
                         and as_list(statement.get("Action")) == ["s3:*"]
                         and {arn, arn + "/*"} <= resolved
                         and str(condition.get("bool", {}).get("aws:securetransport")).lower() == "false")
            continue
        source = resolve(condition.get("stringequals", {}).get("aws:sourcearn"), values, conditions)
        expected = f"arn:${{AWS::Partition}}:cloudfront::${{AWS::AccountId}}:distribution/${{{distribution}}}"
        if statement.get("Principal") != {"Service": CLOUDFRONT}:
            problems.append(f"{bucket}'s policy allows {statement.get('Principal')!r}; only {CLOUDFRONT} may read")
        elif source != expected:
            problems.append(f"{bucket}'s policy lets CloudFront in without AWS:SourceArn = this stack's "
                            f"distribution (has {source!r}): any distribution could read it")
        if not set(as_list(statement.get("Action", []))) <= {"s3:GetObject"}:
            problems.append(f"{bucket}'s policy allows {as_list(statement.get('Action'))}, more than s3:GetObject")
    if not tls_only:
        problems.append(f"{bucket}'s policy does not deny every request without TLS (aws:SecureTransport false) "
                        "on the bucket and its objects")
    return problems


def headers_policy_problems(resources, values, conditions, name, api_origin, signing_in):
    """The security headers, and a CSP that runs only the distribution's own scripts."""
    problems = []
    config = resources[name]["Properties"]["ResponseHeadersPolicyConfig"].get("SecurityHeadersConfig", {})
    for header in ("ContentSecurityPolicy", "StrictTransportSecurity", "ContentTypeOptions", "FrameOptions",
                   "ReferrerPolicy"):
        if config.get(header, {}).get("Override") is not True:
            problems.append(f"{name}: {header} missing or not overriding the origin's")
    if (as_number(config.get("StrictTransportSecurity", {}).get("AccessControlMaxAgeSec", 0)) or 0) < 31_536_000:
        problems.append(f"{name}: Strict-Transport-Security max-age under a year")
    if config.get("FrameOptions", {}).get("FrameOption") != "DENY":
        problems.append(f"{name}: X-Frame-Options is not DENY")
    if config.get("ReferrerPolicy", {}).get("ReferrerPolicy") not in STRICT_REFERRER_POLICIES:
        problems.append(f"{name}: Referrer-Policy {config.get('ReferrerPolicy', {}).get('ReferrerPolicy')!r} "
                        f"is not one of {sorted(STRICT_REFERRER_POLICIES)}")
    text = resolve(config.get("ContentSecurityPolicy", {}).get("ContentSecurityPolicy"), values, conditions)
    if not isinstance(text, str):
        return problems + [f"{name}: no Content-Security-Policy text"]
    csp = csp_directives(text)
    scripts = csp.get("script-src", csp.get("default-src"))
    if scripts is None:
        problems.append(f"{name}: the CSP restricts no scripts (neither script-src nor default-src)")
    else:
        loose = [s for s in scripts if s.lower() in UNSAFE_SCRIPT_SOURCES or "*" in s]
        if loose:
            problems.append(f"{name}: the CSP's script-src allows {loose}: injected markup could run script")
    for directive, wanted in (("object-src", "'none'"), ("base-uri", "'none'"), ("frame-ancestors", "'none'")):
        if csp.get(directive) != [wanted]:
            problems.append(f"{name}: CSP {directive} is {csp.get(directive)}, not {wanted}")
    connect = csp.get("connect-src", csp.get("default-src", []))
    for what, origin in (("the API", api_origin), ("the sign-in domain (token exchange)", signing_in)):
        if origin and not any(source_allows(s, origin) for s in connect):
            problems.append(f"{name}: CSP connect-src {connect} does not allow {what}, {origin}")
    return problems


def web_client_problems(template, parameters):
    """The web client: a private bucket read only by one distribution through OAC; the distribution's
    headers; the app client's code flow back to the distribution; the outputs publishing reads."""
    resources, conditions = template["Resources"], template.get("Conditions", {})
    values = parameter_values(template, parameters)
    distributions = of_type(resources, "AWS::CloudFront::Distribution")
    if list(distributions) != [WEB_DISTRIBUTION]:
        return [f"expected one CloudFront distribution, {WEB_DISTRIBUTION}; found {sorted(distributions)}"]
    config = distributions[WEB_DISTRIBUTION]["Properties"]["DistributionConfig"]
    problems = []
    if config.get("DefaultRootObject") != "index.html":
        problems.append(f"{WEB_DISTRIBUTION}: DefaultRootObject is not index.html")
    if config.get("HttpVersion") != "http2and3":
        problems.append(f"{WEB_DISTRIBUTION}: HttpVersion {config.get('HttpVersion')!r}, not http2and3")
    for origin in config.get("Origins", []):
        where = f"{WEB_DISTRIBUTION} origin {origin.get('Id')}"
        bucket = referenced(origin.get("DomainName"), "AWS::S3::Bucket", resources, "RegionalDomainName")
        oac = referenced(origin.get("OriginAccessControlId"), "AWS::CloudFront::OriginAccessControl", resources, "Id")
        if bucket is None or "CustomOriginConfig" in origin:
            problems.append(f"{where}: not the REST endpoint (RegionalDomainName) of a bucket of this template")
            continue
        if oac is None or origin.get("S3OriginConfig", {}).get("OriginAccessIdentity") != "":
            problems.append(f"{where}: reads {bucket} without an origin access control of this template "
                            "(or with a legacy origin access identity)")
        else:
            settings = resources[oac]["Properties"]["OriginAccessControlConfig"]
            signing = {k: settings.get(k) for k in OAC_SETTINGS}
            if signing != OAC_SETTINGS:
                problems.append(f"{oac}: signs with {signing}, not {OAC_SETTINGS}")
        problems += web_bucket_problems(resources, values, conditions, bucket, WEB_DISTRIBUTION)
    api_url = resolve(template.get("Outputs", {}).get("ApiUrl", {}).get("Value"), values, conditions)
    api_origin = "/".join(api_url.split("/", 3)[:3]) if isinstance(api_url, str) else None
    signing_in = sign_in_origin(resources, values, conditions)
    behaviors = [config.get("DefaultCacheBehavior", {})] + config.get("CacheBehaviors", [])
    for behavior in behaviors:
        where = f"{WEB_DISTRIBUTION} behavior {behavior.get('PathPattern', 'default')}"
        if behavior.get("ViewerProtocolPolicy") not in ("redirect-to-https", "https-only"):
            problems.append(f"{where}: ViewerProtocolPolicy {behavior.get('ViewerProtocolPolicy')!r} serves HTTP")
        policy = referenced(behavior.get("ResponseHeadersPolicyId"), "AWS::CloudFront::ResponseHeadersPolicy", resources)
        if policy is None:
            problems.append(f"{where}: no response headers policy of this template")
        else:
            problems += headers_policy_problems(resources, values, conditions, policy, api_origin, signing_in)
    if config.get("DefaultCacheBehavior", {}).get("CachePolicyId") != CACHING_OPTIMIZED:
        problems.append(f"{WEB_DISTRIBUTION}: the default behavior's cache policy is not CachingOptimized")
    return problems + sign_in_problems(template, values, signing_in)


def token_hours(client, token, default_hours):
    validity = as_number(client.get(f"{token}Validity", default_hours))
    unit = client.get("TokenValidityUnits", {}).get(token, "hours")
    return None if validity is None else validity * {"minutes": 1 / 60, "hours": 1, "days": 24}.get(unit, 0)


def sign_in_problems(template, values, signing_in):
    """The app client signs in with the code flow as a public client and returns only to the
    distribution; the outputs agree with it (WebConfig is what make publish-web writes)."""
    resources, conditions = template["Resources"], template.get("Conditions", {})
    if not evaluate({"Condition": "CreateUserPool"}, values, conditions):
        return []
    problems = []
    client = resources.get("UserPoolClient", {}).get("Properties", {})
    web_url = f"https://${{{WEB_DISTRIBUTION}.DomainName}}/"
    expected = {web_url} | ({"http://localhost:3000/"} if values.get("LocalhostSignIn") == "true" else set())
    if client.get("GenerateSecret") not in (None, False, "false"):
        problems.append("UserPoolClient: has a secret; a browser cannot keep one (public client, PKCE)")
    if client.get("AllowedOAuthFlowsUserPoolClient") is not True or client.get("AllowedOAuthFlows") != ["code"]:
        problems.append(f"UserPoolClient: OAuth flows {client.get('AllowedOAuthFlows')!r}, not the code flow alone")
    # The public client id is in every browser: no flow that trades a password for tokens without
    # IAM credentials (USER_PASSWORD_AUTH, USER_SRP_AUTH, CUSTOM_AUTH, USER_AUTH).
    public_flows = set(client.get("ExplicitAuthFlows", [])) - {"ALLOW_ADMIN_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"}
    if public_flows:
        problems.append(f"UserPoolClient: auth flows {sorted(public_flows)} let anyone with the public client id sign in without managed login")
    if "openid" not in client.get("AllowedOAuthScopes", []):
        problems.append("UserPoolClient: no openid scope, so no ID token for the API's authorizer")
    if client.get("SupportedIdentityProviders") != ["COGNITO"]:
        problems.append(f"UserPoolClient: identity providers {client.get('SupportedIdentityProviders')!r}, not [COGNITO]")
    for urls in ("CallbackURLs", "LogoutURLs"):
        resolved = resolve(client.get(urls, []), values, conditions)
        if set(resolved) != expected:
            problems.append(f"UserPoolClient: {urls} resolve to {resolved}, expected {sorted(expected)}")
    if client.get("EnableTokenRevocation") is not True:
        problems.append("UserPoolClient: EnableTokenRevocation is not true")
    for token in ("IdToken", "AccessToken"):
        hours = token_hours(client, token, 1)
        if hours is None or hours > 1:
            problems.append(f"UserPoolClient: {token} lasts {hours} hours, more than 1")
    domain = resources.get(USER_POOL_DOMAIN, {})
    if domain.get("Type") != "AWS::Cognito::UserPoolDomain" or domain.get("Condition") != "CreateUserPool":
        problems.append(f"{USER_POOL_DOMAIN}: must be the user pool's domain, under the CreateUserPool condition")
    outputs = {name: resolve(o.get("Value"), values, conditions) for name, o in template.get("Outputs", {}).items()}
    if outputs.get("CognitoDomain") != signing_in:
        problems.append(f"output CognitoDomain is {outputs.get('CognitoDomain')!r}, not {signing_in!r}")
    if outputs.get("WebUrl") != web_url:
        problems.append(f"output WebUrl is {outputs.get('WebUrl')!r}, not {web_url!r}")
    try:
        web_config = json.loads(outputs.get("WebConfig"))
    except (TypeError, ValueError) as err:
        return problems + [f"output WebConfig is not JSON ({err})"]
    wanted = {"apiBaseUrl": outputs.get("ApiUrl"),
              "auth": {"mode": "cognito", "domain": signing_in, "clientId": "${UserPoolClient}",
                       "redirectUri": web_url, "logoutUri": web_url}}
    if web_config != wanted:
        problems.append(f"output WebConfig is {web_config}, expected {wanted}")
    return problems


BEDROCK_ACTIONS = {"bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"}


def bedrock_policy_problems(template, parameters):
    """The chat function may invoke exactly BedrockModels (each as a foundation model and as an
    inference profile, and foundation models only through those profiles) when LlmProviders
    names bedrock, and nothing of Bedrock otherwise; no other function may."""
    values = parameter_values(template, parameters)
    conditions = template.get("Conditions", {})
    models = str(values["BedrockModels"]).split(",")
    enabled = "bedrock" in str(values["LlmProviders"]).split(",")
    profiles = {f"arn:aws:bedrock:*:*:inference-profile/{m}" for m in models}
    problems = []
    granted = {}
    for name, resource in of_type(template["Resources"], "AWS::IAM::Role").items():
        for policy in resource["Properties"].get("Policies", []):
            statements = resolve(policy["PolicyDocument"].get("Statement", []), values, conditions)
            for statement in statements:
                if statement == "${AWS::NoValue}":
                    continue
                actions = set(as_list(statement.get("Action", [])))
                if actions & BEDROCK_ACTIONS or any(a.startswith("bedrock:") for a in actions):
                    granted.setdefault(name, []).append(statement)
    others = sorted(set(granted) - {"ChatFunctionRole"})
    if others:
        problems.append(f"Bedrock granted to {others}, not only the chat function")
    statements = granted.get("ChatFunctionRole", [])
    if not enabled:
        if statements:
            problems.append(f"Bedrock granted though LlmProviders={values['LlmProviders']!r} does not name it")
        return problems
    guardrail = str(values.get("BedrockGuardrailId") or "")
    guarded = [st for st in statements if set(as_list(st["Action"])) == {"bedrock:ApplyGuardrail"}]
    statements = [st for st in statements if st not in guarded]
    if guardrail:
        expected = guardrail if guardrail.startswith("arn:") else \
            "arn:${AWS::Partition}:bedrock:${AWS::Region}:${AWS::AccountId}:guardrail/" + guardrail
        resources = [as_list(st["Resource"]) for st in guarded]
        if resources != [[expected]]:
            problems.append(f"the guardrail: ApplyGuardrail on {resources}, expected [[{expected!r}]]")
    elif guarded:
        problems.append("ApplyGuardrail granted without a guardrail")
    direct = {f"arn:aws:bedrock:*::foundation-model/{m}" for m in models} | profiles
    seen_direct = seen_routed = False
    for statement in statements:
        if set(as_list(statement["Action"])) != BEDROCK_ACTIONS or statement.get("Effect") != "Allow":
            problems.append(f"a Bedrock statement with actions {statement['Action']}")
            continue
        resources = set(as_list(statement["Resource"]))
        if "Condition" not in statement:
            seen_direct = True
            if resources != direct:
                problems.append(f"Bedrock resources {sorted(resources)}, expected {sorted(direct)}")
        else:
            seen_routed = True
            routed = set(as_list(statement["Condition"].get("StringLike", {}).get("bedrock:InferenceProfileArn", [])))
            if resources != {"arn:aws:bedrock:*::foundation-model/*"} or routed != profiles or set(statement["Condition"]) != {"StringLike"}:
                problems.append(f"the foundation models behind the profiles: {resources} through {sorted(routed)}")
    if not (seen_direct and seen_routed):
        problems.append("LlmProviders names bedrock, but the chat function may not invoke BedrockModels")
    return problems


def check(source, parameters):
    sam = yaml_parse(source)
    for resource in sam["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://placeholder/code.zip"
    template = transform(sam, parameters, NoManagedPolicies())
    keys_on = parameters.get("ApiKeys") == "required"
    problems = []
    body = rest_api_body(template)
    if keys_on and body.get("securityDefinitions", {}).get("api_key", {}).get("name") != "x-api-key":
        problems.append("the api_key security definition is not the x-api-key header")
    for path, operations in body["paths"].items():
        for method, operation in operations.items():
            route = f"{method.upper()} {path}"
            names = {name for requirement in operation.get("security") or [] for name in requirement}
            if method == "options":
                if names:
                    problems.append(f"{route}: a preflight must not need credentials, has {sorted(names)}")
                continue
            authorizer = "NONE" if path.startswith("/health") else "CognitoAuthorizer"
            if authorizer not in names:
                problems.append(f"{route}: expected authorizer {authorizer}, has {sorted(names)}")
            if keys_on != ("api_key" in names):
                problems.append(f"{route}: API key {'missing' if keys_on else 'demanded'} with ApiKeys={parameters.get('ApiKeys', '')!r}")
    resources = template["Resources"]
    for name in USAGE_PLAN:
        if resources.get(name, {}).get("Condition") != "UseApiKeys":
            problems.append(f"{name} must exist under the UseApiKeys condition")
    stages = resources.get("ApiUsagePlan", {}).get("Properties", {}).get("ApiStages", [])
    if stages != [{"ApiId": {"Ref": "ChatApi"}, "Stage": {"Ref": "ChatApiStage"}}]:
        problems.append(f"the usage plan must cover the API's one stage, has {stages}")
    problems += streaming_problems(template, body)
    problems += gateway_response_problems(yaml_parse(source), body)
    problems += alarm_topic_problems(resources)
    problems += self_sign_up_problems(template, parameters)
    problems += cors_origin_problems(template, parameter_values(template, parameters), body)
    problems += web_client_problems(template, parameters)
    problems += bedrock_policy_problems(template, parameters)
    return problems


def main(path):
    with open(path, encoding="utf-8") as file:
        source = file.read()
    logging.disable(logging.WARNING)  # samtranslator's own metrics chatter
    failed = False
    for parameters in ({}, {"ApiKeys": "required"}, {"ApiKeys": "required", "ApiKeyDailyQuota": "1000"},
                       {"SelfSignUp": "true"}, {"CorsAllowedOrigin": "https://chat.example.com"},
                       {"LocalhostSignIn": "true", "AuthDomainPrefix": "chat-example"},
                       {"ExistingUserPoolArn": "arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_Example"},
                       {"LlmProviders": "bedrock", "ProviderFallback": ""},
                       {"LlmProviders": "openai,bedrock", "ProviderFallback": "openai",
                        "BedrockModels": "amazon.nova-micro-v1:0,eu.anthropic.claude-test-v1:0"},
                       {"LlmProviders": "bedrock", "ProviderFallback": "", "BedrockGuardrailId": "gr4x1y2z3abc"},
                       {"LlmProviders": "bedrock", "ProviderFallback": "", "BedrockGuardrailVersion": "3",
                        "BedrockGuardrailId": "arn:aws:bedrock:eu-west-1:123456789012:guardrail/gr4x1y2z3abc"},
                       {"BedrockGuardrailId": "gr4x1y2z3abc"}):
        problems = check(source, parameters)
        setting = json.dumps(parameters)
        for problem in problems:
            print(f"{path} with {setting}: {problem}", file=sys.stderr)
        failed |= bool(problems)
        print(f"{path} with {setting}: {'FAILED' if problems else 'ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "template.yaml"))
