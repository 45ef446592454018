// The reads of the thread log: what an open window starts from and replays
// (thread_window, thread_log), and the outbox's events, bounds and sinks' cursors.
// Included into `reads.rs` (see there), so each backend compiles its own copy.

/// A thread as a window opening on it shows it, in one statement: its version, last
/// seq, both horizons, what decides each side's writability, and the oldest version its
/// log holds. `None` for no such thread.
pub async fn thread_window(conn: &mut Conn, thread_id: i64) -> QueryResult<Option<ThreadWindow>> {
    use diesel::sql_types::{Bool, Nullable, Text};
    #[derive(QueryableByName)]
    struct WindowRow {
        #[diesel(sql_type = BigInt)]
        version: i64,
        #[diesel(sql_type = BigInt)]
        last_seq: i64,
        #[diesel(sql_type = Text)]
        kind: ThreadKind,
        #[diesel(sql_type = BigInt)]
        tutor_id: i64,
        #[diesel(sql_type = BigInt)]
        student_id: i64,
        #[diesel(sql_type = Bool)]
        is_writable: bool,
        #[diesel(sql_type = Nullable<BigInt>)]
        tutor_read_seq: Option<i64>,
        #[diesel(sql_type = Nullable<BigInt>)]
        student_read_seq: Option<i64>,
        #[diesel(sql_type = Nullable<Text>)]
        contact_access: Option<ContactAccessState>,
        #[diesel(sql_type = Nullable<BigInt>)]
        oldest_logged: Option<i64>,
    }
    let row: Option<WindowRow> = diesel::sql_query(
        "SELECT t.version, t.last_seq, t.kind, t.tutor_id, t.student_id, t.is_writable, \
         (SELECT p.last_read_seq FROM thread_participants p \
          WHERE p.thread_id = t.thread_id AND p.side = 'tutor') AS tutor_read_seq, \
         (SELECT p.last_read_seq FROM thread_participants p \
          WHERE p.thread_id = t.thread_id AND p.side = 'student') AS student_read_seq, \
         (SELECT ca.state FROM contact_access ca \
          WHERE ca.tutor_id = t.tutor_id AND ca.student_id = t.student_id) AS contact_access, \
         (SELECT MIN(e.thread_version) FROM events e WHERE e.thread_id = t.thread_id) AS oldest_logged \
         FROM threads t WHERE t.thread_id = $1",
    )
    .bind::<BigInt, _>(thread_id)
    .get_result(conn)
    .await
    .optional()?;
    Ok(row.map(|row| ThreadWindow {
        facts: ThreadFacts {
            kind: row.kind,
            tutor_id: row.tutor_id,
            student_id: row.student_id,
            is_writable: row.is_writable,
            contact_access: row.contact_access,
        },
        version: row.version,
        last_seq: row.last_seq,
        tutor_read_seq: row.tutor_read_seq.unwrap_or(0),
        student_read_seq: row.student_read_seq.unwrap_or(0),
        oldest_logged: row.oldest_logged,
    }))
}

/// Up to `limit` changes of a thread's log after `after_version`, in order, each
/// message change with its message as it is now.
pub async fn thread_log(conn: &mut Conn, thread_id: i64, after_version: i64, limit: i64) -> QueryResult<Vec<LoggedChange>> {
    // The versions are never NULL here: `gt` matches none.
    type Row = (Option<i64>, EventKind, Option<Side>, i64, bool, Option<ContactAccessState>, Option<MessageRow>);
    let message_kinds = [EventKind::MessageCreated, EventKind::MessageEdited, EventKind::MessageDeleted].map(EventKind::as_str);
    let rows: Vec<Row> = events::table
        .left_join(
            messages::table.on(messages::thread_id
                .eq(events::thread_id)
                .and(messages::seq.eq(events::seq))
                .and(events::kind.eq_any(message_kinds))),
        )
        .filter(events::thread_id.eq(thread_id))
        .filter(events::thread_version.gt(after_version))
        .order(events::thread_version.asc())
        .limit(limit)
        .select((
            events::thread_version,
            events::kind,
            events::side,
            events::seq,
            events::flag,
            events::contact_access,
            Option::<MessageRow>::as_select(),
        ))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(version, kind, side, seq, flag, contact_access, message)| LoggedChange {
            version: version.unwrap_or_default(),
            kind,
            side,
            seq,
            flag,
            contact_access,
            message: message.map(Message::from),
        })
        .collect())
}

/// Up to `limit` numbered events after `position`, in position order, of the given
/// kinds (all when empty), each with its thread and, for a message's event or a
/// reminder, its message as it is now.
pub async fn events_after(conn: &mut Conn, position: i64, kinds: &[EventKind], limit: i64) -> QueryResult<Vec<StoredEvent>> {
    type Row = (
        (i64, i64, EventKind, i64, Option<i64>, Option<Side>, Option<i64>, i64, bool),
        (Option<ContactAccessState>, Option<i64>, chrono::DateTime<chrono::Utc>),
        Option<ThreadRow>,
        Option<MessageRow>,
    );
    let with_message = [
        EventKind::MessageCreated,
        EventKind::MessageEdited,
        EventKind::MessageDeleted,
        EventKind::UnreadReminder,
    ]
    .map(EventKind::as_str);
    let mut query = events::table
        .left_join(threads::table.on(threads::thread_id.eq(events::thread_id)))
        .left_join(
            messages::table.on(messages::thread_id
                .eq(events::thread_id)
                .and(messages::seq.eq(events::seq))
                .and(events::kind.eq_any(with_message))),
        )
        .filter(events::position.gt(position))
        .order(events::position.asc())
        .limit(limit)
        .select((
            (
                events::position.assume_not_null(),
                events::event_id,
                events::kind,
                events::thread_id,
                events::thread_version,
                events::side,
                events::user_id,
                events::seq,
                events::flag,
            ),
            (events::contact_access, events::amount, events::created_at),
            Option::<ThreadRow>::as_select(),
            Option::<MessageRow>::as_select(),
        ))
        .into_boxed();
    if !kinds.is_empty() {
        query = query.filter(events::kind.eq_any(kinds.iter().map(|kind| kind.as_str()).collect::<Vec<_>>()));
    }
    let rows: Vec<Row> = query.load(conn).await?;
    Ok(rows
        .into_iter()
        .map(
            |((position, event_id, kind, thread_id, thread_version, side, user_id, seq, flag), (contact_access, amount, created_at), thread, message)| {
                StoredEvent {
                    position,
                    event_id,
                    kind,
                    thread_id,
                    thread_version,
                    side,
                    user_id,
                    seq,
                    flag,
                    contact_access,
                    amount,
                    created_at,
                    thread: thread.map(Thread::from),
                    message: message.map(Message::from),
                }
            },
        )
        .collect())
}

/// The newest position given and the newest trimmed.
pub async fn event_bounds(conn: &mut Conn) -> QueryResult<EventBounds> {
    let (last_position, trimmed_through) = event_sequence::table
        .select((event_sequence::last_position, event_sequence::trimmed_through))
        .first::<(i64, i64)>(conn)
        .await
        .optional()?
        .unwrap_or_default();
    Ok(EventBounds {
        last_position,
        trimmed_through,
    })
}

/// Where a sink's cursor is (0: it has acknowledged nothing yet).
pub async fn event_cursor(conn: &mut Conn, sink: &str) -> QueryResult<i64> {
    Ok(event_cursors::table
        .find(sink)
        .select(event_cursors::position)
        .first::<i64>(conn)
        .await
        .optional()?
        .unwrap_or_default())
}
