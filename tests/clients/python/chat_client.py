"""A backend service calling chatd over gRPC from Python, as the README's "Client
integration" shows it: stubs generated from proto/ with grpcio-tools, `google.api`
from googleapis-common-protos, the service config's deadlines and retries, and errors
read through grpcio-status (ErrorInfo's reason is a value of the proto's ErrorReason).

Run it against a live chatd (tests/clients/run does, in CI):

    python -m grpc_tools.protoc -I proto --python_out=GEN --grpc_python_out=GEN \
        proto/chat/v1/chat.proto
    PYTHONPATH=GEN CHATD_GRPC=127.0.0.1:50051 SERVICE_TOKEN=… TUTOR_TOKEN=… \
        STUDENT_TOKEN=… python tests/clients/python/chat_client.py

It creates its own relation (ids from RELATION_ID, default 910, tutor 942, student 907)
and checks what it prints, so it fails loudly if chatd stops behaving as documented.
"""

import os
import pathlib
import uuid

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from chat.v1 import chat_pb2, chat_pb2_grpc

SERVICE_CONFIG = pathlib.Path(__file__).parents[3] / "deploy" / "grpc" / "service-config.json"


def connect(target: str) -> grpc.Channel:
    """A channel with chatd's service config: deadlines, and retries where safe."""
    return grpc.insecure_channel(
        target,
        options=[
            ("grpc.service_config", SERVICE_CONFIG.read_text()),
            ("grpc.enable_retries", 1),
        ],
    )


def bearer(token: str):
    return (("authorization", f"Bearer {token}"),)


def error_info(error: grpc.RpcError):
    """The ErrorInfo chatd attaches to every error it answers, or None when the failure
    is the transport's (connection refused, a deadline the client set): those carry a
    status code only, so retry by code, not by reason."""
    status = rpc_status.from_call(error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def check(condition: bool, what: str):
    if not condition:
        raise SystemExit(f"python client example: {what}")


def main():
    target = os.environ.get("CHATD_GRPC", "127.0.0.1:50051")
    relation = int(os.environ.get("RELATION_ID", "910"))
    tutor_id, student_id = 942, 907
    service = bearer(os.environ["SERVICE_TOKEN"])
    tutor = bearer(os.environ["TUTOR_TOKEN"])
    student = bearer(os.environ["STUDENT_TOKEN"])

    channel = connect(target)
    sync = chat_pb2_grpc.SyncServiceStub(channel)
    chat = chat_pb2_grpc.ChatServiceStub(channel)

    # Upstream facts, as the relation and contact services push them (idempotent by version).
    sync.UpsertRelation(
        chat_pb2.UpsertRelationRequest(
            relation_id=relation,
            tutor_id=tutor_id,
            student_id=student_id,
            status=chat_pb2.RELATION_STATUS_ACTIVE,
            version=1,
        ),
        metadata=service,
    )
    sync.UpsertContactAccess(
        chat_pb2.UpsertContactAccessRequest(
            tutor_id=tutor_id,
            student_id=student_id,
            state=chat_pb2.CONTACT_ACCESS_STATE_UNLOCKED,
            version=1,
        ),
        metadata=service,
    )

    thread = chat.EnsureThread(
        chat_pb2.EnsureThreadRequest(relation_id=relation), metadata=student
    ).thread

    # A send is safe to retry only with a key: the retry answers the first message.
    key = str(uuid.uuid4())
    send = chat_pb2.SendMessageRequest(thread_id=thread.thread_id, body="Hello from Python", client_message_id=key)
    first = chat.SendMessage(send, metadata=student).message
    again = chat.SendMessage(send, metadata=student).message
    check(first.message_id == again.message_id, "a retried send made a second message")

    # The badge: poll with the etag; an unchanged summary is `not_modified`, with no threads.
    summary = chat.GetUnreadSummary(chat_pb2.GetUnreadSummaryRequest(), metadata=tutor)
    check(summary.total >= 1, f"the tutor's total is {summary.total}")
    unchanged = chat.GetUnreadSummary(
        chat_pb2.GetUnreadSummaryRequest(if_none_match=summary.etag), metadata=tutor
    )
    check(unchanged.not_modified, "an unchanged summary was sent again")

    # The inbox, then catching up on the thread oldest first.
    inbox = chat.ListThreads(chat_pb2.ListThreadsRequest(limit=50), metadata=tutor)
    check(any(t.thread_id == thread.thread_id for t in inbox.threads), "the thread is not in the inbox")
    caught_up = chat.ListMessages(
        chat_pb2.ListMessagesRequest(thread_id=thread.thread_id, after_seq=0), metadata=tutor
    )
    check(caught_up.messages[-1].body == "Hello from Python", "catching up missed the message")

    # A refusal: the reason is a name of the proto's ErrorReason, in chatd's domain.
    try:
        chat.EnsureThread(chat_pb2.EnsureThreadRequest(relation_id=relation + 1), metadata=tutor)
        check(False, "a thread of an unknown relation was opened")
    except grpc.RpcError as error:
        info = error_info(error)
        check(info is not None, "a refusal without ErrorInfo")
        check(error.code() == grpc.StatusCode.NOT_FOUND, f"code {error.code()}")
        check(info.domain == "chatd.chat.v1", f"domain {info.domain}")
        # Forward compatible: a reason newer than these stubs is not in the enum, and
        # ErrorReason.Value() would raise on it; compare names, fall back by code.
        known = info.reason in chat_pb2.ErrorReason.keys()
        check(known and info.reason == "RELATION_NOT_FOUND", f"reason {info.reason}")
        print(f"refused as documented: {error.code().name} {info.reason} ({error.details()})")

    # A transport failure has a code and no ErrorInfo: nothing listens on port 1.
    try:
        chat_pb2_grpc.ChatServiceStub(grpc.insecure_channel("127.0.0.1:1")).GetUnreadSummary(
            chat_pb2.GetUnreadSummaryRequest(), metadata=tutor, timeout=2
        )
        check(False, "a call to nowhere succeeded")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.UNAVAILABLE, f"code {error.code()}")
        check(error_info(error) is None, "a transport failure with ErrorInfo")

    # Held without a deadline: the first message is the summary now, then one per change.
    watch = chat.WatchUnreadSummary(chat_pb2.WatchUnreadSummaryRequest(), metadata=tutor)
    now = next(watch)
    chat.SendMessage(
        chat_pb2.SendMessageRequest(thread_id=thread.thread_id, body="Are you there?", client_message_id=str(uuid.uuid4())),
        metadata=student,
    )
    changed = next(watch)
    check(changed.total == now.total + 1, f"the watch went from {now.total} to {changed.total}")
    watch.cancel()

    read = chat.MarkRead(chat_pb2.MarkReadRequest(thread_id=thread.thread_id), metadata=tutor)
    check(read.unread_count == 0, f"{read.unread_count} unread after reading")
    print(f"python client example: ok (thread {thread.thread_id}, total {read.total})")


if __name__ == "__main__":
    main()
