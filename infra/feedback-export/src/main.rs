//! `feedback-export`: every feedback of a range of days, as JSON Lines on stdout, each with the
//! rated reply and the user message it answered. Run with an operator's own AWS credentials.
//!
//! ```text
//! feedback-export --table NAME --from YYYY-MM-DD --to YYYY-MM-DD (--salt SALT | --raw-user-ids)
//! ```
//! User ids are replaced by `sha256(salt + user id)` unless `--raw-user-ids` is given; the same salt
//! gives the same pseudonym across exports. It reads the table's day index, never a `Scan`.

use std::{process::ExitCode, time::Duration};

use chrono::NaiveDate;
use shared::aws::{AwsClients, Timeouts};

struct Args {
    table: String,
    from: NaiveDate,
    to: NaiveDate,
    salt: Option<String>,
}

const USAGE: &str = "usage: feedback-export --table NAME --from YYYY-MM-DD --to YYYY-MM-DD (--salt SALT | --raw-user-ids)";

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut table = std::env::var("TABLE_NAME").ok();
    let (mut from, mut to, mut salt, mut raw) = (None, None, None, false);
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let mut value = || iter.next().cloned().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--table" => table = Some(value()?),
            "--from" => from = Some(value()?),
            "--to" => to = Some(value()?),
            "--salt" => salt = Some(value()?),
            "--raw-user-ids" => raw = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let date = |text: Option<String>, name: &str| {
        let text = text.ok_or(format!("--{name} is required"))?;
        NaiveDate::parse_from_str(&text, "%Y-%m-%d")
            .map_err(|_| format!("--{name} must be YYYY-MM-DD"))
    };
    let (from, to) = (date(from, "from")?, date(to, "to")?);
    if to < from {
        return Err("--to is before --from".to_owned());
    }
    if salt.is_none() && !raw {
        return Err(
            "give --salt to pseudonymise user ids, or --raw-user-ids to keep them".to_owned(),
        );
    }
    Ok(Args {
        table: table.ok_or("--table (or TABLE_NAME) is required")?,
        from,
        to,
        salt,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&args) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("feedback-export: {err}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let clients = AwsClients::load(Timeouts {
        connect: Duration::from_secs(2),
        operation: Duration::from_secs(30),
    })
    .await;
    let table = feedback_export::Table {
        db: clients.dynamodb,
        name: args.table.clone(),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match feedback_export::export(&table, args.from, args.to, args.salt.as_deref(), &mut out).await
    {
        Ok(count) => {
            eprintln!(
                "feedback-export: {count} feedback items from {} to {}",
                args.from, args.to
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("feedback-export: {err}");
            ExitCode::FAILURE
        }
    }
}
