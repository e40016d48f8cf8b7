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
  - POST /chat streams and nothing else does: its integration is a Lambda proxy integration with
    responseTransferMode STREAM and the response-streaming-invocations URI of ChatFunction (API
    Gateway then calls InvokeWithResponseStream), under the Cognito user-pool authorizer; its
    integration timeout is above the buffered 29 s, within the 15 minutes API Gateway allows, and
    not shorter than the function's own timeout; the function's streaming work budget
    (STREAM_WORK_BUDGET_MS) leaves its final write and answer room before the function times out;
    API Gateway may invoke the function on that route (lambda:InvokeFunction, which
    InvokeWithResponseStream requires); no other method streams (neither the STREAM mode nor a
    response-streaming-invocations URI). docs/STREAMING.md has the sources.

SAM resolves `Auth.ApiKeyRequired` by substituting the parameter and testing the string for
truth, which no linter checks; this is the check. The rest is what a linter cannot know.
"""

import fnmatch
import json
import logging
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

# The one streamed route and its function. API Gateway's Lambda proxy integration streams when its
# responseTransferMode is STREAM and it calls Lambda's InvokeWithResponseStream (API version
# 2021-11-15) instead of Invoke (2015-03-31).
STREAMED_ROUTE = ("/chat", "post")
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
            if mode != "BUFFERED" or "/response-streaming-invocations" in sub_text(integration.get("uri")):
                problems.append(f"{other_method.upper()} {other_path}: streams (responseTransferMode {mode!r}, "
                                f"URI {sub_text(integration.get('uri'))!r}); only {route} may")
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
    return problems


def main(path):
    with open(path, encoding="utf-8") as file:
        source = file.read()
    logging.disable(logging.WARNING)  # samtranslator's own metrics chatter
    failed = False
    for parameters in ({}, {"ApiKeys": "required"}, {"ApiKeys": "required", "ApiKeyDailyQuota": "1000"},
                       {"SelfSignUp": "true"}):
        problems = check(source, parameters)
        setting = json.dumps(parameters)
        for problem in problems:
            print(f"{path} with {setting}: {problem}", file=sys.stderr)
        failed |= bool(problems)
        print(f"{path} with {setting}: {'FAILED' if problems else 'ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "template.yaml"))
