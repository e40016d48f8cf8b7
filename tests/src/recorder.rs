//! SDK clients that record every call they make, for the tests of what a function calls.

use aws_smithy_runtime_api::client::interceptors::Intercept;
use shared::aws::AwsClients;

use crate::stack::{clients_at, stack};

/// One SDK call as a [`Recorder`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The IAM action (`dynamodb:Query`); a transaction is one call per item.
    pub action: String,
    /// `ConsistentRead` of a `GetItem` or `Query`.
    pub consistent: Option<bool>,
    /// `Limit` of a `Query`.
    pub limit: Option<i32>,
}

/// Records every SDK call of the clients it is installed on ([`clients_at`]).
#[derive(Debug, Clone, Default)]
pub struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<Call>>>);

impl Recorder {
    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.0.lock().map(|calls| calls.clone()).unwrap_or_default()
    }

    /// The IAM actions of the calls so far.
    pub fn actions(&self) -> std::collections::BTreeSet<String> {
        self.calls().into_iter().map(|call| call.action).collect()
    }
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "call-recorder"
    }

    fn read_before_serialization(
        &self,
        context: &aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef<'_>,
        _components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        use aws_sdk_dynamodb::operation::{
            get_item::GetItemInput, query::QueryInput,
            transact_write_items::TransactWriteItemsInput,
        };
        let Some(metadata) = cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
        else {
            return Ok(());
        };
        let service = match metadata.service() {
            "DynamoDB" => "dynamodb",
            "Secrets Manager" | "SecretsManager" => "secretsmanager",
            other => other,
        };
        let input = context.input();
        let mut calls = self.0.lock().map_err(|_| "a poisoned recorder")?;
        let call = |action: String| Call {
            action,
            consistent: None,
            limit: None,
        };
        // A transaction is authorised per item: Put, Update, Delete, ConditionCheck.
        if let Some(input) = input.downcast_ref::<TransactWriteItemsInput>() {
            for item in input.transact_items() {
                let action = if item.put().is_some() {
                    "PutItem"
                } else if item.update().is_some() {
                    "UpdateItem"
                } else if item.delete().is_some() {
                    "DeleteItem"
                } else {
                    "ConditionCheckItem"
                };
                calls.push(call(format!("dynamodb:{action}")));
            }
        } else if let Some(input) = input.downcast_ref::<QueryInput>() {
            calls.push(Call {
                consistent: input.consistent_read(),
                limit: input.limit(),
                ..call("dynamodb:Query".to_owned())
            });
        } else if let Some(input) = input.downcast_ref::<GetItemInput>() {
            calls.push(Call {
                consistent: input.consistent_read(),
                ..call("dynamodb:GetItem".to_owned())
            });
        } else {
            calls.push(call(format!("{service}:{}", metadata.name())));
        }
        Ok(())
    }
}

/// Clients on the local stack that record their calls.
pub async fn recording_clients() -> (AwsClients, Recorder) {
    let timeout = stack().await.config.aws_operation_timeout;
    let recorder = Recorder::default();
    let clients = clients_at(None, timeout, Some(recorder.clone())).await;
    (clients, recorder)
}
