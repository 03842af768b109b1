"""The `hf-diffusionblocks` command line: the partition command, and errors without tracebacks."""

from __future__ import annotations

from cli_testing import config, model, run  # noqa: F401  (config and model are fixtures)


def test_partition_prints_the_reference_boundaries(capsys):
    status, output, _ = run(capsys, "partition", "--num_blocks", "3", "--layers_per_block", "4", "4", "4")
    assert status == 0
    assert "boundaries (increasing): 0.0020, 0.1796, 0.5050, 80.0000" in output
    assert "partition=equiprobable" in output and "4-7" in output
    status, output, _ = run(
        capsys, "partition", "--num_blocks", "2", "--partition", "uniform_log", "--overlap", "0"
    )
    log_midpoint = (0.002 * 80.0) ** 0.5
    assert status == 0 and f"{log_midpoint:.4f}" in output


def test_partition_rejects_bad_layer_counts(capsys):
    status, _, err = run(capsys, "partition", "--num_blocks", "3", "--layers_per_block", "4", "4")
    assert status == 1 and "layers_per_block" in err


# ---- integrity: what `info` and `assemble` refuse, all reported at once -------------------------------


def test_cli_errors_name_the_file_and_never_print_a_traceback(capsys, model, tmp_path, monkeypatch):
    model.save_pretrained(tmp_path, block_indices=[0])
    (tmp_path / "config.json").write_text("{ not json")
    status, _, err = run(capsys, "info", tmp_path)
    assert status == 1 and f"{tmp_path}/config.json is not valid JSON" in err

    import hf_diffusionblocks.command_info as command_info

    def broken(*args, **kwargs):
        raise RuntimeError("something unforeseen")

    monkeypatch.setattr(command_info, "inspect_model", broken)
    status, _, err = run(capsys, "info", tmp_path)
    assert status == 1 and err.strip() == "error: RuntimeError: something unforeseen"
