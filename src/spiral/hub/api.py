"""``spiral.hub.load`` and ``spiral.hub.export``: Hugging Face model folders in and out.

A model folder is ``config.json`` + ``model.safetensors`` (or shards and
``model.safetensors.index.json``) + optionally ``tokenizer.json``. :func:`resolve` takes a
local folder as is, or a hub id such as ``"openai-community/gpt2"``, which it fetches with
``huggingface_hub.snapshot_download`` (only those files: never ``*.bin`` pickles, never
remote code) into Hugging Face's own cache. Offline, a missing network is one clear
:class:`HubError`, as a missing corpus is a :class:`spiral.data.DataError`.
:func:`export` writes our GPT as a ``gpt2`` or ``llama`` folder that
``transformers.AutoModelForCausalLM.from_pretrained`` loads with the same logits.
:func:`is_hub_source` tells a Hugging Face model from a ``spiral train`` run directory, and
:func:`sample` continues a prompt with stage 6's sampler (``spiral sample`` with a hub id).
Chapter: stage 8 (running real pretrained weights); stage 14 for the Llama family.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from spiral.hub.config_map import family_of, from_gpt_config, to_gpt_config
from spiral.hub.errors import HubError
from spiral.hub.safetensors_io import INDEX, SINGLE, Checkpoint
from spiral.hub.tokenizer import HFTokenizer, load_hf_tokenizer
from spiral.hub.weights import export_tensors, load_weights
from spiral.models.gpt import GPT

__all__ = ["resolve", "is_hub_folder", "is_hub_source", "read_config", "load_model",
           "load_tokenizer", "load", "export", "sample", "FILES"]

FILES = ["config.json", SINGLE, INDEX, "model-*.safetensors", "tokenizer.json",
         "generation_config.json"]


def is_hub_folder(path: str | Path) -> bool:
    """True for a folder whose config.json names a Hugging Face ``model_type``."""
    cfg = Path(path) / "config.json"
    try:
        return cfg.is_file() and "model_type" in json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def resolve(source: str | Path, *, revision: str | None = None) -> Path:
    """A local folder, or a hub id downloaded (cached) through ``huggingface_hub``."""
    local = Path(source)
    if local.is_dir():
        return local
    name = str(source)
    if local.exists() or name.count("/") > 1 or name.startswith((".", "/", "~")):
        raise HubError(f"{source} is not a model folder (a folder with config.json and "
                       "model.safetensors) nor a hub id like 'openai-community/gpt2'")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise HubError(f"{name} is not a local folder, and downloading it needs the hub "
                       "extra: pip install 'spiral[hub]'") from None
    try:
        return Path(snapshot_download(name, revision=revision, allow_patterns=FILES))
    except Exception as err:  # network, authentication, unknown repository
        raise HubError(
            f"could not download {name} from the Hugging Face hub ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). If you are offline, fetch it "
            f"on a connected machine (`hf download {name}`) and pass the folder's path, or "
            "set HF_HUB_OFFLINE=1 to use Hugging Face's cache. (No local folder "
            f"{name!r} exists either.)") from err


def read_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise HubError(f"{path}: no readable config.json ({err})") from None
    if not isinstance(cfg, dict):
        raise HubError(f"{path}: config.json is not a JSON object")
    return cfg


class _NoDraws:
    """The generator for a model whose every weight is overwritten next: each "draw" is a
    zero-strided view of one 0.0 (no memory), so building the model holds one copy of it
    plus at most one tensor in flight -- not a random draw in float64 on top."""

    def normal(self, loc: float = 0.0, scale: float = 1.0, size: Any = None) -> np.ndarray:
        return np.broadcast_to(np.float64(0.0), size)

    def uniform(self, low: float = 0.0, high: float = 1.0, size: Any = None) -> np.ndarray:
        return np.broadcast_to(np.float64(0.0), size)

    def standard_normal(self, size: Any = None) -> np.ndarray:
        return np.broadcast_to(np.float64(0.0), size)


def load_model(source: str | Path) -> GPT:
    """A GPT-2 or Llama checkpoint as our :class:`GPT` (float32, eval mode)."""
    folder = resolve(source)
    hf = read_config(folder)
    family = family_of(hf)
    config = to_gpt_config(hf)
    ckpt = Checkpoint(folder)  # validates every header before any weight is allocated
    model = GPT(config, rng=_NoDraws())  # type: ignore[arg-type]
    for module in model.modules():  # dropout's generator (p = 0 here) becomes a real one
        if isinstance(getattr(module, "rng", None), _NoDraws):
            module.rng = np.random.default_rng(0)
    load_weights(model, ckpt, family)
    model.eval()
    return model


def load_tokenizer(source: str | Path) -> HFTokenizer:
    folder = resolve(source)
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise HubError(f"{folder} has no tokenizer.json (spiral.hub reads only that format)")
    return load_hf_tokenizer(path)


def load(source: str | Path) -> tuple[GPT, HFTokenizer | None]:
    """``model, tokenizer = spiral.hub.load("openai-community/gpt2")`` (tokenizer None if
    the folder has no tokenizer.json)."""
    folder = resolve(source)
    model = load_model(folder)
    tok = load_tokenizer(folder) if (folder / "tokenizer.json").is_file() else None
    return model, tok


def export(model: GPT, folder: str | Path, family: str = "gpt2", *,
           tokenizer_json: str | Path | None = None, max_shard_bytes: int | None = None
           ) -> Path:
    """Write ``model`` as a Hugging Face ``family`` folder ("gpt2" or "llama"); shards of at
    most ``max_shard_bytes`` (plus the index) when given. Returns the folder."""
    from safetensors.numpy import save_file

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    hf = from_gpt_config(model.config, family)
    tensors = export_tensors(model, family)
    meta = {"format": "pt"}  # transformers refuses safetensors files without it
    total = sum(t.nbytes for t in tensors.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        save_file(tensors, str(out / SINGLE), metadata=meta)
    else:
        shards: list[dict[str, np.ndarray]] = [{}]
        size = 0
        for name, t in tensors.items():
            if shards[-1] and size + t.nbytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][name] = t
            size += t.nbytes
        n = len(shards)
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            fname = f"model-{i:05d}-of-{n:05d}.safetensors"
            save_file(shard, str(out / fname), metadata=meta)
            weight_map.update({k: fname for k in shard})
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out / INDEX).write_text(json.dumps(index, indent=2), encoding="utf-8")
    (out / "config.json").write_text(json.dumps(hf, indent=2), encoding="utf-8")
    if tokenizer_json is not None:
        (out / "tokenizer.json").write_bytes(Path(tokenizer_json).read_bytes())
    return out


# ------------------------------------------------ spiral sample with a hub id or folder
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def is_hub_source(source: str | Path) -> bool:
    """A Hugging Face model folder, or an ``org/name`` string that is not a local path."""
    p = Path(source)
    if p.exists():
        return p.is_dir() and is_hub_folder(p)
    return HUB_ID.fullmatch(str(source)) is not None


def sample(source: str | Path, prompt: str = "", *, max_new_tokens: int = 50, seed: int = 0,
           temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None) -> str:
    """The prompt and its continuation by the model at ``source`` (special tokens in the
    prompt act as control tokens, as in transformers)."""
    from spiral.generate import check_sampling_options, generate

    check_sampling_options(temperature, top_k, top_p)
    model, tok = load(source)
    if tok is None:
        raise HubError(f"{source} has no tokenizer.json, so it cannot turn text into ids")
    start = tok.encode(prompt, allowed_special="all")
    if not start:
        if not tok.special_tokens:
            raise HubError(f"{source}: an empty prompt needs a special start token, and this "
                           "tokenizer has none; pass --prompt TEXT")
        start = [next(iter(tok.special_tokens.values()))]
    out = generate(model, start, max_new_tokens, np.random.default_rng(seed),
                   temperature=temperature, top_k=top_k, top_p=top_p)
    return prompt + tok.decode(out)
