"""Flink Agents example agents, rewritten here against flink-agents 0.3.1's API.

The agents are the ones of Flink Agents' own e2e tests (``execute_test_agent.py``:
sync and async ``durable_execute``, a caught exception) and its quickstart
(``review_analysis_agent.py``: prompt, tool, chat model, short-term memory),
written exactly as a Flink Agents user writes them: nothing here knows about
durable_nb. Only the outside world is a stand-in: a deterministic chat model
instead of Ollama, and side effects (``compute_value`` ..., the LLM request, the
tool) that append one line each to a ledger file, so a test can count how often
each really happened, in this process or in a killed one.

``LEDGER["path"]`` is read when a side effect happens; functions of this module are
shipped to Flink workers by value, with this dict, so set it before the job starts.
``LEDGER["hold"]`` parks the process right after that side effect (to be SIGKILLed),
``LEDGER["die"]`` makes it exit at once, the first time (a Flink worker crash).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flink_agents.api.agents.agent import Agent
from flink_agents.api.chat_message import ChatMessage, MessageRole
from flink_agents.api.chat_models.chat_model import BaseChatModelConnection, BaseChatModelSetup
from flink_agents.api.decorators import action, chat_model_connection, chat_model_setup, prompt, tool
from flink_agents.api.events.chat_event import ChatRequestEvent, ChatResponseEvent
from flink_agents.api.events.event import Event, InputEvent, OutputEvent
from flink_agents.api.prompts.prompt import Prompt
from flink_agents.api.resource import ResourceDescriptor
from flink_agents.api.runner_context import RunnerContext
from flink_agents.api.tools.tool import ToolType
from pydantic import BaseModel

LEDGER: dict[str, Any] = {"path": None, "hold": None, "die": None}


def record(what: str) -> None:
    """A side effect: one line in the ledger (fsynced, so a SIGKILL right after keeps it)."""
    path = LEDGER["path"]
    if path is None:
        return
    with open(path, "a") as f:
        f.write(what + "\n")
        f.flush()
        os.fsync(f.fileno())
    if LEDGER["die"] == what and not Path(str(path) + ".died").exists():  # a Flink worker dies like kill -9
        Path(str(path) + ".died").write_text(f"died in pid {os.getpid()}")
        os._exit(17)
    hold = LEDGER["hold"]
    if hold is not None and hold == what:  # the kill test parks here until it is SIGKILLed
        Path(str(path) + ".held").write_text(what)
        time.sleep(600)


def ledger_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# ---------------------------------------------------------------- execute_test_agent.py


class ExecuteTestData(BaseModel):
    id: int
    value: int


class ExecuteTestOutput(BaseModel):
    id: int
    result: int


class ExecuteTestErrorOutput(BaseModel):
    id: int
    error: str


def compute_value(x: int, y: int) -> int:
    record(f"compute_value {x} {y}")
    return x + y


def multiply_value(x: int, y: int) -> int:
    record(f"multiply_value {x} {y}")
    return x * y


def raise_exception(message: str) -> None:
    record(f"raise_exception {message}")
    raise ValueError(message)


class ExecuteMultipleTestAgent(Agent):
    """Agent that makes multiple durable_execute() calls."""

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def process(event: Event, ctx: RunnerContext) -> None:
        input_data = ExecuteTestData.model_validate(InputEvent.from_event(event).input)
        result1 = ctx.durable_execute(compute_value, input_data.value, 5)
        result2 = ctx.durable_execute(multiply_value, result1, 2)
        ctx.send_event(OutputEvent(output=ExecuteTestOutput(id=input_data.id, result=result2)))


class ExecuteWithAsyncTestAgent(Agent):
    """Agent that uses both durable_execute() and durable_execute_async()."""

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    async def process(event: Event, ctx: RunnerContext) -> None:
        input_data = ExecuteTestData.model_validate(InputEvent.from_event(event).input)
        sync_result = ctx.durable_execute(compute_value, input_data.value, 5)
        async_result = await ctx.durable_execute_async(multiply_value, sync_result, 3)
        ctx.send_event(OutputEvent(output=ExecuteTestOutput(id=input_data.id, result=async_result)))


class ExecuteWithAsyncExceptionTestAgent(Agent):
    """Agent that tests exception handling in durable_execute_async()."""

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    async def process(event: Event, ctx: RunnerContext) -> None:
        input_data = ExecuteTestData.model_validate(InputEvent.from_event(event).input)
        try:
            await ctx.durable_execute_async(raise_exception, f"Test error: {input_data.value}")
        except ValueError as exc:
            ctx.send_event(OutputEvent(output=ExecuteTestErrorOutput(id=input_data.id, error=str(exc))))


# ---------------------------------------------------------------- a reconciler and a custom event


def charge_card(order_id: str, amount: int) -> str:
    record(f"charge {order_id} {amount}")
    return f"ch-{order_id}-{amount}"


def find_charge(order_id: str, amount: int) -> str:
    """The reconciler: look the charge up in the provider's ledger; charge now if it never happened."""
    for line in ledger_lines(Path(LEDGER["path"])):
        kind, oid, _ = line.split(" ", 2)
        if kind == "charge" and oid == order_id:
            record(f"reconciled {order_id} {amount}")
            return f"ch-{order_id}-{amount}"
    return charge_card(order_id, amount)


def send_receipt(order_id: str, charge: str) -> str:
    record(f"receipt {order_id} {charge}")
    return f"receipt for {charge}"


class OrderAgent(Agent):
    """Charges an order (reconciled from the provider's ledger after a crash), then sends a receipt.

    Two actions joined by a unified ``Event("charged")``, as Flink Agents routes them.
    """

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def charge(event: Event, ctx: RunnerContext) -> None:
        order = InputEvent.from_event(event).input
        charge_id = ctx.durable_execute(
            charge_card, order["id"], order["amount"], reconciler=lambda: find_charge(order["id"], order["amount"])
        )
        ctx.short_term_memory.set("order_id", order["id"])
        ctx.send_event(Event(type="charged", attributes={"charge": charge_id}))

    @action("charged")
    @staticmethod
    def receipt(event: Event, ctx: RunnerContext) -> None:
        order_id = ctx.short_term_memory.get("order_id")
        receipt = ctx.durable_execute(send_receipt, order_id, event.get_attr("charge"))
        ctx.send_event(OutputEvent(output={"order": order_id, "receipt": receipt}))


class AsyncOrderAgent(Agent):
    """``OrderAgent`` as async actions: the charge runs in a worker thread, with the same reconciler."""

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    async def charge(event: Event, ctx: RunnerContext) -> None:
        order = InputEvent.from_event(event).input
        charge_id = await ctx.durable_execute_async(
            charge_card, order["id"], order["amount"], reconciler=lambda: find_charge(order["id"], order["amount"])
        )
        ctx.short_term_memory.set("order_id", order["id"])
        ctx.send_event(Event(type="charged", attributes={"charge": charge_id}))

    @action("charged")
    @staticmethod
    async def receipt(event: Event, ctx: RunnerContext) -> None:
        order_id = ctx.short_term_memory.get("order_id")
        receipt = await ctx.durable_execute_async(send_receipt, order_id, event.get_attr("charge"))
        ctx.send_event(OutputEvent(output={"order": order_id, "receipt": receipt}))


# ---------------------------------------------------------------- short-term memory across a key's inputs


def note_visit(user: str, visits: int) -> str:
    record(f"visit {user} {visits}")
    return f"{user} visit {visits}"


class VisitCounterAgent(Agent):
    """Counts a user's inputs in short-term memory, which Flink Agents keeps per key from input to input,
    and journals each count with a durable call whose arguments depend on that memory."""

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def count(event: Event, ctx: RunnerContext) -> None:
        visit = InputEvent.from_event(event).input
        visits = (ctx.short_term_memory.get("visits") or 0) + 1
        ctx.short_term_memory.set("visits", visits)
        noted = ctx.durable_execute(note_visit, visit["user"], visits)
        ctx.send_event(OutputEvent(output={"page": visit["page"], "visits": visits, "noted": noted}))


VISITS = [{"user": u, "page": f"{u}-{i}"} for i, u in enumerate("aabababbaa")]
"""Ten inputs of two users (six of a, four of b), interleaved."""


# ---------------------------------------------------------------- quickstart: review_analysis_agent.py


class ProductReview(BaseModel):
    id: str
    review: str


class ProductReviewAnalysisRes(BaseModel):
    id: str
    score: int
    reasons: list[str]


review_analysis_prompt = Prompt.from_messages(
    messages=[
        ChatMessage(
            role=MessageRole.SYSTEM,
            content="Analyze the user review and product information to determine a satisfaction score (1-5) and "
            "potential reasons for dissatisfaction. If the review complains about shipping, first notify the "
            "shipping manager with the tool. Answer as JSON: {\"id\": ..., \"score\": ..., \"reasons\": [...]}",
        ),
        ChatMessage(role=MessageRole.USER, content='"input":\n{input}'),
    ],
)


def notify_shipping_manager(id: str, review: str) -> None:
    record(f"notify {id}")


class StandInChatConnection(BaseChatModelConnection):
    """A deterministic chat model: a tool call for shipping complaints, then a JSON verdict."""

    def chat(self, messages: Sequence[ChatMessage], tools: list | None = None, **kwargs: Any) -> ChatMessage:
        text = "\n".join(m.content or "" for m in messages if m.role == MessageRole.USER)
        product = re.search(r'"id": (\w+)', text)
        pid = product.group(1) if product else "?"
        record(f"llm {pid} {len(messages)}")
        shipping = "shipping" in text or "arrived" in text
        if shipping and not any(m.role == MessageRole.TOOL for m in messages):
            review = re.search(r'"review": (.*)', text)
            call = {
                "id": f"call-{pid}",
                "type": ToolType.FUNCTION,
                "function": {"name": "notify_shipping_manager",
                             "arguments": {"id": pid, "review": review.group(1).strip() if review else ""}},
            }
            return ChatMessage(role=MessageRole.ASSISTANT, content="", tool_calls=[call])
        score = 1 if ("broke" in text or shipping) else 5 if "love" in text else 3
        reasons = (["shipping damage"] if shipping else []) + (["poor quality"] if "broke" in text else [])
        return ChatMessage(role=MessageRole.ASSISTANT,
                           content=json.dumps({"id": pid, "score": score, "reasons": reasons}))


class StandInChatModel(BaseChatModelSetup):
    @property
    def model_kwargs(self) -> dict[str, Any]:
        return {}


FLAKY: dict[str, int] = {"failures": 0}
"""How many chat requests ``FlakyChatConnection`` still fails (Flink Agents' retry tests: "fail once")."""


class FlakyChatConnection(BaseChatModelConnection):
    """A chat model whose first ``FLAKY["failures"]`` requests fail with a transient error."""

    def chat(self, messages: Sequence[ChatMessage], tools: list | None = None, **kwargs: Any) -> ChatMessage:
        record(f"llm {messages[-1].content}")
        if FLAKY["failures"] > 0:
            FLAKY["failures"] -= 1
            raise RuntimeError("transient error")
        return ChatMessage(role=MessageRole.ASSISTANT, content=f"answer to {messages[-1].content}")


class RetryingChatAgent(Agent):
    """A chat request through the built-in chat-model action, as in Flink Agents' chat retry tests."""

    @chat_model_connection
    @staticmethod
    def flaky_connection() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=f"{FlakyChatConnection.__module__}.{FlakyChatConnection.__name__}")

    @chat_model_setup
    @staticmethod
    def flaky_model() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=f"{StandInChatModel.__module__}.{StandInChatModel.__name__}",
                                  connection="flaky_connection", model="flaky")

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def ask(event: Event, ctx: RunnerContext) -> None:
        question = InputEvent.from_event(event).input
        ctx.send_event(ChatRequestEvent(model="flaky_model",
                                        messages=[ChatMessage(role=MessageRole.USER, content=question)]))

    @action(ChatResponseEvent.EVENT_TYPE)
    @staticmethod
    def answer(event: Event, ctx: RunnerContext) -> None:
        response = ChatResponseEvent.from_event(event)
        ctx.send_event(OutputEvent(output={"content": response.response.content, "retries": response.retry_count}))


class ReviewAnalysisAgent(Agent):
    """Flink Agents' quickstart agent; only the chat model is the stand-in (was Ollama qwen3:8b)."""

    @prompt
    @staticmethod
    def review_analysis_prompt() -> Prompt:
        return review_analysis_prompt

    @tool
    @staticmethod
    def notify_shipping_manager(id: str, review: str) -> None:
        """Notify the shipping manager when product received a negative review due to shipping damage.

        Parameters
        ----------
        id : str
            The id of the product that received a negative review due to shipping damage
        review: str
            The negative review content
        """
        notify_shipping_manager(id=id, review=review)

    @chat_model_connection
    @staticmethod
    def stand_in_server() -> ResourceDescriptor:
        return ResourceDescriptor(clazz=f"{StandInChatConnection.__module__}.{StandInChatConnection.__name__}")

    @chat_model_setup
    @staticmethod
    def review_analysis_model() -> ResourceDescriptor:
        return ResourceDescriptor(
            clazz=f"{StandInChatModel.__module__}.{StandInChatModel.__name__}",
            connection="stand_in_server",
            model="stand-in",
            prompt="review_analysis_prompt",
            tools=["notify_shipping_manager"],
        )

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def process_input(event: Event, ctx: RunnerContext) -> None:
        input = ProductReview.model_validate(InputEvent.from_event(event).input)
        ctx.short_term_memory.set("id", input.id)
        content = f"""
            "id": {input.id},
            "review": {input.review}
        """
        msg = ChatMessage(role=MessageRole.USER)
        ctx.send_event(
            ChatRequestEvent(model="review_analysis_model", messages=[msg], prompt_args={"input": content})
        )

    @action(ChatResponseEvent.EVENT_TYPE)
    @staticmethod
    def process_chat_response(event: Event, ctx: RunnerContext) -> None:
        chat_response = ChatResponseEvent.from_event(event)
        json_content = json.loads(chat_response.response.content)
        ctx.send_event(
            OutputEvent(
                output=ProductReviewAnalysisRes(
                    id=ctx.short_term_memory.get("id"),
                    score=json_content["score"],
                    reasons=json_content["reasons"],
                )
            )
        )


def without_durability(agent: Agent, inputs: list[dict[str, Any]], config: dict | None = None,
                       key: str = "id") -> list[list[Any]]:
    """What Flink Agents' own (non-durable) local runner outputs for each input (keyed by ``input[key]``):
    the expected results."""
    from flink_agents.plan.configuration import AgentConfiguration
    from flink_agents.runtime.local_runner import LocalRunner

    runner = LocalRunner(agent, AgentConfiguration(config or {}))
    outputs: list[list[Any]] = []
    for item in inputs:
        before = len(runner.get_outputs())
        runner.run(key=item[key], value=item)
        outputs.append([next(iter(o.values())) for o in runner.get_outputs()[before:]])
    return outputs


REVIEWS = [
    {"id": "p1", "review": "I love these headphones, great sound."},
    {"id": "p2", "review": "It broke after one week."},
    {"id": "p3", "review": "The box arrived crushed, shipping was terrible."},
]
ORDERS = [{"id": "o1", "amount": 120}, {"id": "o2", "amount": 35}]
NUMBERS = [{"id": 1, "value": 3}, {"id": 2, "value": 10}]
