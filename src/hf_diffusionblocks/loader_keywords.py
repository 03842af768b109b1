"""Which `from_pretrained` / `save_pretrained` keywords the library's loaders honour, ignore or refuse: one table.

transformers' Auto classes and diffusers' pipeline loader call a model's `from_pretrained` with keyword
arguments of their own, and each release may add one (transformers 5.x passes `proxies=` on every Auto
call). A loader that refuses every keyword it does not know breaks on the next release; a loader that
ignores every keyword silently loads something other than what was asked (a `quantization_config` or
`variant` that is not applied). So every keyword is sorted, once, here:

- **honoured**: the loader does what it says. Either a named parameter of the loader (`subfolder`,
  `revision`, `dtype`, …), or a download option handed to `huggingface_hub.hf_hub_download` as it is
  (`proxies`, `user_agent`, …: huggingface_hub decides what they do, e.g. it warns that per-call
  proxies are gone since 1.0 and that the environment's `HTTPS_PROXY` is used instead).
- **moot**: accepted with any value, because it cannot change what this library loads (the reason is
  in the table: e.g. `low_cpu_mem_usage`, since only the requested blocks are ever read).
- **default only**: a feature the loader does not implement (quantization, offloading, variants,
  tensor parallelism, …). Its default value (what the ecosystem passes when the user did not ask for it)
  is accepted; any other value is refused with a `ValueError` naming the keyword and the reason.

A keyword missing from the table is refused by name. `tests/test_loader_keywords.py` reads the keywords
that the installed transformers and diffusers loaders accept (their signatures and the `kwargs.pop(...)`
calls in their source) and fails, naming the keyword, when a release adds one this table does not sort.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Policy = Literal["honoured", "moot", "default_only"]


@dataclass(frozen=True)
class LoaderKeyword:
    """How a loader treats one keyword; `defaults` are the values a `default_only` keyword accepts."""

    policy: Policy
    reason: str
    defaults: tuple[Any, ...] = (None,)


def _honoured(reason: str) -> LoaderKeyword:
    return LoaderKeyword("honoured", reason)


def _moot(reason: str) -> LoaderKeyword:
    return LoaderKeyword("moot", reason)


def _default_only(reason: str, *defaults: Any) -> LoaderKeyword:
    return LoaderKeyword("default_only", reason, defaults or (None,))


_DOWNLOAD = "handed to huggingface_hub's download call, which applies it"
_NO_QUANTIZATION = "blocks load in full precision; quantization is not implemented"
_NO_OFFLOAD = "every block loads whole onto one device; offloading is not implemented"
_NO_PARALLEL = "blocks load on one device; tensor parallelism is not implemented (blocks are parallel by design)"
_NO_KERNELS = "the blocks run the library's own PyTorch layers; Hub kernels are not implemented"
_NO_ONNX = "DiffusionBlocks folders hold safetensors weights only, no ONNX graphs"
_PIPELINE_ONLY = "a pipeline-level option of diffusers with no meaning for a DiffusionBlocks folder"

# Download options of huggingface_hub: passed on as they are.
DOWNLOAD_KEYWORDS = frozenset({"proxies", "resume_download", "user_agent", "etag_timeout", "headers", "endpoint", "tqdm_class"})

LOAD_KEYWORDS: dict[str, LoaderKeyword] = {
    # where files come from: named parameters of the loaders
    "pretrained_model_name_or_path": _honoured("the folder or Hub repo to load"),
    "config": _honoured("a config to use instead of the folder's config.json"),
    "subfolder": _honoured("the folder inside the repo"),
    "revision": _honoured("the Hub revision"),
    "cache_dir": _honoured("the Hub cache folder"),
    "token": _honoured("the Hub token"),
    "local_files_only": _honoured("read only the local folder or Hub cache"),
    "force_download": _honoured("download again into the Hub cache"),
    **{name: _honoured(_DOWNLOAD) for name in DOWNLOAD_KEYWORDS},
    # what is loaded, and where
    "dtype": _honoured("cast the loaded blocks to this dtype"),
    "torch_dtype": _honoured("the older name of `dtype`, as transformers and diffusers accept it"),
    "device": _honoured("load the blocks onto this device"),
    "device_map": _honoured("one device for every block: None, 'auto', a device, or {'': device}"),
    "use_safetensors": _honoured("None or True: blocks are stored as safetensors only (False is refused)"),
    "block_index": _honoured("load only this block (or these blocks)"),
    "verify_checksums": _honoured("check every block file against the digest recorded at save time"),
    # cannot change what is loaded
    "trust_remote_code": _moot("the library's own installed classes load the folder; its remote-code file is never read"),
    "code_revision": _moot("the remote-code file is never read, so its revision does not matter"),
    "low_cpu_mem_usage": _moot("only the requested blocks are ever read, straight into their modules"),
    "disable_mmap": _moot("block files are read whole and verified; memory mapping is not used to load them"),
    "weights_only": _moot("only safetensors files are read, so nothing is ever unpickled"),
    "mirror": _moot("deprecated by transformers and ignored there too"),
    "_from_auto": _moot("transformers' internal marker of an Auto-class call"),
    "_from_pipeline": _moot("transformers' internal marker of a pipeline call"),
    "_commit_hash": _moot("transformers' internal cache of the resolved commit; `revision` decides what is read"),
    "adapter_kwargs": _moot("transformers' options for finding a PEFT adapter in the folder, which holds none"),
    # features the loaders do not implement: refused unless at their default
    "adapter_name": _default_only("PEFT adapters are not loaded through from_pretrained"),
    "output_loading_info": _default_only("loading is strict (a missing or unexpected tensor is an error), so there is no loading info", None, False),
    "ignore_mismatched_sizes": _default_only("loading is strict: a mis-shaped tensor is an error", None, False),
    "state_dict": _default_only("weights come from the block files, each verified against its digest"),
    "key_mapping": _default_only("block files are read under their own names; renaming keys is not implemented"),
    "variant": _default_only("DiffusionBlocks folders are saved without weight variants"),
    "gguf_file": _default_only("block files are safetensors; GGUF is not read"),
    "quantization_config": _default_only(_NO_QUANTIZATION),
    "fusion_config": _default_only("layer fusion is not implemented"),
    "max_memory": _default_only(_NO_OFFLOAD),
    "offload_folder": _default_only(_NO_OFFLOAD),
    "offload_state_dict": _default_only(_NO_OFFLOAD, None, False),
    "offload_buffers": _default_only(_NO_OFFLOAD, None, False),
    "tp_plan": _default_only(_NO_PARALLEL),
    "tp_size": _default_only(_NO_PARALLEL),
    "device_mesh": _default_only(_NO_PARALLEL),
    "distributed_config": _default_only(_NO_PARALLEL),
    "parallel_config": _default_only(_NO_PARALLEL),
    "attn_implementation": _default_only("the blocks run their own attention layers; choosing another is not implemented"),
    "experts_implementation": _default_only("the blocks have no mixture-of-experts layers"),
    "use_kernels": _default_only(_NO_KERNELS, None, False),
    "kernel_config": _default_only(_NO_KERNELS),
    "kernels_mode": _default_only(_NO_KERNELS),
    "allow_all_kernels": _default_only(_NO_KERNELS, None, False),
    "generation_config": _default_only("generation settings are arguments of generate(), not stored in the folder"),
    "use_flashpack": _default_only("flashpack files are not written or read", None, False),
    "flashpack_kwargs": _default_only("flashpack files are not written or read", None, {}),
    "from_flax": _default_only("block files are PyTorch safetensors; Flax weights are not converted", None, False),
    "dduf_file": _default_only("DiffusionBlocks folders are not packed into DDUF archives"),
    "dduf_entries": _default_only("DiffusionBlocks folders are not packed into DDUF archives"),
    "use_onnx": _default_only(_NO_ONNX, None, False),
    "provider": _default_only(_NO_ONNX),
    "provider_options": _default_only(_NO_ONNX),
    "sess_options": _default_only(_NO_ONNX),
    "custom_pipeline": _default_only(_PIPELINE_ONLY),
    "custom_revision": _default_only(_PIPELINE_ONLY),
    "load_connected_pipeline": _default_only(_PIPELINE_ONLY, None, False),
}

SAVE_KEYWORDS: dict[str, LoaderKeyword] = {
    "save_directory": _honoured("the folder to write"),
    "is_main_process": _honoured("only the main process writes"),
    "block_indices": _honoured("write only these blocks"),
    "training_steps": _honoured("the training steps recorded in each block file"),
    "push_to_hub": _default_only("upload with push_to_hub(...) or push_block_to_hub: each block is its own commit", None, False),
    "repo_id": _moot("only read together with push_to_hub, which save_pretrained refuses"),
    "commit_message": _moot("only read together with push_to_hub, which save_pretrained refuses"),
    "create_pr": _moot("only read together with push_to_hub, which save_pretrained refuses"),
    "private": _moot("only read together with push_to_hub, which save_pretrained refuses"),
    "token": _moot("only read together with push_to_hub, which save_pretrained refuses"),
    "max_shard_size": _moot("every block is its own file; blocks are never sharded further"),
    "safe_serialization": _default_only("blocks are always saved as safetensors", None, True),
    "save_original_format": _moot("blocks are written in the library's one format"),
    "variant": _default_only("DiffusionBlocks folders are saved without weight variants"),
    "state_dict": _default_only("each block file is written from the block's own weights"),
    "save_function": _default_only("block files are written atomically by the library"),
    "save_peft_format": _moot("no PEFT adapters are saved by save_pretrained"),
    "distributed_checkpoint": _default_only("each block is saved whole by the process that trained it", None, False),
    "use_flashpack": _default_only("flashpack files are not written or read", None, False),
}


def _is_default(value: Any, defaults: tuple[Any, ...]) -> bool:
    return any(value is default or (type(value) is type(default) and value == default) for default in defaults)


def check_keywords(
    kwargs: dict[str, Any], table: dict[str, LoaderKeyword], owner: str
) -> dict[str, Any]:
    """Sort `kwargs` by `table`: refuse a keyword the table does not know, and a `default_only` keyword set to
    anything but its default, with a `ValueError` naming `owner` (e.g. `"DiffusionBlocksDiTModel.from_pretrained"`),
    the keyword and the reason; drop moot and defaulted keywords. Returns the honoured keywords left in `kwargs`."""
    unknown = sorted(name for name in kwargs if name not in table)
    if unknown:
        raise ValueError(f"{owner} got unexpected arguments: {unknown}.")
    honoured = {}
    for name, value in kwargs.items():
        entry = table[name]
        if entry.policy == "honoured":
            honoured[name] = value
        elif entry.policy == "default_only" and not _is_default(value, entry.defaults):
            raise ValueError(f"{owner} does not support {name}={value!r}: {entry.reason}.")
    return honoured


def take_download_keywords(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Remove huggingface_hub's download options from `kwargs` and return them (to pass to the download calls)."""
    return {name: kwargs.pop(name) for name in list(kwargs) if name in DOWNLOAD_KEYWORDS}


def load_dtype(kwargs: dict[str, Any], owner: str) -> Any:
    """Remove `dtype` and its older name `torch_dtype` from `kwargs`; return the dtype asked for (None if neither).
    Both given with different values is refused by name."""
    dtype, torch_dtype = kwargs.pop("dtype", None), kwargs.pop("torch_dtype", None)
    if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
        raise ValueError(f"{owner} got dtype={dtype!r} and torch_dtype={torch_dtype!r}; give one of them.")
    return dtype if dtype is not None else torch_dtype
