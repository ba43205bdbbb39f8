"""scripts.tb_images: the images a run logged come back as the PNG files TensorBoard holds."""

import struct

import pytest

from gan.trainer import train
from scripts import tb_images


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_exports_each_logged_grid_at_its_steps(compose_cfg, tmp_path):
    run_dir = tmp_path / "run"
    train(compose_cfg("data=digits", "model=mlp"), run_dir)  # evaluations at steps 0, 3, 6
    written = tb_images.export(run_dir, tmp_path / "out", tags=["samples/generated"])
    assert [p.name for p in written] == [f"samples_generated_step{s}.png" for s in (0, 3, 6)]
    # make_grid of 64 digits of 8x8 pixels: 8 per row, 2-pixel padding.
    assert all(_png_size(p.read_bytes()) == (8 * 10 + 2, 8 * 10 + 2) for p in written)
    assert [p.name for p in tb_images.export(run_dir, tmp_path / "one", steps=[6])] == [
        "samples_generated_step6.png"
    ]  # samples/real is logged at step 0 only


def test_unknown_tag_and_non_run_folder_are_one_line_errors(compose_cfg, tmp_path, capsys):
    assert tb_images.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    run_dir = tmp_path / "run"
    train(compose_cfg(), run_dir)
    with pytest.raises(ValueError, match="no images under tag"):
        tb_images.export(run_dir, tmp_path / "out", tags=["samples/generated"])
