"""STAND-INS for TensorRT-LLM (`fake_trtllm`): a fake `tensorrt_llm` package. This is NOT TensorRT-LLM.

TensorRT-LLM cannot be installed on the CPU machines these tests run on (PyPI holds a stub; the real package needs
CUDA), so the adapter is tested against these stand-ins, written from TensorRT-LLM's interface as documented in
/work/shared/research/engines.md section 3 and read from its sources (drafter.py, ngram.py, resource_manager.py,
llm_request.py, llm_args.py, serve.py; no code copied). Each stand-in mimics only what the adapter touches:

- `tensorrt_llm._torch.speculative.drafter.Drafter`: the ABC, in three historical `__init__` signatures
  (`DRAFTER_VARIANTS`), with the `@final` helpers the executor calls (`pad_draft_tokens_for_cuda_graph`,
  `should_use_spec_decode`) reading the attribute each version stored;
- `tensorrt_llm._torch.pyexecutor.llm_request`: `LlmRequestState` (real values) and `FakeLlmRequest` with the
  `py_*` fields, `get_tokens(beam)`, `state`, `is_dummy`, `is_finished`;
- `tensorrt_llm._torch.pyexecutor.scheduler.ScheduledRequests`;
- `tensorrt_llm._torch.pyexecutor.resource_manager`: `BaseResourceManager` (ABC), `ResourceManagerType`,
  `ResourceManager` (the executor's aggregate, calling every manager);
- `tensorrt_llm.llmapi.llm_args.UserProvidedDecodingConfig` (refuses unknown fields like the real pydantic
  model; sets max_total_draft_tokens = max_draft_len);
- `tensorrt_llm.LLM` and `tensorrt_llm.serve.openai_server.OpenAIServer`, which only record how they were called;
- `FakeExecutor`: PyExecutor's per-step call order with TorchSampler's greedy token-match verification against a
  fixed target sequence per request (the target model's greedy answer).

Whatever passes here is unverified against a real TensorRT-LLM until run on a GPU machine
(scripts/gpu/trtllm_toolspec_smoke.py).
"""

from __future__ import annotations

import enum
import random
import sys
import types
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, ClassVar, final

FAKE_VERSION = "0.0.0+fake-trtllm-stand-in"


# -- llm_request ---------------------------------------------------------------------------------------------
class LlmRequestState(enum.Enum):
    """Stand-in of tensorrt_llm.bindings.LlmRequestState (the real enum's members and values)."""

    UNKNOWN = 0
    ENCODER_INIT = 1
    CONTEXT_INIT = 2
    GENERATION_IN_PROGRESS = 3
    GENERATION_TO_COMPLETE = 4
    GENERATION_COMPLETE = 5


class FakeLlmRequest:
    """Stand-in of tensorrt_llm._torch.pyexecutor.llm_request.LlmRequest: the fields drafters read and write."""

    def __init__(
        self,
        request_id: int,
        prompt: Sequence[int],
        max_new_tokens: int,
        *,
        end_id: int | None = None,
        client_id: Any = None,
    ) -> None:
        self.request_id = request_id
        self.py_request_id = request_id
        self.py_client_id = client_id
        self._tokens = [int(t) for t in prompt]
        self.py_prompt_len = self.py_orig_prompt_len = len(self._tokens)
        self.py_max_new_tokens = max_new_tokens
        self.py_end_id = end_id
        self.py_batch_idx: int | None = None
        self.state = LlmRequestState.CONTEXT_INIT
        self.py_draft_tokens: list[int] = []
        self.py_draft_logits = None
        self.py_num_accepted_draft_tokens = 0
        self.py_rewind_len = 0
        self.is_attention_dp_dummy = False
        self.is_cuda_graph_dummy = False
        self.is_dummy_request = False

    def get_tokens(self, beam: int) -> list[int]:
        assert beam == 0, "the stand-in has one beam"
        return list(self._tokens)

    def add_new_token(self, token: int, beam: int) -> None:
        assert beam == 0
        self._tokens.append(int(token))

    @property
    def output(self) -> list[int]:
        return self._tokens[self.py_orig_prompt_len :]

    @property
    def is_dummy(self) -> bool:
        return self.is_attention_dp_dummy or self.is_cuda_graph_dummy or self.is_dummy_request

    @property
    def is_finished(self) -> bool:
        return self.state == LlmRequestState.GENERATION_COMPLETE


class ScheduledRequests:
    """Stand-in of tensorrt_llm._torch.pyexecutor.scheduler.ScheduledRequests."""

    def __init__(self, context_requests: Sequence[Any] = (), generation_requests: Sequence[Any] = ()) -> None:
        self.context_requests = list(context_requests)
        self.generation_requests = list(generation_requests)

    def all_requests(self) -> list[Any]:
        return self.context_requests + self.generation_requests

    @property
    def batch_size(self) -> int:
        return len(self.context_requests) + len(self.generation_requests)


# -- Drafter, in the three __init__ signatures TensorRT-LLM has had ------------------------------------------------
class _DrafterHelpers(ABC):
    """What every Drafter version has: the abstract method and the executor-facing helpers."""

    @abstractmethod
    def prepare_draft_tokens(self, scheduled_requests: ScheduledRequests, resource_manager: Any = None) -> None:
        raise NotImplementedError

    def _static_draft_len(self) -> int:
        raise NotImplementedError

    @final
    def pad_draft_tokens_for_cuda_graph(self, scheduled_requests: ScheduledRequests) -> None:
        for request in scheduled_requests.generation_requests:
            request.py_draft_tokens.extend(0 for _ in range(self._static_draft_len() - len(request.py_draft_tokens)))

    def run_drafter_post(self, scheduled_requests: Any, resource_manager: Any = None, is_warmup: bool = False):
        return None


class DrafterMaxConcurrencyOnly(_DrafterHelpers):
    """Drafter of the ≈1.0 line: `__init__(max_concurrency=None)`; the subclass stores max_draft_len itself."""

    def __init__(self, max_concurrency: int | None = None) -> None:
        self.init_kwargs = {"max_concurrency": max_concurrency}
        self.max_concurrency = max_concurrency

    def _static_draft_len(self) -> int:
        return self.max_draft_len  # type: ignore[attr-defined]

    @final
    def should_use_spec_decode(self, requests: Sequence[Any]) -> bool:
        return self.max_concurrency is None or len(requests) <= self.max_concurrency


class DrafterMaxDraftTokens(_DrafterHelpers):
    """Drafter of the next line: `__init__(max_draft_tokens, max_concurrency=None, draft_len_schedule=None)`."""

    def __init__(self, max_draft_tokens: int, max_concurrency: int | None = None, draft_len_schedule=None) -> None:
        self.init_kwargs = {
            "max_draft_tokens": max_draft_tokens,
            "max_concurrency": max_concurrency,
            "draft_len_schedule": draft_len_schedule,
        }
        self.max_draft_tokens = max_draft_tokens
        self.max_concurrency = max_concurrency
        self.draft_len_schedule = draft_len_schedule

    def _static_draft_len(self) -> int:
        return self.max_draft_tokens

    @final
    def should_use_spec_decode(self, requests, max_batch_size, max_num_tokens, max_draft_len) -> bool:
        return self.max_concurrency is None or min(len(requests), max_batch_size) <= self.max_concurrency


class DrafterMaxDraftLen(_DrafterHelpers):
    """Drafter of the 1.2 line: `__init__(max_draft_len=None, max_total_draft_tokens=None, max_concurrency=None,
    draft_len_schedule=None)`, padding to the static max total draft tokens."""

    def __init__(
        self,
        max_draft_len: int | None = None,
        max_total_draft_tokens: int | None = None,
        max_concurrency: int | None = None,
        draft_len_schedule: dict[int, int] | None = None,
    ) -> None:
        self.init_kwargs = {
            "max_draft_len": max_draft_len,
            "max_total_draft_tokens": max_total_draft_tokens,
            "max_concurrency": max_concurrency,
            "draft_len_schedule": draft_len_schedule,
        }
        self.max_draft_len = max_draft_len
        self.max_total_draft_tokens = max_total_draft_tokens
        self._static_max_total_draft_tokens = max_total_draft_tokens
        self.max_concurrency = max_concurrency
        self.draft_len_schedule = draft_len_schedule

    def _static_draft_len(self) -> int:
        return self._static_max_total_draft_tokens  # type: ignore[return-value]

    @final
    def should_use_spec_decode(self, requests, max_batch_size, max_num_tokens, max_total_draft_tokens) -> bool:
        if self.max_concurrency is None:
            return True
        cap = max_num_tokens // (1 + max_total_draft_tokens)
        return min(len(requests), max_batch_size, cap) <= self.max_concurrency

    def update_max_total_draft_tokens(self, new_max_total_draft_tokens: int) -> None:
        self.max_total_draft_tokens = new_max_total_draft_tokens
        self.max_draft_len = new_max_total_draft_tokens


DRAFTER_VARIANTS: dict[str, type] = {
    "max_concurrency_only": DrafterMaxConcurrencyOnly,
    "max_draft_tokens": DrafterMaxDraftTokens,
    "max_draft_len": DrafterMaxDraftLen,
}


# -- resource managers ------------------------------------------------------------------------------------------
class BaseResourceManager(ABC):
    """Stand-in of tensorrt_llm._torch.pyexecutor.resource_manager.BaseResourceManager."""

    @abstractmethod
    def get_max_resource_count(self) -> int:
        raise NotImplementedError

    @abstractmethod
    def get_needed_resource_to_completion(self, request: Any) -> int:
        raise NotImplementedError

    def add_dummy_requests(self, request_ids: list[int]) -> None:
        return None

    def prepare_resources(self, scheduled_batch: ScheduledRequests) -> None:
        return None

    def update_resources(self, scheduled_batch: ScheduledRequests) -> None:
        return None

    def free_resources(self, request: Any) -> None:
        return None

    def shutdown(self) -> None:
        return None


class ResourceManagerType(enum.Enum):
    KV_CACHE_MANAGER = "KV_CACHE_MANAGER"
    SEQ_SLOT_MANAGER = "SEQ_SLOT_MANAGER"
    SPEC_RESOURCE_MANAGER = "SPEC_RESOURCE_MANAGER"


class ResourceManager:
    """Stand-in of the executor's aggregate ResourceManager: forwards each call to every manager it holds."""

    def __init__(self, resource_managers: dict[ResourceManagerType, Any]) -> None:
        self.resource_managers = OrderedDict(resource_managers)

    def get_resource_manager(self, kind: ResourceManagerType) -> Any:
        return self.resource_managers.get(kind)

    def prepare_resources(self, batch: ScheduledRequests) -> None:
        for manager in self.resource_managers.values():
            manager.prepare_resources(batch)

    def update_resources(self, batch: ScheduledRequests) -> None:
        for manager in self.resource_managers.values():
            manager.update_resources(batch)

    def free_resources(self, request: Any) -> None:
        for manager in reversed(self.resource_managers.values()):
            manager.free_resources(request)

    def shutdown(self) -> None:
        for manager in self.resource_managers.values():
            manager.shutdown()


# -- LLM API ------------------------------------------------------------------------------------------------------
class UserProvidedDecodingConfig:
    """Stand-in of tensorrt_llm.llmapi.llm_args.UserProvidedDecodingConfig (a strict pydantic model there)."""

    decoding_type = "User_Provided"
    FIELDS = (
        "max_draft_len",
        "max_total_draft_tokens",
        "speculative_model",
        "max_concurrency",
        "draft_len_schedule",
        "load_format",
        "acceptance_window",
        "acceptance_length_threshold",
        "drafter",
        "resource_manager",
    )

    def __init__(self, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(self.FIELDS))
        if unknown:
            raise ValueError(f"UserProvidedDecodingConfig: extra inputs are not permitted: {unknown}")
        if "drafter" not in kwargs:
            raise ValueError("UserProvidedDecodingConfig: field required: drafter")
        for name in self.FIELDS:
            setattr(self, name, kwargs.get(name))
        self.max_total_draft_tokens = self.max_draft_len  # linear drafts only, as the real validator sets


class FakeLLM:
    """Stand-in of tensorrt_llm.LLM: records its arguments (there is no model here)."""

    instances: ClassVar[list[FakeLLM]] = []

    def __init__(self, model: str, **kwargs: Any) -> None:
        self.model, self.kwargs, self.shut_down = model, kwargs, False
        FakeLLM.instances.append(self)

    def shutdown(self) -> None:
        self.shut_down = True


class FakeOpenAIServer:
    """Stand-in of tensorrt_llm.serve.openai_server.OpenAIServer (1.x keyword names); records what it served."""

    instances: ClassVar[list[FakeOpenAIServer]] = []

    def __init__(self, llm: Any, model: str, tool_parser: str | None = None, server_role: Any = None) -> None:
        self.llm, self.model, self.tool_parser, self.served = llm, model, tool_parser, None
        FakeOpenAIServer.instances.append(self)

    async def __call__(self, host: str, port: int, sockets: Any = None) -> None:
        self.served = (host, port)


# -- installing the fake package ------------------------------------------------------------------------------------
def _module(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name, f"STAND-IN of {name} (fake_trtllm), not TensorRT-LLM.")
    module.__path__ = []  # a package, so that submodules resolve
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


def install(monkeypatch: Any, variant: str = "max_draft_len") -> dict[str, types.ModuleType]:
    """Put the fake `tensorrt_llm` into sys.modules (undone by monkeypatch); `variant` picks Drafter.__init__."""
    FakeLLM.instances.clear()
    FakeOpenAIServer.instances.clear()
    modules = {
        "tensorrt_llm": _module("tensorrt_llm", __version__=FAKE_VERSION, LLM=FakeLLM),
        "tensorrt_llm._torch": _module("tensorrt_llm._torch"),
        "tensorrt_llm._torch.speculative": _module("tensorrt_llm._torch.speculative"),
        "tensorrt_llm._torch.speculative.drafter": _module(
            "tensorrt_llm._torch.speculative.drafter", Drafter=DRAFTER_VARIANTS[variant]
        ),
        "tensorrt_llm._torch.pyexecutor": _module("tensorrt_llm._torch.pyexecutor"),
        "tensorrt_llm._torch.pyexecutor.llm_request": _module(
            "tensorrt_llm._torch.pyexecutor.llm_request", LlmRequest=FakeLlmRequest, LlmRequestState=LlmRequestState
        ),
        "tensorrt_llm._torch.pyexecutor.scheduler": _module(
            "tensorrt_llm._torch.pyexecutor.scheduler", ScheduledRequests=ScheduledRequests
        ),
        "tensorrt_llm._torch.pyexecutor.resource_manager": _module(
            "tensorrt_llm._torch.pyexecutor.resource_manager",
            BaseResourceManager=BaseResourceManager,
            ResourceManager=ResourceManager,
            ResourceManagerType=ResourceManagerType,
        ),
        "tensorrt_llm.llmapi": _module("tensorrt_llm.llmapi", UserProvidedDecodingConfig=UserProvidedDecodingConfig),
        "tensorrt_llm.llmapi.llm_args": _module(
            "tensorrt_llm.llmapi.llm_args", UserProvidedDecodingConfig=UserProvidedDecodingConfig
        ),
        "tensorrt_llm.serve": _module("tensorrt_llm.serve", OpenAIServer=FakeOpenAIServer),
        "tensorrt_llm.serve.openai_server": _module("tensorrt_llm.serve.openai_server", OpenAIServer=FakeOpenAIServer),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(modules[parent], child, module)
    return modules


# -- the executor loop ----------------------------------------------------------------------------------------------
class FakeExecutor:
    """Stand-in of PyExecutor's step (py_executor.py) with TorchSampler's greedy draft verification.

    Per step, in the real order: prepare_resources → drafter.prepare_draft_tokens(batch, resource_manager) →
    drafter.pad_draft_tokens_for_cuda_graph(batch) → forward + sample → update_resources → free_resources for
    finished requests. "Forward + sample" is a fixed greedy target per request: a context request gets the
    target's first token; a generation request accepts the longest prefix of its (padded) drafts equal to the
    target's next tokens, then gets the target's token after them (TorchSampler's `_process_draft_tokens_greedy`),
    and `py_num_accepted_draft_tokens` / `py_rewind_len` are set. Generation rows are shuffled every step.
    """

    def __init__(self, spec_config: Any, targets: dict[int, Sequence[int]], *, seed: int = 0) -> None:
        self.drafter = spec_config.drafter
        self.resource_manager = ResourceManager(
            {ResourceManagerType.SPEC_RESOURCE_MANAGER: spec_config.resource_manager}
        )
        self.targets = {rid: [int(t) for t in target] for rid, target in targets.items()}
        self.active: list[FakeLlmRequest] = []
        self.finished: list[FakeLlmRequest] = []
        self.steps = 0
        self.accepted = 0  # draft tokens the stand-in sampler accepted, all requests and steps
        self.drafts: list[tuple[int, list[int], int]] = []  # (request id, drafts before padding, room left)
        self._rng = random.Random(seed)

    def add(self, request: FakeLlmRequest) -> None:
        self.active.append(request)

    def step(self) -> None:
        context = [r for r in self.active if r.state == LlmRequestState.CONTEXT_INIT]
        generation = [r for r in self.active if r.state == LlmRequestState.GENERATION_IN_PROGRESS]
        self._rng.shuffle(generation)
        for row, request in enumerate(generation):
            request.py_batch_idx = row
        batch = ScheduledRequests(context, generation)
        self.resource_manager.prepare_resources(batch)
        if generation:
            self.drafter.prepare_draft_tokens(batch, self.resource_manager)
            for request in generation:
                room = request.py_orig_prompt_len + request.py_max_new_tokens - len(request.get_tokens(0)) - 1
                self.drafts.append((request.request_id, list(request.py_draft_tokens), room))
            self.drafter.pad_draft_tokens_for_cuda_graph(batch)
        for request in context:
            request.state = LlmRequestState.GENERATION_IN_PROGRESS
            self._commit(request, self.targets[request.request_id][:1])
        for request in generation:
            self._verify(request)
        self.resource_manager.update_resources(batch)
        for request in [r for r in self.active if r.state == LlmRequestState.GENERATION_COMPLETE]:
            self.resource_manager.free_resources(request)
            self.active.remove(request)
            self.finished.append(request)
        self.steps += 1

    def run(self, max_steps: int = 10_000) -> None:
        while self.active:
            assert self.steps < max_steps, "the stand-in executor did not finish"
            self.step()

    def _verify(self, request: FakeLlmRequest) -> None:
        target = self.targets[request.request_id]
        position = len(request.output)
        drafts = list(request.py_draft_tokens)
        accepted = 0
        while (
            accepted < len(drafts)
            and position + accepted < len(target)
            and drafts[accepted] == target[position + accepted]
        ):
            accepted += 1
        request.py_num_accepted_draft_tokens = accepted
        self.accepted += accepted
        request.py_rewind_len = len(drafts) - accepted
        self._commit(request, target[position : position + accepted + 1])

    @staticmethod
    def _commit(request: FakeLlmRequest, tokens: Sequence[int]) -> None:
        for token in tokens:
            request.add_new_token(token, 0)
            if token == request.py_end_id or len(request.output) >= request.py_max_new_tokens:
                request.state = LlmRequestState.GENERATION_COMPLETE
                return
