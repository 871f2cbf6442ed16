"""apkit.viz: what the figures draw (the data of their images and bars), and denormalize's values."""

import numpy as np
import pytest
import torch

from apkit import viz
from apkit.core.errors import ValidationError


@pytest.fixture
def drawn(monkeypatch):
    """The figures the next plot saves, kept open for inspection instead of written."""
    figures = []

    def keep(figure, path):
        figures.append(figure)
        return path

    monkeypatch.setattr(viz, "_save", keep)
    yield figures
    for figure in figures:
        viz._pyplot().close(figure)


def test_denormalize_undoes_normalize_and_clips():
    mean, std = (0.5, 0.25, 0.0), (0.5, 0.25, 2.0)
    pixels = torch.tensor([0.2, 0.8, 0.3]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    normalized = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(viz.denormalize(normalized, mean, std), pixels)
    clipped = viz.denormalize(torch.tensor([-5.0, 5.0, 0.25]).view(1, 3, 1, 1), mean, std)
    assert clipped.flatten().tolist() == [0.0, 1.0, 0.5]  # 0.25 * 2 + 0 = 0.5; the others clipped to [0, 1]
    with pytest.raises(ValidationError):
        viz.denormalize(torch.zeros(3, 2, 2), mean, std)


def test_attribution_grid_draws_each_image_and_each_scaled_map(drawn, tmp_path):
    images = torch.rand(2, 3, 4, 4)
    maps = {"teacher": torch.arange(32.0).view(2, 4, 4), "student": -torch.arange(32.0).view(2, 4, 4)}
    viz.plot_attribution_grid(images, maps, tmp_path / "grid.png", row_titles=["cat", "dog"])
    (figure,) = drawn
    axes = np.array(figure.axes[:6]).reshape(2, 3)  # then the colour bar
    assert len(figure.axes) == 7 and "relevance" in figure.axes[6].get_ylabel()
    for row in range(2):
        np.testing.assert_allclose(axes[row, 0].images[0].get_array(), images[row].permute(1, 2, 0).numpy())
        assert axes[row, 0].get_ylabel() == ["cat", "dog"][row]
        for column, values in enumerate(maps.values(), start=1):
            image, heat = axes[row, column].images  # the picture, then the map over it
            np.testing.assert_allclose(image.get_array(), images[row].permute(1, 2, 0).numpy())
            expected = (values[row] - values[row].min()) / (values[row].max() - values[row].min())
            np.testing.assert_allclose(heat.get_array(), expected.numpy(), rtol=1e-6)
            assert heat.get_clim() == (0, 1)
    assert [axes[0, c].get_title() for c in range(3)] == ["image", "teacher", "student"]


def test_attribution_grid_refuses_maps_of_another_size(tmp_path):
    with pytest.raises(ValidationError, match="must be"):
        viz.plot_attribution_grid(torch.rand(2, 3, 4, 4), {"m": torch.rand(2, 3, 3)}, tmp_path / "x.png")


def test_histograms_leave_nan_out(drawn, tmp_path):
    viz.plot_histograms({"a": torch.tensor([0.0, 1.0, float("nan"), 1.0])}, tmp_path / "h.png", bins=2)
    (figure,) = drawn
    heights = [patch.get_height() for patch in figure.axes[0].patches]
    assert heights == [1.0, 2.0] and figure.axes[0].get_ylabel() == "pairs"


def test_roar_curves_need_one_score_per_fraction(drawn, tmp_path):
    viz.plot_roar_curves([0.1, 0.5], {"gradcam": [0.9, 0.5], "random": [0.9, 0.8]}, tmp_path / "r.png")
    lines = drawn[0].axes[0].lines
    assert [list(line.get_ydata()) for line in lines] == [[0.9, 0.5], [0.9, 0.8]]
    assert lines[1].get_linestyle() == "--"  # the random baseline
    with pytest.raises(ValidationError, match="one value per fraction"):
        viz.plot_roar_curves([0.1], {"gradcam": [0.9, 0.5]}, tmp_path / "r.png")


def test_figures_are_written(tmp_path):
    path = viz.plot_attribution_grid(torch.rand(1, 3, 4, 4), {"m": torch.rand(1, 4, 4)}, tmp_path / "g.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_faithfulness_curves_draw_each_models_mean_curve_over_the_fractions(drawn, tmp_path):
    curves = {"deletion (Grad-CAM)": {"teacher": torch.tensor([0.9, 0.5, 0.1]), "small": torch.tensor([0.8, 0.6, 0.2])},
              "insertion (Grad-CAM)": {"teacher": torch.tensor([0.1, 0.7, 0.9])}}
    viz.plot_faithfulness_curves(curves, tmp_path / "curves.png")
    (figure,) = drawn
    deletion, insertion = figure.axes
    assert deletion.get_title() == "deletion (Grad-CAM)" and len(deletion.lines) == 2
    for line, values in zip(deletion.lines, curves["deletion (Grad-CAM)"].values()):
        np.testing.assert_allclose(line.get_xdata(), [0.0, 0.5, 1.0])  # the fractions k / steps
        np.testing.assert_allclose(line.get_ydata(), values.numpy())
    assert [t.get_text() for t in insertion.get_legend().get_texts()] == ["teacher"]
    with pytest.raises(ValidationError, match="empty"):
        viz.plot_faithfulness_curves({}, tmp_path / "none.png")
