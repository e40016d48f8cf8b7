"""What SAM makes of template.yaml, for each setting of the parameters that change the API's shape.

Runs the SAM transform offline (the `samtranslator` the SAM CLI ships, in .venv-sam) and fails,
naming the problem, unless:
  - every route but /health* has the Cognito authorizer, /health* has none, preflights have none;
  - ApiKeys "" (the default): no method demands an API key;
  - ApiKeys "required": every method but the preflights demands one (x-api-key header), and the
    usage plan, key and plan key exist only under that condition, bound to the API's stage.

SAM resolves `Auth.ApiKeyRequired` by substituting the parameter and testing the string for
truth, which no linter checks; this is the check.
"""

import json
import logging
import sys

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

USAGE_PLAN = {"ApiUsagePlan", "ApiKey", "ApiUsagePlanKey"}


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
    return problems


def main(path):
    with open(path, encoding="utf-8") as file:
        source = file.read()
    logging.disable(logging.WARNING)  # samtranslator's own metrics chatter
    failed = False
    for parameters in ({}, {"ApiKeys": "required"}, {"ApiKeys": "required", "ApiKeyDailyQuota": "1000"}):
        problems = check(source, parameters)
        setting = json.dumps(parameters)
        for problem in problems:
            print(f"{path} with {setting}: {problem}", file=sys.stderr)
        failed |= bool(problems)
        print(f"{path} with {setting}: {'FAILED' if problems else 'ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "template.yaml"))
