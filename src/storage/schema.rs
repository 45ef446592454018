// The tables of chatd, as diesel sees them. Included by `storage/postgres.rs` and
// `storage/sqlite.rs`, each of which first defines `Ts`, its timestamp SQL type; the rest
// is the same on both backends (see `migrations/`).

diesel::table! {
    use diesel::sql_types::*;
    use super::Ts;
    relations (relation_id) {
        relation_id -> BigInt,
        tutor_id -> BigInt,
        student_id -> BigInt,
        status -> Text,
        version -> BigInt,
        updated_at -> Ts,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::Ts;
    contact_access (tutor_id, student_id) {
        tutor_id -> BigInt,
        student_id -> BigInt,
        state -> Text,
        version -> BigInt,
        updated_at -> Ts,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::Ts;
    inquiries (inquiry_id) {
        inquiry_id -> BigInt,
        tutor_id -> BigInt,
        student_id -> BigInt,
        status -> Text,
        version -> BigInt,
        updated_at -> Ts,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::Ts;
    threads (thread_id) {
        thread_id -> BigInt,
        kind -> Text,
        relation_id -> Nullable<BigInt>,
        inquiry_id -> Nullable<BigInt>,
        tutor_id -> BigInt,
        student_id -> BigInt,
        last_seq -> BigInt,
        is_writable -> Bool,
        last_message_at -> Nullable<Ts>,
        last_message_preview -> Text,
        last_message_sender_id -> BigInt,
        created_at -> Ts,
        last_visible_seq -> BigInt,
        revision -> BigInt,
        version -> BigInt,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::Ts;
    messages (message_id) {
        message_id -> BigInt,
        thread_id -> BigInt,
        seq -> BigInt,
        sender_id -> BigInt,
        body -> Text,
        client_message_id -> Nullable<Text>,
        created_at -> Ts,
        edited_at -> Nullable<Ts>,
        deleted_at -> Nullable<Ts>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::Ts;
    thread_participants (thread_id, side) {
        thread_id -> BigInt,
        side -> Text,
        user_id -> BigInt,
        last_read_seq -> BigInt,
        unread_count -> BigInt,
        kind -> Text,
        relation_id -> Nullable<BigInt>,
        inquiry_id -> Nullable<BigInt>,
        tutor_id -> BigInt,
        student_id -> BigInt,
        is_writable -> Bool,
        last_message_at -> Nullable<Ts>,
        last_message_preview -> Text,
        last_message_sender_id -> BigInt,
        muted_until_ms -> Nullable<BigInt>,
        thread_created_at -> Ts,
        // reminded_read_seq (migration events_out) is read and written only by the
        // reminders' SQL (writes/remind_unread.*): diesel's tables stop at 16 columns.
    }
}

diesel::table! {
    summary_versions (user_id, side) {
        user_id -> BigInt,
        side -> Text,
        version -> BigInt,
    }
}

diesel::table! {
    stream_tickets (ticket_hash) {
        ticket_hash -> Text,
        user_id -> BigInt,
        role -> Text,
        expires_at -> BigInt,
        access_ends_at -> BigInt,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::Ts;
    events (event_id) {
        event_id -> BigInt,
        kind -> Text,
        thread_id -> BigInt,
        thread_version -> Nullable<BigInt>,
        side -> Nullable<Text>,
        seq -> BigInt,
        flag -> Bool,
        contact_access -> Nullable<Text>,
        created_at -> Ts,
        position -> Nullable<BigInt>,
        user_id -> Nullable<BigInt>,
        amount -> Nullable<BigInt>,
    }
}

diesel::table! {
    event_sequence (id) {
        id -> Integer,
        last_position -> BigInt,
        trimmed_through -> BigInt,
    }
}

diesel::table! {
    event_cursors (sink) {
        sink -> Text,
        position -> BigInt,
        updated_ms -> BigInt,
    }
}

diesel::table! {
    event_relay_lease (id) {
        id -> Integer,
        holder -> Text,
        expires_ms -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    events,
    event_sequence,
    event_cursors,
    event_relay_lease,
    summary_versions,
    relations,
    contact_access,
    inquiries,
    threads,
    messages,
    thread_participants,
);
