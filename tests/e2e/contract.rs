//! What the template declares, what the local API server serves and what the OpenAPI document
//! describes are the same routes; the template's IAM policies have no wildcards.

use std::collections::BTreeSet;

use serde_norway::Value;

fn yaml(path: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// The functions of the template: (logical id, binary, properties).
fn functions(template: &Value) -> Vec<(String, String, Value)> {
    let resources = template["Resources"].as_mapping().expect("Resources");
    resources
        .iter()
        .filter(|(_, resource)| resource["Type"] == "AWS::Serverless::Function")
        .map(|(name, resource)| {
            let binary = resource["Metadata"]["BuildProperties"]["Binary"]
                .as_str()
                .expect("a Binary")
                .to_owned();
            (
                name.as_str().unwrap().to_owned(),
                binary,
                resource["Properties"].clone(),
            )
        })
        .collect()
}

/// (METHOD, path, binary) of every API event in the template.
fn template_routes() -> BTreeSet<(String, String, String)> {
    let template = yaml("template.yaml");
    let mut routes = BTreeSet::new();
    for (_, binary, properties) in functions(&template) {
        let Some(events) = properties["Events"].as_mapping() else {
            continue;
        };
        for (_, event) in events {
            if event["Type"] == "Api" {
                let method = event["Properties"]["Method"]
                    .as_str()
                    .unwrap()
                    .to_uppercase();
                let path = event["Properties"]["Path"].as_str().unwrap().to_owned();
                routes.insert((method, path, binary.clone()));
            }
        }
    }
    routes
}

#[test]
fn the_template_the_local_server_and_the_openapi_document_serve_the_same_routes() {
    let template = template_routes();
    let local: BTreeSet<(String, String, String)> = local_api::routes()
        .iter()
        .map(|route| {
            (
                route.method.to_owned(),
                route.resource.to_owned(),
                route.function.binary().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        template, local,
        "template.yaml and infra/local-api disagree"
    );

    let openapi = yaml("infra/openapi.yaml");
    let mut documented = BTreeSet::new();
    for (path, item) in openapi["paths"].as_mapping().expect("paths") {
        for (method, _) in item.as_mapping().expect("a path item") {
            let method = method.as_str().unwrap();
            if ["get", "post", "put", "patch", "delete"].contains(&method) {
                documented.insert((method.to_uppercase(), path.as_str().unwrap().to_owned()));
            }
        }
    }
    let served: BTreeSet<(String, String)> = template.into_iter().map(|(m, p, _)| (m, p)).collect();
    assert_eq!(
        served, documented,
        "template.yaml and infra/openapi.yaml disagree"
    );
}

/// The web client's development server forwards API calls to the local API server by path
/// prefix (`web/api-prefixes.json`, read by `web/vite.config.ts`): every route must be covered,
/// and nothing else.
#[test]
fn the_web_dev_proxy_forwards_every_route_and_nothing_else() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/api-prefixes.json");
    let text = std::fs::read_to_string(&path).expect("web/api-prefixes.json");
    let proxied: BTreeSet<String> = serde_json::from_str(&text).expect("a JSON array of prefixes");
    let first_segments: BTreeSet<String> = local_api::routes()
        .iter()
        .map(|route| {
            let rest = route.resource.trim_start_matches('/');
            format!("/{}", rest.split('/').next().unwrap_or_default())
        })
        .collect();
    assert_eq!(
        proxied, first_segments,
        "web/api-prefixes.json and the functions' routes disagree"
    );
}

/// The local server answers a CORS preflight as the template's API Gateway does.
#[test]
fn the_local_server_answers_preflights_with_the_templates_cors_settings() {
    let template = yaml("template.yaml");
    let cors = &template["Resources"]["ChatApi"]["Properties"]["Cors"];
    let setting = |name: &str| {
        let quoted = cors[name].as_str().unwrap_or_else(|| panic!("Cors.{name}"));
        quoted.trim_matches('\'').to_owned()
    };
    let local: Vec<(String, String)> = local_api::PREFLIGHT
        .iter()
        .map(|(name, value)| (name.to_string(), (*value).to_owned()))
        .collect();
    assert_eq!(
        local,
        vec![
            (
                "access-control-allow-headers".to_owned(),
                setting("AllowHeaders")
            ),
            (
                "access-control-allow-methods".to_owned(),
                setting("AllowMethods")
            ),
            ("access-control-max-age".to_owned(), setting("MaxAge")),
        ]
    );
}

#[test]
fn no_iam_statement_has_a_wildcard_action_or_resource() {
    let template = yaml("template.yaml");
    let mut checked = 0;
    for (name, binary, _) in functions(&template) {
        for statement in crate::permissions::statements(&binary) {
            let statement = &statement.body;
            for action in crate::permissions::actions(statement) {
                assert!(!action.contains('*'), "{name}: wildcard action {action}");
                checked += 1;
            }
            let list = |value: &Value| match value {
                Value::Sequence(items) => items.clone(),
                other => vec![other.clone()],
            };
            // Bedrock's one exception: a cross-region inference profile routes to its
            // foundation model in several regions, so any foundation model is granted, but only
            // through the profiles named (the condition). Computed resources (!Split of the
            // models) are checked resolved, per parameter set, by infra/check_template.py.
            let through_profiles = statement["Condition"]["StringLike"]
                .get("bedrock:InferenceProfileArn")
                .is_some();
            for resource in list(&statement["Resource"]) {
                // References (!Ref, !GetAtt) name one resource; a literal must not be a wildcard.
                if let Some(text) = resource.as_str() {
                    let routed =
                        through_profiles && text == "arn:aws:bedrock:*::foundation-model/*";
                    assert!(
                        routed || !text.contains('*'),
                        "{name}: wildcard resource {text}"
                    );
                }
            }
        }
    }
    assert!(checked >= 10, "the policies were read ({checked} actions)");
}

#[test]
fn only_the_functions_that_read_provider_keys_may_read_the_secret() {
    let template = yaml("template.yaml");
    for (name, binary, properties) in functions(&template) {
        let text = serde_norway::to_string(&properties["Policies"]).unwrap();
        let reads_secret = text.contains("secretsmanager:GetSecretValue");
        // Only chat reads the keys; health only describes the secret (readiness is anonymous).
        let should = binary == "chat";
        assert_eq!(reads_secret, should, "{name}");
    }
}

/// A documented string schema: its pattern and lengths.
struct Documented {
    pattern: regex_lite::Regex,
    min: usize,
    max: usize,
}

impl Documented {
    fn of(api: &Value, schema: &str, enforced: &str) -> Self {
        let schema = &api["components"]["schemas"][schema];
        assert_eq!(
            schema["pattern"].as_str(),
            Some(enforced),
            "the documented pattern is the code's"
        );
        Self::described(schema)
    }

    /// A schema whose pattern describes rules the code checks by hand (trimming, control characters).
    fn described(schema: &Value) -> Self {
        let pattern = schema["pattern"].as_str().expect("a pattern");
        let length = |name: &str| schema[name].as_u64().expect("a length") as usize;
        Self {
            pattern: regex_lite::Regex::new(pattern).expect("a valid pattern"),
            min: length("minLength"),
            max: length("maxLength"),
        }
    }

    fn admits(&self, text: &str) -> bool {
        let chars = text.chars().count();
        self.pattern.is_match(text) && (self.min..=self.max).contains(&chars)
    }
}

#[test]
fn the_documented_patterns_are_the_ones_the_code_enforces() {
    use shared::{
        domain::{ConversationId, MessageId},
        store::{Cursor, IdempotencyKey},
    };
    let api = yaml("infra/openapi.yaml");

    let ids = Documented::of(&api, "ConversationId", ConversationId::PATTERN);
    let generated = ConversationId::generate();
    for sample in [
        generated.as_str(),
        &generated.as_str().to_lowercase(),
        "7ZZZZZZZZZZZZZZZZZZZZZZZZZ",
        "80000000000000000000000000",
        "01ARZ3NDEKTSV4RRFFQ69G5FAI",
        "01ARZ3NDEKTSV4RRFFQ69G5FA",
        "",
    ] {
        assert_eq!(
            ids.admits(sample),
            ConversationId::parse(sample).is_some(),
            "conversation id {sample:?}"
        );
    }

    let messages = Documented::of(&api, "MessageId", MessageId::PATTERN);
    for sample in [
        "1",
        "2",
        "000000000002",
        "999999999999",
        "0",
        "000000000000",
        "0000000000001",
        "-1",
        "1.0",
        "",
        "12a",
    ] {
        assert_eq!(
            messages.admits(sample),
            MessageId::parse(sample).is_some(),
            "message id {sample:?}"
        );
    }

    let keys = Documented::of(&api, "IdempotencyKey", IdempotencyKey::PATTERN);
    let long = "k".repeat(129);
    for sample in [
        "a",
        "retry 7f3c-2a",
        "~ !",
        "",
        "tab\there",
        "ключ",
        long.as_str(),
    ] {
        assert_eq!(
            keys.admits(sample),
            IdempotencyKey::parse(sample).is_some(),
            "idempotency key {sample:?}"
        );
    }

    // A cursor is opaque: the pattern says its alphabet and size; every cursor the API makes fits
    // it, and the code refuses whatever does not.
    let cursors = Documented::of(&api, "Cursor", Cursor::PATTERN);
    assert_eq!(cursors.max, Cursor::MAX_LEN);
    let long = "A".repeat(Cursor::MAX_LEN + 1);
    for outside in ["", "a+b/c=", "%%%", long.as_str()] {
        assert!(!cursors.admits(outside));
        assert!(Cursor::decode(outside).is_err(), "{outside:?}");
    }
}

#[test]
fn the_documented_texts_admit_only_what_the_code_accepts() {
    // A schema-valid request must not be refused: titles and messages the document admits are
    // accepted (the code trims; a title is one line).
    use shared::domain::{MessageText, Title};
    let api = yaml("infra/openapi.yaml");
    let schemas = &api["components"]["schemas"];
    let long = "t".repeat(121);
    let titles = Documented::described(&schemas["RenameRequest"]["properties"]["title"]);
    let messages = Documented::described(&schemas["ChatRequest"]["properties"]["message"]);
    for sample in [
        "Trip plans",
        "  padded  ",
        "é",
        "",
        " ",
        "\t",
        "\u{3000}",
        "\u{a0}\u{2003}",
        "one\ntwo",
        "bell\u{7}",
        "del\u{7f}",
        "\u{200b}",
        long.as_str(),
    ] {
        assert_eq!(
            titles.admits(sample),
            Title::parse(sample).is_ok(),
            "title {sample:?}"
        );
        if sample.chars().count() <= messages.max {
            assert_eq!(
                messages.admits(sample),
                MessageText::parse(sample, messages.max).is_ok(),
                "message {sample:?}"
            );
        }
    }
    // Where they differ the document is the stricter: a trailing NEL is trimmed away by the code.
    assert!(!titles.admits("c1\u{85}") && Title::parse("c1\u{85}").is_ok());
    // The empty model is refused by the document as by the code.
    assert_eq!(
        schemas["ChatRequest"]["properties"]["model"]["minLength"].as_u64(),
        Some(1)
    );
}
