"""A loopback fake of the Slack Web API, good enough for slack_sdk's AsyncWebClient."""

from __future__ import annotations

import contextlib
import json
import mimetypes
import time
from collections.abc import Callable
from dataclasses import dataclass
from email import policy
from email.parser import BytesParser
from typing import Any

from aiohttp import web

from ._base import FakeServer, Fault, RecordedRequest, record_of

JsonDict = dict[str, Any]
_JSON_ARGS = ("blocks", "attachments", "files", "metadata")


@dataclass
class FakeFile:
    id: str
    filename: str
    length: int
    data: bytes | None = None
    title: str | None = None
    channel: str | None = None
    completed: bool = False


class FakeSlack(FakeServer):
    """Fake Slack Web API.  Point ``AsyncWebClient(base_url=fake.base_url)`` at it.

    State: ``messages`` ({(channel, ts): message}), ``ephemerals``, ``files``,
    ``usergroups`` ({id: [user ids]}), ``channels`` ({id: conversation}).
    """

    def __init__(
        self,
        token: str = "xoxb-fake-token",
        *,
        bot_user_id: str = "U0BOT",
        team_id: str = "T0FAKE",
        strict_channels: bool = False,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.token = token
        # Slack's ts is the Unix time of the post; without ``clock`` the fake counts up from
        # 1700000000 so tests can predict it.
        self.clock = clock
        self._last_ts = 0.0
        self.bot_user_id = bot_user_id
        self.bot_id = "B0BOT"
        self.team_id = team_id
        self.strict_channels = strict_channels  # unknown channel -> channel_not_found
        self.messages: dict[tuple[str, str], JsonDict] = {}
        self.ephemerals: list[JsonDict] = []
        self.files: dict[str, FakeFile] = {}
        self.usergroups: dict[str, list[str]] = {}
        self.channels: dict[str, JsonDict] = {}
        self.responses: dict[str, list[Any]] = {}  # response_url id -> posted bodies
        self._ts_seq = 0
        self._drop_answers: list[str] = []
        self._file_seq = 0
        self._methods: dict[str, Callable[[JsonDict], JsonDict]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "chat.getPermalink": self._get_permalink,
            "conversations.info": self._conversations_info,
            "conversations.history": self._history,
            "conversations.replies": self._replies,
            "usergroups.users.list": self._usergroup_users,
            "files.getUploadURLExternal": self._get_upload_url,
            "files.completeUploadExternal": self._complete_upload,
        }
        super().__init__()

    def _setup_routes(self, router: web.UrlDispatcher) -> None:
        router.add_route("*", "/api/{method}", self._api)
        router.add_post("/upload/v1/{file_id}", self._upload)
        router.add_post("/response/{rid}", self._response_url)

    # -- public helpers --------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """What ``AsyncWebClient(base_url=...)`` expects (ends with ``/api/``)."""
        return f"{self.root_url}/api/"

    def response_url(self, rid: str = "r1") -> str:
        """A slash-command ``response_url`` served by this fake."""
        return f"{self.root_url}/response/{rid}"

    def calls(self, method_name: str) -> list[RecordedRequest]:
        """Recorded requests to one Web API method; ``.params`` holds the merged args."""
        return self.requests_to(f"/api/{method_name}")

    def thread(self, channel: str, ts: str) -> list[JsonDict]:
        """The parent message followed by its replies, oldest first."""
        msgs = [
            m
            for (ch, m_ts), m in self.messages.items()
            if ch == channel and (m_ts == ts or m.get("thread_ts") == ts)
        ]
        return sorted(msgs, key=lambda m: float(m["ts"]))

    def add_channel(self, channel_id: str, name: str, **extra: Any) -> None:
        self.channels[channel_id] = {"id": channel_id, "name": name, **_channel_defaults(), **extra}

    def set_usergroup(self, usergroup_id: str, users: list[str]) -> None:
        self.usergroups[usergroup_id] = list(users)

    # -- plumbing --------------------------------------------------------------------

    def _fault_response(self, fault: Fault, request: web.Request) -> web.StreamResponse:
        if fault.kind == "rate_limit":
            return web.json_response(
                {"ok": False, "error": "ratelimited"},
                status=429,
                headers={"Retry-After": str(int(fault.retry_after))},
            )
        error = "service_unavailable" if fault.status == 503 else "internal_error"
        return web.json_response({"ok": False, "error": error}, status=fault.status)

    def _next_ts(self) -> str:
        if self.clock is not None:
            self._last_ts = max(round(self.clock(), 6), round(self._last_ts + 0.000001, 6))
            return f"{self._last_ts:.6f}"
        self._ts_seq += 100
        return f"{1700000000 + self._ts_seq // 1_000_000}.{self._ts_seq % 1_000_000:06d}"

    async def _api(self, request: web.Request) -> web.Response:
        record = record_of(request)
        auth = request.headers.get("Authorization", "")
        if not auth:
            return web.json_response({"ok": False, "error": "not_authed"})
        if auth != f"Bearer {self.token}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        args = record.params
        for key in _JSON_ARGS:
            if isinstance(args.get(key), str):
                with contextlib.suppress(ValueError):
                    args[key] = json.loads(args[key])
        handler = self._methods.get(request.match_info["method"])
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        try:
            body = handler(args)
        except _SlackError as exc:
            body = {"ok": False, "error": str(exc)}
        method = request.match_info["method"]
        if method in self._drop_answers:  # done, but the caller never hears so
            self._drop_answers.remove(method)
            record.status = 502
            return web.json_response({"ok": False, "error": "fatal_error"}, status=502)
        return web.json_response(body)

    def drop_answer_next(self, method: str) -> None:
        """Carry out the next ``method`` call but answer 502, as a lost reply looks."""
        self._drop_answers.append(method)

    def _check_channel(self, args: JsonDict, key: str = "channel") -> str:
        channel = args.get(key)
        if not channel or (self.strict_channels and channel not in self.channels):
            raise _SlackError("channel_not_found")
        return str(channel)

    # -- Web API methods -------------------------------------------------------------

    def _auth_test(self, args: JsonDict) -> JsonDict:
        return {
            "ok": True,
            "url": "https://fake.slack.com/",
            "team": "Fake Team",
            "user": "alertpilot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _post_message(self, args: JsonDict) -> JsonDict:
        channel = self._check_channel(args)
        if not (args.get("text") or args.get("blocks") or args.get("attachments")):
            raise _SlackError("no_text")
        thread_ts = args.get("thread_ts")
        if thread_ts and (channel, thread_ts) not in self.messages:
            raise _SlackError("thread_not_found")
        ts = self._next_ts()
        message: JsonDict = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "team": self.team_id,
            "text": args.get("text", ""),
            "ts": ts,
        }
        for key in ("blocks", "attachments", "metadata", "thread_ts"):
            if args.get(key):
                message[key] = args[key]
        self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _listed(self, message: JsonDict, args: JsonDict) -> JsonDict:
        shown = dict(message)
        if str(args.get("include_all_metadata", "")).lower() not in ("1", "true"):
            shown.pop("metadata", None)
        return shown

    def _history(self, args: JsonDict) -> JsonDict:
        """Top-level messages, newest first, as conversations.history lists them."""
        channel = self._check_channel(args)
        oldest = float(args.get("oldest") or 0)
        found = [
            self._listed(m, args)
            for (c, ts), m in self.messages.items()
            if c == channel and float(ts) > oldest and "thread_ts" not in m
        ]
        found.sort(key=lambda m: float(m["ts"]), reverse=True)
        limit = int(args.get("limit") or 100)
        return {"ok": True, "messages": found[:limit], "has_more": len(found) > limit}

    def _replies(self, args: JsonDict) -> JsonDict:
        channel = self._check_channel(args)
        parent = str(args.get("ts", ""))
        if (channel, parent) not in self.messages:
            raise _SlackError("thread_not_found")
        oldest = float(args.get("oldest") or 0)
        found = [
            self._listed(m, args)
            for (c, ts), m in self.messages.items()
            if c == channel
            and (ts == parent or m.get("thread_ts") == parent)
            and float(ts) > oldest
        ]
        found.sort(key=lambda m: float(m["ts"]))
        return {"ok": True, "messages": found, "has_more": False}

    def _update(self, args: JsonDict) -> JsonDict:
        channel = self._check_channel(args)
        ts = str(args.get("ts", ""))
        message = self.messages.get((channel, ts))
        if message is None:
            raise _SlackError("message_not_found")
        for key in ("text", "blocks", "attachments", "metadata"):
            if key in args:
                message[key] = args[key]
        message["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        return {
            "ok": True,
            "channel": channel,
            "ts": ts,
            "text": message["text"],
            "message": message,
        }

    def _post_ephemeral(self, args: JsonDict) -> JsonDict:
        channel = self._check_channel(args)
        if not args.get("user"):
            raise _SlackError("user_not_in_channel")
        if not (args.get("text") or args.get("blocks") or args.get("attachments")):
            raise _SlackError("no_text")
        ts = self._next_ts()
        self.ephemerals.append({**args, "channel": channel, "message_ts": ts})
        return {"ok": True, "message_ts": ts}

    def _get_permalink(self, args: JsonDict) -> JsonDict:
        channel = self._check_channel(args)
        ts = str(args.get("message_ts", ""))
        if (channel, ts) not in self.messages:
            raise _SlackError("message_not_found")
        link = f"https://fake.slack.com/archives/{channel}/p{ts.replace('.', '')}"
        return {"ok": True, "channel": channel, "permalink": link}

    def _conversations_info(self, args: JsonDict) -> JsonDict:
        channel = self._check_channel(args)
        info = self.channels.get(channel) or {
            "id": channel,
            "name": f"channel-{channel.lower()}",
            **_channel_defaults(),
        }
        return {"ok": True, "channel": info}

    def _usergroup_users(self, args: JsonDict) -> JsonDict:
        group = str(args.get("usergroup", ""))
        if group not in self.usergroups:
            raise _SlackError("no_such_subteam")
        return {"ok": True, "users": self.usergroups[group]}

    def _get_upload_url(self, args: JsonDict) -> JsonDict:
        if not args.get("filename") or not str(args.get("length", "")).isdigit():
            raise _SlackError("invalid_arguments")
        self._file_seq += 1
        file_id = f"F{self._file_seq:08d}"
        self.files[file_id] = FakeFile(file_id, str(args["filename"]), int(args["length"]))
        return {
            "ok": True,
            "upload_url": f"{self.root_url}/upload/v1/{file_id}",
            "file_id": file_id,
        }

    def _complete_upload(self, args: JsonDict) -> JsonDict:
        entries = args.get("files")
        if not isinstance(entries, list) or not entries:
            raise _SlackError("invalid_arguments")
        channel = args.get("channel_id") or None
        done: list[JsonDict] = []
        for entry in entries:
            f = self.files.get(str(entry.get("id")))
            if f is None or f.data is None:
                raise _SlackError("file_not_found")
            f.title = entry.get("title") or f.filename
            f.channel = channel
            f.completed = True
            done.append(_file_object(f, self.bot_user_id))
        if channel:
            ts = self._next_ts()
            message: JsonDict = {
                "type": "message",
                "user": self.bot_user_id,
                "text": args.get("initial_comment") or "",
                "ts": ts,
                "files": done,
            }
            if args.get("thread_ts"):
                message["thread_ts"] = args["thread_ts"]
            self.messages[(str(channel), ts)] = message
        return {"ok": True, "files": done}

    # -- non-API endpoints -----------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.Response:
        f = self.files.get(request.match_info["file_id"])
        if f is None:
            return web.Response(status=404, text="not found")
        raw = record_of(request).raw
        if request.content_type.startswith("multipart/"):
            raw = _first_part(request.headers["Content-Type"], raw)
        f.data = raw
        return web.Response(text=f"OK - {len(f.data)}")

    async def _response_url(self, request: web.Request) -> web.Response:
        record = record_of(request)
        self.responses.setdefault(request.match_info["rid"], []).append(record.body)
        return web.json_response({"ok": True})


class _SlackError(Exception):
    pass


def _first_part(content_type: str, raw: bytes) -> bytes:
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    msg = BytesParser(policy=policy.HTTP).parsebytes(head + raw)
    for part in msg.iter_parts():
        payload = part.get_payload(decode=True)
        return payload if isinstance(payload, bytes) else b""
    return b""


def _channel_defaults() -> JsonDict:
    return {
        "is_channel": True,
        "is_private": False,
        "is_archived": False,
        "is_member": True,
        "created": 1690000000,
    }


def _file_object(f: FakeFile, user: str) -> JsonDict:
    return {
        "id": f.id,
        "created": int(time.time()),
        "name": f.filename,
        "title": f.title,
        "user": user,
        "size": len(f.data or b""),
        "mimetype": mimetypes.guess_type(f.filename)[0] or "application/octet-stream",
        "url_private": f"https://files.fake.slack.com/files-pri/T0FAKE-{f.id}/{f.filename}",
        "permalink": f"https://fake.slack.com/files/{user}/{f.id}/{f.filename}",
    }
