//! `budget-admin`: see the library's documentation. Run with an operator's own AWS credentials.

use std::{process::ExitCode, time::Duration};

use shared::{
    aws::{AwsClients, Timeouts},
    store::ConversationStore,
};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, table) = match budget_admin::parse_args(&args) {
        Ok(parsed) => parsed,
        Err(err) => {
            eprintln!("budget-admin: {err}\n{}", budget_admin::USAGE);
            return ExitCode::from(2);
        }
    };
    let Some(table) = table.or_else(|| std::env::var("TABLE_NAME").ok()) else {
        eprintln!("budget-admin: --table (or TABLE_NAME) is required");
        return ExitCode::from(2);
    };
    let policy = match shared::config::budget_policy(|name| std::env::var(name).ok()) {
        Ok(policy) => policy,
        Err(err) => {
            eprintln!("budget-admin: {err}");
            return ExitCode::from(2);
        }
    };
    let clients = AwsClients::load(Timeouts {
        connect: Duration::from_secs(2),
        operation: Duration::from_secs(30),
    })
    .await;
    let store = ConversationStore::new(clients.dynamodb, table, None);
    match budget_admin::run(&store, &policy, &command).await {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("budget-admin: {err}");
            ExitCode::FAILURE
        }
    }
}
