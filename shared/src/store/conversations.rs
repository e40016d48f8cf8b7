//! [`ConversationStore`]: the DynamoDB implementation of the conversation store.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use aws_sdk_dynamodb::{
    error::{ProvideErrorMetadata, SdkError},
    operation::transact_write_items::TransactWriteItemsError,
    types::{
        AttributeValue, CancellationReason, ConsumedCapacity, DeleteRequest, Put,
        ReturnConsumedCapacity, ReturnValue, ReturnValuesOnConditionCheckFailure,
        TransactWriteItem, WriteRequest,
    },
    Client,
};
use chrono::{DateTime, SecondsFormat, Utc};
use tokio::time::Instant;

use super::{
    keys::{self, ConversationId, Cursor},
    Conversation, Message, Order, Page, PageRequest, Reply, Role, StoreError, StoredTurn,
    TokenUsage, TurnTarget,
};
use crate::{http::BoxError, identity::UserId};

pub(super) type Item = HashMap<String, AttributeValue>;

/// How often a turn's write is tried before it is given up as a [`StoreError::Conflict`].
const MAX_ATTEMPTS: u32 = 8;
const BACKOFF_BASE: Duration = Duration::from_millis(10);
const BACKOFF_CAP: Duration = Duration::from_millis(500);
/// DynamoDB's limit of requests in one `BatchWriteItem`.
const BATCH_WRITE_LIMIT: usize = 25;
/// Keys read per page while deleting.
const DELETE_PAGE: i32 = 500;
/// Reads skip items whose retention has passed: DynamoDB deletes expired items late.
const NOT_EXPIRED: &str = "attribute_not_exists(expires_at) OR expires_at > :now";

/// The conversation store. Build it once per execution environment; it borrows nothing per call.
#[derive(Debug)]
pub struct ConversationStore {
    db: Client,
    table: String,
    retention: Option<Duration>,
    meter: Meter,
}

/// DynamoDB work done by a store, as the service reported it (`ReturnConsumedCapacity=TOTAL`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Consumption {
    pub read_units: f64,
    pub write_units: f64,
    /// Items the service read (a `Query`'s scanned count, a `GetItem`'s hit).
    pub items_read: u64,
    pub calls: u64,
}

#[derive(Debug, Default)]
struct Meter {
    read_milli: AtomicU64,
    write_milli: AtomicU64,
    items_read: AtomicU64,
    calls: AtomicU64,
}

#[derive(Clone, Copy)]
enum Work {
    Read,
    Write,
}

impl Meter {
    fn record<'a>(&self, work: Work, consumed: impl IntoIterator<Item = &'a ConsumedCapacity>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let units: f64 = consumed
            .into_iter()
            .filter_map(ConsumedCapacity::capacity_units)
            .sum();
        let milli = (units * 1_000.0).round() as u64;
        let counter = match work {
            Work::Read => &self.read_milli,
            Work::Write => &self.write_milli,
        };
        counter.fetch_add(milli, Ordering::Relaxed);
    }

    fn items(&self, count: u64) {
        self.items_read.fetch_add(count, Ordering::Relaxed);
    }
}

/// What a conditional put of new items found.
enum PutOutcome {
    Stored,
    /// An item with one of our keys exists and was written by someone else.
    Taken,
    /// A transient collision (`TransactionConflict`, throttling): the same write may be retried.
    Retry,
    /// The write timed out: it may or may not have landed; the same write is retried.
    TimedOut,
}

impl ConversationStore {
    /// `retention`: how long messages are kept (`None`: forever).
    pub fn new(db: Client, table: impl Into<String>, retention: Option<Duration>) -> Self {
        Self {
            db,
            table: table.into(),
            retention,
            meter: Meter::default(),
        }
    }

    /// The store of a function's configuration: its table and retention.
    pub fn from_config(config: &crate::config::Config, clients: &crate::aws::AwsClients) -> Self {
        Self::new(
            clients.dynamodb.clone(),
            &config.table_name,
            config.retention(),
        )
    }

    /// The DynamoDB work this store has done so far.
    pub fn consumption(&self) -> Consumption {
        let milli = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64 / 1_000.0;
        Consumption {
            read_units: milli(&self.meter.read_milli),
            write_units: milli(&self.meter.write_milli),
            items_read: self.meter.items_read.load(Ordering::Relaxed),
            calls: self.meter.calls.load(Ordering::Relaxed),
        }
    }

    /// Stores a turn, the user's message and the assistant's reply, whole or not at all.
    ///
    /// A new conversation's head and both messages are written in one transaction, the head with
    /// `attribute_not_exists`. For an existing conversation the next two sequence numbers are
    /// reserved with an atomic `ADD` on its head, then both messages are put in one transaction
    /// with `attribute_not_exists(SK)`: concurrent turns never wait for or overwrite each other.
    pub async fn append_turn(
        &self,
        user: &UserId,
        target: &TurnTarget,
        user_text: &str,
        reply: &Reply,
    ) -> Result<StoredTurn, StoreError> {
        let now = Utc::now();
        let turn = Turn {
            partition: keys::partition(user),
            conversation: target.id().clone(),
            // Marks our items, so that a write whose answer was lost is recognised on retry.
            token: format!("{:032x}", fastrand::u128(..)),
            created_at: timestamp(now),
            now: now.timestamp(),
            expires_at: self.expires_at(now),
        };
        let mut first_seq = match target {
            TurnTarget::New { .. } => 1,
            TurnTarget::Existing(_) => self.reserve(&turn).await?,
        };
        let mut timed_out = false;
        for attempt in 1..=MAX_ATTEMPTS {
            let outcome = match target {
                TurnTarget::New { title, .. } => {
                    let head = turn.head_item(title);
                    self.put_new(&turn, Some(head), first_seq, user_text, reply)
                        .await?
                }
                TurnTarget::Existing(_) => {
                    self.put_new(&turn, None, first_seq, user_text, reply)
                        .await?
                }
            };
            match (outcome, target) {
                (PutOutcome::Stored, _) => {
                    return Ok(StoredTurn {
                        conversation_id: turn.conversation,
                        user_seq: first_seq,
                        assistant_seq: first_seq + 1,
                        created_at: turn.created_at,
                    })
                }
                // A new id that is already taken cannot become free: a fresh id is the caller's call.
                (PutOutcome::Taken, TurnTarget::New { .. }) => {
                    return Err(StoreError::Conflict { attempts: attempt })
                }
                (PutOutcome::Taken, TurnTarget::Existing(_)) => {
                    conflict_metric();
                    tracing::warn!(conversation = %turn.conversation, first_seq, "reserved sequence numbers were taken; reserving again");
                    first_seq = self.reserve(&turn).await?;
                }
                (PutOutcome::Retry, _) => {
                    conflict_metric();
                    tracing::info!(conversation = %turn.conversation, attempt, "turn write collided; retrying");
                    timed_out = false;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                (PutOutcome::TimedOut, _) => {
                    tracing::warn!(conversation = %turn.conversation, attempt, "turn write timed out; retrying");
                    timed_out = true;
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
        if timed_out {
            return Err(StoreError::Unconfirmed);
        }
        Err(StoreError::Conflict {
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Reserves the next two sequence numbers of an existing, unexpired conversation; returns
    /// the first.
    async fn reserve(&self, turn: &Turn) -> Result<u64, StoreError> {
        let mut update = self
            .db
            .update_item()
            .table_name(&self.table)
            .key("PK", s(&turn.partition))
            .key("SK", s(keys::head(&turn.conversation)))
            .condition_expression(
                "attribute_exists(SK) AND (attribute_not_exists(expires_at) OR expires_at > :now)",
            )
            .expression_attribute_values(":two", n(2))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":now", n(turn.now))
            .expression_attribute_values(":at", s(&turn.created_at))
            .return_values(ReturnValue::UpdatedNew)
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        update = match turn.expires_at {
            Some(expires_at) => update
                .update_expression(
                    "ADD message_count :two, version :one SET updated_at = :at, expires_at = :exp",
                )
                .expression_attribute_values(":exp", n(expires_at)),
            None => update
                .update_expression("ADD message_count :two, version :one SET updated_at = :at"),
        };
        let output = match update.send().await {
            Ok(output) => output,
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                return Err(StoreError::NotFound)
            }
            Err(err) => return Err(classify(err)),
        };
        self.meter.record(Work::Write, output.consumed_capacity());
        let count = number(
            output.attributes().unwrap_or(&HashMap::new()),
            "message_count",
        )?;
        count
            .checked_sub(1)
            .ok_or_else(|| StoreError::Corrupt("message_count below 2 after a reservation".into()))
    }

    /// Puts a turn's two messages (and a new conversation's head) in one transaction, each
    /// with `attribute_not_exists(SK)`.
    async fn put_new(
        &self,
        turn: &Turn,
        head: Option<Item>,
        first_seq: u64,
        user_text: &str,
        reply: &Reply,
    ) -> Result<PutOutcome, StoreError> {
        let items = head.into_iter().chain([
            turn.message_item(first_seq, Role::User, user_text, None),
            turn.message_item(first_seq + 1, Role::Assistant, &reply.content, Some(reply)),
        ]);
        let mut writes = Vec::with_capacity(3);
        for item in items {
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(SK)")
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .build()
                .map_err(|err| StoreError::Internal(Box::new(err)))?;
            writes.push(TransactWriteItem::builder().put(put).build());
        }
        let result = self
            .db
            .transact_write_items()
            .set_transact_items(Some(writes))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match result {
            Ok(output) => {
                self.meter.record(Work::Write, output.consumed_capacity());
                Ok(PutOutcome::Stored)
            }
            Err(err) => match cancellation_reasons(&err) {
                Some(reasons) => Ok(judge(reasons, &turn.token)),
                // A timed-out write may still land. Retrying the same keys with the same token is
                // safe: the retry either writes the turn or finds it ours. Answering an error here
                // instead could leave a stored turn behind a 503.
                None if is_timeout(&err) => Ok(PutOutcome::TimedOut),
                None => Err(classify(err)),
            },
        }
    }

    /// The last `n` messages of a conversation, oldest first: one `Query` from the newest end with
    /// `Limit`, so its cost does not depend on the length of the history. A conversation always
    /// holds its first turn, so no visible message means no such conversation of this caller
    /// ([`StoreError::NotFound`]); its head is not read (the turn's reservation checks it anyway).
    pub async fn recent_messages(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        n: u16,
    ) -> Result<Vec<Message>, StoreError> {
        // `query_page` reads at least one item, which is all the existence check needs.
        let page = PageRequest {
            limit: n,
            cursor: None,
        };
        let mut messages = self
            .query_messages(user, conversation, &page, Order::Newest, false)
            .await?
            .items;
        if messages.is_empty() {
            return Err(StoreError::NotFound);
        }
        messages.truncate(usize::from(n));
        messages.reverse();
        Ok(messages)
    }

    /// A conversation's head; [`StoreError::NotFound`] if the caller has no such conversation.
    pub async fn conversation(
        &self,
        user: &UserId,
        conversation: &ConversationId,
    ) -> Result<Conversation, StoreError> {
        let output = self
            .db
            .get_item()
            .table_name(&self.table)
            .key("PK", s(keys::partition(user)))
            .key("SK", s(keys::head(conversation)))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(classify)?;
        self.meter.record(Work::Read, output.consumed_capacity());
        let item = output.item().ok_or(StoreError::NotFound)?;
        self.meter.items(1);
        if is_expired(item, Utc::now().timestamp()) {
            return Err(StoreError::NotFound);
        }
        conversation_from(item)
    }

    /// The caller's conversations, newest first (ids sort by creation time).
    pub async fn list_conversations(
        &self,
        user: &UserId,
        page: &PageRequest,
    ) -> Result<Page<Conversation>, StoreError> {
        let start = page.cursor.as_ref().map(Cursor::head_key).transpose()?;
        let raw = self
            .query_page(user, keys::HEAD_PREFIX, start, page.limit, false, false)
            .await?;
        raw.map(conversation_from)
    }

    /// A conversation's messages in `order`; [`StoreError::NotFound`] for an unknown conversation.
    pub async fn list_messages(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        page: &PageRequest,
        order: Order,
    ) -> Result<Page<Message>, StoreError> {
        let (head, messages) = tokio::join!(
            self.conversation(user, conversation),
            self.query_messages(user, conversation, page, order, true)
        );
        head?;
        messages
    }

    async fn query_messages(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        page: &PageRequest,
        order: Order,
        paginate: bool,
    ) -> Result<Page<Message>, StoreError> {
        let start = page
            .cursor
            .as_ref()
            .map(|cursor| cursor.message_key(conversation))
            .transpose()?;
        let forward = order == Order::Oldest;
        let raw = self
            .query_page(
                user,
                &keys::message_prefix(conversation),
                start,
                page.limit,
                forward,
                paginate,
            )
            .await?;
        raw.map(message_from)
    }

    /// One page of a `Query` on the caller's partition, within `prefix`. With `paginate`, one item
    /// more than the page is read, so that the last page carries no cursor.
    pub(super) async fn query_page(
        &self,
        user: &UserId,
        prefix: &str,
        start_after: Option<&str>,
        limit: u16,
        forward: bool,
        paginate: bool,
    ) -> Result<RawPage, StoreError> {
        let partition = keys::partition(user);
        let limit = usize::from(limit.max(1));
        let read = if paginate { limit + 1 } else { limit };
        let mut query = self
            .db
            .query()
            .table_name(&self.table)
            .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
            .filter_expression(NOT_EXPIRED)
            .expression_attribute_values(":pk", s(&partition))
            .expression_attribute_values(":prefix", s(prefix))
            .expression_attribute_values(":now", n(Utc::now().timestamp()))
            .scan_index_forward(forward)
            .consistent_read(true)
            .limit(i32::try_from(read).unwrap_or(i32::MAX))
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        if let Some(sort_key) = start_after {
            query = query
                .exclusive_start_key("PK", s(&partition))
                .exclusive_start_key("SK", s(sort_key));
        }
        let output = query.send().await.map_err(classify)?;
        self.meter.record(Work::Read, output.consumed_capacity());
        self.meter
            .items(u64::try_from(output.scanned_count()).unwrap_or(0));
        let mut items = output.items().to_vec();
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(sort_key).transpose()?.map(Cursor::after)
        } else {
            output
                .last_evaluated_key()
                .map(sort_key)
                .transpose()?
                .map(Cursor::after)
        };
        Ok(RawPage { items, next })
    }

    /// Deletes a conversation: its messages, its feedback, then its head (so that an interrupted
    /// deletion can be finished by repeating it).
    pub async fn delete_conversation(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        deadline: Instant,
    ) -> Result<usize, StoreError> {
        self.conversation(user, conversation).await?;
        let mut deleted = 0;
        for prefix in [
            keys::message_prefix(conversation),
            keys::feedback_prefix(conversation),
        ] {
            self.delete_where(user, Some(&prefix), deadline, &mut deleted)
                .await?;
        }
        self.delete_keys(user, &[keys::head(conversation)], deadline, &mut deleted)
            .await?;
        Ok(deleted)
    }

    /// Deletes every item in the caller's partition: heads, messages, feedback, idempotency
    /// records. Returns how many items were deleted.
    pub async fn erase_user(&self, user: &UserId, deadline: Instant) -> Result<usize, StoreError> {
        let mut deleted = 0;
        self.delete_where(user, None, deadline, &mut deleted)
            .await?;
        Ok(deleted)
    }

    /// Deletes the items of the caller's partition whose sort key starts with `prefix` (all of
    /// them without one), page by page.
    async fn delete_where(
        &self,
        user: &UserId,
        prefix: Option<&str>,
        deadline: Instant,
        deleted: &mut usize,
    ) -> Result<(), StoreError> {
        let partition = keys::partition(user);
        let mut start: Option<Item> = None;
        loop {
            let mut query = self
                .db
                .query()
                .table_name(&self.table)
                .expression_attribute_values(":pk", s(&partition))
                .projection_expression("SK")
                .consistent_read(true)
                .limit(DELETE_PAGE)
                .set_exclusive_start_key(start.take())
                .return_consumed_capacity(ReturnConsumedCapacity::Total);
            query = match prefix {
                Some(prefix) => query
                    .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
                    .expression_attribute_values(":prefix", s(prefix)),
                None => query.key_condition_expression("PK = :pk"),
            };
            let output = query.send().await.map_err(classify)?;
            self.meter.record(Work::Read, output.consumed_capacity());
            let sort_keys: Vec<String> = output
                .items()
                .iter()
                .map(sort_key)
                .collect::<Result<_, _>>()?;
            self.delete_keys(user, &sort_keys, deadline, deleted)
                .await?;
            match output.last_evaluated_key() {
                Some(key) => start = Some(key.clone()),
                None => return Ok(()),
            }
        }
    }

    /// `BatchWriteItem` deletes in batches of 25, retrying `UnprocessedItems` with backoff until
    /// they are done or the deadline passes.
    async fn delete_keys(
        &self,
        user: &UserId,
        sort_keys: &[String],
        deadline: Instant,
        deleted: &mut usize,
    ) -> Result<(), StoreError> {
        let partition = keys::partition(user);
        for (index, chunk) in sort_keys.chunks(BATCH_WRITE_LIMIT).enumerate() {
            let mut pending = chunk
                .iter()
                .map(|sort_key| {
                    DeleteRequest::builder()
                        .key("PK", s(&partition))
                        .key("SK", s(sort_key))
                        .build()
                        .map(|delete| WriteRequest::builder().delete_request(delete).build())
                        .map_err(|err| StoreError::Internal(Box::new(err)))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut attempt = 0;
            while !pending.is_empty() {
                let later = sort_keys
                    .len()
                    .saturating_sub(index * BATCH_WRITE_LIMIT + chunk.len());
                let remaining = pending.len() + later;
                if Instant::now() >= deadline {
                    return Err(StoreError::Incomplete {
                        deleted: *deleted,
                        remaining,
                    });
                }
                let output = self
                    .db
                    .batch_write_item()
                    .request_items(&self.table, pending.clone())
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .send()
                    .await
                    .map_err(classify)?;
                self.meter.record(Work::Write, output.consumed_capacity());
                let unprocessed = output
                    .unprocessed_items()
                    .and_then(|items| items.get(&self.table))
                    .cloned()
                    .unwrap_or_default();
                *deleted += pending.len() - unprocessed.len();
                pending = unprocessed;
                if !pending.is_empty() {
                    attempt += 1;
                    let pause =
                        backoff(attempt).min(deadline.saturating_duration_since(Instant::now()));
                    tokio::time::sleep(pause).await;
                }
            }
        }
        Ok(())
    }

    pub(super) fn db(&self) -> &Client {
        &self.db
    }

    pub(super) fn table(&self) -> &str {
        &self.table
    }

    fn expires_at(&self, now: DateTime<Utc>) -> Option<i64> {
        self.retention
            .map(|keep| now.timestamp() + i64::try_from(keep.as_secs()).unwrap_or(i64::MAX / 2))
    }
}

/// What one turn writes, shared by its items.
struct Turn {
    partition: String,
    conversation: ConversationId,
    token: String,
    created_at: String,
    now: i64,
    expires_at: Option<i64>,
}

impl Turn {
    fn base_item(&self, sort_key: String) -> Item {
        let mut item = Item::from([
            ("PK".to_owned(), s(&self.partition)),
            ("SK".to_owned(), s(sort_key)),
            ("created_at".to_owned(), s(&self.created_at)),
            ("turn".to_owned(), s(&self.token)),
        ]);
        if let Some(expires_at) = self.expires_at {
            item.insert("expires_at".to_owned(), n(expires_at));
        }
        item
    }

    fn head_item(&self, title: &str) -> Item {
        let mut item = self.base_item(keys::head(&self.conversation));
        item.insert("title".to_owned(), s(title));
        item.insert("updated_at".to_owned(), s(&self.created_at));
        item.insert("message_count".to_owned(), n(2));
        item.insert("version".to_owned(), n(1));
        item
    }

    fn message_item(&self, seq: u64, role: Role, content: &str, reply: Option<&Reply>) -> Item {
        let mut item = self.base_item(keys::message(&self.conversation, seq));
        item.insert("role".to_owned(), s(role.as_str()));
        item.insert("content".to_owned(), s(content));
        if let Some(reply) = reply {
            item.insert("provider".to_owned(), s(&reply.provider));
            item.insert("model".to_owned(), s(&reply.model));
            item.insert("input_tokens".to_owned(), n(reply.usage.input_tokens));
            item.insert("output_tokens".to_owned(), n(reply.usage.output_tokens));
        }
        item
    }
}

pub(super) struct RawPage {
    items: Vec<Item>,
    next: Option<Cursor>,
}

impl RawPage {
    pub(super) fn map<T>(
        self,
        convert: impl Fn(&Item) -> Result<T, StoreError>,
    ) -> Result<Page<T>, StoreError> {
        Ok(Page {
            items: self.items.iter().map(convert).collect::<Result<_, _>>()?,
            next: self.next,
        })
    }
}

/// Reads a cancelled transaction: our own items already there means an earlier attempt whose
/// answer was lost succeeded; someone else's item means the keys are taken.
fn judge(reasons: &[CancellationReason], token: &str) -> PutOutcome {
    let mut outcome = PutOutcome::Stored;
    for reason in reasons {
        match reason.code() {
            None | Some("None") => {}
            Some("ConditionalCheckFailed") => {
                let ours = reason
                    .item()
                    .and_then(|item| item.get("turn"))
                    .and_then(|token| token.as_s().ok())
                    .is_some_and(|existing| existing == token);
                if !ours {
                    return PutOutcome::Taken;
                }
            }
            Some(_) => outcome = PutOutcome::Retry,
        }
    }
    outcome
}

fn cancellation_reasons<R>(
    err: &SdkError<TransactWriteItemsError, R>,
) -> Option<&[CancellationReason]> {
    match err.as_service_error()? {
        TransactWriteItemsError::TransactionCanceledException(cancelled) => {
            Some(cancelled.cancellation_reasons())
        }
        _ => None,
    }
}

fn is_timeout<E, R>(err: &SdkError<E, R>) -> bool {
    match err {
        SdkError::TimeoutError(_) => true,
        SdkError::DispatchFailure(failure) => failure.is_timeout(),
        _ => false,
    }
}

/// Throttling and transient failures that outlived the SDK's retries are `Unavailable` (503);
/// anything else is an internal error.
pub(super) fn classify<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let transient = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => matches!(
            service.err().code(),
            Some(
                "ProvisionedThroughputExceededException"
                    | "RequestLimitExceeded"
                    | "ThrottlingException"
                    | "InternalServerError"
                    | "ServiceUnavailable"
            )
        ),
        _ => false,
    };
    let cause: BoxError = Box::new(err);
    if transient {
        StoreError::Unavailable(cause)
    } else {
        StoreError::Internal(cause)
    }
}

/// One conditional-write conflict of the store, as a CloudWatch metric.
fn conflict_metric() {
    crate::telemetry::emit_metrics(
        &[("Operation", "append_turn")],
        &[("StoreConflicts", 1.0, "Count")],
    );
}

/// Full jitter: a random pause up to the capped exponential bound.
pub(super) fn backoff(attempt: u32) -> Duration {
    let bound = BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(BACKOFF_CAP);
    bound.mul_f64(fastrand::f64())
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn n(value: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) fn text<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    item.get(name)
        .and_then(|value| value.as_s().ok())
        .map(String::as_str)
        .ok_or_else(|| StoreError::Corrupt(format!("attribute {name} is missing or not a string")))
}

pub(super) fn number(item: &Item, name: &str) -> Result<u64, StoreError> {
    item.get(name)
        .and_then(|value| value.as_n().ok())
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("attribute {name} is missing or not a number")))
}

fn sort_key(item: &Item) -> Result<String, StoreError> {
    text(item, "SK").map(str::to_owned)
}

pub(super) fn is_expired(item: &Item, now: i64) -> bool {
    item.get("expires_at")
        .and_then(|value| value.as_n().ok())
        .and_then(|value| value.parse::<i64>().ok())
        .is_some_and(|expires_at| expires_at <= now)
}

fn conversation_from(item: &Item) -> Result<Conversation, StoreError> {
    let sort_key = text(item, "SK")?;
    let id = sort_key
        .strip_prefix(keys::HEAD_PREFIX)
        .ok_or_else(|| StoreError::Corrupt(format!("{sort_key} is not a conversation head")))?;
    Ok(Conversation {
        id: id.to_owned(),
        title: text(item, "title")?.to_owned(),
        created_at: text(item, "created_at")?.to_owned(),
        updated_at: text(item, "updated_at")?.to_owned(),
        message_count: number(item, "message_count")?,
    })
}

fn message_from(item: &Item) -> Result<Message, StoreError> {
    let sort_key = text(item, "SK")?;
    let seq = keys::seq_of(sort_key)
        .ok_or_else(|| StoreError::Corrupt(format!("{sort_key} is not a message key")))?;
    let role = Role::parse(text(item, "role")?)
        .ok_or_else(|| StoreError::Corrupt(format!("{sort_key} has an unknown role")))?;
    let optional = |name: &str| text(item, name).ok().map(str::to_owned);
    let usage = match (number(item, "input_tokens"), number(item, "output_tokens")) {
        (Ok(input_tokens), Ok(output_tokens)) => Some(TokenUsage {
            input_tokens,
            output_tokens,
        }),
        _ => None,
    };
    Ok(Message {
        id: keys::message_id(seq),
        seq,
        role,
        content: text(item, "content")?.to_owned(),
        created_at: text(item, "created_at")?.to_owned(),
        provider: optional("provider"),
        model: optional("model"),
        usage,
    })
}
