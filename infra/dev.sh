#!/usr/bin/env bash
# `make dev`: the local stack, then the local API server against it. DynamoDB and Secrets Manager
# reach the local stack through their own endpoint variables (AWS_ENDPOINT_URL_DYNAMODB,
# AWS_ENDPOINT_URL_SECRETS_MANAGER), not the global AWS_ENDPOINT_URL, so that a provider reached
# through the AWS SDK (LLM_PROVIDERS=bedrock) goes to AWS itself, with the developer's own
# credentials and region from the usual places (the SDK's default chain; moto takes any signature).
# Without bedrock, placeholder credentials: nothing leaves the machine. Usage:
#   dev.sh LOCAL_STACK_COMMAND LOCAL_API_BINARY PORT
set -euo pipefail
stack=$1 server=$2 port=$3
endpoint=http://127.0.0.1:$port
export AWS_ENDPOINT_URL_DYNAMODB=$endpoint AWS_ENDPOINT_URL_SECRETS_MANAGER=$endpoint LOCAL_STACK_PORT=$port
unset AWS_ENDPOINT_URL
if [[ ",${LLM_PROVIDERS:-echo}," != *,bedrock,* ]]; then
  export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_SESSION_TOKEN=
fi
trap '$stack down' EXIT
$stack up
"$server"
