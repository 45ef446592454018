//! The model test's open windows: each thread is watched from its creation by both its
//! participants, live through the whole case. At the end every window, built from its
//! events alone, must equal ListMessages and both horizons as its owner reads them,
//! show the writability the rules give its side, and a window resumed from the middle
//! of the log must end the same.

use chatd::domain::{Role, Side};
use chatd::grpc::pb;
use chatd::rules;
use proptest::test_runner::TestCaseError;

use super::case::Case;
use crate::window::{Events, Window, current_version, next_event, watch_thread};

/// One participant's window on one thread, open since the thread was created.
pub(super) struct Watcher {
    thread: usize,
    user: i64,
    role: Role,
    events: Events,
    window: Window,
}

impl Case<'_> {
    /// Opens both participants' windows on the thread the model holds at `index`.
    pub(super) async fn open_windows(&self, index: usize) -> Vec<Watcher> {
        let thread = &self.model.threads[index];
        let mut watchers = Vec::new();
        for (side, role, shown) in [
            (Side::Tutor, Role::Tutor, pb::Side::Tutor),
            (Side::Student, Role::Student, pb::Side::Student),
        ] {
            let user = thread.participants.on(side);
            let mut events = watch_thread(&mut self.client(user, role), thread.id, 0).await;
            let mut window = Window::new(shown);
            window.apply(next_event(&mut events).await);
            watchers.push(Watcher {
                thread: index,
                user,
                role,
                events,
                window,
            });
        }
        watchers
    }

    /// Every window equals what its owner reads now; a window resumed from the middle
    /// of its log ends equal too.
    pub(super) async fn windows_agree(&self, watchers: Vec<Watcher>) -> Result<(), TestCaseError> {
        for mut watcher in watchers {
            let thread = &self.model.threads[watcher.thread];
            let mut client = self.client(watcher.user, watcher.role);
            let version = current_version(&mut client, thread.id).await;
            let middle = version / 2;
            let mut at_middle = None;
            while watcher.window.version < version {
                if watcher.window.version == middle {
                    at_middle = Some(watcher.window.clone());
                }
                watcher.window.apply(next_event(&mut watcher.events).await);
            }
            let side = Case::side(watcher.role);
            let writable = rules::writable_for(side, &self.model.view(thread));
            if watcher.window.writable != writable {
                return Err(TestCaseError::fail(format!(
                    "thread {}'s {side} window shows writable {}, the rules {writable}",
                    watcher.thread, watcher.window.writable
                )));
            }
            watcher.window.assert_matches(&mut client, thread.id).await;
            if let Some(mut resumed) = at_middle.filter(|_| middle > 0) {
                let mut events = watch_thread(&mut client, thread.id, middle).await;
                resumed.follow_to(&mut events, version).await;
                if resumed.messages != watcher.window.messages
                    || (resumed.my_read, resumed.peer_read, resumed.writable)
                        != (
                            watcher.window.my_read,
                            watcher.window.peer_read,
                            watcher.window.writable,
                        )
                {
                    return Err(TestCaseError::fail(format!(
                        "thread {}'s {side} window resumed after version {middle} ends as \
                         {resumed:?}, the live one as {:?}",
                        watcher.thread, watcher.window
                    )));
                }
            }
        }
        Ok(())
    }
}
