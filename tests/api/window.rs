//! The live-thread tests' way to a window: WatchThread opened by a test client, and a
//! window (`tests/common/window.rs`) checked against ListMessages as its owner reads it.

use chatd::grpc::pb::{self, thread_event::Event};

use crate::helpers::ChatClient;

#[path = "../common/window.rs"]
mod shared;
pub use shared::{Events, Window, next_event, watch_request};

/// Opens a WatchThread stream as `client`'s caller.
pub async fn watch_thread(client: &mut ChatClient, thread_id: i64, after_version: i64) -> Events {
    client
        .watch_thread(watch_request(thread_id, after_version))
        .await
        .expect("the thread stream opens")
        .into_inner()
}

/// The thread's version now, as a new window's snapshot says it.
pub async fn current_version(client: &mut ChatClient, thread_id: i64) -> i64 {
    let mut events = watch_thread(client, thread_id, 0).await;
    let first = next_event(&mut events).await;
    assert!(matches!(first.event, Some(Event::Snapshot(_))), "{first:?}");
    first.version
}

impl Window {
    /// What the window shows equals what ListMessages answers `client` (the window's
    /// owner) now: every message as it is, both horizons.
    pub async fn assert_matches(&self, client: &mut ChatClient, thread_id: i64) {
        let page = shared::whole_thread(|request| {
            let mut client = client.clone();
            async move {
                client
                    .list_messages(pb::ListMessagesRequest {
                        thread_id,
                        ..request
                    })
                    .await
                    .expect("list messages")
                    .into_inner()
            }
        })
        .await;
        self.assert_matches_page(page);
    }
}
