//! Reading a conversation's tree: the branch that ends at a message (the LLM's context, a page
//! of the active branch), and switching the active branch.
//!
//! A branch is walked from its end toward the root by `Query`s down the message keys, newest
//! first. Parents have smaller ids than their children, so the walk only ever goes down: on a
//! line, one `Query` of the page's size reads exactly the page (as before branches); where the
//! next message on the branch is further down (the messages between belong to other branches), the
//! walk's next `Query` starts right above it. Each `Query` reads at most about twice what is still
//! wanted and finds at least one message of the branch, so a page or a context of `n` messages
//! reads a number of items bounded by `n`, never by the conversation's length.
//!
//! A message's siblings are its parent's children: the one whose id directly follows the parent
//! (if its parent is that one), and those its parent's children item lists. The walk reads both on
//! its way down: the children item sorts right above its parent, and a jump starts one id above
//! the parent to see the message there.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::{
    error::{from_sdk, is_condition_failed, retry_conflicts},
    items::{self, n, s, sort_key, Item, StoredParent, EXISTS_NOT_EXPIRED, NOT_EXPIRED},
    keys::{self, MessageKey},
    meter::{ask, record_query, Work},
    paging::resume_within,
    Conversation, ConversationStore, Cursor, Message, Order, Page, PageRequest, StoreError,
};
use crate::domain::{ConversationId, MessageId, UserId};

/// Where a walk starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchEnd {
    /// The newest message of the conversation.
    Newest,
    /// This message (it must exist).
    At(MessageId),
}

/// The fewest `Query`s one walk may make before it gives up: each `Query` finds at least one
/// message of the branch, so a walk for `n` needs at most about `n`; the guard is against a table
/// that is not what we wrote.
const MIN_QUERY_GUARD: usize = 256;

/// The most items one `Query` of a walk asks for.
const MAX_QUERY_ITEMS: usize = 200;

/// A switch reads this many `Query`s of 100 at most on its way down (25,600 messages of a line;
/// a deeper branch ends the switch where it got to, still a message of the branch chosen).
const MAX_SWITCH_QUERIES: usize = 256;

/// What the walk looks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// The next message down, whatever its id (the start of a walk from the newest message, and
    /// the parent of a message stored before branches).
    Below,
    Id(MessageId),
    /// The branch is whole.
    Done,
}

/// What a walk found: the branch's messages from its end, and what it learned on the way.
#[derive(Debug, Default)]
struct Walk {
    /// Newest first.
    path: Vec<Message>,
    /// The parent of every message read (a line's, once the message below it was read); 0: root.
    parents: HashMap<u64, u64>,
    /// Children items read, by parent.
    children: HashMap<u64, Vec<u64>>,
}

impl Walk {
    /// The messages' parents and siblings as the walk read them; the path, newest first.
    fn finish(mut self) -> Vec<Message> {
        for message in &mut self.path {
            let id = message.id.seq();
            let parent = self.parents.get(&id).copied().unwrap_or(0);
            message.parent = MessageId::new(parent);
            let mut siblings = BTreeSet::from([id]);
            if self.parents.get(&(parent + 1)) == Some(&parent) {
                siblings.insert(parent + 1);
            }
            if let Some(listed) = self.children.get(&parent) {
                siblings.extend(listed.iter().copied());
            }
            message.siblings = siblings.into_iter().filter_map(MessageId::new).collect();
        }
        self.path
    }
}

impl ConversationStore {
    /// The branch that ends at `end`, newest first: at most `count` messages, and (for a
    /// `listing`, which reads one message more) the id of the next one down if there is one. An
    /// empty branch when `end` does not exist.
    async fn walk(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        end: BranchEnd,
        count: usize,
        listing: bool,
    ) -> Result<(Vec<Message>, Option<MessageId>), StoreError> {
        let partition = keys::partition(user);
        let prefix = keys::messages(conversation);
        let mut walk = Walk::default();
        let mut want = match end {
            BranchEnd::Newest => Want::Below,
            BranchEnd::At(id) => Want::Id(id),
        };
        // The range of the next `Query`: below this key (exclusive), or from this key down
        // (inclusive).
        let mut after: Option<String> = None;
        let mut from: Option<String> = match end {
            BranchEnd::Newest => None,
            BranchEnd::At(id) => Some(keys::message(conversation, id)),
        };
        // A message stored before branches whose parent is the next message read.
        let mut line_child: Option<u64> = None;
        let mut next = None;
        let wanted = count + usize::from(listing);
        // Items read, and how many of them were messages of the branch: a branch that crosses
        // many branch points has other items between its messages, and the next `Query` asks for
        // as many more as that ratio says (up to 4 times what is still wanted).
        let (mut seen, mut found) = (0usize, 0usize);
        'queries: for queries in 0..MIN_QUERY_GUARD.max(wanted + 8) {
            // On a line, the first `Query` reads exactly what is wanted; after a jump, at least
            // the message above the one wanted, its parent's children item and itself.
            let still = wanted - walk.path.len();
            let least = if queries == 0 { 1 } else { 3 };
            let ratio = if found == 0 {
                1
            } else {
                seen.div_ceil(found).clamp(1, 4)
            };
            let limit = (still * ratio).clamp(least, MAX_QUERY_ITEMS);
            let mut query = self
                .db
                .query()
                .table_name(&self.table)
                .filter_expression(NOT_EXPIRED)
                .expression_attribute_values(":pk", s(&partition))
                .expression_attribute_values(":now", n(self.now().timestamp()))
                .scan_index_forward(false)
                .consistent_read(true)
                .limit(i32::try_from(limit).unwrap_or(i32::MAX))
                .return_consumed_capacity(ask());
            query = match &from {
                Some(top) => query
                    .key_condition_expression("PK = :pk AND SK BETWEEN :low AND :top")
                    .expression_attribute_values(":low", s(&prefix))
                    .expression_attribute_values(":top", s(top)),
                None => query
                    .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
                    .expression_attribute_values(":prefix", s(&prefix)),
            };
            if let Some(key) = &after {
                query = query
                    .exclusive_start_key("PK", s(&partition))
                    .exclusive_start_key("SK", AttributeValue::S(key.clone()));
            }
            let output = query.send().await.map_err(from_sdk)?;
            record_query(&self.meter, &output);
            let mut last = None;
            let before = walk.path.len();
            seen += output.items().len();
            for item in output.items() {
                let key = sort_key(item)?;
                let kind = keys::message_key_of(&key);
                last = Some(key);
                let id = match kind {
                    Some(MessageKey::Children(parent)) => {
                        walk.children.insert(parent, items::children_from(item));
                        continue;
                    }
                    Some(MessageKey::Message(id)) => id,
                    None => continue,
                };
                if let Some(child) = line_child.take() {
                    walk.parents.insert(child, id.seq());
                }
                let stored = match items::stored_parent(item)? {
                    StoredParent::Line if id == MessageId::FIRST => StoredParent::Root,
                    stored => stored,
                };
                match stored {
                    StoredParent::Root => {
                        walk.parents.insert(id.seq(), 0);
                    }
                    StoredParent::Of(parent) => {
                        walk.parents.insert(id.seq(), parent.seq());
                    }
                    StoredParent::Line => line_child = Some(id.seq()),
                }
                let on_branch = match want {
                    Want::Below => true,
                    Want::Id(wanted) if wanted == id => true,
                    Want::Id(wanted) if id < wanted => {
                        // The message wanted is gone (its retention passed): the branch ends.
                        want = Want::Done;
                        false
                    }
                    Want::Id(_) | Want::Done => false,
                };
                if on_branch && listing && walk.path.len() == count {
                    // One more than asked for: where the next page starts.
                    next = Some(id);
                    line_child = None;
                    break 'queries;
                }
                if on_branch {
                    walk.path.push(items::message_from(item)?);
                    want = match stored {
                        StoredParent::Root => Want::Done,
                        StoredParent::Of(parent) => Want::Id(parent),
                        StoredParent::Line => Want::Below,
                    };
                }
                if !listing && walk.path.len() == count {
                    // The context: its messages' siblings are not needed.
                    want = Want::Done;
                    line_child = None;
                }
                // Once the branch is whole, the rest of this page is read on: below the first
                // message sits only the roots' children item.
            }
            let last = output
                .last_evaluated_key()
                .map(sort_key)
                .transpose()?
                .or(last);
            found += walk.path.len() - before;
            if want == Want::Done && line_child.is_none() {
                break;
            }
            // Everything of the range was read.
            let exhausted = output.last_evaluated_key().is_none();
            let Some(last) = last else {
                break;
            };
            match want {
                Want::Id(wanted) => {
                    // Jump: start one id above the wanted message, to see whether the message
                    // there is its child (a sibling of the one on the branch).
                    let top = keys::message(
                        conversation,
                        MessageId::new(wanted.seq() + 1).unwrap_or(wanted),
                    );
                    if last <= top {
                        if exhausted {
                            break;
                        }
                        after = Some(last);
                    } else {
                        from = Some(top);
                        after = None;
                    }
                }
                Want::Below | Want::Done => {
                    if exhausted {
                        break;
                    }
                    after = Some(last);
                }
            }
        }
        if let Some(child) = line_child {
            walk.parents.insert(child, 0);
        }
        let later_root = walk.path.last().is_some_and(|last| {
            walk.parents.get(&last.id.seq()) == Some(&0) && last.id != MessageId::FIRST
        });
        if later_root && next.is_none() {
            // A root after the first (an edit of the first message): its siblings are the
            // first message and the roots' children item, at the bottom of the keys.
            self.read_roots(user, conversation, &mut walk).await?;
        }
        Ok((walk.finish(), next))
    }

    /// The first message and the roots' children item, into `walk`.
    async fn read_roots(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        walk: &mut Walk,
    ) -> Result<(), StoreError> {
        let output = self
            .db
            .query()
            .table_name(&self.table)
            .key_condition_expression("PK = :pk AND SK BETWEEN :low AND :first")
            .filter_expression(NOT_EXPIRED)
            .expression_attribute_values(":pk", s(keys::partition(user)))
            .expression_attribute_values(":low", s(keys::messages(conversation)))
            .expression_attribute_values(":first", s(keys::message(conversation, MessageId::FIRST)))
            .expression_attribute_values(":now", n(self.now().timestamp()))
            .consistent_read(true)
            .return_consumed_capacity(ask())
            .send()
            .await
            .map_err(from_sdk)?;
        record_query(&self.meter, &output);
        for item in output.items() {
            match keys::message_key_of(&sort_key(item)?) {
                Some(MessageKey::Children(0)) => {
                    walk.children.insert(0, items::children_from(item));
                }
                Some(MessageKey::Message(id)) if id == MessageId::FIRST => {
                    walk.parents.insert(1, 0);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The last `n` messages of a branch, oldest first: the branch that ends at `end` (its
    /// newest message: the conversation's; a message: the branch ending there). Its cost is
    /// bounded by `n`, not by the conversation's length. No message means no such conversation
    /// of this caller, or no such message in it ([`StoreError::NotFound`]); the head is not read
    /// (the turn's write checks it anyway).
    pub async fn recent_messages(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        end: BranchEnd,
        n: u16,
    ) -> Result<Vec<Message>, StoreError> {
        let (mut messages, _) = self
            .walk(user, conversation, end, usize::from(n.max(1)), false)
            .await?;
        if messages.is_empty() {
            return Err(match end {
                BranchEnd::Newest => StoreError::NotFound,
                BranchEnd::At(_) => StoreError::MessageNotFound,
            });
        }
        if let BranchEnd::At(id) = end {
            if messages.first().map(|message| message.id) != Some(id) {
                return Err(StoreError::MessageNotFound);
            }
        }
        messages.truncate(usize::from(n));
        messages.reverse();
        Ok(messages)
    }

    /// The parent a turn answers from by default: the head's leaf, or for a conversation stored
    /// before branches (no leaf), its newest message.
    pub async fn newest_leaf(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        leaf: Option<MessageId>,
    ) -> Result<Option<MessageId>, StoreError> {
        if leaf.is_some() {
            return Ok(leaf);
        }
        let (newest, _) = self
            .walk(user, conversation, BranchEnd::Newest, 1, false)
            .await?;
        Ok(newest.first().map(|message| message.id))
    }

    /// A page of a conversation's active branch in `order`; [`StoreError::NotFound`] for an
    /// unknown conversation. Newest first, a page reads what its walk needs (bounded by the
    /// page); oldest first, a conversation without branches is read in key order (one `Query`
    /// a page), and one with branches walks its whole active branch for each page.
    pub async fn list_messages(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        page: &PageRequest,
        order: Order,
    ) -> Result<Page<Message>, StoreError> {
        let prefix = keys::messages(conversation);
        let resume = resume_within(page, &prefix)?.and_then(keys::message_id_of);
        if page.cursor.is_some() && resume.is_none() {
            return Err(StoreError::InvalidCursor(keys::InvalidCursor));
        }
        let limit = usize::from(page.limit.max(1));
        match order {
            Order::Newest => {
                let end = resume.map_or(BranchEnd::Newest, BranchEnd::At);
                let (head, walked) = tokio::join!(
                    self.conversation(user, conversation),
                    self.walk(user, conversation, end, limit, true)
                );
                let head = head?;
                let (mut messages, mut next) = walked?;
                if let (BranchEnd::Newest, Some(leaf)) = (end, head.leaf) {
                    if messages.first().map(|message| message.id) != Some(leaf) {
                        (messages, next) = self
                            .walk(user, conversation, BranchEnd::At(leaf), limit, true)
                            .await?;
                    }
                }
                Ok(Page {
                    items: messages,
                    next: next.map(|id| Cursor::after(keys::message(conversation, id))),
                })
            }
            Order::Oldest => {
                let head = self.conversation(user, conversation).await?;
                if head.branched {
                    return self.oldest_of_branch(user, &head, resume, limit).await;
                }
                let listing = super::paging::Listing {
                    prefix: &prefix,
                    start_after: resume_within(page, &prefix)?,
                    limit: page.limit,
                    order,
                };
                let raw = self.query_page(user, &listing).await?;
                raw.map(items::message_from)
            }
        }
    }

    /// Oldest first on a conversation with branches: its whole active branch, a page of it.
    async fn oldest_of_branch(
        &self,
        user: &UserId,
        head: &Conversation,
        resume: Option<MessageId>,
        limit: usize,
    ) -> Result<Page<Message>, StoreError> {
        let end = head.leaf.map_or(BranchEnd::Newest, BranchEnd::At);
        let count = usize::try_from(head.message_count).unwrap_or(usize::MAX);
        let (mut branch, _) = self.walk(user, &head.id, end, count.max(1), false).await?;
        branch.reverse();
        let start = match resume {
            Some(id) => branch
                .iter()
                .position(|message| message.id == id)
                .map(|at| at + 1)
                .ok_or(StoreError::InvalidCursor(keys::InvalidCursor))?,
            None => 0,
        };
        let mut items: Vec<Message> = branch.into_iter().skip(start).collect();
        let more = items.len() > limit;
        items.truncate(limit);
        let next = if more {
            items
                .last()
                .map(|message| Cursor::after(keys::message(&head.id, message.id)))
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// Makes the branch through `message` the active one and returns the conversation as it now
    /// is: its leaf is `message`'s newest descendant (following the newest child at each
    /// step). Conditional on the head's leaf being what this call read, so a turn stored
    /// meanwhile is never hidden: [`StoreError::BranchMoved`] then (read the conversation again);
    /// [`StoreError::MessageNotFound`] for a message the conversation does not have.
    pub async fn switch_branch(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        message: MessageId,
    ) -> Result<Conversation, StoreError> {
        let head = self.conversation(user, conversation).await?;
        self.switch_branch_from(user, &head, message).await
    }

    /// [`Self::switch_branch`] from a head read before: refused ([`StoreError::BranchMoved`]) if
    /// its leaf has moved since.
    pub async fn switch_branch_from(
        &self,
        user: &UserId,
        head: &Conversation,
        message: MessageId,
    ) -> Result<Conversation, StoreError> {
        let conversation = &head.id;
        let leaf = self.newest_descendant(user, conversation, message).await?;
        let mut update = self
            .db
            .update_item()
            .table_name(&self.table)
            .key("PK", s(keys::partition(user)))
            .key("SK", s(keys::head(conversation)))
            .update_expression("SET leaf = :leaf")
            .expression_attribute_values(":leaf", n(leaf.seq()))
            .expression_attribute_values(":now", n(self.now().timestamp()))
            .return_values(ReturnValue::AllNew)
            .return_consumed_capacity(ask());
        update = match head.leaf {
            Some(seen) => update
                .condition_expression(format!("{EXISTS_NOT_EXPIRED} AND leaf = :seen"))
                .expression_attribute_values(":seen", n(seen.seq())),
            None => update.condition_expression(format!(
                "{EXISTS_NOT_EXPIRED} AND attribute_not_exists(leaf)"
            )),
        };
        let output = match retry_conflicts(|| update.clone().send()).await {
            Ok(output) => output,
            Err(err) if is_condition_failed(&err) => {
                // Gone, or a turn (or another switch) moved the leaf since it was read.
                self.conversation(user, conversation).await?;
                return Err(StoreError::BranchMoved);
            }
            Err(err) => return Err(from_sdk(err)),
        };
        self.meter.record(Work::Write, output.consumed_capacity());
        let item = output
            .attributes
            .ok_or_else(|| StoreError::Corrupt("the switched head came back empty".to_owned()))?;
        items::conversation_from(&item)
    }

    /// `message`'s newest descendant: from it, the newest child, until a message has none.
    /// On a line one `Query` reads many steps; a children item makes the next `Query` start at
    /// the child it names.
    async fn newest_descendant(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        message: MessageId,
    ) -> Result<MessageId, StoreError> {
        let partition = keys::partition(user);
        let prefix = keys::messages(conversation);
        let mut current = message;
        for queries in 0..MAX_SWITCH_QUERIES {
            let output = self
                .db
                .query()
                .table_name(&self.table)
                .key_condition_expression("PK = :pk AND SK BETWEEN :from AND :top")
                .filter_expression(NOT_EXPIRED)
                .expression_attribute_values(":pk", s(&partition))
                .expression_attribute_values(":from", s(keys::message(conversation, current)))
                .expression_attribute_values(":top", s(format!("{prefix}~")))
                .expression_attribute_values(":now", n(self.now().timestamp()))
                .consistent_read(true)
                .limit(100)
                .return_consumed_capacity(ask())
                .send()
                .await
                .map_err(from_sdk)?;
            record_query(&self.meter, &output);
            let exhausted = output.last_evaluated_key().is_none();
            match step_down(output.items(), current) {
                Step::Missing if queries == 0 => return Err(StoreError::MessageNotFound),
                Step::Missing => return Ok(current),
                Step::End(id) => return Ok(id),
                Step::Reached(id) if exhausted => return Ok(id),
                Step::Reached(id) | Step::Jump(id) => current = id,
            }
        }
        Ok(current)
    }
}

/// What one ascending read tells of the newest-child descent from `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// `from` is not there.
    Missing,
    /// `from` has no child: it is the end.
    End(MessageId),
    /// The descent got to this message within the read (its children not known yet).
    Reached(MessageId),
    /// A children item names this newest child: read on from it.
    Jump(MessageId),
}

/// Follows the newest child from `from` through `items` (ascending from `from`'s key): a
/// children item's newest is newer than any child that directly follows; without one, the
/// message that directly follows is the child if its parent is `current` (or it was stored
/// before branches, when the conversation was a line).
fn step_down(items: &[Item], from: MessageId) -> Step {
    let mut iter = items.iter().filter_map(|item| {
        let key = item.get("SK")?.as_s().ok()?;
        Some((keys::message_key_of(key)?, item))
    });
    match iter.next() {
        Some((MessageKey::Message(id), _)) if id == from => {}
        _ => return Step::Missing,
    }
    let mut current = from;
    let mut pending_jump: Option<u64> = None;
    for (key, item) in iter {
        match key {
            MessageKey::Children(parent) if parent == current.seq() => {
                pending_jump = items::children_from(item).into_iter().max();
            }
            MessageKey::Children(_) => {}
            MessageKey::Message(id) => {
                if let Some(newest) = pending_jump.take() {
                    if let Some(child) = MessageId::new(newest) {
                        return Step::Jump(child);
                    }
                }
                // A line's next message is its child; otherwise the one that directly follows,
                // if it names this one.
                let child = match items::stored_parent(item).ok() {
                    Some(StoredParent::Line) => true,
                    Some(StoredParent::Of(parent)) => {
                        parent == current && id.seq() == current.seq() + 1
                    }
                    _ => false,
                };
                if !child {
                    return Step::End(current);
                }
                current = id;
            }
        }
    }
    if let Some(newest) = pending_jump {
        if let Some(child) = MessageId::new(newest) {
            return Step::Jump(child);
        }
    }
    if current == from {
        Step::End(current)
    } else {
        Step::Reached(current)
    }
}
