"""The LLM transport: the real `openai` client against the scripted local server (tests/fake_openai.py)."""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.llm import (
    LLMClient,
    LLMConfig,
    LLMConfigError,
    LLMError,
    LLMRequestError,
    LLMUnavailable,
    Recorder,
    Replayer,
    ReplayMiss,
    TokenUsage,
    normalise_request,
    request_key,
)
from tests.fake_openai import FakeOpenAI, ScriptError, delay, drip, error, raw, text, tool_call

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "quality_report",
            "description": "Data-quality checks of one feature.",
            "parameters": {
                "type": "object",
                "properties": {"feature": {"type": "string"}},
                "required": ["feature"],
            },
        },
    }
]
QUESTION = [
    {"role": "system", "content": "You investigate fraud-model incidents."},
    {"role": "user", "content": "INC-1 opened: amount drifted, PSI 0.41."},
]


def test_a_tool_call_is_parsed_into_plain_dicts(fake_openai: FakeOpenAI) -> None:
    fake_openai.script([tool_call("quality_report", {"feature": "amount"}, id="call_a", content="Checking.")])
    with LLMClient(fake_openai.config()) as llm:
        reply = llm.complete(QUESTION, TOOLS, tool_choice="auto")

    assert reply.message == {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [{"id": "call_a", "name": "quality_report", "arguments": '{"feature": "amount"}'}],
    }
    assert reply.finish_reason == "tool_calls"
    assert reply.attempts == 1 and not reply.replayed
    [sent] = fake_openai.received
    assert sent.body == {
        "model": "fake-model",
        "messages": QUESTION,
        "tools": TOOLS,
        "tool_choice": "auto",
        "temperature": 0.0,
    }
    assert sent.headers["authorization"] == "Bearer sk-test-fake"


def test_usage_and_cost_come_from_the_response_and_add_up(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(
        [text("first", usage=(1200, 300)), text("second", usage=(800, 100)), text("third", usage=None)]
    )
    config = fake_openai.config(prompt_price_per_1k=0.5, completion_price_per_1k=1.5)
    with LLMClient(config) as llm:
        first = llm.complete(QUESTION, TOOLS)
        second = llm.complete(QUESTION, TOOLS)
        unreported = llm.complete(QUESTION, TOOLS)

    assert first.usage == TokenUsage(prompt_tokens=1200, completion_tokens=300, total_tokens=1500)
    assert first.cost_usd == pytest.approx(1200 / 1000 * 0.5 + 300 / 1000 * 1.5)
    assert unreported.usage == TokenUsage() and unreported.cost_usd == 0
    assert llm.usage.model_dump() == {
        "calls": 3,
        "failed_calls": 0,
        "prompt_tokens": 2000,
        "completion_tokens": 400,
        "total_tokens": 2400,
        "cost_usd": pytest.approx(first.cost_usd + second.cost_usd),
    }
    assert first.latency_ms > 0


def test_a_429_is_retried(fake_openai: FakeOpenAI) -> None:
    fake_openai.script([error(429), text("ok")])
    with LLMClient(fake_openai.config()) as llm:
        reply = llm.complete(QUESTION, TOOLS)
    assert (reply.content, reply.attempts) == ("ok", 2)
    assert len(fake_openai.received) == 2


def test_server_errors_are_retried_until_an_answer(fake_openai: FakeOpenAI) -> None:
    fake_openai.script([error(500), error(503), text("ok")])
    with LLMClient(fake_openai.config(max_attempts=3)) as llm:
        reply = llm.complete(QUESTION, TOOLS)
    assert (reply.content, reply.attempts) == ("ok", 3)


@pytest.mark.parametrize(
    ("headers", "waited"),
    [({"retry-after": "0.3"}, 0.3), ({"retry-after-ms": "300"}, 0.3), ({"retry-after": "30"}, 1.0)],
)
def test_retry_after_is_waited_for_within_the_cap(
    fake_openai: FakeOpenAI, headers: dict[str, str], waited: float
) -> None:
    fake_openai.script([error(429, headers=headers), text("ok")])
    slept: list[float] = []
    with LLMClient(fake_openai.config(backoff_max_s=1.0), sleep=slept.append) as llm:
        reply = llm.complete(QUESTION, TOOLS)
    assert reply.attempts == 2
    # The server's wait, not the 0.01 s backoff; never past the 1 s cap.
    assert slept == [pytest.approx(waited)]


def test_timeouts_exhaust_the_attempts_and_raise_unavailable(fake_openai: FakeOpenAI) -> None:
    fake_openai.script([delay(3), delay(3), delay(3)])
    slept: list[float] = []
    with (
        LLMClient(fake_openai.config(timeout_s=0.2, max_attempts=3), sleep=slept.append) as llm,
        pytest.raises(LLMUnavailable) as raised,
    ):
        llm.complete(QUESTION, TOOLS)

    # Each request went out with the 0.2 s timeout and gave up on it: had the client waited out the
    # server's 3 s delay, the late answer would have arrived and nothing would have been raised.
    assert [r.headers["x-stainless-read-timeout"] for r in fake_openai.received] == ["0.2"] * 3
    assert raised.value.attempts == 3 and len(slept) == 2  # a backoff between attempts, none after the last
    assert "after 3 attempts" in str(raised.value)
    assert "APITimeoutError" in raised.value.last_error
    assert llm.usage.failed_calls == 1 and llm.usage.calls == 0


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_a_refused_request_is_not_retried(fake_openai: FakeOpenAI, status: int) -> None:
    fake_openai.script(
        [error(status, {"error": {"message": "unknown parameter 'toolz'", "type": "invalid"}})]
    )
    with LLMClient(fake_openai.config(max_attempts=4)) as llm, pytest.raises(LLMRequestError) as raised:
        llm.complete(QUESTION, TOOLS)
    assert raised.value.status_code == status
    assert "unknown parameter 'toolz'" in str(raised.value)
    assert len(fake_openai.received) == 1


def test_an_answer_sent_too_slowly_times_out_though_each_byte_came_in_time(fake_openai: FakeOpenAI) -> None:
    # httpx's timeout bounds each read: 30 bytes 0.1 s apart took 3 s with a 0.5 s timeout, and a server
    # that never stopped dripping held the call (and the service's responder lock) for ever.
    fake_openai.script([drip(30, 0.1), drip(30, 0.1)], allow_unused=True)
    # Each answer does arrive whole (every byte within the read timeout): only a deadline on the whole
    # answer times it out, so the raise itself is the proof; no wall-clock assertion (benchmarks/ own timings).
    with LLMClient(fake_openai.config(timeout_s=0.5, max_attempts=2)) as llm, pytest.raises(LLMUnavailable, match="timed out"):
        llm.complete(QUESTION, TOOLS)
    assert len(fake_openai.requests) == 2


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"choices": [{"message": {"role": "assistant", "content": "x" * (9 * 1024 * 1024)}}]}, "larger than"),
        ("[" * 100_000 + "]" * 100_000, "other than JSON"),  # deeper than Python's json recurses
    ],
    ids=["9 MB", "deeply nested"],
)
def test_a_huge_or_pathological_answer_is_a_request_error(fake_openai: FakeOpenAI, body: Any, problem: str) -> None:
    # Both used to escape the taxonomy (read whole / RecursionError) and crash the planner's caller.
    fake_openai.script([raw(body)])
    with LLMClient(fake_openai.config()) as llm, pytest.raises(LLMRequestError, match=problem):
        llm.complete(QUESTION, TOOLS)
    assert len(fake_openai.requests) == 1  # not retried: the same server would answer the same


def test_token_counts_that_are_not_finite_or_negative_count_as_zero(fake_openai: FakeOpenAI) -> None:
    # Infinity raised OverflowError; a negative count would let an endpoint keep the token budget open.
    choices = [{"message": {"role": "assistant", "content": "ok"}}]
    fake_openai.script([
        raw(json.dumps({"choices": choices, "usage": {"prompt_tokens": math.inf, "completion_tokens": 3}})),
        raw({"choices": choices, "usage": {"prompt_tokens": -10_000, "completion_tokens": 3, "total_tokens": -9_997}}),
    ])  # fmt: skip
    with LLMClient(fake_openai.config()) as llm:
        usages = [llm.complete(QUESTION).usage for _ in range(2)]
    assert all(u == TokenUsage(prompt_tokens=0, completion_tokens=3, total_tokens=3) for u in usages)


def test_an_answer_without_choices_is_a_request_error_not_a_retry(fake_openai: FakeOpenAI) -> None:
    fake_openai.script([raw({"object": "error", "message": "model is loading"})])
    with LLMClient(fake_openai.config()) as llm, pytest.raises(LLMRequestError, match="no choices"):
        llm.complete(QUESTION, TOOLS)
    assert len(fake_openai.received) == 1


def test_malformed_tool_arguments_reach_the_planner_as_the_model_wrote_them(fake_openai: FakeOpenAI) -> None:
    broken = '{"feature": "amount", '
    fake_openai.script([tool_call("quality_report", broken)])
    with LLMClient(fake_openai.config()) as llm:
        reply = llm.complete(QUESTION, TOOLS)
    assert reply.tool_calls[0]["arguments"] == broken


def test_a_planner_loop_sends_the_flat_reply_back_in_wire_form(fake_openai: FakeOpenAI) -> None:
    def model(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> Any:
        # Call the tool once, then answer from its result: a two-turn loop, as the planner runs it.
        if messages[-1]["role"] == "tool":
            return text(f"amount looks {json.loads(messages[-1]['content'])['verdict']}")
        return tool_call("quality_report", {"feature": "amount"})

    fake_openai.script(model)
    messages = list(QUESTION)
    with LLMClient(fake_openai.config()) as llm:
        first = llm.complete(messages, TOOLS)
        messages.append(first.message)  # the flat form: the client converts it
        call = first.tool_calls[0]
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": '{"verdict": "fine"}'})
        second = llm.complete(messages, TOOLS)

    assert second.content == "amount looks fine"
    assistant = fake_openai.requests[1]["messages"][2]
    assert assistant["tool_calls"] == [
        {
            "id": call["id"],
            "type": "function",
            "function": {"name": "quality_report", "arguments": call["arguments"]},
        }
    ]
    assert first.as_message() == assistant


def test_script_exhaustion_fails_loudly_and_never_cycles(fake_openai: FakeOpenAI) -> None:
    fake_openai.script([text("the only turn")])
    with LLMClient(fake_openai.config(max_attempts=2)) as llm:
        assert llm.complete(QUESTION, TOOLS).content == "the only turn"
        with pytest.raises(LLMUnavailable, match="script exhausted"):
            llm.complete(QUESTION, TOOLS)
    failures = fake_openai.take_failures()
    assert len(failures) == 2 and all("script exhausted: request #" in failure for failure in failures)


def test_unscripted_requests_and_unused_turns_fail_at_teardown() -> None:
    unscripted = FakeOpenAI()
    with (
        pytest.raises(ScriptError, match="request #1 arrived before any script was set"),
        unscripted,  # started here; stopped and checked on the way out, inside pytest.raises
        LLMClient(unscripted.config(max_attempts=1)) as llm,
        pytest.raises(LLMUnavailable),
    ):
        llm.complete(QUESTION, TOOLS)

    left_over = FakeOpenAI()
    with (
        pytest.raises(ScriptError, match=r"1 scripted turn\(s\) were never requested: \['HTTP 429'\]"),
        left_over,
    ):
        left_over.script([text("used"), error(429)])
        with LLMClient(left_over.config()) as llm:
            llm.complete(QUESTION, TOOLS)


def test_record_then_replay_gives_identical_replies_with_the_server_stopped(tmp_path: Path) -> None:
    conversation = [tool_call("quality_report", {"feature": "amount"}), text("Amount drifted: roll back.")]
    with FakeOpenAI() as server:
        server.script(conversation)
        config = server.config(prompt_price_per_1k=1.0)
        with LLMClient(config, exchanges=Recorder(tmp_path)) as llm:
            recorded = _run_conversation(llm)
    recordings = sorted(tmp_path.glob("*.json"))
    assert len(recordings) == 2
    assert all("sk-test-fake" not in path.read_text() for path in recordings)  # requests, never the key

    # The server is gone: any HTTP call would now fail to connect.
    with LLMClient(config, exchanges=Replayer(tmp_path)) as llm:
        replayed = _run_conversation(llm)
    keep = {"message", "finish_reason", "usage", "cost_usd"}
    assert [reply.model_dump(include=keep) for reply in replayed] == [
        reply.model_dump(include=keep) for reply in recorded
    ]
    assert all(reply.replayed and reply.attempts == 0 for reply in replayed)
    assert llm.usage.calls == 2 and llm.usage.total_tokens == sum(r.usage.total_tokens for r in recorded)


def test_a_replay_miss_names_the_key_and_the_closest_recording(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    fake_openai.script([text("recorded answer")])
    with LLMClient(fake_openai.config(), exchanges=Recorder(tmp_path)) as llm:
        llm.complete(QUESTION, TOOLS)
    [recording] = tmp_path.glob("*.json")
    changed = [QUESTION[0], {"role": "user", "content": "INC-1 opened: latency rose."}]

    with (
        LLMClient(fake_openai.config(), exchanges=Replayer(tmp_path)) as llm,
        pytest.raises(ReplayMiss) as raised,
    ):
        llm.complete(changed, TOOLS)

    message = str(raised.value)
    assert raised.value.key == request_key({"model": "fake-model", "messages": changed, "tools": TOOLS})
    assert raised.value.key[:16] in message
    assert recording.name in message
    assert "differs at message 1 (the first 1 of 2 recorded messages match)" in message
    assert "latency rose" in message and "amount drifted" in message
    assert not isinstance(raised.value, LLMError)  # a fallback catching LLMError must not hide it
    assert len(fake_openai.received) == 1  # the miss made no call


def test_requests_differing_only_in_times_ids_and_float_noise_hit_the_same_recording(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    def asked(
        at: str, incident: str, audit: str, uuid: str, sha: str, psi: str, took: str
    ) -> list[dict[str, Any]]:
        return [
            QUESTION[0],
            {"role": "user", "content": f"{incident} opened at {at}; run {uuid}; model sha {sha}; PSI {psi}"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "name": "rollback_model",
                        "arguments": f'{{"incident_id": "{incident}"}}',
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "call_1",
                "content": json.dumps(
                    {"audit_id": audit, "status": "applied", "p99_latency_ms": float(took)}
                ),
            },
        ]

    fake_openai.script([text("Rolled back.")])
    with LLMClient(fake_openai.config(), exchanges=Recorder(tmp_path)) as llm:
        llm.complete(
            asked(
                "2024-05-01T10:00:00Z",
                "INC-12",
                "rollback_model-3f2a9c1b0d4e-1",
                "0b7e4c8a-1d2f-4a5b-9c6d-7e8f9a0b1c2d",
                "9f86d081884c7d65",
                "0.41234567",
                "12.5",
            ),
            TOOLS,
        )
    with LLMClient(fake_openai.config(), exchanges=Replayer(tmp_path)) as llm:
        reply = llm.complete(
            asked(
                "2024-06-30 23:59:59.123456+02:00",
                "INC-3",
                "rollback_model-aa11bb22cc33-2",
                "f47ac10b-58cc-4372-a567-0e02b2c3d479",
                "2c26b46b68ffc68f",
                "0.41231999",
                "40.75",
            ),
            TOOLS,
        )
    assert reply.content == "Rolled back." and reply.replayed
    assert len(fake_openai.received) == 1


def test_normalisation_keeps_what_the_model_reasons_about() -> None:
    def key(content: str) -> str:
        return request_key({"model": "m", "messages": [{"role": "user", "content": content}]})

    # Two incidents in one request stay two; which numbers they carry does not matter.
    assert key("INC-3 and INC-4") == key("INC-12 and INC-13") != key("INC-3 and INC-3")
    # Integers (counts, thresholds) and words are kept; decimals to 4 significant digits.
    assert key("120 declined") != key("121 declined")
    assert key("PSI 0.41") != key("PSI 0.52")
    assert key("PSI 0.30000000000000004") == key("PSI 0.3")
    assert key("amount drifted") != key("latency drifted")
    assert key("at 2024-05-01T10:00:00Z: drift") == key("at 2024-05-02T11:30:00.5Z: drift")
    # A bare date is a fact about the world, not noise.
    assert key("since 2024-05-01") != key("since 2024-05-02")
    # Different models never share recordings.
    assert request_key({"model": "a", "messages": []}) != request_key({"model": "b", "messages": []})
    normalised = normalise_request(
        {"model": "m", "messages": [{"role": "user", "content": "INC-7 at 2024-05-01T10:00Z"}]}
    )
    assert normalised["messages"] == [{"role": "user", "content": "<incident:1> at <time>"}]


def test_config_from_env_and_the_key_never_shows(
    caplog: pytest.LogCaptureFixture, fake_openai: FakeOpenAI
) -> None:
    secret = "sk-live-do-not-print-4242"
    config = LLMConfig.from_env(
        {
            "OPENAI_BASE_URL": fake_openai.base_url + "/",
            "OPENAI_API_KEY": secret,
            "SELFHEAL_MODEL": "llama3.1",
        },
        backoff_initial_s=0.01,
        backoff_jitter_s=0,
    )
    assert (config.base_url, config.model, config.configured) == (fake_openai.base_url, "llama3.1", True)
    assert not LLMConfig.from_env({"OPENAI_API_KEY": "  "}).configured

    fake_openai.script([error(500), text("ok")])
    caplog.set_level(logging.DEBUG)
    with LLMClient(config) as llm:
        llm.complete(QUESTION, TOOLS)
    shown = [repr(config), str(config), config.model_dump_json(), repr(llm), caplog.text]
    assert caplog.text  # the SDK's debug log and our retry warning were captured, and hold no key
    assert all(secret not in text for text in shown)
    assert fake_openai.received[0].headers["authorization"] == f"Bearer {secret}"


@pytest.mark.parametrize(
    "url", ["localhost:11434/v1", "http://[::1/v1", "http://localhost:99999/v1", "http:///v1", "ftp://host/v1"]
)
def test_an_unusable_base_url_is_refused_at_once_naming_its_variable(url: str) -> None:
    # "http://[::1/v1" and a port above 65535 used to pass, and httpx raised InvalidURL (no LLMError) on the
    # first request, in the middle of an investigation.
    with pytest.raises(LLMConfigError, match=r"OPENAI_BASE_URL=.*must be an http\(s\) URL with a host"):
        LLMConfig.from_env({"OPENAI_BASE_URL": url})
    assert LLMConfig.from_env({"OPENAI_BASE_URL": "http://[::1]:8080/v1/"}).base_url == "http://[::1]:8080/v1"


def test_a_command_with_an_unusable_base_url_says_so_without_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "OPENAI_BASE_URL": "localhost:11434/v1", "SELFHEAL_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "selfheal", "ask", "INC-1", "why?"], env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "OPENAI_BASE_URL='localhost:11434/v1'" in " ".join(done.stderr.split())


def test_an_unconfigured_client_refuses_without_any_http_call() -> None:
    config = LLMConfig.from_env({})
    assert not config.configured
    with LLMClient(config) as llm, pytest.raises(LLMRequestError, match="no LLM endpoint is configured"):
        llm.complete(QUESTION, TOOLS)
    assert llm.usage.failed_calls == 1


def _run_conversation(llm: LLMClient) -> list[Any]:
    messages = list(QUESTION)
    first = llm.complete(messages, TOOLS)
    messages += [
        first.message,
        {"role": "tool", "tool_call_id": first.tool_calls[0]["id"], "content": '{"psi": 0.41}'},
    ]
    return [first, llm.complete(messages, TOOLS)]


@pytest.mark.parametrize(
    "raised",
    [
        ReplayMiss("no recording for request abc", key="abc"),
        LLMUnavailable("gave up", attempts=3, last_error="timeout"),
        LLMRequestError("bad key", status_code=401),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_cross_a_process_boundary_whole(raised: Exception) -> None:
    # The eval harness plays cases in worker processes: an error must reach the parent as itself.
    copy = pickle.loads(pickle.dumps(raised))
    assert type(copy) is type(raised) and str(copy) == str(raised) and vars(copy) == vars(raised)
