"""The one table of loader keywords against the installed transformers and diffusers.

The ecosystem calls our `from_pretrained` / `save_pretrained` with keywords of its own, and each release may
add one. These tests read the keywords the *installed* releases accept (signatures, and the `kwargs.pop(...)`
/ `kwargs.get(...)` calls in their source), so a release that adds a keyword fails here, naming it, instead
of breaking users; and they check that each table entry does what it says on a real saved model.
"""

from __future__ import annotations

import ast
import re
import inspect
import textwrap

import pytest
import torch
from diffusers import DiffusionPipeline, ModelMixin
from diffusers.pipelines import pipeline_loading_utils
from transformers import PreTrainedModel
from transformers.models.auto.auto_factory import _BaseAutoModelClass
from transformers.utils import PushToHubMixin

from conftest import randomize_
from hf_diffusionblocks import DiffusionBlocksDiTModel, DiffusionBlocksImagePipeline, DiffusionBlocksScheduler
from hf_diffusionblocks import hub_download
from hf_diffusionblocks.loader_keywords import LOAD_KEYWORDS, SAVE_KEYWORDS

# keywords that are not loader options: the instance/class and the positional path
_NOT_OPTIONS = {"self", "cls", "model_args", "kwargs"}


def _function_tree(function) -> ast.FunctionDef:
    function = inspect.unwrap(getattr(function, "__func__", function))
    return ast.parse(textwrap.dedent(inspect.getsource(function))).body[0]


def accepted_keywords(function) -> set[str]:
    """Parameter names of `function`, plus every string key it pops or gets from its `**kwargs`."""
    tree = _function_tree(function)
    names = {argument.arg for argument in tree.args.args + tree.args.kwonlyargs}
    kwargs_name = tree.args.kwarg.arg if tree.args.kwarg else None
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("pop", "get")
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == kwargs_name
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(node.args[0].value)
    return names - _NOT_OPTIONS


def subscript_keys(function, dict_name: str) -> set[str]:
    """Every string key `function` assigns into the dict `dict_name` (`dict_name["key"] = ...`)."""
    keys = set()
    for node in ast.walk(_function_tree(function)):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if (
                    isinstance(target, ast.Subscript)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == dict_name
                    and isinstance(target.slice, ast.Constant)
                ):
                    keys.add(target.slice.value)
    return keys


def call_keywords(function, method_name: str) -> set[str]:
    """The keyword names `function` passes when it calls `<something>.<method_name>(...)`."""
    keys = set()
    for node in ast.walk(_function_tree(function)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == method_name:
            keys.update(keyword.arg for keyword in node.keywords if keyword.arg is not None)
    return keys


ECOSYSTEM_LOADERS = {
    "transformers PreTrainedModel.from_pretrained": lambda: accepted_keywords(PreTrainedModel.from_pretrained),
    "transformers Auto*.from_pretrained": lambda: accepted_keywords(_BaseAutoModelClass.from_pretrained),
    "diffusers ModelMixin.from_pretrained": lambda: accepted_keywords(ModelMixin.from_pretrained),
    "diffusers DiffusionPipeline.from_pretrained": lambda: accepted_keywords(DiffusionPipeline.from_pretrained),
    "diffusers load_sub_model (a component's loading_kwargs)": lambda: subscript_keys(pipeline_loading_utils.load_sub_model, "loading_kwargs"),
}
ECOSYSTEM_SAVERS = {
    "transformers PreTrainedModel.save_pretrained": lambda: accepted_keywords(PreTrainedModel.save_pretrained),
    "diffusers ModelMixin.save_pretrained": lambda: accepted_keywords(ModelMixin.save_pretrained),
    "diffusers DiffusionPipeline.save_pretrained (to each component)": lambda: subscript_keys(DiffusionPipeline.save_pretrained, "save_kwargs"),
    "transformers PushToHubMixin.push_to_hub (to save_pretrained)": lambda: call_keywords(PushToHubMixin.push_to_hub, "save_pretrained"),
}


@pytest.mark.parametrize("caller", sorted(ECOSYSTEM_LOADERS))
def test_every_loader_keyword_of_the_installed_ecosystem_is_sorted(caller):
    keywords = ECOSYSTEM_LOADERS[caller]()
    assert len(keywords) >= 3, f"reading {caller}'s keywords found almost nothing: {sorted(keywords)}"
    unsorted = sorted(keywords - set(LOAD_KEYWORDS))
    assert not unsorted, f"{caller} accepts {unsorted}, which loader_keywords.LOAD_KEYWORDS does not sort"


@pytest.mark.parametrize("caller", sorted(ECOSYSTEM_SAVERS))
def test_every_save_keyword_of_the_installed_ecosystem_is_sorted(caller):
    keywords = ECOSYSTEM_SAVERS[caller]()
    assert keywords, f"reading {caller}'s keywords found nothing"
    unsorted = sorted(keywords - set(SAVE_KEYWORDS) - {"save_directory"})
    assert not unsorted, f"{caller} passes {unsorted}, which loader_keywords.SAVE_KEYWORDS does not sort"


# ---- each entry does what the table says, on a real saved model ---------------------------------

@pytest.fixture(scope="module")
def saved_dit(tmp_path_factory):
    from hf_diffusionblocks import DiffusionBlocksDiTConfig

    config = DiffusionBlocksDiTConfig(
        image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
        num_labels=3, num_blocks=3,
    )
    folder = tmp_path_factory.mktemp("dit")
    model = randomize_(DiffusionBlocksDiTModel(config))
    model.save_pretrained(folder)
    return folder, model.state_dict()


def _same_weights(model, state):
    return all(torch.equal(tensor, state[name]) for name, tensor in model.state_dict().items())


MOOT = sorted(name for name, entry in LOAD_KEYWORDS.items() if entry.policy == "moot")
DEFAULT_ONLY = sorted(name for name, entry in LOAD_KEYWORDS.items() if entry.policy == "default_only")


@pytest.mark.parametrize("name", MOOT)
def test_moot_keywords_load_the_same_weights(name, saved_dit):
    folder, state = saved_dit
    model = DiffusionBlocksDiTModel.from_pretrained(folder, **{name: object()})
    assert _same_weights(model, state)


@pytest.mark.parametrize("name", DEFAULT_ONLY)
def test_default_only_keywords_accept_their_default_and_refuse_anything_else_by_name(name, saved_dit):
    folder, state = saved_dit
    for default in LOAD_KEYWORDS[name].defaults:
        assert _same_weights(DiffusionBlocksDiTModel.from_pretrained(folder, **{name: default}), state)
    with pytest.raises(ValueError, match=rf"does not support {name}=.*: {re.escape(LOAD_KEYWORDS[name].reason)}"):
        DiffusionBlocksDiTModel.from_pretrained(folder, **{name: "something"})


def test_unknown_keyword_is_refused_by_name(saved_dit):
    with pytest.raises(ValueError, match=r"unexpected arguments: \['strict'\]"):
        DiffusionBlocksDiTModel.from_pretrained(saved_dit[0], strict=False)


def test_download_options_reach_the_hub_download(saved_dit, monkeypatch, tmp_path):
    seen = {}
    real_download = hub_download.hf_hub_download

    def recording_download(*args, **kwargs):
        seen.update(kwargs)
        return real_download(*args, **kwargs)

    monkeypatch.setattr(hub_download, "hf_hub_download", recording_download)
    # a repo id, not a folder, so files are fetched; offline, from a cache holding nothing: the error is "missing"
    with pytest.raises(ValueError, match="no config.json"):
        DiffusionBlocksDiTModel.from_pretrained(
            "someone/model", cache_dir=str(tmp_path), local_files_only=True, user_agent={"app": "test"}, etag_timeout=3
        )
    assert seen["user_agent"] == {"app": "test"} and seen["etag_timeout"] == 3


@pytest.mark.parametrize("dtype_keyword", ["dtype", "torch_dtype"])
def test_dtype_under_either_name_and_auto(saved_dit, dtype_keyword):
    folder, _ = saved_dit
    assert DiffusionBlocksDiTModel.from_pretrained(folder, **{dtype_keyword: torch.float64}).dtype == torch.float64
    assert DiffusionBlocksDiTModel.from_pretrained(folder, **{dtype_keyword: "float16"}).dtype == torch.float16
    assert DiffusionBlocksDiTModel.from_pretrained(folder, **{dtype_keyword: "auto"}).dtype == torch.float32
    with pytest.raises(ValueError, match="dtype must be a torch.dtype"):
        DiffusionBlocksDiTModel.from_pretrained(folder, **{dtype_keyword: "bogus"})
    with pytest.raises(ValueError, match="give one of them"):
        DiffusionBlocksDiTModel.from_pretrained(folder, dtype=torch.float64, torch_dtype=torch.float16)


def test_save_pretrained_takes_the_ecosystem_keywords(saved_dit, tmp_path):
    folder, state = saved_dit
    model = DiffusionBlocksDiTModel.from_pretrained(folder)
    model.save_pretrained(tmp_path, max_shard_size="5GB", safe_serialization=True, token=None, variant=None)
    assert _same_weights(DiffusionBlocksDiTModel.from_pretrained(tmp_path), state)
    with pytest.raises(ValueError, match="does not support safe_serialization=False"):
        model.save_pretrained(tmp_path, safe_serialization=False)
    with pytest.raises(ValueError, match="does not support variant='fp16'"):
        model.save_pretrained(tmp_path, variant="fp16")


def test_pipeline_passes_loader_keywords_to_its_model_and_refuses_the_rest(saved_dit, tmp_path):
    folder, _ = saved_dit
    pipeline = DiffusionBlocksImagePipeline(DiffusionBlocksDiTModel.from_pretrained(folder), DiffusionBlocksScheduler(num_blocks=3))
    pipeline.save_pretrained(tmp_path)
    loaded = DiffusionBlocksImagePipeline.from_pretrained(tmp_path, torch_dtype=torch.float64, trust_remote_code=True, proxies=None)
    assert loaded.transformer.dtype == torch.float64
    with pytest.raises(ValueError, match="does not support variant='fp16'"):
        DiffusionBlocksImagePipeline.from_pretrained(tmp_path, variant="fp16")
    with pytest.raises(ValueError, match=r"unexpected arguments: \['textencoder'\]"):
        DiffusionBlocksImagePipeline.from_pretrained(tmp_path, textencoder=None)
    with pytest.raises(ValueError, match=r"got \['block_index'\]: load that component"):
        DiffusionBlocksImagePipeline.from_pretrained(tmp_path, block_index=0)


def test_diffusers_native_loader_with_its_keywords(saved_dit, tmp_path):
    folder, state = saved_dit
    pipeline = DiffusionBlocksImagePipeline(DiffusionBlocksDiTModel.from_pretrained(folder), DiffusionBlocksScheduler(num_blocks=3))
    pipeline.save_pretrained(tmp_path)
    loaded = DiffusionPipeline.from_pretrained(tmp_path, trust_remote_code=True, torch_dtype=torch.float32, low_cpu_mem_usage=True)
    assert _same_weights(loaded.transformer, state)
    with pytest.raises(ValueError, match="quantization is not implemented"):
        DiffusionBlocksDiTModel.from_pretrained(tmp_path, subfolder="transformer", quantization_config={"bits": 4})
