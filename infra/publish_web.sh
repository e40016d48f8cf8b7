#!/usr/bin/env bash
# Publishes the built web client (web/dist, from `make web`) to a deployed stack: writes its
# config.json from the stack's WebConfig output, uploads the files to the stack's private bucket
# and has CloudFront drop its copies of the entry points. Needs the AWS CLI with credentials for the
# stack's account and region. Usage:
#   publish_web.sh STACK_NAME
# With ExistingUserPoolArn the stack has no WebConfig output: set WEB_CONFIG_FILE to a config.json
# of the same shape (docs/DEPLOY.md).
#
# Cache-Control by kind of file: the hashed files under assets/ never change under their name, so
# browsers and CloudFront keep them a year; everything else (index.html, config.json, unhashed
# files) is no-cache, so a browser asks again each time and a new version shows on the next load.
set -euo pipefail
stack=${1:?usage: publish_web.sh STACK_NAME}
dist=${WEB_DIST:-web/dist}
assets=assets  # where the build puts its content-hashed files
immutable="public, max-age=31536000, immutable"

[ -f "$dist/index.html" ] || { echo "no $dist/index.html: build the client first (make web)" >&2; exit 1; }

output() {
  aws cloudformation describe-stacks --stack-name "$stack" \
    --query "Stacks[0].Outputs[?OutputKey=='$1'].OutputValue" --output text
}
bucket=$(output WebBucketName)
distribution=$(output WebDistributionId)
url=$(output WebUrl)
for value in "$bucket" "$distribution"; do
  if [ -z "$value" ] || [ "$value" = None ]; then
    echo "stack $stack has no web client outputs (WebBucketName, WebDistributionId): deploy template.yaml first" >&2
    exit 1
  fi
done

config=$(mktemp)
page=$(mktemp)
trap 'rm -f "$config" "$page"' EXIT
if [ -n "${WEB_CONFIG_FILE:-}" ]; then
  cp "$WEB_CONFIG_FILE" "$config"
else
  output WebConfig >"$config"
  if [ ! -s "$config" ] || [ "$(tr -d '\n' <"$config")" = None ]; then
    echo "stack $stack has no WebConfig output (it uses ExistingUserPoolArn): set WEB_CONFIG_FILE" >&2
    exit 1
  fi
fi
python3 -m json.tool "$config" >/dev/null || { echo "config.json is not JSON" >&2; exit 1; }
# The page itself narrows the headers policy's connect-src to this stack's API and sign-in domain.
node web/scripts/csp.mjs "$config" "$dist/index.html" >"$page"

# New hashed files first, so the index.html uploaded next finds everything it names; stale ones
# go last, so a page loaded just before still finds the chunks it loads on demand until then.
mkdir -p "$dist/$assets"
aws s3 sync "$dist/$assets" "s3://$bucket/$assets" --cache-control "$immutable"
aws s3 sync "$dist" "s3://$bucket" --delete --exclude "$assets/*" --exclude config.json \
  --exclude index.html --cache-control no-cache
aws s3 cp "$config" "s3://$bucket/config.json" --cache-control no-cache --content-type application/json
aws s3 cp "$page" "s3://$bucket/index.html" --cache-control no-cache --content-type text/html
aws s3 sync "$dist/$assets" "s3://$bucket/$assets" --delete --cache-control "$immutable"

# "/" is cached apart from "/index.html" (the default root object).
aws cloudfront create-invalidation --distribution-id "$distribution" \
  --paths / /index.html /config.json --query Invalidation.Id --output text
echo "published to $url"
