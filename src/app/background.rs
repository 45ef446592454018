//! The server's background tasks besides health: the summary cache's sweep and the
//! send limits' forgetting of idle users. Each ends when shutdown begins.

use std::time::Duration;

use tokio::sync::watch;

use crate::domain::Chat;

/// Sweeps the summary cache every `every` (see `Chat::sweep_summaries`).
pub(super) async fn sweep_summaries(
    chat: Chat,
    every: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopping.changed() => return,
        }
        if let Err(error) = chat.sweep_summaries().await {
            chat.summaries().counters().count_sweep_failure();
            tracing::warn!(
                %error,
                every = ?every,
                "summary cache sweep failed: an entry a lost notification left stale may \
                 outlive the sweep interval until one succeeds; the next one retries"
            );
        }
    }
}

/// How often the send limits forget users whose bucket is full again (their memory).
const FORGET_IDLE_SENDERS: Duration = Duration::from_secs(10);

/// Keeps the send limits' memory to the users writing now (see `SendLimits`).
pub(super) async fn forget_idle_senders(chat: Chat, mut stopping: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(FORGET_IDLE_SENDERS);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => chat.limits().forget_idle(),
            _ = stopping.changed() => return,
        }
    }
}
