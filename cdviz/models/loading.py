"""Load HF checkpoints through their adapter, and pair a teacher with a student.

    ADAPTERS = {hf_class_name: AdapterClass}   one explicit dict; register_adapter() adds one
    load_model(DIR or "org/name[@rev]") -> adapter   config.json "architectures"[0] picks the adapter
    load_model(..., dtype="auto", device_map="auto")  the checkpoint's dtype, spread over the GPUs
    load_pair(TEACHER, STUDENT) -> (t, s, report)  checks what distillation needs to match

A model is a local directory or a hub id, resolved by cdviz.models.hub (huggingface_hub, the HF
cache, HF_HUB_OFFLINE, HF_TOKEN); ``adapter.origin`` is that ModelRef (id, commit, sha256 of the
weight index), ``adapter.source`` the local directory. Weights load from safetensors (one file or
shards with their index); ``.bin`` pickles only when asked. ``trust_remote_code`` is off unless
the caller asks for it.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

from cdviz.models.base import Adapter, AdapterError
from cdviz.models.hub import ModelRef, resolve_model
from cdviz.models.gemma3 import Gemma3Adapter
from cdviz.models.generic import ARCH as GENERIC, GenericAdapter, parse_grid
from cdviz.models.idefics3 import Idefics3Adapter, SmolVLMAdapter
from cdviz.models.internvl import InternVLAdapter
from cdviz.models.llava import LlavaAdapter
from cdviz.models.llava_next import LlavaNextAdapter, LlavaOnevisionAdapter
from cdviz.models.mistral3 import Mistral3Adapter
from cdviz.models.paligemma import PaliGemmaAdapter
from cdviz.models.qwen2vl import Qwen2_5_VLAdapter, Qwen2VLAdapter
from cdviz.models.qwen3vl import Qwen3VLAdapter, Qwen3VLMoeAdapter
from cdviz.models.taf import attach_saved_taf

ADAPTERS: dict[str, type[Adapter]] = {
    LlavaAdapter.arch: LlavaAdapter,
    Qwen2VLAdapter.arch: Qwen2VLAdapter,
    Qwen2_5_VLAdapter.arch: Qwen2_5_VLAdapter,
    PaliGemmaAdapter.arch: PaliGemmaAdapter,
    # families whose image may come in several pieces (see cdviz.models.base.Piece)
    Qwen3VLAdapter.arch: Qwen3VLAdapter,
    Qwen3VLMoeAdapter.arch: Qwen3VLMoeAdapter,
    LlavaNextAdapter.arch: LlavaNextAdapter,
    LlavaOnevisionAdapter.arch: LlavaOnevisionAdapter,
    Gemma3Adapter.arch: Gemma3Adapter,
    Idefics3Adapter.arch: Idefics3Adapter,
    SmolVLMAdapter.arch: SmolVLMAdapter,
    InternVLAdapter.arch: InternVLAdapter,
    Mistral3Adapter.arch: Mistral3Adapter,
}

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
#: dtype="auto": the checkpoint's own (config.json "dtype" / "torch_dtype").
AUTO = "auto"


def parse_dtype(dtype: str | torch.dtype) -> str | torch.dtype:
    """A dtype name (float32, bf16, ..., or auto) -> torch dtype, or "auto"."""
    if isinstance(dtype, torch.dtype) or dtype == AUTO:
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise AdapterError(f"--dtype {dtype!r}: use auto (the checkpoint's own), float32, bfloat16 or "
                           "float16") from None


def register_adapter(cls: type[Adapter], overwrite: bool = False) -> None:
    if cls.arch in ADAPTERS and not overwrite:
        raise KeyError(f"an adapter for {cls.arch} is registered already; pass overwrite=True to replace it")
    ADAPTERS[cls.arch] = cls


def list_adapters() -> list[str]:
    return sorted(ADAPTERS)


def read_architecture(path: str | Path, *, adapter: str | None = None) -> str:
    """The model class config.json names; refused when cdviz has no adapter for it, unless
    ``adapter`` is "generic" (the fallback adapter then serves any class)."""
    path = Path(path)
    cfg = path / "config.json"
    if not path.is_dir():
        raise AdapterError(f"{path}: not a directory; pass a local HF model directory or a hub id "
                           "(load_model resolves ids)")
    if not cfg.is_file():
        raise AdapterError(f"{path}: no config.json; this is not an HF model directory (save one with save_pretrained)")
    try:
        archs = json.loads(cfg.read_text()).get("architectures") or []
    except json.JSONDecodeError as e:
        raise AdapterError(f"{cfg}:{e.lineno}: malformed JSON ({e.msg})") from e
    if not archs:
        raise AdapterError(f"{cfg}: no 'architectures' entry; add the model class name, e.g. {list_adapters()[0]!r}")
    arch = archs[0]
    if arch not in ADAPTERS and adapter != GENERIC:
        raise AdapterError(
            f"{path}: architecture {arch!r} has no cdviz adapter; supported: {', '.join(list_adapters())}. "
            f"A model with a single image token and a standard decoder-layer list may run with --adapter generic "
            f"(and --grid RxC when its image token count is not a square); or add an adapter with "
            f"cdviz.models.register_adapter"
        )
    return arch


ADAPTER_CHOICES = ("auto", GENERIC)


def check_adapter_options(adapter: str | None, grid: str | tuple[int, int] | None) -> tuple[str, tuple[int, int] | None]:
    """--adapter / --grid as load_model takes them: ("auto" | "generic", (rows, cols) or None)."""
    adapter = adapter or "auto"
    if adapter not in ADAPTER_CHOICES:
        raise AdapterError(f"--adapter {adapter!r}: choose auto (the architecture's own adapter) or generic "
                           "(the fallback: one image token, a standard decoder-layer list)")
    parsed = parse_grid(grid)
    if parsed is not None and adapter != GENERIC:
        raise AdapterError("--grid is read by the generic adapter only; add --adapter generic")
    return adapter, parsed


class ComposedProcessor:
    """Tokenizer + image processor + chat template, for checkpoints whose full HF processor
    cannot be built on this machine (Qwen2-VL without torchvision)."""

    def __init__(self, tokenizer: Any, image_processor: Any, chat_template: str | None):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None)

    def apply_chat_template(self, messages, **kwargs) -> str:
        if not self.chat_template:
            raise AdapterError("the model directory has no chat template; add chat_template.jinja or chat_template.json")
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, **kwargs)


def load_processor(path: str | Path, *, trust_remote_code: bool = False) -> Any:
    path = Path(path)
    try:
        return AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
    except Exception as first:  # noqa: BLE001 - fall back to the parts, report both if that fails too
        built = _processor_without_video(path, first, trust_remote_code=trust_remote_code)
        if built is not None:
            return built
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
            image_processor = AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
        except Exception as second:  # noqa: BLE001
            raise AdapterError(
                f"{path}: no usable processor ({type(first).__name__}: {first}; {type(second).__name__}: {second}); "
                f"save the model's processor there with processor.save_pretrained({str(path)!r})"
            ) from second
        return ComposedProcessor(tokenizer, image_processor, _read_chat_template(path))


_WARNED_NO_VIDEO: set[str] = set()


def _processor_class_name(path: Path) -> str | None:
    """The HF processor class a checkpoint names (processor_config.json, tokenizer_config.json),
    or its model type's default one."""
    for name in ("processor_config.json", "tokenizer_config.json"):
        try:
            found = json.loads((path / name).read_text()).get("processor_class")
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        if found:
            return found
    try:
        from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

        return PROCESSOR_MAPPING_NAMES.get(json.loads((path / "config.json").read_text()).get("model_type"))
    except (OSError, json.JSONDecodeError, AttributeError, ImportError):
        return None


def _processor_without_video(path: Path, error: Exception, *, trust_remote_code: bool = False) -> Any | None:
    """The checkpoint's own processor class built from its saved parts without the video processor,
    for a machine where that one cannot be built (torchvision does not import beside a CPU torch
    build); None when the processor has no video part or cannot be built so. Warns once per class.
    """
    import inspect
    import warnings

    name = _processor_class_name(path)
    cls = getattr(transformers, name, None) if name else None
    try:
        attributes = list(cls.get_attributes()) if cls is not None else []
    except Exception:  # noqa: BLE001 - a placeholder class (its backend missing) has none
        return None
    if "video_processor" not in attributes:
        return None
    kept = [a for a in attributes if a != "video_processor"]
    params = inspect.signature(cls.__init__).parameters
    try:
        config = path / "processor_config.json"
        saved = json.loads(config.read_text()) if config.is_file() else {}
        options = {k: v for k, v in saved.items() if k in params and k not in attributes and k != "chat_template"}
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
        image_processor = AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code,
                                                             local_files_only=True)
        # Same class, told that it has no video part, so ProcessorMixin neither wants nor checks one.
        without = type(cls.__name__, (cls,), {"get_attributes": classmethod(lambda c: list(kept)),
                                              "__module__": cls.__module__})
        processor = without(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                            chat_template=_read_chat_template(path), **options)
    except Exception:  # noqa: BLE001 - the caller falls back to the bare parts
        return None
    if cls.__name__ not in _WARNED_NO_VIDEO:
        _WARNED_NO_VIDEO.add(cls.__name__)
        reason = " ".join(str(error).split()).split(". ")[0] or type(error).__name__
        warnings.warn(f"{cls.__name__} built from its saved parts without its video processor ({reason}); "
                      "images work, videos do not", stacklevel=3)
    return processor


def _read_chat_template(path: Path) -> str | None:
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text()
    if (path / "chat_template.json").is_file():
        return json.loads((path / "chat_template.json").read_text()).get("chat_template")
    return None


def load_model(
    path: str | Path | ModelRef,
    *,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
    device_map: str | dict | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str = "sdpa",
    allow_bin: bool | None = None,
    adapter: str | None = None,
    grid: str | tuple[int, int] | None = None,
) -> Adapter:
    """Load a checkpoint (local directory or hub id ``org/name[@revision]``) and its processor.

    ``dtype="auto"`` keeps the checkpoint's own dtype. ``device_map`` ("auto", "balanced",
    "sequential" or a dict) places the model with accelerate across the visible devices (the CPU
    when there is no GPU) and ``device`` is then unused. Returns the adapter (model in eval mode)
    with ``.origin`` (what was loaded) and ``.source`` (the local directory).

    ``adapter="generic"`` (``--adapter generic``) uses cdviz.models.generic.GenericAdapter whatever
    the architecture, with ``grid`` (rows, cols) or "RxC" for every image when given.
    """
    choice, grid = check_adapter_options(adapter, grid)
    given = Path(str(path)).expanduser()
    if not isinstance(path, ModelRef) and (given / "config.json").is_file():
        read_architecture(given, adapter=choice)  # an unsupported architecture is named before the weights are looked for
    ref = resolve_model(path, allow_bin=allow_bin, trust_remote_code=trust_remote_code)
    local = Path(ref.path)
    arch = read_architecture(local, adapter=choice)
    torch_dtype = parse_dtype(dtype)
    processor = load_processor(local, trust_remote_code=trust_remote_code)
    model_cls = getattr(transformers, arch, None)
    if model_cls is None:  # the generic adapter on a class transformers does not export by name
        model_cls = transformers.AutoModelForImageTextToText
    placement = {} if device_map is None else {"device_map": device_map}
    pickled = ref.weights.startswith("pytorch_model")
    try:
        model = model_cls.from_pretrained(
            local, dtype=torch_dtype, trust_remote_code=trust_remote_code, local_files_only=True,
            attn_implementation=attn_implementation, use_safetensors=not pickled, **placement,
        )
    except pickle.UnpicklingError as e:
        # torch.load(weights_only=True) refused the pickle: it holds more than tensors (it was not run).
        raise AdapterError(f"{local}: {ref.weights} is a pickle that holds more than tensors (torch.load with "
                           "weights_only=True refused it), so nothing in it was run or loaded; get safetensors weights "
                           "for this model instead") from e
    if device_map is None:
        model.to(device)
    model.eval()
    wrapped = GenericAdapter(model, processor, grid=grid) if choice == GENERIC else ADAPTERS[arch](model, processor)
    wrapped.source = str(local)
    wrapped.origin = ref
    if (local / "taf.safetensors").is_file():
        # A cdviz-trained student whose TAF connector could not be folded into a standard projector
        # (teacher hidden > student hidden) keeps it there; cdviz/models/taf.py re-attaches it.
        attach_saved_taf(wrapped, local)
    return wrapped


@dataclass
class PairReport:
    """What load_pair checked: errors stop distillation, warnings are worth knowing."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def check_pair(teacher: Adapter, student: Adapter) -> PairReport:
    report = PairReport()
    t_vocab, s_vocab = teacher.tokenizer.get_vocab(), student.tokenizer.get_vocab()
    t_by_id = {i: tok for tok, i in t_vocab.items()}
    differing = [(i, tok, t_by_id.get(i)) for tok, i in s_vocab.items() if t_by_id.get(i) != tok]
    if differing:
        i, s_tok, t_tok = sorted(differing)[0]
        report.errors.append(
            f"tokenizers differ: {len(differing)} student token ids map to other teacher tokens "
            f"(first: id {i} is {s_tok!r} for the student, {t_tok!r} for the teacher); logit KD needs the "
            f"student's vocabulary to be a prefix of the teacher's"
        )
    if teacher.image_token_id != student.image_token_id:
        report.errors.append(
            f"image token ids differ (teacher {teacher.image_token_id}, student {student.image_token_id}); "
            f"use checkpoints that share the tokenizer"
        )
    if teacher.letter_token_ids(4) != student.letter_token_ids(4):
        report.errors.append("the option letters tokenize differently for teacher and student")
    if student.vocab_size > teacher.vocab_size:
        report.warnings.append(f"student vocabulary ({student.vocab_size}) is larger than the teacher's ({teacher.vocab_size})")
    template = chat_template_difference(teacher, student)
    if template:
        report.warnings.append(template)
    return report


#: The conversation both models render for the chat-template check.
TEMPLATE_PROBE = "Which caption best describes the image?"


def chat_template_difference(teacher: Adapter, student: Adapter, context: int = 24) -> str | None:
    """The chat-template check: None when teacher and student render the same user turn (an image
    and ``TEMPLATE_PROBE``, with the generation prompt) to the same text; else a message showing
    the first differing characters. Each model is still asked in its own format, so a difference
    is a warning: the two condition their answers on different text."""
    rendered = []
    for who, a in (("teacher", teacher), ("student", student)):
        try:
            rendered.append(a.render_prompt(TEMPLATE_PROBE))
        except Exception as e:  # noqa: BLE001 - a model that cannot render is reported, not raised
            return f"chat template check: the {who} cannot render a conversation ({type(e).__name__}: {e})"
    t, s = rendered
    if t == s:
        return None
    i = next((k for k, (a, b) in enumerate(zip(t, s)) if a != b), min(len(t), len(s)))
    lo = max(0, i - 8)
    return (f"chat template check failed: teacher and student render the same conversation to different text "
            f"(first difference at character {i}: teacher {t[lo:i + context]!r}, student {s[lo:i + context]!r}); "
            f"each model is asked in its own format, so their answers are conditioned on different text")


def load_pair(teacher: str | Path, student: str | Path, *, strict: bool = True, **kwargs) -> tuple[Adapter, Adapter, PairReport]:
    """Load both checkpoints; with ``strict`` a mismatch raises AdapterError listing every problem."""
    t, s = load_model(teacher, **kwargs), load_model(student, **kwargs)
    report = check_pair(t, s)
    if strict and not report.ok:
        raise AdapterError(f"{teacher} / {student} cannot be distilled as a pair:\n  - " + "\n  - ".join(report.errors))
    return t, s, report
