"""Models: the embedded tiny default, seeded architecture presets, and local HF folders.

`--model tiny` builds a Qwen2-architecture model from `data/tiny-qwen2.json` with seeded
weights and an offline tokenizer, once, into a cache folder; `random:<preset>` gives realistic
shapes with seeded weights in memory (no download, no disk); anything else is a local folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fpmon.errors import FpmonError, ModelError
from fpmon.models.weights import digest_files, seeded_init_
from fpmon.progress import Progress

DATA = Path(__file__).parent / "data"
BUILDER_VERSION = 1
TINY_SEED = 20261123
PRESET_SEED = 1234

PRESETS: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
    ),
    "qwen2.5-1.5b": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
    ),
    "qwen2.5-7b": dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        tie_word_embeddings=False,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
    ),
}

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class LoadedModel:
    name: str
    model: Any  # a transformers PreTrainedModel
    tokenizer: Any
    weights_digest: str
    folder: Path | None  # where the weights live on disk (vLLM loads from here)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def max_positions(self) -> int:
        return int(self.model.config.max_position_embeddings)


def cache_root() -> Path:
    return Path(os.environ.get("FPMON_CACHE", Path.home() / ".cache" / "fpmon"))


def check_device(device: str) -> None:
    if device == "cpu":
        return
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise FpmonError(
                f"--device {device} asked, but this machine has no CUDA device torch can use; "
                "use --device cpu, or run on a GPU host"
            )
        idx = device.partition(":")[2]
        if idx and (not idx.isdigit() or int(idx) >= torch.cuda.device_count()):
            raise FpmonError(
                f"--device {device}: this machine has {torch.cuda.device_count()} CUDA "
                f"device(s), numbered from 0"
            )
        return
    raise FpmonError(f"unknown device {device!r}: use cpu, cuda or cuda:N")


def tiny_folder(progress: Progress | None = None) -> Path:
    """Build the tiny model once (seconds) and return its folder; safe under concurrency."""
    import hashlib

    config = (DATA / "tiny-qwen2.json").read_bytes()
    corpus = (DATA / "corpus.txt").read_bytes()
    key = hashlib.sha256(config + corpus + str(BUILDER_VERSION).encode()).hexdigest()[:12]
    folder = cache_root() / "models" / f"tiny-{key}"
    if (folder / "fpmon.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Build in a private folder and rename: agents started together must not see half a model.
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=folder.parent))
    try:
        _build_tiny(tmp, progress)
        # If another process finished first, its folder is identical: keep it.
        with contextlib.suppress(OSError):
            tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _build_tiny(folder: Path, progress: Progress | None) -> None:
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from fpmon.models.tokenizer import train_tokenizer, write_tokenizer

    cfg = json.loads((DATA / "tiny-qwen2.json").read_text())
    tok = train_tokenizer(DATA / "corpus.txt", cfg["vocab_size"])
    write_tokenizer(tok, folder)
    config = Qwen2Config(**cfg)
    model = Qwen2ForCausalLM(config)
    digest = seeded_init_(model, TINY_SEED, progress)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(folder / "model.safetensors"),
        metadata={"format": "pt"},
    )
    config.save_pretrained(folder)
    (folder / "fpmon.json").write_text(
        json.dumps({"name": "tiny", "weights_digest": digest, "seed": TINY_SEED})
    )


def _check_folder(folder: Path) -> None:
    if not folder.exists():
        raise ModelError(
            f"model folder {folder} does not exist; pass --model tiny, --model random:<preset> "
            f"({', '.join(PRESETS)}) or a local Hugging Face model folder"
        )
    if not folder.is_dir():
        raise ModelError(
            f"{folder} is a file, not a model folder: pass the folder holding config.json"
        )
    cfg = folder / "config.json"
    if not cfg.exists():
        raise ModelError(f"{folder} has no config.json: is it a Hugging Face model folder?")
    try:
        json.loads(cfg.read_text())
    except json.JSONDecodeError as e:
        raise ModelError(f"{cfg} is not valid JSON ({e}); restore the model folder") from e
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("pytorch_model*.bin")):
        raise ModelError(f"{folder} has no weights (*.safetensors or pytorch_model*.bin)")
    if not (folder / "tokenizer.json").exists() and not (folder / "tokenizer_config.json").exists():
        raise ModelError(f"{folder} has no tokenizer (tokenizer.json or tokenizer_config.json)")


def _quiet_transformers() -> None:
    # Its per-tensor loading bar and advisory warnings drown fpmon's own progress.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _tiny_tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_folder())


def load_model(
    spec: str,
    dtype: str = "bfloat16",
    attn_impl: str = "sdpa",
    device: str = "cpu",
    progress: Progress | None = None,
) -> LoadedModel:
    check_device(device)
    _quiet_transformers()
    if dtype not in _DTYPES:
        raise FpmonError(f"unknown dtype {dtype!r}: use one of {', '.join(_DTYPES)}")
    torch_dtype = _DTYPES[dtype]
    if spec.startswith("random:"):
        return _load_preset(spec, torch_dtype, attn_impl, device, progress)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if spec == "tiny":
        folder = tiny_folder(progress)
        digest = json.loads((folder / "fpmon.json").read_text())["weights_digest"]
        name = "tiny"
    else:
        folder = Path(spec).expanduser()
        _check_folder(folder)
        name = folder.name
        weights = list(folder.glob("*.safetensors")) or list(folder.glob("pytorch_model*.bin"))
        digest = digest_files(weights)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch_dtype, attn_implementation=attn_impl
        )
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ModelError(f"cannot load model from {folder}: {str(e).splitlines()[0]}") from e
    model.to(device).eval()  # type: ignore[arg-type]  # @wraps'd by HF: typed unbound (self first)
    return LoadedModel(name, model, tokenizer, digest, folder)


def _load_preset(
    spec: str, torch_dtype: torch.dtype, attn_impl: str, device: str, progress: Progress | None
) -> LoadedModel:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    preset = spec.removeprefix("random:")
    if preset not in PRESETS:
        raise ModelError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    base = json.loads((DATA / "tiny-qwen2.json").read_text())
    cfg = {**base, **PRESETS[preset]}
    cfg.pop("head_dim", None)
    config = Qwen2Config(**cfg)
    config._attn_implementation = attn_impl
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    model.to_empty(device="cpu")
    # to_empty leaves non-persistent buffers (RoPE frequencies) uninitialised: rebuild them.
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
    model.tie_weights()
    digest = seeded_init_(model, PRESET_SEED, progress)
    model.to(  # type: ignore[call-arg]  # @wraps'd by HF: typed unbound (self first)
        dtype=torch_dtype, device=device
    ).eval()
    return LoadedModel(spec, model, _tiny_tokenizer(), digest, None)
