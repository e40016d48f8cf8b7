//! Reads: a conversation's head and the listings (a branch's messages are read in `branch.rs`). Every listing is a `Query`
//! on the caller's partition that reads one item more than the page, so that a cursor is given
//! only when another item exists (DynamoDB returns `LastEvaluatedKey` whenever it stops at the
//! `Limit`, even with nothing left, which would cost the client an empty last page).

use aws_sdk_dynamodb::types::AttributeValue;

use super::{
    error::from_sdk,
    items::{self, n, s, sort_key, Item, NOT_EXPIRED},
    keys,
    meter::{ask, record_query, Work},
    Conversation, ConversationStore, Cursor, Order, Page, PageRequest, StoreError,
};
use crate::domain::{ConversationId, UserId};

/// Where a page of the listing under `prefix` resumes: after its cursor's key, which must be an
/// item key directly under `prefix`.
pub(super) fn resume_within<'a>(
    page: &'a PageRequest,
    prefix: &str,
) -> Result<Option<&'a str>, StoreError> {
    Ok(page
        .cursor
        .as_ref()
        .map(|cursor| cursor.within(prefix))
        .transpose()?)
}

/// What one `Query` of a listing reads, within the caller's partition.
pub(super) struct Listing<'a> {
    /// The sort keys' common prefix.
    pub(super) prefix: &'a str,
    /// Resume after this sort key.
    pub(super) start_after: Option<&'a str>,
    /// How many items at most.
    pub(super) limit: u16,
    /// In sort-key order (oldest first) or the reverse.
    pub(super) order: Order,
}

/// Items of one `Query`, and where the listing goes on.
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

impl ConversationStore {
    /// A conversation's head; [`StoreError::NotFound`] if the caller has no such conversation.
    pub async fn conversation(
        &self,
        user: &UserId,
        conversation: &ConversationId,
    ) -> Result<Conversation, StoreError> {
        let item = self
            .live_item(user, keys::head(conversation))
            .await?
            .ok_or(StoreError::NotFound)?;
        items::conversation_from(&item)
    }

    /// One item of the caller's partition, read consistently (what was just written is there);
    /// `None` when it does not exist or its retention has passed.
    pub(super) async fn live_item(
        &self,
        user: &UserId,
        sort_key: String,
    ) -> Result<Option<Item>, StoreError> {
        let output = self
            .db
            .get_item()
            .table_name(&self.table)
            .key("PK", s(keys::partition(user)))
            .key("SK", s(sort_key))
            .consistent_read(true)
            .return_consumed_capacity(ask())
            .send()
            .await
            .map_err(from_sdk)?;
        self.meter.record(Work::Read, output.consumed_capacity());
        let Some(item) = output.item else {
            return Ok(None);
        };
        self.meter.items(1);
        Ok((!items::is_expired(&item, self.now().timestamp())).then_some(item))
    }

    /// The caller's conversations, newest first (ids sort by creation time).
    pub async fn list_conversations(
        &self,
        user: &UserId,
        page: &PageRequest,
    ) -> Result<Page<Conversation>, StoreError> {
        let start = page.cursor.as_ref().map(Cursor::head_key).transpose()?;
        let listing = Listing {
            prefix: keys::heads(),
            start_after: start,
            limit: page.limit,
            order: Order::Newest,
        };
        let raw = self.query_page(user, &listing).await?;
        raw.map(items::conversation_from)
    }

    /// One page of a `Query` on the caller's partition, as `listing` says, skipping expired
    /// items.
    pub(super) async fn query_page(
        &self,
        user: &UserId,
        listing: &Listing<'_>,
    ) -> Result<RawPage, StoreError> {
        let partition = keys::partition(user);
        let limit = usize::from(listing.limit.max(1));
        // One item more than the page: a cursor only when more items exist.
        let read = limit + 1;
        let mut query = self
            .db
            .query()
            .table_name(&self.table)
            .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
            .filter_expression(NOT_EXPIRED)
            .expression_attribute_values(":pk", s(&partition))
            .expression_attribute_values(":prefix", s(listing.prefix))
            .expression_attribute_values(":now", n(self.now().timestamp()))
            .scan_index_forward(listing.order == Order::Oldest)
            .consistent_read(true)
            .limit(i32::try_from(read).unwrap_or(i32::MAX))
            .return_consumed_capacity(ask());
        if let Some(sort_key) = listing.start_after {
            query = query
                .exclusive_start_key("PK", s(&partition))
                .exclusive_start_key("SK", AttributeValue::S(sort_key.to_owned()));
        }
        let output = query.send().await.map_err(from_sdk)?;
        record_query(&self.meter, &output);
        let mut items = output.items().to_vec();
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(sort_key).transpose()?.map(Cursor::after)
        } else {
            // Fewer than asked for were returned, yet the read stopped early: expired items were
            // filtered out, or the 1 MB page limit was reached. Resume after what was read.
            output
                .last_evaluated_key()
                .map(sort_key)
                .transpose()?
                .map(Cursor::after)
        };
        Ok(RawPage { items, next })
    }
}
