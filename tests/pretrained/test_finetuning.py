"""Block-wise fine-tuning of a converted model: only block b is read and trained, LoRA round-trips, the script runs."""

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import hf_diffusionblocks.pretrained.converted_folder as converted_folder
from hf_diffusionblocks.pretrained.conversion import convert_pretrained_transformer
from hf_diffusionblocks.pretrained.finetuning import BlockFinetuningModel, NativeObjective, finetuning_loss
from hf_diffusionblocks.pretrained.lora import LoraSettings
from hf_diffusionblocks.pretrained.modeling_routed import RoutedDiTTransformer2DModel, RoutedSD3Transformer2DModel
from hf_diffusionblocks.training.pretrained_task import PretrainedFinetuningTask
from script_testing import load_script
from tiny_models import random_inputs, save_pipeline_folder


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folders = {}
    for kind in ("dit", "sd3"):
        pipeline = save_pipeline_folder(kind, tmp_path_factory.mktemp(kind))
        out = tmp_path_factory.mktemp(kind + "_b2") / "converted"
        convert_pretrained_transformer(str(pipeline), str(out), 2)
        folders[kind] = out
    return folders


def test_one_block_reads_only_its_own_file_and_trains_only_its_parameters(converted, monkeypatch):
    opened = []
    original = converted_folder.load_tensors
    monkeypatch.setattr(converted_folder, "load_tensors", lambda path, *a, **k: (opened.append(os.path.basename(path)), original(path, *a, **k))[1])
    original_block = converted_folder.load_block_file   # block files are read whole and checked against their checksum
    monkeypatch.setattr(converted_folder, "load_block_file",
                        lambda path, *a, **k: (opened.append(os.path.basename(path)), original_block(path, *a, **k))[1])
    model = BlockFinetuningModel(str(converted["dit"]), 1)
    assert sorted(opened) == ["block_1.safetensors", "stems.safetensors"]
    assert model.routed.loaded_block_indices == [1]
    trainable = {id(p) for p in model.block_parameters(1)}
    assert trainable == {id(p) for p in model.routed.blocks["1"].parameters()}
    assert all(not p.requires_grad for p in model.routed.stem_parameters())
    stems_before = {k: v.clone() for k, v in model.routed.stems_state_dict().items()}
    optimizer = torch.optim.AdamW(model.block_parameters(1), lr=1e-2)
    batch = random_inputs("dit", 4, torch.zeros(4))
    loss = finetuning_loss(model, 1, batch["hidden_states"], {"class_labels": batch["class_labels"]},
                           NativeObjective(model.manifest), torch.Generator().manual_seed(0))
    loss.backward()
    optimizer.step()
    assert all(torch.equal(stems_before[k], v) for k, v in model.routed.stems_state_dict().items())
    stateful = {id(p) for p in optimizer.state}
    assert stateful and stateful <= trainable
    assert all(p.grad is None for p in model.routed.stem_parameters())


def test_training_timesteps_stay_in_the_block_and_the_objective_is_native(converted):
    model = BlockFinetuningModel(str(converted["sd3"]), 0)
    objective = NativeObjective(model.manifest)
    assert objective.prediction_type == "flow_velocity"
    clean, noise = torch.ones(2, 4, 8, 8), torch.zeros(2, 4, 8, 8)
    noisy, target = objective.noise(clean, noise, torch.tensor([250.0, 1000.0]))
    assert torch.allclose(noisy[0], torch.full((4, 8, 8), 0.75)) and torch.allclose(noisy[1], torch.zeros(4, 8, 8))
    assert torch.equal(target, noise - clean)
    low, high = model.manifest.time_partition.training_interval(0)
    t = model.manifest.time_partition.sample_training_timesteps(0, 1000, torch.Generator().manual_seed(0))
    assert float(t.min()) >= low and float(t.max()) <= high and low < 750 < high  # overlap reaches below the boundary


def test_lora_adapter_round_trip_merges_into_the_routed_model(converted, tmp_path):
    settings = LoraSettings(rank=2, alpha=4.0)
    model = BlockFinetuningModel(str(converted["sd3"]), 1, lora=settings)
    assert all("lora_" in name for name, p in model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        for parameter in model.block_parameters(1):
            parameter.normal_(0, 0.1)  # lora_B starts at zero: give the adapter an effect
    inputs = random_inputs("sd3", 2, torch.tensor([100.0, 300.0]))
    with torch.no_grad():
        adapted = model(**inputs).sample
    lora_dir = tmp_path / "lora"
    model.save_block(str(lora_dir), 1, training_steps=7)
    with safe_open(lora_dir / "block_1.safetensors", "pt") as file:
        names = list(file.keys())
    assert names and all("lora_" in name and name.startswith("transformer_blocks.") for name in names)
    merged = RoutedSD3Transformer2DModel.from_pretrained(str(converted["sd3"]), lora_dir=str(lora_dir))
    plain = RoutedSD3Transformer2DModel.from_pretrained(str(converted["sd3"]))
    with torch.no_grad():
        assert torch.allclose(merged(**inputs).sample, adapted, atol=1e-5)
        assert not torch.allclose(plain(**inputs).sample, adapted, atol=1e-3)
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    # an adapter trained with other settings is refused
    other = BlockFinetuningModel(str(converted["sd3"]), 1, lora=LoraSettings(rank=4))
    with pytest.raises(ValueError, match="another conversion or LoRA setting"):
        other.check_block_file(str(lora_dir / "block_1.safetensors"), 1, other.config)


def digits_dit_folder(tmp_path):
    """A pixel-space DiT for 8×8 one-channel digits, converted to B=2."""
    from diffusers import DDPMScheduler, DiTTransformer2DModel

    torch.manual_seed(0)
    transformer = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=1, out_channels=2, num_layers=4,
                                        sample_size=8, patch_size=2, num_embeds_ada_norm=10)
    source = tmp_path / "source"
    transformer.save_pretrained(source / "transformer")
    DDPMScheduler().save_pretrained(source / "scheduler")
    (source / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline"}))
    convert_pretrained_transformer(str(source), str(tmp_path / "converted"), 2, init="contiguous")  # the cards list slices
    return tmp_path / "converted"


def script_args(converted_dir, output_dir, *extra):
    return ["--converted_dir", str(converted_dir), "--output_dir", str(output_dir), "--dataset_name", "digits",
            "--train_batch_size", "8", "--max_train_steps", "4", "--logging_steps", "2", "--checkpointing_steps", "2",
            "--report_to", "none", *extra]


def test_script_full_and_lora_and_distill_smoke(tmp_path):
    converted_dir = digits_dit_folder(tmp_path)
    script = load_script("finetune_pretrained")
    summary = script.main(script_args(converted_dir, tmp_path / "full", "--block_index", "1"))
    assert [block["steps"] for block in summary["blocks"]] == [4]
    original = load_file(converted_dir / "block_1.safetensors")
    tuned = load_file(tmp_path / "full" / "block_1.safetensors")
    assert any(not torch.equal(original[k], tuned[k]) for k in original)
    assert all(torch.equal(a, b) for a, b in zip(load_file(converted_dir / "block_0.safetensors").values(),
                                                  load_file(tmp_path / "full" / "block_0.safetensors").values()))
    routed = RoutedDiTTransformer2DModel.from_pretrained(str(tmp_path / "full"))
    assert routed.block_training_steps == {1: 4}
    card = (tmp_path / "full" / "README.md").read_text()
    assert "| 0 | 0-1 | [500.0, 1000.0) | converted (unchanged) | - |" in card
    assert "| 1 | 2-3 | [0.0, 500.0) | fine-tuned (4 steps) | - |" in card

    summary = script.main(script_args(converted_dir, tmp_path / "lora", "--blocks_to_train", "0,1", "--use_lora", "--lora_rank", "2"))
    assert [block["block_index"] for block in summary["blocks"]] == [0, 1]
    assert sorted(os.listdir(tmp_path / "lora" / "lora")) == ["block_0.safetensors", "block_1.safetensors"]
    merged = RoutedDiTTransformer2DModel.from_pretrained(str(tmp_path / "lora"), lora_dir=str(tmp_path / "lora" / "lora"))
    assert merged.loaded_block_indices == [0, 1]
    assert "| converted (unchanged) | rank 2, 4 steps |" in (tmp_path / "lora" / "README.md").read_text()

    summary = script.main(script_args(converted_dir, tmp_path / "distill", "--block_index", "0", "--objective", "distill"))
    assert summary["objective"] == "distill" and summary["blocks"][0]["final_loss"] >= 0


def test_script_resume_is_exact(tmp_path):
    """Killed mid-training, the output keeps the original block (never a half-written one); resuming from
    the last checkpoint ends bit-identical to an uninterrupted run, and a further resume skips the block."""
    converted_dir = digits_dit_folder(tmp_path)
    script = load_script("finetune_pretrained")
    run = lambda out, *extra: script_args(converted_dir, out, "--block_index", "0", *extra)  # noqa: E731
    script.main(run(tmp_path / "uninterrupted"))
    task_class, calls = PretrainedFinetuningTask, {"count": 0}
    original_loss = task_class.loss

    def crashing_loss(self, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 4:
            raise KeyboardInterrupt("simulated kill")
        return original_loss(self, *args, **kwargs)

    task_class.loss = crashing_loss
    try:
        with pytest.raises(KeyboardInterrupt):
            script.main(run(tmp_path / "interrupted"))
    finally:
        task_class.loss = original_loss
    untouched = load_file(tmp_path / "interrupted" / "block_0.safetensors")
    assert all(torch.equal(untouched[k], v) for k, v in load_file(converted_dir / "block_0.safetensors").items())
    summary = script.main(run(tmp_path / "interrupted", "--resume_from_checkpoint", "latest"))
    assert summary["blocks"][0]["resumed_from"] == 2
    expected = load_file(tmp_path / "uninterrupted" / "block_0.safetensors")
    resumed = load_file(tmp_path / "interrupted" / "block_0.safetensors")
    assert expected.keys() == resumed.keys() and all(torch.equal(expected[k], resumed[k]) for k in expected)
    assert script.main(run(tmp_path / "interrupted", "--resume_from_checkpoint", "latest"))["blocks"][0]["skipped"]


def test_a_foreign_block_in_the_converted_folder_is_refused_before_training(tmp_path):
    """A block file of another conversion (here: another partition) is named before any step, so it is never
    carried into the output, which would then fail to load."""
    converted_dir = digits_dit_folder(tmp_path)
    convert_pretrained_transformer(str(tmp_path / "source"), str(tmp_path / "uniform"), 2, partition="uniform", overlap=0.3)
    os.replace(tmp_path / "uniform" / "block_1.safetensors", converted_dir / "block_1.safetensors")
    with pytest.raises(ValueError, match=r"converted/block_1\.safetensors is a block of another conversion"):
        load_script("finetune_pretrained").main(script_args(converted_dir, tmp_path / "out", "--block_index", "0"))
    assert not (tmp_path / "out" / "checkpoints").exists() and not (tmp_path / "out" / "block_1.safetensors").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--block_index", "2"], "block_index must be an int in"),
        (["--blocks_to_train", "0,5"], "block_index must be an int in"),
        (["--training_mode", "end_to_end"], "block-wise"),
        (["--use_lora", "--train_stems"], "cannot be combined"),
        (["--num_blocks", "4"], "the conversion fixed the blocks"),
    ],
)
def test_script_bad_input_is_named(tmp_path, extra, message):
    converted_dir = digits_dit_folder(tmp_path)
    with pytest.raises(ValueError, match=message):
        load_script("finetune_pretrained").main(script_args(converted_dir, tmp_path / "out", *extra))


def test_accelerate_launch_smoke(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    converted_dir = digits_dit_folder(tmp_path)
    script = Path(__file__).resolve().parents[2] / "examples" / "finetune_pretrained.py"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", str(script),
               *script_args(converted_dir, tmp_path / "out", "--block_index", "1", "--max_train_steps", "2", "--use_lora")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "lora" / "block_1.safetensors").is_file()


@pytest.mark.parametrize("kind", ["dit", "sd3"])
def test_gradient_checkpointing_gives_the_same_gradients(converted, kind):
    gradients = []
    for checkpointing in (False, True):
        model = BlockFinetuningModel(str(converted[kind]), 0)
        if checkpointing:
            model.routed.enable_gradient_checkpointing()
        model.train()
        inputs = random_inputs(kind, 2, torch.tensor([900, 700]))
        conditioning = {k: v for k, v in inputs.items() if k not in ("hidden_states", "timestep")}
        finetuning_loss(model, 0, inputs["hidden_states"], conditioning, NativeObjective(model.manifest),
                        torch.Generator().manual_seed(0)).backward()
        gradients.append([p.grad.clone() for p in model.block_parameters(0) if p.grad is not None])
    assert len(gradients[0]) == len(gradients[1]) > 0
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*gradients))


# ---- every bad input of finetune_pretrained.py ends in one line naming the flag or file, exit status 2 ------------


def latents(tmp_path, name="latents.safetensors", **tensors):
    """A --latents_file holding `tensors` (default: 4 one-channel 8x8 latents and their class labels)."""
    tensors = tensors or {"latents": torch.randn(4, 1, 8, 8), "class_labels": torch.arange(4)}
    save_file(tensors, str(tmp_path / name))
    return str(tmp_path / name)


def truncated_latents(tmp_path):
    path = latents(tmp_path)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    return path


def copy_with(converted, tmp_path, tamper):
    import shutil

    copy = tmp_path / "tampered"
    shutil.copytree(converted, copy)
    tamper(copy)
    return copy


def drop_time_partition(folder):
    manifest = json.loads((folder / "diffusion_blocks.json").read_text())
    del manifest["time_partition"]
    (folder / "diffusion_blocks.json").write_text(json.dumps(manifest))


def foreign_block_1(folder):
    convert_pretrained_transformer(str(folder.parent.parent / "shared" / "source"), str(folder.parent / "uniform"), 2,
                                   partition="uniform", overlap=0.3)
    os.replace(folder.parent / "uniform" / "block_1.safetensors", folder / "block_1.safetensors")


def with_data(data):
    """Arguments builder: the converted folder, an output folder, `data` instead of --dataset_name digits."""
    def build(converted, tmp_path, *extra):
        return ["--converted_dir", str(converted), "--output_dir", str(tmp_path / "out"), *data(tmp_path),
                "--train_batch_size", "2", "--max_train_steps", "2", "--report_to", "none", *extra]
    return build


DIGITS = with_data(lambda _: ["--dataset_name", "digits"])
LATENTS = lambda make: with_data(lambda tmp_path: ["--latents_file", make(tmp_path)])  # noqa: E731

FINETUNE_BAD_INPUTS = [
    ("--lora_alpha nan", lambda c, t: DIGITS(c, t, "--use_lora", "--lora_alpha", "nan"), "--lora_alpha must be > 0"),
    ("--lora_alpha inf", lambda c, t: DIGITS(c, t, "--lora_alpha", "inf"), "--lora_alpha must be > 0 (a finite number)"),
    ("--lora_rank 0", lambda c, t: DIGITS(c, t, "--use_lora", "--lora_rank", "0"), "--lora_rank must be an integer >= 1"),
    ("--lora_target_modules ''", lambda c, t: DIGITS(c, t, "--use_lora", "--lora_target_modules", ""),
     "--lora_target_modules must name at least one module"),
    ("--teacher_device bogus", lambda c, t: DIGITS(c, t, "--objective", "distill", "--teacher_device", "bogus"),
     "--teacher_device 'bogus' is not a torch device"),
    ("--teacher_device without distill", lambda c, t: DIGITS(c, t, "--teacher_device", "cpu"), "--teacher_device places"),
    ("--learning_rate nan", lambda c, t: DIGITS(c, t, "--learning_rate", "nan"), "--learning_rate must be > 0"),
    ("--max_grad_norm inf", lambda c, t: DIGITS(c, t, "--max_grad_norm", "inf"), "--max_grad_norm must be >= 0"),
    ("--block_index 2", lambda c, t: DIGITS(c, t, "--block_index", "2"), "block_index must be an int in [0, 1]"),
    ("--blocks_to_train 0,5", lambda c, t: DIGITS(c, t, "--blocks_to_train", "0,5"), "block_index must be an int in [0, 1]"),
    ("--use_lora --train_stems", lambda c, t: DIGITS(c, t, "--use_lora", "--train_stems"), "--train_stems trains full stems"),
    ("--num_blocks 4", lambda c, t: DIGITS(c, t, "--num_blocks", "4"), "--num_blocks 4: the conversion fixed the blocks"),
    ("--training_mode end_to_end", lambda c, t: DIGITS(c, t, "--training_mode", "end_to_end"), "--training_mode"),
    ("--converted_dir missing", lambda c, t: DIGITS(t / "missing", t), "/missing' is not a folder"),
    ("--converted_dir not converted", lambda c, t: DIGITS(t, t), "has no diffusion_blocks.json"),
    ("--converted_dir manifest without time_partition", lambda c, t: DIGITS(copy_with(c, t, drop_time_partition), t),
     "diffusion_blocks.json lacks ['time_partition']"),
    ("--converted_dir with a foreign block", lambda c, t: DIGITS(copy_with(c, t, foreign_block_1), t, "--block_index", "0"),
     "tampered/block_1.safetensors is a block of another conversion"),
    ("--output_dir is --converted_dir", lambda c, t: [*DIGITS(c, t), "--output_dir", str(c)], "is --converted_dir"),
    ("--latents_file missing", lambda c, t: LATENTS(lambda tmp: str(tmp / "none.safetensors"))(c, t), "none.safetensors' is not a file"),
    ("--latents_file truncated", lambda c, t: LATENTS(truncated_latents)(c, t), "latents.safetensors cannot be read as safetensors"),
    ("--latents_file without latents", lambda c, t: LATENTS(lambda tmp: latents(tmp, x=torch.zeros(2)))(c, t),
     "has no `latents` tensor"),
    ("--latents_file of 3 channels", lambda c, t: LATENTS(lambda tmp: latents(tmp, latents=torch.zeros(2, 3, 8, 8)))(c, t),
     "latents.safetensors: training samples have shape (2, 3, 8, 8)"),
    ("--latents_file with NaN", lambda c, t: LATENTS(lambda tmp: latents(tmp, latents=torch.full((2, 1, 8, 8), float("nan"))))(c, t),
     "latents.safetensors: the training samples hold NaN"),
    ("--latents_file and --dataset_name", lambda c, t: LATENTS(latents)(c, t, "--dataset_name", "digits"),
     "give exactly one of --latents_file and --dataset_name"),
]


@pytest.fixture(scope="module")
def shared_converted(tmp_path_factory):
    return digits_dit_folder(tmp_path_factory.mktemp("shared", numbered=False))


@pytest.mark.parametrize("build, named", [case[1:] for case in FINETUNE_BAD_INPUTS], ids=[case[0] for case in FINETUNE_BAD_INPUTS])
def test_script_bad_input_ends_in_one_line_naming_it(shared_converted, tmp_path, capsys, monkeypatch, build, named):
    from hf_diffusionblocks.training.runtime import run_script

    monkeypatch.delenv("HF_DIFFUSIONBLOCKS_TRACEBACK", raising=False)
    argv = build(shared_converted, tmp_path)
    script = load_script("finetune_pretrained")
    with pytest.raises(SystemExit) as exit_info:
        run_script(lambda: script.main(argv), prog="finetune_pretrained.py")
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("finetune_pretrained.py: error: ") and named in lines[0], lines[0]
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_the_script_run_as_a_program_answers_bad_input_in_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "examples" / "finetune_pretrained.py"
    result = subprocess.run([sys.executable, str(script), "--converted_dir", str(tmp_path / "missing"), "--output_dir",
                             str(tmp_path / "out"), "--dataset_name", "digits", "--lora_alpha", "nan"],
                            capture_output=True, text=True, env={**os.environ, "HF_DIFFUSIONBLOCKS_TRACEBACK": ""})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"finetune_pretrained.py: error: --converted_dir '{tmp_path / 'missing'}' is not a folder "
        "(one written by `hf-diffusionblocks convert`).")


def test_script_gradient_checkpointing_flag_trains_the_same_block(tmp_path, monkeypatch):
    converted_dir = digits_dit_folder(tmp_path)
    script = load_script("finetune_pretrained")
    built, build = [], PretrainedFinetuningTask.build_model
    monkeypatch.setattr(PretrainedFinetuningTask, "build_model",
                        lambda task, indices: built.append(build(task, indices)) or built[-1])
    plain = script.main(script_args(converted_dir, tmp_path / "plain", "--block_index", "1"))
    checkpointed = script.main(script_args(converted_dir, tmp_path / "gc", "--block_index", "1", "--gradient_checkpointing"))
    assert plain["gradient_checkpointing"] is False and checkpointed["gradient_checkpointing"] is True
    assert [model.routed.gradient_checkpointing for model in built] == [False, True]
    original = load_file(converted_dir / "block_1.safetensors")
    a, b = load_file(tmp_path / "plain" / "block_1.safetensors"), load_file(tmp_path / "gc" / "block_1.safetensors")
    assert any(not torch.equal(original[k], a[k]) for k in original)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
