//! A chat window as a client builds it from WatchThread's events alone, and the check
//! that it equals what ListMessages says. Shared by the API tests (and their model
//! test) and the fault tests, which read their watchers through it.

use std::collections::BTreeMap;
use std::time::Duration;

use chatd::grpc::pb::{self, Side, thread_event::Event};

/// A WatchThread stream.
pub type Events = tonic::Streaming<pb::ThreadEvent>;

/// A WatchThread request with the caller's token (no ticket).
pub fn watch_request(thread_id: i64, after_version: i64) -> pb::WatchThreadRequest {
    pb::WatchThreadRequest {
        thread_id,
        after_version,
        ticket: String::new(),
    }
}

/// The next event, which must come within 10 s (a bound, not a synchronization).
pub async fn next_event(events: &mut Events) -> pb::ThreadEvent {
    tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .expect("an event within 10 s")
        .expect("the stream is healthy")
        .expect("the stream is open")
}

/// The whole thread as ListMessages answers, oldest first, a page at a time (a thread
/// may hold more than one page): `list` answers the page after a seq. The horizons are
/// the last page's.
pub async fn whole_thread<F, Fut>(mut list: F) -> pb::ListMessagesResponse
where
    F: FnMut(pb::ListMessagesRequest) -> Fut,
    Fut: std::future::Future<Output = pb::ListMessagesResponse>,
{
    let mut messages = Vec::new();
    loop {
        let after_seq = messages
            .last()
            .map_or(0, |message: &pb::Message| message.seq);
        let page = list(pb::ListMessagesRequest {
            after_seq: Some(after_seq),
            limit: 200,
            ..Default::default()
        })
        .await;
        messages.extend(page.messages);
        if !page.has_more {
            return pb::ListMessagesResponse { messages, ..page };
        }
    }
}

/// A window: what its events say, and nothing else.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Whose window: the side `my_read` belongs to.
    pub me: Side,
    pub version: i64,
    pub messages: BTreeMap<i64, pb::Message>,
    pub my_read: i64,
    pub peer_read: i64,
    pub writable: bool,
    /// Typing seen, in order (never stored, so only a live window has it).
    pub typing: Vec<pb::Typing>,
    /// Each stored change's kind, in order: what a test asserts the log said.
    pub kinds: Vec<&'static str>,
}

impl Window {
    pub fn new(me: Side) -> Self {
        Self {
            me,
            version: 0,
            messages: BTreeMap::new(),
            my_read: 0,
            peer_read: 0,
            writable: false,
            typing: Vec::new(),
            kinds: Vec::new(),
        }
    }

    /// Applies one event. A stored change must be the next version: a gap or a repeat
    /// fails the test.
    pub fn apply(&mut self, event: pb::ThreadEvent) {
        let Some(shown) = event.event else {
            panic!("an event without a change: {event:?}")
        };
        match shown {
            Event::Snapshot(snapshot) => {
                self.version = event.version;
                self.my_read = snapshot.my_last_read_seq;
                self.peer_read = snapshot.peer_last_read_seq;
                self.writable = snapshot.writable;
                self.kinds.push("snapshot");
                return;
            }
            Event::Typing(typing) => {
                assert_eq!(event.version, self.version, "typing carries the version");
                self.typing.push(typing);
                return;
            }
            _ => {}
        }
        assert_eq!(
            event.version,
            self.version + 1,
            "a stored change follows the last one, with no gap and no repeat: {shown:?}"
        );
        self.version = event.version;
        let kind = match shown {
            Event::MessageCreated(message) => {
                assert!(
                    self.messages.insert(message.seq, message).is_none(),
                    "a message is created once"
                );
                "created"
            }
            Event::MessageEdited(message) => {
                self.messages.insert(message.seq, message);
                "edited"
            }
            Event::MessageDeleted(message) => {
                assert!(message.deleted, "a deletion carries the tombstone");
                self.messages.insert(message.seq, message);
                "deleted"
            }
            Event::ReadMoved(moved) => {
                if moved.side() == self.me {
                    self.my_read = moved.last_read_seq;
                } else {
                    self.peer_read = moved.last_read_seq;
                }
                "read"
            }
            Event::ThreadState(state) => {
                self.writable = state.writable;
                "state"
            }
            Event::Snapshot(_) | Event::Typing(_) => unreachable!("handled above"),
        };
        self.kinds.push(kind);
    }

    /// Applies events from `events` until the window is at `version`.
    pub async fn follow_to(&mut self, events: &mut Events, version: i64) {
        while self.version < version {
            self.apply(next_event(events).await);
        }
        assert_eq!(self.version, version, "no event past the thread's version");
    }

    /// What the window shows equals `page`, the whole thread as ListMessages answers
    /// its owner (see [`whole_thread`]): every message as it is, both horizons.
    pub fn assert_matches_page(&self, page: pb::ListMessagesResponse) {
        assert!(!page.has_more, "the page holds the whole thread");
        let listed: BTreeMap<i64, pb::Message> = page
            .messages
            .into_iter()
            .map(|message| (message.seq, message))
            .collect();
        let differing: Vec<(i64, Option<&pb::Message>, Option<&pb::Message>)> = self
            .messages
            .keys()
            .chain(listed.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|seq| self.messages.get(seq) != listed.get(seq))
            .map(|seq| (*seq, self.messages.get(seq), listed.get(seq)))
            .take(3)
            .collect();
        assert!(
            differing.is_empty(),
            "the window's messages are ListMessages': (seq, window, listed) differ first at \
             {differing:?}"
        );
        assert_eq!(self.my_read, page.last_read_seq, "my horizon");
        assert_eq!(
            self.peer_read, page.peer_last_read_seq,
            "the peer's horizon"
        );
    }
}
